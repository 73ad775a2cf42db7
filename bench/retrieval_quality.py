"""Retrieval quality on MovieLens against RecBole SASRec and the popularity ranking, measured alike.

    .venv/bin/python bench/retrieval_quality.py [--datasets-dir DIR] [--only ml-100k,ml-latest-small,tutorial]
        [--row default[,ROW...]] [--seeds 42,43,44] [--merge] [--output-dir runs/bench-retrieval]

Every run trains the CLI defaults (no model flags: the protocol is not one) from scratch with
``tfrs_recsys.training.retrieval.run``, once per seed, and writes its own JSON under
``OUTPUT_DIR/rows/RUN/ROW-seedS.json``; the tables (and ``bench_results.json``) are the mean over the
seeds of the rows found, so a long bench can run row by row across sessions (``--merge`` only merges).
``--row`` names ablation rows (:data:`ROWS`): flags over the defaults, one factor at a time.

Protocols:

* ``ml-100k`` and ``ml-latest-small``: leave-last-out, full ranking over every item, the user's history
  excluded; test metrics at the best validation-NDCG@10 epoch. Reference: RecBole 1.2.1 SASRec
  (:data:`REFERENCES`); targets: NDCG@10 >= 1.25x the reference, training time <= the reference's.
* ``synthetic``: the same protocol on generated histories of another size (no reference).
* ``tutorial``: the TFRS basic-retrieval tutorial protocol on ML-100K: random 80/20 split
  (seed 42; 5% of the interactions held out of training for early stopping), top-K hit rates
  over all items, nothing excluded. Its targets are random interactions, not next items, so
  the model runs as the feature two-tower (Transformer off, user id + user features against
  items with genres), like the tutorial's user-id tower. ``tutorial-transformer`` (on request) runs the
  Transformer tower on the same protocol.

A popularity ranking (same split, same exclusions) is printed beside each result as the floor.
``train_seconds`` is the wall time of ``model.fit`` (all epochs run, with the per-epoch
validation and the early-stopping patience), as for the reference.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tfrs_recsys.config_sources import build_config
from tfrs_recsys.data.sequences import catalog_ids
from tfrs_recsys.metrics import rank_of_target, topk_metrics
from tfrs_recsys.runs import META
from tfrs_recsys.training.retrieval import TUTORIAL_KS, load_data, run, split_data

REPO = Path(__file__).resolve().parents[1]
# RecBole 1.2.1 SASRec (2 blocks, 2 heads, d=64, inner 256, dropout 0.2, max length 50, CE over the catalog,
# Adam 0.002, batch 512, early stopping on validation NDCG@10 with patience 5), test at the best epoch.
REFERENCES = {
    "ml-100k": {"ndcg@10": 0.0544, "recall@10": 0.1177, "mrr@10": 0.0352, "ndcg@50": 0.1189,
                "recall@50": 0.4168, "mrr@50": 0.0484, "train_seconds": 1770.0},
    "ml-latest-small": {"ndcg@10": 0.0692, "recall@10": 0.1377, "mrr@10": 0.0485, "ndcg@50": 0.1108,
                        "recall@50": 0.3311, "train_seconds": 2990.0},
}
REFERENCE = REFERENCES["ml-100k"]
TUTORIAL_REFERENCE = {"recall@100": 0.241}
TARGETS = {"ndcg@10": 1.25 * REFERENCE["ndcg@10"], "tutorial_recall@100": 0.31}
RATIO_TARGET = 1.25

RUNS = {
    "ml-100k": {"dataset": "movielens-100k", "folder": "ml-100k", "protocol": "leave_last_out"},
    "ml-latest-small": {"dataset": "movielens-csv", "folder": "ml-latest-small",
                        "protocol": "leave_last_out"},
    # The tutorial's queries are users, its targets random interactions rather than next items: the
    # same model with the Transformer off (user id + features, like the tutorial's user tower).
    "tutorial": {"dataset": "movielens-100k", "folder": "ml-100k", "protocol": "random_80_20",
                 "flags": {"use_transformer": False}},
    # A third size, generated (no files): 2,000 users, 500 items, histories of 5-60 items. It checks that the
    # rules of the defaults that follow the data's size hold off the two MovieLens sets.
    "synthetic": {"dataset": "synthetic-histories", "folder": None, "protocol": "leave_last_out"},
    # For comparison (not run by default): the Transformer tower on the tutorial protocol.
    "tutorial-transformer": {"dataset": "movielens-100k", "folder": "ml-100k", "protocol": "random_80_20"},
}
DEFAULT_RUNS = "ml-100k,ml-latest-small,tutorial"
# Ablation rows (--row NAME): model flags over the CLI defaults. "default" sets none; "old-defaults" is
# the CLI before the data-size rules. The rows named by their flags were run while choosing (on validation
# NDCG@10): each changes one factor of a configuration near today's defaults.
OLD_DEFAULTS = {"similarity": "cosine", "batch_size": 128, "patience": 3, "learning_rate": 0.001,
                "epochs": 30, "exclude_seen": False}
EXPLORED = {"learning_rate": 0.002, "patience": 5, "epochs": 40}
ROWS = {
    "default": {},
    "old-defaults": OLD_DEFAULTS,
    "cosine": {"similarity": "cosine"},
    "batch-128": {"batch_size": 128},
    "positions-start": {"positions_from": "start"},
    "dropout-0.5": {"dropout": 0.5},
    "dot-b32": {"similarity": "dot", "batch_size": 32, **EXPLORED},
    "cos-b32": {"similarity": "cosine", "batch_size": 32, **EXPLORED},
    "dot-s10": {"similarity": "dot", "window_stride": 10, **EXPLORED},
    "dot-nouser": {"similarity": "dot", "use_user_id": False, **EXPLORED},
    "dot-start": {"similarity": "dot", "positions_from": "start", **EXPLORED},
    "no-user-id": {"use_user_id": False},
    "no-item-features": {"use_item_features": False},
    "no-exclude-seen": {"exclude_seen": False},
    "ema-0.99": {"ema_momentum": 0.99},
    "sasrec-like": {"use_user_id": False, "use_item_features": False, "positions_from": "start"},
    "dim-128": {"embedding_dim": 128},
    # Overlapping windows: every target sees at least 25 items of context (SASRec's: up to 50), 2x the work.
    "stride-25": {"window_stride": 25},
    # SASRec as the reference trains it: ids only, one target per example with its 50 items before it,
    # 512 examples per step, seen items kept in the softmax, patience 5 epochs.
    "sasrec-prefix": {"use_user_id": False, "use_item_features": False, "positions_from": "start",
                      "training_mode": "prefix", "batch_size": 512, "exclude_seen": False, "patience": 5},
    "sasrec-all": {"use_user_id": False, "use_item_features": False, "positions_from": "start",
                   "exclude_seen": False},
    "post-ln": {"block_norm": "post"},
    "sasrec-all-post-ln": {"use_user_id": False, "use_item_features": False, "positions_from": "start",
                           "exclude_seen": False, "block_norm": "post"},
}


def config_for(name: str, datasets_dir: Path, output_dir: Path, **overrides):
    """The config of run ``name``: the CLI defaults, the run's dataset and protocol, then ``overrides``."""
    spec = RUNS[name]
    values = {**spec.get("flags", {}), "dataset": spec["dataset"], "protocol": spec["protocol"],
              "data_dir": str(datasets_dir / spec["folder"]) if spec["folder"] else None,
              "output_dir": str(output_dir / name), "progress": False, "overwrite": True,
              **overrides}
    return build_config("retrieval", values, environ={})


