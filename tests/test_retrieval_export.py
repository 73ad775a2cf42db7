"""Retrieval export: ScaNN and portable SavedModels, loaded in fresh processes, reproduce the model top-k."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from side_by_side import run_side_by_side
from test_retrieval_model import ring_interactions, small_config

import tfrs_recsys  # noqa: F401
from tfrs_recsys import runs
from tfrs_recsys.data.sequences import pad_left
from tfrs_recsys.export.describe import describe
from tfrs_recsys.export.recall import narrow_scann_search, set_recall, top_k_ids
from tfrs_recsys.export.retrieval import (
    PAD_ID,
    PAD_SCORE,
    ExportError,
    _excluded,
    brute_force_index,
    default_scann_options,
    export_retrieval,
    scann_index,
)
from tfrs_recsys.export.scann_index import ScaNNIndex
from tfrs_recsys.export.tfserving import existing_versions, read_export_metadata, update_models_config
from tfrs_recsys.models.cooccurrence import CooccurrenceTable
from tfrs_recsys.servable_layout import read_warmup_requests
from tfrs_recsys.training import retrieval as training

REPO = Path(__file__).resolve().parents[1]
NUM_ITEMS, MAX_HISTORY = 300, 8  # >= ScaNNIndex.MIN_TREE_ITEMS: a real tree + AH index

# Runs in a fresh interpreter: loads each SavedModel and calls both signatures on the given inputs.
LOADER = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
with_scann = sys.argv[1] == "scann"
if with_scann:
    import scann  # registers ScaNN's ops before the SavedModel is loaded
import tensorflow as tf
inputs = json.load(open(sys.argv[2]))
out = {}
for path in sys.argv[3:]:
    model = tf.saved_model.load(path)
    feed = {"user_id": tf.constant(inputs["user_id"]), "history": tf.constant(inputs["history"])}
    plain = model.signatures["serving_default"](**feed)
    excl = model.signatures["query_with_exclusions"](**feed, exclude_item_ids=tf.constant(inputs["exclude"]))
    out[path] = {name: {"item_ids": r["item_ids"].numpy().astype(str).tolist(),
                        "scores": r["scores"].numpy().tolist()}
                 for name, r in (("plain", plain), ("excl", excl))}
out["scann_loaded"] = "scann" in sys.modules
print("RESULT " + json.dumps(out))
"""


