"""Generic tables (CSV, TSV, JSON Lines or Parquet; a file, a glob or a folder of shards) and Criteo's TSV.

A text column whose non-empty values are all numbers becomes numeric. One that is mostly numbers
(:data:`MOSTLY_NUMERIC` of them) but not all stops the run at its first bad value, naming file, line and
column, unless ``column_types`` says what it is: ``numeric`` (bad values are then errors, or skipped and
counted with ``skip_bad_rows``) or ``categorical`` (kept as text).
"""
from __future__ import annotations

import csv
import fnmatch
import logging
import posixpath
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tfrs_recsys import paths
from tfrs_recsys.data import json_lines, readers
from tfrs_recsys.data.bundles import LabeledData
from tfrs_recsys.data.compressed import file_format, open_text
from tfrs_recsys.data.errors import DataError, SkipReport
from tfrs_recsys.data.headers import SAMPLE_ROWS, missing_column
from tfrs_recsys.data.number_text import MISSING_NUMBER_WORDS, mostly_formatted_numbers
from tfrs_recsys.data.quoting import csv_quoted
from tfrs_recsys.data.shard_columns import check_shards
from tfrs_recsys.data.text_encodings import BOM, file_encoding
from tfrs_recsys.data.workbooks import refuse_workbook

logger = logging.getLogger(__name__)
CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_DENSE, *CRITEO_SPARSE)
MOSTLY_NUMERIC = 0.95  # this share of numbers makes a text column's other values probable typos
COLUMN_KINDS = ("numeric", "categorical", "timestamp")  # a timestamp stays text here: the spec reads it
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
FORMATS = ("CSV (.csv), TSV (.tsv, .txt), JSON Lines (.jsonl, .ndjson, .json), any of them compressed (.gz, "
           ".bz2), or Parquet (.parquet, .pq)")
SOURCES = "row_sources"  # frame.attrs key: per shard, (first row, file, its rows' lines or None)
STORED_TEXT = "stored_text"  # frame.attrs key: the columns every shard stores as Parquet strings


def table_files(path: str, what: str) -> list[str]:
    """The files a table path names: a file, a glob (``shards/part-*.csv``) or a folder of shards.

    Args:
      path: Local or a ``tf.io.gfile`` URL.
      what: The table in an error (``"--data"``).

    Returns:
      The files, sorted; a folder's hidden files, ``_SUCCESS`` markers and other suffixes are left out.

    Raises:
      DataError: Nothing readable is there.
    """
    text = str(path)
    if any(c in text for c in "*?["):
        folder, pattern = posixpath.split(text)
        names = paths.listdir(folder) if paths.isdir(folder) else []
        files = [str(paths.join(folder, n)) for n in sorted(names) if fnmatch.fnmatch(n, pattern)]
    elif paths.isdir(text):
        shards = (*TEXT_SUFFIXES, *PARQUET_SUFFIXES, *json_lines.SHARD_SUFFIXES)
        files = [str(paths.join(text, n)) for n in sorted(paths.listdir(text))
                 if not n.startswith((".", "_")) and file_format(n) in shards]
    elif paths.exists(text):
        files = [text]
        refuse_workbook(text, what, FORMATS)
    else:
        raise DataError(f"{what} {text} does not exist", path=text, fix="check the path")
    if not files:
        raise DataError(f"{what} {text} names no {FORMATS} file", path=text,
                        fix="point it at a file, a glob like shards/*.csv, or a folder of such files")
    return files


def table_columns(path: str, what: str) -> list[str]:
    """The columns of a table path's first file, from its header line or Parquet schema alone (JSON Lines: its
    keys, the file read)."""
    file = table_files(path, what)[0]
    if file_format(file) in PARQUET_SUFFIXES:
        with paths.open_file(file) as fh:
            return readers.plain_columns(pq.read_schema(fh).empty_table(), file).column_names
    if file_format(file) in json_lines.JSON_SUFFIXES:  # a key may first appear on any line
        return json_lines.read_json_table(file).column_names
    with open_text(file) as fh:
        line = fh.readline().removeprefix(BOM).decode(file_encoding(file), errors="replace")
    quoting = csv.QUOTE_MINIMAL if csv_quoted(file, sep := text_separator(file)) else csv.QUOTE_NONE
    return next(csv.reader([line.rstrip("\r\n")], delimiter=sep, quoting=quoting), [])


