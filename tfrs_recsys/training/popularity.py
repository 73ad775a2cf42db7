"""The popularity floor of retrieval: every item ranked by its training count, the same for every user.

A model that does not beat it has learned no more than what is popular. Its ranks follow
:func:`~tfrs_recsys.metrics.rank_of_target`'s rules, computed without a score matrix.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data import sequences as seq
from tfrs_recsys.metrics import topk_metrics


def popularity_ranks(counts: np.ndarray, target: np.ndarray, exclude: Sequence[np.ndarray]) -> np.ndarray:
    """0-based ranks of each ``target[i]`` when every item scores its training count, the same for every
    query, ranked as :func:`rank_of_target` ranks: ties against the target, excluded items skipped, an
    excluded target a miss. Without an ``[N, I]`` score matrix: ``rank_i = #{j : n_j >= n_t} - 1 -
    #{j excluded for i, j != t : n_j >= n_t}``.

    Args:
      counts: ``[I]`` each catalog item's training count.
      target: ``[N]`` the held-out item's catalog position per query.
      exclude: Per query, the catalog positions not to rank.

    Returns:
      ``[N]`` integer ranks.
    """
    counts = np.asarray(counts)
    at_least = len(counts) - np.searchsorted(np.sort(counts), counts[target], side="left")
    ranks = at_least - 1
    for i, skipped in enumerate(exclude):
        skipped = np.unique(np.asarray(skipped, dtype=np.int64))
        if target[i] in skipped:
            ranks[i] = len(counts)
        else:
            ranks[i] -= np.count_nonzero(counts[skipped] >= counts[target[i]])
    return ranks


def popularity_metrics(train: seq.Sequences, catalog: np.ndarray, held: seq.HeldOut,
                       ks: tuple[int, ...]) -> dict[str, float]:
    """The metrics of ranking every item by its count in ``train``, with ``held``'s exclusions: the floor a
    model must clear to have learned more than what is popular."""
    index = pd.Index(catalog)
    seen = [p[p >= 0] for p in seq.catalog_positions(train, catalog)]
    counts = np.bincount(np.concatenate(seen) if seen else np.zeros(0, np.int64), minlength=len(catalog))
    exclude = [p[p >= 0] for p in (index.get_indexer(np.asarray(e, dtype=object)) for e in held.exclude)]
    return topk_metrics(popularity_ranks(counts, index.get_indexer(held.targets), exclude), ks)
