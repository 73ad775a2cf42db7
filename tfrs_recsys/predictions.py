"""A predictions file (Parquet, CSV or TSV) read for evaluation, and its columns checked: labels 0 or 1,
scores finite (probabilities where a product of them is taken), every row in a group. A bad value is a
:class:`~tfrs_recsys.data.errors.DataError` naming the column and its line (a text file's, the header
line 1) or row, with the fix in :mod:`tfrs_recsys.evaluate`'s own flags.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.readers import read_delimited, read_parquet


def read_predictions(path: str, *, numeric: Sequence[str], other: Sequence[str] = ()) -> pd.DataFrame:
    """The ``numeric`` (labels, scores) and ``other`` (groups) columns of a Parquet, CSV or TSV file.

    A missing column or a value that is not a number raises :class:`DataError` naming the column
    (and, in a text file, the line).

    Args:
      path: the file (``.parquet``/``.pq``, ``.tsv``/``.txt``, else CSV).
      numeric: columns read as float64.
      other: further columns, as they are.

    Returns:
      The columns, in that order.
    """
    path = str(path)
    numeric = list(dict.fromkeys(numeric))
    wanted = [*numeric, *(c for c in dict.fromkeys(other) if c not in numeric)]
    if path.endswith((".parquet", ".pq")):
        frame = read_parquet(path, columns=wanted, what="predictions file",
                             fix_missing="check the path")[wanted]
        return frame.assign(**{col: numbers_of(frame[col], col, path) for col in numeric})
    sep = "\t" if path.endswith((".tsv", ".txt")) else ","
    try:
        frame, _ = read_delimited(path, sep=sep, header=True, columns=wanted,
                                  column_types=dict.fromkeys(numeric, "float"), what="predictions file",
                                  fix_missing="check the path")
    except DataError as e:  # the reader's fixes name loaders' options; these are evaluate's
        fix = ("name the file's columns with --click-label, --click-score, --conversion-label, "
               "--conversion-score, --ctcvr-score and --group-by" if "missing from the header" in e.message
               else "correct the value (a predictions file is read whole: no row is skipped)"
               if e.line is not None else e.fix)
        raise DataError(e.message, path=e.path, line=e.line, column=e.column, fix=fix) from None
    return frame[wanted]


def numbers_of(values: pd.Series, name: str, path: str) -> pd.Series:
    """A column as float64; a value that is not a number is an error naming ``name`` in ``path``."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    numbers = pd.to_numeric(values, errors="coerce")
    checked(values.to_numpy(), (numbers.isna() & values.notna()).to_numpy(), path, name,
            "value {value!r} at {row} is not a number ({n} such rows)", "write numeric labels and scores")
    return numbers.astype("float64")


def checked(values: np.ndarray, bad: np.ndarray, source: str, col: str, message: str, fix: str) -> np.ndarray:
    """``values``, or a DataError at the first ``bad`` row.

    Args:
      values: The column's values.
      bad: Which are wrong.
      source: The file (a text file's rows are named by line, its header line 1), or another name.
      col: The column.
      message: The problem; may use ``{n}`` (bad rows), ``{row}`` (where the first is) and ``{value}``.
      fix: What to do.

    Returns:
      ``values``.
    """
    rows = np.flatnonzero(bad)
    if rows.size:
        where = f"line {rows[0] + 2}" if source.endswith((".csv", ".tsv", ".txt")) else f"row {rows[0] + 1}"
        raise DataError(message.format(n=rows.size, row=where, value=values[rows[0]]), path=source,
                        column=col, fix=fix)
    return values


def finite_values(frame: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """``frame[col]`` as float64, every value finite (a score)."""
    values = numbers_of(frame[col], col, source).to_numpy(dtype=np.float64)
    return checked(values, ~np.isfinite(values), source, col,
                   "{n} value(s) are missing or not finite, the first at {row}",
                   "write a number in every row of this column")


def group_codes(frame: pd.DataFrame, col: str, notes: list[str] | None = None) -> np.ndarray:
    """``frame[col]``'s groups as integer codes; rows without a value (a log's rows of no known user) are
    one group of their own, as training counts them, said in ``notes``."""
    values = frame[col]
    missing = (values.isna() | (values.astype(str) == "")).to_numpy()
    if missing.any() and notes is not None:
        notes.append(f"{int(missing.sum())} row(s) have no {col} value: they count as one group, as "
                     f"training counts them")
    return pd.factorize(values.astype(object).where(~missing, ""))[0]


def binary_values(frame: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """``frame[col]`` as float64 labels, each 0 or 1."""
    values = finite_values(frame, col, source)
    return checked(values, ~np.isin(values, (0.0, 1.0)), source, col,
                   "a label must be 0 or 1, found {value:g} at {row}", "binarize the label column")


def probabilities(frame: pd.DataFrame, col: str, source: str, why: str) -> np.ndarray:
    """``frame[col]`` as float64 probabilities in [0, 1] (``why``: what needs them, for the error)."""
    values = finite_values(frame, col, source)
    return checked(values, (values < 0) | (values > 1), source, col,
                   why + " needs probabilities, found {value:g} at {row}",
                   f"pass probabilities, or the score for {why} itself")
