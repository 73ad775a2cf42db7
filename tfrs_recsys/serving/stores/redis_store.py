"""The store in a Redis server (``redis://host:port/db``), written by publishes and events from any process.

Keys, under a namespace (``recsys``; ``RECSYS_REDIS_NAMESPACE``)::

    {ns}:live                the live version number (one SET switches readers)
    {ns}:building            the version a publish is writing (events mark their users stale in it)
    {ns}:next_version        the version counter;  {ns}:versions  the versions on the server (a set)
    {ns}:hist:{user}         the user's history, a list capped at max_history (outside versions),
                             expiring history_ttl_days after the user's last event
    {ns}:v{N}:meta           StoreMeta, item and user columns, publish facts (a hash of JSON)
    {ns}:v{N}:items|users    id -> JSON of raw features and display metadata
    {ns}:v{N}:n|c|f|rev      item -> decayed impressions | clicks | interactions | update count
    {ns}:v{N}:hot            the hot list, a sorted set scored by -hotness (ties by id)
    {ns}:v{N}:clock          the newest event time (ZADD GT);  {ns}:v{N}:dirty  users with newer events
    {ns}:v{N}:recall:{user}  the published recall list, JSON [[item, score, source], ...]

A request reads the user's state (history, published recall list, features) with the live number in
one script, so a recall list never mixes versions; a version's item rows never change, so each is
read once and kept in this process (the ``item_hotness`` counters are read on every request). An
event batch is one MULTI/EXEC (histories, counters and stale marks together, retried if a publish
switched versions meanwhile); the hot list's scores follow in a script that keeps the newest
(``rev``). Scripts build key names, so the store needs a single Redis node, not a cluster.
A server that does not answer within ``timeout`` is reported as :class:`StoreUnavailableError`
and left alone for ``retry_interval`` seconds; redis-py's pool reconnects on the next call.
"""
from __future__ import annotations

import json
import os
import time
from itertools import islice
from typing import Callable, Mapping, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tfrs_recsys.serving.events import Event, hotness, hotness_feature, increments
from tfrs_recsys.serving.stores.base import (
    OnlineStore,
    StoreMeta,
    StoreStateError,
    StoreUnavailableError,
    UserState,
    Version,
)
from tfrs_recsys.serving.stores.redis_scripts import HOT, RESCORE, SEED, USER_STATE

HISTORY_TTL_DAYS = 180.0
FALLBACK_SIZE = 100  # the hot items kept for answers while Redis is unavailable
FALLBACK_REFRESH_S = 1.0
_WATCH_RETRIES = 20
_CHUNK = 1000

def _chunks(mapping: Mapping, size: int = _CHUNK):
    it = iter(mapping.items())
    while chunk := dict(islice(it, size)):
        yield chunk


