"""``make demo``: raw logs to answers over gRPC, on the default synthetic data, in a few minutes.

1. train the Transformer two-tower retrieval model on synthetic user histories;
2. train a DeepFM ranker on the same histories as implicit clicks (with item hotness);
3. export both in TF Serving's layout (retrieval twice: ScaNN and portable brute force);
4. write the serving feature store (histories, item features, hot items);
5. start the TF-Serving-protocol model server on loopback;
6. ask it, over tensorflow-serving-api gRPC, for a known user and for a cold user;
7. the online half: start a local redis-server, publish the recall lists and the store to it, and over
   the HTTP service post three clicks for a cold user, showing their recommendations before and after;
8. stop the servers.
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from tfrs_recsys.serving.client import ServerUnavailableError
from tfrs_recsys.serving.stores.local_redis import free_port

MODELS = ("retrieval", "retrieval_portable", "deepfm")


def _step(number: int, text: str) -> float:
    print(f"\n== [{number}/8] {text}", flush=True)
    return time.perf_counter()


def _done(start: float, what: str = "") -> None:
    print(f"   done in {time.perf_counter() - start:.1f}s {what}", flush=True)


def _available(client, model: str) -> bool:
    try:
        return any(v["state"] == "AVAILABLE" for v in client.status(model))
    except ServerUnavailableError:  # not listening yet
        return False


def _wait_until_available(client, timeout: float, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    for i, model in enumerate(MODELS):
        while not _available(client, model):
            if server.poll() is not None:
                raise RuntimeError(f"the model server exited with code {server.returncode}; "
                                   "see its log above")
            if time.monotonic() > deadline:
                raise TimeoutError(f"models {list(MODELS[i:])} not AVAILABLE after {timeout:.0f}s")
            time.sleep(0.5)


def _train(model: str, options: dict, work: Path, shown: Sequence[str]):
    """Trains ``model`` into ``work/model``; returns its config and the test metrics in ``shown``, as text."""
    from tfrs_recsys.config_sources import build_config

    # A rerun of the demo trains its runs again.
    cfg = build_config(model, {**options, "output_dir": str(work / model), "overwrite": True}, environ={})
    metrics = importlib.import_module(f"tfrs_recsys.training.{model}").run(cfg)
    return cfg, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k in shown)


def _print_answer(user: str, answer: dict, labels: dict[str, str], history: Sequence[str] | None,
                  where: str = "") -> None:
    """Prints an answer (``Recommendations.to_dict()``, or the HTTP service's JSON)."""
    kind, what = (("cold start: global hot items", "hotness") if answer["is_cold_start"]
                  else ("retrieval top-100 -> DeepFM", "pCTR"))
    print(f"\n   user {user!r} ({where}{kind}):")
    if history:
        print(f"   last {min(5, len(history))} of {len(history)} items seen, most recent last:")
        for item in history[-5:]:
            print(f"        item {item:>6s}  {labels.get(item, '')}")
        print("   recommended:")
    for rank, item in enumerate(answer["items"], start=1):
        print(f"   {rank:3d}. item {item['item_id']:>6s}  {labels.get(item['item_id'], ''):42s} "
              f"from {item['source']:6s} {what} {item['score']:.4f}")


def _online_step(client, store, history: Sequence[str], labels: dict[str, str], work: Path, k: int) -> None:
    """Step 7: Redis as the online store, published from the run; three clicks turn a cold user warm."""
    import httpx

    from tfrs_recsys.serving.http_service import BackgroundServer, create_app
    from tfrs_recsys.serving.pipeline import RecallRankPipeline
    from tfrs_recsys.serving.publish import publish
    from tfrs_recsys.serving.stores.local_redis import RedisServer
    from tfrs_recsys.serving.stores.redis_store import RedisStore

    with RedisServer(work / "redis") as redis_server:
        redis_store = RedisStore(redis_server.url, timeout=5.0)
        summary = publish(store, redis_store, client, k=100)
        print(f"   redis-server ({redis_server.binary}) on {redis_server.url}: published version "
              f"{summary['version']}, {summary['recall_lists']} recall lists, {summary['hot_items']} hot "
              f"items in {summary['seconds']:.1f}s")
        pipeline = RecallRankPipeline(client, redis_store, num_candidates=100, recall_source="published")
        user, picked = "a-new-visitor", list(history[-3:])
        with BackgroundServer(create_app(pipeline)) as url, httpx.Client(base_url=url, timeout=30) as http:
            before = http.get(f"/recommend/{user}", params={"top_k": k}).json()
            _print_answer(user, before, labels, None, "before, served from Redis: ")
            # The synthetic log ends in the past: the clicks come a minute after its last event.
            at = store.meta.as_of + 60
            events = [{"user_id": user, "item_id": item, "event": "click", "timestamp": at + i}
                      for i, item in enumerate(picked)]
            posted = http.post("/events", json={"events": events}).json()
            print(f"\n   POST {url}/events: 3 clicks on items {', '.join(picked)} -> {posted}")
            after = http.get(f"/recommend/{user}", params={"top_k": k}).json()
            _print_answer(user, after, labels, redis_store.history(user),
                          "after 3 clicks, served from Redis: ")
            health = http.get("/health").json()["store"]
            print(f"\n   /health: redis {health['status']} ({health['latency_ms']:.2f} ms), "
                  f"published version {health['published_version']}")
        redis_store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo (module docstring).

    Args:
      argv: The command line's arguments (default: ``sys.argv[1:]``).

    Returns:
      0; a failed step raises.
    """
    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo", help="where runs, exports and the store go")
    parser.add_argument("--users", type=int, default=1500, help="synthetic users to train on")
    parser.add_argument("--items", type=int, default=400, help="synthetic catalog size")
    parser.add_argument("--epochs", type=int, default=8, help="retrieval epochs (DeepFM: at most 5)")
    parser.add_argument("--k", type=int, default=10, help="items to show per user")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # Keras' SavedModel chatter would bury the steps

    from tfrs_recsys import runs
    from tfrs_recsys.data.bundles import item_labels
    from tfrs_recsys.export.rankers import export_ranker
    from tfrs_recsys.export.retrieval import export_retrieval
    from tfrs_recsys.serving.client import ServingClient
    from tfrs_recsys.serving.feature_store import FeatureStore
    from tfrs_recsys.serving.pipeline import RecallRankPipeline

    work = Path(args.workdir).resolve()
    base = work / "models"
    data_options = {"dataset": "synthetic-histories", "synthetic_users": args.users,
                    "synthetic_items": args.items, "progress": False}
    t_all = time.perf_counter()

    t = _step(1, f"training retrieval (Transformer user tower) on {args.users} synthetic users x "
                 f"{args.items} items")
    retrieval_cfg, metrics = _train("retrieval", {**data_options, "epochs": args.epochs},
                                    work, ("recall@10", "ndcg@10", "mrr@10"))
    _done(t, f"test (leave-last-out, full catalog): {metrics}")

    t = _step(2, "training the DeepFM ranker on the same histories as implicit clicks (+ item hotness)")
    deepfm_cfg, metrics = _train("deepfm", {**data_options, "epochs": min(args.epochs, 5)},
                                 work, ("auc", "gauc", "logloss"))
    _done(t, f"test: {metrics}")

    t = _step(3, f"exporting to TF Serving's layout under {base}")
    retrieval_export = export_retrieval(retrieval_cfg.output_dir, base, "retrieval", k=100)
    ranker_dir = export_ranker(deepfm_cfg.output_dir, base, "deepfm", model_name="deepfm")
    config_path = Path(retrieval_export["models_config"])  # each export added its models to it
    _done(t, f"(ScaNN recall@100 vs brute force: {retrieval_export['metadata']['scann_recall_at_k']:.3f}; "
             f"ranker {ranker_dir}; {config_path.name})")

    t = _step(4, "writing the serving feature store (histories, item features, hot items)")
    interactions = runs.training_interactions(retrieval_cfg.output_dir)
    # item_hotness as DeepFM saw it in training; histories capped as the retrieval model reads them
    store = FeatureStore.from_interactions(interactions, max_history=retrieval_cfg.max_history)
    store_dir = store.save(work / "store")
    _done(t, f"({store.num_users} histories, {store.num_hot_items} hot items)")

    t = _step(5, "starting the model server on 127.0.0.1 (gRPC + REST)")
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "tfrs_recsys.model_server", f"--port={grpc_port}",
                               f"--rest_api_port={rest_port}", f"--model_config_file={config_path}"])
    address = f"127.0.0.1:{grpc_port}"
    try:
        with ServingClient(address, timeout=30.0, ranker_model="deepfm") as client:
            _wait_until_available(client, 180.0, server)
            _done(t, f"(gRPC {address}, REST 127.0.0.1:{rest_port})")

            t = _step(6, "querying over gRPC (tensorflow-serving-api): recall -> rank")
            pipeline = RecallRankPipeline(client, store, num_candidates=100)
            known = str(interactions.interactions["user_id"].iloc[0])
            labels = item_labels(interactions.items)  # titles and genres, to judge the lists by
            for user in (known, "a-user-nobody-has-seen"):
                _print_answer(user, pipeline.recommend(user, k=args.k).to_dict(), labels, store.history(user))
            _done(t)

            t = _step(7, "the online store in Redis: publish, then three clicks for a cold user over HTTP")
            _online_step(client, store, store.history(known), labels, work, args.k)
            _done(t)
    finally:
        t = _step(8, "stopping the model server")
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        _done(t)
    print(f"\nDemo finished in {time.perf_counter() - t_all:.0f}s. Runs, exports and the store are in "
          f"{work}.")
    print(json.dumps({"models_config": str(config_path), "feature_store": str(store_dir)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
