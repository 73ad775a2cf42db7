"""The online store behind the recommender, one suite for both backends: in this process and a real
Redis server (started by the tests). Events, the hot list, publishing under load, bad events; for
Redis also a server that stops or stalls mid-run and comes back."""
import json
import shutil
import socket
import threading
import time
import tracemalloc
import uuid
import warnings

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
import serving_fixtures as fx

from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.ctr_features import item_hotness
from tfrs_recsys.serving.client import ServingClient
from tfrs_recsys.serving.events import EventError, increments, parse_events, staleness_warning
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.http_service import BackgroundServer, create_app
from tfrs_recsys.serving.pipeline import RecallRankPipeline
from tfrs_recsys.serving.publish import main as publish_main
from tfrs_recsys.serving.publish import publish
from tfrs_recsys.serving.recall_merge import RecallMergeConfig
from tfrs_recsys.serving.stores import Version, open_store, store_from_environment
from tfrs_recsys.serving.stores.base import StoreMeta
from tfrs_recsys.serving.stores.local_redis import RedisServer
from tfrs_recsys.serving.stores.memory import MemoryStore
from tfrs_recsys.serving.stores.redis_store import RedisStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette announces that its httpx-based TestClient moves to httpx2
    from fastapi.testclient import TestClient

T0 = 1_700_000_000.0
HISTORIES = {"u1": ["item_03", "item_07", "item_11"], "u2": ["item_20", "item_22"]}
POPULAR = {"item_30": 8, "item_12": 6, "item_05": 4, "item_21": 2}  # interactions by other users
GENRES = {item: ["g1", "g2", "g3"][: i % 4] for i, item in enumerate(fx.ITEM_IDS)}
PRICE = {item: float(i % 7) * 0.5 for i, item in enumerate(fx.ITEM_IDS)}
MAX_HISTORY = 4
BACKENDS = ["memory", "redis"]

JSON = {"content-type": "application/json"}  # what POST /events takes


def interactions() -> pd.DataFrame:
    rows = [(u, item, T0 - 3600.0 * (len(items) - j)) for u, items in HISTORIES.items()
            for j, item in enumerate(items)]
    rows += [(f"p{n}", item, T0 - 60.0 * n) for item, count in POPULAR.items() for n in range(count)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=1.0)


def source_store() -> FeatureStore:
    items = pd.DataFrame({"item_id": fx.ITEM_IDS, "title": [f"Item {i}" for i in fx.ITEM_IDS],
                          "genres": [GENRES[i] for i in fx.ITEM_IDS],
                          "price": [PRICE[i] for i in fx.ITEM_IDS]})
    return FeatureStore.from_interactions(InteractionData(interactions(), items), max_history=MAX_HISTORY)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("online")
    fx.publish_retrieval(base, version=1)
    fx.publish_ranker(base, version=1)
    config = fx.models_config(base, {"retrieval": {}, "ranker": {}})
    proc = fx.start_server(base, [f"--model_config_file={config}"])
    yield proc
    assert proc.stop() == 0, proc.log_tail()


@pytest.fixture()
def client(model_server):
    with ServingClient(model_server.address, timeout=10.0, ranker_model="ranker") as c:
        yield c


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def stores(request):
    """``(the service's store, a second handle to it, as another process would have)``, version 1 live."""
    if request.param == "memory":
        store = MemoryStore(source_store())
        yield store, store
        return
    url, namespace = request.getfixturevalue("redis_server").url, f"t{uuid.uuid4().hex[:8]}"
    # Generous timeouts: these tests are about behaviour, not a loaded CI machine's latency.
    service, publisher = (RedisStore(url, namespace=namespace, timeout=5.0) for _ in range(2))
    publish(source_store(), publisher, None)
    yield service, publisher
    service.close()
    publisher.close()


