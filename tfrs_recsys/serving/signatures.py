"""A model's signatures as GetModelMetadata describes them, and the width a request's rows are fitted to.

:class:`~tfrs_recsys.serving.client.ServingClient` reads them once per served version and shapes its
requests from them.
"""
from __future__ import annotations

import dataclasses

from tensorflow.core.framework import types_pb2

PAD = ""  # the padding id of histories and exclusions


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """A signature input's or output's dtype (a ``DataType`` enum) and shape (``-1``: any size;
    ``None``: unknown rank)."""

    dtype: int
    shape: tuple[int, ...] | None

    @classmethod
    def from_proto(cls, info) -> TensorSpecInfo:
        """From a ``TensorInfo`` proto."""
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        return cls(info.dtype, shape)

    @property
    def dtype_name(self) -> str:
        """The dtype's enum name, e.g. ``DT_FLOAT``."""
        return types_pb2.DataType.Name(self.dtype)


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """A SignatureDef: its method and its inputs and outputs by name."""

    method_name: str
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]

    @classmethod
    def from_proto(cls, sig) -> SignatureInfo:
        """From a ``SignatureDef`` proto."""
        spec = TensorSpecInfo.from_proto
        return cls(sig.method_name, {k: spec(v) for k, v in sig.inputs.items()},
                   {k: spec(v) for k, v in sig.outputs.items()})


def fit_width(values: list[str], spec: TensorSpecInfo, *, left: bool) -> list[str]:
    """One row of a ``[B, width]`` string input (a history, exclusions) fitted to the input's width.

    Args:
      values: The row's ids, oldest first.
      spec: The input's spec.
      left: Pad on the left (a history: most recent item last) rather than the right.

    Returns:
      The last ``width`` of ``values``, padded with ``""`` to ``width``; all of them (at least one entry)
      where the input's width is not static.
    """
    width = (spec.shape or (-1, -1))[-1]
    values = values[-width:] if width > 0 else values
    padding = [PAD] * (max(width, len(values), 1) - len(values))
    return padding + values if left else values + padding
