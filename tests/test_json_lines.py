"""JSON Lines logs as event pipelines write them: nested objects, ids written as numbers on some lines and
as text on others, keys missing or first seen late, compressed shards; read in memory and streamed."""
import gzip
import json

import pyarrow as pa
import pytest

from tfrs_recsys.data import streaming
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.interactions import load_interaction_log
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.tabular import load_table, locate, read_table


def _events(n: int, start: int = 0) -> list[dict]:
    events = []
    for i in range(start, start + n):
        event = {"user_id": i % 7 if i % 2 else f"{i % 7}",
                 "item": {"id": f"sku-{i % 5}", "price": 1.5 * (i % 4)},
                 "ts": f"2026-12-{1 + i % 28:02d}T10:{i % 60:02d}:00", "clicked": i % 3 == 0,
                 "tags": ["a"] * (i % 3)}
        if i % 4 == 0:
            del event["item"]["price"]  # a key some events lack
        if i == start + n - 1:
            event["coupon"] = "XMAS"  # a key only the last event has
        events.append(event)
    return events


def _write(path, events, *, compress=False, bom=False):
    lines = "\n".join(json.dumps(e) for e in events) + "\n\n"  # a blank line at the end
    text = ("\ufeff" if bom else "") + lines
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


def test_a_json_lines_log_reads_its_nested_keys_mixed_ids_and_late_keys(tmp_path):
    events = _events(40)
    frame, _ = read_table(str(_write(tmp_path / "events.jsonl", events, bom=True)))
    assert set(frame.columns) == {"user_id", "item.id", "item.price", "ts", "clicked", "tags", "coupon"}
    assert frame["user_id"].tolist() == [str(i % 7) for i in range(40)]  # numbers and text alike: text
    assert frame["item.price"].isna().sum() == 10 and frame["coupon"].notna().sum() == 1
    assert frame["tags"].map(len).tolist() == [i % 3 for i in range(40)]
    as_array = tmp_path / "events.json"
    as_array.write_text(json.dumps(events))
    assert read_table(str(as_array))[0].equals(frame)
    spec = infer_schema(load_table(str(tmp_path / "events.jsonl"), labels=["clicked"], user_column="user_id",
                                   item_column="item.id").frame, labels=["clicked"])
    kinds = {column.name: column.kind for column in spec.features}
    assert kinds["ts"] == "timestamp" and kinds["item.price"] == "numeric"
    log = load_interaction_log(str(tmp_path / "events.jsonl"), user_column="user_id", item_column="item.id",
                               time_column="ts")
    assert len(log.interactions) == 40


def test_json_lines_shards_stream_as_they_read_in_memory(tmp_path):
    shards = tmp_path / "export"
    shards.mkdir()
    for part in range(2):
        events = _events(30, start=30 * part)
        if part == 0:
            del events[-1]["coupon"]
        _write(shards / f"part-{part}.jsonl.gz", events, compress=True)
    (shards / "_SUCCESS").write_text("")
    (shards / "schema.json").write_text("{}")  # a folder's .json is metadata, not a shard
    frame, _ = read_table(str(shards))
    assert len(frame) == 60 and locate(frame, 31) == (str(shards / "part-1.jsonl.gz"), 2)
    table = streaming.open_table(str(shards), labels=["clicked"], user_column="user_id")
    assert table.rows == 60 and table.schema.field("user_id").type == pa.string()
    streamed = pa.Table.from_batches([batch for file in table.files
                                      for batch in streaming.record_batches(file, table.schema, 16)])
    assert streamed.num_rows == 60 and "coupon" not in streamed.column_names  # a key first seen later
    assert streamed.column("user_id").to_pylist() == frame["user_id"].tolist()
    assert streamed.column("item.price").to_pylist()[:8] == [None, 1.5, 3.0, 4.5, None, 1.5, 3.0, 4.5]
    sample = streaming.sample_rows(table, 100, seed=0)
    assert 30 < len(sample) < 60 and set(sample["clicked"].unique()) <= {0, 1}


