"""Data, run directories, exports and feature stores on ``tf.io.gfile`` URLs instead of local paths.

No network: TensorFlow's in-memory ``ram://`` file system and ``file://`` URLs take the same
code path as gs:// (every read and write goes through ``tf.io.gfile``). Datasets, exports and
feature stores live on ram://. Run directories live on file:// URLs: ram:// does not truncate a
file it overwrites, and TensorFlow's checkpoint writer rewrites ``checkpoints/checkpoint`` every
epoch (file:// also reaches the CLI's process). What is checked is the product's behaviour: a
dataset read from URLs, a model trained into a URL run directory, exported to a URL base, and
the SavedModel loaded back from there answering exactly as an export to a local folder does.
"""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scann  # noqa: F401  (ScaNN's ops, before a ScaNN SavedModel is loaded)
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys import paths, runs
from tfrs_recsys.config import DeepFMConfig, RetrievalConfig
from tfrs_recsys.data.synthetic import synthetic_ctr_logs
from tfrs_recsys.data.synthetic_interactions import synthetic_histories
from tfrs_recsys.export.rankers import export_ranker
from tfrs_recsys.export.retrieval import export_retrieval
from tfrs_recsys.export.tfserving import existing_versions, read_export_metadata
from tfrs_recsys.model_server.servable import read_meta_graph
from tfrs_recsys.recommend import Recommender, recommend
from tfrs_recsys.servable_layout import read_warmup_requests, version_dirs
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.training import deepfm as deepfm_training
from tfrs_recsys.training import rankers
from tfrs_recsys.training import retrieval as retrieval_training

REPO = Path(__file__).resolve().parents[1]
MAX_HISTORY = 8


def _ram() -> str:
    """A fresh ram:// folder (the file system is shared by the whole test process)."""
    return f"ram://t-{uuid.uuid4().hex[:8]}"


def test_helpers_on_urls(tmp_path):
    root = _ram()
    assert paths.is_remote(root) and not paths.is_remote(tmp_path)
    assert paths.join("gs://bucket/", "runs", "a") == "gs://bucket/runs/a"
    assert paths.join(tmp_path, "a") == tmp_path / "a"
    assert (paths.basename("gs://bucket/base/rec/7") == "7"
            and paths.parent("gs://bucket/x/y") == "gs://bucket/x")

    paths.write_text(paths.join(root, "deep", "note.txt"), "one\n")  # parents of a URL come for free
    paths.append_text(paths.join(root, "deep", "note.txt"), "two\n")
    assert paths.read_text(paths.join(root, "deep", "note.txt")) == "one\ntwo\n"
    frame = pd.DataFrame({"a": [1, 2], "b": [["x"], ["y", "z"]]})
    paths.write_parquet(frame, paths.join(root, "t.parquet"))
    pd.testing.assert_frame_equal(paths.read_parquet(paths.join(root, "t.parquet")), frame)

    # A folder moves whole, even where the file system renames only the folder entry (ram://).
    for rel in ("saved_model.pb", "assets.extra/meta.json", "variables/variables.index"):
        paths.write_text(paths.join(root, "src", *rel.split("/")), rel)
    paths.rename(paths.join(root, "src"), paths.join(root, "dst"))
    for rel in ("saved_model.pb", "assets.extra/meta.json", "variables/variables.index"):
        assert paths.read_text(paths.join(root, "dst", *rel.split("/"))) == rel
    assert not paths.exists(paths.join(root, "src", "saved_model.pb"))
    with pytest.raises(FileExistsError):
        paths.rename(paths.join(root, "deep"), paths.join(root, "dst"))

    # file:// URLs go through tf.io.gfile too and land on the local disk.
    url = f"file://{tmp_path}/via-url"
    paths.write_text(paths.join(url, "f.txt"), "hello")
    assert (tmp_path / "via-url" / "f.txt").read_text() == "hello" and paths.listdir(url) == ["f.txt"]

    with pytest.raises(FileNotFoundError, match=f"{root}/missing.txt"):
        paths.read_bytes(paths.join(root, "missing.txt"))
    with pytest.raises(paths.RemotePathError, match="no file system for 'nosuchfs://'") as info:
        paths.read_bytes("nosuchfs://bucket/file")
    assert info.value.path == "nosuchfs://bucket/file" and info.value.fix
    try:
        import tensorflow_io  # noqa: F401
    except ImportError:  # without tensorflow-io this TensorFlow has no s3://: the error says how to get it
        with pytest.raises(paths.RemotePathError, match="s3://bucket/data.csv.*tensorflow-io"):
            paths.exists("s3://bucket/data.csv")


