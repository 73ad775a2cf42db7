"""Rollouts that do not stall: a failing version never holds up a newer one, and a version still being
copied is waited for, not failed.

Real SavedModels, a real server process polling every 0.2 s, real files copied the way ``cp -r`` does.
"""
import os
import shutil
import time

import grpc
import numpy as np
import serving_fixtures as fx
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import tfrs_recsys  # noqa: F401

State = get_model_status_pb2.ModelVersionStatus
POLL = ["--file_system_poll_wait_seconds=0.2"]


class Client:
    def __init__(self, server):
        channel = grpc.insecure_channel(server.address)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)

    def status(self, model: str) -> dict:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return {s.version: s for s in self.models.GetModelStatus(request, timeout=30).model_version_status}

    def error(self, model: str, version: int) -> str:
        return self.status(model).get(version, State()).status.error_message

    def served_version(self, model: str) -> int:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
        return self.predictions.Predict(request, timeout=30).model_spec.version.value


def test_a_failing_version_does_not_hold_up_a_newer_one(tmp_path):
    """TF Serving's default retries (5 x 60 s) used to keep the poller on a corrupt version for 5 minutes."""
    for model in ("latest", "every"):
        fx.publish_utility(tmp_path, model, version=1)
    config = fx.models_config(tmp_path, {"latest": {}, "every": {"policy": "all"}})
    server = fx.start_server(tmp_path, [f"--model_config_file={config}", *POLL])  # default retries: 5 x 60 s
    try:
        client = Client(server)
        for model in ("latest", "every"):
            fx.write_corrupt_version(tmp_path, model, 2)
        for model in ("latest", "every"):
            fx.wait_for(lambda m=model: "attempt 1 of 6" in client.error(m, 2), timeout=60,
                        message=f"{model}: version 2 failing")
        published = time.monotonic()
        for model in ("latest", "every"):
            fx.publish_utility(tmp_path, model, version=3, scale=3.0)
        fx.wait_for(lambda: all(client.served_version(m) == 3 for m in ("latest", "every")), timeout=30,
                    message="version 3 served while version 2 waits for its next retry")
        assert time.monotonic() - published < 30

        latest = client.status("latest")  # latest: version 2 is no longer wanted, so no longer retried
        assert latest[2].state == State.END and "no longer aspired" in latest[2].status.error_message
        fx.wait_for(lambda: client.status("latest")[1].state == State.END, message="version 1 unloaded")
        every = client.status("every")  # all: version 2 is still wanted and retried in the background
        assert every[2].state == State.LOADING and "load attempt 1 of 6" in every[2].status.error_message
        assert every[1].state == State.AVAILABLE and every[3].state == State.AVAILABLE
    finally:
        assert server.stop() == 0, server.log_tail()


def _copy(source, target, names):
    """Copies ``names`` (files or folders) from ``source`` into ``target`` as ``cp -r`` does: fresh mtimes."""
    target.mkdir(exist_ok=True)
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, copy_function=shutil.copy)
        else:
            shutil.copy(source / name, target / name)


