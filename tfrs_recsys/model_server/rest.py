"""TF Serving's REST API (model_servers/http_rest_api_handler.cc, util/json_tensor.cc).

``GET /v1/models/<name>[/versions/<v>|/labels/<l>]`` (status),
``GET .../metadata``, ``POST ...:predict|:classify|:regress``. Predict takes the row
form (``{"instances": [...]}``, answered with ``{"predictions": [...]}``) or the
columnar form (``{"inputs": ...}``, answered with ``{"outputs": ...}``); bytes travel
as ``{"b64": "..."}`` and string outputs whose name ends in ``_bytes`` are returned
that way. Floats are written as TF Serving writes them (shortest round-tripping
decimal, ``.0`` on whole numbers, ``NaN``/``Infinity``). Errors are
``{"error": "..."}`` with TF Serving's HTTP status for the gRPC code.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2, regression_pb2)

from tfrs_recsys.model_server.errors import ServingError, invalid_argument
from tfrs_recsys.model_server.model_manager import ModelManager
from tfrs_recsys.model_server.servable import DEFAULT_SIGNATURE
from tfrs_recsys.model_server.tensors import dtype_name, numpy_dtype, to_ndarray, to_proto

log = logging.getLogger("tfrs_recsys.model_server")

PATH_REGEX = re.compile(r"/v1/.*", re.IGNORECASE)
PREDICTION_REGEX = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE)
STATUS_REGEX = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)

_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


# -- JSON values -> tensors ---------------------------------------------------------------------

def _json_text(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not of expected type: {dtype_name(dtype)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lossless(value, digits: int, max_value: float) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return True
    if isinstance(value, int):
        return abs(value) <= (1 << digits) - 1
    return -max_value <= value <= max_value


def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value) -> bytes:
    if not is_b64(value):
        raise invalid_argument(f"JSON Value: {_json_text(value)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _scalar(value, dtype: int):
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF):
        if not _is_number(value):
            raise _type_error(value, dtype)
        digits, max_value, name = (53, 1.7976931348623157e308, "double") if dtype == types_pb2.DT_DOUBLE else (
            24, 3.4028234663852886e38, "float")
        if not _lossless(value, digits, max_value):
            raise invalid_argument(f"Cannot convert JSON value: {_json_text(value)} to {name} without loss of precision.")
        return float(value)
    if dtype in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8):
        if not (isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_INT64:
        if not (isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]):
            raise _type_error(value, dtype)
        return value
    if dtype in (types_pb2.DT_UINT32, types_pb2.DT_UINT64):
        top = 2 ** 32 - 1 if dtype == types_pb2.DT_UINT32 else 2 ** 64 - 1
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, dict):
            return _decode_b64(value)
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f"Conversion of JSON Value: {_json_text(value)} to type: {dtype_name(dtype)}")


def _dense_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], dtype: int, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(
                f"JSON Value: {_json_text(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(shape)}")
        if isinstance(value, dict) and dtype != types_pb2.DT_STRING:
            raise _type_error(value, dtype)
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}")
    for v in value:
        _fill(v, level + 1, shape, dtype, out)


def json_to_array(value, dtype: int) -> np.ndarray:
    """A (nested) JSON value as a dense array of ``dtype`` (json_tensor.cc FillTensorProto)."""
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    np_dtype = numpy_dtype(dtype)
    return np.array(flat, dtype=np_dtype).reshape(shape)


def _instances_to_inputs(instances: list, infos) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map")

    def is_object(v):
        return isinstance(v, dict) and not is_b64(v)

    named = is_object(instances[0])
    names = sorted(infos)
    rows: dict[str, list[np.ndarray]] = {}
    for i, item in enumerate(instances):
        if named:
            if not is_object(item):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            for key, value in item.items():
                if key not in infos:
                    raise invalid_argument(
                        f"Failed to process element: {i} key: {key} of 'instances' list. Error: "
                        f"INVALID_ARGUMENT: JSON object: does not have named input: {key}")
                try:
                    array = json_to_array(value, infos[key].dtype)
                except ServingError as e:
                    raise invalid_argument(
                        f"Failed to process element: {i} key: {key} of 'instances' list. Error: {e}") from None
                _check_same(rows.setdefault(key, []), array, i, key)
            if set(item) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: {_json_text(item)} keys must "
                    f"be equal to: {','.join(names)}")
        else:
            if is_object(item):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
            key = names[0]
            try:
                array = json_to_array(item, infos[key].dtype)
            except ServingError as e:
                raise invalid_argument(f"Failed to process element: {i} of 'instances' list. Error: {e}") from None
            _check_same(rows.setdefault(key, []), array, i, key)
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


def _columns_to_inputs(value, infos) -> dict[str, tensor_pb2.TensorProto]:
    if not isinstance(value, dict) or is_b64(value):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
                "tensorinfo_map")
        key = next(iter(infos))
        return {key: to_proto(json_to_array(value, infos[key].dtype), infos[key].dtype)}
    out = {}
    for key in sorted(infos):
        if key not in value:
            raise invalid_argument(f"Missing named input: {key} in 'inputs' object.")
        out[key] = to_proto(json_to_array(value[key], infos[key].dtype), infos[key].dtype)
    return out


# -- tensors -> JSON ----------------------------------------------------------------------------

def format_float(value: float, double: bool = False) -> str:
    """TF Serving's WriteDecimal: 6 significant digits when that round-trips, else full precision."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
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
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        return format_float(float(value))
    if dtype == types_pb2.DT_DOUBLE:
        return format_float(float(value), double=True)
    if dtype == types_pb2.DT_BOOL:
        return "true" if value else "false"
    return str(int(value))


