"""Standardization statistics that a few extreme values cannot take over.

A handful of absurd values (0.1% of bids at 1e9 among bids of 0.1 to 5) would set a numeric column's mean and
standard deviation on their own, and every ordinary value would then standardize to about the same number:
the feature would carry nothing. :func:`robust_stats` clips such values to fences far outside the bulk of
the sample before the statistics are taken, where they would take its scale over; the spec keeps the
fences (``clip_low``, ``clip_high``) and the model clips its inputs to them, in training and serving alike.
"""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)
# The bulk of a sample: its 0.5th to 99.5th percentiles (observed values, never interpolated towards an
# outlier). A value further beyond the bulk than FENCE times its width is an outlier, clipped to the fence:
# a normal column's fences lie 18 standard deviations out, so only values that no spread explains are cut.
BULK_QUANTILES = (0.005, 0.995)
FENCE = 3.0
# Outliers are clipped only where they take the scale over: the standard deviation with them is this many
# times the one with them clipped, or more (0.1% of bids at 1e9: millions of times).
TAKEOVER = 10.0


def robust_stats(name: str, present: np.ndarray) -> tuple[float, float, float | None, float | None]:
    """The mean and standard deviation of a numeric column's finite sampled values, taken with its outliers
    clipped to the fences, and the fences; where no value lies beyond them, or they widen the standard
    deviation less than :data:`TAKEOVER` times, the plain statistics and ``None, None`` (as specs before
    the fences had them). A column whose values were cut is logged by name.

    Args:
      name: The column, in the log line.
      present: Its finite sampled values.

    Returns:
      ``(mean, std, clip_low, clip_high)``.
    """
    low, high = (float(np.quantile(present, q, method=m))
                 for q, m in zip(BULK_QUANTILES, ("higher", "lower")))
    width = high - low
    low, high = low - FENCE * width, high + FENCE * width
    cut = (present < low) | (present > high)
    clipped = np.clip(present, low, high)
    # a bulk of one value (mostly zeros) has no scale to judge outliers by; a heavy tail that widens the
    # scale less than TAKEOVER times is the column's own (left as it always was)
    if width <= 0 or not cut.any() or present.std() < TAKEOVER * clipped.std():
        return float(present.mean()), float(present.std()), None, None
    logger.warning("column '%s': %d of %d sampled values lie outside [%.4g, %.4g] (more than %g times the "
                   "0.5th..99.5th percentile range beyond it): clipped to those bounds, in training and "
                   "serving, so that they do not set the column's scale", name, int(cut.sum()), present.size,
                   low, high, FENCE)
    return float(clipped.mean()), float(clipped.std()), low, high
