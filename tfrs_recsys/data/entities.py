"""Item and user tables (``--items``, ``--users``): read, checked, and joined to the rows that name their ids.

An entity table has one row per id (``--item-column`` / ``--user-column`` names the id column in both
files). An interaction log joins it into retrieval's towers (:mod:`tfrs_recsys.data.interactions`); a
ranker's labeled table joins its columns into every row (:class:`EntityJoin`), in memory or one streamed
record batch at a time, so the ranker learns from the catalog's features as from its own columns.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tfrs_recsys.data.errors import DataError, SkipReport, logger
from tfrs_recsys.data.headers import NO_HEADER
from tfrs_recsys.data.readers import struct_fields
from tfrs_recsys.data.tabular import bad_row, parse_column_types, read_table, type_columns
from tfrs_recsys.data.text_values import text_numbers, text_times

TIMES = "times"  # a table frame's attrs key: the columns read from dates, now epoch seconds


def id_text(table: pd.DataFrame, column: str) -> tuple[pd.Series, np.ndarray]:
    """A column's ids as text (``7``, ``7.0`` and the text ``"7.0"`` alike read ``"7"``), and which are
    empty."""
    text = table[column].map(
        lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else
        str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v).strip())
    if text.str.contains(".", regex=False).any():  # "7.0" in a column of text and numbers
        text = text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    return text, (text == "").to_numpy()


def declared_types(column_types: Sequence[str], table: pd.DataFrame) -> dict[str, str]:
    """The ``--column-types`` entries about ``table``'s columns (the others are about other tables)."""
    return {c: k for c, k in parse_column_types(column_types).items() if c in table.columns}


def read_entity_table(path: str | None, key: str, group: str, skip_bad_rows: bool, reports: list[SkipReport],
                      column_types: Sequence[str]) -> pd.DataFrame | None:
    """An ``--items`` / ``--users`` table keyed by ``key`` (renamed ``{group}_id``), one row per id.

    Args:
      path: The table (a file, glob or folder), or None.
      key: Its id column.
      group: ``item`` or ``user``.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first; a value that is not a
        number in a column declared numeric becomes missing, its row (the entity's other features) kept.
      reports: Where its skip reports are appended.
      column_types: ``--column-types`` entries (those about its columns apply).

    Returns:
      The table, or None without ``path``.

    Raises:
      DataError: An id is empty or has two rows.
    """
    if not path:
        return None
    try:
        frame, skipped = read_table(path, required={key: f"--{group}-column"}, what=f"--{group}s table",
                                    skip_bad_rows=skip_bad_rows)
    except DataError as error:
        said = ("spaces or case differ", NO_HEADER)  # a near spelling, or no header: named already
        if error.column != key or any(fix in (error.fix or "") for fix in said):
            raise
        raise DataError(error.message, path=error.path, line=error.line, column=key,
                        fix=f"rename the table's id column to '{key}': --{group}-column names the id column "
                            f"of the data and of its --{group}s table alike") from None
    reports += skipped
    declared = declared_types(column_types, frame)
    frame = type_columns(frame, declared, skip_bad_rows=skip_bad_rows,
                         report=skipped[0] if skipped else None, text_only=[key], blank_bad=True)
    for each in skipped:
        each.log()
    times = []  # read from dates here: a ranker's spec keeps them timestamps (a 1960 birthday too)
    for column in [c for c in frame.columns if c != key and declared.get(c) != "categorical"]:
        # "€12,50" or a publish_date: numbers for every model that joins the table
        declared_time = declared.get(column) == "timestamp"
        if (seconds := text_times(column, frame[column], timestamp=declared_time)) is not None:
            frame[column] = seconds
            times.append(column)
        elif (numbers := text_numbers(column, frame[column], timestamp=declared_time)) is not None:
            frame[column] = numbers
    frame[key], empty = id_text(frame, key)
    if empty.any():
        raise bad_row(frame, empty, key, "empty id", f"fill it in: a {group} table needs every id")
    frame = frame.rename(columns={key: f"{group}_id"})
    twice = frame[f"{group}_id"].duplicated()
    if twice.any():
        raise DataError(f"{group} '{frame[f'{group}_id'][twice].iloc[0]}' has two rows", path=str(path),
                        column=key, fix=f"keep one row per {group}" + _pivot_fix(frame.columns, key))
    frame.attrs[TIMES] = times
    return frame


