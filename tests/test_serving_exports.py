"""The product's own exports served end to end: train tiny models, export them, serve, query over gRPC.

Uses only the public commands (``python -m tfrs_recsys.train``, ``python -m tfrs_recsys.export``)
and checks that what the server answers is what the exported SavedModel computes in-process.
Skipped when the exporters are not in the tree; slow (it trains three models).
"""
import importlib.util

import numpy as np
import pytest
import serving_fixtures as fx
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys.export.tfserving import existing_versions, read_export_metadata
from tfrs_recsys.model_server.servable import read_meta_graph
from tfrs_recsys.serving.client import ServingClient

pytestmark = pytest.mark.slow


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in the tree yet")


def _train_and_export(tmp_path, model: str, train_flags: list[str], export_flags: list[str]):
    from tfrs_recsys import train
    from tfrs_recsys.export.__main__ import main as export_main

    run_dir = tmp_path / f"run-{model}"
    assert train.main([model, "--output-dir", str(run_dir), "--epochs", "1", "--progress", "false",
                       *train_flags]) == 0
    base = tmp_path / "exports"
    assert export_main([model, "--model-dir", str(run_dir), "--export-base", str(base), *export_flags]) == 0
    return base


def _in_process(path, signature, inputs):
    fn = tf.saved_model.load(str(path)).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{n: tf.constant(a) for n, a in inputs.items()}).items()}


def test_retrieval_exports_serve_what_they_compute(tmp_path):
    _need("tfrs_recsys.export.retrieval")
    import scann  # noqa: F401  (this process loads the ScaNN export for the in-process reference)

    base = _train_and_export(tmp_path, "retrieval",
                             ["--synthetic-users", "150", "--synthetic-items", "80", "--max-history", "8",
                              "--embedding-dim", "16"],
                             ["--name", "retrieval", "--k", "20", "--allow-low-recall"])
    config = fx.models_config(base, {"retrieval": {}, "retrieval_portable": {}})
    server = fx.start_server(tmp_path, [f"--model_config_file={config}"])
    try:
        with ServingClient(server.address, timeout=30) as client:
            for name in ("retrieval", "retrieval_portable"):
                path = base / name / str(existing_versions(base / name)[-1])
                meta = read_export_metadata(path)
                width = meta["max_history"]
                signature = read_meta_graph(path).signature_def["serving_default"]
                # any history width: the graph keeps the most recent max_history ids
                assert [d.size for d in signature.inputs["history"].tensor_shape.dim] == [-1, -1]
                catalog = [i for i in client.retrieve("0", [], model=name).item_ids]
                history = catalog[:3]
                got = client.retrieve("0", history, model=name)
                row = [""] * (width - len(history)) + history
                want = _in_process(path, "serving_default",
                                   {"user_id": np.array([b"0"], object), "history": np.array([row], object)})
                want_ids = [i.decode() for i in want["item_ids"][0] if i]
                assert got.item_ids == want_ids[:len(got.item_ids)] and len(got.item_ids) > 0
                np.testing.assert_allclose(got.scores, want["scores"][0][:len(got.scores)], rtol=1e-4,
                                           atol=1e-4)
                unseen = client.retrieve("0", history, exclude_seen=True, model=name)
                assert not set(unseen.item_ids) & set(history)
    finally:
        assert server.stop() == 0, server.log_tail()


@pytest.mark.parametrize("model", ["esmm", "deepfm"])
def test_ranker_exports_serve_what_they_compute(tmp_path, model):
    _need("tfrs_recsys.export.rankers")
    base = _train_and_export(tmp_path, model, [], ["--name", model])
    config = fx.models_config(base, {model: {}})
    path = base / model / str(existing_versions(base / model)[-1])
    server = fx.start_server(tmp_path, [f"--model_config_file={config}"])
    try:
        with ServingClient(server.address, timeout=30) as client:
            info = client.metadata(model)["serving_default"]
            outputs = {"esmm": {"ctr", "cvr", "ctcvr"}, "deepfm": {"ctr"}}[model]
            assert outputs <= set(info.outputs)
            rng = np.random.default_rng(0)
            n = 7
            features = {}
            for name, spec in info.inputs.items():
                if spec.dtype == tf.string.as_datatype_enum:
                    features[name] = [f"{name}_{rng.integers(5)}" for _ in range(n)]
                elif spec.dtype == tf.int64.as_datatype_enum:  # integer categories (an hour, a position)
                    features[name] = rng.integers(5, size=n).tolist()
                else:
                    features[name] = rng.normal(size=n).astype(np.float32).tolist()
            ranked = client.rank("u", [f"i{j}" for j in range(n)], features, model=model)
            dtypes = {tf.string.as_datatype_enum: object, tf.int64.as_datatype_enum: np.int64,
                      tf.float64.as_datatype_enum: np.float64}
            arrays = {k: np.array([str(v).encode() for v in vs] if dtypes.get(info.inputs[k].dtype) is object
                                  else vs, dtypes.get(info.inputs[k].dtype, np.float32))
                      for k, vs in features.items()}
            want = _in_process(path, "serving_default", arrays)
            for name in outputs:
                assert ranked.outputs[name].shape == (n,)
                assert np.all((ranked.outputs[name] >= 0) & (ranked.outputs[name] <= 1))
                np.testing.assert_allclose(ranked.outputs[name], want[name], rtol=1e-5, atol=1e-6)
    finally:
        assert server.stop() == 0, server.log_tail()
