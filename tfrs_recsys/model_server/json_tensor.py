"""JSON <-> tensors and tf.Examples as TF Serving's REST API writes them (util/json_tensor.cc).

Predict takes the row form (``{"instances": [...]}``, answered with ``{"predictions": [...]}``) or
the columnar form (``{"inputs": ...}``, answered with ``{"outputs": ...}``); bytes travel as
``{"b64": "..."}`` and string outputs whose name ends in ``_bytes`` are returned that way. Floats
are written as TF Serving writes them (shortest round-tripping decimal, ``.0`` on whole numbers,
``NaN``/``Infinity``). Classify and Regress take tf.Examples as JSON objects.
"""
from __future__ import annotations

import base64
import binascii
import json
import math

import grpc
import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfrs_recsys.model_server.errors import ServingError, ascii_hint, invalid_argument
from tfrs_recsys.model_server.tensors import dtype_name, numpy_dtype, to_ndarray, to_proto

_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_INT_RANGES = {types_pb2.DT_INT32: _INT32, types_pb2.DT_INT16: _INT32, types_pb2.DT_INT8: _INT32,
               types_pb2.DT_UINT8: _INT32, types_pb2.DT_INT64: _INT64, types_pb2.DT_UINT32: (0, 2 ** 32 - 1),
               types_pb2.DT_UINT64: (0, 2 ** 64 - 1)}
_FLOAT = (24, 3.4028234663852886e38, "float")  # mantissa bits, largest value, name in errors
_FLOAT_LIMITS = {types_pb2.DT_FLOAT: _FLOAT, types_pb2.DT_HALF: _FLOAT,
                 types_pb2.DT_DOUBLE: (53, 1.7976931348623157e308, "double")}
_JSON_TYPES = ((dict, "Object"), (list, "Array"), (str, "String"))


# -- JSON values -> tensors ---------------------------------------------------------------------

# numpy arrays hold 64 dimensions at most; no model input comes close to this
MAX_JSON_RANK = 32


def json_text(value) -> str:
    """``value`` as compact JSON, as TF Serving quotes it in error messages."""
    return json.dumps(value, separators=(",", ":"))


def json_type(value) -> str:
    """The JSON type name TF Serving's errors use (``Null``, ``True``, ``Object``, ``Number``, ...)."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return str(value)
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "Number")


def _type_error(value, dtype: int) -> ServingError:
    return invalid_argument(f"JSON Value: {json_text(value)} Type: {json_type(value)} is not of expected "
                            f"type: {dtype_name(dtype)}")


def _check_lossless(value, digits: int, max_value: float, name: str) -> None:
    """An int must fit the mantissa (``digits`` bits), a finite float the range (``max_value``)."""
    if isinstance(value, int):
        lossless = abs(value) <= (1 << digits) - 1
    else:
        lossless = not math.isfinite(value) or -max_value <= value <= max_value
    if not lossless:
        raise invalid_argument(
            f"Cannot convert JSON value: {json_text(value)} to {name} without loss of precision.")


def is_b64(value) -> bool:
    """Whether a JSON value is ``{"b64": "..."}``, TF Serving's form for bytes."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_object(value) -> bool:
    """A JSON object that is not bytes (``{"b64": ...}``)."""
    return isinstance(value, dict) and not is_b64(value)


