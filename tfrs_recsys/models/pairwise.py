"""Pairwise losses: for the same user, a liked item should score above a disliked one.

For a query ``u`` with a liked item ``i+`` and a disliked (or sampled unseen) item ``i-``, let
``d = s(u, i+) - s(u, i-)`` be the score margin of the triple. Per triple:

* ``bpr`` (Bayesian personalized ranking, Rendle et al. 2009): ``L = -log sigmoid(d) = softplus(-d)``;
* ``triplet`` (hinge): ``L = max(0, margin - d)``: zero once the liked item leads by ``margin``.

:class:`PairwiseTask` returns these per-triple losses (times ``sample_weight``) and the model
reduces them to the global-batch mean (:mod:`tfrs_recsys.models.base`), like every task here.
:class:`PairwiseAccuracy` is the share of triples with ``d > 0``, ties counted half: the AUC of
the training pairs.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_recsys.config import PAIRWISE_LOSSES


class PairwiseAccuracy(tf.keras.metrics.Mean):
    """Mean of ``1[s+ > s-] + 0.5 * 1[s+ == s-]`` over triples: the pairwise AUC of what it has seen."""

    def __init__(self, name: str = "pairwise_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, positive_scores, negative_scores, sample_weight=None):
        positive_scores = tf.convert_to_tensor(positive_scores, tf.float32)
        negative_scores = tf.convert_to_tensor(negative_scores, tf.float32)
        correct = (tf.cast(positive_scores > negative_scores, tf.float32)
                   + 0.5 * tf.cast(positive_scores == negative_scores, tf.float32))
        return super().update_state(correct, sample_weight=sample_weight)


class PairwiseTask(tf.keras.layers.Layer, tfrs.tasks.base.Task):
    """Loss and metrics of (user, liked item, disliked item) triples, given their two scores.

    Args:
      loss: ``"bpr"`` or ``"triplet"``.
      margin: the triplet loss's margin, > 0, in score units.
      metrics: updated with ``(positive_scores, negative_scores)``; default one :class:`PairwiseAccuracy`.

    Raises:
      ValueError: an unknown loss, or a triplet margin <= 0.
    """

    def __init__(self, loss: str = "bpr", margin: float = 1.0,
                 metrics: list[tf.keras.metrics.Metric] | None = None, **kwargs):
        super().__init__(**kwargs)
        if loss not in PAIRWISE_LOSSES:
            raise ValueError(f"pairwise loss must be one of {PAIRWISE_LOSSES}, got {loss!r}")
        if loss == "triplet" and not margin > 0:
            raise ValueError(f"the triplet loss needs margin > 0, got {margin}")
        self.loss_name = loss
        self.margin = float(margin)
        self.pairwise_metrics = [PairwiseAccuracy()] if metrics is None else list(metrics)

    def call(self, positive_scores: tf.Tensor, negative_scores: tf.Tensor,
             sample_weight: tf.Tensor | None = None, compute_metrics: bool = True) -> tf.Tensor:
        """Per-triple losses ``[B]`` (weighted when ``sample_weight`` is given); updates the metrics."""
        positive_scores = tf.cast(positive_scores, tf.float32)
        negative_scores = tf.cast(negative_scores, tf.float32)
        lead = positive_scores - negative_scores
        # -log sigmoid(d) as softplus(-d): no overflow for large margins.
        losses = tf.nn.softplus(-lead) if self.loss_name == "bpr" else tf.nn.relu(self.margin - lead)
        if sample_weight is not None:
            losses = losses * tf.cast(sample_weight, losses.dtype)
        if compute_metrics:
            for metric in self.pairwise_metrics:
                metric.update_state(positive_scores, negative_scores, sample_weight=sample_weight)
        return losses
