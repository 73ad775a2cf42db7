"""Towers of the two-tower retrieval model: small Keras layers that compose.

Ids are raw strings everywhere (what a serving client sends). An id lookup maps
``""`` (padding) to 0, an unknown id to 1 (the OOV row) and the i-th known id to i + 2.

* An entity's content features, held as tables indexed by that lookup, are embedded by the
  rankers' :class:`~tfrs_recsys.features.embeddings.FieldEmbeddings` and summed:
  ``e(x) = sum_f e_f(x)`` (multi-valued features mean-pooled, numeric ones ``x_f v_f``).
* :class:`ItemEncoder` is the shared item representation ``h(i) = E[i] + e(i)``: the
  item tower and the history of the query tower use the same id table ``E``.
* :class:`ItemTower`: ``c(i) = normalize(MLP(h(i)))``.
* :class:`SequenceEncoder`: learned positions + pre-LN Transformer encoder blocks with a
  padding mask and a causal mask, so state ``t`` summarizes items ``<= t`` only.
* :class:`QueryTower`: ``q(u, history) = normalize(MLP([s_t ; U[u] ; e(u)]))`` where ``s_t`` is
  the sequence state at the last position (serving) or at every position (training). With
  the sequence encoder off it is the feature tower of a DSSM: ``normalize(MLP([U[u] ; e(u)]))``.

Towers know nothing of losses or metrics.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec
from tfrs_recsys.features.embeddings import FieldEmbeddings
from tfrs_recsys.features.preprocessing import mask_key
from tfrs_recsys.models.mlp import mlp

PAD_INDEX, OOV_INDEX, FIRST_KNOWN_INDEX = 0, 1, 2


def id_lookup(vocabulary: Sequence[str], name: str) -> tf.keras.layers.StringLookup:
    """The id lookup of the towers: ``""`` -> 0, unknown -> 1, ``vocabulary[i]`` -> i + 2.

    Args:
      vocabulary: the known ids.
      name: the layer's name.

    Returns:
      A ``tf.keras.layers.StringLookup``.

    Raises:
      ValueError: the vocabulary holds ``""``, the padding id.
    """
    # An array, not a list: Keras walks a layer's list attributes on every access to its weights (each
    # `fit` call: seconds at a million ids).
    vocabulary = np.asarray([str(v) for v in vocabulary], dtype=object)
    if (vocabulary == "").any():
        raise ValueError(f"{name}: '' is reserved for padding and cannot be an id")
    return tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token="", num_oov_indices=1, name=name)


class EntityFeatureTables(tf.keras.layers.Layer):
    """``e(x) = sum_f e_f(x)`` of the entities at a lookup index of any shape: ``index.shape + [D]``.

    The features of entity ``x`` are rows of per-entity tables (0 and 1, padding and unknown ids,
    have none); :class:`~tfrs_recsys.features.embeddings.FieldEmbeddings` embeds them.

    Args:
      specs: the feature columns (``categorical``, ``multi_categorical`` or ``numeric``).
      tables: ``{name: [entities, ...]}`` aligned with the id vocabulary (``sequences.entity_features``).
      dim: ``D``.
    """

    def __init__(self, specs: Sequence[FeatureColumn], tables: Mapping[str, np.ndarray], dim: int, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = FieldEmbeddings(FeatureSpec(list(specs), labels=[]), dim, first_order=False)
        self.multi_valued = [f.name for f in specs if f.kind == "multi_categorical"]
        self.rows = {}
        for f in specs:
            table = np.asarray(tables[f.name])
            rows = [(FIRST_KNOWN_INDEX, 0)] + [(0, 0)] * (table.ndim - 1)  # 0 and 1 have no features
            self.rows[f.name] = tf.constant(np.pad(table, rows))

    def call(self, index: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(index, [-1])
        inputs = {name: tf.gather(rows, flat) for name, rows in self.rows.items()}
        inputs.update({mask_key(name): tf.cast(inputs[name] > 0, tf.float32) for name in self.multi_valued})
        vectors = tf.add_n(list(self.embeddings(inputs)["fields"].values()))
        return tf.ensure_shape(tf.reshape(vectors, tf.concat([tf.shape(index), [-1]], axis=0)),
                               index.shape.concatenate(vectors.shape[-1:]))


class ItemEncoder(tf.keras.layers.Layer):
    """``h(i) = E[i] + e(i)``: id embedding plus content features.

    Called on item ids of any shape, returns ``(vectors, known)``: ``ids.shape + [D]`` and True where
    the id is known.

    Args:
      vocabulary: the item ids, in embedding row order (the catalog).
      dim: ``D``.
      feature_specs: the item feature columns (none: id embeddings only).
      feature_tables: their tables, aligned with ``vocabulary`` (:class:`EntityFeatureTables`).
    """

    def __init__(self, vocabulary: Sequence[str], dim: int, *, feature_specs: Sequence[FeatureColumn] = (),
                 feature_tables: Mapping[str, np.ndarray] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lookup = id_lookup(vocabulary, "item_lookup")
        self.embedding = tf.keras.layers.Embedding(len(vocabulary) + FIRST_KNOWN_INDEX, dim,
                                                   embeddings_initializer=tf.keras.initializers.RandomNormal(
                                                       stddev=0.05), name="item_embedding")
        self.features = (EntityFeatureTables(feature_specs, feature_tables or {}, dim, name="item_features")
                         if feature_specs else None)

    def embed(self, index: tf.Tensor) -> tf.Tensor:
        """Vectors of items given by lookup index."""
        vectors = self.embedding(index)
        if self.features is not None:
            vectors = vectors + self.features(index)
        return vectors

    def call(self, item_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        index = self.lookup(item_ids)
        return self.embed(index), index >= FIRST_KNOWN_INDEX


class ItemTower(tf.keras.Model):
    """``c(i) = normalize(MLP(h(i)))`` for item ids of any shape.

    Args:
      encoder: the shared :class:`ItemEncoder`.
      dim: the output width ``D``.
      hidden_units: the MLP's ReLU layers before its projection to ``D``; none: ``normalize(h(i))``.
      dropout: the MLP's dropout rate.
      normalize: L2-normalize the output (false: dot-product scores, the norm is learned).
    """

    def __init__(self, encoder: ItemEncoder, dim: int, hidden_units: Sequence[int] = (), dropout: float = 0.0,
                 normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.normalize = bool(normalize)
        self.head = (mlp(hidden_units, dropout=dropout, name="item_mlp", output_units=dim) if hidden_units
                     else None)

    def call(self, item_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        vectors, _ = self.encoder(item_ids)
        if self.head is not None:
            vectors = self.head(vectors, training=training)
        return tf.math.l2_normalize(vectors, axis=-1) if self.normalize else vectors


class TransformerBlock(tf.keras.layers.Layer):
    """Encoder block, dropout on both branches. Pre-LN: ``x += MHA(LN(x)); x += FFN(LN(x))``; post-LN
    (BERT's, and RecBole's SASRec): ``x = LN(x + MHA(x)); x = LN(x + FFN(x))``.

    With ``query`` given (a subset of positions of ``x``, e.g. the last one), only those positions are
    updated: pre-LN ``query += MHA(LN(query), LN(x)); query += FFN(LN(query))``, post-LN
    ``query = LN(query + MHA(query, x)); query = LN(query + FFN(query))``.

    Args:
      dim: the model width.
      num_heads: attention heads, each of width ``dim // num_heads``.
      ff_dim: the feed-forward network's hidden width.
      dropout: the dropout rate of attention and both branches.
      norm: ``pre`` or ``post``.
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float, norm: str = "pre", **kwargs):
        super().__init__(**kwargs)
        self.post_norm = norm == "post"
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.attention = tf.keras.layers.MultiHeadAttention(num_heads, key_dim=max(dim // num_heads, 1),
                                                            dropout=dropout)
        self.ff_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.ff = tf.keras.Sequential([tf.keras.layers.Dense(ff_dim, activation="gelu"),
                                       tf.keras.layers.Dropout(dropout), tf.keras.layers.Dense(dim)])
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, attention_mask: tf.Tensor, training: bool = False,
             query: tf.Tensor | None = None) -> tf.Tensor:
        if self.post_norm:
            q = x if query is None else query
            q = self.attention_norm(q + self.dropout(self.attention(q, x, attention_mask=attention_mask,
                                                                    training=training), training=training))
            return self.ff_norm(q + self.dropout(self.ff(q, training=training), training=training))
        h = self.attention_norm(x)
        q, h_q = (x, h) if query is None else (query, self.attention_norm(query))
        q = q + self.dropout(self.attention(h_q, h, attention_mask=attention_mask, training=training),
                             training=training)
        return q + self.dropout(self.ff(self.ff_norm(q), training=training), training=training)