def _write_movielens_csv(root: str) -> pd.DataFrame:
    """A small ml-latest-small style folder (ratings.csv, movies.csv) at a URL; returns the ratings."""
    data = synthetic_histories(num_users=60, num_items=80, seed=3)
    ratings = data.interactions.rename(columns={"user_id": "userId", "item_id": "movieId"})
    movies = pd.DataFrame({"movieId": data.items["item_id"], "title": data.items["title"],
                           "genres": data.items["genres"].map("|".join)})
    paths.write_text(paths.join(root, "ratings.csv"), ratings.to_csv(index=False))
    paths.write_text(paths.join(root, "movies.csv"), movies.to_csv(index=False))
    return ratings


def _call(model, signature: str, feed: dict) -> dict:
    out = model.signatures[signature](**{k: tf.constant(v) for k, v in feed.items()})
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.slow  # ~40 s on 2 cores; the fast suite trains and exports a ranker on URLs below
def test_retrieval_trains_exports_and_serves_from_urls(tmp_path):
    root = _ram()
    ratings = _write_movielens_csv(paths.join(root, "data"))
    run = f"file://{tmp_path}/runs/retrieval"
    cfg = RetrievalConfig(dataset="movielens-csv", data_dir=paths.join(root, "data"), output_dir=run,
                          epochs=2, batch_size=32, embedding_dim=16, max_history=MAX_HISTORY, num_blocks=1,
                          ff_dim=16, patience=5, progress=False, protocol="leave_last_out", seed=3)
    metrics = retrieval_training.run(cfg)

    # The run directory, on the URL: config, per-epoch log, test metrics, best checkpoint, curves,
    # TensorBoard.
    for name in ("config.json", "test_metrics.json", "train_log.jsonl", "training_curves.png",
                 "checkpoints/best.index", "item_ids.txt", "histories.parquet", "retrieval_meta.json"):
        assert paths.isfile(paths.join(run, *name.split("/"))), name
    assert [row["epoch"] for row in runs.read_train_log(run)] == [1, 2]  # appended epoch by epoch
    assert paths.read_json(paths.join(run, "test_metrics.json")) == pytest.approx(metrics)
    assert paths.read_bytes(paths.join(run, "training_curves.png"))[:4] == b"\x89PNG"
    assert tf.io.gfile.glob(paths.join(run, "tensorboard", "validation", "events.out.tfevents.*"))
    assert paths.read_json(paths.join(run, "config.json"))["config"]["data_dir"] == paths.join(root, "data")

    trained = runs.load_retrieval(run)
    assert set(trained.histories) == set(ratings["userId"].astype(str))

    remote = export_retrieval(run, paths.join(root, "exports"), "rec", k=5)
    local = export_retrieval(run, tmp_path / "exports", "rec", k=5)
    assert remote["scann"] == paths.join(root, "exports", "rec", "1")
    assert existing_versions(paths.join(root, "exports", "rec")) == [1]
    assert not [n for n in paths.listdir(paths.join(root, "exports", "rec")) if n.startswith(".tmp")]
    assert read_export_metadata(remote["portable"])["source_run"] == run
    assert read_export_metadata(local["portable"])["source_run"] == run
    assert len(read_warmup_requests(remote["scann"])) == 2
    # The model server lists and reads versions under a URL base path the same way.
    assert version_dirs(paths.join(root, "exports", "rec")) == {1: remote["scann"]}
    assert set(read_meta_graph(remote["portable"]).signature_def) >= {"serving_default",
                                                                      "query_with_exclusions"}

    users = sorted(trained.histories)[:4]
    history = np.array([[""] * (MAX_HISTORY - len(h[-MAX_HISTORY:])) + h[-MAX_HISTORY:]
                        for h in (trained.histories[u] for u in users)], dtype=object)
    feed = {"user_id": np.array(users, dtype=object), "history": history}
    for kind in ("scann", "portable"):
        from_url = _call(tf.saved_model.load(remote[kind]), "serving_default", feed)
        from_disk = _call(tf.saved_model.load(local[kind]), "serving_default", feed)
        np.testing.assert_array_equal(from_url["item_ids"], from_disk["item_ids"])
        np.testing.assert_allclose(from_url["scores"], from_disk["scores"], rtol=1e-6)
    # ... and what the exports answer is what the trained model ranks first.
    want = [r["item_id"] for r in recommend(trained, users[0], 5)]
    assert from_url["item_ids"][0].astype(str).tolist() == want
    recommender = Recommender(trained)  # one for many users answers each as recommend() does
    asks = [(u, None, False) for u in users] + [(users[1], trained.histories[users[0]][:3], True),
                                                 ("stranger", None, False)]
    for user, history, exclude in asks:
        assert recommender.recommend(user, 5, history=history, exclude_seen=exclude) == recommend(
            trained, user, 5, history=history, exclude_seen=exclude)

    # The CLI takes the run directory as a URL.
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cli = subprocess.run([sys.executable, "-m", "tfrs_recsys.recommend", "--model-dir", run,
                          "--user-id", users[0], "--k", "5", "--keep-seen", "--json"], capture_output=True,
                         text=True, timeout=300, env=env, cwd=REPO)  # as recommend() ranks, history kept
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert [r["item_id"] for r in json.loads(cli.stdout)["items"]] == want
    with pytest.raises(runs.RunDirError, match=f"{root}/nothing: the run directory has no config.json"):
        runs.load_retrieval(paths.join(root, "nothing"))


