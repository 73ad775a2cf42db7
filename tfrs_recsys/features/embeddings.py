"""One vector per field, from :class:`FeaturePreprocessor` outputs: the shared embeddings of the rankers."""
from __future__ import annotations

import tensorflow as tf

from tfrs_recsys.data.input_names import signature_name
from tfrs_recsys.data.schema import GROUPS, FeatureSpec, SchemaError
from tfrs_recsys.features.preprocessing import TIMESTAMP_FEATURES, mask_key


class FieldEmbeddings(tf.keras.layers.Layer):
    """Embeds every field of the spec; whoever uses the layer shares its tables.

    For field f with preprocessed input x_f (see FeaturePreprocessor):

    * categorical / id: ``e_f = E_f[x_f]``, ``E_f`` a ``cardinality_f x D`` table;
    * multi_categorical: ``e_f = sum_j m_fj E_f[x_fj] / max(1, sum_j m_fj)`` (mask-weighted mean;
      a row without values gives 0);
    * numeric: ``e_f = x_f v_f`` with a learned ``v_f`` in R^D;
    * timestamp: ``e_f = t_f V_f`` with the 5 time features ``t_f`` and a learned ``5 x D`` ``V_f``.

    First order (``first_order=True``), one scalar per field: ``w_f = W_f[x_f]`` from a
    ``cardinality_f x 1`` table (mask-weighted mean for multi-valued), ``w_f x_f`` for numeric and
    ``w_f . t_f`` for timestamp.

    Outputs, a dict:

    * ``fields``: ``{name: [B, D_f]}``;
    * ``field_vectors``: ``[B, F, D]`` in spec order (only with one shared D, i.e. ``column_dims=False``);
    * ``first_order``: ``[B, F]``;
    * ``dense``: ``[B, n_dense]``, the standardized numeric values then 5 features per timestamp
      (:attr:`dense_names`), for models that also want raw numbers.

    ``embedding_dim`` is D for every field. A column's own ``embedding_dim`` in the spec is
    honoured only with ``column_dims=True`` (then there is no ``field_vectors``, so not for FM,
    whose pairwise products need one D). ``l2`` adds ``l2 * mean_b sum_f ||e_f||^2`` as a layer
    loss: it penalizes the rows a batch uses, in proportion to how often they are used. The
    categorical tables are ``tf.keras.layers.Embedding`` layers, whose gradients are sparse (the rows
    looked up): :mod:`tfrs_recsys.training.optimizers` updates only those rows, and regularizes them.

    Args:
      spec: the feature spec.
      embedding_dim: ``D``.
      first_order: also compute the first-order terms.
      l2: the L2 weight on the field vectors of a batch (0: none).
      column_dims: honour a column's own ``embedding_dim`` (no ``field_vectors`` then).

    Raises:
      SchemaError: the spec has no features, or a column sets its own ``embedding_dim`` without
        ``column_dims``.
    """

    def __init__(self, spec: FeatureSpec, embedding_dim: int, *, first_order: bool = True, l2: float = 0.0,
                 column_dims: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not spec.features:
            raise SchemaError("the spec has no features to embed", fix="infer or write a spec with features")
        odd = [f for f in spec.features if f.embedding_dim not in (None, embedding_dim)]
        if odd and not column_dims:
            raise SchemaError(
                f"feature '{odd[0].name}' sets embedding_dim={odd[0].embedding_dim} but this layer gives "
                f"every field D={embedding_dim} (FM-style models need one D)", column=odd[0].name,
                fix="remove the per-column embedding_dim, or build FieldEmbeddings(..., column_dims=True) "
                    "for a model without FM")
        self.spec = spec
        self.embedding_dim = embedding_dim
        self.use_first_order = first_order
        self.l2 = l2
        self.column_dims = column_dims
        self.dims = {f.name: (f.embedding_dim if column_dims and f.embedding_dim else embedding_dim)
                     for f in spec.features}
        self._tables = {}
        self._linear = {}
        for f in spec.features:
            if f.is_categorical:
                self._tables[f.name] = tf.keras.layers.Embedding(
                    f.cardinality, self.dims[f.name], name=f"embedding_{signature_name(f.name)}")
                if first_order:
                    self._linear[f.name] = tf.keras.layers.Embedding(
                        f.cardinality, 1, embeddings_initializer="zeros",
                        name=f"linear_{signature_name(f.name)}")

    def build(self, input_shape) -> None:
        self._vectors = {}
        self._weights_1d = {}
        for f in self.spec.features:
            if f.is_categorical:
                continue
            width = len(TIMESTAMP_FEATURES) if f.kind == "timestamp" else 1
            self._vectors[f.name] = self.add_weight(
                name=f"vector_{signature_name(f.name)}", shape=(width, self.dims[f.name]),
                initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05))
            if self.use_first_order:
                self._weights_1d[f.name] = self.add_weight(
                    name=f"linear_{signature_name(f.name)}", shape=(width,), initializer="zeros")
        super().build(input_shape)

    @property
    def field_names(self) -> list[str]:
        """The fields, in spec order (the order of ``field_vectors``)."""
        return self.spec.feature_names

    @property
    def dense_names(self) -> list[str]:
        """Names of the ``dense`` output's columns: each numeric feature, then ``name:part`` per timestamp."""
        features = self.spec.features
        return ([f.name for f in features if f.kind == "numeric"]
                + [f"{f.name}:{t}" for f in features if f.kind == "timestamp" for t in TIMESTAMP_FEATURES])

    def call(self, inputs: dict[str, tf.Tensor]) -> dict:
        """Embed preprocessed features.

        Args:
          inputs: :class:`~tfrs_recsys.features.preprocessing.FeaturePreprocessor` outputs.

        Returns:
          The dict described in the class docstring.
        """
        fields, first = {}, []
        for f in self.spec.features:
            x = inputs[f.name]
            # First-order terms stay [B, 1] columns, concatenated below (no per-field slices to
            # differentiate).
            if f.is_categorical:
                mask = inputs[mask_key(f.name)] if f.kind == "multi_categorical" else None
                fields[f.name] = _pooled(self._tables[f.name](x), mask)
                if self.use_first_order:
                    first.append(_pooled(self._linear[f.name](x), mask))
            else:
                values = tf.reshape(tf.cast(x, tf.float32), [-1, self._vectors[f.name].shape[0]])
                fields[f.name] = tf.matmul(values, self._vectors[f.name])
                if self.use_first_order:
                    first.append(tf.matmul(values, tf.reshape(self._weights_1d[f.name], [-1, 1])))
        batch = tf.shape(fields[self.spec.features[0].name])[0]
        outputs = {"fields": fields, "dense": self._dense(inputs, batch)}
        if not self.column_dims:
            outputs["field_vectors"] = tf.stack([fields[n] for n in self.field_names], axis=1)
        if self.use_first_order:
            outputs["first_order"] = tf.concat(first, axis=1)
        if self.l2:
            # sum_b sum_f ||e_bf||^2 as one L2Loss over all the field vectors (its gradient is one
            # product), not a sum of per-field norms.
            stacked = outputs.get("field_vectors")
            if stacked is None:
                stacked = tf.concat(list(fields.values()), axis=-1)
            self.add_loss(self.l2 * 2.0 * tf.nn.l2_loss(stacked) / tf.cast(batch, tf.float32))
        return outputs

    def _dense(self, inputs: dict[str, tf.Tensor], batch: tf.Tensor) -> tf.Tensor:
        features = self.spec.features
        parts = ([tf.cast(inputs[f.name], tf.float32)[:, None] for f in features if f.kind == "numeric"]
                 + [tf.cast(inputs[f.name], tf.float32) for f in features if f.kind == "timestamp"])
        return tf.concat(parts, axis=1) if parts else tf.zeros([batch, 0], tf.float32)

    def group_vectors(self, outputs: dict, group: str) -> tf.Tensor:
        """The vectors of one group's fields side by side.

        Args:
          outputs: this layer's outputs.
          group: ``user``, ``item`` or ``context``.

        Returns:
          ``[B, sum of the group's D_f]`` (``F_g * D`` with one D); ``[B, 0]`` for an empty group.

        Raises:
          ValueError: an unknown group.
        """
        if group not in GROUPS:
            raise ValueError(f"unknown group '{group}'; use one of {GROUPS}")
        fields = outputs["fields"]
        vectors = [fields[f.name] for f in self.spec.group(group)]
        return tf.concat(vectors, axis=-1) if vectors else tf.zeros_like(next(iter(fields.values())))[:, :0]

    def get_config(self) -> dict:
        return {**super().get_config(), "spec": self.spec.to_dict(), "embedding_dim": self.embedding_dim,
                "first_order": self.use_first_order, "l2": self.l2, "column_dims": self.column_dims}

    @classmethod
    def from_config(cls, config: dict) -> "FieldEmbeddings":
        config = dict(config)
        spec = FeatureSpec.from_dict(config.pop("spec"))
        return cls(spec, config.pop("embedding_dim"), **config)


def _pooled(vectors: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """``vectors`` as they are without a mask; else ``[B, M, D]``, ``[B, M]`` -> ``[B, D]``, the mean
    over the unmasked rows (0 when there are none)."""
    if mask is None:
        return vectors
    mask = tf.cast(mask, vectors.dtype)[:, :, None]
    return tf.reduce_sum(vectors * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
