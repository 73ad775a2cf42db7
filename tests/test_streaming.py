"""Rankers trained from Parquet / CSV shards streamed through tf.data (training/stream.py, data/streaming.py):
the split, the per-worker shards, the packed raw features, and a whole DeepFM and ESMM run on a few shards."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tfrs_recsys.config import DeepFMConfig, ESMMConfig
from tfrs_recsys.data import packing, stream_parts, streaming
from tfrs_recsys.data.bucket_sizing import distinct_estimate
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.schema import frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.training import deepfm, esmm, stream

REPO = Path(__file__).resolve().parents[1]


def _scale_data():
    spec = importlib.util.spec_from_file_location("scale_data", REPO / "bench" / "scale_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def criteo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("criteo")
    _scale_data().generate("criteo", 6000, out, seed=3, shards=4)
    return out


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sessions")
    _scale_data().generate("sessions", 6000, out, seed=3, shards=4)
    return out


def _rows(batches) -> int:
    return sum(b.num_rows for b in batches)


def test_every_row_lands_in_one_part_the_same_however_it_is_read(criteo):
    table = streaming.open_table(str(criteo / "parquet"), labels=["label"])
    assert table.rows == 6000 and len(table.files) == 4
    parts = [_rows(streaming.read_part(table, table.files, p, seed=7)) for p in range(3)]
    assert sum(parts) == 6000
    assert parts[0] / 6000 == pytest.approx(0.8, abs=0.03) and parts[2] / 6000 == pytest.approx(0.1, abs=0.03)
    # The CSV copy of the same rows splits the same way, and another seed splits differently.
    csv = streaming.open_table(str(criteo / "csv"), labels=["label"])
    assert [_rows(streaming.read_part(csv, csv.files, p, seed=7)) for p in range(3)] == parts
    assert _rows(streaming.read_part(table, table.files, 0, seed=8)) != parts[0]


def test_a_session_never_straddles_parts(sessions):
    table = streaming.open_table(str(sessions / "parquet"), labels=["click", "conversion"],
                                 session_column="session_id")
    seen = [set(pa.Table.from_batches(list(streaming.read_part(table, table.files, p, seed=1)))
                .column("session_id").to_pylist()) for p in range(3)]
    assert seen[0] and seen[1] and seen[2]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_each_worker_reads_its_own_shards_and_together_every_row_once(criteo):
    table = streaming.open_table(str(criteo / "parquet"), labels=["label"])
    mine = [stream_parts.worker_files(table.files, i, 2) for i in range(2)]
    assert not set(mine[0]) & set(mine[1]) and sorted(mine[0] + mine[1]) == table.files
    sample = streaming.sample_rows(table, 2000, seed=1)
    spec = infer_schema(sample, ["label"])
    read = []
    for files in mine:
        ds = streaming.stream_dataset(table, spec, files, batch_size=128, seed=1, shuffle=False, repeat=False)
        read.append(sum(int(y["label"].shape[0]) for _, y in ds))
    assert read[0] + read[1] == _rows(streaming.read_part(table, table.files, 0, seed=1))
    assert read[0] == _rows(streaming.read_part(table, mine[0], 0, seed=1))
    with pytest.raises(DataError, match="4 file shard.*5 workers.*at least 5 shards"):
        stream_parts.worker_files(table.files, 0, 5)


def test_the_streamed_input_leaves_the_autotuner_off(criteo):
    table = streaming.open_table(str(criteo / "parquet"), labels=["label"])
    spec = infer_schema(streaming.sample_rows(table, 500, seed=1), ["label"])
    ds = streaming.stream_dataset(table, spec, table.files, batch_size=64, seed=1)
    assert ds.options().autotune.enabled is False  # why: tests/test_pipelines.py, the same check


def test_packed_features_are_the_raw_features_of_the_frame():
    frame = pd.DataFrame({"city": ["b", None, "ü", "b"], "code": [3, 4, 3, 5],
                          "price": [1.5, np.nan, 2.0, 3.0],
                          "user_id": [10, 11, 10, 12], "label": [0, 1, 0, 1]})
    spec = infer_schema(frame, ["label"], user_column="user_id", low_cardinality_max=3)
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    import tensorflow as tf

    raw = packing.unpack({k: tf.constant(v) for k, v in packing.pack(batch, spec).items()}, spec)
    expected = frame_to_raw(frame, spec)
    for name, values in expected.items():
        got = raw[name].numpy()
        got = [v.decode() for v in got] if got.dtype == object else got
        np.testing.assert_array_equal(np.asarray(got), values.astype(got.dtype) if values.dtype != object
                                      else values, err_msg=name)


def test_scoring_several_models_in_one_read_gives_each_its_own_outputs_in_row_order(criteo):
    import tensorflow as tf

    from tfrs_recsys.models.deepfm import DeepFM
    from tfrs_recsys.training import rankers

    table = streaming.open_table(str(criteo / "parquet"), labels=["label"])
    batches = list(streaming.read_part(table, table.files, 2, seed=0))  # small record batches, 4 shards
    frame = pa.Table.from_batches(batches).to_pandas()
    spec = infer_schema(frame, ["label"])
    models = []
    for seed in (1, 2):
        tf.keras.utils.set_random_seed(seed)
        models.append(DeepFM(spec, embedding_dim=4, hidden_units=(8,)))
    outputs, scored = stream.score(models, iter(batches), spec, batch_size=100)
    assert len(scored) == len(frame) and np.array_equal(scored["label"], frame["label"].astype(np.float32))
    for model, got in zip(models, outputs):
        np.testing.assert_allclose(got["ctr"], rankers.predict(model, frame, spec)["ctr"], rtol=1e-5)
    assert not np.allclose(outputs[0]["ctr"], outputs[1]["ctr"])
    one, _ = stream.score(models[1], iter(batches), spec)
    np.testing.assert_allclose(one["ctr"], outputs[1]["ctr"], rtol=1e-6)
    none, scored = stream.score(models, [batches[0].slice(0, 0)], spec)  # no rows: no scores, no error
    assert [len(out["ctr"]) for out in none] == [0, 0] and scored.empty


def test_deepfm_and_esmm_train_from_streamed_shards(criteo, sessions, tmp_path):
    cfg = DeepFMConfig(dataset="parquet", data_dir=str(criteo / "parquet"), label_columns=("label",),
                       streaming="always", epochs=2, batch_size=256, embedding_dim=4, hidden_units=(16,),
                       output_dir=str(tmp_path / "deepfm"), progress=False, stream_sample_rows=3000)
    assert stream.should_stream(cfg) and not stream.should_stream(DeepFMConfig(
        dataset="parquet", data_dir=str(criteo / "parquet"), label_columns=("label",)))  # small: in memory
    metrics = deepfm.run(cfg)
    table = streaming.open_table(str(criteo / "parquet"), labels=["label"])
    test_rows = _rows(streaming.read_part(table, table.files, 2, cfg.seed))
    assert metrics["streamed"] and metrics["rows"] == test_rows
    assert 0.0 < metrics["auc"] < 1.0
    assert set(metrics["timings"]) >= {"load", "pipeline", "epochs", "evaluation"}
    run = tmp_path / "deepfm"
    split = json.loads((run / "split.json").read_text())
    assert split["rows"] == 6000 and split["sample_rows"] <= 3000
    assert "seeded sample" in json.loads((run / "spec.json").read_text())["notes"]["sample"]
    assert (run / "checkpoints" / "best.index").is_file()

    cfg = ESMMConfig(dataset="csv", data_dir=str(sessions / "csv"), label_columns=("click", "conversion"),
                     session_column="session_id", user_column="user_id", item_column="item_id",
                     streaming="always", epochs=1, batch_size=256, embedding_dim=4, tower_units=(8,),
                     hidden_units=(16,), output_dir=str(tmp_path / "esmm"), progress=False)
    metrics = esmm.run(cfg)
    assert metrics["streamed"] and np.isfinite(metrics["ctr_auc"]) and "baseline_cvr_auc_clicked" in metrics
    assert metrics["session_ndcg_sessions_used"] > 0
    # The evaluate CLI reads the streamed run's own test rows (its hashed split of the files) again.
    from tfrs_recsys import evaluate

    report = tmp_path / "evaluate.json"
    assert evaluate.main(["--run-dir", str(tmp_path / "esmm"), "--ndcg-k", "10", "--json", str(report)]) == 0
    evaluated = json.loads(report.read_text())["ndcg"]
    assert evaluated["value"] == pytest.approx(metrics["session_ndcg@10"], rel=1e-6)
    assert evaluated["groups_used"] == metrics["session_ndcg_sessions_used"]
    # The clicked-only baseline is validated on the clicked validation rows alone: its logged metric is the
    # one all the validation rows give (its best, and only, epoch's weights are the checkpoint's).
    from tfrs_recsys import runs
    from tfrs_recsys.models.esmm import ClickedCVR

    run_dir, spec = tmp_path / "esmm", runs.load_ranker(tmp_path / "esmm")[2]
    baseline = ClickedCVR.from_spec(spec, cfg)
    runs.build_ranker(baseline, spec)
    baseline.load_weights(str(run_dir / runs.BASELINE / runs.CHECKPOINT)).expect_partial()
    table = streaming.open_table(str(sessions / "csv"), labels=["click", "conversion"],
                                 session_column="session_id", user_column="user_id", item_column="item_id")
    outputs, frame = stream.score(baseline, streaming.read_part(table, table.files, 1, cfg.seed), spec)
    logged = runs.read_train_log(run_dir / runs.BASELINE)[-1]["val_cvr_auc_clicked"]
    on_all_rows = esmm.evaluate_clicked_cvr(baseline, frame, spec, outputs=outputs)["cvr_auc_clicked"]
    assert on_all_rows == pytest.approx(logged, abs=1e-6)


def test_shards_written_apart_are_sampled_together_or_refused_naming_the_shard(tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"code": rng.integers(0, 5, 400), "price": rng.random(400),
                          "label": rng.integers(0, 2, 400)})
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pandas(frame[:200]), tmp_path / "pq" / "a.parquet")  # int64, no index
    narrow = frame[200:].astype({"code": "int32", "price": "float32"})
    pq.write_table(pa.Table.from_pandas(narrow, preserve_index=True), tmp_path / "pq" / "b.parquet")
    table = streaming.open_table(str(tmp_path / "pq"), labels=["label"])
    sample = streaming.sample_rows(table, 1000, seed=0)
    assert len(sample) > 250 and sample["code"].dtype == np.int64  # both shards' training rows (~320)

    (tmp_path / "csv").mkdir()
    frame[:200].to_csv(tmp_path / "csv" / "a.csv", index=False)
    frame[200:].astype({"code": float}).to_csv(tmp_path / "csv" / "b.csv", index=False)  # "3.0": not int
    table = streaming.open_table(str(tmp_path / "csv"), labels=["label"])
    with pytest.raises(DataError, match="b.csv.*cannot parse"):
        list(streaming.read_part(table, table.files, 0, seed=0))


def test_streaming_is_an_option_of_csv_and_parquet_only(criteo, tmp_path):
    from tfrs_recsys.config import ConfigError

    cfg = DeepFMConfig(dataset="parquet", data_dir=str(criteo / "parquet"), label_columns=("label",),
                       streaming="always", resume=True, output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="--resume continues runs trained in memory.*--overwrite"):
        deepfm.run(cfg)  # it would start again from the first epoch under the stopped run's log

    with pytest.raises(ConfigError, match="--streaming 'always' applies to --dataset csv or parquet"):
        DeepFMConfig(streaming="always")
    with pytest.raises(ConfigError, match="field 'streaming' = 'sometimes'"):
        DeepFMConfig(dataset="csv", data_dir="x.csv", label_columns=("label",), streaming="sometimes")


def test_retrieval_validation_ranks_a_seeded_sample_of_users():
    from tfrs_recsys.data.sequences import HeldOut
    from tfrs_recsys.training.retrieval import validation_sample

    held = HeldOut(np.array([f"u{i}" for i in range(50)]), [np.array([str(i)]) for i in range(50)],
                   np.array([str(i + 1) for i in range(50)]), [np.array([str(i)]) for i in range(50)])
    sample = validation_sample(held, 10, seed=4)
    assert len(sample) == 10 and list(sample.user_ids) == sorted(sample.user_ids, key=lambda u: int(u[1:]))
    assert [int(t) - 1 for t in sample.targets] == [int(u[1:]) for u in sample.user_ids]
    assert list(validation_sample(held, 10, seed=4).user_ids) == list(sample.user_ids)
    assert validation_sample(held, 0, seed=4) is held and validation_sample(held, 80, seed=4) is held


def test_distinct_estimate_continues_the_growth_from_half_the_sample_to_all():
    rng = np.random.default_rng(0)
    values = pd.Series(rng.zipf(1.5, 20_000).astype(str), dtype=object)
    values[::7] = None  # missing values are not values
    half, whole = values.iloc[:10_000].nunique(), values.nunique()
    assert 0 < half < whole
    beta = np.log(whole / half) / np.log(2.0)
    assert distinct_estimate(values, 2_000_000) == int(min(2_000_000, whole * 100 ** beta))
    assert distinct_estimate(values, 10_000) == whole


def test_integer_values_mark_text_columns_of_whole_numbers_only():
    frame = pd.DataFrame({"label": [0, 1] * 150, "code": [str(i % 30 - 5) for i in range(300)],
                          "mixed": [f"{i % 30}" if i % 50 else "3.5" for i in range(300)]})
    spec = infer_schema(frame, ["label"])
    assert spec["code"].integer_values and not spec["mixed"].integer_values


def test_a_shard_that_fails_mid_training_stops_the_run_with_its_own_error(criteo, tmp_path, monkeypatch):
    real, calls = packing.pack, []

    def failing(batch, spec, absent=None):  # a shard that turns out unreadable after training began
        calls.append(1)
        if len(calls) > 2:
            raise DataError("a value no shard before held", path="part-9.parquet", column="C1")
        return real(batch, spec, absent)

    monkeypatch.setattr(streaming, "pack", failing)
    cfg = DeepFMConfig(dataset="parquet", data_dir=str(criteo / "parquet"), label_columns=("label",),
                       streaming="always", epochs=1, batch_size=256, embedding_dim=4, hidden_units=(16,),
                       output_dir=str(tmp_path / "deepfm"), progress=False, stream_sample_rows=3000)
    with pytest.raises(DataError, match="a value no shard before held"):  # not the graph's wrapping of it
        deepfm.run(cfg)


def test_a_streamed_split_by_time_holds_the_rows_the_table_in_memory_does(tmp_path, monkeypatch):
    """Day-first dates that the first record batches cannot tell (days up to 12), in shards of several
    batches: the order is told once, from the first dates that show it, for every batch; a streamed DeepFM
    trains on that split and ``evaluate --run-dir`` scores its test rows again."""
    from tfrs_recsys import evaluate
    from tfrs_recsys.data.splits import split_by_time

    monkeypatch.setattr(streaming, "CHUNK_ROWS", 4)  # a CSV record batch of ~1.6 KB: ~50 rows, 3 days
    rng = np.random.default_rng(2)
    seconds = np.sort(rng.integers(1_704_067_200, 1_709_164_800, 900))  # January and February 2024
    frame = pd.DataFrame({"row": np.arange(900), "click": rng.integers(0, 2, 900),
                          "ts": pd.to_datetime(seconds, unit="s").strftime("%d/%m/%Y %H:%M:%S")})
    data = tmp_path / "data"
    data.mkdir()
    for shard in range(3):  # each a stretch of time; the first batch holds only days up to 12
        frame.iloc[300 * shard:300 * (shard + 1)].to_csv(data / f"part-{shard}.csv", index=False)
    table = streaming.open_table(str(data), labels=["click"])
    stream_parts.cut_in_time(table, "ts")
    streamed = [sorted(pa.Table.from_batches(list(streaming.read_part(table, table.files, p, seed=1)))
                       .column("row").to_pylist()) for p in range(3)]
    in_memory = split_by_time(frame, "ts")
    parts = (in_memory.train, in_memory.validation, in_memory.test)
    assert streamed == [sorted(part["row"]) for part in parts]
    assert streamed[2] == list(range(810, 900))  # the latest rows, as written

    cfg = DeepFMConfig(dataset="csv", data_dir=str(data), label_columns=("click",), time_column="ts",
                       split="time", streaming="always", epochs=1, batch_size=64, embedding_dim=4,
                       hidden_units=(8,), output_dir=str(tmp_path / "run"), progress=False)
    metrics = deepfm.run(cfg)
    assert metrics["rows"] == 90
    report = tmp_path / "evaluate.json"
    assert evaluate.main(["--run-dir", str(tmp_path / "run"), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["metrics"]["ctr_auc"] == pytest.approx(metrics["auc"], abs=1e-6)

    frame.loc[5, "ts"] = ""
    frame.iloc[:300].to_csv(data / "part-0.csv", index=False)
    with pytest.raises(DataError, match="without a time") as error:
        stream_parts.cut_in_time(streaming.open_table(str(data), labels=["click"]), "ts")
    assert error.value.path == str(data / "part-0.csv")
