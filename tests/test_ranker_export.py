"""Ranker export: the CLI writes a versioned SavedModel whose raw-feature signature, loaded in a FRESH
process with plain TensorFlow, reproduces the trained model's scores, and takes unknown ids."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys import runs
from tfrs_recsys.config import DeepFMConfig, ESMMConfig
from tfrs_recsys.data.schema import frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.splits import random_split, split_by_session
from tfrs_recsys.data.synthetic import synthetic_ctr_logs, synthetic_sessions
from tfrs_recsys.export.tfserving import read_export_metadata
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.models.esmm import ESMM
from tfrs_recsys.servable_layout import read_warmup_requests
from tfrs_recsys.training import rankers

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter with TensorFlow only: nothing of this package is imported.
SCORER = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    fn = loaded.signatures["serving_default"]
    data = np.load(sys.argv[2])
    out = fn(**{k: tf.constant(data[k]) for k in data.files})
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
""")


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


def _train(tmp_path, name, model, cfg, data, split, spec):
    cfg.output_dir = str(tmp_path / f"run-{name}")
    run_dir = runs.create(cfg, name)
    runs.write_ranker_files(run_dir, spec, split)
    evaluate = (lambda m: {"score": float(np.mean(rankers.predict(m, split.validation, spec)["ctr"]))})
    rankers.fit(model, cfg, split.train, spec, run_dir, eval_fn=evaluate, monitor="score")
    runs.mark_complete(run_dir)  # what training's end writes: export takes complete runs only
    return run_dir


def _odd_rows(frame: pd.DataFrame, spec) -> pd.DataFrame:
    """Rows with ids, categories and tags never seen in training, and missing numbers."""
    odd = frame.head(3).copy()
    for f in spec.features:
        if f.is_categorical and f.kind != "multi_categorical":
            odd[f.name] = ["never-seen-1", "", "never-seen-2"]
        elif f.kind == "multi_categorical":
            odd[f.name] = ["unknown_tag|tag_01", "", "x|y|z"]
        elif f.kind == "numeric":
            odd[f.name] = [np.nan, 250.0, -3.0]
    return odd


@pytest.fixture(scope="module")
def esmm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("esmm")
    data = synthetic_sessions(300, 10, seed=2, num_items=400)
    split = split_by_session(data.frame, "session_id", seed=2)
    spec = infer_schema(split.train, data.labels, session_column="session_id", user_column="user_id",
                        item_column="item_id")
    cfg = ESMMConfig(epochs=1, batch_size=128, embedding_dim=4, tower_units=(8,), hidden_units=(16,),
                     progress=False)
    tf.keras.utils.set_random_seed(2)
    model = ESMM.from_spec(spec, cfg)
    return _train(tmp, "esmm", model, cfg, data, split, spec), model, spec, split, tmp


@pytest.fixture(scope="module")
def deepfm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deepfm")
    data = synthetic_ctr_logs(2000, seed=2, num_users=100, num_items=80)
    split = random_split(data.frame, test_fraction=0.1, validation_fraction=0.1, seed=2)
    spec = infer_schema(split.train, data.labels, user_column="user_id", item_column="item_id")
    cfg = DeepFMConfig(epochs=1, batch_size=128, embedding_dim=4, hidden_units=(16,), progress=False)
    tf.keras.utils.set_random_seed(2)
    model = DeepFM.from_spec(spec, cfg)
    return _train(tmp, "deepfm", model, cfg, data, split, spec), model, spec, split, tmp


def _export_cli(model: str, run_dir: Path, base: Path, name: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tfrs_recsys.export", model, "--model-dir", str(run_dir),
                           "--export-base", str(base), "--name", name],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def _score_in_fresh_process(export_dir: Path, rows: dict, tmp: Path) -> dict:
    inputs = {k: (v.astype(bytes) if v.dtype == object else v) for k, v in rows.items()}
    np.savez(tmp / "inputs.npz", **inputs)
    proc = subprocess.run([sys.executable, "-c", SCORER, str(export_dir), str(tmp / "inputs.npz"),
                           str(tmp / "outputs.npz")], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp / "outputs.npz") as out:
        return {k: out[k] for k in out.files}


@pytest.mark.parametrize("which", ["esmm", "deepfm"])
def test_fresh_process_reproduces_the_trained_scores(which, esmm_run, deepfm_run):
    run_dir, model, spec, split, tmp = esmm_run if which == "esmm" else deepfm_run
    result = _export_cli(which, run_dir, tmp / "serving", which)
    export_dir = Path(result["export_dir"])
    assert export_dir == tmp / "serving" / which / "1" and (export_dir / "saved_model.pb").is_file()
    frame = pd.concat([split.test.head(200), _odd_rows(split.test, spec)])
    expected = {k: v.astype(np.float32) for k, v in rankers.predict(model, frame, spec).items()}
    got = _score_in_fresh_process(export_dir, frame_to_raw(frame, spec), tmp)
    outputs = ("ctr", "cvr", "ctcvr") if which == "esmm" else ("ctr",)
    assert set(got) == set(outputs)
    for name in outputs:
        assert got[name].dtype == np.float32 and got[name].shape == (len(frame),)
        assert np.all(np.isfinite(got[name])) and np.all((got[name] >= 0) & (got[name] <= 1))
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7)
    # Unknown ids fall into the OOV bucket: scored, and unlike each other only through the other features.
    assert len(set(np.round(got["ctr"][-3:], 6))) >= 2


