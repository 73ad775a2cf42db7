"""What the recall -> rank pipeline reads at serving time: histories, features, hot items.

A feature store is a directory of Parquet files written when models are exported
(``FeatureStore.from_interactions(...).save(dir)``, or ``python -m tfrs_recsys.serving.feature_store
--run-dir RUN --out DIR``, the data a retrieval run trained on, or ``--dataset ...``) and loaded
read-only by the serving process:

* ``user_histories.parquet``: ``user_id``, ``history`` (list of item ids, oldest first);
* ``hot_items.parquet``: ``item_id``, ``hotness`` (``tfrs_recsys.data.ctr_features.item_hotness``),
  hottest first: the cold-start answer; with ``decayed_impressions`` and ``decayed_clicks``, the
  counters the online store moves with events;
* ``store.json``: the :class:`~tfrs_recsys.serving.stores.base.StoreMeta` (the counters' time, the
  half-lives of the hot list and of the ranker's ``item_hotness``, the frozen Beta prior, the
  history cap) and the published version;
* ``recall_lists.parquet`` (optional): ``user_id``, ``item_ids``, ``scores``, ``sources``, the recall
  lists ``serving.publish`` computed;
* ``item_features.parquet`` / ``user_features.parquet`` (optional): ``item_id`` / ``user_id``
  plus raw feature columns named as the ranker's inputs (list values are sent joined by ``|``).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tfrs_recsys import paths, runs
from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.entities import say_unmatched
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.text_values import text_numbers
from tfrs_recsys.errors import UserError
from tfrs_recsys.serving.stores.base import (
    HOT_LIST_HALF_LIFE_DAYS,
    RecallList,
    StoreMeta,
    StoreStateError,
    plain,
)

HISTORIES = "user_histories.parquet"
HOT_ITEMS = "hot_items.parquet"
ITEM_FEATURES = "item_features.parquet"
USER_FEATURES = "user_features.parquet"
META = "store.json"
RECALL_LISTS = "recall_lists.parquet"


def _require(frame: pd.DataFrame, columns: Sequence[str], path: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise DataError("column missing from the feature store file", path=path, column=column,
                            fix="rewrite the store with FeatureStore.save (or the feature_store command)")


def _keyed(frame: pd.DataFrame | None, key: str, path: str) -> pd.DataFrame | None:
    if frame is None:
        return None
    _require(frame, [key], path)
    frame = frame.assign(**{key: frame[key].astype(str)})
    for column in [c for c in frame.columns if c != key]:  # as a ranker takes them: epoch seconds, 12.5
        if (numbers := text_numbers(column, frame[column])) is not None:
            frame[column] = numbers
    duplicated = frame[key].duplicated()
    if duplicated.any():
        example = frame[key][duplicated].iloc[0]
        raise DataError(f"{int(duplicated.sum())} duplicate {key}(s), e.g. {example!r}", path=path,
                        column=key, fix=f"keep one row per {key}")
    return frame.set_index(key)


class FeatureStore:
    """In-memory, read-only lookups over the store's tables.

    Args:
      histories: Each user's item ids, oldest first.
      hot: ``item_id`` and ``hotness`` of the hot items.
      item_features: ``item_id`` and raw feature columns (optional).
      user_features: ``user_id`` and raw feature columns (optional).
      meta: How the online store reads the counters (default: as of now, the default half-lives).
      recall_lists: Published recall lists per user.
      published_version: The version number of ``recall_lists``.

    Raises:
      DataError: A table lacks its key column or repeats a key.
    """

    def __init__(self, histories: dict[str, list[str]], hot: pd.DataFrame,
                 item_features: pd.DataFrame | None = None, user_features: pd.DataFrame | None = None,
                 meta: StoreMeta | None = None, recall_lists: dict[str, RecallList] | None = None,
                 published_version: int | None = None):
        _require(hot, ["item_id", "hotness"], HOT_ITEMS)
        self._histories = histories
        counters = [c for c in ("decayed_impressions", "decayed_clicks") if c in hot.columns]
        self._hot = hot.sort_values(["hotness", "item_id"], ascending=[False, True], kind="mergesort")[
            ["item_id", "hotness", *counters]].reset_index(drop=True)
        self._items = _keyed(item_features, "item_id", ITEM_FEATURES)
        self._users = _keyed(user_features, "user_id", USER_FEATURES)
        self.meta = meta or StoreMeta(as_of=time.time())
        self.recall_lists = dict(recall_lists or {})
        self.published_version = published_version

    # -- building -----------------------------------------------------------------------------------

    @classmethod
    def from_interactions(cls, data: InteractionData, *, half_life_days: float = 7.0,
                          item_features: pd.DataFrame | None = None,
                          user_features: pd.DataFrame | None = None,
                          hotness_feature_half_life_days: float | None = None,
                          max_history: int | None = None) -> FeatureStore:
        """Histories (time-ordered interactions per user) and time-decayed hot items from one log.

        The item features gain ``item_hotness``, the rankers' dense feature as of the newest event:
        ``log1p`` of the item's interactions decayed with ``hotness_feature_half_life_days``, unless
        the table has that column already.

        Every interaction counts as a clicked impression, so the hot list's smoothed CTR is 1 and its
        hotness ``log1p`` of the decayed interactions; impressions posted later as events lower it.

        Args:
          data: The interactions (``user_id``, ``item_id``, ``timestamp``) and item and user tables.
          half_life_days: The half-life of the hotness that orders the hot items.
          item_features: ``item_id`` and feature columns (default: ``data.items``).
          user_features: ``user_id`` and feature columns (default: ``data.users``).
          hotness_feature_half_life_days: The half-life of ``item_hotness`` (default: the one the
            click logs of ``tfrs_recsys.data.ctr_features`` were trained with).
          max_history: The history cap the online store keeps (the retrieval model's ``max_history``).

        Returns:
          The store.
        """
        from tfrs_recsys.data.ctr_features import CLICK_LOG_HALF_LIFE_DAYS, fit_beta_prior, item_hotness

        for table, group in ((item_features, "item"), (user_features, "user")):  # other ids: refused
            if table is not None and f"{group}_id" in table.columns:
                say_unmatched(table.assign(**{f"{group}_id": table[f"{group}_id"].astype(str)}),
                              data.interactions[f"{group}_id"], group, f"--{group}-features",
                              flag=f"--{group}-features")
        frame = data.interactions.sort_values(["user_id", "timestamp"], kind="mergesort")
        histories = {str(u): [str(i) for i in items]
                     for u, items in frame.groupby("user_id", sort=False)["item_id"]}
        hotness = functools.partial(item_hotness, data.interactions, item_col="item_id", time_col="timestamp")
        feature_half_life = hotness_feature_half_life_days or CLICK_LOG_HALF_LIFE_DAYS

        items = item_features if item_features is not None else data.items
        if items is None or "item_hotness" not in items.columns:
            feature = hotness(half_life_days=feature_half_life)
            feature = feature[["item_id", "hotness"]].rename(columns={"hotness": "item_hotness"})
            if items is not None:
                items = items.assign(item_id=items["item_id"].astype(str))
                feature = items.merge(feature, on="item_id", how="left").fillna({"item_hotness": 0.0})
            items = feature
        users = user_features if user_features is not None else data.users
        hot = item_hotness(data.interactions.assign(clicked=1), item_col="item_id", time_col="timestamp",
                           click_col="clicked", half_life_days=half_life_days)
        strength, mean = fit_beta_prior(hot["decayed_impressions"], hot["decayed_clicks"])
        as_of = float(data.interactions["timestamp"].max()) if len(data.interactions) else time.time()
        meta = StoreMeta(as_of, half_life_days, feature_half_life, 1.0 if np.isnan(strength) else strength,
                         1.0 if np.isnan(mean) else mean, max_history)
        return cls(histories, hot, items, users, meta)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **options) -> FeatureStore:
        """:meth:`from_interactions` on the data a retrieval run trained on, histories capped at its
        ``max_history``.

        Args:
          run_dir: A ``retrieval`` run directory.
          **options: More arguments of :meth:`from_interactions`.

        Returns:
          The store.
        """
        run = runs.open_run(run_dir, ("retrieval",))
        config = run.config
        store = cls.from_interactions(runs.training_interactions(run_dir), max_history=config.max_history,
                                      **options)
        meta = paths.read_json(run.file(runs.META)) if paths.isfile(run.file(runs.META)) else {}
        left_out = meta.get("history_left_out")
        store.meta = dataclasses.replace(store.meta, user_column=config.user_column,
                                         item_column=config.item_column, time_column=config.time_column,
                                         history_kept=None if left_out is None else not left_out)
        return store

    def save(self, directory: str | os.PathLike) -> Path | str:
        """Writes the tables (module docstring).

        Args:
          directory: A local path or a ``tf.io.gfile`` URL such as gs://...

        Returns:
          ``directory``.
        """
        out = paths.makedirs(directory)
        histories = pd.DataFrame(list(self._histories.items()), columns=["user_id", "history"])
        paths.write_parquet(histories, paths.join(out, HISTORIES))
        paths.write_parquet(self._hot, paths.join(out, HOT_ITEMS))
        for name, table in ((ITEM_FEATURES, self._items), (USER_FEATURES, self._users)):
            if table is not None:
                paths.write_parquet(table.reset_index(), paths.join(out, name))
        if self.recall_lists:
            lists = pd.DataFrame({"user_id": list(self.recall_lists),
                                  **{name: [[row[j] for row in rows] for rows in self.recall_lists.values()]
                                     for j, name in enumerate(("item_ids", "scores", "sources"))}})
            paths.write_parquet(lists, paths.join(out, RECALL_LISTS))
        paths.write_text_atomic(paths.join(out, META), json.dumps(  # last, whole: a watcher's signal
            {"meta": self.meta.to_dict(), "published_version": self.published_version}, indent=1))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> FeatureStore:
        """Reads a store :meth:`save` wrote.

        Args:
          directory: A local path or a ``tf.io.gfile`` URL.

        Returns:
          The store.

        Raises:
          DataError: ``directory`` is not a feature store, or a table is unreadable or lacks a column.
        """
        root = paths.as_path(directory)
        if not paths.isfile(paths.join(root, HOT_ITEMS)):
            raise DataError("not a feature store: hot_items.parquet is missing", path=str(root),
                            fix="build one with `python -m tfrs_recsys.serving.feature_store --out DIR`")

        def read(name: str) -> pd.DataFrame | None:
            path = paths.join(root, name)
            if not paths.isfile(path):
                return None
            try:
                return paths.read_parquet(path)
            except Exception as e:
                raise DataError(f"unreadable Parquet file ({e})", path=str(path),
                                fix="rewrite the store with FeatureStore.save") from None

        frame = read(HISTORIES)
        histories = {}
        if frame is not None:
            _require(frame, ["user_id", "history"], str(paths.join(root, HISTORIES)))
            histories = {str(u): [str(i) for i in h] for u, h in zip(frame["user_id"], frame["history"])}
        meta, version = None, None
        if paths.isfile(paths.join(root, META)):
            try:
                manifest = json.loads(paths.read_text(paths.join(root, META)))
                meta, version = StoreMeta.from_dict(manifest["meta"]), manifest.get("published_version")
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"unreadable store manifest ({e})", path=str(paths.join(root, META)),
                                fix="rewrite the store with FeatureStore.save") from None
            except StoreStateError as e:
                raise DataError(str(e), path=str(paths.join(root, META)),
                                fix="build the store again") from None
        lists = read(RECALL_LISTS)
        recall = {} if lists is None else {
            str(u): [(str(i), float(s), str(src)) for i, s, src in zip(ids, scores, sources)]
            for u, ids, scores, sources in zip(lists["user_id"], lists["item_ids"], lists["scores"],
                                               lists["sources"])}
        return cls(histories, read(HOT_ITEMS), read(ITEM_FEATURES), read(USER_FEATURES), meta, recall,
                   version)

    # -- lookups --------------------------------------------------------------------------------------

    def history(self, user_id: str) -> list[str] | None:
        """The user's items, oldest first; ``None`` for a user the store has never seen."""
        return self._histories.get(str(user_id))

    def hot_items(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` hottest items, ``(item_id, hotness)``, hottest first (ties by id)."""
        head = self._hot.head(k)
        return [(str(i), float(h)) for i, h in zip(head["item_id"], head["hotness"])]

    @property
    def user_histories(self) -> dict[str, list[str]]:
        """Every user's history, oldest first (the store's own dict: do not change it)."""
        return self._histories

    def hot_counters(self) -> pd.DataFrame:
        """``item_id``, ``hotness``, ``decayed_impressions``, ``decayed_clicks`` of the hot items; a store
        written without counters gets the counts its hotness implies (every interaction a click)."""
        hot = self._hot.copy()
        if "decayed_impressions" not in hot.columns:
            hot["decayed_impressions"] = np.expm1(hot["hotness"].astype(float))
        if "decayed_clicks" not in hot.columns or hot["decayed_clicks"].isna().all():
            hot["decayed_clicks"] = hot["decayed_impressions"]
        return hot

    def item_interaction_counts(self) -> dict[str, float]:
        """Each item's decayed interactions behind its ``item_hotness`` feature (``log1p`` of them)."""
        if self._items is None or "item_hotness" not in self._items.columns:
            return {}
        values = pd.to_numeric(self._items["item_hotness"], errors="coerce").fillna(0.0)
        return dict(zip(self._items.index, np.expm1(values.to_numpy(dtype=float))))

    def item_rows(self) -> dict[str, dict]:
        """``item_id -> {column: value}``, JSON-ready (missing values ``None``)."""
        return _rows(self._items)

    def user_rows(self) -> dict[str, dict]:
        """``user_id -> {column: value}``, JSON-ready (missing values ``None``)."""
        return _rows(self._users)

    @property
    def num_users(self) -> int:
        """How many users have a history."""
        return len(self._histories)

    @property
    def num_hot_items(self) -> int:
        """How many hot items the store holds."""
        return len(self._hot)

    @property
    def item_feature_columns(self) -> list[str]:
        """The item feature columns (``item_id`` aside)."""
        return [] if self._items is None else list(self._items.columns)

    @property
    def user_feature_columns(self) -> list[str]:
        """The user feature columns (``user_id`` aside)."""
        return [] if self._users is None else list(self._users.columns)

    def item_features(self, item_ids: Sequence[str], columns: Sequence[str]) -> dict[str, list]:
        """Per-item values of ``columns``.

        Args:
          item_ids: The items.
          columns: Item feature columns.

        Returns:
          One list per column, aligned with ``item_ids`` (``None`` where the item or value is unknown).
        """
        if self._items is None:
            return {c: [None] * len(item_ids) for c in columns}
        rows = self._items.reindex([str(i) for i in item_ids])
        return {c: [None if _missing(v) else v for v in rows[c].tolist()] for c in columns}

    def user_features(self, user_id: str, columns: Sequence[str]) -> dict[str, object]:
        """A user's values of ``columns``.

        Args:
          user_id: The user.
          columns: User feature columns.

        Returns:
          The value per column (``None`` where the user or value is unknown).
        """
        if self._users is None or str(user_id) not in self._users.index:
            return {c: None for c in columns}
        row = self._users.loc[str(user_id)]
        return {c: None if _missing(row[c]) else row[c] for c in columns}


def _rows(table: pd.DataFrame | None) -> dict[str, dict]:
    if table is None:
        return {}
    columns = list(table.columns)
    return {str(key): {c: plain(v) for c, v in zip(columns, row)}
            for key, row in zip(table.index, table.itertuples(index=False, name=None))}


def _missing(value) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def main(argv: list[str] | None = None) -> int:
    """``python -m tfrs_recsys.serving.feature_store --out DIR [--run-dir RUN | --dataset NAME] [options]``.

    Args:
      argv: The command line's arguments (default: ``sys.argv[1:]``).

    Returns:
      The exit code: 0, or 2 when the data cannot be read.
    """
    from tfrs_recsys.data.entities import read_entity_table
    from tfrs_recsys.data.registry import INTERACTION_DATASETS, load_interactions

    p = argparse.ArgumentParser(
        prog="python -m tfrs_recsys.serving.feature_store",
        description="Write the serving feature store (histories, hot items, features).")
    p.add_argument("--run-dir", default=None, help="a retrieval run: the data it trained on (not --dataset)")
    p.add_argument("--dataset", default="synthetic", help=f"one of {sorted(INTERACTION_DATASETS)}")
    p.add_argument("--data-dir", "--data", help="the dataset's folder or file (as train's --data)")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--half-life-days", type=float, default=HOT_LIST_HALF_LIFE_DAYS,
                   help="the hot list's hotness half-life, in days")
    p.add_argument("--feature-half-life-days", type=float, default=None,
                   help="the ranker's item_hotness half-life, in days (default: the click logs' 30)")
    p.add_argument("--item-features", help="Parquet/CSV with item ids and ranker item feature columns (the "
                                           "ranker's --items table)")
    p.add_argument("--user-features", help="Parquet/CSV with user ids and ranker user feature columns")
    p.add_argument("--column-types", default="", help="the ranker's --column-types (e.g. signup=timestamp), "
                                                       "for the --item-features / --user-features columns "
                                                       "and --dataset interactions' log")
    p.add_argument("--item-column", default="item_id",
                   help="the --item-features id column, and --dataset interactions' item column (item_id)")
    p.add_argument("--user-column", default="user_id",
                   help="the --user-features id column, and --dataset interactions' user column (user_id)")
    p.add_argument("--time-column", help="--dataset interactions' time column (needed; or --run-dir)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="as the ranker read its tables: a malformed row is skipped and counted, a bad value "
                        "of a column declared numeric is missing (the row kept)")
    args = p.parse_args(argv)

    types = [e for e in args.column_types.split(",") if e]
    columns = dict(user_column=args.user_column, item_column=args.item_column, time_column=args.time_column)

    def table(path, column, group):  # ids read as training reads them: text, "007" stays "007"
        return read_entity_table(path, column, group, skip_bad_rows=args.skip_bad_rows, reports=[],
                                 column_types=types)

    try:
        if log := args.dataset == "interactions" and not args.run_dir:
            if not args.time_column:  # the file's order would date the log 1970: live events outweigh it
                raise UserError("--dataset interactions needs --time-column: the hot list and the features "
                                "decay by the log's time", fix="name the log's time column")
        options = dict(half_life_days=args.half_life_days,
                       item_features=table(args.item_features, args.item_column, "item"),
                       user_features=table(args.user_features, args.user_column, "user"),
                       hotness_feature_half_life_days=args.feature_half_life_days)
        reading = dict(columns, column_types=types) if log else {}
        store = (FeatureStore.from_run(args.run_dir, **options) if args.run_dir else
                 FeatureStore.from_interactions(load_interactions(args.dataset, args.data_dir, **reading),
                                                **options))
        named = {f"{group}_column": column for group, column, table in (
            ("item", args.item_column, args.item_features), ("user", args.user_column, args.user_features))
            if table}  # a ranker's --items / --users id column is its --item-column / --user-column
        store.meta = dataclasses.replace(store.meta, **named, **(columns if log else {}))  # the log's too
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = store.save(args.out)
    print(f"wrote {out}: {store.num_users} user histories, {store.num_hot_items} hot items, "
          f"item features {store.item_feature_columns}, user features {store.user_feature_columns}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
