"""Per-user item sequences for sequential retrieval, and the tf.data pipelines that feed them.

A user's sequence is every item they interacted with, oldest first: interactions are ordered by timestamp,
ties kept in file order (a stable sort; MovieLens has many ratings in the same second, so the tie rule
changes which item is "last").

The splits into training sequences and held-out targets (``leave_last_out``, ``random_80_20``) are in
:mod:`tfrs_recsys.data.sequence_splits`.

Training examples are fixed-width windows of the training sequences, left-padded with ``""``
(the most recent item is last, the serving contract):

* ``all_positions`` (SASRec): one window predicts every next item at once, ``history[t] ->
  targets[t] = history[t+1]``; a causal mask keeps position ``t`` from seeing the future. A long
  sequence is cut into windows; every training interaction is a target in exactly one of them.
* ``prefix``: one example per target item, its preceding items as the history and only
  the last position carries a target (the video-retrieval seed's expansion).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data import splits
from tfrs_recsys.data.bundles import FREE_TEXT_COLUMNS
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.number_text import numbers_hint
from tfrs_recsys.data.pipelines import without_autotune
from tfrs_recsys.data.schema import FeatureColumn, is_listlike
from tfrs_recsys.data.schema_inference import integer_codes
from tfrs_recsys.data.text_values import free_text
from tfrs_recsys.data.times import is_plain_number

PAD = ""


@dataclass
class Sequences:
    """One item sequence per user, oldest first."""

    user_ids: np.ndarray  # [U] str
    items: list[np.ndarray]  # U arrays of item ids (str)

    def __len__(self) -> int:
        return len(self.user_ids)

    def histories(self, users: Sequence[str]) -> list[np.ndarray]:
        """The sequence of each of ``users``; empty for a user without one."""
        lookup, empty = dict(zip(self.user_ids.tolist(), self.items)), np.array([], dtype=object)
        return [lookup.get(u, empty) for u in users]


@dataclass
class HeldOut:
    """Evaluation targets: for row i, ``user_ids[i]`` with ``histories[i]`` should retrieve ``targets[i]``.

    ``exclude`` holds the items ranking must skip for row i (the user's known history under
    leave-last-out; nothing under the tutorial protocol); ``seen`` the user's items known at evaluation, which
    a rule leaving "the history" out of ranking skips (None: ``histories``; under the tutorial protocol the
    whole training sequence, where the query reads only the items before the target).
    """

    user_ids: np.ndarray  # [N] str
    histories: list[np.ndarray]
    targets: np.ndarray  # [N] str
    exclude: list[np.ndarray]
    seen: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def repeat_share(self) -> float:
        """The share of targets the user had interacted with before: the ones that ranking with the history
        left out can never find (plays and purchases come back; ratings do not).

        Returns:
          That share, 0 to 1 (0 without targets).
        """
        seen = self.histories if self.seen is None else self.seen
        found = [target in set(items.tolist()) for target, items in zip(self.targets, seen)]
        return float(np.mean(found)) if found else 0.0


@dataclass
class SequenceSplit:
    """A retrieval split: training sequences, validation and test targets, and how they were made."""

    train: Sequences
    validation: HeldOut
    test: HeldOut
    full: Sequences  # every interaction: the histories a serving client would send
    protocol: str
    rows: splits.Split | None = None  # the interaction rows (with ratings) of each part


def user_sequences(interactions: pd.DataFrame) -> Sequences:
    """Group interactions by user, each user's items ordered by timestamp (stable: ties in file order).

    Args:
      interactions: rows with ``user_id``, ``item_id`` and ``timestamp``.

    Returns:
      The sequences, users sorted.
    """
    for col in ("user_id", "item_id"):
        bad = interactions[col].isna() | (interactions[col].astype(str) == PAD)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"interactions: empty {col} in interaction row {row}", column=col,
                            fix=f"drop or fill interactions without a {col}; '' is reserved for padding")
    frame = interactions[["user_id", "item_id", "timestamp"]].assign(_row=np.arange(len(interactions)))
    frame = frame.sort_values(["user_id", "timestamp", "_row"], kind="stable")
    # Each distinct id becomes one Python string, which every row holding it shares (a row's string of its
    # own would cost ~60 bytes per interaction: gigabytes at tens of millions of rows).
    users, user_ids = pd.factorize(frame["user_id"])
    codes, item_ids = pd.factorize(frame["item_id"])
    user_ids, item_ids = (np.asarray(pd.Index(ids).astype(str), dtype=object) for ids in (user_ids, item_ids))
    items = item_ids[codes]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return Sequences(user_ids[users[starts]], [items[s:e] for s, e in zip(starts, ends)])


def catalog_ids(interactions: pd.DataFrame) -> np.ndarray:
    """Every item that occurs in the interactions, sorted: the set retrieval ranks over."""
    return np.array(sorted(interactions["item_id"].astype(str).unique()), dtype=object)


def pad_left(histories: Sequence[Sequence], max_len: int) -> np.ndarray:
    """Histories (oldest first) as a ``[N, max_len]`` object array of ``str``, padded on the left.

    Each row keeps its ``max_len`` most recent items, right-aligned after ``""`` padding, so the
    most recent item is always at position ``max_len - 1``: where the Transformer query tower reads
    its state and where the retrieval signature expects it. Items that are not strings become
    ``str`` (integers as decimals).

    Args:
      histories: item ids per row, oldest first.
      max_len: the width of the array, >= 1.

    Returns:
      The ``[N, max_len]`` array.
    """
    if max_len < 1:
        raise DataError(f"max_len={max_len}", fix="pass max_len >= 1")
    out = np.full((len(histories), max_len), PAD, dtype=object)
    for row, items in enumerate(histories):
        recent = [x if isinstance(x, str) else str(x) for x in list(items)[-max_len:]]
        out[row, max_len - len(recent):] = recent
    return out


def training_windows(train: Sequences, max_len: int, *, mode: str = "all_positions",
                     stride: int | None = None) -> dict[str, np.ndarray]:
    """Training examples ``{user_id [N], history [N, L], targets [N, L]}`` of item ids ("" = none).

    ``targets[n, t]`` is the item that follows ``history[n, :t+1]``; the loss is taken where it is not
    ``""``. ``stride`` (all_positions, default ``max_len``) is how far consecutive windows of a long
    sequence are apart. Each target counts once, in the earliest window that holds it, among that
    window's last ``stride`` positions: it sees at least ``max_len - stride + 1`` items before it (all
    of them near the sequence's start); with ``stride = max_len`` a window's first target sees one.

    Args:
      train: the training sequences.
      max_len: the window width ``L``.
      mode: ``all_positions`` or ``prefix`` (module docstring).
      stride: distance of consecutive ``all_positions`` windows.

    Returns:
      The windows as arrays, with ``sequence`` (the row of ``train`` each came from) and ``start`` (the
      index in that sequence of its first history item: the items before it are not in the window).
    """
    stride = max_len if stride is None else stride
    if not 1 <= stride <= max_len:
        raise ValueError(f"stride must be in [1, max_len = {max_len}], got {stride}")
    users, histories, targets, rows, starts = [], [], [], [], []
    for row, (user, seq) in enumerate(zip(train.user_ids, train.items)):
        n = len(seq)
        if mode == "prefix":
            for j in range(1, n):
                users.append(user)
                histories.append(seq[max(0, j - max_len):j])
                targets.append(np.r_[np.full(min(j, max_len) - 1, PAD, dtype=object), seq[j:j + 1]])
                rows.append(row)
                starts.append(max(0, j - max_len))
            continue
        end = n  # the window's history is seq[start:end - 1], its targets seq[start + 1:end]
        while end > 1:
            start = max(0, end - 1 - max_len)
            # Its own targets: the last `stride` (all that are left once it reaches the start).
            first = start + 1 if start == 0 else end - stride
            window_targets = seq[start + 1:end].copy()
            window_targets[np.arange(start + 1, end) < first] = PAD
            users.append(user)
            histories.append(seq[start:end - 1])
            targets.append(window_targets)
            rows.append(row)
            starts.append(start)
            end = 1 if start == 0 else end - stride
    return {"user_id": np.array(users, dtype=object), "history": pad_left(histories, max_len),
            "targets": pad_left(targets, max_len), "sequence": np.array(rows, dtype=np.int64),
            "start": np.array(starts, dtype=np.int64)}


def catalog_positions(train: Sequences, catalog: np.ndarray) -> list[np.ndarray]:
    """Each training sequence as int32 positions in ``catalog`` (-1: not in it), for ``seen_before``."""
    index = pd.Index(catalog)
    return [index.get_indexer(np.asarray(s, dtype=object)).astype(np.int32) for s in train.items]


def training_dataset(windows: dict[str, np.ndarray], batch_size: int, *, seed: int = 42,
                     shuffle: bool = True, sequence_positions: list[np.ndarray] | None = None):
    """A reshuffled-each-epoch ``tf.data.Dataset`` of string feature dicts from ``training_windows``.

    Windows are batched with others of similar length and each batch drops its all-padding
    columns on the left (right-aligned windows keep their newest item in the last column), so
    short histories do not pay for the width of long ones.

    Args:
      windows: the output of :func:`training_windows`.
      batch_size: windows per batch.
      seed: the shuffle seed.
      shuffle: reshuffle every epoch.
      sequence_positions: :func:`catalog_positions` of the windows' sequences: each batch then has
        ``seen_before`` ``[B, E]`` int32, the catalog position + 1 of every item its sequence held before
        the window (0: padding), for the model's ``exclude_seen``.

    Returns:
      The ``tf.data.Dataset``.
    """
    import tensorflow as tf

    n = len(windows["user_id"])
    if n == 0:
        raise DataError("no training examples: every user has fewer than two training interactions",
                        fix="use more interactions per user")
    width, lengths = windows["history"].shape[1], _lengths(windows)
    ds = tf.data.Dataset.from_tensor_slices({**{k: tf.constant(windows[k].astype(str))
                                                for k in ("user_id", "history", "targets")},
                                             "length": lengths, "sequence": windows["sequence"],
                                             "start": windows["start"]})
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if sequence_positions is not None:
        sequences = tf.RaggedTensor.from_row_lengths(
            np.concatenate([*sequence_positions, np.zeros(0, np.int32)]) + 1,
            np.array([len(p) for p in sequence_positions], np.int64))
        ds = ds.map(lambda x: {**x, "seen_before": sequences[x["sequence"]][:x["start"]]},
                    num_parallel_calls=tf.data.AUTOTUNE)
    edges = _bucket_edges(width)
    ds = ds.bucket_by_sequence_length(lambda x: x["length"], bucket_boundaries=edges,
                                      bucket_batch_sizes=[batch_size] * (len(edges) + 1))

    def trim(batch):
        keep = width - tf.reduce_max(batch["length"])
        trimmed = {"user_id": batch["user_id"], "history": batch["history"][:, keep:],
                   "targets": batch["targets"][:, keep:]}
        if "seen_before" in batch:
            trimmed["seen_before"] = batch["seen_before"]
        return trimmed

    return without_autotune(ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def _lengths(windows: dict[str, np.ndarray]) -> np.ndarray:
    return (windows["history"] != PAD).sum(axis=1).astype(np.int32)


def _bucket_edges(width: int) -> list[int]:
    """The history lengths that start a new batch bucket of :func:`training_dataset`."""
    return [b + 1 for b in sorted({max(2, width * f // 16) for f in (1, 2, 4, 8, 12)} - {width})]


def training_batches(windows: dict[str, np.ndarray], batch_size: int) -> int:
    """The batches of one epoch of :func:`training_dataset` (each length bucket ends with a partial one)."""
    edges = _bucket_edges(windows["history"].shape[1])
    bucket = np.searchsorted(edges, _lengths(windows), side="right")
    return int(np.ceil(np.bincount(bucket, minlength=len(edges) + 1) / batch_size).sum())


def item_probabilities(train: Sequences, catalog: np.ndarray, *, smoothing: float = 1.0) -> np.ndarray:
    """P(item is a training target), for the logQ correction of sampled softmax.

    Args:
      train: the training sequences (every item after a sequence's first is a target).
      catalog: the item ids.
      smoothing: added to every item's count.

    Returns:
      float32 probabilities aligned with ``catalog``.
    """
    targets = np.concatenate([np.asarray(s[1:], dtype=object) for s in train.items] + [np.array([], object)])
    counts = smoothing + np.bincount(pd.Index(catalog).get_indexer(targets), minlength=len(catalog))
    return (counts / counts.sum()).astype(np.float32)


# --- content features of items and users, looked up by id inside the towers ---------------------

def _is_list_column(values: pd.Series) -> bool:
    sample = values.dropna().head(100)
    return len(sample) > 0 and all(is_listlike(v) for v in sample)


def infer_entity_columns(frame: pd.DataFrame | None, key: str, group: str, *, max_categories: int = 100,
                         exclude: tuple[str, ...] = FREE_TEXT_COLUMNS
                         ) -> tuple[list[str], dict[str, str]]:
    """Columns usable as features: lists, numbers, strings with 2 to ``max_categories`` values.

    Args:
      frame: the item or user table (None: no columns).
      key: its id column.
      group: ``item`` or ``user``, for the messages.
      max_categories: the most distinct values of a usable string column.
      exclude: free-text columns.

    Returns:
      (usable columns, {skipped column: why}) so the caller can report what it left out.
    """
    if frame is None:
        return [], {}
    usable, skipped = [], {}
    for col in (c for c in frame.columns if c != key):
        values, lists = frame[col], _is_list_column(frame[col])
        distinct = 2 if lists else values.dropna().astype(str).nunique()
        prose = col in exclude or not lists and not is_plain_number(values) and free_text(
            values.dropna().astype(str).value_counts())
        if prose or distinct < 2:
            skipped[col] = "free text" if prose else "one value or none: it tells no two ids apart"
        elif lists or is_plain_number(values) or distinct <= max_categories:
            usable.append(col)
        else:
            skipped[col] = numbers_hint(values, col) or (f"{distinct} distinct values (> {max_categories}); "
                                                         f"{group} id already covers it")
    return usable, skipped


def entity_features(frame: pd.DataFrame | None, key: str, keys: np.ndarray, columns: list[str], *,
                    group: str, kinds: dict[str, str] | None = None
                    ) -> tuple[list[FeatureColumn], dict[str, np.ndarray]]:
    """Feature tables aligned with ``keys``: one row per key, built from ``frame`` (one row per key).

    Categorical columns become int32 indices ``[len(keys)]`` and multi-valued ones index matrices
    ``[len(keys), M]`` into the column's vocabulary (1-based, 0 = no value, so a mean over non-zero
    entries pools a list): :class:`~tfrs_recsys.features.embeddings.FieldEmbeddings` inputs;
    numeric columns become standardized float32 vectors (missing -> 0, the mean). Keys missing
    from ``frame`` get no values. A named column that the frame lacks is an error.

    Args:
      frame: the item or user table, one row per key.
      key: its id column.
      keys: the ids to align the tables with.
      columns: the feature columns.
      group: ``item`` or ``user``.
      kinds: Each column's kind as a trained run's spec holds it (a reloaded run reads its tables as it
        trained on them); None: read from the values.

    Returns:
      (feature columns of the spec, ``{column: table}``).
    """
    if not columns:
        return [], {}
    if frame is None:
        raise DataError(f"{group} feature columns {columns} were requested but the data has no {group} table",
                        column=columns[0], fix=f"drop the {group} feature columns, or load {group} metadata")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{group} feature column(s) {missing} not in the {group} table "
                        f"(columns: {list(frame.columns)})", column=missing[0], fix="name existing columns")
    key_text = frame[key].astype(str)
    dupes = key_text.duplicated()
    if dupes.any():
        raise DataError(f"{group} table lists {key} '{key_text[dupes].iloc[0]}' twice", column=key,
                        fix=f"keep one row per {key}")
    aligned = frame.assign(**{key: key_text}).set_index(key).reindex(pd.Index(keys, dtype=object))
    specs, tables = [], {}
    for col in columns:
        values = aligned[col]
        kind = (kinds or {}).get(col) or ("multi_categorical" if _is_list_column(frame[col]) else "numeric" if
                                          is_plain_number(frame[col]) and not integer_codes(
                                              col, frame[col], integral_floats=True) else "categorical")
        if kind == "multi_categorical":
            lists = [list(v) if is_listlike(v) else [] for v in values]
            vocab = sorted({str(x) for row in lists for x in row})
            lookup = {v: i + 1 for i, v in enumerate(vocab)}
            width = max([len(r) for r in lists] + [1])
            table = np.zeros((len(keys), width), dtype=np.int32)
            for r, row in enumerate(lists):
                table[r, :len(row)] = [lookup[str(x)] for x in row]
            specs.append(FeatureColumn(col, "multi_categorical", group, "vocabulary", vocabulary=vocab))
        elif kind == "numeric":
            x = values.to_numpy(dtype=np.float64)
            finite = np.isfinite(x).any()
            mean, std = (float(np.nanmean(x)), float(np.nanstd(x)) or 1.0) if finite else (0.0, 1.0)
            table = np.nan_to_num((x - mean) / std, nan=0.0).astype(np.float32)
            specs.append(FeatureColumn(col, "numeric", group, "none", mean=mean, std=std,
                                       raw_dtype="float32"))
        else:  # missing values stay missing: index 0; codes as written (119, not 119.0 beside a gap)
            text = (values.astype("Int64") if is_plain_number(values) else values).astype("string")
            vocab = sorted(set(text.dropna()))
            table = text.map({v: i + 1 for i, v in enumerate(vocab)}).fillna(0).to_numpy(dtype=np.int32)
            specs.append(FeatureColumn(col, "categorical", group, "vocabulary", vocabulary=vocab))
        tables[col] = table
    return specs, tables