def read_table(path: str, *, required: Mapping[str, str] | Sequence[str] = (), what: str = "table",
               skip_bad_rows: bool = False, sep: str | None = None) -> tuple[pd.DataFrame, list[SkipReport]]:
    """Every shard of a table, concatenated; text columns stay text (``""`` where empty).

    Args:
      path: A file, glob or folder (:func:`table_files`).
      required: Columns every shard must have, or ``{column: the flag that named it}``; an error names the
        file, the column, the columns found and the flag to change.
      what: The table in errors.
      skip_bad_rows: Skip and count malformed text rows instead of failing on the first.
      sep: The separator of text files (default: :func:`text_separator`'s reading of each header).

    Returns:
      The rows (:func:`locate` finds a row's file and line) and one skip report per text shard, for the
      caller to log (:meth:`~tfrs_recsys.data.errors.SkipReport.log`).
    """
    frames, reports, sources, start, text, files = [], [], [], 0, None, table_files(path, what)
    if len(files) > 1:  # an empty part file (an empty partition) is no shard; all empty, the first says so
        files = [f for f in files if paths.size(f)] or files[:1]
    for file in files:
        strings = set()  # a text file's columns are all text: only a Parquet string column is text by type
        if file_format(file) in PARQUET_SUFFIXES:
            frame = readers.read_parquet(file, what=what)
            strings = {c for c in frame.columns if pd.api.types.is_string_dtype(frame[c])}
        elif file_format(file) in json_lines.JSON_SUFFIXES:
            frame = json_lines.read_json_frame(file)
        else:
            # the caller says the report once, with the rows its own checks skip
            separator = text_separator(file, sep)
            frame, report = readers.read_delimited(file, sep=separator, quoting=csv_quoted(file, separator),
                                                   header=True, skip_bad_rows=skip_bad_rows, what=what,
                                                   report=SkipReport(path=file))
            reports.append(report)
        for column in (c for c in required if c not in frame.columns):
            flag = required.get(column) if isinstance(required, Mapping) else None
            shards = (f" ({len(files)} files: every file {path} names is read as a shard of one table; keep "
                      "other tables elsewhere)") if len(files) > 1 else ""
            delimited = first_data_line(file) == 2
            raise missing_column(what, column, frame.columns, flag, path=file, line=1 if delimited else None,
                                 rows=frame.head(SAMPLE_ROWS).to_numpy().tolist() if delimited else (),
                                 sep=text_separator(file, sep), shards=shards)
        text = strings if text is None else text & strings
        sources.append((start, file, frame.attrs.get(readers.LINE_NUMBERS)))  # None: no line was skipped
        frames.append(frame)
        start += len(frame)
    check_shards(frames, files, [file_format(f) in PARQUET_SUFFIXES for f in files], what)
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    table.attrs = {SOURCES: sources, STORED_TEXT: sorted(text or ())}
    return table, reports


def say_duplicates(table: pd.DataFrame, path: str, time_columns: Sequence[str]) -> None:
    """Warns of rows that repeat an earlier row exactly, time included, where the table has a time column:
    two identical events at one moment are most often an export written twice. They are kept (a log
    without times repeats rows by right), but copies of a row can fall on both sides of a split."""
    times = [c for c in dict.fromkeys(time_columns) if c in table.columns]
    if not times:
        return
    shared = table[times].astype(str).duplicated(keep=False).to_numpy()  # only they can be copies
    if not shared.any():
        return
    rows = table[shared]
    try:
        copies = int(rows.duplicated().sum())
    except TypeError:  # list or dict cells (a Parquet list column): compared as their text
        copies = int(rows.astype(str).duplicated().sum())
    if not copies:
        return
    logger.warning("%s: %d of %d rows (%.1f%%) repeat an earlier row exactly, time included: kept. If the "
                   "export wrote them twice, drop the copies first (pandas: frame.drop_duplicates()): a copy "
                   "can land in the test rows beside its original in training, and flatter the test", path,
                   copies, len(table), 100 * copies / len(table))


def text_separator(file: str, given: str | None = None) -> str:
    """A text file's field separator: ``given``, else whichever of ``, ; tab |`` its header line holds
    most of, where it holds more of it than of its suffix's (``,`` for .csv, tab for .tsv / .txt)."""
    if given:
        return given
    with open_text(file) as fh:  # a tf.io.gfile file's readline takes no size
        head = fh.read(1 << 16).split(b"\n", 1)[0].decode("utf-8", errors="replace")
    default = TEXT_SUFFIXES.get(file_format(file), ",")
    best = max((",", ";", "\t", "|"), key=head.count)
    return best if head.count(best) > head.count(default) else default


