"""Adam's two fused kernels on one variable, by size: what FusedAdam's choice between them rests on.

    .venv/bin/python bench/adam_kernels.py [--sizes 256,512,2000,8000,32768,47104,262144] [--updates 400]
    .venv/bin/python bench/adam_kernels.py --intra-op-threads 1

For each size, ``--updates`` updates of one float32 variable in a graph loop, timed by wall clock:

* ``ResourceApplyAdam``: TensorFlow's Adam kernel, which splits the variable across the intra-op
  threads from ``ADAM_KERNEL_SPLITS_FROM`` (512) elements on;
* ``reset + Amsgrad``: ``v_hat`` set to 0, then ``ResourceApplyAdamWithAmsgrad`` (the same
  update as Adam's, see tfrs_recsys/training/optimizers.py), whose Eigen expressions stay on one
  thread up to about ``AMSGRAD_KERNEL_MAX_ELEMENTS`` (32768) elements.

Printed: microseconds per update of each, their ratio, and which one FusedAdam uses at that size.
The medians of ``--repeats`` timings, interleaved.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tfrs_recsys.training.optimizers import uses_amsgrad_kernel

SCALARS = dict(beta1_power=0.9, beta2_power=0.999, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-7, use_locking=False)


def update_loops(size: int, updates: int) -> dict:
    """Two graph functions, each running ``updates`` updates of its own variable with one kernel."""
    rng = np.random.default_rng(0)
    grad = tf.constant(rng.normal(0.0, 1e-3, size).astype(np.float32))

    def slots():
        return [tf.Variable(rng.normal(0.0, 0.05, size).astype(np.float32)) for _ in range(4)]

    adam_var, adam_m, adam_v, _ = slots()
    ams_var, ams_m, ams_v, v_hat = slots()

    @tf.function
    def adam():
        for _ in tf.range(updates):
            tf.raw_ops.ResourceApplyAdam(var=adam_var.handle, m=adam_m.handle, v=adam_v.handle, grad=grad, **SCALARS)

    @tf.function
    def amsgrad_reset():
        for _ in tf.range(updates):
            v_hat.assign(tf.zeros(v_hat.shape, v_hat.dtype))
            tf.raw_ops.ResourceApplyAdamWithAmsgrad(var=ams_var.handle, m=ams_m.handle, v=ams_v.handle,
                                                    vhat=v_hat.handle, grad=grad, **SCALARS)

    return {"adam": adam, "amsgrad_reset": amsgrad_reset}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,512,2000,8000,32768,47104,262144")
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--intra-op-threads", type=int, default=0, help="0 = TensorFlow's default")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    print(f"intra-op threads: {args.intra_op_threads or 'default'}; {args.updates} updates per timing, "
          f"median of {args.repeats}")
    print(f"{'elements':>9s} {'ResourceApplyAdam':>18s} {'reset + Amsgrad':>16s} {'ratio':>7s}  FusedAdam uses")
    for size in (int(s) for s in args.sizes.split(",")):
        loops = update_loops(size, args.updates)
        for run in loops.values():
            run()
        times = {name: [] for name in loops}
        for _ in range(args.repeats):
            for name, run in loops.items():
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) / args.updates * 1e6)
        adam, ams = (float(np.median(times[k])) for k in ("adam", "amsgrad_reset"))
        choice = "reset + Amsgrad" if uses_amsgrad_kernel(size) else "ResourceApplyAdam"
        print(f"{size:9d} {adam:15.1f} us {ams:13.1f} us {adam / ams:6.2f}x  {choice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
