"""MovieLens loaders: 100K raw files, the CSV releases (latest-small, 25M, ...), 1M's ``::`` files, TFDS."""
from __future__ import annotations

import pandas as pd

from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.readers import join_path, path_exists, read_delimited

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_GET_100K = "unzip ml-100k.zip from grouplens.org/datasets/movielens/100k/ and pass its folder as --data-dir"


def load_movielens_100k(data_dir: str, *, skip_bad_rows: bool = False) -> InteractionData:
    """Read ``u.data`` (tab-separated), ``u.item`` (``|``, ISO-8859-1, 19 genre flags) and ``u.user``."""
    options = dict(skip_bad_rows=skip_bad_rows, quoting=False)
    ratings, rep_r = read_delimited(
        join_path(data_dir, "u.data"), sep="\t", columns=["user_id", "item_id", "rating", "timestamp"],
        column_types={"rating": "float", "timestamp": "int"}, what="MovieLens 100K ratings (u.data)",
        fix_missing=_GET_100K, **options)
    item_cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES]
    items, rep_i = read_delimited(
        join_path(data_dir, "u.item"), sep="|", columns=item_cols, encoding="latin-1",
        column_types={g: "int" for g in ML100K_GENRES}, what="MovieLens 100K items (u.item)",
        fix_missing=_GET_100K, **options)
    flags = items[list(ML100K_GENRES)].to_numpy()
    items = pd.DataFrame({
        "item_id": items["item_id"].astype(str),
        "title": items["title"],
        "genres": [[g for g, f in zip(ML100K_GENRES, row) if f == 1] for row in flags],
        "release_date": items["release_date"],
    })
    users, rep_u = _optional(join_path(data_dir, "u.user"), sep="|",
                             columns=["user_id", "age", "gender", "occupation", "zip_code"],
                             column_types={"age": "int"}, what="MovieLens 100K users (u.user)", **options)
    return InteractionData(_interactions(ratings), items, users, name="movielens-100k",
                           skipped=[rep_r, rep_i, *rep_u])


def load_movielens_csv(data_dir: str, *, skip_bad_rows: bool = False) -> InteractionData:
    """Read a CSV release: ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv`` (``|``
    genres)."""
    fix = "pass the folder holding ratings.csv and movies.csv (e.g. unzipped ml-latest-small.zip)"
    ratings, rep_r = read_delimited(
        join_path(data_dir, "ratings.csv"), sep=",", header=True,
        columns=["userId", "movieId", "rating", "timestamp"],
        column_types={"rating": "float", "timestamp": "int"}, skip_bad_rows=skip_bad_rows,
        what="MovieLens ratings.csv", fix_missing=fix)
    movies, rep_m = read_delimited(
        join_path(data_dir, "movies.csv"), sep=",", header=True, columns=["movieId", "title", "genres"],
        skip_bad_rows=skip_bad_rows, what="MovieLens movies.csv", fix_missing=fix)
    return InteractionData(_interactions(ratings, "userId", "movieId"), _items(movies, "movieId"), None,
                           name="movielens-csv", skipped=[rep_r, rep_m])


def load_movielens_1m(data_dir: str, *, skip_bad_rows: bool = False) -> InteractionData:
    """Read ML-1M's ``ratings.dat``, ``movies.dat`` and ``users.dat`` (``::``-separated, ISO-8859-1)."""
    fix = "unzip ml-1m.zip from grouplens.org/datasets/movielens/1m/ and pass its folder as --data-dir"
    options = dict(sep="::", quoting=False, encoding="latin-1", skip_bad_rows=skip_bad_rows)
    ratings, rep_r = read_delimited(
        join_path(data_dir, "ratings.dat"), columns=["user_id", "item_id", "rating", "timestamp"],
        column_types={"rating": "float", "timestamp": "int"}, what="MovieLens 1M ratings (ratings.dat)",
        fix_missing=fix, **options)
    movies, rep_m = read_delimited(join_path(data_dir, "movies.dat"), columns=["item_id", "title", "genres"],
                                   what="MovieLens 1M movies (movies.dat)", fix_missing=fix, **options)
    users, rep_u = _optional(join_path(data_dir, "users.dat"),
                             columns=["user_id", "gender", "age", "occupation", "zip_code"],
                             what="MovieLens 1M users (users.dat)", **options)
    return InteractionData(_interactions(ratings), _items(movies, "item_id"), users, name="movielens-1m",
                           skipped=[rep_r, rep_m, *rep_u])


def _optional(path: str, **options) -> tuple[pd.DataFrame | None, list]:
    """An optional file (``u.user``, ``users.dat``) and its skip report, or (None, [])."""
    if not path_exists(path):
        return None, []
    frame, report = read_delimited(path, **options)
    return frame, [report]


def _interactions(ratings: pd.DataFrame, user: str = "user_id", item: str = "item_id") -> pd.DataFrame:
    return pd.DataFrame({"user_id": ratings[user].astype(str), "item_id": ratings[item].astype(str),
                         "rating": ratings["rating"], "timestamp": ratings["timestamp"]})


def _items(movies: pd.DataFrame, item: str) -> pd.DataFrame:
    genres = [[] if g == "(no genres listed)" else [x for x in g.split("|") if x] for g in movies["genres"]]
    return pd.DataFrame({"item_id": movies[item].astype(str), "title": movies["title"], "genres": genres})


def load_tfds_movielens(name: str = "movielens/100k-ratings", *, data_dir: str | None = None,
                        download: bool = False) -> InteractionData:
    """Load ``movielens/*-ratings`` through TensorFlow Datasets.

    TFDS downloads from grouplens.org; with ``download=False`` (the default) only an
    already-prepared copy under ``data_dir`` is read, so an offline machine gets a clear
    error instead of a hang.
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
    interactions = pd.DataFrame({
        "user_id": frame["user_id"].map(_text), "item_id": frame["movie_id"].map(_text),
        "rating": frame["user_rating"].astype(float), "timestamp": frame["timestamp"].astype("int64"),
    })
    items = (pd.DataFrame({"item_id": interactions["item_id"], "title": frame["movie_title"].map(_text),
                           "genres": [[] for _ in range(len(frame))]})
             .drop_duplicates("item_id").reset_index(drop=True))
    return InteractionData(interactions, items, None, name=name)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
