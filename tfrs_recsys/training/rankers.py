"""What the two rankers (ESMM, DeepFM) share in training: data, split, spec, fit loop, scoring, reload.

A ranker's run directory holds, beside the files of :mod:`tfrs_recsys.training.common`::

    spec.json      the feature spec the model was built from (vocabularies, statistics, groups)
    split.json     how the data was split, and the row / session counts of each part

``config.json`` + ``spec.json`` + ``checkpoints/best`` rebuild the trained model
(:func:`load_trained_ranker`), which is all export needs.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tfrs_recsys import paths
from tfrs_recsys.config import TrainConfig, build_config
from tfrs_recsys.data.bundles import LabeledData
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.pipelines import dataset_from_arrays, frame_to_label_columns
from tfrs_recsys.data.registry import load_labeled
from tfrs_recsys.data.schema import FeatureSpec, infer_schema
from tfrs_recsys.data.splits import Split, random_split, split_by_session
from tfrs_recsys.features.preprocessing import as_encoded, encode_frame, frame_to_raw
from tfrs_recsys.training import distribution
from tfrs_recsys.training.common import (BEST_WEIGHTS, CONFIG_FILE, EpochEvaluator, fit_verbosity,
                                         prepare_run_dir, tensorboard_callback)
from tfrs_recsys.training.optimizers import ranker_optimizer

SPEC_FILE = "spec.json"
SPLIT_FILE = "split.json"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
PREDICT_BATCH = 4096
MONITOR = "selection_score"
STEPS_PER_EXECUTION = 16
# Labels each ranker takes, and what to do when the data has others.
LABELS = {"esmm": (2, "pass --label-columns click,conversion (in that order)"),
          "deepfm": (1, "pass --label-columns with the click column only")}


def load_and_split(cfg: TrainConfig, task: str) -> tuple[LabeledData, Split]:
    """The labeled data of ``cfg.dataset`` and its train / validation / test split.

    Whole sessions go to one side when the data has a session column (no query leaks across
    parts); otherwise rows are split at random (seeded). Fractions 80 / 10 / 10. The labels are
    checked first (:func:`check_labels`): ESMM takes click then conversion, DeepFM one click label.
    """
    data = load_labeled(cfg, task)
    wanted, fix = LABELS[task]
    if len(data.labels) != wanted:
        raise DataError(f"{task} takes {wanted} label(s); the data has {data.labels}", fix=fix)
    check_labels(data.frame, data.labels, funnel=task == "esmm")
    if data.session_column:
        split = split_by_session(data.frame, data.session_column, fractions=SPLIT_FRACTIONS, seed=cfg.seed)
    else:
        split = random_split(data.frame, test_fraction=SPLIT_FRACTIONS[2],
                             validation_fraction=SPLIT_FRACTIONS[1], seed=cfg.seed)
    return data, split


def check_labels(frame: pd.DataFrame, labels: list[str], *, funnel: bool = False) -> None:
    """Labels must be 0/1; with ``funnel`` (click, conversion), a conversion needs a click."""
    for name in labels:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"label must be 0 or 1, found {frame[name].iloc[row]!r} at row {row} "
                            f"({int(bad.sum())} such rows)", column=name,
                            fix="binarize the label (e.g. rating >= 4 -> 1), or pick another label column")
    if funnel:
        click, conversion = labels
        impossible = (frame[conversion] > 0) & (frame[click] <= 0)
        if impossible.any():
            row = int(np.flatnonzero(impossible.to_numpy())[0])
            raise DataError(f"{int(impossible.sum())} rows convert without a click (first at row {row}); "
                            f"ESMM reads the labels as click, then conversion", column=conversion,
                            fix="pass --label-columns in the order click,conversion, and set click=1 on "
                                "converted rows")


def ranker_spec(cfg: TrainConfig, data: LabeledData, train: pd.DataFrame) -> FeatureSpec:
    """The feature spec: ``cfg.feature_spec`` (an edited JSON) or inferred from the TRAINING rows only,
    so vocabularies and statistics never see validation or test data."""
    if cfg.feature_spec:
        spec = FeatureSpec.load(cfg.feature_spec)
        if list(spec.labels) != list(data.labels):
            raise DataError(f"the spec's labels {spec.labels} differ from the data's {data.labels}",
                            path=cfg.feature_spec,
                            fix="list the data's label columns in the spec, in that order")
        return spec
    return infer_schema(train, data.labels, session_column=data.session_column, user_column=data.user_column,
                        item_column=data.item_column)


def training_dataset(frame: pd.DataFrame, spec: FeatureSpec, cfg: TrainConfig) -> tuple[tf.data.Dataset, int]:
    """Endlessly repeated shuffled batches and the number of steps that make one epoch.

    The rows are encoded once, here (:func:`~tfrs_recsys.features.preprocessing.encode_frame`:
    vocabularies, hashing, standardization, time features), and every batch is a gather of ready
    indices and numbers marked :func:`~tfrs_recsys.features.preprocessing.as_encoded`: a step only
    embeds and runs the towers. The model still takes raw features everywhere else (evaluation,
    export), through the same preprocessor.

    ``cfg.batch_size`` is the global batch; under a multi-worker strategy every worker builds the
    same batches (same seed) and keeps its own part of each (:func:`.distribution.shard_by_data`).
    """
    if not spec.labels:
        raise DataError("the feature spec names no label columns", fix="list the labels in the spec")
    labels = frame_to_label_columns(frame, spec.labels)
    ds = dataset_from_arrays(encode_frame(frame, spec), labels=labels, batch_size=cfg.batch_size,
                             shuffle=True, seed=cfg.seed, repeat=True)
    ds = ds.map(lambda features, labels: (as_encoded(features), labels))
    return distribution.shard_by_data(ds), math.ceil(len(frame) / cfg.batch_size)


def compile_ranker(model: tf.keras.Model, cfg: TrainConfig) -> None:
    """Compile with :func:`~tfrs_recsys.training.optimizers.ranker_optimizer` (sparse Adagrad at
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
        run_dir: Path | str, *, eval_fn: Callable[[tf.keras.Model], Mapping[str, float]], monitor: str,
        epochs: int | None = None, checkpoint: bool = True) -> EpochEvaluator:
    """:func:`compile_ranker`, :func:`training_dataset`, early stopping on ``monitor`` (larger is
    better), best weights restored.

    Distributed training: build ``model`` under ``strategy.scope()``; it then trains under that strategy.
    """
    ds, steps = training_dataset(train, spec, cfg)
    evaluator = EpochEvaluator(eval_fn, run_dir, monitor=monitor, mode="max", patience=cfg.patience,
                               save_checkpoint=checkpoint)
    compile_ranker(model, cfg)
    callbacks = [evaluator, tensorboard_callback(run_dir)] if checkpoint else [evaluator]
    model.fit(ds, epochs=epochs or cfg.epochs, steps_per_epoch=steps, callbacks=callbacks,
              verbose=fit_verbosity(cfg))
    return evaluator


