"""Train / validation / test splits, checked for leaks.

Four protocols:

* :func:`leave_last_out` — sequential retrieval: per user, sorted by time, the last
  interaction is test, the one before validation, the rest training history.
* :func:`random_split` — the TFRS tutorial's random 80/20 over rows.
* :func:`split_by_session` — whole sessions (searches, page views) go to one side.
* :func:`split_by_time` — the earliest 80% of the rows (by time) train, the next 10% validation, the
  latest test: no training row is later than a held-out one.

Only the time split keeps every other user's later rows out of training too: leave-last-out cuts
each user's own timeline, and the random and session splits none.

Every function runs :func:`check_no_leakage` on its own result before returning it.
Each part keeps the input's index labels, so a row can be traced back to the source frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data.bundles import InteractionData, LabeledData
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.times import epoch_seconds

SECONDS_PER_DAY = 86_400


@dataclass
class Split:
    """Three disjoint parts of one frame.

    Attributes:
      train: The training rows.
      validation: The validation rows, or None when none were asked for.
      test: The test rows.
      method: The protocol (``leave_last_out``, ``random``, ``session``, ``time``), which decides what
        :func:`check_no_leakage` checks.
      user_column: The user column the split was made on (or that the parts hold).
      time_column: The time column the split was made on.
      session_column: The session column the split was made on.
      train_only_users: Users leave-last-out kept wholly in train (too few interactions to hold one out).
      notes: What a reader of the split should know.
    """

    train: pd.DataFrame
    validation: pd.DataFrame | None
    test: pd.DataFrame
    method: str = "custom"
    user_column: str | None = None
    time_column: str | None = None
    session_column: str | None = None
    train_only_users: int = 0
    notes: list[str] = field(default_factory=list)

    def parts(self) -> dict[str, pd.DataFrame]:
        """The parts that exist, by name, in train, validation, test order."""
        parts = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: frame for name, frame in parts.items() if frame is not None}

    def summary(self) -> dict:
        """What ``split.json`` of a run records.

        Returns:
          The method, row (user, session) counts per part and the notes (e.g. users kept in train).
        """
        out: dict = {"method": self.method}
        for name, frame in self.parts().items():
            out[name] = {"rows": int(len(frame))}
            for key, col in (("users", self.user_column), ("sessions", self.session_column)):
                if col and col in frame.columns:
                    out[name][key] = int(frame[col].nunique())
        if self.method == "leave_last_out":
            out["train_only_users"] = self.train_only_users
        out["notes"] = list(self.notes)
        return out


def _frame(frame, columns: Sequence[str] = (), argument: str = "") -> pd.DataFrame:
    """The rows of ``frame``, checked to hold ``columns`` (passed as ``argument``) without missing values."""
    if isinstance(frame, (InteractionData, LabeledData)):
        frame = frame.interactions if isinstance(frame, InteractionData) else frame.frame
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, InteractionData or LabeledData, got "
                        f"{type(frame).__name__}", fix="pass the loaded frame")
    if frame.empty:
        raise DataError("cannot split an empty frame",
                        fix="check the loader returned rows (and any filter before)")
    for col in columns:
        if col not in frame.columns:
            raise DataError(f"column '{col}' (argument {argument}) is not in the frame; it has "
                            f"{list(frame.columns)}", column=col,
                            fix=f"pass {argument}= with the name of your column")
        if frame[col].isna().any():
            row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
            raise DataError(f"{int(frame[col].isna().sum())} missing value(s), first at row {row}",
                            column=col, fix="fill or drop those rows before splitting")
    return frame


def _sides(n: int, test_share: float, validation_share: float, seed: int) -> np.ndarray | None:
    """0 (train), 1 (validation) or 2 (test) for each of ``n`` units from a seeded shuffle; None when
    ``n`` is too small for every asked-for part to get one."""
    n_test, n_val = round(n * test_share), round(n * validation_share)
    if n_test == 0 or n - n_test - n_val <= 0 or (validation_share > 0 and n_val == 0):
        return None
    perm = np.random.default_rng(seed).permutation(n)
    side = np.zeros(n, dtype=np.int8)
    side[perm[:n_test]] = 2
    side[perm[n_test:n_test + n_val]] = 1
    return side


def _split(frame: pd.DataFrame, side: np.ndarray, validation: bool, **fields) -> Split:
    """Rows on ``side`` 0, 1, 2 as train, validation (when asked for) and test, checked for leakage."""
    fields.setdefault("user_column", "user_id" if "user_id" in frame.columns else None)
    split = Split(frame[side == 0], frame[side == 1] if validation else None, frame[side == 2], **fields)
    check_no_leakage(split)
    return split


def leave_last_out(interactions, *, user_col: str = "user_id", time_col: str = "timestamp",
                   min_interactions: int = 3) -> Split:
    """Per user, sorted by time (ties keep the input row order): last -> test, second-to-last ->
    validation, the rest -> train.

    Users with fewer than ``min_interactions`` interactions are kept wholly in train (they
    condition other users' models but are never evaluated); ``Split.summary()`` reports how
    many. Parts are ordered by user, then time, so train rows read as each user's history.

    Args:
      interactions: A DataFrame, :class:`InteractionData` or :class:`LabeledData`.
      user_col: The user column.
      time_col: The time column: unix seconds, or datetimes (naive = UTC).
      min_interactions: The fewest interactions of a user who is evaluated (at least 2).

    Returns:
      The split, method ``leave_last_out``.
    """
    frame = _frame(interactions, [user_col, time_col], "user_col/time_col")
    if min_interactions < 2:
        raise DataError(f"min_interactions={min_interactions} leaves a user without a validation row",
                        fix="pass min_interactions >= 2 (3 keeps at least one training interaction)")
    # Stable sorts: by time first, then by user, so equal times keep the input order.
    order = np.argsort(_times(frame[time_col], time_col), kind="stable")
    user_codes = pd.factorize(frame[user_col].to_numpy())[0]
    order = order[np.argsort(user_codes[order], kind="stable")]
    codes = user_codes[order]
    counts = np.bincount(codes)
    # Rows are grouped by user: a row's distance from its user's last row is (group end - 1) - position.
    from_end = np.cumsum(counts)[codes] - 1 - np.arange(len(codes))
    side = np.where(counts[codes] >= min_interactions, 2 - np.minimum(from_end, 2), 0)
    short_users = int((counts < min_interactions).sum())
    notes = [f"{short_users} user(s) with fewer than {min_interactions} interactions are wholly in train "
             "(not evaluated)"] if short_users else []
    return _split(frame.iloc[order], side, True, method="leave_last_out", user_column=user_col,
                  time_column=time_col, train_only_users=short_users, notes=notes)


def random_split(frame, *, test_fraction: float = 0.2, validation_fraction: float = 0.0,
                 seed: int = 42) -> Split:
    """Shuffle rows with a seeded permutation and cut off ``test_fraction`` (then
    ``validation_fraction``) of them; the TFRS tutorial's 80/20 is the default.

    Sizes are ``round(n * fraction)``; each part keeps the input's row order.

    Args:
      frame: A DataFrame, :class:`InteractionData` or :class:`LabeledData`.
      test_fraction: The share of rows in test.
      validation_fraction: The share of rows in validation (none when 0).
      seed: The shuffle's seed.

    Returns:
      The split, method ``random``.
    """
    frame = _frame(frame)
    if not (test_fraction > 0 and validation_fraction >= 0 and test_fraction + validation_fraction < 1):
        raise DataError(f"test_fraction={test_fraction} and validation_fraction={validation_fraction} leave "
                        f"no test or no training rows", fix="use test_fraction > 0, validation_fraction >= 0 "
                        "and test + validation < 1, e.g. 0.2 and 0.1")
    side = _sides(len(frame), test_fraction, validation_fraction, seed)
    if side is None:
        raise DataError(f"{len(frame)} rows are too few for test_fraction={test_fraction}, "
                        f"validation_fraction={validation_fraction}", fix="use more rows or larger fractions")
    return _split(frame, side, validation_fraction > 0, method="random")


def split_by_session(frame, session_col: str, *, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 42) -> Split:
    """Assign whole sessions to train / validation / test with a seeded shuffle of the session ids.

    Rows keep the input order inside each part.

    Args:
      frame: A DataFrame, :class:`InteractionData` or :class:`LabeledData`.
      session_col: The session column.
      fractions: The (train, validation, test) shares of the sessions (not rows); a validation share
        of 0 gives ``validation=None``.
      seed: The shuffle's seed.

    Returns:
      The split, method ``session``.
    """
    frame = _frame(frame, [session_col], "session_col")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"fractions={tuple(fractions)} must be three non-negative shares (train, validation, "
                        f"test) summing to 1", fix="pass e.g. fractions=(0.8, 0.1, 0.1)")
    if fractions[0] == 0 or fractions[2] == 0:
        raise DataError(f"fractions={tuple(fractions)} leave no training or no test sessions",
                        fix="give train and test a positive share")
    codes, sessions = pd.factorize(frame[session_col])  # sessions in order of first appearance
    side = _sides(len(sessions), fractions[2], fractions[1], seed)
    if side is None:
        raise DataError(f"{len(sessions)} sessions are too few for fractions={tuple(fractions)}",
                        column=session_col, fix="use more sessions, or larger validation/test shares")
    return _split(frame, side[codes], fractions[1] > 0, method="session", session_column=session_col)


def split_by_time(frame, time_col: str, *, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  session_col: str | None = None) -> Split:
    """The earliest rows train, the next ones validation, the latest test, cut at the times below which
    ``fractions`` of the rows fall: a production model is trained on the past and judged on what follows.

    Rows of one time stay on one side, so the parts hold about (not exactly) ``fractions`` of the rows;
    with ``session_col`` a session goes whole to the side of its first row's time.

    Args:
      frame: A DataFrame, :class:`InteractionData` or :class:`LabeledData`.
      time_col: The time column: datetimes, epoch seconds, or dates as text (``times.epoch_seconds``).
      fractions: The (train, validation, test) shares of the rows.
      session_col: The session column, if sessions are to stay whole.

    Returns:
      The split, method ``time``.
    """
    frame = _frame(frame, [time_col] + ([session_col] if session_col else []), "time_col")
    seconds = pd.Series(epoch_seconds(frame[time_col], time_col), index=frame.index)
    if seconds.isna().any():
        row = int(np.flatnonzero(seconds.isna().to_numpy())[0])
        raise DataError(f"{int(seconds.isna().sum())} row(s) without a time (the first: row {row} of the "
                        "table); a split by time places every row by it", column=time_col,
                        fix="fill or drop those rows, or choose --split random or session")
    if session_col:
        seconds = seconds.groupby(frame[session_col].to_numpy()).transform("min")
    ordered = np.sort(seconds.to_numpy())
    cuts = ordered[int(len(ordered) * fractions[0])], ordered[min(int(len(ordered) * sum(fractions[:2])),
                                                                  len(ordered) - 1)]
    side = (seconds.to_numpy() >= cuts[0]).astype(np.int8) + (seconds.to_numpy() >= cuts[1])
    if not all((side == part).any() for part in (0, 1, 2)):
        raise DataError(f"the rows' times cannot be cut into train, validation and test by time: the cuts "
                        f"fall at {cuts[0]:.0f} and {cuts[1]:.0f} seconds, where too many rows share a time",
                        column=time_col, fix="use a finer time column, or --split random / session")
    return _split(frame, side, True, method="time", time_column=time_col, session_column=session_col)


def _times(values: pd.Series, column: str) -> np.ndarray:
    """A time column as numbers in its order: datetimes as UTC nanoseconds (naive = UTC), numbers as is."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.dt.tz is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return values.to_numpy().astype("datetime64[ns]").astype(np.int64)
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise DataError(f"expected unix seconds or datetimes, found dtype {values.dtype}", column=column,
                        fix="convert the column with pd.to_datetime(..., utc=True) or to integer seconds")
    return values.to_numpy()


def check_no_leakage(split: Split, *, user_col: str | None = None, time_col: str | None = None,
                     session_col: str | None = None) -> None:
    """Raise :class:`DataError` when a held-out (validation or test) row can be seen in training.

    Always: no row (index label) is in two parts. By ``split.method``:
    ``leave_last_out`` — per user, no train interaction is later than the user's validation
    or test interaction, and validation is not later than test; ``time`` — no row is later than a row
    of a later part (without a session column); with a session column
    (argument or ``split.session_column``) — no session is on two sides.

    Args:
      split: The split.
      user_col: The user column (default: the split's, else ``user_id``).
      time_col: The time column (default: the split's, else ``timestamp``).
      session_col: The session column (default: the split's).
    """
    user_col = user_col or split.user_column or "user_id"
    time_col = time_col or split.time_column or "timestamp"
    session_col = session_col or split.session_column
    parts = split.parts()
    _check_disjoint_rows(parts)
    needed = {"leave_last_out": [user_col, time_col], "time": [time_col]}.get(split.method, [])
    for name, frame in parts.items():
        for col in needed + ([session_col] if session_col else []):
            if col not in frame.columns:
                raise DataError(f"the {name} part has no column '{col}' to check for leakage", column=col,
                                fix="pass user_col/time_col/session_col naming the columns the split was "
                                    "made on")
    if split.method == "leave_last_out":
        _check_temporal(parts, user_col, time_col)
    if split.method == "time" and not session_col:
        _check_order_in_time(parts, time_col)
    if session_col:
        _check_sessions(parts, session_col)


def _check_order_in_time(parts: dict[str, pd.DataFrame], time_col: str) -> None:
    # read as one column, so that the order of its dates (day or month first) is told once for all parts
    column = pd.concat([frame[time_col] for frame in parts.values()], ignore_index=True)
    seconds = epoch_seconds(column, time_col)
    ends = np.cumsum([0] + [len(frame) for frame in parts.values()])
    spans = [(name, seconds[start:end]) for name, start, end in zip(parts, ends, ends[1:])]
    for (early, a), (late, b) in zip(spans, spans[1:]):
        if len(a) and len(b) and a.max() > b.min():
            raise DataError(f"leaky split: a {early} row is later than a {late} row", column=time_col,
                            fix="split with split_by_time")


def _check_disjoint_rows(parts: dict[str, pd.DataFrame]) -> None:
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = parts[a].index.intersection(parts[b].index)
            if len(shared):
                raise DataError(f"leaky split: {len(shared)} row(s) are in both {a} and {b} (first index "
                                f"label {shared[0]!r})", fix="split with one of tfrs_recsys.data.splits' "
                                "functions, or give the frame a unique index before splitting")


def _check_temporal(parts: dict[str, pd.DataFrame], user_col: str, time_col: str) -> None:
    times_of = {name: pd.Series(_times(frame[time_col], time_col), index=frame[user_col].to_numpy())
                for name, frame in parts.items()}  # per part: the times, indexed by user
    latest_train = times_of.pop("train").groupby(level=0).max()
    for name, times in times_of.items():
        if times.index.has_duplicates:
            user = times.index[times.index.duplicated()][0]
            raise DataError(f"leaky split: user {user!r} has more than one {name} row", column=user_col,
                            fix="leave-last-out holds out exactly one interaction per user and part")
    # Each pair: an earlier part's times per user, and the held-out part that must not precede them.
    pairs = [("a training", latest_train, name) for name in times_of]
    if "validation" in times_of:
        pairs.append(("a validation", times_of["validation"], "test"))
    for what, earlier, name in pairs:
        times = times_of[name]
        later = earlier.reindex(times.index) > times
        if later.any():
            user = later.index[later.to_numpy()][0]
            raise DataError(f"leaky split: user {user!r} has {what} interaction later than their {name} "
                            f"interaction ({earlier[user]} > {times[user]})", column=time_col,
                            fix="hold out each user's last interaction as test and the one before as "
                                "validation (tfrs_recsys.data.splits.leave_last_out)")


def _check_sessions(parts: dict[str, pd.DataFrame], session_col: str) -> None:
    owner = pd.concat([pd.Series(name, index=pd.unique(frame[session_col].to_numpy()))
                       for name, frame in parts.items()])
    shared = owner.index.duplicated(keep=False)
    if shared.any():
        session = owner.index[shared][0]
        sides = " and ".join(owner[shared].loc[[session]].tolist())
        raise DataError(f"leaky split: session {session!r} has rows in both {sides} "
                        f"({owner.index[shared].nunique()} shared session(s))", column=session_col,
                        fix="assign whole sessions to one side (split_by_session)")

