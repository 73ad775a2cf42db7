"""Rankers (ESMM, DeepFM) trained from file shards streamed through ``tf.data``: logs larger than memory.

The path a ``--dataset csv`` or ``parquet`` run takes when its files total :data:`AUTO_BYTES` or more
(``--streaming auto``, the default), or always with ``--streaming always``. Memory does not grow with the
log: no frame of the whole log, no cache of the data set.

* Split: 80 / 10 / 10 by a seeded hash of the session id, else of the row's shard and number
  (:func:`~tfrs_recsys.data.streaming.split_parts`); ``split.json`` records it.
* Spec: inferred from a seeded sample of at most ``--stream-sample-rows`` training rows (kinds,
  vocabularies, normalization statistics); a hashed column gets twice the distinct values the sample
  extrapolates to the training rows, at most :data:`MAX_HASH_BUCKETS`. Saved with the run as ``spec.json``
  (an edited one comes back with ``--feature-spec``).
* Training: the shards interleaved, parsed in record batches, encoded in the graph; an epoch is
  ``ceil(expected training rows / batch)`` steps. Under ``--distribute multi_worker`` each worker reads
  only its own shards (:func:`~tfrs_recsys.data.stream_parts.worker_files`).
* Validation after each epoch: the first ``--stream-validation-rows`` validation rows, in shard order
  (stated in the log). Test: every test row, streamed in record batches; only the scores, labels and
  group keys are kept.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import weakref
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from tfrs_recsys import paths, runs
from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.data import packing, stream_parts, streaming
from tfrs_recsys.data.bad_rows import labels_of
from tfrs_recsys.data.bucket_sizing import column_sized
from tfrs_recsys.data.entities import entity_joins
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.label_checks import check_labels
from tfrs_recsys.data.readers import struct_fields
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.tabular import parse_column_types
from tfrs_recsys.features.preprocessing import FeaturePreprocessor, as_encoded
from tfrs_recsys.training import distribution, rankers
from tfrs_recsys.training.common import (
    EpochEvaluator,
    finish_run,
    fit_verbosity,
    patience_epochs,
    ranker_batch,
    say_batch,
    tensorboard_callback,
)

AUTO_BYTES = 256 << 20  # --streaming auto streams files of this size or more
MAX_HASH_BUCKETS = 1 << 21
VOCAB_MAX = 10_000


def should_stream(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` trains a ranker from streamed files (module docstring)."""
    if cfg.dataset not in ("csv", "parquet") or cfg.streaming == "never" or not cfg.data_dir:
        return False
    return cfg.streaming == "always" or streaming.total_bytes(cfg.data_dir) >= AUTO_BYTES


@dataclasses.dataclass
class StreamRun:
    """What a streamed ranker run trains from."""

    strategy: tf.distribute.Strategy
    chief: bool
    table: streaming.FileTable
    spec: FeatureSpec
    run_dir: object
    train_rows: int
    validation: list[pa.RecordBatch]
    timings: dict


def _spec(cfg: TrainConfig, table: streaming.FileTable, sample: pd.DataFrame, train_rows: int) -> FeatureSpec:
    if cfg.feature_spec:
        spec = FeatureSpec.load(cfg.feature_spec)
        if list(spec.labels) != table.labels:
            raise DataError(f"the spec's labels {spec.labels} differ from the data's {table.labels}",
                            path=cfg.feature_spec,
                            fix="list the data's label columns in the spec, in that order")
        if absent := [f.name for f in spec.features if f.name not in sample.columns]:  # of every shard read
            raise DataError(f"feature(s) {absent} of the spec are in none of the sampled rows",
                            column=absent[0], path=cfg.feature_spec,
                            fix="correct the names in the spec, or remove them")
        return spec
    rankers.check_columns(cfg, [*sample.columns, *(c for join in table.joins for c in join.left_out)])
    spec = infer_schema(sample, table.labels, session_column=table.session_column,
                        user_column=table.user_column, item_column=table.item_column,
                        timestamp_column=cfg.time_column,
                        exclude=[c for c in struct_fields(cfg.exclude_columns, list(sample.columns))
                                 if c in sample.columns],  # not joined, else
                        sample_rows=len(sample), vocab_max=VOCAB_MAX,
                        column_kinds={**{c: "timestamp" for join in table.joins for c in join.times},
                                      **parse_column_types(cfg.column_types)},
                        **{f"{join.group}_columns": join.columns for join in table.joins})
    spec.features = [column_sized(f, sample[f.name], train_rows, vocab_max=VOCAB_MAX,
                                            max_buckets=MAX_HASH_BUCKETS) for f in spec.features]
    spec.notes["sample"] = (f"kinds, vocabularies and statistics from a seeded sample of {len(sample)} of "
                            f"about {max(train_rows, len(sample))} training rows; hash buckets: 2 x the "
                            f"distinct values extrapolated to the training rows, at most {MAX_HASH_BUCKETS}")
    return spec


