"""``python -m tfrs_recsys.serving.publish``: the batch export of the online store's data and recall lists.

::

    python -m tfrs_recsys.serving.publish --run-dir RUN --store redis://127.0.0.1:6379/0 \\
        --address 127.0.0.1:8500 --retrieval-model retrieval --k 100 --recall-merge ratio --hot-ratio 0.2

From a retrieval run (or a feature store folder, ``--feature-store``): every known user's history
goes through the retrieval export the model server serves (``query_with_exclusions``, the history
excluded, in batches), the hot items are interleaved by the recall merge flags, and a new version
(recall lists, hot list and counters with the Beta prior fitted now, item and user features) is
written under its own key prefix; then one step makes it live, and the versions before the previous
one are removed. Users the store has no history for get the run's (capped at the run's
``max_history``); users who have one are scored on it. Events posted while a publish runs mark
their users stale in the new version, so they get model recall. ``--store DIR`` writes a folder the
embedded store loads instead (swapped in by renames; a running service takes it, see
:mod:`~tfrs_recsys.serving.store_refresh`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from tfrs_recsys.serving.client import DEFAULT_ADDRESS, ServingClient
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.recall_merge import RECALL, RecallMergeConfig, merge_candidates
from tfrs_recsys.serving.stores import OnlineStore, Version, is_redis_url, open_store, store_from_environment
from tfrs_recsys.serving.stores.base import RecallList


def recall_lists(client: ServingClient, histories: dict[str, list[str]], hot: Sequence[str], k: int,
                 config: RecallMergeConfig, *, hotness: dict[str, float], retrieval_model: str | None = None,
                 batch_size: int = 256) -> tuple[dict[str, RecallList], int | None]:
    """Each user's top-``k`` candidates: retrieval (history excluded) with hot items interleaved.

    Args:
      client: The model server's client.
      histories: Each user's items, oldest first (users without any are left out).
      hot: The hot items, hottest first.
      k: The list length.
      config: How hot items join (:class:`~tfrs_recsys.serving.recall_merge.RecallMergeConfig`).
      hotness: The hot items' scores.
      retrieval_model: The retrieval model (default: the client's).
      batch_size: Users per request.

    Returns:
      ``(lists, retrieval model version)``; each list holds ``(item_id, score, source)``.
    """
    users = [u for u, h in histories.items() if h]
    out, version = {}, None
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        found = client.retrieve_many(batch, [histories[u] for u in batch], exclude_seen=True,
                                     model=retrieval_model)
        for user, result in zip(batch, found):
            version = result.version
            pool = list(hot[:(config.num_hot or 2 * k) + len(histories[user])])
            scores = dict(zip(result.item_ids, result.scores))
            merged = merge_candidates(result.item_ids, pool, k, config, exclude=histories[user])
            out[user] = [(item, scores[item] if source == RECALL else hotness[item], source)
                         for item, source in merged]
    return out, version


def publish(source: FeatureStore, store: OnlineStore, client: ServingClient | None, *, k: int = 100,
            recall_merge: RecallMergeConfig | None = None, retrieval_model: str | None = None,
            batch_size: int = 256) -> dict:
    """Writes a new version of ``store`` from ``source`` and makes it live (module docstring).

    Args:
      source: The batch data (histories, hot counters, features, the store's meta).
      store: The store to publish to.
      client: The model server's client; ``None`` publishes no recall lists.
      k: The recall lists' length.
      recall_merge: How hot items join the lists (default: they do not).
      retrieval_model: The retrieval model (default: the client's).
      batch_size: Users per retrieval request.

    Returns:
      A summary: ``version``, ``users``, ``recall_lists``, ``seeded_histories``, ``seconds``.
    """
    started = time.perf_counter()
    config = recall_merge or RecallMergeConfig()
    number = store.begin_version()
    try:
        seeded = store.seed_histories(source.user_histories, source.meta.max_history)
        version = Version.from_feature_store(source, recall={}, info={"published_at": time.time()})
        if client is not None:
            current = store.histories(list(source.user_histories))  # after begin: later events mark stale
            hot = sorted(version.hot, key=lambda i: (-version.hot[i], i))
            version.recall, retrieved = recall_lists(client, current, hot, k, config, hotness=version.hot,
                                                     retrieval_model=retrieval_model, batch_size=batch_size)
            version.info.update(retrieval_model=retrieval_model or client.retrieval_model,
                                retrieval_version=retrieved, recall_merge=config.strategy, k=k)
        store.write_version(number, version)
        store.go_live(number)
    except BaseException:
        store.abandon(number)
        raise
    return {"version": number, "users": len(source.user_histories), "recall_lists": len(version.recall),
            "seeded_histories": seeded, "hot_items": len(version.hot),
            "seconds": round(time.perf_counter() - started, 3)}


def _publish_folder(source: FeatureStore, directory: str, client: ServingClient | None, *, k: int,
                    recall_merge: RecallMergeConfig, batch_size: int) -> dict:
    """A folder for the embedded store: the source and its recall lists, swapped in by renames."""
    started = time.perf_counter()
    target = Path(directory)
    previous = FeatureStore.load(target).published_version if (target / "store.json").is_file() else None
    version = Version.from_feature_store(source, recall={})
    cap = source.meta.max_history
    if client is not None:
        histories = {u: h[-cap:] if cap else h for u, h in source.user_histories.items()}
        hot = sorted(version.hot, key=lambda i: (-version.hot[i], i))
        version.recall, _ = recall_lists(client, histories, hot, k, recall_merge, hotness=version.hot,
                                         batch_size=batch_size)
    source.recall_lists, source.published_version = version.recall, (previous or 0) + 1
    staged, old = target.with_name(target.name + ".publishing"), target.with_name(target.name + ".old")
    shutil.rmtree(staged, ignore_errors=True)
    source.save(staged)
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return {"version": source.published_version, "users": len(source.user_histories),
            "recall_lists": len(version.recall), "seeded_histories": 0, "hot_items": len(version.hot),
            "seconds": round(time.perf_counter() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    """Publishes (module docstring).

    Args:
      argv: The command line's arguments (default: ``sys.argv[1:]``).

    Returns:
      The exit code: 0; 1 when the model server or the store failed; 2 for a bad command line or run.
    """
    from tfrs_recsys.config import ConfigError
    from tfrs_recsys.errors import UserError
    from tfrs_recsys.serving.client import ServingClientError
    from tfrs_recsys.serving.recall_merge import add_recall_merge_arguments, recall_merge_from_args
    from tfrs_recsys.serving.stores import StoreStateError, StoreUnavailableError

    p = argparse.ArgumentParser(prog="python -m tfrs_recsys.serving.publish",
                                description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", help="a retrieval run: its training data, features and max_history")
    p.add_argument("--feature-store", help="a feature store folder to publish instead of --run-dir")
    p.add_argument("--store", default=store_from_environment(),
                   help="redis://HOST:PORT/DB, or a folder for the embedded store (default: RECSYS_STORE)")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help="the model server serving the retrieval export")
    p.add_argument("--retrieval-model", default="retrieval", help="the retrieval export's model name")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="deadline of each gRPC and Redis call, seconds")
    p.add_argument("--k", type=int, default=100, help="length of each recall list")
    p.add_argument("--batch-size", type=int, default=256, help="users per retrieval request")
    p.add_argument("--skip-recall", action="store_true",
                   help="publish the data and hot list without recall lists (no model server needed)")
    add_recall_merge_arguments(p)
    args = p.parse_args(argv)
    if bool(args.run_dir) == bool(args.feature_store):
        p.error("pass one of --run-dir RUN or --feature-store DIR")
    if not args.store:
        p.error("pass --store redis://HOST:PORT/DB (or a folder), or set RECSYS_STORE")
    if args.k < 1 or args.batch_size < 1:
        p.error("--k and --batch-size must be >= 1")
    try:
        config = recall_merge_from_args(args)
        source = (FeatureStore.from_run(args.run_dir) if args.run_dir
                  else FeatureStore.load(args.feature_store))
    except (ConfigError, UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = None if args.skip_recall else ServingClient(args.address, args.timeout,
                                                         retrieval_model=args.retrieval_model)
    options = dict(k=args.k, recall_merge=config, batch_size=args.batch_size)
    try:
        if is_redis_url(args.store):
            store = open_store(args.store, timeout=args.timeout)  # a batch job: patient
            try:
                summary = publish(source, store, client, **options)
            finally:
                store.close()
        else:
            summary = _publish_folder(source, args.store, client, **options)
    except (ServingClientError, StoreUnavailableError, StoreStateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    print(json.dumps({"store": args.store, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
