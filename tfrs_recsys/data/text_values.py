"""Values written as text that are times or numbers: which column names say time or id, and the dates
and numbers written for people (``14.03.2016``, ``€12,50``) that schema inference, the ``--items`` /
``--users`` tables and the feature store read as numbers.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tfrs_recsys.data.errors import SchemaError
from tfrs_recsys.data.label_leaks import norm_name
from tfrs_recsys.data.number_text import formatted_numbers
from tfrs_recsys.data.tabular import MOSTLY_NUMERIC
from tfrs_recsys.data.times import day_first, epoch_seconds, is_plain_number

# names of times in logs and catalogs; a column is a time only if its values are dates or epoch seconds too
# English names, then the words for time and date of exports in German, Spanish, French, Dutch, Swedish,
# Japanese (a name ending in 日, "day": 登録日), Chinese and Korean.
TIME_NAME = re.compile(r"time|date|^ts$|_ts$|^ts_|_at$|epoch|unix|(^|_)(signup|signed_up|created|joined"
                       r"|registered|opened|published|updated|modified|birthday|since"
                       r"|erstellt|angelegt|geaendert|geändert|aktualisiert|creado|cree|créé|creato)(_|$)"
                       r"|zeit|datum|fecha|hora|heure|horodatage|tijd|tidpunkt|tidsstempel"
                       r"|日時|日付|時刻|日$|日期|时间|時間|날짜|일시")
ID_NAME = re.compile(r"(^|_|[^\x00-\x7f])ids?$")  # 会員id: a word of another script, then id
# A value that may be a date: digits joined by - / . : (2024-03-06, 06/03/2024, 10:51), a month name's
# date in English (Sep 13, 2009; 13 September 2009) or Amazon reviews' "09 13, 2009" (month day, year).
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t|tember)?"
          r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
DATE_LIKE = re.compile(rf"\d[-/.:]\d|^\s*(?:\d{{1,2}} \d{{1,2}}, \d{{4}}|{_MONTH} {_DAY},? \d{{4}}"
                       rf"|{_DAY} {_MONTH},? \d{{4}})\b", re.IGNORECASE)


def id_named(name: str) -> bool:
    """Whether a column's name says it holds ids (``*_id``, ``userId``, ``ID``)."""
    return bool(ID_NAME.search(norm_name(name))) or bool(re.search(r"[a-z]Id$|ID$", str(name)))


# A sentence's end before the next one (after a word of 3+ lowercase letters: not "Dr. Who", "St. James",
# "J. R. R. Tolkien", "Vol. 2"), or a line break.
_SENTENCE = re.compile(r"[a-z]{3}[.!?]\s+\w|\n")


# What joins the values of a multi-valued text, in the order they are tried; " > " joins a category
# path's levels (a shop's breadcrumb: "Home > Kitchen > Knives"), each level then a value.
PATH = " > "
SEPARATORS = ("|", ";", ",", PATH)


def free_text(counts: pd.Series) -> bool:
    """Whether a text column is prose (reviews, descriptions), given its ``value_counts()``: mostly values
    seen once (categories repeat), of which (the first 1,000) a tenth are five words or more running past
    one sentence or line (a long title is not prose), and no separator splitting them into short recurring
    pieces (``Free to Play, Open World`` is a list). A category per text would be learned by heart, and
    prose's commas are not a list's."""
    counts = counts[pd.Series(counts.index, dtype=object).astype(str).str.strip().to_numpy() != ""]
    if counts.empty or len(counts) < 0.5 * counts.sum():
        return False
    text = pd.Series(counts.index[:1000], dtype=object).astype(str)
    words = text.str.split().str.len()
    if (text.str.contains(_SENTENCE) & (words >= 5)).mean() < 0.1:
        return False
    if (separator := detect_separator(counts)) is None:
        return True
    return bool(text.str.split(separator, regex=False).explode().str.split().str.len().median() > 3)


