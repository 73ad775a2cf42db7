"""The gRPC client, the recall -> rank pipeline, its CLI and HTTP service, against a real server process."""
import json
import os
import socket
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import serving_fixtures as fx
from side_by_side import run_side_by_side

from tfrs_recsys.serving.client import ServerUnavailableError, ServingClient, ServingClientError
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.http_service import create_app
from tfrs_recsys.serving.pipeline import (
    RecallRankPipeline,
    Recommendation,
    Recommendations,
    request_time_features,
)
from tfrs_recsys.serving.recall_merge import RecallMergeConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette announces that its httpx-based TestClient moves to httpx2
    from fastapi.testclient import TestClient

HISTORY = ["item_03", "item_07", "item_11"]
GENRES = {item: ["g1", "g2", "g3"][: i % 4] for i, item in enumerate(fx.ITEM_IDS)}
PRICE = {item: float(i % 7) * 0.5 for i, item in enumerate(fx.ITEM_IDS)}
HOT = ["item_30", "item_12", "item_05", "item_21"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("client")
    fx.publish_retrieval(base, version=1)
    fx.publish_ranker(base, version=1)
    config = fx.models_config(base, {"retrieval": {}, "ranker": {}})
    proc = fx.start_server(base, [f"--model_config_file={config}"])
    yield proc
    assert proc.stop() == 0, proc.log_tail()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    items = pd.DataFrame({"item_id": fx.ITEM_IDS, "genres": [GENRES[i] for i in fx.ITEM_IDS],
                          "price": [PRICE[i] for i in fx.ITEM_IDS], "title": [f"t{i}" for i in fx.ITEM_IDS]})
    hot = pd.DataFrame({"item_id": HOT, "hotness": [4.0, 3.0, 2.0, 1.0]})
    store = FeatureStore({"u1": HISTORY, "u_empty": []}, hot, item_features=items)
    return store.save(tmp_path_factory.mktemp("store"))


@pytest.fixture()
def client(server):
    with ServingClient(server.address, timeout=10.0, ranker_model="ranker") as c:
        yield c


def test_client_retrieve_rank_metadata_status(client):
    top = client.retrieve("u1", HISTORY, k=5)
    want_ids, want_scores = fx.retrieval_reference("u1", HISTORY)
    assert top.item_ids == want_ids[:5] and top.version == 1
    np.testing.assert_allclose(top.scores, want_scores[:5], rtol=1e-5)

    unseen = client.retrieve("u1", HISTORY, exclude_seen=True)
    assert unseen.item_ids == fx.retrieval_reference("u1", HISTORY, exclude=HISTORY)[0]
    assert not set(unseen.item_ids) & set(HISTORY)
    # longer than the signature's width: the recent 5 count
    long_history = [f"item_{i:02d}" for i in range(20, 28)]
    assert client.retrieve("u2", long_history).item_ids == fx.retrieval_reference("u2", long_history[-5:])[0]
    with pytest.raises(ValueError, match="at most 10 items"):
        client.retrieve("u1", HISTORY, k=50)

    candidates = ["item_01", "item_02", "item_09"]
    ranked = client.rank("u1", candidates, {"genres": [["g1"], "g1|g2", None], "price": [1.0, 2.0, 0.5],
                                            "device": "mobile"})
    want = fx.ranker_reference(np.array([1.0, 2.0, 0.5], np.float32), ["g1", "g1|g2", ""], ["mobile"] * 3)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(ranked.outputs[name], want[name], rtol=1e-5)
    with pytest.raises(ValueError, match="no inputs \\['colour'\\]"):
        client.rank("u1", candidates, {"colour": "red"})
    with pytest.raises(ValueError, match="'price' takes numbers .* not 'cheap'"):
        client.rank("u1", candidates, {"price": [1.0, "cheap", 0.5]})
    with pytest.raises(ValueError, match="no input 'asin' for the item ids.*item_feature="):  # not dropped
        client.rank("u1", candidates, item_feature="asin")
    with pytest.raises(ValueError, match="no input 'reviewerID' for the user ids"):
        client.rank("u1", candidates, user_feature="reviewerID")

    signature = client.metadata("ranker")["serving_default"]
    assert signature.inputs["price"].dtype_name == "DT_FLOAT" and signature.inputs["price"].shape == (-1,)
    assert set(signature.outputs) == {"ctr", "cvr", "ctcvr"}
    assert client.status("retrieval") == [{"version": 1, "state": "AVAILABLE", "error_code": 0,
                                           "error_message": ""}]


def test_client_errors_name_the_problem(client, server):
    with pytest.raises(ServingClientError, match="NOT_FOUND") as info:
        client.metadata("nope")
    assert info.value.code.name == "NOT_FOUND" and server.address in str(info.value)

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with ServingClient(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5) as hurried:
            with pytest.raises(ServingClientError, match="0.5s deadline") as info:
                hurried.status("retrieval")
        assert info.value.code.name == "DEADLINE_EXCEEDED"

    dead = f"127.0.0.1:{fx.free_port()}"
    with ServingClient(dead, timeout=2.0) as nobody:
        with pytest.raises(ServerUnavailableError) as info:
            nobody.retrieve("u1", HISTORY)
    message = str(info.value)
    assert dead in message and "python -m tfrs_recsys.model_server" in message


def expected_recommendation(k, num_candidates=8, device="mobile"):
    candidates = fx.retrieval_reference("u1", HISTORY, exclude=HISTORY)[0][:num_candidates]
    scores = fx.ranker_reference(np.array([PRICE[c] for c in candidates], np.float32),
                                 ["|".join(GENRES[c]) for c in candidates], [device] * len(candidates))
    order = np.argsort(-scores["ctcvr"], kind="stable")
    return [candidates[i] for i in order[:k]], scores["ctcvr"][order[:k]]


def test_pipeline_recall_rank_and_cold_start(client, store_dir):
    pipeline = RecallRankPipeline(client, FeatureStore.load(store_dir), num_candidates=8)
    result = pipeline.recommend("u1", k=5, context={"device": "mobile"})
    want_ids, want_scores = expected_recommendation(5)
    assert not result.is_cold_start and result.versions == {"retrieval": 1, "ranker": 1}
    assert result.item_ids == want_ids
    np.testing.assert_allclose([r.score for r in result.items], want_scores, rtol=1e-5)
    assert all(r.source == "recall" and set(r.scores) == {"ctr", "cvr", "ctcvr", "retrieval"}
               for r in result.items)
    assert [r.score for r in result.items] == sorted((r.score for r in result.items), reverse=True)

    recalled = pipeline.recall("u1", k=3)
    assert recalled.item_ids == fx.retrieval_reference("u1", HISTORY, exclude=HISTORY)[0][:3]

    for user in ("stranger", "u_empty"):
        cold = pipeline.recommend(user, k=3)
        assert cold.is_cold_start and cold.item_ids == HOT[:3]
        assert ([r.source for r in cold.items] == ["hot"] * 3
                and [r.score for r in cold.items] == [4.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="not an input"):
        pipeline.recommend("u1", k=3, context={"weather": "rain"})


def test_pipeline_hands_hot_items_to_the_ranker_by_ratio(client):
    items = pd.DataFrame({"item_id": fx.ITEM_IDS, "genres": [GENRES[i] for i in fx.ITEM_IDS],
                          "price": [PRICE[i] for i in fx.ITEM_IDS]})
    # item_30 is hot and also retrieved; item_07 is hot but in u1's history.
    hot = pd.DataFrame({"item_id": ["item_30", "item_07", "item_12", "item_05", "item_21"],
                        "hotness": [5.0, 4.0, 3.0, 2.0, 1.0]})
    store = FeatureStore({"u1": HISTORY}, hot, item_features=items)
    pipeline = RecallRankPipeline(client, store, num_candidates=8,
                                  recall_merge=RecallMergeConfig("ratio", hot_ratio=0.25))
    recalled = fx.retrieval_reference("u1", HISTORY, exclude=HISTORY)[0]
    assert recalled[1] == "item_30" and "item_12" not in recalled[:6] and "item_05" not in recalled[:6]
    # 8 slots at ratio 0.25: slots 4 and 8 are hot. Slot 4's hottest item, item_30, already sits at
    # slot 2 and item_07 is seen, so item_12 comes in; slot 8 takes item_05.
    want = recalled[:3] + ["item_12"] + recalled[3:6] + ["item_05"]
    candidates = pipeline.recall("u1", k=8)
    assert candidates.item_ids == want
    assert [r.source for r in candidates.items] == ["recall"] * 3 + ["hot"] + ["recall"] * 3 + ["hot"]
    assert candidates.items[3].score == 3.0 and candidates.items[7].scores == {"hotness": 2.0}

    result = pipeline.recommend("u1", k=8, context={"device": "mobile"})
    scores = fx.ranker_reference(np.array([PRICE[c] for c in want], np.float32),
                                 ["|".join(GENRES[c]) for c in want], ["mobile"] * len(want))
    order = np.argsort(-scores["ctcvr"], kind="stable")
    assert result.item_ids == [want[i] for i in order]  # the hot items were ranked with the others
    np.testing.assert_allclose([r.score for r in result.items], scores["ctcvr"][order], rtol=1e-5)
    by_id = {r.item_id: r for r in result.items}
    for item, hotness in (("item_12", 3.0), ("item_05", 2.0)):
        assert by_id[item].source == "hot" and by_id[item].scores["hotness"] == hotness
        np.testing.assert_allclose(by_id[item].scores["ctr"], scores["ctr"][want.index(item)], rtol=1e-5)
    assert by_id["item_30"].source == "recall" and "item_07" not in by_id

    cold = pipeline.recommend("stranger", k=3)
    assert cold.is_cold_start and cold.item_ids == ["item_30", "item_07", "item_12"]


def test_feature_store_from_interactions_round_trips(tmp_path):
    from tfrs_recsys.data.synthetic_interactions import synthetic_histories

    data = synthetic_histories(num_users=30, num_items=80, seed=3)
    store = FeatureStore.from_interactions(data)
    loaded = FeatureStore.load(store.save(tmp_path / "store"))
    user = str(data.interactions["user_id"].iloc[0])
    rows = data.interactions[data.interactions["user_id"] == data.interactions["user_id"].iloc[0]]
    assert (loaded.history(user)
            == [str(i) for i in rows.sort_values("timestamp", kind="mergesort")["item_id"]])
    assert loaded.history("nobody") is None
    hot = loaded.hot_items(5)
    assert len(hot) == 5 and [h for _, h in hot] == sorted((h for _, h in hot), reverse=True)
    # The rankers' item_hotness as of the newest event: log1p of interactions decayed with a 30-day half-life.
    times = data.interactions["timestamp"].to_numpy(float)
    decay = 0.5 ** ((times.max() - times) / 86400.0 / 30.0)
    want = pd.Series(decay).groupby(data.interactions["item_id"].astype(str).to_numpy()).sum().map(np.log1p)
    got = loaded.item_features(list(want.index), ["item_hotness"])["item_hotness"]
    np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-6)
    with pytest.raises(Exception, match="hot_items.parquet is missing"):
        FeatureStore.load(tmp_path / "empty")


def test_request_time_features_fill_what_the_ranker_takes_and_the_request_lacks():
    inputs = {"item_id": None, "timestamp": None, "hour": None, "weekday": None}
    tuesday_2213_utc = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    assert request_time_features(inputs, {}, tuesday_2213_utc) == {
        "timestamp": tuesday_2213_utc, "hour": 22, "weekday": 1}
    assert request_time_features(inputs, {"hour": 9}, tuesday_2213_utc) == {"timestamp": tuesday_2213_utc,
                                                                             "weekday": 1}
    assert request_time_features({"item_id": None, "price": None}, {}, tuesday_2213_utc) == {}
    assert request_time_features({"shown_at": None, "hour": None}, {}, tuesday_2213_utc, "shown_at") == {
        "shown_at": tuesday_2213_utc, "hour": 22}  # a ranker's --time-column by its own name


def _grpc_experiments_seen_by_client_processes(*env_values):
    """GRPC_EXPERIMENTS in a fresh process per value (None: unset), once our client (and with it grpc) is
    imported; the processes run side by side."""
    envs = []
    for env_value in env_values:
        env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
        if env_value is not None:
            env["GRPC_EXPERIMENTS"] = env_value
        envs.append(env)
    code = "import os, tfrs_recsys.serving.client, grpc; print(repr(os.environ.get('GRPC_EXPERIMENTS')))"
    done = run_side_by_side([[sys.executable, "-c", code]] * len(envs), timeout=120, envs=envs, cwd=fx.REPO)
    assert all(proc.returncode == 0 for proc in done), [proc.stderr[-3000:] for proc in done]
    return [proc.stdout.strip() for proc in done]


def test_grpc_transport_setting_is_set_on_import_and_yields_to_the_user():
    assert _grpc_experiments_seen_by_client_processes(None, "", "-event_engine_client") == [
        "'-event_engine_client,-event_engine_listener'", "''", "'-event_engine_client'"]


def test_recommend_cli(server, store_dir):
    def command(*args):
        return [sys.executable, "-m", "tfrs_recsys.recommend", *args]

    store, address = ["--store", str(store_dir)], ["--address", server.address]
    # six independent command lines, started together (each spends seconds loading TensorFlow)
    done, table, mixed, kept, bad, down = run_side_by_side([
        command("--user-id", "u1", "--k", "4", *store, *address, "--num-candidates", "8", "--ranker-model",
                "ranker", "--context", "device=mobile", "--json"),
        command("--user-id", "stranger", "--k", "2", *store, *address, "--ranker-model", "ranker"),
        command("--user-id", "u1", "--k", "3", *store, *address, "--recall-only", "--recall-merge",
                "positions", "--hot-positions", "1", "--json"),
        command("--user-id", "u1", "--k", "8", *store, *address, "--recall-only", "--keep-seen",
                "--json"),  # a log of re-reads: the history stays
        command("--user-id", "u1", *store, "--recall-merge", "positions"),
        command("--user-id", "u1", *store, "--address", f"127.0.0.1:{fx.free_port()}"),
    ], timeout=120, cwd=fx.REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["item_id"] for r in result["items"]] == expected_recommendation(4)[0]
    assert result["is_cold_start"] is False
    assert table.returncode == 0 and "cold start" in table.stdout and HOT[0] in table.stdout
    assert mixed.returncode == 0, mixed.stderr
    recalled = fx.retrieval_reference("u1", HISTORY, exclude=HISTORY)[0]
    assert recalled[1] == HOT[0]  # the hottest item is also retrieved second: it is listed once, at slot 1
    assert [(r["item_id"], r["source"]) for r in json.loads(mixed.stdout)["items"]] == [
        (HOT[0], "hot"), (recalled[0], "recall"), (recalled[2], "recall")]
    assert kept.returncode == 0, kept.stderr
    assert ([r["item_id"] for r in json.loads(kept.stdout)["items"]]
            == fx.retrieval_reference("u1", HISTORY)[0][:8])
    assert bad.returncode == 2 and "field 'hot_positions'" in bad.stderr
    assert down.returncode == 1 and "no model server answers" in down.stderr


def test_http_service_endpoints(server, store_dir):
    store = FeatureStore.load(store_dir)
    with ServingClient(server.address, timeout=10.0, ranker_model="ranker") as c:
        http = TestClient(create_app(RecallRankPipeline(c, store, num_candidates=8)))
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["models"] == {"retrieval": 1, "ranker": 1}
        recall = http.get("/recall/u1", params={"top_k": 3}).json()
        assert ([r["item_id"] for r in recall["items"]]
                == fx.retrieval_reference("u1", HISTORY, exclude=HISTORY)[0][:3])
        recommended = http.get("/recommend/u1", params={"top_k": 4}).json()
        assert [r["item_id"] for r in recommended["items"]] == expected_recommendation(4, device="")[0]
        mobile = http.get("/recommend/u1", params={"top_k": 4, "device": "mobile"}).json()  # request context
        want, scores = expected_recommendation(4)
        assert [r["item_id"] for r in mobile["items"]] == want
        np.testing.assert_allclose([r["score"] for r in mobile["items"]], scores, rtol=1e-5)
        for user in ("u1", "somebody-new"):  # refused for a cold user too
            unknown = http.get(f"/recommend/{user}", params={"colour": "red"})
            assert unknown.status_code == 400 and "colour" in unknown.json()["error"]
        as_one_item = http.get("/recommend/u1", params={"item_id": "item_01"})  # would rank all as one
        assert as_one_item.status_code == 400 and "filled per candidate" in as_one_item.json()["error"]
        twice = http.get("/recommend/u1?device=mobile&device=desktop")
        assert twice.status_code == 400 and "more than once" in twice.json()["error"]
        assert http.get("/recall/u1", params={"device": "mobile"}).status_code == 400
        cold = http.get("/recommend/somebody-new").json()
        assert cold["is_cold_start"] is True and [r["item_id"] for r in cold["items"]] == HOT
        bad_k = http.get("/recommend/u1", params={"top_k": 0})  # a JSON error naming it, as every other
        assert bad_k.status_code == 400 and bad_k.json()["field"] == "top_k"
    with ServingClient(f"127.0.0.1:{fx.free_port()}", timeout=2.0, ranker_model="ranker") as dead:
        down = TestClient(create_app(RecallRankPipeline(dead, store)))
        assert down.get("/health").status_code == 503
        degraded = down.get("/recommend/u1", params={"top_k": 3})  # a known user: the hot items, said so
        assert degraded.status_code == 200 and "no model server answers" in degraded.json()["fallback"]
        assert [r["item_id"] for r in degraded.json()["items"]] == [h for h in HOT if h not in HISTORY][:3]
        assert down.get("/recall/u1").status_code == 503  # the retrieval model's own list has no stand-in


def test_a_score_that_is_not_finite_is_json_null():
    answer = Recommendations("u1", [Recommendation("a", float("nan"), "recall", {"ctr": float("nan"),
                                                                                  "retrieval": 1.5})], False)
    text = json.dumps(answer.to_dict(), allow_nan=False)  # what an HTTP answer must be: strict JSON
    assert json.loads(text)["items"][0] == {"item_id": "a", "score": None, "source": "recall",
                                            "scores": {"ctr": None, "retrieval": 1.5}}


def test_a_model_server_back_after_an_outage_is_found_within_a_second_or_two():
    import time
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    class Status(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            return get_model_status_pb2.GetModelStatusResponse()

    address = f"127.0.0.1:{fx.free_port()}"

    def serve() -> grpc.Server:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Status(), server)
        assert server.add_insecure_port(address), f"{address} was taken meanwhile"
        server.start()
        return server

    server = serve()
    with ServingClient(address, timeout=0.5) as client:
        assert client.status("m") == []
        server.stop(None)
        outage = time.monotonic() + 10  # gRPC's own backoff would have grown past 5 s by now
        while time.monotonic() < outage:
            with pytest.raises(ServerUnavailableError):
                client.status("m")
            time.sleep(0.2)
        server, back = serve(), time.monotonic()
        try:
            while time.monotonic() - back < 10:
                try:
                    client.status("m")
                    break
                except ServerUnavailableError:
                    time.sleep(0.05)
            assert time.monotonic() - back < 3.5  # gRPC's own backoff: 4-7 s after a 10 s outage
        finally:
            server.stop(None)
