"""Hostile requests are refused before anything is allocated for them; the server answers valid ones after."""
import json
import socket
import sys
import threading

import grpc
import httpx
import numpy as np
import pytest
import serving_fixtures as fx
import tensorflow as tf
from side_by_side import run_side_by_side
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc, regression_pb2

import tfrs_recsys  # noqa: F401


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    fx.publish_utility(base)
    config = fx.models_config(base, {"utility": {}})
    process = fx.start_server(base, [f"--model_config_file={config}", "--max_request_elements=100000",
                                     "--max_request_bytes=1000000"])
    channel = grpc.insecure_channel(process.address)
    yield process, prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()
    assert process.stop() == 0, process.log_tail()


def _request(tensor: tensor_pb2.TensorProto, signature: str = "serving_default", name: str = "x"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "utility"
    request.model_spec.signature_name = signature
    request.inputs[name].CopyFrom(tensor)
    return request


def _declared(dims: list[int], dtype=types_pb2.DT_FLOAT, **values) -> tensor_pb2.TensorProto:
    dim = tensor_shape_pb2.TensorShapeProto.Dim
    shape = tensor_shape_pb2.TensorShapeProto(dim=[dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)


def _status(stub, request) -> grpc.StatusCode:
    try:
        stub.Predict(request, timeout=30)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _still_answers(stub):
    reply = stub.Predict(_request(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32))), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(reply.outputs["y"]), [3.0, 5.0])