def _array_json(array, dtype: int, as_bytes: bool) -> str:
    if isinstance(array, np.ndarray) and array.ndim > 0:
        return "[" + ", ".join(_array_json(a, dtype, as_bytes) for a in array) + "]"
    return _value_json(array.item() if hasattr(array, "item") else array, dtype, as_bytes)


def outputs_json(outputs: dict[str, tensor_pb2.TensorProto], row_format: bool) -> str:
    """A PredictResponse's outputs as ``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    arrays = {name: to_ndarray(proto, name) for name, proto in outputs.items()}
    dtypes = {name: proto.dtype for name, proto in outputs.items()}
    as_bytes = {name: dtypes[name] == types_pb2.DT_STRING and name.endswith("_bytes") for name in outputs}
    if row_format:
        batch = None
        for name, array in arrays.items():
            if array.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch is not None and array.shape[0] != batch:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
            batch = array.shape[0]
        items = []
        for i in range(batch):
            if len(arrays) > 1:
                items.append("{" + ", ".join(
                    f"{json.dumps(n)}: {_array_json(a[i], dtypes[n], as_bytes[n])}" for n, a in arrays.items()) + "}")
            else:
                (n, a), = arrays.items()
                items.append(_array_json(a[i], dtypes[n], as_bytes[n]))
        return '{\n    "predictions": [' + ",\n        ".join(items) + "\n    ]\n}"
    if len(arrays) > 1:
        body = "{" + ", ".join(
            f"{json.dumps(n)}: {_array_json(a, dtypes[n], as_bytes[n])}" for n, a in arrays.items()) + "}"
    else:
        (n, a), = arrays.items()
        body = _array_json(a, dtypes[n], as_bytes[n])
    return '{\n    "outputs": ' + body + "\n}"


# -- tf.Example JSON (classify / regress) -------------------------------------------------------

def _feature_value(value, name: str, feature: feature_pb2.Feature) -> None:
    kind = feature.WhichOneof("kind")

    def expect(wanted: str):
        if kind not in (None, wanted):
            label = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}[kind]
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {label}")

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not is_b64(value)):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    if isinstance(value, bool):
        expect("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict):
        expect("bytes_list")
        feature.bytes_list.value.append(_decode_b64(value))
    elif isinstance(value, str):
        expect("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float):
        expect("float_list")
        if not _lossless(value, 24, 3.4028234663852886e38):
            raise invalid_argument(f"Cannot convert JSON value: {_json_text(value)} to float without loss of precision.")
        feature.float_list.value.append(value)
    else:
        expect("int64_list")
        if value > _INT64[1]:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)


def json_to_example(value) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for v in (content if isinstance(content, list) else [content]):
            _feature_value(v, name, feature)
    return example


def _fill_examples(doc: dict, request) -> None:
    has_context = "context" in doc
    if has_context:
        request.input.example_list_with_context.context.CopyFrom(json_to_example(doc["context"]))
    examples = doc.get("examples")
    if examples is None:
        raise invalid_argument(
            f"JSON Value: {_json_text(doc)} When method is classify, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {_json_text(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {_json_text(doc)} 'examples' value is an empty array")
    target = request.input.example_list_with_context.examples if has_context else request.input.example_list.examples
    for e in examples:
        target.add().CopyFrom(json_to_example(e))


# -- the API ------------------------------------------------------------------------------------

def _parse_json(body: bytes) -> dict:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_json_text(doc)} Is not object")
    return doc


class RestApi:
    """Request dispatch of TF Serving's HttpRestApiHandler: ``handle(method, path, body)``."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        """(HTTP status, JSON body) for one request; never raises."""
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as e:
            return e.http_status, json.dumps({"error": e.message}, indent=1)
        except Exception as e:
            log.exception("REST request failed")
            return 500, json.dumps({"error": f"{type(e).__name__}: {e}"})

    @staticmethod
    def _spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
        if version is not None:
            try:
                spec.version.value = int(version)
            except ValueError:
                raise invalid_argument(f"Failed to convert version: {version} to numeric.") from None
        if label is not None:
            spec.version_label = urllib.parse.unquote(label)
        return spec

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICTION_REGEX.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, verb = match.groups()
            spec = self._spec(name, version, label)
            verb = verb.lower()
            if verb == "predict":
                return self._predict(spec, body)
            if verb == "classify":
                return self._classify(spec, body)
            return self._regress(spec, body)
        if method == "GET":
            match = STATUS_REGEX.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, sub = match.groups()
            if not name:
                raise invalid_argument("Missing model name in request.")
            spec = self._spec(name, version, label)
            return self._metadata(spec) if sub else self._status(spec)
        raise malformed

    def _status(self, spec: model_pb2.ModelSpec) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(spec)
        response = self.manager.model_status(request)
        return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1)

    def _metadata(self, spec: model_pb2.ModelSpec) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(spec)
        response = self.manager.model_metadata(request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True, indent=1)
        return ('{\n"model_spec":' + json_format.MessageToJson(response.model_spec, **options) + ",\n"
                '"metadata": {"signature_def": ' + json_format.MessageToJson(signature_defs, **options) + "}\n}\n")

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        doc = _parse_json(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument(
                f"JSON Value: {_json_text(doc)} not formatted correctly. 'signature_name' key must be a string value.")
        with self.manager.handle(spec) as servable:
            name = signature_name or DEFAULT_SIGNATURE
            signature = servable.signature_defs.get(name)
            if signature is None:
                raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
            infos = signature.inputs
            if not infos:
                raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
            if "instances" in doc and "inputs" in doc:
                raise invalid_argument(
                    f"JSON Value: {_json_text(doc)} Not formatted correctly expecting only one of 'inputs' or "
                    "'instances' keys to exist ")
            if "instances" in doc:
                instances = doc["instances"]
                if not isinstance(instances, list):
                    raise invalid_argument(f"JSON Value: {_json_text(doc)} Excepting 'instances' to be an list/array")
                if not instances:
                    raise invalid_argument(f"JSON Value: {_json_text(doc)} No values in 'instances' array")
                inputs, row_format = _instances_to_inputs(instances, infos), True
            elif "inputs" in doc:
                inputs, row_format = _columns_to_inputs(doc["inputs"], infos), False
            else:
                raise invalid_argument("Missing 'inputs' or 'instances' key")
            request = predict_pb2.PredictRequest()
            request.model_spec.CopyFrom(spec)
            request.model_spec.signature_name = signature_name
            for key, proto in inputs.items():
                request.inputs[key].CopyFrom(proto)
            response = servable.predict(request)
        return outputs_json(dict(response.outputs), row_format)

    def _classify(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        doc = _parse_json(body)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.CopyFrom(spec)
        self._signature_name(doc, request)
        _fill_examples(doc, request)
        with self.manager.handle(spec) as servable:
            result = servable.classify(request).result
        if not result.classifications:
            raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
        rows = ["[" + ", ".join(f"[{json.dumps(c.label)}, {format_float(c.score)}]" for c in cl.classes) + "]"
                for cl in result.classifications]
        return '{\n    "results": [' + ",\n        ".join(rows) + "\n    ]\n}"

    def _regress(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        doc = _parse_json(body)
        request = regression_pb2.RegressionRequest()
        request.model_spec.CopyFrom(spec)
        self._signature_name(doc, request)
        _fill_examples(doc, request)
        with self.manager.handle(spec) as servable:
            result = servable.regress(request).result
        if not result.regressions:
            raise invalid_argument("Cannot convert empty RegressionResults to JSON")
        return '{\n    "results": [' + ", ".join(format_float(r.value) for r in result.regressions) + "]\n}"

    @staticmethod
    def _signature_name(doc: dict, request) -> None:
        name = doc.get("signature_name", "")
        if not isinstance(name, str):
            raise invalid_argument(
                f"JSON Value: {_json_text(doc)} not formatted correctly. 'signature_name' key must be a string value.")
        request.model_spec.signature_name = name


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: RestApi

    def _serve(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not PATH_REGEX.fullmatch(path):
            status, text = 404, ""
        else:
            status, text = self.api.handle(method, path, body)
        payload = text.encode("utf-8")
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def log_message(self, format, *args):
        log.debug("REST %s", format % args)


class RestServer:
    """A threaded HTTP/1.1 server for :class:`RestApi` on ``host:port`` (``port=0``: any free port)."""

    def __init__(self, manager: ModelManager, host: str = "127.0.0.1", port: int = 8501):
        handler = type("Handler", (_Handler,), {"api": RestApi(manager)})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest", daemon=True)

    def start(self) -> "RestServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
