"""Property-based fuzzing of the model server, every layer of both front ends, seeded.

One server process serves the fixture models; hypothesis draws hostile input for each layer:

* gRPC: raw message bytes (random, and mutations of a valid request) to every method; then
  well-formed protos with hostile model specs, shapes, dtypes and values.
* REST: random bytes as the request line, the headers and the framing over a raw socket; then
  random and hostile JSON bodies on the real routes.

Every case asserts that the server answers within a deadline, with a client error (gRPC: not
INTERNAL / UNKNOWN / UNAVAILABLE; REST: a 4xx with a JSON ``error``) when the input is bad, and
the server process stays up. After each layer a fixed valid request must get the same answer
as before. The fast suite draws ``FAST`` cases per layer (2,000 in all); ``make test-slow``
draws ``SLOW`` per layer (20,000 in all).
"""
import json
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
import serving_fixtures as fx
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tfrs_recsys  # noqa: F401

FAST, SLOW = 500, 5000
DEADLINE_S = 10.0
SERVER_FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                   grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DATA_LOSS}
METHODS = [
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
]
MODELS = ["utility", "ranker", "retrieval", "examples"]
SIGNATURES = ["serving_default", "echo", "matrix", "batch_size", "count", "query_with_exclusions"]
INPUT_NAMES = ["x", "payload", "m", "price", "user_id", "history", "genres", "device", "item_id"]
DTYPES = [types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64,
          types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF, types_pb2.DT_UINT8,
          types_pb2.DT_COMPLEX64, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, types_pb2.DT_INVALID, 999]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    config = fx.write_all(base)
    process = fx.start_server(base, [f"--model_config_file={config}",
                                     "--allow_version_labels_for_unavailable_models",
                                     "--max_request_elements=100000", "--max_request_bytes=1000000"])
    channel = grpc.insecure_channel(process.address)
    yield process, channel
    channel.close()
    assert process.stop() == 0, process.log_tail()


def _valid_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "utility"
    request.model_spec.version.value = 1
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.5], np.float32)))
    return request


def _fixed_answers(process, channel) -> tuple:
    """The answers to a fixed valid gRPC and REST request; must not change under fuzzing."""
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(_valid_request(),
                                                                                timeout=DEADLINE_S)
    rest = httpx.post(f"{process.rest_url}/v1/models/utility/versions/1:predict",
                      json={"instances": [1.0, 2.5]}, timeout=DEADLINE_S)
    return tf.make_ndarray(reply.outputs["y"]).tolist(), rest.status_code, rest.json()


@pytest.fixture(scope="module")
def baseline(server):
    answers = _fixed_answers(*server)
    assert answers[0] == [3.0, 6.0]
    return answers


def _after_layer(server, baseline):
    process, channel = server
    assert process.proc.poll() is None, f"server exited:\n{process.log_tail()}"
    assert _fixed_answers(process, channel) == baseline


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# -- gRPC: raw bytes -----------------------------------------------------------------------------

_VALID_BYTES = _valid_request().SerializeToString()


@st.composite
def _mutated(draw) -> bytes:
    data = bytearray(_VALID_BYTES)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at] = bytes(data[at:at + draw(st.integers(1, 32))]) * draw(st.integers(1, 8))
    return bytes(data)


_RAW_MESSAGES = st.one_of(st.binary(max_size=256), _mutated())


def _raw_call(channel, method: str, payload: bytes):
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        call(payload, timeout=DEADLINE_S)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _check_grpc(code, details):
    assert code not in SERVER_FAILURES, (code, details)


def _fuzz_raw_grpc(server, n):
    _, channel = server

    @_settings(n)
    @given(method=st.sampled_from(METHODS), payload=_RAW_MESSAGES)
    def case(method, payload):
        _check_grpc(*_raw_call(channel, method, payload))

    case()


def test_grpc_raw_bytes(server, baseline):
    _fuzz_raw_grpc(server, FAST)
    _after_layer(server, baseline)


