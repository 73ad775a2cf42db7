"""A step's time against the size of the embedding tables: it should follow the rows a batch touches,
not the rows a table has.

    .venv/bin/python bench/sparse_updates.py [--model deepfm,retrieval] [--rows 10000,1000000]
        [--catalog 27000,800000] [--steps 160] [--rounds 5]

DeepFM on synthetic CTR logs, its ``item_id`` hashed into ``--rows`` buckets (the only change between
the sizes), compiled as training compiles it (:func:`tfrs_recsys.training.rankers.compile_ranker`:
row-wise Adagrad with row L2 on the tables) and, for contrast, with ``tf.keras.optimizers.Adam`` on
every variable (which decays its moments over whole tables). Retrieval (the CLI's default towers,
``--batch-size`` windows of 50 random items) over a ``--catalog`` of N items with the sampled softmax
(what a large catalog trains with), compiled with training's :class:`LazyAdam` and, for contrast,
Keras' Adam. ``--rounds`` alternating timed ``fit`` calls of ``--steps`` steps to each model after one
untimed call (tracing). Printed: the median milliseconds per step of each, by this process's CPU time
(all its threads: what a step costs, which a shared machine's load moves less than wall time), and each
optimizer's ratio of the largest size to the smallest.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import tensorflow as tf

from tfrs_recsys.config import DeepFMConfig, RetrievalConfig
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.synthetic import synthetic_ctr_logs
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.models.retrieval import Vocabularies, build_model
from tfrs_recsys.training import rankers
from tfrs_recsys.training.optimizers import LazyAdam


def trainer(frame, spec, cfg: DeepFMConfig, rows: int, optimizer: str, steps: int):
    """A compiled DeepFM whose item table has ``rows`` rows, and a callable that trains ``steps`` steps."""
    features = [dataclasses.replace(f, encoding="hash", num_buckets=rows, vocabulary=None)
                if f.name == "item_id" else f for f in spec.features]
    spec = dataclasses.replace(spec, features=features)
    tf.keras.utils.set_random_seed(cfg.seed)
    model = DeepFM.from_spec(spec, cfg)
    if optimizer == "ranker":
        rankers.compile_ranker(model, cfg)
    else:
        model.compile(tf.keras.optimizers.Adam(cfg.learning_rate),
                      steps_per_execution=rankers.STEPS_PER_EXECUTION)
    ds, _ = rankers.training_dataset(frame, spec, cfg)
    return lambda: model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)


def retrieval_trainer(items: int, optimizer: str, steps: int, windows: int):
    """A compiled retrieval model over ``items`` items (sampled softmax), and a callable that trains ``steps``
    steps on batches of ``windows`` random windows."""
    cfg = RetrievalConfig(seed=42)
    catalog = np.array([f"i{i}" for i in range(items)])
    users = np.array([f"u{u}" for u in range(windows)])
    tf.keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, Vocabularies.build(catalog, users, None, None, [], []),
                        item_probabilities=np.full(items, 1.0 / items), negatives="sampled")
    lazy = optimizer == "lazy"
    model.compile(LazyAdam(cfg.learning_rate) if lazy else tf.keras.optimizers.Adam(cfg.learning_rate))
    sequences = np.random.default_rng(0).choice(catalog, size=(steps, windows, cfg.max_history + 1))
    ds = tf.data.Dataset.from_tensor_slices({"user_id": np.tile(users, (steps, 1)),
                                             "history": sequences[:, :, :-1], "targets": sequences[:, :, 1:]})
    return lambda: model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)


def timed(fits: dict, rounds: int, steps: int) -> dict:
    """Median CPU ms per step of each fit, over ``rounds`` interleaved calls after an untimed one."""
    times = {key: [] for key in fits}
    for round_index in range(rounds + 1):
        for key, fit in fits.items():
            start = time.process_time()
            fit()
            if round_index:
                times[key].append((time.process_time() - start) / steps)
    return {key: 1000 * float(np.median(v)) for key, v in times.items()}


def table(title: str, labels: dict, sizes: list[int], ms: dict) -> None:
    print(title)
    print(f"{'optimizer':34s}" + "".join(f"{f'N={n:,}':>14s}" for n in sizes) + f"{'ratio':>9s}")
    for opt, label in labels.items():
        row = [ms[(opt, n)] for n in sizes]
        print(f"{label:34s}" + "".join(f"{v:14.2f}" for v in row) + f"{row[-1] / row[0]:8.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="deepfm,retrieval", help="deepfm and/or retrieval")
    parser.add_argument("--rows", default="10000,1000000", help="DeepFM item table sizes, comma-separated")
    parser.add_argument("--catalog", default="27000,800000", help="retrieval catalog sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=160, help="steps per timed fit call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512, help="DeepFM rows per batch")
    parser.add_argument("--windows", type=int, default=20, help="retrieval windows of 50 items per batch")
    args = parser.parse_args(argv)
    models = args.model.split(",")
    if "deepfm" in models:
        sizes = [int(r) for r in args.rows.split(",")]
        data = synthetic_ctr_logs(20000, seed=42)
        spec = infer_schema(data.frame, data.labels, user_column="user_id", item_column="item_id")
        cfg = DeepFMConfig(batch_size=args.batch_size, embedding_dim=16, precision="float32")
        ms = timed({(opt, rows): trainer(data.frame, spec, cfg, rows, opt, args.steps)
                    for opt in ("ranker", "adam") for rows in sizes}, args.rounds, args.steps)
        table(f"DeepFM, batch {args.batch_size}, item table of N rows x 16; median CPU ms per step over "
              f"{args.rounds} calls of {args.steps} steps",
              {"ranker": "ranker (row-wise Adagrad + Adam)", "adam": "tf.keras Adam, every variable"},
              sizes, ms)
    if "retrieval" in models:
        sizes = [int(r) for r in args.catalog.split(",")]
        ms = timed({(opt, items): retrieval_trainer(items, opt, args.steps, args.windows)
                    for opt in ("lazy", "adam") for items in sizes}, args.rounds, args.steps)
        table(f"Retrieval, sampled softmax, {args.windows} windows of 50 per batch, catalog of N items; "
              f"median CPU ms per step over {args.rounds} calls of {args.steps} steps",
              {"lazy": "LazyAdam (training's)", "adam": "tf.keras Adam"}, sizes, ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
