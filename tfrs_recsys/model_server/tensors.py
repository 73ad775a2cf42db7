"""TensorProto <-> numpy, the way TF Serving reads requests and writes responses.

Requests may carry values in ``tensor_content`` (raw little-endian bytes, what
``tf.make_tensor_proto`` writes for numeric arrays) or in the typed fields
(``float_val``, ``half_val``, ``string_val``, ...); responses are written with the
typed fields, as TF Serving's Predict does by default (``Tensor::AsProtoField``),
so clients that read ``float_val`` directly keep working. Both read back with
``tf.make_ndarray``.

Every dtype in ``_CODECS`` is converted with one numpy call per tensor (``np.frombuffer``
/ ``tobytes`` for ``tensor_content``, ``np.array(field)`` / ``extend(tolist())`` for typed
fields), bit for bit as TensorFlow's ``tf.make_ndarray`` / ``tf.make_tensor_proto`` and its
C++ ``Tensor::FromProto``; TensorFlow is only called for the rare rest (a value broadcast
to the shape, dtypes without a codec here).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import ml_dtypes
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfrs_recsys.model_server.errors import invalid_argument


class _Codec(NamedTuple):
    """How one dtype sits in a TensorProto.

    ``field`` holds ``width`` entries per element; ``bits`` is the numpy dtype those
    entries are the bit patterns of (``half_val`` stores float16/bfloat16 as uint16,
    ``scomplex_val`` stores (real, imag) float32 pairs), or None when they are the values.
    """

    numpy: type
    field: str
    bits: type | None = None
    width: int = 1


_CODECS = {
    types_pb2.DT_FLOAT: _Codec(np.float32, "float_val"), types_pb2.DT_INT32: _Codec(np.int32, "int_val"),
    types_pb2.DT_DOUBLE: _Codec(np.float64, "double_val"), types_pb2.DT_INT8: _Codec(np.int8, "int_val"),
    types_pb2.DT_INT16: _Codec(np.int16, "int_val"), types_pb2.DT_UINT8: _Codec(np.uint8, "int_val"),
    types_pb2.DT_UINT16: _Codec(np.uint16, "int_val"), types_pb2.DT_INT64: _Codec(np.int64, "int64_val"),
    types_pb2.DT_UINT32: _Codec(np.uint32, "uint32_val"), types_pb2.DT_BOOL: _Codec(np.bool_, "bool_val"),
    types_pb2.DT_UINT64: _Codec(np.uint64, "uint64_val"), types_pb2.DT_STRING: _Codec(object, "string_val"),
    types_pb2.DT_HALF: _Codec(np.float16, "half_val", np.uint16),
    types_pb2.DT_BFLOAT16: _Codec(ml_dtypes.bfloat16, "half_val", np.uint16),
    types_pb2.DT_COMPLEX64: _Codec(np.complex64, "scomplex_val", np.float32, 2),
    types_pb2.DT_COMPLEX128: _Codec(np.complex128, "dcomplex_val", np.float64, 2),
}
_ITEMSIZE = {dtype: np.dtype(c.numpy).itemsize for dtype, c in _CODECS.items() if c.numpy is not object}
_DTYPE_OF = {np.dtype(c.numpy): dtype for dtype, c in _CODECS.items() if c.numpy is not object}


def dtype_name(dtype: int) -> str:
    """TF's DataTypeString: ``DT_FLOAT`` -> ``float``."""
    return types_pb2.DataType.Name(dtype)[3:].lower() if dtype in types_pb2.DataType.values() else str(dtype)


def numpy_dtype(dtype: int):
    """The numpy dtype of a DataType enum (None for one without a codec here)."""
    return _CODECS[dtype].numpy if dtype in _CODECS else None