def detect_separator(counts: pd.Series) -> str | None:
    """The separator of multi-valued text (given as its ``value_counts()``): one that splits some values
    into parts that recur.

    Genres ("Comedy|Drama") split into few distinct parts shared across rows; a title with a
    comma splits into parts as unique as the titles, so it stays single-valued.
    """
    counts = counts[counts.index != ""]  # each distinct value once, weighed by its rows
    if counts.empty:
        return None
    values, rows = pd.Series(counts.index, dtype=object), counts.to_numpy()
    searchable = pa.array(values.to_numpy(), type=pa.string())
    best, best_share = None, 0.0
    for sep in SEPARATORS:
        has = pc.match_substring(searchable, sep).to_numpy(zero_copy_only=False)
        with_sep, share = int(rows[has].sum()), float(rows[has].sum() / rows.sum())
        if with_sep < 2 or share < 0.01:
            continue
        split = values.str.split(sep, regex=False)
        parts = split.explode().str.strip()
        parts = parts[parts != ""]
        # a list's values recur across rows; a path's levels nest, so its roots recur (fewer than its paths)
        recurring = (parts.nunique() <= len(values) if sep != PATH else
                     split[has].str[0].str.strip().nunique() * 2 <= int(has.sum()))
        if recurring and share > best_share:
            best, best_share = sep, share
    return best


def all_dates(distinct: pd.Index, name: str) -> bool:
    """Whether a text column's distinct values are (mostly) dates, though its name says no time: inference
    then hints ``--column-types NAME=timestamp``."""
    head = pd.Series(distinct[:101], dtype=object).astype(str)  # most text columns stop at their first values
    if not head[head != ""].str.contains(DATE_LIKE).all() or (head == "").all():
        return False
    distinct = pd.Series(distinct[distinct != ""], dtype=object)
    try:
        return date_text_seconds(distinct, name) is not None
    except SchemaError:  # dates in both orders: not what a hint can fix
        return False


def date_text_seconds(values: pd.Series, name: str) -> tuple[np.ndarray, bool] | None:
    """The epoch seconds of text whose values are dates, some maybe epoch seconds (missing or empty aside;
    a few typos among them are missing, said in a warning), and whether its dates are written day first;
    None if it is not mostly dates. Read as the model's inputs are
    (:func:`~tfrs_recsys.data.times.epoch_seconds`)."""
    text = values.where(values.notna(), "").astype(str)
    present = text[text != ""]
    dated = present.str.contains(DATE_LIKE)
    if present.empty or not dated.any():  # digits alone are numbers or codes
        return None
    epochs = pd.to_numeric(present, errors="coerce").abs() >= 1e8
    if (dated | epochs).mean() < MOSTLY_NUMERIC:
        return None
    order = day_first(present[dated], name)  # dates in both orders are an error, not text
    try:
        return epoch_seconds(text.where(text != ""), name, dates_day_first=order), order
    except SchemaError:  # a few values neither dates nor seconds: missing, if they are few (said then)
        seconds = epoch_seconds(text.where(text != ""), name, dates_day_first=order, strict=False, warn=False)
        if np.isfinite(seconds[(text != "").to_numpy()]).mean() < MOSTLY_NUMERIC:
            return None
        return epoch_seconds(text.where(text != ""), name, dates_day_first=order, strict=False), order


def text_numbers(name: str, values: pd.Series, *, timestamp: bool = False) -> np.ndarray | None:
    """A column's values as numbers where inference reads them from text, else None: the epoch seconds of
    its dates (:func:`text_times`) or numbers written for people (``€12,50``): how a feature store holds
    them for a ranker's float inputs."""
    if (seconds := text_times(name, values, timestamp=timestamp)) is not None:
        return seconds
    if is_plain_number(values) or id_named(name):
        return None
    read = formatted_numbers(values)
    return None if read is None else read[0]


def text_times(name: str, values: pd.Series, *, timestamp: bool = False) -> np.ndarray | None:
    """A column's epoch seconds where it holds times: datetimes, or date text under a time-like name or
    declared a ``timestamp`` (in the order its dates show); else None."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return epoch_seconds(values, name)
    if is_plain_number(values) or not (timestamp or TIME_NAME.search(norm_name(name))):
        return None
    dates = date_text_seconds(values, name)
    return None if dates is None else dates[0]
