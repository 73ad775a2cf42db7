"""Recall -> rank for the homepage: one call, the top-k items for a user.

1. The user's history comes from the :class:`FeatureStore`. A user it has never seen,
   or one with no history, is a cold start: the answer is the global hot items
   (time-decayed hotness), flagged ``is_cold_start``.
2. Recall: the retrieval model's top-N candidates (``num_candidates``, at most the
   export's static k), the user's history excluded. A
   :class:`~tfrs_recsys.serving.recall_merge.RecallMergeConfig` interleaves global hot
   items into these N candidates (:func:`~tfrs_recsys.serving.recall_merge.merge_candidates`):
   a share of the slots (``ratio``) or fixed slots (``positions``), each item once, the user's
   history never among the hot items (with ``exclude_seen``, the default). Every candidate keeps
   its ``source``, ``"recall"`` or ``"hot"``.
3. Rank: the ranker scores every candidate from raw features (ids, the store's item
   and user features, request context); candidates are sorted by ``sort_by``
   (``ctcvr`` when the ranker has it, else ``ctr``).
4. Merge: ``merge(ranked, hot, k)`` decides the final list from the ranked candidates
   and the hot items the user has not seen. The default keeps the ranked list.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Callable, Mapping, Sequence

from tfrs_recsys.serving.client import DEFAULT_ADDRESS, ServingClient
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.recall_merge import HOT, RECALL, RecallMergeConfig, merge_candidates

TIME_FEATURES = ("timestamp", "hour", "weekday")


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One item of an answer.

    Attributes:
      item_id: The item.
      score: What the list is sorted by: the ranker's ``sort_by`` output; unranked, the retrieval
        score (source ``"recall"``) or the hotness (source ``"hot"``).
      source: Where the candidate came from: ``"recall"`` (the retrieval model) or ``"hot"``
        (the global hot items).
      scores: Every score the item got: the ranker's outputs, ``retrieval`` or ``hotness``.
    """

    item_id: str
    score: float
    source: str
    scores: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """The answer for one user: the items, best first, and the model versions that made it."""

    user_id: str
    items: list[Recommendation]
    is_cold_start: bool
    versions: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        """The items' ids, in order."""
        return [r.item_id for r in self.items]

    def to_dict(self) -> dict:
        """The answer as JSON-ready dicts and lists."""
        return dataclasses.asdict(self)


Merge = Callable[[list[Recommendation], list[Recommendation], int], list[Recommendation]]


def ranked_only(ranked: list[Recommendation], hot: list[Recommendation], k: int) -> list[Recommendation]:
    """The default merge: the ranked list as is."""
    return ranked[:k]


def request_time_features(inputs: Mapping[str, object], context: Mapping[str, object], now: float) -> dict:
    """The request's time for the ranker inputs the data layer derives from a timestamp.

    Args:
      inputs: The ranker's inputs, by name.
      context: The request's context features, which win.
      now: The request's time, in seconds since the epoch.

    Returns:
      ``timestamp`` (seconds), ``hour`` (0-23) and ``weekday`` (Monday = 0), UTC as in training,
      for those the ranker takes and ``context`` does not set.
    """
    moment = time.gmtime(now)
    values = {"timestamp": float(now), "hour": moment.tm_hour, "weekday": moment.tm_wday}
    return {name: values[name] for name in TIME_FEATURES if name in inputs and name not in context}