def popularity_floor(cfg, history_left_out: bool = False) -> dict[str, float]:
    """Rank items by training frequency, with the protocol's exclusions (and each user's history left out,
    with ``history_left_out``: the rule a tutorial-protocol run may choose on validation)."""
    data = load_data(cfg)
    split = split_data(cfg, data)
    counts = pd.Series(np.concatenate(split.train.items)).value_counts()
    catalog = catalog_ids(data.interactions)
    position = {item: i for i, item in enumerate(catalog)}
    scores = np.tile(counts.reindex(catalog).fillna(0).to_numpy(np.float64), (len(split.test), 1))
    exclude = np.zeros(scores.shape, dtype=bool)
    held = split.test.histories if history_left_out else split.test.exclude
    for row, items in enumerate(held):
        exclude[row, [position[i] for i in items if i in position]] = True
    ranks = rank_of_target(scores, np.array([position[t] for t in split.test.targets]), exclude)
    ks = TUTORIAL_KS if cfg.protocol == "random_80_20" else tuple(cfg.eval_ks)
    return topk_metrics(ranks, ks)


def run_row(name: str, row: str, seed: int, datasets_dir: Path, output_dir: Path) -> dict:
    """Train run ``name`` with ablation row ``row`` and ``seed``; write and return its row JSON."""
    tag = f"{row}-seed{seed}"
    cfg = config_for(name, datasets_dir, output_dir / "runs" / tag, seed=seed, **ROWS[row])
    start = time.perf_counter()
    metrics = run(cfg)
    wall = time.perf_counter() - start
    meta = json.loads((Path(cfg.output_dir) / META).read_text())
    result = {"run": name, "row": row, "seed": seed, "flags": ROWS[row], "test": metrics,
              "validation": meta["best_validation"], "monitor": meta["monitor"],
              "train_seconds": meta["train_seconds"], "wall_seconds": round(wall, 1),
              "best_epoch": meta["best_epoch"], "epochs_run": meta["epochs_run"],
              "inverse_temperature": meta["inverse_temperature"], "output_dir": cfg.output_dir,
              "cooccurrence_beta": meta.get("cooccurrence_beta"),
              "cooccurrence_damping": meta.get("cooccurrence_damping"),
              "two_tower_test": meta.get("two_tower_test"), "history_left_out": meta.get("history_left_out")}
    path = output_dir / "rows" / name / f"{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name} {tag}: validation {result['monitor']} {result['validation']:.4f}, test "
          f"{result['monitor']} {metrics[result['monitor']]:.4f}, training {result['train_seconds']:.0f} s "
          f"(best epoch {result['best_epoch']} of {result['epochs_run']})"
          + (f"; co-occurrence weight {result['cooccurrence_beta']}, two-tower alone "
             f"{result['two_tower_test'][result['monitor']]:.4f}" if result["two_tower_test"] else ""),
          flush=True)
    return result