@pytest.mark.slow
def test_grpc_raw_bytes_long(server, baseline):
    _fuzz_raw_grpc(server, SLOW)
    _after_layer(server, baseline)


# -- gRPC: well-formed protos with hostile contents ----------------------------------------------

_HOSTILE_TEXT = st.one_of(st.sampled_from(MODELS + SIGNATURES + INPUT_NAMES),
                          st.text(max_size=40), st.just("x" * 100_000), st.just("../../etc"))
_DIMS = st.lists(st.one_of(st.integers(-3, 8), st.sampled_from([0, 1 << 20, 1 << 31, (1 << 62), -(1 << 40)])),
                 max_size=5)
_FLOATS = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                             st.sampled_from([3e38, -3e38, 1e-45])), max_size=20)


@st.composite
def _tensor(draw) -> tensor_pb2.TensorProto:
    dims = draw(_DIMS)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims],
        unknown_rank=draw(st.booleans()) and draw(st.booleans()))
    tensor = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(DTYPES)), tensor_shape=shape)
    content = draw(st.sampled_from(["float", "double", "int", "int64", "string", "bool", "bytes", "none"]))
    if content == "float":
        tensor.float_val.extend(draw(_FLOATS))
    elif content == "double":
        tensor.double_val.extend(draw(st.lists(st.floats(), max_size=20)))
    elif content == "int":
        tensor.int_val.extend(draw(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=20)))
    elif content == "int64":
        tensor.int64_val.extend(draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=20)))
    elif content == "string":
        tensor.string_val.extend(draw(st.lists(st.binary(max_size=64), max_size=20)))
    elif content == "bool":
        tensor.bool_val.extend(draw(st.lists(st.booleans(), max_size=20)))
    elif content == "bytes":
        tensor.tensor_content = draw(st.binary(max_size=256))
    return tensor


@st.composite
def _predict_request(draw) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(_HOSTILE_TEXT)
    if draw(st.booleans()):
        request.model_spec.signature_name = draw(_HOSTILE_TEXT)
    version = draw(st.sampled_from(["none", "number", "label"]))
    if version == "number":
        request.model_spec.version.value = draw(st.integers(-(1 << 63), (1 << 63) - 1))
    elif version == "label":
        request.model_spec.version_label = draw(_HOSTILE_TEXT)
    for name in draw(st.lists(_HOSTILE_TEXT, max_size=4)):
        request.inputs[name].CopyFrom(draw(_tensor()))
    request.output_filter.extend(draw(st.lists(_HOSTILE_TEXT, max_size=3)))
    return request


def _fuzz_protos(server, n):
    _, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    @_settings(n)
    @given(request=_predict_request())
    def case(request):
        try:
            stub.Predict(request, timeout=DEADLINE_S)
        except grpc.RpcError as e:
            _check_grpc(e.code(), e.details())
            assert len(e.details()) < 4096, "an error must not echo a long input back"

    case()


def test_grpc_hostile_protos(server, baseline):
    _fuzz_protos(server, FAST)
    _after_layer(server, baseline)


@pytest.mark.slow
def test_grpc_hostile_protos_long(server, baseline):
    _fuzz_protos(server, SLOW)
    _after_layer(server, baseline)


# -- REST: request line, headers, framing --------------------------------------------------------

_TOKENS = [b"GET", b"POST", b"HEAD", b"PUT", b"PATCH", b"OPTIONS", b"TRACE", b"BREW", b"",
           b"/v1/models/utility", b"/v1/models/utility:predict", b"/v1/models/utility/versions/1:predict",
           b"/v1/models/utility/labels/stable", b"/", b"*", b"/v1/models/" + b"a" * 5000,
           b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1\r\n",
           b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 1e18",
           b"Content-Length: 99999999999",
           b"Content-Length: 10", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
           b"Host: 127.0.0.1", b"Expect: 100-continue", b"Connection: close", b"X: " + b"y" * 20000,
           b"\r\n", b"\r\n\r\n", b"\n", b" ", b":", b"\x00", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
           b'{"instances": [1.0]}', b"0\r\n\r\n", b"5\r\nhello\r\n", b"zz\r\n"]


