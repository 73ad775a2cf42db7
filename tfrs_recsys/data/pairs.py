"""(user, liked item, disliked item) triples for pairwise losses, and held-out rated items to score.

An interaction is *liked* when its rating is >= ``positive_threshold`` and *disliked* when it is
below; a missing rating is neither. Data whose ratings are all missing is implicit feedback:
every interaction is liked and nothing is disliked.

Training triples: one per liked training interaction ``(u, i+)``, its negative ``i-`` drawn
anew every epoch:

* one of ``u``'s disliked training items, uniformly, when ``u`` has any (and ``use_disliked``);
* otherwise a catalog item ``u`` did not like, drawn ``uniform``-ly or by ``popularity``
  (in proportion to its training interactions), by rejection of ``u``'s liked items.

With ``max_len`` > 0 a triple also carries ``u``'s training items before ``i+`` (oldest first,
the newest ``max_len``, left-padded with ``""``): the history a sequence user tower reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfrs_recsys.config import PAIRWISE_SAMPLING
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.pipelines import dataset_from_arrays
from tfrs_recsys.data.sequence_splits import earlier_histories
from tfrs_recsys.data.sequences import PAD

_REJECTION_ROUNDS = 20


def like_labels(ratings: pd.Series, positive_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(liked, disliked)`` boolean masks: rating >= threshold, rating < threshold.

    Args:
      ratings: the interactions' ratings; missing ones are neither liked nor disliked.
      positive_threshold: the lowest liked rating.

    Returns:
      The two masks; when no rating is present (implicit feedback), every interaction is liked.
    """
    values = pd.to_numeric(ratings, errors="coerce").to_numpy(dtype=np.float64)
    rated = ~np.isnan(values)
    if not rated.any():
        return np.ones(len(values), dtype=bool), np.zeros(len(values), dtype=bool)
    liked = rated & (values >= positive_threshold)
    return liked, rated & ~liked


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows by user, then time, ties in file order: the order of :func:`sequences.user_sequences`."""
    frame = rows.assign(user_id=rows["user_id"].astype(str), item_id=rows["item_id"].astype(str),
                        _row=np.arange(len(rows)))
    return frame.sort_values(["user_id", "timestamp", "_row"], kind="stable")


@dataclass
class RatedHeldOut:
    """Held-out rated interactions: row n asks for the score of ``item_ids[n]`` for ``user_ids[n]``
    (query history ``histories[n]``, the user's training items before it); ``liked[n]`` is its label."""

    user_ids: np.ndarray  # [N] str
    histories: list[np.ndarray]
    item_ids: np.ndarray  # [N] str
    liked: np.ndarray  # [N] bool

    def __len__(self) -> int:
        return len(self.item_ids)


def rated_held_out(rows: pd.DataFrame, train_rows: pd.DataFrame, positive_threshold: float) -> RatedHeldOut:
    """The liked and disliked interactions of ``rows`` (unrated ones dropped), with their query histories.

    Args:
      rows: held-out interactions with a ``rating`` column.
      train_rows: the training interactions: each row's query history is its user's items among them
        before it (:func:`~tfrs_recsys.data.sequence_splits.earlier_histories`).
      positive_threshold: the lowest liked rating.

    Returns:
      The rows to score.
    """
    liked, disliked = like_labels(rows["rating"], positive_threshold)
    keep = liked | disliked
    users = rows["user_id"].astype(str).to_numpy()[keep].astype(object)
    histories = earlier_histories(rows, train_rows)
    return RatedHeldOut(users, [histories[i] for i in np.flatnonzero(keep)],
                        rows["item_id"].astype(str).to_numpy()[keep].astype(object), liked[keep])


class TripleSampler:
    """Training triples ``{user_id [N], history [N, max_len], positive [N], negative [N]}`` of item ids.

    ``catalog`` is the set negatives are sampled from. Liked interactions whose user has no
    possible negative (no disliked item and every catalog item liked) are left out and counted
    in ``dropped``.
    """

    def __init__(self, train_rows: pd.DataFrame, catalog: np.ndarray, *, positive_threshold: float = 4.0,
                 use_disliked: bool = True, sampling: str = "uniform", max_len: int = 0, seed: int = 42,
                 loss: str = "bpr"):
        if sampling not in PAIRWISE_SAMPLING:
            raise DataError(f"pairwise_sampling = {sampling!r} is not one of {PAIRWISE_SAMPLING}",
                            fix="set --pairwise-sampling uniform or popularity")
        frame = _ordered(train_rows)
        liked, disliked = like_labels(frame["rating"], positive_threshold)
        if not liked.any():
            ratings = pd.to_numeric(frame["rating"], errors="coerce")
            raise DataError(f"loss '{loss}' trains on liked items, but no training interaction has rating "
                            f">= positive_threshold ({positive_threshold}); ratings span "
                            f"{ratings.min()}..{ratings.max()}",
                            column="rating", fix="lower --positive-threshold, or train with --loss softmax")
        self.catalog = np.asarray(catalog).astype(str).astype(object)
        position = {item: i for i, item in enumerate(self.catalog)}
        unknown = sorted(set(frame["item_id"]) - set(position))
        if unknown:
            raise DataError(f"training item '{unknown[0]}' is not in the catalog", column="item_id",
                            fix="build the catalog from the same interactions")
        user_names, user_index = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
        item_index = frame["item_id"].map(position).to_numpy(dtype=np.int64)
        self.num_items = num_items = len(self.catalog)
        counts = (np.bincount(item_index, minlength=num_items) if sampling == "popularity"
                  else np.ones(num_items)).astype(np.float64)
        self._probability = counts / counts.sum()
        self._cdf = np.cumsum(self._probability)
        self._liked_keys = np.unique(user_index[liked] * num_items + item_index[liked])

        # Each user's disliked items, as slices of one array (users in index order).
        use = disliked if use_disliked else np.zeros_like(disliked)
        self._disliked = item_index[use][np.argsort(user_index[use], kind="stable")]
        self._disliked_count = per_user = np.bincount(user_index[use], minlength=len(user_names))
        self._disliked_start = np.r_[0, np.cumsum(per_user)[:-1]]

        # A user without disliked items needs a sampleable item (counts > 0) they did not like.
        liked_per_user = np.bincount(user_index[liked], minlength=len(user_names))
        possible = (per_user > 0) | (liked_per_user < int((counts > 0).sum()))
        rows = np.flatnonzero(liked & possible[user_index])
        self.dropped = int(liked.sum() - len(rows))
        if not len(rows):
            raise DataError(f"loss '{loss}' needs a disliked or an unseen item for each user, but no user "
                            f"has one: no rating is below positive_threshold ({positive_threshold}) and "
                            f"every user liked every item", column="rating",
                            fix="raise --positive-threshold so low ratings count as disliked, add items, "
                                "or train with --loss softmax")
        self._user = user_index[rows]
        self._user_names = user_names.astype(str).astype(object)
        self._positive = item_index[rows]
        self._history = self._history_indices(item_index, user_index, rows, max_len, pad=num_items)
        self._seed = seed
        self._epochs = None

    @staticmethod
    def _history_indices(items: np.ndarray, user_index: np.ndarray, rows: np.ndarray, max_len: int,
                         pad: int) -> np.ndarray:
        """[N, max_len] catalog indices of each row's earlier items (newest last), ``pad`` before them."""
        first = np.r_[0, np.flatnonzero(np.diff(user_index)) + 1]  # rows are grouped by user
        start = first[user_index[rows]]
        at = rows[:, None] - max_len + np.arange(max_len)[None, :]
        return np.where(at >= start[:, None], items[np.maximum(at, 0)], pad).astype(np.int64)

    def __len__(self) -> int:
        return len(self._positive)

    @property
    def user_ids(self) -> np.ndarray:
        """[N] user id of each triple."""
        return self._user_names[self._user]

    @property
    def positives(self) -> np.ndarray:
        """[N] liked item id of each triple."""
        return self.catalog[self._positive]

    @property
    def histories(self) -> np.ndarray:
        """[N, max_len] the user's training items before the liked one, left-padded with ``""``."""
        return np.r_[self.catalog, [PAD]].astype(object)[self._history]

    def dataset(self, batch_size: int):
        """Batches ``{user_id, history, positive, negative}`` (strings) of every triple once, shuffled,
        with negatives drawn anew each time the dataset is iterated (each epoch).

        All in TensorFlow ops: the seeded permutation of :func:`pipelines.dataset_from_arrays`, then
        per batch a seed from a stream redrawn on every iteration drives the negative draws
        (:meth:`negatives`).

        Args:
          batch_size: triples per batch.

        Returns:
          The ``tf.data.Dataset``.
        """
        import tensorflow as tf

        catalog = tf.constant(np.r_[self.catalog, [PAD]].astype(str))
        user_names = tf.constant(self._user_names.astype(str))
        rows = dataset_from_arrays({"user": self._user, "history": self._history, "positive": self._positive},
                                   batch_size=batch_size, shuffle=True, seed=self._seed)
        draws = tf.data.Dataset.random(seed=self._seed + 1, rerandomize_each_iteration=True)

        def triples(batch, draw):
            negative = self.negatives(batch["user"], tf.stack([draw, tf.constant(self._seed, tf.int64)]))
            return {"user_id": tf.gather(user_names, batch["user"]), "negative": tf.gather(catalog, negative),
                    **{k: tf.gather(catalog, batch[k]) for k in ("history", "positive")}}

        return tf.data.Dataset.zip((rows, draws)).map(triples, num_parallel_calls=tf.data.AUTOTUNE,
                                                      deterministic=True).prefetch(tf.data.AUTOTUNE)

    def epoch(self) -> dict[str, np.ndarray]:
        """One pass of :meth:`dataset` as arrays: every triple once, shuffled, with fresh negatives."""
        if self._epochs is None:
            self._epochs = self.dataset(max(len(self), 1))
        return {k: v.numpy().astype(str).astype(object) for k, v in next(iter(self._epochs)).items()}

    def _is_liked(self, users, items):
        import tensorflow as tf

        keys = tf.reshape(users * self.num_items + items, [-1])
        at = tf.minimum(tf.searchsorted(self._liked_keys, keys, out_type=tf.int64), len(self._liked_keys) - 1)
        return tf.reshape(tf.equal(tf.gather(self._liked_keys, at), keys), tf.shape(items))

    def negatives(self, users, seed):
        """Negative item indices ``[B]`` for a batch of triple users, as TensorFlow ops.

        A user with disliked items gets one of them uniformly. Any other user gets ``_REJECTION_ROUNDS``
        catalog draws (uniform or by popularity) and keeps the first one they did not like; a user
        whose every draw was liked (who liked nearly all sampleable items) draws by the same
        probabilities among exactly the items they did not like.

        Args:
          users: int64 ``[B]`` user indices.
          seed: the ``[2]`` seed of the stateless draws.

        Returns:
          int64 ``[B]`` catalog indices.
        """
        import tensorflow as tf

        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        count = tf.gather(self._disliked_count, users)
        uniform = tf.random.stateless_uniform(tf.shape(users), seeds[0], dtype=tf.float64)
        # One dummy entry keeps the gather of a user without dislikes in range; it is never chosen.
        disliked = tf.gather(np.r_[self._disliked, [0]], tf.gather(self._disliked_start, users)
                             + tf.cast(uniform * tf.cast(count, tf.float64), tf.int64))

        uniform = tf.random.stateless_uniform([tf.size(users), _REJECTION_ROUNDS], seeds[1], dtype=tf.float64)
        draws = tf.searchsorted(self._cdf, tf.reshape(uniform, [-1]), side="right", out_type=tf.int64)
        draws = tf.minimum(tf.reshape(draws, tf.shape(uniform)), self.num_items - 1)
        unliked = tf.logical_not(self._is_liked(users[:, None], draws))
        sampled = tf.gather(draws, tf.argmax(tf.cast(unliked, tf.int32), axis=1), batch_dims=1)
        stuck = tf.where(tf.logical_and(count == 0, tf.logical_not(tf.reduce_any(unliked, axis=1))))

        def among_unliked():
            stuck_users = tf.gather_nd(users, stuck)
            items = tf.range(self.num_items, dtype=tf.int64)
            allowed = tf.logical_not(self._is_liked(stuck_users[:, None], tf.broadcast_to(
                items[None, :], [tf.size(stuck_users), self.num_items])))
            with np.errstate(divide="ignore"):  # items without interactions: log 0 = -inf, never drawn
                log_probability = np.log(self._probability)
            logits = tf.where(allowed, log_probability[None, :], tf.constant(-np.inf, tf.float64))
            chosen = tf.random.stateless_categorical(logits, 1, seeds[2], dtype=tf.int64)[:, 0]
            return tf.tensor_scatter_nd_update(sampled, stuck, chosen)

        sampled = tf.cond(tf.size(stuck) > 0, among_unliked, lambda: sampled)
        return tf.where(count > 0, disliked, sampled)
