"""``python -m tfrs_recsys.serving.recommend --user-id U --k 10 --store DIR``: recall -> rank from the shell.

Talks to a model server (ours or tensorflow_model_server) over gRPC; prints a table,
or the JSON the HTTP service returns with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import sys

from tfrs_recsys.config import ConfigError
from tfrs_recsys.errors import UserError
from tfrs_recsys.serving.recall_merge import add_recall_merge_arguments, recall_merge_from_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tfrs_recsys.serving.recommend", description=__doc__.splitlines()[0])
    p.add_argument("--user-id", required=True)
    p.add_argument("--k", type=int, default=10, help="items to return")
    p.add_argument("--store", required=True, help="feature store directory (python -m tfrs_recsys.serving.feature_store)")
    p.add_argument("--address", default="127.0.0.1:8500", help="model server gRPC address")
    p.add_argument("--timeout", type=float, default=5.0, help="deadline of each gRPC call, seconds")
    p.add_argument("--retrieval-model", default="retrieval")
    p.add_argument("--ranker-model", default="esmm")
    p.add_argument("--num-candidates", type=int, default=100, help="candidates to rank")
    p.add_argument("--sort-by", default=None, help="ranker output to sort by (default ctcvr, else ctr)")
    p.add_argument("--context", action="append", default=[], metavar="NAME=VALUE",
                   help="request context feature for the ranker (repeatable), e.g. device=mobile")
    p.add_argument("--recall-only", action="store_true", help="the candidates without ranking")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_recall_merge_arguments(p)
    return p


def _context(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: --context {pair!r} is not NAME=VALUE")
        out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.k < 1:
        print("error: --k must be >= 1", file=sys.stderr)
        return 2
    from tfrs_recsys.serving.client import ServingClient, ServingClientError
    from tfrs_recsys.serving.feature_store import FeatureStore
    from tfrs_recsys.serving.pipeline import RecallRankPipeline

    try:
        recall_merge = recall_merge_from_args(args)
        store = FeatureStore.load(args.store)
    except (ConfigError, UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with ServingClient(args.address, args.timeout, retrieval_model=args.retrieval_model,
                       ranker_model=args.ranker_model) as client:
        pipeline = RecallRankPipeline(client, store, num_candidates=args.num_candidates, sort_by=args.sort_by,
                                      recall_merge=recall_merge)
        try:
            if args.recall_only:
                result = pipeline.recall(args.user_id, args.k)
            else:
                result = pipeline.recommend(args.user_id, args.k, _context(args.context))
        except (ServingClientError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    flag = "cold start: global hot items" if result.is_cold_start else ", ".join(
        f"{m} v{v}" for m, v in result.versions.items())
    print(f"user {result.user_id} ({flag})")
    print(f"{'rank':>4}  {'item_id':<24} {'score':>10}  source")
    for rank, item in enumerate(result.items, start=1):
        print(f"{rank:>4}  {item.item_id:<24} {item.score:>10.5f}  {item.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
