"""Features of a CTR ranker's click logs: time-decayed item hotness, and interactions (MovieLens)
turned into click logs that carry them.

Item hotness, for events before ``now`` with ages ``a_e = (now - t_e) / 86400`` days and half-life ``h``::

    w_e = 0.5 ** (a_e / h)
    n_i = sum_{e on item i} w_e                       decayed_impressions
    c_i = sum_{e on item i} w_e * click_e             decayed_clicks
    m   = sum_i c_i / sum_i n_i                       global decayed CTR
    s   = alpha + beta                                prior strength (given, or method of moments below)
    smoothed_ctr_i = (c_i + s m) / (n_i + s)          posterior mean under Beta(s m, s (1 - m))
    hotness_i = log1p(n_i) * smoothed_ctr_i           (log1p(n_i) when the log has no clicks)

Method of moments: the impression-weighted variance of the raw CTRs ``c_i / n_i`` around ``m`` is
``v_obs``; binomial noise adds ``K m (1 - m) / N`` to it (K items, N = sum n_i), so the variance of
the true CTRs is ``v = v_obs - K m (1 - m) / N`` and a Beta prior with that mean and variance has
``s = m (1 - m) / v - 1``. ``s`` is kept in ``[1e-3, N]``; when ``v <= 0`` (no spread beyond noise)
``s = N``, which shrinks every item to the global CTR.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data.bundles import InteractionData, LabeledData
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.schema import is_plain_number, scalar_text
from tfrs_recsys.data.splits import SECONDS_PER_DAY

HOTNESS_COLUMNS = ["item_id", "decayed_impressions", "decayed_clicks", "smoothed_ctr", "hotness"]
_MIN_PRIOR_STRENGTH = 1e-3


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        raise DataError("column not in the data", column=column, fix=f"use one of {list(frame.columns)}")
    return frame[column]


def _check_decay(half_life_days: float, prior_strength: float | None) -> None:
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    if prior_strength is not None and not prior_strength > 0:
        raise ValueError(f"prior_strength must be > 0 (or None to fit it), got {prior_strength}")


def _event_arrays(frame: pd.DataFrame, item_col: str, time_col: str,
                  click_col: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    items = _column(frame, item_col).astype(str).to_numpy()
    times = _column(frame, time_col)
    if not pd.api.types.is_numeric_dtype(times) or times.isna().any():
        raise DataError("timestamps must be numbers of seconds with no missing values", column=time_col,
                        fix="convert the column to int64 epoch seconds")
    clicks = None
    if click_col is not None:
        clicks = _column(frame, click_col)
        if not clicks.isin([0, 1]).all():
            bad = clicks[~clicks.isin([0, 1])].iloc[0]
            raise DataError(f"clicks must be 0 or 1, found {bad!r}", column=click_col,
                            fix="binarize the column")
        clicks = clicks.to_numpy(dtype=np.float64)
    return items, times.to_numpy(dtype=np.float64), clicks


def decay_weights(ages_days, half_life_days: float):
    """``0.5 ** (age / h)``: an event's weight ``age`` days before ``now`` (negative ages weigh more than 1,
    the forward decay online counters use between publishes).

    Args:
      ages_days: Ages in days (a number or an array).
      half_life_days: The half-life ``h``.

    Returns:
      The weights, shaped as ``ages_days``.
    """
    return 0.5 ** (np.asarray(ages_days, dtype=np.float64) / half_life_days)


def fit_beta_prior(impressions: np.ndarray, clicks: np.ndarray) -> tuple[float, float]:
    """The Beta prior of the smoothed CTR, ``(s, m)``, fitted by the method of moments (module docstring).

    Args:
      impressions: Decayed impressions per item.
      clicks: Decayed clicks per item.

    Returns:
      ``(prior_strength s, prior_mean m)``; ``(nan, nan)`` when there is no impression.
    """
    impressions, clicks = np.asarray(impressions, np.float64), np.asarray(clicks, np.float64)
    seen = impressions > 0
    total = float(impressions[seen].sum())
    if total == 0.0:
        return float("nan"), float("nan")
    m = float(clicks[seen].sum()) / total
    raw = clicks[seen] / impressions[seen]
    v = float(np.sum(impressions[seen] * (raw - m) ** 2)) / total - seen.sum() * m * (1 - m) / total
    s = m * (1 - m) / v - 1 if v > 0 else total
    return float(np.clip(s, _MIN_PRIOR_STRENGTH, max(total, _MIN_PRIOR_STRENGTH))), m


def smoothed_hotness(impressions, clicks, prior_strength: float, prior_mean: float):
    """``(smoothed_ctr, hotness)`` from decayed counts under the Beta prior ``(s, m)`` (module docstring).

    The online store updates an item's counters per event and calls this with the prior frozen at
    the last publish; :func:`item_hotness` calls it with the prior fitted on the log.

    Args:
      impressions: Decayed impressions (a number or an array).
      clicks: Decayed clicks, shaped as ``impressions``.
      prior_strength: ``s = alpha + beta``.
      prior_mean: ``m = alpha / (alpha + beta)``.

    Returns:
      ``(smoothed_ctr, hotness)``, shaped as ``impressions``.
    """
    impressions = np.asarray(impressions, np.float64)
    smoothed = (np.asarray(clicks, np.float64) + prior_strength * prior_mean) / (impressions + prior_strength)
    return smoothed, np.log1p(impressions) * smoothed


def _smooth(impressions: np.ndarray, clicks: np.ndarray | None,
            prior_strength: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(smoothed_ctr, hotness) per item from decayed sums; see the module docstring."""
    log_impressions = np.log1p(impressions)
    if clicks is None:
        return np.full(len(impressions), np.nan), log_impressions
    fitted, m = fit_beta_prior(impressions, clicks)
    if np.isnan(m):
        return np.full(len(impressions), np.nan), np.zeros(len(impressions))
    return smoothed_hotness(impressions, clicks, fitted if prior_strength is None else prior_strength, m)


