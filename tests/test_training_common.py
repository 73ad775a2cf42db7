"""The run directory as training writes it: per-epoch log, early stopping, best weights, curves."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys import runs
from tfrs_recsys.config_sources import build_config
from tfrs_recsys.training.common import EpochEvaluator, plot_curves


# The best weights read back from the checkpoint, or kept in memory without one.
@pytest.mark.parametrize("save_checkpoint", [True, False])
def test_evaluator_logs_stops_early_and_restores_best(tmp_path, save_checkpoint):
    cfg = build_config("deepfm", {"output_dir": str(tmp_path / "run")}, environ={})
    run_dir = runs.create(cfg, "deepfm")
    assert json.loads((run_dir / runs.CONFIG).read_text())["model"] == "deepfm"

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], dtype="float32"))[:, None]
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(4,))])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")

    # A validation score that peaks at epoch 3 and then falls: training must stop
    # after `patience` worse epochs and come back to epoch 3's weights.
    script = iter([0.1, 0.2, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1])
    weights_seen = {}

    def eval_fn(m):
        epoch = len(weights_seen) + 1
        weights_seen[epoch] = [w.copy() for w in m.get_weights()]
        return {"score": next(script)}

    evaluator = EpochEvaluator(eval_fn, run_dir, monitor="score", patience=2, save_checkpoint=save_checkpoint)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0, callbacks=[evaluator])

    rows = runs.read_train_log(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert all("loss" in r and "val_score" in r for r in rows)
    assert evaluator.best_epoch == 3
    for restored, best in zip(model.get_weights(), weights_seen[3]):
        np.testing.assert_allclose(restored, best)
    assert rows[-1]["loss"] < rows[0]["loss"]  # the model itself did learn
    assert (run_dir / "checkpoints").is_dir() == save_checkpoint
    png = plot_curves(run_dir)
    assert png == run_dir / runs.CURVES and png.stat().st_size > 1000
    assert (run_dir / runs.TRAIN_LOG).read_text().count("\n") == 5


def test_evaluator_averages_the_best_epoch_with_the_epochs_after_it(tmp_path):
    # Peak at epoch 2, then a better epoch 4 restarts the average: the final weights are the mean of
    # epochs 4, 5 and 6 (patience 2), and the checkpoint on disk holds that mean.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([1.0, -1.0, 2.0], "float32"))[:, None]
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    script, seen = iter([0.1, 0.5, 0.4, 0.8, 0.7, 0.6, 0.9]), []

    def eval_fn(m):
        seen.append(m.get_weights())
        return {"score": next(script)}

    evaluator = EpochEvaluator(eval_fn, run_dir, monitor="score", patience=2, average_after_best=True)
    model.fit(x, y, epochs=7, batch_size=16, shuffle=False, verbose=0, callbacks=[evaluator])

    assert (evaluator.best_epoch, evaluator.averaged_epochs, len(seen)) == (4, 2, 6)
    assert not np.allclose(seen[3][0], seen[5][0])  # the epochs differ, so the mean is not any one of them
    for final, *epochs in zip(model.get_weights(), seen[3], seen[4], seen[5]):
        np.testing.assert_allclose(final, np.mean(epochs, axis=0), rtol=1e-6, atol=1e-7)
    fresh = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(3,))])
    fresh.load_weights(str(run_dir / runs.CHECKPOINT)).expect_partial()
    for loaded, final in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_allclose(loaded, final)


def test_default_run_directory_is_runs_model_timestamp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_config("esmm", {"epochs": "2"}, environ={})
    run_dir = runs.create(cfg, "esmm")
    assert re.fullmatch(r"runs/esmm-\d{8}-\d{6}", cfg.output_dir) and run_dir == Path(cfg.output_dir)
    saved = json.loads((tmp_path / cfg.output_dir / runs.CONFIG).read_text())
    assert saved["config"]["output_dir"] == cfg.output_dir  # rerunning the file writes to the same place
    assert build_config("esmm", environ={}, config_file=run_dir / runs.CONFIG) == cfg


def test_evaluator_survives_a_metric_that_is_never_finite(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    evaluator = EpochEvaluator(lambda m: {"score": float("nan"), "note": "text"}, run_dir, monitor="score",
                               patience=2)
    model.fit(np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32"), epochs=4, verbose=0,
              callbacks=[evaluator])
    rows = runs.read_train_log(run_dir)
    assert len(rows) == 2 and rows[0]["val_score"] is None and rows[0]["val_note"] == "text"
    assert evaluator.best_epoch is None
