"""Numbers written for people: ``€12,50``, ``$1,234.00``, ``1 234,5 kr``, ``12%``, ``CHF 1'250``.

Shop exports and spreadsheets write prices and shares this way, and a reader that takes such text as it
is makes a price a category. :func:`formatted_numbers` tells such a column from text and reads it;
:func:`read_numbers` reads one with the decimal mark a feature spec recorded. Whether a comma is the
decimal mark (``12,50``) or groups thousands (``1,250``) is decided for the whole column, from the
values that can be read only one way, as the order of a column's dates is.
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
    text = _present(values)
    distinct = pd.Series(text.dropna().unique(), dtype=object)
    if distinct.empty:
        return None
    readings = _readings(distinct)
    point, comma = readings["point"].notna(), readings["comma"].notna()
    if not (point | comma).all() or ((point & ~comma).any() and (comma & ~point).any()):
        return None
    comma_decimal = bool((comma & ~point).any())
    grouped = distinct.str.match(_GROUPED).all() and distinct.str.contains(",", regex=False).any()
    if not comma_decimal and not grouped and not distinct.str.contains(_MARKED).any():
        return None
    return _mapped(text, readings["comma" if comma_decimal else "point"]), comma_decimal


def read_numbers(values: pd.Series, name: str, *, comma_decimal: bool) -> np.ndarray:
    """A column of numbers, plain or written for people, read with the decimal mark a spec recorded.

    Args:
      values: The column (text, or numbers with missing values).
      name: Its name, for an error.
      comma_decimal: Whether a comma is the decimal mark.

    Returns:
      float64 numbers, NaN where missing.

    Raises:
      DataError: A value is not a number, or can be read only with the other decimal mark.
    """
    text = _present(values)
    distinct = pd.Series(text.dropna().unique(), dtype=object)
    readings = _readings(distinct)
    mark, other = ("comma", "point") if comma_decimal else ("point", "comma")
    unread = readings.index[readings[mark].isna()]
    if len(unread):
        if pd.notna(readings.loc[unread[0], other]):
            marks = ("a comma", "a point") if comma_decimal else ("a point", "a comma")
            raise DataError(f"{unread[0]!r} reads as a number only if its decimal mark is {marks[1]}; the "
                            f"spec's is {marks[0]}, as its sample showed", column=name,
                            fix=f'set "decimal_comma": {str(not comma_decimal).lower()} for it in spec.json '
                                "and pass --feature-spec, or write plain numbers (12.5)")
        row = int(np.flatnonzero((text == unread[0]).to_numpy())[0])
        raise DataError(f"value {unread[0]!r} in row {row} is not a number", column=name,
                        fix="clean the column, or make the feature categorical in the spec")
    return _mapped(text, readings[mark])


def _present(values: pd.Series) -> pd.Series:
    """The values as text, missing (NaN, empty, a word for missing such as ``N/A``) as None."""
    text = values.astype(object).where(values.notna(), "").astype(str)
    return text.where(~text.str.strip().isin(MISSING_NUMBER_WORDS | {""}), None)


def _mapped(text: pd.Series, numbers: pd.Series) -> np.ndarray:
    """Each value's number, looked up by its text (missing values find none)."""
    return text.map(numbers).to_numpy(dtype="float64", na_value=np.nan)
