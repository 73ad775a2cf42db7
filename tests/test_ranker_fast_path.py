"""The rankers' training fast path: rows encoded once, bfloat16 MLP products, fused Adam, table L2.
Each must be the same model (or the same update) as the plain path it replaces."""
import numpy as np
import pytest

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tfrs_recsys.config import PRECISIONS, ConfigError, DeepFMConfig, ESMMConfig
from tfrs_recsys.data.schema import frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.synthetic import synthetic_ctr_logs, synthetic_sessions
from tfrs_recsys.features.embeddings import FieldEmbeddings
from tfrs_recsys.features.preprocessing import ENCODED, FeaturePreprocessor, as_encoded, encode_frame
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.models.esmm import ESMM
from tfrs_recsys.models.mlp import TrainingDense, cpu_has_native_bfloat16, resolve_precision
from tfrs_recsys.training import rankers
from tfrs_recsys.training.optimizers import (ADAM_KERNEL_SPLITS_FROM, AMSGRAD_KERNEL_MAX_ELEMENTS, FusedAdam,
                                              uses_amsgrad_kernel)


@pytest.fixture(scope="module")
def logs():
    data = synthetic_ctr_logs(700, seed=3, num_users=60, num_items=50)
    return data.frame, infer_schema(data.frame, data.labels, user_column="user_id", item_column="item_id")


@pytest.fixture(scope="module")
def sessions():
    data = synthetic_sessions(40, 10, seed=3, num_items=400)
    return data.frame, infer_schema(data.frame, data.labels, session_column="session_id", user_column="user_id",
                                    item_column="item_id")


def _raw(frame, spec):
    return {k: tf.constant(v) for k, v in frame_to_raw(frame, spec).items()}