def merge(output_dir: Path, names: list[str], datasets_dir: Path, row: str = "default") -> dict:
    """The mean over seeds of each run's ``row`` JSONs, with the popularity floor and the reference."""
    results = {}
    for name in names:
        paths = sorted((output_dir / "rows" / name).glob(f"{row}-seed*.json"))
        rows = [json.loads(p.read_text()) for p in paths]
        if not rows:
            continue
        test = {k: float(np.mean([r["test"][k] for r in rows])) for k in rows[0]["test"]}
        cfg = config_for(name, datasets_dir, output_dir / "runs", seed=rows[0]["seed"])
        results[name] = {"test": test, "seeds": [r["seed"] for r in rows],
                         "test_per_seed": [r["test"] for r in rows],
                         "validation": float(np.mean([r["validation"] for r in rows])),
                         "monitor": rows[0]["monitor"],
                         "train_seconds": float(np.mean([r["train_seconds"] for r in rows])),
                         "max_train_seconds": max(r["train_seconds"] for r in rows),
                         "epochs_run": [r["epochs_run"] for r in rows],
                         "best_epoch": [r["best_epoch"] for r in rows],
                         "popularity": popularity_floor(cfg), "reference": REFERENCES.get(name),
                         "history_left_out": [r.get("history_left_out") for r in rows]}
        if cfg.protocol == "random_80_20" and any(results[name]["history_left_out"]):
            results[name]["popularity_history_left_out"] = popularity_floor(cfg, history_left_out=True)
        if name in REFERENCES:
            results[name]["ratio"] = {k: test[k] / v for k, v in REFERENCES[name].items() if k in test}
        report(name, results[name])
    return results


def ablation_table(output_dir: Path, names: list[str]) -> None:
    """One line per (run, row): mean validation and test of its seeds, and its training time."""
    print("| run | row | flags | seeds | validation (NDCG@10; tutorial: top-100) | test (same) "
          "| training s |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        by_row: dict[str, list[dict]] = {}
        for p in sorted((output_dir / "rows" / name).glob("*.json")):
            r = json.loads(p.read_text())
            by_row.setdefault(r["row"], []).append(r)
        for row, rs in by_row.items():
            flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in rs[0]["flags"].items())
            print(f"| {name} | {row} | {flags or '(defaults)'} | {len(rs)} | "
                  f"{np.mean([r['validation'] for r in rs]):.4f} | "
                  f"{np.mean([r['test'][r['monitor']] for r in rs]):.4f} | "
                  f"{np.mean([r['train_seconds'] for r in rs]):.0f} |")


