"""Train and evaluate the two-tower retrieval model; write its run directory.

Evaluation is exact: every query is scored against every catalog item, the
items of the query's history are excluded (leave-last-out), and the 0-based rank of the
held-out item gives recall/NDCG/MRR@k (:func:`tfrs_recsys.metrics.topk_metrics`). Under the
TFRS tutorial protocol (``random_80_20``) the protocol excludes nothing. Under either, whether ranking
leaves each user's history out is then chosen on validation, the protocol's rule on a tie
(:func:`leaves_history_out`: a log where users come back to their items keeps it). ``recall@100`` is
the tutorial's top-100 hit rate (``factorized_top_k/top_100_categorical_accuracy``).

Pairwise evaluation (with ``loss`` = ``bpr`` | ``triplet``, or ``eval_pairwise``) scores the held-out
rated interactions of the random split, liked (rating >= ``positive_threshold``) or disliked:
``pairwise_auc`` = P(s(u, i+) > s(u, i-)) over the pairs of a held-out liked and a held-out disliked
item of the same user, ties counted half (:func:`tfrs_recsys.metrics.pairwise_auc`), and ``auc`` =
the global AUC of the scores against the liked label. ``pairwise_auc`` is then the early-stopping
monitor.

The run directory (:mod:`tfrs_recsys.runs`) gets the catalog, its item vectors and metadata, the
users' histories, the feature spec of the towers and ``retrieval_meta.json``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_recsys import runs
from tfrs_recsys.config import PAIRWISE_LOSSES, ConfigError, RetrievalConfig
from tfrs_recsys.data import pairs, sequence_splits
from tfrs_recsys.data import sequences as seq
from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.registry import load_interactions, options_from
from tfrs_recsys.metrics import auc, dot_product_ranks, pairwise_auc, topk_metrics
from tfrs_recsys.models import retrieval as retrieval_model
from tfrs_recsys.models.cooccurrence import CooccurrenceTable
from tfrs_recsys.models.retrieval import TwoTowerRetrieval, Vocabularies, build_model, query_vectors
from tfrs_recsys.training import distribution
from tfrs_recsys.training.common import (
    EpochEvaluator,
    completed_run,
    finish_run,
    fit_verbosity,
    patience_epochs,
    tensorboard_callback,
)
from tfrs_recsys.training.cooccurrence import fit_cooccurrence, fused_ranks
from tfrs_recsys.training.optimizers import LazyAdam
from tfrs_recsys.training.popularity import popularity_metrics
from tfrs_recsys.training.resume import TrainingState, advance

TUTORIAL_KS = (1, 5, 10, 50, 100)
EVAL_CELLS = 1 << 24  # query x item scores computed at once by full-catalog evaluation (64 MiB of float32)
# batch_size 0: windows per step such that a step trains about this many targets, whatever the window's
# length or the data's size (SASRec trains 512 one-target sequences per step).
TARGETS_PER_STEP = 1024
PAIRWISE_BATCH = 128  # triples per step of a pairwise loss with batch_size 0
def windows_per_step(cfg: RetrievalConfig, targets: np.ndarray) -> int:
    """The global batch of ``all_positions`` training, in windows: ``cfg.batch_size``, or for 0 the rule.

    Args:
      cfg: the run's config.
      targets: the ``[N, L]`` targets of the training windows (``""``: none).

    Returns:
      ``cfg.batch_size`` when set; else ``TARGETS_PER_STEP`` / the mean targets of a window, at least 8.
    """
    if cfg.batch_size:
        return cfg.batch_size
    per_window = float((targets != seq.PAD).sum()) / max(len(targets), 1)
    return max(8, int(round(TARGETS_PER_STEP / max(per_window, 1.0))))


def _feature_columns(group: str, frame: pd.DataFrame | None, cfg_columns: tuple[str, ...],
                     enabled: bool) -> tuple[list[str], dict[str, str]]:
    if not enabled:
        return [], {}
    if cfg_columns:
        return list(cfg_columns), {}
    return seq.infer_entity_columns(frame, f"{group}_id", group)


def build_vocabularies(cfg: RetrievalConfig, data: InteractionData, catalog: np.ndarray,
                       users: np.ndarray | None) -> tuple[Vocabularies, dict]:
    """Feature tables of the catalog and users, of the columns the config names (else every usable one).

    Args:
      cfg: the run's config (feature columns and switches).
      data: the interactions with their item and user tables.
      catalog: the item ids.
      users: the training users' ids (None: no user features).

    Returns:
      (vocabularies, ``{"item.col" | "user.col": why skipped}``).
    """
    item_cols, skip_i = _feature_columns("item", data.items, cfg.item_feature_columns, cfg.use_item_features)
    user_cols, skip_u = _feature_columns("user", data.users, cfg.user_feature_columns,
                                         cfg.use_user_features and users is not None)
    skipped = {**{f"item.{k}": v for k, v in skip_i.items()}, **{f"user.{k}": v for k, v in skip_u.items()}}
    return Vocabularies.build(catalog, users, data.items, data.users, item_cols, user_cols), skipped


def validation_sample(held: seq.HeldOut, users: int, seed: int) -> seq.HeldOut:
    """At most ``users`` rows of ``held``, a seeded sample in their order (all when ``users`` is 0)."""
    if not users or len(held) <= users:
        return held
    keep = np.sort(np.random.default_rng(seed).choice(len(held), users, replace=False))
    seen = None if held.seen is None else [held.seen[i] for i in keep]
    return seq.HeldOut(held.user_ids[keep], [held.histories[i] for i in keep], held.targets[keep],
                       [held.exclude[i] for i in keep], seen)


def ranks(model: TwoTowerRetrieval, held: seq.HeldOut, max_len: int, chunk: int = 1024,
          table: CooccurrenceTable | None = None) -> np.ndarray:
    """0-based rank of each held-out target among all catalog items, its ``exclude`` items skipped.

    Args:
      model: the trained model.
      held: the targets and their query histories.
      max_len: the history width.
      chunk: queries the tower runs on, and ranked, at once.
      table: rank by the scores fused with this co-occurrence table (when its ``beta`` > 0).

    Returns:
      int64 ``[len(held)]`` ranks.
    """
    if table is not None and table.beta > 0:
        return fused_ranks(model, held, max_len, table, (table.beta,), cells=EVAL_CELLS)[table.beta]
    catalog = model.catalog_ids
    position = {item: i for i, item in enumerate(catalog)}
    candidates = model.candidate_embeddings().numpy()
    if not len(held):
        return np.zeros(0, dtype=np.int64)
    queries = np.concatenate([query_vectors(model, held.user_ids[lo:lo + chunk],
                                            held.histories[lo:lo + chunk], max_len)
                              for lo in range(0, len(held), chunk)])
    excluded = [np.array([position[i] for i in items if i in position], dtype=np.int64)
                for items in held.exclude]
    targets = np.array([position[t] for t in held.targets])
    return dot_product_ranks(queries, candidates, targets, excluded, cells=EVAL_CELLS, chunk=chunk)


def with_history(held: seq.HeldOut, left_out: bool) -> seq.HeldOut:
    """``held`` with each user's known items (``seen``, else the query's history) left out of its ranking
    (``left_out``), or nothing left out."""
    seen = held.histories if held.seen is None else held.seen
    return replace(held, exclude=seen if left_out else [np.array([], dtype=object)] * len(held))


def leaves_history_out(model: TwoTowerRetrieval, validation: seq.HeldOut, max_len: int,
                       ks: tuple[int, ...], *, protocol_default: bool) -> tuple[bool, dict]:
    """Whether ranking leaves each user's own history out: the better of the two on validation's hit
    rates at every cut-off (summed); the protocol's own rule on a tie.

    Where a user never interacts with an item twice (MovieLens ratings), a history item can never be
    the target, yet the model, trained on those very interactions, scores it near the top; where users
    come back to their items (plays, purchases), the history holds the likeliest targets. The data tell
    which: validation targets are held-out interactions, queried by the training history.

    Args:
      model: the trained model.
      validation: the validation targets.
      max_len: the history width.
      ks: the cut-offs.
      protocol_default: the protocol's rule (leave-last-out leaves the history out, the tutorial's keeps it).

    Returns:
      (True to leave the history out, ``{"kept": metrics, "left_out": metrics}`` on validation).
    """
    if not len(validation):
        return protocol_default, {}
    both = {name: topk_metrics(ranks(model, with_history(validation, name == "left_out"), max_len), ks)
            for name in ("kept", "left_out")}
    kept, left_out = (sum(both[name][f"recall@{k}"] for k in ks) for name in ("kept", "left_out"))
    choice = left_out > kept or (left_out == kept and protocol_default)
    print(f"retrieval: each user's history {'left out of' if choice else 'kept in'} the ranking (validation "
          f"hit rates at {', '.join(map(str, ks))}: history kept "
          + ", ".join(f"{both['kept'][f'recall@{k}']:.4f}" for k in ks) + "; left out "
          + ", ".join(f"{both['left_out'][f'recall@{k}']:.4f}" for k in ks) + ")", flush=True)
    return choice, both


def item_scores(model: TwoTowerRetrieval, rated: pairs.RatedHeldOut, max_len: int) -> np.ndarray:
    """``s(u, i) = tau * <q(u, history), c(i)>`` of each held-out row, ``[N]``."""
    position = {item: i for i, item in enumerate(model.catalog_ids)}
    queries = query_vectors(model, rated.user_ids.astype(str), rated.histories, max_len)
    items = model.candidate_embeddings().numpy()[[position[i] for i in rated.item_ids]]
    return np.sum(queries * items, axis=1)


def evaluate_pairwise(model: TwoTowerRetrieval, rated: pairs.RatedHeldOut, max_len: int) -> dict[str, float]:
    """``pairwise_auc`` (same-user liked vs disliked pairs) and global ``auc`` of the held-out scores."""
    scores = item_scores(model, rated, max_len)
    value, _, _ = pairwise_auc(rated.liked, scores, rated.user_ids)
    return {"pairwise_auc": value, "auc": auc(rated.liked, scores)}


def same_user_pairs(rated: pairs.RatedHeldOut) -> int:
    """How many (liked, disliked) pairs of one user ``pairwise_auc`` averages over."""
    counts = pd.Series(rated.liked).groupby(rated.user_ids).agg(["sum", "count"])
    return int((counts["sum"] * (counts["count"] - counts["sum"])).sum())


def pairwise_metrics_on(cfg: RetrievalConfig) -> bool:
    """Whether the run reports ``pairwise_auc`` (a pairwise loss, or ``eval_pairwise``)."""
    return cfg.loss in PAIRWISE_LOSSES or cfg.eval_pairwise


def resolve_protocol(cfg: RetrievalConfig) -> str:
    """The split protocol of ``cfg``.

    Args:
      cfg: the run's config; its ``protocol`` may be ``auto``.

    Returns:
      ``cfg.protocol``, or for ``auto``: ``random_80_20`` when pairwise metrics are on (they need
      several held-out items per user), else ``leave_last_out``.
    """
    if cfg.protocol != "auto":
        return cfg.protocol
    return "random_80_20" if pairwise_metrics_on(cfg) else "leave_last_out"


def split_data(cfg: RetrievalConfig, data: InteractionData) -> seq.SequenceSplit:
    """The split of ``data`` under the protocol of ``cfg`` (:func:`resolve_protocol`)."""
    if resolve_protocol(cfg) == "leave_last_out":
        return sequence_splits.leave_last_out(data, min_interactions=cfg.min_interactions)
    return sequence_splits.random_split(data, test_fraction=0.2, validation_fraction=cfg.validation_fraction,
                            seed=cfg.seed)


def evaluate_run(run_dir, part: str = "test") -> dict[str, float]:
    """The metrics a retrieval run reports, on one held-out part of its split, from its saved weights.

    The split is rebuilt as the run made it (the same data, config and seed), so ``part="test"`` gives
    the run's ``test_metrics.json`` again.

    Args:
      run_dir: A ``retrieval`` run directory.
      part: ``test`` or ``validation``.

    Returns:
      ``ndcg@k``, ``recall@k`` and ``mrr@k`` (and ``pairwise_auc``, ``auc`` where the run reports them).
    """
    trained = runs.load_retrieval(run_dir)
    cfg, model = trained.cfg, trained.model
    split = split_data(cfg, load_data(cfg))
    ks = TUTORIAL_KS if split.protocol == "random_80_20" else tuple(cfg.eval_ks)
    held = getattr(split, part)
    held = with_history(held, trained.meta.get("history_left_out", split.protocol == "leave_last_out"))
    metrics = topk_metrics(ranks(model, held, cfg.max_history, table=trained.cooccurrence), ks)
    if pairwise_metrics_on(cfg):
        rated = pairs.rated_held_out(getattr(split.rows, part), split.rows.train, cfg.positive_threshold)
        metrics.update(evaluate_pairwise(model, rated, cfg.max_history))
    return metrics


def run(cfg: RetrievalConfig) -> dict[str, float]:
    """Train on ``cfg.dataset``, early-stop on validation, write the run directory, return test metrics."""
    if (done := completed_run(cfg, "retrieval")) is not None:
        return done
    # First of all: MultiWorkerMirroredStrategy can only be created before TensorFlow runs any op.
    strategy = distribution.start_runtime(cfg)
    return train_and_evaluate(cfg, load_data(cfg), strategy=strategy).test_metrics


def load_data(cfg: RetrievalConfig) -> InteractionData:
    """The interactions of ``cfg``'s data, skipped rows reported."""
    data = load_interactions(**options_from(cfg, load_interactions))
    for report in data.skipped:
        report.log()
    return data


