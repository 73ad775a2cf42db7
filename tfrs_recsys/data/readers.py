"""Reading delimited text with errors that point at the file, line and column.

A fast pandas path reads well-formed files; when it meets anything it cannot
take (a short row, a non-UTF-8 byte, a value of the wrong type) a line-by-line
pass finds the exact place and either raises :class:`DataError` or, with
``skip_bad_rows=True``, drops the row and counts it in a :class:`SkipReport`.
"""
from __future__ import annotations

import csv
import io
import os
import re
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_recsys import paths
from tfrs_recsys.data.errors import DataError, SkipReport

# frame.attrs key: the file line of every row the careful pass kept.
LINE_NUMBERS = "source_line_numbers"

# Column kinds a reader can check: the converter and the words used in an error.
_CONVERTERS: dict[str, tuple[Callable[[str], object], str]] = {
    "str": (str, "text"),
    "int": (int, "an integer"),
    "float": (float, "a number"),
}


def open_path(path: str | os.PathLike, mode: str = "rb"):
    """Open a local path or any ``tf.io.gfile`` URL (gs://, hdfs://, ...)."""
    return paths.open_file(path, mode)


def path_exists(path: str | os.PathLike) -> bool:
    return paths.exists(path)


def join_path(base: str | os.PathLike, *parts: str) -> str:
    return str(paths.join(base, *parts))


def require_file(path: str | os.PathLike, what: str, fix: str) -> str:
    """Fail with a clear message unless ``path`` is an existing, non-empty file."""
    text = str(path)
    if not path_exists(text):
        raise DataError(f"{what} not found", path=text, fix=fix)
    with open_path(text) as fh:
        if not fh.read(1):
            raise DataError(f"{what} is empty", path=text,
                            fix="point at a file that holds data rows (was the download cut short?)")
    return text


def first_line(path: str | os.PathLike, what: str, fix: str) -> str:
    """The first line of an existing, non-empty file (:func:`require_file`), as text."""
    with open_path(require_file(path, what, fix)) as fh:
        return fh.readline().decode("utf-8", errors="replace")


def read_delimited(path: str | os.PathLike, *, sep: str, columns: Sequence[str] | None = None,
                   header: bool = False, column_types: Mapping[str, str] | None = None,
                   nullable: Sequence[str] = (), encoding: str = "utf-8", skip_bad_rows: bool = False,
                   quoting: bool = True, what: str = "data file",
                   fix_missing: str = "check the path") -> tuple[pd.DataFrame, SkipReport]:
    """Read a delimited text file into a DataFrame with checked column types.

    ``columns`` names the fields of a headerless file, or the columns a file with a
    header must contain. ``column_types`` maps column -> "str" | "int" | "float";
    unlisted columns stay text. ``nullable`` columns may be empty (NaN for numbers,
    "" for text). Returns the frame and a report of skipped rows.
    """
    path = require_file(path, what, fix_missing)
    options = (sep, columns, header, dict(column_types or {}), set(nullable), encoding, quoting)
    report = SkipReport(path=path)
    frame = _fast_read(path, *options)
    if frame is not None:
        report.total = len(frame)
        return frame, report
    frame = _careful_read(path, *options, skip_bad_rows, report)
    report.log()
    return frame, report


def _convert_frame(frame: pd.DataFrame, column_types: Mapping[str, str],
                   nullable: set[str]) -> pd.DataFrame | None:
    """Vectorized type conversion; ``None`` when any value fails (the careful pass will say where)."""
    out = {}
    for col in frame.columns:
        kind = column_types.get(col, "str")
        values = frame[col]
        if kind == "str":
            if values.isna().any() and col not in nullable:
                return None
            out[col] = values.fillna("")
            continue
        numeric = pd.to_numeric(values.replace("", np.nan), errors="coerce")
        bad = numeric.isna() & ~(values.isna() | (values == "")) if col in nullable else numeric.isna()
        if bad.any():
            return None
        if kind == "int":
            if col in nullable and numeric.isna().any():
                out[col] = numeric.astype("float64")
            elif (numeric != np.floor(numeric)).any():
                return None
            else:
                out[col] = numeric.astype("int64")
        else:
            out[col] = numeric.astype("float64")
    return pd.DataFrame(out)


def _fast_read(path, sep, columns, header, column_types, nullable, encoding, quoting) -> pd.DataFrame | None:
    try:
        text = paths.read_bytes(path).decode(encoding)
        frame = pd.read_csv(
            io.StringIO(text), sep=sep, header=0 if header else None,
            names=None if header else list(columns) if columns else None,
            dtype=str, keep_default_na=False, na_filter=False,
            engine="c" if len(sep) == 1 else "python",
            quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
            skip_blank_lines=True, on_bad_lines="error",
        )
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError):
        return None
    if not _field_counts_agree(text, sep, quoting):
        return None
    if re.search(r"(^|\n)[ \t\r]*\n", text.rstrip("\r\n")):
        return None  # blank lines would shift the line numbers of later checks (the careful pass keeps them)
    if header and columns and any(c not in frame.columns for c in columns):
        return None
    if not header and columns and frame.isna().any().any():  # short rows are padded with NaN
        return None
    if frame.empty:
        return None
    return _convert_frame(frame, column_types, nullable)


def _field_counts_agree(text: str, sep: str, quoting: bool) -> bool:
    """pandas pads short rows silently; a row with the wrong field count must be reported instead."""
    if quoting and '"' in text and len(sep) == 1:
        # Quoted fields may hold the separator: count fields the way a CSV parser does.
        counts = {len(row) for row in csv.reader(io.StringIO(text), delimiter=sep) if row}
    else:
        counts = {line.count(sep) for line in text.splitlines() if line.strip()}
    return len(counts) <= 1


