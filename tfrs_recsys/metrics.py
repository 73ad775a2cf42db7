"""Offline metrics in NumPy, defined once for training, evaluation and benchmarks. Per-group metrics (GAUC,
pairwise AUC, session NDCG) sort once and compute all the groups of a slice of rows at once.

Ranking of one held-out item (leave-last-out, full catalog):
    rank = number of non-excluded items scored strictly higher than the target (0-based)
    recall@k = 1[rank < k];  ndcg@k = 1[rank < k] / log2(rank + 2);  mrr@k = 1[rank < k] / (rank + 1)
Classification:
    auc = P(score_pos > score_neg) + 0.5 P(tie)  (Mann-Whitney with mid-ranks)
    gauc = sum_g n_g * auc_g / sum_g n_g over groups g holding both classes (impression-weighted)
    pairwise_auc = P(score_pos > score_neg) + 0.5 P(tie) over the (pos, neg) pairs of the same group
                 = sum_g P_g N_g auc_g / sum_g P_g N_g  (pair-weighted; P_g, N_g the group's class counts)
Against known probabilities (synthetic ground truth):
    expected_auc = E over Bernoulli(true_probs) labels of auc;  spearman = Pearson correlation of mid-ranks
Session NDCG of clicks and conversions: :func:`click_conversion_ndcg`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


def _floats(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def _scores(values: Sequence[float]) -> np.ndarray:
    """Scores to order by: float32 ones stay float32 (the same order, half the memory of a copy)."""
    values = np.asarray(values).ravel()
    return values if values.dtype in (np.float32, np.float64) else values.astype(np.float64)


def _rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their mean rank (scipy.stats.rankdata 'average')."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def _group_codes(groups: Sequence) -> tuple[np.ndarray, int]:
    """Each row's group as a code 0..G-1 (in order of first appearance), and G: a hash table, no sort."""
    codes, uniques = pd.factorize(np.asarray(groups).ravel(), use_na_sentinel=False)
    return codes, len(uniques)


_SLICE_ROWS = 1 << 18  # rows of whole groups computed at once: bounds the per-group metrics' scratch memory


