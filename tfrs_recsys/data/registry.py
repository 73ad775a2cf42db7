"""Dataset names a user passes as ``--dataset``, resolved to loaders.

Retrieval reads interactions; the rankers read labeled impressions. ``synthetic``
(the default) needs no files; every other name reads the user's files from
``--data-dir`` (a folder, or a file for single-file formats).
"""
from __future__ import annotations

from tfrs_recsys import paths
from tfrs_recsys.config import TrainConfig
from tfrs_recsys.data.bundles import InteractionData, LabeledData
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.readers import join_path, path_exists

INTERACTION_DATASETS = {
    "synthetic": "synthetic user histories with drifting tastes (no files needed)",
    "synthetic-histories": "alias of synthetic for retrieval; for deepfm, those histories as implicit clicks",
    "synthetic-ratings": "synthetic 1-5 ratings of users (age, gender, occupation) and items (genre, price bucket) "
                         "from latent tastes (no files needed): the two-tower lab's data for --loss bpr|triplet",
    "movielens-100k": "folder with u.data, u.item (and u.user)",
    "movielens-csv": "folder with ratings.csv and movies.csv (ml-latest-small, ml-25m, ...)",
    "movielens-latest-small": "alias of movielens-csv",
    "movielens-1m": "folder with ratings.dat, movies.dat (and users.dat)",
    "tfds:<name>": "TensorFlow Datasets, e.g. tfds:movielens/100k-ratings (needs --tfds-download online)",
}
LABELED_DATASETS = {
    "synthetic": "esmm: search sessions with click+conversion; deepfm: CTR logs with hotness",
    "aliexpress": "AliExpress CSV (search_id, categorical_*, numerical_*, click, conversion): file or folder with train.csv",
    "ali-ccp": "Ali-CCP sample: torch-rechub CSV or PaddleRec lines",
    "criteo": "Criteo train.txt (40 tab-separated fields) or CSV with the Criteo header",
    "movielens-100k": "deepfm: MovieLens 100K as implicit clicks with sampled negatives and item hotness",
    "movielens-csv, movielens-1m, synthetic-histories": "deepfm: those interactions as implicit clicks, likewise",
    "expedia": "esmm: Kaggle 'Personalize Expedia Hotel Searches' (ICDM 2013): the folder of `make benchmark-setup` "
               "(train.parquet, default runs/expedia) or the folder holding train.csv",
    "csv": "any CSV/TSV with a header; --label-columns names the labels",
    "parquet": "any Parquet file; --label-columns names the labels",
}


IMPLICIT_CLICK_SOURCES = ("movielens-100k", "movielens-csv", "movielens-latest-small", "movielens-1m",
                          "synthetic-histories")


def _need_dir(cfg: TrainConfig, what: str) -> str:
    if not cfg.data_dir:
        raise DataError(f"--dataset {cfg.dataset} reads your files, but no --data-dir was given",
                        fix=f"pass --data-dir pointing at {what} (or RECSYS_DATA_DIR)")
    if not path_exists(cfg.data_dir):
        raise DataError(f"--data-dir {cfg.data_dir} does not exist", path=cfg.data_dir, fix=f"point it at {what}")
    return cfg.data_dir


def load_interactions(cfg: TrainConfig) -> InteractionData:
    """Interactions for retrieval, by ``cfg.dataset``."""
    name = cfg.dataset
    if name in ("synthetic", "synthetic-histories"):
        from tfrs_recsys.data.synthetic import synthetic_histories

        return synthetic_histories(cfg.synthetic_users, cfg.synthetic_items, seed=cfg.seed)
    if name == "synthetic-ratings":
        from tfrs_recsys.data.synthetic import synthetic_ratings

        return synthetic_ratings(cfg.synthetic_users, cfg.synthetic_items, seed=cfg.seed,
                                 min_ratings=min(20, cfg.synthetic_items), max_ratings=min(60, cfg.synthetic_items))
    if name == "movielens-100k":
        from tfrs_recsys.data.movielens import load_movielens_100k

        return load_movielens_100k(_need_dir(cfg, INTERACTION_DATASETS[name]), skip_bad_rows=cfg.skip_bad_rows)
    if name in ("movielens-csv", "movielens-latest-small"):
        from tfrs_recsys.data.movielens import load_movielens_csv

        return load_movielens_csv(_need_dir(cfg, INTERACTION_DATASETS["movielens-csv"]),
                                  skip_bad_rows=cfg.skip_bad_rows)
    if name == "movielens-1m":
        from tfrs_recsys.data.movielens import load_movielens_1m

        return load_movielens_1m(_need_dir(cfg, INTERACTION_DATASETS[name]), skip_bad_rows=cfg.skip_bad_rows)
    if name.startswith("tfds:") or name.startswith("movielens/"):
        from tfrs_recsys.data.movielens import load_tfds_movielens

        return load_tfds_movielens(name.removeprefix("tfds:"), data_dir=cfg.data_dir, download=cfg.tfds_download)
    raise DataError(f"unknown retrieval dataset '{name}'",
                    fix="choose one of: " + "; ".join(f"{k} ({v})" for k, v in INTERACTION_DATASETS.items()))