@st.composite
def _http_bytes(draw) -> bytes:
    parts = draw(st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=24)), min_size=1,
                          max_size=14))
    joiner = draw(st.sampled_from([b" ", b"\r\n", b""]))
    return joiner.join(parts) + draw(st.sampled_from([b"", b"\r\n\r\n", b"\r\n"]))


def _raw_http(process, payload: bytes) -> bytes:
    """Sends ``payload``, half-closes, and reads the whole answer (the server must finish it)."""
    with socket.create_connection(("127.0.0.1", process.rest_port), timeout=DEADLINE_S) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks, start = [], time.monotonic()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            assert time.monotonic() - start < DEADLINE_S, "answer not finished within the deadline"


def _first_response(answer: bytes) -> tuple[int | None, dict, bytes]:
    """The status, headers and body of the first response in ``answer`` (``None`` when there is none)."""
    head, _, rest = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        return None, {}, b""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0") or 0)
    return int(status[1]), headers, rest[:length]


def _fuzz_http(server, n):
    process, _ = server

    @_settings(n)
    @given(payload=_http_bytes())
    def case(payload):
        answer = _raw_http(process, payload)
        status, _, body = _first_response(answer)
        # a connection closed before a whole request line may go unanswered, but never with a non-HTTP
        # answer; an answer is never a server error (503 only as the connection limit's answer)
        assert status is not None or answer == b"", answer[:300]
        if status is None:
            return
        assert status < 500 or status == 503, answer[:300]
        if status >= 400 and body:
            assert "error" in json.loads(body), answer[:300]

    case()


def test_rest_request_line_headers_framing(server, baseline):
    _fuzz_http(server, FAST)
    _after_layer(server, baseline)


@pytest.mark.slow
def test_rest_request_line_headers_framing_long(server, baseline):
    _fuzz_http(server, SLOW)
    _after_layer(server, baseline)


# -- REST: JSON bodies ---------------------------------------------------------------------------

_KEYS = st.sampled_from(["instances", "inputs", "signature_name", "b64", "x", "payload", "m", "examples",
                         "context", "price", "user_id"]) | st.text(max_size=8)
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=False),
              st.text(max_size=20), st.sampled_from([1e308, -1e308, 3e38, "b64", "\ud800"])),
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(_KEYS, children, max_size=5)),
    max_leaves=30)
_ROUTES = ["utility:predict", "utility/versions/1:predict", "utility/labels/canary:predict", "ranker:predict",
           "retrieval:predict", "examples:classify", "examples:regress", "utility:classify", "nosuch:predict",
           "utility", "utility/versions/9", "utility/labels/nosuch", "utility/metadata"]


@st.composite
def _json_body(draw) -> bytes:
    kind = draw(st.sampled_from(["json", "deep", "text"]))
    if kind == "json":
        return json.dumps(draw(_JSON)).encode()
    if kind == "deep":
        depth = draw(st.integers(100, 100_000))
        return b'{"instances": ' + b"[" * depth + b"]" * draw(st.sampled_from([0, depth])) + b"}"
    return draw(st.binary(max_size=128))


def _fuzz_json(server, n):
    process, _ = server
    http = httpx.Client(base_url=process.rest_url, timeout=DEADLINE_S)

    @_settings(n)
    @given(route=st.sampled_from(_ROUTES), body=_json_body(), method=st.sampled_from(["POST", "GET"]))
    def case(route, body, method):
        reply = http.request(method, f"/v1/models/{route}", content=body)
        assert reply.status_code < 500, (reply.status_code, reply.text[:300])
        if reply.status_code >= 400:
            assert "error" in reply.json(), reply.text[:300]

    try:
        case()
    finally:
        http.close()


def test_rest_json_bodies(server, baseline):
    _fuzz_json(server, FAST)
    _after_layer(server, baseline)


@pytest.mark.slow
def test_rest_json_bodies_long(server, baseline):
    _fuzz_json(server, SLOW)
    _after_layer(server, baseline)
