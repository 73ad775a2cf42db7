"""Criteo TSV and generic CSV / Parquet tables."""
from __future__ import annotations

import pandas as pd

from tfrs_recsys.data import readers
from tfrs_recsys.data.bundles import LabeledData

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_DENSE, *CRITEO_SPARSE)


def load_criteo(path: str, *, skip_bad_rows: bool = False) -> LabeledData:
    """Criteo display-ads rows: ``label``, ``I1..I13`` (integers, may be empty), ``C1..C26`` (hex, may be
    empty).

    Reads the raw Kaggle TSV (no header, 40 tab-separated fields) or a CSV with the same
    header (DeepCTR's sample). Empty dense fields are NaN; empty categorical fields are "".
    """
    fix = "pass the path of train.txt (tab-separated) or a CSV with the Criteo header"
    has_header = readers.first_line(path, "Criteo file", fix).startswith("label")
    types = {"label": "int", **{c: "float" for c in CRITEO_DENSE}}
    frame, report = readers.read_delimited(
        path, sep="," if has_header else "\t", header=has_header, columns=list(CRITEO_COLUMNS),
        column_types=types, nullable=[*CRITEO_DENSE, *CRITEO_SPARSE], skip_bad_rows=skip_bad_rows,
        quoting=has_header, what="Criteo file")
    readers.check_binary_labels(frame, ["label"], path, first_data_line=1 + int(has_header))
    return LabeledData(frame[list(CRITEO_COLUMNS)], ["label"], name="criteo", skipped=[report])


def load_table(path: str, *, labels: list[str], sep: str | None = None, skip_bad_rows: bool = False,
               session_column: str | None = None, user_column: str | None = None,
               item_column: str | None = None, encoding: str = "utf-8") -> LabeledData:
    """Any CSV / TSV / Parquet with a header. Column kinds come from schema inference later."""
    text = str(path)
    wanted = [*labels, *(c for c in (session_column, user_column, item_column) if c)]
    if text.endswith((".parquet", ".pq")):
        frame = readers.read_parquet(text, columns=wanted)
        reports = []
    else:
        sep = sep or ("\t" if text.endswith((".tsv", ".txt")) else ",")
        frame, report = readers.read_delimited(text, sep=sep, header=True, columns=wanted, encoding=encoding,
                                               skip_bad_rows=skip_bad_rows, what="table")
        reports = [report]
        frame = _numeric_where_possible(frame)
    return LabeledData(frame, list(labels), name=text.rsplit("/", 1)[-1], session_column=session_column,
                       user_column=user_column, item_column=item_column, skipped=reports)


def _numeric_where_possible(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns whose every non-empty value parses as a number become numeric."""
    for col in frame.columns:
        values = frame[col]
        if values.dtype != object and not pd.api.types.is_string_dtype(values):
            continue
        nonempty = values[values != ""]
        if nonempty.empty:
            continue
        numeric = pd.to_numeric(nonempty, errors="coerce")
        if numeric.notna().all():
            frame[col] = pd.to_numeric(values.replace("", float("nan")))
    return frame