@pytest.mark.parametrize("tensor, words", [
    # a few hundred bytes declaring 5e7 floats (200 MB) or 1e7 strings: refused before anything is filled
    (_declared([50_000_000], float_val=[1.0]), "declares shape [50000000] (50000000 values) but holds 1"),
    (_declared([10_000_000], types_pb2.DT_STRING, string_val=[b"a"]), "holds 1"),
    (_declared([4], tensor_content=np.zeros(2, np.float32).tobytes()), "holds 2"),
    (_declared([90_000], types_pb2.DT_STRING, tensor_content=b"\x01a"),
     "tensor_content of 2 bytes holds fewer"),
    (_declared([-5], float_val=[1.0]), "negative dimension"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        unknown_rank=True), float_val=[1.0]), "unknown rank"),
    # exact, but over --max_request_elements
    (tf.make_tensor_proto(np.zeros(200_000, np.float32)), "--max_request_elements=100000"),
])
def test_a_tensor_that_does_not_hold_its_shape_is_invalid(server, tensor, words):
    _, stub = server
    request = _request(tensor, "echo", "payload") if tensor.dtype == types_pb2.DT_STRING else _request(tensor)
    code, details = _status(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, details
    _still_answers(stub)


def test_a_small_broadcast_still_reads_as_tensorflow_does(server):
    _, stub = server
    reply = stub.Predict(_request(_declared([8], float_val=[1.5])), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(reply.outputs["y"]), [4.0] * 8)


def test_a_message_over_max_request_bytes_is_refused(server):
    _, stub = server
    code, _ = _status(stub, _request(tf.make_tensor_proto(np.zeros(400_000, np.float32))))  # 1.6 MB
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    _still_answers(stub)


def _raw_http(server_process, head: bytes) -> bytes:
    """The whole answer to ``head``: the server closes the connection after refusing a body."""
    with socket.create_connection(("127.0.0.1", server_process.rest_port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_rest_bodies_are_capped_before_they_are_read(server):
    process, stub = server
    path = b"POST /v1/models/utility:predict HTTP/1.1\r\nHost: x\r\n"
    too_big = _raw_http(process, path + b"Content-Length: 1000000000000000000\r\n\r\n")  # nothing follows
    assert too_big.startswith(b"HTTP/1.1 413") and b"--max_request_bytes=1000000" in too_big
    for length in (b"-5", b"1e18", b"abc"):
        bad = _raw_http(process, path + b"Content-Length: " + length + b"\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400") and b"Invalid Content-Length" in bad, bad
    nested = b"[" * 100_000 + b"]" * 100_000
    deep = httpx.post(f"{process.rest_url}/v1/models/utility:predict", content=nested, timeout=30)
    assert deep.status_code == 400 and "nests too deeply" in deep.json()["error"]
    empties = b'{"instances": [' + b",".join([b"[]"] * 300_000) + b"]}"  # 1.2 MB: 0.6M values, no element
    many = httpx.post(f"{process.rest_url}/v1/models/utility:predict", content=empties[:999_000] + b"]}",
                      timeout=30)  # refused before it is parsed (the cap is 100,000 elements here)
    assert many.status_code == 400 and "--max_request_elements=100000" in many.json()["error"]
    ok = httpx.post(f"{process.rest_url}/v1/models/utility:predict", content=json.dumps({"instances": [1.0]}))
    assert ok.json() == {"predictions": [3.0]}
    _still_answers(stub)


def test_client_errors_are_answered_as_client_errors(server):
    process, stub = server
    url = f"{process.rest_url}/v1/models/utility:predict"
    for method in ("PATCH", "OPTIONS", "TRACE", "PUT", "DELETE"):
        answer = httpx.request(method, url, timeout=30)
        assert answer.status_code == 400 and "Malformed request" in answer.json()["error"], method
    head = httpx.head(f"{process.rest_url}/v1/models/utility", timeout=30)
    assert head.status_code == 400 and head.content == b""
    surrogate = httpx.post(f"{process.rest_url}/v1/models/utility/versions/1:predict", timeout=30,
                           content=b'{"signature_name": "echo", "instances": ["\\ud800"]}')
    assert surrogate.status_code == 400 and "not valid Unicode" in surrogate.json()["error"]
    huge = httpx.post(url, timeout=30, content=b'{"instances": [' + b"9" * 5000 + b"]}")  # Python's int limit
    assert huge.status_code == 400 and "JSON Parse error" in huge.json()["error"]
    _still_answers(stub)


def test_flags_out_of_range_are_refused_and_a_port_in_use_is_named_before_models_load(server, tmp_path):
    process, _ = server

    def command(*flags):
        return [sys.executable, "-m", "tfrs_recsys.model_server", *flags, f"--model_base_path={tmp_path}"]

    flags = ("--port=70000", "--max_request_bytes=-1", "--max_request_elements=0", "--grpc_max_threads=-2")
    # six independent command lines, started together (each spends seconds loading TensorFlow)
    *refusals, in_use, rest_in_use = run_side_by_side(
        [command(flag) for flag in flags]
        + [command(f"--port={process.grpc_port}", "--rest_api_port=0"),
           command("--port=0", f"--rest_api_port={process.rest_port}")], timeout=120, cwd=fx.REPO)
    for flag, refused in zip(flags, refusals):
        assert refused.returncode == 2 and flag.split("=")[0] in refused.stderr, (flag, refused.stderr)
    assert in_use.returncode == 1 and "could not bind gRPC" in in_use.stderr and "--port" in in_use.stderr
    assert rest_in_use.returncode == 1 and "could not bind REST" in rest_in_use.stderr
    assert "--rest_api_port" in rest_in_use.stderr


def test_idle_connections_close_and_a_context_is_not_multiplied_past_the_cap(tmp_path):
    """A connection with no call is closed after --grpc_max_connection_idle_ms; a Regress whose context,
    merged into each example, would make more than 64 MiB is refused before it is merged."""
    fx.publish_tf1_examples(tmp_path)
    config = fx.models_config(tmp_path, {"examples": {}})
    process = fx.start_server(tmp_path, [f"--model_config_file={config}",
                                         "--grpc_max_connection_idle_ms=1000"])
    try:
        idle = socket.create_connection(("127.0.0.1", process.grpc_port), timeout=20)
        idle.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        while idle.recv(4096):  # the server's settings, then its GOAWAY, then the end
            pass
        idle.close()
        request = regression_pb2.RegressionRequest()
        request.model_spec.name, request.model_spec.signature_name = "examples", "regress_x"
        examples = request.input.example_list_with_context
        examples.context.features.feature["junk"].bytes_list.value.append(b"a" * 400_000)
        for value in range(200):  # 200 x 400 KB = 80 MB once merged
            examples.examples.add().features.feature["x"].float_list.value.append(float(value))
        with grpc.insecure_channel(process.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Regress(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "merged into each of the 200 examples" in refused.value.details()
            del examples.examples[100:]  # 40 MB: within the cap
            assert len(stub.Regress(request, timeout=60).result.regressions) == 100
    finally:
        assert process.stop() == 0, process.log_tail()


def test_calls_past_the_concurrent_rpc_limit_are_refused_not_queued_with_their_bytes(tmp_path):
    fx.publish_slow(tmp_path)
    server = fx.start_server(tmp_path, [f"--model_base_path={tmp_path / 'slow'}", "--model_name=slow",
                                        "--grpc_max_threads=1", "--grpc_max_concurrent_rpcs=2"])
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.address))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "slow"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([80000.0], np.float32)))  # ~0.8 s
        calls = [stub.Predict.future(request, timeout=60) for _ in range(5)]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        assert codes.count(grpc.StatusCode.OK) >= 1
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 2, codes  # at most 2 held at once
        from concurrent.futures import ThreadPoolExecutor

        from tfrs_recsys.serving.client import ServerUnavailableError, ServingClient

        with ServingClient(server.address, timeout=60) as client, ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(client.predict, "slow", {"x": np.array([80000.0], np.float32)})
                       for _ in range(4)]
            errors = [f.exception() for f in futures if f.exception() is not None]
        assert errors and all(isinstance(e, ServerUnavailableError) and "busy" in str(e) for e in errors)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
        assert stub.Predict(request, timeout=30).outputs["y"].float_val == [1.0]  # served on afterwards
    finally:
        assert server.stop() == 0, server.log_tail()