def first_data_line(file: str) -> int:
    """The line (a Parquet file's row) of a file's first row: 2 below a text file's header, else 1."""
    return 1 if file_format(file) in (*PARQUET_SUFFIXES, *json_lines.JSON_SUFFIXES) else 2


def locate(table: pd.DataFrame, row: int) -> tuple[str | None, int | None]:
    """The file and line (a Parquet file's 1-based row; a JSON Lines file's object) of a row of a
    :func:`read_table` frame."""
    for start, file, lines in reversed(table.attrs.get(SOURCES, [])):
        if row >= start:
            offset = row - start
            if lines is not None:
                return file, int(lines[offset])
            return file, offset + first_data_line(file)
    return None, None


def bad_row(table: pd.DataFrame, bad: np.ndarray, column: str, message: str, fix: str) -> DataError:
    """The error of the first ``bad`` row of ``table``'s ``column``, naming its file and line."""
    row = int(np.flatnonzero(bad)[0])
    path, line = locate(table, row)
    value = table[column].iloc[row]
    return DataError(message.format(value=value), path=path, line=line, column=column, fix=fix)


def parse_column_types(entries: Sequence[str]) -> dict[str, str]:
    """``("price=numeric", "zip=categorical")`` as ``{column: kind}``; a malformed entry is an error."""
    kinds = dict(entry.partition("=")[::2] for entry in entries)
    for column, kind in kinds.items():
        if not column or kind not in COLUMN_KINDS:
            fix = f"write e.g. price=numeric; KIND is one of {COLUMN_KINDS}"
            raise DataError(f"--column-types entry '{column}={kind}' is not COLUMN=KIND",
                            column=column or None, fix=fix)
    return kinds


def declared_text(column_types: Sequence[str]) -> list[str]:
    """The columns ``--column-types`` declares text to keep as written (``categorical``, ``timestamp``)."""
    return [column for column, kind in parse_column_types(column_types).items() if kind != "numeric"]


def type_columns(table: pd.DataFrame, column_types: Mapping[str, str] | Sequence[str] = (), *,
                 skip_bad_rows: bool = False, report: SkipReport | None = None,
                 text_only: Sequence[str] = (), blank_bad: bool = False) -> pd.DataFrame:
    """Turns a :func:`read_table` frame's number columns into numbers (module docstring).

    Args:
      table: The rows; text columns hold ``str`` (``""`` where empty).
      column_types: ``{column: "numeric" | "categorical"}`` or ``COLUMN=KIND`` entries, over inference.
      skip_bad_rows: Drop (and count in ``report``) rows whose ``numeric`` column holds something else.
      report: Where skipped rows are counted.
      text_only: Columns never turned into numbers (ids).
      blank_bad: With ``skip_bad_rows``, make a bad value missing rather than skip its row.

    Returns:
      The rows, typed; skipped rows dropped.

    Raises:
      DataError: a mostly-numeric column without a declared kind, or a declared numeric column with a bad
        value (without ``skip_bad_rows``); the message names file, line, column and the fix.
    """
    typed, bad = numeric_columns(table, column_types, skip_bad_rows=skip_bad_rows, report=report,
                                 text_only=text_only, blank_bad=blank_bad and skip_bad_rows)
    table = table.assign(**typed)
    return keep_rows(table, ~bad) if bad.any() else table


