"""A table's header: the fix when a named column is not among its columns, and a file without a header
(its first row of data read as the column names)."""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from tfrs_recsys.data.errors import DataError

# A column name that is a value: a number, or a date or time (2014-04-07T10:51:09.277Z, 12/31/2024).
_VALUE = re.compile(r"^\s*(-?\d+([.,]\d+)?([eE][-+]?\d+)?|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T].*)?)\s*$")
_WORD = re.compile(r"[A-Za-z]+|[0-9]+")
SAMPLE_ROWS = 50  # the rows below a header that its names are compared with
NO_HEADER = "the file may have no header row"  # how a fix begins that says so


def _shape(value: object) -> str:
    """A value's form: each run of letters ``a``, each run of digits ``9``, other characters kept
    (``user_000001`` and ``user_000002`` are ``a_9``; ``U38439`` is ``a9``, the name ``I1`` too, unlike
    its column's ``5``)."""
    return _WORD.sub(lambda m: "9" if m.group()[0].isdigit() else "a", str(value).strip())


def headerless(columns: Sequence[str], rows: Sequence[Sequence[object]] = ()) -> bool:
    """Whether a file's first line, read as its column names, is a row of data.

    Args:
      columns: The names its first line gave.
      rows: The first rows below it, if known, in the columns' order.

    Returns:
      Without ``rows``: whether most names are values (numbers, dates). With them, each column votes: a
      name with the form most of its column's values share (``user_000001`` over ``user_000002``, ``3``
      over ``5``) for data; a name without it (``userid``, ``I1`` over numbers) for a header. Data wins on
      more votes: ids, numbers and times vote, and a name that is a value over free text (names, titles)
      or values of no common form (hashes).
    """
    names = [str(c) for c in columns]
    values = sum(bool(_VALUE.match(n)) for n in names)
    if not rows:
        return len(names) > 0 and values * 2 > len(names)
    data = header = 0
    for i, name in enumerate(names):
        column = [str(row[i]).strip() for row in rows if i < len(row) and row[i] is not None]
        column = [v for v in column if v]
        shape, count = Counter(map(_shape, column)).most_common(1)[0] if column else ("", 0)
        if count * 2 >= len(column) > 0 and "9" in shape:  # a column of ids, codes or numbers, not free text
            if re.fullmatch(r"[^\W\d]+", name.strip()):  # a word over numbers (``click`` over 0/1): a header
                return False
            data, header = (data + 1, header) if _shape(name) == shape else (data, header + 1)
        else:  # no common form to compare with: a name that is a value still says data
            data += bool(_VALUE.match(name))
    return data > header


def header_example(count: int, sep: str | None) -> str:
    """A shell line that writes a first line of names above FILE's rows.

    Args:
      count: The file's columns (names ``name1`` ... to rename).
      sep: Its separator (default ``,``).

    Returns:
      The line, e.g. ``(printf 'name1,name2\\n'; cat FILE) > NEW.csv``.
    """
    names = (sep or ",").replace("\t", "\\t").join(f"name{i}" for i in range(1, count + 1))
    suffix = "tsv" if sep == "\t" else "csv"
    return f"(printf '{names}\\n'; cat FILE) > NEW.{suffix}"


def column_fix(column: str, columns: Sequence[str], flag: str | None, *,
               rows: Sequence[Sequence[object]] = (), sep: str | None = None) -> str:
    """The fix of a column missing from a table: the column written with other spaces or case, if one is
    (``'Kundennummer '``); a header to write, if the file has none (:func:`headerless` of ``columns`` and
    ``rows``, the first rows below them; ``sep`` the file's separator); else to pass ``flag`` naming one
    of ``columns`` (or to add it, without a flag)."""
    twin = next((c for c in columns if str(c).strip().casefold() == column.strip().casefold()), None)
    if twin is not None:
        return f"the table writes it {twin!r} (spaces or case differ): " + (
            f"pass {flag} {twin!r}, or correct the header" if flag else "correct the header")
    joined = re.search(r"[^\w\s\"'.\-]{2,3}", str(columns[0])) if len(columns) == 1 else None
    if joined:  # one column: the separator is none of those read (MovieLens' .dat files join by "::")
        sep = joined.group()
        header = " and a first line naming them" if headerless(str(columns[0]).split(sep)) else ""
        return (f"the file's columns seem joined by {sep!r}, which is not a separator read (, ; tab |): "
                f"write it with commas{header}, e.g. `sed 's/{sep}/,/g' FILE > NEW.csv` (a MovieLens 1M "
                f"folder: --dataset movielens-1m)")
    if headerless(columns, rows):  # a value of the first row is no column to pass
        return (f"{NO_HEADER} (its first line's values are shaped as a row of data): add "
                f"a first line naming the columns, separated as the rows are, e.g. "
                f"`{header_example(len(columns), sep)}`, and pass " + (f"{flag} one of those names" if flag
                                                                       else "those names"))
    return f"pass {flag} naming one of them" if flag else "add it"


def missing_column(what: str, column: str, columns: Sequence[str], flag: str | None, *, path: str,
                   line: int | None = None, rows: Sequence[Sequence[object]] = (), sep: str | None = None,
                   shards: str = "") -> DataError:
    """The error of a ``column`` a table lacks (:func:`column_fix`).

    Args:
      what: The table (``"--data"``).
      column: The column.
      columns: The table's columns.
      flag: The flag that named it, if any.
      path: The file.
      line: The header's line, if it has one.
      rows: The first rows below the header (a text file's), to tell a header from a row of data.
      sep: The file's separator, for the header line the fix writes.
      shards: What the message adds about a table of several files.

    Returns:
      The error, naming the first line as data where it looks like data.
    """
    fix = column_fix(column, columns, flag, rows=rows, sep=sep)
    data = ", read from a first line that looks like data, not a header" if fix.startswith(NO_HEADER) else ""
    return DataError(f"{what} has no such column; its columns are {list(columns)}{data}{shards}", path=path,
                     line=line, column=column, fix=fix)
