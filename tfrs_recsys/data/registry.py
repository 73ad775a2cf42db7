"""Dataset names a user passes as ``--dataset``, resolved to loaders.

Retrieval reads interactions; the rankers read labeled impressions. ``synthetic``
(the default) needs no files; every other name reads the user's files from
``--data-dir`` (a folder, or a file for single-file formats). Each loader's parameters are named as
the fields of a run config, so that :func:`options_from` passes a config's values.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import pandas as pd

from tfrs_recsys import paths
from tfrs_recsys.data import movielens, synthetic
from tfrs_recsys.data.bundles import FREE_TEXT_COLUMNS, InteractionData, LabeledData
from tfrs_recsys.data.clicklogs import load_ali_ccp, load_aliexpress
from tfrs_recsys.data.entities import entity_joins
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.expedia import load_expedia
from tfrs_recsys.data.headers import missing_column
from tfrs_recsys.data.interactions import load_interaction_log
from tfrs_recsys.data.label_leaks import norm_name
from tfrs_recsys.data.synthetic_interactions import synthetic_histories, synthetic_ratings
from tfrs_recsys.data.table_heads import table_head
from tfrs_recsys.data.tabular import (
    load_criteo,
    load_table,
    say_duplicates,
    table_files,
    text_separator,
)
from tfrs_recsys.data.text_values import TIME_NAME

INTERACTION_DATASETS = {
    "synthetic": "synthetic user histories with drifting tastes (no files needed)",
    "synthetic-histories": "alias of synthetic for retrieval; for deepfm, those histories as implicit clicks",
    "synthetic-ratings": "synthetic 1-5 ratings of users (age, gender, occupation) and items (genre, price "
                         "bucket) from latent tastes (no files needed): the two-tower lab's data for "
                         "--loss bpr|triplet",
    "movielens-100k": "folder with u.data, u.item (and u.user)",
    "movielens-csv": "folder with ratings.csv and movies.csv (ml-latest-small, ml-25m, ...)",
    "movielens-latest-small": "alias of movielens-csv",
    "movielens-1m": "folder with ratings.dat, movies.dat (and users.dat)",
    "tfds:<name>": "TensorFlow Datasets, e.g. tfds:movielens/100k-ratings (needs --tfds-download online)",
    "interactions": "your interaction log: --data FILE, GLOB or FOLDER of CSV, TSV, JSON Lines or Parquet, "
                    "with --user-column and --item-column (optional: --time-column, --rating-column and "
                    "--min-rating, --items and --users tables joined by those ids)"}
LABELED_DATASETS = {
    "synthetic": "esmm: search sessions with click+conversion; deepfm: CTR logs with hotness",
    "aliexpress": "AliExpress CSV (search_id, categorical_*, numerical_*, click, conversion): file or folder "
                  "with train.csv",
    "ali-ccp": "Ali-CCP sample: torch-rechub CSV or PaddleRec lines",
    "criteo": "Criteo train.txt (40 tab-separated fields) or CSV with the Criteo header",
    "movielens-100k": "deepfm: MovieLens 100K as implicit clicks with sampled negatives and item hotness",
    "movielens-csv": "deepfm: ratings.csv and movies.csv as implicit clicks, likewise",
    "movielens-1m": "deepfm: ratings.dat and movies.dat as implicit clicks, likewise",
    "synthetic-histories": "deepfm: the synthetic histories as implicit clicks, likewise",
    "interactions": "deepfm: your interaction log (options as for retrieval) as implicit clicks, likewise",
    "expedia": "esmm: Kaggle 'Personalize Expedia Hotel Searches' (ICDM 2013): the folder of `make "
               "benchmark-setup` (train.parquet, default runs/expedia) or the folder holding train.csv",
    "csv": "your table: --data FILE, GLOB or FOLDER of CSV or TSV with a header, or JSON Lines; "
           "--label-columns names the labels (--user-column, --item-column, --session-column, --column-types "
           "optional)",
    "parquet": "the same for Parquet files"}
IMPLICIT_CLICK_SOURCES = ("movielens-100k", "movielens-csv", "movielens-latest-small", "movielens-1m",
                          "synthetic-histories", "interactions")
_MOVIELENS = {"movielens-100k": movielens.load_movielens_100k, "movielens-1m": movielens.load_movielens_1m,
              "movielens-csv": movielens.load_movielens_csv,
              "movielens-latest-small": movielens.load_movielens_csv}
# Labeled datasets read from files: the loader, and the file it reads in a --data-dir folder (if one).
_LABELED_FILES = {"aliexpress": (load_aliexpress, "train.csv"), "ali-ccp": (load_ali_ccp, None),
                  "criteo": (load_criteo, "train.txt"), "expedia": (load_expedia, None)}


def options_from(config: Any, loader: Callable) -> dict[str, Any]:
    """``loader``'s arguments from the attributes of ``config`` named as its parameters.

    Args:
      config: A run config (:mod:`tfrs_recsys.config`), or any object with such attributes.
      loader: :func:`load_interactions` or :func:`load_labeled`.

    Returns:
      Keyword arguments, e.g. ``load_interactions(**options_from(cfg, load_interactions))``.
    """
    return {n: getattr(config, n) for n in inspect.signature(loader).parameters if hasattr(config, n)}


def _timed(values: pd.Series) -> bool:
    """Whether a column is named like a time and its first values read as times (dates, or epoch seconds):
    ``candidate`` or ``update_count`` hold a time word but no time."""
    if not TIME_NAME.search(norm_name(values.name)):
        return False
    head = values.dropna().head(100)
    if pd.api.types.is_numeric_dtype(head):
        return not head.empty and bool((head.abs() >= 1e8).all())
    text = head.astype(str).str.strip()
    text = text[text != ""]
    return not text.empty and bool(text.str.contains(r"\d[-/.:]\d").all())


def _need_dir(dataset: str, data_dir: str | None) -> str:
    """``data_dir``, checked to be given and to exist; ``dataset``'s description says what to pass."""
    what = {**LABELED_DATASETS, **INTERACTION_DATASETS,
            "movielens-latest-small": INTERACTION_DATASETS["movielens-csv"]}[dataset]
    if not data_dir:
        raise DataError(f"--dataset {dataset} reads your files, but no --data (--data-dir) was given",
                        fix=f"pass --data pointing at {what} (or RECSYS_DATA_DIR)")
    if not any(c in str(data_dir) for c in "*?[") and not paths.exists(data_dir):  # globs: checked on read
        raise DataError(f"--data {data_dir} does not exist", path=data_dir, fix=f"point it at {what}")
    return data_dir