def test_ranker_trains_and_exports_on_urls(tmp_path):
    root = _ram()
    logs = synthetic_ctr_logs(3000, seed=5)
    data_file = paths.join(root, "data", "clicks.parquet")
    paths.write_parquet(logs.frame, data_file, index=False)
    run = f"file://{tmp_path}/runs/deepfm"
    cfg = DeepFMConfig(dataset="parquet", data_dir=data_file, label_columns=("label",), user_column="user_id",
                       item_column="item_id", output_dir=run, epochs=2, batch_size=256, embedding_dim=4,
                       hidden_units=(8,), progress=False, seed=5)
    deepfm_training.run(cfg)
    for name in ("config.json", "spec.json", "split.json", "test_metrics.json", "checkpoints/best.index"):
        assert paths.isfile(paths.join(run, *name.split("/"))), name

    remote = export_ranker(run, paths.join(root, "exports"), "ranker")
    local = export_ranker(run, tmp_path / "exports", "ranker")
    assert paths.isfile(paths.join(remote, "assets.extra", "feature_spec.json"))
    assert (read_export_metadata(remote)["test_metrics"]
            == paths.read_json(paths.join(run, "test_metrics.json")))

    _, model, spec = runs.load_ranker(run)
    rows = logs.frame.head(50)
    from tfrs_recsys.data.input_names import signature_name
    from tfrs_recsys.data.schema import frame_to_raw

    feed = {signature_name(k): v for k, v in frame_to_raw(rows, spec).items()}
    from_url = _call(tf.saved_model.load(str(remote)), "serving_default", feed)["ctr"]
    from_disk = _call(tf.saved_model.load(str(local)), "serving_default", feed)["ctr"]
    np.testing.assert_allclose(from_url, from_disk, rtol=1e-6)
    np.testing.assert_allclose(from_url, rankers.predict(model, rows, spec)["ctr"], rtol=1e-5)


def test_feature_store_round_trips_through_a_url():
    root = _ram()
    data = synthetic_histories(num_users=30, num_items=60, seed=4)
    store = FeatureStore.from_interactions(data)
    saved = store.save(paths.join(root, "store"))
    assert saved == paths.join(root, "store")
    loaded = FeatureStore.load(saved)
    user = str(data.interactions["user_id"].iloc[0])
    assert loaded.history(user) == store.history(user) and loaded.hot_items(5) == store.hot_items(5)
    assert loaded.item_feature_columns == store.item_feature_columns
    with pytest.raises(Exception, match=f"{root}/elsewhere.*hot_items.parquet is missing"):
        FeatureStore.load(paths.join(root, "elsewhere"))


def test_benchmark_setup_reads_and_writes_urls():
    """The Expedia files come from a URL folder; the work folder (staged locally, then copied) is a URL
    too."""
    from tfrs_recsys.data.expedia import load_expedia, setup_benchmark

    root = _ram()
    fixture = REPO / "tests" / "fixtures" / "expedia"
    for name in ("train.csv", "test.csv"):
        paths.write_bytes(paths.join(root, "kaggle", name), (fixture / name).read_bytes())
    manifest = setup_benchmark(paths.join(root, "kaggle"), paths.join(root, "work"))
    assert manifest["work_dir"] == paths.join(root, "work")
    assert paths.read_json(paths.join(root, "work", "manifest.json")) == manifest
    from_url = load_expedia(paths.join(root, "work"))
    local = load_expedia(str(fixture))
    assert from_url.labels == local.labels and len(from_url.frame) == manifest["parts"]["train"]["rows"]
    pd.testing.assert_frame_equal(from_url.frame[local.frame.columns].reset_index(drop=True),
                                  local.frame.reset_index(drop=True), check_dtype=False)
