"""What every online store holds and answers, whatever keeps it: the interface and its data.

A store holds, per published version (what one ``serving.publish`` wrote, switched live in one step):
the item and user features (item metadata for display among them), each item's time-decayed
impression, click and interaction counters with the hot list they order, the user's precomputed
recall lists, and the :class:`StoreMeta` the counters are read with. Outside the versions: each
user's recent history, which events append to and a publish only fills in for users it lacks.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from tfrs_recsys.data.ctr_features import CLICK_LOG_HALF_LIFE_DAYS
from tfrs_recsys.data.times import MAX_EPOCH_SECONDS

if TYPE_CHECKING:
    from tfrs_recsys.serving.events import Event
    from tfrs_recsys.serving.feature_store import FeatureStore

HOT_LIST_HALF_LIFE_DAYS = 7.0
# A published recall list: (item_id, score, source) per slot, source "recall" or "hot".
RecallList = list[tuple[str, float, str]]


class StoreUnavailableError(RuntimeError):
    """The store did not answer (down, or slower than its timeout): the caller falls back."""


class StoreStateError(RuntimeError):
    """The store answers but cannot take the request yet (e.g. nothing has been published to it)."""


@dataclasses.dataclass(frozen=True)
class StoreMeta:
    """How a version's counters are read: recorded with the store, frozen at each publish.

    Attributes:
      as_of: The counters' time (epoch seconds): the newest event of the batch data. An event at
        ``t`` adds ``0.5 ** ((as_of - t) / h)`` (forward decay), so a counter read at ``T`` is the
        offline decayed sum at ``T`` once multiplied by ``0.5 ** ((T - as_of) / h)``.
      hot_half_life_days: The hot list's half-life.
      feature_half_life_days: The ranker's ``item_hotness`` feature's half-life.
      prior_strength: ``s`` of the Beta prior of the smoothed CTR, frozen at the publish.
      prior_mean: ``m`` of that prior.
      max_history: The most recent items a user's history keeps (the retrieval model's
        ``max_history``; ``None``: all).
      user_column: The log's user id column (its training's ``--user-column``), which a ranker of the
        same data takes the user id as; ``None``: unknown.
      item_column: The log's item id column, likewise.
      time_column: The log's time column, likewise.
      history_kept: Whether the retrieval run ranked the user's own history among the candidates
        (its ``retrieval_meta.json``'s ``history_left_out`` false: re-consumption, as reorders): the
        pipeline's default for keeping seen items; ``None``: unknown (left out).
    """

    as_of: float
    hot_half_life_days: float = HOT_LIST_HALF_LIFE_DAYS
    feature_half_life_days: float = CLICK_LOG_HALF_LIFE_DAYS
    prior_strength: float = 1.0
    prior_mean: float = 1.0
    max_history: int | None = None
    user_column: str | None = None
    item_column: str | None = None
    time_column: str | None = None
    history_kept: bool | None = None

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> StoreMeta:
        """The meta :meth:`to_dict` wrote (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def __post_init__(self) -> None:
        """Raises :class:`StoreStateError` for an ``as_of`` past the year 5000: epoch milliseconds read as
        seconds (by version 0.1, or times not converted), which would weigh every event since at 0."""
        if self.as_of >= MAX_EPOCH_SECONDS:
            raise StoreStateError(f"the store's time as_of={self.as_of:g} is epoch milliseconds read as "
                                  f"seconds (a store of version 0.1, or a log's times not converted): its "
                                  f"hot list and every event's weight would be wrong. Build it from the run "
                                  f"(python -m tfrs_recsys.serving.feature_store --run-dir RUN --out "
                                  f"STORE), and publish it again")


@dataclasses.dataclass
class Version:
    """What a publish writes (and what a store loaded from a folder starts from).

    Attributes:
      meta: How the counters are read.
      counters: ``item -> (impressions, clicks, interactions)``, decayed to ``meta.as_of``:
        impressions and clicks with the hot list's half-life, interactions (the events that
        enter histories) with the ``item_hotness`` feature's.
      hot: ``item -> hotness`` of the hot list (the offline hotness at ``meta.as_of``).
      items: ``item -> {column: raw value}``: ranker features and display metadata.
      users: ``user -> {column: raw value}``.
      item_columns: The item columns, in order.
      user_columns: The user columns, in order.
      recall: ``user -> RecallList``, best first (may be empty).
      info: Free-form facts about the publish (the retrieval model's version, its time).
    """

    meta: StoreMeta
    counters: dict[str, tuple[float, float, float]]
    hot: dict[str, float]
    items: dict[str, dict]
    users: dict[str, dict]
    item_columns: list[str]
    user_columns: list[str]
    recall: dict[str, RecallList] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_feature_store(cls, store: FeatureStore, recall: Mapping[str, RecallList] | None = None,
                           info: Mapping | None = None) -> Version:
        """The version a feature store describes (:class:`~tfrs_recsys.serving.feature_store.FeatureStore`).

        Args:
          store: The feature store.
          recall: Recall lists (default: the store's own, if it has any).
          info: Facts about the publish.

        Returns:
          The version.
        """
        hot = store.hot_counters()
        interactions = store.item_interaction_counts()
        counters = {str(i): (float(n), float(c), float(interactions.get(i, 0.0)))
                    for i, n, c in zip(hot["item_id"], hot["decayed_impressions"], hot["decayed_clicks"])}
        counters.update({i: (0.0, 0.0, float(f)) for i, f in interactions.items() if i not in counters})
        return cls(store.meta, counters, {str(i): float(h) for i, h in zip(hot["item_id"], hot["hotness"])},
                   store.item_rows(), store.user_rows(), store.item_feature_columns,
                   store.user_feature_columns, dict(store.recall_lists if recall is None else recall),
                   dict(info or {}))


@dataclasses.dataclass(frozen=True)
class UserState:
    """One user as a request first reads it, in one step.

    Attributes:
      history: The user's items, oldest first (``None``: never seen).
      published: The user's recall list in the live version; ``None`` when it has none or the user
        has events newer than that version's data.
      version: The live published version (``None``: nothing published).
      features: The user's raw feature values in that version.
    """

    history: list[str] | None
    published: RecallList | None
    version: int | None
    features: dict = dataclasses.field(default_factory=dict)


def plain(value):
    """A feature value as JSON holds it: numpy scalars and arrays as Python ones, missing as ``None``."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if value != value:  # pd.NA and other missing markers
            return None
    except (TypeError, ValueError):
        return None
    return value


class OnlineStore(abc.ABC):
    """The store the recall -> rank pipeline, the events endpoint and the publisher use.

    The lookups of :class:`~tfrs_recsys.serving.feature_store.FeatureStore` (``history``,
    ``hot_items``, ``item_features``, ``user_features`` and the column lists) read the live version.
    """

    backend = "abstract"

    # -- reads --------------------------------------------------------------------------------------

    @abc.abstractmethod
    def user_state(self, user_id: str) -> UserState:
        """The user's history, live published recall list and features, read together."""

    def history(self, user_id: str) -> list[str] | None:
        """The user's items, oldest first; ``None`` for a user the store has never seen."""
        return self.user_state(user_id).history

    @abc.abstractmethod
    def hot_items(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` hottest items, ``(item_id, hotness)``, hottest first."""

    @abc.abstractmethod
    def fallback_hot_items(self, k: int) -> list[tuple[str, float]]:
        """The hot list this process holds, for answers while the store is unavailable."""

    @property
    @abc.abstractmethod
    def meta(self) -> StoreMeta:
        """The live version's :class:`StoreMeta`."""

    @property
    @abc.abstractmethod
    def item_feature_columns(self) -> list[str]:
        """The item feature columns (``item_id`` aside)."""

    @property
    @abc.abstractmethod
    def user_feature_columns(self) -> list[str]:
        """The user feature columns (``user_id`` aside)."""

    @abc.abstractmethod
    def item_features(self, item_ids: Sequence[str], columns: Sequence[str]) -> dict[str, list]:
        """Per-item values of ``columns`` (``item_hotness`` as of the store's newest event); ``None``
        where unknown."""

    def user_features(self, user_id: str, columns: Sequence[str]) -> dict[str, object]:
        """A user's values of ``columns`` (``None`` where unknown)."""
        features = self.user_state(user_id).features
        return {c: features.get(c) for c in columns}

    @abc.abstractmethod
    def health(self) -> dict:
        """``{"backend", "status": "ok"|"slow"|"down"|"empty", "latency_ms", "published_version", ...}``;
        ``empty``: nothing is published (yet, or the data was lost)."""

    @abc.abstractmethod
    def known_items(self, item_ids: Sequence[str]) -> set[str]:
        """Those of ``item_ids`` the live version knows (their features, counters or hotness)."""

    # -- writes -------------------------------------------------------------------------------------

    def apply_catalog_events(self, events: Sequence[Event]) -> dict:
        """:meth:`apply_events` of the events whose item the live version knows; the others are left out
        and said: an item no model and no feature row knows would only enter the hot list, where a wrong
        id (or a writer's made-up one) would reach every cold user until the next publish.

        Returns:
          ``{"applied": n, "version": v}``, with ``"ignored": m, "ignored_example": item, "why": ...``
          when events were left out.

        Raises:
          As :meth:`apply_events`.
        """
        known = self.known_items(list(dict.fromkeys(e.item_id for e in events)))
        kept = [e for e in events if e.item_id in known]
        answer = self.apply_events(kept) if kept else {"applied": 0}
        if len(kept) < len(events):
            unknown = next(e.item_id for e in events if e.item_id not in known)
            answer.update(ignored=len(events) - len(kept), ignored_example=unknown,
                          why="items the published store does not hold; publish a store that holds them")
        return answer

    @abc.abstractmethod
    def apply_events(self, events: Sequence[Event]) -> dict:
        """Applies validated events (:mod:`tfrs_recsys.serving.events`), all or none.

        Returns:
          ``{"applied": n, "version": v}``.

        Raises:
          StoreUnavailableError: The store did not answer; nothing was applied.
          StoreStateError: Nothing is published yet.
        """

    @abc.abstractmethod
    def begin_version(self) -> int:
        """Reserves the next version number; from now on events mark their users stale in it."""

    @abc.abstractmethod
    def seed_histories(self, histories: Mapping[str, Sequence[str]], max_history: int | None) -> int:
        """Writes the histories of users the store has none for; returns how many."""

    @abc.abstractmethod
    def histories(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        """The current histories of ``user_ids`` (those the store has)."""

    @abc.abstractmethod
    def write_version(self, number: int, version: Version) -> None:
        """Writes a version begun with :meth:`begin_version`, not yet live."""

    @abc.abstractmethod
    def go_live(self, number: int) -> None:
        """Switches readers to version ``number`` in one step and retires the versions before the
        previous one."""

    @abc.abstractmethod
    def abandon(self, number: int) -> None:
        """Drops a version that was begun but will not go live."""

    def close(self) -> None:
        """Releases connections."""
