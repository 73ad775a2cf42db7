"""Test AUC of the rankers on small logs, by batch size: the default (``--batch-size 0``, sized from the
training rows) against fixed batches, over several seeds.

Three logs of known ground truth, each trained with ``python -m tfrs_recsys.train`` in its own process:
the messy listening log of ``bench/listening_log.py`` (DeepFM on the skip; 30,000 plays), synthetic CTR
logs (DeepFM, 10,000 rows) and synthetic search sessions (ESMM, 1,000 sessions of 20 impressions)::

    .venv/bin/python bench/ranker_batch.py --out /tmp/ranker-batch --seeds 42,2,3 --batches 0,64,128,512
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listening_log import listening_log  # noqa: E402


def logs(music: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (the train command's arguments, the test metric reported)."""
    return {
        "listening log, DeepFM": (["deepfm", "--dataset", "csv", "--data", str(music / "plays.csv"),
                                   "--label-columns", "skipped", "--user-column", "user_id", "--item-column",
                                   "track_id", "--items", str(music / "tracks.csv"), "--users",
                                   str(music / "listeners.csv"), "--exclude-columns", "ms_played",
                                   "--skip-bad-rows"], "auc"),
        "synthetic CTR 10k, DeepFM": (["deepfm", "--dataset", "synthetic", "--synthetic-rows", "10000"],
                                      "auc"),
        "synthetic sessions 1k, ESMM": (["esmm", "--dataset", "synthetic", "--synthetic-sessions", "1000"],
                                        "ctcvr_auc"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="42,2,3")
    parser.add_argument("--batches", default="0,64,128,512", help="0: the default, sized from the rows")
    args = parser.parse_args()
    listening_log(args.out / "music")
    seeds, batches = args.seeds.split(","), [int(b) for b in args.batches.split(",")]
    results: dict = {}
    for number, (name, (command, metric)) in enumerate(logs(args.out / "music").items()):
        for batch in batches:
            for seed in seeds:
                run = args.out / "runs" / f"{number}-{command[0]}-b{batch}-s{seed}"
                options = ["--batch-size", str(batch), "--seed", seed, "--output-dir", str(run),
                           "--overwrite", "--progress", "false"]
                subprocess.run([sys.executable, "-m", "tfrs_recsys.train", *command, *options], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                metrics = json.loads((run / "test_metrics.json").read_text())
                results.setdefault((name, metric), {}).setdefault(batch, []).append(metrics[metric])
    print(f"| log | test metric | {' | '.join('default (0)' if b == 0 else str(b) for b in batches)} |")
    print(f"|---|---|{'---|' * len(batches)}")
    for (name, metric), by_batch in results.items():
        cells = [f"{np.mean(v):.3f} ({', '.join(f'{x:.3f}' for x in v)})" for v in by_batch.values()]
        print(f"| {name} | {metric} | {' | '.join(cells)} |")
    (args.out / "ranker_batch.json").write_text(json.dumps({f"{n} {m}": v for (n, m), v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