_KEY_COLUMNS = ("property", "attribute", "key", "name", "feature", "field")
_VALUE_COLUMNS = ("value", "val")


def _pivot_fix(columns, key: str) -> str:
    """How to turn a long (key-value) table, one row per id and property, into one row per id."""
    names = {str(c).strip().lower(): c for c in columns}
    prop = next((names[n] for n in _KEY_COLUMNS if n in names), None)
    value = next((names[n] for n in _VALUE_COLUMNS if n in names), None)
    if prop is None or value is None:
        return ""
    when = next((c for c in columns if str(c).strip().lower() in ("timestamp", "time", "date", "ts")), None)
    latest = f".sort_values({when!r})" if when is not None else ""
    return (f"; a table of one row per property ({prop!r}, {value!r}) is pivoted to a column per property, "
            f"e.g. in pandas: table{latest}.drop_duplicates([{key!r}, {prop!r}], keep='last').pivot(index="
            f"{key!r}, columns={prop!r}, values={value!r}).reset_index() (the latest value of each)")


def say_unmatched(table: pd.DataFrame | None, logged: pd.Series, group: str, path: str | None,
                  of: str = "the log's", flag: str | None = None) -> None:
    """Warns when ids of the log (``of``: whose ids they are) and of its ``--items`` / ``--users`` table
    (``flag``: the option that named it) miss each other (spelled apart): a logged id without a row gets no
    features from the table.

    Raises:
      DataError: No logged id has a row: the two files spell the ids apart.
    """
    ids, key, flag = pd.Index(logged.dropna().unique()), f"{group}_id", flag or f"--{group}s"
    ids = ids[ids.astype(str) != ""]  # a row without an id (a ranker's unknown user) is not misspelled
    if table is None or ids.empty:
        return
    without, unused = ids[~ids.isin(table[key])], table[key][~table[key].isin(ids)]
    if len(without) == len(ids) and len(table):  # nothing to learn from the table: a spelling, surely
        raise DataError(f"none of {of} {len(ids)} {group}s has a row in this {flag} table (log ids "
                        f"such as {ids[0]!r}, table ids such as {table[key].iloc[0]!r})", path=path,
                        fix=f"spell the {group} ids alike in both files (leading zeros, prefixes, case), or "
                            f"drop {flag}")
    if len(without):
        rows = (f", and {len(unused)} of its {len(table)} rows match no logged {group} (e.g. "
                f"{unused.iloc[0]!r})" if len(unused) else "")
        logger.warning("%s: %d of %s %d %ss have no row in this %s table (e.g. %r)%s: check that both "
                       "spell the ids alike", path, len(without), of, len(ids), group, flag, without[0], rows)


