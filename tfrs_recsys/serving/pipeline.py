"""Recall -> rank for the homepage: one call, the top-k items for a user.

1. The user's history comes from the :class:`FeatureStore`. A user it has never seen,
   or one with no history, is a cold start: the answer is the global hot items
   (time-decayed hotness), flagged ``is_cold_start``.
2. Recall: the retrieval model's top-N candidates (``num_candidates``, at most the
   export's static k), the user's history excluded. A
   :class:`~tfrs_recsys.serving.recall_merge.RecallMergeConfig` interleaves global hot
   items into these N candidates (:func:`~tfrs_recsys.serving.recall_merge.merge_candidates`):
   a share of the slots (``ratio``) or fixed slots (``positions``), each item once,
   the user's history never among the hot items (with ``exclude_seen``, the default). Every candidate keeps its ``source``,
   ``"recall"`` or ``"hot"``.
3. Rank: the ranker scores every candidate from raw features (ids, the store's item
   and user features, request context); candidates are sorted by ``sort_by``
   (``ctcvr`` when the ranker has it, else ``ctr``).
4. Merge: ``merge(ranked, hot, k)`` decides the final list from the ranked candidates
   and the hot items the user has not seen. The default keeps the ranked list.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Mapping, Sequence

from tfrs_recsys.serving.client import ServingClient
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.recall_merge import HOT, RECALL, RecallMergeConfig, merge_candidates


@dataclasses.dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float  # the ranker's sort_by output; unranked: the retrieval score (recall) or the hotness (hot)
    source: str  # where the candidate came from: "recall" (the retrieval model) | "hot" (global hot items)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Recommendations:
    user_id: str
    items: list[Recommendation]
    is_cold_start: bool
    versions: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


Merge = Callable[[list[Recommendation], list[Recommendation], int], list[Recommendation]]


def ranked_only(ranked: list[Recommendation], hot: list[Recommendation], k: int) -> list[Recommendation]:
    """The default merge: the ranked list as is."""
    return ranked[:k]


TIME_FEATURES = ("timestamp", "hour", "weekday")


def request_time_features(inputs: Mapping[str, object], context: Mapping[str, object], now: float) -> dict:
    """The request's time for the ranker inputs the data layer derives from a timestamp.

    ``timestamp`` (seconds), ``hour`` (0-23) and ``weekday`` (Monday = 0), UTC as in training,
    for those the ranker takes and the request's ``context`` does not set.
    """
    moment = time.gmtime(now)
    values = {"timestamp": float(now), "hour": moment.tm_hour, "weekday": moment.tm_wday}
    return {name: values[name] for name in TIME_FEATURES if name in inputs and name not in context}


class RecallRankPipeline:
    """Retrieval top-N (hot items mixed in by ``recall_merge``), ranker scores, sorted; hot items for
    cold-start users."""

    def __init__(self, client: ServingClient, store: FeatureStore, *, retrieval_model: str | None = None,
                 ranker_model: str | None = None, num_candidates: int = 100, sort_by: str | None = None,
                 exclude_seen: bool = True, merge: Merge = ranked_only,
                 recall_merge: RecallMergeConfig | None = None,
                 user_feature: str = "user_id", item_feature: str = "item_id",
                 clock: Callable[[], float] = time.time):
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
        self.user_feature = user_feature
        self.item_feature = item_feature
        self.clock = clock

    def _cold(self, user_id: str, k: int) -> Recommendations:
        items = [Recommendation(i, h, HOT, {"hotness": h}) for i, h in self.store.hot_items(k)]
        return Recommendations(str(user_id), items, True)

    def _hot(self, history: list[str], limit: int) -> list[tuple[str, float]]:
        """The ``limit`` hottest items, those of the history left out when ``exclude_seen``."""
        seen = set(history) if self.exclude_seen else set()
        return [(i, h) for i, h in self.store.hot_items(limit + len(seen)) if i not in seen][:limit]

    def _merged(self, user_id: str, history: list[str], n: int):
        """Retrieval top-n merged with hot items: ``(candidates [(item, source)], retrieval scores,
        hotness, retrieval version)``."""
        found = self._candidates(user_id, history, n)
        config = self.recall_merge
        # Enough hot items for every slot even when each collides with a retrieved item.
        hot = dict(self._hot(history, 2 * n if config.num_hot is None else config.num_hot)
                   if config.strategy != "none" else [])
        merged = merge_candidates(found.item_ids, list(hot), n, config)
        return merged, dict(zip(found.item_ids, found.scores)), hot, found.version

    def _candidates(self, user_id: str, history: list[str], n: int):
        width = self._retrieval_k()
        return self.client.retrieve(user_id, history, k=min(n, width), exclude_seen=self.exclude_seen,
                                    model=self.retrieval_model)

    def _retrieval_k(self) -> int:
        info = self.client.metadata(self.retrieval_model)["serving_default"]
        shape = info.outputs["item_ids"].shape
        return shape[-1] if shape and shape[-1] > 0 else self.num_candidates

    def recall(self, user_id: str, k: int = 10) -> Recommendations:
        """No ranking: the first k candidates the ranker would get, with their retrieval scores (hotness
        for hot items)."""
        history = self.store.history(user_id)
        if not history:
            return self._cold(user_id, k)
        merged, retrieval, hot, version = self._merged(user_id, history, k)
        items = [Recommendation(i, retrieval[i], RECALL, {"retrieval": retrieval[i]}) if source == RECALL
                 else Recommendation(i, hot[i], HOT, {"hotness": hot[i]}) for i, source in merged]
        return Recommendations(str(user_id), items, False, {self.retrieval_model: version})

    def recommend(self, user_id: str, k: int = 10, context: Mapping[str, object] | None = None) -> Recommendations:
        """Top-k items for a user: recall -> rank -> merge (hot items for a cold start)."""
        history = self.store.history(user_id)
        if not history:
            return self._cold(user_id, k)
        merged, retrieval, hot, version = self._merged(user_id, history, self.num_candidates)
        candidates = [item for item, _ in merged]
        source = dict(merged)
        features = self._features(user_id, candidates, context or {})
        ranked = self.client.rank(user_id, candidates, features, model=self.ranker_model,
                                  user_feature=self.user_feature, item_feature=self.item_feature)
        key = self.sort_by or ("ctcvr" if "ctcvr" in ranked.outputs else "ctr")
        if key not in ranked.outputs:
            raise ValueError(f"ranker '{self.ranker_model}' has no output '{key}' (it has {sorted(ranked.outputs)})")
        rows = []
        for j, item in enumerate(ranked.candidates):
            scores = {name: float(values[j]) for name, values in ranked.outputs.items()}
            if source[item] == RECALL:
                scores["retrieval"] = retrieval[item]
            else:
                scores["hotness"] = hot[item]
            rows.append(Recommendation(item, scores[key], source[item], scores))
        rows.sort(key=lambda r: -r.score)
        unseen_hot = [Recommendation(i, h, HOT, {"hotness": h}) for i, h in self._hot(history, k)]
        items = self.merge(rows, unseen_hot, k)
        return Recommendations(str(user_id), items, False,
                               {self.retrieval_model: version, self.ranker_model: ranked.version})

    def _features(self, user_id: str, candidates: Sequence[str], context: Mapping[str, object]) -> dict[str, object]:
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
        features.update(request_time_features(inputs, context, self.clock()))
        features.update(context)
        return features
