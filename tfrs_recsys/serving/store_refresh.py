"""A folder store refreshed while the service runs: a new feature store written there goes live, no restart.

The HTTP service serving ``--store DIR`` looks at the folder every ``--store-poll-seconds``. A new
store is seen by its ``store.json``, the file :meth:`FeatureStore.save
<tfrs_recsys.serving.feature_store.FeatureStore.save>` writes last: written in place
(``feature_store --out DIR``), by renames (``publish --store DIR``) or behind a symlink swapped to
another folder, a changed ``store.json`` means a completed write, never a half-written folder. The new
version goes live in the running :class:`~tfrs_recsys.serving.stores.memory.MemoryStore` as
:func:`~tfrs_recsys.serving.publish.publish` does in Redis: the histories events wrote are kept (only
users the store lacks are seeded), and items, counters, hot list and features switch in one step, so
requests never fail. A folder that fails to load is logged and the old version keeps serving.
"""
from __future__ import annotations

import logging
import os
import stat as stat_module
import threading

from tfrs_recsys import paths
from tfrs_recsys.serving.feature_store import META, FeatureStore
from tfrs_recsys.serving.stores import Version
from tfrs_recsys.serving.stores.memory import MemoryStore

logger = logging.getLogger(__name__)


def _signature(directory: str) -> tuple | None:
    """What changes when a store is written to ``directory`` (``None``: no ``store.json`` now, e.g.
    between a publish's two renames)."""
    manifest = paths.join(directory, META)
    try:
        if paths.is_remote(directory):  # object stores: the manifest itself, a few hundred bytes
            return (paths.read_text(manifest),)
        stat = os.stat(manifest)  # through a symlink: the folder it names now
        if not stat_module.S_ISREG(stat.st_mode):  # a folder or a pipe by that name: no store written
            return None
        return os.path.realpath(directory), stat.st_ino, stat.st_mtime_ns, stat.st_size
    except (OSError, ValueError):  # missing (a swap in progress), or unreadable: looked at again next time
        return None


def go_live(store: MemoryStore, source: FeatureStore) -> dict:
    """Makes ``source`` the live version of ``store``, keeping the histories it holds (module docstring).

    Args:
      store: The running store.
      source: The new feature store.

    Returns:
      ``version`` (the store's), ``published_version`` (the folder's), ``users``, ``items``,
      ``seeded_histories``.
    """
    number = store.begin_version()
    try:  # publish's steps: events applied meanwhile mark their users stale in the new version
        seeded = store.seed_histories(source.user_histories, source.meta.max_history)
        version = Version.from_feature_store(source)
        store.write_version(number, version)
        store.go_live(number)
    except BaseException:
        store.abandon(number)
        raise
    return {"version": number, "published_version": source.published_version,
            "users": source.num_users, "items": len({*version.items, *version.counters}),
            "seeded_histories": seeded}


class FolderStoreRefresher:
    """Watches a feature store folder and makes each new store written there live in ``store``.

    Use as a context manager, or :meth:`start` and :meth:`close`; :meth:`check` looks once.

    Args:
      store: The store the service answers from (loaded from ``directory``).
      directory: The feature store folder (or a symlink to one).
      poll_seconds: How often to look (> 0).

    Attributes:
      loaded: How many new stores went live.
      error: Why the last new store failed to load (``None`` once one loads).
    """

    def __init__(self, store: MemoryStore, directory: str | os.PathLike, poll_seconds: float = 10.0):
        if not poll_seconds > 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self.store, self.directory, self.poll_seconds = store, os.fspath(directory), poll_seconds
        self._seen = _signature(self.directory)  # the store running now was loaded from this
        self.loaded, self.error = 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-refresh", daemon=True)

    def check(self) -> dict | None:
        """Loads the folder if a new store was written there since the last look.

        Returns:
          The summary of :func:`go_live`; ``None`` when nothing new went live.
        """
        signature = _signature(self.directory)
        if signature is None or signature == self._seen:
            return None
        self._seen = signature  # a failed load is said once, and tried again when the folder changes
        try:
            source = FeatureStore.load(self.directory)
            if _signature(self.directory) != signature:  # rewritten while read: the next look loads it whole
                self._seen = None
                return None
            summary = go_live(self.store, source)
        except Exception as e:  # noqa: BLE001 - whatever the folder holds, the old version keeps serving
            self.error = str(e)
            logger.error("feature store %s not loaded, the previous version is kept: %s", self.directory, e)
            return None
        self.loaded, self.error = self.loaded + 1, None
        logger.warning("feature store refreshed from %s: version %s (the folder's published version %s), "
                       "users %d, items %d, histories seeded %d", self.directory, summary["version"],
                       summary["published_version"], summary["users"], summary["items"],
                       summary["seeded_histories"])
        return summary

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.check()

    def start(self) -> FolderStoreRefresher:
        """Starts looking, in a thread of its own."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops looking (a load under way finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> FolderStoreRefresher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