def predict(model: tf.keras.Model, frame: pd.DataFrame, spec: FeatureSpec,
            batch_size: int = PREDICT_BATCH) -> dict[str, np.ndarray]:
    """The model's named outputs for every row of ``frame``, in row order, as float64 arrays."""
    raw = frame_to_raw(frame, spec)
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(frame), batch_size):
        batch = {k: tf.constant(v[start:start + batch_size]) for k, v in raw.items()}
        for name, value in model(batch, training=False).items():
            chunks.setdefault(name, []).append(value.numpy().astype(np.float64))
    return {k: np.concatenate(v) for k, v in chunks.items()}


def with_selection_score(metrics: Mapping, aucs: tuple[str, ...], logloss: str) -> dict[str, float]:
    """The numeric ``metrics`` plus the early-stopping score: the mean of the finite ``aucs``, else
    minus ``logloss`` (validation rows of one class have no AUC, on every epoch alike), else 0."""
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number))}
    values = [numbers[k] for k in aucs if np.isfinite(numbers.get(k, np.nan))]
    if values:
        score = float(np.mean(values))
    else:
        score = -numbers.get(logloss, np.nan)
        score = score if np.isfinite(score) else 0.0
    return {**numbers, MONITOR: score}


def expected_auc(true_probs, scores) -> float:
    """AUC of ``scores`` against Bernoulli(``true_probs``) labels, in expectation over the draws.

    ``sum_{i != j} t_i (1 - t_j) (1[s_i > s_j] + 1/2 1[s_i = s_j]) / sum_{i != j} t_i (1 - t_j)``:
    each pair is weighted by the probability that i is the positive and j the negative. Sorting
    makes it O(n log n).
    """
    t = np.asarray(true_probs, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"true_probs and scores differ in length: {t.size} vs {s.size}")
    neg = 1.0 - t
    _, tie_group = np.unique(s, return_inverse=True)
    neg_per_group = np.bincount(tie_group, weights=neg)
    neg_below = np.concatenate(([0.0], np.cumsum(neg_per_group)[:-1]))[tie_group]
    neg_tied_others = neg_per_group[tie_group] - neg
    numerator = np.sum(t * (neg_below + 0.5 * neg_tied_others))
    denominator = np.sum(t * (neg.sum() - neg))
    return float(numerator / denominator) if denominator > 0 else float("nan")


