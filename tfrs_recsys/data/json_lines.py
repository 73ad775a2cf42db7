"""JSON Lines logs (``events.jsonl``, ``.ndjson``; ``.json`` named directly), plain or compressed.

One JSON object per line, as event pipelines and warehouses export them; a nested object becomes
``parent.child`` columns (as a Parquet struct does), an array a list column, an ISO 8601 string a time.
Arrow parses the file in C++; where one key holds values of several kinds (``"user_id": 123`` on one
line, ``"u-9"`` on another, as trackers write), or a line is not JSON, the file is read again line by
line in Python: a key of mixed kinds becomes text (``"123"``, ``"u-9"``), and a bad line is named.
A ``.json`` file holding one array of objects reads as its objects (whole, in memory).

Streamed (:func:`batches`), a file is parsed a block of :data:`BLOCK_BYTES` of text at a time, and each
block takes the columns and types of the first shard's first block: a key first seen later is left out,
and a value that cannot be read as its column's type is an error naming it.
"""
from __future__ import annotations

import io
import json
import logging
import re
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from tfrs_recsys.data.compressed import open_text, read_text_bytes
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.readers import LINE_NUMBERS, plain_columns
from tfrs_recsys.data.times import epoch_seconds

logger = logging.getLogger(__name__)
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
BLOCK_BYTES = 1 << 24  # text parsed at once, streamed: bounds the reader's memory
SHARD_SUFFIXES = (".jsonl", ".ndjson")  # a folder's .json files are more often metadata than shards
BOM = b"\xef\xbb\xbf"
_LINE_FIX = "write one JSON object per line (JSON Lines), UTF-8"
_SAID_SLOW: set = set()  # files whose slow reading was said
_FLATTEN = "flatten the objects (a few levels of nesting read as parent.child columns)"


def read_json_table(path: str) -> pa.Table:
    """The whole file as an Arrow table of plain columns (module docstring).

    Raises:
      DataError: a line is not a JSON object, or the file is not UTF-8, naming the line.
    """
    return _parse(read_text_bytes(path).removeprefix(BOM), path, first_line=1, whole=True)


def read_json_frame(path: str) -> pd.DataFrame:
    """The whole file as a frame (:func:`read_json_table`), each row's line kept where blank lines would
    shift them (``attrs[LINE_NUMBERS]``, as the text reader keeps them)."""
    data = read_text_bytes(path).removeprefix(BOM)
    if not data.strip():
        raise DataError("the file is empty", path=path,
                        fix="point at a file that holds data rows (was the download cut short?)")
    frame = _parse(data, path, first_line=1, whole=True).to_pandas()
    if not data.lstrip(b" \t\r\n").startswith(b"[") and re.search(rb"(?:^|\n)[ \t\r]*\n", data):
        frame.attrs[LINE_NUMBERS] = [n + 1 for n, line in enumerate(data.split(b"\n")) if line.strip()]
    return frame