class EntityJoin:
    """An ``--items`` / ``--users`` table's columns added to each row by the row's id (missing where the
    table has no row for it).

    Args:
      table: The entity table (:func:`read_entity_table`), keyed by ``{group}_id``.
      column: The id column of the rows it joins.
      group: ``item`` or ``user``.
      path: The table's path, for messages.
      data_columns: The columns of the rows: a table column of the same name is an error.
      exclude: Columns left out of the features (``--exclude-columns``): not joined.
    """

    def __init__(self, table: pd.DataFrame, column: str, group: str, path: str, data_columns: Sequence[str],
                 exclude: Sequence[str] = ()):
        key = f"{group}_id"
        self.column, self.group, self.path = column, group, path
        exclude = struct_fields(exclude, list(table.columns))
        self.columns = [c for c in table.columns if c != key and c not in exclude]
        self.left_out = [c for c in table.columns if c != key and c in exclude]  # not joined: excluded
        self.times = [c for c in table.attrs.get(TIMES, []) if c in self.columns]  # read from dates
        self._check_clash(data_columns)
        self._keys = table[[key]]  # for the unmatched-id counts
        # Lookups hashed once, not per batch: integer ids (a Parquet int64 column) by their value when
        # every table id is one written plainly ("42", not "042"), else by text.
        self._ids = pd.Index(table[key].to_numpy(dtype=object))
        plain = table[key].str.fullmatch(r"-?(0|[1-9]\d{0,17})").all()
        self._int_ids = pd.Index(table[key].astype(np.int64)) if plain else None
        self._features = pa.Table.from_pandas(table[self.columns], preserve_index=False)

    def _check_clash(self, data_columns: Sequence[str]) -> None:
        if clash := [c for c in self.columns if c in data_columns]:
            raise DataError(f"column '{clash[0]}' is in both the data and the --{self.group}s table",
                            path=self.path, column=clash[0],
                            fix=f"rename or drop it in one of the files (where the data repeats the table's "
                                f"value, drop the data's), or leave both out: --exclude-columns {clash[0]}")

    def check(self, rows: pd.DataFrame, of: str = "the log's", ids: pd.Series | None = None) -> None:
        """Says how many ids of ``rows`` (``of``: whose; ``ids``: theirs, read already) the table lacks, and
        refuses a table that has none of them (:func:`say_unmatched`)."""
        ids = id_text(rows, self.column)[0] if ids is None else ids
        say_unmatched(self._keys, ids, self.group, self.path, of)

    def frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with the table's columns added (after :meth:`check`)."""
        self._check_clash(rows.columns)
        ids, _ = id_text(rows, self.column)
        self.check(rows, ids=ids)
        joined = self._take(self._ids.get_indexer(ids.to_numpy(dtype=object))).to_pandas()
        out = pd.concat([rows.reset_index(drop=True), joined], axis=1).set_axis(rows.index)
        out.attrs = rows.attrs  # the rows' files and lines, for errors naming them
        return out

    def batch(self, rows: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
        """A record batch (or table) with the table's columns added, in Arrow."""
        ids = rows.column(self.column)
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        if pa.types.is_integer(ids.type) and self._int_ids is not None:
            positions = self._int_ids.get_indexer(ids.cast(pa.int64()).fill_null(np.iinfo(np.int64).min)
                                                  .to_numpy())
        else:
            if pa.types.is_floating(ids.type):  # 7.0 is the id 7, as in id_text
                whole = pc.equal(ids, pc.floor(ids))
                ids = pc.if_else(whole, pc.cast(pc.cast(ids, pa.int64(), safe=False), pa.string()),
                                 pc.cast(ids, pa.string()))
            ids = pc.utf8_trim_whitespace(pc.cast(ids, pa.string()))
            positions = self._ids.get_indexer(ids.to_numpy(zero_copy_only=False))
        joined = self._take(positions)
        for name in self.columns:
            column = joined.column(name)
            rows = rows.append_column(name, column.combine_chunks() if isinstance(rows, pa.RecordBatch)
                                      else column)
        return rows

    def _take(self, positions: np.ndarray) -> pa.Table:
        """The table's feature rows at ``positions`` (-1: no row: missing values)."""
        return self._features.take(pa.array(positions, mask=positions < 0))


def entity_joins(data_columns: Sequence[str], *, items: str | None, users: str | None,
                 item_column: str | None, user_column: str | None, skip_bad_rows: bool = False,
                 column_types: Sequence[str] = (), reports: list[SkipReport] | None = None,
                 exclude: Sequence[str] = ()) -> list[EntityJoin]:
    """The joins of a ranker's ``--items`` and ``--users`` tables.

    Args:
      data_columns: The labeled rows' columns (none: checked as each join meets the rows).
      items: The item table, or None.
      users: The user table, or None.
      item_column: The rows' item id column (needed with ``items``).
      user_column: The rows' user id column (needed with ``users``).
      skip_bad_rows: Skip and count the tables' malformed rows.
      column_types: ``--column-types`` entries.
      reports: Where the tables' skip reports are appended.
      exclude: Columns left out of the features (not joined).

    Returns:
      One join per table given.
    """
    joins = []
    for group, path, column in (("item", items, item_column), ("user", users, user_column)):
        if not path:
            continue
        if not column:
            raise DataError(f"--{group}s needs the data's {group} id column", column=None,
                            fix=f"name it with --{group}-column (the {group} table's id column has that name "
                                f"too)")
        table = read_entity_table(path, column, group, skip_bad_rows, [] if reports is None else reports,
                                  column_types)
        joins.append(EntityJoin(table, column, group, path, data_columns, exclude))
    return joins