def load_interactions(dataset: str = "synthetic", data_dir: str | None = None, *, seed: int = 42,
                      skip_bad_rows: bool = False, synthetic_users: int = 2000, synthetic_items: int = 500,
                      tfds_download: bool = False, user_column: str | None = None,
                      item_column: str | None = None, time_column: str | None = None,
                      rating_column: str | None = None, min_rating: float | None = None,
                      items: str | None = None, users: str | None = None,
                      column_types: Sequence[str] = (), rating_values: Sequence[str] = (),
                      exclude_columns: Sequence[str] = ()) -> InteractionData:
    """Interactions for retrieval.

    Args:
      dataset: A name of :data:`INTERACTION_DATASETS`.
      data_dir: The folder (or file) of a dataset read from files.
      seed: The seed of synthetic data.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.
      synthetic_users: Users of synthetic data.
      synthetic_items: Items of synthetic data.
      tfds_download: Let TensorFlow Datasets download (``tfds:`` names).
      user_column, item_column, time_column, rating_column, min_rating, items, users, column_types,
        rating_values, exclude_columns: The options of ``interactions``
        (:func:`~tfrs_recsys.data.interactions.load_interaction_log`).

    Returns:
      The interactions, with item and user tables where the data has them.
    """
    if dataset == "interactions":
        missing = [flag for flag, value in (("--user-column", user_column), ("--item-column", item_column))
                   if not value]
        if missing:
            raise DataError(f"--dataset interactions needs {' and '.join(missing)}",
                            fix="name the log's user and item id columns, e.g. --user-column user_id "
                                "--item-column item_id")
        return load_interaction_log(
            _need_dir(dataset, data_dir), user_column=user_column, item_column=item_column,
            time_column=time_column, rating_column=rating_column, min_rating=min_rating, items=items,
            users=users, column_types=column_types, skip_bad_rows=skip_bad_rows, rating_values=rating_values,
            exclude_columns=exclude_columns)
    if dataset in ("synthetic", "synthetic-histories"):
        return synthetic_histories(synthetic_users, synthetic_items, seed=seed)
    if dataset == "synthetic-ratings":
        return synthetic_ratings(synthetic_users, synthetic_items, seed=seed,
                                 min_ratings=min(20, synthetic_items), max_ratings=min(60, synthetic_items))
    if dataset in _MOVIELENS:
        return _MOVIELENS[dataset](_need_dir(dataset, data_dir), skip_bad_rows=skip_bad_rows)
    if dataset.startswith(("tfds:", "movielens/")):
        return movielens.load_tfds_movielens(dataset.removeprefix("tfds:"), data_dir=data_dir,
                                             download=tfds_download)
    raise DataError(f"unknown retrieval dataset '{dataset}'",
                    fix="choose one of: " + "; ".join(f"{k} ({v})" for k, v in INTERACTION_DATASETS.items()))


