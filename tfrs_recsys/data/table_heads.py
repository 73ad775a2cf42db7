"""A table's head: its columns and the first rows below them, to tell a header from a row of data
(:func:`~tfrs_recsys.data.headers.headerless`) before the table is read."""
from __future__ import annotations

import csv

from tfrs_recsys.data import json_lines
from tfrs_recsys.data.compressed import file_format, open_text
from tfrs_recsys.data.headers import SAMPLE_ROWS
from tfrs_recsys.data.quoting import csv_quoted
from tfrs_recsys.data.tabular import PARQUET_SUFFIXES, table_columns, table_files, text_separator
from tfrs_recsys.data.text_encodings import BOM, file_encoding


def table_head(path: str, what: str) -> tuple[list[str], list[list[str]]]:
    """:func:`~tfrs_recsys.data.tabular.table_columns`, and a text file's first rows below its header (at most
    :data:`~tfrs_recsys.data.headers.SAMPLE_ROWS`, from its first 64 KiB; none for Parquet or JSON Lines)."""
    file = table_files(path, what)[0]
    if file_format(file) in (*PARQUET_SUFFIXES, *json_lines.JSON_SUFFIXES):  # no line of data to compare
        return table_columns(path, what), []
    with open_text(file) as fh:
        head = fh.read(1 << 16).removeprefix(BOM).decode(file_encoding(file), errors="replace")
    sep = text_separator(file)
    quoting = csv.QUOTE_MINIMAL if csv_quoted(file, sep) else csv.QUOTE_NONE
    lines = head.splitlines()[:SAMPLE_ROWS + 1]
    rows = list(csv.reader(lines[:-1] or lines, delimiter=sep, quoting=quoting))  # the last may be cut
    return (rows[0] if rows else []), rows[1:]
