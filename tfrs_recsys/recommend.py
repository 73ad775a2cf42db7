"""``python -m tfrs_recsys.recommend``: a user's top-k items, from a run directory or from a model server.

Two modes::

    python -m tfrs_recsys.recommend --run-dir RUN --user-id 1 --k 10 [--exclude-seen] [--history a,b]
    python -m tfrs_recsys.recommend --address HOST:8500 --store DIR --user-id 1 --k 10 [--recall-only]

``--run-dir`` (or ``--model-dir``), right after training: the run's query tower reads the user's
stored history (or ``--history`` ids, most recent last) and every catalog item is scored exactly,
in this process, as its export scores them (fused with co-occurrence counts when the run chose to);
``--exclude-seen`` drops items of the history. ``--address`` (default
``127.0.0.1:8500`` when ``--store`` is given): recall, then rank, over gRPC to a model server (ours
or tensorflow_model_server), the user's history and features read from the feature store ``--store``.
Either prints a table, or JSON with ``--json``.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys.config import ConfigError
from tfrs_recsys.errors import UserError
from tfrs_recsys.serving.pipeline_cli import add_pipeline_arguments, pipeline_from_args


class Recommender:
    """The exact top-k of a reloaded retrieval run, for many users: what does not depend on the user (the
    catalog's embeddings, the whole log's co-occurrence table, the items' labels) is computed once.

    Args:
      trained: A :class:`~tfrs_recsys.runs.TrainedRetrieval` (:func:`tfrs_recsys.runs.load_retrieval`).
    """

    def __init__(self, trained):
        from tfrs_recsys.data.bundles import item_labels
        from tfrs_recsys.models.cooccurrence import CooccurrenceTable

        self.trained = trained
        self.labels = item_labels(trained.items)
        self.candidates = trained.model.candidate_embeddings().numpy()
        self.index = pd.Index(trained.catalog)
        fitted = trained.cooccurrence
        self.table = (CooccurrenceTable.of_histories(trained.histories.values(), trained.catalog, fitted.beta,
                                                     fitted.damping)
                      if fitted is not None and fitted.beta > 0 else None)

    @functools.cached_property
    def most_interacted(self) -> list[tuple[str, int]]:
        """The items of most interactions in the run's log, with their counts (the cold-start answer)."""
        seen = pd.Series([i for history in self.trained.histories.values() for i in history])
        return list(seen.value_counts().items())

    def recommend(self, user_id: str, k: int = 10, *, history: Sequence[str] | None = None,
                  exclude_seen: bool = False) -> list[dict]:
        """The exact top-``k`` of one user (:func:`recommend`)."""
        from tfrs_recsys.models.retrieval import query_vectors

        trained, labels = self.trained, self.labels
        items = list(trained.histories.get(user_id, [])) if history is None else [str(h) for h in history]
        if not items and user_id not in trained.histories:  # nothing to read: the served fallback's answer
            return [{"item_id": str(i), "score": float(n), "title": labels.get(i, i)}
                    for i, n in self.most_interacted[:k]]
        query = query_vectors(trained.model, np.array([user_id], dtype=object),
                              [np.array(items, dtype=object)], trained.cfg.max_history)[0]
        scores, catalog = self.candidates @ query, trained.catalog
        if self.table is not None:
            seen = self.index.get_indexer(np.asarray(items, dtype=object))
            scores = self.table.fuse(scores, self.table.scores([seen])[0])
        if exclude_seen:
            scores = np.where(np.isin(catalog, items), -np.inf, scores)
        order = [i for i in np.argsort(-scores, kind="stable")[:k] if np.isfinite(scores[i])]
        return [{"item_id": str(catalog[i]), "score": float(scores[i]),
                 "title": labels.get(catalog[i], str(catalog[i]))} for i in order]


def recommend(trained, user_id: str, k: int = 10, *, history: Sequence[str] | None = None,
              exclude_seen: bool = False) -> list[dict]:
    """The exact top-``k`` of a reloaded retrieval run (for many users, one :class:`Recommender`).

    Args:
      trained: A :class:`~tfrs_recsys.runs.TrainedRetrieval` (:func:`tfrs_recsys.runs.load_retrieval`).
      user_id: A raw user id. An unknown one without ``history`` gets the items of most interactions in
        the run's log (``score``: their count), as a served cold user gets the hot list.
      k: How many items.
      history: Item ids, most recent last (default: the user's stored history).
      exclude_seen: Leave out the items of the history.

    Returns:
      ``{"item_id", "score", "title"}`` per item, best first; ``title`` is the item's readable label
      (:func:`~tfrs_recsys.data.bundles.item_labels`).
    """
    return Recommender(trained).recommend(user_id, k, history=history, exclude_seen=exclude_seen)


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m tfrs_recsys.recommend`` (module docstring)."""
    p = argparse.ArgumentParser(prog="python -m tfrs_recsys.recommend", description=__doc__.splitlines()[0])
    p.add_argument("--user-id", required=True, type=str.strip,
                   help="raw user id (unknown ids get the cold-start answer)")
    p.add_argument("--k", type=int, default=10, help="items to return")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    local = p.add_argument_group("in process, from a retrieval run directory")
    local.add_argument("--run-dir", "--model-dir", dest="run_dir",
                       help="run directory written by `train retrieval`")
    local.add_argument("--history", default=None,
                       help="comma-separated item ids, most recent last (default: the user's stored history)")
    served = p.add_argument_group("over gRPC, from a model server: recall -> rank")
    add_pipeline_arguments(served)
    served.add_argument("--context", action="append", default=[], metavar="NAME=VALUE", type=_name_value,
                        help="request context feature for the ranker (repeatable), e.g. device=mobile")
    served.add_argument("--recall-only", action="store_true", help="the candidates without ranking")
    return p


class _ServerError(RuntimeError):
    """The model server failed a request: exit code 1, where a bad command line or run directory is 2."""


def _from_run(args) -> tuple[dict, str, list[tuple[str, float, str]], str]:
    from tfrs_recsys import runs

    runs.open_run(args.run_dir, ("retrieval",)).require_complete(allow_incomplete=True)
    trained = runs.load_retrieval(args.run_dir)
    history = [h.strip() for h in args.history.split(",") if h.strip()] if args.history is not None else None
    known = args.user_id in trained.histories
    # as the run ranked its test users (retrieval_meta.json's history_left_out) unless a flag says
    exclude = (args.exclude_seen or not args.keep_seen and bool(trained.meta.get("history_left_out", False)))
    rows = recommend(trained, args.user_id, args.k, history=history, exclude_seen=exclude)
    used = history if history is not None else trained.histories.get(args.user_id, [])
    note = "" if known or history is not None else " (unknown user: the most interacted items)"
    catalog = set(map(str, trained.catalog))
    unknown = [h for h in used if h not in catalog]
    if unknown:  # read as the unknown item, as a cold item is
        note += f" ({len(unknown)} not in the catalog, e.g. {unknown[0]!r})"
    header = (f"user {args.user_id}: history of {len(used)} items{note}; top {args.k}"
              f"{' excluding seen items' if exclude else ''}")
    return ({"user_id": args.user_id, "known_user": known, "unknown_history_items": unknown,
             "items": rows}, header,
            [(r["item_id"], r["score"], r["title"]) for r in rows], "title")


def _from_server(args) -> tuple[dict, str, list[tuple[str, float, str]], str]:
    from tfrs_recsys.serving.client import ServingClientError

    pipeline = pipeline_from_args(args)
    with pipeline.client:
        try:
            if args.recall_only:
                result = pipeline.recall(args.user_id, args.k)
            else:
                result = pipeline.recommend(args.user_id, args.k, dict(args.context))
        except (ServingClientError, ValueError) as e:  # the server, not the command line
            raise _ServerError(e) from e
    flag = "cold start: global hot items" if result.is_cold_start else ", ".join(
        f"{m} v{v}" for m, v in result.versions.items())
    return (result.to_dict(), f"user {result.user_id} ({flag})",
            [(item.item_id, item.score, item.source) for item in result.items], "source")


def main(argv: Sequence[str] | None = None) -> int:
    """Prints a user's top-k items (module docstring).

    Args:
      argv: The command line's arguments (default: ``sys.argv[1:]``).

    Returns:
      The exit code: 0; 1 when the model server failed; 2 for a bad command line, run directory or
      feature store.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be >= 1")
    if args.run_dir and (args.address or args.store):
        parser.error("--run-dir scores in this process, --address / --store ask a model server: pass one")
    if not (args.run_dir or args.store):
        parser.error("pass --run-dir RUN (in process), or --store DIR [--address HOST:PORT] (a model server)")
    try:
        answer, header, rows, last = _from_run(args) if args.run_dir else _from_server(args)
    except (ConfigError, UserError, FileNotFoundError, _ServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, _ServerError) else 2
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(header)
    print(f"{'rank':>4}  {'item_id':<24} {'score':>10}  {last}")
    for rank, (item_id, score, extra) in enumerate(rows, 1):
        print(f"{rank:>4}  {item_id:<24} {score:>10.5f}  {' '.join(str(extra).split())}")  # one line a row
    return 0

if __name__ == "__main__":
    sys.exit(main())
