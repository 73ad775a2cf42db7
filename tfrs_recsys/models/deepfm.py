"""DeepFM (Guo et al., IJCAI 2017): a factorization machine and a DNN over one set of field embeddings.

With field vectors ``v_1..v_F`` in R^D (:class:`~tfrs_recsys.features.embeddings.FieldEmbeddings`:
categorical ``E_f[x_f]``, multi-valued the masked mean of its rows, numeric ``x_f v_f``), first-order
weights ``w_f`` and the standardized dense values ``d``::

    logit = b + sum_f w_f                          first order
              + sum_{i<j} <v_i, v_j>               second order (FM)
              + MLP([v_1; ...; v_F; d]) . u        deep part, one unit, no bias of its own
    ctr   = sigmoid(logit)

The FM and the DNN read the same embedding tables (gradients of both parts reach them); each part
gives one logit and the three are summed with the single bias ``b``. The loss is binary
cross-entropy on the logit, held by a ``tfrs.tasks.Ranking`` task; it is averaged over the global
batch, also under ``tf.distribute`` (:mod:`tfrs_recsys.models.base`). ``l2_reg`` penalizes the
embedding rows of each batch (:class:`~tfrs_recsys.features.embeddings.FieldEmbeddings`); the
tables' optimizer and its row L2 are set at compile time
(:func:`~tfrs_recsys.training.rankers.compile_ranker`). The DNN can train its products in bfloat16
(``precision``, :mod:`tfrs_recsys.models.mlp`).

Notebook use::

    spec = infer_schema(train_frame, ["label"], user_column="user_id", item_column="item_id")
    model = DeepFM.from_spec(spec, DeepFMConfig())
    compile_ranker(model, DeepFMConfig())     # tfrs_recsys.training.rankers: sparse table updates
    model.fit(labeled_dataset(train_frame, spec, batch_size=512), epochs=3)
    scores = model(raw_features)["ctr"]       # raw strings / floats, one [B] tensor per spec feature
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_recsys.data.schema import FeatureSpec, SchemaError
from tfrs_recsys.features.embeddings import FieldEmbeddings
from tfrs_recsys.features.preprocessing import FeaturePreprocessor
from tfrs_recsys.models.base import RecsysModel
from tfrs_recsys.models.mlp import mlp


class FactorizationMachine(tf.keras.layers.Layer):
    """The FM second-order term of field vectors ``[B, F, D]`` -> ``[B]``.

    ``sum_{i<j} <v_i, v_j> = 1/2 sum_d [ (sum_i v_id)^2 - sum_i v_id^2 ]``: O(F D) instead of O(F^2 D).
    """

    def call(self, field_vectors: tf.Tensor) -> tf.Tensor:
        return _second_order(field_vectors)


@tf.custom_gradient
def _second_order(v: tf.Tensor):
    """``1/2 (||s||^2 - sum_i ||v_i||^2)`` with ``s = sum_i v_i``, and its gradient ``d/dv_i = s - v_i``
    written out: three ops where automatic differentiation of the reductions emits a dozen."""
    s = tf.reduce_sum(v, axis=1)
    value = 0.5 * (tf.reduce_sum(tf.square(s), axis=-1) - tf.reduce_sum(tf.square(v), axis=[1, 2]))

    def grad(upstream):
        return upstream[:, None, None] * (s[:, None, :] - v)

    return value, grad


class DeepFM(RecsysModel):
    """pCTR from raw features: preprocessing (vocabularies, standardization) is part of the model.

    ``call(features) -> {"ctr": [B]}`` with ``features`` the raw dict (one [B] tensor per spec
    feature). ``compute_loss((features, labels))`` reads ``labels[label]``.

    Args:
      spec: the feature spec.
      embedding_dim: ``D``, shared by every field (the FM needs one).
      hidden_units: the DNN's ReLU layers.
      dropout: the DNN's dropout rate.
      l2_reg: the L2 weight on the embedding rows a batch uses.
      label: the label's name (default: the spec's first label).
      precision: the DNN's training precision (:func:`~tfrs_recsys.models.mlp.resolve_precision`).

    Raises:
      SchemaError: no label is given and the spec lists none.
    """

    def __init__(self, spec: FeatureSpec, *, embedding_dim: int = 16,
                 hidden_units: Sequence[int] = (256, 128, 64), dropout: float = 0.0, l2_reg: float = 0.0,
                 label: str | None = None, precision: str = "float32"):
        super().__init__()
        self.label = label or (spec.labels[0] if spec.labels else None)
        if self.label is None:
            raise SchemaError("DeepFM needs a label column and the spec lists none",
                              fix="pass label=..., or list the label in the spec's 'labels'")
        self.spec = spec
        self.preprocessor = FeaturePreprocessor(spec)
        # l2 penalizes the embedding rows a batch uses (FieldEmbeddings adds it as a layer loss).
        self.embeddings = FieldEmbeddings(spec, embedding_dim, first_order=True, l2=l2_reg)
        self.fm = FactorizationMachine()
        self.dnn = mlp(hidden_units, dropout=dropout, name="dnn", precision=precision)
        self.dnn_logit = tf.keras.layers.Dense(1, use_bias=False, name="dnn_logit")
        self.bias = tf.Variable(0.0, name="bias")
        bce = tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction="none")
        self.task = tfrs.tasks.Ranking(loss=bce, metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")])

    def logit_parts(self, features: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        """The three logits (``first_order``, ``fm``, ``dnn``), each ``[B]``, before the bias."""
        emb = self.embeddings(self.preprocessor(features), training=training)
        field_vectors = emb["field_vectors"]
        _, num_fields, dim = field_vectors.shape
        deep_input = tf.concat([tf.reshape(field_vectors, [-1, num_fields * dim]), emb["dense"]], axis=1)
        return {
            "first_order": tf.reduce_sum(emb["first_order"], axis=1),
            "fm": self.fm(field_vectors),
            "dnn": self.dnn_logit(self.dnn(deep_input, training=training))[:, 0],
        }

    def logit(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return tf.add_n(list(self.logit_parts(features, training=training).values())) + self.bias

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        return {"ctr": tf.sigmoid(self.logit(features, training=training))}

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        logit = self.logit(features, training=training)
        return self.global_loss(self.task(labels=tf.cast(labels[self.label], tf.float32)[:, None],
                                          predictions=logit[:, None]))
