"""Server-side batching (--enable_batching): concurrent Predict calls merged into one signature call.

The fixture's ``batch_size`` signature returns the batch size the model saw, so merging
is observable from outside the server.
"""
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest
import serving_fixtures as fx
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tfrs_recsys  # noqa: F401
from tfrs_recsys.model_server.batching import Batcher
from tfrs_recsys.model_server.config_file import (
    ConfigFileError,
    parse_batching_parameters,
    read_batching_parameters,
)
from tfrs_recsys.model_server.errors import ServingError

PARAMETERS = """
max_batch_size { value: 16 }
batch_timeout_micros { value: 400000 }
max_enqueued_batches { value: 4 }
num_batch_threads { value: 1 }
allowed_batch_sizes: 4
allowed_batch_sizes: 8
allowed_batch_sizes: 16
"""


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    base = tmp_path_factory.mktemp("batching")
    fx.publish_utility(base, "utility", version=1, scale=2.0)
    params = base / "batching_parameters.txt"
    params.write_text(PARAMETERS)
    server = fx.start_server(base, [f"--model_base_path={base / 'utility'}", "--model_name=utility",
                                    "--enable_batching", f"--batching_parameters_file={params}"])
    channel = grpc.insecure_channel(server.address)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()
    assert server.stop() == 0, server.log_tail()


