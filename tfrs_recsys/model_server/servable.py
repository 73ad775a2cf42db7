"""One loaded model version: its SignatureDefs and the functions behind them.

Predict, Classify, Regress and MultiInference follow TF Serving's predict_util.cc,
classifier.cc / regressor.cc (in :mod:`~tfrs_recsys.model_server.classify_regress`) and
multi_inference.cc: the same checks in the same order, the same status codes and messages.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Callable, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import classification_pb2, inference_pb2, model_pb2, predict_pb2, regression_pb2

from tfrs_recsys import paths
from tfrs_recsys.model_server.classify_regress import CLASSIFY_METHOD, METHODS, REGRESS_METHOD, run_examples
from tfrs_recsys.model_server.errors import (
    ServingError,
    ascii_hint,
    failed_precondition,
    invalid_argument,
    not_found,
)
from tfrs_recsys.model_server.row_parts import run_in_parts
from tfrs_recsys.model_server.tensors import (
    declared_elements,
    dtype_name,
    fill_proto,
    is_exact,
    shape_of,
    to_ndarray,
    to_proto,
)

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"

# An input as received (a request's TensorProto, read in the graph) or as numpy.
Input = np.ndarray | tensor_pb2.TensorProto
# (signature_name, inputs, output aliases) -> outputs; the batching layer plugs in here.
Runner = Callable[[str, Mapping[str, Input], Sequence[str]], Mapping[str, np.ndarray]]


def read_meta_graph(path: str | Path, tags: Sequence[str] = (SERVE_TAG,)) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef of a SavedModel whose tag set is ``tags``.

    Args:
      path: The SavedModel folder (local or a ``tf.io.gfile`` URL).
      tags: The tag set to find (TF Serving loads ``{serve}``).

    Returns:
      The MetaGraphDef, with its SignatureDefs as written.

    Raises:
      ServingError: ``NOT_FOUND`` without ``saved_model.pb`` or without that tag set, ``DATA_LOSS``
        when the file does not parse.
    """
    pb = paths.join(path, "saved_model.pb")
    if not paths.isfile(pb):
        raise not_found(f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(paths.read_bytes(pb))
    except Exception as e:
        raise ServingError(grpc.StatusCode.DATA_LOSS, f"Could not parse {pb}: {e}") from None
    for meta_graph in saved.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in saved.meta_graphs]
    raise not_found(f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. "
                    "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
                    f"`saved_model_cli` (available: {available})")


class SignatureFunction:
    """A restored signature function, called with as little Python per request as possible.

    Calling a ``ConcreteFunction`` binds and type-checks each of its arguments in Python, so the
    cost of a call grows with the number of arguments. Here the signature function is wrapped in one
    ``tf.function`` whose one argument is the request's TensorProtos, serialized into a string vector
    and parsed in the graph by ``tf.io.parse_tensor`` (TensorFlow's ``Tensor::FromProto``, as in TF
    Serving), so a request converts no input in Python. It is traced once, on first use (never per
    batch size: ``tracing_count``), and called through its concrete function; inputs were already
    checked against the SignatureDef. Numpy inputs (the batching path, Classify/Regress) are written
    into TensorProtos first.

    Args:
      function: The restored signature (``loaded.signatures[key]``).
      signature: Its SignatureDef as written in ``saved_model.pb``.
    """

    def __init__(self, function, signature: meta_graph_pb2.SignatureDef):
        self.aliases = sorted(signature.inputs)
        self._dtypes = [signature.inputs[a].dtype for a in self.aliases]
        dtypes = [tf.dtypes.as_dtype(d) for d in self._dtypes]
        shapes = [tf.TensorShape(signature.inputs[a].tensor_shape) for a in self.aliases]

        @tf.function(input_signature=[tf.TensorSpec([len(dtypes)], tf.string)])
        def from_protos(serialized):
            tensors = [tf.io.parse_tensor(serialized[i], dtype) for i, dtype in enumerate(dtypes)]
            for tensor, shape in zip(tensors, shapes):
                tensor.set_shape(shape)
            return function(**dict(zip(self.aliases, tensors)))

        self._wrapper, self._concrete = from_protos, None

    def tracing_count(self) -> int:
        """How many times the wrapper was traced."""
        return self._wrapper.experimental_get_tracing_count()

    def __call__(self, inputs: Mapping[str, Input]) -> dict:
        """Calls the signature on one value per input alias.

        Args:
          inputs: Exact TensorProtos (``is_exact``), parsed in the graph, or arrays, written as TensorProtos.

        Returns:
          The signature's outputs, as tensors.
        """
        if self._concrete is None:  # tracing twice from two threads is harmless: both get the same
            self._concrete = self._wrapper.get_concrete_function()
        serialized = [(value if isinstance(value, tensor_pb2.TensorProto)
                       else to_proto(value, dtype, content=True)).SerializeToString()
                      for value, dtype in zip((inputs[a] for a in self.aliases), self._dtypes)]
        return self._concrete(tf.constant(serialized))


