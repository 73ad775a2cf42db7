"""ScaNN against exact brute force, bare top-k layers and exported signatures, in one run.

    .venv/bin/python bench/ann.py [--num-items 1000000] [--dim 64] [--queries 1000] [--k 10]

Catalog: ``--num-items`` unit vectors around ``--clusters`` random centres (clustered, like
learned item embeddings); queries come from the same mixture. Measured on the same queries:

1. bare layers: ``tfrs.layers.factorized_top_k.ScaNN`` and ``BruteForce`` (each call inside a
   ``tf.function``), one query per call: p50 / p99 latency, ScaNN recall@k against the exact
   top-k, index build time and memory (RSS growth while building);
2. exported signatures: the product's ``serving_default`` (query tower + top-k, from
   :mod:`tfrs_recsys.export.retrieval`) saved as a SavedModel, loaded back and called one
   request at a time, for the ScaNN and the portable (brute-force) export. The query tower is
   the retrieval model's Transformer user tower (2 blocks) reading a ``--max-history`` item
   history, briefly trained so that a history drawn from one cluster points at that cluster's
   centre: its queries then fall among the catalog's clusters, as a trained model's do.

The ScaNN index is built with ``--leaves-to-search`` and then narrowed as the export narrows it
(:func:`tfrs_recsys.export.recall.narrow_scann_search`: the fewest leaves that keep the built
width's recall@k, within 0.002), separately on ``--narrow-queries`` held-out queries of each kind
(mixture queries, query-tower queries; never the measured ones), keeping the wider of the two
widths; ``--narrow-queries 0`` searches the built width. Both paths and both kinds use that index.

Latency is measured in-graph (per query, inside the runtime, as a model server runs a
signature: no Python between the clock reads) and, for context, per call from Python (which
adds a fixed ~0.1-0.4 ms of dispatch to both paths). Printed: recall@k and latencies of each,
and the speedup (exact p50 / ScaNN p50) per path.
Targets: recall@10 >= 0.97 at >= 30x lower latency than exact brute force through the same path.
Brute-force latency is measured on ``--exact-queries`` of the queries (it is slow by design).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import scann  # noqa: F401  (ScaNN's ops, needed to load the ScaNN SavedModel)
import tensorflow as tf

from tfrs_recsys.export.recall import narrow_scann_search
from tfrs_recsys.export.retrieval import RetrievalSignatures, brute_force_index, scann_index
from tfrs_recsys.models.retrieval import InverseTemperature, ScaledQuery
from tfrs_recsys.models.towers import ItemEncoder, QueryTower, SequenceEncoder


def clustered_unit_vectors(n: int, dim: int, clusters: int, rng: np.random.Generator, spread: float = 0.6,
                           centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors [n, dim], centres [clusters, dim], cluster of each vector): unit vectors around unit
    centres."""
    if centres is None:
        centres = rng.normal(size=(clusters, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    labels = rng.integers(len(centres), size=n)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        x = (centres[labels[lo:hi]]
             + spread / np.sqrt(dim) * rng.normal(size=(hi - lo, dim)).astype(np.float32))
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centres, labels


def exact_top_k(candidates: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = []
    for lo in range(0, len(queries), 100):
        scores = queries[lo:lo + 100] @ candidates.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def recall(found: list[set], exact: list[set]) -> float:
    return float(np.mean([len(f & e) / len(e) for f, e in zip(found, exact)]))


def python_latencies(call, inputs: list, warmup: int = 5) -> np.ndarray:
    """Milliseconds of each ``call(x)`` made from Python, one query at a time."""
    for x in inputs[:warmup]:
        call(x)
    out = []
    for x in inputs:
        start = time.perf_counter()
        call(x)
        out.append(time.perf_counter() - start)
    return np.array(out) * 1e3


def _ready(t: tf.Tensor) -> tf.Tensor:
    """A scalar that can only be computed once ``t``'s values exist."""
    return (tf.reduce_any(tf.strings.length(t) >= 0) if t.dtype == tf.string
            else tf.reduce_any(tf.equal(t, t) | True))


def in_graph_latencies(fn, *batch: tf.Tensor) -> np.ndarray:
    """Milliseconds per query measured inside the runtime, as a model server runs a signature.

    A sequential ``tf.while_loop`` feeds one query per iteration to ``fn``; the query's slice is
    taken in a ``tf.cond`` on the start time and the end time in a ``tf.cond`` on all outputs,
    so data dependencies (which no graph optimization reorders) put the whole call between the
    two clock reads and no Python in between. The loop runs twice; the first is the warm-up.
    """
    n = int(batch[0].shape[0])

    @tf.function
    def timed(*xs):
        def body(i, times):
            start = tf.timestamp()
            args = tf.cond(start > 0, lambda: [x[i:i + 1] for x in xs], lambda: [x[i:i + 1] for x in xs])
            outputs = tf.nest.flatten(fn(*args))
            end = tf.cond(tf.reduce_all(tf.stack([_ready(t) for t in outputs])), tf.timestamp, tf.timestamp)
            return i + 1, times.write(i, end - start)

        _, times = tf.while_loop(lambda i, _: i < n, body,
                                 (tf.constant(0), tf.TensorArray(tf.float64, size=n)), parallel_iterations=1)
        return times.stack()

    timed(*batch)
    return timed(*batch).numpy() * 1e3


def summary(ms: np.ndarray) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4), "calls": int(len(ms))}


def finish(row: dict) -> None:
    row["speedup_p50"] = round(row["brute_force"]["p50_ms"] / row["scann"]["p50_ms"], 1)
    row["python_call_speedup_p50"] = round(row["brute_force_python_call"]["p50_ms"]
                                           / row["scann_python_call"]["p50_ms"], 1)


def report(name: str, row: dict, k: int) -> None:
    print(f"{name}: ScaNN recall@{k} {row['scann_recall']:.4f}; in-graph p50 ScaNN "
          f"{row['scann']['p50_ms']:.3f} ms, exact {row['brute_force']['p50_ms']:.3f} ms "
          f"({row['speedup_p50']}x); one call from Python p50 ScaNN {row['scann_python_call']['p50_ms']:.3f} "
          f"ms, exact {row['brute_force_python_call']['p50_ms']:.3f} ms ({row['python_call_speedup_p50']}x)",
          flush=True)


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2 ** 20


def build_query_model(dim: int, max_history: int, history_vocab: np.ndarray, num_users: int) -> ScaledQuery:
    encoder = ItemEncoder(history_vocab, dim)
    tower = QueryTower(encoder, dim, sequence_encoder=SequenceEncoder(max_history, dim, 2, 2, 4 * dim, 0.0),
                       user_vocabulary=[f"u{u}" for u in range(num_users)])
    return ScaledQuery(tower, InverseTemperature(10.0))


def cluster_histories(rng: np.random.Generator, n: int, max_history: int, vocab: np.ndarray,
                      vocab_labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """[n, max_history] histories, row i drawn from the vocabulary items of cluster ``clusters[i]``."""
    by_cluster = {c: vocab[vocab_labels == c] for c in np.unique(vocab_labels)}
    out = np.full((n, max_history), b"", dtype=object)
    for row, c in enumerate(clusters):
        size = int(rng.integers(1, max_history + 1))
        out[row, max_history - size:] = [s.encode() for s in rng.choice(by_cluster[c], size=size)]
    return out


def tower_inputs(rng: np.random.Generator, n: int, max_history: int, vocab: np.ndarray,
                 vocab_labels: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """``n`` requests of the query tower: random known user ids, each with a history from one random
    cluster."""
    users = np.array([f"u{u}".encode() for u in rng.integers(1000, size=n)], dtype=object)
    histories = cluster_histories(rng, n, max_history, vocab, vocab_labels,
                                  rng.choice(np.unique(vocab_labels), size=n))
    return tf.constant(users), tf.constant(histories)


def fit_query_tower(query_model: ScaledQuery, rng: np.random.Generator, vocab: np.ndarray,
                    vocab_labels: np.ndarray, centres: np.ndarray, max_history: int, steps: int,
                    batch_size: int = 128) -> float:
    """Teach the tower that a history from cluster c points at centre c (loss 1 - cos), so that its
    queries fall where trained queries do: among the catalog's clusters. Returns the final mean cosine."""
    tower = query_model.query_tower
    optimizer = tf.keras.optimizers.Adam(3e-3)

    @tf.function
    def step(features, targets):
        with tf.GradientTape() as tape:
            cos = tf.reduce_sum(tower(features, training=True) * targets, axis=-1)
            loss = 1.0 - tf.reduce_mean(cos)
        optimizer.apply_gradients(zip(tape.gradient(loss, tower.trainable_variables),
                                      tower.trainable_variables))
        return tf.reduce_mean(cos)

    known = np.unique(vocab_labels)
    cosine = 0.0
    for _ in range(steps):
        clusters = rng.choice(known, size=batch_size)
        history = cluster_histories(rng, batch_size, max_history, vocab, vocab_labels, clusters)
        cosine = float(step({"user_id": tf.constant(np.full(batch_size, b"")),
                             "history": tf.constant(history)},
                            tf.constant(centres[clusters])))
    return cosine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=200,
                        help="queries timed on the brute-force paths")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--num-leaves", type=int, default=2000)
    parser.add_argument("--leaves-to-search", type=int, default=100, help="the width the index is built with")
    parser.add_argument("--narrow-queries", type=int, default=500,
                        help="held-out queries on which the search is narrowed as the export does (0: no "
                             "narrowing)")
    parser.add_argument("--reorder", type=int, default=100)
    parser.add_argument("--dims-per-block", type=int, default=2)
    parser.add_argument("--max-history", type=int, default=50)
    parser.add_argument("--tower-steps", type=int, default=200,
                        help="training steps of the benchmark's query tower")
    parser.add_argument("--training-sample-size", type=int, default=250_000)
    parser.add_argument("--anisotropic-threshold", type=float, default=0.2)
    parser.add_argument("--skip-export", action="store_true", help="only the bare layers")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow intra- and inter-op threads (0 = TensorFlow's default). One query "
                             "at a time on a small shared machine is fastest single-threaded, for both paths")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    k = args.k
    results: dict = {"config": vars(args) | {"json": str(args.json) if args.json else None}}

    start = time.perf_counter()
    candidates, centres, labels = clustered_unit_vectors(args.num_items, args.dim, args.clusters, rng)
    queries, _, _ = clustered_unit_vectors(args.queries, args.dim, args.clusters, rng, centres=centres)
    ids = np.array([str(i) for i in range(args.num_items)], dtype=object)
    exact = exact_top_k(candidates, queries, k)
    exact_sets = [set(ids[row]) for row in exact]
    print(f"catalog {args.num_items:,} x {args.dim}, {args.queries} queries, exact top-{k} by NumPy in "
          f"{time.perf_counter() - start:.1f} s", flush=True)

    # --- indexes ---------------------------------------------------------------------------------
    options = {"num_leaves": args.num_leaves, "num_leaves_to_search": args.leaves_to_search,
               "num_reordering_candidates": args.reorder, "dimensions_per_block": args.dims_per_block,
               "training_sample_size": args.training_sample_size,
               "anisotropic_quantization_threshold": args.anisotropic_threshold}
    before = rss_mb()
    start = time.perf_counter()
    scann_layer = scann_index(candidates, ids, k, options)
    scann_build = time.perf_counter() - start
    scann_mem = rss_mb() - before
    before = rss_mb()
    start = time.perf_counter()
    exact_layer = brute_force_index(candidates, ids, k)
    exact_build = time.perf_counter() - start
    exact_mem = rss_mb() - before
    print(f"index build: ScaNN {scann_build:.1f} s (+{scann_mem:.0f} MiB RSS), brute force {exact_build:.1f} "
          f"s (+{exact_mem:.0f} MiB RSS)", flush=True)

    # --- the query tower of the exported signatures -----------------------------------------------
    query_model = None
    if not args.skip_export:
        history_vocab, vocab_labels = ids[:10_000], labels[:10_000]
        query_model = build_query_model(args.dim, args.max_history, history_vocab, 1000)
        start = time.perf_counter()
        cosine = fit_query_tower(query_model, rng, history_vocab, vocab_labels, centres, args.max_history,
                                 args.tower_steps)
        print(f"query tower: {args.tower_steps} steps in {time.perf_counter() - start:.0f} s, mean "
              f"cos(query, cluster centre) {cosine:.3f}", flush=True)
        users, histories = tower_inputs(rng, args.queries, args.max_history, history_vocab, vocab_labels)
        requests = [(users[i:i + 1], histories[i:i + 1]) for i in range(args.queries)]

    # --- narrowing, on held-out queries of both kinds, as the export narrows on its users ----------
    narrowing = None
    if args.narrow_queries:
        held_out = np.random.default_rng(args.seed + 1)
        kinds = {"synthetic": clustered_unit_vectors(args.narrow_queries, args.dim, args.clusters, held_out,
                                                     centres=centres)[0]}
        if query_model is not None:
            tuning_users, tuning_histories = tower_inputs(held_out, args.narrow_queries, args.max_history,
                                                          history_vocab, vocab_labels)
            kinds["query tower"] = query_model({"user_id": tuning_users, "history": tuning_histories}).numpy()
        start = time.perf_counter()
        narrowing = {kind: narrow_scann_search(scann_layer, q, [{ids[j].encode() for j in row}
                                                                 for row in exact_top_k(candidates, q, k)], k)
                     for kind, q in kinds.items()}
        width = max(n["leaves_to_search"] for n in narrowing.values())  # the widest any kind of query needs
        scann_layer.leaves_to_search = width if width != args.leaves_to_search else None
        narrowing["leaves_to_search"], narrowing["seconds"] = width, round(time.perf_counter() - start, 1)
        print(f"narrowed on {args.narrow_queries} held-out queries of each kind: {width} of "
              f"{args.num_leaves} leaves searched (built with {args.leaves_to_search}); recall@{k} by width: "
              + "; ".join(f"{kind} {narrowing[kind]['tried']}" for kind in kinds)
              + f" ({narrowing['seconds']} s)",
              flush=True)
    results["scann_narrowing"] = narrowing

    # --- bare layers -----------------------------------------------------------------------------
    scann_call = tf.function(lambda q: scann_layer(q, k=k))
    exact_call = tf.function(lambda q: exact_layer(q, k=k))
    singles = [tf.constant(q[None]) for q in queries]
    found = [set(scann_call(q)[1].numpy()[0].astype(str)) for q in singles]
    batch = tf.constant(queries)
    bare = {"scann": summary(in_graph_latencies(lambda q: scann_layer(q, k=k), batch)),
            "brute_force": summary(in_graph_latencies(lambda q: exact_layer(q, k=k),
                                                      batch[:args.exact_queries])),
            "scann_python_call": summary(python_latencies(scann_call, singles)),
            "brute_force_python_call": summary(python_latencies(exact_call, singles[:args.exact_queries])),
            "scann_recall": recall(found, exact_sets),
            "brute_force_recall": recall([set(exact_call(q)[1].numpy()[0].astype(str))
                                          for q in singles[:100]], exact_sets[:100]),
            "scann_build_s": round(scann_build, 2), "scann_rss_mb": round(scann_mem, 1),
            "brute_force_build_s": round(exact_build, 2), "brute_force_rss_mb": round(exact_mem, 1)}
    finish(bare)
    results["bare_layers"] = bare
    report("bare layers", bare, k)

    # --- exported signatures -------------------------------------------------------------------
    if query_model is not None:
        tower = summary(in_graph_latencies(lambda u, h: query_model({"user_id": u, "history": h}), users,
                                           histories))
        signature = {"query_tower": tower}
        with tempfile.TemporaryDirectory() as tmp:
            for name, layer in (("scann", scann_layer), ("brute_force", exact_layer)):
                module = RetrievalSignatures(query_model, layer, num_items=args.num_items, k=k,
                                             max_history=args.max_history)
                module.serving_default(*requests[0])  # build (and for ScaNN: load the searcher) before saving
                start = time.perf_counter()
                module.save(os.path.join(tmp, name))
                saved = time.perf_counter() - start
                size = sum(f.stat().st_size for f in Path(tmp, name).rglob("*") if f.is_file()) / 2 ** 20
                before = rss_mb()
                start = time.perf_counter()
                restored = tf.saved_model.load(os.path.join(tmp, name))  # keeps the variables alive
                loaded = restored.signatures["serving_default"]
                load_s = time.perf_counter() - start
                n = args.queries if name == "scann" else args.exact_queries
                signature[name] = summary(in_graph_latencies(
                    lambda u, h, fn=loaded: fn(user_id=u, history=h), users[:n], histories[:n]))
                signature[f"{name}_python_call"] = summary(python_latencies(
                    lambda r, fn=loaded: fn(user_id=r[0], history=r[1]), requests[:n]))
                signature[f"{name}_saved_model"] = {"save_s": round(saved, 1), "load_s": round(load_s, 1),
                                                    "size_mb": round(size, 1),
                                                    "load_rss_mb": round(rss_mb() - before, 1)}
                signature[f"{name}_ids"] = [set(row) for lo in range(0, args.queries, 100) for row in loaded(
                    user_id=users[lo:lo + 100], history=histories[lo:lo + 100]
                )["item_ids"].numpy().astype(str)]
                print(f"signature {name}: SavedModel {size:.0f} MiB (save {saved:.1f} s, "
                      f"load {load_s:.1f} s)",
                      flush=True)
                del loaded, restored
        signature["scann_recall"] = recall(signature.pop("scann_ids"), signature.pop("brute_force_ids"))
        finish(signature)
        results["signatures"] = signature
        report(f"signatures (ScaNN recall against the portable export, {len(requests)} requests)", signature,
               k)
        print(f"query tower alone: p50 {tower['p50_ms']:.3f} ms, p99 {tower['p99_ms']:.3f} ms (in-graph); "
              f"both signatures pay it, so their speedup is at most exact / tower", flush=True)

    print("\n| path (in-graph, one query at a time) | ScaNN recall@%d | ScaNN p50 / p99 ms | exact p50 / p99 "
          "ms | speedup (p50) | target |" % k)
    print("|---|---|---|---|---|---|")
    paths = (("bare top-k layers", results["bare_layers"]),
             ("exported signatures", results.get("signatures")))
    for name, row in paths:
        if row is None:
            continue
        ok = row["scann_recall"] >= 0.97 and row["speedup_p50"] >= 30
        print(f"| {name} | {row['scann_recall']:.4f} | {row['scann']['p50_ms']:.3f} / "
              f"{row['scann']['p99_ms']:.3f} | {row['brute_force']['p50_ms']:.3f} / "
              f"{row['brute_force']['p99_ms']:.3f} | {row['speedup_p50']}x | {'met' if ok else 'NOT met'} "
              "(recall >= 0.97, >= 30x) |")
    searched = narrowing["leaves_to_search"] if narrowing else args.leaves_to_search
    print(f"\nScaNN index build {bare['scann_build_s']} s, +{bare['scann_rss_mb']} MiB RSS "
          f"({options}), searching {searched} leaves; brute-force index {bare['brute_force_build_s']} s, "
          f"+{bare['brute_force_rss_mb']} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