def test_an_input_named_outside_ascii_is_told_how_signatures_name_it(server):
    process, stub = server
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(_request(tf.make_tensor_proto(np.array([1.0], np.float32)), name="Größe"), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    said = error.value.details()
    assert "not found in signature: Größe" in said and "named in ASCII" in said
    answer = httpx.post(f"{process.rest_url}/v1/models/utility:predict", json={"instances": [{"Größe": 1.0}]})
    assert answer.status_code == 400 and "named in ASCII" in answer.json()["error"]


@pytest.mark.parametrize("flags", [["--grpc_request_timeout_in_ms=1500"],  # each ends at the timeout
                                   ["--grpc_max_receiving_rpcs=3"]])  # newer calls make room at once
def test_calls_that_never_finish_sending_cannot_take_the_workers(tmp_path, flags):
    fx.publish_utility(tmp_path)
    server = fx.start_server(tmp_path, [f"--model_config_file={fx.models_config(tmp_path, {'utility': {}})}",
                                        "--grpc_max_threads=1", *flags])
    channel = grpc.insecure_channel(server.address)
    never_sent = threading.Event()

    def request_that_never_arrives():
        never_sent.wait()
        yield b""

    try:
        half_sent = channel.stream_unary("/tensorflow.serving.PredictionService/Predict")
        held = [half_sent.future(request_that_never_arrives()) for _ in range(8)]  # 8x the running calls
        if "--grpc_max_receiving_rpcs=3" in flags:  # the 5 oldest made room for the newer ones
            fx.wait_for(lambda: sum(call.done() for call in held) >= 5, timeout=20, message="room made")
        _still_answers(prediction_service_pb2_grpc.PredictionServiceStub(channel))
        # the timeout ends all 8; a limit of 3 leaves the newest 2 receiving (the answered call made room)
        want = 8 if "--grpc_request_timeout_in_ms=1500" in flags else 6
        fx.wait_for(lambda: sum(call.done() for call in held) >= want, timeout=20, message="calls ended")
        assert {call.code() for call in held if call.done()} == {grpc.StatusCode.CANCELLED}
        assert "Traceback" not in server.log_tail()  # ending such a call is routine, not an error
    finally:
        never_sent.set()
        channel.close()
        assert server.stop() == 0, server.log_tail()
