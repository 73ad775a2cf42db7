"""Criteo TSV and generic CSV / Parquet tables."""
from __future__ import annotations

import pandas as pd

from tfrs_recsys.data import readers
from tfrs_recsys.data.bundles import LabeledData

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_DENSE, *CRITEO_SPARSE)


def load_criteo(path: str, *, skip_bad_rows: bool = False) -> LabeledData:
    """Criteo display-ads rows: ``label``, ``I1..I13`` (integers), ``C1..C26`` (hex), both may be empty.

    Reads the raw Kaggle TSV (no header, 40 tab-separated fields) or a CSV with the same
    header (DeepCTR's sample). Empty dense fields are NaN; empty categorical fields are "".

    Args:
      path: The file.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.

    Returns:
      The rows with the label ``label``.
    """
    fix = "pass the path of train.txt (tab-separated) or a CSV with the Criteo header"
    has_header = readers.first_line(path, "Criteo file", fix).startswith("label")
    frame, report = readers.read_delimited(
        path, sep="," if has_header else "\t", header=has_header, columns=list(CRITEO_COLUMNS),
        column_types={"label": "int", **dict.fromkeys(CRITEO_DENSE, "float")}, nullable=CRITEO_DENSE,
        skip_bad_rows=skip_bad_rows, quoting=has_header, what="Criteo file")
    readers.check_rows(frame, path, readers.binary_checks(frame, ["label"]),
                       first_data_line=1 + int(has_header))
    return LabeledData(frame[list(CRITEO_COLUMNS)], ["label"], name="criteo", skipped=[report])


def load_table(path: str, *, labels: list[str], sep: str | None = None, skip_bad_rows: bool = False,
               session_column: str | None = None, user_column: str | None = None,
               item_column: str | None = None, encoding: str = "utf-8") -> LabeledData:
    """Any CSV / TSV / Parquet with a header; text columns whose every value is a number become numbers.

    Column kinds come from schema inference later.

    Args:
      path: A ``.parquet`` / ``.pq`` file, or delimited text (``.tsv`` / ``.txt``: tab, else comma).
      labels: The label columns.
      sep: The separator of a text file, instead of the one its name implies.
      skip_bad_rows: Skip and count malformed rows of a text file instead of failing on the first.
      session_column: The column grouping rows of one session, if any.
      user_column: The user id column, if any.
      item_column: The item id column, if any.
      encoding: The encoding of a text file.

    Returns:
      The rows, named after the file.
    """
    text = str(path)
    wanted = [*labels, *(c for c in (session_column, user_column, item_column) if c)]
    reports = []
    if text.endswith((".parquet", ".pq")):
        frame = readers.read_parquet(text, columns=wanted)
    else:
        sep = sep or ("\t" if text.endswith((".tsv", ".txt")) else ",")
        frame, report = readers.read_delimited(text, sep=sep, header=True, columns=wanted, encoding=encoding,
                                               skip_bad_rows=skip_bad_rows, what="table")
        reports.append(report)
        for col in frame.columns:
            numbers = pd.to_numeric(frame[col], errors="coerce")
            if numbers.notna().any() and (numbers.notna() | (frame[col] == "")).all():
                frame[col] = numbers
    return LabeledData(frame, list(labels), name=text.rsplit("/", 1)[-1], session_column=session_column,
                       user_column=user_column, item_column=item_column, skipped=reports)
