"""Where the recommender's online state lives: in this process (a feature store folder) or in Redis.

``open_store("store/")`` is the embedded :class:`~tfrs_recsys.serving.stores.memory.MemoryStore`;
``open_store("redis://127.0.0.1:6379/0")`` the :class:`~tfrs_recsys.serving.stores.redis_store.RedisStore`.
Both implement :class:`~tfrs_recsys.serving.stores.base.OnlineStore`.
"""
from __future__ import annotations

import os
from typing import Mapping

from tfrs_recsys.serving.stores.base import (
    OnlineStore,
    StoreStateError,
    StoreUnavailableError,
    UserState,
    Version,
)

__all__ = ["OnlineStore", "StoreStateError", "StoreUnavailableError", "UserState", "Version", "open_store",
           "store_from_environment", "is_redis_url"]


def is_redis_url(spec: str) -> bool:
    """Whether ``spec`` names a Redis server rather than a folder."""
    return str(spec).startswith(("redis://", "rediss://", "unix://"))


def store_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The store the environment names: ``RECSYS_STORE``, else ``redis://RECSYS_REDIS_HOST:PORT/DB``
    when ``RECSYS_REDIS_HOST`` is set (port 6379 and db 0 by default), else ``None``."""
    env = os.environ if environ is None else environ
    if env.get("RECSYS_STORE"):
        return env["RECSYS_STORE"]
    if env.get("RECSYS_REDIS_HOST"):
        return (f"redis://{env['RECSYS_REDIS_HOST']}:{env.get('RECSYS_REDIS_PORT') or 6379}/"
                f"{env.get('RECSYS_REDIS_DB') or 0}")
    return None


def open_store(spec: str, **options) -> OnlineStore:
    """The store ``spec`` names.

    Args:
      spec: A feature store folder (``python -m tfrs_recsys.serving.feature_store --out``), loaded
        into this process; or ``redis://host:port/db``.
      **options: :class:`~tfrs_recsys.serving.stores.redis_store.RedisStore` options (Redis only).

    Returns:
      The store.

    Raises:
      DataError: The folder is not a feature store.
    """
    if is_redis_url(spec):
        from tfrs_recsys.serving.stores.redis_store import RedisStore

        return RedisStore(str(spec), **options)
    from tfrs_recsys.serving.stores.memory import MemoryStore

    return MemoryStore.load(spec)
