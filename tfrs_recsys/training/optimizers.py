"""The rankers' optimizer: sparse Adagrad on the embedding tables, Adam on every other variable.

A step's cost on an embedding table follows the rows its batch looks up, not the table's size. The
tables' gradients are ``tf.IndexedSlices`` (one row per lookup), and Adagrad applies one as a scatter:
only the looked-up rows and their accumulators are read and written,

    a_r <- a_r + g_r^2,    E[r] <- E[r] - lr g_r / sqrt(a_r)        for each touched row r.

(Adam on such a gradient still decays its two moments over the whole table every step.) The other
variables (MLPs, numeric-feature vectors, biases) are dense and small, and train with Adam. TFRS'
``CompositeOptimizer`` routes each variable to its optimizer.

``embedding_l2`` regularizes the touched rows: after the replicas' gradients are summed, every row
the global batch looks up gets the gradient of ``embedding_l2 * ||E[r]||^2`` added once, however often
the batch uses it. The step is the step on the loss ``L + embedding_l2 * sum_{r touched} ||E[r]||^2``,
the same with one replica or several. Rows no batch looks up are left as they are.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf
import tensorflow_recommenders as tfrs

GradsAndVars = list[tuple[tf.Tensor | tf.IndexedSlices, tf.Variable]]


def embedding_tables(model: tf.keras.Model) -> list[tf.Variable]:
    """The tables of ``model``'s ``tf.keras.layers.Embedding`` layers (built ones)."""
    return [layer.embeddings for layer in model.submodules
            if isinstance(layer, tf.keras.layers.Embedding) and layer.built]


def touched_row_l2(weight: float) -> Callable[[GradsAndVars], GradsAndVars]:
    """A gradient transformer: adds ``2 weight E[r]`` once to the gradient of each row ``r`` that an
    ``IndexedSlices`` gradient touches (the gradient of ``weight * ||E[r]||^2``).

    Args:
      weight: the L2 weight; 0 leaves the gradients as they are.

    Returns:
      A function of ``[(gradient, variable)]`` for ``gradient_transformers`` of a
      ``tf.keras.optimizers.legacy`` optimizer (applied after the replicas' gradients are summed).
    """
    def transform(grads_and_vars: GradsAndVars) -> GradsAndVars:
        out = []
        for grad, var in grads_and_vars:
            if weight and isinstance(grad, tf.IndexedSlices):
                rows, _ = tf.unique(grad.indices)
                penalty = 2.0 * weight * tf.gather(var, rows)
                grad = tf.IndexedSlices(tf.concat([grad.values, tf.cast(penalty, grad.values.dtype)], 0),
                                        tf.concat([grad.indices, rows], 0), grad.dense_shape)
            out.append((grad, var))
        return out

    return transform


def ranker_optimizer(model: tf.keras.Model, *, learning_rate: float, embedding_learning_rate: float,
                     embedding_l2: float = 0.0) -> tfrs.experimental.optimizers.CompositeOptimizer:
    """Adagrad with touched-row L2 on ``model``'s embedding tables, Adam on the rest.

    The variables are looked up when the first step runs, so ``model`` may be unbuilt. Create it
    under the strategy the model was built under.

    Args:
      model: the model to train.
      learning_rate: Adam's learning rate.
      embedding_learning_rate: Adagrad's learning rate for the tables.
      embedding_l2: weight of the L2 penalty on the rows a step touches (see the module docstring).

    Returns:
      The optimizer, for ``model.compile``.
    """
    def dense() -> list[tf.Variable]:
        tables = {table.ref() for table in embedding_tables(model)}
        return [v for v in model.trainable_variables if v.ref() not in tables]

    return tfrs.experimental.optimizers.CompositeOptimizer([
        (tf.keras.optimizers.legacy.Adagrad(embedding_learning_rate,
                                            gradient_transformers=[touched_row_l2(embedding_l2)]),
         lambda: embedding_tables(model)),
        (tf.keras.optimizers.legacy.Adam(learning_rate), dense),
    ])
