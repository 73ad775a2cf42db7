"""The label checks of a ranker's data: 0/1 values, both of them present, and (ESMM) conversions that are
clicks."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from tfrs_recsys.data.errors import DataError, SkipReport
from tfrs_recsys.data.tabular import binary_label, locate

logger = logging.getLogger(__name__)


def check_labels(frame: pd.DataFrame, labels: list[str], *, funnel: bool = False,
                 report: SkipReport | None = None, skippable: bool = True) -> np.ndarray:
    """Check that labels are 0/1, not one value throughout, and, with ``funnel``, that conversions are clicks.

    Args:
      frame: the labeled rows.
      labels: the label columns.
      funnel: check the click -> conversion order too.
      report: skip the bad rows and count them here (``--skip-bad-rows``); None: raise on the first.
      skippable: whether the error may suggest ``--skip-bad-rows`` (not for a streamed sample).

    Returns:
      Which rows to keep (all, unless bad ones are skipped).

    Raises:
      DataError: naming the first bad row (its file and line where known), the values and the fix.
    """
    numbers = {name: pd.to_numeric(binary_label(frame[name]), errors="coerce") for name in labels}
    problems = []
    for name in labels:
        bad = ~numbers[name].isin([0, 1]).to_numpy()
        found = frame[name][bad].map(_shown).value_counts()
        values = ", ".join(f"{n} x {v}" for v, n in found.head(3).items())
        problems.append((bad, name, "label must be 0 or 1, found {value}",
                         f" ({int(bad.sum())} such rows: {values})",
                         "binarize the label (e.g. rating >= 4 -> 1), or pick another label column"))
    if funnel:
        click, conversion = labels
        impossible = ((numbers[conversion] > 0) & (numbers[click] <= 0)).to_numpy()
        order = "pass --label-columns in the order click,conversion, and set click=1 on converted rows"
        problems.append((impossible, conversion, "a conversion without a click",
                         f" ({int(impossible.sum())} such rows; ESMM reads the labels as click, then "
                         f"conversion)", order))
    skip = np.zeros(len(frame), dtype=bool)
    for bad, column, message, count, fix in problems:  # the count in an error, not in each counted row
        for row in np.flatnonzero(bad & ~skip):
            path, line = locate(frame, int(row))
            what = message.format(value=_shown(frame[column].iloc[row]))
            if report is None:
                raise DataError(what + count, path=path, line=line, column=column,
                                fix=f"{fix}, or pass --skip-bad-rows to skip such rows" if skippable else fix)
            report.add(DataError(what, path=path, line=line, column=column),
                       reason=f"column '{column}': {message.split(',')[0]}")
        skip |= bad
    if skip.any():
        report.log()
    check_two_valued({name: numbers[name].to_numpy()[~skip] for name in labels}, funnel, sample=not skippable)
    return ~skip


def _shown(value) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    return "a missing value" if pd.isna(value) or value == "" else repr(value)


def check_two_valued(labels: dict[str, np.ndarray], funnel: bool, *, sample: bool = False) -> None:
    """Refuses a label (0/1 values, bad rows out) of only one value.

    A ranker learns ``p(label = 1 | features)`` from rows of both values: a log of clicks alone has no
    click to predict, and ESMM (``funnel``: click, then conversion) learns pCTR over every impression.
    A ``sample`` of the data (a streamed file's first rows: a file sorted by its label shows one value) is
    warned of, not refused.

    Raises:
      DataError: Naming the label and what to train instead.
    """
    for position, (name, values) in enumerate(labels.items()):
        if len(values) == 0 or 0 < values.sum() < len(values):
            continue
        if values[0] == 0:
            what, fix = "0 on every row: nothing happened to learn", "check --label-columns (1: it happened)"
        elif funnel and position == 0:
            what = "1 on every row: every row is a click, and ESMM learns pCTR over all the impressions"
            fix = (f"add the impressions without a click (click 0), or train deepfm on these rows with "
                   f"--label-columns {list(labels)[1]} (a clicked-only model)")
        else:
            what = "1 on every row: a ranker learns from rows of both values"
            fix = ("add the rows where it did not happen (impressions not clicked, items not bought), or "
                   "train retrieval on them as interactions")
        if not sample:
            raise DataError(f"the label is {what}", column=name, fix=fix)
        logger.warning("column '%s': the label is %s, in the sample read to check the data (unless the files "
                       "are sorted by it: %s)", name, what, fix)
        return
