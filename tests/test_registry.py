"""--dataset names resolve to the right loaders; mistakes get an error that says what to pass."""
import pytest
from conftest import dataset_path

from tfrs_recsys.config_sources import build_config
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.registry import load_interactions, load_labeled, options_from


def test_real_files_by_name(datasets_dir):
    ml = load_interactions("movielens-100k", str(dataset_path(datasets_dir, "ml-100k")))
    assert (len(ml.interactions), ml.num_users, ml.num_items) == (100_000, 943, 1_682)
    small = load_interactions("movielens-csv", str(dataset_path(datasets_dir, "ml-latest-small")))
    assert len(small.interactions) == 100_836
    ali = load_labeled("esmm", "aliexpress", str(dataset_path(datasets_dir, "aliexpress",
                                                              "fuxictr_tiny_mtl_train.csv")))
    assert ali.labels == ["click", "conversion"] and ali.session_column == "search_id"
    criteo = load_labeled("deepfm", "criteo",
                          str(dataset_path(datasets_dir, "criteo", "dac_train_head1000.txt")))
    assert criteo.frame.shape == (1000, 40)
    clicks = load_labeled("deepfm", "movielens-100k", str(dataset_path(datasets_dir, "ml-100k")))
    assert int(clicks.frame["label"].sum()) == 100_000 and "item_hotness" in clicks.frame


def test_synthetic_defaults_per_task():
    assert load_labeled("esmm", synthetic_sessions=20, session_size=5).labels == ["click", "conversion"]
    assert load_labeled("deepfm", synthetic_rows=500).labels == ["label"]
    implicit = load_labeled("deepfm", "synthetic-histories", synthetic_users=30, synthetic_items=80)
    assert set(implicit.frame["label"].unique()) == {0, 1}


def test_errors_say_what_to_pass(tmp_path):
    with pytest.raises(DataError, match=r"no --data \(--data-dir\) was given"):
        load_interactions("movielens-100k")
    with pytest.raises(DataError, match="does not exist"):
        load_interactions("movielens-100k", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="u.data.*not found|not found.*u.data|u\\.data"):
        load_interactions("movielens-100k", str(tmp_path))
    with pytest.raises(DataError, match="unknown retrieval dataset 'movielens-2k'.*movielens-100k"):
        load_interactions("movielens-2k")
    with pytest.raises(DataError, match="--label-columns"):
        (tmp_path / "t.csv").write_text("a,b\n1,2\n")
        load_labeled("deepfm", "csv", str(tmp_path / "t.csv"))


def test_tfds_offline_says_how_to_use_local_files(tmp_path):
    with pytest.raises(DataError, match="not prepared.*--data-dir"):
        load_interactions("tfds:movielens/100k-ratings", str(tmp_path))


def test_a_run_config_passes_its_data_fields_by_name():
    cfg = build_config("deepfm", {"dataset": "synthetic-histories", "synthetic_users": 30,
                                  "synthetic_items": 80, "seed": 5}, environ={})
    options = options_from(cfg, load_labeled)
    assert options["dataset"] == "synthetic-histories" and options["seed"] == 5 and "task" not in options
    assert "synthetic_sessions" not in options  # an ESMM field, absent from the DeepFM config
    data = load_labeled("deepfm", **options)
    again = load_labeled("deepfm", "synthetic-histories", synthetic_users=30, synthetic_items=80, seed=5)
    assert data.frame.equals(again.frame)
