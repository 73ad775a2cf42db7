"""TF Serving's REST API (model_servers/http_rest_api_handler.cc) over a :class:`ModelManager`.

``GET /v1/models/<name>[/versions/<v>|/labels/<l>]`` (status), ``GET .../metadata``,
``POST ...:predict|:classify|:regress``; the JSON bodies are read and written by
:mod:`tfrs_recsys.model_server.json_tensor`. Errors are ``{"error": "..."}`` with TF Serving's
HTTP status for the gRPC code.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

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


def _parse_json(body: bytes) -> dict:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {json_text(doc)} Is not object")
    return doc


def _signature_name(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {json_text(doc)} not formatted correctly. 'signature_name' key "
                               "must be a string value.")
    return name


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
        match = None
        if method == "POST":
            match = PREDICTION_REGEX.fullmatch(path)
        elif method == "GET":
            match = STATUS_REGEX.fullmatch(path)
        if not match:
            raise invalid_argument(f"Malformed request: {method} {path}")
        name, version, label, action = match.groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        spec = self._spec(name, version, label)
        if method == "GET":
            return self._metadata(spec) if action else self._status(spec)
        handlers = {"predict": self._predict, "classify": self._classify, "regress": self._regress}
        return handlers[action.lower()](spec, body)

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
                '"metadata": {"signature_def": ' + json_format.MessageToJson(signature_defs, **options)
                + "}\n}\n")

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        doc = _parse_json(body)
        signature_name = _signature_name(doc)
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
            request = predict_pb2.PredictRequest(inputs=inputs)
            request.model_spec.CopyFrom(spec)
            request.model_spec.signature_name = signature_name
            response = servable.predict(request)
        return json_tensor.outputs_json(dict(response.outputs), row_format)

    def _examples_call(self, spec: model_pb2.ModelSpec, body: bytes, request, method: str):
        """Classify or Regress on the tf.Examples of a JSON body; returns the response's result."""
        doc = _parse_json(body)
        request.model_spec.CopyFrom(spec)
        request.model_spec.signature_name = _signature_name(doc)
        json_tensor.fill_examples(doc, request)
        with self.manager.handle(spec) as servable:
            return getattr(servable, method)(request).result

    def _classify(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        result = self._examples_call(spec, body, classification_pb2.ClassificationRequest(), "classify")
        if not result.classifications:
            raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
        rows = ["[" + ", ".join(f"[{json.dumps(c.label)}, {format_float(c.score)}]" for c in cl.classes) + "]"
                for cl in result.classifications]
        return '{\n    "results": [' + ",\n        ".join(rows) + "\n    ]\n}"

    def _regress(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        result = self._examples_call(spec, body, regression_pb2.RegressionRequest(), "regress")
        if not result.regressions:
            raise invalid_argument("Cannot convert empty RegressionResults to JSON")
        return '{\n    "results": [' + ", ".join(format_float(r.value) for r in result.regressions) + "]\n}"


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

    do_GET = functools.partialmethod(_serve, "GET")
    do_POST = functools.partialmethod(_serve, "POST")
    do_PUT = functools.partialmethod(_serve, "PUT")
    do_DELETE = functools.partialmethod(_serve, "DELETE")

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