class RecallRankPipeline:
    """Retrieval top-N (hot items mixed in by ``recall_merge``), ranker scores, sorted; hot items for
    cold-start users.

    Args:
      client: The model server's client.
      store: The feature store.
      retrieval_model: The retrieval model's name (default: the client's).
      ranker_model: The ranker's name (default: the client's).
      num_candidates: N, the candidates the ranker scores (at most the retrieval export's k).
      sort_by: The ranker output the answer is sorted by (default: ``ctcvr``, else ``ctr``).
      exclude_seen: Leave the user's history out of the candidates and the hot items.
      merge: Makes the final list from the ranked candidates and the unseen hot items.
      recall_merge: How hot items join the candidates (default: they do not).
    """

    def __init__(self, client: ServingClient, store: FeatureStore, *, retrieval_model: str | None = None,
                 ranker_model: str | None = None, num_candidates: int = 100, sort_by: str | None = None,
                 exclude_seen: bool = True, merge: Merge = ranked_only,
                 recall_merge: RecallMergeConfig | None = None):
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        self.client = client
        self.store = store
        self.retrieval_model = retrieval_model or client.retrieval_model
        self.ranker_model = ranker_model or client.ranker_model
        self.num_candidates = num_candidates
        self.sort_by = sort_by
        self.exclude_seen = exclude_seen
        self.merge = merge
        self.recall_merge = recall_merge or RecallMergeConfig()

    def _hot(self, history: list[str], limit: int) -> list[Recommendation]:
        """The ``limit`` hottest items, those of the history left out when ``exclude_seen``."""
        seen = set(history) if self.exclude_seen else set()
        hot = [(i, h) for i, h in self.store.hot_items(limit + len(seen)) if i not in seen][:limit]
        return [Recommendation(i, h, HOT, {"hotness": h}) for i, h in hot]

    def _candidates(self, user_id: str, history: list[str], n: int) -> tuple[list[Recommendation], int]:
        """Retrieval top-n merged with hot items, unranked, and the retrieval model's version."""
        shape = self.client.metadata(self.retrieval_model)["serving_default"].outputs["item_ids"].shape
        width = shape[-1] if shape and shape[-1] > 0 else self.num_candidates
        found = self.client.retrieve(user_id, history, k=min(n, width), exclude_seen=self.exclude_seen,
                                     model=self.retrieval_model)
        config = self.recall_merge
        # Enough hot items for every slot even when each collides with a retrieved item.
        limit = 2 * n if config.num_hot is None else config.num_hot
        hot = {r.item_id: r for r in self._hot(history, limit)} if config.strategy != "none" else {}
        recalled = {i: Recommendation(i, s, RECALL, {"retrieval": s})
                    for i, s in zip(found.item_ids, found.scores)}
        merged = merge_candidates(found.item_ids, list(hot), n, config)
        return [(recalled if source == RECALL else hot)[item] for item, source in merged], found.version

    def recall(self, user_id: str, k: int = 10) -> Recommendations:
        """No ranking: the first ``k`` candidates the ranker would get, scored by retrieval (or hotness).

        Args:
          user_id: The raw user id.
          k: How many items.

        Returns:
          The candidates, in the order the ranker would get them.
        """
        history = self.store.history(user_id)
        if not history:
            return Recommendations(str(user_id), self._hot([], k), True)
        candidates, version = self._candidates(user_id, history, k)
        return Recommendations(str(user_id), candidates, False, {self.retrieval_model: version})

    def recommend(self, user_id: str, k: int = 10,
                  context: Mapping[str, object] | None = None) -> Recommendations:
        """Top-``k`` items for a user: recall -> rank -> merge (hot items for a cold start).

        Args:
          user_id: The raw user id.
          k: How many items.
          context: Request features for the ranker (e.g. ``{"device": "mobile"}``).

        Returns:
          The answer, best first.

        Raises:
          ValueError: ``context`` names a feature the ranker does not take, or the ranker lacks ``sort_by``.
          ServingClientError: The model server failed a call.
        """
        history = self.store.history(user_id)
        if not history:
            return Recommendations(str(user_id), self._hot([], k), True)
        candidates, version = self._candidates(user_id, history, self.num_candidates)
        ids = [c.item_id for c in candidates]
        ranked = self.client.rank(user_id, ids, self._features(user_id, ids, context or {}),
                                  model=self.ranker_model)
        key = self.sort_by or ("ctcvr" if "ctcvr" in ranked.outputs else "ctr")
        if key not in ranked.outputs:
            raise ValueError(f"ranker '{self.ranker_model}' has no output '{key}' "
                             f"(it has {sorted(ranked.outputs)})")
        scores = [dict(zip(ranked.outputs, map(float, row))) for row in zip(*ranked.outputs.values())]
        rows = sorted((Recommendation(c.item_id, s[key], c.source, {**s, **c.scores})
                       for c, s in zip(candidates, scores)), key=lambda r: -r.score)
        items = self.merge(rows, self._hot(history, k), k)
        return Recommendations(str(user_id), items, False,
                               {self.retrieval_model: version, self.ranker_model: ranked.version})

    def _features(self, user_id: str, candidates: Sequence[str],
                  context: Mapping[str, object]) -> dict[str, object]:
        """Ranker inputs the store and the request know; the rest go as missing values."""
        inputs = self.client.metadata(self.ranker_model)["serving_default"].inputs
        features: dict[str, object] = {}
        item_columns = [c for c in self.store.item_feature_columns if c in inputs]
        features.update(self.store.item_features(candidates, item_columns))
        user_columns = [c for c in self.store.user_feature_columns if c in inputs and c not in features]
        features.update(self.store.user_features(user_id, user_columns))
        unknown = sorted(set(context) - set(inputs))
        if unknown:
            raise ValueError(f"context {unknown} is not an input of ranker '{self.ranker_model}' "
                             f"(its inputs are {sorted(inputs)})")
        features.update(request_time_features(inputs, context, time.time()))
        features.update(context)
        return features


def add_pipeline_arguments(parser: argparse.ArgumentParser, *, store_required: bool = False) -> None:
    """The flags of a recall -> rank command: the feature store, the model server and its models,
    the candidates, and the recall merge (:func:`pipeline_from_args` reads them)."""
    from tfrs_recsys.serving.recall_merge import add_recall_merge_arguments

    parser.add_argument("--store", required=store_required,
                        help="feature store directory (`serving.feature_store --out`)")
    parser.add_argument("--address", help=f"model server gRPC address (default {DEFAULT_ADDRESS})")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each gRPC call, seconds")
    parser.add_argument("--retrieval-model", default="retrieval",
                        help="the retrieval export's model name (retrieval_portable on a stock TF Serving)")
    parser.add_argument("--ranker-model", default="deepfm", help="the ranker export's model name (default: "
                        "deepfm, as `make demo` and export/models.config name it)")
    parser.add_argument("--num-candidates", type=int, default=100, help="candidates to rank")
    parser.add_argument("--sort-by", help="ranker output to sort by (default ctcvr, else ctr)")
    add_recall_merge_arguments(parser)


def pipeline_from_args(args: argparse.Namespace) -> RecallRankPipeline:
    """The pipeline the flags of :func:`add_pipeline_arguments` describe; the caller closes its client.

    Raises:
      ConfigError: The recall merge flags are inconsistent.
      UserError: ``--store`` is not a feature store.
    """
    from tfrs_recsys.serving.recall_merge import recall_merge_from_args

    recall_merge, store = recall_merge_from_args(args), FeatureStore.load(args.store)
    client = ServingClient(args.address or DEFAULT_ADDRESS, args.timeout,
                           retrieval_model=args.retrieval_model, ranker_model=args.ranker_model)
    return RecallRankPipeline(client, store, num_candidates=args.num_candidates, sort_by=args.sort_by,
                              recall_merge=recall_merge)