def recommended(user: str, history: list[str], k: int, num_candidates: int = 8) -> list[str]:
    """What recall -> rank must answer: the retrieval fixture's top candidates ranked by the ranker's."""
    candidates = fx.retrieval_reference(user, history, exclude=history)[0][:num_candidates]
    scores = fx.ranker_reference(np.array([PRICE[c] for c in candidates], np.float32),
                                 ["|".join(GENRES[c]) for c in candidates], [""] * len(candidates))
    return [candidates[i] for i in np.argsort(-scores["ctcvr"], kind="stable")[:k]]


def clicks(user: str, items: list[str], kind: str = "click", at: float = T0) -> dict:
    return {"events": [{"user_id": user, "item_id": i, "event": kind, "timestamp": at} for i in items]}


def test_a_cold_user_is_warm_after_three_clicks(stores, client):
    store, _ = stores
    http = TestClient(create_app(RecallRankPipeline(client, store, num_candidates=8)))
    before = http.get("/recommend/newbie", params={"top_k": 4}).json()
    assert before["is_cold_start"] and [r["item_id"] for r in before["items"]] == list(POPULAR)

    picked = ["item_01", "item_09", "item_33"]
    posted = http.post("/events", json=clicks("newbie", picked, at=T0 + 60))
    assert posted.status_code == 200 and posted.json()["applied"] == 3, posted.text
    after = http.get("/recommend/newbie", params={"top_k": 4}).json()
    assert not after["is_cold_start"] and after["fallback"] is None
    assert [r["item_id"] for r in after["items"]] == recommended("newbie", picked, 4)
    assert not set(picked) & {r["item_id"] for r in after["items"]}

    http.post("/events", json=clicks("newbie", ["item_02", "item_04", "item_06"], at=T0 + 120))
    assert store.history("newbie") == ["item_33", "item_02", "item_04", "item_06"]  # capped at max_history


def test_an_item_clicked_many_times_rises_in_the_hot_list(stores):
    store, _ = stores
    http = TestClient(create_app(RecallRankPipeline(ServingClient("127.0.0.1:1"), store)))
    assert "item_25" not in [i for i, _ in store.hot_items(10)]
    feature_before = store.item_features(["item_25"], ["item_hotness"])["item_hotness"][0]
    assert feature_before == 0.0
    events = [{"user_id": f"fan{n}", "item_id": "item_25", "event": "click", "timestamp": T0}
              for n in range(12)]
    assert http.post("/events", json=events).status_code == 200
    hot = store.hot_items(3)
    assert hot[0][0] == "item_25"
    # The offline formula on the log plus the clicks, the prior as fitted at publish (every row a click).
    log = pd.concat([interactions(), pd.DataFrame({"user_id": [f"fan{n}" for n in range(12)],
                                                   "item_id": "item_25", "timestamp": T0})]).assign(clicked=1)
    prior = source_store().meta.prior_strength
    offline = item_hotness(log, click_col="clicked", now=T0, prior_strength=prior).set_index("item_id")
    np.testing.assert_allclose(hot[0][1], offline.loc["item_25", "hotness"], rtol=1e-9)
    # The ranker's item_hotness: log1p of the interactions decayed with its own (30-day) half-life.
    feature = store.item_features(["item_25"], ["item_hotness"])["item_hotness"][0]
    np.testing.assert_allclose(feature, np.log1p(12.0), rtol=1e-9)
    assert http.get("/recommend/stranger", params={"top_k": 1}).json()["items"][0]["item_id"] == "item_25"

    shown = [{"user_id": "fan0", "item_id": "item_25", "event": "impression", "timestamp": T0}] * 40
    assert http.post("/events", json=shown).status_code == 200  # shown 40 times, never clicked: CTR falls
    assert dict(store.hot_items(10))["item_25"] < hot[0][1]
    assert store.history("fan0") == ["item_25"]  # impressions do not enter the history


