"""DeepFM: the FM term against an explicit pairwise sum, one bias, shared embeddings, learning end to end."""
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import dataset_path

import tfrs_recsys  # noqa: F401
from tfrs_recsys import metrics as M
from tfrs_recsys.config import DeepFMConfig
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.schema import frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.synthetic import synthetic_ctr_logs
from tfrs_recsys.models.deepfm import DeepFM, FactorizationMachine
from tfrs_recsys.training import deepfm as deepfm_training
from tfrs_recsys.training import rankers


@pytest.fixture(scope="module")
def logs():
    return synthetic_ctr_logs(600, seed=11, num_users=50, num_items=40)


@pytest.fixture(scope="module")
def spec(logs):
    return infer_schema(logs.frame, logs.labels, user_column="user_id", item_column="item_id")


def _raw(frame, spec):
    return {k: tf.constant(v) for k, v in frame_to_raw(frame, spec).items()}


def _pairwise(v: np.ndarray) -> np.ndarray:
    """sum_{i<j} <v_i, v_j> per row, by explicit loops over field pairs."""
    out = np.zeros(v.shape[0])
    for i, j in itertools.combinations(range(v.shape[1]), 2):
        out += np.sum(v[:, i, :].astype(np.float64) * v[:, j, :], axis=1)
    return out


def test_fm_term_equals_the_explicit_pairwise_sum():
    v = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(FactorizationMachine()(tf.constant(v)).numpy(), _pairwise(v), rtol=1e-5,
                               atol=1e-5)


def test_fm_gradient_equals_the_gradient_of_the_explicit_pairwise_sum():
    """The FM term's hand-written gradient (s - v_i, scaled by the upstream gradient) against automatic
    differentiation of sum_{i<j} <v_i, v_j> written as explicit pairs."""
    rng = np.random.default_rng(1)
    v = tf.constant(rng.normal(size=(6, 4, 3)), tf.float32)
    upstream = tf.constant(rng.normal(size=6), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(v)
        fm = tf.reduce_sum(upstream * FactorizationMachine()(v))
        pairs = tf.add_n([tf.reduce_sum(v[:, i] * v[:, j], axis=1)
                          for i, j in itertools.combinations(range(4), 2)])
        explicit = tf.reduce_sum(upstream * pairs)
    np.testing.assert_allclose(tape.gradient(fm, v).numpy(), tape.gradient(explicit, v).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_model_fm_part_is_the_pairwise_sum_of_its_field_vectors(logs, spec):
    model = DeepFM(spec, embedding_dim=4, hidden_units=(8,))
    features = _raw(logs.frame.head(20), spec)
    field_vectors = model.embeddings(model.preprocessor(features))["field_vectors"].numpy()
    assert field_vectors.shape == (20, len(spec.features), 4)
    parts = model.logit_parts(features)
    np.testing.assert_allclose(parts["fm"].numpy(), _pairwise(field_vectors), rtol=1e-4, atol=1e-6)


def test_three_logits_summed_with_one_bias(logs, spec):
    model = DeepFM(spec, embedding_dim=4, hidden_units=(8,))
    model.bias.assign(0.37)
    features = _raw(logs.frame.head(20), spec)
    parts = {k: v.numpy() for k, v in model.logit_parts(features).items()}
    assert set(parts) == {"first_order", "fm", "dnn"}
    expected = 1 / (1 + np.exp(-(parts["first_order"] + parts["fm"] + parts["dnn"] + 0.37)))
    np.testing.assert_allclose(model(features)["ctr"].numpy(), expected, rtol=1e-5)
    assert not model.dnn_logit.use_bias
    scalars = [v for v in model.trainable_variables if v.shape.rank == 0]
    assert len(scalars) == 1 and scalars[0] is model.bias


def test_fm_and_dnn_share_the_field_embeddings(logs, spec):
    model = DeepFM(spec, embedding_dim=4, hidden_units=(8,))
    features = _raw(logs.frame.head(64), spec)
    model(features)
    tables = [layer.embeddings for name, layer in model.embeddings._tables.items()]
    assert len(tables) == sum(f.is_categorical for f in spec.features)
    for part in ("fm", "dnn"):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(model.logit_parts(features)[part])
        grads = tape.gradient(value, tables)
        assert all(g is not None and np.any(tf.convert_to_tensor(g).numpy()) for g in grads), part


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), epochs=3, batch_size=256, learning_rate=3e-3, patience=2,
                progress=False, synthetic_rows=20000, seed=5, embedding_dim=8, hidden_units=(64, 32))
    base.update(kw)
    if base.get("dataset", "synthetic") != "synthetic":  # synthetic sizes are an error for other datasets
        for key in ("synthetic_rows",):
            base.pop(key)
    return DeepFMConfig(**base)


