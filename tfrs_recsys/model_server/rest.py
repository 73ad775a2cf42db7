"""TF Serving's REST API (model_servers/http_rest_api_handler.cc) over a :class:`ModelManager`.

``GET /v1/models/<name>[/versions/<v>|/labels/<l>]`` (status), ``GET .../metadata``,
``POST ...:predict|:classify|:regress``; the JSON bodies are read and written by
:mod:`tfrs_recsys.model_server.json_tensor`. Errors are ``{"error": "..."}`` with TF Serving's
HTTP status for the gRPC code. The HTTP server in front of it is
:mod:`tfrs_recsys.model_server.rest_http`.
"""
from __future__ import annotations

import json
import logging
import re
import urllib.parse

from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, predict_pb2, regression_pb2
from tensorflow_serving.apis.get_model_status_pb2 import GetModelStatusRequest
from tensorflow_serving.apis.model_pb2 import ModelSpec

from tfrs_recsys.model_server import json_tensor
from tfrs_recsys.model_server.errors import ServingError, invalid_argument
from tfrs_recsys.model_server.json_tensor import format_float, json_text
from tfrs_recsys.model_server.model_manager import ModelManager
from tfrs_recsys.model_server.servable import DEFAULT_SIGNATURE

log = logging.getLogger("tfrs_recsys.model_server")

PATH_REGEX = re.compile(r"/v1/.*", re.IGNORECASE)
_VERSION_OR_LABEL = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICTION_REGEX = re.compile(r"/v1/models/([^/:]+)" + _VERSION_OR_LABEL + r":(classify|regress|predict)",
                              re.IGNORECASE)
STATUS_REGEX = re.compile(r"/v1/models(?:/([^/:]+))?" + _VERSION_OR_LABEL + r"(?:/(metadata))?",
                          re.IGNORECASE)


