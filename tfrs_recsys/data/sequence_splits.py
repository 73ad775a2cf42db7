"""Retrieval's splits of the interactions into training sequences and held-out targets.

* ``leave_last_out``: the last item is the test target, the one before it the validation target, the rest
  is the training sequence. Ranking excludes the target's history.
* ``random_80_20``: the TFRS tutorial's protocol, a seeded random split of the interactions; the training
  ones form the sequences, each held-out one is a target queried with its user's training items before
  it (a query never reads the target's future; the whole training sequence is what ranking may leave out).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from tfrs_recsys.data import splits
from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.sequences import HeldOut, Sequences, SequenceSplit, user_sequences

logger = logging.getLogger(__name__)
ORDER = "log_row"  # an interaction's row in the log: orders interactions of one time as the sequences do


def leave_last_out(data: InteractionData, *, min_interactions: int = 3) -> SequenceSplit:
    """Last item = test target, second last = validation target, the rest = training sequence.

    The rows come from :func:`tfrs_recsys.data.splits.leave_last_out`; users with fewer than
    ``min_interactions`` items stay wholly in training and are not evaluated. Validation
    histories are the training sequence; test histories add the validation item.

    Args:
      data: the interactions.
      min_interactions: the fewest items of an evaluated user.

    Returns:
      The split.
    """
    full = user_sequences(data.interactions)  # first: it checks the ids
    rows = splits.leave_last_out(_numbered(data.interactions), min_interactions=min_interactions)
    if not len(rows.test):
        raise DataError(f"no user has {min_interactions} or more interactions, so nothing can be evaluated",
                        fix="use more data per user, or the random_80_20 protocol")
    _say_baskets(rows.test, rows.validation)
    train = user_sequences(rows.train)
    val_item = dict(zip(rows.validation["user_id"].astype(str), rows.validation["item_id"].astype(str)))
    validation = _held_out(rows.validation, train, exclude=True)
    test = _held_out(rows.test, train, exclude=True, then=val_item)
    return SequenceSplit(train, validation, test, full, "leave_last_out", rows)


BASKET_SHARE = 0.5  # test targets sharing their time with the item before: above this, said (ML-100K: 44%)


def _say_baskets(test: pd.DataFrame, validation: pd.DataFrame) -> None:
    """Warns when many test targets share their time with the validation target: lines of one basket (an
    order's items at one time), whose test measures completing the basket more than the next visit."""
    before = test[["user_id"]].merge(validation[["user_id", "timestamp"]], on="user_id", how="left")
    same = np.mean(test["timestamp"].to_numpy() == before["timestamp"].to_numpy()) if len(test) else 0.0
    if same > BASKET_SHARE:
        logger.warning("%.0f%% of the test targets share their time with the item before them (the lines of "
                       "one order, or items rated in one go): the test then measures completing a basket, "
                       "with the rest of it in the history, more than predicting the next order; compare "
                       "runs knowing so", 100 * same)


def random_split(data: InteractionData, *, test_fraction: float = 0.2, validation_fraction: float = 0.05,
                 seed: int = 42) -> SequenceSplit:
    """The TFRS tutorial protocol: a seeded random split of the interactions.

    ``test_fraction`` of the interactions are test targets and ``validation_fraction`` of them
    validation targets (for early stopping), by :func:`tfrs_recsys.data.splits.random_split`;
    the rest forms the training sequences. A target's query history is its user's training items before
    it (:func:`earlier_histories`): a random split leaves about half of a user's training items after a
    target, which a sequence tower must not read. Nothing is excluded at ranking, as in the tutorial's
    FactorizedTopK over all movies.

    Args:
      data: the interactions.
      test_fraction: share of test targets.
      validation_fraction: share of validation targets.
      seed: the split's seed.

    Returns:
      The split.
    """
    full = user_sequences(data.interactions)  # first: it checks the ids
    rows = splits.random_split(_numbered(data.interactions), test_fraction=test_fraction,
                               validation_fraction=validation_fraction, seed=seed)
    if rows.validation is None or not len(rows.validation):
        raise DataError("the random split left no validation interactions for early stopping",
                        fix="raise validation_fraction")
    train = user_sequences(rows.train)

    def held_out(part: pd.DataFrame) -> HeldOut:
        users = part["user_id"].astype(str).to_numpy(dtype=object)
        targets = part["item_id"].astype(str).to_numpy(dtype=object)
        return HeldOut(users, earlier_histories(part, rows.train), targets,
                       [np.array([], dtype=object)] * len(users), seen=train.histories(users))

    return SequenceSplit(train, held_out(rows.validation), held_out(rows.test), full, "random_80_20", rows)


def _numbered(interactions: pd.DataFrame) -> pd.DataFrame:
    return interactions.assign(**{ORDER: np.arange(len(interactions))})


def earlier_histories(part: pd.DataFrame, train_rows: pd.DataFrame) -> list[np.ndarray]:
    """Each row of ``part``: its user's items of ``train_rows`` before it, oldest first.

    "Before" is the order of :func:`user_sequences`: by timestamp, then by the row in the log (the
    :data:`ORDER` column both frames carry).

    Args:
      part: held-out interactions (``user_id``, ``timestamp``, :data:`ORDER`).
      train_rows: the training interactions (with ``item_id`` too).

    Returns:
      One array of item ids per row of ``part``.
    """
    keys = ["user_id", "timestamp", ORDER]
    marks = pd.concat([train_rows[[*keys, "item_id"]].assign(held=-1),
                       part[keys].assign(held=np.arange(len(part)))], ignore_index=True)
    marks = marks.sort_values(keys, kind="stable")
    users, held = pd.factorize(marks["user_id"])[0], marks["held"].to_numpy()
    training = held < 0
    first = np.r_[True, users[1:] != users[:-1]]
    before = np.cumsum(training) - training  # training rows before each row
    start = before[first][np.cumsum(first) - 1]  # ... before its user's first row
    codes, ids = pd.factorize(marks["item_id"][training])  # one string per distinct item
    items = np.asarray(pd.Index(ids).astype(str), dtype=object)[codes]
    out: list[np.ndarray] = [np.array([], dtype=object)] * len(part)
    for row in np.flatnonzero(~training):
        out[held[row]] = items[start[row]:before[row]]
    return out


def _held_out(part: pd.DataFrame, train: Sequences, *, exclude: bool,
              then: dict[str, str] | None = None) -> HeldOut:
    """The rows of ``part`` as targets, queried by the user's training sequence (plus ``then[user]``)."""
    users = part["user_id"].astype(str).to_numpy(dtype=object)
    histories = train.histories(users)
    if then is not None:
        histories = [np.r_[h, [then[u]]].astype(object) for u, h in zip(users, histories)]
    return HeldOut(users, histories, part["item_id"].astype(str).to_numpy(dtype=object),
                   histories if exclude else [np.array([], dtype=object)] * len(users))