def _file_in(path: str, names: tuple[str, ...]) -> str:
    """``path`` itself when it is a file, else the first of ``names`` inside it."""
    if paths.isdir(path):
        for n in names:
            candidate = join_path(path, n)
            if path_exists(candidate):
                return candidate
        raise DataError(f"none of {list(names)} found in the folder", path=path, fix="pass the data file itself")
    return path


def load_labeled(cfg: TrainConfig, task: str) -> LabeledData:
    """Labeled impressions for a ranker (``task`` is ``esmm`` or ``deepfm``), by ``cfg.dataset``."""
    name = cfg.dataset
    if task not in ("esmm", "deepfm"):
        raise ValueError(f"task must be 'esmm' or 'deepfm', got {task!r}")
    if name == "synthetic":
        from tfrs_recsys.data import synthetic

        if task == "esmm":
            return synthetic.synthetic_sessions(cfg.synthetic_sessions, cfg.session_size, seed=cfg.seed)
        return synthetic.synthetic_ctr_logs(cfg.synthetic_rows, seed=cfg.seed)
    if name == "aliexpress":
        from tfrs_recsys.data.clicklogs import load_aliexpress

        path = _file_in(_need_dir(cfg, LABELED_DATASETS[name]), ("train.csv",))
        return load_aliexpress(path, skip_bad_rows=cfg.skip_bad_rows)
    if name == "ali-ccp":
        from tfrs_recsys.data.clicklogs import load_ali_ccp

        return load_ali_ccp(_need_dir(cfg, LABELED_DATASETS[name]), skip_bad_rows=cfg.skip_bad_rows)
    if name == "criteo":
        from tfrs_recsys.data.tabular import load_criteo

        path = _file_in(_need_dir(cfg, LABELED_DATASETS[name]), ("train.txt",))
        return load_criteo(path, skip_bad_rows=cfg.skip_bad_rows)
    if task == "deepfm" and name in IMPLICIT_CLICK_SOURCES:
        from tfrs_recsys.data.ctr_features import movielens_click_logs

        # Every interaction is a click; unseen items at the same time are the negatives.
        return movielens_click_logs(load_interactions(cfg), seed=cfg.seed)
    if name == "expedia":
        if task != "esmm":
            raise DataError("--dataset expedia holds clicks and bookings for the ESMM ranker",
                            fix="train esmm on it: python -m tfrs_recsys.train esmm --dataset expedia --data-dir ...")
        from tfrs_recsys.data.expedia import load_expedia

        return load_expedia(_need_dir(cfg, LABELED_DATASETS[name]), skip_bad_rows=cfg.skip_bad_rows)
    if name in ("csv", "parquet"):
        from tfrs_recsys.data.tabular import load_table

        if not cfg.label_columns:
            raise DataError(f"--dataset {name} needs the label columns",
                            fix="pass --label-columns click,conversion (esmm) or --label-columns label (deepfm)")
        return load_table(_need_dir(cfg, f"a {name} file"), labels=list(cfg.label_columns),
                          skip_bad_rows=cfg.skip_bad_rows, session_column=cfg.session_column,
                          user_column=cfg.user_column, item_column=cfg.item_column)
    raise DataError(f"unknown {task} dataset '{name}'",
                    fix="choose one of: " + "; ".join(f"{k} ({v})" for k, v in LABELED_DATASETS.items()))
