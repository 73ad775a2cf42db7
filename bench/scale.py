"""The cost curve of training from files, 100K rows and up: one table per model, printed and written as JSON.

Data first, untimed: ``bench/scale_data.py`` writes each data set once (Parquet shards; CSV too for the
rankers) under ``--data-root``; a data set already there is reused. Then each (model, size) runs in a fresh
process (``bench/scale.py --one MODEL ROWS``) that trains one epoch from the files as a user's run reads
them and writes its own JSON into ``--out``; the bench merges the JSONs it finds, so a size may be run in
another session and the table still fills in.

Phases, in seconds: ``load`` (read / sample the files, infer the spec), ``split``, ``pipeline`` (build the
training input), ``epoch`` (the training steps of one epoch, validation excluded), ``evaluation``
(validation after the epoch and the test evaluation), ``artifacts`` (run files), ``other`` (the rest of the
run but its training epochs: building the models, checkpoints, and whatever happens between the phases,
e.g. a fit's input torn down after its last step). The non-training share is all but the epochs (every
training epoch of the run, the clicked-only baseline's too) over one epoch. ``ex/s`` = training
examples / epoch seconds; ``rss`` = the process's peak RSS (``resource.getrusage``); ``tables`` = the
embedding rows and the MiB of the tables plus their optimizer slots (rankers: row-wise Adagrad's accumulator;
retrieval: Adam's two moments).

The rankers train with ``--streaming always`` (``tfrs_recsys.training.stream``): the path a user's
large files take. Retrieval trains with ``--dataset interactions`` on the Parquet histories; its phases
are timed by wrapping the training module's functions (load_data, split_data, training_windows and
training_dataset, ranks and fit_cooccurrence, write_retrieval_files). Where a pass over the targets would
outlast a session (about 1,000 targets/s on 2 cores: 5.5 hours at 20M), ``--extra "--steps-per-epoch N"``
trains two epochs of N steps and the table's ``epoch`` and ``ex/s`` are the second's (the first also traces
the graph and fills the shuffle buffer, one-offs of a run); its non-training share is of a whole pass at
that rate.

    python bench/scale.py --models deepfm,esmm --sizes 100000,1000000
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
KINDS = {"deepfm": "criteo", "esmm": "sessions", "retrieval": "histories"}
RANKER_ARGS = {
    "deepfm": ["--label-columns", "label"],
    "esmm": ["--label-columns", "click,conversion", "--session-column", "session_id", "--user-column",
             "user_id", "--item-column", "item_id"],
}
RETRIEVAL_ARGS = ["--dataset", "interactions", "--user-column", "user_id", "--item-column", "item_id",
                  "--time-column", "timestamp"]
PHASES = ("load", "split", "pipeline", "evaluation", "artifacts", "other")
COLUMNS = ("rows", "load", "split", "pipeline", "epoch", "evaluation", "artifacts", "other",
           "non-training share", "ex/s", "rss GiB", "table rows", "tables MiB", "quality")


def data_dir(root: Path, model: str, rows: int, items: int | None) -> Path:
    """Where the data set of ``model`` at ``rows`` lives (written once by bench/scale_data.py)."""
    kind = KINDS[model]
    folder = root / (f"{kind}-{rows}" + (f"-items{items}" if items else ""))
    if not (folder / "manifest.json").is_file():
        sys.path.insert(0, str(REPO / "bench"))
        from scale_data import generate

        print(f"scale: writing {kind} data, {rows} rows -> {folder}", flush=True)
        generate(kind, rows, folder, items=items)
    return folder


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _table_memory(spec_path: Path, dim: int, model: str) -> tuple[int, float]:
    spec = json.loads(spec_path.read_text())
    rows = 0
    for f in spec["features"]:
        if f["encoding"] == "vocabulary":
            rows += len(f["vocabulary"]) + 1
        elif f["encoding"] == "hash":
            rows += f["num_buckets"]
    # float32: a row of the table and its row-wise Adagrad accumulator; DeepFM adds a first-order weight per
    # row, with its accumulator.
    return rows, rows * (dim + 1 + (2 if model == "deepfm" else 0)) * 4 / 2 ** 20


def run_ranker(model: str, folder: Path, out_dir: Path, extra: list[str]) -> dict:
    from tfrs_recsys.config_sources import config_from_args
    from tfrs_recsys.training import deepfm, esmm

    argv = ["--dataset", "parquet", "--data", str(folder / "parquet"), *RANKER_ARGS[model], "--streaming",
            "always", "--epochs", "2", "--patience", "2", "--progress", "false", "--output-dir", str(out_dir),
            *extra]
    cfg = config_from_args(model, argv)
    clock = time.perf_counter()
    metrics = (deepfm if model == "deepfm" else esmm).run(cfg)
    total = time.perf_counter() - clock
    t = metrics["timings"]
    epoch = t["epochs"][0][-1]  # the last epoch: the first one also traces the graph
    split = json.loads((out_dir / "split.json").read_text())
    table_rows, table_mib = _table_memory(out_dir / "spec.json", cfg.embedding_dim, model)
    quality = {"deepfm": ("auc", metrics.get("auc")), "esmm": ("ctcvr_auc", metrics.get("ctcvr_auc"))}[model]
    phases = {"load": t["load"], "split": t["split"], "pipeline": t["pipeline"],
              "evaluation": t["validation"] + t["evaluation"], "artifacts": t["artifacts"]}
    other = total - sum(phases.values()) - sum(map(sum, t["epochs"]))
    return {"argv": argv, **phases, "other": other, "epoch": epoch, "total": total,
            "train_examples": split["expected_train_rows"], "table_rows": table_rows, "tables_mib": table_mib,
            "quality": quality, "all_epochs": t["epochs"]}


def run_retrieval(folder: Path, out_dir: Path, extra: list[str]) -> dict:
    from tfrs_recsys import runs
    from tfrs_recsys.config_sources import config_from_args
    from tfrs_recsys.data import sequences as seq
    from tfrs_recsys.training import distribution, retrieval
    from tfrs_recsys.training.optimizers import embedding_tables

    seconds: dict[str, float] = {}
    rank_calls: list[float] = []  # validation after each epoch, then the test

    def timed(phase, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            clock = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - clock
                if phase == "evaluation":
                    rank_calls.append(time.perf_counter() - clock)
        return wrapper

    retrieval.load_data = timed("load", retrieval.load_data)
    retrieval.split_data = timed("split", retrieval.split_data)
    windows_made: list[dict] = []

    def training_windows(*args, **kwargs):
        windows_made.append(make_windows(*args, **kwargs))
        return windows_made[-1]

    make_windows = timed("pipeline", seq.training_windows)
    seq.training_windows = training_windows
    seq.training_dataset = timed("pipeline", seq.training_dataset)
    retrieval.ranks = timed("evaluation", retrieval.ranks)
    # the co-occurrence table: built from the training sequences, its weight chosen on the validation users
    retrieval.fit_cooccurrence = timed("evaluation", retrieval.fit_cooccurrence)
    runs.write_retrieval_files = timed("artifacts", runs.write_retrieval_files)
    # Epochs of N steps: time the second (the first also traces the graph and fills the shuffle buffer).
    epochs = "2" if "--steps-per-epoch" in extra else "1"
    argv = [*RETRIEVAL_ARGS, "--data", str(folder / "parquet"), "--epochs", epochs, "--progress", "false",
            "--output-dir", str(out_dir), *extra]
    cfg = config_from_args("retrieval", argv)
    distribution.start_runtime(cfg)
    clock = time.perf_counter()
    data = retrieval.load_data(cfg)
    result = retrieval.train_and_evaluate(cfg, data)
    total = time.perf_counter() - clock
    meta = json.loads((out_dir / "retrieval_meta.json").read_text())
    tables = embedding_tables(result.model)
    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    # One ranking per logged epoch (its validation), then the work after the fit (the history rules, the
    # co-occurrence table's fit, the test). The last epoch's steps: its logged seconds less its validation
    # (a lone epoch: the fit call's).
    validations = rank_calls[:len(log)]
    epoch = (log[-1]["seconds"] - validations[-1] if len(log) > 1 else meta["train_seconds"] - validations[0])
    # One pass trains every target once; --steps-per-epoch N trains N of its batches (epochs of N steps).
    targets = int((windows_made[-1]["targets"] != seq.PAD).sum())
    trained = targets
    if cfg.steps_per_epoch:
        batch = retrieval.windows_per_step(cfg, windows_made[-1]["targets"])
        per_step = targets / seq.training_batches(windows_made[-1], batch)
        trained = round(cfg.steps_per_epoch * per_step)
    phases = {phase: seconds.get(phase, 0.0) for phase in ("load", "split", "pipeline", "artifacts")}
    steps = sum(r["seconds"] for r in log) - sum(validations)
    other = total - sum(phases.values()) - sum(rank_calls) - steps
    return {"argv": argv, **phases, "other": other, "epoch": epoch, "evaluation": sum(rank_calls),
            "validation_seconds": validations, "after_fit_seconds": rank_calls[len(log):], "total": total,
            "train_examples": trained, "pass_targets": targets, "log_seconds": [r["seconds"] for r in log],
            "quality": ("ndcg@10", result.test_metrics.get("ndcg@10")), "items": meta.get("items"),
            # float32 rows of each table and of Adam's two moments
            "table_rows": sum(int(t.shape[0]) for t in tables),
            "tables_mib": sum(t.shape.num_elements() for t in tables) * 3 * 4 / 2 ** 20,
            "meta": {k: meta.get(k) for k in ("negatives", "train_seconds", "users", "items")}}


def one(model: str, rows: int, args) -> None:
    """One (model, size) in this process; writes OUT/MODEL-ROWS.json."""
    folder = data_dir(Path(args.data_root), model, rows, args.items)
    tag = f"{model}-{rows}" + (f"-items{args.items}" if args.items else "")
    out_dir = Path(args.out) / "runs" / tag
    extra = args.extra.split() if args.extra else []
    clock = time.perf_counter()
    if model == "retrieval":
        row = run_retrieval(folder, out_dir, extra)
    else:
        row = run_ranker(model, folder, out_dir, extra)
    row.update({"model": model, "rows": rows, "items": args.items, "wall": time.perf_counter() - clock,
                "peak_rss_gib": _peak_rss_gib(), "examples_per_s": row["train_examples"] / row["epoch"]})
    if "pass_targets" in row:  # retrieval: a whole pass over the targets at the measured rate
        row["pass_seconds"] = row["pass_targets"] / row["examples_per_s"]
    path = Path(args.out) / f"{tag}.json"
    path.write_text(json.dumps(row, indent=2, default=str) + "\n")
    print(json.dumps(row, default=str), flush=True)


def table(results: list[dict]) -> str:
    """The merged results, one markdown table per model."""
    lines = []
    for model in KINDS:
        rows = sorted((r for r in results if r["model"] == model),
                      key=lambda r: (r.get("items") or 0, r["rows"]))
        if not rows:
            continue
        lines += [f"\n{model}\n", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in rows:
            other = sum(r.get(k, 0.0) for k in PHASES)  # "other" is missing from JSONs of older runs
            epoch = r.get("pass_seconds", r["epoch"])  # the share is of one pass, also when fewer steps ran
            size = f"{r['rows']:,}" + (f" ({r['items']:,} items)" if r.get("items") else "")
            name, value = r["quality"]
            cells = [size, *(f"{r[k]:.1f}" if k in r else "-" for k in COLUMNS[1:8]),
                     f"{other / epoch:.0%}", f"{r['examples_per_s']:,.0f}", f"{r['peak_rss_gib']:.2f}",
                     f"{r.get('table_rows', 0):,}", f"{r.get('tables_mib', 0):.0f}",
                     f"{name} {value:.4f}" if value is not None else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="deepfm,esmm,retrieval")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--items", type=int, help="retrieval: catalog size (default 27,000)")
    parser.add_argument("--data-root", default="runs/scale-data")
    parser.add_argument("--out", default="runs/scale")
    parser.add_argument("--extra", help="more training flags, e.g. '--batch-size 1024'")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--merge-only", action="store_true", help="print the table of the JSONs in --out")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.one:
        one(args.one[0], int(args.one[1]), args)
        return
    if not args.merge_only:
        for model in args.models.split(","):
            for rows in map(int, args.sizes.split(",")):
                command = [sys.executable, __file__, "--one", model, str(rows), "--data-root", args.data_root,
                           "--out", args.out] + (["--items", str(args.items)] if args.items else []) + (
                    ["--extra", args.extra] if args.extra else [])
                env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
                code = subprocess.run(command, env=env, cwd=REPO).returncode
                if code:
                    print(f"scale: {model} at {rows} rows failed with exit code {code}", file=sys.stderr)
    results = [json.loads(p.read_text()) for p in sorted(Path(args.out).glob("*.json"))
               if p.name != "scale.json"]
    text = table(results)
    print(text)
    (Path(args.out) / "scale.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