def test_deepfm_learns_synthetic_ctr_logs_end_to_end(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    metrics = deepfm_training.run(cfg)
    assert "warning" not in capsys.readouterr().err  # it learned: no advice
    # Baseline on the same split: each item's training CTR (what a popularity ranker knows).
    _, split = rankers.load_and_split(_cfg(tmp_path), "deepfm")
    item_ctr = split.train.groupby("item_id")["label"].mean()
    popularity = split.test["item_id"].map(item_ctr).fillna(split.train["label"].mean())
    popularity_auc = M.auc(split.test["label"], popularity)
    assert metrics["auc"] > 0.64
    assert metrics["auc"] > popularity_auc + 0.01
    assert metrics["gauc"] > 0.55 and metrics["gauc_group_column"] == "user_id"
    assert metrics["gauc_groups_used"] > 0
    assert metrics["logloss"] < 0.33  # a constant at the base rate (~0.1) scores about 0.325
    run = tmp_path / "run"
    assert json.loads((run / "test_metrics.json").read_text())["auc"] == pytest.approx(metrics["auc"])
    for name in ("config.json", "spec.json", "train_log.jsonl", "training_curves.png",
                 "checkpoints/best.index"):
        assert (run / name).is_file(), name
    spec = json.loads((run / "spec.json").read_text())
    kinds = {f["name"]: f["kind"] for f in spec["features"]}
    assert kinds["item_tags"] == "multi_categorical" and kinds["item_hotness"] == "numeric"


def test_deepfm_runs_on_the_criteo_sample(tmp_path, datasets_dir):
    path = dataset_path(datasets_dir, "criteo", "dac_train_head1000.txt")
    metrics = deepfm_training.run(_cfg(tmp_path, dataset="criteo", data_dir=str(path), epochs=3,
                                       batch_size=64))
    assert math.isfinite(metrics["auc"]) and math.isfinite(metrics["logloss"])
    assert "gauc" not in metrics  # Criteo has no user column
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    # The model fits its training rows (running training AUC) and validates above chance on real clicks.
    assert log[-1]["auc"] > 0.6
    assert max(row["val_auc"] for row in log) > 0.55


def test_a_ranker_that_learns_nothing_says_what_to_try(tmp_path, capsys):
    """Labels independent of every feature: the best validation AUC stays near 0.5, and the run says so."""
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"user_id": rng.integers(200, size=n), "item_id": rng.integers(100, size=n),
                          "price": rng.normal(size=n).round(3), "label": rng.integers(2, size=n)})
    frame.to_csv(tmp_path / "noise.csv", index=False)
    deepfm_training.run(_cfg(tmp_path, dataset="csv", data_dir=str(tmp_path / "noise.csv"),
                             label_columns=("label",), epochs=2))
    err = capsys.readouterr().err
    assert "deepfm: warning: the best validation auc" in err and "--learning-rate, now 0.003" in err
    assert "more data (now" in err


def test_a_non_binary_label_is_refused_with_the_fix(tmp_path, logs):
    path = tmp_path / "ratings.csv"
    frame = logs.frame.assign(label=np.arange(len(logs.frame)) % 5 + 1)
    frame.to_csv(path, index=False)
    cfg = _cfg(tmp_path, dataset="csv", data_dir=str(path), label_columns=("label",), user_column="user_id",
               item_column="item_id")
    with pytest.raises(DataError, match="label must be 0 or 1") as err:
        deepfm_training.run(cfg)
    assert err.value.column == "label" and "binarize" in err.value.fix
    logs.frame.assign(label=1).to_csv(path, index=False)  # a log of clicks alone: nothing to tell apart
    with pytest.raises(DataError, match="1 on every row") as err:
        deepfm_training.run(cfg)
    assert "impressions not clicked" in err.value.fix


def test_a_few_huge_values_leave_a_numeric_feature_its_signal():
    """0.1% of bids at 1e9 once set the scale (std 3e7), so every normal bid standardized to one value."""
    rng = np.random.default_rng(7)
    bid = rng.uniform(0.1, 5.0, 4000)
    label = (rng.random(4000) < 1 / (1 + np.exp(-2.0 * (bid - 2.5)))).astype(int)
    bid[rng.choice(4000, 4, replace=False)] = 1e9
    frame = pd.DataFrame({"bid_price": bid, "device": rng.choice(["m", "d"], 4000), "label": label})
    spec = infer_schema(frame, ["label"])
    column, normal = spec["bid_price"], bid < 1e3
    assert 5.0 < column.clip_high < 100 and column.clip_low <= 0.1 and column.std < 10
    standardized = DeepFM(spec, embedding_dim=4, hidden_units=(8,)).preprocessor(_raw(frame, spec))
    assert np.std(standardized["bid_price"].numpy()[normal]) > 0.1
    old = {k: v for k, v in json.loads(json.dumps(spec.to_dict())).items()}
    old["features"] = [{k: v for k, v in f.items() if k not in ("clip_low", "clip_high")}
                       for f in old["features"]]
    unclipped = type(spec).from_dict(old)["bid_price"]  # a spec written before the bounds
    assert unclipped.clip_high is None
    tf.keras.utils.set_random_seed(0)
    model = DeepFM(spec, embedding_dim=4, hidden_units=(8,))
    optimizer = tf.keras.optimizers.Adam(0.05)
    raw, target = _raw(frame, spec), tf.constant(label, tf.float32)
    for step in range(40):
        rows = np.arange(step * 100, step * 100 + 100) % 4000
        batch = {k: tf.gather(v, rows) for k, v in raw.items()}
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.binary_crossentropy(tf.gather(target, rows), model(batch)["ctr"])
        weights = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
    assert M.auc(label, model(raw)["ctr"].numpy()) > 0.75  # the bids' own ranking: about 0.83