def start(cfg: TrainConfig, task: str) -> StreamRun:
    """Strategy first, then the shards, the sample, the spec, the run files and the validation rows.

    Args:
      cfg: the run's config (``dataset`` csv or parquet).
      task: ``esmm`` or ``deepfm``.

    Returns:
      What the run trains from.
    """
    if cfg.resume:  # it would train from the first epoch again, under the stopped run's log
        raise ConfigError("--resume continues runs trained in memory; a streamed run (--streaming, or files "
                          "of 256 MiB or more) has no resumable state: pass --overwrite to train it again "
                          "(with --streaming never too, where the data fits in memory, to be able to resume)")
    strategy = distribution.start_runtime(cfg)
    chief = distribution.is_chief(strategy)
    tf.keras.utils.set_random_seed(cfg.seed)
    clock = time.perf_counter()
    wanted, fix = rankers.LABELS[task]
    if len(cfg.label_columns) != wanted:
        raise DataError(f"{task} takes {wanted} label(s); --label-columns names {list(cfg.label_columns)}",
                        fix=fix)
    table = streaming.open_table(cfg.data_dir, labels=cfg.label_columns, session_column=cfg.session_column,
                                 user_column=cfg.user_column, item_column=cfg.item_column,
                                 column_types=cfg.column_types)
    table.joins = entity_joins(table.schema.names, items=cfg.items, users=cfg.users,
                               item_column=cfg.item_column, user_column=cfg.user_column,
                               column_types=cfg.column_types, exclude=cfg.exclude_columns)
    train_rows = max(1, round(table.rows * streaming.FRACTIONS[0]))
    if (workers := distribution.num_workers(strategy)) > 1 and (
            warning := stream_parts.uneven_workers(table, workers)):
        print(f"{task}: warning: {warning}", flush=True)
    cutting = time.perf_counter()
    split_as_configured(table, cfg)  # before the sample, which is of training rows
    cutting = time.perf_counter() - cutting
    sample = streaming.sample_rows(table, cfg.stream_sample_rows, cfg.seed)
    for join in table.joins:
        join.check(sample, of="the sample's")
    check_bad_rows(table, cfg)  # the sample's rows were screened as they were read
    check_labels(sample, table.labels, funnel=task == "esmm", skippable=False)
    spec = _spec(cfg, table, sample, train_rows)
    timings = {"load": time.perf_counter() - clock - cutting}
    clock = time.perf_counter()
    # regrouped once here, not again at every epoch's validation
    validation = list(_coalesced(streaming.read_part(table, table.files, 1, cfg.seed,
                                                     limit=cfg.stream_validation_rows), streaming.CHUNK_ROWS))
    timings["split"] = time.perf_counter() - clock + cutting
    run_dir = runs.create(cfg, task, chief=chief)
    print(f"{task}: strategy: {distribution.describe(strategy)}", flush=True)
    print(f"{task}: streaming {len(table.files)} file shard(s), {table.rows} rows, "
          f"{table.bytes / 2 ** 20:.0f} MiB; "
          f"{spec.notes.get('sample', 'spec from ' + str(cfg.feature_spec))}; validation after each epoch on "
          f"the first {sum(b.num_rows for b in validation)} validation rows", flush=True)
    print(f"{task}: features (the run keeps them as spec.json):\n{spec.table()}", flush=True)
    spec.save(paths.join(run_dir, runs.SPEC))
    key = (f"session column '{table.session_column}'" if table.session_column and table.split_sessions
           else "row's shard and number")
    method = f"seeded hash of the {key}"
    if table.time_cuts:
        method = (f"by time: column '{table.time_column}', validation from {table.time_cuts[0]:.0f} and test "
                  f"from {table.time_cuts[1]:.0f} seconds since 1970")
    split = {"method": method, "seed": cfg.seed, "rows": table.rows,
             "fractions": dict(zip(streaming.PARTS, streaming.FRACTIONS)),
             "expected_train_rows": train_rows, "files": table.files, "sample_rows": len(sample),
             "validation_rows_evaluated": sum(b.num_rows for b in validation)}
    paths.write_text(paths.join(run_dir, runs.SPLIT), json.dumps(split, indent=2) + "\n")
    return StreamRun(strategy, chief, table, spec, run_dir, train_rows, validation, timings)


def split_as_configured(table: streaming.FileTable, cfg: TrainConfig) -> None:
    """Sets ``table`` to split as ``cfg.split`` says: ``random`` ignores sessions, ``time`` cuts by the time
    column (one pass over it); training and ``evaluate --run-dir`` both split through here."""
    table.split_sessions = getattr(cfg, "split", "auto") != "random"
    if getattr(cfg, "split", "auto") == "time":
        stream_parts.cut_in_time(table, rankers.time_split_column(cfg, table.schema.names))


