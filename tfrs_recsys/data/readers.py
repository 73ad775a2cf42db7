"""Reading delimited text with errors that point at the file, line and column.

A fast pandas path reads well-formed files; when it meets anything it cannot
take (a short row, a non-UTF-8 byte, a value of the wrong type) a line-by-line
pass finds the exact place and either raises :class:`DataError` or, with
``skip_bad_rows=True``, drops the row and counts it in a :class:`SkipReport`.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tfrs_recsys import paths
from tfrs_recsys.data.compressed import open_text, read_text_bytes
from tfrs_recsys.data.errors import DataError, SkipReport
from tfrs_recsys.data.text_encodings import BOM, decode, file_encoding, text_encoding

logger = logging.getLogger(__name__)
# frame.attrs key: the file line of every row the careful pass kept.
LINE_NUMBERS = "source_line_numbers"
# The numeric column kinds a reader checks, in the words of an error; other columns stay text.
_WORDS = {"int": "an integer", "float": "a number"}
_SKIP_HINT = "or rerun with --skip-bad-rows to skip and count the row"
def require_file(path: str | os.PathLike, what: str, fix: str) -> str:
    """Fail with a clear message unless ``path`` is an existing, non-empty file.

    Args:
      path: The file.
      what: Its name in the error (``"MovieLens ratings.csv"``).
      fix: What to do when it is missing.

    Returns:
      ``path`` as text.
    """
    text = str(path)
    if not paths.exists(text):
        raise DataError(f"{what} not found", path=text, fix=fix)
    with open_text(text) as fh:
        if not fh.read(1):
            raise DataError(f"{what} is empty", path=text,
                            fix="point at a file that holds data rows (was the download cut short?)")
    return text


def first_line(path: str | os.PathLike, what: str, fix: str) -> str:
    """The first line of an existing, non-empty file, as text.

    Args:
      path: The file.
      what: Its name in the error when it is missing or empty (:func:`require_file`).
      fix: What to do when it is missing.

    Returns:
      The line, newline included; undecodable bytes replaced.
    """
    with open_text(require_file(path, what, fix)) as fh:
        return fh.readline().decode("utf-8", errors="replace")


def read_delimited(path: str | os.PathLike, *, sep: str, columns: Sequence[str] | None = None,
                   header: bool = False, column_types: Mapping[str, str] | None = None,
                   nullable: Sequence[str] = (), encoding: str = "utf-8", skip_bad_rows: bool = False,
                   quoting: bool = True, what: str = "data file", fix_missing: str = "check the path",
                   data: bytes | None = None, first_line: int = 1, report: SkipReport | None = None
                   ) -> tuple[pd.DataFrame, SkipReport]:
    """Read a delimited text file into a DataFrame with checked column types.

    Args:
      path: The file; with ``data``, only the name errors give.
      sep: The field separator.
      columns: The fields of a headerless file (required then), or the columns a header must name.
      header: Whether the first line names the columns.
      column_types: Column -> ``"int"`` | ``"float"``; other columns stay text (``""`` where empty).
      nullable: Numeric columns that may be empty (NaN there).
      encoding: The text encoding.
      skip_bad_rows: Skip and count a malformed row instead of raising :class:`DataError`.
      quoting: Whether fields may be quoted (``"a,b"``).
      what: The file in a missing-file error (``"MovieLens ratings.csv"``).
      fix_missing: What to do when the file is missing.
      data: A block of ``path``'s lines already in memory, read instead of the file.
      first_line: The file line of ``data``'s first line.
      report: Counts the rows read and skipped (a new report by default, logged when rows were skipped).

    Returns:
      The frame and the skip report.
    """
    if data is None:
        data = read_text_bytes(require_file(path, what, fix_missing))
    path = str(path)
    if data.startswith(BOM) and first_line == 1:
        data = data[len(BOM):]
    if encoding == "utf-8":  # a block of a file read in blocks: as the file's first MiB reads, said once
        encoding = text_encoding(data, path) if first_line == 1 else file_encoding(path)
    options = (sep, columns, header, dict(column_types or {}), set(nullable), encoding, quoting)
    new_report = report is None
    report = SkipReport(path=path) if new_report else report
    frame = _fast_read(data, first_line, *options)
    if frame is not None:
        report.total += len(frame)
        return frame, report
    frame = _careful_read(data, path, first_line, *options, skip_bad_rows, report)
    if new_report:
        report.log()
    return frame, report


def _fast_read(data, first_line, sep, columns, header, column_types, nullable, encoding, quoting
               ) -> pd.DataFrame | None:
    """The whole text through pandas, or ``None`` when the careful pass must say where a problem is."""
    try:
        text = data.decode(encoding)
        frame = pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None,
                            names=None if header else list(columns), dtype=str, na_filter=False,
                            engine="c" if len(sep) == 1 else "python",
                            quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE, on_bad_lines="error")
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError):
        return None
    counts, starts = _records(text, sep, quoting)
    if (len(counts) != 1  # pandas pads a short row and shifts a long one silently
            or (not header and counts != {len(columns)})
            or re.search(r"(^|\n)[ \t\r]*\n", text.rstrip("\r\n"))  # blank lines shift source_line's numbers
            or (header and columns and not set(columns) <= set(frame.columns))
            or frame.empty):
        return None
    starts = starts[int(header):]
    if starts and starts[-1] != len(starts) + int(header) and len(starts) == len(frame):
        frame.attrs[LINE_NUMBERS] = [first_line + line - 1 for line in starts]  # a quoted field spans lines
    return _typed(frame, column_types, nullable, check=True)


def _records(text: str, sep: str, quoting: bool) -> tuple[set[int], list[int]]:
    """The distinct numbers of fields of the non-blank records, and the line each record starts on
    (1-based; a quoted field may hold newlines), or ``[]`` where no field is quoted (a line a record)."""
    if quoting and '"' in text and len(sep) == 1:
        # Quoted fields may hold the separator: count fields the way a CSV parser does.
        counts, starts, reader, line = set(), [], csv.reader(io.StringIO(text), delimiter=sep), 1
        for row in reader:
            if row:
                counts.add(len(row))
                starts.append(line)
            line = reader.line_num + 1
        return counts, starts
    return {line.count(sep) + 1 for line in text.splitlines() if line.strip()}, []


def _typed(frame: pd.DataFrame, column_types: Mapping[str, str], nullable: set[str], *,
           check: bool) -> pd.DataFrame | None:
    """``frame`` with its numeric columns converted (int64, or float64 where one is empty).

    With ``check``, ``None`` when a value does not fit its column (the careful pass, which checked
    every value already, converts without).
    """
    for col, kind in column_types.items():
        if kind not in _WORDS or col not in frame.columns:
            continue
        text = frame[col]
        numbers = pd.to_numeric(text, errors="coerce")
        if check:
            empty = text == ""
            fits = np.isfinite(numbers) & (numbers % 1 == 0) if kind == "int" else numbers.notna()
            if (~fits & ~empty).any() or (col not in nullable and empty.any()):
                return None
        frame[col] = numbers.astype("int64" if kind == "int" and numbers.notna().all() else "float64")
    return frame


def _split(line: str, sep: str, quoting: bool) -> list[str]:
    if quoting and len(sep) == 1 and '"' in line:
        try:
            return next(csv.reader([line], delimiter=sep))
        except csv.Error as error:  # a quote never closed swallowed the lines after it
            raise DataError(f"cannot split the line into fields ({error}): a field opening with '\"' is read "
                            "as CSV-quoted and its closing quote is missing",
                            fix="close or double the quote (\"\"), or --skip-bad-rows") from None
    return line.split(sep)


def _line_records(lines: list[bytes], first_line: int, quoted: bool) -> Iterator[tuple[int, bytes]]:
    """(the file line it starts on, its bytes) of each record: a line, or with ``quoted`` the lines up to
    the one that closes a quote opened before it (a quoted field that holds newlines)."""
    start, held = first_line, []
    for lineno, raw in enumerate(lines, start=first_line):
        if not held:
            start = lineno
        held.append(raw)
        if not quoted or sum(part.count(b'"') for part in held) % 2 == 0:
            yield start, b"\n".join(held)
            held = []
    if held:  # a quote never closed: its lines as they are, for the parse to name
        yield from enumerate(held, start=start)


def parse_lines(data: bytes, path: str, parse: Callable[[str], Any], *, skip_bad_rows: bool,
                report: SkipReport, encoding: str = "utf-8", first_line: int = 1,
                quoted: bool = False) -> tuple[list, list[int]]:
    """Each non-blank record of ``data`` through ``parse``; the errors it raises get the file and line.

    Args:
      data: The lines.
      path: The file they come from.
      parse: Makes a row of a line's text, or raises :class:`DataError`.
      skip_bad_rows: Skip a line whose text or ``parse`` fails, counted in ``report``, instead of raising.
      report: Counts the lines read and skipped.
      encoding: The text encoding.
      first_line: The file line of ``data``'s first line.
      quoted: Whether a quoted field may hold newlines (a record then spans lines; its first one names it).

    Returns:
      The rows and their file lines.
    """
    rows, line_numbers = [], []
    for lineno, raw in _line_records([line.rstrip(b"\r") for line in data.split(b"\n")], first_line, quoted):
        if not raw.strip():
            continue
        report.total += 1
        reason = f"not valid {encoding}"
        try:
            text = decode(raw, encoding, path)
            reason = None
            rows.append(parse(text))
            line_numbers.append(lineno)
        except DataError as err:
            err = DataError(err.message, path=path, line=lineno, column=err.column, fix=err.fix)
            if not skip_bad_rows:
                raise err from None
            report.add(err, reason=reason)
    if not rows:
        reasons = "; ".join(f"{n} x {why}" for why, n in report.reasons.most_common(3))
        skipped = f" ({report.skipped} skipped as bad: {reasons})" if report.skipped else ""
        undecodable = report.reasons.most_common(1)[0][0].startswith("not valid") if report.skipped else False
        raise DataError("no data rows could be read" + skipped, path=path,
                        fix=f"re-save the file as {encoding} (e.g. iconv -f ITS_ENCODING -t {encoding})"
                        if undecodable else "check the separator and the file's format")
    return rows, line_numbers


def _is_number(value: str, kind: str) -> bool:
    """Whether ``value`` reads as ``kind``: '260.0' is an integer (pandas writes those), '2.5' is not."""
    try:
        number = float(value)
    except ValueError:
        return False
    return kind == "float" or number.is_integer()


def _careful_read(data, path, first_line, sep, columns, header, column_types, nullable, encoding, quoting,
                  skip_bad_rows, report) -> pd.DataFrame:
    """Line by line: the first problem raises :class:`DataError` with its line and column, or is skipped."""
    names = list(columns or [])
    if header:
        head, _, data = data.partition(b"\n")
        head = decode(head.rstrip(b"\r"), encoding, path, first_line)
        names = [h.strip() for h in _split(head, sep, quoting)]
        missing = [c for c in columns or [] if c not in names]
        if missing:
            raise DataError(f"required column(s) {missing} missing from the header {names}", path=path,
                            line=first_line, column=missing[0],
                            fix="rename the column in the file, or map it in the loader options")

    def parse(line: str) -> list[str]:
        fields = _split(line, sep, quoting)
        if len(fields) != len(names):
            # a quote miscounts fields silently: say it was read as one
            quote = (" (a field opening with '\"' is read as CSV-quoted, up to the next '\"' that closes it)"
                     if quoting and len(sep) == 1 and '"' in line else "")
            raise DataError(f"expected {len(names)} fields separated by {sep!r}, found {len(fields)}{quote}",
                            fix=f"repair or remove this row, {_SKIP_HINT}")
        for name, value in zip(names, fields):
            kind = column_types.get(name)
            if kind in _WORDS and not (value == "" and name in nullable) and not _is_number(value, kind):
                words = _WORDS[kind]
                problem = (f"value {value!r} is not {words}" if value
                           else f"empty value where {words} is required")
                fix = f"{'correct' if value else 'fill'} the value, {_SKIP_HINT}"
                raise DataError(problem, column=name, fix=fix)
        return fields

    rows, line_numbers = parse_lines(data, path, parse, skip_bad_rows=skip_bad_rows, report=report,
                                     encoding=encoding, first_line=first_line + int(header),
                                     quoted=quoting and len(sep) == 1 and b'"' in data)
    frame = _typed(pd.DataFrame(rows, columns=names), column_types, nullable, check=False)
    frame.attrs[LINE_NUMBERS] = line_numbers
    return frame


def source_line(frame: pd.DataFrame, row: int, *, first_data_line: int) -> int:
    """The file line of a row of a frame :func:`read_delimited` returned.

    Args:
      frame: The frame.
      row: The row's position.
      first_data_line: The file line of the first row.

    Returns:
      The line the careful pass (which skips blank and bad lines) recorded, else ``row + first_data_line``
      (the fast pass only reads files without either).
    """
    lines = frame.attrs.get(LINE_NUMBERS)
    if lines is not None and len(lines) == len(frame):
        return int(lines[row])
    return row + first_data_line


def check_rows(frame: pd.DataFrame, path: str, checks: Sequence[tuple], *, first_data_line: int | None,
               skip_bad_rows: bool = False, report: SkipReport | None = None,
               where: Callable[[int], str] = lambda row: "") -> pd.DataFrame:
    """Checks of parsed rows: the first flagged row raises :class:`DataError`, or flagged rows are skipped.

    Args:
      frame: The rows read from ``path``.
      path: The file.
      checks: ``(flagged, column, message, fix)`` each: a boolean mask over the rows, the column the error
        names, the error text of a flagged row's position, and what to do.
      first_data_line: The file line of the first row (:func:`source_line`); ``None`` where rows have no
        line (Parquet).
      skip_bad_rows: Drop flagged rows, counted in ``report``, instead of raising.
      report: Counts the skipped rows.
      where: Text naming a row's position, put before the message.

    Returns:
      ``frame`` without the skipped rows.
    """
    bad = np.zeros(len(frame), dtype=bool)
    for mask, column, message, fix in checks:
        for row in np.flatnonzero(mask & ~bad):
            line = source_line(frame, row, first_data_line=first_data_line) if first_data_line else None
            err = DataError(where(row) + message(row), path=path, line=line, column=column, fix=fix)
            if not skip_bad_rows:
                raise err
            report.add(err)
        bad |= mask
    return frame[~bad].reset_index(drop=True) if bad.any() else frame


def binary_checks(frame: pd.DataFrame, labels: Sequence[str], fix: str = "binarize the label column") -> list:
    """The :func:`check_rows` checks that every value of the ``labels`` columns is 0 or 1."""
    return [(~frame[c].isin([0, 1]).to_numpy(), c,
             lambda row, c=c: f"label must be 0 or 1, found {frame[c].iloc[row]}", fix) for c in labels]


def _micros(field: pa.Field) -> pa.DataType:
    """The type a timestamp or date column is read as: microseconds, in UTC where it has a zone."""
    return pa.timestamp("us", tz="UTC" if getattr(field.type, "tz", None) else None)


def _plain(field: pa.Field) -> bool:
    kind = field.type
    return not (pa.types.is_struct(kind) or pa.types.is_date(kind)) and (not pa.types.is_timestamp(kind)
                                                                        or kind == _micros(field))


def plain_columns(table: pa.Table, path: str) -> pa.Table:
    """``table`` (of the file ``path``, named in errors) with each struct column flattened into
    ``parent.child`` columns (nested ones too), and each timestamp column as microseconds, in UTC where it
    has a zone: a warehouse export may write one struct per event (``metadata.canal``), and shards written
    apart their own time zones and units, of the same instants. A date column reads as its midnights."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        names = table.column_names
        table = table.flatten()
        if clash := next((n for n in table.column_names if table.column_names.count(n) > 1), None):
            raise DataError(f"struct field '{clash}' has the name of another column ({', '.join(names)})",
                            path=path, column=clash, fix="rename the column or the struct's field")
    for i, field in enumerate(table.schema):
        if not _plain(field):
            try:  # nanoseconds lose their last digits; a time past the year 294,247 is refused
                cast = pc.cast(table.column(i), _micros(field), safe=getattr(field.type, "unit", "") != "ns")
            except pa.ArrowInvalid as exc:
                raise DataError(f"timestamps that cannot be read as microseconds ({exc})", path=path,
                                column=field.name,
                                fix="correct the times, or write the column as text") from None
            table = table.set_column(i, field.name, cast)
    return table