BAD = [({"user_id": "x", "item_id": "item_01", "event": "like"}, "event.event"),
       ({"item_id": "item_01", "event": "click"}, "event.user_id"),
       ({"user_id": "x", "event": "click"}, "event.item_id"),
       ({"user_id": " ", "item_id": "item_01", "event": "click"}, "event.user_id"),
       ({"user_id": "x", "item_id": "item_01", "event": "click", "timestamp": "2023-11-14"},
        "event.timestamp"),
       ({"user_id": "x", "item_id": "item_01", "event": "click", "timestamp": "NOW+2d"}, "event.timestamp"),
       ({"events": [{"user_id": "x", "item_id": "item_01", "event": "click"},
                    {"user_id": "x", "item_id": "item_02", "event": "purchase"}]}, "events[1].event"),
       ({"events": [{"user_id": "x", "item_id": "item_01", "event": "click"}] * 6}, "events"),
       ([], "events"), ("not json", "body"),
       ({"user_id": "x", "item_id": "item_01", "event": "click", "timestamp": -1e15}, "event.timestamp"),
       ({"user_id": "x", "item_id": "item_01", "event": "click", "timestamp": int("9" * 400)},
        "event.timestamp"),  # past any float
       ({"user_id": "x", "item_id": "i" * 257, "event": "click"}, "event.item_id"),
       ({"user_id": "u" * 100_000, "item_id": "item_01", "event": "click"}, "event.user_id")]


def test_bad_events_get_a_400_naming_the_field_and_change_nothing(stores):
    store, _ = stores
    http = TestClient(create_app(RecallRankPipeline(ServingClient("127.0.0.1:1"), store), max_event_batch=5))
    hot = store.hot_items(40)
    for body, field in BAD:
        if isinstance(body, dict) and body.get("timestamp") == "NOW+2d":
            body = {**body, "timestamp": time.time() + 2 * 86400}
        answer = (http.post("/events", content=body, headers=JSON) if isinstance(body, str)
                  else http.post("/events", json=body))
        assert answer.status_code == 400 and answer.json()["field"] == field, (body, answer.text)
        assert field in answer.json()["error"]
    assert "more than the limit of 5" in http.post("/events", json=BAD[7][0]).json()["error"]
    assert store.history("x") is None and store.hot_items(40) == hot


def test_events_of_items_the_store_does_not_hold_are_left_out_and_said(stores):
    store, _ = stores
    http = TestClient(create_app(RecallRankPipeline(ServingClient("127.0.0.1:1"), store)))
    made_up = [{"user_id": f"w{n}", "item_id": "made-up", "event": "click", "timestamp": T0}
               for n in range(20)]
    answer = http.post("/events", json={"events": [*made_up, {"user_id": "w0", "item_id": "item_25",
                                                              "event": "click", "timestamp": T0}]})
    assert answer.status_code == 200, answer.text
    said = answer.json()
    assert (said["applied"], said["ignored"], said["ignored_example"]) == (1, 20, "made-up")
    assert "publish a store that holds them" in said["why"]
    assert "made-up" not in [i for i, _ in store.hot_items(60)]  # 20 clicks would have topped it
    assert store.history("w0") == ["item_25"] and store.history("w1") is None
    none_known = http.post("/events", json={"events": made_up[:2]}).json()
    assert none_known["applied"] == 0 and none_known["ignored"] == 2


def test_a_redis_history_expires_after_the_users_last_event(redis_server):
    store = RedisStore(redis_server.url, namespace=f"t{uuid.uuid4().hex[:8]}", timeout=5.0,
                       history_ttl_days=2)
    publish(source_store(), store, None)
    http = TestClient(create_app(RecallRankPipeline(ServingClient("127.0.0.1:1"), store)))
    assert http.post("/events", json=clicks("passing-by", ["item_01"])).status_code == 200
    reader = redis.Redis.from_url(redis_server.url)
    assert 2 * 86_400 - 60 <= reader.ttl(f"{store.ns}:hist:passing-by") <= 2 * 86_400  # bounded, not forever
    assert store.history("passing-by") == ["item_01"]
    reader.close()
    store.close()