def training_input(run: StreamRun, cfg: TrainConfig, rows: int, row_filter: Callable | None = None):
    """The training batches (of :func:`~tfrs_recsys.training.common.ranker_batch` for ``rows`` training rows):
    one stream per worker over its own shards, encoded in the graph."""
    preprocessor = FeaturePreprocessor(run.spec)

    def make(files, batch_size):
        return streaming.stream_dataset(run.table, run.spec, files, batch_size=batch_size, seed=cfg.seed,
                                        row_filter=row_filter,
                                        encode=lambda raw: as_encoded(preprocessor(raw)))

    workers = distribution.num_workers(run.strategy)
    if workers <= 1:
        return make(run.table.files, ranker_batch(cfg, rows))
    index = distribution.worker_index(run.strategy)
    mine = stream_parts.worker_files(run.table.files, index, workers)
    print(f"streaming: worker {index} of {workers} reads {len(mine)} of {len(run.table.files)} shards: "
          f"{json.dumps([paths.basename(f) for f in mine])} ({sum(run.table.rows_of(f) for f in mine)} rows)",
          flush=True)

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make(mine, context.get_per_replica_batch_size(ranker_batch(cfg, rows)))

    return run.strategy.distribute_datasets_from_function(per_worker)


def fit(model: tf.keras.Model, cfg: TrainConfig, run: StreamRun, run_dir, *, rows: int,
        eval_fn: Callable[[tf.keras.Model], dict], row_filter: Callable | None = None) -> EpochEvaluator:
    """:func:`~tfrs_recsys.training.rankers.fit` on the streamed training rows (``rows`` of them). The best
    epoch's weights go to ``run_dir``'s checkpoint and are read back from it at the end, so no second copy of
    the tables (millions of rows) stays in memory; ESMM's clicked-only baseline checkpoints into its own
    folder."""
    clock = time.perf_counter()
    say_batch(cfg, rows)
    ds = training_input(run, cfg, rows, row_filter)
    run.timings["pipeline"] = run.timings.get("pipeline", 0.0) + time.perf_counter() - clock
    seconds = {"validation": 0.0}

    def timed(m):
        clock = time.perf_counter()
        metrics = eval_fn(m)
        seconds["validation"] += time.perf_counter() - clock
        return metrics

    epochs = EpochSeconds()
    steps = math.ceil(rows / ranker_batch(cfg, rows))
    evaluator = EpochEvaluator(timed, run_dir, monitor=rankers.MONITOR, mode="max",
                               patience=patience_epochs(cfg.patience, steps), save_checkpoint=True)
    rankers.compile_ranker(model, cfg)
    callbacks = [epochs, BadRowsCheck(run.table, cfg), evaluator, tensorboard_callback(run_dir)]
    run.table.failure = None
    try:
        model.fit(ds, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks,
                  verbose=fit_verbosity(cfg))
    except tf.errors.OpError:
        if run.table.failure is not None:  # the reader's own error, not the graph's wrapping of it
            raise run.table.failure from None
        raise
    check_bad_rows(run.table, cfg)
    run.timings.setdefault("epochs", []).append(epochs.seconds)
    run.timings["validation"] = run.timings.get("validation", 0.0) + seconds["validation"]
    return evaluator


def check_bad_rows(table: streaming.FileTable, cfg: TrainConfig) -> None:
    """Stops the run at the rows reading left out (:mod:`~tfrs_recsys.data.bad_rows`), or with
    ``--skip-bad-rows`` says how many, once per new count.

    Raises:
      DataError: The first bad row, without ``--skip-bad-rows``.
    """
    bad = table.bad_rows
    if not bad.total:
        return
    if not cfg.skip_bad_rows:
        raise bad.error()
    if bad.total != bad.said:
        bad.said = bad.total
        logging.getLogger(__name__).warning("%s: left out %d rows (skip_bad_rows=True): %s", cfg.data_dir,
                                            bad.total, bad.summary())


class BadRowsCheck(tf.keras.callbacks.Callback):
    """Ends training at the first bad row the input read (:func:`check_bad_rows`), checked each step."""

    def __init__(self, table: streaming.FileTable, cfg: TrainConfig):
        super().__init__()
        self.table, self.cfg = table, cfg

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.table.bad_rows.total and not self.cfg.skip_bad_rows:
            raise self.table.bad_rows.error()


