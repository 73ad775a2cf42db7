"""Model lifecycle as TF Serving's: polling, hot swaps, failed loads, warmup, policies, config reloads.

One server process polls a base path every 0.2 s; the tests drop versions into it
while clients keep calling, and read the outcome through GetModelStatus and Predict.
"""
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import serving_fixtures as fx
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

import tfrs_recsys  # noqa: F401

State = get_model_status_pb2.ModelVersionStatus


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("lifecycle")
    fx.publish_utility(base, "utility", version=1, scale=2.0)
    fx.publish_utility(base, "counter", version=1, warmup_counts=3)
    fx.publish_ranker(base, "ranker", version=1)  # on disk, not configured until a reload adds it
    config = fx.models_config(base, {"utility": {}, "counter": {}})
    server = fx.start_server(base, [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0.2",
                                    "--max_num_load_retries=0"])
    channel = grpc.insecure_channel(server.address)
    yield {"base": base, "server": server,
           "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "models": model_service_pb2_grpc.ModelServiceStub(channel)}
    channel.close()
    assert server.stop() == 0, server.log_tail()


def predict(env, model, x, signature="", version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
    return env["predict"].Predict(request, timeout=30)


def status(env, model):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
        return {s.version: s for s in env["models"].GetModelStatus(request, timeout=30).model_version_status}
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return {}
        raise


def reload(env, models: dict[str, dict]):
    path = fx.models_config(env["base"], models)
    config = model_server_config_pb2.ModelServerConfig()
    from google.protobuf import text_format
    text_format.Parse(path.read_text(), config)
    return env["models"].HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                                   timeout=120)


def test_warmup_is_replayed_before_the_version_is_available(env):
    # three warmup records called `count`; the first client call is the fourth
    first = predict(env, "counter", [0.0], signature="count")
    assert int(tf.make_ndarray(first.outputs["count"])[0]) == 4


def test_new_version_swaps_in_without_a_failed_request(env):
    stop, results, errors = threading.Event(), [], []

    def loop():
        while not stop.is_set():
            try:
                r = predict(env, "utility", [1.0])
                results.append((r.model_spec.version.value, float(tf.make_ndarray(r.outputs["y"])[0])))
            except grpc.RpcError as e:
                errors.append(f"{e.code()}: {e.details()}")

    clients = [threading.Thread(target=loop) for _ in range(2)]
    for c in clients:
        c.start()
    try:
        fx.wait_for(lambda: len(results) >= 5, message="first answers")
        fx.publish_utility(env["base"], "utility", version=2, scale=3.0)
        fx.wait_for(lambda: (status(env, "utility").get(1) is not None
                             and status(env, "utility")[1].state == State.END),
                    message="version 1 unloaded")
        n = len(results)
        fx.wait_for(lambda: len(results) >= n + 5, message="answers after the swap")
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert errors == []
    versions = [v for v, _ in results]
    assert versions[0] == 1 and versions[-1] == 2
    assert all(y == {1: 3.0, 2: 4.0}[v] for v, y in results)  # y = scale * 1 + 1 of the version that answered
    s = status(env, "utility")
    assert s[2].state == State.AVAILABLE and s[1].state == State.END and s[1].status.error_code == 0


def test_corrupt_version_keeps_the_old_one_serving(env):
    serving = max(v for v, s in status(env, "utility").items() if s.state == State.AVAILABLE)
    fx.write_corrupt_version(env["base"], "utility", serving + 1)
    failed = fx.wait_for(lambda: ((s := status(env, "utility").get(serving + 1)) is not None
                                  and s.state == State.END and s),
                         message="the corrupt version to fail")
    assert failed.status.error_code != 0 and failed.status.error_message
    assert status(env, "utility")[serving].state == State.AVAILABLE
    time.sleep(0.6)  # several polls later it is not retried, and the old version still answers
    assert status(env, "utility")[serving + 1].state == State.END
    assert predict(env, "utility", [1.0]).model_spec.version.value == serving
    with pytest.raises(grpc.RpcError) as info:
        predict(env, "utility", [1.0], version=serving + 1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_directories_that_are_not_versions_are_ignored(env):
    model_dir = env["base"] / "utility"
    (model_dir / ".tmp-77-abc").mkdir()
    (model_dir / ".tmp-77-abc" / "saved_model.pb").write_bytes(b"half written")
    (model_dir / "notes").mkdir()
    huge = model_dir / "99999999999999999999"  # no int64: no version number a status can hold
    shutil.copytree(model_dir / str(max(status(env, "utility"))), huge)
    time.sleep(0.8)
    assert 77 not in status(env, "utility") and all(v < 1 << 63 for v in status(env, "utility"))
    shutil.rmtree(huge)
    assert predict(env, "utility", [1.0]).model_spec.version.value in status(env, "utility")


def test_failed_warmup_fails_the_load(env):
    from tfrs_recsys.export.tfserving import publish_version

    version = max(status(env, "counter")) + 1
    module = fx._utility_module(5.0)
    publish_version(env["base"], "counter", fx._tf_save(module, ["serving_default", "count"]),
                    version=version, warmup=[("no_such_signature", {"x": np.array([1.0], np.float32)})])
    failed = fx.wait_for(lambda: ((s := status(env, "counter").get(version)) is not None
                                  and s.state == State.END and s),
                         message="warmup failure")
    assert failed.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "no_such_signature" in failed.status.error_message
    assert predict(env, "counter", [1.0]).model_spec.version.value == version - 1


def test_reload_config_adds_removes_and_relabels_models(env):
    reload(env, {"utility": {"policy": "all"}, "ranker": {}})
    assert status(env, "ranker")[1].state == State.AVAILABLE
    fx.wait_for(lambda: (status(env, "counter")
                         and all(s.state == State.END for s in status(env, "counter").values())),
                message="counter unloaded")
    with pytest.raises(grpc.RpcError) as info:
        predict(env, "counter", [1.0])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    available = sorted(v for v, s in status(env, "utility").items() if s.state == State.AVAILABLE)
    assert available == [1, 2]  # `all` loaded version 1 again; the corrupt one stays failed

    with pytest.raises(grpc.RpcError) as info:
        reload(env, {"utility": {"policy": "all", "labels": {"stable": 42}}, "ranker": {}})
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Request to assign label to version 42 of model utility" in info.value.details()

    reload(env, {"utility": {"policy": "all", "labels": {"stable": 1}}, "ranker": {}})
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.version_label = "utility", "stable"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    assert env["predict"].Predict(request, timeout=30).model_spec.version.value == 1

    reload(env, {"utility": {"policy": [2]}, "ranker": {}})
    s = status(env, "utility")
    assert s[2].state == State.AVAILABLE and s[1].state == State.END

    with pytest.raises(grpc.RpcError) as info:
        reload(env, {"utility": {}, "missing": {}})
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "missing" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        env["models"].HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _reload_entries(env, entries: list[tuple[str, str]]):
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in entries:
        config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    return env["models"].HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                                   timeout=120)


def test_a_network_reload_stays_under_the_allowed_roots_and_a_bad_one_changes_nothing(env, tmp_path):
    before = {name: status(env, name) for name in ("utility", "counter")}
    answer = list(predict(env, "utility", [1.0]).outputs["y"].float_val)
    served = [("utility", str(env["base"] / "utility")), ("counter", str(env["base"] / "counter"))]
    (env["base"] / "empty" / "7").mkdir(parents=True)  # an integer folder, but no SavedModel
    outside = tmp_path / "elsewhere"
    fx.publish_utility(outside, "utility", version=1)
    (env["base"] / "linked").mkdir()
    (env["base"] / "linked" / "7").symlink_to(outside / "utility" / "1")
    for extra, code, words in (
            (("etc", "/etc"), grpc.StatusCode.PERMISSION_DENIED, "outside the allowed model roots"),
            (("proc", "/proc"), grpc.StatusCode.PERMISSION_DENIED, "outside the allowed model roots"),
            (("sneaky", str(env["base"] / ".." / "x")), grpc.StatusCode.PERMISSION_DENIED, "outside"),
            (("elsewhere", str(outside / "utility")), grpc.StatusCode.PERMISSION_DENIED,
             "--allowed_model_roots"),
            (("empty", str(env["base"] / "empty")), grpc.StatusCode.FAILED_PRECONDITION,
             "nothing was changed"),
            (("linked", str(env["base"] / "linked")), grpc.StatusCode.PERMISSION_DENIED,
             "version folder"),  # a version folder linked out of the roots
            (("nul", str(env["base"] / "utility") + "\0/../../x"), grpc.StatusCode.INVALID_ARGUMENT, "NUL"),
            (("", str(env["base"] / "utility")), grpc.StatusCode.INVALID_ARGUMENT, "needs a name")):
        with pytest.raises(grpc.RpcError) as info:
            _reload_entries(env, [extra])  # would also unload both served models if it were applied
        assert info.value.code() == code and words in info.value.details(), info.value.details()
        with pytest.raises(grpc.RpcError):
            _reload_entries(env, [*served, extra])
        assert {name: status(env, name) for name in ("utility", "counter")} == before
        assert list(predict(env, "utility", [1.0]).outputs["y"].float_val) == answer


def test_a_failed_load_shows_its_error_at_once_while_it_is_retried(tmp_path):
    """With TF Serving's default retries (5 x 60 s) a corrupt version used to show LOADING and no error."""
    fx.publish_utility(tmp_path, "utility", version=1)
    config = fx.models_config(tmp_path, {"utility": {}})
    server = fx.start_server(tmp_path, [f"--model_config_file={config}",
                                        "--file_system_poll_wait_seconds=0.2"])
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.address))
        fx.write_corrupt_version(tmp_path, "utility", 2)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "utility"

        def retrying():
            versions = {s.version: s for s in stub.GetModelStatus(request, timeout=30).model_version_status}
            return 2 in versions and versions[2].status.error_code != 0 and versions[2]

        seen = fx.wait_for(retrying, timeout=60, message="the failed load's error")
        assert seen.state == State.LOADING and "load attempt 1 of 6" in seen.status.error_message
    finally:
        assert server.stop() == 0, server.log_tail()


