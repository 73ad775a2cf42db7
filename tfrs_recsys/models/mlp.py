"""The rankers' MLPs, with an optional bfloat16 training precision.

Most of a ranker's training step is its MLPs' matrix products (forward and both backward ones).
CPUs with native bfloat16 units (Intel AMX, AVX512-BF16, used by oneDNN) multiply bfloat16 matrices
faster than float32 ones, so with ``precision="mixed_bfloat16"`` the ReLU layers of an MLP
(:class:`TrainingDense`) compute, while TRAINING only::

    h_{l+1} = relu( bf16(h_l) @ bf16(W_l) + bf16(b_l) )      (products accumulated in float32 by oneDNN)

and hand bfloat16 activations to the next such layer; the MLP's output layer (a logit or a tower
vector) and everything outside the MLPs (embeddings, FM, losses) stay float32, and so do all
variables and the optimizer state. Inference (``training=False``: evaluation, predictions, the
exported SavedModel) runs the plain float32 ``relu(h @ W + b)`` of the same weights. bfloat16
keeps float32's exponent range, so no loss scaling is needed; its 8-bit mantissa adds a relative
rounding error of at most 2^-8 to each input, small next to the noise of a mini-batch gradient.

``precision="auto"`` (the rankers' default) picks ``mixed_bfloat16`` when the CPU has native
bfloat16 and no GPU is visible, else ``float32`` (emulated bfloat16 would be slower).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import tensorflow as tf

_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_has_native_bfloat16() -> bool:
    """True when ``/proc/cpuinfo`` lists AMX-BF16 or AVX512-BF16 (False where it cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return False
    flags = next((line.split() for line in lines if line.startswith("flags")), [])
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def resolve_precision(precision: str | None) -> str:
    """``float32`` or ``mixed_bfloat16`` for a config value in :data:`tfrs_recsys.config.PRECISIONS`.

    Args:
      precision: ``auto`` (or None), ``float32`` or ``mixed_bfloat16``.

    Returns:
      The precision itself, or for ``auto`` ``mixed_bfloat16`` on a CPU with native bfloat16 and no
      visible GPU, else ``float32``.
    """
    if precision not in (None, "auto"):
        return precision
    native = not tf.config.list_physical_devices("GPU") and cpu_has_native_bfloat16()
    return "mixed_bfloat16" if native else "float32"


class TrainingDense(tf.keras.layers.Dense):
    """``tf.keras.layers.Dense`` whose forward and backward products run in bfloat16 while training,
    when ``train_bfloat16``; same variables (float32 ``kernel`` and ``bias``) and checkpoints as
    ``Dense``, and exactly ``Dense``'s float32 computation otherwise (inference).

    While training in bfloat16 the output stays bfloat16 for the next such layer (no round trip
    through float32 between the layers of an MLP) unless ``float32_output``. Inputs of either
    dtype are taken (the layer casts them itself: Keras' autocast is off).

    Args:
      units: the output width.
      train_bfloat16: compute in bfloat16 while training.
      float32_output: cast the bfloat16 training output back to float32.
      **kwargs: ``tf.keras.layers.Dense``'s other arguments.
    """

    def __init__(self, units: int, *, train_bfloat16: bool = False, float32_output: bool = True, **kwargs):
        super().__init__(units, autocast=False, **kwargs)
        self.train_bfloat16 = bool(train_bfloat16)
        self.float32_output = bool(float32_output)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not (training and self.train_bfloat16):
            return super().call(tf.cast(inputs, self.compute_dtype))
        outputs = tf.matmul(tf.cast(inputs, tf.bfloat16), tf.cast(self.kernel, tf.bfloat16))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, tf.bfloat16))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return tf.cast(outputs, self.compute_dtype) if self.float32_output else outputs

    def get_config(self) -> dict:
        return {**super().get_config(), "train_bfloat16": self.train_bfloat16,
                "float32_output": self.float32_output}


def mlp(units: Sequence[int], *, dropout: float = 0.0, name: str, precision: str = "float32",
        output_units: int | None = None, output_bias: bool = True) -> tf.keras.Sequential:
    """An MLP: ReLU layers, each followed by dropout when ``dropout``, then an optional linear layer.

    Args:
      units: The ReLU layers' widths.
      dropout: The dropout rate after each ReLU layer (0: none).
      name: The model's name.
      precision: :func:`resolve_precision`'s input; ``mixed_bfloat16`` trains the ReLU layers'
        products in bfloat16.
      output_units: The width of a final linear float32 layer, or None for none.
      output_bias: Whether that layer has a bias.

    Returns:
      A ``tf.keras.Sequential``.
    """
    bf16 = resolve_precision(precision) == "mixed_bfloat16"
    layers = []
    for i, width in enumerate(units):
        last = i == len(units) - 1
        layers.append(TrainingDense(width, activation="relu", train_bfloat16=bf16,
                                    float32_output=bool(dropout) or (last and output_units is None)))
        if dropout:
            layers.append(tf.keras.layers.Dropout(dropout))
    if output_units is not None:
        # A narrow output (a logit, a tower vector) costs little: kept float32 for its precision.
        layers.append(TrainingDense(output_units, use_bias=output_bias))
    return tf.keras.Sequential(layers, name=name)
