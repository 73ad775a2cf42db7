"""``python -m tfrs_recsys.recommend --model-dir RUN --user-id 1 --k 10 [--exclude-seen]``.

Prints a user's top-k items (rank, item id, score, title) from a trained retrieval run: the
query tower reads the user's stored history (or ``--history`` ids, most recent last) and
every catalog item is scored exactly. ``--exclude-seen`` drops items of the history.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def recommend(trained, user_id: str, k: int = 10, *, history: Sequence[str] | None = None,
              exclude_seen: bool = False) -> list[dict]:
    """Top-``k`` ``{"item_id", "score", "title"}`` for ``user_id`` from a :class:`TrainedRetrieval`."""
    from tfrs_recsys.training.retrieval import query_vectors

    items = list(trained.histories.get(user_id, [])) if history is None else [str(h) for h in history]
    query = query_vectors(trained.model, np.array([user_id], dtype=object), [np.array(items, dtype=object)],
                          trained.cfg.max_history)[0]
    scores = trained.model.candidate_embeddings().numpy() @ query
    catalog = trained.catalog
    if exclude_seen:
        seen = set(items)
        scores = np.where([c in seen for c in catalog], -np.inf, scores)
    order = [i for i in np.argsort(-scores, kind="stable")[:k] if np.isfinite(scores[i])]
    titles = trained.items["title"].astype(str).tolist() if "title" in trained.items else list(catalog)
    return [{"item_id": catalog[i], "score": float(scores[i]), "title": titles[i]} for i in order]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.recommend",
                                     description="Top-k items for a user from a trained retrieval run")
    parser.add_argument("--model-dir", required=True, help="run directory written by `train retrieval`")
    parser.add_argument("--user-id", required=True, help="raw user id (unknown ids get the cold-start query)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--exclude-seen", action="store_true", help="skip items already in the history")
    parser.add_argument("--history", default=None,
                        help="comma-separated item ids, most recent last (default: the user's stored history)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be >= 1")
    from tfrs_recsys.errors import UserError
    from tfrs_recsys.training.retrieval import load_trained

    try:
        trained = load_trained(args.model_dir)
    except (FileNotFoundError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    history = [h for h in args.history.split(",") if h] if args.history is not None else None
    known = args.user_id in trained.histories
    rows = recommend(trained, args.user_id, args.k, history=history, exclude_seen=args.exclude_seen)
    if args.json:
        print(json.dumps({"user_id": args.user_id, "known_user": known, "recommendations": rows}, indent=2))
        return 0
    used = history if history is not None else trained.histories.get(args.user_id, [])
    note = "" if known or history is not None else " (unknown user: no stored history)"
    print(f"user {args.user_id}: history of {len(used)} items{note}; top {args.k}"
          f"{' excluding seen items' if args.exclude_seen else ''}")
    print(f"{'rank':>4}  {'item_id':>10}  {'score':>8}  title")
    for rank, row in enumerate(rows, 1):
        print(f"{rank:>4}  {row['item_id']:>10}  {row['score']:8.3f}  {row['title']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
