"""A plain interaction log as retrieval data, whatever its column names and file layout.

``--dataset interactions --data PATH --user-column C --item-column C [--time-column C]``: CSV, TSV or
Parquet; a file, a glob or a folder of shards; local or any ``tf.io.gfile`` URL. No rating is needed
(``--rating-column C --min-rating X`` keeps the rows rated at least ``X``). Without a time column the
file order is the time order. Item and user tables (``--items``, ``--users``) are joined by the same id
columns; the log's own columns that never change within an item (or a user) join those tables too.
"""
from __future__ import annotations

import posixpath
import re
from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.entities import declared_types, id_text, read_entity_table, say_unmatched
from tfrs_recsys.data.errors import DataError, SkipReport, logger
from tfrs_recsys.data.readers import struct_fields
from tfrs_recsys.data.schema import is_listlike
from tfrs_recsys.data.tabular import (
    bad_row,
    binary_label,
    locate,
    numeric_columns,
    read_table,
    say_duplicates,
)
from tfrs_recsys.data.text_values import detect_separator, text_numbers
from tfrs_recsys.data.times import day_first, epoch_seconds, epoch_units, is_plain_number, month_first


class _RowChecks:
    """A table's per-row checks: the first bad row raises, or with ``skip_bad_rows`` every bad row is dropped
    and counted in ``report``.

    Args:
      table: The rows (:func:`~tfrs_recsys.data.tabular.read_table`).
      skip_bad_rows: Skip and count bad rows.
      report: Where skipped rows are counted.
    """

    def __init__(self, table: pd.DataFrame, skip_bad_rows: bool, report: SkipReport):
        self.table, self.skip_bad_rows, self.report = table, skip_bad_rows, report
        self.bad = np.zeros(len(table), dtype=bool)

    def check(self, bad: np.ndarray, column: str, message: str, fix: str) -> None:
        """Raises (or, skipping, counts) the ``bad`` rows; ``message`` may name ``{value!r}``."""
        if not bad.any():
            return
        if not self.skip_bad_rows:
            fix = f"{fix}, or pass --skip-bad-rows to skip and count such rows"
            raise bad_row(self.table, bad, column, message, fix)
        for row in np.flatnonzero(bad & ~self.bad):
            path, line = locate(self.table, int(row))
            value = self.table[column].iloc[row]
            self.report.add(DataError(message.format(value=value), path=path, line=line, column=column),
                            reason=f"column '{column}': {message.format(value='...')}")
        self.bad |= bad


def _constant_columns(log: pd.DataFrame, key: str, columns: list[str]) -> list[str]:
    """The ``columns`` of ``log`` whose value never changes within one ``key``."""
    lists = {c: log[c].map(_frozen) for c in columns  # genres as a list, records as dicts: unhashable
             if log[c].dtype == object and log[c].map(lambda v: is_listlike(v) or isinstance(v, dict)).any()}
    grouped = log.assign(**lists).groupby(key, sort=False)
    return [c for c in columns if (grouped[c].nunique(dropna=False) <= 1).all()]


