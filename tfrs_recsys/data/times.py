"""Time values as a model reads them: datetimes, epoch numbers and date text, as seconds since 1970 (UTC).

Date text may be written day first (``31/12/2025``) or month first (``12/31/2025``); the values tell which
(:func:`day_first`), and a column in both orders is an error. Epoch numbers are seconds, or milli-, micro-
or nanoseconds told apart by their size.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from tfrs_recsys.data.errors import SchemaError

logger = logging.getLogger(__name__)


def is_plain_number(values: pd.Series) -> bool:
    """Whether a column holds numbers, booleans excluded."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


NUMERIC_DATE = r"^(\s*)(\d{1,2})([/.\-])(\d{1,2})\3(?=\d{2,4}(?!\d))"  # 31/12/2025, 12.31.25, 31-12-2025


def day_first(values: pd.Series, name: str = "", *, expected: bool | None = None) -> bool:
    """Whether the numeric dates among ``values`` (other values are ignored) are written day first:
    ``31/12/2025`` says so, ``12/31/2025`` says month first; dates that say neither are read day first when
    written with dots (``01.12.2025``, as every country writing dates with dots does) and month first
    otherwise, as pandas reads them, with a warning; ISO dates (``2025-12-31``) are not numeric dates. Both
    orders in one column, or (given ``expected``, the order a spec recorded) the other order, raise a
    :class:`SchemaError` naming the column ``name``."""
    text = pd.Series(values.dropna().unique()).astype(str)
    if (parts := text.str.extract(NUMERIC_DATE).dropna()).empty:
        return False
    first, second = pd.to_numeric(parts[1]), pd.to_numeric(parts[3])
    days_first, months_first = text[parts.index][first > 12], text[parts.index][second > 12]
    if not len(days_first) and not len(months_first) and expected is None:
        if (parts[2] == ".").all():
            return True
        if name not in _ORDER_SAID:  # once a column
            _ORDER_SAID.add(name)
            logger.warning("column %r: no date says whether it is written day or month first (no "
                           "number above 12, e.g. %r): read month first, as in the US (03/06/2024 is March "
                           "6); if they are day first, write the dates as ISO (2024-06-03) or with dots "
                           "(03.06.2024)", name, text[parts.index[0]])
    if len(days_first) and len(months_first):
        raise SchemaError(f"dates written day first ({days_first.iloc[0]!r}) and month first "
                          f"({months_first.iloc[0]!r}) in one column", column=name or None,
                          fix="write every date in one order, ideally ISO: 2025-12-31")
    if expected is not None and len(other := months_first if expected else days_first):
        orders = ("month", "day") if expected else ("day", "month")
        raise SchemaError(f"{other.iloc[0]!r} is written {orders[0]} first; the spec reads the column "
                          f"{orders[1]} first, as its sample showed", column=name or None,
                          fix=f'set "day_first": {str(not expected).lower()} for it in spec.json and pass '
                              f"--feature-spec, or write ISO dates (2025-12-31)")
    return bool(len(days_first))


_ORDER_SAID: set[str] = set()  # the columns whose dates were said to be read month first for want of a sign


def date_order_shown(values: pd.Series) -> bool | None:
    """True where a numeric date among ``values`` shows it is written day first (``31/12/2025``), False
    where one shows month first (``12/31/2025``), None where none shows it (or there is none)."""
    text = pd.Series(values.dropna().unique()).astype(str)
    parts = text.str.extract(NUMERIC_DATE).dropna()
    if (pd.to_numeric(parts[1]) > 12).any():
        return True
    return False if (pd.to_numeric(parts[3]) > 12).any() else None


def month_first(values: pd.Series) -> pd.Series:
    """Day-first numeric dates rewritten month first (``31/12/2025`` -> ``12/31/2025``), as pandas reads."""
    return values.astype(str).str.replace(NUMERIC_DATE, r"\1\4\3\2\3", regex=True).where(values.notna())


