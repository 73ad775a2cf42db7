"""A plain interaction log as retrieval data, whatever its column names and file layout.

``--dataset interactions --data PATH --user-column C --item-column C [--time-column C]``: CSV, TSV or
Parquet; a file, a glob or a folder of shards; local or any ``tf.io.gfile`` URL. No rating is needed
(``--rating-column C --min-rating X`` keeps the rows rated at least ``X``). Without a time column the
file order is the time order. Item and user tables (``--items``, ``--users``) are joined by the same id
columns; the log's own columns that never change within an item (or a user) join those tables too.
"""
from __future__ import annotations

import posixpath
from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.errors import DataError, SkipReport
from tfrs_recsys.data.schema import epoch_seconds
from tfrs_recsys.data.tabular import bad_row, numeric_columns, parse_column_types, read_table, type_columns


def _ids(table: pd.DataFrame, column: str) -> pd.Series:
    """A column's ids as text (``7`` and ``7.0`` alike read ``"7"``); an empty id is an error."""
    text = table[column].map(
        lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else
        str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v).strip())
    empty = (text == "").to_numpy()
    if empty.any():
        raise bad_row(table, empty, column, "empty id", "fill it in, or drop the row")
    return text


def _entity_table(path: str | None, key: str, group: str, skip_bad_rows: bool, reports: list[SkipReport],
                  column_types: Sequence[str]) -> pd.DataFrame | None:
    """An ``--items`` / ``--users`` table keyed by ``key`` (renamed ``{group}_id``), one row per id."""
    if not path:
        return None
    frame, skipped = read_table(path, required={key: f"--{group}-column"}, what=f"--{group}s table",
                                skip_bad_rows=skip_bad_rows)
    reports += skipped
    frame = type_columns(frame, _declared(column_types, frame), skip_bad_rows=skip_bad_rows,
                         report=skipped[0] if skipped else None, text_only=[key])
    frame[key] = _ids(frame, key)
    frame = frame.rename(columns={key: f"{group}_id"})
    twice = frame[f"{group}_id"].duplicated()
    if twice.any():
        raise DataError(f"{group} '{frame[f'{group}_id'][twice].iloc[0]}' has two rows", path=str(path),
                        column=key, fix=f"keep one row per {group}")
    return frame


def _declared(column_types: Sequence[str], table: pd.DataFrame) -> dict[str, str]:
    """The ``--column-types`` entries about ``table``'s columns (the others are about other tables)."""
    return {c: k for c, k in parse_column_types(column_types).items() if c in table.columns}


def _constant_columns(log: pd.DataFrame, key: str, columns: list[str]) -> list[str]:
    """The ``columns`` of ``log`` whose value never changes within one ``key``."""
    grouped = log.groupby(key, sort=False)
    return [c for c in columns if (grouped[c].nunique(dropna=False) <= 1).all()]


def _join(table: pd.DataFrame | None, log: pd.DataFrame, key: str, columns: list[str]) -> pd.DataFrame | None:
    """``table`` with ``columns`` of ``log`` (one value per ``key``) added where it lacks them."""
    extra = [c for c in columns if table is None or c not in table.columns]
    if not extra:
        return table
    per_key = log[[key, *extra]].drop_duplicates(key)
    return per_key.reset_index(drop=True) if table is None else table.merge(per_key, on=key, how="left")