def dtype_of(array: np.ndarray) -> int | None:
    """The DataType enum a numpy array is sent as.

    Args:
      array: Any array; object, bytes and str arrays are strings.

    Returns:
      The enum (``DT_STRING`` for strings), None for a dtype without a codec here.
    """
    if array.dtype == object or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    return _DTYPE_OF.get(array.dtype)


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The shape of a TensorProto."""
    return tuple(d.size for d in proto.tensor_shape.dim)


def is_exact(proto: tensor_pb2.TensorProto) -> bool:
    """Whether ``proto`` holds exactly one value per element in an encoding this module reads.

    Args:
      proto: A request's tensor.

    Returns:
      True when there is no broadcast, padding or surplus: ``to_ndarray`` then needs no TensorFlow,
      and ``tf.io.parse_tensor`` reads it as it is.
    """
    codec = _CODECS.get(proto.dtype)
    if codec is None:
        return False
    size = math.prod(shape_of(proto))
    if proto.tensor_content:
        return codec.numpy is not object and len(proto.tensor_content) == size * _ITEMSIZE[proto.dtype]
    return len(getattr(proto, codec.field)) == size * codec.width


BROADCAST_LIMIT = 1024  # the most elements one value may fill (tf.make_tensor_proto(0.0, shape=[8]) style)


def declared_elements(proto: tensor_pb2.TensorProto, alias: str) -> int:
    """The elements a request tensor declares, checked against what it holds before anything is allocated.

    TensorFlow fills a shape from however few values a TensorProto carries (one value for a shape of 5e7
    floats: 200 MB from a few hundred bytes). A request tensor must hold one value per element, or one
    value for at most :data:`BROADCAST_LIMIT` elements.

    Args:
      proto: A request's tensor.
      alias: The input's name, for the error.

    Returns:
      The number of elements of its shape.

    Raises:
      ServingError: ``INVALID_ARGUMENT`` naming the input: an unknown rank, a negative dimension, or values
        that do not fill the shape.
    """
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"input '{alias}' has an unknown rank; send its shape")
    shape = shape_of(proto)
    if any(d < 0 for d in shape):
        raise invalid_argument(f"input '{alias}' has a negative dimension in its shape {list(shape)}")
    size = math.prod(shape)
    codec = _CODECS.get(proto.dtype)
    if codec is None or is_exact(proto):
        return size
    if proto.tensor_content and codec.numpy is object:  # a length of one byte at least per string
        if len(proto.tensor_content) < size:
            raise invalid_argument(f"input '{alias}' declares shape {list(shape)} ({size} strings) but its "
                                   f"tensor_content of {len(proto.tensor_content)} bytes holds fewer")
        return size
    if proto.tensor_content:
        sent = len(proto.tensor_content) // _ITEMSIZE.get(proto.dtype, 1)
    else:
        sent = len(getattr(proto, codec.field)) // codec.width
    if not (sent == 1 and size <= BROADCAST_LIMIT):
        raise invalid_argument(f"input '{alias}' declares shape {list(shape)} ({size} values) but holds "
                               f"{sent}; send one value per element")
    return size


def to_ndarray(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """A request tensor as a (writable) numpy array.

    Exact encodings are read with one numpy call; anything else (a single value broadcast
    to the shape, dtypes without a codec) goes through ``tf.make_ndarray``, whose result
    this matches element for element.

    Args:
      proto: The tensor.
      alias: The input's name, for the error.

    Returns:
      The array (strings as an object array of bytes).

    Raises:
      ServingError: ``INVALID_ARGUMENT`` naming the input when ``proto`` is malformed.
    """
    if is_exact(proto):
        codec = _CODECS[proto.dtype]
        if proto.tensor_content:
            return np.frombuffer(proto.tensor_content, dtype=codec.numpy).reshape(shape_of(proto)).copy()
        values = np.array(getattr(proto, codec.field), dtype=codec.bits or codec.numpy)
        return (values if codec.bits is None else values.view(codec.numpy)).reshape(shape_of(proto))
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # malformed protos raise ValueError/TypeError from deep inside TF
        raise invalid_argument(f"tensor parsing error: {alias} ({e})") from None


def concat_rows(protos: Sequence[tensor_pb2.TensorProto], pad: int = 0) -> tensor_pb2.TensorProto:
    """TensorProtos stacked along dimension 0, then padded with copies of the first row.

    Values are copied as they are encoded (``tensor_content`` bytes joined, typed fields
    extended); only protos mixing the two encodings go through numpy.

    Args:
      protos: Exact TensorProtos (``is_exact``) of one dtype and row shape.
      pad: How many copies of the first row to append (BatchingSession's padding).

    Returns:
      One exact TensorProto with ``sum(rows) + pad`` rows.
    """
    shapes = [shape_of(p) for p in protos]
    rows = sum(shape[0] for shape in shapes)
    dtype, row_shape = protos[0].dtype, shapes[0][1:]
    codec = _CODECS[dtype]
    filled = [p for p, shape in zip(protos, shapes) if math.prod(shape)]
    dims = [{"size": n} for n in (rows + pad, *row_shape)]
    out = tensor_pb2.TensorProto(dtype=dtype, tensor_shape={"dim": dims})
    row = math.prod(row_shape)
    if codec.numpy is not object and filled and all(p.tensor_content for p in filled):
        content = b"".join(p.tensor_content for p in filled)
        out.tensor_content = content + content[:row * _ITEMSIZE[dtype]] * pad
    elif not any(p.tensor_content for p in filled):
        values = getattr(out, codec.field)
        for p in filled:
            values.extend(getattr(p, codec.field))
        if pad and row:
            values.extend(list(values[:row * codec.width]) * pad)
    else:
        value = np.concatenate([to_ndarray(p, "") for p in protos])
        value = np.concatenate([value, np.repeat(value[:1], pad, axis=0)])
        out.tensor_content = np.ascontiguousarray(value).tobytes()
    return out


def to_proto(value: np.ndarray, dtype: int, *, content: bool = False) -> tensor_pb2.TensorProto:
    """``value`` as a new TensorProto (see ``fill_proto``)."""
    return fill_proto(tensor_pb2.TensorProto(), value, dtype, content=content)


def fill_proto(proto: tensor_pb2.TensorProto, value: np.ndarray, dtype: int | None = None, *,
               content: bool = False) -> tensor_pb2.TensorProto:
    """Writes ``value`` into an empty ``proto`` in place, with typed value fields (TF Serving's AsProtoField).

    Args:
      proto: The TensorProto to fill (e.g. ``response.outputs[alias]``).
      value: The array. Strings may be bytes (sent as they are) or str (sent as UTF-8); anything
        else in a string tensor is sent as its ``str()``.
      dtype: The DataType enum to write it as (default: ``dtype_of(value)``, TensorFlow's own choice
        for a dtype without a codec here).
      content: Numbers go into ``tensor_content`` (what ``tf.make_tensor_proto`` writes) instead of
        the typed value fields; both read back the same.

    Returns:
      ``proto``.
    """
    value = np.asarray(value)
    dtype = dtype_of(value) if dtype is None else dtype
    codec = _CODECS.get(dtype)
    if codec is None:
        proto.CopyFrom(tf.make_tensor_proto(value, dtype=None if dtype is None else tf.as_dtype(dtype)))
        return proto
    proto.dtype = dtype
    proto.tensor_shape.SetInParent()  # present even for a scalar, as TensorFlow writes it
    for size in value.shape:
        proto.tensor_shape.dim.add(size=size)
    if codec.numpy is object:
        items = value.ravel().tolist()
        try:  # upb takes bytes only: encode str (the common case, one comprehension) first
            proto.string_val.extend([v.encode() for v in items] if items and type(items[0]) is str else items)
        except (AttributeError, TypeError):  # mixed or other types
            proto.string_val.extend([v if isinstance(v, bytes) else str(v).encode() for v in items])
    elif content:
        proto.tensor_content = np.ascontiguousarray(value, dtype=codec.numpy).tobytes()
    else:
        flat = value.ravel().astype(codec.numpy, copy=False)
        getattr(proto, codec.field).extend((flat if codec.bits is None else flat.view(codec.bits)).tolist())
    return proto
