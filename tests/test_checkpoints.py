"""A model's weights read back from its checkpoint a few variables at a time land where load_weights puts
them."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrs_recsys import runs
from tfrs_recsys.checkpoints import read_weights, variable_paths
from tfrs_recsys.config import DeepFMConfig
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.models.deepfm import DeepFM


class Towers(tf.keras.Model):
    """Layers in a list and in a nested layer: paths through both kinds of child."""

    def __init__(self):
        super().__init__()
        self.tables = [tf.keras.layers.Embedding(50, 4), tf.keras.layers.Embedding(30, 4)]
        self.head = tf.keras.Sequential([tf.keras.layers.Dense(8), tf.keras.layers.Dense(1)])

    def call(self, ids):
        return self.head(tf.concat([self.tables[0](ids[:, 0]), self.tables[1](ids[:, 1])], axis=1))


def _deepfm() -> DeepFM:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"click": rng.integers(0, 2, 300),
                          "user_id": [f"u{i}" for i in rng.integers(0, 40, 300)],
                          "item_id": [f"i{i}" for i in rng.integers(0, 60, 300)], "price": rng.random(300)})
    spec = infer_schema(frame, ["click"], user_column="user_id", item_column="item_id")
    model = DeepFM.from_spec(spec, DeepFMConfig(embedding_dim=4, hidden_units=(8,)))
    runs.build_ranker(model, spec)
    return model


@pytest.mark.parametrize("make", [_deepfm, lambda: Towers()])
@pytest.mark.parametrize("max_bytes", [1, 1 << 30])  # one variable per read; all in one read
def test_weights_read_in_groups_equal_the_saved_ones(tmp_path, make, max_bytes):
    model = make()
    if isinstance(model, Towers):
        model(tf.zeros([2, 2], tf.int32))
    for weight in model.weights:
        weight.assign(tf.random.normal(weight.shape, seed=1) if weight.dtype.is_floating else weight)
    saved = [w.numpy().copy() for w in model.weights]
    model.save_weights(str(tmp_path / "best"))
    for weight in model.weights:
        weight.assign(tf.zeros_like(weight))
    assert len(variable_paths(model)) >= len(model.weights)
    read_weights(model, tmp_path / "best", max_bytes=max_bytes)
    for name, before, after in zip([w.name for w in model.weights], saved, model.get_weights()):
        np.testing.assert_array_equal(before, after, err_msg=name)


def test_a_weight_missing_from_the_checkpoint_is_an_error(tmp_path):
    small, large = Towers(), Towers()
    small(tf.zeros([2, 2], tf.int32))
    small.save_weights(str(tmp_path / "best"))
    large.extra = tf.keras.layers.Dense(3)
    large(tf.zeros([2, 2], tf.int32))
    large.extra(tf.zeros([1, 2]))
    with pytest.raises(AssertionError):
        read_weights(large, tmp_path / "best")


def test_a_checkpoint_cut_short_is_named_with_the_fix_not_a_traceback(tmp_path):
    from tfrs_recsys.checkpoints import DamagedCheckpointError

    model = Towers()
    model(tf.zeros([2, 2], tf.int32))
    model.save_weights(str(tmp_path / "best"))
    data = next(tmp_path.glob("best.data-*"))
    data.write_bytes(data.read_bytes()[:100])  # a copy cut short
    with pytest.raises(DamagedCheckpointError, match="damaged or cut short") as error:
        read_weights(model, tmp_path / "best")
    assert error.value.path == str(tmp_path / "best") and "--overwrite" in error.value.fix