def load_interaction_log(data: str, *, user_column: str, item_column: str, time_column: str | None = None,
                         rating_column: str | None = None, min_rating: float | None = None,
                         items: str | None = None, users: str | None = None,
                         column_types: Sequence[str] = (), skip_bad_rows: bool = False) -> InteractionData:
    """Reads an interaction log with any column names into :class:`InteractionData`.

    Args:
      data: The log: a file, a glob or a folder of CSV / TSV / Parquet shards (local or a URL).
      user_column: Its user id column.
      item_column: Its item id column.
      time_column: Its time column (epoch seconds or dates); default: the file order.
      rating_column: Its rating (or any weight) column; default: every row counts as 1.
      min_rating: Keep only rows rated at least this (needs ``rating_column``).
      items: An item table with ``item_column``, joined by id.
      users: A user table with ``user_column``, joined by id.
      column_types: ``COLUMN=numeric|categorical`` entries over the inferred kinds of feature columns
        (:func:`~tfrs_recsys.data.tabular.type_columns`).
      skip_bad_rows: Skip and count malformed text rows instead of failing on the first.

    Returns:
      The interactions (``user_id``, ``item_id`` as text, ``rating``, ``timestamp`` in seconds), the item
      table (at least every logged item) and the user table, if any.

    Raises:
      DataError: A named column is missing, an id is empty, or a time or rating does not parse; the
        message names file, line, column and the fix.
    """
    if min_rating is not None and not rating_column:
        raise DataError("--min-rating needs the ratings", column=None, fix="name them with --rating-column")
    flags = {"--user-column": user_column, "--item-column": item_column, "--time-column": time_column,
             "--rating-column": rating_column}
    named = {column: flag for flag, column in flags.items() if column}
    log, reports = read_table(data, required=named, what="--data", skip_bad_rows=skip_bad_rows)
    typed, skipped = numeric_columns(log, _declared(column_types, log), skip_bad_rows=skip_bad_rows,
                                     report=reports[0] if reports else None, text_only=list(named))
    out = pd.DataFrame({"user_id": _ids(log, user_column), "item_id": _ids(log, item_column)})
    out["rating"] = _numbers(log, rating_column) if rating_column else np.ones(len(log))
    if time_column:
        out["timestamp"] = _seconds(log, time_column)
    else:
        out["timestamp"] = np.arange(len(log), dtype=np.int64)  # file order is time order
    log = log.assign(**typed)
    keep = ~skipped & ((out["rating"] >= min_rating).to_numpy() if min_rating is not None else True)
    if not keep.all():
        out, log = out[keep].reset_index(drop=True), log[keep].reset_index(drop=True)
    if out.empty:
        rated = f" rated >= {min_rating}" if min_rating is not None else ""
        raise DataError(f"no interactions left{rated}", path=str(data),
                        fix="check the file, or lower --min-rating")

    item_table = _entity_table(items, item_column, "item", skip_bad_rows, reports, column_types)
    user_table = _entity_table(users, user_column, "user", skip_bad_rows, reports, column_types)
    rest = [c for c in log.columns if c not in named]
    joined = log[rest].assign(item_id=out["item_id"], user_id=out["user_id"])
    item_columns = _constant_columns(joined, "item_id", rest)
    user_columns = _constant_columns(joined, "user_id", [c for c in rest if c not in item_columns])
    item_table = _join(item_table, joined, "item_id", item_columns)
    user_table = _join(user_table, joined, "user_id", user_columns)
    logged = pd.DataFrame({"item_id": out["item_id"].unique()})
    item_table = logged if item_table is None else pd.concat(
        [item_table, logged[~logged["item_id"].isin(item_table["item_id"])]], ignore_index=True)
    name = posixpath.basename(str(data).rstrip("/")) or "interactions"
    return InteractionData(out, item_table, user_table, name=name, skipped=reports)


def _numbers(table: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64; a value that is not a number is an error naming its row."""
    numbers = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(numbers).any():
        raise bad_row(table, np.isnan(numbers), column, "{value!r} is not a number",
                       "fix or drop the row, or name another column")
    return numbers


def _seconds(table: pd.DataFrame, column: str) -> np.ndarray:
    """A time column (epoch seconds, or dates read as UTC) as int64 seconds (fractions dropped); a bad time
    is an error."""
    values = table[column]
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().mean() >= 0.5:  # epoch seconds, maybe with a few bad values
        return np.floor(_numbers(table, column)).astype(np.int64)
    dates = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    if dates.isna().any():
        raise bad_row(table, dates.isna().to_numpy(), column, "not a time (epoch seconds or a date): "
                       "{value!r}", "fix or drop the row, or name the time column with --time-column")
    return epoch_seconds(dates, column).astype(np.int64)
