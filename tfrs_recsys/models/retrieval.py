"""Two-tower retrieval model: a query tower, an item tower and a softmax over candidates.

Score of item ``i`` for query ``q`` (``similarity``): ``dot`` (the softmax's default) is
``s(q, i) = <q, c(i)>`` with unnormalized towers, so an item's norm can carry how often it is the
answer (its popularity), as SASRec's scores do; ``cosine`` is ``s(q, i) = tau * <q, c(i)>`` with both
vectors L2-normalized and ``tau = exp(w)`` a learnable inverse temperature (cosines live in [-1, 1];
``tau`` lets the softmax become as sharp as the data wants). Either way serving scores are the dot
product of the scaled query ``tau * q`` (``tau`` = 1 under ``dot``) and the item vectors.

Loss, per training query ``q`` with next item ``i+`` and candidates ``C``:

    L = -s(q, i+) + log sum_{j in C} exp(s(q, j) - log Q(j))

* ``full``: ``C`` = the whole catalog, no correction (``Q`` uniform): exact softmax
  cross-entropy, the best choice while the catalog fits in one matmul.
* ``in_batch``: ``C`` = the positives of the batch; ``sampled``: those plus ``num_sampled``
  items drawn from the training item distribution. Both sample candidates in proportion
  to item frequency, so logits are corrected by ``- log Q(j)`` (logQ correction, Yi et al.
  2019), candidates equal to the positive are removed (accidental hits), and optionally
  only the hardest negatives are kept. This is ``tfrs.tasks.Retrieval``.
* ``auto``: ``full`` up to ``full_softmax_max_items`` items, ``sampled`` above.

Losses are means over training queries (TFRS' Retrieval defaults to a sum, which would
scale the gradient with the batch). With ``targets_per_batch`` set, a batch's loss is instead
its sum divided by that constant, so every target weighs the same whichever batch it is in
(batches of similar-length histories hold very different numbers of targets). The tasks return
per-target losses and :meth:`~tfrs_recsys.models.base.RecsysModel.global_loss` reduces them, so
that the mean is over the GLOBAL batch when training is distributed (``tf.distribute``).

Distributed training and in-batch negatives: with ``R`` replicas, each replica computes the loss of
its local batch of ``global_batch / R`` windows, and the candidates ``C`` of ``in_batch`` (and the
in-batch part of ``sampled``) are the positives of that LOCAL batch only: every softmax sees
``1/R`` as many in-batch negatives as one process on the whole batch would (``sampled`` adds the
same ``num_sampled`` items on every replica, drawn independently). The logQ correction still
applies unchanged: a local batch is a uniform slice of the global one, so a candidate's
probability of appearing as an in-batch negative is still proportional to ``Q(j)``, which only
the constant ``log`` of the batch size would change, and that cancels in the softmax. ``full``
is unaffected (every replica scores the whole catalog).

With ``loss="bpr"`` or ``"triplet"`` the model trains on (user, liked item ``i+``, disliked item
``i-``) triples instead, through :class:`~tfrs_recsys.models.pairwise.PairwiseTask` on the same
scores ``s(u, i) = tau * <q(u), c(i)>`` (``q`` after the last history item when the Transformer is
on): BPR ``-log sigmoid(s(u, i+) - s(u, i-))``, triplet ``max(0, margin - s(u, i+) + s(u, i-))``.
For the triplet loss ``tau`` stays at its initial value: a learned scale would meet any margin by
growing. Either way serving scores keep their form, so exports are unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_recsys.config import NEGATIVES
from tfrs_recsys.data import sequences as seq
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.models.base import RecsysModel
from tfrs_recsys.models.pairwise import PairwiseTask
from tfrs_recsys.models.towers import FIRST_KNOWN_INDEX, ItemEncoder, ItemTower, QueryTower, SequenceEncoder


def resolve_negatives(negatives: str, num_items: int, full_softmax_max_items: int) -> str:
    """The negatives of a run: ``auto`` -> ``full`` up to ``full_softmax_max_items`` items, ``sampled`` above.

    Args:
      negatives: the config value (:data:`tfrs_recsys.config.NEGATIVES`).
      num_items: the catalog size.
      full_softmax_max_items: the largest catalog ``auto`` scores in full.

    Returns:
      ``full``, ``in_batch`` or ``sampled``.
    """
    if negatives != "auto":
        return negatives
    return "full" if num_items <= full_softmax_max_items else "sampled"


def resolve_similarity(similarity: str, loss: str) -> str:
    """The score of a run: ``auto`` -> ``dot`` for the softmax, ``cosine`` for a pairwise loss.

    Args:
      similarity: the config value (:data:`tfrs_recsys.config.SIMILARITIES`).
      loss: the config's loss; a triplet margin is in score units, which cosines keep bounded.

    Returns:
      ``dot`` or ``cosine``.
    """
    if similarity != "auto":
        return similarity
    return "dot" if loss == "softmax" else "cosine"


class InverseTemperature(tf.keras.layers.Layer):
    """``x * tau`` with ``tau = exp(w)``, ``w`` learned from ``log(initial)``, ``tau`` capped at ``maximum``.

    The cap clips ``w`` itself after each update: capping ``exp(w)`` in the forward pass instead
    would zero the gradient once ``w`` overshoots, and ``tau`` could never come down again.

    Args:
      initial: the initial ``tau``.
      maximum: the largest ``tau``.
    """

    def __init__(self, initial: float = 10.0, maximum: float = 100.0, **kwargs):
        super().__init__(**kwargs)
        self.maximum = float(maximum)
        self.log_tau = self.add_weight(name="log_inverse_temperature", shape=(),
                                       initializer=tf.keras.initializers.Constant(math.log(initial)),
                                       constraint=lambda w: tf.minimum(w, math.log(self.maximum)))

    @property
    def value(self) -> tf.Tensor:
        return tf.minimum(tf.exp(self.log_tau), self.maximum)  # the minimum only matters for old checkpoints

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x * self.value


class ScaledQuery(tf.keras.Model):
    """``tau * q(features)``, ``[B, D]``: the query tower after its last item, with the learned temperature.

    Serving scores are then the model's logits ``tau * <q, c(i)>`` against normalized item vectors.

    Args:
      query_tower: the trained :class:`~tfrs_recsys.models.towers.QueryTower`.
      temperature: the trained :class:`InverseTemperature`.
    """

    def __init__(self, query_tower: QueryTower, temperature: InverseTemperature, **kwargs):
        super().__init__(**kwargs)
        self.query_tower = query_tower
        self.temperature = temperature

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.temperature(self.query_tower(features, training=training))


class CatalogSoftmax(tf.keras.layers.Layer, tfrs.tasks.base.Task):
    """Full softmax cross-entropy over every candidate, per query: ``-log softmax(q_n C^T)[label_n]``.

    With an ``excluded`` mask, candidate ``j`` leaves query ``n``'s softmax where it is True (its logit
    becomes ``-1e9``): ``L_n = -s(q_n, i+) + log sum_{j not excluded} exp(s(q_n, j))``.
    """

    def call(self, query_embeddings: tf.Tensor, candidate_embeddings: tf.Tensor, labels: tf.Tensor,
             excluded: tf.Tensor | None = None) -> tf.Tensor:
        """Per-query losses ``[N]`` of queries ``[N, D]`` against candidates ``[C, D]``.

        Args:
          query_embeddings: ``[N, D]``.
          candidate_embeddings: ``[C, D]``.
          labels: ``[N]`` candidate positions.
          excluded: ``[N, C]`` bool, never True at a query's label.

        Returns:
          ``[N]`` losses.
        """
        logits = tf.matmul(query_embeddings, candidate_embeddings, transpose_b=True)
        if excluded is not None:
            logits = tf.where(excluded, tf.constant(-1e9, logits.dtype), logits)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def seen_mask(history_index: tf.Tensor, valid: tf.Tensor, target_pos: tf.Tensor, num_items: int,
              seen_before: tf.Tensor | None = None) -> tf.Tensor:
    """``[N, C]``: True at every item a training query has seen, except its own target.

    The query at window position ``t`` has seen ``history[:t + 1]`` and, with ``seen_before``, every
    item of its sequence before the window. Queries are numbered in the row-major order of the
    ``valid`` positions (``tf.boolean_mask``).

    Args:
      history_index: ``[B, L]`` lookup indices of the windows' histories (right-aligned, as the targets).
      valid: ``[B, L]`` True where a position has a target.
      target_pos: ``[N]`` catalog positions of the valid positions' targets.
      num_items: ``C``, the catalog size.
      seen_before: ``[B, E]`` catalog position + 1 of the items before each window (0: padding).

    Returns:
      The mask for :class:`CatalogSoftmax`.
    """
    length = tf.shape(history_index)[1]
    causal = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)  # [t, s]: s <= t
    pairs = tf.logical_and(tf.logical_and(causal[None], (history_index >= FIRST_KNOWN_INDEX)[:, None, :]),
                           valid[:, :, None])
    row = tf.reshape(tf.cumsum(tf.cast(tf.reshape(valid, [-1]), tf.int64)) - 1, tf.shape(valid))
    where = tf.where(pairs)  # (b, t, s)
    items = tf.cast(tf.gather_nd(history_index, tf.stack([where[:, 0], where[:, 2]], axis=1)), tf.int64)
    in_window = tf.stack([tf.gather_nd(row, where[:, :2]), items - FIRST_KNOWN_INDEX], axis=1)
    queries = tf.shape(target_pos, out_type=tf.int64)[0]
    if seen_before is None:
        mask = tf.zeros(tf.stack([queries, num_items]), tf.bool)
    else:
        earlier = tf.where(seen_before > 0)  # (b, e)
        index = tf.stack([earlier[:, 0], tf.cast(tf.gather_nd(seen_before, earlier), tf.int64) - 1], axis=1)
        windows = tf.scatter_nd(index, tf.ones_like(index[:, 0], tf.int32),
                                tf.stack([tf.shape(valid, out_type=tf.int64)[0], num_items])) > 0
        mask = tf.gather(windows, tf.where(valid)[:, 0])
    mask = tf.tensor_scatter_nd_update(mask, in_window, tf.ones_like(in_window[:, 0], tf.bool))
    labels = tf.stack([tf.range(queries), tf.cast(target_pos, tf.int64)], axis=1)
    return tf.tensor_scatter_nd_update(mask, labels, tf.zeros_like(labels[:, 0], tf.bool))


def sampled_retrieval_task(*, remove_accidental_hits: bool = True,
                           hard_negatives: int = 0) -> tfrs.tasks.Retrieval:
    """TFRS' Retrieval task returning the softmax cross-entropy of each query, ``[N]`` (not a batch sum).

    Args:
      remove_accidental_hits: mask candidates equal to a query's positive.
      hard_negatives: keep only this many highest-scoring negatives per query (0: all).

    Returns:
      A ``tfrs.tasks.Retrieval``.
    """
    loss = tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")
    return tfrs.tasks.Retrieval(loss=loss, remove_accidental_hits=remove_accidental_hits,
                                num_hard_negatives=hard_negatives or None)


class TwoTowerRetrieval(RecsysModel):
    """``compute_loss`` for features ``{"user_id" [B], "history" [B, L], "targets" [B, L]}`` (softmax), or
    ``{"user_id" [B], "history" [B, L], "positive" [B], "negative" [B]}`` with a pairwise ``loss``.

    ``targets[b, t]`` is the item after ``history[b, :t+1]`` (``""``: no target there), so one
    forward pass trains every position (all-positions mode) or only the last (prefix mode).
    ``catalog`` lists the candidate ids in the order of the item lookup's vocabulary;
    ``item_probabilities`` (aligned with it) is ``Q`` for the logQ correction and the
    distribution sampled negatives are drawn from.

    Args:
      query_tower: the :class:`~tfrs_recsys.models.towers.QueryTower`.
      item_tower: the :class:`~tfrs_recsys.models.towers.ItemTower`.
      catalog: the candidate item ids.
      negatives: ``full``, ``in_batch`` or ``sampled`` (:func:`resolve_negatives`).
      item_probabilities: ``Q``, aligned with ``catalog``; uniform when None.
      num_sampled: negatives drawn per batch with ``sampled``.
      logq_correction: subtract ``log Q(j)`` from sampled and in-batch logits.
      remove_accidental_hits: mask candidates equal to the positive.
      hard_negatives: keep only this many hardest negatives (0: all).
      temperature: the initial inverse temperature ``tau``; None: ``tau`` = 1, not learned (dot-product
        scores of unnormalized towers, whose norms are the scale).
      max_temperature: its cap.
      targets_per_batch: divide a batch's loss sum by this instead of its number of targets.
      exclude_seen: with ``full`` negatives, leave the items of each target's history out of its softmax
        (:func:`seen_mask`; with ``seen_before`` in the features, also those before its window): they are
        never candidates when ranking excludes the history.
      loss: ``softmax``, ``bpr`` or ``triplet``.
      margin: the triplet loss's margin, in score units.

    Raises:
      ValueError: unresolved negatives, or logQ correction without probabilities of the right shape.
    """

    def __init__(self, query_tower: QueryTower, item_tower: ItemTower, catalog: np.ndarray, *,
                 negatives: str = "full", item_probabilities: np.ndarray | None = None,
                 num_sampled: int = 1024, logq_correction: bool = True, remove_accidental_hits: bool = True,
                 hard_negatives: int = 0, temperature: float | None = 10.0, max_temperature: float = 100.0,
                 targets_per_batch: float | None = None, exclude_seen: bool = False, loss: str = "softmax",
                 margin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if negatives not in NEGATIVES[1:]:
            raise ValueError(f"negatives must be resolved to one of {NEGATIVES[1:]}, got {negatives!r}")
        if negatives != "full" and logq_correction and item_probabilities is None:
            raise ValueError("logQ correction needs item_probabilities")
        self.query_tower = query_tower
        self.item_tower = item_tower
        self.negatives = negatives
        self.num_sampled = int(num_sampled)
        self.logq_correction = bool(logq_correction)
        self.catalog_ids = np.asarray(catalog).astype(str)  # the ids as text (the tensor holds UTF-8 bytes)
        self.catalog = tf.constant(self.catalog_ids)
        probs = (np.full(len(catalog), 1.0 / len(catalog), np.float32) if item_probabilities is None
                 else np.asarray(item_probabilities, np.float32))
        if probs.shape != (len(catalog),):
            raise ValueError(f"item_probabilities must have one entry per catalog item ({len(catalog)}), "
                             f"got shape {probs.shape}")
        self.item_probabilities = tf.constant(probs)
        self.temperature = InverseTemperature(temperature or 1.0, max(max_temperature, 1.0),
                                              name="inverse_temperature")
        self.full_task = CatalogSoftmax(name="catalog_softmax")
        self.sampled_task = sampled_retrieval_task(remove_accidental_hits=remove_accidental_hits,
                                                   hard_negatives=hard_negatives)
        self.targets_per_batch = targets_per_batch
        self.exclude_seen = bool(exclude_seen)
        self.pairwise_task = PairwiseTask(loss, margin, name="pairwise") if loss != "softmax" else None
        if loss == "triplet" or temperature is None:
            self.temperature.trainable = False

    def scaled_query(self) -> ScaledQuery:
        """The serving query model ``tau * q`` (shares this model's layers)."""
        return ScaledQuery(self.query_tower, self.temperature, name="scaled_query")

    def query_embeddings(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Scaled queries ``tau * q`` of the last position, ``[B, D]``, for ``candidate_embeddings``."""
        return self.temperature(self.query_tower(features, training=training))

    def candidate_embeddings(self, item_ids: tf.Tensor | None = None, training: bool = False) -> tf.Tensor:
        """``c(i)`` for ``item_ids`` (default: the whole catalog, in catalog order)."""
        return self.item_tower(self.catalog if item_ids is None else item_ids, training=training)

    def pairwise_scores(self, features: Mapping[str, tf.Tensor],
                        training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """``(s(u, i+), s(u, i-))``, each ``[B]``, of ``features["positive"]`` and ``["negative"]``."""
        queries = self.query_embeddings(features, training=training)
        items = self.candidate_embeddings(tf.stack([features["positive"], features["negative"]], axis=1),
                                          training=training)
        scores = tf.einsum("bd,bkd->bk", queries, items)
        return scores[:, 0], scores[:, 1]

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if self.pairwise_task is not None:
            return self.global_loss(self.pairwise_task(*self.pairwise_scores(features, training=training)))
        queries = self.query_tower(features, all_positions=True, training=training)
        target_index = self.item_tower.encoder.lookup(features["targets"])
        valid = target_index >= FIRST_KNOWN_INDEX
        queries = self.temperature(tf.boolean_mask(queries, valid))
        target_index = tf.boolean_mask(target_index, valid)
        target_pos = target_index - FIRST_KNOWN_INDEX  # position in the catalog
        if self.negatives == "full":
            excluded = (seen_mask(self.item_tower.encoder.lookup(features["history"]), valid, target_pos,
                                  int(self.catalog.shape[0]), features.get("seen_before"))
                        if self.exclude_seen else None)
            losses = self.full_task(queries, self.candidate_embeddings(training=training), target_pos,
                                    excluded)
        else:
            candidate_pos = target_pos
            if self.negatives == "sampled":
                sampled = tf.random.categorical(tf.math.log(self.item_probabilities)[None], self.num_sampled,
                                                dtype=target_pos.dtype)[0]
                candidate_pos = tf.concat([target_pos, sampled], axis=0)
            candidates = self.candidate_embeddings(tf.gather(self.catalog, candidate_pos), training=training)
            probability = tf.gather(self.item_probabilities, candidate_pos) if self.logq_correction else None
            losses = self.sampled_task(queries, candidates, candidate_sampling_probability=probability,
                                       candidate_ids=candidate_pos, compute_metrics=False,
                                       compute_batch_metrics=False)
        return self.global_loss(losses, self.targets_per_batch)


@dataclass
class Vocabularies:
    """What the towers are built from: the catalog, the users and their feature tables."""

    catalog: np.ndarray
    users: np.ndarray | None
    spec: FeatureSpec
    item_tables: dict[str, np.ndarray]
    user_tables: dict[str, np.ndarray]

    @classmethod
    def build(cls, catalog: np.ndarray, users: np.ndarray | None, items: pd.DataFrame | None,
              user_table: pd.DataFrame | None, item_columns: list[str],
              user_columns: list[str], kinds: dict[str, str] | None = None) -> "Vocabularies":
        """Feature tables of ``item_columns`` of ``items`` over ``catalog``, and of ``user_columns`` of
        ``user_table`` over ``users`` (none without ``users``).

        Args:
          catalog: The item ids, in embedding row order.
          users: The user ids with a trained embedding, or ``None``.
          items: One row per item id (``item_id`` column), or ``None``.
          user_table: One row per user id (``user_id`` column), or ``None``.
          item_columns: Columns of ``items`` the item tower reads.
          user_columns: Columns of ``user_table`` the query tower reads.
          kinds: Each column's kind, as a trained run's spec holds it (None: read from the values).

        Returns:
          The vocabularies, with a spec of every feature column.
        """
        item_specs, item_tables = seq.entity_features(items, "item_id", catalog, item_columns, group="item",
                                                      kinds=kinds)
        user_specs, user_tables = ([], {}) if users is None else seq.entity_features(
            user_table, "user_id", users, user_columns, group="user", kinds=kinds)
        spec = FeatureSpec(item_specs + user_specs, labels=[], user_column="user_id", item_column="item_id")
        return cls(catalog, users, spec, item_tables, user_tables)

    @classmethod
    def of_spec(cls, catalog: np.ndarray, users: np.ndarray | None, items: pd.DataFrame | None,
                user_table: pd.DataFrame | None, spec: FeatureSpec) -> "Vocabularies":
        """:meth:`build` for a trained run: its spec's columns, read as the kinds it trained with."""
        return cls.build(catalog, users, items, user_table, [c.name for c in spec.group("item")],
                         [c.name for c in spec.group("user")], {c.name: c.kind for c in spec.features})


def build_model(cfg, vocab: Vocabularies, *, item_probabilities: np.ndarray | None = None,
                negatives: str = "full", targets_per_batch: float | None = None,
                exclude_seen: bool = False) -> TwoTowerRetrieval:
    """The two-tower model of a retrieval config over ``vocab`` (variables are created on first call).

    Args:
      cfg: A :class:`~tfrs_recsys.config.RetrievalConfig`.
      vocab: The catalog, users and feature tables.
      item_probabilities: ``Q`` of the logQ correction, aligned with the catalog.
      negatives: Resolved negatives (:func:`resolve_negatives`).
      targets_per_batch: See :class:`TwoTowerRetrieval`.
      exclude_seen: See :class:`TwoTowerRetrieval` (the trainer decides by protocol).

    Returns:
      The model, not yet compiled.
    """
    dim = cfg.embedding_dim
    cosine = resolve_similarity(cfg.similarity, cfg.loss) == "cosine"
    encoder = ItemEncoder(vocab.catalog, dim, feature_specs=vocab.spec.group("item"),
                          feature_tables=vocab.item_tables, name="item_encoder")
    sequence_encoder = SequenceEncoder(cfg.max_history, dim, cfg.num_blocks, cfg.num_heads, cfg.ff_dim,
                                       cfg.dropout, positions_from=cfg.positions_from, norm=cfg.block_norm,
                                       name="sequence_encoder") if cfg.use_transformer else None
    query = QueryTower(encoder, dim, sequence_encoder=sequence_encoder,
                       user_vocabulary=vocab.users if cfg.use_user_id or vocab.spec.group("user") else None,
                       use_user_embedding=cfg.use_user_id, user_feature_specs=vocab.spec.group("user"),
                       user_feature_tables=vocab.user_tables,
                       hidden_units=cfg.query_hidden_units, dropout=cfg.dropout,
                       user_id_dropout=cfg.user_id_dropout, normalize=cosine, name="query_tower")
    items = ItemTower(encoder, dim, cfg.item_hidden_units, cfg.dropout, normalize=cosine, name="item_tower")
    return TwoTowerRetrieval(query, items, vocab.catalog, negatives=negatives,
                             item_probabilities=item_probabilities, num_sampled=cfg.num_sampled_negatives,
                             logq_correction=cfg.logq_correction,
                             remove_accidental_hits=cfg.remove_accidental_hits,
                             hard_negatives=cfg.hard_negatives,
                             temperature=cfg.inverse_temperature if cosine else None,
                             max_temperature=cfg.max_inverse_temperature, targets_per_batch=targets_per_batch,
                             exclude_seen=exclude_seen, loss=cfg.loss, margin=cfg.margin)


def query_vectors(model: TwoTowerRetrieval, user_ids: np.ndarray, histories: list[np.ndarray], max_len: int,
                  batch_size: int = 512) -> np.ndarray:
    """The scaled queries ``tau * q`` of (user, history) pairs.

    Args:
      model: The trained model.
      user_ids: ``[N]`` raw user ids.
      histories: ``N`` arrays of raw item ids, oldest first.
      max_len: The model's history length (``max_history``).
      batch_size: Queries per call.

    Returns:
      ``[N, D]`` float32.
    """
    out = []
    for lo in range(0, len(user_ids), batch_size):
        features = {"user_id": tf.constant(np.asarray(user_ids[lo:lo + batch_size]).astype(str)),
                    "history": tf.constant(seq.pad_left(histories[lo:lo + batch_size], max_len).astype(str))}
        out.append(model.query_embeddings(features).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.query_tower.head.layers[-1].units), np.float32)
