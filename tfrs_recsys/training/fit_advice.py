"""What a ranker's run says when it learned little, may not have finished, or did too well to be true: the
advice printed at its end.
"""
from __future__ import annotations

import sys

from tfrs_recsys.config import TrainConfig
from tfrs_recsys.training.common import FEW_STEPS, EpochEvaluator, ranker_batch

WEAK_AUC = 0.55  # a best validation AUC at most this says the ranker barely learned
LEAK_AUC = 0.99  # one at least this, on behaviour people choose, says the inputs give the label away


def say_weak_fit(task: str, evaluator: EpochEvaluator, cfg: TrainConfig, train_rows: int) -> None:
    """Prints :func:`weak_fit_advice`'s and :func:`leak_warning`'s warnings, if any, to stderr, and
    :func:`still_learning_note`'s."""
    if advice := weak_fit_advice(evaluator, cfg, train_rows):
        print(f"{task}: warning: {advice}", file=sys.stderr, flush=True)
    if leak := leak_warning(evaluator):
        print(f"{task}: warning: {leak}", file=sys.stderr, flush=True)
    if note := still_learning_note(evaluator, cfg, train_rows):
        print(f"{task}: {note}", flush=True)


def leak_warning(evaluator: EpochEvaluator) -> str | None:
    """A warning when a best validation AUC is at least :data:`LEAK_AUC`: clicks and purchases are not
    that predictable, so some inputs, alone or together, most likely record the label itself (the check
    before training looks at one column at a time)."""
    aucs = {k: v for k, v in evaluator.best_metrics.items() if k.endswith("auc") and not k.endswith("gauc")}
    near = [f"{k} {v:.4f}" for k, v in aucs.items() if v >= LEAK_AUC]
    if not near:
        return None
    return (f"the best validation {', '.join(near)} is near perfect (>= {LEAK_AUC}): some columns, alone or "
            f"together, may give the label away (e.g. a price paid beside the list price, where a discount "
            f"is the label). Leave out what is not known when the ranker scores an item (--exclude-columns), "
            f"and train again")


def still_learning_note(evaluator: EpochEvaluator, cfg: TrainConfig, train_rows: int) -> str | None:
    """A note when the best validation score came at the last epoch allowed: the model may not be done;
    on data of short epochs (under :data:`FEW_STEPS` steps), a smaller batch trains more steps per epoch."""
    if not evaluator.best_epoch == evaluator.epochs_run == cfg.epochs > 1:
        return None
    batch = ranker_batch(cfg, train_rows)
    steps = -(-train_rows // batch)
    smaller = (f", and so may a smaller --batch-size: an epoch is {steps} steps of {batch} rows"
               if steps < FEW_STEPS and batch > 64 else "")
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
            f"--batch-size (now {ranker_batch(cfg, train_rows)}), or more data (now {train_rows} training "
            f"rows)")
