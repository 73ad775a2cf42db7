"""Numbers written for people: ``€12,50``, ``$1,234.00``, ``1 234,5 kr``, ``12%``, ``CHF 1'250``.

Shop exports and spreadsheets write prices and shares this way, and a reader that takes such text as it
is makes a price a category. :func:`formatted_numbers` tells such a column from text and reads it;
:func:`read_numbers` reads one with the decimal mark a feature spec recorded. A value that reads only one
way is read so (``12,50`` and ``11.31`` beside each other, as exports that merge sources write them); one
that reads both ways (``1,250``: 1.25 or 1250) takes the column's decimal mark, that of most of the values
that read only one way, as the order of a column's dates is decided.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv

from tfrs_recsys.data.errors import DataError

# Missing values in a column of numbers: "NaN", "NA", "null", ..., as the streamed path's CSV reader (Arrow)
# reads them, and the words exports write for a number nobody gave ("unknown", "-", "?")
MISSING_NUMBER_WORDS = frozenset(pa_csv.ConvertOptions().null_values) | {
    "unknown", "Unknown", "UNKNOWN", "none", "None", "NONE", "-", "--", "?", "n.a.", "N.A."}
_CURRENCIES = "€$£¥₹₩₽₺₪฿"
_CODES = ("USD|EUR|GBP|JPY|CHF|CAD|AUD|NZD|SEK|NOK|DKK|PLN|CZK|HUF|INR|CNY|RUB|BRL|ZAR|MXN|TRY|KRW"
          "|kr|zł|Kč|Ft|R\\$")
_UNIT = rf"(?:[{_CURRENCIES}]|{_CODES})"
_NUMBER = re.compile(rf"^\s*(?:{_UNIT}\s*)?([-+−]?)\s*(?:{_UNIT}\s*)?(\d(?:[\d.,'’\u00a0\u202f ]*\d)?)"
                     rf"\s*(%|{_UNIT})?\s*$")
_GROUPING = re.compile(r"[.,'’\u00a0\u202f ]")
_GROUPED = re.compile(r"^\s*[-+]?\d{1,3}(,\d{3})*(\.\d+)?\s*$")  # 1,234 and 999: thousands grouped
_MARKED = re.compile(rf"[{_CURRENCIES}%'’\u00a0\u202f ]|{_CODES}|\d\.\d+,|\d,\d+\.")


def _value(text: str, comma_decimal: bool) -> float | None:
    """``text`` as a number with the given decimal mark, or None if it cannot be read so."""
    match = _NUMBER.match(text)
    if match is None:
        return None
    sign, digits = match.group(1), match.group(2)
    decimal = "," if comma_decimal else "."
    whole, fraction = digits.rsplit(decimal, 1) if decimal in digits else (digits, "")
    if decimal in whole:  # two decimal marks
        return None
    groups = _GROUPING.split(whole)
    if len(groups) > 1 and not (len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
        return None
    if fraction and not fraction.isdigit():
        return None
    number = float("".join(groups) + ("." + fraction if fraction else ""))
    return -number if sign in ("-", "−") else number


def _readings(distinct: pd.Series) -> pd.DataFrame:
    readings = {"point": [_value(t, False) for t in distinct], "comma": [_value(t, True) for t in distinct]}
    return pd.DataFrame(readings, index=distinct.to_numpy(), dtype="float64")


def formatted_numbers(values: pd.Series) -> tuple[np.ndarray, bool] | None:
    """A text column's numbers and whether its decimal mark is a comma, if every value (missing and
    empty aside) is a number and some value is written for people: a currency, a percent sign, thousands
    grouped by spaces or apostrophes, both marks (``1.234,50``), a decimal comma (``12,50``), or every value
    grouped by commas alike (``104,494`` beside ``999``); else None.
    Plain digits stay as they are: codes and versions (``1.10``) are written so too.

    Args:
      values: The column.

    Returns:
      (float64 numbers, NaN where missing; whether the comma is the decimal mark), or None.
    """
    read = mostly_formatted_numbers(values)
    return None if read is None or read[1].any() else (read[0], read[2])


def mostly_formatted_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """:func:`formatted_numbers` of a column some of whose values are not numbers (``neu`` beside
    ``4,5``): those values are NaN and flagged, so that a caller can tell a typo from text by their share.

    Args:
      values: The column.

    Returns:
      (float64 numbers, NaN where missing or unread; which values are present but unread; whether the
      comma is the decimal mark), or None if no value is written for people.
    """
    text = _present(values)
    distinct = pd.Series(text.dropna().unique(), dtype=object)
    readings = _readings(distinct)
    point, comma = readings["point"].notna().to_numpy(), readings["comma"].notna().to_numpy()
    read = distinct[point | comma]
    if read.empty:
        return None
    point_only, comma_only = distinct[point & ~comma], distinct[comma & ~point]
    if (point_only.str.contains(",", regex=False).any() and comma_only.size
            or comma_only.str.contains(".", regex=False).any() and point_only.size):
        return None  # a mark grouping thousands in one value, the decimals in another: ids, not numbers
    comma_decimal = bool(comma_only.size > point_only.size)
    grouped = read.str.match(_GROUPED).all() and read.str.contains(",", regex=False).any()
    if comma_only.empty and not grouped and not read.str.contains(_MARKED).any():
        return None
    numbers = _mapped(text, _column_reading(readings, comma_decimal))
    return numbers, (text.notna().to_numpy() & np.isnan(numbers)), comma_decimal


def numbers_hint(values: pd.Series, name: str) -> str | None:
    """How to read a text column as numbers when most of its distinct values (of the first 1,000) are
    numbers written for people (``$8.58``) beside some that are not (``$3.99 - $15.99``), else None:
    inference keeps such a column text, each price a category."""
    distinct = pd.Series(_present(values).dropna().unique()[:1000], dtype=object)
    read = mostly_formatted_numbers(distinct)
    if read is None or not read[1].any() or read[1].mean() > 0.5:
        return None
    example, other = distinct[~read[1]].iloc[0], distinct[read[1]].iloc[0]
    return (f"mostly numbers written as text ({example!r}; not {other!r}): --column-types {name}=numeric "
            f"reads them, the others as errors, or as missing with --skip-bad-rows")


def currencies(values: pd.Series) -> list[str]:
    """The currency signs and codes a column's values are written with (``€``, ``USD``), sorted."""
    found = values.dropna().astype(str).str.extract(rf"({_UNIT})", expand=False).dropna()
    return sorted(set(found.str.replace("EUR", "€").str.replace("USD", "$").str.replace("GBP", "£")))


