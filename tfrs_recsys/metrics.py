"""Offline metrics in NumPy, defined once for training, evaluation and benchmarks (DESIGN §5).

Ranking of one held-out item (leave-last-out, full catalog):
    rank = number of non-excluded items scored strictly higher than the target (0-based)
    recall@k = 1[rank < k];  ndcg@k = 1[rank < k] / log2(rank + 2);  mrr@k = 1[rank < k] / (rank + 1)
Classification:
    auc = P(score_pos > score_neg) + 0.5 P(tie)  (Mann-Whitney with mid-ranks)
    gauc = sum_g n_g * auc_g / sum_g n_g over groups g holding both classes (impression-weighted)
    pairwise_auc = P(score_pos > score_neg) + 0.5 P(tie) over the (pos, neg) pairs of the same group
                 = sum_g P_g N_g auc_g / sum_g P_g N_g  (pair-weighted; P_g, N_g the group's class counts)
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their mean rank (scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    boundaries = np.concatenate(([True], sorted_x[1:] != sorted_x[:-1], [True]))
    idx = np.flatnonzero(boundaries)
    ranks_sorted = np.empty(len(x), dtype=np.float64)
    for start, end in zip(idx[:-1], idx[1:]):
        ranks_sorted[start:end] = 0.5 * (start + end - 1) + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def auc(labels: Sequence[float], scores: Sequence[float]) -> float:
    """ROC AUC with ties counted as half; NaN when only one class is present."""
    y = np.asarray(labels, dtype=np.float64).ravel() > 0.5
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: Sequence[float], probs: Sequence[float], eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def gauc(labels: Sequence[float], scores: Sequence[float], groups: Sequence) -> tuple[float, int, int]:
    """Impression-weighted mean of per-group AUC. Returns (gauc, groups_used, groups_skipped).

    Groups whose impressions are all one class have no AUC and are skipped; NaN if none remain.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    total, weight, used, skipped = 0.0, 0, 0, 0
    for idx in np.split(order, bounds):
        value = auc(y[idx], s[idx])
        if np.isnan(value):
            skipped += 1
            continue
        total += value * len(idx)
        weight += len(idx)
        used += 1
    return (total / weight if weight else float("nan")), used, skipped


def pairwise_auc(labels: Sequence[float], scores: Sequence[float], groups: Sequence) -> tuple[float, int, int]:
    """Share of same-group (positive, negative) pairs the scores order correctly, ties counted half.

    Returns (pairwise_auc, pairs, groups_used); groups holding one class form no pair. NaN if no pair exists.
    """
    y = np.asarray(labels, dtype=np.float64).ravel() > 0.5
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not y.shape == s.shape == g.shape:
        raise ValueError(f"labels, scores and groups differ in length: {y.shape[0]}, {s.shape[0]}, {g.shape[0]}")
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    correct, pairs, used = 0.0, 0, 0
    for idx in np.split(order, bounds):
        n_pos = int(y[idx].sum())
        n_pairs = n_pos * (len(idx) - n_pos)
        if n_pairs == 0:
            continue
        correct += auc(y[idx], s[idx]) * n_pairs
        pairs += n_pairs
        used += 1
    return (correct / pairs if pairs else float("nan")), pairs, used


def dcg(gains: np.ndarray, k: int) -> float:
    gains = np.asarray(gains, dtype=np.float64)[:k]
    return float(np.sum((2.0 ** gains - 1.0) / np.log2(np.arange(2, len(gains) + 2))))


def session_ndcg(gains: Sequence[float], scores: Sequence[float], groups: Sequence, k: int = 10) -> tuple[float, int, int]:
    """Mean NDCG@k over sessions, items ordered by score (ties broken by input order).

    gains are graded relevance, e.g. conversion=2 > click=1 > none=0 (Expedia: booking=5, click=1).
    Sessions with no positive gain are skipped. Returns (ndcg, sessions_used, sessions_skipped).
    """
    y = np.asarray(gains, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    values, skipped = [], 0
    for idx in np.split(order, bounds):
        ideal = dcg(np.sort(y[idx])[::-1], k)
        if ideal <= 0:
            skipped += 1
            continue
        ranked = idx[np.argsort(-s[idx], kind="mergesort")]
        values.append(dcg(y[ranked], k) / ideal)
    return (float(np.mean(values)) if values else float("nan")), len(values), skipped


def topk_metrics(ranks: Iterable[int], ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """recall@k, ndcg@k and mrr@k from 0-based ranks of one held-out item per query."""
    r = np.asarray(list(ranks) if not isinstance(ranks, np.ndarray) else ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"recall@{k}"] = float(hit.mean()) if len(r) else float("nan")
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0).mean()) if len(r) else float("nan")
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (r + 1.0), 0.0).mean()) if len(r) else float("nan")
    return out


def rank_of_target(scores: np.ndarray, target: np.ndarray, exclude_mask: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of ``target[i]`` in row ``scores[i]`` among items not excluded.

    Ties count against the target (items with an equal score rank ahead), the pessimistic
    convention, so a constant model cannot look good. Excluded items never outrank it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(scores.shape[0])
    target_scores = scores[rows, target]
    ahead = scores >= target_scores[:, None]
    ahead[rows, target] = False
    if exclude_mask is not None:
        ahead &= ~exclude_mask
    return ahead.sum(axis=1)
