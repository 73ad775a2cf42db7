"""A Predict of many rows, run a part of its rows at a time: its memory grows with the part, not the request.

A model's intermediate tensors grow with the rows of a call: a Transformer query tower holds
``rows x history x width`` floats per layer, so one request of 100,000 users within the element cap took
gigabytes, kept by the allocator after it. Where an export says its signatures score each row on its own
(``rows_independent`` in its metadata; the model server applies this to those only), the rows are run
``max_rows`` at a time and the outputs joined. Outputs that are not one row per input row (a sum over the
batch, say) or that cannot be joined run the request whole, as before.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from tensorflow.core.framework import tensor_pb2

from tfrs_recsys.model_server.tensors import to_ndarray

MAX_ROWS_PER_CALL = 1024  # --max_rows_per_call: rows of one call of a signature


def shared_rows(inputs: Mapping[str, object]) -> int | None:
    """The first dimension every input has alike (TensorProtos or arrays), or None."""
    rows = set()
    for value in inputs.values():
        shape = ([d.size for d in value.tensor_shape.dim] if isinstance(value, tensor_pb2.TensorProto)
                 else np.shape(value))
        if not len(shape):
            return None
        rows.add(shape[0])
    return rows.pop() if len(rows) == 1 else None


def run_in_parts(runner: Callable[[str, Mapping, Sequence[str]], Mapping[str, np.ndarray]], name: str,
                 inputs: Mapping[str, object], output_aliases: Sequence[str],
                 max_rows: int) -> Mapping[str, np.ndarray]:
    """``runner(name, inputs, output_aliases)``, run ``max_rows`` rows of the inputs at a time if more.

    Args:
      runner: Runs a signature on inputs (TensorProtos or arrays) and returns its outputs as arrays.
      name: The signature.
      inputs: One value per input, all of the same first dimension (else they are run whole).
      output_aliases: The outputs wanted.
      max_rows: Rows per call (0: all at once).

    Returns:
      The outputs, joined along their first dimension.
    """
    rows = shared_rows(inputs) if max_rows else None
    if rows is None or rows <= max_rows:
        return runner(name, inputs, output_aliases)
    arrays = {alias: to_ndarray(value, alias) if isinstance(value, tensor_pb2.TensorProto) else value
              for alias, value in inputs.items()}
    parts = []
    for start in range(0, rows, max_rows):
        out = runner(name, {alias: value[start:start + max_rows] for alias, value in arrays.items()},
                     output_aliases)
        if any(np.ndim(v) == 0 or len(v) != min(max_rows, rows - start) for v in out.values()):
            return runner(name, arrays, output_aliases)  # not row by row: the request whole
        parts.append(out)
    try:
        return {alias: np.concatenate([part[alias] for part in parts]) for alias in output_aliases}
    except ValueError:  # parts of other widths (tokens padded to each part's longest): the request whole
        return runner(name, arrays, output_aliases)
