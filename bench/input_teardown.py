"""The wait after a fit's last step: deleting a tf.data iterator with the autotuner on, and off.

``Model.fit`` deletes its input's iterator as it returns. With tf.data's autotuner on (TensorFlow 2.20),
the deletion waits for the autotuner's thread to wake from its sleep, whose period doubles while the
iterator runs, so a fit can end with seconds to a minute of idle waiting. The package's training inputs
turn the autotuner off (``tfrs_recsys.data.pipelines.without_autotune``). This times, for each setting,
``--seconds`` of iteration over a package input and then the deletion, ``--repeats`` times, alternated: a
TensorFlow upgrade can be checked for a fix with it (the option can go once "on" waits no longer).

    python bench/input_teardown.py --seconds 20 --repeats 4
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrs_recsys.data.pipelines import dataset_from_arrays  # noqa: E402


def teardown_seconds(autotune: bool, seconds: float) -> tuple[int, float]:
    """Batches read in ``seconds`` from a fresh iterator, and the seconds its deletion took."""
    options = tf.data.Options()
    options.autotune.enabled = autotune  # the later option wins over the package's
    ds = dataset_from_arrays({"x": np.arange(1 << 20)}, batch_size=512, repeat=True).with_options(options)
    assert ds.options().autotune.enabled is autotune
    iterator, batches = iter(ds), 0
    clock = time.perf_counter()
    while time.perf_counter() - clock < seconds:
        next(iterator)
        batches += 1
    clock = time.perf_counter()
    del iterator
    return batches, time.perf_counter() - clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    waits: dict[bool, list[float]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for autotune in (True, False) if repeat % 2 == 0 else (False, True):
            batches, wait = teardown_seconds(autotune, args.seconds)
            waits[autotune].append(wait)
            print(f"autotune {'on ' if autotune else 'off'}: {batches / args.seconds:,.0f} batches/s, "
                  f"deletion {wait:.2f} s", flush=True)
    for autotune, values in waits.items():
        print(f"autotune {'on ' if autotune else 'off'}: deletion mean {np.mean(values):.2f} s, "
              f"max {max(values):.2f} s over {len(values)}")


if __name__ == "__main__":
    main()