def test_a_version_still_being_copied_is_served_once_the_copy_ends(tmp_path):
    """With retries off, a half-copied version used to fail for good on its first poll."""
    staged = tmp_path / "staged"
    for version in (2, 3):
        fx.publish_utility(staged, "utility", version=version, scale=float(version + 1))
    fx.publish_utility(tmp_path, "utility", version=1)
    config = fx.models_config(tmp_path, {"utility": {}})
    # retries off; the default settle window, 2 s
    server = fx.start_server(tmp_path, [f"--model_config_file={config}", *POLL, "--max_num_load_retries=0"])
    try:
        client = Client(server)
        for version in (2, 3):
            source, target = staged / "utility" / str(version), tmp_path / "utility" / str(version)
            rest = sorted(set(os.listdir(source)) - {"saved_model.pb"})
            _copy(source, target, ["saved_model.pb"])  # the graph first, its variables not yet
            if version == 2:  # a pause shorter than the settle window: the version waits
                time.sleep(0.8)
                waiting = fx.wait_for(lambda: client.status("utility").get(2), timeout=1, interval=0.05,
                                      message="version 2 seen")
                assert waiting.state == State.START and waiting.status.error_code == 0
                assert "waiting for the version directory to settle" in waiting.status.error_message
            else:  # a pause longer than the window: the attempt fails, and the copy going on brings another
                fx.wait_for(lambda: client.status("utility").get(3, State()).state == State.END, timeout=60,
                            message="the attempt on the half-copied version 3 to fail")
                assert client.status("utility")[3].status.error_code != 0
            assert client.served_version("utility") == version - 1
            _copy(source, target, rest)
            fx.wait_for(lambda v=version: client.served_version("utility") == v, timeout=60,
                        message=f"version {version} served once copied")
            assert client.status("utility")[version].status.error_code == 0
    finally:
        assert server.stop() == 0, server.log_tail()


def test_a_failed_half_copied_version_is_retried_as_soon_as_its_copy_goes_on(tmp_path):
    """With retries on (a minute apart), the copy finishing brings the next attempt, not the minute."""
    staged = tmp_path / "staged"
    fx.publish_utility(staged, "utility", version=2, scale=3.0)
    fx.publish_utility(tmp_path, "utility", version=1)
    config = fx.models_config(tmp_path, {"utility": {}})
    server = fx.start_server(tmp_path, [f"--model_config_file={config}", *POLL, "--max_num_load_retries=5",
                                        "--load_retry_interval_micros=60000000"])
    try:
        client = Client(server)
        source, target = staged / "utility" / "2", tmp_path / "utility" / "2"
        _copy(source, target, ["saved_model.pb"])  # and a pause longer than the settle window
        failed = fx.wait_for(lambda: client.status("utility").get(2, State()).status.error_code != 0
                             and client.status("utility")[2], timeout=60, message="the first attempt to fail")
        assert failed.state == State.LOADING and "no variables/variables.index" in failed.status.error_message
        copied = time.monotonic()
        _copy(source, target, sorted(set(os.listdir(source)) - {"saved_model.pb"}))
        fx.wait_for(lambda: client.served_version("utility") == 2, timeout=60, message="version 2 served")
        assert time.monotonic() - copied < 30  # not the minute between retries
    finally:
        assert server.stop() == 0, server.log_tail()


def test_a_models_config_broken_while_served_is_said_once_and_read_again_when_mended(tmp_path, caplog):
    import logging

    from tfrs_recsys.model_server import config_file
    from tfrs_recsys.model_server.model_manager import ManagerOptions, ModelManager

    fx.publish_utility(tmp_path, "utility", version=1)
    config_path = fx.models_config(tmp_path, {"utility": {}})
    good = config_path.read_text()
    manager = ModelManager(ManagerOptions(model_config_file=str(config_path),
                                          model_config_file_poll_wait_seconds=0.05))
    with caplog.at_level(logging.INFO, logger="tfrs_recsys.model_server"):
        manager.start(config_file.read_model_server_config(str(config_path)))
        try:
            config_path.write_text("model_config_list { config { name: ")  # an editor's half-saved file
            time.sleep(1.0)  # about 20 polls
            broken = [r for r in caplog.records if "Cannot read the model config file" in r.getMessage()]
            assert len(broken) == 1 and broken[0].exc_info is None  # one line, no traceback
            with manager.handle(model_pb2.ModelSpec(name="utility")) as servable:  # still served
                assert servable.version == 1
            config_path.write_text(good)
            deadline = time.monotonic() + 10
            while not any("reads again" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the mended file was not read again"
                time.sleep(0.05)
        finally:
            manager.stop()
    assert not [r for r in caplog.records if "poll failed" in r.getMessage()]
