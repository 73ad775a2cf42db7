"""Short-range item co-occurrence ("sequential rules"), fused with the two-tower's scores.

Over the training sequences, ``T[a, b]`` counts item ``b`` coming ``j <= WINDOW`` items after item ``a``,
weighted ``AHEAD_DECAY ** (j - 1)``, and at ``BEHIND_WEIGHT`` times that when it comes before ``a``. A
damping ``alpha`` discounts items that occur everywhere: with ``n_b`` the occurrences of ``b``, each row
keeps its ``neighbors`` largest ``C[a, b] / n_b ** alpha``, normalized to sum 1. A history ``h``
(most recent last) scores item ``i``:

    r(h, i) = sum_{k = 0 .. RECENT - 1} RECENT_DECAY ** k * T[h_{-1-k}, i]

and the fused score is ``s(h, i) = tau <q, c(i)> + beta * log(r(h, i) + EPSILON)``, ``beta >= 0`` and
``alpha`` chosen on validation (``beta`` 0: the two-tower alone). The counts are exact where a ``D``-wide
dot product can only approximate a catalog-by-catalog table: items rated together in one sitting, or
watched one after the other, keep their link however rare they are.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sparse
import tensorflow as tf

WINDOW = 5
AHEAD_DECAY = 0.85
BEHIND_WEIGHT = 0.5
RECENT = 5
RECENT_DECAY = 0.7
EPSILON = 1e-3
NEIGHBORS = 200
BETAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # the weights validation chooses from
DAMPINGS = (0.0, 0.25, 0.5)  # the popularity dampings it chooses from, with the weight
PAIRS_PER_CHUNK = 1 << 22  # co-occurrence pairs counted at once: memory stays bounded on large logs


@dataclass
class CooccurrenceTable:
    """The ``M`` largest entries of each row of ``T``: ``items [C, M]`` (-1: none) and ``weights [C, M]``.

    Args:
      items: catalog positions of each item's neighbors, largest weight first.
      weights: their ``T[a, b]``.
      beta: the fusion weight (0: unused).
      damping: the popularity damping ``alpha`` the table was built with.
    """

    items: np.ndarray
    weights: np.ndarray
    beta: float = 0.0
    damping: float = 0.0
    _matrix: sparse.csr_matrix | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, sequences: Sequence[np.ndarray], num_items: int, neighbors: int = NEIGHBORS,
              damping: float = 0.0) -> "CooccurrenceTable":
        """The table of sequences of catalog positions (entries < 0, items outside the catalog, are skipped).

        Args:
          sequences: one int array per user, oldest first.
          num_items: ``C``.
          neighbors: ``M``, the entries kept per item.
          damping: ``alpha``.

        Returns:
          The table, ``beta`` 0.
        """
        return cls.of_counts(*count_pairs(sequences, num_items), damping=damping, neighbors=neighbors)

    @classmethod
    def of_counts(cls, counts: sparse.csr_matrix, occurrences: np.ndarray, *, damping: float = 0.0,
                  neighbors: int = NEIGHBORS) -> "CooccurrenceTable":
        """The table of :func:`count_pairs`' ``C`` and ``n``, damped by ``alpha`` = ``damping``."""
        if damping:
            counts = counts @ sparse.diags(np.maximum(occurrences, 1.0) ** -np.float32(damping))
        return cls(*_top_entries(sparse.csr_matrix(counts, dtype=np.float32), neighbors),
                   damping=float(damping))

    @classmethod
    def of_histories(cls, histories: Iterable[Sequence[str]], catalog: np.ndarray, beta: float,
                     damping: float = 0.0) -> "CooccurrenceTable":
        """The table of item-id histories (ids outside ``catalog`` skipped), with fusion weight ``beta``.

        Serving uses every user's full history, as the queries it answers read them.
        """
        index = pd.Index(np.asarray(catalog, dtype=object))
        table = cls.build([index.get_indexer(np.asarray(h, dtype=object)) for h in histories], len(catalog),
                          damping=damping)
        table.beta = float(beta)
        return table

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """``r(h, i)`` of each history (catalog positions, oldest first; < 0 skipped): ``[N, C]`` float32."""
        rows, cols, values = [], [], []
        for row, history in enumerate(histories):
            recent = np.asarray(history, np.int64)
            recent = recent[recent >= 0][::-1][:RECENT]
            rows.append(np.full(len(recent), row))
            cols.append(recent)
            values.append(RECENT_DECAY ** np.arange(len(recent), dtype=np.float32))
        recent = sparse.csr_matrix((np.concatenate([np.zeros(0, np.float32), *values]),
                                    (np.concatenate([np.zeros(0, np.int64), *rows]),
                                     np.concatenate([np.zeros(0, np.int64), *cols]))),
                                   shape=(len(histories), len(self.items)))
        return (recent @ self.matrix()).toarray().astype(np.float32)

    def matrix(self) -> sparse.csr_matrix:
        """The kept entries as a ``[C, C]`` sparse matrix (made once)."""
        if self._matrix is None:
            known, num_items = self.items >= 0, len(self.items)
            self._matrix = sparse.csr_matrix((self.weights[known], (np.nonzero(known)[0], self.items[known])),
                                             shape=(num_items, num_items))
        return self._matrix

    def fuse(self, logits: np.ndarray, rules: np.ndarray, beta: float | None = None) -> np.ndarray:
        """``logits + beta * log(rules + EPSILON)`` (``beta`` default: the table's)."""
        beta = self.beta if beta is None else beta
        return logits if beta == 0 else logits + np.float32(beta) * np.log(rules + np.float32(EPSILON))

    def to_bytes(self) -> bytes:
        """The table as an ``.npz`` file's bytes (:meth:`from_bytes` reads them)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, items=self.items, weights=self.weights, beta=np.float64(self.beta),
                            damping=np.float64(self.damping))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CooccurrenceTable":
        """The table :meth:`to_bytes` wrote."""
        with np.load(io.BytesIO(data)) as f:
            return cls(f["items"], f["weights"], float(f["beta"]),
                       float(f["damping"]) if "damping" in f.files else 0.0)


def count_pairs(sequences: Sequence[np.ndarray], num_items: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """``C [C, C]``, the weighted counts of each pair within ``WINDOW`` steps, and ``n [C]``, each item's
    occurrences, over sequences of catalog positions (entries < 0 skipped), counted in bounded chunks."""
    counts = sparse.csr_matrix((num_items, num_items), dtype=np.float32)
    occurrences = np.zeros(num_items, np.float32)
    rows, cols, values, pending = [], [], [], 0
    for position, sequence in enumerate(sequences):
        s = np.asarray(sequence, np.int32)
        s = s[s >= 0]
        np.add.at(occurrences, s, 1.0)
        for j in range(1, min(WINDOW, len(s) - 1) + 1):
            weight = np.full(len(s) - j, AHEAD_DECAY ** (j - 1), np.float32)
            rows += [s[:-j], s[j:]]
            cols += [s[j:], s[:-j]]
            values += [weight, BEHIND_WEIGHT * weight]
            pending += 2 * len(weight)
        if pending >= PAIRS_PER_CHUNK or (position == len(sequences) - 1 and pending):
            counts = counts + sparse.csr_matrix(
                (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                shape=(num_items, num_items))
            rows, cols, values, pending = [], [], [], 0
    return counts, occurrences


def _top_entries(counts: sparse.csr_matrix, neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    counts.sum_duplicates()
    width = max(1, min(neighbors, int(np.diff(counts.indptr).max(initial=0))))
    items = np.full((counts.shape[0], width), -1, np.int32)
    weights = np.zeros((counts.shape[0], width), np.float32)
    for row in np.flatnonzero(np.diff(counts.indptr)):
        lo, hi = counts.indptr[row], counts.indptr[row + 1]
        keep = np.argsort(-counts.data[lo:hi], kind="stable")[:width]
        items[row, :len(keep)] = counts.indices[lo:hi][keep]
        kept = counts.data[lo:hi][keep]
        weights[row, :len(keep)] = kept / kept.sum()
    return items, weights


class FusedTopK(tf.Module):
    """The top ``k`` of the fused scores, from the two-tower's top candidates and the history's neighbors.

    An item in neither set has ``r = 0`` and a two-tower score no higher than any of the ``depth`` it
    returned, so its fused score ranks below them all: the union holds the exact fused top ``depth``
    whenever the two-tower's is exact.

    Args:
      table: the co-occurrence table (``beta > 0``).
      item_vectors: ``[C, D]`` candidate vectors, catalog order (the two-tower scores of the neighbors).
      catalog: ``[C]`` item ids.
    """

    def __init__(self, table: CooccurrenceTable, item_vectors: np.ndarray, catalog: np.ndarray):
        super().__init__()
        self.beta = float(table.beta)
        self.neighbors = tf.constant(table.items)
        self.weights = tf.constant(table.weights)
        self.item_vectors = tf.constant(np.asarray(item_vectors, np.float32))
        self.catalog = tf.constant(np.asarray(catalog).astype(str))
        self.positions = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.catalog, tf.range(len(catalog), dtype=tf.int64)), -1)

    def __call__(self, queries: tf.Tensor, history: tf.Tensor, scores: tf.Tensor,
                 ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Fused ``(scores, ids)`` ``[B, depth + RECENT * M]``, best first, from the two-tower's.

        Args:
          queries: ``[B, D]`` scaled queries.
          history: ``[B, H]`` item ids, most recent last (``""`` and unknown ids skipped).
          scores: ``[B, depth]`` two-tower scores, best first (padding: the lowest float32).
          ids: ``[B, depth]`` their item ids (padding: ``""``).
        """
        known = self.positions.lookup(history)
        order = tf.argsort(tf.cast(known >= 0, tf.int32), axis=1, stable=True)  # known items last, in order
        recent = tf.gather(known, order, batch_dims=1)[:, -RECENT:][:, ::-1]  # [B, R] most recent first
        decay = tf.constant(RECENT_DECAY, tf.float32) ** tf.cast(tf.range(tf.shape(recent)[1]), tf.float32)
        valid = recent >= 0
        near = tf.gather(self.neighbors, tf.maximum(recent, 0))  # [B, R, M]
        decay *= tf.cast(valid, tf.float32)
        weight = tf.gather(self.weights, tf.maximum(recent, 0)) * decay[..., None]
        batch = tf.shape(history)[0]
        near = tf.reshape(tf.where(valid[..., None], tf.cast(near, tf.int64), -1), [batch, -1])
        weight = tf.reshape(weight, [batch, -1])
        # Candidates: the two-tower's, then the neighbors; each (row, item) scored once, at its first place.
        candidates = tf.concat([self.positions.lookup(ids), near], axis=1)
        rows = tf.broadcast_to(tf.range(tf.cast(batch, tf.int64))[:, None], tf.shape(candidates))
        key = rows * (tf.cast(tf.shape(self.catalog)[0], tf.int64) + 1) + candidates + 1
        flat_key = tf.reshape(key, [-1])
        unique, slot = tf.unique(flat_key)
        rule = tf.math.unsorted_segment_sum(
            tf.reshape(tf.concat([tf.zeros_like(scores), weight], axis=1), [-1]), slot, tf.shape(unique)[0])
        first = tf.math.unsorted_segment_min(tf.range(tf.shape(flat_key)[0]), slot, tf.shape(unique)[0])
        is_first = tf.reshape(tf.gather(first, slot) == tf.range(tf.shape(flat_key)[0]), tf.shape(key))
        neighbor_scores = tf.einsum("bd,bnd->bn", queries, tf.gather(self.item_vectors, tf.maximum(near, 0)))
        two_tower = tf.concat([scores, neighbor_scores], axis=1)
        rule = tf.reshape(tf.gather(rule, slot), tf.shape(key))
        fused = two_tower + self.beta * tf.math.log(rule + EPSILON)
        lowest = tf.constant(np.finfo(np.float32).min, tf.float32)
        fused = tf.where(tf.logical_and(is_first, candidates >= 0), fused, lowest)
        fused, top = tf.math.top_k(fused, k=tf.shape(fused)[1])
        items = tf.gather(self.catalog, tf.maximum(tf.gather(candidates, top, batch_dims=1), 0))
        return fused, tf.where(fused > lowest, items, "")