# Elements a request may declare over all its inputs (--max_request_elements). A string element takes
# about 175 bytes while its request is decoded (the parsed message, numpy's bytes objects, TensorFlow's
# strings), so one request holds at most about 370 MB.
MAX_REQUEST_ELEMENTS = 1 << 21
# After a request of this many elements, free heap pages go back to the system: glibc keeps what a
# request's decoding freed in its worker thread's arena, and a server's memory would stay at its peak.
TRIM_AFTER_ELEMENTS = 1 << 18
TRIM_AFTER_BYTES = 1 << 22  # or of this size: a few long strings can make gigabytes inside a model


def _value_bytes(protos) -> int:
    """The bytes of the tensors' strings and packed contents (a serialization would cost a copy of each)."""
    return sum(len(p.tensor_content) + sum(map(len, p.string_val)) for p in protos)


def _return_freed_memory() -> None:
    """glibc's ``malloc_trim(0)``: free pages of every arena back to the system (a no-op elsewhere)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = lambda _: 0  # noqa: E731
    _malloc_trim(0)


_malloc_trim = None


class Servable:
    """A SavedModel version loaded for serving.

    Predict, Classify, Regress and MultiInference run the checks of TF Serving's predict_util.cc,
    classifier.cc, regressor.cc and multi_inference.cc in the same order, with the same codes and
    messages.

    Args:
      name: The model name.
      version: The version number.
      path: The version directory.
      meta_graph: Its ``serve`` MetaGraphDef; ``signature_defs`` are taken from it exactly as
        written (what GetModelMetadata returns).
      loaded: The ``tf.saved_model.load`` result; ``functions`` wrap its signatures.
    """

    def __init__(self, name: str, version: int, path: str, meta_graph: meta_graph_pb2.MetaGraphDef, loaded):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = dict(meta_graph.signature_def)
        self._loaded = loaded  # keeps the restored variables and tables alive
        self.functions = {key: SignatureFunction(fn, self.signature_defs[key])
                          for key, fn in loaded.signatures.items() if key in self.signature_defs}
        # (alias, dtype, dims: -1 any size, None unknown rank) per signature input, in the order TF Serving
        # checks them
        self._inputs = {key: [(a, info.dtype, None if info.tensor_shape.unknown_rank
                               else tuple(d.size for d in info.tensor_shape.dim))
                              for a, info in sorted(sig.inputs.items())]
                        for key, sig in self.signature_defs.items()}
        self.runner: Runner = self.run
        self.max_request_elements = MAX_REQUEST_ELEMENTS
        self.max_rows_per_call = 0  # load_version sets it where the export says rows are independent

    @classmethod
    def load(cls, name: str, version: int, path: str | Path) -> "Servable":
        """Loads a SavedModel version.

        Args:
          name: The model name.
          version: The version number.
          path: The version directory (local or a ``tf.io.gfile`` URL).

        Returns:
          The servable.

        Raises:
          ServingError: The SavedModel cannot be read or loaded.
        """
        meta_graph = read_meta_graph(path)
        try:
            loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        except Exception as e:
            raise ServingError(grpc.StatusCode.UNKNOWN, f"Failed to load SavedModel at {path}: {e}") from None
        return cls(name, version, str(path), meta_graph, loaded)

    def run(self, signature_name: str, inputs: Mapping[str, Input],
            output_aliases: Sequence[str]) -> dict[str, np.ndarray]:
        """Calls one signature function on all its inputs: TensorProtos (parsed in the graph) or numpy.

        Args:
          signature_name: The signature key.
          inputs: A value for every input of the signature, already checked against it.
          output_aliases: The outputs to return.

        Returns:
          ``{alias: array}`` for ``output_aliases``.

        Raises:
          ServingError: A TensorFlow runtime error keeps its status code.
        """
        fn = self.functions.get(signature_name)
        if fn is None:
            raise failed_precondition(f'Serving signature key "{signature_name}" not found.')
        try:
            result = fn(inputs)
        except tf.errors.OpError as e:
            raise ServingError.from_tf_error(e) from None
        except (TypeError, ValueError) as e:
            raise invalid_argument(str(e)) from None
        return {alias: result[alias].numpy() for alias in output_aliases}

    def _signature(self, signature_name: str, error: Callable[[str], ServingError], message: str):
        """``(name, SignatureDef)`` of the signature a request names; ``error(message)`` when missing."""
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature_defs.get(name)
        if signature is None:
            raise error(message.format(name))
        return name, signature

    def _fill_model_spec(self, spec, model_name: str, signature_name: str) -> None:
        spec.CopyFrom(model_pb2.ModelSpec(name=model_name, signature_name=signature_name,
                                          version={"value": self.version}))

    # -- Predict ----------------------------------------------------------------------------------

    @staticmethod
    def _check_input_names(signature, sent: set[str]) -> None:
        """Raises for input names that are not the signature's (missing ones may have defaults)."""
        wanted = set(signature.inputs)
        if len(sent) > len(wanted) or (len(sent) < len(wanted) and not signature.defaults):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        extra = sorted(sent - wanted)
        if extra:
            raise invalid_argument(
                f"input tensor alias not found in signature: {extra[0]}. "
                f"Inputs expected to be in the set {{{','.join(sorted(wanted))}}}.{ascii_hint(extra[0])}")
        missing = sorted(wanted - sent - set(signature.defaults))
        if missing:
            raise invalid_argument(
                f"Missing input: {missing[0]}; the signature needs {{{','.join(sorted(wanted))}}}")

    def check_predict(self, request: predict_pb2.PredictRequest) -> tuple[str, list[str]]:
        """Validates a PredictRequest against its signature (predict_util.cc PreProcessPrediction).

        Inputs are checked by dtype and shape, not read.

        Args:
          request: The request.

        Returns:
          ``(signature name, output aliases)``.

        Raises:
          ServingError: TF Serving's code and message for the first problem found.
        """
        name, signature = self._signature(request.model_spec.signature_name, failed_precondition,
                                          'Serving signature key "{}" not found.')
        sent, inputs = request.inputs, self._inputs[name]
        if len(sent) != len(inputs) or not all(alias in sent for alias, _, _ in inputs):
            self._check_input_names(signature, set(sent))
        declared = 0
        for index, (alias, dtype, expected) in enumerate(inputs):
            if alias not in sent:  # a default (checked above)
                continue
            proto = sent[alias]
            if proto.dtype != dtype:
                raise invalid_argument(f"Expects arg[{index}] to be {dtype_name(dtype)} but "
                                       f"{dtype_name(proto.dtype)} is provided (input '{alias}')")
            declared += declared_elements(proto, alias)
            if declared > self.max_request_elements:
                raise invalid_argument(f"the request declares {declared} or more elements, over the server's "
                                       f"--max_request_elements={self.max_request_elements}")
            shape = shape_of(proto)
            if expected is not None and (len(expected) != len(shape)
                                         or any(e >= 0 and e != v for e, v in zip(expected, shape))):
                got, want = ",".join(map(str, shape)), ",".join(map(str, expected))
                raise invalid_argument(f"input tensor '{alias}' has shape [{got}] but the signature expects "
                                       f"[{want}] (-1 = any size)")
        outputs: list[str] = []
        for alias in request.output_filter:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(signature.outputs))}}}.")
            if alias in outputs:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            outputs.append(alias)
        return name, outputs or list(signature.outputs)

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """TF Serving's Predict.

        Args:
          request: The inputs of one signature (missing ones take the signature's defaults).

        Returns:
          The signature's outputs (those of ``output_filter`` when it is set), as typed value fields.

        Raises:
          ServingError: The request does not fit the signature, or the model failed on it.
        """
        name, output_aliases = self.check_predict(request)
        signature, protos = self.signature_defs[name], request.inputs
        inputs, elements = {}, 0
        for alias, _, _ in self._inputs[name]:
            proto = protos[alias] if alias in protos else signature.defaults[alias]
            elements += declared_elements(proto, alias)
            # exact encodings are parsed in the graph; broadcast values and the like are read here
            inputs[alias] = proto if is_exact(proto) else to_ndarray(proto, alias)
        values = run_in_parts(self.runner, name, inputs, output_aliases, self.max_rows_per_call)
        del inputs
        response = predict_pb2.PredictResponse()
        self._fill_model_spec(response.model_spec, request.model_spec.name, name)
        for alias in output_aliases:
            fill_proto(response.outputs[alias], values[alias], signature.outputs[alias].dtype)
        if elements >= TRIM_AFTER_ELEMENTS or _value_bytes(protos.values()) >= TRIM_AFTER_BYTES:
            del values
            _return_freed_memory()
        return response

    # -- Classify / Regress / MultiInference ------------------------------------------------------

    def _examples_call(self, request, response, method: str):
        name, signature = self._signature(request.model_spec.signature_name, invalid_argument,
                                          "No signature was found with the name: {}")
        outputs = METHODS[method][0](signature)
        response.result.CopyFrom(run_examples(method, self.run, name, request.input, outputs))
        self._fill_model_spec(response.model_spec, request.model_spec.name, name)
        return response

    def classify(self, request: classification_pb2.ClassificationRequest
                 ) -> classification_pb2.ClassificationResponse:
        """TF Serving's Classify: classes and/or scores per tf.Example of the request's input.

        Args:
          request: The examples and the classify signature.

        Returns:
          One Classifications per example.
        """
        return self._examples_call(request, classification_pb2.ClassificationResponse(), CLASSIFY_METHOD)

    def regress(self, request: regression_pb2.RegressionRequest) -> regression_pb2.RegressionResponse:
        """TF Serving's Regress: one value per tf.Example of the request's input.

        Args:
          request: The examples and the regress signature.

        Returns:
          One Regression per example.
        """
        return self._examples_call(request, regression_pb2.RegressionResponse(), REGRESS_METHOD)

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest
                        ) -> inference_pb2.MultiInferenceResponse:
        """TF Serving's MultiInference: several classify/regress signatures over one input.

        Every task is checked before any runs; each signature then runs once.

        Args:
          request: The tasks (one model, distinct signatures) and the examples.

        Returns:
          One result per task, in order.
        """
        seen: set[str] = set()
        plans = []
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if task.model_spec.name != request.tasks[0].model_spec.name:
                raise invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            _, signature = self._signature(name, invalid_argument,
                                           "Requested signature not found in model graph: {}")
            if task.method_name not in METHODS:
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {task.method_name}")
            plans.append((task, name, METHODS[task.method_name][0](signature)))
        response = inference_pb2.MultiInferenceResponse()
        for task, name, outputs in plans:
            result = response.results.add()
            value = run_examples(task.method_name, self.run, name, request.input, outputs)
            getattr(result, METHODS[task.method_name][2]).CopyFrom(value)
            self._fill_model_spec(result.model_spec, task.model_spec.name, task.model_spec.signature_name)
        return response