def test_bad_json_lines_are_named_by_file_and_line(tmp_path):
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"u": "a", "i": "x"}\n{"u": "b", "i": ')
    lists = tmp_path / "lists.ndjson"
    lists.write_text('{"u": "a", "i": "x"}\n\n[1, 2]\n')
    for path, line, message in ((cut, 2, "not JSON"), (lists, 3, "a JSON list, not an object")):
        for read in (lambda: read_table(str(path)),
                     lambda: list(streaming.record_batches(str(path), None, 16))):
            with pytest.raises(DataError, match=message) as error:
                read()
            assert (error.value.path, error.value.line) == (str(path), line)
    spaced = tmp_path / "spaced.jsonl"  # a row is named by its line, blank lines counted
    spaced.write_text('{"u": "a", "c": 1}\n\n{"u": "b", "c": 7}\n')
    assert locate(read_table(str(spaced))[0], 1) == (str(spaced), 3)
    array = tmp_path / "events.json"
    array.write_text(json.dumps(_events(3)))
    with pytest.raises(DataError, match="cannot be streamed") as error:
        streaming.open_table(str(array), labels=[])
    assert "orient='records', lines=True" in error.value.fix
    shards = tmp_path / "shards"
    shards.mkdir()
    _write(shards / "a.jsonl", [{"u": "a", "price": 1.5}] * 3)
    _write(shards / "b.jsonl", [{"u": "b", "price": "free"}] * 3)
    table = streaming.open_table(str(shards), labels=[])
    with pytest.raises(DataError, match="cannot be read as the column's type double") as error:
        list(streaming.record_batches(table.files[1], table.schema, 16))
    assert (error.value.path, error.value.column) == (table.files[1], "price")


def test_whole_numbers_first_and_decimals_later_stream_once_declared_numeric(tmp_path):
    _write(tmp_path / "a.jsonl", [{"u": "a", "price": 3, "click": 1}] * 3)
    _write(tmp_path / "b.jsonl", [{"u": "b", "price": 10.5, "click": 0}] * 3)
    table = streaming.open_table(str(tmp_path), labels=["click"])
    with pytest.raises(DataError, match="type int64") as error:
        list(streaming.record_batches(table.files[1], table.schema, 16))
    assert "--column-types price=numeric" in error.value.fix
    table = streaming.open_table(str(tmp_path), labels=["click"], column_types=["price=numeric"])
    read = [b for f in table.files for b in streaming.record_batches(f, table.schema, 16)]
    assert pa.Table.from_batches(read).column("price").to_pylist() == [3.0] * 3 + [10.5] * 3


def test_empty_part_files_are_no_shards_and_a_key_written_both_ways_is_refused(tmp_path):
    shards = tmp_path / "export"
    shards.mkdir()
    (shards / "part-0.jsonl").write_bytes(b"")  # an empty partition, sorted first
    _write(shards / "part-1.jsonl", [{"u": "a", "c": 1}, {"u": "b", "c": 0}])
    assert len(read_table(str(shards), required=["c"])[0]) == 2
    assert streaming.open_table(str(shards), labels=["c"]).rows == 2
    with pytest.raises(DataError, match="the file is empty"):
        read_table(str(shards / "part-0.jsonl"))
    with pytest.raises(DataError, match="no rows in any shard"):
        streaming.open_table(str(shards / "part-0.jsonl"), labels=[])
    clash = tmp_path / "clash.jsonl"  # ids of mixed kinds: read line by line, where it was not refused
    _write(clash, [{"item.id": "flat-1", "item": {"id": "n1"}, "u": 7},
                   {"item.id": "flat-2", "item": {"id": "n2"}, "u": "x"}])
    with pytest.raises(DataError, match="'item.id' is written both as one key and as a nested object"):
        read_table(str(clash))
