"""What a ranker's run says when it learned little, or may not have finished: the advice printed at its end.
"""
from __future__ import annotations

import sys

from tfrs_recsys.config import TrainConfig
from tfrs_recsys.training.common import EpochEvaluator

WEAK_AUC = 0.55  # a best validation AUC at most this says the ranker barely learned


def say_weak_fit(task: str, evaluator: EpochEvaluator, cfg: TrainConfig, train_rows: int) -> None:
    """Prints :func:`weak_fit_advice`'s warning, if any, to stderr, and :func:`still_learning_note`'s."""
    if advice := weak_fit_advice(evaluator, cfg, train_rows):
        print(f"{task}: warning: {advice}", file=sys.stderr, flush=True)
    if note := still_learning_note(evaluator, cfg, train_rows):
        print(f"{task}: {note}", flush=True)


# An epoch of fewer steps than this is short: a smaller batch gives the same data more steps.
FEW_STEPS = 200


def still_learning_note(evaluator: EpochEvaluator, cfg: TrainConfig, train_rows: int) -> str | None:
    """A note when the best validation score came at the last epoch allowed: the model may not be done;
    on data of short epochs (under :data:`FEW_STEPS` steps), a smaller batch trains more steps per epoch."""
    if not evaluator.best_epoch == evaluator.epochs_run == cfg.epochs > 1:
        return None
    steps = -(-train_rows // cfg.batch_size)
    smaller = (f", and so may a smaller --batch-size: an epoch is {steps} steps of {cfg.batch_size} rows"
               if steps < FEW_STEPS and cfg.batch_size > 64 else "")
    return (f"the best validation score came at the last epoch ({cfg.epochs}): the model may not have "
            f"finished learning; more --epochs may help (early stopping ends the run once it stops "
            f"improving){smaller}")


def weak_fit_advice(evaluator: EpochEvaluator, cfg: TrainConfig, train_rows: int) -> str | None:
    """What to try when a ranker barely learned: a best validation AUC <= :data:`WEAK_AUC`, or the best of
    several epochs was the first (later ones only got worse).

    Args:
      evaluator: the run's evaluator, after training.
      cfg: the run's config.
      train_rows: the training rows.

    Returns:
      The message, or None when neither happened.
    """
    aucs = {k: v for k, v in evaluator.best_metrics.items() if k.endswith("auc") and not k.endswith("gauc")}
    weak = [f"{k} {v:.3f}" for k, v in aucs.items() if v <= WEAK_AUC]
    first = evaluator.best_epoch == 1 and evaluator.epochs_run > 1
    if not (weak or first):
        return None
    what = [f"the best validation {', '.join(weak)} is at most {WEAK_AUC} (0.5 ranks at random)"] * bool(weak)
    what += [f"the best epoch was the first of {evaluator.epochs_run}: later ones only got worse"] * first
    stopped = (f"; early stopping ended it after {evaluator.epochs_run} of {cfg.epochs} epochs: a slow start "
               f"may need more --patience (now {evaluator.patience} epochs) and --epochs"
               if evaluator.epochs_run < cfg.epochs else "")
    return (f"{'; '.join(what)}{stopped}. Try a learning rate 3x higher or lower (--learning-rate, now "
            f"{cfg.learning_rate}; --embedding-learning-rate, now {cfg.embedding_learning_rate}), a smaller "
            f"--batch-size (now {cfg.batch_size}), or more data (now {train_rows} training rows)")