def _decode_b64(value) -> bytes:
    if not is_b64(value):
        raise invalid_argument(f"JSON Value: {json_text(value)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _scalar(value, dtype: int):
    """One JSON value as an element of a ``dtype`` tensor (json_tensor.cc's per-type checks)."""
    if dtype == types_pb2.DT_STRING and isinstance(value, dict):
        return _decode_b64(value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    # Lossless conversions TF Serving refuses: an integral number for an integer input, an integer (an id
    # written as a number) or a boolean (as its JSON text) for a string input.
    if dtype in _INT_RANGES and isinstance(value, float) and value.is_integer():
        value, is_int = int(value), True
    if dtype == types_pb2.DT_STRING and is_int:
        return str(value).encode()
    if dtype == types_pb2.DT_STRING and isinstance(value, bool):
        return b"true" if value else b"false"
    if dtype in _FLOAT_LIMITS:
        fits = is_int or isinstance(value, float)
    elif dtype in _INT_RANGES:
        fits = is_int and _INT_RANGES[dtype][0] <= value <= _INT_RANGES[dtype][1]
    elif dtype in (types_pb2.DT_BOOL, types_pb2.DT_STRING):
        fits = isinstance(value, bool if dtype == types_pb2.DT_BOOL else str)
    else:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Conversion of JSON Value: {json_text(value)} to type: {dtype_name(dtype)}")
    if not fits:
        raise _type_error(value, dtype)
    if dtype in _FLOAT_LIMITS:
        _check_lossless(value, *_FLOAT_LIMITS[dtype])
        return float(value)
    if dtype != types_pb2.DT_STRING:
        return value
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") has no UTF-8 form: the client's error
        raise invalid_argument(f"JSON string {json_text(value)} is not valid Unicode text") from None


def _fill(value, level: int, shape: list[int], dtype: int, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(f"JSON Value: {json_text(value)} found at incorrect level: "
                                   f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
        if isinstance(value, dict) and dtype != types_pb2.DT_STRING:
            raise _type_error(value, dtype)
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                               f"expected size: {shape[level]}")
    for v in value:
        _fill(v, level + 1, shape, dtype, out)


def json_to_array(value, dtype: int) -> np.ndarray:
    """A (nested) JSON value as a dense array (json_tensor.cc FillTensorProto).

    Args:
      value: A JSON number, string, bool, ``{"b64": ...}`` or nested lists of them.
      dtype: The DataType enum of the signature input.

    Returns:
      The array; its shape is read along the first elements and must hold everywhere.

    Raises:
      ServingError: TF Serving's message for a value of the wrong type or level, a ragged list, or a
        number the dtype cannot hold without loss.
    """
    shape, first = [], value
    while isinstance(first, list):  # the shape is read along the first elements, then checked everywhere
        shape.append(len(first))
        if len(shape) > MAX_JSON_RANK:
            raise invalid_argument(f"JSON value nests lists {MAX_JSON_RANK + 1} or more levels deep; a "
                                   f"tensor in a request has rank {MAX_JSON_RANK} at most")
        if not first:
            break
        first = first[0]
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    return np.array(flat, dtype=numpy_dtype(dtype)).reshape(shape)


def instances_to_inputs(instances: list, infos) -> dict[str, tensor_pb2.TensorProto]:
    """The row form of a Predict body: ``{"instances": [...]}``.

    Args:
      instances: One JSON object per example (``{input: value}``), or a plain value per example when
        the signature has one input.
      infos: The signature's ``inputs`` (TensorInfo by alias).

    Returns:
      One TensorProto per input, the examples stacked along dimension 0.
    """
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input "
                               "tensors required as per tensorinfo_map")
    named = _is_object(instances[0])
    names = sorted(infos)
    if not named:  # one input: the list is its tensor, read at once (the loop below names a bad row)
        dtype = infos[names[0]].dtype
        try:
            return {names[0]: to_proto(json_to_array(instances, dtype), dtype)}
        except ServingError:
            pass
    rows: dict[str, list[np.ndarray]] = {}
    for i, item in enumerate(instances):
        if _is_object(item) != named:
            wanted, got = ("object", "list") if named else ("value/list", "object")
            raise invalid_argument(f"Expecting {wanted} but got {got} at item {i} of input list")
        for key, value in (item.items() if named else [(names[0], item)]):
            element = f"{i} key: {key}" if named else f"{i}"
            try:
                if key not in infos:
                    raise invalid_argument(f"JSON object: does not have named input: {key}{ascii_hint(key)}")
                array = json_to_array(value, infos[key].dtype)
            except ServingError as e:
                raise invalid_argument(
                    f"Failed to process element: {element} of 'instances' list. Error: {e}") from None
            _check_same(rows.setdefault(key, []), array, i, key)
        if named and set(item) != set(names):
            raise invalid_argument(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                   f"{json_text(item)} keys must be equal to: {','.join(names)}")
    return {k: to_proto(np.stack(v), infos[k].dtype) for k, v in rows.items()}


def _check_same(rows: list[np.ndarray], array: np.ndarray, index: int, key: str) -> None:
    if rows and rows[0].shape != array.shape:
        if rows[0].size != array.size:
            message = f"Expecting tensor size: {rows[0].size} but got: {array.size}"
        else:
            message = (f"Expecting shape [{','.join(map(str, rows[0].shape))}] but got: "
                       f"[{','.join(map(str, array.shape))}]")
        raise invalid_argument(f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                               f"INVALID_ARGUMENT: {message}")
    rows.append(array)


def columns_to_inputs(value, infos) -> dict[str, tensor_pb2.TensorProto]:
    """The columnar form of a Predict body: ``{"inputs": ...}``.

    Args:
      value: ``{input: (nested) value}``, or the value itself when the signature has one input.
      infos: The signature's ``inputs`` (TensorInfo by alias).

    Returns:
      One TensorProto per input.
    """
    if not _is_object(value):
        if len(infos) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input "
                                   "tensors required as per tensorinfo_map")
        value = {next(iter(infos)): value}
    out = {}
    for key in sorted(infos):
        if key not in value:
            raise invalid_argument(f"Missing named input: {key} in 'inputs' object.")
        out[key] = to_proto(json_to_array(value[key], infos[key].dtype), infos[key].dtype)
    return out


# -- tensors -> JSON ----------------------------------------------------------------------------

def format_float(value: float, double: bool = False) -> str:
    """A float as TF Serving's WriteDecimal writes it.

    Args:
      value: The number.
      double: Round-trip as float64 (else as float32).

    Returns:
      6 significant digits when they round-trip, else full precision; ``.0`` on whole numbers,
      ``NaN`` / ``Infinity`` / ``-Infinity`` for the rest.
    """
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    text = f"{value:.6g}"
    cast = float if double else (lambda x: float(np.float32(x)))
    if cast(text) != cast(value):
        text = f"{value:.17g}" if double else f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _value_json(value, dtype: int, as_bytes: bool) -> str:
    if dtype == types_pb2.DT_STRING:
        if as_bytes:
            return '{"b64": ' + json.dumps(base64.b64encode(value).decode("ascii")) + "}"
        return json.dumps(value.decode("utf-8", errors="replace"))
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16, types_pb2.DT_DOUBLE):
        return format_float(float(value), double=dtype == types_pb2.DT_DOUBLE)
    if dtype == types_pb2.DT_BOOL:
        return "true" if value else "false"
    return str(int(value))


