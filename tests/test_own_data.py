"""A user's own files, from a CSV to a served recommendation, and every mistake in them named with the fix."""
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import serving_fixtures as fx
import tensorflow as tf
from side_by_side import run_side_by_side
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.interactions import load_interaction_log
from tfrs_recsys.data.registry import load_interactions
from tfrs_recsys.data.schema import epoch_seconds
from tfrs_recsys.data.sequences import infer_entity_columns, user_sequences
from tfrs_recsys.data.tabular import load_table
from tfrs_recsys.serving.client import ServingClient
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.pipeline import RecallRankPipeline

REPO = Path(__file__).resolve().parents[1]


def _events(rows: int = 3000, seed: int = 0, visitor_column: str = "visitor") -> pd.DataFrame:
    """A click log with its own column names (``visitor_column``: e.g. one with a space, which no serving
    input name holds): string visitors, skus (integers, and some text that is not ASCII), times as date
    text, an hour, a category that belongs to the sku, and a click label that follows the category (shoes
    sell) and the category a visitor likes."""
    rng = np.random.default_rng(seed)
    visitors, skus = 150, 60
    category = np.array(["shoes", "books", "games", "tools"])[np.arange(skus) % 4]
    visitor = rng.integers(visitors, size=rows)
    sku = rng.integers(skus, size=rows)
    ts = 1_700_000_000 + np.sort(rng.integers(0, 30 * 86_400, size=rows))
    liked = category[sku] == np.array(["shoes", "books", "games", "tools"])[visitor % 4]
    clicked = (rng.random(rows) < 0.05 + 0.5 * (category[sku] == "shoes") + 0.4 * liked).astype(int)
    names = np.array([f"café-{s}" if s % 5 == 4 else str(s) for s in range(skus)], dtype=object)
    dates = pd.to_datetime(ts, unit="s").strftime("%Y-%m-%dT%H:%M:%S")
    return pd.DataFrame({visitor_column: [f"v{v}" for v in visitor], "sku": names[sku], "ts": dates,
                         "hour": (ts // 3600) % 24, "category": category[sku], "clicked": clicked})


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", *args]


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_command(args), capture_output=True, text=True, timeout=timeout, env=_env(),
                          cwd=REPO)


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_a_csv_of_my_own_becomes_a_served_recommendation(tmp_path, caplog):
    events = tmp_path / "events.csv"
    _events(visitor_column="visitor id").to_csv(events, index=False)
    # Independent command lines run side by side (each spends seconds loading TensorFlow): the two trainings,
    # then the retrieval export beside the two recommend calls, then the ranker's export (the two exports
    # both add their models to models.config: one after the other).
    retrieval, ranker = run_side_by_side([
        _command(["tfrs_recsys.train", "retrieval", "--dataset", "interactions",
                  "--data", str(events), "--user-column", "visitor id", "--item-column", "sku",
                  "--time-column", "ts",
                  "--rating-column", "clicked", "--min-rating", "1", "--epochs", "2",
                  "--max-history", "8", "--embedding-dim", "16", "--ff-dim", "32",
                  "--output-dir", str(tmp_path / "retrieval"), "--progress", "false"]),
        _command(["tfrs_recsys.train", "deepfm", "--dataset", "csv", "--data", str(events),
                  "--label-columns", "clicked", "--user-column", "visitor id", "--item-column", "sku",
                  "--epochs", "2", "--output-dir", str(tmp_path / "deepfm"), "--progress", "false"]),
    ], timeout=600, env=_env(), cwd=REPO)
    assert _json(retrieval)["test_metrics"]["recall@50"] > 0
    assert _json(ranker)["test_metrics"]["auc"] > 0.65  # the label follows the category
    assert "hour" in ranker.stdout and "int64" in ranker.stdout  # the schema table at the start
    assert "early stopping follows selection_score = the validation auc" in ranker.stdout
    assert re.search(r"^ts +timestamp .*date text", ranker.stdout, re.M)  # dates, not an id of each time

    base = tmp_path / "exports"
    exported, answer, given = run_side_by_side([
        _command(["tfrs_recsys.export", "retrieval", "--model-dir", str(tmp_path / "retrieval"),
                  "--export-base", str(base), "--name", "shop", "--k", "10", "--allow-low-recall"]),
        _command(["tfrs_recsys.recommend", "--run-dir", str(tmp_path / "retrieval"), "--user-id", " v3 ",
                  "--k", "5", "--json"]),
        _command(["tfrs_recsys.recommend", "--run-dir", str(tmp_path / "retrieval"), "--user-id", "v3",
                  "--history", "7, no-such-sku ,", "--json"]),  # spaces after commas, as typed
    ], timeout=600, env=_env(), cwd=REPO)
    recommended = _json(answer)["items"]
    assert _json(answer)["known_user"]  # the id read as training read it, spaces stripped
    assert len(recommended) == 5 and all(r["title"].startswith("category=") for r in recommended)
    assert _json(given)["unknown_history_items"] == ["no-such-sku"]
    _json(exported)
    _json(_run(["tfrs_recsys.export", "deepfm", "--model-dir", str(tmp_path / "deepfm"), "--export-base",
                str(base), "--name", "ranker"]))
    server = fx.start_server(tmp_path, [f"--model_config_file={base / 'models.config'}"])  # as written
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.address))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "shop_portable"
        request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(["v3"]))
        request.inputs["history"].CopyFrom(tf.make_tensor_proto([["7", "12", "30"]]))  # unpadded [1, 3]
        items = tf.make_ndarray(stub.Predict(request, timeout=30).outputs["item_ids"])
        assert items.shape == (1, 10) and all(i for i in items[0])

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "ranker"
        columns = {"visitor_id": ["v3", "v3"], "sku": ["7", "12"], "hour": np.array([10, 22], np.int64),
                   "category": ["shoes", "books"], "ts": np.array([1.7e9, 1.7e9])}
        for name, values in columns.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
        ctr = tf.make_ndarray(stub.Predict(request, timeout=30).outputs["ctr"])
        assert ctr.shape == (2,) and np.all((ctr > 0) & (ctr < 1))
        request.inputs["hour"].CopyFrom(tf.make_tensor_proto(["10", "22"]))  # a wrong dtype, as TF Serving
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "(input 'hour')" in err.value.details()  # TF Serving's words, and the input's name

        # recall -> rank: the ranker's id and time inputs are the log's columns, which the store recorded
        store = FeatureStore.from_run(tmp_path / "retrieval")
        meta = store.meta
        assert (meta.user_column, meta.item_column, meta.time_column) == ("visitor id", "sku", "ts")
        ranked = json.loads((tmp_path / "retrieval" / "retrieval_meta.json").read_text())
        assert meta.history_kept is (not ranked["history_left_out"])  # seen items kept as the run ranked
        with ServingClient(server.address, retrieval_model="shop_portable", ranker_model="ranker") as client:
            def recommend(**names):
                return RecallRankPipeline(client, store, num_candidates=10, **names).recommend(" v3", k=10)

            before = len(caplog.records)
            default = recommend()
            assert not caplog.records[before:]  # every input filled ('visitor id' as visitor_id)
            named = recommend(ranker_user_input="visitor id", ranker_item_input="sku", ranker_time_input="ts")
            without = recommend(ranker_user_input="", ranker_item_input="", ranker_time_input="")
            with pytest.raises(ValueError, match="--ranker-user-input 'visiter' is not an input of ranker"):
                recommend(ranker_user_input="visiter")
            with pytest.raises(ValueError, match="'visitor_id' is filled per candidate"):  # visitor id's
                RecallRankPipeline(client, store, num_candidates=10).recommend("v3", 5, {"visitor_id": "v9"})
        assert not default.is_cold_start and set(default.item_ids) == set(without.item_ids)
        assert any("café" in item for item, _ in store.hot_items(60))
        scores = [{r.item_id: r.score for r in answer.items} for answer in (default, named, without)]
        assert scores[0] == pytest.approx(scores[1]) and scores[0] != pytest.approx(scores[2])
        unfilled = [set(r.args[1]) for r in caplog.records[before:]
                    if r.name == "tfrs_recsys.serving.pipeline"]
        assert unfilled and {"visitor_id", "sku", "ts"} <= unfilled[-1]  # named none: they go as missing
    finally:
        assert server.stop() == 0, server.log_tail()