def call(stub, x, signature="batch_size"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "utility", signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
    response = stub.Predict(request, timeout=30)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def concurrently(fn, args_list):
    barrier, results, errors = threading.Barrier(len(args_list)), [None] * len(args_list), []

    def run(i, args):
        barrier.wait()
        try:
            results[i] = fn(*args)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_concurrent_requests_are_merged_and_split_back(stub):
    xs = [[float(i)] for i in range(8)]
    results = concurrently(lambda x: call(stub, x), [(x,) for x in xs])
    for x, out in zip(xs, results):
        np.testing.assert_allclose(out["y"], 2.0 * np.array(x) + 1.0)  # each caller gets its own rows
    seen = Counter(int(out["batch_size"][0]) for out in results)
    # batches are padded to 4, 8 or 16 rows: a batch of 8 means at least 5 requests were merged
    assert max(seen) >= 8, seen


def test_requests_of_different_sizes_share_a_batch(stub):
    sizes = [3, 1, 2, 1]
    xs = [list(np.arange(n, dtype=np.float32) + 10 * i) for i, n in enumerate(sizes)]
    results = concurrently(lambda x: call(stub, x), [(x,) for x in xs])
    for x, out in zip(xs, results):
        assert out["y"].shape == (len(x),)
        np.testing.assert_allclose(out["y"], 2.0 * np.array(x) + 1.0)
    assert max(int(out["batch_size"][0]) for out in results) >= 8  # >= 5 rows: several requests merged


def test_a_lone_request_is_padded_to_an_allowed_batch_size(stub):
    out = call(stub, [5.0])
    assert out["y"].tolist() == [11.0]
    assert out["batch_size"].tolist() == [4]  # the model ran on 4 rows (allowed size), the caller got 1


def test_a_task_larger_than_max_batch_size_is_rejected(stub):
    with pytest.raises(grpc.RpcError) as info:
        call(stub, np.zeros(20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 20 is larger than maximum input batch size 16" in info.value.details()
    assert call(stub, [1.0], signature="serving_default")["y"].tolist() == [3.0]


def test_batching_parameters_file_parsing(tmp_path):
    options = parse_batching_parameters(PARAMETERS)
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads,
            options.allowed_batch_sizes) == (16, 400000, 1, (4, 8, 16))
    bad = tmp_path / "bad.txt"
    bad.write_text("max_batch_size { value: 8 }\nmax_batch_size: 3\n")
    with pytest.raises(ConfigFileError, match=r"bad\.txt:2"):
        read_batching_parameters(bad)
    with pytest.raises(ConfigFileError, match="must equal max_batch_size"):
        parse_batching_parameters("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    with pytest.raises(ConfigFileError, match="does not exist"):
        read_batching_parameters(tmp_path / "missing.txt")
    for text, message in (("max_enqueued_batches { value: 0 }", "max_enqueued_batches must be >= 1"),
                          ("max_execution_batch_size { value: -3 }", "max_execution_batch_size must be >= 1"),
                          ("batch_timeout_micros { value: 1000000000000000000 }",
                           "batch_timeout_micros must be <= 3600000000")):
        with pytest.raises(ConfigFileError, match=message):
            parse_batching_parameters(text)


def test_stopping_a_batcher_answers_the_tasks_it_still_holds():
    """A task waiting for company when its version unloads gets UNAVAILABLE at once, not a caller hung
    for the rest of the timeout (which kept the server from exiting)."""
    hour = "max_batch_size { value: 8 } batch_timeout_micros { value: 3600000000 }"
    options = parse_batching_parameters(hour)
    batcher = Batcher(lambda name, inputs, aliases: {"y": inputs["x"]}, options)
    outcome = {}

    def call():
        try:
            batcher("serving_default", {"x": np.zeros(1, np.float32)}, ["y"])
        except ServingError as e:
            outcome["code"] = e.code

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)
    batcher.stop()
    caller.join(timeout=10)
    assert not caller.is_alive() and outcome == {"code": grpc.StatusCode.UNAVAILABLE}


def test_the_shipped_config_files_parse():
    from tfrs_recsys.demo import MODELS
    from tfrs_recsys.model_server.config_file import read_model_server_config

    options = read_batching_parameters(fx.REPO / "export" / "batching_parameters.txt")
    assert options.max_batch_size >= 100  # a ranker request of 100 candidates fits one batch
    names = [m.name for m in
             read_model_server_config(fx.REPO / "export" / "models.config").model_config_list.config]
    assert names == list(MODELS)  # what `make demo` exports and serves
    stock = read_model_server_config(fx.REPO / "export" / "models.stock.config").model_config_list.config
    assert "retrieval" not in [m.name for m in stock]  # stock TF Serving has no ScaNN ops


def test_per_model_batching_parameters_batch_each_version_by_its_own_file(tmp_path):
    """--enable_per_model_batching_parameters: a version with batching_params.pbtxt is batched by it (its
    padding and its size limit, not the common file's); one without is served unbatched; a malformed one
    fails that version's load, naming the file (at start-up the server then does not start)."""
    fx.publish_utility(tmp_path, "own", version=1, scale=2.0)
    (tmp_path / "own" / "1" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1000 }\nallowed_batch_sizes: 2\n"
        "allowed_batch_sizes: 4\n")
    fx.publish_utility(tmp_path, "plain", version=1, scale=2.0)
    fx.publish_utility(tmp_path, "broken", version=1, scale=2.0)
    (tmp_path / "broken" / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 0 }\n")
    params = tmp_path / "batching_parameters.txt"
    params.write_text(PARAMETERS)
    flags = ["--enable_batching", f"--batching_parameters_file={params}",
             "--enable_per_model_batching_parameters", "--max_num_load_retries=0"]

    refused = fx.start_server(tmp_path, [f"--model_config_file={fx.models_config(tmp_path, {'broken': {}})}",
                                         *flags], ready=False)
    assert refused.proc.wait(timeout=120) != 0
    assert "INVALID_ARGUMENT" in refused.log_tail() and "batching_params.pbtxt" in refused.log_tail()

    config = fx.models_config(tmp_path, {"own": {}, "plain": {}})
    server = fx.start_server(tmp_path, [f"--model_config_file={config}", *flags])
    channel = grpc.insecure_channel(server.address)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def predict(model, x):
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = model, "batch_size"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
            return {k: tf.make_ndarray(v) for k, v in stub.Predict(request, timeout=30).outputs.items()}

        assert predict("own", [5.0])["batch_size"].tolist() == [2]  # padded to its own smallest size
        with pytest.raises(grpc.RpcError) as info:
            predict("own", np.zeros(5))
        assert "Task size 5 is larger than maximum input batch size 4" in info.value.details()
        out = predict("plain", np.arange(20, dtype=np.float32))  # the common file would refuse 20 rows
        assert set(out["batch_size"].tolist()) == {20}  # one call on its own 20 rows: not batched
        np.testing.assert_allclose(out["y"], 2.0 * np.arange(20) + 1.0)
    finally:
        channel.close()
        assert server.stop() == 0, server.log_tail()


def test_a_request_of_no_rows_is_run_as_sent_and_no_queue_outlives_its_tasks():
    """Padded to an allowed batch size, a [0, H] request would become [8, H] values the client never sent
    (H of its choosing: gigabytes from 58 bytes); and a queue kept per request shape would grow forever."""
    options = parse_batching_parameters("max_batch_size { value: 8 } batch_timeout_micros { value: 1000 } "
                                        "allowed_batch_sizes: 8")
    seen = []
    batcher = Batcher(lambda name, inputs, aliases: seen.append(inputs["x"].shape) or {"y": inputs["x"]},
                      options)
    try:
        empty = batcher("serving_default", {"x": np.zeros((0, 1 << 20), np.float32)}, ["y"])
        assert empty["y"].shape == (0, 1 << 20) and seen == [(0, 1 << 20)]
        for width in range(1, 40):
            batcher("serving_default", {"x": np.zeros((1, width), np.float32)}, ["y"])
        assert seen[-1] == (8, 39)  # padded as before
        batcher("serving_default", {"x": np.zeros((1, 1 << 19), np.float32)}, ["y"])
        assert seen[-1] == (1, 1 << 19)  # a copy of this row seven times over is more than it is worth
        seen_ids = []
        strings = Batcher(lambda name, inputs, aliases: seen_ids.append(len(inputs["id"])) or
                          {"y": inputs["id"]}, options)
        try:
            strings("serving_default", {"id": np.array([b"u1"], dtype=object)}, ["y"])
            assert seen_ids[-1] == 8  # a short id is padded
            long_id = np.array([b"x" * (4 << 20)], dtype=object)  # one row of 4 MiB: 28 MiB in copies
            assert strings("serving_default", {"id": long_id}, ["y"])["y"][0] == long_id[0]
            assert seen_ids[-1] == 1
            first_long = np.array([b"x" * (4 << 20), b"u2", b"u3"], dtype=object)  # small on average
            strings("serving_default", {"id": first_long}, ["y"])
            assert seen_ids[-1] == 3
        finally:
            strings.stop()
        assert not batcher._queues  # every shape's queue went with its last task
    finally:
        batcher.stop()