class SequenceEncoder(tf.keras.layers.Layer):
    """Learned positions + Transformer blocks over right-aligned item vectors ``[B, L, D]``.

    Attention is restricted to known items at or before the query position (padding mask
    and causal mask); states at padded positions are zero.

    Args:
      max_len: the longest history (rows of the position table).
      dim: the model width.
      num_blocks: the number of :class:`TransformerBlock`.
      num_heads: attention heads per block.
      ff_dim: the feed-forward hidden width.
      dropout: the dropout rate of the inputs and the blocks.
      positions_from: ``start``: a row's first known item has position 0 (SASRec: a training target at
        window position ``t`` reads the positions a ``t + 1``-item history reads when served); ``end``:
        the last column has position ``max_len - 1`` whatever the row's length.
      norm: the blocks' LayerNorm placement, ``pre`` (a LayerNorm on the last block's output) or ``post``
        (a LayerNorm on the inputs, as BERT and RecBole's SASRec).
    """

    def __init__(self, max_len: int, dim: int, num_blocks: int, num_heads: int, ff_dim: int, dropout: float,
                 positions_from: str = "start", norm: str = "pre", **kwargs):
        super().__init__(**kwargs)
        if positions_from not in ("start", "end"):
            raise ValueError(f"positions_from must be 'start' or 'end', got {positions_from!r}")
        self.positions_from = positions_from
        self.max_len = max_len
        self.positions = self.add_weight(name="position_embedding", shape=(max_len, dim),
                                         initializer=tf.keras.initializers.RandomNormal(stddev=0.05))
        self.input_dropout = tf.keras.layers.Dropout(dropout)
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        self.blocks = [TransformerBlock(dim, num_heads, ff_dim, dropout, norm=norm, name=f"block_{i}")
                       for i in range(num_blocks)]
        norm_layer = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.input_norm, self.output_norm = ((norm_layer, tf.identity) if norm == "post" else
                                             (tf.identity, norm_layer))

    def call(self, vectors: tf.Tensor, known: tf.Tensor, training: bool = False,
             last_only: bool = False) -> tf.Tensor:
        """States ``[B, L, D]``, or with ``last_only`` the last position's ``[B, D]``.

        At inference ``last_only`` runs the last block for the last position alone (the others feed
        nothing); training runs it for every position and keeps the last, the same values.
        """
        length = tf.shape(vectors)[1]
        causal = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)
        mask = tf.logical_and(causal[None], known[:, None, :])
        if self.positions_from == "start":  # known items are right-aligned: count them from the first
            index = tf.maximum(tf.cumsum(tf.cast(known, tf.int32), axis=1) - 1, 0)
            positions = tf.gather(self.positions, index)
        else:
            positions = self.positions[-length:][None]
        x = self.input_dropout(self.input_norm(vectors + positions), training=training)
        for block in self.blocks[:-1]:
            x = block(x, mask, training=training)
        # Not while training: oneDNN's gradient of single-query attention corrupts the heap
        # (TensorFlow issues #117700, #123109; fixed by PR #120199).
        if last_only and not training:
            x = self.blocks[-1](x, mask[:, -1:], training=training, query=x[:, -1:])
            return self.output_norm(x)[:, 0] * tf.cast(known[:, -1:], x.dtype)
        x = self.blocks[-1](x, mask, training=training)
        states = self.output_norm(x) * tf.cast(known, x.dtype)[..., None]
        return states[:, -1] if last_only else states