def item_hotness(frame: pd.DataFrame, *, item_col: str = "item_id", time_col: str = "timestamp",
                 click_col: str | None = None, half_life_days: float = 7.0, now: float | None = None,
                 prior_strength: float | None = None) -> pd.DataFrame:
    """Time-decayed popularity and smoothed CTR of every item in an impression/click log.

    Returns columns ``item_id`` (text), ``decayed_impressions``, ``decayed_clicks``, ``smoothed_ctr``
    and ``hotness`` (formulas in the module docstring), hottest first. ``now`` defaults to the
    newest timestamp; events after ``now`` are an error (they would leak the future). Without
    ``click_col``, clicks and CTR are NaN and hotness is ``log1p(decayed_impressions)``.

    Args:
      frame: the log, one event per row.
      item_col: the item id column.
      time_col: event time in epoch seconds.
      click_col: 0/1 clicks, optional.
      half_life_days: the decay's half-life ``h``.
      now: the time ages are measured from.
      prior_strength: ``s``; None fits it by the method of moments.

    Returns:
      One row per item, hottest first.
    """
    _check_decay(half_life_days, prior_strength)
    items, times, clicks = _event_arrays(frame, item_col, time_col, click_col)
    if len(items) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "item_id" else float)
                             for c in HOTNESS_COLUMNS})
    now = float(times.max()) if now is None else float(now)
    if times.max() > now:
        raise DataError(f"{int((times > now).sum())} event(s) are later than now={now:g}", column=time_col,
                        fix="keep only events before now; hotness must not see the future")
    weights = decay_weights((now - times) / SECONDS_PER_DAY, half_life_days)
    codes, uniques = pd.factorize(items, sort=True)
    impressions = np.bincount(codes, weights=weights, minlength=len(uniques))
    decayed_clicks = None if clicks is None else np.bincount(codes, weights=weights * clicks,
                                                             minlength=len(uniques))
    out = pd.DataFrame(dict(zip(HOTNESS_COLUMNS, (
        np.asarray(uniques, dtype=object), impressions,
        np.full(len(uniques), np.nan) if decayed_clicks is None else decayed_clicks,
        *_smooth(impressions, decayed_clicks, prior_strength)))))
    return out.sort_values(["hotness", "item_id"], ascending=[False, True], kind="mergesort").reset_index(
        drop=True)


