"""The recommender app when the model server changes under it or answers what a pipeline cannot use, and
against hostile requests and events: a client error is a 4xx naming it, the server's fault a 502/503, and
nothing a client sends breaks the answers of others."""
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import serving_fixtures as fx
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from tfrs_recsys.export.tfserving import publish_version
from tfrs_recsys.serving.client import ServingClient
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.http_service import create_app
from tfrs_recsys.serving.pipeline import RecallRankPipeline
from tfrs_recsys.serving.ranker_inputs import ranker_column
from tfrs_recsys.serving.stores.base import StoreMeta
from tfrs_recsys.serving.stores.memory import MemoryStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

HISTORY = ["item_03", "item_07", "item_11"]
HOT = ["item_30", "item_12", "item_05"]

JSON = {"content-type": "application/json"}  # what POST /events takes


class HourRanker(tf.Module):
    """Scores by the request's hour, an int64 input as a ranker's time features are."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="item_id"),
                                  tf.TensorSpec([None], tf.int64, name="hour")])
    def serving_default(self, item_id, hour):
        length = tf.cast(tf.strings.length(item_id), tf.float32)
        return {"ctr": tf.sigmoid(0.01 * tf.cast(hour, tf.float32) + 0.0 * length)}


class WideRanker(tf.Module):
    """Answers two scores per candidate where one is expected."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="item_id"),
                                  tf.TensorSpec([None], tf.string, name="device")])
    def serving_default(self, item_id, device):
        return {"ctr": tf.zeros([tf.size(item_id), 2])}


class TextRanker(tf.Module):
    """Answers its scores as text."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="item_id")])
    def serving_default(self, item_id):
        return {"ctr": tf.strings.as_string(tf.zeros([tf.size(item_id)]))}


class BlankRetrieval(tf.Module):
    """Finds nothing: every score NaN."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None, fx.HISTORY_LEN], tf.string, name="history")])
    def serving_default(self, user_id, history):
        rows = tf.size(user_id)
        return {"item_ids": tf.fill([rows, 4], "item_01"), "scores": tf.fill([rows, 4], float("nan"))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None, fx.HISTORY_LEN], tf.string, name="history"),
                                  tf.TensorSpec([None, fx.EXCLUDE_LEN], tf.string, name="exclude_item_ids")])
    def query_with_exclusions(self, user_id, history, exclude_item_ids):
        return self.serving_default(user_id, history)


class LongIdRetrieval(BlankRetrieval):
    """Answers an item id of 5,000 bytes."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None, fx.HISTORY_LEN], tf.string, name="history")])
    def serving_default(self, user_id, history):
        rows = tf.size(user_id)
        return {"item_ids": tf.fill([rows, 4], "x" * 5000), "scores": tf.ones([rows, 4])}


class GrowingRanker(tf.Module):
    """Ranker v2 of a user's report: v1's inputs (the fixture ranker's) and two more, ``history`` and
    ``title_words``, which nothing of the store or the request fills."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=n) for n in
                                  ("user_id", "item_id", "genres")] +
                                 [tf.TensorSpec([None], tf.float32, name="price")] +
                                 [tf.TensorSpec([None], tf.string, name=n) for n in
                                  ("device", "history", "title_words")])
    def serving_default(self, user_id, item_id, genres, price, device, history, title_words):
        words = tf.cast(tf.strings.length(history) + tf.strings.length(title_words), tf.float32)
        ctr = tf.sigmoid(price + 0.1 * words)
        return {"ctr": ctr, "cvr": ctr, "ctcvr": ctr * ctr}


