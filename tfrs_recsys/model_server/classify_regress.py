"""Classify and Regress on tf.Examples: TF Serving's classifier.cc and regressor.cc.

The request's examples are serialized for the signature's one string input; the signature is
checked before it runs and its outputs after, with TF Serving's checks in the same order and
its codes and messages. :class:`~tfrs_recsys.model_server.servable.Servable` runs the signature.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from tfrs_recsys.model_server.errors import failed_precondition, invalid_argument

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# The most bytes of tf.Examples one request may make once its context is merged into each example.
MAX_MERGED_BYTES = 64 << 20


def serialized_examples(inp: input_pb2.Input) -> list[bytes]:
    """An ``Input`` as serialized tf.Examples; a context is merged into each example as TF Serving does
    (serialized concatenation, the example's own features winning).

    Raises:
      ServingError: INVALID_ARGUMENT when the merged examples would exceed :data:`MAX_MERGED_BYTES`: a
        context is copied once per example, so a small request could otherwise make gigabytes.
    """
    if inp.WhichOneof("kind") == "example_list_with_context":
        context = inp.example_list_with_context.context.SerializeToString()
        count = len(inp.example_list_with_context.examples)
        merged = len(context) * count + inp.ByteSize()
        if merged > MAX_MERGED_BYTES:
            raise invalid_argument(f"the context ({len(context)} bytes) merged into each of the {count} "
                                   f"examples makes {merged} bytes, over {MAX_MERGED_BYTES}: send a smaller "
                                   f"context or fewer examples per request")
        examples = [context + e.SerializeToString() for e in inp.example_list_with_context.examples]
    else:
        examples = [e.SerializeToString() for e in inp.example_list.examples]
    if not examples:
        raise invalid_argument("Input is empty.")
    return examples


def _check_method(signature, method: str, kind: str) -> None:
    if signature.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")


def _classify_outputs(signature) -> list[str]:
    _check_method(signature, CLASSIFY_METHOD, "classification")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if "inputs" not in signature.inputs:
        raise failed_precondition(f"No classification inputs found in SignatureDef: {signature}")
    outputs = [k for k in ("classes", "scores") if k in signature.outputs]
    if not outputs:
        raise failed_precondition(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {signature}")
    return outputs


def _regress_outputs(signature) -> list[str]:
    _check_method(signature, REGRESS_METHOD, "regression")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise failed_precondition(f"No regression inputs found in SignatureDef: {signature}")
    if "outputs" not in signature.outputs:
        raise failed_precondition(f"No regression outputs found in SignatureDef: {signature}")
    return ["outputs"]


def _classification_result(values: Mapping[str, np.ndarray], num_examples: int):
    classes, scores = values.get("classes"), values.get("scores")
    for label, tensor in values.items():  # classes, then scores
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}")
        if tensor.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {label} output batch size of {num_examples}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). "
                               f"Got {classes.shape[1]} vs. {scores.shape[1]}")
    result = classification_pb2.ClassificationResult()
    for i in range(num_examples):
        row = result.classifications.add()
        for c in range((classes if classes is not None else scores).shape[1]):
            cls = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                cls.label = label.decode() if isinstance(label, bytes) else str(label)
            if scores is not None:
                cls.score = float(scores[i, c])
    return result


def _regression_result(values: Mapping[str, np.ndarray], num_examples: int):
    output = values["outputs"]
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                               f"but got {list(output.shape)}")
    if output.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {output.shape[0]}")
    return regression_pb2.RegressionResult(regressions=[{"value": float(v)} for v in output.ravel()])


# method_name -> (output aliases from the SignatureDef, result from the outputs, InferenceResult field)
METHODS = {CLASSIFY_METHOD: (_classify_outputs, _classification_result, "classification_result"),
                    REGRESS_METHOD: (_regress_outputs, _regression_result, "regression_result")}


def run_examples(method: str, run, signature_name: str, inp: input_pb2.Input, outputs: Sequence[str]):
    """Runs a classify or regress signature over an ``Input``'s examples.

    Args:
      method: ``CLASSIFY_METHOD`` or ``REGRESS_METHOD``.
      run: ``Servable.run``.
      signature_name: The signature, already checked with ``METHODS[method][0]``.
      inp: The request's examples.
      outputs: The output aliases that check returned.

    Returns:
      The ClassificationResult or RegressionResult.
    """
    examples = serialized_examples(inp)
    values = run(signature_name, {"inputs": np.array(examples, dtype=object)}, outputs)
    return METHODS[method][1](values, len(examples))