def test_events_newer_than_the_published_version_get_model_recall(stores, client):
    store, publisher = stores
    publish(source_store(), publisher, client, k=5)
    pipeline = RecallRankPipeline(client, store, num_candidates=8, recall_source="published")
    http = TestClient(create_app(pipeline))
    published = http.get("/recall/u1", params={"top_k": 5}).json()
    assert set(published["versions"]) == {"published"}
    assert [r["item_id"] for r in published["items"]] == fx.retrieval_reference(
        "u1", HISTORIES["u1"], exclude=HISTORIES["u1"])[0][:5]
    http.post("/events", json=clicks("u1", ["item_30"], at=T0 + 10))
    fresh = http.get("/recall/u1", params={"top_k": 5}).json()
    history = HISTORIES["u1"] + ["item_30"]
    assert set(fresh["versions"]) == {"retrieval"}
    want = fx.retrieval_reference("u1", history, exclude=history)[0][:5]
    assert [r["item_id"] for r in fresh["items"]] == want

    # Events while a version is being written make it stale for their users too.
    number = publisher.begin_version()
    store.apply_events(parse_events(clicks("u2", ["item_01"], at=T0 + 20), time.time()))
    recall = {"u1": [("item_39", 1.0, "recall")], "u2": [("item_38", 1.0, "recall")]}
    publisher.write_version(number, Version.from_feature_store(source_store(), recall=recall))
    publisher.go_live(number)
    assert store.user_state("u1").published == recall["u1"] and store.user_state("u1").version == number
    assert store.user_state("u2").published is None
    assert store.history("u2") == HISTORIES["u2"] + ["item_01"]  # the publish kept the online history
    dropped = publisher.begin_version()
    publisher.abandon(dropped)
    assert store.user_state("u1").version == number


def test_of_two_publishes_at_once_the_later_begun_stays_live_whichever_finishes_last(redis_server):
    from tfrs_recsys.serving.stores import StoreStateError

    first, second = (RedisStore(redis_server.url, namespace="overlap", timeout=5.0) for _ in range(2))
    slow = first.begin_version()  # a publish waiting on a slow model server
    publish(source_store(), second, None)  # begun later, live first
    live = second.user_state("u1").version
    assert live > slow
    first.write_version(slow, Version.from_feature_store(source_store(), recall={}))
    with pytest.raises(StoreStateError, match=f"version {live}, published while version {slow} was written"):
        first.go_live(slow)
    first.abandon(slow)
    assert second.user_state("u1").version == live and second.user_state("u1").history  # still served
    assert second.histories(["u1"])["u1"] == HISTORIES["u1"]
    first.close()
    second.close()


def test_a_publish_while_clients_loop_on_recall_gives_no_error_and_no_mixed_version(stores, client):
    store, publisher = stores
    configs = [RecallMergeConfig(), RecallMergeConfig("positions", hot_positions=(1, 3)), RecallMergeConfig()]
    lists = {}

    def publish_next(config):
        publish(source_store(), publisher, client, k=6, recall_merge=config)
        state = publisher.user_state("u1")
        lists[state.version] = [[i, s, src] for i, s, src in state.published[:4]]

    publish_next(configs[0])
    seen, stop = [], threading.Event()
    pipeline = RecallRankPipeline(client, store, num_candidates=8, recall_source="published")
    with BackgroundServer(create_app(pipeline)) as url:
        def loop():
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    answer = http.get("/recall/u1", params={"top_k": 4})
                    seen.append((answer.status_code, answer.json()))

        looping = [threading.Thread(target=loop) for _ in range(2)]
        for thread in looping:
            thread.start()
        for config in configs[1:]:
            time.sleep(0.4)
            publish_next(config)
        time.sleep(0.4)
        stop.set()
        for thread in looping:
            thread.join()
    assert len(lists) == 3 and seen and all(status == 200 for status, _ in seen)
    versions = [answer["versions"]["published"] for _, answer in seen]
    assert len(set(versions)) >= 2, "the loop never saw a publish"
    for _, answer in seen:
        got = [[r["item_id"], r["score"], r["source"]] for r in answer["items"]]
        assert got == lists[answer["versions"]["published"]]
    assert any(src == "hot" for _, _, src in lists[max(lists) - 1])  # the versions differ


