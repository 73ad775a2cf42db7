"""A ranker's inputs: each one's column from the values a request, the store or a caller gives (a scalar
for every candidate or one value per candidate, as the dtype its signature declares), and the inputs by
the names of the columns they were trained from (:class:`RankerInputs`).

Text goes as UTF-8 (lists joined by ``|``, missing as ``""``); numbers are checked before they are sent:
a value that is not a finite number, a fraction for an integer input or one out of its range is a
ValueError naming the input (a request's fault), never an overflow inside the client.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import numpy as np
from tensorflow.core.framework import types_pb2

from tfrs_recsys.data.input_names import signature_name

# Numeric ranker inputs: the numpy type, the conversion of a given value, the value sent for a missing one.
_NUMBERS = {types_pb2.DT_FLOAT: (np.float32, float, np.nan), types_pb2.DT_DOUBLE: (np.float64, float, np.nan),
            types_pb2.DT_INT32: (np.int32, int, 0), types_pb2.DT_INT64: (np.int64, int, 0)}


def ranker_column(values, dtype: int, n: int, name: str) -> np.ndarray:
    """One ranker input for ``n`` rows from a scalar (broadcast) or a per-row sequence.

    Args:
      values: A scalar, None (missing) or ``n`` values.
      dtype: The input's ``types_pb2`` dtype.
      n: The rows (candidates).
      name: The input, for errors.

    Returns:
      The column, as the dtype's numpy type (``object`` bytes for text).

    Raises:
      ValueError: A value the input cannot take, or not ``n`` of them.
    """
    if isinstance(values, (str, bytes, int, float, np.generic)) or values is None:
        values = [values] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"feature '{name}' has {len(values)} values for {n} candidates; "
                         "give one per candidate or a scalar")
    if dtype == types_pb2.DT_STRING:
        return np.array([_text(v) for v in values], dtype=object)
    if dtype not in _NUMBERS:
        raise ValueError(f"feature '{name}' has dtype {types_pb2.DataType.Name(dtype)}, "
                         "which the client cannot build")
    kind, convert, missing = _NUMBERS[dtype]
    absent = [v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and np.isnan(v))
              for v in values]
    return np.array([missing if gap else _number(v, kind, name, dtype) for v, gap in zip(values, absent)],
                    dtype=kind)


def _number(value, kind, name: str, dtype: int) -> float | int:
    """``value`` as the input's number, or a ValueError naming the input: not a number, not finite, a
    fraction for an integer input, or out of its range."""
    try:  # Python reads '1_000', full-width and Arabic-Indic digits as numbers; no log writes them
        odd = isinstance(value, str) and ("_" in value or not value.isascii())
        number = math.nan if odd else float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if np.issubdtype(kind, np.integer):
        bounds = np.iinfo(kind)
        whole = math.isfinite(number) and number == math.floor(number)
        if not (whole and bounds.min <= number <= bounds.max):
            raise ValueError(f"feature '{name}' takes numbers ({types_pb2.DataType.Name(dtype)}: whole, "
                             f"{bounds.min}..{bounds.max}; a time as epoch seconds), not {value!r}")
        return int(number)
    if not math.isfinite(number) or abs(number) > float(np.finfo(kind).max):
        raise ValueError(f"feature '{name}' takes numbers ({types_pb2.DataType.Name(dtype)}: finite; a time "
                         f"as epoch seconds), not {value!r}")
    return number


def _text(value) -> bytes:
    """A raw feature value as the ranker's tf.string input: lists joined by '|', missing as ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return "|".join(str(v) for v in value).encode()
    return str(value).encode()


def usable(values, dtype: int) -> tuple[object, object]:
    """``values`` (a scalar or a sequence) with each number a numeric input cannot take (not finite, a
    fraction for an integer input, out of range) made missing: a store's bad value is not a request's.

    Args:
      values: What a store holds for one input.
      dtype: The input's ``types_pb2`` dtype.

    Returns:
      (the values, the first one made missing, or None).
    """
    if dtype not in _NUMBERS:
        return values, None
    kind = _NUMBERS[dtype][0]
    scalar = isinstance(values, (str, bytes, int, float, np.generic)) or values is None
    integer = np.issubdtype(kind, np.integer)
    limit = float(np.iinfo(kind).max if integer else np.finfo(kind).max)
    try:  # the common case, on the serving path: numbers (None as NaN) that all fit, checked at once
        numbers = np.asarray([values] if scalar else values, dtype=np.float64)
        missing = np.isnan(numbers)
        whole = numbers == np.floor(numbers) if integer else True
        if np.all(missing | ((np.abs(numbers) <= limit) & whole)):
            return values, None
    except (TypeError, ValueError, OverflowError):
        pass  # text among them: each value read as a request's would be
    kept, dropped = [], None
    for value in [values] if scalar else list(values):
        try:
            if not (value is None or isinstance(value, str) and not value.strip()):
                _number(value, kind, "", dtype)
            kept.append(value)
        except ValueError:
            kept.append(None)
            dropped = value if dropped is None else dropped
    return (kept[0] if scalar else kept), dropped


def shown_input(name: str) -> str:
    """An input's name for a person: with the characters :func:`signature_name` wrote as code points read
    back (``u8868u793a`` -> ``u8868u793a (表示)``; a guess, for messages only)."""
    def char(match: re.Match) -> str:
        code = int(match.group(1), 16)
        return chr(code) if code > 127 and chr(code).isalnum() else match.group(0)

    read = re.sub(r"u([0-9a-f]{4,5})", char, name)
    return name if read == name else f"{name} ({read})"


class RankerInputs(dict):
    """A ranker's inputs by name, and by the name of each column whose input it is where the two differ (a
    column ``position dans la page`` is served as the input ``position_dans_la_page``:
    :func:`~tfrs_recsys.data.input_names.signature_name`).

    Args:
      inputs: The serving signature's inputs by name.
      columns: The column names the store, the run and the request use.
    """

    def __init__(self, inputs: Mapping[str, object], columns: Sequence[str | None]):
        self.real = dict(inputs)
        aliases = {c: inputs[signature_name(c)] for c in columns
                   if c and c not in inputs and signature_name(c) in inputs}
        super().__init__({**self.real, **aliases})

    def listed(self) -> str:
        """The inputs' names for a message (:func:`~tfrs_recsys.data.schema.shown_input`)."""
        return ", ".join(shown_input(n) for n in sorted(self.real))

    def served(self, name: str) -> str:
        """The input ``name`` (an input's or a column's) goes to."""
        return name if name in self.real else signature_name(name)