def _log(tmp_path: Path, text: str, name: str = "log.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as err:
        fn(*args, **kwargs)
    assert err.value.fix, str(err.value)
    return err.value


def test_a_log_is_read_from_a_file_a_glob_or_a_folder_with_its_tables(tmp_path, caplog):
    frame = _events(400)
    shards = tmp_path / "shards"
    shards.mkdir()
    frame.iloc[:150].to_csv(shards / "part-0.csv", index=False)
    frame.iloc[150:].to_parquet(shards / "part-1.parquet")
    (shards / "_SUCCESS").write_text("")
    options = dict(user_column="visitor", item_column="sku", time_column="ts")
    folder = load_interaction_log(str(shards), **options)
    glob = load_interaction_log(str(shards / "part-*"), **options)
    pd.testing.assert_frame_equal(folder.interactions, glob.interactions)
    assert len(folder.interactions) == 400 and folder.interactions["item_id"].map(type).eq(str).all()
    # category never changes within a sku: it joins the item table; hour changes: it is not an item feature
    assert "category" in folder.items.columns and "hour" not in folder.items.columns
    users = _log(tmp_path, "visitor,age\nv1,31\nv2,45\n", "users.csv")
    rated = load_interaction_log(_log(tmp_path, frame.to_csv(index=False)), **options, users=users,
                                 rating_column="clicked", min_rating=1)
    assert (rated.interactions["rating"] == 1).all() and len(rated.interactions) == frame["clicked"].sum()
    lower = 400 - frame["clicked"].sum()
    assert any(f"--min-rating 1 leaves out {lower} interactions rated lower" in r.getMessage()
               for r in caplog.records)
    assert rated.users.set_index("user_id").loc["v2", "age"] == 45


def test_columns_of_one_value_or_none_are_not_tower_features(tmp_path):
    frame = _events(400).assign(notes=None, shop="main", weight=np.nan)
    frame.to_parquet(tmp_path / "log.parquet")  # notes: Arrow's null type
    read = load_interaction_log(str(tmp_path / "log.parquet"), user_column="visitor", item_column="sku",
                                time_column="ts")
    usable, skipped = infer_entity_columns(read.items, "item_id", "item")
    assert usable == ["category"] and {"notes", "shop", "weight"} <= set(skipped)
    assert "one value or none" in skipped["notes"]


def test_skipped_rows_are_reported_once_counted_by_reason(tmp_path, caplog):
    from tfrs_recsys.config import RetrievalConfig
    from tfrs_recsys.training.retrieval import load_data

    text = "u,i,ts\na,x,2024-03-06\n,y,1713431850\nb,x,soon\nc,z,2024-03-07\nd,z,later\ne,z,1,extra\n"
    options = dict(dataset="interactions", user_column="u", item_column="i", time_column="ts",
                   skip_bad_rows=True)
    data = load_data(RetrievalConfig(data_dir=_log(tmp_path, text), **options))
    assert len(data.interactions) == 2
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(said) == 1 and "skipped 4 of 6 rows" in said[0]  # the malformed line's too
    assert "2 x column 'ts': not a time" in said[0] and "1 x column 'u': empty id" in said[0]
    caplog.clear()
    pd.read_csv(tmp_path / "log.csv", nrows=5).to_parquet(tmp_path / "log.parquet")
    load_data(RetrievalConfig(data_dir=str(tmp_path / "log.parquet"), **options))
    assert ["skipped 3 of 5 rows" in r.getMessage() for r in caplog.records] == [True]


def test_an_id_written_as_a_whole_decimal_is_the_same_id(tmp_path):
    read = load_interaction_log(_log(tmp_path, "u,i\na,SKU-7\na,42\nb,42.0\nc,-3.00\nc,7.5\n"),
                                user_column="u", item_column="i")
    assert read.interactions["item_id"].tolist() == ["SKU-7", "42", "42", "-3", "7.5"]


def test_ids_of_the_log_and_its_item_table_that_miss_each_other_are_said(tmp_path, caplog):
    items = _log(tmp_path, "sku,brand\nCAFÉ-0,acme\n1,acme\n2,bolt\n", "items.csv")
    log = _log(tmp_path, "visitor,sku\nv1,café-0\nv1,1\nv2,2\nv2,3\n")
    read = load_interaction_log(log, user_column="visitor", item_column="sku", items=items)
    assert read.items.set_index("item_id")["brand"].isna().to_dict() == {
        "CAFÉ-0": False, "1": False, "2": False, "café-0": True, "3": True}
    said = [r.getMessage() for r in caplog.records if "no row in this --items table" in r.getMessage()]
    assert len(said) == 1 and "2 of the log's 4 items" in said[0] and "'café-0'" in said[0]
    assert "1 of its 3 rows match no logged item (e.g. 'CAFÉ-0')" in said[0]


def test_times_are_seconds_whether_datetimes_epoch_seconds_milliseconds_or_dates_mixed(tmp_path):
    day = 1_709_683_200  # 2024-03-06 00:00:00 UTC
    scaled = f"b,y,{(day + 30) * 1000}\nc,x,{(day + 40) * 10 ** 6}\nc,y,{(day + 50) * 10 ** 9}\n"  # ms us ns
    mixed = _log(tmp_path, f"u,i,t\na,x,2024-03-06T00:00:10\na,y,{day + 20}\nb,x,2024-03-06\n{scaled}")
    read = load_interaction_log(mixed, user_column="u", item_column="i", time_column="t")
    assert read.interactions["timestamp"].tolist() == [day + 10, day + 20, day, day + 30, day + 40, day + 50]
    # a ranker's time feature written as numbers: milliseconds (a JavaScript export) read as seconds too, as
    # the served input takes them
    assert epoch_seconds(pd.Series([(day + 1) * 1000, day + 2, (day + 3) * 10 ** 6]), "t").tolist() == [
        day + 1, day + 2, day + 3]
    frame = pd.DataFrame({"u": ["a", "b"], "i": ["x", "y"], "t": pd.to_datetime(["2024-03-06", None])})
    frame.to_parquet(tmp_path / "log.parquet")  # a timestamp column, one missing: not a count of seconds
    with pytest.raises(DataError, match="not a time"):
        load_interaction_log(str(tmp_path / "log.parquet"), user_column="u", item_column="i", time_column="t")
    frame.iloc[:1].to_parquet(tmp_path / "log.parquet")
    read = load_interaction_log(str(tmp_path / "log.parquet"), user_column="u", item_column="i",
                                time_column="t")
    assert read.interactions["timestamp"].tolist() == [day]

    headerless = _log(tmp_path, "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:51:10Z,2145365,S\n",
                      "clicks.dat")
    with pytest.raises(DataError, match="its columns are") as err:
        load_interaction_log(headerless, user_column="session_id", item_column="item_id")
    assert "may have no header row" in err.value.fix
    dat = _log(tmp_path, "198::389::4::978300760\n7::3::5::978300761\n", "ratings.dat")  # MovieLens' "::"
    with pytest.raises(DataError, match="its columns are") as err:
        load_interaction_log(dat, user_column="user", item_column="item")
    assert "joined by '::'" in err.value.fix and "a first line naming them" in err.value.fix
    # clicks within one second, the file out of order: whole seconds, the order of their fractions kept
    clicks = _log(tmp_path, "s,t,i\n1,2014-04-07T10:51:09.900Z,C\n1,2014-04-07T10:51:09.277Z,B\n"
                            "2,1396867869.5,E\n1,2014-04-07T10:51:08.100Z,A\n2,1396867869.25,D\n",
                  "clicks.csv")
    read = load_interactions("interactions", clicks, user_column="s", item_column="i", time_column="t")
    assert read.interactions["item_id"].tolist() == ["A", "D", "B", "E", "C"]
    assert read.interactions["timestamp"].tolist() == [1396867868] + [1396867869] * 4
    sequences = user_sequences(read.interactions)
    assert [list(h) for h in sequences.histories(["1", "2"])] == [["A", "B", "C"], ["D", "E"]]


@pytest.mark.parametrize("text, options, line, column, fix", [
    ("user,item\nu1,i1\n", dict(user_column="visitor"), 1, "visitor", "--user-column"),
    ("user,item\nu1,i1\n,i2\n", {}, 3, "user", "fill it in"),
    ("user,item,t\nu1,i1,100\nu1,i2,200\nu1,i3,soon\n", dict(time_column="t"), 4, "t", "fix or drop the row"),
    ("user,item,r\nu1,i1,4\nu1,i2,five\n", dict(rating_column="r"), 3, "r", "fix or drop the row"),
])
def test_each_mistake_in_a_log_is_named_with_file_line_column_and_fix(tmp_path, text, options, line, column,
                                                                      fix):
    path = _log(tmp_path, text)
    options = {"user_column": "user", "item_column": "item", **options}
    err = _error(load_interaction_log, path, **options)
    assert (err.path, err.line, err.column) == (path, line, column) and fix in err.fix
    if column != "visitor":  # a bad row (not a missing column): --skip-bad-rows drops and counts it
        data = load_interaction_log(path, **options, skip_bad_rows=True)
        assert len(data.interactions) == text.count("\n") - 2 and data.skipped[0].skipped == 1
        assert f"{path}:{line}" in data.skipped[0].examples[0] and "Fix:" not in data.skipped[0].examples[0]


def test_the_interactions_dataset_asks_for_its_columns_and_an_existing_path(tmp_path):
    err = _error(load_interactions, "interactions", _log(tmp_path, "a,b\n1,2\n"), user_column="a")
    assert "--item-column" in str(err)
    err = _error(load_interactions, "interactions", str(tmp_path / "nothing-*.csv"), user_column="a",
                 item_column="b")
    assert "names no CSV" in str(err) and "glob" in err.fix


def test_numbers_with_missing_values_spelled_out_are_numbers(tmp_path):
    spelled = ["NaN", "NA", "null", "N/A", ""]  # a quarter of the values: too many for stray typos
    rows = ["item,price,click"] + [f"i{i},{spelled[i % 5] if i % 4 == 0 else i + 0.5},{i % 2}"
                                   for i in range(200)]
    price = load_table(_log(tmp_path, "\n".join(rows) + "\n", "clicks.csv"), labels=["click"]).frame["price"]
    assert price.dtype.kind == "f" and price.isna().sum() == 50 and price.max() == 199.5


def test_bad_labels_are_named_by_line_and_value_or_skipped(tmp_path, caplog):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training.rankers import load_and_split

    rows = ["visitor,sku,clicked"] + [f"v{i % 9},{i % 13},{i % 2}" for i in range(60)]
    rows[4], rows[9], rows[20] = "v1,2,", "v2,3,2", "v3,4,"  # file lines 5, 10 and 21
    path = _log(tmp_path, "\n".join(rows) + "\n", "clicks.csv")
    cfg = DeepFMConfig(dataset="csv", data_dir=path, label_columns=("clicked",), user_column="visitor",
                       item_column="sku")
    err = _error(load_and_split, cfg, "deepfm")
    assert (err.path, err.line, err.column) == (path, 5, "clicked")
    assert "found a missing value (3 such rows: 2 x a missing value, 1 x 2.0)" in str(err)
    assert "--skip-bad-rows" in err.fix
    data, split = load_and_split(dataclasses.replace(cfg, skip_bad_rows=True), "deepfm")
    assert len(data.frame) == 57 and set(data.frame["clicked"]) == {0, 1}
    assert any("skipped 3 of 60 rows" in r.getMessage() and f"{path}:21" in r.getMessage()
               for r in caplog.records)
    rows[9] = "v2,3,true"  # a word of a 0/1 label among digits: a 1, as the docs say words are
    data, _ = load_and_split(dataclasses.replace(cfg, data_dir=_log(tmp_path, "\n".join(rows) + "\n"),
                                                 skip_bad_rows=True), "deepfm")
    assert len(data.frame) == 58 and set(data.frame["clicked"]) == {0, 1}


def test_one_stray_value_in_a_numeric_column_stops_the_run_with_the_fix(tmp_path):
    rows = ["item,price,click"] + [f"i{i},{i % 7 + 0.5},{i % 2}" for i in range(200)]
    rows[58] = "i57,abc,1"  # file line 59
    path = _log(tmp_path, "\n".join(rows) + "\n", "clicks.csv")
    err = _error(load_table, path, labels=["click"])
    assert (err.path, err.line, err.column) == (path, 59, "price") and "'abc'" in str(err)
    assert "--column-types price=numeric" in err.fix and "price=categorical" in err.fix
    with pytest.raises(DataError, match="a non-number in a numeric column"):
        load_table(path, labels=["click"], column_types=["price=numeric"])
    skipped = load_table(path, labels=["click"], column_types=["price=numeric"], skip_bad_rows=True)
    assert len(skipped.frame) == 199 and skipped.frame["price"].dtype.kind == "f"
    assert skipped.skipped[0].skipped == 1 and f"{path}:59" in skipped.skipped[0].examples[0]
    kept = load_table(path, labels=["click"], column_types=["price=categorical"])
    prices = kept.frame["price"]
    assert not pd.api.types.is_numeric_dtype(prices) and (prices == "abc").sum() == 1
    err = _error(load_table, path, labels=["click"], column_types=["price=money"])
    assert "numeric" in err.fix


def test_log_dates_written_day_first_are_read_day_first(tmp_path):
    day = 1_709_683_200  # 2024-03-06 00:00:00 UTC
    log = _log(tmp_path, "u,i,t\na,x,06/03/2024\na,y,31/03/2024 10:00\nb,x,07.03.2024\nb,y,2024-03-06\n")
    read = load_interaction_log(log, user_column="u", item_column="i", time_column="t")
    assert read.interactions["timestamp"].tolist() == [day, day + 25 * 86_400 + 36_000, day + 86_400, day]
    serial = _log(tmp_path, "u,i,t\na,x,13.01.2025 10:00\na,y,45677.19575\n", "serial.csv")  # a spreadsheet's
    err = _error(load_interaction_log, serial, user_column="u", item_column="i", time_column="t")
    assert (err.line, err.column) == (3, "t") and "serial date" in str(err)
    both = _log(tmp_path, "u,i,t\na,x,31/03/2024\na,y,03/31/2024\n", "both.csv")
    err = _error(load_interaction_log, both, user_column="u", item_column="i", time_column="t")
    assert err.column == "t" and "day first" in str(err) and "ISO" in err.fix


def test_a_ranker_time_column_and_columns_left_out_are_declared_by_flags(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training import stream
    from tfrs_recsys.training.rankers import load_and_split, ranker_spec

    rows = ["moment,device,clicked"] + [f"{1_709_683_200 + 3_600 * i},d{i % 3},{i % 2}" for i in range(80)]
    path = _log(tmp_path, "\n".join(rows) + "\n", "clicks.csv")
    cfg = DeepFMConfig(dataset="csv", data_dir=path, label_columns=("clicked",),
                       output_dir=str(tmp_path / "r"))
    data, split = load_and_split(cfg, "deepfm")
    assert ranker_spec(cfg, data, split.train)["moment"].kind != "timestamp"  # its name says nothing of time
    declared = dataclasses.replace(cfg, time_column="moment")
    spec = ranker_spec(declared, data, split.train)
    assert spec["moment"].kind == "timestamp" and spec.timestamp_column == "moment"
    streamed = stream.start(dataclasses.replace(declared, streaming="always"), "deepfm")
    assert streamed.spec["moment"].kind == "timestamp"
    err = _error(ranker_spec, dataclasses.replace(cfg, time_column="when"), data, split.train)
    assert err.column == "when" and "moment, device, clicked" in err.fix
    spec = ranker_spec(dataclasses.replace(cfg, exclude_columns=("device",)), data, split.train)
    assert spec.feature_names == ["moment"] and "device" in spec.notes["dropped"]
    err = _error(ranker_spec, dataclasses.replace(cfg, exclude_columns=("devices",)), data, split.train)
    assert err.column == "devices" and "--exclude-columns" in str(err)


def test_rows_skipped_for_a_column_and_for_a_label_are_said_in_one_line(tmp_path, caplog):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training.rankers import load_and_split

    rows = ["item,price,clicked"] + [f"i{i},{i % 7 + 0.5},{i % 2}" for i in range(60)]
    rows[10], rows[20] = "i9,abc,1", "i19,2.5,"
    path = _log(tmp_path, "\n".join(rows) + "\n", "clicks.csv")
    cfg = DeepFMConfig(dataset="csv", data_dir=path, label_columns=("clicked",),
                       column_types=("price=numeric",), skip_bad_rows=True)
    data, _ = load_and_split(cfg, "deepfm")
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(data.frame) == 58 and len(said) == 1 and "skipped 2 of 60 rows" in said[0]
    assert "1 x column 'clicked': label must be 0 or 1" in said[0] and "such rows" not in said[0]


def test_item_tables_text_lists_a_table_matching_nothing_and_unused_log_columns(tmp_path, caplog):
    items = _log(tmp_path, "sku,tags,title\n00001,eco|kids,\"Boots, red\"\n00002,new,\"Socks, blue\"\n"
                           "00003,eco| new,\"Hat, green\"\n00004,,\"Scarf, grey\"\n", "items.csv")
    log = _log(tmp_path, "visitor,sku,channel\nv1,00001,web\nv1,00002,app\nv2,00001,app\nv2,00003,web\n")
    read = load_interaction_log(log, user_column="visitor", item_column="sku", items=items)
    tags = read.items.set_index("item_id")["tags"]
    assert tags["00001"] == ["eco", "kids"] and tags["00003"] == ["eco", "new"] and tags["00002"] == ["new"]
    assert tags["00004"] == [] and read.items.set_index("item_id")["title"]["00001"] == "Boots, red"
    priced = _log(tmp_path, 'visitor,sku,price\nv1,00001,"12,50"\nv1,00002,"3,99"\nv2,00001,"12,50"\n'
                            'v2,00003,"7,25"\n', "priced.csv")  # the log's own price: a number per item
    prices = load_interaction_log(priced, user_column="visitor", item_column="sku").items.set_index("item_id")
    assert prices["price"].tolist() == [12.5, 3.99, 7.25]  # not the lists ['12', '50'], ...
    assert any("column(s) channel change within one item and within one user" in r.getMessage()
               for r in caplog.records)
    renamed = _log(tmp_path, "product,tags\n00001,eco\n", "renamed.csv")  # the id column named apart
    err = _error(load_interaction_log, log, user_column="visitor", item_column="sku", items=renamed)
    assert err.column == "sku" and "rename the table's id column to 'sku'" in err.fix
    excel = _log(tmp_path, "sku,tags\n1,eco\n2,new\n3,kids\n", "excel.csv")  # leading zeros lost
    err = _error(load_interaction_log, log, user_column="visitor", item_column="sku", items=excel)
    assert "none of the log's 3 items has a row" in str(err) and "'00001'" in str(err)
    assert "leading zeros" in err.fix


def test_event_types_are_rated_with_rating_values(tmp_path, caplog):
    log = _log(tmp_path, "u,i,event\na,x,view\na,y,cart\nb,x,purchase\nb,z,view\nc,y,view\n")
    with caplog.at_level("WARNING"):  # read without a rating: every event an interaction, said with the fix
        load_interaction_log(log, user_column="u", item_column="i")
    assert "--rating-column event --rating-values view=1,cart=1,purchase=1" in caplog.text
    caplog.clear()
    devices = _log(tmp_path, "u,i,device\na,x,mobile\na,y,desktop\nb,x,tablet\nb,z,mobile\n", "devices.csv")
    with caplog.at_level("WARNING"):  # a device is no event type
        load_interaction_log(devices, user_column="u", item_column="i")
    assert "--rating-column" not in caplog.text
    options = dict(user_column="u", item_column="i", rating_column="event")
    err = _error(load_interaction_log, log, **options)
    assert err.column == "event" and "'view'" in str(err) and "--rating-values view=1" in err.fix
    weights = ["view=1", "cart=3", "purchase=5"]
    read = load_interaction_log(log, **options, rating_values=weights, min_rating=3).interactions
    assert read[["user_id", "item_id", "rating"]].values.tolist() == [["a", "y", 3.0], ["b", "x", 5.0]]
    err = _error(load_interaction_log, log, **options, rating_values=["view=1", "cart=3"])
    assert (err.line, err.column) == (4, "event") and "'purchase' has no --rating-values entry" in str(err)
    mixed = _log(tmp_path, "u,i,event\na,x,View\na,y,CART\nb,x,purchase\n", "mixed.csv")  # any case matches
    read = load_interaction_log(mixed, **options, rating_values=["view=1", "Cart=3", "PURCHASE=5"])
    assert read.interactions["rating"].tolist() == [1.0, 3.0, 5.0]
    err = _error(load_interaction_log, mixed, **options, rating_values=["kauf=5", "Kauf=1"])
    assert "name one value" in str(err)


def test_a_log_read_as_implicit_clicks_keeps_its_time_ratings_and_user_table(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training.rankers import load_and_split, ranker_spec

    day = 1_709_683_200
    rows = ["u,i,stars,t"] + [f"u{k % 7},i{k % 11},{k % 5 + 1},{day + 3_600 * (60 - k)}" for k in range(60)]
    log = _log(tmp_path, "\n".join(rows) + "\n")
    users = _log(tmp_path, "u,country\n" + "".join(f"u{k},c{k % 2}\n" for k in range(7)), "users.csv")
    items = _log(tmp_path, "i,category,tags\n" + "".join(f"i{k},k{k % 3},a|b\n" for k in range(11)),
                 "items.csv")
    cfg = DeepFMConfig(dataset="interactions", data_dir=log, user_column="u", item_column="i",
                       time_column="t", rating_column="stars", min_rating=4, users=users, items=items)
    data, split = load_and_split(cfg, "deepfm")
    assert ranker_spec(cfg, data, split.train)["timestamp"].kind == "timestamp"  # --time-column: the log's
    clicks = data.frame[data.frame["label"] == 1]
    assert len(clicks) == 24  # the rows rated 4 or 5, not all 60
    assert clicks["timestamp"].min() > day and "country" in data.frame.columns  # times, not file order
    by_item = data.frame.drop_duplicates("item_id").set_index("item_id")
    assert by_item.loc["i4", "category"] == "k1" and by_item.loc["i4", "tags"] == "a|b"
    untimed, _ = load_and_split(dataclasses.replace(cfg, time_column=None), "deepfm")  # file order: no times
    assert not {"hour", "weekday", "item_hotness", "timestamp"} & set(untimed.frame.columns)


def _catalog_clicks(tmp_path, rows: int = 4000) -> tuple[str, str, str]:
    """Impressions whose click follows only the item's category, which only the --items table holds
    (skus with leading zeros), and a --users table."""
    rng = np.random.default_rng(3)
    category = rng.choice(["shoes", "books", "games"], 60)
    items = pd.DataFrame({"sku": [f"{s:05d}" for s in range(50)], "category": category[:50],
                          "tags": rng.choice(["eco|kids", "new", "eco|new"], 50)})  # 00050-00059: no row
    sku, visitor = rng.integers(60, size=rows), rng.integers(40, size=rows)
    clicked = (rng.random(rows) < np.where(category[sku] == "shoes", 0.6, 0.1)).astype(int)
    frame = pd.DataFrame({"visitor": [f"v{v}" for v in visitor], "sku": [f"{s:05d}" for s in sku],
                          "device": rng.choice(["m", "d"], rows), "clicked": clicked})
    paths = [str(tmp_path / name) for name in ("imps.csv", "items.csv", "users.csv")]
    frame.to_csv(paths[0], index=False)
    items.to_csv(paths[1], index=False)
    pd.DataFrame({"visitor": [f"v{v}" for v in range(40)], "country": ["nl", "de"] * 20}).to_csv(paths[2],
                                                                                              index=False)
    return paths[0], paths[1], paths[2]


def test_a_ranker_learns_from_its_items_and_users_tables_in_memory_and_streamed(tmp_path, caplog):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training import deepfm
    from tfrs_recsys.training.rankers import load_and_split

    imps, items, users = _catalog_clicks(tmp_path)
    cfg = DeepFMConfig(dataset="csv", data_dir=imps, label_columns=("clicked",), user_column="visitor",
                       item_column="sku", items=items, users=users, progress=False)
    data, _ = load_and_split(cfg, "deepfm")
    joined = data.frame.set_index("sku")
    assert joined.loc["00007", "category"].iloc[0] in ("shoes", "books", "games")
    assert joined.loc["00007", "tags"].iloc[0] in ("eco|kids", "new", "eco|new")
    assert joined.loc["00055", "category"].isna().all() and set(data.frame["country"]) == {"nl", "de"}
    assert any("10 of the log's 60 items have no row" in r.getMessage() for r in caplog.records)
    err = _error(load_and_split, dataclasses.replace(cfg, column_types=("category=numeric",)), "deepfm")
    assert (err.path, err.column) == (items, "category")  # --column-types reaches a joined table's columns
    # The ids are left out of the features: only the joined category can tell clicks apart.
    streamed = dataclasses.replace(cfg, streaming="always", exclude_columns=("sku", "visitor"), epochs=3,
                                   batch_size=128, embedding_dim=4, hidden_units=(8,),
                                   output_dir=str(tmp_path / "run"))
    metrics = deepfm.run(streamed)
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert {f["name"] for f in spec["features"]} == {"device", "category", "tags", "country"}
    assert metrics["streamed"] and metrics["auc"] > 0.65  # blind to the category: 0.5 +- 0.03
    assert any("items have no row" in r.getMessage() and "of the sample's" in r.getMessage()
               for r in caplog.records)


def test_the_feature_store_reads_an_interaction_log_by_its_own_columns(tmp_path):
    from tfrs_recsys.serving import feature_store

    rows = ("s1,2014-04-07T10:51:09Z,b,1\ns1,2014-04-07T10:50:00Z,a,2\ns2,2014-04-07T11:00:00Z,c,4\n"
            "s1,2014-04-07T10:52:00Z,c,3\n")
    log = _log(tmp_path, "session,ts,sku,category\n" + rows * 10 + "s2,2014-04-07T11:00:00Z,c,S\n",
               "clicks.csv")
    out = tmp_path / "store"
    flags = ["--dataset", "interactions", "--data", log, "--user-column", "session", "--item-column",
             "sku", "--time-column", "ts", "--out", str(out)]
    assert feature_store.main(flags) == 2  # 'S' among numbers: the error names --column-types
    assert feature_store.main([*flags, "--column-types", "category=categorical"]) == 0
    untimed = flags[:flags.index("--time-column")] + flags[flags.index("--out"):]
    assert feature_store.main([*untimed, "--column-types", "category=categorical"]) == 2  # dated 1970
    store = FeatureStore.load(out)
    assert store.history("s1") == ["a"] * 10 + ["b"] * 10 + ["c"] * 10  # in time order
    assert store.history("s2") == ["c"] * 11
    meta = store.meta
    assert (meta.user_column, meta.item_column, meta.time_column) == ("session", "sku", "ts")


def test_the_feature_store_reads_a_rankers_items_table_by_its_own_id_column(tmp_path):
    from tfrs_recsys.serving import feature_store

    # the synthetic log's items are "0".."499": "00007" is another item than "7", not the same one
    items = _log(tmp_path, "sku,category,price\n" + "".join(f'{i},c{i % 3},"€{i},50"\n' for i in range(20))
                 + "00007,zip,\n", "items.csv")
    users = _log(tmp_path, "visitor,country,signup_date\n3,de,31/01/2024\n4,nl,02/03/2024\n", "users.csv")
    out = tmp_path / "store"
    assert feature_store.main(["--dataset", "synthetic", "--out", str(out), "--item-features", items,
                               "--item-column", "sku", "--user-features", users,
                               "--user-column", "visitor"]) == 0
    store = FeatureStore.load(out)
    assert store.item_features(["00007", "7", "400"], ["category"])["category"] == ["zip", "c1", None]
    assert store.item_features(["7"], ["price"])["price"] == [7.5]  # a number, as the ranker takes it
    assert store.user_features("3", ["country"]) == {"country": "de"}
    # a date as the ranker takes it (epoch seconds, day first as the table shows), not its text
    assert store.user_features("4", ["signup_date"])["signup_date"] == pd.Timestamp("2024-03-02").timestamp()
    other = _log(tmp_path, "sku,category\nSKU-1,a\n", "other.csv")  # another catalog's ids: refused
    assert feature_store.main(["--dataset", "synthetic", "--out", str(tmp_path / "s2"), "--item-features",
                               other, "--item-column", "sku"]) == 2
    typo = _log(tmp_path, "sku,category,rating\n1,a,4.5\n2,b,neu\n3,c,3\n", "typo.csv")
    strict = ["--dataset", "synthetic", "--out", str(tmp_path / "s3"), "--item-features", typo,
              "--item-column", "sku", "--column-types", "rating=numeric"]
    assert feature_store.main(strict) == 2  # as the ranker read it without --skip-bad-rows
    assert feature_store.main([*strict, "--skip-bad-rows"]) == 0  # and with it: missing, the row kept
    lenient = FeatureStore.load(tmp_path / "s3")
    assert lenient.item_features(["2", "3"], ["category", "rating"]) == {"category": ["b", "c"],
                                                                        "rating": [None, 3.0]}


def test_a_streamed_ranker_that_learned_nothing_says_what_to_try(tmp_path, capsys):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training import deepfm

    imps, _, _ = _catalog_clicks(tmp_path, rows=20_000)  # 2,000 validation rows: AUC 0.5 +- 0.013
    frame = pd.read_csv(imps, dtype=str)
    frame["clicked"] = np.random.default_rng(0).integers(2, size=len(frame))  # nothing to learn
    frame.to_csv(imps, index=False)
    deepfm.run(DeepFMConfig(dataset="csv", data_dir=imps, label_columns=("clicked",), streaming="always",
                            epochs=1, embedding_dim=4, hidden_units=(8,), progress=False,
                            output_dir=str(tmp_path / "run")))
    assert "deepfm: warning: the best validation auc" in capsys.readouterr().err


def test_a_ranker_learns_from_prices_written_for_people(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training import deepfm

    rng = np.random.default_rng(5)
    price = rng.uniform(1, 2000, 4000)  # no two alike: as text categories, no price seen in test was learned
    clicked = (rng.random(4000) < np.where(price < 500, 0.6, 0.1)).astype(int)
    shown = [f"€{p:,.2f}".replace(",", " ").replace(".", ",") for p in price]  # "€1 234,50"
    imps = str(tmp_path / "imps.csv")
    pd.DataFrame({"price": shown, "device": rng.choice(["m", "d"], 4000), "clicked": clicked}).to_csv(
        imps, index=False)
    metrics = deepfm.run(DeepFMConfig(dataset="csv", data_dir=imps, label_columns=("clicked",), epochs=3,
                                      streaming="always", batch_size=128, embedding_dim=4, hidden_units=(8,),
                                      progress=False, output_dir=str(tmp_path / "run")))
    price_spec = next(f for f in json.loads((tmp_path / "run" / "spec.json").read_text())["features"]
                      if f["name"] == "price")
    assert price_spec["kind"] == "numeric" and price_spec["decimal_comma"]
    assert metrics["auc"] > 0.7  # the price's threshold: about 0.75; blind to it, 0.5 +- 0.03


def test_a_catalog_rows_bad_number_is_left_out_and_the_row_kept(tmp_path, caplog):
    from tfrs_recsys.data.entities import read_entity_table

    items = _log(tmp_path, "sku,price,category\n1,2.5,shoes\n2,abc,books\n3,4,games\n", "items.csv")
    table = read_entity_table(items, "sku", "item", True, [], ["price=numeric"]).set_index("item_id")
    assert table.loc["2", "category"] == "books" and np.isnan(table.loc["2", "price"])  # kept, price missing
    assert table.loc["3", "price"] == 4
    assert any("column 'price': 1 value(s) not numbers" in r.getMessage() and "line 3" in r.getMessage()
               for r in caplog.records)
    err = _error(read_entity_table, items, "sku", "item", False, [], ["price=numeric"])
    assert (err.column, err.line) == ("price", 3)  # without --skip-bad-rows, the run stops there
    shop = _log(tmp_path, 'sku,cost,publish_date\n1,"€1,50",2024-05-21\n2,"€12,00",2024-05-24\n3,,\n',
                "shop.csv")  # read once, for every model: retrieval's towers too
    shop_table = read_entity_table(shop, "sku", "item", False, [], []).set_index("item_id")
    costs, published = shop_table["cost"], shop_table["publish_date"]
    assert costs["1"] == 1.5 and costs["2"] == 12.0 and np.isnan(costs["3"])
    assert published["2"] - published["1"] == 3 * 86400 and np.isnan(published["3"])  # epoch seconds
    kept = read_entity_table(shop, "sku", "item", False, [], ["publish_date=categorical"])
    assert kept.set_index("item_id")["publish_date"]["1"] == "2024-05-21"
    users = _log(tmp_path, "user,joined,tier\nu1,13.01.2024,gold\nu2,02.03.2023,silver\n", "users.csv")
    joined = read_entity_table(users, "user", "user", False, [], ["joined=timestamp"]).set_index("user_id")
    assert joined["joined"]["u1"] == 1705104000.0  # 13 January 2024, day first: seconds, as served


def test_ranker_labels_written_as_words_and_impressions_of_no_item(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.data import streaming
    from tfrs_recsys.data.bad_rows import labels_of
    from tfrs_recsys.training.rankers import load_and_split

    rows = ["sku,device,skipped"] + [f"s{i % 9},{'md'[i % 2]},{('true', 'False', 'TRUE')[i % 3]}"
                                     for i in range(60)]
    path = _log(tmp_path, "\n".join(rows) + "\n", "plays.csv")
    cfg = DeepFMConfig(dataset="csv", data_dir=path, label_columns=("skipped",), item_column="sku")
    data, _ = load_and_split(cfg, "deepfm")
    assert data.frame["skipped"].tolist()[:3] == [1.0, 0.0, 1.0]
    table = streaming.open_table(path, labels=["skipped"])
    batch = next(streaming.read_part(table, table.files, 0, seed=0, limit=None))
    assert set(labels_of(batch, ["skipped"])["skipped"]) == {0.0, 1.0}  # streamed alike
    words = path.replace("plays", "words")
    Path(words).write_text("\n".join(r.replace("true", "listened").replace("rue", "istened") for r in rows))
    err = _error(load_and_split, dataclasses.replace(cfg, data_dir=words), "deepfm")
    assert "label must be 0 or 1, found 'listened'" in str(err) and err.line == 2  # not "a non-number"
    data, _ = load_and_split(dataclasses.replace(cfg, data_dir=words, skip_bad_rows=True), "deepfm")
    assert len(data.frame) == 40  # the stray word's rows left out and counted, the true/false ones kept
    Path(words).write_text("\n".join(r.replace("true", "listened").replace("False", "paused")
                                     .replace("TRUE", "listened") for r in rows))
    err = _error(load_and_split, dataclasses.replace(cfg, data_dir=words, skip_bad_rows=True), "deepfm")
    assert "every row was skipped" in str(err)  # words only: no row has a label
    rows[5] = ",m,true"
    Path(path).write_text("\n".join(rows) + "\n")
    err = _error(load_and_split, cfg, "deepfm")
    assert (err.column, err.line) == ("sku", 6) and "empty item id" in str(err)
    data, _ = load_and_split(dataclasses.replace(cfg, skip_bad_rows=True), "deepfm")
    assert len(data.frame) == 59


def test_a_ranker_stopped_early_at_its_first_epoch_is_told_of_patience(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training.common import EpochEvaluator
    from tfrs_recsys.training.fit_advice import still_learning_note, weak_fit_advice

    evaluator = EpochEvaluator(lambda model: {}, tmp_path, monitor="auc", patience=3, save_checkpoint=False)
    evaluator.best_epoch, evaluator.epochs_run, evaluator.best_metrics = 1, 4, {"auc": 0.52}
    advice = weak_fit_advice(evaluator, DeepFMConfig(epochs=10), 24_000)
    assert "ended it after 4 of 10 epochs" in advice and "--patience (now 3 epochs)" in advice
    evaluator.epochs_run = 10  # it ran every epoch: patience was not what ended it
    assert "--patience" not in weak_fit_advice(evaluator, DeepFMConfig(epochs=10), 24_000)
    evaluator.best_epoch, evaluator.best_metrics = 10, {"auc": 0.65}  # still rising when the epochs ran out
    assert weak_fit_advice(evaluator, DeepFMConfig(epochs=10), 24_000) is None
    note = still_learning_note(evaluator, DeepFMConfig(epochs=10, batch_size=512), 24_000)
    assert "more --epochs may help" in note and "an epoch is 47 steps of 512 rows" in note
    assert "--batch-size" not in still_learning_note(evaluator, DeepFMConfig(epochs=10), 24_000)  # 375 of 64
    assert "--batch-size" not in still_learning_note(evaluator, DeepFMConfig(epochs=10, batch_size=512),
                                                     2_000_000)
    evaluator.best_epoch = 7
    assert still_learning_note(evaluator, DeepFMConfig(epochs=10), 24_000) is None


def test_a_joined_tables_date_declared_a_timestamp_is_one(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training.rankers import load_and_split, ranker_spec

    rows = ["visitor,device,clicked"] + [f"v{i % 6},{'md'[i % 2]},{i % 2}" for i in range(60)]
    log = _log(tmp_path, "\n".join(rows) + "\n", "clicks.csv")
    firsts = "".join(f"v{i},{10 + i}/03/2024,{10 + i}.03.2024\n" for i in range(6))  # day first
    users = _log(tmp_path, "visitor,first_order,signup\n" + firsts, "users.csv")
    cfg = DeepFMConfig(dataset="csv", data_dir=log, label_columns=("clicked",), user_column="visitor",
                       users=users)
    data, split = load_and_split(cfg, "deepfm")
    spec = ranker_spec(cfg, data, split.train)
    assert spec["first_order"].kind != "timestamp"  # "first_order" says no time
    assert spec["signup"].kind == "timestamp" and spec["signup"].newest == 1710460800.0  # a catalog's word
    declared = dataclasses.replace(cfg, column_types=("first_order=timestamp",))
    data, split = load_and_split(declared, "deepfm")
    first = ranker_spec(declared, data, split.train)["first_order"]
    assert first.kind == "timestamp" and first.newest == 1710460800.0  # 15 March 2024: read day first


def test_a_streamed_run_stops_at_a_bad_row_past_its_sample_or_leaves_it_out_counted(tmp_path):
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training import deepfm

    rows = ["sku,device,app_version,skipped"] + [
        f"s{i % 9},{'md'[i % 2]},1.{i % 11},{('true', 'false')[i % 3 > 0]}" for i in range(3000)]
    rows[2501] = "s1,m,1.10,maybe"  # past the 500 rows the spec is inferred from
    rows[2601] = ",d,1.2,true"  # an impression of no item
    path = _log(tmp_path, "\n".join(rows) + "\n", "plays.csv")
    cfg = DeepFMConfig(dataset="csv", data_dir=path, label_columns=("skipped",), item_column="sku", epochs=1,
                       streaming="always", stream_sample_rows=500, batch_size=256, embedding_dim=4,
                       hidden_units=(8,), progress=False, column_types=("app_version=categorical",),
                       output_dir=str(tmp_path / "run"))
    err = _error(deepfm.run, cfg)
    assert (err.path, err.line) == (path, 2502) and "found 'maybe'" in str(err)
    metrics = deepfm.run(dataclasses.replace(cfg, skip_bad_rows=True, output_dir=str(tmp_path / "skip")))
    assert metrics["rows_left_out"] == {"column 'skipped': label must be 0 or 1": 1,
                                        "column 'sku': empty item id": 1}
    spec = json.loads((tmp_path / "skip" / "spec.json").read_text())
    assert "1.10" in next(f for f in spec["features"] if f["name"] == "app_version")["vocabulary"]


def test_streamed_shards_leave_out_a_malformed_line_and_a_word_in_a_numeric_label(tmp_path):
    """Semicolon shards (the separator read from the header), the second with a line of too many fields
    and a label 'maybe' where the first shard's labels are all numbers."""
    from tfrs_recsys.config import DeepFMConfig
    from tfrs_recsys.training import deepfm

    shards = tmp_path / "shards"
    shards.mkdir()
    rows = [f"s{i % 9};{'md'[i % 2]};{int(i % 3 == 0)}" for i in range(3000)]
    (shards / "part-0.csv").write_text("\n".join(["sku;device;clicked", *rows[:1500]]) + "\n")
    second = rows[1500:]
    second[100], second[200] = "s1;m;1;extra", "s2;d;maybe"
    (shards / "part-1.csv").write_text("\n".join(["sku;device;clicked", *second]) + "\n")
    cfg = DeepFMConfig(dataset="csv", data_dir=str(shards), label_columns=("clicked",), item_column="sku",
                       epochs=1, streaming="always", stream_sample_rows=500, batch_size=256, embedding_dim=4,
                       hidden_units=(8,), progress=False, output_dir=str(tmp_path / "run"))
    err = _error(deepfm.run, cfg)
    assert err.path == str(shards / "part-1.csv") and err.line in (102, 202), str(err)
    metrics = deepfm.run(dataclasses.replace(cfg, skip_bad_rows=True, output_dir=str(tmp_path / "skip")))
    assert metrics["rows_left_out"] == {"line: 3 fields expected, as the header has": 1,
                                        "column 'clicked': label must be 0 or 1": 1}


def test_a_skipped_row_of_a_shard_is_reported_for_the_table_and_named_by_its_own_file(tmp_path):
    from tfrs_recsys.data.tabular import load_table

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "part-0.csv").write_text("sku,price,click\n1,2.5,1\n2,3.0,0\n")
    (shards / "part-1.csv").write_text("sku,price,click\n3,4.0,1\n4,abc,0\n")
    data = load_table(str(shards), labels=["click"], column_types=("price=numeric",), skip_bad_rows=True)
    [report] = data.skipped
    assert (report.path, report.skipped, report.total) == (str(shards), 1, 4)
    assert report.examples[0].startswith(f"{shards / 'part-1.csv'}:3:")  # not the first shard's
