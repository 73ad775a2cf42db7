"""Synthetic data with known ground truth: the product's default data when a user gives none.

Four generators, each seeded (``numpy.random.Generator``) and sized by its arguments:

* :func:`synthetic_histories` -- user histories from drifting latent tastes (retrieval).
* :func:`synthetic_ratings` -- explicit ratings of users and items with features, from latent
  tastes those features explain (the feature two-tower with a pairwise loss).
* :func:`synthetic_sessions` -- search sessions with click and conversion from a known
  logistic model, built so that sample selection bias matters (ESMM).
* :func:`synthetic_ctr_logs` -- CTR logs whose true logit has pairwise field interactions
  and an item-hotness dense feature (DeepFM).

Ids are text, numbered from 1. Every ground-truth probability is returned in
``LabeledData.truth``, never among the features.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_recsys.data.bundles import InteractionData, LabeledData
from tfrs_recsys.data.ctr_features import SECONDS_PER_DAY, point_in_time_hotness

GENRES = (
    "Drama", "Comedy", "Action", "Thriller", "Romance", "Adventure", "Crime", "Sci-Fi", "Horror",
    "Children's", "Fantasy", "Mystery", "Documentary", "Animation", "Musical", "War", "Western", "Film-Noir",
)
DEVICES = ("mobile", "desktop", "tablet")
SEGMENTS = ("budget", "business", "family", "luxury")
LOYALTY = ("none", "silver", "gold")
CATEGORIES = ("hostel", "hotel", "apartment", "resort")
START_TIMESTAMP = 1_577_836_800  # 2020-01-01T00:00:00Z
# Share of searches and page views by hour of day (UTC), peaking in the evening.
_HOURLY = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 3.5, 4, 3.5, 3.5, 3.5, 4, 4.5, 5, 6, 6.5, 6, 4, 2])
HOUR_WEIGHTS = _HOURLY / _HOURLY.sum()


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _ids(n: int) -> np.ndarray:
    return np.arange(1, n + 1).astype(str).astype(object)


def _zipf(n: int, exponent: float) -> np.ndarray:
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


def synthetic_histories(num_users: int = 2000, num_items: int = 500, *, seed: int = 42, num_genres: int = 12,
                        min_history: int = 5, max_history: int = 60, taste_dim: int = 8, drift: float = 0.15,
                        popularity_exponent: float = 1.1, taste_strength: float = 12.0, genre_weight: float = 1.0,
                        start_timestamp: int = START_TIMESTAMP, start_spread_days: int = 180,
                        mean_gap_seconds: float = 6 * 3600.0) -> InteractionData:
    """User histories from drifting latent tastes over items with genres and power-law popularity.

    Generating model (``d = taste_dim``)::

        genre vectors     g_k ~ N(0, I/d)
        item i            genres G_i: 1-3 of the first ``num_genres`` of GENRES (common genres likelier)
                          v_i = normalize(genre_weight * mean_{k in G_i} g_k + e_i),  e_i ~ N(0, I/d)
        popularity        p_i ∝ rank_i ** -popularity_exponent  (rank_i a random permutation of 1..num_items)
        user taste        z_0 ~ N(0, I/d),  z_t = sqrt(1 - drift^2) z_{t-1} + drift * n_t,  n_t ~ N(0, I/d)
        next item         x_t ~ softmax_i(taste_strength * v_i . z_t + log p_i) over items not yet in the history
        rating            clip(round(3.6 + 1.1 * standardized(v_x . z_t) + N(0, 0.5^2)), 1, 5)
        timestamps        user start ~ U(0, start_spread_days) after start_timestamp, then gaps 1 + Exp(mean_gap_seconds)

    The taste drifts slowly (step correlation ``sqrt(1 - drift^2)``), so recent history predicts
    the next item best. History lengths are log-uniform in ``[min_history, max_history]``.
    There are no user features (``users`` is None) and the latent vectors are not returned.
    """
    _require(num_users >= 1, f"num_users must be >= 1, got {num_users}")
    _require(1 <= min_history <= max_history,
             f"need 1 <= min_history <= max_history, got min_history={min_history}, max_history={max_history}")
    _require(max_history <= num_items, f"max_history ({max_history}) cannot exceed num_items ({num_items}): "
                                       "a history never repeats an item; raise num_items or lower max_history")
    _require(1 <= num_genres <= len(GENRES), f"num_genres must be in 1..{len(GENRES)}, got {num_genres}")
    _require(taste_dim >= 1, f"taste_dim must be >= 1, got {taste_dim}")
    _require(0.0 <= drift <= 1.0, f"drift must be in [0, 1], got {drift}")
    _require(popularity_exponent >= 0, f"popularity_exponent must be >= 0, got {popularity_exponent}")
    _require(mean_gap_seconds >= 0 and start_spread_days >= 0, "mean_gap_seconds and start_spread_days must be >= 0")
    rng = np.random.default_rng(seed)
    d = taste_dim

    genre_vectors = rng.normal(0.0, 1.0 / np.sqrt(d), size=(num_genres, d))
    genre_share = _zipf(num_genres, 0.7)
    num_item_genres = rng.choice([1, 2, 3], size=num_items, p=[0.5, 0.35, 0.15])
    item_genres = [rng.choice(num_genres, size=min(k, num_genres), replace=False, p=genre_share)
                   for k in num_item_genres]
    centroids = np.stack([genre_vectors[g].mean(axis=0) for g in item_genres])
    item_vectors = genre_weight * centroids + rng.normal(0.0, 1.0 / np.sqrt(d), size=(num_items, d))
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    log_popularity = np.log(_zipf(num_items, popularity_exponent)[rng.permutation(num_items)])

    lengths = np.floor(np.exp(rng.uniform(np.log(min_history), np.log(max_history + 1), size=num_users)))
    lengths = np.clip(lengths.astype(np.int64), min_history, max_history)
    keep = np.sqrt(1.0 - drift ** 2)
    chosen = np.empty((num_users, max_history), dtype=np.int64)
    affinity = np.empty((num_users, max_history))
    # Users are simulated longest history first, so the users still active at step t are a prefix.
    order = np.argsort(-lengths, kind="stable")
    chunk = max(1, 2_000_000 // num_items)  # bounds the [users, items] score matrix in memory
    for lo in range(0, num_users, chunk):
        users = order[lo:lo + chunk]
        taste = rng.normal(0.0, 1.0 / np.sqrt(d), size=(len(users), d))
        consumed = np.zeros((len(users), num_items), dtype=bool)
        for t in range(int(lengths[users[0]])):
            active = int(np.sum(lengths[users] > t))
            taste = taste[:active]
            if t:
                taste = keep * taste + drift * rng.normal(0.0, 1.0 / np.sqrt(d), size=taste.shape)
            match = taste @ item_vectors.T
            # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
            scores = taste_strength * match + log_popularity + rng.gumbel(size=match.shape)
            scores[consumed[:active]] = -np.inf
            pick = np.argmax(scores, axis=1)
            rows = np.arange(active)
            consumed[rows, pick] = True
            chosen[users[:active], t] = pick
            affinity[users[:active], t] = match[rows, pick]

    mask = np.arange(max_history)[None, :] < lengths[:, None]
    user_index = np.repeat(np.arange(num_users), lengths)
    items_flat = chosen[mask]
    aff = affinity[mask]
    z = (aff - aff.mean()) / (aff.std() + 1e-12)
    ratings = np.clip(np.round(3.6 + 1.1 * z + rng.normal(0.0, 0.5, size=len(z))), 1, 5)
    gaps = 1 + np.floor(rng.exponential(mean_gap_seconds, size=len(z))).astype(np.int64)
    starts = start_timestamp + rng.integers(0, start_spread_days * SECONDS_PER_DAY + 1, size=num_users)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    cumulative = np.cumsum(gaps)
    timestamps = starts[user_index] + cumulative - cumulative[first][user_index]

    item_ids = _ids(num_items)
    interactions = pd.DataFrame({
        "user_id": _ids(num_users)[user_index],
        "item_id": item_ids[items_flat],
        "rating": ratings.astype(np.float64),
        "timestamp": timestamps.astype(np.int64),
    })
    genre_names = [[GENRES[k] for k in g] for g in item_genres]
    items = pd.DataFrame({
        "item_id": item_ids,
        "title": [f"Item {i} ({', '.join(g)})" for i, g in zip(item_ids, genre_names)],
        "genres": genre_names,
    })
    return InteractionData(interactions, items, None, name="synthetic-histories")


AGE_BUCKETS = ("under-18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
GENDERS = ("F", "M")
OCCUPATIONS = ("student", "engineer", "artist", "educator", "healthcare", "sales", "retired", "other")
PRICE_BUCKETS = ("budget", "standard", "premium", "luxury")


def synthetic_ratings(num_users: int = 2000, num_items: int = 500, *, seed: int = 42, num_genres: int = 8,
                      taste_dim: int = 8, min_ratings: int = 20, max_ratings: int = 60, feature_share: float = 0.8,
                      taste_weight: float = 1.2, noise: float = 0.6, selection: float = 0.5,
                      popularity_exponent: float = 0.8, start_timestamp: int = START_TIMESTAMP,
                      num_days: int = 365) -> InteractionData:
    """Explicit 1-5 ratings from latent tastes that user and item features mostly explain (the two-tower lab's data).

    Users have ``age_bucket`` (AGE_BUCKETS), ``gender`` (GENDERS) and ``occupation`` (OCCUPATIONS); items a
    ``genre`` (the first ``num_genres`` of GENRES) and a ``price_bucket`` (PRICE_BUCKETS). With
    ``d = taste_dim``, ``s = feature_share`` and every table and noise vector drawn from ``N(0, I/d)``::

        user taste        t_u = sqrt(s) * (A[age_u] + B[gender_u] + C[occupation_u]) / sqrt(3) + sqrt(1 - s) * n_u
        item attributes   v_i = sqrt(s) * (G[genre_i] + P[price_i]) / sqrt(2) + sqrt(1 - s) * e_i
        affinity          z_ui = standardized(t_u . v_i)      (mean 0, variance 1 over all user-item pairs)
        rated items       k_u ~ U{min_ratings..max_ratings} items without replacement, drawn with weights
                          p_i * exp(selection * z_ui), p_i ∝ rank_i ** -popularity_exponent
        rating            clip(round(3.0 + taste_weight * z_ui + q_i + b_u + noise * N(0, 1)), 1, 5)
                          q_i ~ N(0, 0.3^2) item quality, b_u ~ N(0, 0.3^2) user leniency

    A user likes an item when the rating is >= 4 (about half of the ratings). Users also rate items they
    end up disliking, so each user has liked and disliked items; ``selection`` > 0 makes people
    rate what suits them more often, as real users do. Timestamps are uniform over ``num_days``
    days, sorted per user. ``feature_share`` is the part of every taste the features explain, which
    bounds what a features-only user tower can learn.
    """
    _require(num_users >= 1, f"num_users must be >= 1, got {num_users}")
    _require(1 <= min_ratings <= max_ratings,
             f"need 1 <= min_ratings <= max_ratings, got min_ratings={min_ratings}, max_ratings={max_ratings}")
    _require(max_ratings <= num_items, f"max_ratings ({max_ratings}) cannot exceed num_items ({num_items}): a user "
                                       "rates an item once; raise num_items or lower max_ratings")
    _require(1 <= num_genres <= len(GENRES), f"num_genres must be in 1..{len(GENRES)}, got {num_genres}")
    _require(taste_dim >= 1, f"taste_dim must be >= 1, got {taste_dim}")
    _require(0.0 <= feature_share <= 1.0, f"feature_share must be in [0, 1], got {feature_share}")
    _require(noise >= 0 and num_days >= 1, "noise must be >= 0 and num_days >= 1")
    rng = np.random.default_rng(seed)
    d = taste_dim

    def table(n: int) -> np.ndarray:
        return rng.normal(0.0, 1.0 / np.sqrt(d), size=(n, d))

    age = rng.choice(len(AGE_BUCKETS), size=num_users, p=[0.04, 0.18, 0.35, 0.2, 0.08, 0.08, 0.07])
    gender = rng.choice(len(GENDERS), size=num_users, p=[0.4, 0.6])
    occupation = rng.integers(0, len(OCCUPATIONS), size=num_users)
    genre = rng.choice(num_genres, size=num_items, p=_zipf(num_genres, 0.5))
    price = rng.choice(len(PRICE_BUCKETS), size=num_items, p=[0.3, 0.4, 0.2, 0.1])
    share = np.sqrt(feature_share)
    taste = (share * (table(len(AGE_BUCKETS))[age] + table(len(GENDERS))[gender]
                      + table(len(OCCUPATIONS))[occupation]) / np.sqrt(3)
             + np.sqrt(1.0 - feature_share) * table(num_users))
    attributes = (share * (table(num_genres)[genre] + table(len(PRICE_BUCKETS))[price]) / np.sqrt(2)
                  + np.sqrt(1.0 - feature_share) * table(num_items))
    quality = rng.normal(0.0, 0.3, size=num_items)
    leniency = rng.normal(0.0, 0.3, size=num_users)
    log_popularity = np.log(_zipf(num_items, popularity_exponent)[rng.permutation(num_items)])
    # Exact moments of t_u . v_i over all pairs: mean = mean(t) . mean(v), E[(t.v)^2] = sum(S_t * S_v).
    mean = float(taste.mean(axis=0) @ attributes.mean(axis=0))
    second = float(np.sum((taste.T @ taste / num_users) * (attributes.T @ attributes / num_items)))
    std = np.sqrt(max(second - mean ** 2, 1e-12))

    counts = rng.integers(min_ratings, max_ratings + 1, size=num_users)
    users, items, affinity = [], [], []
    chunk = max(1, 2_000_000 // num_items)  # bounds the [users, items] matrix in memory
    for lo in range(0, num_users, chunk):
        z = (taste[lo:lo + chunk] @ attributes.T - mean) / std
        # Gumbel top-k: the k largest of (log weight + Gumbel noise) are a draw without replacement.
        keys = log_popularity + selection * z + rng.gumbel(size=z.shape)
        order = np.argsort(-keys, axis=1)
        for row in range(len(z)):
            picked = order[row, :counts[lo + row]]
            users.append(np.full(len(picked), lo + row))
            items.append(picked)
            affinity.append(z[row, picked])
    u, i, z = np.concatenate(users), np.concatenate(items), np.concatenate(affinity)
    ratings = np.clip(np.round(3.0 + taste_weight * z + quality[i] + leniency[u] + noise * rng.normal(size=len(z))),
                      1, 5)
    timestamps = start_timestamp + rng.integers(0, num_days * SECONDS_PER_DAY, size=len(z))
    order = np.lexsort((timestamps, u))
    u, i, ratings, timestamps = u[order], i[order], ratings[order], timestamps[order]

    user_ids, item_ids = _ids(num_users), _ids(num_items)
    interactions = pd.DataFrame({"user_id": user_ids[u], "item_id": item_ids[i],
                                 "rating": ratings.astype(np.float64), "timestamp": timestamps.astype(np.int64)})
    genre_names = np.asarray(GENRES[:num_genres], dtype=object)[genre]
    price_names = np.asarray(PRICE_BUCKETS, dtype=object)[price]
    titles = [f"Item {k} ({g}, {p})" for k, g, p in zip(item_ids, genre_names, price_names)]
    items_frame = pd.DataFrame({"item_id": item_ids, "title": titles, "genre": genre_names,
                                "price_bucket": price_names})
    users_frame = pd.DataFrame({"user_id": user_ids, "age_bucket": np.asarray(AGE_BUCKETS, dtype=object)[age],
                                "gender": np.asarray(GENDERS, dtype=object)[gender],
                                "occupation": np.asarray(OCCUPATIONS, dtype=object)[occupation]})
    return InteractionData(interactions, items_frame, users_frame, name="synthetic-ratings")


def synthetic_sessions(num_sessions: int = 5000, session_size: int = 20, *, seed: int = 42, num_users: int = 1000,
                       num_items: int = 2000, num_destinations: int = 20, ctr: float = 0.05, cvr: float = 0.15,
                       appeal_quality_correlation: float = 0.8, position_bias: float = 0.7, num_days: int = 14,
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
        click ~ Bernoulli(true_ctr); conversion = click * Bernoulli(true_cvr); true_ctcvr = true_ctr * true_cvr

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
    """
    _require(num_sessions >= 1, f"num_sessions must be >= 1, got {num_sessions}")
    _require(session_size >= 1, f"session_size must be >= 1, got {session_size}")
    _require(num_users >= 1 and num_destinations >= 1, "num_users and num_destinations must be >= 1")
    _require(num_items >= session_size * num_destinations,
             f"each destination needs at least session_size hotels: num_items ({num_items}) must be >= "
             f"session_size * num_destinations ({session_size} * {num_destinations}); raise num_items or lower "
             "num_destinations")
    _require(0 < ctr < 1 and 0 < cvr < 1, f"ctr and cvr must be in (0, 1), got ctr={ctr}, cvr={cvr}")
    _require(-1 <= appeal_quality_correlation <= 1, "appeal_quality_correlation must be in [-1, 1]")
    _require(num_days >= 1, f"num_days must be >= 1, got {num_days}")
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
    session_user = rng.choice(num_users, size=num_sessions, p=_zipf(num_users, 0.8)[rng.permutation(num_users)])
    session_dest = rng.choice(num_destinations, size=num_sessions, p=_zipf(num_destinations, 0.8))
    other_device = rng.choice(len(DEVICES), size=num_sessions)
    session_device = np.where(rng.random(num_sessions) < 0.8, user_device[session_user], other_device)
    session_time = _times_of_day(rng, num_sessions, num_days, start_timestamp)

    # Impressions: per destination, Gumbel top-k = draws without replacement, in draw order.
    shown = np.empty((num_sessions, session_size), dtype=np.int64)
    for dest in range(num_destinations):
        hotels = np.flatnonzero(item_destination == dest)
        hotels = hotels[rng.permutation(len(hotels))]
        log_w = np.log(_zipf(len(hotels), 0.8))
        sessions = np.flatnonzero(session_dest == dest)
        keys = log_w + rng.gumbel(size=(len(sessions), len(hotels)))
        top = np.argsort(-keys, axis=1)[:, :session_size]
        shown[sessions] = hotels[top]

    s = np.repeat(np.arange(num_sessions), session_size)
    i = shown.ravel()
    u = session_user[s]
    dev = session_device[s]
    position = np.tile(np.arange(1, session_size + 1), num_sessions)
    lp = np.log(price[i] / np.median(price))
    rs = (review_score[i] - 7.0) / 1.5
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
        "session_id": _ids(num_sessions)[s],
        "timestamp": session_time[s],
        "user_id": _ids(num_users)[u],
        "user_segment": np.asarray(SEGMENTS, dtype=object)[user_segment[u]],
        "user_loyalty": np.asarray(LOYALTY, dtype=object)[user_loyalty[u]],
        "item_id": _ids(num_items)[i],
        "item_category": np.asarray(CATEGORIES, dtype=object)[category[i]],
        "item_brand": np.array([f"brand_{k + 1:03d}" for k in range(num_brands)], dtype=object)[brand[i]],
        "price": price[i],
        "stars": stars[i].astype(np.int64),
        "review_score": review_score[i],
        "discount": discount[i],
        "position": position.astype(np.int64),
        "device": np.asarray(DEVICES, dtype=object)[dev],
        "destination": np.array([f"city_{k + 1:02d}" for k in range(num_destinations)], dtype=object)[session_dest[s]],
        "hour": hour[s].astype(np.int64),
        "click": click,
        "conversion": conversion,
    })
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
    """
    _require(num_rows >= 1, f"num_rows must be >= 1, got {num_rows}")
    _require(min(num_users, num_items, num_segments, num_categories, num_tags) >= 1,
             "num_users, num_items, num_segments, num_categories and num_tags must be >= 1")
    _require(0 < ctr < 1, f"ctr must be in (0, 1), got {ctr}")
    _require(num_days >= 1, f"num_days must be >= 1, got {num_days}")
    rng = np.random.default_rng(seed)

    segment = rng.integers(0, num_segments, size=num_users)
    age = np.clip(np.round(rng.normal(38.0, 12.0, size=num_users)), 16, 80).astype(np.int64)
    user_device = rng.choice(len(DEVICES), size=num_users, p=[0.6, 0.3, 0.1])
    user_bias = rng.normal(0.0, 0.3, size=num_users)
    category = rng.integers(0, num_categories, size=num_items)
    num_item_tags = rng.integers(1, min(4, num_tags) + 1, size=num_items)
    tags = [np.sort(rng.choice(num_tags, size=k, replace=False)) for k in num_item_tags]
    quality = rng.normal(0.0, 0.6, size=num_items)
    price = np.round(np.exp(rng.normal(3.5, 0.2, size=num_categories)[category] + rng.normal(0, 0.4, num_items)), 2)
    cross_seg_cat = rng.normal(0.0, 1.0, size=(num_segments, num_categories))
    cross_dev_cat = rng.normal(0.0, 0.5, size=(len(DEVICES), num_categories))
    cross_seg_tag = rng.normal(0.0, 0.8, size=(num_segments, num_tags))
    age_by_cat = rng.normal(0.0, 0.4, size=num_categories)
    price_sens = rng.uniform(0.1, 1.0, size=num_segments)

    u = rng.choice(num_users, size=num_rows, p=_zipf(num_users, 0.8)[rng.permutation(num_users)])
    # Better items get more exposure: exposure rank follows quality plus noise.
    exposure_rank = np.argsort(np.argsort(-(quality + rng.normal(0.0, 0.6, size=num_items))))
    i = rng.choice(num_items, size=num_rows, p=_zipf(num_items, 1.0)[exposure_rank])
    dev = np.where(rng.random(num_rows) < 0.85, user_device[u], rng.choice(len(DEVICES), size=num_rows))
    timestamp = _times_of_day(rng, num_rows, num_days, start_timestamp)

    seg, cat = segment[u], category[i]
    seg_item_tags = np.stack([cross_seg_tag[:, ts].mean(axis=1) for ts in tags], axis=1)  # [segments, items]
    tag_effect = seg_item_tags[seg, i]
    logit = (quality[i] + user_bias[u]
             + interaction_scale * (cross_seg_cat[seg, cat] + cross_dev_cat[dev, cat] + tag_effect
                                    + age_by_cat[cat] * (age[u] - 40.0) / 12.0)
             - price_sens[seg] * np.log(price[i] / np.median(price)))
    true_ctr = _sigmoid(logit + _intercept_for_mean(logit, ctr))
    label = (rng.random(num_rows) < true_ctr).astype(np.int64)

    tag_text = np.array(["|".join(f"tag_{t:02d}" for t in ts) for ts in tags], dtype=object)
    frame = pd.DataFrame({
        "timestamp": timestamp,
        "user_id": _ids(num_users)[u],
        "user_segment": np.array([f"seg_{k}" for k in range(num_segments)], dtype=object)[seg],
        "user_age": age[u].astype(np.float64),
        "device": np.asarray(DEVICES, dtype=object)[dev],
        "hour": ((timestamp % SECONDS_PER_DAY) // 3600).astype(np.int64),
        "item_id": _ids(num_items)[i],
        "item_category": np.array([f"cat_{k:02d}" for k in range(num_categories)], dtype=object)[cat],
        "item_tags": tag_text[i],
        "price": price[i],
        "label": label,
    })
    frame.insert(len(frame.columns) - 1, "item_hotness",
                 point_in_time_hotness(frame, frame, click_col="label", half_life_days=half_life_days))
    return LabeledData(frame, ["label"], name="synthetic-ctr-logs", user_column="user_id", item_column="item_id",
                       truth=pd.DataFrame({"true_ctr": true_ctr}))
