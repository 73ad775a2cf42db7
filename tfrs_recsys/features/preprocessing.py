"""Raw features -> model-ready tensors, inside the graph, so a SavedModel serves raw inputs.

Raw inputs (what :func:`frame_to_raw`, the tf.data pipelines and serving clients send), one
tensor per feature, shape ``[B]`` or ``[B, 1]``:

* ``id`` / ``categorical`` / ``multi_categorical``: ``tf.string`` (multi-valued joined by the
  column's separator), or ``tf.int64`` for integer categories (:func:`raw_dtype`); either is accepted;
* ``numeric``: ``tf.float32``; ``timestamp``: ``tf.float64`` epoch seconds (or milli-, micro-,
  nanoseconds, told apart by their size as the data layer does); NaN = missing.

Training encodes its rows once, ahead of the steps (:func:`encode_frame`), and hands the model the
encoded batches marked with :func:`as_encoded`; the preprocessor passes those through. A training
step then only embeds and runs the towers, while serving and evaluation send raw features through
the same model and the same vocabularies.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_recsys.data.input_names import signature_name
from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec, frame_to_raw
from tfrs_recsys.data.times import EPOCH_UNITS

# What one timestamp becomes: cyclic hour-of-day and weekday (UTC), and the standardized time.
TIMESTAMP_FEATURES = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "value")
_DAY = 86_400.0
_EPOCH_WEEKDAY = 3.0  # 1970-01-01 was a Thursday; Monday = 0
# Standardized values are clipped to +-MAX_SIGMAS: an absurd input (3e38) moves a score no further than a
# 100-sigma outlier does, and can never overflow the layers into NaN; real values stay far inside.
MAX_SIGMAS = 100.0
# A list cell's values read: its first 256 (empty ones count; the rest are left out), and at most about 4M
# pieces in one call, counted before the split from the cells' lengths (16,384 rows, as training scores at
# once, never exceed it): a string is split into a tensor element per value, so unbounded, a request of
# separators would make hundreds of millions.
MAX_LIST_VALUES = 256
MAX_CALL_LIST_VALUES = (MAX_LIST_VALUES + 1) * (1 << 14)
# The reserved key under which a batch carries features that are already encoded.
ENCODED = "__encoded__"


def mask_key(name: str) -> str:
    """Key of a multi-valued feature's mask in :class:`FeaturePreprocessor` outputs."""
    return name + "__mask"


def as_encoded(encoded: dict[str, tf.Tensor]) -> dict[str, dict[str, tf.Tensor]]:
    """Mark :class:`FeaturePreprocessor` outputs as encoded: ``{ENCODED: encoded}``, which every
    preprocessor returns unchanged (``encoded`` must come from a preprocessor of the same spec)."""
    return {ENCODED: encoded}


def raw_input_specs(spec: FeatureSpec) -> dict[str, tf.TensorSpec]:
    """Serving-signature inputs of a spec's raw features.

    Args:
      spec: the feature spec.

    Returns:
      ``{feature: tf.TensorSpec([None])}`` of the feature's :func:`raw_dtype`, named
      :func:`~tfrs_recsys.data.input_names.signature_name`.
    """
    return {f.name: tf.TensorSpec([None], raw_dtype(f), name=signature_name(f.name)) for f in spec.features}


def raw_dtype(column: FeatureColumn) -> tf.DType:
    """What a client sends for a column: ``tf.int64`` for integer categories (an hour, a category code;
    ``raw_dtype`` ``int64`` in the spec), ``tf.string`` for the other categorical kinds, ``tf.float64`` for
    timestamps (epoch seconds, exact; a JSON integer such as 1700000000 converts without loss) and
    ``tf.float32`` for numbers."""
    if column.is_categorical:
        return tf.int64 if column.raw_dtype == "int64" else tf.string
    return tf.float64 if column.kind == "timestamp" else tf.float32


def joins_with_bar(column: FeatureColumn) -> bool:
    """Whether a multi_categorical column whose separator is not ``|`` also splits its text on ``|``: true
    unless a value of its vocabulary holds one. A list is then sent the same way to every column."""
    return column.separator != "|" and not any("|" in v for v in column.vocabulary or ())