def hot_items(hotness_frame: pd.DataFrame, k: int) -> list[str]:
    """The ``k`` hottest item ids (ties by item id): the cold-start list for users with no history.

    Args:
      hotness_frame: the output of :func:`item_hotness`.
      k: how many ids.

    Returns:
      The ids, hottest first.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    missing = [c for c in ("item_id", "hotness") if c not in hotness_frame.columns]
    if missing:
        raise DataError("not an item_hotness frame", column=missing[0], fix="pass the output of item_hotness")
    ranked = hotness_frame.sort_values(["hotness", "item_id"], ascending=[False, True], kind="mergesort")
    return [str(i) for i in ranked["item_id"].head(k)]


def point_in_time_hotness(events: pd.DataFrame, rows: pd.DataFrame, *, item_col: str = "item_id",
                          time_col: str = "timestamp", click_col: str | None = None,
                          half_life_days: float = 7.0, window_seconds: int = SECONDS_PER_DAY,
                          prior_strength: float | None = None) -> np.ndarray:
    """Hotness of each row's item as a daily feature job would have computed it, without future data.

    Rows fall in windows ``[W, W + window_seconds)`` with ``W = floor(t / window_seconds) * window_seconds``.
    A row's value is ``item_hotness(events[t_e < W], now=W)`` for its item (0 for items with no
    earlier event): events of the row's own window and later are never seen. Computed in one
    pass over the windows by decaying the running sums, ``S(W_k) = S(W_{k-1}) 0.5^((W_k - W_{k-1}) / h)``
    plus the events in ``[W_{k-1}, W_k)``.

    Args:
      events: the log the feature is computed from (as in :func:`item_hotness`).
      rows: the rows to give the feature to (their item and time columns).
      item_col, time_col, click_col, half_life_days, prior_strength: as in :func:`item_hotness`.
      window_seconds: the feature job's period.
      item_columns: the columns of ``data.items`` each row gets (lists ``|``-joined; missing text ``""``).

    Returns:
      float64 ``[len(rows)]`` hotness values.
    """
    _check_decay(half_life_days, prior_strength)
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be >= 1, got {window_seconds}")
    ev_items, ev_times, ev_clicks = _event_arrays(events, item_col, time_col, click_col)
    row_items, row_times, _ = _event_arrays(rows, item_col, time_col, None)
    codes, uniques = pd.factorize(np.concatenate([ev_items, row_items]))
    ev_codes, row_codes = codes[:len(ev_items)], codes[len(ev_items):]
    row_windows = np.floor(row_times / window_seconds) * window_seconds
    starts, row_window_idx = np.unique(row_windows, return_inverse=True)
    # Event e first counts at the first window start strictly after it.
    ev_window_idx = np.searchsorted(starts, ev_times, side="right")
    half_life_s = half_life_days * SECONDS_PER_DAY
    # Row 0 counts impressions, row 1 (when there are clicks) clicks.
    ev_values = np.stack([np.ones(len(ev_items))] + ([] if ev_clicks is None else [ev_clicks]))
    sums = np.zeros((len(ev_values), len(uniques)))
    out = np.zeros(len(row_items))
    for k, start in enumerate(starts):
        if k:
            sums *= 0.5 ** ((start - starts[k - 1]) / half_life_s)
        new = ev_window_idx == k
        w = 0.5 ** ((start - ev_times[new]) / half_life_s)
        for values, total in zip(ev_values, sums):
            total += np.bincount(ev_codes[new], weights=w * values[new], minlength=len(uniques))
        _, hotness = _smooth(sums[0], sums[1] if len(sums) > 1 else None, prior_strength)
        in_window = row_window_idx == k
        out[in_window] = hotness[row_codes[in_window]]
    return out


# The item_hotness half-life of click logs from interactions; serving's (FeatureStore) must be the same.
CLICK_LOG_HALF_LIFE_DAYS = 30.0
# The click log's last columns, in order (the users' features come before them).
_LOG_TAIL = ["hour", "weekday", "item_hotness", "timestamp", "label"]


def movielens_click_logs(data: InteractionData, *, negatives_per_positive: int = 4, seed: int = 42,
                         half_life_days: float = CLICK_LOG_HALF_LIFE_DAYS,
                         window_seconds: int = SECONDS_PER_DAY,
                         item_columns: Sequence[str] = ("genres",)) -> LabeledData:
    """MovieLens ratings as homepage click logs for a CTR ranker.

    Every rating is a click (``label`` 1). For each, ``negatives_per_positive`` items are drawn
    uniformly from the catalog among those the user never rated (in the whole data) and logged at
    the same timestamp with ``label`` 0. Columns: ``user_id``, ``item_id``, the ``item_columns``, every
    column of ``data.users``, ``hour`` and ``weekday`` (UTC), ``item_hotness``, ``timestamp``, ``label``.

    ``item_hotness`` is ``log1p`` of the time-decayed rating count of the item over ratings made
    strictly before the start of the row's (UTC day) window, decayed to that start (see
    :func:`point_in_time_hotness`): a row never sees ratings from its own day or later, and the
    sampled negatives, which are not real events, never enter it.

    Args:
      data: MovieLens-style interactions (with item and, optionally, user tables).
      negatives_per_positive: sampled non-clicks per rating.
      seed: the sampling seed.
      half_life_days: the ``item_hotness`` feature's half-life.
      window_seconds: the feature job's period.
      item_columns: the columns of ``data.items`` each row gets (lists ``|``-joined; missing text ``""``).

    Returns:
      The click log, ordered by time, with ``label`` as its one label.
    """
    if negatives_per_positive < 0:
        raise ValueError(f"negatives_per_positive must be >= 0, got {negatives_per_positive}")
    ratings = data.interactions
    catalog = pd.Index(pd.unique(np.concatenate([data.items["item_id"].astype(str).to_numpy(),
                                                 ratings["item_id"].astype(str).to_numpy()])))
    user_codes, users = pd.factorize(ratings["user_id"].astype(str))
    item_codes = catalog.get_indexer(ratings["item_id"].astype(str))
    seen = np.unique(user_codes.astype(np.int64) * len(catalog) + item_codes)
    full = np.flatnonzero(np.bincount(seen // len(catalog), minlength=len(users)) >= len(catalog))
    if negatives_per_positive and len(full):
        raise DataError(f"user {users[full[0]]!r} rated every item in the catalog, so no negative can be "
                        "sampled", column="user_id", fix="drop such users or use negatives_per_positive=0")
    rng = np.random.default_rng(seed)
    neg_users = np.repeat(user_codes, negatives_per_positive)
    neg_items = rng.integers(0, len(catalog), size=len(neg_users))
    clash = _contains(seen, neg_users.astype(np.int64) * len(catalog) + neg_items)
    while clash.any():  # rejection sampling: expected rounds are small unless a user rated most items
        neg_items[clash] = rng.integers(0, len(catalog), size=int(clash.sum()))
        clash[clash] = _contains(seen, neg_users[clash].astype(np.int64) * len(catalog) + neg_items[clash])
    # Row r of the log comes from rating source[r]: the ratings themselves, then their negatives.
    source = np.r_[np.arange(len(ratings)), np.repeat(np.arange(len(ratings)), negatives_per_positive)]
    frame = pd.DataFrame({"user_id": np.asarray(users, dtype=object)[user_codes[source]],
                          "item_id": np.asarray(catalog, dtype=object)[np.r_[item_codes, neg_items]],
                          "timestamp": ratings["timestamp"].to_numpy(dtype=np.int64)[source],
                          "label": (np.arange(len(source)) < len(ratings)).astype(np.int64)})
    items = data.items.assign(item_id=data.items["item_id"].astype(str)).drop_duplicates("item_id")
    for column in item_columns:  # numbers as they are, text as the rankers read it (lists |-joined)
        values = items.get(column, pd.Series("", index=items.index))
        values = values if is_plain_number(values) else values.map(scalar_text)
        frame[column] = frame["item_id"].map(pd.Series(values.to_numpy(), index=items["item_id"]))
    if data.users is not None:
        clash_cols = sorted(set(data.users.columns) & {"item_id", *item_columns, *_LOG_TAIL})
        if clash_cols:
            raise DataError("a user feature has the name of a click-log column", column=clash_cols[0],
                            fix="rename that column of the users table")
        users_frame = data.users.assign(user_id=data.users["user_id"].astype(str)).drop_duplicates("user_id")
        frame = frame.merge(users_frame, on="user_id", how="left", validate="many_to_one")
    when = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    frame["hour"] = when.dt.hour.astype(np.int64)
    frame["weekday"] = when.dt.weekday.astype(np.int64)
    frame["item_hotness"] = point_in_time_hotness(ratings, frame, half_life_days=half_life_days,
                                                  window_seconds=window_seconds)
    frame = frame.sort_values(["timestamp", "user_id", "label"], ascending=[True, True, False],
                              kind="mergesort").reset_index(drop=True)
    head = ["user_id", "item_id", *item_columns]
    frame = frame[head + [c for c in frame.columns if c not in head + _LOG_TAIL] + _LOG_TAIL]
    return LabeledData(frame, ["label"], name=f"{data.name}-clicks", user_column="user_id",
                       item_column="item_id")


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Membership of ``keys`` in the sorted unique array ``sorted_keys``."""
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys if len(sorted_keys) else np.zeros(len(keys), dtype=bool)

