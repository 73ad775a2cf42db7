"""Which columns are outcomes: a label used as a feature leaks the answer, and a model that learned from it
is useless in serving. A column is an outcome by its name (click, purchased, booking_bool, ...) or by its
data: a 0/1 column that is 1 only on rows where a label is 1 is a later step of the same funnel, as is a
column blank on every other row, or whose values other than the most common one occur only on a label's
positive rows (a conversion's value, 0.0 elsewhere), and a number that alone ranks a label almost
perfectly (the seconds a track was played, against its skip) is known only once the outcome is.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from tfrs_recsys.data.schema import SchemaError
from tfrs_recsys.data.tabular import binary_label

# A single number ranking a label this well (or this badly) is an outcome, not an input.
TELLING_AUC = 0.99
# Fewer positives or negatives than this in a sample make a single column's AUC too noisy to judge.
TELLING_MIN_ROWS = 20
# A column's unusual values (all but its most common one) found only on a label's positive rows leak it
# when they are no accident: on at least TELLING_MIN_ROWS rows, and on at least this share of the positives.
UNUSUAL_MIN_SHARE = 0.05
# ... and that chance would put there less often than this (weaker evidence than a 0/1 funnel step's 1e-3).
UNUSUAL_CHANCE = 1e-6
# Outcome names: a column named like this is a label (or leaks one), never a feature.
LABEL_NAMES = frozenset({
    "label", "labels", "target", "y", "click", "clicks", "clicked", "is_click", "click_bool", "conversion",
    "conversions", "converted", "is_conversion", "purchase", "purchases", "purchased", "is_purchase", "buy",
    "bought", "ordered", "booking", "booked", "booking_bool", "is_booking", "gross_bookings_usd", "ctr",
    "cvr", "ctcvr", "rating", "ratings", "like", "liked", "finish", "finished",
})
_LABEL_AFFIX = re.compile(r"^(label|target|true)_|_(label|target)$")


def norm_name(name: str) -> str:
    """A column's name in lower case, runs of characters other than letters and digits (of any script) as
    one ``_``: how name rules read it."""
    return re.sub(r"[\W_]+", "_", str(name).lower()).strip("_")


def looks_like_label(name: str) -> bool:
    """Whether a column's name is an outcome's (click, conversion, purchase, label, booking_bool, ctr, rating,
    true_*, ...): such a column is a label, or leaks one.

    Args:
      name: The column's name.

    Returns:
      Whether it looks like a label.
    """
    n = norm_name(name)
    return n in LABEL_NAMES or bool(_LABEL_AFFIX.search(n))


def leak_error(column: str, labels: list[str], why: str, *, may_be_label: bool = True) -> SchemaError:
    """The error of an outcome ``column`` among the features, with ``why`` it is one (``may_be_label``:
    the fix may be to declare it a label)."""
    label = (f"declare it as a label (--label-columns {','.join(map(str, labels + [column]))}; labels= in "
             f"Python) or " if may_be_label else "")
    return SchemaError(
        f"{why}; a label used as a feature leaks the answer", column=column,
        fix=f"{label}leave it out (--exclude-columns {column}; exclude=); if it truly is an input, name "
            f"it in --context-columns of python -m tfrs_recsys.data.schema and train with that "
            f"--feature-spec (context_columns= in Python)")


def within_label(sample: pd.DataFrame, column: str, labels: list[str]) -> str | None:
    """The label a 0/1 column (or one of yes/no words, as a label is read: ``oui``/``non``) is 1 only within
    (each of its ones on that label's positive rows, which chance does less than once in 1,000 at the
    label's rate), else None."""
    values = sample[column]
    if not pd.api.types.is_numeric_dtype(values) and (words := binary_label(values)) is not values:
        values = pd.to_numeric(words, errors="coerce")
    if not pd.api.types.is_numeric_dtype(values) or not values.dropna().isin((0, 1)).all():
        return None
    return _only_on_positives(sample, values.to_numpy(dtype="float64", na_value=0.0) == 1, labels)


def present_within_label(sample: pd.DataFrame, column: str, labels: list[str]) -> str | None:
    """The label a column has values only within (blank on every other row, as the seconds an article was
    read are blank without its click; chance bounded as in :func:`within_label`), else None."""
    values = sample[column]
    present = values.notna()
    if not pd.api.types.is_numeric_dtype(values):
        present &= values.astype(str).str.strip().ne("")
    present = present.to_numpy(dtype=bool)
    return None if present.all() else _only_on_positives(sample, present, labels)


def unusual_within_label(sample: pd.DataFrame, column: str, labels: list[str]) -> tuple[str, str, int] | None:
    """The label whose positive rows alone hold a column's values other than its most common one (a
    conversion's value, ``0.0`` on every other row), how those values read, and their rows; else None.

    Such a column leaks the label however weakly it ranks it alone (a conversion's value is known only on
    the clicks that converted): refused where those rows are a part of the positives (the most common value
    is found on positives too), :data:`TELLING_MIN_ROWS` or more and at least :data:`UNUSUAL_MIN_SHARE` of
    the label's positives (fewer may be chance, or a rare true signal), and chance (the label's rate to the
    power of those rows) below :data:`UNUSUAL_CHANCE`.

    Args:
      sample: Rows of the table, labels included.
      column: The feature column.
      labels: The label columns (0/1).

    Returns:
      ``(label, how the unusual values read, their rows)``, or None.
    """
    values = sample[column]
    counts = values.value_counts()
    if len(counts) < 2 or any(isinstance(v, (list, tuple, np.ndarray)) for v in values.head(10)):
        return None
    usual = counts.index[0]
    rows = (values.notna() & (values != usual)).to_numpy(dtype=bool)
    label = _only_on_positives(sample, rows, labels)
    positive = None if label is None else (sample[label] == 1).to_numpy(dtype=bool)
    # the usual value on positives too: a part of them (a column that splits rows as the label does, as
    # a fixture's alternating values do, is no value known only with the outcome)
    if positive is None or not positive[~rows].any() or positive.mean() ** rows.sum() >= UNUSUAL_CHANCE or (
            rows.sum() < max(TELLING_MIN_ROWS, UNUSUAL_MIN_SHARE * positive.sum())):
        return None
    plain = isinstance(usual, (int, float, np.number)) and not isinstance(usual, (bool, np.bool_))
    what = "non-zero values" if plain and usual == 0 else f"values other than {usual!r}"
    return label, what, int(rows.sum())


def _only_on_positives(sample: pd.DataFrame, rows: np.ndarray, labels: list[str]) -> str | None:
    for label in (label for label in labels if pd.api.types.is_numeric_dtype(sample[label])):
        positive = sample[label].to_numpy(dtype="float64", na_value=0.0) == 1
        if rows.any() and positive[rows].all() and positive.mean() ** rows.sum() < 1e-3:
            return label
    return None


def tells_label(sample: pd.DataFrame, column: str, labels: list[str]) -> tuple[str, float] | None:
    """The label a numeric column alone ranks with an AUC of at least :data:`TELLING_AUC` (or at most
    ``1 - TELLING_AUC``), and that AUC, else None.

    ``AUC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` over the rows where
    both are present, ties ranked by their mean.
    """
    values = sample[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    for label in (label for label in labels if pd.api.types.is_numeric_dtype(sample[label])):
        rows = values.notna() & sample[label].isin((0, 1))
        positive = (sample[label][rows] == 1).to_numpy()
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if min(n_pos, n_neg) < TELLING_MIN_ROWS:
            continue
        ranks = values[rows].rank().to_numpy()
        auc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        if max(auc, 1 - auc) >= TELLING_AUC:
            return label, float(auc)
    return None
