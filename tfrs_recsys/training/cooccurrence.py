"""The co-occurrence fusion of a trained retrieval model: its table, its weight, its exact ranks.

:mod:`tfrs_recsys.models.cooccurrence` defines the table and the fused score; this module builds the
table of a run's training sequences, chooses its damping and weight on validation and ranks held-out
targets by it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.config import RetrievalConfig
from tfrs_recsys.data import sequences as seq
from tfrs_recsys.metrics import rank_of_target, target_metrics
from tfrs_recsys.models.cooccurrence import BETAS, DAMPINGS, CooccurrenceTable, count_pairs
from tfrs_recsys.models.retrieval import TwoTowerRetrieval, query_vectors


def fused_ranks(model: TwoTowerRetrieval, held: seq.HeldOut, max_len: int, table: CooccurrenceTable,
                betas: tuple[float, ...], *, cells: int) -> dict[float, np.ndarray]:
    """The ranks of ``training.retrieval.ranks`` under the fused scores of each of ``betas`` (ties count
    against the target), ``cells`` scores at a time.

    Args:
      model: the trained model.
      held: the targets and their query histories.
      max_len: the history width.
      table: the co-occurrence table.
      betas: the fusion weights to rank by.

    Returns:
      ``{beta: int64 [len(held)] ranks}``.
    """
    return fused_ranks_of_tables(model, held, max_len, [table], betas, cells=cells)[0]


def fused_ranks_of_tables(model: TwoTowerRetrieval, held: seq.HeldOut, max_len: int,
                          tables: Sequence[CooccurrenceTable], betas: tuple[float, ...], *,
                          cells: int) -> list[dict[float, np.ndarray]]:
    """:func:`fused_ranks` of each of ``tables``, the two-tower's scores computed once."""
    catalog = model.catalog_ids
    index = pd.Index(catalog)
    candidates = model.candidate_embeddings().numpy()
    out = [{beta: [np.zeros(0, np.int64)] for beta in betas} for _ in tables]
    step = max(1, cells // max(len(catalog), 1))
    for lo in range(0, len(held), step):
        part = slice(lo, lo + step)
        logits = query_vectors(model, held.user_ids[part], held.histories[part], max_len) @ candidates.T
        histories = [index.get_indexer(np.asarray(h, dtype=object)) for h in held.histories[part]]
        exclude = np.zeros(logits.shape, dtype=bool)
        for row, items in enumerate(held.exclude[part]):
            found = index.get_indexer(np.asarray(items, dtype=object))
            exclude[row, found[found >= 0]] = True
        targets = index.get_indexer(np.asarray(held.targets[part], dtype=object))
        alone = rank_of_target(logits, targets, exclude) if 0 in betas else None  # beta 0: any table's
        for table, ranks in zip(tables, out):
            rules = table.scores(histories)
            for beta in betas:
                ranks[beta].append(alone if beta == 0 else
                                   rank_of_target(table.fuse(logits, rules, beta), targets, exclude))
    return [{beta: np.concatenate(parts) for beta, parts in ranks.items()} for ranks in out]


def largest_weight_within_one_se(values: dict[tuple[int, float], np.ndarray]) -> tuple[int, float]:
    """The ``(table, weight)`` of largest weight (then smallest table index) whose mean is within one
    standard error of the best mean's, the error of the paired per-target differences.

    Args:
      values: ``{(table index, weight): [N] per-target metric}``, the same targets in each.

    Returns:
      The chosen key.
    """
    best = max(values, key=lambda pair: values[pair].mean())  # ties: the first, smallest table and weight
    close = [best]  # with fewer than 2 targets there is no standard error: the best alone
    for pair, v in values.items():
        gap = v - values[best]
        if len(gap) >= 2 and gap.mean() >= -gap.std(ddof=1) / np.sqrt(len(gap)):
            close.append(pair)
    return max(close, key=lambda pair: (pair[1], -pair[0]))


def fit_cooccurrence(cfg: RetrievalConfig, model: TwoTowerRetrieval, split: seq.SequenceSplit,
                     catalog: np.ndarray, validation: seq.HeldOut, monitor: str,
                     ks: tuple[int, ...], *, cells: int) -> CooccurrenceTable | None:
    """The co-occurrence table of the training sequences, its damping and ``beta`` chosen from ``DAMPINGS``
    and ``BETAS`` on validation: the largest weight whose validation ``monitor`` is within one standard
    error of the best pair's (paired over the validation targets; then the smallest damping).

    The one-standard-error rule leans toward the counts on purpose: the two-tower's validation score is
    flattered (early stopping picked its epoch on these very targets, and its user embeddings trained on
    the sequences they directly follow), the counts' is not, so of the weights validation cannot tell
    apart the one trusting the counts most is taken.

    Args:
      cfg: the run's config (``cooccurrence`` on, the softmax loss, ``leave_last_out``, a catalog the full
        softmax scores; else None).
      model: the trained model, with its saved weights.
      split: the split.
      catalog: the item ids.
      validation: the validation targets.
      monitor: the metric that chooses.
      ks: the cut-offs of the metrics.
      cells: scores computed at once.

    Returns:
      The table, or None.
    """
    if not cfg.cooccurrence:
        return None
    why = ("it needs the softmax loss" if cfg.loss != "softmax" else
           "it needs the leave_last_out protocol" if split.protocol != "leave_last_out" else
           f"the catalog is larger than --full-softmax-max-items ({cfg.full_softmax_max_items})"
           if len(catalog) > cfg.full_softmax_max_items else
           "no validation targets to choose its weight" if not len(validation) else "")
    if why:
        print(f"retrieval: no co-occurrence fusion: {why}", flush=True)
        return None
    counts = count_pairs(seq.catalog_positions(split.train, catalog), len(catalog))
    tables = [CooccurrenceTable.of_counts(*counts, damping=damping) for damping in DAMPINGS]
    by_table = fused_ranks_of_tables(model, validation, cfg.max_history, tables, BETAS, cells=cells)
    values = {(i, beta): target_metrics(ranks, ks)[monitor]
              for i, by_beta in enumerate(by_table) for beta, ranks in by_beta.items()}
    scores = {pair: float(v.mean()) for pair, v in values.items()}
    best = max(scores, key=scores.get)
    chosen, beta = largest_weight_within_one_se(values)
    table = tables[chosen]
    table.beta = beta
    by_damping = "; ".join(f"damping {t.damping}: " + ", ".join(f"weight {b} {scores[i, b]:.4f}"
                                                                for b in BETAS) for i, t in enumerate(tables))
    print(f"retrieval: co-occurrence fusion weight {table.beta}, damping {table.damping} (validation "
          f"{monitor} {scores[chosen, beta]:.4f}): the largest weight within one standard error of the best, "
          f"weight {best[1]}, damping {tables[best[0]].damping} ({scores[best]:.4f}); all: {by_damping}",
          flush=True)
    return table
