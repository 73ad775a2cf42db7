"""ESMM: the model's math, its loss on a hand example, label isolation, learning known truth end to end."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import dataset_path

import tfrs_recsys  # noqa: F401
from tfrs_recsys import evaluate
from tfrs_recsys.config import ESMMConfig
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec, SchemaError, frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.synthetic import synthetic_sessions
from tfrs_recsys.models.esmm import ESMM, PROB_EPSILON
from tfrs_recsys.training import esmm as esmm_training


@pytest.fixture(scope="module")
def sessions():
    return synthetic_sessions(300, 10, seed=7, num_items=400)


@pytest.fixture(scope="module")
def spec(sessions):
    return infer_schema(sessions.frame, sessions.labels, session_column="session_id", user_column="user_id",
                        item_column="item_id")


def _raw(frame, spec):
    return {k: tf.constant(v) for k, v in frame_to_raw(frame, spec).items()}


def test_ctcvr_is_exactly_ctr_times_cvr(sessions, spec):
    model = ESMM(spec, embedding_dim=4, tower_units=(8,), hidden_units=(8,))
    out = {k: v.numpy() for k, v in model(_raw(sessions.frame.head(64), spec)).items()}
    assert set(out) == {"ctr", "cvr", "ctcvr"}
    assert all(v.shape == (64,) and v.dtype == np.float32 for v in out.values())
    np.testing.assert_array_equal(out["ctcvr"], out["ctr"] * out["cvr"])
    assert np.all((out["ctr"] > 0) & (out["ctr"] < 1) & (out["cvr"] > 0) & (out["cvr"] < 1))


def _bce(y, p):
    p = np.clip(p.astype(np.float64), PROB_EPSILON, 1 - PROB_EPSILON)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def test_loss_on_a_hand_example(sessions, spec):
    """L = w_ctr BCE(click, pCTR) + w_ctcvr BCE(click*conversion, pCTCVR) over all rows; no CVR term."""
    model = ESMM(spec, embedding_dim=4, tower_units=(8,), hidden_units=(8,), ctr_loss_weight=0.7,
                 ctcvr_loss_weight=1.3)
    features = _raw(sessions.frame.head(6), spec)
    click = np.array([1, 1, 0, 0, 1, 0], np.float32)
    conversion = np.array([1, 0, 0, 0, 1, 0], np.float32)
    out = {k: v.numpy() for k, v in model(features).items()}
    expected = 0.7 * _bce(click, out["ctr"]) + 1.3 * _bce(click * conversion, out["ctcvr"])
    loss = float(model.compute_loss((features,
                                     {"click": tf.constant(click), "conversion": tf.constant(conversion)})))
    assert loss == pytest.approx(expected, rel=1e-5)
    # A conversion flag on an unclicked row is no evidence of anything: ctcvr_label = click * conversion.
    flipped = conversion.copy()
    flipped[2] = 1
    loss_flipped = float(model.compute_loss((features, {"click": tf.constant(click),
                                                         "conversion": tf.constant(flipped)})))
    assert loss_flipped == pytest.approx(loss, rel=1e-6)


def test_cvr_tower_learns_only_through_ctcvr(sessions, spec):
    """No direct CVR loss: with the CTCVR weight at 0 the CVR tower gets no gradient at all."""
    model = ESMM(spec, embedding_dim=4, tower_units=(8,), hidden_units=(8,), ctcvr_loss_weight=0.0)
    frame = sessions.frame.head(32)
    labels = {k: tf.constant(frame[k].to_numpy(np.float32)) for k in ("click", "conversion")}
    features = _raw(frame, spec)
    model(features)
    with tf.GradientTape() as tape:
        loss = model.compute_loss((features, labels), training=True)
    grads = tape.gradient(loss, model.cvr_tower.trainable_variables + model.ctr_tower.trainable_variables)
    n_cvr = len(model.cvr_tower.trainable_variables)
    assert all(g is None or not np.any(g.numpy()) for g in grads[:n_cvr])
    assert any(g is not None and np.any(g.numpy()) for g in grads[n_cvr:])


def test_no_label_can_reach_the_features(sessions, spec):
    assert not {"click", "conversion"} & set(spec.feature_names)
    assert not {"true_ctr", "true_cvr", "true_ctcvr"} & set(sessions.frame.columns)
    with pytest.raises(SchemaError, match="label"):
        FeatureSpec(spec.features + [FeatureColumn("click", "numeric")], labels=["click", "conversion"])
    # Label values sent alongside the features change nothing: the model reads spec features only.
    model = ESMM(spec, embedding_dim=4, tower_units=(8,), hidden_units=(8,))
    frame = sessions.frame.head(16)
    features = _raw(frame, spec)
    base = model(features)["ctcvr"].numpy()
    for value in (0.0, 1.0):
        with_labels = {**features, "click": tf.fill([16], value), "conversion": tf.fill([16], value)}
        np.testing.assert_array_equal(model(with_labels)["ctcvr"].numpy(), base)


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), epochs=3, batch_size=256, learning_rate=3e-3, patience=2,
                progress=False, synthetic_sessions=1500, session_size=20, seed=3, embedding_dim=8,
                hidden_units=(64, 32), tower_units=(32,))
    base.update(kw)
    if base.get("dataset", "synthetic") != "synthetic":  # synthetic sizes are an error for other datasets
        for key in ("synthetic_sessions", "session_size",):
            base.pop(key)
    return ESMMConfig(**base)


def test_esmm_learns_synthetic_sessions_end_to_end(tmp_path):
    metrics = esmm_training.run(_cfg(tmp_path))
    run = tmp_path / "run"
    # Labels are learned well above chance (0.5), and pCVR tracks the true CVR of every impression.
    assert metrics["ctr_auc"] > 0.68
    assert metrics["ctcvr_auc"] > 0.62
    assert metrics["cvr_true_spearman"] > 0.25
    assert metrics["cvr_true_auc"] > 0.58
    assert 0.5 < metrics["gauc"] <= 1.0
    assert metrics["gauc_group_column"] == "user_id"
    assert metrics["gauc_groups_used"] > 0 and metrics["gauc_groups_skipped"] >= 0
    assert 0 < metrics["session_ndcg@10"] <= 1
    assert metrics["session_ndcg_sessions_used"] > 0 and "conversion=2" in metrics["session_ndcg_gain"]
    for key in ("baseline_cvr_auc_clicked", "baseline_cvr_true_auc", "cvr_auc_clicked", "logloss"):
        assert math.isfinite(metrics[key])
    saved = json.loads((run / "test_metrics.json").read_text())
    assert saved["ctr_auc"] == pytest.approx(metrics["ctr_auc"])
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert 1 <= len(log) <= 3 and all("val_ctr_auc" in row and row["ctr_auc"] > 0 for row in log)
    for name in ("config.json", "spec.json", "split.json", "training_curves.png", "checkpoints/best.index"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    spec = FeatureSpec.load(run / "spec.json")
    assert spec.labels == ["click", "conversion"] and spec.session_column == "session_id"
    # The evaluate CLI scores the run's test rows again and reports the session NDCG training reported.
    assert evaluate.main(["--run-dir", str(run), "--ndcg-k", "10", "--json", str(run / "evaluate.json")]) == 0
    evaluated = json.loads((run / "evaluate.json").read_text())["ndcg"]
    assert evaluated["value"] == pytest.approx(metrics["session_ndcg@10"], rel=1e-9)
    assert evaluated["groups_used"] == metrics["session_ndcg_sessions_used"]


def test_esmm_runs_on_the_aliexpress_sample(tmp_path, datasets_dir):
    path = dataset_path(datasets_dir, "aliexpress", "fuxictr_tiny_mtl_train.csv")
    metrics = esmm_training.run(_cfg(tmp_path, dataset="aliexpress", data_dir=str(path), epochs=2,
                                     batch_size=128, baseline=False))
    assert math.isfinite(metrics["ctr_auc"]) and math.isfinite(metrics["logloss"])
    assert metrics["gauc_group_column"] == "search_id"  # no user column: GAUC over search sessions
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row["loss"]) for row in log)


def test_esmm_runs_on_the_ali_ccp_sample(tmp_path, datasets_dir):
    path = dataset_path(datasets_dir, "ali-ccp", "torchrechub_ali_ccp_train_sample.csv")
    metrics = esmm_training.run(_cfg(tmp_path, dataset="ali-ccp", data_dir=str(path), epochs=1, batch_size=32,
                                     baseline=False))
    assert math.isfinite(metrics["ctr_logloss"]) and metrics["rows"] == 10


@pytest.mark.slow
def test_esmm_cvr_beats_the_clicked_only_baseline_on_the_entire_space(tmp_path):
    """The ESMM paper's claim, measured on known truth: pCVR orders ALL impressions (the rarely clicked
    hotels included) more like the true CVR than a CVR model fitted on clicked rows does, each model
    early-stopped on its own validation metric."""
    metrics = esmm_training.run(_cfg(tmp_path, synthetic_sessions=5000, epochs=8, batch_size=512,
                                     learning_rate=1e-3, embedding_dim=16, hidden_units=(256, 128, 64),
                                     tower_units=(32,)))
    assert metrics["cvr_true_spearman"] > metrics["baseline_cvr_true_spearman"] + 0.02


def test_labels_in_the_wrong_order_are_refused_with_the_fix(tmp_path, sessions):
    path = tmp_path / "impressions.csv"
    sessions.frame.to_csv(path, index=False)
    cfg = _cfg(tmp_path, dataset="csv", data_dir=str(path), label_columns=("conversion", "click"),
               session_column="session_id", user_column="user_id", item_column="item_id")
    with pytest.raises(DataError, match="a conversion without a click \\(.* such rows") as err:
        esmm_training.run(cfg)
    assert err.value.column == "click" and "click,conversion" in err.value.fix


def test_a_label_of_one_value_is_refused_with_what_to_train(tmp_path, sessions, caplog):
    clicked = sessions.frame[sessions.frame["click"] == 1]
    for frame, column, said in ((clicked, "click", "--label-columns conversion (a clicked-only model)"),
                                (sessions.frame.assign(conversion=0), "conversion", "check --label-columns")):
        path = tmp_path / "impressions.csv"
        frame.to_csv(path, index=False)
        cfg = _cfg(tmp_path, dataset="csv", data_dir=str(path), label_columns=("click", "conversion"),
                   session_column="session_id", user_column="user_id", item_column="item_id")
        with pytest.raises(DataError, match="on every row") as err:
            esmm_training.run(cfg)
        assert err.value.column == column and said in err.value.fix
    from tfrs_recsys.data.label_checks import check_two_valued

    with caplog.at_level("WARNING"):  # a streamed file's first rows, sorted by the label: warned, not refused
        check_two_valued({"click": np.ones(50), "conversion": np.zeros(50)}, True, sample=True)
    assert "in the sample read to check the data" in caplog.text
