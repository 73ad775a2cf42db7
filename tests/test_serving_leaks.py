"""Bad gRPC requests are answered with the right code and leave no memory behind in the server process.

The slow loops send thousands of bad requests to a real server over loopback and measure the server
process's RSS (psutil) after a warm-up, so allocator pools and caches are already filled.
"""
import grpc
import numpy as np
import psutil
import pytest
import serving_fixtures as fx
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tfrs_recsys  # noqa: F401

UNDECODABLE = b"\xff\xff\xff\xff\x0f not a protobuf"  # a field-number varint that never ends


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("leaks")
    fx.publish_utility(base)
    fx.publish_failing(base)
    config = fx.models_config(base, {"utility": {}, "failing": {}})
    process = fx.start_server(base, [f"--model_config_file={config}"])
    channel = grpc.insecure_channel(process.address)
    yield process, channel
    channel.close()
    assert process.stop() == 0, process.log_tail()


def _predict(model: str, x: float) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([x], np.float32)))
    return request


def _code(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=30)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def _raw(channel, method: str):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


@pytest.mark.parametrize("method", ["/tensorflow.serving.PredictionService/Predict",
                                    "/tensorflow.serving.ModelService/GetModelStatus",
                                    "/tensorflow.serving.ModelService/HandleReloadConfigRequest"])
def test_undecodable_bytes_are_invalid_argument(server, method):
    _, channel = server
    with pytest.raises(grpc.RpcError) as info:
        _raw(channel, method)(UNDECODABLE, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "Could not parse the request as a tensorflow.serving." in info.value.details()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert stub.Predict(_predict("utility", 1.0), timeout=30).model_spec.version.value == 1


def _growth_per_request(process, call, request, code: grpc.StatusCode, n: int) -> float:
    """Bytes of server RSS added per request over ``n`` calls, after as many calls of warm-up."""
    rss = psutil.Process(process.proc.pid).memory_info
    for _ in range(n):
        assert _code(call, request) == code
    before = rss().rss
    for _ in range(n):
        _code(call, request)
    return (rss().rss - before) / n


N = 10_000


@pytest.mark.slow
def test_undecodable_bytes_leave_nothing_behind(server):
    """A raising request deserializer made grpcio 1.85 keep about 19 KB per call (190 MB here)."""
    process, channel = server
    call = _raw(channel, "/tensorflow.serving.PredictionService/Predict")
    growth = _growth_per_request(process, call, UNDECODABLE, grpc.StatusCode.INVALID_ARGUMENT, N)
    assert growth < 512, f"{growth:.0f} bytes per request"


@pytest.mark.slow
def test_requests_refused_before_running_leave_nothing_behind(server):
    process, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    wrong_input = predict_pb2.PredictRequest(model_spec={"name": "utility"},
                                             inputs={"z": tf.make_tensor_proto(np.array([1.0], np.float32))})
    for request, code in ((_predict("no_such_model", 1.0), grpc.StatusCode.NOT_FOUND),
                          (wrong_input, grpc.StatusCode.INVALID_ARGUMENT)):
        growth = _growth_per_request(process, stub.Predict, request, code, N)
        assert growth < 512, f"{code}: {growth:.0f} bytes per request"


@pytest.mark.slow
def test_a_failure_inside_the_model_costs_no_more_than_tensorflow_keeps(server):
    """TensorFlow 2.20 keeps every aborted function-call rendezvous, with its error, for the life of the
    process (LocalRendezvous::StartAbort in tensorflow/core/framework/local_rendezvous.cc): about 1 KB per
    failed call, the same for a bare ``ConcreteFunction`` called in a loop. The server must add nothing."""
    process, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    growth = _growth_per_request(process, stub.Predict, _predict("failing", -1.0),
                                 grpc.StatusCode.INVALID_ARGUMENT, N)
    assert growth < 1536, f"{growth:.0f} bytes per request"


def test_a_failure_inside_the_model_says_why_without_the_servers_code_paths(server):
    _, channel = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as failed:
        stub.Predict(_predict("failing", -1.0), timeout=30)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x must be positive" in failed.value.details()
    assert 'File "' not in failed.value.details() and "most recent call last" not in failed.value.details()
