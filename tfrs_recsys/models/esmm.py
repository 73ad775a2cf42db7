"""ESMM, the Entire Space Multi-task Model (Ma et al., SIGIR 2018), and its clicked-only baseline.

Shared bottom (:class:`ImpressionEncoder`): one set of field embeddings ``e`` shared by both tasks;
a user tower encodes the user fields and an item tower the item fields into dense vectors, which
are combined with the context fields (position, device, query/destination, time) and the shared
embeddings themselves::

    h = [ user_tower(e_user) ; item_tower(e_item) ; e_user ; e_item ; e_context ]

Two heads read ``h``::

    pCTR   = sigmoid(ctr_tower(h))     P(click | impression)
    pCVR   = sigmoid(cvr_tower(h))     P(conversion | click, impression)
    pCTCVR = pCTR * pCVR               P(click and conversion | impression)

Loss over ALL impressions, on probabilities clipped to [eps, 1 - eps]::

    L = w_ctr * BCE(click, pCTR) + w_ctcvr * BCE(click * conversion, pCTCVR)

(averaged over the global batch, also under ``tf.distribute``: :mod:`tfrs_recsys.models.base`).
``l2_reg`` penalizes the embedding rows of each batch; the tables' optimizer and its row L2 are set
at compile time (:func:`~tfrs_recsys.training.rankers.compile_ranker`). The MLPs can train their
products in bfloat16 (``precision``, :mod:`tfrs_recsys.models.mlp`).

There is no loss on pCVR itself: it is learned through pCTCVR on the entire impression space,
which removes the sample-selection bias of a CVR model fitted to clicked impressions only
(:class:`ClickedCVR`, the paper's baseline) and lets the sparse CVR task borrow the CTR task's
embeddings.

Notebook use::

    spec = infer_schema(train_frame, ["click", "conversion"], session_column="session_id",
                        user_column="user_id", item_column="item_id")
    model = ESMM.from_spec(spec, ESMMConfig())
    compile_ranker(model, ESMMConfig())       # tfrs_recsys.training.rankers: sparse table updates
    model.fit(labeled_dataset(train_frame, spec, batch_size=512), epochs=3)
    outputs = model(raw_features)             # {"ctr", "cvr", "ctcvr"}, each [B]
    # metrics: tfrs_recsys.training.esmm.evaluate_esmm(model, test_frame, spec)
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

PROB_EPSILON = 1e-7


def _head(units: Sequence[int], dropout: float, name: str, precision: str) -> tf.keras.Sequential:
    """An MLP ending in one logit: ``[B, H] -> [B, 1]``."""
    return mlp(units, dropout=dropout, name=name, precision=precision, output_units=1)


def _bce_task(name: str, auc_name: str) -> tfrs.tasks.Ranking:
    """BCE per impression (:meth:`RecsysModel.global_loss` averages it over the global batch) and its AUC."""
    return tfrs.tasks.Ranking(loss=tf.keras.losses.BinaryCrossentropy(reduction="none"),
                              name=name, metrics=[tf.keras.metrics.AUC(name=auc_name)])


def _clip(p: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(p, PROB_EPSILON, 1.0 - PROB_EPSILON)


class ImpressionEncoder(tf.keras.layers.Layer):
    """Raw features -> the shared bottom ``h`` of the module docstring, ``[B, H]``.

    The towers add learned user and item vectors to the shared embeddings rather than replace them
    (replacing them overfits sooner on sparse ids). A group without features contributes nothing
    (e.g. AliExpress logs carry only context).

    Args:
      spec: the feature spec.
      embedding_dim: ``D`` of a field without its own ``embedding_dim`` in the spec.
      tower_units: the user and item towers' widths: ReLU layers, the last one linear.
      dropout: the towers' dropout rate.
      l2_reg: the L2 weight on the embedding rows a batch uses.
      precision: the towers' training precision (:func:`~tfrs_recsys.models.mlp.resolve_precision`).
    """

    def __init__(self, spec: FeatureSpec, *, embedding_dim: int = 16, tower_units: Sequence[int] = (32,),
                 dropout: float = 0.0, l2_reg: float = 0.0, precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.preprocessor = FeaturePreprocessor(spec)
        # ESMM has no FM term, so a column may set its own embedding_dim in the spec. l2 penalizes
        # the embedding rows a batch uses (a layer loss, added to the task losses by RecsysModel).
        self.embeddings = FieldEmbeddings(spec, embedding_dim, first_order=False, column_dims=True, l2=l2_reg)
        # ReLU layers and a linear output layer of tower_units[-1]: the dense vector of a user or an item.
        self.user_tower, self.item_tower = (
            mlp(tower_units[:-1], dropout=dropout, name=f"{group}_tower", precision=precision,
                output_units=tower_units[-1] if tower_units else None) if spec.group(group) else None
            for group in ("user", "item"))

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        emb = self.embeddings(self.preprocessor(features), training=training)
        towers, shared = [], []
        for group, tower in (("user", self.user_tower), ("item", self.item_tower)):
            if tower is not None:
                vectors = self.embeddings.group_vectors(emb, group)
                towers.append(tower(vectors, training=training))
                shared.append(vectors)
        if self.spec.group("context"):
            shared.append(self.embeddings.group_vectors(emb, "context"))
        return tf.concat(towers + shared, axis=1)


def _labels_of(spec: FeatureSpec, click_label: str | None, conversion_label: str | None) -> tuple[str, str]:
    if click_label and conversion_label:
        return click_label, conversion_label
    if len(spec.labels) != 2:
        raise SchemaError(f"ESMM needs two labels (click, conversion); the spec lists {spec.labels}",
                          fix="list the labels in that order, e.g. labels ['click', 'conversion']")
    return spec.labels[0], spec.labels[1]


class ESMM(RecsysModel):
    """pCTR, pCVR and pCTCVR = pCTR * pCVR from raw features (see the module docstring for the math).

    ``call(features) -> {"ctr", "cvr", "ctcvr"}``, each ``[B]``. ``compute_loss((features, labels))``
    reads ``labels[click_label]`` and ``labels[conversion_label]`` (default: the spec's two labels in
    that order); the towers never see a label.

    Args:
      spec: the feature spec.
      embedding_dim, tower_units, dropout, l2_reg, precision: as :class:`ImpressionEncoder`'s;
        ``dropout`` and ``precision`` also apply to the CTR and CVR heads.
      hidden_units: the heads' ReLU layers, each head ending in one logit.
      ctr_loss_weight: ``w_ctr``.
      ctcvr_loss_weight: ``w_ctcvr``.
      click_label: the click label's name.
      conversion_label: the conversion label's name.

    Raises:
      SchemaError: no label names are given and the spec does not list exactly two labels.
    """

    def __init__(self, spec: FeatureSpec, *, embedding_dim: int = 16, tower_units: Sequence[int] = (32,),
                 hidden_units: Sequence[int] = (256, 128, 64), dropout: float = 0.0, l2_reg: float = 0.0,
                 ctr_loss_weight: float = 1.0, ctcvr_loss_weight: float = 1.0, click_label: str | None = None,
                 conversion_label: str | None = None, precision: str = "float32"):
        super().__init__()
        self.spec = spec
        self.click_label, self.conversion_label = _labels_of(spec, click_label, conversion_label)
        self.ctr_loss_weight = float(ctr_loss_weight)
        self.ctcvr_loss_weight = float(ctcvr_loss_weight)
        self.encoder = ImpressionEncoder(spec, embedding_dim=embedding_dim, tower_units=tower_units,
                                         dropout=dropout, l2_reg=l2_reg, precision=precision)
        self.ctr_tower = _head(hidden_units, dropout, "ctr_tower", precision)
        self.cvr_tower = _head(hidden_units, dropout, "cvr_tower", precision)
        self.ctr_task = _bce_task("ctr_task", "ctr_auc")
        self.ctcvr_task = _bce_task("ctcvr_task", "ctcvr_auc")

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        h = self.encoder(features, training=training)
        ctr = tf.sigmoid(self.ctr_tower(h, training=training)[:, 0])
        cvr = tf.sigmoid(self.cvr_tower(h, training=training)[:, 0])
        return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        out = self(features, training=training)
        click = tf.cast(labels[self.click_label], tf.float32)
        ctcvr_label = click * tf.cast(labels[self.conversion_label], tf.float32)
        ctr_loss = self.ctr_task(labels=click[:, None], predictions=_clip(out["ctr"])[:, None])
        ctcvr_loss = self.ctcvr_task(labels=ctcvr_label[:, None], predictions=_clip(out["ctcvr"])[:, None])
        return self.global_loss(self.ctr_loss_weight * ctr_loss + self.ctcvr_loss_weight * ctcvr_loss)


class ClickedCVR(RecsysModel):
    """The baseline ESMM is measured against: pCVR fitted on clicked impressions only.

    Same encoder and CVR tower as :class:`ESMM`; ``L = BCE(conversion, pCVR)``. Its training data
    must be the clicked rows (the trainer filters them), which is exactly the sample-selection
    bias: it is then asked to score every impression. ``call(features) -> {"cvr": [B]}``.

    Args:
      spec, embedding_dim, tower_units, hidden_units, dropout, l2_reg, precision: as :class:`ESMM`'s.
      conversion_label: the conversion label's name (default: the spec's second label).
    """

    def __init__(self, spec: FeatureSpec, *, embedding_dim: int = 16, tower_units: Sequence[int] = (32,),
                 hidden_units: Sequence[int] = (256, 128, 64), dropout: float = 0.0, l2_reg: float = 0.0,
                 conversion_label: str | None = None, precision: str = "float32"):
        super().__init__()
        self.spec = spec
        self.conversion_label = conversion_label or _labels_of(spec, None, None)[1]
        self.encoder = ImpressionEncoder(spec, embedding_dim=embedding_dim, tower_units=tower_units,
                                         dropout=dropout, l2_reg=l2_reg, precision=precision)
        self.cvr_tower = _head(hidden_units, dropout, "cvr_tower", precision)
        self.task = _bce_task("cvr_task", "cvr_auc")

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        h = self.encoder(features, training=training)
        return {"cvr": tf.sigmoid(self.cvr_tower(h, training=training)[:, 0])}

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        cvr = self(features, training=training)["cvr"]
        return self.global_loss(self.task(labels=tf.cast(labels[self.conversion_label], tf.float32)[:, None],
                                          predictions=_clip(cvr)[:, None]))
