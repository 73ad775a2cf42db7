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


def _parse_body(body: bytes) -> tuple[dict, str]:
    """A request body's JSON object and its ``signature_name`` (``""`` when absent)."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
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
        doc, signature_name = _parse_body(body)
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
        doc, signature_name = _parse_body(body)
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: RestApi
    max_body_bytes: int

    def _serve(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit() or int(length) > self.max_body_bytes:  # checked before reading a byte of it
            self.close_connection = True
            status, text = ((400, "Invalid Content-Length header") if not length.isdigit() else
                            (413, f"Request body of {length} bytes is over --max_request_bytes="
                                  f"{self.max_body_bytes}"))
            text = json.dumps({"error": text})
        else:
            body = self.rfile.read(int(length))
            status, text = self.api.handle(method, path, body) if PATH_REGEX.fullmatch(path) else (404, "")
        payload = text.encode("utf-8")
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    do_GET = functools.partialmethod(_serve, "GET")
    do_POST = functools.partialmethod(_serve, "POST")
    # Other methods get TF Serving's JSON 400 ("Malformed request"), not the standard library's HTML 501.
    do_PUT = functools.partialmethod(_serve, "PUT")
    do_DELETE = functools.partialmethod(_serve, "DELETE")
    do_PATCH = functools.partialmethod(_serve, "PATCH")
    do_OPTIONS = functools.partialmethod(_serve, "OPTIONS")
    do_TRACE = functools.partialmethod(_serve, "TRACE")
    do_HEAD = functools.partialmethod(_serve, "HEAD")  # the same status and headers, no body

    def log_message(self, format, *args):
        log.debug("REST %s", format % args)


def start_rest_server(manager: ModelManager, host: str, port: int, *,
                      max_body_bytes: int = 64 << 20) -> ThreadingHTTPServer:
    """Serves :class:`RestApi` over HTTP/1.1 on ``host:port`` from a daemon thread.

    Args:
      manager: The manager whose models the requests reach.
      host: The address to bind.
      port: The port; 0 picks a free one.
      max_body_bytes: The largest request body read; a larger ``Content-Length`` gets 413 unread.

    Returns:
      The running server: ``server_address[1]`` is its port; ``shutdown()`` then ``server_close()`` stop it.

    Raises:
      OSError: The address cannot be bound.
    """
    handler = type("Handler", (_Handler,), {"api": RestApi(manager), "max_body_bytes": max_body_bytes})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="rest", daemon=True).start()
    return httpd
