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

from typing import Callable

import numpy as np
import pandas as pd

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from tfrs_recsys import metrics as M
from tfrs_recsys.config import DeepFMConfig
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.training import rankers
from tfrs_recsys.training.common import finish_run


def evaluate_deepfm(model: DeepFM, frame: pd.DataFrame, spec: FeatureSpec, *, truth: pd.DataFrame | None = None,
                    group_by: str | None = None) -> dict:
    """AUC, logloss and GAUC of ``model`` on ``frame`` (``truth`` row-aligned, optional)."""
    ctr = rankers.predict(model, frame, spec)["ctr"]
    label = frame[model.label].to_numpy(dtype=np.float64)
    metrics: dict = {"auc": M.auc(label, ctr), "logloss": M.logloss(label, ctr), "rows": len(frame)}
    group_by = group_by or rankers.group_column(spec, frame)
    if group_by:
        value, used, skipped = M.gauc(label, ctr, frame[group_by].to_numpy())
        metrics.update({"gauc": value, "gauc_groups_used": used, "gauc_groups_skipped": skipped,
                        "gauc_group_column": group_by})
    if truth is not None and "true_ctr" in truth.columns:
        metrics["ctr_true_auc"] = M.expected_auc(truth["true_ctr"].to_numpy(), ctr)
    return metrics


def selection_eval(validation: pd.DataFrame, spec: FeatureSpec) -> Callable[[DeepFM], dict]:
    """Per-epoch validation metrics plus the early-stopping score: validation AUC."""
    return lambda m: rankers.with_selection_score(evaluate_deepfm(m, validation, spec), ("auc",), "logloss")


def run(cfg: DeepFMConfig) -> dict:
    """Train DeepFM, write the run directory (the chief's only), return the test metrics."""
    start = rankers.start_run(cfg, "deepfm")
    data, split, spec, run_dir = start.data, start.split, start.spec, start.run_dir
    with start.strategy.scope():
        model = DeepFM.from_spec(spec, cfg)

    evaluator = rankers.fit(model, cfg, split.train, spec, run_dir, monitor=rankers.MONITOR,
                            eval_fn=selection_eval(split.validation, spec))
    truth = None if data.truth is None else data.truth.loc[split.test.index]
    metrics = evaluate_deepfm(model, split.test, spec, truth=truth)
    metrics["best_epoch"] = evaluator.best_epoch
    finish_run(run_dir, metrics, chief=start.chief)
    return metrics
