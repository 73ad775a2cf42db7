"""How much of the exact top-k an approximate index finds, and the narrowest ScaNN search that keeps it.

An index is anything called as ``index(queries [B, D], k) -> (scores, ids) [B, k]``: TFRS's ``BruteForce``
(exact) or :class:`~tfrs_recsys.export.scann_index.ScaNNIndex`, whose padding has NaN scores.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import tensorflow as tf

from tfrs_recsys.export.scann_index import ScaNNIndex

TopKIndex = Callable  # index(queries [B, D], k) -> (scores, ids) [B, k], as the module docstring says


def top_k_ids(index: TopKIndex, queries: np.ndarray, k: int, batch_size: int = 256) -> list[set]:
    """The set of ids each query's top ``k`` holds (ScaNN's NaN padding left out).

    Args:
      index: The top-k layer.
      queries: Query embeddings ``[Q, D]``.
      k: Results per query.
      batch_size: Queries per call of ``index``.

    Returns:
      One set of ids (bytes) per query.
    """
    out = []
    for lo in range(0, len(queries), batch_size):
        scores, ids = index(tf.constant(queries[lo:lo + batch_size], tf.float32), k=k)
        out += [{i for s, i in zip(row_scores, row_ids) if np.isfinite(s)}
                for row_scores, row_ids in zip(scores.numpy(), ids.numpy())]
    return out


def set_recall(found: list[set], exact: list[set]) -> float:
    """``sum_q |found_q & exact_q| / sum_q |exact_q|`` (1.0 when there is nothing to find)."""
    total = sum(len(e) for e in exact)
    return sum(len(f & e) for f, e in zip(found, exact)) / total if total else 1.0


def top_k_recall(approximate: TopKIndex, exact: TopKIndex, queries: np.ndarray, k: int,
                 batch_size: int = 256) -> float:
    """The recall@k of ``approximate`` against ``exact`` on ``queries`` (:func:`set_recall`).

    Args:
      approximate: The index measured, e.g. ScaNN.
      exact: The reference, e.g. :func:`brute_force_index`.
      queries: Query embeddings ``[Q, D]``.
      k: Results per query.
      batch_size: Queries per call.

    Returns:
      The share of the exact top-k ids that ``approximate`` finds (its NaN padding never counts).
    """
    found = top_k_ids(approximate, queries, k, batch_size)
    return set_recall(found, top_k_ids(exact, queries, k, batch_size))


def narrow_scann_search(index: ScaNNIndex, queries: np.ndarray, exact: list[set], k: int, *,
                        tolerance: float = 0.002, floor: float = 0.0, step: float = 0.7,
                        narrow: bool = True) -> dict:
    """Search the fewest leaves that keep ScaNN's recall@k on ``queries`` as at the built width, or widen
    the search until it reaches ``floor`` where the built width falls short of it.

    A query's neighbours sit in a few of the tree's leaves; the other leaves searched cost time and
    find nothing (on clustered embeddings most of a default width can be such leaves), while on a small
    or unclustered catalog the built width can miss neighbours. Measures the built
    ``num_leaves_to_search`` ``w``. Below ``floor``, widens: ``ceil(w / step)``, ... up to every leaf, and
    keeps the first width that reaches ``floor`` (every leaf when none does). Otherwise, when ``narrow``,
    tries ``floor(w * step)``, ... down to 1, and stops at the first width whose recall@k drops below
    ``max(recall(w) - tolerance, floor)``; the narrowest width before it is kept. The kept width is set
    as ``index.leaves_to_search``, which the serving graph then uses.

    Args:
      index: A built ScaNN index; its ``leaves_to_search`` is set.
      queries: Query embeddings ``[Q, D]``.
      exact: Each query's exact top-k ids (:func:`top_k_ids` of brute force).
      k: Results per query.
      tolerance: Recall the narrowed search may lose against the built width's.
      floor: Recall it must keep in any case (and widening aims for).
      step: The factor between widths tried.
      narrow: Whether to try narrower widths (widening to ``floor`` is always done).

    Returns:
      ``{"leaves_to_search", "recall", "built_leaves_to_search", "tolerance", "tried"}``: the chosen
      width, its recall, the built width, ``tolerance`` and every width tried with its recall.
    """
    built = index.num_leaves_to_search
    index.leaves_to_search = None

    def measure(width: int) -> float:
        index.leaves_to_search = width
        tried[width] = set_recall(top_k_ids(index, queries, k), exact)
        return tried[width]

    tried = {built: set_recall(top_k_ids(index, queries, k), exact)}
    reference, chosen, width = tried[built], built, built
    if index.is_tree and reference < floor:
        # geometric steps, not the narrowest passing width: a recall measured just over the floor on
        # these queries can fall under it on others
        while width < index.num_leaves and tried[width] < floor:
            width = min(index.num_leaves, math.ceil(width / step))
            measure(width)
        chosen = width
    elif index.is_tree and narrow:
        while width > 1:
            width = max(1, int(width * step))
            if measure(width) < max(reference - tolerance, floor):
                break
            chosen = width
    index.leaves_to_search = chosen if chosen != built else None
    return {"leaves_to_search": chosen, "recall": tried[chosen], "built_leaves_to_search": built,
            "tolerance": tolerance, "tried": {str(w): round(r, 5) for w, r in tried.items()}}
