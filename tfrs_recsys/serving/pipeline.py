"""Recall -> rank for the homepage: one call, the top-k items for a user.

1. The user's history comes from the store (:mod:`tfrs_recsys.serving.stores`: in this process or
   in Redis). A user it has never seen, or one with no history, is a cold start: the answer is the
   global hot items (time-decayed hotness), flagged ``is_cold_start``. A store that does not answer
   gives the hot list this process holds, flagged ``fallback``.
2. Recall: with ``recall_source="published"``, the user's list from the live published version
   (``serving.publish``) unless the user has events newer than it; else the retrieval model's top-N
   candidates (``num_candidates``, at most the
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

import logging
import math
import time
from typing import AbstractSet, Callable, Mapping, Sequence

from tfrs_recsys.serving import RECALL_SOURCES
from tfrs_recsys.serving.answers import Merge, Recommendation, Recommendations, ranked_only
from tfrs_recsys.serving.client import (
    ServerUnavailableError,
    ServingClient,
    ServingClientError,
    SignaturesChangedError,
)
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.ranker_inputs import RankerInputs, ranker_column, shown_input, usable
from tfrs_recsys.serving.recall_merge import HOT, RECALL, RecallMergeConfig, merge_candidates
from tfrs_recsys.serving.stores import (
    OnlineStore,
    StoreStateError,
    StoreUnavailableError,
    UserState,
)
from tfrs_recsys.serving.stores.memory import MemoryStore

DEFAULT_INPUTS = {"user": "user_id", "item": "item_id", "time": "timestamp"}  # the demo's and most logs'
MAX_KNOWN_ITEMS = 1_000_000  # known items remembered while a retrieval version has shown no unknown one
MAX_HOT_SKIPPED = 1000  # hot items read beyond a list's length to replace excluded ones: the read stays small


def request_time_features(inputs: Mapping[str, object], context: Mapping[str, object], now: float,
                          time_input: str | None = "timestamp") -> dict:
    """The request's time for the ranker inputs the data layer derives from a timestamp.

    Args:
      inputs: The ranker's inputs, by name.
      context: The request's context features, which win.
      now: The request's time, in seconds since the epoch.
      time_input: The ranker's time input (its ``--time-column``; ``timestamp`` by default; None: none).

    Returns:
      ``time_input`` (seconds), ``hour`` (0-23) and ``weekday`` (Monday = 0), UTC as in training,
      for those the ranker takes and ``context`` does not set.
    """
    moment = time.gmtime(now)
    values = {time_input: float(now), "hour": moment.tm_hour, "weekday": moment.tm_wday}
    return {name: value for name, value in values.items() if name in inputs and name not in context}


class RecallRankPipeline:
    """Retrieval top-N (hot items mixed in by ``recall_merge``), ranker scores, sorted; hot items for
    cold-start users.

    Args:
      client: The model server's client.
      store: The store (a :class:`FeatureStore` is served from this process).
      retrieval_model: The retrieval model's name (default: the client's).
      ranker_model: The ranker's name (default: the client's).
      num_candidates: N, the candidates the ranker scores (at most the retrieval export's k).
      sort_by: The ranker output the answer is sorted by (default: ``ctcvr``, else ``ctr``).
      exclude_seen: Leave the user's history out of the candidates and the hot items (default: as the
        retrieval run the store was written from ranked, :attr:`StoreMeta.history_kept`; else left out).
      merge: Makes the final list from the ranked candidates and the unseen hot items.
      recall_merge: How hot items join the candidates (default: they do not).
      recall_source: ``"model"`` (the retrieval model on every request) or ``"published"`` (the
        published lists; the model for users without a current one).
      ranker_user_input: The ranker's input the user id goes to: the column its training named by
        ``--user-column`` (``""``: the ranker takes none; None: the column the store's meta names, if the
        ranker takes it, else ``user_id``).
      ranker_item_input: The ranker's input the candidates' ids go to (its ``--item-column``; None
        and ``""`` likewise, ``item_id`` the default).
      ranker_time_input: The ranker's input the request's time goes to (its ``--time-column``, with
        ``hour`` and ``weekday`` where it takes them; None and ``""`` likewise, ``timestamp`` the default).
      exclude_items: Called on every answer, the item ids no answer may hold (recalled, published, hot or
        the fallback): :class:`~tfrs_recsys.serving.exclusions.ExcludedItems`, an operator's removals.

    A ranker input that neither the ids, the store's features nor the request fill goes as missing for
    every candidate, as a value missing in training would; the pipeline logs a warning naming it, once.
    A ranker version of other inputs rolled out meanwhile is read again when the server refuses the old
    inputs, and the candidates sent once more (:class:`~tfrs_recsys.serving.client.SignaturesChangedError`).
    """

    def __init__(self, client: ServingClient, store: OnlineStore | FeatureStore, *,
                 retrieval_model: str | None = None, ranker_model: str | None = None,
                 num_candidates: int = 100, sort_by: str | None = None, exclude_seen: bool | None = None,
                 merge: Merge = ranked_only, recall_merge: RecallMergeConfig | None = None,
                 recall_source: str = "model", ranker_user_input: str | None = None,
                 ranker_item_input: str | None = None, ranker_time_input: str | None = None,
                 exclude_items: Callable[[], AbstractSet[str]] | None = None):
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if recall_source not in RECALL_SOURCES:
            raise ValueError(f"recall_source must be one of {RECALL_SOURCES}, got {recall_source!r}")
        self.client = client
        self.store = MemoryStore(store) if isinstance(store, FeatureStore) else store
        self.recall_source = recall_source
        self.retrieval_model = retrieval_model or client.retrieval_model
        self.ranker_model = ranker_model or client.ranker_model
        self.num_candidates = num_candidates
        self.sort_by = sort_by
        self._exclude_seen = exclude_seen
        self.merge = merge
        self.recall_merge = recall_merge or RecallMergeConfig()
        self.ranker_inputs = {"user": ranker_user_input, "item": ranker_item_input, "time": ranker_time_input}
        self.exclude_items = exclude_items or frozenset  # frozenset(): nothing excluded
        self._warned: set[tuple[str, str]] = set()
        self._known_items: tuple[int | None, set[str]] = (None, set())  # a retrieval version's known items

    @property
    def exclude_seen(self) -> bool:
        """Whether the user's history is left out: as given, else as the retrieval run ranked (its users' own
        items kept where it kept them, as reorders), read from the store's meta; else left out."""
        if self._exclude_seen is not None:
            return self._exclude_seen
        try:
            return not self.store.meta.history_kept
        except (StoreUnavailableError, StoreStateError):
            return True

    def _hot(self, history: list[str], limit: int) -> list[Recommendation]:
        """The ``limit`` hottest items, those of the history left out when ``exclude_seen``."""
        seen = (set(history) if self.exclude_seen else set()) | self.exclude_items()
        hot = [(i, h) for i, h in self.store.hot_items(limit + min(len(seen), MAX_HOT_SKIPPED))
               if i not in seen][:limit]
        return [Recommendation(i, h, HOT, {"hotness": h}) for i, h in hot]

    def _candidates(self, user_id: str, state: UserState, n: int,
                    deadline: float | None = None) -> tuple[list[Recommendation], dict]:
        """The top-n candidates, unranked (published, or retrieval merged with hot items), and the
        versions that made them."""
        removed = self.exclude_items()
        if self.recall_source == "published" and state.published is not None:
            kind = {RECALL: "retrieval", HOT: "hotness"}
            return ([Recommendation(i, s, src, {kind.get(src, src): s})
                     for i, s, src in state.published if i not in removed][:n], {"published": state.version})
        history = state.history or []
        # up to n: a version rolled out with a smaller k gives fewer, never an error. The removed items go as
        # exclusions: the export searches that much deeper (past the client's cap they can shorten it).
        found = self.client.retrieve(user_id, history, exclude_seen=self.exclude_seen,
                                     exclude=removed, model=self.retrieval_model,
                                     timeout=_remaining(deadline))
        found_ids = found.item_ids[:n]
        self._check_catalog(found_ids, found.version)
        config = self.recall_merge
        # Enough hot items for every slot even when each collides with a retrieved item.
        limit = 2 * n if config.num_hot is None else config.num_hot
        hot = {r.item_id: r for r in self._hot(history, limit)} if config.strategy != "none" else {}
        recalled = {i: Recommendation(i, s, RECALL, {"retrieval": s})
                    for i, s in zip(found_ids, found.scores)}
        merged = merge_candidates(found_ids, list(hot), n, config)
        return ([(recalled if source == RECALL else hot)[item] for item, source in merged],
                {self.retrieval_model: found.version})

    def _check_catalog(self, item_ids: Sequence[str], version: int | None) -> None:
        """Warns, once a retrieval version, when items it returns are unknown to the store: their features
        go to the ranker as missing, all of them when the store was built from another run.

        Every answer is checked until one holds unknown items (the first ones may all be known); items
        found known are remembered for the version, so the store is asked only of the others."""
        warned = (self.retrieval_model, f"catalog {version}")
        if warned in self._warned or not item_ids:
            return
        if self._known_items[0] != version:  # a new version: what the last one returned says nothing
            self._known_items = (version, set())
        checked = self._known_items[1]
        asked = [i for i in dict.fromkeys(item_ids) if i not in checked]
        try:
            known = self.store.known_items(asked) if asked else set()
        except (StoreUnavailableError, StoreStateError):  # the request goes on; the next one checks
            return
        if len(checked) < MAX_KNOWN_ITEMS:  # bounded: past it, the store is asked every time
            checked.update(known)
        unknown = [i for i in asked if i not in known]
        if unknown and warned not in self._warned:
            self._warned.add(warned)
            logging.getLogger(__name__).warning(
                "retrieval model '%s' (version %s) returned %d of %d items the store does not know (e.g. "
                "%r): the ranker gets their features as missing. Is the store built from the run the model "
                "was exported from? (feature_store --run-dir THAT_RUN); items added since the store was "
                "built are unknown to it too", self.retrieval_model, version, len(unknown), len(item_ids),
                unknown[0])

    def _fallback(self, user_id: str, k: int, error: Exception) -> Recommendations:
        """This process's hot list, for when the store does not answer."""
        removed = self.exclude_items()
        hot = [Recommendation(i, h, HOT, {"hotness": h})
               for i, h in self.store.fallback_hot_items(k + min(len(removed), MAX_HOT_SKIPPED))
               if i not in removed][:k]
        return Recommendations(str(user_id), hot, False, {}, f"store unavailable: {error}")

    def recall(self, user_id: str, k: int = 10, *, deadline: float | None = None) -> Recommendations:
        """No ranking: the first ``k`` candidates the ranker would get, scored by retrieval (or hotness).

        Args:
          user_id: The raw user id.
          k: How many items.
          deadline: When the answer is due (``time.monotonic()``; default: the client's timeout from now).

        Returns:
          The candidates, in the order the ranker would get them.
        """
        user_id = str(user_id).strip()  # as training read the ids
        deadline = time.monotonic() + self.client.timeout if deadline is None else deadline
        try:
            state = self.store.user_state(user_id)
            if not state.history:
                return Recommendations(str(user_id), self._hot([], k), True)
            candidates, versions = self._candidates(user_id, state, k, deadline)
        except (StoreUnavailableError, StoreStateError) as e:
            return self._fallback(user_id, k, e)
        return Recommendations(str(user_id), candidates, False, versions)

    def recommend(self, user_id: str, k: int = 10, context: Mapping[str, object] | None = None, *,
                  deadline: float | None = None) -> Recommendations:
        """Top-``k`` items for a user: recall -> rank -> merge (hot items for a cold start, and for a user
        retrieval finds nothing for).

        Args:
          user_id: The raw user id.
          k: How many items.
          context: Request features for the ranker (e.g. ``{"device": "mobile"}``).
          deadline: When the answer is due (``time.monotonic()``; default: the client's timeout from now):
            the model calls share it.

        Returns:
          The answer, best first.

        Raises:
          ValueError: ``context`` names a feature the ranker does not take or one the pipeline fills (the
            ids, the store's item features), or the ranker lacks ``sort_by``.
          ServingClientError: The model server failed a call, answered what the ranker cannot be read from,
            or did not answer in time (:class:`~tfrs_recsys.serving.client.ServerUnavailableError`:
            :meth:`without_models` answers then).
        """
        user_id = str(user_id).strip()  # as training read the ids
        deadline = time.monotonic() + self.client.timeout if deadline is None else deadline
        if not self.ranker_model:  # retrieval alone (--ranker-model ''): the candidates, in retrieval's order
            if context:
                raise ValueError(f"request features {sorted(context)}: no ranker takes them (--ranker-model "
                                 f"is empty)")
            return self.recall(user_id, k, deadline=deadline)
        try:
            return self._recommend(user_id, k, context or {}, deadline)
        except (StoreUnavailableError, StoreStateError) as e:
            return self._fallback(user_id, k, e)

    def without_models(self, user_id: str, k: int, error: Exception) -> Recommendations:
        """The answer when the model server does not answer (``error``: down, hung, busy): the hot items the
        user has not seen, ``fallback`` saying why, as a homepage shows rather than nothing."""
        user_id = str(user_id).strip()
        try:
            history = self.store.user_state(user_id).history or []
        except (StoreUnavailableError, StoreStateError) as e:
            return self._fallback(user_id, k, e)
        return Recommendations(user_id, self._hot(history, k), not history, {},
                               f"the hot items: the model server did not answer ({error})")

    def _recommend(self, user_id: str, k: int, context: Mapping[str, object],
                   deadline: float) -> Recommendations:
        state = self.store.user_state(user_id)
        if not state.history:
            return self._cold(user_id, state, k, context, deadline)
        inputs = self._ranker_inputs(context)
        names = self._input_names(inputs)
        self._check_context(context, inputs, names)
        candidates, versions = self._candidates(user_id, state, self.num_candidates, deadline)
        if not candidates:  # retrieval found nothing it could score: the hot items, said so
            return Recommendations(str(user_id), self._hot(state.history, k), False, versions,
                                   f"retrieval model '{self.retrieval_model}' gave no candidates")
        rows, version = self._ranked(user_id, state, candidates, context, inputs, names, deadline)
        hot = [] if self.merge is ranked_only else self._hot(state.history, k)  # ranked_only ignores it
        items = self.merge(rows, hot, k)
        return Recommendations(str(user_id), items, False, {**versions, self.ranker_model: version})

    def _cold(self, user_id: str, state: UserState, k: int, context: Mapping[str, object],
              deadline: float) -> Recommendations:
        """A user without history: the hot items, ranked by the ranker where the store knows the user's
        features (a customer who signed up and never clicked: their city still tells), else as they are;
        a ranker that fails them leaves them unranked, said in ``fallback`` (they need no model)."""
        if not context and not state.features:  # nothing to rank by or to check: no model asked
            return Recommendations(str(user_id), self._hot([], k), True)
        try:
            inputs = self._ranker_inputs(context)
        except ServingClientError:  # the hot list needs no model: a model server down changes nothing
            return Recommendations(str(user_id), self._hot([], k), True)
        names = self._input_names(inputs)
        self._check_context(context, inputs, names)  # a bad request is refused alike for a cold user
        known = {c for c, value in state.features.items() if value is not None and c in inputs}
        if not known & set(self.store.user_feature_columns):
            return Recommendations(str(user_id), self._hot([], k), True)
        hot = self._hot([], max(k, self.num_candidates))
        try:
            rows, version = self._ranked(user_id, state, hot, context, inputs, names, deadline)
        except ServingClientError as e:
            return Recommendations(str(user_id), hot[:k], True, {}, f"the hot items unranked: {e}")
        return Recommendations(str(user_id), rows[:k], True, {self.ranker_model: version})

    def _ranker_inputs(self, context: Mapping[str, object]) -> RankerInputs:
        """The ranker's inputs (:class:`RankerInputs`), by the names of the columns the store, the run and
        the request use for them too."""
        meta = self.store.meta
        columns = [*self.store.item_feature_columns, *self.store.user_feature_columns, *context,
                   *(getattr(meta, f"{role}_column") for role in DEFAULT_INPUTS),
                   *self.ranker_inputs.values()]  # the --ranker-*-input names
        return RankerInputs(self.client.metadata(self.ranker_model)["serving_default"].inputs, columns)

    def _ranked(self, user_id: str, state: UserState, candidates: list[Recommendation],
                context: Mapping[str, object], inputs, names, deadline: float
                ) -> tuple[list[Recommendation], int]:
        """The candidates scored by the ranker, best first (a NaN last), and the ranker's version; once
        more, from the served version's inputs, when the server rolled out a ranker of other inputs."""
        try:
            return self._scored(user_id, state, candidates, context, inputs, names, deadline)
        except SignaturesChangedError:  # the client read the new signatures: fill them as a fresh start does
            inputs = self._ranker_inputs(context)
            names = self._input_names(inputs)
            self._check_context(context, inputs, names)
            return self._scored(user_id, state, candidates, context, inputs, names, deadline)

    def _scored(self, user_id: str, state: UserState, candidates: list[Recommendation],
                context: Mapping[str, object], inputs, names, deadline: float
                ) -> tuple[list[Recommendation], int]:
        ids = [c.item_id for c in candidates]
        features = self._features(state, ids, context, inputs, names)
        features = {inputs.served(k): v for k, v in features.items()}  # by the ranker's own input names
        user, item = (names[role] and inputs.served(names[role]) for role in ("user", "item"))
        ranked = self.client.rank(user_id, ids, features, model=self.ranker_model, user_feature=user,
                                  item_feature=item, timeout=_remaining(deadline))
        key = self.sort_by or ("ctcvr" if "ctcvr" in ranked.outputs else "ctr")
        if key not in ranked.outputs:
            raise ServingClientError(f"ranker '{self.ranker_model}' answered no output '{key}' (it has "
                                     f"{sorted(ranked.outputs)}); --sort-by names the score to rank by")
        scores = [dict(zip(ranked.outputs, map(float, row))) for row in zip(*ranked.outputs.values())]
        rows = sorted((Recommendation(c.item_id, s[key], c.source, {**s, **c.scores})
                       for c, s in zip(candidates, scores)),
                      key=lambda r: -r.score if math.isfinite(r.score) else math.inf)  # a NaN ranks last
        return rows, ranked.version

    def _input_names(self, inputs: RankerInputs) -> dict[str, str | None]:
        """The ranker's user, item and time inputs: as given (``""``: none), else the log's column the
        store names where the ranker takes it, else the conventional name where it does, else none.

        Raises:
          ValueError: A given name is not an input of the ranker.
        """
        names, meta = {}, self.store.meta
        for role, given in self.ranker_inputs.items():
            if given is not None and given != "" and given not in inputs:
                raise ValueError(f"--ranker-{role}-input {given!r} is not an input of ranker "
                                 f"'{self.ranker_model}' (its inputs are {inputs.listed()})")
            found = (getattr(meta, f"{role}_column"), DEFAULT_INPUTS[role])
            names[role] = ((given or None) if given is not None
                           else next((n for n in found if n in inputs), None))
        return names

    def _check_context(self, context: Mapping[str, object], inputs: RankerInputs,
                       names: Mapping[str, str | None]) -> None:
        """Refuses a request feature the ranker does not take, or one the pipeline fills per user or
        candidate (the ids, the store's item features): a request would otherwise rank every candidate
        as one item."""
        filled = {inputs.served(n) for n in (names["user"], names["item"], *self.store.item_feature_columns)
                  if n and n in inputs}
        given: dict[str, str] = {}
        for name, value in context.items():
            if name not in inputs:
                raise ValueError(f"context {name!r} is not an input of ranker '{self.ranker_model}' "
                                 f"(its inputs are {inputs.listed()})")
            if (twice := given.setdefault(inputs.served(name), name)) != name:
                raise ValueError(f"context {twice!r} and {name!r} are one input of ranker "
                                 f"'{self.ranker_model}', {inputs.served(name)!r}: give it once")
            if inputs.served(name) in filled:
                raise ValueError(f"context {name!r} is filled per candidate or user by the pipeline (the "
                                 f"ids and the store's item features); a request gives request features, "
                                 f"such as a device")
            ranker_column(value, inputs[name].dtype, 1, name)  # a value it cannot take: refused, warm or cold

    def _features(self, state: UserState, candidates: Sequence[str], context: Mapping[str, object],
                  inputs: RankerInputs, names: Mapping[str, str | None]) -> dict[str, object]:
        """Ranker inputs the store and the request know; the rest go as missing values."""
        features: dict[str, object] = {}
        item_columns = [c for c in self.store.item_feature_columns if c in inputs]
        features.update(self.store.item_features(candidates, item_columns))
        user_columns = [c for c in self.store.user_feature_columns if c in inputs and c not in features]
        features.update({c: state.features.get(c) for c in user_columns})
        for name in features:  # a stored value the ranker cannot take (inf, 1e300) goes as missing
            features[name], dropped = usable(features[name], inputs[name].dtype)
            if dropped and (self.ranker_model, f"bad {name}") not in self._warned:
                self._warned.add((self.ranker_model, f"bad {name}"))
                hint = (f"; text where it takes numbers: build the store with --column-types {name}=numeric "
                        f"(and --skip-bad-rows), as the ranker's training read it"
                        if isinstance(dropped, str) else "")
                logging.getLogger(__name__).warning("the store's '%s' holds values ranker '%s' cannot take "
                                                    "(e.g. %r): sent as missing%s", name, self.ranker_model,
                                                    dropped, hint)
        features.update(request_time_features(inputs, context, time.time(), names["time"]))
        features.update(context)
        served = {inputs.served(n) for n in (*features, names["user"], names["item"]) if n}
        self._warn_unfilled(set(inputs.real) - served, names)
        return features

    def _warn_unfilled(self, unfilled: set[str], names: Mapping[str, str | None]) -> None:
        new = sorted(n for n in unfilled if (self.ranker_model, n) not in self._warned)
        if new:
            self._warned.update((self.ranker_model, n) for n in new)
            logging.getLogger(__name__).warning(
                "ranker '%s' gets inputs %s as missing for every candidate: neither the ids (the user id "
                "goes to '%s', the candidates' to '%s'), the time ('%s'), the store's features nor the "
                "request fill them. Name the ranker's own user, item or time column with "
                "--ranker-user-input, --ranker-item-input or --ranker-time-input; a request feature with "
                "--context NAME=VALUE",
                self.ranker_model, [shown_input(n) for n in new], *(names[role] or "none found" for role in
                                                                   ("user", "item", "time")))


def _remaining(deadline: float | None) -> float | None:
    """The seconds left until ``deadline`` (None: no deadline but the client's own).

    Raises:
      ServerUnavailableError: None are left (the request waited its time out already).
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise ServerUnavailableError("the request's deadline passed before the model server was asked "
                                     "(the service is busier than its models answer)")
    return left
