"""Where a streamed ranker's memory goes: the process's RSS after each stage of a run, and its peak in it.

``bench/scale.py`` reports one peak per run. This takes a run's ``spec.json`` (the table sizes it chose for
its data) and measures, in one process: the imports, the model built, a first and a second fit of
``--steps`` steps on the streamed shards (the tables and their optimizer state appear on the first),
the best-epoch checkpoint written twice, and the checkpoint read back into the trained model, as
training does when its best epoch is an earlier one: with ``tfrs_recsys.checkpoints.read_weights`` (a
group of variables at a time, what training and export do), or ``--read-back load_weights`` (Keras'
``load_weights``, every variable at once). RSS is read from ``/proc/self/status`` every 2 ms.
Comparing two specs (a run at 5M rows and one at 20M) separates what grows with the tables from what
does not.

    python bench/memory_stages.py --spec DIR/runs/deepfm-5000000/spec.json \
        --data /tmp/scale-data/criteo-1000000
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_gib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 2 ** 20


class PeakSampler:
    """The highest RSS since the last :meth:`mark`, sampled on a thread."""

    def __init__(self):
        self.peak, self.clock = _rss_gib(), time.perf_counter()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            self.peak = max(self.peak, _rss_gib())
            time.sleep(0.002)

    def mark(self, stage: str, rows: list) -> None:
        now, seconds = _rss_gib(), time.perf_counter() - self.clock
        rows.append({"stage": stage, "rss_gib": round(now, 3), "peak_gib": round(max(self.peak, now), 3),
                     "seconds": round(seconds, 2)})
        print(f"{stage:36s} rss {now:6.3f} GiB   peak in the stage {max(self.peak, now):6.3f} GiB   "
              f"{seconds:6.2f} s", flush=True)
        self.peak, self.clock = now, time.perf_counter()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="a streamed DeepFM run's spec.json")
    p.add_argument("--data", required=True, help="a criteo data set of bench/scale_data.py (any size)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--read-back", choices=("read_weights", "load_weights"), default="read_weights")
    p.add_argument("--out", help="write the stages as JSON here")
    args = p.parse_args()
    sampler, rows = PeakSampler(), []

    from tfrs_recsys import runs
    from tfrs_recsys.checkpoints import read_weights
    from tfrs_recsys.config_sources import config_from_args
    from tfrs_recsys.data import streaming
    from tfrs_recsys.data.schema import FeatureSpec
    from tfrs_recsys.features.preprocessing import FeaturePreprocessor, as_encoded
    from tfrs_recsys.models.deepfm import DeepFM
    from tfrs_recsys.training import rankers

    data = str(Path(args.data) / "parquet")
    cfg = config_from_args("deepfm", ["--dataset", "parquet", "--data", data, "--label-columns", "label"])
    spec, table = FeatureSpec.load(args.spec), streaming.open_table(data, labels=["label"])
    sampler.mark("imports", rows)
    model, preprocessor = DeepFM.from_spec(spec, cfg), FeaturePreprocessor(spec)
    sampler.mark("model built (tables not yet made)", rows)
    ds = streaming.stream_dataset(table, spec, table.files, batch_size=cfg.batch_size, seed=cfg.seed,
                                  encode=lambda raw: as_encoded(preprocessor(raw)))
    rankers.compile_ranker(model, cfg)
    for stage in ("first fit (tables made)", "second fit"):
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        sampler.mark(f"{stage}, {args.steps} steps", rows)
    run_dir = tempfile.mkdtemp()
    for stage in ("checkpoint written", "checkpoint written again"):
        runs.save_checkpoint(model, run_dir)
        sampler.mark(stage, rows)
    checkpoint = Path(run_dir) / runs.CHECKPOINT
    if args.read_back == "load_weights":
        model.load_weights(str(checkpoint)).expect_partial()
    else:
        read_weights(model, checkpoint)
    sampler.mark(f"checkpoint read back ({args.read_back})", rows)
    if args.out:
        Path(args.out).write_text(json.dumps({"spec": args.spec, "stages": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
