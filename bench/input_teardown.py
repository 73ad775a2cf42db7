"""The wait after a fit's last step: deleting a tf.data iterator with the autotuner on, and off.

``Model.fit`` deletes its input's iterator as it returns. With tf.data's autotuner on (TensorFlow 2.20),
the deletion waits for the autotuner's thread to wake from its sleep, whose period doubles while the
iterator runs, so a fit can end with seconds to a minute of idle waiting (not at every deletion: its
length depends on where the sleep is). The package's training inputs turn the autotuner off
(``tfrs_recsys.data.pipelines.without_autotune``). This times, for each setting, ``--seconds`` of
iteration over a package input and then the deletion, ``--repeats`` times, alternated: a TensorFlow
upgrade can be checked for a fix with it (the option can go once "on" waits no longer). ``--input
streamed`` reads Criteo-like Parquet shards (200,000 rows written once under ``--data``, by
bench/scale_data.py) through the streamed rankers' input; ``arrays`` is the in-memory input.

    python bench/input_teardown.py --input streamed --seconds 15 --repeats 4
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrs_recsys.data import streaming  # noqa: E402
from tfrs_recsys.data.pipelines import dataset_from_arrays  # noqa: E402
from tfrs_recsys.data.schema_inference import infer_schema  # noqa: E402


def package_input(kind: str, data: Path) -> tf.data.Dataset:
    """The in-memory input of one integer column, or the streamed input of Criteo-like shards."""
    if kind == "arrays":
        return dataset_from_arrays({"x": np.arange(1 << 20)}, batch_size=512, repeat=True)
    if not (data / "manifest.json").is_file():
        from scale_data import generate

        generate("criteo", 200_000, data, csv=False)
    table = streaming.open_table(str(data / "parquet"), labels=["label"])
    spec = infer_schema(streaming.sample_rows(table, 20_000, seed=0), ["label"])
    return streaming.stream_dataset(table, spec, table.files, batch_size=512, seed=0)


def teardown_seconds(ds: tf.data.Dataset, autotune: bool, seconds: float) -> tuple[int, float]:
    """Batches read in ``seconds`` from a fresh iterator, and the seconds its deletion took."""
    options = tf.data.Options()
    options.autotune.enabled = autotune  # the later option wins over the package's
    ds = ds.with_options(options)
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
    parser.add_argument("--input", choices=("streamed", "arrays"), default="streamed")
    parser.add_argument("--data", default="runs/teardown-data", help="where --input streamed's shards are")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    ds = package_input(args.input, Path(args.data))
    waits: dict[bool, list[float]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for autotune in (True, False) if repeat % 2 == 0 else (False, True):
            batches, wait = teardown_seconds(ds, autotune, args.seconds)
            waits[autotune].append(wait)
            print(f"autotune {'on ' if autotune else 'off'}: {batches / args.seconds:,.0f} batches/s, "
                  f"deletion {wait:.2f} s", flush=True)
    for autotune, values in waits.items():
        print(f"autotune {'on ' if autotune else 'off'}: deletion mean {np.mean(values):.2f} s, "
              f"max {max(values):.2f} s over {len(values)}")


if __name__ == "__main__":
    main()