class RedisStore(OnlineStore):
    """An :class:`~tfrs_recsys.serving.stores.base.OnlineStore` in a Redis server.

    Args:
      url: ``redis://host:port/db``.
      namespace: The key prefix (default ``RECSYS_REDIS_NAMESPACE`` or ``recsys``).
      timeout: Seconds a command may take before the store counts as unavailable.
      retry_interval: Seconds calls fail fast after a failure before Redis is tried again.
      slow_ms: A health check slower than this reports ``"slow"``.
      history_ttl_days: A history no event wrote to for this long expires (a publish seeds it again
        from its batch data); 0: never.
    """

    backend = "redis"

    def __init__(self, url: str, *, namespace: str | None = None, timeout: float = 0.25,
                 retry_interval: float = 0.5, slow_ms: float = 50.0,
                 history_ttl_days: float = HISTORY_TTL_DAYS):
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
        kwargs = self._redis.get_connection_kwargs()
        self.url = f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
        self.ns = namespace or os.environ.get("RECSYS_REDIS_NAMESPACE") or "recsys"
        self.timeout, self.retry_interval, self.slow_ms = timeout, retry_interval, slow_ms
        self.history_ttl_s = round(history_ttl_days * 86_400)
        self._scripts = {name: self._redis.register_script(code) for name, code in (
            ("user", USER_STATE), ("hot", HOT), ("rescore", RESCORE), ("seed", SEED))}
        self._versions: dict[int, tuple[StoreMeta, list[str], list[str]]] = {}
        self._live: int | None = None
        self._fallback: list[tuple[str, float]] = []
        self._fallback_at = -float("inf")
        self._rows: tuple[int | None, dict[str, dict]] = (None, {})  # one version's item rows, as read
        self._down_until, self._last_error = 0.0, ""
        try:
            self.hot_items(FALLBACK_SIZE)
        except (StoreUnavailableError, StoreStateError):
            pass  # answers start once Redis does; /health says why until then

    def _key(self, name: str, version: int | None = None) -> str:
        return f"{self.ns}:{name}" if version is None else f"{self.ns}:v{version}:{name}"

    def _call(self, operation: Callable):
        """Runs ``operation``; a Redis that does not answer becomes StoreUnavailableError."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailableError(self._last_error)
        try:
            return operation()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self._last_error = (f"redis at {self.url} did not answer within {self.timeout:g}s ({e}); "
                                f"retrying every {self.retry_interval:g}s")
            self._down_until = time.monotonic() + self.retry_interval
            raise StoreUnavailableError(self._last_error) from None

    def _version(self, number: int) -> tuple[StoreMeta, list[str], list[str]]:
        """A version's meta and columns (immutable once written, so read once)."""
        if number not in self._versions:
            fields = self._call(lambda: self._redis.hgetall(self._key("meta", number)))
            if not fields:
                raise StoreStateError(f"version {number} has no meta at {self.url} (namespace {self.ns})")
            self._versions[number] = (StoreMeta.from_dict(json.loads(fields["meta"])),
                                      json.loads(fields["item_columns"]), json.loads(fields["user_columns"]))
        return self._versions[number]

    def _live_version(self) -> int:
        if self._live is None:
            live = self._call(lambda: self._redis.get(self._key("live")))
            if live is None:
                self._unpublished()
            self._live = int(live)
        return self._live

    def _unpublished(self):
        """Raises StoreStateError: nothing is live (never published, or Redis lost its data). What was read
        of earlier versions is forgotten: after a wipe the numbers start again at 1, for other data."""
        self._live, self._versions, self._rows = None, {}, (None, {})
        raise StoreStateError(f"nothing is published at {self.url} (namespace {self.ns}): run "
                              f"`python -m tfrs_recsys.serving.publish --store {self.url} ...`")

    # -- reads ----------------------------------------------------------------------------------------

    def _fallback_due(self) -> bool:
        return time.monotonic() - self._fallback_at > FALLBACK_REFRESH_S

    def _keep_fallback(self, flat: list[str]) -> list[tuple[str, float]]:
        hot = [(flat[i], -float(flat[i + 1])) for i in range(0, len(flat), 2)]
        self._fallback, self._fallback_at = hot, time.monotonic()
        return hot

    def user_state(self, user_id: str) -> UserState:
        refresh = FALLBACK_SIZE if self._fallback_due() else 0  # the fallback rides along once a second
        args = [self.ns, str(user_id), refresh]
        live, history, *rest = self._call(lambda: self._scripts["user"](args=args))
        if not live:  # the pipeline answers this process's hot list, said as a fallback
            self._unpublished()
        self._live = int(live)
        recall, features, hot = rest
        if refresh:
            self._keep_fallback(hot)
        published = [(str(i), float(s), str(src)) for i, s, src in json.loads(recall)] if recall else None
        return UserState(history or None, published, int(live), json.loads(features) if features else {})

    def hot_items(self, k: int) -> list[tuple[str, float]]:
        refresh = self._fallback_due()
        n = max(k, FALLBACK_SIZE) if refresh else k
        live, flat = self._call(lambda: self._scripts["hot"](args=[self.ns, n]))
        if not live:
            self._unpublished()
        self._live = int(live)
        hot = self._keep_fallback(flat) if refresh else [(flat[i], -float(flat[i + 1]))
                                                          for i in range(0, len(flat), 2)]
        return hot[:k]

    def fallback_hot_items(self, k: int) -> list[tuple[str, float]]:
        return self._fallback[:k]

    @property
    def meta(self) -> StoreMeta:
        return self._version(self._live_version())[0]

    @property
    def item_feature_columns(self) -> list[str]:
        return list(self._version(self._live_version())[1])

    @property
    def user_feature_columns(self) -> list[str]:
        return list(self._version(self._live_version())[2])

    def item_features(self, item_ids: Sequence[str], columns: Sequence[str]) -> dict[str, list]:
        """As the other stores; a version's item rows never change, so each is read from Redis once
        (per version) and kept in this process; ``item_hotness`` is read on every call."""
        ids = [str(i) for i in item_ids]
        live = self._live_version()
        if self._rows[0] != live:
            self._rows = (live, {})
        rows = self._rows[1]
        missing = list(dict.fromkeys(i for i in ids if i not in rows))
        counted = "item_hotness" in columns and bool(ids)
        if missing or counted:
            def read():
                with self._redis.pipeline(transaction=False) as pipe:
                    if missing:
                        pipe.hmget(self._key("items", live), missing)
                    if counted:
                        pipe.hmget(self._key("f", live), ids)
                        pipe.zscore(self._key("clock", live), "t")
                    return pipe.execute()

            replies = self._call(read)
            if missing:
                rows.update((i, json.loads(r) if r else {}) for i, r in zip(missing, replies.pop(0)))
        out = {c: [rows[i].get(c) for i in ids] for c in columns}
        if counted:
            counts, clock = replies
            meta = self._version(live)[0]
            values = hotness_feature([float(c or 0.0) for c in counts], meta, float(clock or meta.as_of))
            out["item_hotness"] = [None if c is None else float(v) for c, v in zip(counts, values)]
        return out

    def known_items(self, item_ids: Sequence[str]) -> set[str]:
        ids = [str(i) for i in item_ids]
        if not ids:
            return set()
        live = self._live_version()

        def read():
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(self._key("items", live), ids)
                pipe.hmget(self._key("n", live), ids)
                pipe.zmscore(self._key("hot", live), ids)
                return pipe.execute()

        return {i for i, *found in zip(ids, *self._call(read)) if any(f is not None for f in found)}

    def health(self) -> dict:
        start = time.perf_counter()
        try:
            live = self._redis.get(self._key("live"))  # the probe itself: no fail-fast window
        except (redis.ConnectionError, redis.TimeoutError) as e:
            return {"backend": self.backend, "url": self.url, "status": "down",
                    "latency_ms": round((time.perf_counter() - start) * 1e3, 3), "error": str(e)}
        latency = (time.perf_counter() - start) * 1e3
        self._down_until = 0.0
        status = "empty" if live is None else "slow" if latency > self.slow_ms else "ok"
        return {"backend": self.backend, "url": self.url, "namespace": self.ns,
                "status": status, "latency_ms": round(latency, 3),
                "published_version": None if live is None else int(live)}

    # -- writes -------------------------------------------------------------------------------------

    def apply_events(self, events: Sequence[Event]) -> dict:
        live_key, building_key = self._key("live"), self._key("building")

        def transaction():
            with self._redis.pipeline() as pipe:
                for _ in range(_WATCH_RETRIES):
                    try:
                        pipe.watch(live_key, building_key)
                        live, building = pipe.mget(live_key, building_key)
                        if live is None:
                            raise StoreStateError(f"nothing is published at {self.url} (namespace "
                                                  f"{self.ns}): publish before posting events")
                        live = int(live)
                        meta = self._version(live)[0]
                        added = increments(events, meta)  # raises before anything is written
                        pipe.multi()
                        self._queue_events(pipe, events, live, building, meta, added)
                        return live, meta, added, pipe.execute()
                    except redis.WatchError:
                        continue  # a publish switched versions: apply to the new one
                raise StoreUnavailableError(f"the live version at {self.url} kept switching while events "
                                            f"were applied ({_WATCH_RETRIES} tries); none was applied")

        live, meta, added, results = self._call(transaction)
        # After the history commands: 4 replies per item, (n, c, f, rev); then the stale marks and the clock.
        start = sum(1 + bool(self.history_ttl_s) for _ in self._history_commands(events, meta))
        flat = []
        for j, item in enumerate(added):
            n, c, _, rev = results[start + 4 * j: start + 4 * j + 4]
            flat += [item, str(rev), repr(-hotness(float(n), float(c), meta))]
        self._call(lambda: self._scripts["rescore"](keys=[self._key("rev", live), self._key("hot", live)],
                                                   args=flat))
        return {"applied": len(events), "version": live}

    @staticmethod
    def _history_commands(events: Sequence[Event], meta: StoreMeta):
        """``(user, items)`` per user whose history grows, in first-event order."""
        grown: dict[str, list[str]] = {}
        for event in events:
            if event.enters_history:
                grown.setdefault(event.user_id, []).append(event.item_id)
        for user, items in grown.items():
            yield user, items
            if meta.max_history:
                yield user, None

    def _queue_events(self, pipe, events, live: int, building, meta: StoreMeta, added: dict) -> None:
        for user, items in self._history_commands(events, meta):
            if items is None:
                pipe.ltrim(self._key(f"hist:{user}"), -meta.max_history, -1)
            else:
                pipe.rpush(self._key(f"hist:{user}"), *items)
            if self.history_ttl_s:  # a user idle that long is forgotten: event-made users stay bounded
                pipe.expire(self._key(f"hist:{user}"), self.history_ttl_s)
        for item, (n, c, f) in added.items():
            pipe.hincrbyfloat(self._key("n", live), item, n)
            pipe.hincrbyfloat(self._key("c", live), item, c)
            pipe.hincrbyfloat(self._key("f", live), item, f)
            pipe.hincrby(self._key("rev", live), item, 1)
        users = sorted({e.user_id for e in events if e.enters_history})  # as MemoryStore.apply_events
        for version in {live, *([int(building)] if building else [])} if users else ():
            pipe.sadd(self._key("dirty", version), *users)
        pipe.zadd(self._key("clock", live), {"t": max(e.timestamp for e in events)}, gt=True)

    def begin_version(self) -> int:
        def begin():
            number = self._redis.incr(self._key("next_version"))
            live = self._redis.get(self._key("live"))
            while live is not None and number <= int(live):  # a counter lost while versions stayed
                number = self._redis.incr(self._key("next_version"))
            self._redis.sadd(self._key("versions"), number)
            self._redis.set(self._key("building"), number)
            return number

        return self._call(begin)

    def seed_histories(self, histories: Mapping[str, Sequence[str]], max_history: int | None) -> int:
        seeded = 0
        for chunk in _chunks(histories, 200):
            args = [self.ns]
            for user, items in chunk.items():
                items = list(items)[-max_history:] if max_history else list(items)
                args += [str(user), len(items), *map(str, items)]
            seeded += self._call(lambda: self._scripts["seed"](args=args))
        return seeded

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        out = {}
        users = [str(u) for u in user_ids]
        for i in range(0, len(users), _CHUNK):
            part = users[i:i + _CHUNK]

            def read():
                with self._redis.pipeline(transaction=False) as pipe:
                    for user in part:
                        pipe.lrange(self._key(f"hist:{user}"), 0, -1)
                    return pipe.execute()

            out.update({u: h for u, h in zip(part, self._call(read)) if h})
        return out

    def write_version(self, number: int, version: Version) -> None:
        def key(name):
            return self._key(name, number)

        def write(commands):
            with self._redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    command(pipe)
                pipe.execute()

        tables = {"items": {i: json.dumps(r) for i, r in version.items.items()},
                  "users": {u: json.dumps(r) for u, r in version.users.items()},
                  **{name: {i: repr(float(c[j])) for i, c in version.counters.items()}
                     for j, name in enumerate(("n", "c", "f"))}}
        for name, table in tables.items():
            for chunk in _chunks(table):
                self._call(lambda: write([lambda p: p.hset(key(name), mapping=chunk)]))
        for chunk in _chunks(version.hot):
            scores = {i: -float(s) for i, s in chunk.items()}
            self._call(lambda: write([lambda p: p.zadd(key("hot"), scores)]))
        for chunk in _chunks(version.recall):
            self._call(lambda: write([
                lambda p, u=u, rows=rows: p.set(key(f"recall:{u}"), json.dumps(rows))
                for u, rows in chunk.items()]))
        meta = {"meta": json.dumps(version.meta.to_dict()), "item_columns": json.dumps(version.item_columns),
                "user_columns": json.dumps(version.user_columns), "info": json.dumps(version.info)}
        self._call(lambda: write([lambda p: p.zadd(key("clock"), {"t": float(version.meta.as_of)}),
                                  lambda p: p.hset(key("meta"), mapping=meta)]))

    def go_live(self, number: int) -> None:
        """Makes ``number`` live unless a newer version went live while it was written (a publish begun
        later): that one stays, and :class:`StoreStateError` says so (the caller abandons ``number``)."""
        def swap(pipe):  # WATCHed: a publish going live between the read and the switch retries it
            previous, building = pipe.get(self._key("live")), pipe.get(self._key("building"))
            if previous is not None and int(previous) >= number:
                return previous
            pipe.multi()
            pipe.set(self._key("live"), number)
            if building == str(number):  # another publish's mark stays
                pipe.delete(self._key("building"))
            return previous

        def switch():
            if not self._redis.exists(self._key("meta", number)):
                raise ValueError(f"version {number} was not written (write_version)")
            previous = self._redis.transaction(swap, self._key("live"), self._key("building"),
                                               value_from_callable=True)
            if previous is not None and int(previous) >= number:
                raise StoreStateError(f"version {previous}, published while version {number} was written, "
                                      f"is live: it stays, and version {number} is dropped; publish again "
                                      "for data newer than it")
            if previous is not None:
                for old in self._redis.smembers(self._key("versions")):
                    if int(old) < int(previous):
                        self._drop(int(old))

        self._call(switch)
        self._live = number

    def _drop(self, number: int) -> None:
        keys = list(self._redis.scan_iter(match=f"{self.ns}:v{number}:*", count=1000))
        for i in range(0, len(keys), _CHUNK):
            self._redis.unlink(*keys[i:i + _CHUNK])
        self._redis.srem(self._key("versions"), number)

    def abandon(self, number: int) -> None:
        def drop():
            if self._redis.get(self._key("building")) == str(number):
                self._redis.delete(self._key("building"))
            self._drop(number)

        self._call(drop)

    def close(self) -> None:
        self._redis.close()
