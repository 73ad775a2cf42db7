"""Raw feature batches across the boundary into TensorFlow: a record batch's features as a few arrays, no
Python object per value (:func:`pack`), and the raw tensors again inside the graph (:func:`unpack`).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from tfrs_recsys.data.schema import MISSING_INT, FeatureSpec, frame_to_raw

logger = logging.getLogger(__name__)


def _text_buffers(column: pa.Array) -> tuple[bytes, np.ndarray]:
    """A string array as (its UTF-8 bytes, int64 offsets [n + 1]): no Python object per value."""
    column = pc.cast(column, pa.string()).fill_null("")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)
    offsets = offsets[column.offset:column.offset + len(column) + 1]
    data = column.buffers()[2]
    data = data.to_pybytes()[offsets[0]:offsets[-1]] if data is not None else b""
    return data, (offsets - offsets[0]).astype(np.int64)


def _strings_buffers(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    encoded = [v.encode() for v in values]
    return b"".join(encoded), np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)])


def pack(batch: pa.RecordBatch, spec: FeatureSpec, absent: set | None = None
         ) -> dict[str, np.ndarray | bytes]:
    """A record batch's raw features (as :func:`~tfrs_recsys.data.schema.frame_to_raw` writes them) in
    arrays that cross into TensorFlow without a Python object per value: a text feature is its UTF-8
    bytes (one ``bytes``) and offsets (``NAME/offsets``); numbers are converted in Arrow. Types Arrow cannot
    convert the same way (lists, dates) go through pandas. :func:`unpack` makes the raw tensors.

    Args:
      batch: The rows.
      spec: Their features; one the batch lacks (a shard written before the column) is missing in all rows.
      absent: The features already warned of as lacking (warned of once and added here; None: no warning).

    Returns:
      The arrays.
    """
    out = {}
    for f in spec.features:
        if f.name not in batch.schema.names and absent is not None and f.name not in absent:
            logger.warning("a shard of the data has no column '%s' (a feature of the spec): its rows read it "
                           "as missing, as a table of all shards read into memory would", f.name)
            absent.add(f.name)
        column = batch.column(f.name) if f.name in batch.schema.names else pa.nulls(batch.num_rows)
        kind = column.type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
        if f.is_categorical and f.raw_dtype == "int64" and pa.types.is_integer(kind):
            out[f.name] = column.cast(pa.int64()).fill_null(MISSING_INT).to_numpy()
        elif f.is_categorical and f.raw_dtype != "int64" and f.kind != "multi_categorical" and text:
            out[f.name], out[f.name + "/offsets"] = _text_buffers(column)
        elif f.kind == "numeric" and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            out[f.name] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
        else:
            value = frame_to_raw(pd.DataFrame({f.name: column.to_pandas()}), FeatureSpec([f], []))[f.name]
            if value.dtype == object:
                out[f.name], out[f.name + "/offsets"] = _strings_buffers(value)
            else:
                out[f.name] = value
    return out


def packed_signature(spec: FeatureSpec) -> dict[str, tf.TensorSpec]:
    """The tensor specs of :func:`pack`'s arrays."""
    from tfrs_recsys.features.preprocessing import raw_dtype

    out = {}
    for f in spec.features:
        if raw_dtype(f) == tf.string:
            out[f.name] = tf.TensorSpec([], tf.string)
            out[f.name + "/offsets"] = tf.TensorSpec([None], tf.int64)
        else:
            out[f.name] = tf.TensorSpec([None], raw_dtype(f))
    return out


def unpack(packed: dict[str, tf.Tensor], spec: FeatureSpec) -> dict[str, tf.Tensor]:
    """The raw feature tensors of :func:`pack`'s arrays (in the graph: a text feature is cut out of its
    bytes at its offsets)."""
    out = {}
    for f in spec.features:
        offsets = packed.get(f.name + "/offsets")
        if offsets is None:
            out[f.name] = packed[f.name]
            continue
        out[f.name] = tf.strings.substr(packed[f.name], offsets[:-1], offsets[1:] - offsets[:-1])
    return out
