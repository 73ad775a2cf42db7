"""What every model here shares: a ``tfrs.Model`` whose training step is right under ``tf.distribute``.

Under a strategy with ``R`` replicas (``MirroredStrategy`` over local devices,
``MultiWorkerMirroredStrategy`` over processes), Keras splits each GLOBAL batch of ``N`` examples
into ``R`` local batches, every replica computes its gradients, and the optimizer SUMS them across
replicas before applying them. For the update to be that of one process on the whole batch, each
replica's loss must be its share of the global-batch mean::

    L_r = sum_{i in local batch r} l_i / N          so that   sum_r L_r = (1/N) sum_i l_i

:func:`global_batch_mean` computes ``L_r`` (with ``N = R * local size`` unless a fixed count is
given); with the default strategy (``R = 1``) it is the ordinary mean. Keras' own reductions cannot
do this inside a custom ``compute_loss``: ``SUM_OVER_BATCH_SIZE`` raises under a strategy, and
TFRS' default ``SUM`` is not normalized at all. So every task here returns per-example losses and
the model reduces them.

:class:`RecsysModel` is TFRS' step with the two other pieces distribution needs: layer
(regularization) losses, computed per replica on its local batch, are scaled by ``1/R`` the same
way, and the logged values are Keras metrics (``loss``: the mean per-example loss of the epoch so
far, ``regularization_loss``, and the tasks' metrics), which are aggregated over all replicas when
read, so every worker logs the same global numbers.
"""
from __future__ import annotations

import inspect
import types

import tensorflow as tf
import tensorflow_recommenders as tfrs


def replicas_in_sync() -> int:
    """``R``: replicas training in sync under the current strategy (1 without one)."""
    return (tf.distribute.get_replica_context() or tf.distribute.get_strategy()).num_replicas_in_sync


def global_batch_mean(per_example: tf.Tensor, global_batch_size: float | None = None) -> tf.Tensor:
    """This replica's share of the mean over the global batch: ``sum(per_example) / N``.

    ``N`` is ``global_batch_size`` when given (e.g. the mean number of targets of a global batch,
    when batches hold different numbers of them), else ``R * len(per_example)``. Summed over the
    replicas, as the optimizer sums their gradients, this is the global-batch mean. An empty local
    batch contributes 0.

    Args:
      per_example: this replica's per-example losses, any shape.
      global_batch_size: ``N``, or None for ``R`` times the local count.

    Returns:
      A scalar.
    """
    per_example = tf.reshape(tf.convert_to_tensor(per_example), [-1])
    count = tf.size(per_example) * replicas_in_sync() if global_batch_size is None else global_batch_size
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), tf.cast(count, per_example.dtype))


class RecsysModel(tfrs.Model):
    """``tfrs.Model`` with a step that is the same computation with 1 or ``R`` replicas.

    Subclasses implement ``compute_loss`` as TFRS asks, returning ``self.global_loss(per_example)``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Logs are not model state: the trackers sit in a plain namespace, which TensorFlow's object
        # tracking does not look into, so checkpoints (and runs saved before the trackers existed)
        # hold model variables only. ``metrics`` lists them, so Keras still resets them every epoch.
        self.trackers = types.SimpleNamespace(
            loss=tf.keras.metrics.Mean(name="loss"),
            regularization=tf.keras.metrics.Mean(name="regularization_loss"))
        # Logged values are metric results, already aggregated over replicas; Keras' default for
        # multi-worker training would SUM them over workers once more.
        self.distribute_reduction_method = "first"

    @classmethod
    def from_spec(cls, spec, cfg) -> "RecsysModel":
        """The model of ``spec`` with every option of its ``__init__`` that ``cfg`` has a field for.

        Args:
          spec: the :class:`~tfrs_recsys.data.schema.FeatureSpec` the model reads.
          cfg: the model's config (:mod:`tfrs_recsys.config`), or anything with its fields.

        Returns:
          ``cls(spec, **options)``.
        """
        names = [name for name in inspect.signature(cls.__init__).parameters if name != "spec"]
        return cls(spec, **{name: getattr(cfg, name) for name in names if hasattr(cfg, name)})

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return [self.trackers.loss, self.trackers.regularization] + super().metrics

    def global_loss(self, per_example: tf.Tensor, global_batch_size: float | None = None) -> tf.Tensor:
        """Log the per-example losses and return this replica's share of their global-batch mean.

        Args:
          per_example: the per-example losses of this replica's batch.
          global_batch_size: see :func:`global_batch_mean`.

        Returns:
          The scalar loss to differentiate.
        """
        self.trackers.loss.update_state(tf.reshape(per_example, [-1]))
        return global_batch_mean(per_example, global_batch_size)

    def _regularization_loss(self) -> tf.Tensor:
        """Layer losses (e.g. embedding L2 on a batch's rows), each replica's scaled by ``1/R``."""
        if not self.losses:
            return tf.constant(0.0)
        per_replica = tf.add_n([tf.reduce_sum(loss) for loss in self.losses])
        self.trackers.regularization.update_state(per_replica)
        return per_replica / tf.cast(replicas_in_sync(), per_replica.dtype)

    def _logs(self) -> dict[str, tf.Tensor]:
        logs = {m.name: m.result() for m in self.metrics if m is not self.trackers.regularization}
        if self.losses:
            logs["regularization_loss"] = self.trackers.regularization.result()
        return logs

    def train_step(self, inputs):
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            total_loss = loss + self._regularization_loss()
        gradients = tape.gradient(total_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._logs()

    def test_step(self, inputs):
        self.compute_loss(inputs, training=False)
        self._regularization_loss()
        return self._logs()
