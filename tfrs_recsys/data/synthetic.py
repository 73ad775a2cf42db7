"""Synthetic data with known ground truth: the product's default data when a user gives none.

Every generator is seeded (``numpy.random.Generator``) and sized by its arguments; ids are text,
numbered from 1. Impression logs for the rankers are made here:

* :func:`synthetic_sessions` -- search sessions with click and conversion from a known
  logistic model, built so that sample selection bias matters (ESMM).
* :func:`synthetic_ctr_logs` -- CTR logs whose true logit has pairwise field interactions
  and an item-hotness dense feature (DeepFM).

Every ground-truth probability is returned in ``LabeledData.truth``, never among the features.
User-item interactions for retrieval come from :mod:`tfrs_recsys.data.synthetic_interactions`,
which shares the helpers below.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_recsys.data.bundles import LabeledData
from tfrs_recsys.data.ctr_features import SECONDS_PER_DAY, point_in_time_hotness
from tfrs_recsys.data.errors import DataError

DEVICES = ("mobile", "desktop", "tablet")
SEGMENTS = ("budget", "business", "family", "luxury")
LOYALTY = ("none", "silver", "gold")
CATEGORIES = ("hostel", "hotel", "apartment", "resort")
START_TIMESTAMP = 1_577_836_800  # 2020-01-01T00:00:00Z
# Share of searches and page views by hour of day (UTC), peaking in the evening.
_HOURLY = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 3.5,
                    4, 3.5, 3.5, 3.5, 4, 4.5, 5, 6, 6.5, 6, 4, 2])
HOUR_WEIGHTS = _HOURLY / _HOURLY.sum()


def require(ok: bool, message: str) -> None:
    """The generators' argument check: a :class:`DataError` (a ``ValueError``) with ``message`` unless ``ok``;
    the message names the argument and what to change, and the command lines print it without a traceback."""
    if not ok:
        raise DataError(message)


# The train command's flags of the generators' arguments, named in their errors.
FLAGS = {"num_users": "--synthetic-users", "num_items": "--synthetic-items", "num_rows": "--synthetic-rows",
         "num_sessions": "--synthetic-sessions", "session_size": "--session-size"}


def named(name: str) -> str:
    """An argument's name in an error, with its train flag where it has one."""
    return f"{name} ({FLAGS[name]})" if name in FLAGS else name


def at_least(minimum: float, **values: float) -> None:
    """Raise ValueError unless every keyword argument is ``>= minimum``; the error names it."""
    for name, value in values.items():
        require(value >= minimum, f"{named(name)} must be >= {minimum}, got {value}")


def within(low: float, high: float, **values: float) -> None:
    """Raise ValueError unless every keyword argument is in ``[low, high]``; the error names it."""
    for name, value in values.items():
        require(low <= value <= high, f"{named(name)} must be in [{low}, {high}], got {value}")


def names(values, index: np.ndarray) -> np.ndarray:
    """``values[index]`` as an object array of str (the frames' text columns)."""
    return np.asarray(values, dtype=object)[index]


def text_ids(n: int) -> np.ndarray:
    """Ids "1" .. "n" as an object array of str."""
    return np.arange(1, n + 1).astype(str).astype(object)


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Probabilities proportional to ``rank ** -exponent`` over ranks 1..n."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept_for_mean(logits: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """``b`` with ``mean(sigmoid(logits + b), weights) == target`` (bisection; the mean is monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.average(_sigmoid(logits + mid), weights=weights) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _times_of_day(rng: np.random.Generator, n: int, num_days: int, start_timestamp: int) -> np.ndarray:
    """Sorted int64 timestamps over ``num_days`` days with the diurnal profile ``HOUR_WEIGHTS``."""
    day = rng.integers(0, num_days, size=n)
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS)
    second = rng.integers(0, 3600, size=n)
    return np.sort(start_timestamp + day * SECONDS_PER_DAY + hour * 3600 + second).astype(np.int64)


