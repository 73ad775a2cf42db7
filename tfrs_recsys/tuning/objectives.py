"""What one tuning trial trains and the validation number it is judged by.

Each model's objective is its main validation metric, larger is better, read at the epoch
whose weights training keeps (early stopping restores the best epoch):

==========  ==================  ================================================
model       objective           training code a trial runs
==========  ==================  ================================================
retrieval   ``val_ndcg@10``     :func:`tfrs_recsys.training.retrieval.train_and_evaluate`
esmm        ``val_ctcvr_auc``   :func:`tfrs_recsys.training.rankers.fit` of ``ESMM``
deepfm      ``val_auc``         :func:`tfrs_recsys.training.rankers.fit` of ``DeepFM``
==========  ==================  ================================================

The data is loaded (and, for the rankers, split and its feature spec inferred from the
training rows) once per search; every trial trains a fresh model on it with the same seed,
so trials differ only in their hyperparameters. The epoch kept is the one ``train`` keeps
(ESMM: by the mean of validation CTR and CTCVR AUC), and the trial is judged by the objective
at that epoch. A trial whose training diverges (no finite
validation value at any epoch) scores :data:`DIVERGED_SCORE`, below every real AUC or NDCG.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from tfrs_recsys import paths, runs
from tfrs_recsys.config import ConfigError, TrainConfig

OBJECTIVES = {"retrieval": "val_ndcg@10", "esmm": "val_ctcvr_auc", "deepfm": "val_auc"}
DIVERGED_SCORE = 0.0


@dataclass
class TrialResult:
    """The objective and every numeric validation metric at the kept epoch."""

    objective: float
    metrics: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    seconds: float
    run_dir: str
    diverged: bool = False


def _result(objective: str, run_dir: Path, best_epoch: int | None, seconds: float) -> TrialResult:
    """The trial's result from its training log: the metrics of ``best_epoch``."""
    rows = runs.read_train_log(run_dir)
    row = next((r for r in rows if r.get("epoch") == best_epoch), {})
    metrics = {k: float(v) for k, v in row.items()
               if k.startswith("val_") and isinstance(v, (int, float)) and math.isfinite(v)}
    value = metrics.get(objective)
    return TrialResult(DIVERGED_SCORE if value is None else value, metrics, best_epoch, len(rows),
                       round(seconds, 2), str(run_dir), value is None)


class RetrievalTrials:
    """Two-tower retrieval over interactions loaded once; each trial is a full training run."""

    model = "retrieval"

    def __init__(self, cfg: TrainConfig):
        from tfrs_recsys.training.retrieval import load_data, resolve_protocol

        if resolve_protocol(cfg) == "leave_last_out" and 10 not in tuple(cfg.eval_ks):
            raise ConfigError(f"tuning retrieval maximizes validation NDCG@10, but --eval-ks is "
                              f"{cfg.eval_ks}; include 10 (e.g. --eval-ks 10,50)")
        self.data = load_data(cfg)

    def run(self, cfg: TrainConfig) -> TrialResult:
        """Train with ``cfg`` on the loaded interactions; its result at the kept epoch."""
        from tfrs_recsys.training.retrieval import train_and_evaluate

        start = time.perf_counter()
        run_dir = train_and_evaluate(cfg, self.data).run_dir
        meta = paths.read_json(runs.open_run(run_dir).file(runs.META))
        result = _result(OBJECTIVES[self.model], run_dir, meta.get("best_epoch"), time.perf_counter() - start)
        saved = {f"val_{k}": float(v) for k, v in (meta.get("saved_validation") or {}).items()}
        if OBJECTIVES[self.model] in saved:  # the saved model averages epochs: score it, not the best epoch
            result.metrics, result.objective = saved, saved[OBJECTIVES[self.model]]
        return result


class RankerTrials:
    """ESMM or DeepFM over labeled data loaded, split and described by a spec once.

    Early stopping uses the same selection score as ``python -m tfrs_recsys.train``
    (ESMM: the mean of validation CTR and CTCVR AUC; DeepFM: validation AUC), so that
    training the best config again keeps the same epoch.
    """

    def __init__(self, model: str, cfg: TrainConfig):
        from tfrs_recsys.training import rankers

        if model not in ("esmm", "deepfm"):
            raise ValueError(f"not a ranker: {model!r}")
        self.model = model
        self.data, self.split = rankers.load_and_split(cfg, model)
        for report in self.data.skipped:
            report.log()
        self.spec = rankers.ranker_spec(cfg, self.data, self.split.train)

    def run(self, cfg: TrainConfig) -> TrialResult:
        """Train a fresh model with ``cfg`` on the loaded data; its result at the kept epoch."""
        from tfrs_recsys.training import rankers

        start = time.perf_counter()
        tf.keras.utils.set_random_seed(cfg.seed)
        run_dir = runs.create(cfg, self.model)
        runs.write_ranker_files(run_dir, self.spec, self.split)
        _, evaluator = rankers.train_model(self.model, cfg, self.split, self.spec, run_dir, resumable=False)
        return _result(OBJECTIVES[self.model], run_dir, evaluator.best_epoch, time.perf_counter() - start)


def trial_runner(model: str, cfg: TrainConfig) -> RetrievalTrials | RankerTrials:
    """The runner of ``model``, its data loaded from ``cfg``.

    Args:
      model: ``retrieval``, ``esmm`` or ``deepfm``.
      cfg: the search's base config (data options).

    Returns:
      The runner; ``runner.run(trial_cfg)`` trains one trial.
    """
    return RetrievalTrials(cfg) if model == "retrieval" else RankerTrials(model, cfg)