def test_encode_frame_is_the_preprocessor_on_all_rows(logs):
    frame, spec = logs
    assert any(f.kind == "multi_categorical" for f in spec.features)
    # Chunks of 64 rows: the multi-valued features' chunks differ in width and must be padded alike.
    encoded = encode_frame(frame, spec, chunk=64)
    direct = FeaturePreprocessor(spec)(_raw(frame, spec))
    assert set(encoded) == set(direct)
    for key, value in direct.items():
        np.testing.assert_array_equal(encoded[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize("which", ["deepfm", "esmm"])
def test_a_model_scores_encoded_batches_as_it_scores_raw_ones(which, logs, sessions):
    frame, spec = logs if which == "deepfm" else sessions
    model = (DeepFM(spec, embedding_dim=4, hidden_units=(8,)) if which == "deepfm"
             else ESMM(spec, embedding_dim=4, tower_units=(8,), hidden_units=(8,)))
    rows = frame.head(50)
    encoded = as_encoded({k: tf.constant(v) for k, v in encode_frame(rows, spec).items()})
    from_raw, from_encoded = model(_raw(rows, spec)), model(encoded)
    for name, value in from_raw.items():
        np.testing.assert_allclose(from_encoded[name].numpy(), value.numpy(), rtol=1e-6, err_msg=name)
    labels = {k: tf.constant(rows[k].to_numpy(np.float32)) for k in spec.labels}
    loss_raw = model.compute_loss((_raw(rows, spec), labels))
    assert float(model.compute_loss((encoded, labels))) == pytest.approx(float(loss_raw), rel=1e-6)
    # The training pipeline yields encoded batches (no strings), every row once per epoch.
    cfg = (DeepFMConfig if which == "deepfm" else ESMMConfig)(batch_size=32, seed=1)
    ds, steps = rankers.training_dataset(rows, spec, cfg)
    batches = [features[ENCODED] for features, _ in ds.take(steps)]
    assert steps == 2 and all(v.dtype != tf.string for v in batches[0].values())
    column = next(f.name for f in spec.features if f.kind == "numeric")
    drawn = np.concatenate([b[column].numpy() for b in batches])
    np.testing.assert_array_equal(np.sort(drawn), np.sort(encoded[ENCODED][column].numpy()))


def test_training_dense_is_dense_at_inference_and_close_to_it_in_bfloat16_training():
    x = tf.random.stateless_normal([64, 48], seed=[1, 2])
    layer = TrainingDense(16, activation="relu", train_bfloat16=True)
    reference = tf.keras.layers.Dense(16, activation="relu")
    layer(x), reference(x)
    reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(x, training=False).numpy(), reference(x).numpy())
    trained = layer(x, training=True)
    assert trained.dtype == tf.float32
    np.testing.assert_allclose(trained.numpy(), reference(x).numpy(), rtol=0.03, atol=0.03)
    chained = TrainingDense(16, train_bfloat16=True, float32_output=False)
    assert chained(x, training=True).dtype == tf.bfloat16 and chained(x).dtype == tf.float32
    # Gradients reach the float32 kernel, close to the float32 ones.
    grads = []
    for fn in (lambda: layer(x, training=True), lambda: reference(x)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(fn() ** 2)
        grads.append(tape.gradient(value, layer.kernel if len(grads) == 0 else reference.kernel))
    assert grads[0].dtype == tf.float32
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=0.05, atol=0.05 * np.abs(grads[1]).max())


def test_precision_choices():
    assert resolve_precision("float32") == "float32" and resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    native = cpu_has_native_bfloat16() and not tf.config.list_physical_devices("GPU")
    assert resolve_precision("auto") == ("mixed_bfloat16" if native else "float32") == resolve_precision(None)
    with pytest.raises(ConfigError, match="field 'precision' = 'fp8'.*--precision auto"):
        ESMMConfig(precision="fp8")
    assert "auto" in PRECISIONS


def test_fused_adam_makes_the_same_updates_as_adam():
    """Dense and sparse gradients (repeated ids included), variables of every size class (each
    kernel FusedAdam picks), 20 steps whose gradients shrink and grow (v falls and rises): the same
    weights as Keras' Adam."""
    sizes = {"small table": (50, 4), "mid table": (300, 4), "large table": (AMSGRAD_KERNEL_MAX_ELEMENTS // 4 + 8, 4)}
    assert 50 * 4 < ADAM_KERNEL_SPLITS_FROM <= 300 * 4 <= AMSGRAD_KERNEL_MAX_ELEMENTS < sizes["large table"][0] * 4
    weights = []
    for cls in (tf.keras.optimizers.Adam, FusedAdam):
        tf.keras.utils.set_random_seed(0)
        tables = [tf.keras.layers.Embedding(*shape) for shape in sizes.values()]
        dense = tf.keras.layers.Dense(3)
        optimizer = cls(0.01)

        @tf.function
        def step(ids, scale):
            with tf.GradientTape() as tape:
                vectors = sum(tf.reduce_sum(table(ids), axis=1) for table in tables)
                loss = scale * tf.reduce_sum(dense(vectors) ** 2)
            variables = [t.embeddings for t in tables] + dense.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

        for i in range(20):
            step(tf.constant([[1, 2, 2, 7], [3, 1, 1, 1]]) * (1 + i % 3), tf.constant(1e-3 if i % 2 else 1.0))
        weights.append([w.numpy() for table in tables for w in table.weights] + [w.numpy() for w in dense.weights])
        if cls is FusedAdam:
            kernels = {op.type for op in step.get_concrete_function(
                tf.TensorSpec([2, 4], tf.int32), tf.TensorSpec([], tf.float32)).graph.get_operations()}
            assert "ResourceApplyAdam" in kernels
            # The mid-size table takes the AMSGrad kernel wherever the intra-op pool has several threads.
            assert ("ResourceApplyAdamWithAmsgrad" in kernels) == uses_amsgrad_kernel(300 * 4)
    for adam, fused in zip(*weights):
        np.testing.assert_allclose(fused, adam, rtol=1e-5, atol=1e-6)


def test_fused_adam_builds_the_step_scalars_once_for_all_variables():
    """beta_1^t and beta_2^t: two Pow ops in a traced step over three variables, not two per variable."""
    variables = [tf.Variable(tf.ones([4, 2])), tf.Variable(tf.ones([3])), tf.Variable(tf.ones([2, 2]))]
    optimizer = FusedAdam(0.01)
    optimizer.build(variables)

    @tf.function
    def step():
        optimizer.apply_gradients(zip([tf.ones_like(v) for v in variables], variables))

    pows = [op for op in step.get_concrete_function().graph.get_operations() if op.type == "Pow"]
    assert len(pows) == 2


def test_fused_adam_keeps_no_scratch_state(tmp_path):
    """The v_hat scratch is a kernel argument: a checkpoint holds the same variables as plain Adam's."""
    saved = {}
    for cls in (tf.keras.optimizers.Adam, FusedAdam):
        variables = [tf.Variable(tf.ones([300, 4])), tf.Variable(tf.ones([3]))]
        optimizer = cls(0.01)
        optimizer.apply_gradients(zip([tf.ones_like(v) for v in variables], variables))
        path = tf.train.Checkpoint(optimizer=optimizer, variables=variables).save(str(tmp_path / cls.__name__))
        saved[cls] = sorted(name for name, _ in tf.train.list_variables(path)
                            if "OPTIMIZER_SLOT" not in name and not name.startswith("_CHECKPOINTABLE"))
        assert not any("scratch" in name for name in saved[cls])
    assert len(saved[FusedAdam]) == len(saved[tf.keras.optimizers.Adam])


def test_fused_adam_never_compiles_with_xla_even_with_a_gpu_visible(monkeypatch):
    """Keras' optimizers turn XLA on when a GPU is visible; FusedAdam's kernels stay outside it."""
    from tf_keras.src.optimizers import optimizer as keras_optimizer

    listed = keras_optimizer.tf.config.list_physical_devices
    monkeypatch.setattr(keras_optimizer.tf.config, "list_physical_devices",
                        lambda kind=None: ["a GPU"] if kind == "GPU" else listed(kind))
    assert tf.keras.optimizers.Adam(0.01, jit_compile=True).jit_compile is True  # the GPU is seen
    assert FusedAdam(0.01, jit_compile=True).jit_compile is False


def test_fused_adam_sums_repeated_ids_in_one_pass():
    """A sparse gradient with repeated ids: one segment sum into the dense gradient, no Unique (Keras'
    separate merge of repeated ids), and the repeated rows' gradients added up."""
    table = tf.Variable(tf.zeros([5, 2]))
    optimizer = FusedAdam(0.1)
    optimizer.build([table])
    ids = tf.constant([1, 3, 1, 1])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, ids) * tf.constant([[1.0, -1.0]]))
        optimizer.apply_gradients([(tape.gradient(loss, table), table)])

    types = [op.type for op in step.get_concrete_function().graph.get_operations()]
    assert "Unique" not in types
    assert types.count("UnsortedSegmentSum") == 1
    step()
    # Adam's first step moves every coordinate with a nonzero gradient by lr, whatever its size.
    np.testing.assert_allclose(table.numpy(), [[0, 0], [-0.1, 0.1], [0, 0], [-0.1, 0.1], [0, 0]], atol=1e-6)
    assert float(optimizer._momentums[0][1, 0]) == pytest.approx(0.1 * 3)


def test_table_l2_is_the_whole_tables_squared_norm(logs):
    frame, spec = logs
    layer = FieldEmbeddings(spec, 4, table_l2=0.1)
    features = FeaturePreprocessor(spec)(_raw(frame.head(8), spec))
    with tf.GradientTape() as tape:
        layer(features)
        penalty = layer.losses[-1]
    tables = [t.embeddings for t in layer._tables.values()]
    assert float(penalty) == pytest.approx(0.1 * sum(float(tf.reduce_sum(t ** 2)) for t in tables), rel=1e-5)
    # Every row is pulled toward 0, not only the rows of the batch's ids.
    grads = tape.gradient(penalty, tables)
    assert all(np.all(tf.convert_to_tensor(g).numpy() != 0) for g in grads)