def synthetic_sessions(num_sessions: int = 5000, session_size: int = 20, *, seed: int = 42,
                       num_users: int = 1000, num_items: int = 2000, num_destinations: int = 20,
                       ctr: float = 0.05, cvr: float = 0.15, appeal_quality_correlation: float = 0.8,
                       position_bias: float = 0.7, num_days: int = 14,
                       start_timestamp: int = START_TIMESTAMP) -> LabeledData:
    """Hotel-search sessions with clicks and conversions from a known logistic model (ESMM's setting).

    A session is one search: a user, a destination, a device and a time (``hour`` is its UTC
    hour), showing ``session_size`` hotels of that destination at positions 1..N, drawn without
    replacement with display weight ∝ Zipf(0.8) over the destination's hotels and shown in draw
    order (popular hotels tend to be on top).

    Features: user ``user_id``, ``user_segment`` (SEGMENTS), ``user_loyalty`` (LOYALTY); item
    ``item_id``, ``item_category`` (CATEGORIES), ``item_brand`` (a chain of ~10 hotels), ``price``,
    ``stars`` (1-5), ``review_score`` (1-10), ``discount`` (0/1); context ``position``, ``device``,
    ``destination``, ``hour``; plus ``timestamp``. Hidden effects, mostly per brand ``b`` so that
    they can be learned from a brand's impressions::

        appeal_b  = 1.5 (1 - Exp(1))                     a long tail of brands almost nobody clicks
        quality_b = rho std(appeal_b) + sqrt(1 - rho^2) N(0, 1),   rho = appeal_quality_correlation
        appeal_i  = appeal_b + N(0, 0.3^2),  quality_i = quality_b + N(0, 0.3^2)
        u_ctr ~ N(0, 0.6^2),  u_cvr = 0.8 u_ctr + N(0, 0.36^2)   per user

    With ``lp = log(price / median price)`` and ``rs = (review_score - 7) / 1.5``::

        logit_ctr = b_ctr + appeal_i + 0.3 rs + 0.8 discount - price_sens[segment] lp
                    + A[segment, category] + device_ctr[device] - position_bias log(position) + u_ctr
        logit_cvr = b_cvr + 1.2 quality_i + 0.4 rs - 0.8 discount + 0.5 lp
                    + B[segment, category] + device_cvr[device] + loyalty_cvr[loyalty] + u_cvr
        true_ctr = sigmoid(logit_ctr); true_cvr = sigmoid(logit_cvr) = P(conversion | click)
        click ~ Bernoulli(true_ctr); conversion = click * Bernoulli(true_cvr)
        true_ctcvr = true_ctr * true_cvr

    ``price_sens`` = (1.2, 0.4, 0.8, 0.2) by segment; ``device_ctr`` = (0.3, 0, -0.1) and
    ``device_cvr`` = (-0.3, 0.2, 0) for (mobile, desktop, tablet); ``loyalty_cvr`` = (0, 0.2, 0.4);
    A ~ N(0, 0.5^2), B ~ N(0, 0.3^2). ``b_ctr`` is solved so the mean true CTR over impressions
    is ``ctr``, and ``b_cvr`` so the expected CVR of a click, ``sum(true_ctr true_cvr) / sum(true_ctr)``,
    is ``cvr``.

    Sample selection bias: discount, mobile and low price raise CTR but lower CVR, position
    moves only CTR, and the brands nobody clicks (low appeal) also convert worst. The clicked
    rows are an uneven sample of the impression space: a CVR model fitted on them alone has
    next to no rows for a third of the impressions (hotels without a click) and rates those
    hotels average or better, while an entire-space model (ESMM) learns their brand and item
    embeddings from every impression through the CTR task and ranks them low, as they are.

    Args:
      num_sessions: Searches.
      session_size: Hotels shown per search.
      seed: The seed of every draw.
      num_users: Users.
      num_items: Hotels (at least ``session_size`` per destination).
      num_destinations: Destinations.
      ctr: The mean true CTR over impressions.
      cvr: The expected CVR of a click.
      appeal_quality_correlation: ``rho`` above, in [-1, 1].
      position_bias: The CTR logit's slope in log position.
      num_days: Days the searches span.
      start_timestamp: The first day's midnight, in unix seconds.

    Returns:
      The impressions, labels ``click`` and ``conversion``, sessions ``session_id``, and the true
      probabilities in ``truth``.
    """
    at_least(1, num_sessions=num_sessions, session_size=session_size, num_users=num_users,
              num_destinations=num_destinations, num_days=num_days)
    require(num_items >= session_size * num_destinations,
             f"each destination needs at least session_size hotels: num_items ({num_items}) must be >= "
             f"session_size * num_destinations ({session_size} * {num_destinations}); raise num_items or "
             "lower num_destinations")
    require(0 < ctr < 1 and 0 < cvr < 1, f"ctr and cvr must be in (0, 1), got ctr={ctr}, cvr={cvr}")
    within(-1, 1, appeal_quality_correlation=appeal_quality_correlation)
    rng = np.random.default_rng(seed)

    # Users.
    user_segment = rng.choice(len(SEGMENTS), size=num_users, p=[0.4, 0.25, 0.2, 0.15])
    user_loyalty = rng.choice(len(LOYALTY), size=num_users, p=[0.6, 0.3, 0.1])
    user_device = rng.choice(len(DEVICES), size=num_users, p=[0.55, 0.35, 0.10])
    u_ctr = rng.normal(0.0, 0.6, size=num_users)
    u_cvr = 0.8 * u_ctr + 0.6 * rng.normal(0.0, 0.6, size=num_users)

    # Hotels: an equal share per destination, popularity Zipf within each destination.
    item_destination = rng.permutation(np.arange(num_items) % num_destinations)
    category = rng.choice(len(CATEGORIES), size=num_items, p=[0.15, 0.5, 0.2, 0.15])
    stars = np.clip(np.array([1, 3, 3, 4])[category] + rng.integers(-1, 2, size=num_items), 1, 5)
    price = np.round(np.exp(np.log([30, 70, 90, 180])[category] + 0.25 * (stars - 3)
                            + rng.normal(0.0, 0.3, size=num_items)), 2)
    review_score = np.round(np.clip(5.5 + 0.4 * stars + rng.normal(0.0, 1.2, size=num_items), 1, 10), 1)
    discount = (rng.random(num_items) < 0.3).astype(np.int64)
    num_brands = max(1, num_items // 10)
    brand = rng.integers(0, num_brands, size=num_items)
    brand_appeal = 1.5 * (1.0 - rng.exponential(1.0, size=num_brands))
    rho = appeal_quality_correlation
    brand_quality = (rho * (brand_appeal - brand_appeal.mean()) / (brand_appeal.std() + 1e-12)
                     + np.sqrt(1 - rho ** 2) * rng.normal(size=num_brands))
    appeal = brand_appeal[brand] + rng.normal(0.0, 0.3, size=num_items)
    quality = brand_quality[brand] + rng.normal(0.0, 0.3, size=num_items)
    seg_cat_ctr = rng.normal(0.0, 0.5, size=(len(SEGMENTS), len(CATEGORIES)))
    seg_cat_cvr = rng.normal(0.0, 0.3, size=(len(SEGMENTS), len(CATEGORIES)))

    # Sessions: users by activity (Zipf 0.8), destinations by popularity, mostly the user's device.
    activity = zipf_weights(num_users, 0.8)[rng.permutation(num_users)]
    session_user = rng.choice(num_users, size=num_sessions, p=activity)
    session_dest = rng.choice(num_destinations, size=num_sessions, p=zipf_weights(num_destinations, 0.8))
    other_device = rng.choice(len(DEVICES), size=num_sessions)
    session_device = np.where(rng.random(num_sessions) < 0.8, user_device[session_user], other_device)
    session_time = _times_of_day(rng, num_sessions, num_days, start_timestamp)

    # Impressions: per destination, Gumbel top-k = draws without replacement, in draw order.
    shown = np.empty((num_sessions, session_size), dtype=np.int64)
    for dest in range(num_destinations):
        hotels = rng.permutation(np.flatnonzero(item_destination == dest))
        sessions = np.flatnonzero(session_dest == dest)
        keys = np.log(zipf_weights(len(hotels), 0.8)) + rng.gumbel(size=(len(sessions), len(hotels)))
        shown[sessions] = hotels[np.argsort(-keys, axis=1)[:, :session_size]]

    s, i = np.repeat(np.arange(num_sessions), session_size), shown.ravel()  # impression -> session, hotel
    u, dev = session_user[s], session_device[s]
    position = np.tile(np.arange(1, session_size + 1), num_sessions)
    lp, rs = np.log(price[i] / np.median(price)), (review_score[i] - 7.0) / 1.5
    price_sens = np.array([1.2, 0.4, 0.8, 0.2])
    logit_ctr = (appeal[i] + 0.3 * rs + 0.8 * discount[i] - price_sens[user_segment[u]] * lp
                 + seg_cat_ctr[user_segment[u], category[i]] + np.array([0.3, 0.0, -0.1])[dev]
                 - position_bias * np.log(position) + u_ctr[u])
    logit_cvr = (1.2 * quality[i] + 0.4 * rs - 0.8 * discount[i] + 0.5 * lp
                 + seg_cat_cvr[user_segment[u], category[i]] + np.array([-0.3, 0.2, 0.0])[dev]
                 + np.array([0.0, 0.2, 0.4])[user_loyalty[u]] + u_cvr[u])
    true_ctr = _sigmoid(logit_ctr + _intercept_for_mean(logit_ctr, ctr))
    true_cvr = _sigmoid(logit_cvr + _intercept_for_mean(logit_cvr, cvr, weights=true_ctr))
    click = (rng.random(len(s)) < true_ctr).astype(np.int64)
    conversion = click * (rng.random(len(s)) < true_cvr).astype(np.int64)

    hour = (session_time % SECONDS_PER_DAY) // 3600
    frame = pd.DataFrame({
        "session_id": text_ids(num_sessions)[s], "timestamp": session_time[s],
        "user_id": text_ids(num_users)[u], "user_segment": names(SEGMENTS, user_segment[u]),
        "user_loyalty": names(LOYALTY, user_loyalty[u]),
        "item_id": text_ids(num_items)[i], "item_category": names(CATEGORIES, category[i]),
        "item_brand": names([f"brand_{k + 1:03d}" for k in range(num_brands)], brand[i]),
        "price": price[i], "stars": stars[i].astype(np.int64), "review_score": review_score[i],
        "discount": discount[i], "position": position.astype(np.int64), "device": names(DEVICES, dev),
        "destination": names([f"city_{k + 1:02d}" for k in range(num_destinations)], session_dest[s]),
        "hour": hour[s].astype(np.int64), "click": click, "conversion": conversion})
    truth = pd.DataFrame({"true_ctr": true_ctr, "true_cvr": true_cvr, "true_ctcvr": true_ctr * true_cvr})
    return LabeledData(frame, ["click", "conversion"], name="synthetic-sessions", session_column="session_id",
                       user_column="user_id", item_column="item_id", truth=truth)


def synthetic_ctr_logs(num_rows: int = 50000, *, seed: int = 42, num_users: int = 2000, num_items: int = 1000,
                       num_segments: int = 8, num_categories: int = 20, num_tags: int = 40, ctr: float = 0.1,
                       interaction_scale: float = 1.0, num_days: int = 14, half_life_days: float = 3.0,
                       start_timestamp: int = START_TIMESTAMP) -> LabeledData:
    """Homepage CTR logs whose true logit has pairwise field interactions (DeepFM's setting).

    Fields: sparse ``user_id``, ``user_segment`` (``seg_k``), ``device`` (DEVICES), ``hour`` (UTC),
    ``item_id``, ``item_category`` (``cat_k``); multi-valued ``item_tags`` (1-4 of ``tag_k``,
    ``|``-joined); dense ``user_age``, ``price`` and ``item_hotness``; plus ``timestamp``. Rows are
    time-ordered over ``num_days`` days; users by activity (Zipf 0.8), items by exposure
    (Zipf 1.0, more exposure for better items). With ``s = interaction_scale``::

        logit = b + q_i + u_u + s * (A[segment, category] + D[device, category]
                                     + mean_{t in tags_i} T[segment, t] + E[category] * age_std)
                - price_sens[segment] * log(price / median price)
        q_i ~ N(0, 0.6^2), u_u ~ N(0, 0.3^2), A ~ N(0, 1), D ~ N(0, 0.5^2), T ~ N(0, 0.8^2),
        E ~ N(0, 0.4^2), price_sens[segment] ~ U(0.1, 1.0), age_std = (user_age - 40) / 12
        true_ctr = sigmoid(logit), label ~ Bernoulli(true_ctr)

    ``b`` is solved so the mean true CTR is ``ctr``. ``item_hotness`` is
    :func:`~tfrs_recsys.data.ctr_features.point_in_time_hotness` of this log's own earlier days
    (labels as clicks, half-life ``half_life_days``): a proxy of the hidden ``q_i`` that never
    sees the row's own day.

    Args:
      num_rows: Impressions.
      seed: The seed of every draw.
      num_users: Users.
      num_items: Items.
      num_segments: User segments.
      num_categories: Item categories.
      num_tags: Item tags.
      ctr: The mean true CTR.
      interaction_scale: ``s`` above: the weight of the field interactions.
      num_days: Days the log spans.
      half_life_days: The half-life of ``item_hotness``.
      start_timestamp: The first day's midnight, in unix seconds.

    Returns:
      The impressions, label ``label``, and the true CTR in ``truth``.
    """
    at_least(1, num_rows=num_rows, num_users=num_users, num_items=num_items, num_segments=num_segments,
              num_categories=num_categories, num_tags=num_tags, num_days=num_days)
    require(0 < ctr < 1, f"ctr must be in (0, 1), got {ctr}")
    rng = np.random.default_rng(seed)

    segment = rng.integers(0, num_segments, size=num_users)
    age = np.clip(np.round(rng.normal(38.0, 12.0, size=num_users)), 16, 80).astype(np.int64)
    user_device = rng.choice(len(DEVICES), size=num_users, p=[0.6, 0.3, 0.1])
    user_bias = rng.normal(0.0, 0.3, size=num_users)
    category = rng.integers(0, num_categories, size=num_items)
    num_item_tags = rng.integers(1, min(4, num_tags) + 1, size=num_items)
    tags = [np.sort(rng.choice(num_tags, size=k, replace=False)) for k in num_item_tags]
    quality = rng.normal(0.0, 0.6, size=num_items)
    log_price = rng.normal(3.5, 0.2, size=num_categories)[category] + rng.normal(0, 0.4, num_items)
    price = np.round(np.exp(log_price), 2)
    cross_seg_cat = rng.normal(0.0, 1.0, size=(num_segments, num_categories))
    cross_dev_cat = rng.normal(0.0, 0.5, size=(len(DEVICES), num_categories))
    cross_seg_tag = rng.normal(0.0, 0.8, size=(num_segments, num_tags))
    age_by_cat = rng.normal(0.0, 0.4, size=num_categories)
    price_sens = rng.uniform(0.1, 1.0, size=num_segments)

    u = rng.choice(num_users, size=num_rows, p=zipf_weights(num_users, 0.8)[rng.permutation(num_users)])
    # Better items get more exposure: exposure rank follows quality plus noise.
    exposure_rank = np.argsort(np.argsort(-(quality + rng.normal(0.0, 0.6, size=num_items))))
    i = rng.choice(num_items, size=num_rows, p=zipf_weights(num_items, 1.0)[exposure_rank])
    dev = np.where(rng.random(num_rows) < 0.85, user_device[u], rng.choice(len(DEVICES), size=num_rows))
    timestamp = _times_of_day(rng, num_rows, num_days, start_timestamp)

    seg, cat = segment[u], category[i]
    # The mean over an item's tags of T[segment, tag], as a [segments, items] table.
    tag_effect = np.stack([cross_seg_tag[:, ts].mean(axis=1) for ts in tags], axis=1)[seg, i]
    logit = (quality[i] + user_bias[u]
             + interaction_scale * (cross_seg_cat[seg, cat] + cross_dev_cat[dev, cat] + tag_effect
                                    + age_by_cat[cat] * (age[u] - 40.0) / 12.0)
             - price_sens[seg] * np.log(price[i] / np.median(price)))
    true_ctr = _sigmoid(logit + _intercept_for_mean(logit, ctr))
    label = (rng.random(num_rows) < true_ctr).astype(np.int64)

    tag_text = np.array(["|".join(f"tag_{t:02d}" for t in ts) for ts in tags], dtype=object)
    frame = pd.DataFrame({
        "timestamp": timestamp, "user_id": text_ids(num_users)[u],
        "user_segment": names([f"seg_{k}" for k in range(num_segments)], seg),
        "user_age": age[u].astype(np.float64), "device": names(DEVICES, dev),
        "hour": ((timestamp % SECONDS_PER_DAY) // 3600).astype(np.int64), "item_id": text_ids(num_items)[i],
        "item_category": names([f"cat_{k:02d}" for k in range(num_categories)], cat),
        "item_tags": tag_text[i], "price": price[i], "label": label})
    frame.insert(len(frame.columns) - 1, "item_hotness",
                 point_in_time_hotness(frame, frame, click_col="label", half_life_days=half_life_days))
    return LabeledData(frame, ["label"], name="synthetic-ctr-logs", user_column="user_id",
                       item_column="item_id", truth=pd.DataFrame({"true_ctr": true_ctr}))