def _column_reading(readings: pd.DataFrame, comma_decimal: bool) -> pd.Series:
    """Each value's number: with the column's decimal mark where it reads both ways, else its one reading."""
    mark, other = ("comma", "point") if comma_decimal else ("point", "comma")
    return readings[mark].fillna(readings[other])


def read_numbers(values: pd.Series, name: str, *, comma_decimal: bool) -> np.ndarray:
    """A column of numbers, plain or written for people, read with the decimal mark a spec recorded.

    Args:
      values: The column (text, or numbers with missing values).
      name: Its name, for an error.
      comma_decimal: Whether a comma is the decimal mark.

    Returns:
      float64 numbers, NaN where missing.

    Raises:
      DataError: A value is not a number.
    """
    text = _present(values)
    distinct = pd.Series(text.dropna().unique(), dtype=object)
    numbers = _column_reading(_readings(distinct), comma_decimal)
    unread = numbers.index[numbers.isna()]
    if len(unread):
        raise DataError(f"value {unread[0]!r} is not a number", column=name,
                        fix="clean the column, or make the feature categorical in the spec")
    return _mapped(text, numbers)


def _present(values: pd.Series) -> pd.Series:
    """The values as text, missing (NaN, empty, a word for missing such as ``N/A``) as None."""
    text = values.astype(object).where(values.notna(), "").astype(str)
    return text.where(~text.str.strip().isin(MISSING_NUMBER_WORDS | {""}), None)


def _mapped(text: pd.Series, numbers: pd.Series) -> np.ndarray:
    """Each value's number, looked up by its text (missing values find none)."""
    return text.map(numbers).to_numpy(dtype="float64", na_value=np.nan)
