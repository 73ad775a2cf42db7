"""Adam with one fused kernel per variable update.

``tf.keras.optimizers.Adam`` updates each variable with about ten separate ops (two moment
updates, a square root, a division, temporaries the size of the variable), and treats an
embedding's sparse gradient as ``m <- beta_1 m`` and ``v <- beta_2 v`` over the whole table plus
scatter-adds. :class:`FusedAdam` computes the same update, step for step, with one of TensorFlow's
fused Adam kernels per variable::

    alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
    m <- m + (1 - beta_1)(g - m);   v <- v + (1 - beta_2)(g^2 - v);   w <- w - alpha m / (sqrt(v) + eps)

Which kernel: on a CPU with several intra-op threads, ``ResourceApplyAdam`` splits its work
across them from :data:`ADAM_KERNEL_SPLITS_FROM` elements on, which for a variable of a few
thousand elements costs far more than the update (on a 2-core machine: about 50 us against 10 us
for the whole update on one thread; ``bench/adam_kernels.py``). Variables from that size up to
:data:`AMSGRAD_KERNEL_MAX_ELEMENTS` use ``ResourceApplyAdamWithAmsgrad`` instead, whose Eigen
expressions stay on one thread up to about that size, with its running maximum ``v_hat`` set to 0
just before: ``v_hat <- max(0, v) = v``, so its update is Adam's. Larger variables, which profit
from the threads, smaller ones, variables on other devices and one-thread pools keep
``ResourceApplyAdam``. The optimizer never compiles its updates with XLA (Keras' default when a
GPU is visible): the fused kernels are the point, and one XLA function per variable cannot share
the step's scalars.

A sparse gradient is summed into a dense one first (zero rows where the batch has no id), which is
exactly the update Keras' Adam applies to it. That sum adds up repeated ids too, so Keras' own pass
that merges them beforehand (a ``Unique`` and a segment sum per table) is skipped. The scalars of
the step (``beta_1^t``, ``beta_2^t``, the learning rate, ...) are computed once per step and shared
by all the variables' updates, not once per variable (about 8 small ops fewer per variable).
AMSGrad and adaptive epsilon fall back to Keras' own update.
"""
from __future__ import annotations

import os

import tensorflow as tf

__all__ = ["FusedAdam", "ADAM_KERNEL_SPLITS_FROM", "AMSGRAD_KERNEL_MAX_ELEMENTS", "uses_amsgrad_kernel"]

# ResourceApplyAdam's own cost estimate sends a variable of this many elements or more to the threads.
ADAM_KERNEL_SPLITS_FROM = 512
# Up to this many elements the AMSGrad kernel's Eigen expressions run on one thread (Eigen's cost model).
AMSGRAD_KERNEL_MAX_ELEMENTS = 32768


def _intra_op_threads() -> int:
    return tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))


def uses_amsgrad_kernel(num_elements: int | None) -> bool:
    """Whether :class:`FusedAdam` updates a CPU variable of ``num_elements`` with the AMSGrad kernel,
    given this process's intra-op threads (with one, ``ResourceApplyAdam`` never splits its work)."""
    return (num_elements is not None and ADAM_KERNEL_SPLITS_FROM <= num_elements <= AMSGRAD_KERNEL_MAX_ELEMENTS
            and _intra_op_threads() > 1)


def _on_cpu(variable) -> bool:
    return tf.DeviceSpec.from_string(variable.device or "").device_type in (None, "CPU")


class FusedAdam(tf.keras.optimizers.Adam):
    """``tf.keras.optimizers.Adam`` (same arguments, same updates) with fused per-variable updates."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "jit_compile": False})

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_v_hat_scratch", None) is not None:
            return
        scratch = {}
        if self._fused:
            strategy = tf.distribute.get_strategy()
            for var in var_list:
                if _on_cpu(var) and uses_amsgrad_kernel(var.shape.num_elements()):
                    with strategy.extended.colocate_vars_with(var):
                        scratch[self._var_key(var)] = tf.Variable(
                            tf.zeros(var.shape, getattr(var, "true_dtype", var.dtype)), trainable=False)
        self._keep_untracked("_v_hat_scratch", scratch)

    def _deduplicate_sparse_grad(self, grads):
        # update_step's dense sum already adds up the rows of repeated ids; Keras' fallback needs them merged.
        if self._fused:
            return grads
        return super()._deduplicate_sparse_grad(grads)

    @property
    def _fused(self) -> bool:
        return not (self.amsgrad or getattr(self, "adaptive_epsilon", False))

    def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
        # Every variable's update of this step reads the same scalars: built by the first, reused after.
        self._share_step_scalars({})
        try:
            return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
        finally:
            self._share_step_scalars(None)

    def _share_step_scalars(self, cache: dict | None) -> None:
        self._keep_untracked("_step_scalars", cache)

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _keep_untracked(self, name: str, value) -> None:
        # A step's shared scalars and the v_hat scratch are kernel arguments, not optimizer state:
        # checkpoints and get_weights never see them.
        setattr(self, name, value)

    def _scalars(self, dtype: tf.DType) -> dict[str, tf.Tensor]:
        """The kernels' scalar arguments for this step, in ``dtype`` (shared within one
        ``apply_gradients``; computed afresh for an update made outside one)."""
        cache = getattr(self, "_step_scalars", None)
        if cache is not None and dtype in cache:
            return cache[dtype]
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        scalars = {"beta1_power": tf.pow(beta_1, local_step), "beta2_power": tf.pow(beta_2, local_step),
                   "lr": tf.cast(self.learning_rate, dtype), "beta1": beta_1, "beta2": beta_2,
                   "epsilon": tf.cast(self.epsilon, dtype)}
        if cache is not None:
            cache[dtype] = scalars
        return scalars

    def update_step(self, gradient, variable):
        if not self._fused:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.math.unsorted_segment_sum(gradient.values, gradient.indices,
                                                    tf.shape(variable, out_type=gradient.indices.dtype)[0])
        key = self._var_key(variable)
        index = self._index_dict[key]
        kernel_args = {"var": variable.handle, "m": self._momentums[index].handle,
                       "v": self._velocities[index].handle, "grad": tf.cast(gradient, dtype), "use_locking": False,
                       **self._scalars(dtype)}
        v_hat = self._v_hat_scratch.get(key)
        if v_hat is None:
            return tf.raw_ops.ResourceApplyAdam(**kernel_args)
        v_hat.assign(tf.zeros(v_hat.shape, v_hat.dtype))
        return tf.raw_ops.ResourceApplyAdamWithAmsgrad(vhat=v_hat.handle, **kernel_args)
