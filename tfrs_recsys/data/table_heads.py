"""A table's head: its columns and the first rows below them, to tell a header from a row of data
(:func:`~tfrs_recsys.data.headers.headerless`) before the table is read."""
from __future__ import annotations

import csv

from tfrs_recsys.data import json_lines
from tfrs_recsys.data.compressed import file_format, open_text
from tfrs_recsys.data.headers import SAMPLE_ROWS
from tfrs_recsys.data.quoting import csv_quoted
from tfrs_recsys.data.tabular import PARQUET_SUFFIXES, table_columns, table_files, text_separator
from tfrs_recsys.data.text_encodings import file_encoding


def table_head(path: str, what: str) -> tuple[list[str], list[list[str]]]:
    """A table's column names and, for a text file, its first rows below the header.

    Args:
      path: The table's file, glob or folder (its first file is read).
      what: The table in errors.

    Returns:
      ``(columns, rows)``: :func:`~tfrs_recsys.data.tabular.table_columns` (the whole first line), and at
      most :data:`~tfrs_recsys.data.headers.SAMPLE_ROWS` rows from the 64 KiB after it (none for Parquet or
      JSON Lines, whose names are no line of data).
    """
    file, columns = table_files(path, what)[0], table_columns(path, what)
    if file_format(file) in (*PARQUET_SUFFIXES, *json_lines.JSON_SUFFIXES):
        return columns, []
    with open_text(file) as fh:
        fh.readline()
        head = fh.read(1 << 16).decode(file_encoding(file), errors="replace")
    sep = text_separator(file)
    quoting = csv.QUOTE_MINIMAL if csv_quoted(file, sep) else csv.QUOTE_NONE
    lines = head.splitlines()[:SAMPLE_ROWS + 1]  # the last may be cut short
    return columns, list(csv.reader(lines[:-1] or lines, delimiter=sep, quoting=quoting))