def _parse_body(body: bytes, max_elements: int) -> tuple[dict, str]:
    """A request body's JSON object and its ``signature_name`` (``""`` when absent).

    Before parsing, the body's JSON values are bounded by its commas and opening brackets (a value is the
    first of its list or object, or follows a comma): over ``2 * max_elements + 1024`` is refused, since
    parsing millions of empty lists costs gigabytes before any tensor's elements can be counted.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    values = body.count(b",") + body.count(b"[") + body.count(b"{")
    if values > 2 * max_elements + 1024:
        raise invalid_argument(f"the body holds up to {values} JSON values, more than the server reads for "
                               f"--max_request_elements={max_elements}: send fewer values per request")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, or an integer of over 4,300 digits
        raise invalid_argument(f"JSON Parse error: {e}") from None
    except RecursionError:  # nesting deeper than the parser's stack: the client's error, not the server's
        raise invalid_argument("JSON Parse error: the document nests too deeply") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {json_text(doc)} Is not object")
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {json_text(doc)} not formatted correctly. 'signature_name' key "
                               "must be a string value.")
    return doc, name


class RestApi:
    """Request dispatch of TF Serving's HttpRestApiHandler.

    Args:
      manager: The manager whose models the requests reach.
    """

    def __init__(self, manager: ModelManager):
        self.manager = manager
        self.max_elements = manager.options.max_request_elements

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        """Answers one request; never raises.

        Args:
          method: The HTTP method.
          path: The URL path (``/v1/models/...``).
          body: The request body.

        Returns:
          ``(HTTP status, JSON body)``; an error is ``{"error": message}`` with TF Serving's status.
        """
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as e:
            return e.http_status, json.dumps({"error": e.message}, indent=1)
        except Exception as e:
            log.exception("REST request failed")
            return 500, json.dumps({"error": f"{type(e).__name__}: {e}"})

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        regex = {"POST": PREDICTION_REGEX, "GET": STATUS_REGEX}.get(method)
        match = regex.fullmatch(path) if regex else None
        if not match:
            raise invalid_argument(f"Malformed request: {method} {path}")
        name, version, label, action = match.groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        spec = ModelSpec(name=urllib.parse.unquote(name))
        if version is not None:
            try:
                spec.version.value = int(version)
            except ValueError:
                raise invalid_argument(f"Failed to convert version: {version} to numeric.") from None
        if label is not None:
            spec.version_label = urllib.parse.unquote(label)
        if method == "GET":
            return self._metadata(spec) if action else self._status(spec)
        handlers = {"predict": self._predict, "classify": self._classify, "regress": self._regress}
        return handlers[action.lower()](spec, body)

    def _status(self, spec: ModelSpec) -> str:
        if spec.WhichOneof("version_choice") == "version_label":
            # A label names one version (an unknown label is INVALID_ARGUMENT, as for Predict),
            # never "every version".
            with self.manager.handle(spec) as servable:
                spec = ModelSpec(name=spec.name, version={"value": servable.version})
        response = self.manager.model_status(GetModelStatusRequest(model_spec=spec))
        return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1)

    def _metadata(self, spec: ModelSpec) -> str:
        response = self.manager.model_metadata(
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"]))
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True, indent=1)
        return ('{\n"model_spec":' + json_format.MessageToJson(response.model_spec, **options) + ",\n"
                '"metadata": {"signature_def": ' + json_format.MessageToJson(signature_defs, **options)
                + "}\n}\n")

    def _predict(self, spec: ModelSpec, body: bytes) -> str:
        doc, signature_name = _parse_body(body, self.max_elements)
        with self.manager.handle(spec) as servable:
            name = signature_name or DEFAULT_SIGNATURE
            signature = servable.signature_defs.get(name)
            if signature is None:
                raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
            infos = signature.inputs
            if not infos:
                missing = signature_name or "DEFAULT"
                raise invalid_argument(f"Failed to get input map for signature: {missing}")
            if "instances" in doc and "inputs" in doc:
                raise invalid_argument(
                    f"JSON Value: {json_text(doc)} Not formatted correctly expecting only one of 'inputs' or "
                    "'instances' keys to exist ")
            if "instances" in doc:
                instances = doc["instances"]
                if not isinstance(instances, list):
                    raise invalid_argument(
                        f"JSON Value: {json_text(doc)} Excepting 'instances' to be an list/array")
                if not instances:
                    raise invalid_argument(f"JSON Value: {json_text(doc)} No values in 'instances' array")
                inputs, row_format = json_tensor.instances_to_inputs(instances, infos), True
            elif "inputs" in doc:
                inputs, row_format = json_tensor.columns_to_inputs(doc["inputs"], infos), False
            else:
                raise invalid_argument("Missing 'inputs' or 'instances' key")
            request = predict_pb2.PredictRequest(model_spec=spec, inputs=inputs)
            request.model_spec.signature_name = signature_name
            response = servable.predict(request)
        return json_tensor.outputs_json(dict(response.outputs), row_format)

    def _examples_call(self, spec: ModelSpec, body: bytes, request, method: str):
        """Classify or Regress on the tf.Examples of a JSON body; returns the response's result."""
        doc, signature_name = _parse_body(body, self.max_elements)
        request.model_spec.CopyFrom(spec)
        request.model_spec.signature_name = signature_name
        json_tensor.fill_examples(doc, request)
        with self.manager.handle(spec) as servable:
            return getattr(servable, method)(request).result

    def _classify(self, spec: ModelSpec, body: bytes) -> str:
        result = self._examples_call(spec, body, classification_pb2.ClassificationRequest(), "classify")
        if not result.classifications:
            raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
        rows = ["[" + ", ".join(f"[{json.dumps(c.label)}, {format_float(c.score)}]" for c in cl.classes) + "]"
                for cl in result.classifications]
        return '{\n    "results": [' + ",\n        ".join(rows) + "\n    ]\n}"

    def _regress(self, spec: ModelSpec, body: bytes) -> str:
        result = self._examples_call(spec, body, regression_pb2.RegressionRequest(), "regress")
        if not result.regressions:
            raise invalid_argument("Cannot convert empty RegressionResults to JSON")
        return '{\n    "results": [' + ", ".join(format_float(r.value) for r in result.regressions) + "]\n}"