def batches(path: str, schema: pa.Schema | None, rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``rows`` rows, a block of lines parsed at a time.

    Args:
      path: The file.
      schema: The columns and types every batch is given (None: as the block reads).
      rows: The most rows per batch.

    Yields:
      The batches.
    """
    line, rest, first = 1, b"", True
    with open_text(path) as fh:
        while True:
            block = fh.read(BLOCK_BYTES)
            if first and block.lstrip(BOM + b" \t\r\n").startswith(b"["):
                raise DataError("a JSON array cannot be streamed", path=path,
                                fix=f"{_LINE_FIX}, e.g. pandas.read_json(path).to_json(out, "
                                    "orient='records', lines=True), or read it in memory (--streaming never)")
            text = (rest + block).removeprefix(BOM) if first else rest + block
            first = False
            cut = text.rfind(b"\n") + 1 if block else len(text)
            chunk, rest = text[:cut], text[cut:]
            if chunk.strip():
                table = _parse(chunk, path, first_line=line, whole=False)
                if schema is not None:
                    table = conform(table, schema, path)
                yield from table.to_batches(max_chunksize=rows)
            line += chunk.count(b"\n")
            if not block:
                return


def count_rows(path: str) -> int:
    """The objects of a JSON Lines file: its lines that are not blank."""
    count, rest = 0, b""
    with open_text(path) as fh:
        while block := fh.read(1 << 24):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            count += sum(1 for line in lines if line.strip())
    return count + bool(rest.strip())


def conform(table: pa.Table, schema: pa.Schema, path: str) -> pa.Table:
    """``table`` with ``schema``'s columns in its types: a missing one all nulls, another left out."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        try:
            columns.append(column if column.type == field.type else pc.cast(column, field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if pa.types.is_timestamp(field.type) and pa.types.is_string(column.type):
                columns.append(_times(column, field))  # ISO text with zones, read line by line
                continue
            decimals = (f"declare it --column-types {field.name}=numeric to read every value as a decimal, "
                        if pa.types.is_integer(field.type) else "")
            raise DataError(f"values that cannot be read as the column's type {field.type}, which the first "
                            f"rows of the first shard set ({exc})", path=path, column=field.name,
                            fix=f"{decimals}write the column with one kind of value throughout (e.g. every "
                                "id quoted), or read the data in memory (--streaming never)") from None
    return pa.Table.from_arrays(columns, schema=schema)


def _times(column: pa.ChunkedArray, field: pa.Field) -> pa.Array:
    """Time text as ``field``'s timestamps, read as the spec reads time text (zones, day-first dates)."""
    seconds = epoch_seconds(column.to_pandas(), field.name)
    micros = np.round(np.nan_to_num(seconds) * 1e6).astype(np.int64)
    return pa.array(micros, pa.int64(), mask=np.isnan(seconds)).cast(field.type)


def _parse(data: bytes, path: str, *, first_line: int, whole: bool) -> pa.Table:
    """Arrow's parse of ``data``, or, where Arrow refuses it, the line-by-line one (module docstring)."""
    try:
        if whole and data.lstrip(b" \t\r\n").startswith(b"["):
            return plain_columns(_records_table(_array_records(data, path), path), path)
        try:
            table = plain_columns(pa_json.read_json(io.BytesIO(data)), path)
            if _past_int64(table):
                raise pa.ArrowInvalid("integers past int64 read as floats")
        except pa.ArrowInvalid as refused:
            if not whole and path not in _SAID_SLOW:
                _SAID_SLOW.add(path)
                logger.warning("%s: read line by line, several times slower than Arrow reads JSON (%s); a "
                               "shard of ids that are all quoted, or Parquet, reads faster", path, refused)
            table = plain_columns(_records_table(_line_records(data, path, first_line), path), path)
    except RecursionError:
        raise DataError("objects nested too deeply to read", path=path, fix=_FLATTEN) from None
    return table


def _past_int64(table: pa.Table) -> bool:
    """Whether a column of floats holds a value past int64: Arrow reads such integers (64-bit ids) as floats,
    which would merge ids that differ in their last digits."""
    for column in table.columns:
        if pa.types.is_floating(column.type) and column.null_count < len(column):
            biggest = pc.max(pc.abs(column)).as_py()
            if biggest is not None and biggest >= 2.0 ** 63:
                return True
    return False


def _array_records(data: bytes, path: str) -> list[dict]:
    try:
        records = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"not a JSON document ({exc})", path=path, fix=_LINE_FIX) from None
    if not all(isinstance(r, dict) for r in records):
        raise DataError("a JSON array whose items are not all objects", path=path, fix=_LINE_FIX)
    return records


def _line_records(data: bytes, path: str, first_line: int) -> list[dict]:
    records = []
    for number, line in enumerate(data.split(b"\n"), first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except UnicodeDecodeError:
            raise DataError("not UTF-8 text", path=path, line=number,
                            fix="re-save the file as UTF-8") from None
        except ValueError as exc:
            raise DataError(f"not JSON ({exc})", path=path, line=number,
                            fix=f"{_LINE_FIX}; was the file cut short?") from None
        except RecursionError:
            raise DataError("an object nested too deeply to read", path=path, line=number,
                            fix=_FLATTEN) from None
        if not isinstance(record, dict):
            raise DataError(f"a JSON {type(record).__name__}, not an object", path=path, line=number,
                            fix=_LINE_FIX)
        records.append(record)
    return records


def _flat_record(record: dict, path: str) -> dict:
    """A record's ``parent.child`` columns; a key written both ways (``"item.id"`` beside ``{"item": {"id"``)
    is refused, as Arrow's reading refuses it, rather than one silently replacing the other."""
    flat: dict = {}
    for name, value in _flat(record):
        if name in flat:
            raise DataError(f"the key '{name}' is written both as one key and as a nested object's field",
                            path=path, column=name, fix="rename one of them")
        flat[name] = value
    return flat


def _flat(record: dict, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in record.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _records_table(records: list[dict], path: str) -> pa.Table:
    """Objects as columns: one kind of value keeps its type, several become text (ints and floats: floats)."""
    flat = [_flat_record(record, path) for record in records]
    names = dict.fromkeys(name for row in flat for name in row)
    columns = {name: [row.get(name) for row in flat] for name in names}
    return pa.table({name: _array(values) for name, values in columns.items()})


def _array(values: list) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    typed = {frozenset({int}): pa.int64(), frozenset({int, float}): pa.float64(),
             frozenset({float}): pa.float64(), frozenset({bool}): pa.bool_(),
             frozenset({str}): pa.string()}.get(frozenset(kinds))
    if kinds <= {list} or typed is not None:
        try:
            return pa.array(values, typed)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass  # integers past int64, lists of mixed items: as text
    return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                     for v in values], pa.string())
