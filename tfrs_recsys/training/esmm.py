"""Train and evaluate ESMM, with the clicked-only CVR baseline trained in the same run.

Metrics (:func:`evaluate_esmm`), all on held-out impressions:

* ``ctr_auc`` (pCTR vs click), ``ctcvr_auc`` (pCTCVR vs click*conversion), both over every impression;
  ``cvr_auc_clicked``: pCVR vs conversion on CLICKED impressions only (CVR is P(conversion | click));
* ``ctr_logloss``, ``ctcvr_logloss``, ``cvr_logloss_clicked``; ``logloss`` is the training objective
  ``w_ctr * ctr_logloss + w_ctcvr * ctcvr_logloss``;
* ``gauc``: impression-weighted mean of per-group CTR AUC; groups are users (sessions when there is
  no user column, ``gauc_group_column``), one-class groups skipped (``gauc_groups_used`` /
  ``gauc_groups_skipped``);
* ``session_ndcg@k``: mean NDCG@k per session, gain conversion = 2 > click = 1 > none = 0, candidates
  ordered by their expected gain (:func:`tfrs_recsys.metrics.click_conversion_ndcg`, the evaluate
  CLI's NDCG); sessions without a click are skipped (``session_ndcg_sessions_used`` / ``..._skipped``);
* with synthetic ground truth (``truth.true_cvr`` for EVERY impression): ``cvr_true_auc``, the expected
  AUC of pCVR against conversions had every impression been clicked
  (:func:`~tfrs_recsys.metrics.expected_auc`), and
  ``cvr_true_spearman``, the rank correlation of pCVR with true_cvr over the entire impression space.

The baseline (:class:`~tfrs_recsys.models.esmm.ClickedCVR`, trained on clicked training rows with the
same architecture, epochs and early stopping on its own validation CVR AUC) gets the same CVR metrics
under ``baseline_*``; ``cvr_true_auc`` vs ``baseline_cvr_true_auc`` is ESMM's selection-bias claim.

Notebook use::

    from tfrs_recsys.training.esmm import evaluate_esmm
    model = ESMM.from_spec(spec, cfg); model.compile(tf.keras.optimizers.Adam(1e-3))
    model.fit(labeled_dataset(train, spec, batch_size=512), epochs=3)
    evaluate_esmm(model, test, spec, truth=data.truth.loc[test.index])
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_recsys import metrics as M
from tfrs_recsys import paths, runs
from tfrs_recsys.config import ESMMConfig
from tfrs_recsys.data.bad_rows import labels_of
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.models.esmm import ESMM, ClickedCVR
from tfrs_recsys.training import rankers, stream
from tfrs_recsys.training.common import completed_run, finish_run
from tfrs_recsys.training.fit_advice import say_weak_fit
from tfrs_recsys.training.resume import TrainingState

MODEL = ESMM
SELECTION = ("ctr_auc", "ctcvr_auc")  # the validation AUCs early stopping averages
BASELINE_SELECTION = ("cvr_auc_clicked",)
NDCG_GAIN = "conversion=2, click=1, none=0; ranked by the expected gain (pCTR - pCTCVR) + 3 pCTCVR"


def cvr_metrics(cvr: np.ndarray, click: np.ndarray, conversion: np.ndarray,
                truth: pd.DataFrame | None = None) -> dict[str, float]:
    """CVR quality: on clicked impressions against conversions; on all of them against true_cvr.

    Args:
      cvr: predicted CVR per impression.
      click: 0/1 clicks.
      conversion: 0/1 conversions.
      truth: synthetic ground truth row-aligned with them (``true_cvr``), optional.

    Returns:
      ``cvr_auc_clicked``, ``cvr_logloss_clicked`` and, with truth, ``cvr_true_auc`` and
      ``cvr_true_spearman``.
    """
    clicked = click > 0.5
    out = {"cvr_auc_clicked": M.auc(conversion[clicked], cvr[clicked]),
           "cvr_logloss_clicked": (M.logloss(conversion[clicked], cvr[clicked]) if clicked.any()
                                   else float("nan"))}
    if truth is not None and "true_cvr" in truth.columns:
        true_cvr = truth["true_cvr"].to_numpy(dtype=np.float64)
        out["cvr_true_auc"] = M.expected_auc(true_cvr, cvr)
        out["cvr_true_spearman"] = M.spearman(true_cvr, cvr)
    return out


def _labels(frame: pd.DataFrame, model: ESMM | ClickedCVR, spec: FeatureSpec
            ) -> tuple[np.ndarray, np.ndarray]:
    click_label = getattr(model, "click_label", spec.labels[0])
    return (frame[click_label].to_numpy(dtype=np.float64),
            frame[model.conversion_label].to_numpy(dtype=np.float64))


def evaluate_esmm(model: ESMM, frame: pd.DataFrame, spec: FeatureSpec, *, truth: pd.DataFrame | None = None,
                  k: int = 10, group_by: str | None = None,
                  outputs: dict[str, np.ndarray] | None = None) -> dict:
    """Every ESMM metric of the module docstring on ``frame``.

    Args:
      model: the trained ESMM.
      frame: labeled impressions.
      spec: their feature spec.
      truth: synthetic ground truth row-aligned with ``frame``, optional.
      k: the session NDCG's cut-off.
      group_by: the GAUC group column (default: users, else sessions).
      outputs: the model's outputs for ``frame``'s rows, already computed (then ``frame`` needs only the
        label, group and session columns).

    Returns:
      The metrics.
    """
    out = outputs or rankers.predict(model, frame, spec)
    click, conversion = _labels(frame, model, spec)
    ctcvr_label = click * conversion
    metrics: dict = {
        "ctr_auc": M.auc(click, out["ctr"]),
        "ctcvr_auc": M.auc(ctcvr_label, out["ctcvr"]),
        "ctr_logloss": M.logloss(click, out["ctr"]),
        "ctcvr_logloss": M.logloss(ctcvr_label, out["ctcvr"]),
        "rows": len(frame),
    }
    metrics["logloss"] = (model.ctr_loss_weight * metrics["ctr_logloss"]
                          + model.ctcvr_loss_weight * metrics["ctcvr_logloss"])
    metrics.update(cvr_metrics(out["cvr"], click, conversion, truth))
    metrics.update(rankers.gauc_metrics(click, out["ctr"], frame, spec, group_by))
    if spec.session_column and spec.session_column in frame.columns:
        value, used, skipped = M.click_conversion_ndcg(click, conversion, out["ctr"], out["ctcvr"],
                                                       frame[spec.session_column].to_numpy(), k=k)
        metrics.update({f"session_ndcg@{k}": value, "session_ndcg_sessions_used": used,
                        "session_ndcg_sessions_skipped": skipped, "session_ndcg_gain": NDCG_GAIN})
    if truth is not None and "true_ctr" in truth.columns:
        metrics["ctr_true_spearman"] = M.spearman(truth["true_ctr"].to_numpy(), out["ctr"])
    return metrics


def evaluate_clicked_cvr(model: ClickedCVR, frame: pd.DataFrame, spec: FeatureSpec, *,
                         truth: pd.DataFrame | None = None,
                         outputs: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """The baseline's CVR metrics (:func:`cvr_metrics`) on ``frame`` (or on ``outputs`` already computed)."""
    click, conversion = _labels(frame, model, spec)
    return cvr_metrics((outputs or rankers.predict(model, frame, spec))["cvr"], click, conversion, truth)


