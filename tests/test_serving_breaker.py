"""The circuit breaker: a model server that keeps not answering is not asked again until a probe gets an
answer, so the recommender app answers hot items at once instead of waiting out every deadline."""
import argparse
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import grpc
import pandas as pd
import pytest
import serving_fixtures as fx
from tensorflow_serving.apis import get_model_status_pb2

from tfrs_recsys.errors import UserError
from tfrs_recsys.serving.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from tfrs_recsys.serving.client import ServerUnavailableError, ServingClient
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.http_service import create_app
from tfrs_recsys.serving.pipeline import RecallRankPipeline
from tfrs_recsys.serving.pipeline_cli import add_pipeline_arguments, pipeline_from_args
from tfrs_recsys.serving.stores.base import StoreMeta
from tfrs_recsys.serving.stores.memory import MemoryStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_it_opens_after_failures_in_a_row_and_one_probe_at_a_time_closes_or_reopens_it():
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(2):
        assert breaker.allow() is None
        breaker.unanswered()
    breaker.answered()  # an answer between failures: the count starts again
    for _ in range(2):
        breaker.unanswered()
    assert breaker.state == CLOSED and breaker.allow() is None
    breaker.unanswered()
    assert breaker.state == OPEN and breaker.allow() == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.allow() is None  # the probe
    assert breaker.state == HALF_OPEN and breaker.allow() == 0.0  # the others wait for it
    breaker.unanswered()  # a failed probe opens it again, for another 10 s
    assert breaker.state == OPEN and breaker.allow() == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.allow() is None
    breaker.answered()
    assert breaker.state == CLOSED and breaker.allow() is None
    never = CircuitBreaker(0, 1.0, clock=clock)
    for _ in range(100):
        never.unanswered()
    assert never.allow() is None
    with pytest.raises(ValueError, match="open_seconds > 0"):
        CircuitBreaker(3, 0.0)


class HungServer:
    """A TF-Serving-protocol server over real gRPC whose calls hang until ``answering`` is set; it counts
    the calls that reached it."""

    def __init__(self):
        self.answering = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

        def status(request, context):
            with self._lock:
                self.calls += 1
            if not self.answering.wait(timeout=30):
                context.abort(grpc.StatusCode.INTERNAL, "hung")
            reply = get_model_status_pb2.GetModelStatusResponse()
            version = reply.model_version_status.add()
            version.version, version.state = 1, get_model_status_pb2.ModelVersionStatus.AVAILABLE
            return reply

        def hang(request, context):
            with self._lock:
                self.calls += 1
            self.answering.wait(timeout=30)
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "not this test's")

        def unary(handler, request_type=None):
            return grpc.unary_unary_rpc_method_handler(
                handler, request_deserializer=(request_type.FromString if request_type else lambda b: b),
                response_serializer=lambda reply: reply.SerializeToString())

        self.server = grpc.server(ThreadPoolExecutor(16))
        self.server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", {
                "GetModelStatus": unary(status, get_model_status_pb2.GetModelStatusRequest)}),
            grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
                "GetModelMetadata": unary(hang), "Predict": unary(hang)})])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def stop(self):
        self.answering.set()
        self.server.stop(grace=None)


@pytest.fixture
def hung():
    server = HungServer()
    yield server
    server.stop()


def test_a_hung_server_is_not_asked_while_open_and_is_again_once_a_probe_gets_an_answer(hung, caplog):
    clock = Clock()  # the breaker's time moves when the test says: no race with a loaded machine
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    with ServingClient(hung.address, timeout=0.3, breaker=breaker) as client:
        for _ in range(2):
            with pytest.raises(ServerUnavailableError, match="deadline"):
                client.status("retrieval")
        assert hung.calls == 2 and breaker.state == OPEN
        for _ in range(20):
            with pytest.raises(ServerUnavailableError, match="was not sent: 2 calls in a row got no answer"):
                client.status("retrieval")
        assert hung.calls == 2  # none of them reached the server
        clock.now += 30.0
        with pytest.raises(ServerUnavailableError, match="deadline"):  # the probe, still no answer
            client.status("retrieval")
        assert hung.calls == 3 and breaker.state == OPEN
        hung.answering.set()
        with pytest.raises(ServerUnavailableError, match="circuit open.*next probe in 30.0s"):
            client.status("retrieval")
        clock.now += 30.0
        assert client.status("retrieval")[0]["state"] == "AVAILABLE"
        assert hung.calls == 4 and breaker.state == CLOSED
        assert client.status("retrieval")[0]["version"] == 1
    said = [r.getMessage() for r in caplog.records if r.name == "tfrs_recsys.serving.breaker"]
    assert len(said) == 2 and "breaker open: 2" in said[0] and "breaker closed" in said[1]  # once each


def test_a_call_its_request_left_little_time_does_not_count_against_the_server(hung):
    breaker = CircuitBreaker(2, 30.0)
    with ServingClient(hung.address, timeout=1.0, breaker=breaker) as client:
        for _ in range(4):  # a request that spent its deadline elsewhere (a slow store, a queue)
            with pytest.raises(ServerUnavailableError, match="deadline"):
                client.status("retrieval", timeout=0.05)
        assert breaker.state == CLOSED and hung.calls == 4


def _store() -> MemoryStore:
    hot = pd.DataFrame({"item_id": ["item_30", "item_12", "item_05"], "hotness": [3.0, 2.0, 1.0]})
    items = pd.DataFrame({"item_id": fx.ITEM_IDS})
    return MemoryStore(FeatureStore({"u1": ["item_03", "item_07"]}, hot, item_features=items,
                                    meta=StoreMeta(as_of=time.time())))


def test_the_app_answers_hot_items_without_asking_a_server_that_keeps_hanging(hung):
    client = ServingClient(hung.address, timeout=0.3, breaker=CircuitBreaker(2, 60.0),
                           retrieval_model="retrieval", ranker_model="ranker")
    app = TestClient(create_app(RecallRankPipeline(client, _store(), num_candidates=8)))
    try:
        answers = [app.get("/recommend/u1?top_k=2") for _ in range(10)]
        assert all(a.status_code == 200 for a in answers)
        assert [r["item_id"] for r in answers[-1].json()["items"]] == ["item_30", "item_12"]
        assert "circuit open" in answers[-1].json()["fallback"]
        assert hung.calls == 2  # the first two waited their deadline; the other eight were not sent
        health = app.get("/health")
        assert health.status_code == 503 and "circuit open" in health.json()["error"]
        assert hung.calls == 2
    finally:
        client.close()


def test_the_flags_refuse_a_negative_count():
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    args = parser.parse_args(["--store", "unused", "--breaker-failures", "-1"])
    with pytest.raises(UserError, match="--breaker-failures -1.*count >= 0"):
        pipeline_from_args(args)
    for seconds in ("inf", "nan", "0"):
        args = parser.parse_args(["--store", "unused", "--breaker-open-seconds", seconds])
        with pytest.raises(UserError, match="finite seconds > 0"):
            pipeline_from_args(args)
