"""RecsysModel's logs: reset by Keras like any metric, and never part of a checkpoint."""
import numpy as np
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys.models.base import RecsysModel


class Linear(RecsysModel):
    """``y ~ w x + b`` with a squared error, an L2 on ``w`` (a layer loss) and no other state."""

    def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(1, kernel_regularizer=tf.keras.regularizers.L2(1e-3))

    def compute_loss(self, inputs, training=False):
        x, y = inputs
        return self.global_loss(tf.square(self.dense(x)[:, 0] - y))


def test_logs_are_reset_every_run_and_never_checkpointed(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    model = Linear()
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    history = model.fit(data, epochs=3, verbose=0).history
    assert set(history) == {"loss", "regularization_loss"}
    assert history["loss"][2] < history["loss"][0]

    # evaluate's loss is the current model's mean squared error alone: the training epochs' values were reset
    kernel, bias = (v.numpy() for v in model.dense.weights)
    expected = np.mean((x @ kernel[:, 0] + bias[0] - y) ** 2)
    logs = model.evaluate(data, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(logs["regularization_loss"], 1e-3 * np.sum(kernel ** 2), rtol=1e-4)

    model.save_weights(str(tmp_path / "weights"))
    saved = {name for name, _ in tf.train.list_variables(str(tmp_path / "weights"))}
    assert not [name for name in saved if "/total/" in name or "/count/" in name], saved  # no Mean's state
    restored = Linear()
    restored.dense(tf.zeros([1, 3]))  # its variables exist, so a restore that misses them fails
    restored.load_weights(str(tmp_path / "weights")).expect_partial().assert_existing_objects_matched()
    np.testing.assert_array_equal(restored.dense.kernel.numpy(), kernel)