class EpochSeconds(tf.keras.callbacks.Callback):
    """The seconds of each epoch's training steps (listed before the evaluator: validation is not counted)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self._start, 3))


def _keys(column: pa.Array) -> np.ndarray:
    if pa.types.is_integer(column.type):
        return column.fill_null(-1).to_numpy()
    return pd.util.hash_array(pc.cast(column, pa.string()).fill_null("").to_numpy(zero_copy_only=False))


_PREDICT = weakref.WeakKeyDictionary()


def _predict_function(model: tf.keras.Model, example: dict[str, tf.Tensor]):
    """The model's inference as one graph per model, traced once for any number of rows (eager calls cost
    several times more, and a trace per batch shape more still). Traced without AutoGraph: the rankers'
    calls branch only on Python values (the spec, shapes), and converting their code took longer than
    tracing it."""
    if model not in _PREDICT:
        signature = {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype) for k, v in example.items()}
        _PREDICT[model] = tf.function(lambda features: model(features, training=False),
                                      input_signature=[signature], autograph=False)
    return _PREDICT[model]


def _coalesced(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` regrouped into record batches of about ``rows`` rows: a part's rows arrive a tenth of
    a chunk at a time, and each model call and conversion has a fixed cost."""
    held: list[pa.RecordBatch] = []
    for batch in batches:
        if held and (not batch.schema.equals(held[0].schema) or sum(b.num_rows for b in held) >= rows):
            yield from pa.Table.from_batches(held).combine_chunks().to_batches()
            held = []
        held.append(batch)
    if held:  # rows or not: a reader of no rows still gets their columns (an empty batch)
        yield from pa.Table.from_batches(held).combine_chunks().to_batches() or held[:1]


def score(model: tf.keras.Model | Sequence[tf.keras.Model], batches: Iterable[pa.RecordBatch],
          spec: FeatureSpec, batch_size: int = rankers.PREDICT_BATCH
          ) -> tuple[dict[str, np.ndarray] | list[dict[str, np.ndarray]], pd.DataFrame]:
    """The model's outputs for streamed rows, and a frame of their labels and group keys (user, session):
    all that the ranker metrics read, so memory holds a few numbers per row, never the rows.

    Args:
      model: a ranker taking raw features, or several (the rows are read once for all of them).
      batches: the rows.
      spec: their feature spec.
      batch_size: rows per model call.

    Returns:
      (``{output: float32 [rows]}``, or a list of them for several models, the frame).
    """
    models = list(model) if isinstance(model, Sequence) else [model]
    outputs: list[dict[str, list[np.ndarray]]] = [{} for _ in models]
    columns: dict[str, list[np.ndarray]] = {}
    keys = [c for c in (spec.user_column, spec.session_column) if c]
    for batch in _coalesced(batches, streaming.CHUNK_ROWS):
        raw = packing.unpack({k: tf.constant(v) for k, v in packing.pack(batch, spec).items()}, spec)
        for one, out in zip(models, outputs):
            call = _predict_function(one, raw)
            for start in range(0, max(batch.num_rows, 1), batch_size):  # no rows: one empty call
                for name, value in call({k: v[start:start + batch_size] for k, v in raw.items()}).items():
                    out.setdefault(name, []).append(value.numpy())
        for name, value in labels_of(batch, spec.labels).items():
            columns.setdefault(name, []).append(value)
        for key in keys:
            if key in batch.schema.names:
                columns.setdefault(key, []).append(_keys(batch.column(key)))
    if not columns:
        raise DataError("no rows to evaluate", fix="use more data")
    joined = [_joined(out) for out in outputs]
    return (joined if isinstance(model, Sequence) else joined[0]), pd.DataFrame(_joined(columns), copy=False)


def _joined(chunks: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Each column's chunks concatenated, a column's chunks freed as soon as it is joined (the peak holds
    one column twice, not all of them)."""
    return {name: np.concatenate(chunks.pop(name)) for name in list(chunks)}


def test_rows(run: StreamRun, cfg: TrainConfig) -> Iterable[pa.RecordBatch]:
    """Every test row, a record batch at a time."""
    return streaming.read_part(run.table, run.table.files, 2, cfg.seed)


def run_task(cfg: TrainConfig, task: str, train_and_test: Callable[[StreamRun], dict]) -> dict:
    """:func:`start`, then ``train_and_test`` (the model's training and test metrics), then the run's files;
    the seconds of each phase go into the metrics as ``timings``."""
    run = start(cfg, task)
    metrics = train_and_test(run)
    check_bad_rows(run.table, cfg)  # the test's rows too
    if run.table.bad_rows.total:
        metrics["rows_left_out"] = dict(run.table.bad_rows.counts)
    clock = time.perf_counter()
    metrics["timings"] = {k: (v if isinstance(v, list) else round(v, 3)) for k, v in run.timings.items()}
    metrics["streamed"] = True
    finish_run(run.run_dir, metrics, chief=run.chief)
    run.timings["artifacts"] = time.perf_counter() - clock
    metrics["timings"]["artifacts"] = round(run.timings["artifacts"], 3)
    if run.chief:
        runs.write_test_metrics(run.run_dir, metrics)
    return metrics