def train_clicked_cvr(cfg: ESMMConfig, spec: FeatureSpec, train: pd.DataFrame, validation: pd.DataFrame,
                      run_dir: Path | str, *, strategy: tf.distribute.Strategy | None = None) -> ClickedCVR:
    """The baseline on clicked training rows, early-stopped on clicked validation rows' CVR AUC.

    Args:
      cfg: the run's config.
      spec: the feature spec.
      train: the training rows (the clicked ones are used).
      validation: the validation rows.
      run_dir: the run directory (the baseline logs into its own folder there).
      strategy: the strategy to build the model under (default: the current one).

    Returns:
      The trained baseline.
    """
    with (strategy or tf.distribute.get_strategy()).scope():
        model = ClickedCVR.from_spec(spec, cfg)
    clicked = train[train[spec.labels[0]] > 0.5]
    if clicked.empty:
        raise DataError("no clicked training rows for the clicked-only CVR baseline", column=spec.labels[0],
                        fix="use data with clicks, or --baseline false")
    baseline_dir = paths.makedirs(paths.join(run_dir, runs.BASELINE))

    def eval_fn(m: ClickedCVR) -> dict[str, float]:
        return rankers.with_selection_score(evaluate_clicked_cvr(m, validation, spec), BASELINE_SELECTION,
                                            "cvr_logloss_clicked")

    _say_baseline(len(clicked))
    rankers.fit(model, cfg, clicked, spec, baseline_dir, checkpoint=False, eval_fn=eval_fn,
                state=TrainingState.of_run(cfg, run_dir, runs.BASELINE))
    return model


