"""Exact top-k for many users of a retrieval run: ``recommend()`` per user against one ``Recommender``.

``recommend(trained, user)`` computes the catalog's embeddings and the whole log's co-occurrence table for
each call; a :class:`~tfrs_recsys.recommend.Recommender` computes them once. Prints the seconds per user
of each, the Recommender's one-off cost, and their ratio, for the first ``--users`` users of a run (any
retrieval run; ``make demo``'s by default), checking that both answer alike:

    .venv/bin/python bench/recommend_users.py --run-dir runs/demo/retrieval --users 50
"""
from __future__ import annotations

import argparse
import json
import time

from tfrs_recsys.recommend import Recommender, recommend
from tfrs_recsys.runs import load_retrieval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo/retrieval", help="a retrieval run directory")
    parser.add_argument("--users", type=int, default=50, help="users to recommend for")
    parser.add_argument("--k", type=int, default=10, help="items per user")
    args = parser.parse_args()
    trained = load_retrieval(args.run_dir)
    users = sorted(trained.histories)[:args.users]
    start = time.perf_counter()
    each = [recommend(trained, user, args.k) for user in users]
    per_call = (time.perf_counter() - start) / len(users)
    start = time.perf_counter()
    recommender = Recommender(trained)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    once = [recommender.recommend(user, args.k) for user in users]
    per_user = (time.perf_counter() - start) / len(users)
    assert [[r["item_id"] for r in a] for a in each] == [[r["item_id"] for r in b] for b in once]
    print(json.dumps({"items": len(trained.catalog), "users_in_run": len(trained.histories),
                      "users": len(users), "recommend_ms_per_user": round(per_call * 1000, 1),
                      "recommender_setup_ms": round(setup * 1000, 1),
                      "recommender_ms_per_user": round(per_user * 1000, 2),
                      "ratio": round(per_call / per_user, 1)}))


if __name__ == "__main__":
    main()