def _dates(values: pd.Series) -> pd.Series:
    """Date text as UTC datetimes: in the first value's format (fast), else each value in its own; NaT
    where a value is no date."""
    try:
        with warnings.catch_warnings(action="ignore", category=UserWarning):  # "could not infer format"
            return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError, OverflowError):  # "31/12/2025" beside "31/12/2025 10:00", or no date
        return pd.to_datetime(values.astype(str), utc=True, format="mixed", errors="coerce")


def epoch_seconds(values: pd.Series, name: str = "", *, dates_day_first: bool | None = None,
                  strict: bool = True, warn: bool = True) -> np.ndarray:
    """A timestamp column as float64 seconds since 1970-01-01 UTC, NaN where missing.

    Text may mix dates and epoch seconds (``1760307547``; milli-, micro- and nanoseconds told apart by
    their size), as exports that merge sources write them; digits below ``1e8`` are a date (``20240306``).
    Numbers are epoch seconds, or by the same sizes milli-, micro- or nanoseconds (seconds stay below
    ``1e11`` until the year 5138).

    Args:
      values: Datetimes (naive = UTC), numbers (already seconds) or text of dates and epoch seconds.
      name: The column's name, for an error.
      dates_day_first: Whether date text is written day first; None tells it from ``values``
        (:func:`day_first`).
      strict: A value that is neither a date nor epoch seconds is an error; else it is missing, said in a
        warning (a feature's typo, not a reason to lose the row).
      warn: Whether that warning is logged (not while probing whether a column holds dates at all).

    Returns:
      The seconds.
    """
    if is_plain_number(values):
        return epoch_units(values.to_numpy(dtype="float64", na_value=np.nan))
    if pd.api.types.is_datetime64_any_dtype(values):
        return _seconds_of(values)
    text = values.astype(object).where(values.notna(), None)
    text = text.where(text.map(lambda v: v is not None and str(v).strip() != ""), None)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
    epoch = np.abs(np.nan_to_num(numbers)) >= 1e8  # seconds from 1973, or their milli-, micro-, nanoseconds
    seconds = np.where(epoch, epoch_units(numbers), np.nan)
    dated = text.notna().to_numpy() & ~epoch
    if dated.any():
        dates = text[dated]
        shown = day_first(dates, name, expected=dates_day_first)  # a spec's order is checked, not guessed
        if shown if dates_day_first is None else dates_day_first:
            dates = month_first(dates)
        seconds[dated] = _seconds_of(_dates(dates))
    if (bad := dated & np.isnan(seconds)).any():
        first = text[bad].iloc[0]
        if strict:
            raise SchemaError(f"{first!r} is neither a date nor epoch seconds ({int(bad.sum())} such values)",
                              column=name or None, fix="write ISO dates or seconds since 1970, or do not "
                                                       "declare it a timestamp")
        if warn:
            logger.warning("column '%s': %d value(s) neither dates nor epoch seconds, read as missing "
                           "(first: %r)", name, int(bad.sum()), first)
    return seconds


# Epoch numbers from this size on are nano-, micro-, milliseconds: (size, units a second). Seconds stay
# below MAX_EPOCH_SECONDS until the year 5138. The serving graph reads request times by the same rule.
EPOCH_UNITS = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))
MAX_EPOCH_SECONDS = EPOCH_UNITS[-1][0]


def epoch_units(numbers: np.ndarray) -> np.ndarray:
    """Epoch numbers as seconds, by :data:`EPOCH_UNITS`."""
    size = np.abs(np.nan_to_num(numbers))
    return numbers / np.select([size >= at for at, _ in EPOCH_UNITS], [per for _, per in EPOCH_UNITS], 1.0)


def _seconds_of(values: pd.Series) -> np.ndarray:
    """Datetimes (naive = UTC, NaT missing) as float64 seconds since 1970."""
    if getattr(values.dt, "tz", None) is None:
        values = values.dt.tz_localize("UTC")
    seconds = (values - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype="float64", na_value=np.nan)