def _frozen(value):
    """``value`` hashable: lists as tuples, records as sorted pairs, nested ones too."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return tuple(map(_frozen, value)) if is_listlike(value) else value


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
                         column_types: Sequence[str] = (), skip_bad_rows: bool = False,
                         rating_values: Sequence[str] = (), exclude_columns: Sequence[str] = ()
                         ) -> InteractionData:
    """Reads an interaction log with any column names into :class:`InteractionData`.

    Args:
      data: The log: a file, a glob or a folder of CSV / TSV / JSON Lines / Parquet shards (local or a URL).
      user_column: Its user id column.
      item_column: Its item id column.
      time_column: Its time column (epoch seconds or dates); default: the file order.
      rating_column: Its rating (or any weight) column; default: every row counts as 1.
      min_rating: Keep only rows rated at least this (needs ``rating_column``).
      items: An item table with ``item_column``, joined by id.
      users: A user table with ``user_column``, joined by id.
      column_types: ``COLUMN=numeric|categorical`` entries over the inferred kinds of feature columns
        (:func:`~tfrs_recsys.data.tabular.type_columns`).
      skip_bad_rows: Skip and count malformed rows (and empty ids, bad times or ratings, bad values of a
        column declared numeric) instead of failing on the first.
      rating_values: ``TEXT=NUMBER`` entries: the rating of each text value of ``rating_column`` (event
        types: ``view=1``, ``cart=3``, ``purchase=5``).
      exclude_columns: Columns of the log or its tables left out of the features.

    Returns:
      The interactions (``user_id``, ``item_id`` as text, ``rating``, ``timestamp`` in seconds), the item
      table (at least every logged item) and the user table, if any.

    Raises:
      DataError: A named column is missing, an id is empty, or a time or rating does not parse; the
        message names file, line, column and the fix.
    """
    if (min_rating is not None or rating_values) and not rating_column:
        flag = "--min-rating" if min_rating is not None else "--rating-values"
        raise DataError(f"{flag} needs the ratings", column=None, fix="name them with --rating-column")
    weights = _rating_values(rating_values)
    flags = {"--user-column": user_column, "--item-column": item_column, "--time-column": time_column,
             "--rating-column": rating_column}
    named = {column: flag for flag, column in flags.items() if column}
    log, reports = read_table(data, required=named, what="--data", skip_bad_rows=skip_bad_rows)
    say_duplicates(log, data, [time_column] if time_column else [])
    report = reports[0] if reports else SkipReport(path=str(data), total=len(log))
    rows = _RowChecks(log, skip_bad_rows, report)
    typed, rows.bad = numeric_columns(log, declared_types(column_types, log), skip_bad_rows=skip_bad_rows,
                                      report=report, text_only=list(named))
    out = pd.DataFrame(index=log.index)
    for key, column in (("user_id", user_column), ("item_id", item_column)):
        out[key], empty = id_text(log, column)
        rows.check(empty, column, "empty id", "fill it in, or drop the row")
    out["rating"] = _ratings(log, rating_column, weights, rows) if rating_column else np.ones(len(log))
    # Without a time column the file order is the time order.
    seconds = _seconds(log, time_column, rows) if time_column else np.arange(len(log), dtype=np.float64)
    out["timestamp"] = np.floor(seconds).astype(np.int64)
    log = log.assign(**typed)
    keep = ~rows.bad & ((out["rating"] >= min_rating).to_numpy() if min_rating is not None else True)
    if min_rating is not None and (lower := int((~rows.bad).sum() - keep.sum())):
        logger.warning("%s: --min-rating %g leaves out %d interactions rated lower; %d remain", data,
                       min_rating, lower, int(keep.sum()))
    if not keep.all():
        out, log, seconds = out[keep].reset_index(drop=True), log[keep].reset_index(drop=True), seconds[keep]
    for each in reports or [report]:
        each.log()
    if out.empty:
        rated = f" rated >= {min_rating}" if min_rating is not None else ""
        raise DataError(f"no interactions left{rated}", path=str(data),
                        fix="check the file, or lower --min-rating")

    item_table = read_entity_table(items, item_column, "item", skip_bad_rows, reports, column_types)
    user_table = read_entity_table(users, user_column, "user", skip_bad_rows, reports, column_types)
    log, item_table, user_table = _excluded(exclude_columns, named, log, item_table, user_table)
    say_unmatched(item_table, out["item_id"], "item", items)
    say_unmatched(user_table, out["user_id"], "user", users)
    rest = [c for c in log.columns if c not in named]
    joined = log[rest].assign(item_id=out["item_id"], user_id=out["user_id"])
    item_columns = _constant_columns(joined, "item_id", rest)
    user_columns = _constant_columns(joined, "user_id", [c for c in rest if c not in item_columns])
    if unused := [c for c in rest if c not in item_columns and c not in user_columns]:
        logger.warning("%s: column(s) %s change within one item and within one user: not tower features (the "
                       "towers read one value per item or user; a ranker trained on the file as --dataset "
                       "csv reads them)", data, ", ".join(map(str, unused)))
        kinds = next((c for c in unused if not rating_column and _event_types(c, log[c])), None)
        if kinds is not None:  # every row counts as one interaction, a view as a purchase
            values = ",".join(f"{v}=1" for v in log[kinds].dropna().astype(str).unique())
            logger.warning("%s: column '%s' looks like event types: every row is an interaction, whatever "
                           "its type; weigh or filter them with --rating-column %s --rating-values %s (and "
                           "--min-rating to keep some)", data, kinds, kinds, values)
    item_table = _join(item_table, joined, "item_id", item_columns)
    user_table = _join(user_table, joined, "user_id", user_columns)
    logged = pd.DataFrame({"item_id": out["item_id"].unique()})
    item_table = logged if item_table is None else pd.concat(
        [item_table, logged[~logged["item_id"].isin(item_table["item_id"])]], ignore_index=True)
    item_table, user_table = _lists(item_table, "item_id"), _lists(user_table, "user_id")
    if (seconds != out["timestamp"].to_numpy()).any():  # clicks within one second: in their sub-second order
        out = out.iloc[np.argsort(seconds, kind="stable")].reset_index(drop=True)
    name = posixpath.basename(str(data).rstrip("/")) or "interactions"
    return InteractionData(out, item_table, user_table, name=name, skipped=reports)


def _excluded(columns: Sequence[str], named: dict[str, str], *frames: pd.DataFrame | None) -> list:
    """``frames`` without ``columns`` (``--exclude-columns``), each of which one of them must hold and no
    other flag name (nor the ``item_id`` / ``user_id`` keys the tables are joined by)."""
    named = {**named, "item_id": "--item-column", "user_id": "--user-column"}
    held = [c for frame in frames if frame is not None for c in frame.columns if c not in named]
    columns = struct_fields(columns, held)
    for column in columns:
        if column in named:
            raise DataError(f"--exclude-columns names the {named[column]} column", column=column,
                            fix=f"keep it, or name another column with {named[column]}")
        if column not in held:
            raise DataError("--exclude-columns names no column of the log or its tables", column=column,
                            fix=f"choose among {', '.join(dict.fromkeys(held))}")
    return [None if frame is None else frame.drop(columns=[c for c in columns if c in frame.columns])
            for frame in frames]


def _lists(table: pd.DataFrame | None, key: str) -> pd.DataFrame | None:
    """Text columns of several values joined by a separator (``kids|eco``) as lists of the values, told
    apart as the rankers' schema inference tells them (``detect_separator``); a missing value stays
    missing, an empty one is no values. Numbers written for people (``12,50``) and dates under a time-like
    name are numbers first (:func:`~tfrs_recsys.data.text_values.text_numbers`), never lists."""
    for column in [] if table is None else [c for c in table.columns if c != key]:
        values = table[column]
        if is_plain_number(values) or pd.api.types.is_bool_dtype(values) or values.map(is_listlike).any():
            continue
        if (numbers := text_numbers(column, values)) is not None:
            table = table.assign(**{column: numbers})
            continue
        text = values.dropna().astype(str)
        if (separator := detect_separator(text.value_counts())) is not None:
            parts = text.str.split(separator, regex=False).map(lambda p: [v.strip() for v in p if v.strip()])
            table = table.assign(**{column: parts.reindex(values.index)})
    return table


def _rating_values(entries: Sequence[str]) -> dict[str, float]:
    """``("view=1", "Purchase=5")`` as ``{"view": 1.0, "purchase": 5.0}``: values match in any case (a log's
    ``Kauf`` and ``kauf`` are one event); a malformed entry, or two differing only in case, is an error."""
    weights, given = {}, {}
    for entry in entries:
        text, _, number = entry.partition("=")
        key = text.strip().casefold()
        if key in given:
            raise DataError(f"--rating-values entries {given[key]!r} and {entry!r} name one value (values "
                            "match in any case)", fix="keep one of them")
        try:
            weights[key], given[key] = float(number), entry
        except ValueError:
            raise DataError(f"--rating-values entry {entry!r} is not TEXT=NUMBER",
                            fix="write e.g. --rating-values view=1,cart=3,purchase=5") from None
    return weights


def _ratings(table: pd.DataFrame, column: str, weights: dict[str, float], rows: _RowChecks) -> np.ndarray:
    """The rating column as float64: numbers, yes/no words as 1/0 (``true``/``false``, ``oui``/``non``: as a
    ranker's label is read), or text rated by ``weights`` (``--rating-values``); any other value is a bad
    row. A column of other text and no ``weights`` is an error naming its values."""
    values = table[column]
    if not weights:
        values = binary_label(values)
    if weights:
        ratings = values.astype("string").str.strip().str.casefold().map(weights).to_numpy(dtype=np.float64,
                                                                                        na_value=np.nan)
        rows.check(np.isnan(ratings), column, "{value!r} has no --rating-values entry",
                   f"rate it in --rating-values (now {', '.join(f'{k}={v:g}' for k, v in weights.items())}), "
                   f"or drop the row")
        return ratings
    ratings = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    text = np.isnan(ratings) & values.notna().to_numpy() & (values.astype(str).str.strip() != "").to_numpy()
    if text.sum() * 2 > len(values):  # mostly text: event types, not ratings with a few typos
        kinds = values[text].astype(str).str.strip().value_counts().index[:5].tolist()
        raise DataError(f"--rating-column '{column}' holds text ({', '.join(map(repr, kinds))}), not numbers",
                        column=column, fix="rate each value, e.g. --rating-values "
                                           f"{','.join(f'{k}={i + 1}' for i, k in enumerate(kinds))}, "
                                           "then keep some with --min-rating; or drop --rating-column")
    blank = np.isnan(ratings) & ~text
    rows.check(blank, column, "the rating is missing", "fill it in (e.g. 0) or drop the row")
    rows.check(text, column, "{value!r} is not a number", "fix or drop the row")
    return ratings


_EVENT_NAME = re.compile(r"event|action|behaviou?r|interaction|activity|^type$|_type$", re.IGNORECASE)


def _event_types(name: str, values: pd.Series) -> bool:
    """Whether a column named as events holds a few words naming what happened (view, addtocart)."""
    text = values.dropna()
    if not _EVENT_NAME.search(str(name)):
        return False
    if text.empty or is_plain_number(text) or not pd.api.types.is_string_dtype(text):
        return False
    distinct = text.astype(str).unique()
    return 2 <= len(distinct) <= 10 and all(v.replace("_", "").replace("-", "").isalpha() for v in distinct)


def _seconds(table: pd.DataFrame, column: str, rows: _RowChecks) -> np.ndarray:
    """A time column (datetimes, epoch seconds (or milli-, micro-, nanoseconds, told apart by their size),
    or dates read as UTC, day first where a date shows it; a column may mix numbers and dates) as float64
    seconds; a value that is none of them is a bad row."""
    values = table[column]
    if pd.api.types.is_datetime64_any_dtype(values):  # e.g. a Parquet timestamp: not a count of seconds
        seconds = epoch_seconds(values, column)
    else:
        seconds = epoch_units(pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64))
        text = np.isnan(seconds) & values.notna().to_numpy()
        if text.any():
            early = ~np.isnan(seconds) & (np.abs(seconds) < 1e8)
            dates = values[text]
            if day_first(dates, column):  # 31/12/2025: read every numeric date of the column day first
                dates = month_first(dates)
            dates = pd.to_datetime(dates, errors="coerce", utc=True, format="mixed")
            seconds[text] = epoch_seconds(dates, column)
            if dates.notna().any():  # beside dates, a number before 1973 is no time (a serial date, 45677.2?)
                rows.check(early, column, "{value!r} is a number among dates but no time after 1973 (a "
                           "spreadsheet's serial date?)", "write it as a date")
    rows.check(np.isnan(seconds), column, "not a time (epoch seconds or a date): {value!r}",
               "fix or drop the row")
    return np.nan_to_num(seconds)