class FeaturePreprocessor(tf.keras.layers.Layer):
    """Maps a dict of raw feature tensors to model-ready tensors, per the spec's columns.

    * categorical / id: ``int64 [B]`` in ``[0, cardinality)``, the user and item ids stripped of spaces.
      Vocabulary: 0 is the OOV bucket (unknown values, never an error) and ``vocabulary[i]`` is ``i + 1``;
      hash: ``fingerprint(x) mod num_buckets``.
    * multi_categorical: ``int64 [B, M]`` indices under the feature's name and a ``float32 [B, M]``
      mask under :func:`mask_key` (1 for a value, 0 for padding); M is the longest row of the batch.
      Values are split on the separator and stripped; "" means no values. Values joined by ``|`` are
      split alike where no value of the vocabulary holds a ``|`` (:func:`joins_with_bar`). A cell's first
      :data:`MAX_LIST_VALUES` pieces are read, and a call may hold :data:`MAX_CALL_LIST_VALUES` in all.
    * numeric: ``float32 [B]``, ``(x - mean) / std`` clipped to ``+-MAX_SIGMAS`` (``x`` first clipped to
      the spec's ``clip_low``..``clip_high``, where it has them); missing (NaN, inf) -> 0,
      i.e. the mean.
    * timestamp: ``float32 [B, 5]`` = sin and cos of 2 pi hour/24 and of 2 pi weekday/7 (UTC), and
      ``(min(t, newest) - mean) / std`` clipped to ``+-MAX_SIGMAS``; missing -> zeros.

    The vocabularies are layer state, so any SavedModel containing the layer carries them.
    Inputs marked with :func:`as_encoded` are returned as they are (encoded once, ahead of training).

    Args:
      spec: the feature spec, with the vocabularies and statistics of its columns.
    """

    def __init__(self, spec: FeatureSpec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self._encoders = {f.name: _encoder(f) for f in spec.features if f.is_categorical}
        # read once: a vocabulary scanned on every call would cost each eager batch its length
        self._bar_joined = {f.name for f in spec.features
                            if f.kind == "multi_categorical" and joins_with_bar(f)}

    def call(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Encode raw features.

        Args:
          inputs: one ``[B]`` or ``[B, 1]`` tensor per spec feature, or :func:`as_encoded` outputs.

        Returns:
          The model-ready tensors described in the class docstring.

        Raises:
          ValueError: a feature is missing or has another shape.
          TypeError: a categorical feature is neither a string nor an integer tensor.
        """
        if ENCODED in inputs:
            return dict(inputs[ENCODED])
        out: dict[str, tf.Tensor] = {}
        for f in self.spec.features:
            if f.name not in inputs:
                raise ValueError(f"raw feature '{f.name}' is missing from the inputs (got {sorted(inputs)}); "
                                 f"send every feature of the spec, missing values as '' or NaN")
            x = _flatten(inputs[f.name], f.name)
            if f.kind == "multi_categorical":
                out[f.name], out[mask_key(f.name)] = self._multi(f, _as_text(x, f))
            elif f.is_categorical:
                text = _as_text(x, f)
                if f.name in (self.spec.user_column, self.spec.item_column) and text.dtype == tf.string:
                    text = tf.strings.strip(text)  # " a-00242 " is the id "a-00242", as the data reads it
                out[f.name] = self._encoders[f.name](text)
            elif f.kind == "timestamp":
                out[f.name] = _timestamp(_as_float(x), f)
            else:
                out[f.name] = _standardize(_as_float(x), f)
        return out

    def _multi(self, column: FeatureColumn, text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if column.name in self._bar_joined:  # a list joined by "|" (the serving client's way) reads alike
            text = tf.strings.regex_replace(text, r"\|", column.separator)
        # a cell splits into at most its bytes + 1 pieces, and into at most MAX_LIST_VALUES + 1 as split here
        pieces = tf.minimum(tf.cast(tf.strings.length(text), tf.int64) + 1, MAX_LIST_VALUES + 1)
        checked = tf.debugging.assert_less_equal(
            tf.reduce_sum(pieces), tf.constant(MAX_CALL_LIST_VALUES, tf.int64),
            message=f"input '{signature_name(column.name)}' holds more than {MAX_CALL_LIST_VALUES} list "
                    f"pieces in one call (a cell counts its bytes + 1, at most {MAX_LIST_VALUES + 1}): send "
                    "fewer rows at once")
        with tf.control_dependencies([checked]):  # in a graph too, nothing is split before the check
            text = tf.identity(text)
        tokens = tf.strings.split(text, column.separator, maxsplit=MAX_LIST_VALUES)[:, :MAX_LIST_VALUES]
        tokens = tf.strings.strip(tokens)
        tokens = tf.ragged.boolean_mask(tokens, tf.not_equal(tokens, ""))
        ids = tf.ragged.map_flat_values(self._encoders[column.name], tokens)
        return ids.to_tensor(0), tf.ones_like(ids, dtype=tf.float32).to_tensor(0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "spec": self.spec.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "FeaturePreprocessor":
        config = dict(config)
        return cls(FeatureSpec.from_dict(config.pop("spec")), **config)


def _encoder(column: FeatureColumn) -> tf.keras.layers.Layer:
    """A categorical column's index lookup: its vocabulary (0 = OOV) or its hash buckets."""
    if column.encoding == "vocabulary":
        # An array: a list attribute would be walked on every access to the model's weights.
        return tf.keras.layers.StringLookup(vocabulary=np.asarray(column.vocabulary, dtype=object),
                                            num_oov_indices=1,
                                            name=f"lookup_{signature_name(column.name)}")
    return tf.keras.layers.Hashing(column.num_buckets, name=f"hash_{signature_name(column.name)}")


def encode_frame(frame: pd.DataFrame, spec: FeatureSpec, *, chunk: int = 16_384) -> dict[str, np.ndarray]:
    """Every row of ``frame`` encoded once, as :class:`FeaturePreprocessor` encodes it, in NumPy arrays.

    Encoded eagerly, so a training pipeline can gather batches of ready indices instead of parsing
    strings every step.

    Args:
      frame: the rows, with a column per spec feature.
      spec: the feature spec.
      chunk: rows encoded per preprocessor call.

    Returns:
      The preprocessor's outputs (same keys and dtypes) for every row; a multi-valued feature's
      indices and mask are padded to the longest row of the whole frame.
    """
    preprocessor = FeaturePreprocessor(spec)
    raw = frame_to_raw(frame, spec)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(frame), chunk):
        batch = preprocessor({k: tf.constant(v[start:start + chunk]) for k, v in raw.items()})
        for key, value in batch.items():
            parts.setdefault(key, []).append(value.numpy())
    for key, values in parts.items():
        if values[0].ndim == 2:  # a multi-valued feature: pad every chunk to the widest one
            width = max(v.shape[1] for v in values)
            parts[key] = [np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in values]
    return {key: np.concatenate(values) for key, values in parts.items()}


def _flatten(x: tf.Tensor, name: str) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if x.shape.rank == 2 and x.shape[-1] == 1:
        return tf.squeeze(x, axis=-1)
    if x.shape.rank != 1:
        raise ValueError(f"raw feature '{name}' must have shape [B] or [B, 1], got {x.shape}")
    return x


def _as_text(x: tf.Tensor, column: FeatureColumn) -> tf.Tensor:
    if x.dtype.is_integer:
        x = tf.strings.as_string(x)
    elif x.dtype != tf.string:
        raise TypeError(
            f"categorical feature '{column.name}' takes tf.string (or integers), got {x.dtype.name}")
    elif column.integer_values:
        x = tf.strings.regex_replace(tf.strings.strip(x), r"^(-?\d+)\.0*$", r"\1")
    if column.boolean_values:  # any case, 1 and 0: the true and false as training's data spelled them
        words = {str(v).lower(): str(v) for v in reversed(column.vocabulary or [])}
        yes, no = words.get("true", "True"), words.get("false", "False")
        spelled = tf.strings.lower(tf.strings.strip(x))
        x = tf.where(tf.equal(spelled, "true") | tf.equal(spelled, "1"), yes,
                     tf.where(tf.equal(spelled, "false") | tf.equal(spelled, "0"), no, x))
    return x


def _as_float(x: tf.Tensor) -> tf.Tensor:
    if x.dtype == tf.string:
        x = tf.strings.to_number(tf.where(tf.equal(tf.strings.strip(x), ""), "nan", x), tf.float64)
    return tf.cast(x, tf.float64)


def _scaled(x: tf.Tensor, mean: float | None, std: float | None) -> tf.Tensor:
    return (x - (mean or 0.0)) / (std or 1.0)


def _standardize(x: tf.Tensor, column: FeatureColumn) -> tf.Tensor:
    if column.clip_low is not None and column.clip_high is not None:  # as the spec's statistics were taken
        bounded = tf.clip_by_value(x, tf.cast(column.clip_low, x.dtype), tf.cast(column.clip_high, x.dtype))
        x = tf.where(tf.math.is_finite(x), bounded, x)  # missing stays missing: the mean
    z = _scaled(x, column.mean, column.std)
    z = tf.clip_by_value(tf.where(tf.math.is_finite(z), z, tf.zeros_like(z)), -MAX_SIGMAS, MAX_SIGMAS)
    return tf.cast(z, tf.float32)


def _epoch_seconds(t: tf.Tensor) -> tf.Tensor:
    """Epoch numbers as seconds, by the data layer's rule (:data:`~tfrs_recsys.data.times.EPOCH_UNITS`): a
    client sending a log's own milliseconds is read as training read them."""
    size, per_second = tf.abs(t), tf.ones_like(t)
    for at, units in EPOCH_UNITS[::-1]:  # the largest last, so it wins
        per_second = tf.where(size >= at, tf.constant(units, t.dtype), per_second)
    return t / per_second


def _timestamp(t: tf.Tensor, column: FeatureColumn) -> tf.Tensor:
    t = _epoch_seconds(t)
    hour = 2.0 * math.pi * tf.math.floormod(t, _DAY) / _DAY
    weekday = 2.0 * math.pi * tf.math.floormod(tf.math.floor(t / _DAY) + _EPOCH_WEEKDAY, 7.0) / 7.0
    # Requests come after the training data; their time is standardized as the newest training time.
    capped = t if column.newest is None else tf.minimum(t, tf.cast(column.newest, t.dtype))
    scaled = tf.clip_by_value(_scaled(capped, column.mean, column.std), -MAX_SIGMAS, MAX_SIGMAS)
    feats = tf.stack([tf.sin(hour), tf.cos(hour), tf.sin(weekday), tf.cos(weekday), scaled], axis=-1)
    valid = tf.math.is_finite(t)[:, None]
    return tf.cast(tf.where(valid, feats, tf.zeros_like(feats)), tf.float32)