def _save(module):
    signatures = {name: getattr(module, name) for name in ("serving_default", "query_with_exclusions")
                  if hasattr(module, name)}
    return lambda path: tf.saved_model.save(module, path, signatures=signatures)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    fx.publish_retrieval(base, version=1)
    fx.publish_ranker(base, version=1)
    fx.publish_ranker(base, name="growing", version=1)  # gets a v2 of more inputs in a test
    odd = {"hourly": HourRanker(), "wide": WideRanker(), "text": TextRanker(), "blank": BlankRetrieval(),
           "long": LongIdRetrieval()}
    for name, module in odd.items():
        publish_version(base, name, _save(module), version=1)
    config = fx.models_config(base, dict.fromkeys(["retrieval", "ranker", "growing", *odd], {}))
    proc = fx.start_server(base, [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0.2"])
    yield base, proc
    assert proc.stop() == 0, proc.log_tail()


def _store(history_kept: bool | None = None, users: pd.DataFrame | None = None) -> MemoryStore:
    items = pd.DataFrame({"item_id": fx.ITEM_IDS, "genres": ["g1"] * fx.NUM_ITEMS,
                          "price": [1.0] * fx.NUM_ITEMS})
    hot = pd.DataFrame({"item_id": HOT, "hotness": [3.0, 2.0, 1.0]})
    meta = StoreMeta(as_of=time.time(), history_kept=history_kept)
    store = FeatureStore({"u1": HISTORY}, hot, item_features=items, user_features=users, meta=meta)
    return MemoryStore(store)


def _app(address: str, retrieval: str = "retrieval", ranker: str = "ranker", timeout: float = 10.0,
         users: pd.DataFrame | None = None):
    client = ServingClient(address, timeout=timeout, retrieval_model=retrieval, ranker_model=ranker)
    return client, TestClient(create_app(RecallRankPipeline(client, _store(users=users), num_candidates=8)))


def test_a_ranker_number_a_request_cannot_send_is_a_400_naming_it(served):
    _, proc = served
    client, http = _app(proc.address, ranker="hourly")
    with client:
        assert http.get("/recommend/u1", params={"hour": "13"}).status_code == 200
        for hostile in ("1e30", "inf", "nan", "99999999999999999999", "1.5", "-1e19", "1_3", "１３",
                        "\u2009" + "13"):
            answer = http.get("/recommend/u1", params={"hour": hostile})
            assert answer.status_code == 400, (hostile, answer.text)
            assert "'hour' takes numbers" in answer.json()["error"]
        assert http.get("/recommend/u1", params={"hour": "13"}).status_code == 200  # the connection is good
        assert http.get("/recommend/stranger", params={"hour": "1e30"}).status_code == 400  # cold alike
    with pytest.raises(ValueError, match="'price' takes numbers"):
        ranker_column(["1e39"], types_pb2.DT_FLOAT, 1, "price")  # past float32: not sent as inf
    assert ranker_column(["7", None], types_pb2.DT_INT64, 2, "hour").tolist() == [7, 0]


def test_odd_model_answers_are_502_or_the_hot_items_never_a_400(served):
    _, proc = served
    client, http = _app(proc.address, ranker="wide")
    with client:
        wide = http.get("/recommend/u1")
        assert wide.status_code == 502 and "one number per candidate" in wide.json()["error"]
    client, http = _app(proc.address, ranker="ranker", retrieval="blank")
    with client:
        blank = http.get("/recommend/u1", params={"top_k": 3})  # retrieval found nothing
        assert blank.status_code == 200, blank.text
        blank = blank.json()
        assert [r["item_id"] for r in blank["items"]] == HOT and "no candidates" in blank["fallback"]
    client, http = _app(proc.address, ranker="ranker", retrieval="wide")  # a ranker asked as retrieval
    with client:
        assert http.get("/recommend/u1").status_code == 502
    client, http = _app(proc.address, retrieval="long")
    with client:
        long = http.get("/recall/u1")
        assert long.status_code == 502 and "5000 bytes" in long.json()["error"]
    client, http = _app(proc.address, ranker="text")
    with client:
        text = http.get("/recommend/u1")
        assert text.status_code == 502 and "one number per candidate" in text.json()["error"]
    users = pd.DataFrame({"user_id": ["signed-up"], "device": ["mobile"]})
    client, http = _app(proc.address, ranker="wide", users=users)
    with client:  # a cold user the ranker fails: the hot items, unranked and said, never a 502
        cold = http.get("/recommend/signed-up", params={"top_k": 3})
        assert cold.status_code == 200 and [r["item_id"] for r in cold.json()["items"]] == HOT
        assert "the hot items unranked" in cold.json()["fallback"]


def test_a_stored_value_the_ranker_cannot_take_goes_as_missing_not_a_400(served, caplog):
    _, proc = served
    users = pd.DataFrame({"user_id": ["odd", "fine"], "hour": [float("inf"), 9.0]})
    client, http = _app(proc.address, ranker="hourly", users=users)
    with client:
        for user in ("odd", "fine"):
            answer = http.get(f"/recommend/{user}", params={"top_k": 3})
            assert answer.status_code == 200 and answer.json()["versions"] == {"hourly": 1}, answer.text
    assert any("cannot take" in r.getMessage() and "'hour'" in r.getMessage() for r in caplog.records)
    caplog.clear()
    texts = pd.DataFrame({"user_id": ["texty"], "hour": ["9h"]})  # a store built without --column-types
    client, http = _app(proc.address, ranker="hourly", users=texts)
    with client:
        assert http.get("/recommend/texty", params={"top_k": 3}).status_code == 200
    assert any("'9h'" in r.getMessage() and "--column-types hour=numeric" in r.getMessage()
               for r in caplog.records)


def test_a_store_of_another_catalog_than_the_retrieval_model_is_warned_of_once(served, caplog):
    _, proc = served
    client = ServingClient(proc.address, timeout=10.0, retrieval_model="retrieval", ranker_model="ranker")
    items = pd.DataFrame({"item_id": fx.ITEM_IDS[:3], "genres": ["g1"] * 3, "price": [1.0] * 3})
    hot = pd.DataFrame({"item_id": fx.ITEM_IDS[:3], "hotness": [3.0, 2.0, 1.0]})
    store = FeatureStore({"u1": HISTORY}, hot, item_features=items, meta=StoreMeta(as_of=time.time()))
    http = TestClient(create_app(RecallRankPipeline(client, MemoryStore(store), num_candidates=8)))
    with client:
        for _ in range(3):
            assert http.get("/recommend/u1", params={"top_k": 3}).status_code == 200
    said = [r.getMessage() for r in caplog.records if "items the store does not know" in r.getMessage()]
    assert len(said) == 1 and "retrieval model 'retrieval' (version 1)" in said[0] and "--run-dir" in said[0]


def test_unknown_items_are_warned_of_when_first_returned_not_only_on_the_first_request(served, caplog):
    _, proc = served
    first, _ = fx.retrieval_reference("u1", HISTORY, exclude=HISTORY, k=8)
    other = ["item_20", "item_21", "item_22"]
    second, _ = fx.retrieval_reference("u2", other, exclude=other, k=8)
    assert set(second) - set(first)  # the second user's candidates hold items the store lacks
    items = pd.DataFrame({"item_id": first, "genres": ["g1"] * 8, "price": [1.0] * 8})
    hot = pd.DataFrame({"item_id": first[:3], "hotness": [3.0, 2.0, 1.0]})
    store = FeatureStore({"u1": HISTORY, "u2": other}, hot, item_features=items,
                         meta=StoreMeta(as_of=time.time()))
    client = ServingClient(proc.address, timeout=10.0, retrieval_model="retrieval", ranker_model="ranker")
    http = TestClient(create_app(RecallRankPipeline(client, MemoryStore(store), num_candidates=8)))
    with client:
        for user in ("u1", "u1", "u2", "u2", "u1"):  # all known, then unknown ones
            assert http.get(f"/recommend/{user}", params={"top_k": 3}).status_code == 200
    said = [r.getMessage() for r in caplog.records if "items the store does not know" in r.getMessage()]
    assert len(said) == 1 and "retrieval model 'retrieval' (version 1)" in said[0], said


def test_a_ranker_version_of_new_inputs_is_served_without_a_restart(served, caplog):
    """v2 adds inputs: the app reads them again, sends the ones it cannot fill as missing (a warning naming
    them, as a fresh process), for warm users and for cold ones the ranker ranks by their features."""
    base, proc = served
    users = pd.DataFrame({"user_id": ["signed-up"], "device": ["mobile"]})
    warm_client, warm = _app(proc.address, ranker="growing", users=users)
    cold_client, cold = _app(proc.address, ranker="growing", users=users)
    with warm_client, cold_client:
        assert warm.get("/recommend/u1").json()["versions"]["growing"] == 1
        assert cold.get("/recommend/signed-up").json()["versions"] == {"growing": 1}
        publish_version(base, "growing", _save(GrowingRanker()), version=2)
        fx.wait_for(lambda: [s["version"] for s in warm_client.status("growing") if s["state"] == "AVAILABLE"]
                    == [2], message="version 2 served alone")
        for http, user in ((warm, "u1"), (cold, "signed-up"), (warm, "u1"), (cold, "u1")):
            answer = http.get(f"/recommend/{user}", params={"top_k": 3})
            assert answer.status_code == 200, answer.text
            assert answer.json()["versions"]["growing"] == 2 and not answer.json()["fallback"], answer.text
        assert warm.get("/health").json()["models"]["growing"] == 2
    said = [r.getMessage() for r in caplog.records if "as missing for every candidate" in r.getMessage()]
    assert any("'history'" in m and "'title_words'" in m for m in said), said


def test_hostile_requests_are_answered_in_time(served):
    _, proc = served
    client, http = _app(proc.address)
    with client:
        many = "&".join(f"p{i}" for i in range(5_000))  # 5,000 parameters: refused, not counted n^2
        started = time.monotonic()
        answer = http.get(f"/recommend/u1?{many}")
        assert answer.status_code == 400 and "at most 256" in answer.json()["error"]
        assert time.monotonic() - started < 2.0


def test_users_made_by_events_alone_are_bounded_in_memory(served):
    store = _store()
    store.max_event_users = 3
    http = TestClient(create_app(RecallRankPipeline(ServingClient(served[1].address), store)))
    for n in range(5):
        posted = http.post("/events", json={"user_id": f"passer{n}", "item_id": "item_01", "event": "click"})
        assert posted.status_code == 200, posted.text
    assert [store.history(f"passer{n}") for n in range(5)] == [None, None, *[["item_01"]] * 3]
    assert store.history("u1") == HISTORY  # the published users are never forgotten


def test_a_retrieval_version_with_a_smaller_k_is_served_without_a_restart(served):
    base, proc = served
    client, http = _app(proc.address)
    with client:
        before = http.get("/recommend/u1", params={"top_k": 8}).json()
        assert before["versions"]["retrieval"] == 1 and len(before["items"]) == 8
        fx.publish_retrieval(base, version=2, top_k=3)
        fx.wait_for(lambda: any(s["version"] == 2 and s["state"] == "AVAILABLE"
                                for s in client.status("retrieval")), message="version 2 served")
        for _ in range(3):  # the first answer of the new version, and those after it
            after = http.get("/recommend/u1", params={"top_k": 8})
            assert after.status_code == 200, after.text
            assert after.json()["versions"]["retrieval"] == 2 and 1 <= len(after.json()["items"]) <= 3
        assert client.metadata("retrieval")["serving_default"].outputs["item_ids"].shape[-1] == 3


def test_events_with_text_no_answer_can_hold_are_refused_and_ids_are_stripped(served):
    _, proc = served
    client, http = _app(proc.address)
    with client:
        bad = http.post("/events", headers=JSON,
                        content=b'{"user_id": "x", "item_id": "evil\\ud800", "event": "click"}')
        assert bad.status_code == 400 and bad.json()["field"] == "event.item_id"
        assert http.get("/recommend/stranger").status_code == 200  # the hot list still answers
        ahead = time.time() + 20 * 3600  # a client's clock ahead: counted at the server's
        assert http.post("/events", json={"user_id": " new-user ", "item_id": "item_09", "event": "click",
                                          "timestamp": ahead}).status_code == 200
        warm = http.get("/recommend/new-user").json()  # posted with spaces, asked without
        assert warm["is_cold_start"] is False
        twice = http.get("/recommend/u1?top_k=3&top_k=900")
        assert twice.status_code == 400 and "more than once" in twice.json()["error"]
        assert np.isfinite([r["score"] for r in http.get("/recommend/stranger").json()["items"]]).all()
        # every id an event stores can be asked for again; one no URL or log can name is refused
        assert http.post("/events", json={"user_id": "shop/42", "item_id": "item_09",
                                          "event": "click"}).status_code == 200
        slashed = http.get("/recommend/shop%2F42")
        assert slashed.status_code == 200 and slashed.json()["is_cold_start"] is False
        assert http.get("/recall/shop%2F42").status_code == 200
        assert http.get("/recommend/shop%2F42/").json()["is_cold_start"] is False  # a trailing slash
        for control in ("a\u0000b", "a\nb"):
            bad = http.post("/events", json={"user_id": control, "item_id": "item_09", "event": "click"})
            assert bad.status_code == 400 and "control character" in bad.json()["error"]
        for path in ("/recommend/%ff", "/recommend/a%00b", "/recall/%fe"):
            refused = http.get(path)
            assert refused.status_code == 400, (path, refused.text)


def test_seen_items_are_kept_or_left_out_as_the_retrieval_run_ranked(served):
    _, proc = served
    with ServingClient(proc.address, timeout=10.0, ranker_model="ranker") as client:
        def recalled(history_kept, **given):
            pipeline = RecallRankPipeline(client, _store(history_kept), num_candidates=10, **given)
            return pipeline.recall("u1", 10).item_ids

        assert not set(recalled(None)) & set(HISTORY)  # unknown: left out
        assert not set(recalled(False)) & set(HISTORY)
        seen_in_top = set(HISTORY) & set(fx.retrieval_reference("u1", HISTORY)[0])
        assert seen_in_top and set(recalled(True)) & set(HISTORY) == seen_in_top  # kept as the run ranked
        assert not set(recalled(True, exclude_seen=True)) & set(HISTORY)  # --exclude-seen wins


def test_a_user_known_by_features_but_without_history_gets_the_hot_items_ranked(served):
    _, proc = served
    items = pd.DataFrame({"item_id": fx.ITEM_IDS, "genres": ["g1"] * fx.NUM_ITEMS,
                          "price": [float(i % 5) for i in range(fx.NUM_ITEMS)]})
    hot = pd.DataFrame({"item_id": fx.ITEM_IDS[:12], "hotness": np.linspace(12, 1, 12)})
    users = pd.DataFrame({"user_id": ["signed-up"], "device": ["mobile"]})  # a user feature the ranker takes
    store = MemoryStore(FeatureStore({"u1": HISTORY}, hot, item_features=items, user_features=users))
    with ServingClient(proc.address, timeout=10.0, ranker_model="ranker") as client:
        pipeline = RecallRankPipeline(client, store, num_candidates=12)
        known = pipeline.recommend("signed-up", 5)
        assert known.is_cold_start and known.versions == {"ranker": 1}
        ctcvr = [r.scores["ctcvr"] for r in known.items]
        assert ctcvr == sorted(ctcvr, reverse=True) and len(ctcvr) == 5  # the ranker's order
        assert known.item_ids != fx.ITEM_IDS[:5]
        stranger = pipeline.recommend("nobody", 5)  # no features: the hot list as it is
        assert stranger.is_cold_start and stranger.item_ids == fx.ITEM_IDS[:5] and not stranger.versions


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_service_started_with_a_model_name_the_server_lacks_says_which_flag(served, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    folder = FeatureStore({"u1": HISTORY}, pd.DataFrame({"item_id": HOT, "hotness": [3.0, 2.0, 1.0]}))
    folder.save(tmp_path / "store")
    port = fx.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfrs_recsys.serving.http_service", "--store", str(tmp_path / "store"),
         "--address", served[1].address, "--ranker-model", "ranker-typo", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # the warning comes before the port opens: once it answers, all that is said is said
        fx.wait_for(lambda: proc.poll() is not None or _answers(port), timeout=60, message="the service up")
    finally:
        proc.terminate()
        _, said = proc.communicate(timeout=30)  # never blocks on a line that is not printed
    assert "serves no model 'ranker-typo': name yours with --ranker-model" in said


def test_huge_names_values_and_ids_are_refused_unechoed_and_other_routes_answer_json(served):
    from tfrs_recsys.data.input_names import signature_name

    _, proc = served
    client, http = _app(proc.address, ranker="hourly")
    with client:
        cached = signature_name.cache_info().currsize
        for n in range(20):  # names the cache of input names must not keep
            answer = http.get(f"/recommend/u1?{n}{'-' * 60_000}=1")
            assert answer.status_code == 400 and len(answer.content) < 1000
            assert "names have at most 256" in answer.json()["error"]
        assert signature_name.cache_info().currsize <= cached + 2
        long_value = http.get("/recommend/u1", params={"hour": "1" * 5000})
        assert long_value.status_code == 400 and len(long_value.content) < 1200
        unknown = http.get("/recommend/u1", params={"x" * 250: "1"})  # echoed, and cut
        assert unknown.status_code == 400 and len(unknown.content) < 1200
        for user in ("%20%20", "u" * 300):
            answer = http.get(f"/recommend/{user}")
            assert answer.status_code == 400 and "ids have 1 to 256" in answer.json()["error"]
        assert http.get("/recommend/u1").status_code == 200
        for path, method, status in (("/nowhere", "GET", 404), ("/docs", "GET", 404),
                                     ("/openapi.json", "GET", 404), ("/recommend/u1", "DELETE", 405)):
            answer = http.request(method, path)
            assert answer.status_code == status and "error" in answer.json(), (path, answer.text)
        form = http.post("/events", content=b'{"user_id": "u9", "item_id": "item_01", "event": "click"}',
                         headers={"content-type": "text/plain"})
        assert form.status_code == 415 and "application/json" in form.json()["error"]
        bare = http.post("/events", content=b'{"user_id": "u9", "item_id": "item_01", "event": "click"}')
        assert bare.status_code == 415  # no type: what a page's beacon sends without asking
        long_event = http.post("/events", headers=JSON, json={"user_id": "u9", "item_id": "item_01",
                                                              "event": "e" * 1_000_000})
        assert long_event.status_code == 400 and len(long_event.content) < 1200
        odd_method = http.request("A" * 5000, "/recommend/u1")
        assert odd_method.status_code in (400, 405) and len(odd_method.content) < 1200
        too_big = http.post("/events", content=b" " * ((4 << 20) + 1), headers=JSON)
        assert too_big.status_code == 413 and too_big.headers["connection"] == "close"  # its body unread


def test_without_a_ranker_recommend_answers_the_candidates_in_retrievals_order(served):
    _, proc = served
    client, http = _app(proc.address, ranker="")
    with client:
        recommended, recalled = http.get("/recommend/u1?top_k=5"), http.get("/recall/u1?top_k=5")
        assert recommended.status_code == 200 and recommended.json()["fallback"] is None
        assert [r["item_id"] for r in recommended.json()["items"]] == [
            r["item_id"] for r in recalled.json()["items"]]
        assert http.get("/health").json()["status"] == "ok"  # the retrieval model alone is asked for
        refused = http.get("/recommend/u1?device=mobile")
        assert refused.status_code == 400 and "no ranker takes them" in refused.json()["error"]


def test_excluded_items_never_appear_and_come_back_when_removed_from_the_file(served, tmp_path):
    from tfrs_recsys.serving.exclusions import ExcludedItems

    _, proc = served
    banned = tmp_path / "removed.txt"
    banned.write_text("# nothing removed yet\n")
    client = ServingClient(proc.address, timeout=10.0, ranker_model="ranker")
    pipeline = RecallRankPipeline(client, _store(), num_candidates=8,
                                  exclude_items=ExcludedItems(banned, check_seconds=0))
    http = TestClient(create_app(pipeline))
    with client:
        def answer(user: str, k: int) -> list[str]:
            got = http.get(f"/recommend/{user}", params={"top_k": k})
            assert got.status_code == 200, got.text
            return [r["item_id"] for r in got.json()["items"]]

        k = client.metadata("retrieval")["serving_default"].outputs["item_ids"].shape[-1]  # a test made it 3
        warm, cold = answer("u1", 5), answer("nobody", 2)
        # the ranker gives every item one score here: the answers are in retrieval's order
        assert warm == fx.retrieval_reference("u1", HISTORY, exclude=HISTORY, k=k)[0][:5]
        assert cold == HOT[:2]
        removed = [warm[0], warm[2], HOT[0]]
        banned.write_text(f"# pulled by ops\n{removed[0]}\n  {removed[1]}  \n\n{removed[2]}\n")
        assert answer("u1", 5) == fx.retrieval_reference("u1", HISTORY, exclude=HISTORY + removed, k=k)[0][:5]
        assert answer("nobody", 2) == HOT[1:]
        assert [i.item_id for i in pipeline.recall("u1", 8).items if i.item_id in removed] == []
        banned.write_text("# all back\n")
        assert answer("u1", 5) == warm and answer("nobody", 2) == cold
        # a list far longer than a request carries, and a line no id is that long: still answered, still out
        junk = "".join(f"gone-{n}\n" for n in range(20_000))
        banned.write_text(f"{junk}{'x' * 100_000}\n{removed[0]}\n{removed[2]}\n")
        assert removed[0] not in answer("u1", 5) and answer("nobody", 2) == HOT[1:]


def test_a_missing_exclusion_file_is_an_error_naming_the_flag(tmp_path, capsys):
    from tfrs_recsys.serving.http_service import main

    FeatureStore({"u1": HISTORY}, pd.DataFrame({"item_id": HOT, "hotness": [3.0, 2.0, 1.0]})).save(
        tmp_path / "store")
    assert main(["--store", str(tmp_path / "store"), "--exclude-items", str(tmp_path / "none.txt")]) == 2
    assert "--exclude-items" in capsys.readouterr().err


def test_the_service_reloads_its_folder_store_and_exclusions_without_a_restart(served, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    def day(users: dict) -> FeatureStore:
        return FeatureStore(users, pd.DataFrame({"item_id": HOT, "hotness": [3.0, 2.0, 1.0]}))

    day({"u1": HISTORY}).save(tmp_path / "store")
    banned = tmp_path / "removed.txt"
    banned.write_text(f"{HOT[0]}\n")
    port = fx.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfrs_recsys.serving.http_service", "--store", str(tmp_path / "store"),
         "--address", served[1].address, "--ranker-model", "", "--port", str(port),
         "--store-poll-seconds", "0.2", "--exclude-items", str(banned)],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        fx.wait_for(lambda: proc.poll() is not None or _answers(port), timeout=90, message="the service up")

        def get(user: str) -> dict:
            return httpx.get(f"{url}/recommend/{user}", params={"top_k": 2}, timeout=30).json()

        assert [r["item_id"] for r in get("nobody")["items"]] == HOT[1:]
        assert get("u7")["is_cold_start"]
        day({"u1": HISTORY, "u7": ["item_15", "item_16"]}).save(tmp_path / "store")
        fx.wait_for(lambda: not get("u7")["is_cold_start"], timeout=30, message="u7 known")
        banned.write_text("# none\n")
        fx.wait_for(lambda: get("nobody")["items"][0]["item_id"] == HOT[0], timeout=30, message="HOT[0] back")
    finally:
        proc.terminate()
        said, _ = proc.communicate(timeout=30)
    assert "store refreshed" in said and "users 2" in said, said
