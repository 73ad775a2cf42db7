"""The embedded store: everything in this process, loaded from a feature store folder.

Nothing to install or start. Events and publishes change it in place (a lock keeps each batch
whole; readers take the live version by one reference read), and nothing is written back: a
restart begins again from the folder.
"""
from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from typing import Mapping, Sequence

from tfrs_recsys.serving.events import Event, hotness, hotness_feature, increments
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.stores.base import OnlineStore, StoreMeta, UserState, Version

MAX_EVENT_USERS = 200_000  # about 1 KB each with their marks


class _Live:
    """One version's mutable state: counters, the hot ranking, the users with newer events."""

    def __init__(self, number: int, version: Version):
        self.number, self.version, self.meta = number, version, version.meta
        self.counters = {i: list(c) for i, c in version.counters.items()}
        self.score = dict(version.hot)
        self.ranking = sorted((-s, i) for i, s in self.score.items())  # hottest first, ties by id
        self.stale: set[str] = set()
        self.clock = version.meta.as_of

    def rescore(self, item: str, score: float) -> None:
        if item in self.score:
            del self.ranking[bisect.bisect_left(self.ranking, (-self.score[item], item))]
        self.score[item] = score
        bisect.insort(self.ranking, (-score, item))


class MemoryStore(OnlineStore):
    """An :class:`~tfrs_recsys.serving.stores.base.OnlineStore` in this process.

    Args:
      source: The feature store it starts from (its recall lists, if any, are the live version).
      max_event_users: The most users whose history only events wrote; past it the one whose last event
        is oldest is forgotten (this process's memory stays bounded).
    """

    backend = "memory"

    def __init__(self, source: FeatureStore, *, max_event_users: int = MAX_EVENT_USERS):
        self._lock = threading.Lock()
        cap = source.meta.max_history
        self._histories = {u: list(h[-cap:] if cap else h) for u, h in source.user_histories.items()}
        self._made: OrderedDict[str, None] = OrderedDict()  # users events made, least recent first
        self.max_event_users = max_event_users
        self._live = _Live(source.published_version or 1, Version.from_feature_store(source))
        self._building: tuple[int, set, _Live | None] | None = None
        self._reserved = self._live.number

    @classmethod
    def load(cls, directory) -> MemoryStore:
        """The store of a feature store folder (:meth:`FeatureStore.load`)."""
        return cls(FeatureStore.load(directory))

    # -- reads ----------------------------------------------------------------------------------------

    def user_state(self, user_id: str) -> UserState:
        live, user = self._live, str(user_id)
        history = self._histories.get(user)
        published = None if user in live.stale else live.version.recall.get(user)
        return UserState(None if history is None else list(history), published, live.number,
                         live.version.users.get(user, {}))

    def hot_items(self, k: int) -> list[tuple[str, float]]:
        return [(i, -s) for s, i in self._live.ranking[:k]]

    def fallback_hot_items(self, k: int) -> list[tuple[str, float]]:
        return self.hot_items(k)

    @property
    def meta(self) -> StoreMeta:
        return self._live.meta

    @property
    def item_feature_columns(self) -> list[str]:
        return list(self._live.version.item_columns)

    @property
    def user_feature_columns(self) -> list[str]:
        return list(self._live.version.user_columns)

    def item_features(self, item_ids: Sequence[str], columns: Sequence[str]) -> dict[str, list]:
        live = self._live
        rows = [live.version.items.get(str(i), {}) for i in item_ids]
        out = {c: [row.get(c) for row in rows] for c in columns}
        if "item_hotness" in out:
            counts = [live.counters.get(str(i), (0.0, 0.0, 0.0))[2] for i in item_ids]
            values = hotness_feature(counts, live.meta, live.clock)
            out["item_hotness"] = [float(v) if str(i) in live.counters else None
                                   for i, v in zip(item_ids, values)]
        return out

    def known_items(self, item_ids: Sequence[str]) -> set[str]:
        live = self._live
        return {i for i in item_ids if i in live.version.items or i in live.counters or i in live.score}

    def health(self) -> dict:
        return {"backend": self.backend, "status": "ok", "latency_ms": 0.0,
                "published_version": self._live.number}

    # -- writes -------------------------------------------------------------------------------------

    def apply_events(self, events: Sequence[Event]) -> dict:
        with self._lock:
            live = self._live
            added = increments(events, live.meta)  # raises before anything changes
            for event in events:
                if event.enters_history:
                    if event.user_id not in self._histories:
                        self._made[event.user_id] = None
                    elif event.user_id in self._made:
                        self._made.move_to_end(event.user_id)
                    history = self._histories.setdefault(event.user_id, [])
                    history.append(event.item_id)
                    if live.meta.max_history and len(history) > live.meta.max_history:
                        del history[:-live.meta.max_history]
            while len(self._made) > self.max_event_users:
                gone, _ = self._made.popitem(last=False)
                self._histories.pop(gone, None)
                live.stale.discard(gone)
                if self._building is not None:
                    self._building[1].discard(gone)
            for item, (n, c, f) in added.items():
                counters = live.counters.setdefault(item, [0.0, 0.0, 0.0])
                counters[0] += n
                counters[1] += c
                counters[2] += f
                live.rescore(item, hotness(counters[0], counters[1], live.meta))
            # only a grown history outdates a published recall list; impressions alone leave it, and
            # marking their users would keep every id ever sent in memory
            users = {e.user_id for e in events if e.enters_history}
            live.stale |= users
            if self._building is not None:
                self._building[1].update(users)
            live.clock = max(live.clock, max(e.timestamp for e in events))
        return {"applied": len(events), "version": live.number}

    def begin_version(self) -> int:
        with self._lock:
            self._reserved += 1
            self._building = (self._reserved, set(), None)  # number, users with newer events, written
            return self._reserved

    def seed_histories(self, histories: Mapping[str, Sequence[str]], max_history: int | None) -> int:
        with self._lock:
            fresh = {str(u): list(h[-max_history:] if max_history else h) for u, h in histories.items()
                     if str(u) not in self._histories}
            self._histories.update(fresh)
        return len(fresh)

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        return {str(u): list(self._histories[str(u)]) for u in user_ids if str(u) in self._histories}

    def _begun(self, number: int) -> tuple[int, set, _Live | None]:
        if self._building is None or self._building[0] != number:
            raise ValueError(f"version {number} was not begun (begin_version) or was abandoned")
        return self._building

    def write_version(self, number: int, version: Version) -> None:
        with self._lock:
            _, stale, _ = self._begun(number)
            self._building = (number, stale, _Live(number, version))

    def go_live(self, number: int) -> None:
        with self._lock:
            _, stale, written = self._begun(number)
            if written is None:
                raise ValueError(f"version {number} was not written (write_version)")
            written.stale |= stale
            self._live, self._building = written, None

    def abandon(self, number: int) -> None:
        with self._lock:
            if self._building is not None and self._building[0] == number:
                self._building = None