def spearman(a, b) -> float:
    """Spearman rank correlation (mid-ranks for ties); NaN when either side is constant."""
    ra = pd.Series(np.asarray(a, dtype=np.float64)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=np.float64)).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def group_column(spec: FeatureSpec, frame: pd.DataFrame) -> str | None:
    """GAUC groups: the user column when the data has one, else the session column."""
    for col in (spec.user_column, spec.session_column):
        if col and col in frame.columns:
            return col
    return None


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
    spec inferred from the training rows, and the run files."""
    strategy = distribution.start_runtime(cfg)
    chief = distribution.is_chief(strategy)
    tf.keras.utils.set_random_seed(cfg.seed)
    data, split = load_and_split(cfg, task)
    run_dir = prepare_run_dir(cfg, task, chief=chief)
    print(f"{task}: strategy: {distribution.describe(strategy)}", flush=True)
    spec = ranker_spec(cfg, data, split.train)
    write_run_files(run_dir, spec, split)
    return RankerRun(strategy, chief, data, split, spec, run_dir)


def write_run_files(run_dir: Path | str, spec: FeatureSpec, split: Split) -> None:
    spec.save(paths.join(run_dir, SPEC_FILE))
    paths.write_text(paths.join(run_dir, SPLIT_FILE), json.dumps(split.summary(), indent=2) + "\n")


def load_trained_ranker(model_dir: str | Path) -> tuple[str, tf.keras.Model, FeatureSpec]:
    """Rebuild ``(model name, model with its best weights, spec)`` from a ranker's run directory."""
    from tfrs_recsys.models.deepfm import DeepFM
    from tfrs_recsys.models.esmm import ESMM

    run_dir = paths.as_path(model_dir)
    config_path = paths.join(run_dir, CONFIG_FILE)
    if not paths.isfile(config_path):
        raise DataError("no config.json in the model directory", path=str(run_dir),
                        fix="pass the --output-dir of a `python -m tfrs_recsys.train esmm|deepfm` run")
    name = paths.read_json(config_path).get("model")
    builders = {"esmm": ESMM, "deepfm": DeepFM}
    if name not in builders:
        raise DataError(f"the run trained model '{name}', not a ranker", path=str(config_path),
                        fix="export rankers (esmm, deepfm) from here; use `export retrieval` for "
                            "retrieval runs")
    cfg = build_config(name, environ={}, config_file=config_path)
    spec = FeatureSpec.load(paths.join(run_dir, SPEC_FILE))
    checkpoint = paths.join(run_dir, BEST_WEIGHTS)
    if not paths.isfile(f"{checkpoint}.index"):
        raise DataError("the run has no best checkpoint", path=str(checkpoint),
                        fix="train until at least one epoch finishes (checkpoints/best is written then)")
    model = builders[name].from_spec(spec, cfg)
    model(empty_raw_batch(spec), training=False)  # create the variables before restoring them
    status = model.load_weights(str(checkpoint))
    status.assert_existing_objects_matched()  # every model variable restored; optimizer slots are not needed
    status.expect_partial()
    return name, model, spec


def empty_raw_batch(spec: FeatureSpec, rows: int = 2) -> dict[str, tf.Tensor]:
    """A batch of missing values ("" / NaN) for every feature: builds a model's variables."""
    return {f.name: tf.constant([""] * rows) if f.is_categorical else tf.constant([np.nan] * rows, tf.float32)
            for f in spec.features}