def _split(line: str, sep: str, quoting: bool) -> list[str]:
    if quoting and len(sep) == 1 and '"' in line:
        return next(csv.reader([line], delimiter=sep))
    return line.split(sep)


def _decode(raw: bytes, encoding: str, path: str, lineno: int) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid {encoding}: byte 0x{raw[exc.start]:02x} at character {exc.start + 1}",
                        path=path, line=lineno,
                        fix=f"re-save the file as {encoding}, or read it with encoding='latin-1'") from None


def _careful_read(path, sep, columns, header, column_types, nullable, encoding, quoting,
                  skip_bad_rows, report) -> pd.DataFrame:
    lines = paths.read_bytes(path).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    names: list[str] | None = list(columns) if (columns and not header) else None
    if header:
        if not lines:
            raise DataError("file is empty", path=path, fix="point at a file with a header row and data rows")
        names = [h.strip() for h in _split(_decode(lines[0].rstrip(b"\r"), encoding, path, 1), sep, quoting)]
        missing = [c for c in (columns or []) if c not in names]
        if missing:
            raise DataError(f"required column(s) {missing} missing from the header {names}", path=path,
                            line=1, column=missing[0],
                            fix="rename the column in the file, or map it in the loader options")
    skip_hint = "or rerun with skip_bad_rows to skip and count the row"
    rows: list[list[object]] = []
    line_numbers: list[int] = []
    for lineno, raw_line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        raw_line = raw_line.rstrip(b"\r")
        if not raw_line.strip():
            continue
        report.total += 1
        try:
            fields = _split(_decode(raw_line, encoding, path, lineno), sep, quoting)
            names = names or [f"c{i}" for i in range(len(fields))]
            if len(fields) != len(names):
                raise DataError(f"expected {len(names)} fields separated by {sep!r}, found {len(fields)}",
                                path=path, line=lineno, fix=f"repair or remove this row, {skip_hint}")
            row: list[object] = []
            for name, value in zip(names, fields):
                kind = column_types.get(name, "str")
                convert, words = _CONVERTERS[kind]
                if value == "" and (name in nullable or kind == "str"):
                    row.append(np.nan if kind != "str" else "")
                elif value == "":
                    raise DataError(f"empty value where {words} is required", path=path, line=lineno,
                                    column=name, fix=f"fill the value, {skip_hint}")
                else:
                    try:
                        integral = kind == "int" and _is_integral(value)
                        row.append(int(float(value)) if integral else convert(value))
                    except ValueError:
                        raise DataError(f"value {value!r} is not {words}", path=path, line=lineno,
                                        column=name, fix=f"correct the value, {skip_hint}") from None
            rows.append(row)
            line_numbers.append(lineno)
        except DataError as err:
            if not skip_bad_rows:
                raise
            report.add(err)
    if not rows:
        skipped = f" ({report.skipped} skipped as bad)" if report.skipped else ""
        raise DataError("no data rows could be read" + skipped, path=path,
                        fix="check the separator and the file's format")
    frame = pd.DataFrame(rows, columns=names)
    for name in frame.columns:
        kind = column_types.get(name, "str")
        if kind == "int" and not frame[name].isna().any():
            frame[name] = frame[name].astype("int64")
        elif kind in ("int", "float"):
            frame[name] = frame[name].astype("float64")
    frame.attrs[LINE_NUMBERS] = line_numbers
    return frame


def source_line(frame: pd.DataFrame, row: int, *, first_data_line: int) -> int:
    """The file line of ``frame``'s ``row``: recorded by the careful pass (which skips blank and bad
    lines), else ``row + first_data_line`` (the fast pass only reads files without either)."""
    lines = frame.attrs.get(LINE_NUMBERS)
    if lines is not None and len(lines) == len(frame):
        return int(lines[row])
    return row + first_data_line


def check_binary_labels(frame: pd.DataFrame, labels: Sequence[str], path: str, *,
                        first_data_line: int) -> None:
    """Raise on the first label value other than 0 / 1, naming its file line (:func:`source_line`)."""
    for col in labels:
        bad = ~frame[col].isin([0, 1]).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"label must be 0 or 1, found {frame[col].iloc[row]}", path=path, column=col,
                            line=source_line(frame, row, first_data_line=first_data_line),
                            fix="binarize the label column")


def _is_integral(value: str) -> bool:
    """'260.0' counts as an integer (pandas-written CSVs), '2.5' does not."""
    try:
        number = float(value)
    except ValueError:
        return False
    return number.is_integer() and ("." in value or "e" in value.lower())


def read_parquet(path: str | os.PathLike, *, columns: Sequence[str] | None = None, what: str = "Parquet file",
                 fix_missing: str = "check the path") -> pd.DataFrame:
    """Read a Parquet file; missing required columns are named."""
    path = require_file(path, what, fix_missing)
    try:
        with open_path(path) as fh:
            frame = pd.read_parquet(io.BytesIO(fh.read()))
    except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"not a readable Parquet file ({type(exc).__name__}: {exc})", path=path,
                        fix="check the file is Parquet, not CSV or a partial download") from None
    missing = [c for c in (columns or []) if c not in frame.columns]
    if missing:
        raise DataError(f"required column(s) {missing} missing; the file has {list(frame.columns)}",
                        path=path, column=missing[0],
                        fix="rename the columns or map them in the loader options")
    return frame