def _env():
    return {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def load_in_fresh_processes(tmp_path, inputs, plain_paths, scann_paths) -> tuple[dict, dict]:
    """The LOADER in two fresh processes, run side by side: one without ScaNN's ops for ``plain_paths``,
    one with them for ``scann_paths``; their RESULTs."""
    script, feed = tmp_path / "loader.py", tmp_path / "inputs.json"
    script.write_text(LOADER)
    feed.write_text(json.dumps(inputs))
    procs = run_side_by_side([[sys.executable, str(script), kind, str(feed), *map(str, paths)]
                              for kind, paths in (("plain", plain_paths), ("scann", scann_paths))],
                             timeout=300, env=_env())
    results = []
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
        results.append(json.loads(line[len("RESULT "):]))
    return results[0], results[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval_export")
    data = ring_interactions(num_users=200, num_items=NUM_ITEMS)
    cfg = small_config(root, epochs=8, max_history=MAX_HISTORY, embedding_dim=16, ff_dim=32,
                       cooccurrence=True)
    training.train_and_evaluate(cfg, data)
    run = runs.load_retrieval(root / "run")
    assert run.cooccurrence.beta > 0  # validation chose to fuse: the exports serve the fused scores
    return run, root


@pytest.fixture(scope="module")
def requests(trained):
    model = trained[0]
    user = sorted(model.histories)[0]
    history = model.histories[user]
    users = [user, "never-seen-user", "u1"]
    histories = [np.array(history, dtype=object), np.array(["i5"], dtype=object), np.array([], dtype=object)]
    return {"user_id": users, "history": pad_left(histories, MAX_HISTORY).astype(str).tolist(),
            "exclude": pad_left([np.array(history, dtype=object), np.array(["i6", "i7"], dtype=object),
                                 np.array([], dtype=object)], MAX_HISTORY).astype(str).tolist()}


def expected_top_k(trained_run, inputs, k, exclude=False, counted=None):
    """The in-memory model's exact top-k: scaled query . every item vector fused with the co-occurrence counts
    of every full history (dense, over the whole catalog), exclusions dropped. The counts read ``counted``
    (default: the request's histories), the queries ``inputs["history"]``."""
    model = trained_run.model
    queries = model.query_embeddings({"user_id": tf.constant(inputs["user_id"]),
                                      "history": tf.constant(inputs["history"])}).numpy()
    scores = queries @ model.candidate_embeddings().numpy().T
    catalog = trained_run.catalog
    index = pd.Index(catalog)
    fitted = trained_run.cooccurrence
    served = CooccurrenceTable.of_histories(trained_run.histories.values(), catalog, fitted.beta,
                                            fitted.damping)
    scores = served.fuse(scores, served.scores([index.get_indexer(np.asarray(h, dtype=object))
                                                 for h in counted or inputs["history"]]))
    out = []
    for row, excluded in zip(scores, inputs["exclude"]):
        drop = set(excluded) - {""} if exclude else set()
        order = [j for j in np.argsort(-row, kind="stable") if catalog[j] not in drop]
        out.append(([catalog[j] for j in order[:k]], row[order[:k]], {catalog[j]: row[j] for j in order}))
    return out


@pytest.fixture(scope="module")
def exported(trained):
    """Export through the CLI (k=20) and in-process with k larger than the catalog."""
    trained_run, root = trained
    base = root / "export"
    proc = subprocess.run([sys.executable, "-m", "tfrs_recsys.export", "retrieval", "--model-dir",
                           str(root / "run"), "--export-base", str(base), "--name", "rec", "--k", "20"],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    big = export_retrieval(root / "run", base, "big", k=NUM_ITEMS + 50)
    return base, printed, big


def test_export_layout_metadata_and_warmup(exported, trained):
    base, printed, big = exported
    fitted = trained[0].cooccurrence
    assert existing_versions(base / "rec") == [1] and existing_versions(base / "rec_portable") == [1]
    assert (Path(printed["scann"]) == base / "rec" / "1"
            and Path(printed["portable"]) == base / "rec_portable" / "1")
    for version_dir in (base / "rec" / "1", base / "rec_portable" / "1"):
        meta = read_export_metadata(version_dir)
        assert meta["k"] == 20 and meta["max_history"] == MAX_HISTORY
        assert meta["num_items"] == NUM_ITEMS and meta["embedding_dim"] == 16
        assert (meta["cooccurrence_beta"], meta["cooccurrence_damping"]) == (fitted.beta, fitted.damping)
        assert meta["scann_recall_at_k"] >= 0.95
        narrowing = meta["scann_narrowing"]  # the search was narrowed without losing recall
        assert meta["scann_options"]["num_leaves_to_search"] == narrowing["leaves_to_search"]
        assert narrowing["leaves_to_search"] <= narrowing["built_leaves_to_search"]
        assert (meta["scann_recall_at_k"]
                >= narrowing["tried"][str(narrowing["built_leaves_to_search"])] - 0.002)
        warmup = read_warmup_requests(version_dir)
        assert {w.predict_log.request.model_spec.signature_name for w in warmup} == {
            "serving_default", "query_with_exclusions"}
    assert read_export_metadata(base / "rec" / "1")["index"] == "scann"
    assert read_export_metadata(base / "rec_portable" / "1")["index"] == "brute_force"


def test_portable_export_uses_standard_ops_only(exported):
    from tensorflow.core.protobuf import saved_model_pb2

    base = exported[0]

    def ops(version_dir):
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((version_dir / "saved_model.pb").read_bytes())
        names = set()
        for graph in proto.meta_graphs:
            names |= {n.op for n in graph.graph_def.node}
            for fn in graph.graph_def.library.function:
                names |= {n.op for n in fn.node_def}
        return names

    assert any(op.startswith("Scann") for op in ops(base / "rec" / "1"))
    assert not any(op.startswith("Scann") for op in ops(base / "rec_portable" / "1"))


def test_fresh_processes_reproduce_the_model_top_k(trained, requests, exported, tmp_path):
    base, _, big = exported
    trained_run = trained[0]
    portable, scann = load_in_fresh_processes(tmp_path, requests,
                                              [base / "rec_portable" / "1", big["portable"]],
                                              [base / "rec" / "1", big["scann"]])
    assert portable["scann_loaded"] is False  # the portable twin loads without ScaNN's ops
    overlaps = []
    for k, portable_dir, scann_dir in ((20, base / "rec_portable" / "1", base / "rec" / "1"),
                                       (NUM_ITEMS + 50, big["portable"], big["scann"])):
        for mode, exclude in (("plain", False), ("excl", True)):
            want = expected_top_k(trained_run, requests, k, exclude=exclude)
            exact = portable[str(portable_dir)][mode]
            approx = scann[str(scann_dir)][mode]
            for row, (ids, scores, every) in enumerate(want):
                got_ids, got_scores = exact["item_ids"][row], np.array(exact["scores"][row])
                assert len(got_ids) == k and len(got_scores) == k
                assert np.all(np.isfinite(got_scores)) and np.all(np.isfinite(approx["scores"][row]))
                # The exact top-k in order: the j-th item served has the j-th best score (float32 ties aside).
                served = got_ids[:len(ids)]
                assert len(set(served)) == len(ids) and set(served) <= set(every)
                np.testing.assert_allclose([every[i] for i in served], scores, rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(got_scores[:len(ids)], scores, rtol=1e-4, atol=1e-4)
                assert got_ids[len(ids):] == [PAD_ID] * (k - len(ids))  # k > what qualifies: padded
                assert np.all(got_scores[len(ids):] == PAD_SCORE)
                real = [i for i in approx["item_ids"][row] if i != PAD_ID]
                assert len(set(real)) == len(real) and len(approx["item_ids"][row]) == k
                overlaps.append(len(set(real) & set(ids)) / len(ids))
                if exclude:
                    excluded = set(requests["exclude"][row]) - {""}
                    assert not excluded & set(got_ids) and not excluded & set(real)
    assert np.mean(overlaps) >= 0.9, overlaps  # ScaNN is approximate: recall against the exact top-k


def test_export_lists_its_models_in_models_config_and_describe_reads_them(exported):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = exported[0]
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((base / "models.config").read_text(), config)
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == {"rec", "rec_portable", "big", "big_portable"}
    assert all(entries[n].base_path == str((base / n).resolve()) and entries[n].model_platform == "tensorflow"
               for n in entries)

    about = describe(base / "rec")  # the newest version of a model folder
    assert about["path"] == str(base / "rec" / "1") and about["scann_ops"]
    default = about["signatures"]["serving_default"]
    assert default["inputs"] == {"history": {"dtype": "string", "shape": [-1, -1]},
                                 "user_id": {"dtype": "string", "shape": [-1]}}
    assert default["outputs"]["item_ids"] == {"dtype": "string", "shape": [-1, 20]}
    assert describe(base / "rec_portable" / "1")["scann_ops"] == []
    command = [sys.executable, "-m", "tfrs_recsys.export", "describe", str(base / "rec_portable")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=_env(), cwd=REPO)
    assert proc.returncode == 0 and "exclude_item_ids" in proc.stdout and "any TF Serving" in proc.stdout
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        describe(base)


def test_models_config_updates_keep_the_operators_entries(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { name: "mine" base_path: "/srv/mine" '
                    'model_platform: "tensorflow" model_version_policy { all {} } '
                    'version_labels { key: "stable" value: 3 } } }')
    update_models_config(tmp_path, ["rec", "mine"])
    entries = {c.name: c for c in text_format.Parse(
        path.read_text(), model_server_config_pb2.ModelServerConfig()).model_config_list.config}
    assert entries["mine"].base_path == str(tmp_path / "mine")  # re-pointed, policy and label kept
    mine = entries["mine"]
    assert mine.model_version_policy.HasField("all") and mine.version_labels["stable"] == 3
    assert entries["rec"].model_version_policy.latest.num_versions == 1
    path.write_text("model_config_list { config { nme: 1 } }")
    with pytest.raises(ValueError, match="models.config:1"):
        update_models_config(tmp_path, ["rec"])
    assert "nme" in path.read_text()  # nothing written


def test_signatures_take_histories_and_exclusions_of_any_width(trained, exported):
    """A stock TF Serving calls the graph as it is: an unpadded [1, 3] history, the same padded on the left
    or right to 50, and a history longer than max_history (only its last MAX_HISTORY real ids count) all
    give the in-memory model's answer; exclusions wider than any export-time width are all honoured."""
    trained_run = trained[0]
    model = tf.saved_model.load(str(exported[0] / "rec_portable" / "1"))
    user = sorted(trained_run.histories)[0]
    history = [str(i) for i in trained_run.histories[user]]
    short, long = history[-3:], (history * 3)[-(MAX_HISTORY + 5):]
    for recent, requests in (
            (short, [[short], [[""] * 47 + short], [short + [""] * 47]]),
            (long[-MAX_HISTORY:], [[long], [[""] * 2 + long]])):
        want = expected_top_k(trained_run, {"user_id": [user], "history": pad_left(
            [np.array(recent, dtype=object)], MAX_HISTORY).astype(str).tolist(), "exclude": [[]]}, 20)[0][0]
        for rows in requests:
            got = model.signatures["serving_default"](user_id=tf.constant([user]), history=tf.constant(rows))
            assert got["item_ids"].numpy()[0].astype(str).tolist() == want, len(rows[0])
    # Unknown ids fill the request's last max_history places: the query reads no known item, the counts
    # still read the request's last known items.
    unknown = history[-6:] + [f"new-{i}" for i in range(MAX_HISTORY + 2)]
    request = {"user_id": [user], "history": [unknown[-MAX_HISTORY:]], "exclude": [[]]}
    want = expected_top_k(trained_run, request, 20, counted=[unknown])[0][0]
    got = model.signatures["serving_default"](user_id=tf.constant([user]), history=tf.constant([unknown]))
    assert got["item_ids"].numpy()[0].astype(str).tolist() == want
    ranked = model.signatures["serving_default"](user_id=tf.constant([user]), history=tf.constant([short]))
    banned = ranked["item_ids"].numpy()[0].astype(str).tolist()[:15] + ["not-an-item"] * 40
    kept = model.signatures["query_with_exclusions"](
        user_id=tf.constant([user]), history=tf.constant([short]), exclude_item_ids=tf.constant([banned]))
    got = kept["item_ids"].numpy()[0].astype(str).tolist()
    assert len(got) == 20 and PAD_ID not in got and not set(got) & set(banned)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per user_id"):  # not silently dropped
        model.signatures["query_with_exclusions"](user_id=tf.constant([user]), history=tf.constant([short]),
                                                  exclude_item_ids=tf.constant([banned, banned]))


def test_export_fails_below_the_recall_threshold_and_writes_nothing(trained):
    _, root = trained
    base = root / "export_fail"
    with pytest.raises(ExportError, match="recall"):
        export_retrieval(root / "run", base, "strict", k=20, scann_min_recall=1.01)
    weak = {"num_leaves": 100, "num_leaves_to_search": 1, "num_reordering_candidates": 20}
    with pytest.raises(ExportError, match="below the threshold 0.95"):
        export_retrieval(root / "run", base, "weak", k=20, scann_options=weak)
    assert existing_versions(base / "strict") == [] and existing_versions(base / "weak_portable") == []


def test_scann_index_scores_tiny_catalogs_exactly():
    """Too few items to train a tree and a quantizer: ScaNN scores them all, k > catalog padded with NaN."""
    assert 5 < ScaNNIndex.MIN_TREE_ITEMS
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    layer = scann_index(vectors, np.array(list("abcde"), dtype=object), 5, default_scann_options(5, 5))
    scores, ids = layer(tf.constant(vectors[:2]), k=5)
    exact = vectors[:2] @ vectors.T
    for row in range(2):
        assert ids.numpy()[row].astype(str).tolist() == ["abcde"[j] for j in np.argsort(-exact[row])]
        np.testing.assert_allclose(scores.numpy()[row], np.sort(exact[row])[::-1], rtol=1e-5)


def test_exclusions_are_exact_even_when_fingerprints_collide():
    """Exclusions compare fingerprints, then confirm matches by string: with 1 or 3 buckets nearly
    everything collides, and the result must still be exact set membership ("" never matches)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(40, size=(6, 30)).astype(str).astype(object)
    exclude = rng.integers(40, size=(6, 12)).astype(str).astype(object)
    ids[0, :3], exclude[1, :], exclude[2, :6] = PAD_ID, PAD_ID, PAD_ID
    want = np.array([[i in set(e) - {PAD_ID} for i in row] for row, e in zip(ids, exclude)])
    assert 0 < want.sum() < want.size
    for buckets in (2 ** 63 - 1, 3, 1):
        got = tf.function(lambda a, b, n=buckets: _excluded(a, b, n))(tf.constant(ids), tf.constant(exclude))
        np.testing.assert_array_equal(got.numpy(), want)


def test_a_default_width_below_the_recall_floor_is_widened_to_reach_it():
    """Unclustered vectors and a search of 3 of 60 leaves find about a third of the exact top 10: the
    search widens step by step until it reaches the floor, and the index searches that width."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    ids = np.array([f"i{j}" for j in range(3000)], dtype=object)
    layer = scann_index(vectors, ids, 10,
                        {"num_leaves": 60, "num_leaves_to_search": 3, "dimensions_per_block": 2,
                         "num_reordering_candidates": 200, "training_sample_size": 3000})
    queries = rng.normal(size=(300, 16)).astype(np.float32)
    exact = top_k_ids(brute_force_index(vectors, ids, 10), queries, 10)
    result = narrow_scann_search(layer, queries, exact, 10, floor=0.95)
    assert result["tried"]["3"] < 0.6
    assert 3 < result["leaves_to_search"] <= 60 and result["recall"] >= 0.95
    chosen = result["leaves_to_search"]
    assert all(recall < 0.95 for w, recall in result["tried"].items() if int(w) < chosen)
    assert layer.leaves_to_search == result["leaves_to_search"]
    assert set_recall(top_k_ids(layer, queries, 10), exact) == result["recall"]


def test_narrowing_searches_fewer_leaves_at_the_same_recall(tmp_path):
    """Tight clusters: a query's neighbours sit in a leaf or two, so most of a full-width search finds
    nothing. Narrowing keeps the recall and the narrowed width is what a saved copy searches."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 16))
    vectors = centres[rng.integers(20, size=3000)] + 0.15 * rng.normal(size=(3000, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = np.array([f"i{j}" for j in range(3000)], dtype=object)
    layer = scann_index(vectors, ids, 10,
                        {"num_leaves": 60, "num_leaves_to_search": 60, "dimensions_per_block": 2,
                                           "num_reordering_candidates": 200, "training_sample_size": 3000})
    queries = vectors[rng.choice(3000, 300)] + 0.05 * rng.normal(size=(300, 16)).astype(np.float32)
    exact = top_k_ids(brute_force_index(vectors, ids, 10), queries, 10)
    result = narrow_scann_search(layer, queries, exact, 10)
    assert result["leaves_to_search"] < 60 and layer.leaves_to_search == result["leaves_to_search"]
    assert result["recall"] >= result["tried"]["60"] - 0.002 and result["recall"] > 0.9
    assert set_recall(top_k_ids(layer, queries, 10), exact) == result["recall"]

    layer.leaves_to_search = 1  # far too narrow: visibly different results, to tell the widths apart
    one_leaf = top_k_ids(layer, queries, 10)
    assert set_recall(one_leaf, exact) < result["recall"] - 0.05
    module = tf.Module()
    module.index = layer
    module.search = tf.function(lambda q: layer(q, k=10),
                                input_signature=[tf.TensorSpec([None, 16], tf.float32)])
    module.search(tf.constant(queries[:1]))
    tf.saved_model.save(module, str(tmp_path / "m"),
                        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
    layer.leaves_to_search = None
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    scores, found = loaded.search(tf.constant(queries))
    assert [set(i[np.isfinite(s)]) for s, i in zip(scores.numpy(), found.numpy())] == one_leaf