def keep_rows(table: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The ``keep`` rows of a :func:`read_table` frame, renumbered, each still located at its file line."""
    kept, sources = table[keep].reset_index(drop=True), table.attrs.get(SOURCES)
    if sources:
        ends, located = [start for start, _, _ in sources[1:]] + [len(table)], []
        for (start, file, lines), end in zip(sources, ends):
            first = first_data_line(file)
            lines = np.arange(first, first + end - start) if lines is None else np.asarray(lines)
            if keep[start:end].any():
                located.append((int(keep[:start].sum()), file, lines[keep[start:end]]))
        kept.attrs = {**table.attrs, SOURCES: located}
    return kept


def numeric_columns(table: pd.DataFrame, column_types: Mapping[str, str] | Sequence[str] = (), *,
                    skip_bad_rows: bool = False, report: SkipReport | None = None,
                    text_only: Sequence[str] = (), blank_bad: bool = False
                    ) -> tuple[dict[str, pd.Series], np.ndarray]:
    """:func:`type_columns`' decisions: ``({column: its numbers}, the rows to skip)``; same arguments, and
    ``blank_bad``: with ``skip_bad_rows``, a declared numeric column's bad values become missing (said in
    a warning), the rows kept: a catalog row keeps its other features."""
    kinds = dict(column_types) if isinstance(column_types, Mapping) else parse_column_types(column_types)
    unknown = sorted(set(kinds) - set(table.columns))
    if unknown:
        raise DataError(f"--column-types names {unknown}, which the data lacks; its columns are "
                        f"{list(table.columns)}", column=unknown[0], fix="name existing columns")
    skip = np.zeros(len(table), dtype=bool)
    typed = {}
    for column in table.columns:
        values = table[column]
        text = values.dtype == object or pd.api.types.is_string_dtype(values)
        stored = column in table.attrs.get(STORED_TEXT, ()) and kinds.get(column) != "numeric"  # "15.0"
        if column in text_only or kinds.get(column) in ("categorical", "timestamp") or not text or stored:
            continue
        if any(isinstance(v, (list, tuple, np.ndarray, dict)) for v in values.dropna().head(10)):
            continue  # a Parquet list column: lists, not numbers
        missing = (values.isna() | values.astype(str).str.strip().isin(MISSING_NUMBER_WORDS)).to_numpy()
        numbers = pd.to_numeric(values.mask(missing), errors="coerce")
        filled = ~missing
        bad = filled & numbers.isna().to_numpy()
        written = _formatted(values.mask(missing)) if bad.any() else None
        if written is not None and written[1].sum() < bad.sum():  # "€12,50": numbers the spec reads
            if not written[1].any():
                continue
            bad, numbers = written[1], values.mask(written[1])  # text still, its typos blanked or skipped
        share = 1 - bad.sum() / max(filled.sum(), 1)
        declared = kinds.get(column) == "numeric"
        if not filled.any() or (share < MOSTLY_NUMERIC and not declared):
            continue
        if bad.any() and not (declared and skip_bad_rows):
            fix = ("fix the value, or pass --skip-bad-rows to skip and count such rows" if declared else
                   f"declare the column: --column-types {column}=numeric (then bad values are errors, or "
                   f"skipped and counted with --skip-bad-rows) or {column}=categorical")
            what = ("a non-number in a numeric column" if declared
                    else f"{filled.sum() - bad.sum()} of {filled.sum()} values are numbers, not this one")
            raise bad_row(table, bad, column, f"{what}: {{value!r}}", fix)
        if blank_bad and bad.any():
            path, line = locate(table, int(np.flatnonzero(bad)[0]))
            logger.warning("%s: column '%s': %d value(s) not numbers, left out (missing), the rows kept "
                           "(skip_bad_rows=True); first: line %s, %r", path, column, int(bad.sum()), line,
                           values.iloc[int(np.flatnonzero(bad)[0])])
            typed[column] = numbers
            continue
        for row in np.flatnonzero(bad & ~skip) if report is not None else ():
            path, line = locate(table, int(row))
            report.add(DataError(f"not a number: {values.iloc[row]!r}", path=path, line=line, column=column),
                       reason=f"column '{column}': not a number, in a column of numbers")
        skip |= bad
        typed[column] = numbers
    return typed, skip


def _formatted(values: pd.Series) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """:func:`~tfrs_recsys.data.number_text.mostly_formatted_numbers` of a column whose first distinct values
    are mostly such numbers (ids and words are told apart on those, not read whole)."""
    head = pd.Series(values.dropna().unique()[:256], dtype=object)
    probe = mostly_formatted_numbers(head)
    if probe is None or probe[1].mean() > 0.5:
        return None
    return mostly_formatted_numbers(values)


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


BOOLEAN_LABELS = {"true": 1, "false": 0, "yes": 1, "no": 0, "y": 1, "n": 0, "t": 1, "f": 0,
                  # exports in German, French, Spanish, Italian and Portuguese
                  "ja": 1, "nein": 0, "j": 1, "wahr": 1, "falsch": 0, "oui": 1, "non": 0, "vrai": 1,
                  "faux": 0, "sí": 1, "si": 1, "verdadero": 1, "falso": 0, "vero": 1, "sim": 1, "não": 0,
                  "nao": 0}


def binary_label(values: pd.Series) -> pd.Series:
    """A label written as words, most values one of ``true``/``false``, ``yes``/``no``, ``y``/``n`` or
    ``t``/``f`` (any case; or in German, French, Spanish, Italian or Portuguese: ``ja``/``nein``,
    ``oui``/``non``, ``sí``/``no``, ``vero``/``falso``, ``sim``/``não``, ...) or 0/1, with those words as 1/0;
    the other values as they were (bad rows: ``maybe``), and any other column unchanged."""
    if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
        return values
    words = values.astype(str).str.strip().str.lower()
    present, known = (values.notna() & (words != "")).to_numpy(), words.isin(BOOLEAN_LABELS).to_numpy()
    binary = known | words.isin(("0", "1", "0.0", "1.0")).to_numpy()  # a "yes" among 0/1 is a 1 too
    if not present.any() or not known.any() or binary[present].mean() < 0.5:
        return values
    return values.astype(object).where(~known, words.map(BOOLEAN_LABELS))


def empty_values(values: pd.Series) -> np.ndarray:
    """Which values are missing or blank."""
    return (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()


def _mostly_numbers(values: pd.Series) -> bool:
    filled = values[values.notna() & (values.astype(str).str.strip() != "")]
    return filled.empty or pd.to_numeric(filled, errors="coerce").notna().mean() >= 0.5


def load_table(path: str, *, labels: list[str], skip_bad_rows: bool = False,
               session_column: str | None = None, user_column: str | None = None,
               item_column: str | None = None, column_types: Mapping[str, str] | Sequence[str] = (),
               sep: str | None = None, what: str = "--data", exclude: Sequence[str] = ()) -> LabeledData:
    """Any CSV or TSV table with a header, JSON Lines or Parquet table (:func:`read_table`), typed
    (:func:`type_columns`).

    Column kinds come from schema inference later.

    Args:
      path: A file, a glob or a folder of shards (``.parquet``/``.pq``; ``.tsv``/``.txt``: tab, else comma).
      labels: The label columns.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.
      session_column: The column grouping rows of one session, if any.
      user_column: The user id column, if any.
      item_column: The item id column, if any.
      column_types: Column kinds over inference (:func:`type_columns`).
      sep: The separator of text files (default: :func:`text_separator`'s reading of each header).
      what: The table in errors (the flag that named it).
      exclude: Columns left out of the features (``--exclude-columns``): kept as read, not typed, so
        their values stop nothing.

    Returns:
      The rows, named after the path; ``skipped`` counts the rows left out, for the caller to say once its
      own checks (the labels') are done (:meth:`~tfrs_recsys.data.errors.SkipReport.log`).
    """
    flags = {"--label-columns": labels, "--session-column": [session_column], "--user-column": [user_column],
             "--item-column": [item_column]}
    required = {column: flag for flag, columns in flags.items() for column in columns if column}
    frame, reports = read_table(path, required=required, what=what, skip_bad_rows=skip_bad_rows, sep=sep)
    if len(reports) > 1:  # shards: one report for the table (each example names its own file)
        reports = [SkipReport(str(path), sum(r.skipped for r in reports), sum(r.total for r in reports),
                              [e for r in reports for e in r.examples][:5], sum((r.reasons for r in reports),
                                                                             Counter()))]
    report = reports[0] if reports else SkipReport(path=str(path), total=len(frame))
    ids = [c for c in (session_column, user_column, item_column) if c]
    # A label of numbers is a number, or its row is bad; one of words is left to the label check to name.
    numeric = [label for label in labels if _mostly_numbers(frame[label])]
    frame = frame.assign(**{label: binary_label(frame[label]) for label in labels})
    declared = dict(column_types) if isinstance(column_types, Mapping) else parse_column_types(column_types)
    declared = {**{label: "numeric" for label in numeric}, **declared}
    typed = type_columns(frame, declared, skip_bad_rows=skip_bad_rows, report=report,
                         text_only=[*ids, *(c for c in exclude if c not in declared)])
    if item_column and (empty := empty_values(typed[item_column])).any():  # an impression of no item
        if not skip_bad_rows:
            raise bad_row(typed, empty, item_column, "empty item id",
                          "fill it in, or pass --skip-bad-rows to skip and count such rows")
        for row in np.flatnonzero(empty):
            where, line = locate(typed, int(row))
            report.add(DataError("empty item id", path=where, line=line, column=item_column))
        typed = keep_rows(typed, ~empty)
    report.check_rows_left(len(typed))
    return LabeledData(typed, list(labels), name=posixpath.basename(str(path).rstrip("/")),
                       session_column=session_column, user_column=user_column, item_column=item_column,
                       skipped=reports or [report])