def selection_eval(validation: pd.DataFrame, spec: FeatureSpec, cfg: ESMMConfig) -> Callable[[ESMM], dict]:
    """Per-epoch validation metrics plus the early-stopping score: the mean of CTR and CTCVR AUC.

    Args:
      validation: the validation rows.
      spec: their feature spec.
      cfg: the run's config (NDCG cut-off).

    Returns:
      ``eval_fn(model) -> metrics`` for :func:`~tfrs_recsys.training.rankers.fit`.
    """
    return lambda m: rankers.with_selection_score(evaluate_esmm(m, validation, spec, k=cfg.ndcg_k), SELECTION,
                                                  "logloss")


def _say_baseline(rows: int, about: str = "") -> None:
    print(f"esmm: training the clicked-only CVR baseline (the same architecture, on {about}{rows} clicked "
          f"training rows; its epochs follow)", flush=True)
    rankers.say_selection("esmm baseline", BASELINE_SELECTION)


def run(cfg: ESMMConfig) -> dict:
    """Train ESMM (and the baseline), write the run directory (the chief's only).

    Args:
      cfg: the run's config.

    Returns:
      The test metrics.
    """
    if (done := completed_run(cfg, "esmm")) is not None:
        return done
    if stream.should_stream(cfg):
        return run_streamed(cfg)
    start = rankers.start_run(cfg, "esmm")
    data, split, spec, run_dir, strategy = start.data, start.split, start.spec, start.run_dir, start.strategy
    model, evaluator = rankers.train_model("esmm", cfg, split, spec, run_dir, strategy)
    test_truth = None if data.truth is None else data.truth.loc[split.test.index]
    metrics = evaluate_esmm(model, split.test, spec, truth=test_truth, k=cfg.ndcg_k)
    metrics["best_epoch"] = evaluator.best_epoch
    if cfg.baseline:
        baseline = train_clicked_cvr(cfg, spec, split.train, split.validation, run_dir, strategy=strategy)
        for key, value in evaluate_clicked_cvr(baseline, split.test, spec, truth=test_truth).items():
            metrics[f"baseline_{key}"] = value
    finish_run(run_dir, metrics, chief=start.chief)
    return metrics


def run_streamed(cfg: ESMMConfig) -> dict:
    """Train ESMM (and the baseline, on the clicked training rows) from streamed file shards
    (:mod:`tfrs_recsys.training.stream`).

    Args:
      cfg: the run's config.

    Returns:
      The test metrics, with the seconds of each phase under ``timings``.
    """
    def evaluate(model, batches, run, fn, **kwargs) -> dict:
        outputs, frame = stream.score(model, batches, run.spec)
        return fn(model, frame, run.spec, outputs=outputs, **kwargs)

    def train_and_test(run: stream.StreamRun) -> dict:
        spec, click = run.spec, run.spec.labels[0]
        with run.strategy.scope():
            model = ESMM.from_spec(spec, cfg)
        rankers.say_selection("esmm", SELECTION)
        evaluator = stream.fit(model, cfg, run, run.run_dir, rows=run.train_rows, eval_fn=lambda m: (
            rankers.with_selection_score(evaluate(m, run.validation, run, evaluate_esmm, k=cfg.ndcg_k),
                                         SELECTION, "logloss")))
        say_weak_fit("esmm", evaluator, cfg, run.train_rows, spec)
        tested = [model]
        if cfg.baseline:
            def clicked(batch):
                return labels_of(batch, [click])[click] > 0.5  # a CSV's labels are read as text

            # the baseline's metrics read the clicked rows only: the others are not scored
            validation = [b.filter(clicked(b)) for b in run.validation]
            with run.strategy.scope():
                baseline = ClickedCVR.from_spec(spec, cfg)
            baseline_dir = paths.makedirs(paths.join(run.run_dir, runs.BASELINE))
            click_rate = sum(b.num_rows for b in validation) / sum(b.num_rows for b in run.validation)
            rows = max(1, round(run.train_rows * click_rate))
            _say_baseline(rows, about="about ")
            stream.fit(baseline, cfg, run, baseline_dir, rows=rows, row_filter=clicked,
                       eval_fn=lambda m: rankers.with_selection_score(
                           evaluate(m, validation, run, evaluate_clicked_cvr), BASELINE_SELECTION,
                           "cvr_logloss_clicked"))
            tested.append(baseline)
        clock = time.perf_counter()
        outputs, frame = stream.score(tested, stream.test_rows(run, cfg), spec)  # one read for both
        metrics = {**evaluate_esmm(model, frame, spec, outputs=outputs[0], k=cfg.ndcg_k),
                   "best_epoch": evaluator.best_epoch}
        if cfg.baseline:
            baseline_metrics = evaluate_clicked_cvr(tested[1], frame, spec, outputs=outputs[1])
            metrics.update({f"baseline_{key}": value for key, value in baseline_metrics.items()})
        run.timings["evaluation"] = time.perf_counter() - clock
        return metrics

    return stream.run_task(cfg, "esmm", train_and_test)
