"""tf.data pipelines: raw batch contents, seeded shuffling, epoch coverage, and errors."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tfrs_recsys.data import sequences as seq
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.pipelines import dataset_from_arrays, labeled_dataset
from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec, frame_to_raw
from tfrs_recsys.data.sequences import pad_left

N = 203  # not a multiple of the batch size: the last batch is partial


def _frame(n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    price = rng.normal(50, 10, n)
    price[[3, 17]] = np.nan
    return pd.DataFrame({
        "row": [f"r{i}" for i in range(n)],
        "item_id": rng.integers(1, 500, n),  # integers: sent as decimal strings
        "genres": [["Action", "Comedy"][: 1 + i % 2] if i % 5 else [] for i in range(n)],
        "tags": [f"t{i % 3};t{i % 4}" for i in range(n)],  # already joined with the column's separator
        "price": price,
        "timestamp": 1_700_000_000 + np.arange(n) * 60,
        "click": (np.arange(n) % 3 == 0).astype(int),
        "conversion": (np.arange(n) % 6 == 0).astype(int),
    })


def _spec() -> FeatureSpec:
    return FeatureSpec([
        FeatureColumn("row", "id", encoding="hash", num_buckets=1000),
        FeatureColumn("item_id", "id", group="item", encoding="hash", num_buckets=1000),
        FeatureColumn("genres", "multi_categorical", group="item", encoding="vocabulary",
                      vocabulary=["Action", "Comedy"]),
        FeatureColumn("tags", "multi_categorical", encoding="hash", num_buckets=10, separator=";"),
        FeatureColumn("price", "numeric", group="item", mean=50.0, std=10.0),
        FeatureColumn("timestamp", "timestamp"),
    ], labels=["click", "conversion"])


def _rows(dataset) -> list[str]:
    return [r.decode() for features, _ in dataset for r in features["row"].numpy()]


def test_batches_have_raw_keys_dtypes_and_shapes():
    frame = _frame()
    batches = list(labeled_dataset(frame, _spec(), batch_size=64, shuffle=False))
    assert [int(f["row"].shape[0]) for f, _ in batches] == [64, 64, 64, 11]
    features, labels = batches[0]
    assert set(features) == {"row", "item_id", "genres", "tags", "price", "timestamp"}
    assert set(labels) == {"click", "conversion"}
    for name in ("row", "item_id", "genres", "tags"):
        assert features[name].dtype == tf.string and features[name].shape == (64,)
    assert features["price"].dtype == tf.float32 and features["price"].shape == (64,)
    assert features["timestamp"].dtype == tf.float64 and features["timestamp"].shape == (64,)  # exact seconds
    assert all(v.dtype == tf.float32 and v.shape == (64,) for v in labels.values())
    # Values, in frame order without shuffling.
    assert features["item_id"].numpy()[0].decode() == str(frame["item_id"][0])
    assert [g.decode() for g in features["genres"].numpy()[:3]] == ["", "Action|Comedy", "Action"]
    assert features["tags"].numpy()[5].decode() == "t2;t1"
    np.testing.assert_array_equal(labels["click"].numpy(), frame["click"][:64].to_numpy(np.float32))
    np.testing.assert_array_equal(features["timestamp"].numpy(), frame["timestamp"][:64].to_numpy(np.float64))


def test_missing_numerics_stay_nan():
    features, _ = next(iter(labeled_dataset(_frame(), _spec(), batch_size=N, shuffle=False)))
    price = features["price"].numpy()
    assert np.isnan(price[[3, 17]]).all() and np.isfinite(np.delete(price, [3, 17])).all()
    np.testing.assert_allclose(price[0], np.float32(_frame()["price"][0]))


def test_drop_remainder():
    sizes = [int(l["click"].shape[0]) for _, l in labeled_dataset(_frame(), _spec(), batch_size=64,
                                                                   drop_remainder=True)]
    assert sizes == [64, 64, 64]


def test_every_row_once_per_epoch_and_reshuffled_each_epoch():
    ds = labeled_dataset(_frame(), _spec(), batch_size=32, seed=5)
    first, second = _rows(ds), _rows(ds)
    expected = sorted(f"r{i}" for i in range(N))
    assert sorted(first) == expected and sorted(second) == expected
    assert first != second
    assert first != [f"r{i}" for i in range(N)]  # actually shuffled


def test_shuffling_is_seeded():
    one = labeled_dataset(_frame(), _spec(), batch_size=32, seed=5)
    same = labeled_dataset(_frame(), _spec(), batch_size=32, seed=5)
    other = labeled_dataset(_frame(), _spec(), batch_size=32, seed=6)
    epochs_one = [_rows(one), _rows(one)]
    assert epochs_one == [_rows(same), _rows(same)]  # the same sequence of epochs
    assert epochs_one[0] != _rows(other)


def test_shuffle_is_not_a_local_buffer():
    """The permutation spans the whole data: early batches draw rows from the far end too."""
    frame = _frame(2_000)
    first_batch = [int(r[1:]) for r in _rows(labeled_dataset(frame, _spec(), batch_size=100, seed=1))[:100]]
    assert max(first_batch) > 1_500 and min(first_batch) < 500


def test_repeat_runs_whole_epochs_back_to_back():
    ds = labeled_dataset(_frame(), _spec(), batch_size=64, seed=2, repeat=True)
    rows = _rows(ds.take(8))  # two epochs of 4 batches each (the 4th partial)
    assert len(rows) == 2 * N
    assert sorted(rows[:N]) == sorted(rows[N:]) == sorted(f"r{i}" for i in range(N))
    assert rows[:N] != rows[N:]


def test_fixed_order_is_stable_with_and_without_cache():
    frame = _frame()
    for cache in (True, False):
        ds = labeled_dataset(frame, _spec(), batch_size=50, shuffle=False, cache=cache)
        assert _rows(ds) == _rows(ds) == list(frame["row"])


def test_raw_batches_feed_the_feature_preprocessor():
    preprocessing = pytest.importorskip("tfrs_recsys.features.preprocessing")
    spec = _spec()
    features, _ = next(iter(labeled_dataset(_frame(), spec, batch_size=16, shuffle=False)))
    encoded = preprocessing.FeaturePreprocessor(spec)(features)
    genres = encoded["genres"].numpy()
    assert genres.shape[0] == 16 and (genres[0] == 0).all() and list(genres[1]) == [1, 2]  # "" = no values


def test_frame_to_raw_conversions():
    frame = pd.DataFrame({
        "cat": pd.array([3, None, 7], dtype="Int64"), "ratio": [0.5, np.nan, 2.0],
        "when": pd.to_datetime(["1970-01-02", None, "2024-01-01"]), "tags": [["a", 1], None, "x|y"],
    })
    spec = FeatureSpec([
        FeatureColumn("cat", "categorical", encoding="hash", num_buckets=10),
        FeatureColumn("ratio", "numeric"), FeatureColumn("when", "timestamp"),
        FeatureColumn("tags", "multi_categorical", encoding="hash", num_buckets=10),
    ], labels=[])
    raw = frame_to_raw(frame, spec)
    assert list(raw["cat"]) == ["3", "", "7"]
    assert list(raw["tags"]) == ["a|1", "", "x|y"]
    assert raw["ratio"].dtype == np.float32 and np.isnan(raw["ratio"][1])
    assert raw["when"][0] == 86_400 and np.isnan(raw["when"][1])


def test_missing_columns_and_bad_labels_are_named():
    frame = _frame()
    with pytest.raises(DataError) as err:
        labeled_dataset(frame.drop(columns=["price"]), _spec(), batch_size=8)
    assert err.value.column == "price" and "remove the feature from the spec" in err.value.fix
    with pytest.raises(DataError) as err:
        labeled_dataset(frame.drop(columns=["conversion"]), _spec(), batch_size=8)
    assert err.value.column == "conversion"
    with pytest.raises(DataError) as err:
        labeled_dataset(frame.assign(click=frame["click"].where(frame.index != 9)), _spec(), batch_size=8)
    assert err.value.column == "click" and "row 9" in str(err.value)
    with pytest.raises(DataError) as err:
        labeled_dataset(frame.assign(price=["x"] * N), _spec(), batch_size=8)
    assert err.value.column == "price"
    with pytest.raises(DataError, match="batch_size"):
        labeled_dataset(frame, _spec(), batch_size=0)


def test_pad_left_keeps_the_most_recent_items():
    histories = [["a", "b", "c", "d"], ["x"], [], [1, 2], np.array(["p", "q"], dtype=object)]
    padded = pad_left(histories, 3)
    assert padded.tolist() == [["b", "c", "d"], ["", "", "x"], ["", "", ""], ["", "1", "2"], ["", "p", "q"]]
    with pytest.raises(DataError):
        pad_left(histories, 0)


def test_dataset_from_arrays_batches_matrices_and_checks_lengths():
    histories = pad_left([[str(i), str(i + 1)] for i in range(10)], 4)
    ds = dataset_from_arrays({"history": histories, "user": np.arange(10).astype(str).astype(object)},
                             batch_size=4, shuffle=False)
    batches = list(ds)
    assert [b["history"].shape for b in batches] == [(4, 4), (4, 4), (2, 4)]
    assert batches[2]["history"].numpy()[1].tolist() == [b"", b"", b"9", b"10"]
    with pytest.raises(DataError) as err:
        dataset_from_arrays({"a": np.zeros(3), "b": np.zeros(4)}, batch_size=2)
    assert err.value.column == "a" and "different lengths" in str(err.value)
    with pytest.raises(DataError, match="no full batch"):
        dataset_from_arrays({"a": np.zeros(3)}, batch_size=4, drop_remainder=True)


def test_training_inputs_leave_the_autotuner_off():
    """With tf.data's autotuner on, deleting an iterator (``Model.fit`` does as it returns) waits for the
    autotuner's sleep to end: seconds to a minute after the last step (bench/input_teardown.py)."""
    train = seq.Sequences(np.array(["u"], dtype=object), [np.array(list("abcdef"), dtype=object)])
    inputs = {"labeled": labeled_dataset(_frame(), _spec(), batch_size=32),
              "fixed order": dataset_from_arrays({"x": np.arange(10)}, batch_size=4, shuffle=False),
              "sequences": seq.training_dataset(seq.training_windows(train, 3), 2)}
    autotuned = {name: ds.options().autotune.enabled for name, ds in inputs.items()}
    assert autotuned == dict.fromkeys(inputs, False)
