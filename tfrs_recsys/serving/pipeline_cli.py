"""The recall -> rank pipeline's command-line flags, shared by ``recommend --store`` and the HTTP service."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tfrs_recsys.serving import DEFAULT_ADDRESS, RECALL_SOURCES
from tfrs_recsys.serving.stores import is_redis_url, open_store, store_from_environment

if TYPE_CHECKING:  # TensorFlow's protos: imported when a pipeline is built, so `--help` answers at once
    from tfrs_recsys.serving.pipeline import RecallRankPipeline


def add_pipeline_arguments(parser: argparse.ArgumentParser, *, store_required: bool = False) -> None:
    """The flags of a recall -> rank command: the feature store, the model server and its models,
    the candidates, and the recall merge (:func:`pipeline_from_args` reads them)."""
    from tfrs_recsys.serving.recall_merge import add_recall_merge_arguments

    parser.add_argument("--store", required=store_required and store_from_environment() is None,
                        help="a feature store folder (`serving.feature_store --out`, served from this "
                             "process) or redis://HOST:PORT/DB (default: RECSYS_STORE, or "
                             "RECSYS_REDIS_HOST/PORT/DB)")
    parser.add_argument("--exclude-items", metavar="FILE",
                        help="item ids never to recommend, one a line (# comments); read again when it "
                             "changes, so an item is pulled or put back without a restart")
    parser.add_argument("--store-timeout", type=float, default=0.25,
                        help="seconds a Redis store may take before answers fall back to hot items")
    parser.add_argument("--history-ttl-days", type=float, default=180.0,
                        help="a Redis store forgets a history no event wrote to for this long (a publish "
                             "seeds it again from its batch data); 0: never")
    parser.add_argument("--recall-source", choices=RECALL_SOURCES, default="model",
                        help="candidates from the retrieval model on each request, or from the lists "
                             "`serving.publish` wrote (the model for users with newer events)")
    parser.add_argument("--address", help=f"model server gRPC address (default {DEFAULT_ADDRESS})")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each gRPC call, seconds")
    parser.add_argument("--breaker-failures", type=int, default=5,
                        help="model server calls in a row without an answer (down, past the deadline, "
                             "busy) after which calls fail at once (answers: hot items); 0: never")
    parser.add_argument("--breaker-open-seconds", type=float, default=5.0,
                        help="while calls fail at once, one probe call is let through this often")
    parser.add_argument("--retrieval-model", default="retrieval",
                        help="the retrieval export's model name (retrieval_portable on a stock TF Serving)")
    parser.add_argument("--ranker-model", default="deepfm", help="the ranker export's model name (default: "
                        "deepfm, as `make demo` and export/models.config name it; '': none, the candidates "
                        "in retrieval's order)")
    for role, what, flag, default in (("user", "the user id", "--user-column", "user_id"),
                                      ("item", "the candidates' ids", "--item-column", "item_id"),
                                      ("time", "the request's time", "--time-column", "timestamp")):
        parser.add_argument(f"--ranker-{role}-input", default=None,
                            help=f"the ranker's input for {what}: its training's {flag} (default: the "
                                 f"log's {flag} the store recorded, if the ranker takes it, else {default}; "
                                 f"'' when it takes none)")
    seen = parser.add_mutually_exclusive_group()  # --run-dir's too: both follow the retrieval run
    seen.add_argument("--keep-seen", action="store_true",
                      help="keep the user's history among the recommendations (default: as the retrieval "
                           "run ranked them, its retrieval_meta.json's history_left_out; else left out)")
    seen.add_argument("--exclude-seen", action="store_true",
                      help="leave the user's history out, whatever the retrieval run did")
    parser.add_argument("--num-candidates", type=int, default=100, help="candidates to rank")
    parser.add_argument("--sort-by", help="ranker output to sort by (default ctcvr, else ctr)")
    add_recall_merge_arguments(parser)


def pipeline_from_args(args: argparse.Namespace) -> RecallRankPipeline:
    """The pipeline the flags of :func:`add_pipeline_arguments` describe; the caller closes its client.

    Raises:
      ConfigError: The recall merge flags are inconsistent.
      UserError: ``--store`` is not a feature store, or no store is given, a breaker flag is out of range,
        or the ``--exclude-items`` file cannot be read.
    """
    from tfrs_recsys.errors import UserError
    from tfrs_recsys.serving.breaker import CircuitBreaker
    from tfrs_recsys.serving.client import ServingClient
    from tfrs_recsys.serving.exclusions import ExcludedItems
    from tfrs_recsys.serving.pipeline import RecallRankPipeline
    from tfrs_recsys.serving.recall_merge import recall_merge_from_args

    spec = args.store or store_from_environment()
    if not spec:
        raise UserError("no store given", fix="pass --store DIR|redis://HOST:PORT/DB, or set RECSYS_STORE")
    try:  # before the store opens: a bad flag is said at once
        breaker = CircuitBreaker(args.breaker_failures, args.breaker_open_seconds)
    except ValueError:
        fix = "pass a count >= 0 (0: calls never fail at once) and finite seconds > 0"
        raise UserError(f"--breaker-failures {args.breaker_failures} and --breaker-open-seconds "
                        f"{args.breaker_open_seconds:g}", fix=fix) from None
    excluded = None
    if args.exclude_items:
        try:
            excluded = ExcludedItems(args.exclude_items)
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--exclude-items: cannot read the file ({e})", path=args.exclude_items,
                            fix="pass a UTF-8 text file of item ids, one a line") from None
    options = ({"timeout": args.store_timeout, "history_ttl_days": args.history_ttl_days}
               if is_redis_url(spec) else {})
    recall_merge, store = recall_merge_from_args(args), open_store(spec, **options)
    client = ServingClient(args.address or DEFAULT_ADDRESS, args.timeout, breaker=breaker,
                           retrieval_model=args.retrieval_model, ranker_model=args.ranker_model)
    return RecallRankPipeline(client, store, num_candidates=args.num_candidates, sort_by=args.sort_by,
                              recall_merge=recall_merge, recall_source=args.recall_source,
                              ranker_user_input=args.ranker_user_input,
                              ranker_item_input=args.ranker_item_input,
                              ranker_time_input=args.ranker_time_input, exclude_items=excluded,
                              exclude_seen=True if args.exclude_seen else False if args.keep_seen else None)