def test_redis_down_or_stalled_falls_back_then_recovers(tmp_path, client):
    server = RedisServer(tmp_path / "redis").start()
    try:
        store = RedisStore(server.url, namespace="faults", timeout=0.2, retry_interval=0.2)
        publish(source_store(), store, None)
        http = TestClient(create_app(RecallRankPipeline(client, store, num_candidates=8)))
        warm = http.get("/recommend/u1", params={"top_k": 3}).json()
        assert warm["fallback"] is None and not warm["is_cold_start"]
        health = http.get("/health").json()
        assert health["redis"] == "ok" and health["store"]["latency_ms"] >= 0
        for fault, repair in ((server.pause, server.resume), (server.stop, server.start)):
            fault()
            started = time.monotonic()
            answer = http.get("/recommend/u1", params={"top_k": 3})
            assert answer.status_code == 200 and "store unavailable" in answer.json()["fallback"]
            assert [r["item_id"] for r in answer.json()["items"]] == list(POPULAR)[:3]
            assert time.monotonic() - started < 2.0
            assert http.get("/recall/u2").json()["fallback"]
            down = http.get("/health")
            assert down.status_code == 503 and down.json()["redis"] == "down"
            assert down.json()["status"] == "degraded" and "latency_ms" in down.json()["store"]
            events = http.post("/events", json=clicks("u1", ["item_01"]))
            assert events.status_code == 503 and "no event was applied" in events.json()["error"]
            repair()
            fx.wait_for(lambda: http.get("/recommend/u1", params={"top_k": 3}).json()["fallback"] is None,
                        timeout=10, message="the service to use Redis again")
            assert http.get("/recommend/u1", params={"top_k": 3}).json()["items"] == warm["items"]
            assert http.get("/health").json()["redis"] == "ok"
        assert store.history("u1") == HISTORIES["u1"]  # the rejected events left nothing behind
        wiper = redis.Redis.from_url(server.url)  # a restart without persistence: its data is gone
        wiper.flushall()
        wiper.close()
        lost = http.get("/recommend/u1", params={"top_k": 3}).json()
        assert "nothing is published" in lost["fallback"]  # said, never a silent empty answer
        assert [r["item_id"] for r in lost["items"]] == list(POPULAR)[:3]
        empty = http.get("/health")
        assert empty.status_code == 503 and empty.json()["redis"] == "empty"
        publish(source_store(), store, None)
        assert http.get("/recommend/u1", params={"top_k": 3}).json()["items"] == warm["items"]
    finally:
        server.stop()


def test_publish_command_to_redis_and_to_a_folder(tmp_path, redis_server, model_server, monkeypatch):
    folder = source_store().save(tmp_path / "source")
    want = fx.retrieval_reference("u1", HISTORIES["u1"], exclude=HISTORIES["u1"])[0][:5]
    namespace = f"cli{uuid.uuid4().hex[:6]}"
    common = ["--feature-store", str(folder), "--address", model_server.address, "--k", "5"]
    monkeypatch.setenv("RECSYS_REDIS_NAMESPACE", namespace)
    assert publish_main([*common, "--store", redis_server.url]) == 0
    redis_store = RedisStore(redis_server.url, namespace=namespace)
    state = redis_store.user_state("u1")
    assert state.version == 1 and [i for i, _, _ in state.published] == want
    assert redis_store.history("u2") == HISTORIES["u2"]
    for version in (1, 2):
        assert publish_main([*common, "--store", str(tmp_path / "served")]) == 0
        loaded = open_store(str(tmp_path / "served")).user_state("u1")
        assert loaded.version == version and [i for i, _, _ in loaded.published] == want
    monkeypatch.delenv("RECSYS_STORE", raising=False)
    with pytest.raises(SystemExit):
        publish_main(["--feature-store", str(folder)])  # no store named