def breakdown(output_dir: Path, name: str, row: str, seed: int) -> None:
    """Test NDCG@10 of a saved run by kind of target (rated in the validation item's second or not, and by
    the user's history length), of what it serves (fused with co-occurrence counts, when it chose to), of
    its two-tower scores alone and of its co-occurrence counts alone. Ranks the run's test targets again
    from its run directory."""
    from tfrs_recsys.runs import load_retrieval
    from tfrs_recsys.training.retrieval import ranks

    trained = load_retrieval(output_dir / "runs" / f"{row}-seed{seed}" / name)
    split = split_data(trained.cfg, load_data(trained.cfg))
    second = {part: dict(zip(frame["user_id"].astype(str), frame["timestamp"]))
              for part, frame in (("validation", split.rows.validation), ("test", split.rows.test))}
    tied = np.array([second["test"][u] == second["validation"][u] for u in split.test.user_ids])
    length = np.array([len(h) for h in split.test.histories])
    modes = [("served", trained.cooccurrence), ("two-tower alone", None)]
    if trained.cooccurrence is not None:  # the counts, the two-tower only breaking their ties
        modes.append(("co-occurrence counts alone", dataclasses.replace(trained.cooccurrence, beta=1e4)))
    for scores, table in modes:
        rank = ranks(trained.model, split.test, trained.cfg.max_history, table=table)
        gains = np.where(rank < 10, 1 / np.log2(rank + 2), 0.0)
        for label, keep in (("all", np.ones_like(tied)), ("same second as validation", tied), ("not", ~tied),
                            ("history > 500", length > 500), ("history < 100", length < 100)):
            print(f"{name} {row} seed {seed}, {scores}: {label}: {keep.sum()} targets, "
                  f"NDCG@10 {gains[keep].mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--only", default=DEFAULT_RUNS, help=f"comma-separated runs of {sorted(RUNS)}")
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "bench-retrieval")
    parser.add_argument("--seeds", default="42,43,44",
                        help="comma-separated seeds; the tables give their mean")
    parser.add_argument("--row", default="default",
                        help=f"comma-separated ablation rows of {sorted(ROWS)} (each writes its own JSON)")
    parser.add_argument("--merge", action="store_true",
                        help="train nothing: merge the row JSONs already written into the tables")
    parser.add_argument("--breakdown", action="store_true",
                        help="train nothing: each saved run's test NDCG@10 by kind of target")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    rows = [r.strip() for r in args.row.split(",") if r.strip()]
    unknown = sorted(set(names) - set(RUNS)) + sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown run(s) or row(s) {unknown}; runs: {sorted(RUNS)}, rows: {sorted(ROWS)}")
    missing = [n for n in names if RUNS[n]["folder"] and not (args.datasets_dir / RUNS[n]["folder"]).is_dir()]
    for name in missing:
        print(f"{name}: skipped, {args.datasets_dir / RUNS[name]['folder']} not found (pass --datasets-dir)")
    names = [n for n in names if n not in missing]
    if args.breakdown:
        for name, row, seed in itertools.product(names, rows, (int(x) for x in args.seeds.split(","))):
            breakdown(args.output_dir, name, row, seed)
        return
    if not args.merge:
        for name in names:
            for row in rows:
                for seed in (int(x) for x in args.seeds.split(",")):
                    run_row(name, row, seed, args.datasets_dir, args.output_dir)
    results = merge(args.output_dir, names, args.datasets_dir)
    print()
    ablation_table(args.output_dir, names)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "bench_results.json").write_text(json.dumps(results, indent=2) + "\n")


def report(name: str, r: dict) -> None:
    test, pop = r["test"], r["popularity"]
    print(f"\n== {name}: mean of seeds {r['seeds']}: validation {r['monitor']} {r['validation']:.4f}, "
          f"training {r['train_seconds']:.0f} s (at most {r['max_train_seconds']:.0f}), "
          f"epochs run {r['epochs_run']}")
    if name.startswith("tutorial"):
        # The protocol's floor excludes nothing; a run that chose to leave histories out is also set beside
        # popularity under the same rule.
        same = r.get("popularity_history_left_out")
        print(f"history left out of the ranking (chosen on validation), per seed: {r['history_left_out']}")
        print("| metric | ours | popularity | ours / popularity |"
              + (" popularity, history left out | ours / it |" if same else "") + " TFRS tutorial |")
        print("|---|---|---|---|" + ("---|---|" if same else "") + "---|")
        for k in (1, 5, 10, 50, 100):
            key, ref = f"recall@{k}", {100: TUTORIAL_REFERENCE["recall@100"]}.get(k, "")
            print(f"| top-{k} hit rate | {test[key]:.4f} | {pop[key]:.4f} | "
                  f"{test[key] / max(pop[key], 1e-12):.2f}x |"
                  + (f" {same[key]:.4f} | {test[key] / max(same[key], 1e-12):.2f}x |" if same else "")
                  + f" {ref} |")
        return
    reference = r["reference"]
    print("| metric | ours | popularity | ours / popularity |" + (" RecBole SASRec | ours / reference |"
                                                               if reference else ""))
    print("|---|---|---|---|" + ("---|---|" if reference else ""))
    for key in ("ndcg@10", "recall@10", "mrr@10", "ndcg@50", "recall@50", "mrr@50"):
        row = f"| {key} | {test[key]:.4f} | {pop[key]:.4f} | {test[key] / max(pop[key], 1e-12):.2f}x |"
        if reference and key in reference:
            row += f" {reference[key]:.4f} | {test[key] / reference[key]:.2f}x |"
        print(row)
    if reference:
        print(f"| training seconds | {r['train_seconds']:.0f} | | | {reference['train_seconds']:.0f} | "
              f"{r['train_seconds'] / reference['train_seconds']:.2f}x |")
        goal = RATIO_TARGET * reference["ndcg@10"]
        met = test["ndcg@10"] >= goal and r["max_train_seconds"] <= reference["train_seconds"]
        print(f"target NDCG@10 >= {goal:.4f} ({RATIO_TARGET}x) and training <= "
              f"{reference['train_seconds']:.0f} s: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
