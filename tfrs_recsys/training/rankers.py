"""What the two rankers (ESMM, DeepFM) share in training: data, split, spec, fit loop, scoring.

The run's files, and the model rebuilt from them for export and evaluation, are
:mod:`tfrs_recsys.runs`.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_recsys import metrics as M
from tfrs_recsys import runs
from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.data.bundles import LabeledData
from tfrs_recsys.data.errors import DataError, SkipReport
from tfrs_recsys.data.label_checks import check_labels
from tfrs_recsys.data.pipelines import dataset_from_arrays, frame_to_label_columns
from tfrs_recsys.data.readers import struct_fields
from tfrs_recsys.data.registry import load_labeled, options_from
from tfrs_recsys.data.schema import FeatureSpec, frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.splits import Split, random_split, split_by_session, split_by_time
from tfrs_recsys.data.tabular import parse_column_types
from tfrs_recsys.features.preprocessing import as_encoded, encode_frame
from tfrs_recsys.training import distribution
from tfrs_recsys.training.common import (
    EpochEvaluator,
    fit_verbosity,
    patience_epochs,
    ranker_batch,
    say_batch,
    tensorboard_callback,
)
from tfrs_recsys.training.fit_advice import say_weak_fit
from tfrs_recsys.training.optimizers import ranker_optimizer
from tfrs_recsys.training.resume import TrainingState, advance

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
PREDICT_BATCH = 16_384  # rows per inference call: larger calls score faster, until activations cost memory
MONITOR = "selection_score"
STEPS_PER_EXECUTION = 16
# Labels each ranker takes, and what to do when the data has others.
LABELS = {"esmm": (2, "pass --label-columns click,conversion (in that order)"),
          "deepfm": (1, "pass --label-columns with the click column only")}


def load_and_split(cfg: TrainConfig, task: str) -> tuple[LabeledData, Split]:
    """The labeled data of ``cfg.dataset`` and its train / validation / test split.

    ``cfg.split``: ``auto`` sends whole sessions to one side when the data has a session column (no query
    leaks across parts), else splits rows at random (seeded); ``random`` and ``session`` choose; ``time``
    trains on the earliest rows and tests on the latest, by ``--time-column`` (or a log's ``timestamp``),
    a session whole at its first row's time (a streamed run places each row by its own time). Fractions
    80 / 10 / 10. The labels are checked first (:func:`~tfrs_recsys.data.label_checks.check_labels`):
    ESMM takes click then conversion, DeepFM one click label.

    Args:
      cfg: the run's config (data options, seed).
      task: ``esmm`` or ``deepfm``.

    Returns:
      (data, split).
    """
    data = load_labeled(task, **options_from(cfg, load_labeled))
    wanted, fix = LABELS[task]
    if len(data.labels) != wanted:
        raise DataError(f"{task} takes {wanted} label(s); the data has {data.labels}", fix=fix)
    report = (data.skipped[0] if data.skipped else SkipReport(data.name, total=len(data.frame))
              ) if cfg.skip_bad_rows else None
    keep = check_labels(data.frame, data.labels, funnel=task == "esmm", report=report)
    if report is not None:
        report.check_rows_left(int(keep.sum()))
    for each in data.skipped:  # said once, with the labels' skips
        each.log()
    if not keep.all():
        data = dataclasses.replace(data, frame=data.frame[keep].reset_index(drop=True), truth=None
                                   if data.truth is None else data.truth[keep].reset_index(drop=True))
    data.frame[data.labels] = data.frame[data.labels].apply(pd.to_numeric)  # 0/1 text, once bad rows are out
    how = getattr(cfg, "split", "auto")
    if how == "time":
        column = time_split_column(cfg, data.frame.columns)
        return data, split_by_time(data.frame, column, fractions=SPLIT_FRACTIONS,
                                   session_col=data.session_column)
    if how == "session" and not data.session_column:
        raise ConfigError("--split session needs sessions: name the column with --session-column")
    if data.session_column and how != "random":
        split = split_by_session(data.frame, data.session_column, fractions=SPLIT_FRACTIONS, seed=cfg.seed)
    else:
        split = random_split(data.frame, test_fraction=SPLIT_FRACTIONS[2],
                             validation_fraction=SPLIT_FRACTIONS[1], seed=cfg.seed)
    return data, split


def time_split_column(cfg: TrainConfig, columns) -> str:
    """The column ``--split time`` orders rows by: ``--time-column``, else an implicit-click log's
    ``timestamp``."""
    table = cfg.dataset in ("csv", "parquet")
    column = cfg.time_column if table else "timestamp"  # a log's time, whatever its name, is ``timestamp``
    if column is None:
        raise ConfigError("--split time needs the time of each row: name its column with --time-column")
    if column not in columns:
        raise ConfigError(f"--split time: the {cfg.dataset} rows carry no time"
                          + ("" if table or cfg.dataset != "interactions" else
                             " (name the log's time column with --time-column)")
                          + "; choose --split random or session")
    return column


def ranker_spec(cfg: TrainConfig, data: LabeledData, train: pd.DataFrame) -> FeatureSpec:
    """The feature spec: ``cfg.feature_spec`` (an edited JSON) or inferred from the TRAINING rows only,
    so vocabularies and statistics never see validation or test data.

    Args:
      cfg: the run's config.
      data: the labeled data (its labels and key columns).
      train: the training rows.

    Returns:
      The spec.
    """
    if cfg.feature_spec:
        spec = FeatureSpec.load(cfg.feature_spec)
        if list(spec.labels) != list(data.labels):
            raise DataError(f"the spec's labels {spec.labels} differ from the data's {data.labels}",
                            path=cfg.feature_spec,
                            fix="list the data's label columns in the spec, in that order")
        known = {f.name for f in spec.features} | {*spec.labels, spec.session_column, spec.user_column,
                                                    spec.item_column, spec.timestamp_column}
        if unread := [c for c in train.columns if c not in known]:  # a column added since the spec was made
            print(f"ranker: columns the spec {cfg.feature_spec} does not list are left out: "
                  f"{', '.join(map(str, unread[:10]))}{' ...' if len(unread) > 10 else ''} (add them to its "
                  "features, or drop --feature-spec to infer one)", flush=True)
        return spec
    # A log read as implicit clicks has its time in ``timestamp``; a table's --time-column is a feature
    time_column = cfg.time_column if cfg.dataset in ("csv", "parquet") else None
    check_columns(cfg, [*train.columns, *data.table_columns.get("left_out", [])])
    return infer_schema(train, data.labels, session_column=data.session_column, user_column=data.user_column,
                        item_column=data.item_column, timestamp_column=time_column,
                        exclude=[c for c in struct_fields(cfg.exclude_columns, list(train.columns))
                                 if c in train.columns],  # not joined, else
                        column_kinds={**dict.fromkeys(data.table_columns.get("times", []), "timestamp"),
                                      **parse_column_types(cfg.column_types)},
                        item_columns=data.table_columns.get("item"),
                        user_columns=data.table_columns.get("user"))


def check_columns(cfg: TrainConfig, columns) -> None:
    """``--time-column`` and ``--exclude-columns`` name columns of the data."""
    table = cfg.dataset in ("csv", "parquet")  # a log's --time-column is read by its loader
    named = [("--time-column", cfg.time_column if table else None),
             *(("--exclude-columns", c) for c in struct_fields(cfg.exclude_columns, list(columns)))]
    for flag, name in named:
        if name and name not in columns:
            raise DataError(f"{flag} names '{name}', which is not a column of the data", column=name,
                            fix=f"use one of the columns: {', '.join(map(str, columns))}")


def training_dataset(frame: pd.DataFrame, spec: FeatureSpec, cfg: TrainConfig) -> tuple[tf.data.Dataset, int]:
    """Endlessly repeated shuffled batches and the number of steps that make one epoch.

    The rows are encoded once, here (:func:`~tfrs_recsys.features.preprocessing.encode_frame`:
    vocabularies, hashing, standardization, time features), and every batch is a gather of ready
    indices and numbers marked :func:`~tfrs_recsys.features.preprocessing.as_encoded`: a step only
    embeds and runs the towers. The model still takes raw features everywhere else (evaluation,
    export), through the same preprocessor.

    The global batch is :func:`~tfrs_recsys.training.common.ranker_batch`'s; under a multi-worker
    strategy every worker builds the same batches (same seed) and keeps its own part of each
    (:func:`.distribution.shard_by_data`).

    Args:
      frame: the training rows.
      spec: their feature spec.
      cfg: the run's config (batch size, seed).

    Returns:
      (dataset, steps per epoch).
    """
    if not spec.labels:
        raise DataError("the feature spec names no label columns", fix="list the labels in the spec")
    labels = frame_to_label_columns(frame, spec.labels)
    batch = ranker_batch(cfg, len(frame))
    ds = dataset_from_arrays(encode_frame(frame, spec), labels=labels, batch_size=batch,
                             shuffle=True, seed=cfg.seed, repeat=True)
    ds = ds.map(lambda features, labels: (as_encoded(features), labels))
    return distribution.shard_by_data(ds), math.ceil(len(frame) / batch)


def compile_ranker(model: tf.keras.Model, cfg: TrainConfig) -> None:
    """Compile with :func:`~tfrs_recsys.training.optimizers.ranker_optimizer` (row-wise Adagrad at
    ``cfg.embedding_learning_rate`` with ``cfg.embedding_l2`` on the tables, Adam at
    ``cfg.learning_rate`` on the rest), created under the model's strategy; several steps per call
    into the graph, which saves the per-step Python round trip.

    With several replicas it is one step per call: the all-gather of sparse (embedding) gradients
    inside Keras' multi-step loop fails under MultiWorkerMirroredStrategy (collective shape
    mismatch, seen with ESMM on TF 2.20), and the per-step overhead is small beside the all-reduce.
    """
    strategy = model.distribute_strategy
    steps = STEPS_PER_EXECUTION if strategy.num_replicas_in_sync == 1 else 1
    with strategy.scope():
        model.compile(optimizer=ranker_optimizer(model, learning_rate=cfg.learning_rate,
                                                 embedding_learning_rate=cfg.embedding_learning_rate,
                                                 embedding_l2=cfg.embedding_l2),
                      steps_per_execution=steps)


def fit(model: tf.keras.Model, cfg: TrainConfig, train: pd.DataFrame, spec: FeatureSpec,
        run_dir: Path | str, *, eval_fn: Callable[[tf.keras.Model], Mapping[str, float]],
        monitor: str = MONITOR, epochs: int | None = None, checkpoint: bool = True,
        state: TrainingState | None = None) -> EpochEvaluator:
    """Train a ranker: :func:`compile_ranker`, :func:`training_dataset`, early stopping on ``monitor``
    (larger is better), best weights restored.

    Distributed training: build ``model`` under ``strategy.scope()``; it then trains under that strategy.
    With ``state``, every epoch's end is saved, and a stopped fit continues from the last one
    (:mod:`tfrs_recsys.training.resume`).

    Args:
      model: the ranker.
      cfg: the run's config.
      train: the training rows.
      spec: their feature spec.
      run_dir: where the log, checkpoint and TensorBoard files go.
      eval_fn: validation metrics of the model, after every epoch.
      monitor: the metric early stopping follows (default: :data:`MONITOR`, :func:`with_selection_score`).
      epochs: the most epochs (default ``cfg.epochs``).
      checkpoint: save the best weights and TensorBoard logs.
      state: the fit's :class:`~tfrs_recsys.training.resume.TrainingState` (None: nothing to resume from).

    Returns:
      The evaluator (best epoch and value).
    """
    say_batch(cfg, len(train))
    ds, steps = training_dataset(train, spec, cfg)
    evaluator = EpochEvaluator(eval_fn, run_dir, monitor=monitor, mode="max",
                               patience=patience_epochs(cfg.patience, steps), save_checkpoint=checkpoint)
    compile_ranker(model, cfg)
    epochs = epochs or cfg.epochs
    callbacks = [evaluator, tensorboard_callback(run_dir)] if checkpoint else [evaluator]
    initial = 0
    if state is not None:
        initial = state.restore(model, evaluator, lambda: runs.build_ranker(model, spec), epochs)
        ds = advance(ds, initial, steps, repeated=True)
        callbacks.insert(1, state)  # after the evaluator: it saves the evaluator's decision
    model.fit(ds, epochs=epochs, initial_epoch=initial, steps_per_epoch=steps, callbacks=callbacks,
              verbose=fit_verbosity(cfg))
    return evaluator


def train_model(task: str, cfg: TrainConfig, split: Split, spec: FeatureSpec, run_dir: Path | str,
                strategy: tf.distribute.Strategy | None = None, *, resumable: bool = True
                ) -> tuple[tf.keras.Model, EpochEvaluator]:
    """A fresh ``task`` model (``MODEL`` of its training module) fitted on ``split.train``, early-stopped
    on the module's ``selection_eval`` of ``split.validation``; with ``resumable``, its state is saved
    every epoch and ``cfg.resume`` continues a stopped run's (:mod:`tfrs_recsys.training.resume`).

    Args:
      task: ``esmm`` or ``deepfm``.
      cfg: the run's config.
      split: the data's split.
      spec: the feature spec.
      run_dir: the run directory.
      strategy: the strategy to build the model under (default: the current one).
      resumable: save the training state every epoch (a tuning trial does not).

    Returns:
      (model with its best weights, the evaluator).
    """
    trainer = importlib.import_module(f"tfrs_recsys.training.{task}")
    with (strategy or tf.distribute.get_strategy()).scope():
        model = trainer.MODEL.from_spec(spec, cfg)
    say_selection(task, trainer.SELECTION)
    evaluator = fit(model, cfg, split.train, spec, run_dir,
                    eval_fn=trainer.selection_eval(split.validation, spec, cfg),
                    state=TrainingState.of_run(cfg, run_dir) if resumable else None)
    say_weak_fit(task, evaluator, cfg, len(split.train), spec)
    return model, evaluator


def predict(model: tf.keras.Model, frame: pd.DataFrame, spec: FeatureSpec,
            batch_size: int = PREDICT_BATCH) -> dict[str, np.ndarray]:
    """The model's named outputs for every row of ``frame``, in row order, as float64 arrays.

    Args:
      model: a ranker taking raw features.
      frame: the rows.
      spec: their feature spec.
      batch_size: rows per call.

    Returns:
      ``{output: float64 [len(frame)]}``.
    """
    raw = frame_to_raw(frame, spec)
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(frame), batch_size):
        batch = {k: tf.constant(v[start:start + batch_size]) for k, v in raw.items()}
        for name, value in model(batch, training=False).items():
            chunks.setdefault(name, []).append(value.numpy().astype(np.float64))
    return {k: np.concatenate(v) for k, v in chunks.items()}


def with_selection_score(metrics: Mapping, aucs: tuple[str, ...], logloss: str) -> dict[str, float]:
    """The numeric ``metrics`` plus the early-stopping score: the mean of the finite ``aucs``, else
    minus ``logloss`` (validation rows of one class have no AUC, on every epoch alike), else 0.

    Args:
      metrics: validation metrics.
      aucs: the AUCs the score averages.
      logloss: the fallback metric.

    Returns:
      The numbers of ``metrics`` and :data:`MONITOR`.
    """
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number))}
    values = [numbers[k] for k in aucs if np.isfinite(numbers.get(k, np.nan))]
    if values:
        score = float(np.mean(values))
    else:
        score = -numbers.get(logloss, np.nan)
        score = score if np.isfinite(score) else 0.0
    return {**numbers, MONITOR: score}


def say_selection(name: str, aucs: tuple[str, ...]) -> None:
    """Prints what ``name``'s early stopping follows (:func:`with_selection_score` of ``aucs``)."""
    what = (f"the validation {aucs[0]}" if len(aucs) == 1
            else f"the mean of the validation {' and '.join(aucs)}")
    print(f"{name}: early stopping follows {MONITOR} = {what} (minus the logloss where no AUC is defined)",
          flush=True)