def test_the_store_from_the_environment():
    assert store_from_environment({}) is None
    assert store_from_environment({"RECSYS_REDIS_HOST": "cache"}) == "redis://cache:6379/0"
    assert store_from_environment({"RECSYS_REDIS_HOST": "h", "RECSYS_REDIS_PORT": "7000",
                                   "RECSYS_REDIS_DB": "2"}) == "redis://h:7000/2"
    assert store_from_environment({"RECSYS_STORE": "store/", "RECSYS_REDIS_HOST": "h"}) == "store/"


def test_the_service_answers_hostile_http_with_json_4xx_and_drops_stalled_heads():
    """Through uvicorn and the connection guard, as `http_service` serves: a bad query parameter, a body
    over the limit, JSON nested past the parser, and a request head or body that never completes."""
    app = create_app(RecallRankPipeline(ServingClient("127.0.0.1:1"), MemoryStore(source_store())),
                     max_body_bytes=200_000, body_timeout_s=0.5)
    with BackgroundServer(app, header_timeout_s=0.5) as url:
        bad_k = httpx.get(f"{url}/recommend/u1?top_k=0", timeout=10)
        assert bad_k.status_code == 400 and bad_k.json()["field"] == "top_k"
        big = httpx.post(f"{url}/events", content=b"[" + b" " * 300_000 + b"]", timeout=10, headers=JSON)
        assert big.status_code == 413 and big.json()["field"] == "body"
        deep = httpx.post(f"{url}/events", content=b"[" * 100_000, timeout=10, headers=JSON)
        assert deep.status_code == 400 and deep.json()["field"] == "body"
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: ")  # and nothing more
            assert stalled.recv(1000).startswith(b"HTTP/1.1 408")
        with socket.create_connection((host, int(port)), timeout=10) as trickle:
            trickle.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 1000\r\n\r\n[")  # and no more
            assert trickle.recv(1000).startswith(b"HTTP/1.1 408")
        with socket.create_connection((host, int(port)), timeout=10) as crumbs:  # a body a byte at a time
            crumbs.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\n \r\n" * 20_000)
            assert crumbs.recv(1000).startswith(b"HTTP/1.1 413")  # cut at 10,000 chunks, the loop free
        assert httpx.get(f"{url}/recall/u1?top_k=2", timeout=10).status_code in (200, 503)  # still serving


def test_the_default_event_body_cap_fits_a_full_batch_of_the_longest_ids_and_little_more():
    """MAX_BATCH events of MAX_ID_CHARS non-ASCII ids, as json.dumps escapes them, fit the default body; a
    body twice that does not (its JSON is parsed on the event loop: a big cap lets a few clients stall every
    other request)."""
    from tfrs_recsys.serving.events import MAX_BATCH, MAX_ID_CHARS
    from tfrs_recsys.serving.http_service import MAX_BODY_BYTES

    event = {"user_id": "é" * MAX_ID_CHARS, "item_id": "商" * MAX_ID_CHARS, "event": "conversion",
             "timestamp": 1_700_000_000.123456}
    full = json.dumps([event] * MAX_BATCH).encode()
    assert len(full) <= MAX_BODY_BYTES < 2 * len(full)


def test_a_store_whose_time_is_epoch_milliseconds_read_as_seconds_is_refused(tmp_path):
    """Versions before 0.2 read a log's epoch milliseconds as seconds: such a store weighed every new
    event at 0 (its as_of in the year 50,000). Loaded from disk or Redis, it is refused with the fix."""
    from tfrs_recsys.data.errors import DataError
    from tfrs_recsys.serving.stores.base import StoreMeta, StoreStateError

    path = source_store().save(tmp_path / "store")
    manifest = json.loads((path / "store.json").read_text())
    assert FeatureStore.load(path).meta.as_of == manifest["meta"]["as_of"] < 1e11
    manifest["meta"]["as_of"] *= 1000
    (path / "store.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="milliseconds read as seconds.*feature_store --run-dir"):
        FeatureStore.load(path)
    with pytest.raises(StoreStateError, match="milliseconds"):
        StoreMeta.from_dict(manifest["meta"])


def test_impressions_keep_a_published_list_and_leave_no_trace_of_new_users(stores, client, redis_server):
    store, publisher = stores
    publish(source_store(), publisher, client, k=5)
    published = store.user_state("u1").published
    assert published
    store.apply_events(parse_events(clicks("u1", ["item_30"], kind="impression", at=T0 + 10), time.time()))
    assert store.user_state("u1").published == published  # no history change: the list still holds

    def flood(batch: int) -> None:  # 1,000 visitors never seen, each with one impression of a known item
        events = [{"user_id": f"visitor-{batch}-{n:04d}-" + "x" * 64, "item_id": "item_30",
                   "event": "impression", "timestamp": T0 + 20} for n in range(1000)]
        store.apply_events(parse_events({"events": events}, time.time()))

    if isinstance(store, MemoryStore):
        flood(0)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for batch in range(1, 6):
            flood(batch)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert grown < 100_000, f"{grown} bytes kept for 5,000 impression-only visitors"
    else:
        keys = redis.Redis.from_url(redis_server.url)
        flood(0)
        before = keys.dbsize(), keys.info("memory")["used_memory"]
        for batch in range(1, 6):
            flood(batch)
        assert keys.dbsize() == before[0]
        assert keys.info("memory")["used_memory"] - before[1] < 100_000


def test_a_store_of_old_data_is_said_and_events_past_its_reach_name_the_field_and_the_fix():
    now = time.time()
    assert staleness_warning(StoreMeta(as_of=now - 3 * 86400), now) is None
    stale = staleness_warning(StoreMeta(as_of=now - 2 * 365 * 86400), now)
    assert stale and "730 days before this machine's clock" in stale and "one click outweighs" in stale
    ancient = StoreMeta(as_of=1_230_000_000.0, hot_half_life_days=7.0, feature_half_life_days=7.0)
    single = parse_events({"user_id": "x", "item_id": "item_01", "event": "click", "timestamp": now}, now)
    with pytest.raises(EventError) as refused:
        increments(single, ancient)
    assert refused.value.field == "event.timestamp"
    assert "years after the store's data ends" in str(refused.value) and "publish a store built" in str(
        refused.value)
    assert increments(parse_events({"user_id": "x", "item_id": "item_01", "event": "click",
                                    "timestamp": 1_230_000_000.0 + 86400}, now), ancient)["item_01"][1] > 1


def _next_day(new_user: str, new_item: str) -> FeatureStore:
    """The source store a day later: one new user, and a new item hotter than any."""
    day = pd.concat([interactions(), pd.DataFrame(
        [(new_user, item, T0 + 3600.0 * j) for j, item in enumerate(["item_15", "item_16"])]
        + [(f"q{n}", new_item, T0 + 60.0 * n) for n in range(20)],
        columns=["user_id", "item_id", "timestamp"]).assign(rating=1.0)])
    items = source_store().item_rows()
    table = pd.DataFrame([{"item_id": i, **row} for i, row in items.items()])
    return FeatureStore.from_interactions(InteractionData(day, table), max_history=MAX_HISTORY)


def test_a_folder_store_is_refreshed_live_keeping_online_histories_and_a_corrupt_write_is_ignored(
        tmp_path, client, caplog):
    from tfrs_recsys.serving.store_refresh import FolderStoreRefresher

    folder = source_store().save(tmp_path / "store")
    pipeline = RecallRankPipeline(client, MemoryStore.load(folder), num_candidates=8)
    http = TestClient(create_app(pipeline))
    assert http.get("/recommend/u9").json()["is_cold_start"]
    http.post("/events", json=clicks("u1", ["item_01"], at=T0 + 30), headers=JSON)
    with FolderStoreRefresher(pipeline.store, folder, poll_seconds=0.05) as refresher:
        _next_day("u9", "item_38").save(folder)  # in place, as `feature_store --out` writes: store.json last
        fx.wait_for(lambda: refresher.loaded, timeout=30, message="the refresh")
        warm = http.get("/recommend/u9", params={"top_k": 4}).json()
        assert not warm["is_cold_start"] and warm["fallback"] is None
        assert [r["item_id"] for r in warm["items"]] == recommended("u9", ["item_15", "item_16"], 4)
        hot = http.get("/recommend/someone-new", params={"top_k": 2}).json()
        assert hot["is_cold_start"] and hot["items"][0]["item_id"] == "item_38"
        assert pipeline.store.history("u1") == HISTORIES["u1"][-3:] + ["item_01"]  # the event's kept

        # publish --store DIR swaps a folder in by renames; a new item again tops the hot list
        loaded = refresher.loaded
        _next_day("u9", "item_37").save(tmp_path / "day3")
        assert publish_main(["--feature-store", str(tmp_path / "day3"), "--store", str(folder),
                             "--skip-recall"]) == 0
        fx.wait_for(lambda: refresher.loaded > loaded, timeout=30, message="the second refresh")
        assert http.get("/recommend/x", params={"top_k": 1}).json()["items"][0]["item_id"] == "item_37"

        # a completed write of a corrupt store: logged, the old version keeps serving
        (folder / "hot_items.parquet").write_bytes(b"not parquet")
        (folder / "store.json").write_text("{}")
        fx.wait_for(lambda: refresher.error, timeout=30, message="the failed refresh")
        assert "store.json" in refresher.error or "hot_items" in refresher.error
        assert "kept" in caplog.text
        assert http.get("/recommend/x", params={"top_k": 1}).json()["items"][0]["item_id"] == "item_37"
        assert http.get("/recommend/u9").status_code == 200

        # a folder by the manifest's name is no store written, whatever files lie beside it: nothing goes live
        loaded = refresher.loaded
        for part in _next_day("u9", "item_36").save(tmp_path / "day4").iterdir():
            if part.name != "store.json":
                shutil.copy(part, folder / part.name)
        (folder / "store.json").unlink()
        (folder / "store.json").mkdir()
        time.sleep(0.5)  # ten polls
        assert refresher.loaded == loaded
        assert http.get("/recommend/x", params={"top_k": 1}).json()["items"][0]["item_id"] == "item_37"


def test_excluded_items_leave_published_lists_and_the_hot_fallback(tmp_path, client):
    from tfrs_recsys.serving.exclusions import ExcludedItems

    store = MemoryStore(source_store())
    publish(source_store(), store, client, k=5)
    published = [i for i, _, _ in store.user_state("u1").published]
    banned = tmp_path / "removed.txt"
    removed = [published[0], list(POPULAR)[0]]
    banned.write_text(f"# removed today\n {removed[0]} \n\n{removed[1]}\n")
    pipeline = RecallRankPipeline(client, store, num_candidates=8, recall_source="published",
                                  exclude_items=ExcludedItems(banned, check_seconds=0))
    assert pipeline.recall("u1", 5).item_ids == [i for i in published if i not in removed]
    assert pipeline.recall("nobody", 3).item_ids == list(POPULAR)[1:]
    assert pipeline.without_models("nobody", 3, RuntimeError("down")).item_ids == list(POPULAR)[1:]
