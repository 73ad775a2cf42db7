"""MovieLens loaders: 100K raw files, the CSV releases (latest-small, 25M, ...), 1M's ``::`` files, TFDS."""
from __future__ import annotations

import pandas as pd

from tfrs_recsys import paths
from tfrs_recsys.data import readers
from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.errors import DataError, SkipReport
from tfrs_recsys.data.interactions import load_interaction_log
from tfrs_recsys.data.readers import read_delimited
from tfrs_recsys.data.schema import is_listlike

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_RATINGS = ["user_id", "item_id", "rating", "timestamp"]
_RATING_TYPES = {"rating": "float", "timestamp": "int"}
_GET_100K = "unzip ml-100k.zip from grouplens.org/datasets/movielens/100k/ and pass its folder as --data-dir"


def load_movielens_100k(data_dir: str, *, skip_bad_rows: bool = False) -> InteractionData:
    """Read ``u.data`` (tab-separated), ``u.item`` (``|``, ISO-8859-1, 19 genre flags) and ``u.user``.

    Args:
      data_dir: The unzipped ml-100k folder.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.

    Returns:
      Ratings, items with their genres as lists, and users.
    """
    reports: list[SkipReport] = []
    options = dict(skip_bad_rows=skip_bad_rows, quoting=False, fix_missing=_GET_100K)
    ratings = _read(data_dir, "u.data", reports, sep="\t", columns=_RATINGS, column_types=_RATING_TYPES,
                    what="MovieLens 100K ratings (u.data)", **options)
    item_columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES]
    items = _read(data_dir, "u.item", reports, sep="|", encoding="latin-1", columns=item_columns,
                  column_types=dict.fromkeys(ML100K_GENRES, "int"), what="MovieLens 100K items (u.item)",
                  **options)
    flags = items[list(ML100K_GENRES)].to_numpy()
    items = pd.DataFrame({"item_id": items["item_id"].astype(str), "title": items["title"],
                          "genres": [[g for g, f in zip(ML100K_GENRES, row) if f == 1] for row in flags],
                          "release_date": items["release_date"]})
    users = _read(data_dir, "u.user", reports, optional=True, sep="|",
                  columns=["user_id", "age", "gender", "occupation", "zip_code"], column_types={"age": "int"},
                  what="MovieLens 100K users (u.user)", **options)
    return InteractionData(_interactions(ratings), items, users, name="movielens-100k", skipped=reports)


def load_movielens_csv(data_dir: str, *, skip_bad_rows: bool = False) -> InteractionData:
    """A CSV release, read as the ``interactions`` dataset with MovieLens' column names: ``ratings.csv``
    (userId,movieId,rating,timestamp) and ``movies.csv`` (``|``-joined genres, split into lists).

    Args:
      data_dir: The unzipped folder (ml-latest-small, ml-25m, ...).
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.

    Returns:
      Ratings and items with their genres as lists; no users.
    """
    fix = "pass the folder holding ratings.csv and movies.csv (e.g. unzipped ml-latest-small.zip)"
    ratings, movies = (readers.require_file(paths.join(data_dir, name), f"MovieLens {name}", fix)
                       for name in ("ratings.csv", "movies.csv"))
    data = load_interaction_log(ratings, user_column="userId", item_column="movieId", time_column="timestamp",
                                rating_column="rating", items=movies, skip_bad_rows=skip_bad_rows)
    return InteractionData(data.interactions, _items(data.items, "item_id"), None, name="movielens-csv",
                           skipped=data.skipped)


