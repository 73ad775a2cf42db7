"""Train and evaluate DeepFM; write its run directory.

Metrics (:func:`evaluate_deepfm`) on held-out rows: ``auc`` (pCTR vs label), ``logloss``, and
``gauc``: the impression-weighted mean of per-user AUC (``gauc_group_column``; sessions when there
is no user column), one-class groups skipped (``gauc_groups_used`` / ``gauc_groups_skipped``). With
synthetic ground truth, ``ctr_true_auc`` is the expected AUC against Bernoulli(true_ctr) labels.

Notebook use::

    from tfrs_recsys.training.deepfm import evaluate_deepfm
    model = DeepFM.from_spec(spec, cfg); model.compile(tf.keras.optimizers.Adam(1e-3))
    model.fit(labeled_dataset(train, spec, batch_size=512), epochs=3)
    evaluate_deepfm(model, test, spec)
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd

from tfrs_recsys import metrics as M
from tfrs_recsys.config import DeepFMConfig
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.training import rankers, stream
from tfrs_recsys.training.common import completed_run, finish_run
from tfrs_recsys.training.fit_advice import say_weak_fit

MODEL = DeepFM
SELECTION = ("auc",)  # the validation AUCs early stopping averages


def evaluate_deepfm(model: DeepFM, frame: pd.DataFrame, spec: FeatureSpec, *,
                    truth: pd.DataFrame | None = None, group_by: str | None = None,
                    outputs: dict[str, np.ndarray] | None = None) -> dict:
    """AUC, logloss and GAUC of ``model`` on ``frame``.

    Args:
      model: the trained model.
      frame: labeled rows.
      spec: their feature spec.
      truth: synthetic ground truth row-aligned with ``frame`` (``true_ctr``), optional.
      group_by: the GAUC group column (default: users, else sessions).
      outputs: the model's outputs for ``frame``'s rows, already computed (then ``frame`` needs only the
        label and group columns).

    Returns:
      The metrics of the module docstring.
    """
    ctr = (outputs or rankers.predict(model, frame, spec))["ctr"]
    label = frame[model.label].to_numpy(dtype=np.float64)
    metrics: dict = {"auc": M.auc(label, ctr), "logloss": M.logloss(label, ctr), "rows": len(frame),
                     **rankers.gauc_metrics(label, ctr, frame, spec, group_by)}
    if truth is not None and "true_ctr" in truth.columns:
        metrics["ctr_true_auc"] = M.expected_auc(truth["true_ctr"].to_numpy(), ctr)
    return metrics


def selection_eval(validation: pd.DataFrame, spec: FeatureSpec,
                   cfg: DeepFMConfig | None = None) -> Callable[[DeepFM], dict]:
    """Per-epoch validation metrics plus the early-stopping score: validation AUC.

    Args:
      validation: the validation rows.
      spec: their feature spec.
      cfg: the run's config (no option of it changes the score: the signature is ESMM's).

    Returns:
      ``eval_fn(model) -> metrics`` for :func:`~tfrs_recsys.training.rankers.fit`.
    """
    return lambda m: rankers.with_selection_score(evaluate_deepfm(m, validation, spec), SELECTION, "logloss")


def run(cfg: DeepFMConfig) -> dict:
    """Train DeepFM, write the run directory (the chief's only); large files stream (:func:`run_streamed`).

    Args:
      cfg: the run's config.

    Returns:
      The test metrics.
    """
    if (done := completed_run(cfg, "deepfm")) is not None:
        return done
    if stream.should_stream(cfg):
        return run_streamed(cfg)
    start = rankers.start_run(cfg, "deepfm")
    data, split, spec, run_dir = start.data, start.split, start.spec, start.run_dir
    model, evaluator = rankers.train_model("deepfm", cfg, split, spec, run_dir, start.strategy)
    truth = None if data.truth is None else data.truth.loc[split.test.index]
    metrics = {**evaluate_deepfm(model, split.test, spec, truth=truth), "best_epoch": evaluator.best_epoch}
    finish_run(run_dir, metrics, chief=start.chief)
    return metrics


def run_streamed(cfg: DeepFMConfig) -> dict:
    """Train DeepFM from streamed file shards (:mod:`tfrs_recsys.training.stream`).

    Args:
      cfg: the run's config.

    Returns:
      The test metrics, with the seconds of each phase under ``timings``.
    """
    def train_and_test(run: stream.StreamRun) -> dict:
        with run.strategy.scope():
            model = DeepFM.from_spec(run.spec, cfg)

        def eval_fn(m: DeepFM) -> dict:
            outputs, frame = stream.score(m, run.validation, run.spec)
            metrics = evaluate_deepfm(m, frame, run.spec, outputs=outputs)
            return rankers.with_selection_score(metrics, SELECTION, "logloss")

        rankers.say_selection("deepfm", SELECTION)
        evaluator = stream.fit(model, cfg, run, run.run_dir, rows=run.train_rows, eval_fn=eval_fn)
        say_weak_fit("deepfm", evaluator, cfg, run.train_rows, run.spec)
        clock = time.perf_counter()
        outputs, frame = stream.score(model, stream.test_rows(run, cfg), run.spec)
        metrics = evaluate_deepfm(model, frame, run.spec, outputs=outputs)
        metrics["best_epoch"] = evaluator.best_epoch
        run.timings["evaluation"] = time.perf_counter() - clock
        return metrics

    return stream.run_task(cfg, "deepfm", train_and_test)