def load_labeled(task: str, dataset: str = "synthetic", data_dir: str | None = None, *, seed: int = 42,
                 skip_bad_rows: bool = False, label_columns: Sequence[str] = (),
                 session_column: str | None = None, user_column: str | None = None,
                 item_column: str | None = None, synthetic_sessions: int = 5000, session_size: int = 20,
                 synthetic_rows: int = 50_000, synthetic_users: int = 2000, synthetic_items: int = 500,
                 tfds_download: bool = False, column_types: Sequence[str] = (),
                 time_column: str | None = None, rating_column: str | None = None,
                 min_rating: float | None = None, rating_values: Sequence[str] = (), items: str | None = None,
                 users: str | None = None, exclude_columns: Sequence[str] = ()) -> LabeledData:
    """Labeled impressions for a ranker.

    Args:
      task: ``esmm`` or ``deepfm``.
      dataset: A name of :data:`LABELED_DATASETS` (for deepfm also one of :data:`IMPLICIT_CLICK_SOURCES`).
      data_dir: The folder (or file) of a dataset read from files.
      seed: The seed of synthetic data and sampled negatives.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.
      label_columns: The labels of ``csv`` / ``parquet`` data.
      session_column: The session column of ``csv`` / ``parquet`` data.
      user_column: The user column of ``csv`` / ``parquet`` data.
      item_column: The item column of ``csv`` / ``parquet`` data.
      synthetic_sessions: Sessions of synthetic ESMM data.
      session_size: Impressions per synthetic session.
      synthetic_rows: Rows of synthetic DeepFM data.
      synthetic_users: Users of the synthetic histories read as implicit clicks.
      synthetic_items: Items of the synthetic histories read as implicit clicks.
      tfds_download: Let TensorFlow Datasets download.
      column_types: ``COLUMN=numeric|categorical`` over the inferred kinds (csv, parquet, interactions).
      time_column, rating_column, min_rating, rating_values: The other :func:`load_interactions`
        options, for a log read as implicit clicks (``interactions``).
      items: An item table joined by ``item_column`` (``interactions``; ``csv`` and ``parquet``:
        :class:`~tfrs_recsys.data.entities.EntityJoin`).
      users: A user table joined by ``user_column``, likewise.
      exclude_columns: Columns left out of the features: a table's are not joined (so a column of the
        rows and of a table alike is no clash once left out).

    Returns:
      The impressions, their label columns and keys.
    """
    if task not in ("esmm", "deepfm"):
        raise ValueError(f"task must be 'esmm' or 'deepfm', got {task!r}")
    if dataset == "synthetic":
        if task == "esmm":
            return synthetic.synthetic_sessions(synthetic_sessions, session_size, seed=seed)
        return synthetic.synthetic_ctr_logs(synthetic_rows, seed=seed)
    if task == "deepfm" and dataset in IMPLICIT_CLICK_SOURCES:
        from tfrs_recsys.data.ctr_features import movielens_click_logs

        # Every interaction is a click; unseen items at the same time are the negatives.
        log = load_interactions(
            dataset, data_dir, seed=seed, skip_bad_rows=skip_bad_rows, synthetic_users=synthetic_users,
            synthetic_items=synthetic_items, tfds_download=tfds_download, user_column=user_column,
            item_column=item_column, column_types=column_types, time_column=time_column,
            rating_column=rating_column, min_rating=min_rating, rating_values=rating_values, items=items,
            users=users, exclude_columns=exclude_columns)
        # A log of your own brings its item table's columns; MovieLens its genres (titles are free text).
        item_columns = [c for c in log.items.columns if c not in ("item_id", *FREE_TEXT_COLUMNS)
                        ] if dataset == "interactions" else ["genres"]
        clicks = movielens_click_logs(log, seed=seed, item_columns=item_columns)
        if dataset == "interactions" and not time_column:  # row numbers, not times: no time features
            clicks.frame = clicks.frame.drop(columns=["hour", "weekday", "item_hotness", "timestamp"])
        clicks.table_columns.setdefault("left_out", []).extend(exclude_columns)  # left out by the loader
        return clicks
    if dataset == "expedia" and task != "esmm":
        raise DataError("--dataset expedia holds clicks and bookings for the ESMM ranker",
                        fix="train esmm on it: python -m tfrs_recsys.train esmm --dataset expedia --data-dir")
    if dataset in ("csv", "parquet"):
        if not label_columns:
            raise DataError(f"--dataset {dataset} needs the label columns", fix="pass --label-columns "
                            "click,conversion (esmm) or --label-columns label (deepfm)")
        reports: list = []
        if items or users:  # the data's columns first: a flag naming none of them is the data's error
            have, head = table_head(_need_dir(dataset, data_dir), "--data")
            for flag, column in (("--item-column", item_column), ("--user-column", user_column)):
                if column and column not in have:
                    first = table_files(data_dir, "--data")[0]
                    raise missing_column("--data", column, have, flag, path=data_dir, rows=head,
                                         sep=text_separator(first) if head else None)
        joins = entity_joins((), items=items, users=users, item_column=item_column, user_column=user_column,
                             skip_bad_rows=skip_bad_rows, column_types=column_types, reports=reports,
                             exclude=exclude_columns)
        joined = {c for join in joins for c in join.columns}  # --column-types about them: the tables'
        data = load_table(_need_dir(dataset, data_dir), labels=list(label_columns),
                          skip_bad_rows=skip_bad_rows, session_column=session_column, user_column=user_column,
                          item_column=item_column, exclude=exclude_columns,
                          column_types=[e for e in column_types if e.partition("=")[0] not in joined])
        declared_times = [e.partition("=")[0] for e in column_types if e.partition("=")[2] == "timestamp"]
        say_duplicates(data.frame, data_dir, [c for c in data.frame.columns if c == time_column
                                              or c in declared_times or _timed(data.frame[c])])
        for join in joins:
            data.frame = join.frame(data.frame)
            data.table_columns[join.group] = join.columns
            data.table_columns.setdefault("times", []).extend(join.times)
            data.table_columns.setdefault("left_out", []).extend(join.left_out)
        data.skipped += reports
        return data
    if dataset not in _LABELED_FILES:
        raise DataError(f"unknown {task} dataset '{dataset}'",
                        fix="choose one of: " + "; ".join(f"{k} ({v})" for k, v in LABELED_DATASETS.items()))
    loader, file_in_folder = _LABELED_FILES[dataset]
    path = _need_dir(dataset, data_dir)
    if file_in_folder and paths.isdir(path):
        path = str(paths.join(path, file_in_folder))
    return loader(path, skip_bad_rows=skip_bad_rows)
