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

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.sequences import PAD, Sequences, pad_left

SAMPLING = ("uniform", "popularity")
_REJECTION_ROUNDS = 20


def like_labels(ratings: pd.Series, positive_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(liked, disliked)`` boolean masks: rating >= threshold, rating < threshold; all liked without ratings."""
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
    (query history ``histories[n]``, the user's training sequence); ``liked[n]`` is its label."""

    user_ids: np.ndarray  # [N] str
    histories: list[np.ndarray]
    item_ids: np.ndarray  # [N] str
    liked: np.ndarray  # [N] bool

    def __len__(self) -> int:
        return len(self.item_ids)


def rated_held_out(rows: pd.DataFrame, train: Sequences, positive_threshold: float) -> RatedHeldOut:
    """The liked and disliked interactions of ``rows`` (unrated ones dropped), with their query histories."""
    liked, disliked = like_labels(rows["rating"], positive_threshold)
    keep = liked | disliked
    history = train.as_dict()
    empty = np.array([], dtype=object)
    users = rows["user_id"].astype(str).to_numpy()[keep].astype(object)
    return RatedHeldOut(users, [history.get(u, empty) for u in users],
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
        if sampling not in SAMPLING:
            raise DataError(f"pairwise_sampling = {sampling!r} is not one of {SAMPLING}",
                            fix="set --pairwise-sampling uniform or popularity")
        frame = _ordered(train_rows)
        liked, disliked = like_labels(frame["rating"], positive_threshold)
        if not liked.any():
            ratings = pd.to_numeric(frame["rating"], errors="coerce")
            raise DataError(f"loss '{loss}' trains on liked items, but no training interaction has rating >= "
                            f"positive_threshold ({positive_threshold}); ratings span {ratings.min()}..{ratings.max()}",
                            column="rating", fix="lower --positive-threshold, or train with --loss softmax")
        self.catalog = np.asarray(catalog).astype(str).astype(object)
        position = {item: i for i, item in enumerate(self.catalog)}
        unknown = sorted(set(frame["item_id"]) - set(position))
        if unknown:
            raise DataError(f"training item '{unknown[0]}' is not in the catalog", column="item_id",
                            fix="build the catalog from the same interactions")
        users = frame["user_id"].to_numpy()
        user_names, user_index = np.unique(users, return_inverse=True)
        item_index = frame["item_id"].map(position).to_numpy(dtype=np.int64)
        num_items = len(self.catalog)

        if sampling == "popularity":
            counts = np.bincount(item_index, minlength=num_items).astype(np.float64)
        else:
            counts = np.ones(num_items, dtype=np.float64)
        self._cdf = np.cumsum(counts / counts.sum())
        self._liked_keys = np.unique(user_index[liked] * num_items + item_index[liked])

        # Each user's disliked items, as slices of one array (users in index order).
        use = disliked if use_disliked else np.zeros_like(disliked)
        self._disliked = item_index[use][np.argsort(user_index[use], kind="stable")]
        per_user = np.bincount(user_index[use], minlength=len(user_names))
        self._disliked_start = np.r_[0, np.cumsum(per_user)[:-1]]
        self._disliked_count = per_user

        # A user without disliked items needs a sampleable item they did not like.
        liked_per_user = np.bincount(user_index[liked], minlength=len(user_names))
        sampleable = int((counts > 0).sum())
        possible = (per_user > 0) | (liked_per_user < sampleable)
        rows = np.flatnonzero(liked & possible[user_index])
        self.dropped = int(liked.sum() - len(rows))
        if not len(rows):
            raise DataError(f"loss '{loss}' needs a disliked or an unseen item for each user, but no user has one: "
                            f"no rating is below positive_threshold ({positive_threshold}) and every user liked "
                            f"every item", column="rating",
                            fix="raise --positive-threshold so low ratings count as disliked, add items, "
                                "or train with --loss softmax")
        self._user = user_index[rows]
        self.user_ids = users[rows].astype(object)
        self.positives = self.catalog[item_index[rows]]
        self.histories = self._histories(frame["item_id"].to_numpy(), user_index, rows, max_len)
        self.num_items = num_items
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def _histories(items: np.ndarray, user_index: np.ndarray, rows: np.ndarray, max_len: int) -> np.ndarray:
        if max_len <= 0:
            return np.full((len(rows), 0), PAD, dtype=object)
        first = np.r_[0, np.flatnonzero(np.diff(user_index)) + 1]  # rows are grouped by user
        start = first[user_index[rows]]
        return pad_left([items[max(s, r - max_len):r] for s, r in zip(start, rows)], max_len)

    def __len__(self) -> int:
        return len(self.positives)

    def negatives(self) -> np.ndarray:
        """One negative item index per triple (a fresh draw each call)."""
        rng, n = self._rng, len(self._user)
        count = self._disliked_count[self._user]
        explicit = count > 0
        out = np.empty(n, dtype=np.int64)
        pick = self._disliked_start[self._user[explicit]] + np.floor(
            rng.random(int(explicit.sum())) * count[explicit]).astype(np.int64)
        out[explicit] = self._disliked[pick]
        todo = np.flatnonzero(~explicit)
        for _ in range(_REJECTION_ROUNDS):
            if not len(todo):
                break
            draw = np.minimum(np.searchsorted(self._cdf, rng.random(len(todo)), side="right"), self.num_items - 1)
            out[todo] = draw
            todo = todo[self._is_liked(self._user[todo], draw)]
        for row in todo:  # users who liked nearly everything: draw among what is left
            allowed = np.flatnonzero(~self._is_liked(np.full(self.num_items, self._user[row]),
                                                     np.arange(self.num_items)) & (np.diff(np.r_[0, self._cdf]) > 0))
            out[row] = rng.choice(allowed)
        return out

    def _is_liked(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.num_items + items
        at = np.minimum(np.searchsorted(self._liked_keys, keys), len(self._liked_keys) - 1)
        return self._liked_keys[at] == keys

    def epoch(self) -> dict[str, np.ndarray]:
        """Every triple once, shuffled, with fresh negatives."""
        order = self._rng.permutation(len(self))
        return {"user_id": self.user_ids[order], "history": self.histories[order],
                "positive": self.positives[order], "negative": self.catalog[self.negatives()[order]]}

    def dataset(self, batch_size: int):
        """A ``tf.data.Dataset`` of batches of :meth:`epoch`, re-drawn each time it is iterated (each epoch)."""
        import tensorflow as tf

        def batches():
            triples = {k: v.astype(str) for k, v in self.epoch().items()}
            for lo in range(0, len(self), batch_size):
                yield {k: v[lo:lo + batch_size] for k, v in triples.items()}

        width = self.histories.shape[1]
        signature = {"user_id": tf.TensorSpec([None], tf.string), "history": tf.TensorSpec([None, width], tf.string),
                     "positive": tf.TensorSpec([None], tf.string), "negative": tf.TensorSpec([None], tf.string)}
        return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)