def right_align(index: tf.Tensor) -> tf.Tensor:
    """Move known items (lookup index >= 2) to the right end of each row, keeping their order.

    Padding and unknown ids end up first, so the last position holds the most recent known item
    whichever side a client padded on.

    Args:
      index: ``[B, L]`` lookup indices.

    Returns:
      ``[B, L]``, the same indices reordered.
    """
    known = tf.cast(index >= FIRST_KNOWN_INDEX, tf.int32)
    return tf.gather(index, tf.argsort(known, axis=-1, stable=True), batch_dims=1)


class QueryTower(tf.keras.Model):
    """User tower. Inputs ``{"user_id": [B] str, "history": [B, L] str}`` (most recent item last).

    ``all_positions=True`` returns one query per history position ``[B, L, D]`` (training: the
    query at ``t`` predicts item ``t + 1``); otherwise the query after the last item ``[B, D]``.
    ``user_vocabulary`` looks users up for their id embedding (``use_user_embedding``) and their
    features. Unknown user ids use the OOV row, trained by replacing known ids with it at rate
    ``user_id_dropout``. Unknown or empty history entries are skipped.

    Args:
      item_encoder: the :class:`ItemEncoder` shared with the item tower.
      dim: the output width ``D``.
      hidden_units: the MLP's ReLU layers before its projection to ``D``.
      sequence_encoder: the history's :class:`SequenceEncoder`, or None for no history.
      dropout: the MLP's dropout rate.
      user_vocabulary: the known user ids, or None for no user input.
      use_user_embedding: whether to learn an embedding per user id.
      user_feature_specs: the user feature columns.
      user_id_dropout: the rate of replacing a known user id by the OOV id while training.
      user_feature_tables: the user features' tables, aligned with ``user_vocabulary``.
      normalize: L2-normalize the output (false: dot-product scores).
    """

    def __init__(self, item_encoder: ItemEncoder, dim: int, *, hidden_units: Sequence[int] = (),
                 sequence_encoder: SequenceEncoder | None = None, dropout: float = 0.0,
                 user_vocabulary: Sequence[str] | None = None, use_user_embedding: bool = True,
                 user_feature_specs: Sequence[FeatureColumn] = (), user_id_dropout: float = 0.0,
                 user_feature_tables: Mapping[str, np.ndarray] | None = None, normalize: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.normalize = bool(normalize)
        with_embedding = user_vocabulary is not None and use_user_embedding
        self.item_encoder = item_encoder
        self.sequence_encoder = sequence_encoder
        self.user_lookup = id_lookup(user_vocabulary, "user_lookup") if user_vocabulary is not None else None
        self.user_embedding = (tf.keras.layers.Embedding(len(user_vocabulary) + FIRST_KNOWN_INDEX, dim,
                                                         name="user_embedding") if with_embedding else None)
        self.user_features = (EntityFeatureTables(user_feature_specs, user_feature_tables or {}, dim,
                                                  name="user_features") if user_feature_specs else None)
        self.user_id_dropout = float(user_id_dropout)
        self.head = mlp(hidden_units, dropout=dropout, name="query_mlp", output_units=dim)

    def call(self, features: Mapping[str, tf.Tensor], all_positions: bool = False,
             training: bool = False) -> tf.Tensor:
        parts = []
        if self.sequence_encoder is not None:
            index = right_align(self.item_encoder.lookup(features["history"]))
            if not all_positions:  # only the last state is needed: drop the columns of padding only
                length = tf.shape(index)[1]
                width = tf.reduce_max(tf.reduce_sum(tf.cast(index >= FIRST_KNOWN_INDEX, tf.int32), axis=1))
                index = index[:, length - tf.maximum(width, 1):]
            known = index >= FIRST_KNOWN_INDEX
            parts.append(self.sequence_encoder(self.item_encoder.embed(index), known, training=training,
                                               last_only=not all_positions))
        if self.user_lookup is not None:
            index = self.user_lookup(features["user_id"])
            index = tf.where(index == PAD_INDEX, tf.constant(OOV_INDEX, index.dtype), index)  # "" is unknown
            if training and self.user_id_dropout > 0:
                drop = tf.random.uniform(tf.shape(index)) < self.user_id_dropout
                index = tf.where(drop, tf.constant(OOV_INDEX, index.dtype), index)
            user = tf.concat([layer(index) for layer in (self.user_embedding, self.user_features)
                              if layer is not None], axis=-1)
            if all_positions:
                length = tf.shape(features["history"])[1]
                user = tf.repeat(user[:, None], length, axis=1)
            parts.append(user)
        x = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
        x = self.head(x, training=training)
        return tf.math.l2_normalize(x, axis=-1) if self.normalize else x