def load_movielens_1m(data_dir: str, *, skip_bad_rows: bool = False) -> InteractionData:
    """Read ML-1M's ``ratings.dat``, ``movies.dat`` and ``users.dat`` (``::``-separated, ISO-8859-1).

    Args:
      data_dir: The unzipped ml-1m folder.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.

    Returns:
      Ratings, items with their genres as lists, and users.
    """
    reports: list[SkipReport] = []
    fix = "unzip ml-1m.zip from grouplens.org/datasets/movielens/1m/ and pass its folder as --data-dir"
    options = dict(sep="::", quoting=False, encoding="latin-1", skip_bad_rows=skip_bad_rows, fix_missing=fix)
    ratings = _read(data_dir, "ratings.dat", reports, columns=_RATINGS, column_types=_RATING_TYPES,
                    what="MovieLens 1M ratings (ratings.dat)", **options)
    movies = _read(data_dir, "movies.dat", reports, columns=["item_id", "title", "genres"],
                   what="MovieLens 1M movies (movies.dat)", **options)
    users = _read(data_dir, "users.dat", reports, optional=True,
                  columns=["user_id", "gender", "age", "occupation", "zip_code"],
                  what="MovieLens 1M users (users.dat)", **options)
    return InteractionData(_interactions(ratings), _items(movies, "item_id"), users, name="movielens-1m",
                           skipped=reports)


def _read(data_dir: str, name: str, reports: list[SkipReport], *, optional: bool = False,
          **options) -> pd.DataFrame | None:
    """``data_dir/name`` through :func:`read_delimited`, its report added to ``reports``; ``None`` for a
    missing ``optional`` file (``u.user``, ``users.dat``)."""
    path = paths.join(data_dir, name)
    if optional and not paths.exists(path):
        return None
    frame, report = read_delimited(path, **options)
    reports.append(report)
    return frame


def _interactions(ratings: pd.DataFrame, user: str = "user_id", item: str = "item_id") -> pd.DataFrame:
    return pd.DataFrame({"user_id": ratings[user].astype(str), "item_id": ratings[item].astype(str),
                         "rating": ratings["rating"], "timestamp": ratings["timestamp"]})


def _items(movies: pd.DataFrame, item: str) -> pd.DataFrame:
    """``|``-joined genres (or genres a loader split already) as lists; "(no genres listed)": none."""
    genres = [[x for x in (list(g) if is_listlike(g) else g.split("|") if isinstance(g, str) else [])
               if x and x != "(no genres listed)"] for g in movies["genres"]]
    return pd.DataFrame({"item_id": movies[item].astype(str), "title": movies["title"], "genres": genres})


def load_tfds_movielens(name: str = "movielens/100k-ratings", *, data_dir: str | None = None,
                        download: bool = False) -> InteractionData:
    """Load ``movielens/*-ratings`` through TensorFlow Datasets.

    TFDS downloads from grouplens.org; with ``download=False`` (the default) only an
    already-prepared copy under ``data_dir`` is read, so an offline machine gets a clear
    error instead of a hang.

    Args:
      name: The TFDS dataset.
      data_dir: TFDS's data folder (its default when ``None``).
      download: Let TFDS download and prepare the dataset.

    Returns:
      Ratings and items (titles, no genres); no users.
    """
    import tensorflow_datasets as tfds

    offline_fix = ("on an online machine rerun with download enabled (--tfds-download); offline, read the "
                   "same raw files locally: --dataset movielens-100k --data-dir <folder with u.data>, or "
                   "--dataset movielens-csv for ratings.csv releases")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:
        raise DataError(f"TFDS has no dataset '{name}' ({exc})",
                        fix="use e.g. movielens/100k-ratings") from None
    if not download and not builder.is_prepared():
        raise DataError(f"TFDS dataset '{name}' is not prepared in {builder.data_dir}", fix=offline_fix)
    try:
        if download:
            builder.download_and_prepare()
        ds = builder.as_dataset(split="train")
    except Exception as exc:
        raise DataError(f"TFDS could not prepare '{name}' ({type(exc).__name__}: {exc})",
                        fix=offline_fix) from None
    frame = tfds.as_dataframe(ds)
    text = {col: frame[col].str.decode("utf-8") for col in ("user_id", "movie_id", "movie_title")}
    interactions = pd.DataFrame({"user_id": text["user_id"], "item_id": text["movie_id"],
                                 "rating": frame["user_rating"].astype(float),
                                 "timestamp": frame["timestamp"].astype("int64")})
    items = pd.DataFrame({"item_id": text["movie_id"], "title": text["movie_title"],
                          "genres": [[] for _ in range(len(frame))]})
    items = items.drop_duplicates("item_id").reset_index(drop=True)
    return InteractionData(interactions, items, None, name=name)