def struct_fields(names: Sequence[str], columns: Sequence[str]) -> list[str]:
    """``names`` with the name of a struct (``metadata``, not itself a column) replaced by its fields'
    columns as :func:`plain_columns` reads them (``metadata.canal``, ``metadata.pagina``); others as given."""
    return [field for name in names for field in
            ([] if name in columns else [c for c in columns if c.startswith(f"{name}.")]) or [name]]


def plain_batch(batch: pa.RecordBatch, path: str) -> pa.RecordBatch:
    """:func:`plain_columns` of one record batch."""
    if all(_plain(f) for f in batch.schema):
        return batch
    table = plain_columns(pa.Table.from_batches([batch]), path)
    return pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], schema=table.schema)


def read_parquet(path: str | os.PathLike, *, columns: Sequence[str] | None = None, what: str = "Parquet file",
                 fix_missing: str = "check the path") -> pd.DataFrame:
    """Read a Parquet file; missing required columns are named.

    Args:
      path: The file.
      columns: The columns it must have.
      what: Its name in the error when it is missing.
      fix_missing: What to do when it is missing.

    Returns:
      The frame.
    """
    path = require_file(path, what, fix_missing)
    try:
        table = pq.read_table(io.BytesIO(paths.read_bytes(path)))
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"not a readable Parquet file ({type(exc).__name__}: {exc})", path=path,
                        fix="check the file is Parquet, not CSV or a partial download") from None
    frame = plain_columns(table, path).to_pandas()
    missing = [c for c in (columns or []) if c not in frame.columns]
    if missing:
        raise DataError(f"required column(s) {missing} missing; the file has {list(frame.columns)}",
                        path=path, column=missing[0],
                        fix="rename the columns or map them in the loader options")
    return frame