def _array_json(array, dtype: int, as_bytes: bool) -> str:
    if isinstance(array, np.ndarray) and array.ndim > 0:
        return "[" + ", ".join(_array_json(a, dtype, as_bytes) for a in array) + "]"
    return _value_json(array.item() if hasattr(array, "item") else array, dtype, as_bytes)


def outputs_json(outputs: dict[str, tensor_pb2.TensorProto], row_format: bool) -> str:
    """A PredictResponse's outputs as the REST body.

    Args:
      outputs: The response's TensorProtos by alias.
      row_format: Answer ``{"predictions": [one entry per row]}`` (the request used ``instances``);
        else ``{"outputs": ...}``.

    Returns:
      The JSON text. String outputs whose name ends in ``_bytes`` are written as ``{"b64": ...}``.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    arrays = {name: to_ndarray(proto, name) for name, proto in outputs.items()}

    def tensors(row: int | None) -> str:  # one row of every output, or the whole outputs
        parts = {name: _array_json(array if row is None else array[row], outputs[name].dtype,
                                   outputs[name].dtype == types_pb2.DT_STRING and name.endswith("_bytes"))
                 for name, array in arrays.items()}
        if len(parts) == 1:
            return next(iter(parts.values()))
        return "{" + ", ".join(f"{json.dumps(name)}: {text}" for name, text in parts.items()) + "}"

    if not row_format:
        return '{\n    "outputs": ' + tensors(None) + "\n}"
    batch = None
    for name, array in arrays.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    return '{\n    "predictions": [' + ",\n        ".join(tensors(i) for i in range(batch)) + "\n    ]\n}"


# -- tf.Example JSON (classify / regress) -------------------------------------------------------

def _feature_value(value, name: str, feature: feature_pb2.Feature) -> None:
    if value is None or isinstance(value, list) or _is_object(value):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    kind = ("bytes_list" if isinstance(value, (dict, str))
            else "float_list" if isinstance(value, float) else "int64_list")
    existing = feature.WhichOneof("kind")
    if existing not in (None, kind):
        raise invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {existing.removesuffix('_list')}")
    if isinstance(value, dict):
        value = _decode_b64(value)
    elif isinstance(value, str):
        value = value.encode("utf-8")
    elif kind == "float_list":
        _check_lossless(value, *_FLOAT)
    elif value > _INT64[1]:
        raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
    elif value < _INT64[0]:
        raise invalid_argument(f"Feature: {name} has an integer element below int64's range. Only int64 is "
                               "supported.")
    getattr(feature, kind).value.append(int(value) if isinstance(value, bool) else value)


def json_to_example(value) -> example_pb2.Example:
    """A JSON object (``{feature: value or list}``) as a tf.Example; strings are bytes features."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for v in (content if isinstance(content, list) else [content]):
            _feature_value(v, name, feature)
    return example


def fill_examples(doc: dict, request) -> None:
    """Copies the tf.Examples of a Classify or Regress body into a request.

    Args:
      doc: The JSON body: ``examples`` (a non-empty list) and optionally ``context``.
      request: The ClassificationRequest or RegressionRequest whose ``input`` is filled.
    """
    has_context = "context" in doc
    if has_context:
        request.input.example_list_with_context.context.CopyFrom(json_to_example(doc["context"]))
    examples = doc.get("examples")
    if examples is None:
        raise invalid_argument(f"JSON Value: {json_text(doc)} When method is classify, key 'examples' is "
                               "expected and was not found")
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {json_text(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {json_text(doc)} 'examples' value is an empty array")
    target = (request.input.example_list_with_context if has_context else request.input.example_list).examples
    target.extend(json_to_example(e) for e in examples)
