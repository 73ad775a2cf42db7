"""A table's header: the fix when a named column is not among its columns, and a file without a header
(its first row of data read as the column names)."""
from __future__ import annotations

import re
from typing import Sequence

# A column name that is a value: a number, or a date or time (2014-04-07T10:51:09.277Z, 12/31/2024).
_VALUE = re.compile(r"^\s*(-?\d+([.,]\d+)?([eE][-+]?\d+)?|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T].*)?)\s*$")


def headerless(columns: Sequence[str]) -> bool:
    """Whether most column names are values (numbers, dates): the file has no header row."""
    names = [str(c) for c in columns]
    return len(names) > 0 and sum(bool(_VALUE.match(n)) for n in names) * 2 > len(names)


def column_fix(column: str, columns: Sequence[str], flag: str | None) -> str:
    """The fix of a column missing from a table: the column written with other spaces or case, if one is
    (``'Kundennummer '``); a header to write, if the file has none (:func:`headerless`); else to pass
    ``flag`` naming one of ``columns`` (or to add it, without a flag)."""
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
    if headerless(columns):
        return ("the file may have no header row (its column names read as numbers and dates, as a first row "
                "of data would): add a first line naming the columns, separated as the rows are (e.g. `(echo "
                "user,time,item; cat FILE) > NEW.csv`); else pass " + (f"{flag} naming one of them" if flag
                                                                       else "a column it has"))
    return f"pass {flag} naming one of them" if flag else "add it"
