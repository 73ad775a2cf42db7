"""tf.data input pipelines over in-memory frames, yielding RAW features.

Raw means what a serving client sends: one tensor of shape [B] per feature-spec column,
``tf.string`` for ``id`` / ``categorical`` / ``multi_categorical`` (integers as decimal
strings, lists joined by the column's separator, default ``|``, missing = ``""``) and
``float32`` for ``numeric`` / ``timestamp`` (missing = NaN). The features stage turns them
into indices and standardized values inside the model, so training and serving share
one code path. :func:`tfrs_recsys.data.schema.frame_to_raw` is the single place a frame becomes
raw arrays.

Pipeline design: the columns are converted once and held as in-memory tensors; each epoch
draws a seeded permutation of the row indices in one op and every batch is a vectorized
``tf.gather`` of those indices (one per dtype: the 1-D columns of a dtype are held as one
matrix). That is a shuffle whose buffer is the whole data set at the cost of 8 bytes per row,
without the per-example work of a ``from_tensor_slices -> cache -> shuffle -> batch`` chain.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.schema import frame_to_raw


def frame_to_label_columns(frame: pd.DataFrame, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """One float32 array per label column.

    Args:
      frame: the rows.
      labels: the label columns.

    Returns:
      ``{label: float32 [len(frame)]}``.

    Raises:
      DataError: a label column is absent, or a value is missing or not a number.
    """
    out = {}
    for name in labels:
        if name not in frame.columns:
            raise DataError(f"label column '{name}' of the feature spec is not in the data", column=name,
                            fix="add the label column to the data, or correct the spec's labels")
        values = frame[name]
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        missing = np.isnan(numbers)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(f"{int(missing.sum())} missing or non-numeric label value(s), first "
                            f"{values.iloc[row]!r} at row {row}", column=name,
                            fix="drop unlabeled rows, or fill the label (0 for no event)")
        out[name] = numbers
    return out


def without_autotune(ds):
    """``ds`` with tf.data's autotuner off: parallel maps then run on every core (at most 16) and
    prefetch buffers grow while the consumer finds them empty.

    Every training input of the package carries it; options pass through ``zip``, ``map`` and
    ``prefetch``, so the inputs built on these carry it too. With the autotuner on (TensorFlow 2.20),
    deleting an iterator, which ``Model.fit`` does when it returns, waits for the autotuner's thread to
    wake from a sleep whose period doubles while the iterator runs: a fit could end with seconds to a
    minute of idle waiting after its last step (docs/benchmarks.md, "The wait after the last step"). A
    training step costs several times the input work of its batch, so there is little to tune.

    Args:
      ds: a ``tf.data.Dataset``.

    Returns:
      The same dataset with the option set.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def dataset_from_arrays(arrays: Mapping[str, np.ndarray], *, batch_size: int, shuffle: bool = True,
                        seed: int = 42, labels: Mapping[str, np.ndarray] | None = None, cache: bool = True,
                        drop_remainder: bool = False, repeat: bool = False):
    """Batches of ``arrays`` (a dict of equal-length arrays) as a tf.data.Dataset.

    Yields dicts of [B, ...] tensors, or ``(features, labels)`` when ``labels`` is given.
    ``shuffle``: a fresh permutation of all rows every epoch (seeded: the same ``seed`` gives
    the same sequence of epochs); every row appears exactly once per epoch (``drop_remainder``
    leaves out the last ``n mod batch_size`` rows of each epoch's permutation). ``repeat``: epochs
    follow each other forever (each ends with its own partial batch unless ``drop_remainder``).
    ``cache``: with a fixed order (``shuffle=False``) the assembled batches are kept after the
    first pass; shuffled batches differ every epoch and read from in-memory tensors anyway.

    Args:
      arrays: the feature arrays, equal lengths.
      batch_size: rows per batch.
      shuffle: a fresh seeded permutation every epoch.
      seed: the shuffle seed.
      labels: label arrays, optional.
      cache: keep the assembled batches of a fixed order.
      drop_remainder: leave out each epoch's last partial batch.
      repeat: epochs follow each other forever.

    Returns:
      The ``tf.data.Dataset``.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size={batch_size}", fix="pass batch_size >= 1")
    if not arrays:
        raise DataError("no feature arrays to batch", fix="pass at least one feature")
    named = {**{("features", k): v for k, v in arrays.items()},
             **{("labels", k): v for k, v in (labels or {}).items()}}
    lengths = {key[1]: len(v) for key, v in named.items()}
    n = next(iter(lengths.values()))
    if any(length != n for length in lengths.values()):
        raise DataError(f"arrays have different lengths {lengths}", column=min(lengths, key=lengths.get),
                        fix="build every array from the same rows")
    if n == 0:
        raise DataError("no rows to batch", fix="check the frame or split is not empty")
    # 1-D columns of one dtype are held as ONE [n, k] tensor: a batch is one gather per dtype, and the
    # dataset captures a few tensors, not one per column (each capture costs at every new iterator).
    named = {key: np.asarray(v) for key, v in named.items()}
    groups: dict = {}
    for key, v in named.items():
        groups.setdefault(v.dtype if v.ndim == 1 else key, []).append(key)
    tensors = {tuple(keys): tf.constant(np.stack([named[k] for k in keys], axis=1) if len(keys) > 1
                                        else named[keys[0]]) for keys in groups.values()}
    stop = n - n % batch_size if drop_remainder else n
    if stop == 0:
        raise DataError(f"{n} rows make no full batch of {batch_size} with drop_remainder=True",
                        fix="use a smaller batch_size or drop_remainder=False")

    def assemble(indices):
        batch = {}
        for keys, t in tensors.items():
            rows = tf.gather(t, indices)
            batch.update(zip(keys, tf.unstack(rows, axis=1)) if len(keys) > 1 else [(keys[0], rows)])
        features = {k: batch[("features", k)] for k in arrays}
        if labels is None:
            return features
        return features, {k: batch[("labels", k)] for k in labels}

    batches_per_epoch = -(-stop // batch_size)
    if shuffle:
        # Step i of epoch e takes rows order_e[i B:(i + 1) B] of a permutation drawn at the epoch's first
        # step from a seeded stream that is redrawn on every new iteration. A scan carries the
        # permutation from step to step (no dataset per epoch to build, as flat_map would).
        def next_indices(order, step_and_draw):
            step, draw = step_and_draw
            position = step % batches_per_epoch
            shuffled = lambda: tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([draw, tf.constant(seed, tf.int64)]))
            order = tf.cond(tf.equal(position, 0), shuffled, lambda: order)
            start = position * batch_size
            return order, order[start:tf.minimum(start + batch_size, stop)]

        steps = tf.data.Dataset.range(2 ** 62 if repeat else batches_per_epoch)
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((steps, draws)).scan(tf.range(n, dtype=tf.int64), next_indices)
        ds = ds.map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        starts = tf.data.Dataset.range(0, stop, batch_size)
        ds = starts.map(lambda start: assemble(tf.range(start, tf.minimum(start + batch_size, stop))),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if cache:
            ds = ds.cache()
        if repeat:
            ds = ds.repeat()
    return without_autotune(ds.prefetch(tf.data.AUTOTUNE))


def labeled_dataset(frame: pd.DataFrame, spec, *, batch_size: int, shuffle: bool = True, seed: int = 42,
                    cache: bool = True, drop_remainder: bool = False, repeat: bool = False):
    """``(raw feature dict, label dict)`` batches of ``frame`` for the features of ``spec``
    and its labels (float32 each).

    Args:
      frame: labeled rows.
      spec: the feature spec (features and labels).
      batch_size, shuffle, seed, cache, drop_remainder, repeat: as in :func:`dataset_from_arrays`.

    Returns:
      The ``tf.data.Dataset``.
    """
    if not spec.labels:
        raise DataError("the feature spec names no label columns", fix="list the labels in the spec")
    return dataset_from_arrays(frame_to_raw(frame, spec), batch_size=batch_size, shuffle=shuffle, seed=seed,
                               labels=frame_to_label_columns(frame, spec.labels), cache=cache,
                               drop_remainder=drop_remainder, repeat=repeat)