def _group_slices(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Row indices of whole groups, about :data:`_SLICE_ROWS` rows a slice (a larger group alone), rows in
    input order within a group."""
    if codes.size <= _SLICE_ROWS:
        return [np.arange(codes.size)]
    ends = np.cumsum(np.bincount(codes, minlength=n_groups))
    cuts = np.unique(ends[np.searchsorted(ends, np.arange(_SLICE_ROWS, codes.size, _SLICE_ROWS))])
    return np.split(np.argsort(codes, kind="stable"), cuts[cuts < codes.size])


def _positions_in_group(sorted_codes: np.ndarray, n_groups: int) -> np.ndarray:
    """0-based position of each row within its group, for rows sorted group by group."""
    sizes = np.bincount(sorted_codes, minlength=n_groups)
    return np.arange(sorted_codes.size) - (np.cumsum(sizes) - sizes)[sorted_codes]


def auc(labels: Sequence[float], scores: Sequence[float]) -> float:
    """ROC AUC with ties counted as half (Mann-Whitney with mid-ranks).

    Args:
      labels: 0/1 label per row (a label above 0.5 is positive).
      scores: the score of each row.

    Returns:
      The AUC; NaN when only one class is present.

    Raises:
      ValueError: ``labels`` and ``scores`` differ in length.
    """
    y, s = _floats(labels) > 0.5, _scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: Sequence[float], probs: Sequence[float], eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps].

    Args:
      labels: 0/1 label per row.
      probs: predicted probability of a positive label per row.
      eps: the clipping margin.

    Returns:
      ``-mean(y log p + (1 - y) log(1 - p))``.
    """
    y, p = _floats(labels), np.clip(_floats(probs), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def gauc(labels: Sequence[float], scores: Sequence[float], groups: Sequence) -> tuple[float, int, int]:
    """Impression-weighted mean of per-group AUC: ``sum_g n_g auc_g / sum_g n_g``.

    Args:
      labels: 0/1 label per row.
      scores: the score of each row.
      groups: the group (e.g. user) of each row.

    Returns:
      ``(gauc, groups_used, groups_skipped)``. Groups whose rows are all one class have no AUC and
      are skipped; ``gauc`` is NaN if none remain.
    """
    aucs, positives, negatives, skipped = _group_aucs(labels, scores, groups)
    value = float(np.average(aucs, weights=positives + negatives)) if len(aucs) else float("nan")
    return value, len(aucs), skipped


def pairwise_auc(labels: Sequence[float], scores: Sequence[float],
                 groups: Sequence) -> tuple[float, int, int]:
    """Share of same-group (positive, negative) pairs the scores order correctly, ties counted half.

    Args:
      labels: 0/1 label per row.
      scores: the score of each row.
      groups: the group (e.g. user) of each row.

    Returns:
      ``(pairwise_auc, pairs, groups_used)``; groups holding one class form no pair, and
      ``pairwise_auc`` is NaN if no pair exists.

    Raises:
      ValueError: the three inputs differ in length.
    """
    if not np.size(labels) == np.size(scores) == np.size(groups):
        raise ValueError(f"labels, scores and groups differ in length: {np.size(labels)}, {np.size(scores)}, "
                         f"{np.size(groups)}")
    aucs, positives, negatives, _ = _group_aucs(labels, scores, groups)
    pairs = positives * negatives
    value = float(np.average(aucs, weights=pairs)) if len(aucs) else float("nan")
    return value, int(pairs.sum()), len(aucs)


def _group_aucs(labels: Sequence[float], scores: Sequence[float], groups: Sequence) -> tuple:
    """Of each group holding both classes: its AUC, positives and negatives; and the groups skipped.

    Every group of a slice at once, from one sort by group and score: a tie block (equal scores in one
    group) gives its rows its mean 1-based rank in the group, and a group's AUC is
    ``(R_pos - P (P + 1) / 2) / (P N)`` with ``R_pos`` the summed ranks of its ``P`` positives.
    """
    y, s = _floats(labels) > 0.5, _scores(scores)
    codes, n_groups = _group_codes(groups)
    rank_sums, positives, sizes = np.zeros(n_groups), np.zeros(n_groups), np.zeros(n_groups)
    for rows in _group_slices(codes, n_groups):
        ranked = rows[np.lexsort((s[rows], codes[rows]))]
        sorted_codes, sorted_scores = codes[ranked], s[ranked]
        block_starts = np.ones(ranked.size, dtype=bool)
        new_score = sorted_scores[1:] != sorted_scores[:-1]
        new_score &= ~(np.isnan(sorted_scores[1:]) & np.isnan(sorted_scores[:-1]))  # NaNs tie, as in auc()
        block_starts[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | new_score
        block = np.cumsum(block_starts) - 1
        first_rank = _positions_in_group(sorted_codes, n_groups)[block_starts] + 1.0
        mid_rank = (first_rank + (np.bincount(block) - 1) / 2.0)[block]
        positive = y[ranked]
        rank_sums += np.bincount(sorted_codes, weights=np.where(positive, mid_rank, 0.0), minlength=n_groups)
        positives += np.bincount(sorted_codes, weights=positive, minlength=n_groups)
        sizes += np.bincount(sorted_codes, minlength=n_groups)
    both = (positives > 0) & (positives < sizes)
    p, n = positives[both].astype(np.int64), (sizes - positives)[both].astype(np.int64)
    return (rank_sums[both] - p * (p + 1) / 2.0) / (p * n), p, n, int(n_groups - both.sum())


def dcg(gains: np.ndarray, k: int) -> float:
    """Discounted cumulative gain ``sum_{i <= k} (2^gain_i - 1) / log2(i + 1)`` (1-based ``i``).

    Args:
      gains: the gains in ranked order.
      k: the cutoff.

    Returns:
      The DCG@k.
    """
    gains = np.asarray(gains, dtype=np.float64)[:k]
    return float(np.sum((2.0 ** gains - 1.0) / np.log2(np.arange(2, len(gains) + 2))))


def session_ndcg(gains: Sequence[float], scores: Sequence[float], groups: Sequence,
                 k: int = 10) -> tuple[float, int, int]:
    """Mean NDCG@k over sessions, items ordered by score; tied items share their places.

    Rows whose scores tie take the mean of the discounts of the places they occupy (the expected DCG over
    every order of the tie; McSherry & Najork, ECIR 2008), so the value does not depend on the rows' order:
    ``DCG@k = sum_i (2^gain_i - 1) * mean(1 / log2(p + 2) for p in tie(i), p < k)``.

    Args:
      gains: graded relevance of each row, e.g. conversion=2 > click=1 > none=0.
      scores: the ranking score of each row.
      groups: the session of each row.
      k: the cutoff.

    Returns:
      ``(ndcg, sessions_used, sessions_skipped)``; sessions with no positive gain are skipped.
    """
    value, s = 2.0 ** _floats(gains) - 1.0, _scores(scores)
    codes, n_groups = _group_codes(groups)
    ideal, achieved = np.zeros(n_groups), np.zeros(n_groups)
    for rows in _group_slices(codes, n_groups):
        ideal += _group_dcg(value[rows], codes[rows], -value[rows], n_groups, k)
        achieved += _group_dcg(value[rows], codes[rows], -s[rows], n_groups, k)
    used = ~(ideal <= 0)  # a NaN gain makes its session's NDCG NaN rather than skipping it
    values = achieved[used] / ideal[used]
    mean = float(np.mean(values)) if values.size else float("nan")
    return mean, int(used.sum()), int(n_groups - used.sum())


def _group_dcg(value: np.ndarray, codes: np.ndarray, keys: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """Each group's DCG@k of the rows' ``2^rel - 1`` values, ranked by ascending ``keys``, ties sharing the
    mean discount of their places (:func:`session_ndcg`)."""
    order = np.lexsort((keys, codes))
    sorted_codes, sorted_keys = codes[order], keys[order]
    position = _positions_in_group(sorted_codes, n_groups)
    discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_keys[1:] != sorted_keys[:-1])
    tie = np.cumsum(starts) - 1
    shared = np.bincount(tie, weights=discount) / np.bincount(tie)
    return np.bincount(sorted_codes, weights=value[order] * shared[tie], minlength=n_groups)


NDCG_GAINS = {"click": 1.0, "conversion": 2.0}


def click_conversion_ndcg(click: Sequence[float], conversion: Sequence[float], p_ctr: Sequence[float],
                          p_ctcvr: Sequence[float], groups: Sequence, *, k: int = 10,
                          gains: Mapping[str, float] | None = None,
                          scores: Sequence[float] | None = None) -> tuple[float, int, int]:
    """Session NDCG@k of click and conversion gains, rows ranked by their expected gain.

    With gains ``g_click`` and ``g_conv`` (:data:`NDCG_GAINS` by default), row ``i`` has::

        rel_i   = g_conv if click_i = conversion_i = 1, g_click if only click_i = 1, else 0
        score_i = E[2^rel_i - 1] = (2^g_click - 1) (p_ctr_i - p_ctcvr_i) + (2^g_conv - 1) p_ctcvr_i

    DCG is linear in each row's ``2^rel - 1``, so ordering by ``score`` maximizes the expected DCG
    under the predicted probabilities. This is the one session NDCG of the rankers: training
    reports it and ``python -m tfrs_recsys.evaluate`` computes it from a predictions file.

    Args:
      click: 0/1 click label per row.
      conversion: 0/1 conversion label per row; a conversion without a click counts as none.
      p_ctr: predicted P(click) per row.
      p_ctcvr: predicted P(click and conversion) per row.
      groups: the session of each row.
      k: the cutoff.
      gains: ``{"click": g_click, "conversion": g_conv}``; a role left out has gain 0.
      scores: rank by these instead of the expected gain (``p_ctr`` and ``p_ctcvr`` are then unused).

    Returns:
      ``(ndcg, sessions_used, sessions_skipped)`` as :func:`session_ndcg`.
    """
    gains = NDCG_GAINS if gains is None else gains
    g_click, g_conv = gains.get("click", 0.0), gains.get("conversion", 0.0)
    click = np.asarray(click, dtype=np.float64) > 0.5
    converted = click & (np.asarray(conversion, dtype=np.float64) > 0.5)
    relevance = np.where(converted, g_conv, np.where(click, g_click, 0.0))
    if scores is None:
        p_ctr, p_ctcvr = np.asarray(p_ctr, dtype=np.float64), np.asarray(p_ctcvr, dtype=np.float64)
        scores = (2.0 ** g_click - 1.0) * (p_ctr - p_ctcvr) + (2.0 ** g_conv - 1.0) * p_ctcvr
    return session_ndcg(relevance, scores, groups, k=k)


def topk_metrics(ranks: Iterable[int], ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """recall@k, ndcg@k and mrr@k from the 0-based ranks of one held-out item per query.

    Args:
      ranks: the rank of each query's held-out item (:func:`rank_of_target`).
      ks: the cutoffs.

    Returns:
      ``{"recall@k": ..., "ndcg@k": ..., "mrr@k": ...}`` for each ``k``; NaN without ranks.
    """
    per_target = target_metrics(ranks, ks)
    return {name: float(v.mean()) if len(v) else float("nan") for name, v in per_target.items()}


def target_metrics(ranks: Iterable[int], ks: Sequence[int] = (10, 50)) -> dict[str, np.ndarray]:
    """Each query's own recall@k (a hit), ndcg@k (``1 / log2(rank + 2)`` if a hit) and mrr@k
    (``1 / (rank + 1)`` if a hit): :func:`topk_metrics` is their mean.

    Args:
      ranks: the rank of each query's held-out item.
      ks: the cutoffs.

    Returns:
      ``{"recall@k": [N], "ndcg@k": [N], "mrr@k": [N]}`` for each ``k``.
    """
    r = np.fromiter(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = r < k
        for name, value in (("recall", 1.0), ("ndcg", 1.0 / np.log2(r + 2.0)), ("mrr", 1.0 / (r + 1.0))):
            out[f"{name}@{k}"] = np.where(hit, value, 0.0)
    return out


def rank_of_target(scores: np.ndarray, target: np.ndarray,
                   exclude_mask: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of ``target[i]`` in row ``scores[i]`` among items not excluded.

    Ties count against the target (items with an equal score rank ahead), the pessimistic
    convention, so a constant model cannot look good. Excluded items never outrank it; an excluded target
    is never retrieved: its rank is the number of items, a miss at every cut-off.

    Args:
      scores: ``[N, I]`` scores of every item per query.
      target: ``[N]`` the held-out item's column per query.
      exclude_mask: ``[N, I]`` True for items not to rank (e.g. already seen), or None.

    Returns:
      ``[N]`` integer ranks.
    """
    scores = np.asarray(scores)  # compared with its own entries: no wider type needed
    rows = np.arange(scores.shape[0])
    target_scores = scores[rows, target]
    ahead = scores >= target_scores[:, None]
    ahead[rows, target] = False
    if exclude_mask is None:
        return ahead.sum(axis=1)
    ahead &= ~exclude_mask
    return np.where(exclude_mask[rows, target], scores.shape[1], ahead.sum(axis=1))


def dot_product_ranks(queries: np.ndarray, items: np.ndarray, targets: np.ndarray,
                      excluded: Sequence[np.ndarray] | None = None, *, cells: int = 1 << 24,
                      chunk: int = 1024) -> np.ndarray:
    """:func:`rank_of_target` of the scores ``s = queries @ items.T``, a block of items at a time.

    No ``[queries, items]`` array is made and the items are read once per ``chunk`` queries: each block
    of about ``cells / chunk`` items is scored, the items at or above each target's score are counted,
    and the target and the excluded items among them are taken back out. Scores within float32 rounding
    of the target's tie with it, and ties count against the target: item ``i`` is ahead of target ``t``
    for query ``q`` when

        s(q, i) >= s(q, t) - 4 u ||q|| max_j ||items[j]||,     u = 2^-24 (float32's unit roundoff),

    (``||q|| max_j ||items[j]||`` bounds every score), so that the outcome does not hang on how a matrix
    product happened to round equal vectors: a model that scores every item alike ranks each target last.
    A target among its query's excluded items ranks ``I``, as :func:`rank_of_target` ranks it.

    Args:
      queries: ``[N, d]`` query vectors.
      items: ``[I, d]`` item vectors.
      targets: ``[N]`` each query's held-out item (a row of ``items``).
      excluded: per query, the rows of ``items`` not to rank (e.g. its history), or None.
      cells: scores computed at once.
      chunk: queries ranked at once.

    Returns:
      ``[N]`` integer ranks (ties count against the target).
    """
    scale = 4 * 2.0 ** -24 * float(np.linalg.norm(items, axis=1).max(initial=0.0))
    out = [np.zeros(0, np.int64)]
    for lo in range(0, len(queries), chunk):
        part = slice(lo, lo + chunk)
        tolerance = scale * np.linalg.norm(queries[part], axis=1)
        out.append(_chunk_ranks(queries[part], items, np.asarray(targets[part], np.int64),
                                None if excluded is None else excluded[part], tolerance, cells))
    return np.concatenate(out)


def _chunk_ranks(queries: np.ndarray, items: np.ndarray, targets: np.ndarray,
                 excluded: Sequence[np.ndarray] | None, tolerance: np.ndarray, cells: int) -> np.ndarray:
    n = len(queries)
    # (query, item) pairs never counted: each query's target and its excluded items, once each.
    target_pairs = np.arange(n) * len(items) + targets
    excluded_pairs = np.zeros(0, np.int64)
    if excluded is not None:
        excluded_pairs = np.concatenate([excluded_pairs, *(row * len(items) + np.asarray(e, np.int64)
                                                           for row, e in enumerate(excluded))])
    skip = np.unique(np.concatenate([target_pairs, excluded_pairs]))
    skip_rows, skip_items = skip // len(items), skip % len(items)
    threshold = (np.einsum("ij,ij->i", queries, items[targets]) - tolerance)[:, None]
    counts = np.zeros(n, np.int64)
    block = max(1, cells // max(n, 1))
    for lo in range(0, len(items), block):
        scores = queries @ items[lo:lo + block].T
        counts += np.count_nonzero(scores >= threshold, axis=1)
        inside = (skip_items >= lo) & (skip_items < lo + block)
        r, c = skip_rows[inside], skip_items[inside] - lo
        counts -= np.bincount(r, weights=scores[r, c] >= threshold[r, 0], minlength=n).astype(np.int64)
    if len(excluded_pairs):
        counts[np.isin(target_pairs, excluded_pairs)] = len(items)
    return counts


def expected_auc(true_probs: Sequence[float], scores: Sequence[float]) -> float:
    """AUC of ``scores`` against Bernoulli(``true_probs``) labels, in expectation over the draws.

    ``sum_{i != j} t_i (1 - t_j) (1[s_i > s_j] + 1/2 1[s_i = s_j]) / sum_{i != j} t_i (1 - t_j)``:
    each pair is weighted by the probability that i is the positive and j the negative. Sorting
    makes it O(n log n).

    Args:
      true_probs: each row's true probability of a positive label.
      scores: each row's score.

    Returns:
      The expected AUC; NaN when no pair can have different labels.
    """
    t, s = _floats(true_probs), _floats(scores)
    if t.shape != s.shape:
        raise ValueError(f"true_probs and scores differ in length: {t.size} vs {s.size}")
    neg = 1.0 - t
    _, tie_group = np.unique(s, return_inverse=True)
    neg_per_group = np.bincount(tie_group, weights=neg)
    neg_below = np.concatenate(([0.0], np.cumsum(neg_per_group)[:-1]))[tie_group]
    neg_tied_others = neg_per_group[tie_group] - neg
    numerator = np.sum(t * (neg_below + 0.5 * neg_tied_others))
    denominator = np.sum(t * (neg.sum() - neg))
    return float(numerator / denominator) if denominator > 0 else float("nan")


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation: the Pearson correlation of the mid-ranks.

    Args:
      a: one sequence of values.
      b: another, of the same length.

    Returns:
      The correlation; NaN when either side is constant.
    """
    ra, rb = _rankdata(_floats(a)), _rankdata(_floats(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
