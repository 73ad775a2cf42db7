"""The rankers' training fast path: rows encoded once and bfloat16 MLP products (each the same model as
the plain path it replaces), and sparse table updates (only the rows a batch looks up; the row L2 is
an L2 on them; the optimizer's state survives a checkpoint)."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfrs_recsys.config import PRECISIONS, ConfigError, DeepFMConfig, ESMMConfig
from tfrs_recsys.data.pipelines import labeled_dataset
from tfrs_recsys.data.schema import frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.synthetic import synthetic_ctr_logs, synthetic_sessions
from tfrs_recsys.features.preprocessing import ENCODED, FeaturePreprocessor, as_encoded, encode_frame
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.models.esmm import ESMM
from tfrs_recsys.models.mlp import TrainingDense, cpu_has_native_bfloat16, resolve_precision
from tfrs_recsys.training import rankers
from tfrs_recsys.training.optimizers import embedding_tables, ranker_optimizer


@pytest.fixture(scope="module")
def logs():
    data = synthetic_ctr_logs(700, seed=3, num_users=60, num_items=50)
    return data.frame, infer_schema(data.frame, data.labels, user_column="user_id", item_column="item_id")


@pytest.fixture(scope="module")
def sessions():
    data = synthetic_sessions(40, 10, seed=3, num_items=400)
    return data.frame, infer_schema(data.frame, data.labels, session_column="session_id",
                                    user_column="user_id", item_column="item_id")


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
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=0.05,
                               atol=0.05 * np.abs(grads[1]).max())


def test_precision_choices():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    native = cpu_has_native_bfloat16() and not tf.config.list_physical_devices("GPU")
    assert resolve_precision("auto") == ("mixed_bfloat16" if native else "float32") == resolve_precision(None)
    with pytest.raises(ConfigError, match="field 'precision' = 'fp8'.*--precision auto"):
        ESMMConfig(precision="fp8")
    assert "auto" in PRECISIONS


MILLION = 1_000_000


def _hashed_items(logs, buckets: int):
    """The CTR logs' spec with ``item_id`` hashed into ``buckets`` rows."""
    frame, spec = logs
    features = [dataclasses.replace(f, encoding="hash", num_buckets=buckets, vocabulary=None)
                if f.name == "item_id" else f for f in spec.features]
    return frame, dataclasses.replace(spec, features=features)


def _batch(frame, spec, rows: int):
    return next(iter(labeled_dataset(frame.head(rows), spec, batch_size=rows, shuffle=False)))


def test_a_step_on_a_million_row_table_reads_and_writes_only_the_batch_rows(logs):
    """One DeepFM step (the ranker optimizer, row L2 on): exactly the rows of the batch's item ids
    change, and no tensor of the step's graph is the size of the table (no dense gradient, moment
    decay or whole-table read)."""
    frame, spec = _hashed_items(logs, MILLION)
    model = DeepFM(spec, embedding_dim=4, hidden_units=(8,))
    features, labels = _batch(frame, spec, 64)
    model(features)
    table = next(t for t in embedding_tables(model) if t.shape == (MILLION, 4))
    model.compile(ranker_optimizer(model, learning_rate=1e-3, embedding_learning_rate=0.1, embedding_l2=0.01))
    before = table.numpy()

    @tf.function
    def step(features, labels):
        return model.train_step((features, labels))

    step(features, labels)
    changed = np.flatnonzero(np.any(table.numpy() != before, axis=1))
    touched = np.unique(model.preprocessor(features)["item_id"].numpy())
    assert MILLION > len(touched) > 10
    np.testing.assert_array_equal(changed, touched)
    graph = step.get_concrete_function(features, labels).graph
    full = [op.name for op in graph.get_operations() for t in op.outputs
            if t.shape.rank is not None and MILLION in t.shape.as_list()]
    assert not full, full[:5]


def test_embedding_l2_is_an_l2_penalty_on_the_rows_a_step_touches():
    """Steps with ``embedding_l2`` in the optimizer are the steps on the loss plus
    ``embedding_l2 * sum ||E[r]||^2`` over the distinct rows looked up (once each, however often);
    untouched rows stay as they were."""
    ids = tf.constant([[1, 2, 2], [7, 1, 1]])
    weights = {}
    for where in ("optimizer", "loss", "none"):
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 3),
                                     tf.keras.layers.GlobalAveragePooling1D(), tf.keras.layers.Dense(1)])
        model(ids)
        table = embedding_tables(model)[0]
        initial = table.numpy()
        optimizer = ranker_optimizer(model, learning_rate=0.01, embedding_learning_rate=0.1,
                                     embedding_l2=0.5 if where == "optimizer" else 0.0)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(ids) ** 2)
                if where == "loss":
                    loss += 0.5 * tf.reduce_sum(tf.gather(table, tf.constant([1, 2, 7])) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        weights[where] = model.get_weights()
        untouched = [0, 3, 4, 5, 6, 8, 9]
        np.testing.assert_array_equal(table.numpy()[untouched], initial[untouched])
    for with_optimizer, with_loss, without in zip(weights["optimizer"], weights["loss"], weights["none"]):
        np.testing.assert_allclose(with_optimizer, with_loss, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights["optimizer"][0], weights["none"][0])


@pytest.mark.parametrize("which", ["deepfm", "esmm"])
def test_training_resumes_from_a_checkpoint_with_the_optimizer_state(which, logs, sessions, tmp_path):
    """A checkpoint holds the optimizer's state (row-wise Adagrad accumulators, Adam moments, step counts): a
    fresh model that loads it takes the same next step as the model that wrote it."""
    frame, spec = logs if which == "deepfm" else sessions
    config_cls = DeepFMConfig if which == "deepfm" else ESMMConfig
    cfg = config_cls(embedding_dim=4, hidden_units=(8,), embedding_l2=0.01)
    batches = tf.data.Dataset.from_tensors(_batch(frame, spec, 64))

    def build():
        model = (DeepFM if which == "deepfm" else ESMM).from_spec(spec, cfg)
        rankers.compile_ranker(model, cfg)
        return model

    trained = build()
    trained.fit(batches.repeat(3), epochs=1, verbose=0)
    trained.save_weights(str(tmp_path / "ckpt"))
    resumed = build()
    # The optimizer's slots are restored when its first step creates them.
    resumed.load_weights(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    for model in (trained, resumed):
        model.fit(batches, epochs=1, verbose=0)
    for a, b in zip(trained.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
