"""Does the input pipeline outrun a training step?

On synthetic CTR logs (tfrs_recsys.data.synthetic.synthetic_ctr_logs, DeepFM's data), one run
measures, in examples per second:

* the pipeline alone, iterating ``labeled_dataset`` after one warm-up epoch: shuffled (the
  training path), fixed order with and without ``cache``;
* the textbook per-example chain ``from_tensor_slices -> [cache] -> shuffle -> batch -> prefetch``
  on the same columns, with and without cache: the baseline the design is compared against;
* training steps of the product's DeepFM (tfrs_recsys.models.deepfm, DeepFMConfig defaults, raw
  features preprocessed inside the model, Adam), fed one in-memory batch over and over.

It prints each figure, the ratio pipeline / training step and ``OK`` when the pipeline is the
faster one, else ``PIPELINE IS THE BOTTLENECK``. Absolute figures depend on the (shared)
machine; the ratios compare figures from this same run.

    .venv/bin/python bench/pipeline.py --rows 200000 --batch-size 1024
"""
from __future__ import annotations

import argparse
import sys
import time

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from tfrs_recsys.config import DeepFMConfig
from tfrs_recsys.data.pipelines import frame_to_label_columns, labeled_dataset
from tfrs_recsys.data.schema import frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.synthetic import synthetic_ctr_logs
from tfrs_recsys.models.deepfm import DeepFM


def examples_per_second(dataset, *, epochs: int = 1) -> float:
    """Throughput of iterating ``dataset`` for ``epochs`` epochs, after one warm-up epoch."""
    for _ in dataset:  # warm-up: traces the functions and fills any cache
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for _, labels in dataset:
            count += int(next(iter(labels.values())).shape[0])
    return count / (time.perf_counter() - start)


def textbook_dataset(features: dict, labels: dict, batch_size: int, *, cache: bool, seed: int):
    """The per-example chain of the TFRS tutorials, for comparison."""
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if cache:
        ds = ds.cache()
    n = len(next(iter(labels.values())))
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def step_examples_per_second(model, features, labels, *, steps: int) -> float:
    """Throughput of ``train_on_batch`` on one in-memory batch, after warm-up steps (tracing)."""
    for _ in range(3):
        model.train_on_batch(features, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(features, labels)
    batch = int(next(iter(labels.values())).shape[0])
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic CTR log rows")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--baseline-rows", type=int, default=50_000,
                        help="rows for the (slow) per-example textbook chain")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = synthetic_ctr_logs(args.rows, seed=args.seed)
    spec = infer_schema(data.frame, data.labels, user_column=data.user_column, item_column=data.item_column)
    print(f"data: synthetic_ctr_logs {len(data.frame):,} rows, {len(spec.features)} features "
          f"({', '.join(f.name for f in spec.features)}), batch {args.batch_size}; "
          f"generated in {time.perf_counter() - start:.1f} s")

    rows = {}
    start = time.perf_counter()
    train_ds = labeled_dataset(data.frame, spec, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    print(f"labeled_dataset built (frame -> raw columns -> tensors) in {time.perf_counter() - start:.1f} s")
    rows["labeled_dataset, shuffled (training path)"] = examples_per_second(train_ds, epochs=2)
    for cache in (True, False):
        ds = labeled_dataset(data.frame, spec, batch_size=args.batch_size, shuffle=False, cache=cache)
        rows[f"labeled_dataset, fixed order, cache={cache}"] = examples_per_second(ds, epochs=2)
    head = data.frame.iloc[:args.baseline_rows]
    features, labels = frame_to_raw(head, spec), frame_to_label_columns(head, spec.labels)
    for cache in (True, False):
        ds = textbook_dataset(features, labels, args.batch_size, cache=cache, seed=args.seed)
        rows[f"textbook per-example chain, cache={cache} ({len(head):,} rows)"] = examples_per_second(ds)

    batch_features, batch_labels = next(iter(train_ds))
    cfg = DeepFMConfig()
    model = DeepFM.from_spec(spec, cfg)
    model.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate))
    step = step_examples_per_second(model, batch_features, batch_labels, steps=args.steps)
    name = (f"DeepFM (embedding {cfg.embedding_dim}, DNN {'-'.join(map(str, cfg.hidden_units))}, "
            f"preprocessing inside), Adam")

    pipeline = rows["labeled_dataset, shuffled (training path)"]
    textbook = rows[f"textbook per-example chain, cache=True ({len(head):,} rows)"]
    width = max(len(k) for k in rows)
    print("\npipeline alone (after a warm-up epoch):")
    for label, value in rows.items():
        print(f"  {label:<{width}}  {value:>12,.0f} examples/s")
    print(f"\ntraining step, {name}:\n  {'train_on_batch on an in-memory batch':<{width}}  {step:>12,.0f} "
          "examples/s")
    ratio = pipeline / step
    print(f"\nratio labeled_dataset / textbook chain: {pipeline / textbook:.2f}x")
    print(f"ratio pipeline / training step: {ratio:.2f}x")
    print("OK" if ratio > 1.0 else "PIPELINE IS THE BOTTLENECK")
    return 0 if ratio > 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