@pytest.mark.parametrize("which", ["esmm", "deepfm"])
def test_signature_takes_raw_features_and_names_its_outputs(which, esmm_run, deepfm_run):
    from tfrs_recsys.export.describe import describe, input_note
    from tfrs_recsys.export.rankers import export_ranker

    run_dir, _, spec, _, tmp = esmm_run if which == "esmm" else deepfm_run
    base = tmp / "signature"
    first = export_ranker(run_dir, base, "ranker")
    second = export_ranker(run_dir, base, "ranker")
    assert (first.name, second.name) == ("1", "2")
    # no temporary dirs left: the versions and the marker of the numbers handed out
    assert sorted(p.name for p in (base / "ranker").iterdir()) == [".last_version", "1", "2"]

    signature = tf.saved_model.load(str(second)).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert set(inputs) == set(spec.feature_names)
    assert not set(inputs) & set(spec.labels)
    # user and item ids are strings; other integer categories (here the synthetic codes) are int64
    want = {f.name: tf.int64 if f.raw_dtype == "int64" else tf.string if f.is_categorical else
            tf.float64 if f.kind == "timestamp" else tf.float32 for f in spec.features}
    assert want[spec.user_column] == want[spec.item_column] == tf.string
    for f in spec.features:
        assert inputs[f.name].dtype == want[f.name]
        assert inputs[f.name].shape.as_list() == [None]
    outputs = ("ctr", "cvr", "ctcvr") if which == "esmm" else ("ctr",)
    assert set(signature.structured_outputs) == set(outputs)

    meta = read_export_metadata(second)
    assert meta["model"] == which and meta["version"] == 2
    assert [(i["name"], i["dtype"]) for i in meta["inputs"]] == [(f.name, want[f.name].name)
                                                                  for f in spec.features]
    assert set(meta["outputs"]) == set(outputs)
    assert (second / "assets.extra" / "feature_spec.json").is_file()
    described = describe(base / "ranker")["inputs"]  # what a client writes, beside dtypes and shapes
    assert {f.kind for f in spec.features} & {"multi_categorical", "timestamp"}
    for f in spec.features:
        assert described[f.name]["kind"] == f.kind
        if f.kind == "multi_categorical":
            assert input_note(described[f.name]).startswith(f"several values joined by {f.separator!r}")
        if f.kind == "timestamp":
            assert input_note(described[f.name]).startswith("epoch seconds")
    warmup = read_warmup_requests(second)
    assert len(warmup) == 1
    request = warmup[0].predict_log.request
    assert (request.model_spec.signature_name == "serving_default"
            and set(request.inputs) == set(spec.feature_names))


def test_runs_reads_back_the_run_that_training_wrote(deepfm_run):
    run_dir, model, spec, split, _ = deepfm_run
    run, loaded, loaded_spec = runs.load_ranker(run_dir, "deepfm")
    assert run.model_name == "deepfm" and run.config.embedding_dim == 4 and run.config.hidden_units == (16,)
    assert loaded_spec.feature_names == spec.feature_names and loaded_spec.labels == spec.labels
    frame = split.test.head(300)
    np.testing.assert_allclose(rankers.predict(loaded, frame, spec)["ctr"],
                               rankers.predict(model, frame, spec)["ctr"], rtol=1e-5)
    assert [row["epoch"] for row in runs.read_train_log(run_dir)] == [1]
    assert json.loads((run_dir / runs.SPLIT).read_text()) == json.loads(json.dumps(split.summary()))


def test_evaluate_scores_the_test_rows_of_a_run(esmm_run):
    """`evaluate --run-dir` rebuilds the run's split from its config and scores it with the best weights."""
    run_dir, model, spec, _, tmp = esmm_run
    proc = subprocess.run([sys.executable, "-m", "tfrs_recsys.evaluate", "--run-dir", str(run_dir), "--json",
                           str(tmp / "eval.json")], capture_output=True, text=True, env=_env(), cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = pd.read_parquet(run_dir / runs.PREDICTIONS.format(part="test"))
    test = rankers.load_and_split(runs.open_run(run_dir).config, "esmm")[1].test
    assert len(scored) == len(test) and {"p_ctr", "p_cvr", "p_ctcvr"} <= set(scored)
    np.testing.assert_allclose(scored["p_ctr"], rankers.predict(model, test, spec)["ctr"], rtol=1e-5)
    assert set(json.loads((tmp / "eval.json").read_text())["tasks"]) == {"ctr", "cvr", "ctcvr"}


def test_export_refuses_a_run_of_another_model(esmm_run):
    run_dir, _, _, _, tmp = esmm_run
    proc = subprocess.run([sys.executable, "-m", "tfrs_recsys.export", "deepfm", "--model-dir", str(run_dir),
                           "--export-base", str(tmp / "wrong"), "--name", "x"],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "trained 'esmm', not 'deepfm'" in proc.stderr
    assert not (tmp / "wrong" / "x").exists() or not any((tmp / "wrong" / "x").iterdir())


def test_absurd_numbers_never_make_a_served_score_nan(deepfm_run):
    """A 3e38 number or a -1e38 time once overflowed DeepFM into ctr = NaN, answered with OK."""
    run_dir, _, spec, split, tmp = deepfm_run
    result = _export_cli("deepfm", run_dir, tmp / "absurd", "deepfm")
    rows = frame_to_raw(split.test.head(4), spec)
    kinds = {f.name: f.kind for f in spec.features}
    assert "numeric" in kinds.values() and "timestamp" in kinds.values()
    for name, kind in kinds.items():
        if kind in ("numeric", "timestamp"):
            rows[name] = np.array([3e38, -3e38, -1e38, 1e38], rows[name].dtype)
    got = _score_in_fresh_process(Path(result["export_dir"]), rows, tmp)
    assert np.all(np.isfinite(got["ctr"])) and np.all((got["ctr"] >= 0) & (got["ctr"] <= 1))