def test_the_reload_api_can_be_turned_off(tmp_path):
    fx.publish_utility(tmp_path, "utility", version=1)
    config = fx.models_config(tmp_path, {"utility": {}})
    server = fx.start_server(tmp_path, [f"--model_config_file={config}", "--enable_model_reload_api=false"])
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.address))
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert server.stop() == 0, server.log_tail()


def test_labels_at_startup_need_the_flag_as_in_tf_serving(tmp_path):
    fx.publish_utility(tmp_path, "utility", version=1)
    config = fx.models_config(tmp_path, {"utility": {"labels": {"stable": 1}}})
    server = fx.start_server(tmp_path, [f"--model_config_file={config}"], ready=False)
    try:
        assert server.proc.wait(timeout=120) == 1
    finally:
        server.stop()
    assert "Request to assign label to version 1 of model utility" in server.log_tail()


@pytest.mark.parametrize("where", ["a version folder", "a folder of models"])
def test_a_base_path_one_level_off_says_which_folder_to_pass(tmp_path, where):
    fx.publish_utility(tmp_path, "utility", version=1)
    base = tmp_path / "utility" / "1" if where == "a version folder" else tmp_path
    server = fx.start_server(tmp_path, ["--model_name=m", f"--model_base_path={base}"], ready=False)
    try:
        assert server.proc.wait(timeout=120) == 1
    finally:
        server.stop()
    fix = (f"pass its parent ({tmp_path / 'utility'})" if where == "a version folder"
           else "its folders ['utility'] hold versions: pass one of them as the base path")
    assert fix in server.log_tail()