def group_column(spec: FeatureSpec, frame: pd.DataFrame) -> str | None:
    """GAUC groups: the user column when the data has one, else the session column."""
    return next((c for c in (spec.user_column, spec.session_column) if c and c in frame.columns), None)


def gauc_metrics(label: np.ndarray, score: np.ndarray, frame: pd.DataFrame, spec: FeatureSpec,
                 group_by: str | None = None) -> dict:
    """``gauc`` of ``score`` over the groups of ``group_by`` (default :func:`group_column`).

    Args:
      label: 0/1 labels of ``frame``'s rows.
      score: the model's probabilities for them.
      frame: the rows, holding the group column.
      spec: their feature spec.
      group_by: the group column; by default users, else sessions.

    Returns:
      ``gauc``, ``gauc_groups_used``, ``gauc_groups_skipped`` (one-class groups) and
      ``gauc_group_column``; empty when there is no group column.
    """
    group_by = group_by or group_column(spec, frame)
    if not group_by:
        return {}
    value, used, skipped = M.gauc(label, score, frame[group_by].to_numpy())
    return {"gauc": value, "gauc_groups_used": used, "gauc_groups_skipped": skipped,
            "gauc_group_column": group_by}


@dataclasses.dataclass
class RankerRun:
    """What a ranker's ``run`` starts from: the strategy, the data, its split and spec, the run directory."""

    strategy: tf.distribute.Strategy
    chief: bool
    data: LabeledData
    split: Split
    spec: FeatureSpec
    run_dir: Path | str


def start_run(cfg: TrainConfig, task: str) -> RankerRun:
    """Strategy first (MultiWorkerMirroredStrategy must exist before TensorFlow runs any op), then the
    seed, the checked and split data, the run directory (the chief's; a temporary one elsewhere), the
    spec inferred from the training rows, and the run files.

    Args:
      cfg: the run's config.
      task: ``esmm`` or ``deepfm``.

    Returns:
      What the run trains from.
    """
    strategy = distribution.start_runtime(cfg)
    chief = distribution.is_chief(strategy)
    tf.keras.utils.set_random_seed(cfg.seed)
    data, split = load_and_split(cfg, task)
    run_dir = runs.create(cfg, task, chief=chief)
    print(f"{task}: strategy: {distribution.describe(strategy)}", flush=True)
    spec = ranker_spec(cfg, data, split.train)
    print(f"{task}: features (the run keeps them as spec.json; edit it and pass --feature-spec):\n"
          f"{spec.table()}", flush=True)
    runs.write_ranker_files(run_dir, spec, split)
    return RankerRun(strategy, chief, data, split, spec, run_dir)
