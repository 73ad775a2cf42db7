"""What a ranker's run says when it learned little, may not have finished, or did too well to be true: the
advice printed at its end.
"""
from __future__ import annotations

import sys

from tfrs_recsys.config import TrainConfig
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.training.common import FEW_STEPS, EpochEvaluator, ranker_batch

WEAK_AUC = 0.55  # a best validation AUC at most this says the ranker barely learned
LEAK_AUC = 0.99  # one at least this, on behaviour people choose, says the inputs give the label away
# A training AUC that rose this much over a run, while the validation AUC gained under this share of it,
# is memory.
MEMORY_RISE, MEMORY_SHARE = 0.1, 0.1
FEW_ROWS_PER_VALUE = 100  # a vocabulary column of fewer training rows per value is one to learn by heart


def say_weak_fit(task: str, evaluator: EpochEvaluator, cfg: TrainConfig, train_rows: int,
                 spec: FeatureSpec) -> None:
    """Prints :func:`memorizing_advice`'s warning, else :func:`weak_fit_advice`'s (whose remedies, such as
    a smaller batch, would not help a model that learns rows by heart), and :func:`leak_warning`'s, if
    any, to stderr, and :func:`still_learning_note`'s."""
    advice = memorizing_advice(evaluator, spec, train_rows) or weak_fit_advice(evaluator, cfg, train_rows)
    if advice:
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


def memorizing_advice(evaluator: EpochEvaluator, spec: FeatureSpec, train_rows: int) -> str | None:
    """A warning when the model learned its training rows by heart rather than what generalizes: from the
    first epoch (the higher of its training and validation AUC) to the last its training AUC rose by
    :data:`MEMORY_RISE` or more, to half that above the best validation AUC, while the best validation AUC
    gained under :data:`MEMORY_SHARE` of that rise over the first epoch's. It names the vocabulary columns
    of fewest training rows per value (under :data:`FEW_ROWS_PER_VALUE`), where a model can learn rows by
    heart, to try leaving out one at a time.

    Args:
      evaluator: the run's evaluator, after training.
      spec: the run's feature spec.
      train_rows: the training rows.

    Returns:
      The message, or None.
    """
    first, last = evaluator.train_logs.get(1), evaluator.train_logs.get(evaluator.epochs_run)
    checked = evaluator.validation_logs.get(1)
    if not (first and last and checked) or evaluator.epochs_run < 2:
        return None
    # The first epoch's training AUC is averaged over a model still learning: its end scored on validation
    # data is a truer start (a first epoch that reached the ceiling gained nothing later, yet memorized none).
    start = {k: max(first[k], checked[k]) for k in first if k in checked}
    rose = [f"{k} rose by {last[k] - start[k]:.3f} over {evaluator.epochs_run} epochs ({start[k]:.3f}, the "
            f"first epoch's {'validation' if start[k] > first[k] else 'training'} {k}, to {last[k]:.3f}) "
            f"while the validation {k} gained {v - checked[k]:.3f} ({checked[k]:.3f} to "
            f"{v:.3f} at best)" for k, v in evaluator.best_metrics.items()
            if k.endswith("auc") and k in start and k in last
            and last[k] - start[k] >= MEMORY_RISE and v - checked[k] < MEMORY_SHARE * (last[k] - start[k])
            and last[k] - v >= MEMORY_RISE / 2]
    if not rose:
        return None
    values = {c.name: len(c.vocabulary) for c in spec.features if c.encoding == "vocabulary" and c.vocabulary}
    values.update({c.name: max(c.num_buckets // 2, 1) for c in spec.features  # ids hashed into 2x buckets
                   if c.encoding == "hash" and c.num_buckets})
    few = sorted((n, name) for name, n in values.items() if train_rows / n < FEW_ROWS_PER_VALUE)[::-1][:4]
    where = (f" Columns of few training rows per value are where it can: "
             f"{', '.join(f'{name} ({n} values, {train_rows // n} rows each)' for n, name in few)}; "
             f"try leaving out one at a time (--exclude-columns), keeping the columns you know matter."
             if few else "")
    return (f"the training {'; '.join(rose)}: the model learns its training rows by heart.{where} Or "
            f"regularize more (--l2-reg, --embedding-l2, --dropout), and compare the runs' validation AUC")


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