@dataclass
class RunResult:
    """What :func:`train_and_evaluate` leaves: the test metrics, the model, the split, the run directory."""

    test_metrics: dict[str, float]
    model: TwoTowerRetrieval
    split: seq.SequenceSplit
    run_dir: Path | str


def train_and_evaluate(cfg: RetrievalConfig, data: InteractionData, *,
                       strategy: tf.distribute.Strategy | None = None) -> RunResult:
    """The body of :func:`run` for data already in memory, under ``strategy`` (default: ``cfg.distribute``).

    ``cfg.batch_size`` is the global batch: with ``R`` replicas each trains on ``batch_size / R``
    windows per step, and in-batch negatives come from that local batch
    (:mod:`tfrs_recsys.models.retrieval`). Only the chief writes the run directory.

    Args:
      cfg: the run's config.
      data: the interactions.
      strategy: the distribution strategy (default: built from ``cfg.distribute``).

    Returns:
      The run's result.
    """
    if strategy is None:
        strategy = distribution.start_runtime(cfg)
    chief = distribution.is_chief(strategy)
    tf.keras.utils.set_random_seed(cfg.seed)
    split = split_data(cfg, data)
    catalog = seq.catalog_ids(data.interactions)
    vocab, skipped = build_vocabularies(cfg, data, catalog, split.train.user_ids)
    if not cfg.use_transformer and not cfg.use_user_id and not vocab.spec.group("user"):
        raise ConfigError(f"use_transformer=false and use_user_id=false leave the query tower only user "
                          f"features, but {data.name} has none usable; set use_user_id=true")
    negatives = retrieval_model.resolve_negatives(cfg.negatives, len(catalog), cfg.full_softmax_max_items)
    probabilities = seq.item_probabilities(split.train, catalog)
    sampler, targets_per_batch, steps_per_epoch, exclude_seen = None, None, 0, False
    if cfg.loss in PAIRWISE_LOSSES:
        sampler = pairs.TripleSampler(split.rows.train, catalog, positive_threshold=cfg.positive_threshold,
                                      use_disliked=cfg.use_disliked, sampling=cfg.pairwise_sampling,
                                      max_len=cfg.max_history if cfg.use_transformer else 0, seed=cfg.seed,
                                      loss=cfg.loss)
        train_ds = sampler.dataset(cfg.batch_size or PAIRWISE_BATCH)
        steps = int(train_ds.cardinality())
        steps_per_epoch = math.ceil(len(sampler) / (cfg.batch_size or PAIRWISE_BATCH))
        negatives_used = (f"disliked, else {cfg.pairwise_sampling}" if cfg.use_disliked
                          else cfg.pairwise_sampling)
        examples = (f"{len(sampler)} training triples (loss={cfg.loss}, {sampler.dropped} liked without a "
                    f"negative)")
    else:
        windows = seq.training_windows(split.train, cfg.max_history, mode=cfg.training_mode,
                                       stride=cfg.window_stride or None)
        targets = windows["targets"]
        batch = windows_per_step(cfg, targets)
        exclude_seen = cfg.exclude_seen and split.protocol == "leave_last_out" and negatives == "full"
        train_ds = seq.training_dataset(windows, batch, seed=cfg.seed, sequence_positions=(
            seq.catalog_positions(split.train, catalog) if exclude_seen else None))
        steps = seq.training_batches(windows, batch)
        # Batches group similar lengths: weigh targets alike by normalizing with the mean batch's count.
        targets_per_batch = float((targets != seq.PAD).sum()) / len(targets) * batch
        steps_per_epoch = math.ceil(len(targets) / batch)
        examples = (f"{len(windows['user_id'])} training windows ({cfg.training_mode}) in batches of {batch} "
                    f"(about {targets_per_batch:.0f} targets), negatives={negatives}, seen items "
                    + ("left out of the softmax" if exclude_seen else "kept in the softmax"
                       + (" (--exclude-seen needs the full softmax and leave_last_out)" if cfg.exclude_seen
                          else "")))
        negatives_used = negatives
    train_ds = distribution.shard_by_data(train_ds)
    if cfg.steps_per_epoch:  # epochs of a set number of steps over the repeated input
        train_ds, steps = train_ds.repeat(), cfg.steps_per_epoch
        steps_per_epoch = steps
    elif cfg.ema_momentum:
        # Told its length, Keras ends every epoch on a multiple of `steps`, where the average is written
        # into the model (unknown, it counts one more step at the end of the first epoch).
        train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(steps))
    rated = ({part: pairs.rated_held_out(getattr(split.rows, part), split.rows.train, cfg.positive_threshold)
              for part in ("validation", "test")} if pairwise_metrics_on(cfg) else {})
    with strategy.scope():  # variables (model and optimizer) are mirrored on every replica
        model = build_model(cfg, vocab, item_probabilities=probabilities, negatives=negatives,
                            targets_per_batch=targets_per_batch,
                            exclude_seen=exclude_seen)
        averaging = ({"use_ema": True, "ema_momentum": cfg.ema_momentum, "ema_overwrite_frequency": steps}
                     if cfg.ema_momentum else {})
        # Sparse steps on the item table touch only the rows a batch scores (a sampled catalog's few).
        model.compile(optimizer=LazyAdam(cfg.learning_rate, weight_decay=cfg.weight_decay or None,
                                         **averaging))

    tutorial = split.protocol == "random_80_20"
    ks = TUTORIAL_KS if tutorial else tuple(cfg.eval_ks)
    monitor = "recall@100" if tutorial else "ndcg@10" if 10 in ks else f"ndcg@{ks[0]}"
    if rated and not same_user_pairs(rated["validation"]):
        print(f"retrieval: no held-out user has both a liked and a disliked item, so pairwise_auc is "
              f"undefined; early stopping on {monitor}", flush=True)
    elif rated:
        monitor = "pairwise_auc"

    def evaluate(m: TwoTowerRetrieval, part: str, held: seq.HeldOut,
                 table: CooccurrenceTable | None = None) -> dict[str, float]:
        out = topk_metrics(ranks(m, held, cfg.max_history, table=table), ks)
        return {**out, **evaluate_pairwise(m, rated[part], cfg.max_history)} if rated else out

    run_dir = runs.create(cfg, "retrieval", chief=chief)
    print(f"retrieval: {data.name}, {len(catalog)} items, {len(split.train)} users, "
          f"{examples}, protocol={split.protocol}, features="
          f"{', '.join(f'{c.name} ({c.kind})' for c in vocab.spec.features) or 'none'}; "
          f"strategy: {distribution.describe(strategy)}", flush=True)
    for column, why in skipped.items():
        print(f"retrieval: feature column {column} not used: {why}", flush=True)

    validation = validation_sample(split.validation, cfg.validation_users, cfg.seed)
    if (repeats := validation.repeat_share()) >= 0.5 and any(len(e) for e in validation.exclude):
        validation = with_history(validation, False)  # else each epoch scores the targets it cannot reach
        print(f"retrieval: {repeats:.0%} of validation targets are items their user had before (repeat "
              "interactions): each epoch's validation ranks with the history kept", flush=True)
    if len(validation) < len(split.validation):
        print(f"retrieval: validation after each epoch on a seeded sample of {len(validation)} of "
              f"{len(split.validation)} held-out users (--validation-users); the test is exact over all",
              flush=True)
    patience = patience_epochs(cfg.patience, steps_per_epoch)
    evaluator = EpochEvaluator(lambda m: evaluate(m, "validation", validation), run_dir, monitor=monitor,
                               patience=patience, average_after_best=True)
    state = TrainingState.of_run(cfg, run_dir)
    initial = state.restore(model, evaluator, lambda: runs.build_retrieval(model, cfg.max_history, catalog),
                            cfg.epochs)
    start = time.perf_counter()
    repeated = bool(cfg.steps_per_epoch)
    model.fit(advance(train_ds, initial, steps, repeated=repeated), epochs=cfg.epochs, initial_epoch=initial,
              steps_per_epoch=steps if repeated else None,
              verbose=fit_verbosity(cfg), callbacks=[evaluator, state, tensorboard_callback(run_dir)])
    train_seconds = time.perf_counter() - start
    if evaluator.best_epoch is None:
        runs.save_checkpoint(model, run_dir)
    # The saved model is the average, not the best epoch: its own validation is what choices compare.
    saved_validation = (evaluate(model, "validation", validation) if evaluator.averaged_epochs
                        else evaluator.best_metrics)
    if evaluator.averaged_epochs:
        best = evaluator.best_epoch
        print(f"retrieval: saved the mean of epoch {best}'s weights and the {evaluator.averaged_epochs} "
              f"epochs after it: validation {monitor} {saved_validation[monitor]:.5f} (epoch {best} alone: "
              f"{evaluator.best_value:.5f})", flush=True)

    leave_out, by_rule = leaves_history_out(model, validation, cfg.max_history, ks,
                                            protocol_default=split.protocol == "leave_last_out")
    validation, test = with_history(validation, leave_out), with_history(split.test, leave_out)
    table = fit_cooccurrence(cfg, model, split, catalog, validation, monitor, ks, cells=EVAL_CELLS)
    metrics = evaluate(model, "test", test, table)
    popularity = popularity_metrics(split.train, catalog, test, ks)
    headline = f"ndcg@{10 if 10 in ks else ks[0]}"
    ratio = f", {metrics[headline] / popularity[headline]:.2f}x" if popularity[headline] > 0 else ""
    print(f"retrieval: test {headline} {metrics[headline]:.4f}; ranking by training popularity (the same "
          f"users and exclusions): {popularity[headline]:.4f}{ratio}", flush=True)
    fusion = {}
    if table is not None:
        fusion = {"cooccurrence_beta": table.beta, "cooccurrence_damping": table.damping,
                  "two_tower_test": evaluate(model, "test", test) if table.beta > 0 else metrics}
    runs.write_retrieval_files(run_dir, model, data, vocab, split.full, {**fusion,
        "protocol": split.protocol, "negatives": negatives_used, "monitor": monitor,
        "best_epoch": evaluator.best_epoch, "best_validation": evaluator.best_value,
        "epochs_averaged_after_best": evaluator.averaged_epochs, "saved_validation": saved_validation,
        "train_seconds": round(train_seconds, 2), "epochs_run": evaluator.epochs_run, "loss": cfg.loss,
        "exclude_seen": exclude_seen, "history_left_out": leave_out,
        "validation_by_history_rule": by_rule, "popularity_test": popularity,
        **({"training_triples": len(sampler), "liked_without_negative": sampler.dropped} if sampler else {}),
        **{f"pairwise_{part}": {"rows": len(r), "liked": int(r.liked.sum()), "pairs": same_user_pairs(r)}
           for part, r in rated.items()},
        "skipped_feature_columns": skipped,
        "item_feature_columns": [c.name for c in vocab.spec.group("item")],
        "user_feature_columns": [c.name for c in vocab.spec.group("user")]}, cooccurrence=table)
    finish_run(run_dir, metrics, chief=chief)
    return RunResult(metrics, model, split, run_dir)
