"""Synthetic user-item interactions with known ground truth, for the retrieval models.

* :func:`synthetic_histories` -- user histories from drifting latent tastes (retrieval).
* :func:`synthetic_ratings` -- explicit ratings of users and items with features, from latent
  tastes those features explain (the feature two-tower with a pairwise loss).

Seeded and sized by their arguments like the impression logs of :mod:`tfrs_recsys.data.synthetic`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.splits import SECONDS_PER_DAY
from tfrs_recsys.data.synthetic import (
    START_TIMESTAMP,
    at_least,
    named,
    names,
    require,
    text_ids,
    within,
    zipf_weights,
)

GENRES = (
    "Drama", "Comedy", "Action", "Thriller", "Romance", "Adventure", "Crime", "Sci-Fi", "Horror",
    "Children's", "Fantasy", "Mystery", "Documentary", "Animation", "Musical", "War", "Western", "Film-Noir",
)

def synthetic_histories(num_users: int = 2000, num_items: int = 500, *, seed: int = 42, num_genres: int = 12,
                        min_history: int = 5, max_history: int = 60, taste_dim: int = 8, drift: float = 0.15,
                        popularity_exponent: float = 1.1, taste_strength: float = 12.0,
                        genre_weight: float = 1.0, start_timestamp: int = START_TIMESTAMP,
                        start_spread_days: int = 180,
                        mean_gap_seconds: float = 6 * 3600.0) -> InteractionData:
    """User histories from drifting latent tastes over items with genres and power-law popularity.

    Generating model (``d = taste_dim``)::

        genre vectors     g_k ~ N(0, I/d)
        item i            genres G_i: 1-3 of the first ``num_genres`` of GENRES (common genres likelier)
                          v_i = normalize(genre_weight * mean_{k in G_i} g_k + e_i),  e_i ~ N(0, I/d)
        popularity        p_i ∝ rank_i ** -popularity_exponent
                          (rank_i a random permutation of 1..num_items)
        user taste        z_0 ~ N(0, I/d),  z_t = sqrt(1 - drift^2) z_{t-1} + drift * n_t,  n_t ~ N(0, I/d)
        next item         x_t ~ softmax_i(taste_strength * v_i . z_t + log p_i)
                          over items not yet in the history
        rating            clip(round(3.6 + 1.1 * standardized(v_x . z_t) + N(0, 0.5^2)), 1, 5)
        timestamps        user start ~ U(0, start_spread_days) after start_timestamp,
                          then gaps 1 + Exp(mean_gap_seconds)

    The taste drifts slowly (step correlation ``sqrt(1 - drift^2)``), so recent history predicts
    the next item best. History lengths are log-uniform in ``[min_history, max_history]``.
    There are no user features (``users`` is None) and the latent vectors are not returned.

    Args:
      num_users: Users.
      num_items: Items.
      seed: The seed of every draw.
      num_genres: Genres used (of GENRES).
      min_history: The shortest history.
      max_history: The longest history (at most ``num_items``).
      taste_dim: ``d`` above.
      drift: The taste's step size, in [0, 1].
      popularity_exponent: The Zipf exponent of popularity.
      taste_strength: The weight of taste against popularity in the next item's choice.
      genre_weight: The weight of the genres in an item's vector.
      start_timestamp: When the first user may start, in unix seconds.
      start_spread_days: Days over which users start.
      mean_gap_seconds: The mean time between a user's interactions.

    Returns:
      The interactions and items (with their genres).
    """
    at_least(1, num_users=num_users, min_history=min_history, taste_dim=taste_dim)
    require(min_history <= max_history, f"min_history ({min_history}) exceeds max_history ({max_history})")
    require(max_history <= num_items, f"{named('num_items')} is {num_items}, below max_history "
                                       f"({max_history}), the longest synthetic history (it never repeats an "
                                       "item); raise it")
    within(1, len(GENRES), num_genres=num_genres)
    within(0, 1, drift=drift)
    at_least(0, popularity_exponent=popularity_exponent, mean_gap_seconds=mean_gap_seconds,
              start_spread_days=start_spread_days)
    rng = np.random.default_rng(seed)
    d = taste_dim

    genre_vectors = rng.normal(0.0, 1.0 / np.sqrt(d), size=(num_genres, d))
    genre_share = zipf_weights(num_genres, 0.7)
    item_genres = [rng.choice(num_genres, size=min(k, num_genres), replace=False, p=genre_share)
                   for k in rng.choice([1, 2, 3], size=num_items, p=[0.5, 0.35, 0.15])]
    centroids = np.stack([genre_vectors[g].mean(axis=0) for g in item_genres])
    item_vectors = genre_weight * centroids + rng.normal(0.0, 1.0 / np.sqrt(d), size=(num_items, d))
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    log_popularity = np.log(zipf_weights(num_items, popularity_exponent)[rng.permutation(num_items)])

    lengths = np.floor(np.exp(rng.uniform(np.log(min_history), np.log(max_history + 1), size=num_users)))
    lengths = np.clip(lengths.astype(np.int64), min_history, max_history)
    keep = np.sqrt(1.0 - drift ** 2)
    chosen, affinity = np.empty((num_users, max_history), dtype=np.int64), np.empty((num_users, max_history))
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
    items_flat, aff = chosen[mask], affinity[mask]
    z = (aff - aff.mean()) / (aff.std() + 1e-12)
    ratings = np.clip(np.round(3.6 + 1.1 * z + rng.normal(0.0, 0.5, size=len(z))), 1, 5)
    gaps = 1 + np.floor(rng.exponential(mean_gap_seconds, size=len(z))).astype(np.int64)
    starts = start_timestamp + rng.integers(0, start_spread_days * SECONDS_PER_DAY + 1, size=num_users)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    cumulative = np.cumsum(gaps)
    timestamps = starts[user_index] + cumulative - cumulative[first][user_index]

    item_ids = text_ids(num_items)
    interactions = pd.DataFrame({"user_id": text_ids(num_users)[user_index], "item_id": item_ids[items_flat],
                                 "rating": ratings.astype(np.float64),
                                 "timestamp": timestamps.astype(np.int64)})
    genre_names = [[GENRES[k] for k in g] for g in item_genres]
    titles = [f"Item {i} ({', '.join(g)})" for i, g in zip(item_ids, genre_names)]
    items = pd.DataFrame({"item_id": item_ids, "title": titles, "genres": genre_names})
    return InteractionData(interactions, items, None, name="synthetic-histories")


AGE_BUCKETS = ("under-18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
GENDERS = ("F", "M")
OCCUPATIONS = ("student", "engineer", "artist", "educator", "healthcare", "sales", "retired", "other")
PRICE_BUCKETS = ("budget", "standard", "premium", "luxury")


def synthetic_ratings(num_users: int = 2000, num_items: int = 500, *, seed: int = 42, num_genres: int = 8,
                      taste_dim: int = 8, min_ratings: int = 20, max_ratings: int = 60,
                      feature_share: float = 0.8, taste_weight: float = 1.2, noise: float = 0.6,
                      selection: float = 0.5, popularity_exponent: float = 0.8,
                      start_timestamp: int = START_TIMESTAMP, num_days: int = 365) -> InteractionData:
    """Explicit 1-5 ratings from latent tastes that user and item features mostly explain (two-tower data).

    Users have ``age_bucket`` (AGE_BUCKETS), ``gender`` (GENDERS) and ``occupation`` (OCCUPATIONS); items a
    ``genre`` (the first ``num_genres`` of GENRES) and a ``price_bucket`` (PRICE_BUCKETS). With
    ``d = taste_dim``, ``s = feature_share`` and every table and noise vector drawn from ``N(0, I/d)``::

        user taste        t_u = sqrt(s) * (A[age_u] + B[gender_u] + C[occupation_u]) / sqrt(3)
                                + sqrt(1 - s) * n_u
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

    Args:
      num_users: Users.
      num_items: Items (at least ``max_ratings``).
      seed: The seed of every draw.
      num_genres: Genres used (of GENRES).
      taste_dim: ``d`` above.
      min_ratings: The fewest ratings of a user.
      max_ratings: The most ratings of a user.
      feature_share: ``s`` above, in [0, 1].
      taste_weight: The weight of the affinity in a rating.
      noise: The rating noise's standard deviation.
      selection: How much a user's affinity raises the chance that they rate an item.
      popularity_exponent: The Zipf exponent of popularity.
      start_timestamp: The first day's midnight, in unix seconds.
      num_days: Days the ratings span.

    Returns:
      The ratings, items (genre, price bucket) and users (age bucket, gender, occupation).
    """
    at_least(1, num_users=num_users, min_ratings=min_ratings, taste_dim=taste_dim, num_days=num_days)
    require(min_ratings <= max_ratings, f"min_ratings ({min_ratings}) exceeds max_ratings ({max_ratings})")
    require(max_ratings <= num_items, f"{named('num_items')} is {num_items}, below max_ratings "
                                       f"({max_ratings}): a user never rates an item twice; raise it")
    within(1, len(GENRES), num_genres=num_genres)
    within(0, 1, feature_share=feature_share)
    at_least(0, noise=noise)
    rng = np.random.default_rng(seed)
    d = taste_dim

    def table(n: int) -> np.ndarray:
        return rng.normal(0.0, 1.0 / np.sqrt(d), size=(n, d))

    age = rng.choice(len(AGE_BUCKETS), size=num_users, p=[0.04, 0.18, 0.35, 0.2, 0.08, 0.08, 0.07])
    gender = rng.choice(len(GENDERS), size=num_users, p=[0.4, 0.6])
    occupation = rng.integers(0, len(OCCUPATIONS), size=num_users)
    genre = rng.choice(num_genres, size=num_items, p=zipf_weights(num_genres, 0.5))
    price = rng.choice(len(PRICE_BUCKETS), size=num_items, p=[0.3, 0.4, 0.2, 0.1])
    share = np.sqrt(feature_share)
    taste = (share * (table(len(AGE_BUCKETS))[age] + table(len(GENDERS))[gender]
                      + table(len(OCCUPATIONS))[occupation]) / np.sqrt(3)
             + np.sqrt(1.0 - feature_share) * table(num_users))
    attributes = (share * (table(num_genres)[genre] + table(len(PRICE_BUCKETS))[price]) / np.sqrt(2)
                  + np.sqrt(1.0 - feature_share) * table(num_items))
    quality = rng.normal(0.0, 0.3, size=num_items)
    leniency = rng.normal(0.0, 0.3, size=num_users)
    log_popularity = np.log(zipf_weights(num_items, popularity_exponent)[rng.permutation(num_items)])
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
    raw = 3.0 + taste_weight * z + quality[i] + leniency[u] + noise * rng.normal(size=len(z))
    ratings = np.clip(np.round(raw), 1, 5)
    timestamps = start_timestamp + rng.integers(0, num_days * SECONDS_PER_DAY, size=len(z))
    order = np.lexsort((timestamps, u))
    u, i, ratings, timestamps = u[order], i[order], ratings[order], timestamps[order]

    user_ids, item_ids = text_ids(num_users), text_ids(num_items)
    interactions = pd.DataFrame({"user_id": user_ids[u], "item_id": item_ids[i], "rating": ratings,
                                 "timestamp": timestamps.astype(np.int64)})
    genre_names, price_names = names(GENRES[:num_genres], genre), names(PRICE_BUCKETS, price)
    titles = [f"Item {k} ({g}, {p})" for k, g, p in zip(item_ids, genre_names, price_names)]
    items_frame = pd.DataFrame({"item_id": item_ids, "title": titles, "genre": genre_names,
                                "price_bucket": price_names})
    users_frame = pd.DataFrame({"user_id": user_ids, "age_bucket": names(AGE_BUCKETS, age),
                                "gender": names(GENDERS, gender),
                                "occupation": names(OCCUPATIONS, occupation)})
    return InteractionData(interactions, items_frame, users_frame, name="synthetic-ratings")


