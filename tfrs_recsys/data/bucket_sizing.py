"""Hash buckets sized for the data a sample comes from: a streamed ranker infers its spec from a sample of
at most ``--stream-sample-rows`` rows, and sizes each hashed column for the training rows it will see.
"""
from __future__ import annotations

import dataclasses
import math

import pandas as pd

from tfrs_recsys.data.schema import FeatureColumn, raw_strings


def distinct_estimate(values: pd.Series, rows: int) -> int:
    """Distinct values in ``rows`` rows, extrapolated from a uniform sample by Heaps' law: the growth of
    the distinct count from half the sample to all of it, continued to ``rows`` (at most ``rows``)."""
    codes, uniques = pd.factorize(values)  # one hash pass; codes number the values as they first appear
    whole, half = len(uniques), int(codes[: len(values) // 2].max(initial=-1)) + 1
    if len(values) < 2 or half == 0 or rows <= len(values):
        return int(whole)
    beta = min(max(math.log(max(whole, 1) / half) / math.log(2.0), 0.0), 1.0)
    return int(min(rows, whole * (rows / len(values)) ** beta))


def column_sized(column: FeatureColumn, values: pd.Series, rows: int, *, vocab_max: int,
                 max_buckets: int) -> FeatureColumn:
    """``column`` (inferred from a sample) with its hash buckets sized for ``rows`` rows: twice the
    distinct values :func:`distinct_estimate` expects there, at most ``max_buckets``; others unchanged."""
    if column.encoding != "hash":
        return column
    distinct = distinct_estimate(raw_strings(values, column), rows)
    return dataclasses.replace(column, num_buckets=int(min(max(2 * distinct, 2 * vocab_max), max_buckets)))
