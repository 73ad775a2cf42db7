"""The input files a run reads, recorded when it begins so that ``--resume`` can tell they changed.

A resumed run goes on from its last epoch as if it had never stopped, which holds only if it reads the
files its first epochs read. The config names paths, not contents: a daily export rewritten at the same
path between the kill and the restart would be read as the same data. Each file's size (and, on a local
disk, its modification time) is kept in ``RUN/resume/inputs.json``, which goes with ``resume/`` when the
run completes.
"""
from __future__ import annotations

import json
import os

from tfrs_recsys import paths, runs
from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.data.tabular import table_files

INPUTS = "inputs.json"
TABLE_DATASETS = ("interactions", "csv", "parquet")  # --data is a table: a file, a glob or shards
_FLAGS = {"data_dir": "--data", "items": "--items", "users": "--users", "feature_spec": "--feature-spec"}


def _fingerprint(cfg: TrainConfig) -> dict[str, list]:
    """``file -> [size, modification time in ns or None]`` of the table files the config names (a named
    dataset's own folder, MovieLens' say, is read by its loader's rules and is not followed here)."""
    out = {}
    for field, flag in _FLAGS.items():
        path = getattr(cfg, field, None)
        if not path or (field == "data_dir" and cfg.dataset not in TABLE_DATASETS):
            continue
        for file in table_files(path, flag) if field != "feature_spec" else [path]:
            local = not paths.is_remote(file)
            out[str(file)] = [paths.size(file), os.stat(file).st_mtime_ns if local else None]
    return out


def record(cfg: TrainConfig, run_dir) -> None:
    """Writes the fingerprint of the run's input files into ``run_dir``'s ``resume/`` folder, unless one is
    there: a resumed run keeps the record of the files its first epochs read.

    Args:
      cfg: The run's config.
      run_dir: Its directory.
    """
    folder = paths.makedirs(paths.join(run_dir, runs.RESUME))
    if not paths.isfile(paths.join(folder, INPUTS)):
        paths.write_text_atomic(paths.join(folder, INPUTS), json.dumps(_fingerprint(cfg), indent=1))


def check_unchanged(cfg: TrainConfig, run_dir) -> None:
    """Refuses to resume a run whose input files changed size, appeared or went since it began; a file
    only modified since (the same size: a copy made again, as a preempted job's start does) is said, not
    refused. A run without a record passes.

    Args:
      cfg: The resumed run's config.
      run_dir: Its directory.

    Raises:
      ConfigError: A file changed, appeared or went; the message names it and what to pass.
    """
    saved_path = paths.join(run_dir, runs.RESUME, INPUTS)
    if not paths.isfile(saved_path):
        return
    saved, now = paths.read_json(saved_path), _fingerprint(cfg)
    changed = [f"{f} is new" for f in now if f not in saved] + [f"{f} is gone" for f in saved if f not in now]
    changed += [f"{f} changed (size {saved[f][0]} then, {now[f][0]} now)" for f in now
                if f in saved and saved[f][0] != now[f][0]]
    if touched := [f for f in now if f in saved and saved[f][0] == now[f][0] and saved[f][1] != now[f][1]]:
        print(f"resume: {touched[0]}{f' and {len(touched) - 1} more' if len(touched) > 1 else ''} modified "
              "since the run began, at the same size: resuming on it (if its rows changed, pass --overwrite)",
              flush=True)
    if changed:
        more = f"; {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ConfigError(f"--resume: the run's input files changed since it began ({'; '.join(changed[:3])}"
                          f"{more}): a resumed run must read the data its first epochs read; restore those "
                          "files, or pass --overwrite (or another --output-dir) to train on the new data "
                          "from the first epoch")
