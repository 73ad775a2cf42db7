"""FeaturePreprocessor and FieldEmbeddings: exact encodings, learning, raw serving in a new process."""
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import dataset_path

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.movielens import load_movielens_100k
from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec, SchemaError, frame_to_raw
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.tabular import load_criteo
from tfrs_recsys.features import (
    TIMESTAMP_FEATURES,
    FeaturePreprocessor,
    FieldEmbeddings,
    mask_key,
    raw_input_specs,
)
from tfrs_recsys.metrics import auc


def _spec() -> FeatureSpec:
    return FeatureSpec([
        FeatureColumn("user_id", "id", "user", "vocabulary", vocabulary=["u1", "u2", "u3"]),
        FeatureColumn("item_id", "id", "item", "hash", num_buckets=50, integer_values=True),
        FeatureColumn("device", "categorical", "context", "vocabulary", vocabulary=["3", "7"],
                      integer_values=True),
        FeatureColumn("genres", "multi_categorical", "item", "vocabulary",
                      vocabulary=["Drama", "Comedy", "Action"], separator="|"),
        FeatureColumn("price", "numeric", "item", mean=10.0, std=4.0, raw_dtype="float32"),
        FeatureColumn("ts", "timestamp", "context", mean=1.6e9, std=1e6, raw_dtype="float32"),
    ], labels=["click"])


def _raw(**overrides):
    raw = {"user_id": ["u2", "u1", "zz", ""], "item_id": ["12", "12.0", "99", "5"],
           "device": ["7", "3.0", "9", ""], "genres": ["Drama|Comedy", "", "Action| Drama ", "Horror"],
           "price": [14.0, 6.0, np.nan, 10.0], "ts": [1.6e9, 1.6e9 + 3600, np.nan, 1.6e9]}
    raw.update(overrides)
    numbers = {k for k in ("price", "ts") if not isinstance(raw[k][0], str)}
    return {k: tf.constant(np.asarray(v, dtype=np.float32) if k in numbers else v) for k, v in raw.items()}


def test_categorical_indices_and_oov():
    out = FeaturePreprocessor(_spec())(_raw())
    np.testing.assert_array_equal(out["user_id"], [2, 1, 0, 0])  # vocabulary[i] -> i + 1, unknown -> 0
    np.testing.assert_array_equal(out["device"], [2, 1, 0, 0])  # "3.0" is the integer 3
    items = out["item_id"].numpy()
    assert items.dtype == np.int64 and ((0 <= items) & (items < 50)).all() and items[0] == items[1]
    ints = FeaturePreprocessor(_spec())(_raw(device=np.array([7, 3, 9, 3], dtype=np.int64)))
    np.testing.assert_array_equal(ints["device"], [2, 1, 0, 1])
    column = FeaturePreprocessor(_spec())({k: v[:, None] for k, v in _raw().items()})  # [B, 1] inputs
    np.testing.assert_array_equal(column["user_id"], [2, 1, 0, 0])


def test_multi_valued_indices_and_masks():
    five = {"user_id": ["u1"] * 5, "item_id": ["1"] * 5, "device": ["3"] * 5, "price": [1.0] * 5,
            "ts": [1e9] * 5}
    out = FeaturePreprocessor(_spec())(_raw(genres=["Drama|Comedy", "", "Action| Drama ", "Horror",
                                                    "Comedy||"],
                                            **five))
    np.testing.assert_array_equal(out["genres"], [[1, 2], [0, 0], [3, 1], [0, 0], [2, 0]])
    np.testing.assert_array_equal(out[mask_key("genres")], [[1, 1], [0, 0], [1, 1], [1, 0], [1, 0]])
    assert out[mask_key("genres")].dtype == tf.float32


def test_a_list_cell_reads_its_first_values_and_a_call_of_millions_is_refused_before_splitting():
    from tfrs_recsys.features.preprocessing import MAX_CALL_LIST_VALUES, MAX_LIST_VALUES

    long = "|".join(["Drama"] * (MAX_LIST_VALUES + 50) + ["Action"])  # Action past the values read
    out = FeaturePreprocessor(_spec())(_raw(genres=[long, "Comedy", "|" * 1_000_000, ""]))
    assert out["genres"].shape[1] == MAX_LIST_VALUES and 3 not in out["genres"].numpy()[0]
    gaps = FeaturePreprocessor(_spec())(_raw(genres=["|".join(["Drama", ""] * 120 + ["Action"]), "", "", ""]))
    assert 3 in gaps["genres"].numpy()[0]  # the 241st piece: empty ones count, none is a value
    serve = tf.function(FeaturePreprocessor(_spec()).__call__)  # as a SavedModel's signature runs it

    def rows(n, cell):
        return _raw(genres=[cell] * n, **{k: [v] * n for k, v in {
            "user_id": "u1", "item_id": "1", "device": "3", "price": 1.0, "ts": 1e9}.items()})

    assert serve(rows(16_384, "|".join(["Drama"] * 300)))  # as training scores at once: never over the cap
    refused = f"genres.{{0,4}} holds more than {MAX_CALL_LIST_VALUES}"
    with pytest.raises(tf.errors.InvalidArgumentError, match=refused):
        serve(rows(MAX_CALL_LIST_VALUES // MAX_LIST_VALUES + 10, "a|" * 300))  # more full lists than that


def test_user_and_item_ids_padded_with_spaces_are_the_ids_in_the_vocabulary_and_the_graph():
    frame = pd.DataFrame({"user_id": [" u1", "u1 ", "u2", " u2 "] * 30,
                          "item_id": ["a", " a ", "b", "c"] * 30, "click": [1, 0, 1, 0] * 30})
    spec = infer_schema(frame, ["click"], user_column="user_id", item_column="item_id")
    assert sorted(spec["user_id"].vocabulary) == ["u1", "u2"]
    assert sorted(spec["item_id"].vocabulary) == ["a", "b", "c"]
    raw = {"user_id": tf.constant([" u1 ", "u1"]), "item_id": tf.constant(["a ", "a"])}
    out = FeaturePreprocessor(spec)(raw)
    np.testing.assert_array_equal(out["user_id"][0], out["user_id"][1])
    np.testing.assert_array_equal(out["item_id"][0], out["item_id"][1])
    assert out["item_id"][0] > 0  # known, not the OOV bucket


def test_a_list_joined_by_bar_reads_as_the_columns_own_separator():
    """A ';'-joined column trained from a file, sent a list joined by '|' (as the serving client joins)."""
    spec = _spec()
    spec["genres"].separator = ";"
    rows = {"user_id": ["u1"] * 3, "item_id": ["1"] * 3, "device": ["3"] * 3, "price": [1.0] * 3,
            "ts": [1e9] * 3}
    out = FeaturePreprocessor(spec)(_raw(genres=["Drama;Comedy", "Drama|Comedy", "Action"], **rows))
    np.testing.assert_array_equal(out["genres"], [[1, 2], [1, 2], [3, 0]])
    spec["genres"].vocabulary = ["Drama", "Comedy", "Rock|Pop"]  # a value holding '|': '|' is not split
    out = FeaturePreprocessor(spec)(_raw(genres=["Rock|Pop;Drama", "Drama", "Comedy"], **rows))
    np.testing.assert_array_equal(out["genres"], [[3, 1], [1, 0], [2, 0]])


def test_numeric_standardization_and_missing():
    out = FeaturePreprocessor(_spec())(_raw())
    np.testing.assert_allclose(out["price"], [1.0, -1.0, 0.0, 0.0])
    as_text = FeaturePreprocessor(_spec())(_raw(price=["14", "", "6", "nan"]))  # numbers sent as strings
    np.testing.assert_allclose(as_text["price"], [1.0, 0.0, -1.0, 0.0])


def test_absurd_numbers_are_clipped_never_overflowing():
    """A 3e38 price or a -1e38 time moves a feature no further than MAX_SIGMAS (100) standard deviations."""
    spec = FeatureSpec([FeatureColumn("price", "numeric", mean=10.0, std=4.0, raw_dtype="float32"),
                        FeatureColumn("ts", "timestamp", mean=1.6e9, std=1e6, newest=1.8e9)], [])
    out = FeaturePreprocessor(spec)({"price": tf.constant([3e38, -3e38, 14.0, np.inf], tf.float32),
                                     "ts": tf.constant([-1e38, 1e38, 1.6e9, np.nan], tf.float64)})
    np.testing.assert_allclose(out["price"], [100.0, -100.0, 1.0, 0.0])  # inf is missing: the mean
    ts = out["ts"].numpy()
    assert np.isfinite(ts).all() and ts[0, 4] == -100.0 and ts[1, 4] == 100.0  # capped at newest (100 sigmas)
    np.testing.assert_array_equal(ts[3], 0.0)


def test_timestamp_features_match_calendar():
    when = pd.Series(pd.to_datetime(["2020-09-13 12:26:40", "2021-03-01 06:00:00", None,
                                     "2019-12-31 23:10:00"]))
    frame = pd.DataFrame({"ts": when})
    spec = FeatureSpec([FeatureColumn("ts", "timestamp", mean=1.6e9, std=1e6, raw_dtype="float32")], [])
    out = FeaturePreprocessor(spec)({"ts": tf.constant(frame_to_raw(frame, spec)["ts"])})["ts"].numpy()
    assert out.shape == (4, len(TIMESTAMP_FEATURES))
    ok = when.notna().to_numpy()
    hours = (when.dt.hour + when.dt.minute / 60)[ok].to_numpy()
    weekday = when.dt.weekday[ok].to_numpy()
    expected = np.stack([np.sin(2 * np.pi * hours / 24), np.cos(2 * np.pi * hours / 24),
                         np.sin(2 * np.pi * weekday / 7), np.cos(2 * np.pi * weekday / 7)], axis=1)
    np.testing.assert_allclose(out[ok, :4], expected, atol=0.01)  # float32 seconds: ~2 minutes
    seconds = (when[ok] - pd.Timestamp(0)).dt.total_seconds().to_numpy()
    np.testing.assert_allclose(out[ok, 4], (seconds - 1.6e9) / 1e6, atol=1e-3)
    np.testing.assert_array_equal(out[~ok], 0.0)


def test_request_times_in_milli_micro_or_nanoseconds_read_as_training_read_them():
    """A client sending its log's own epoch milliseconds gets the features of the same instant in seconds."""
    spec = FeatureSpec([FeatureColumn("ts", "timestamp", mean=1.6e9, std=1e6, raw_dtype="float64")], [])
    seconds = np.array([1_600_000_000.0, 1_650_012_345.0, -1.0, np.nan])
    out = {scale: FeaturePreprocessor(spec)({"ts": tf.constant(seconds * scale, tf.float64)})["ts"].numpy()
           for scale in (1.0, 1e3, 1e6, 1e9)}
    for scale in (1e3, 1e6, 1e9):  # float32 layer: ~2 minutes at 1.6e9 s, at any unit
        np.testing.assert_allclose(out[scale][[0, 1, 3]], out[1.0][[0, 1, 3]], atol=0.01)
    np.testing.assert_allclose(out[1e3][:2, 4], (seconds[:2] - 1.6e9) / 1e6, atol=1e-3)
    assert abs(out[1e3][1, 4] - out[1.0][1, 4]) < 1e-3 and abs(out[1e3][1, 4]) > 1.0  # the time, not noise


def test_times_after_the_training_data_are_standardized_as_the_newest():
    newest = 1.6e9 + 2e6
    spec = FeatureSpec([FeatureColumn("ts", "timestamp", mean=1.6e9, std=1e6, newest=newest,
                                      raw_dtype="float32")], [])
    later = newest + 7 * 86400 * 52 * 5  # five years on, same weekday and hour
    out = FeaturePreprocessor(spec)({"ts": tf.constant([1.6e9, newest, later], tf.float32)})["ts"].numpy()
    np.testing.assert_allclose(out[:, 4], [0.0, 2.0, 2.0], atol=1e-3)
    np.testing.assert_allclose(out[2, :4], out[1, :4], atol=0.01)  # the calendar part is the request's own
    inferred = infer_schema(pd.DataFrame({"ts": pd.to_datetime(["2020-01-01", "2020-03-01"]), "y": [0, 1]}),
                            ["y"])
    assert inferred["ts"].newest == pd.Timestamp("2020-03-01").timestamp()


def test_frame_to_raw_encoding():
    spec = _spec()
    frame = pd.DataFrame({"user_id": ["u1", None], "item_id": [12.0, np.nan], "device": [3, 7],
                          "genres": [["Drama", "Action"], []], "price": [1.5, np.nan],
                          "ts": [1_600_000_000, 1_600_000_100]})
    raw = frame_to_raw(frame, spec)
    assert list(raw["user_id"]) == ["u1", ""] and list(raw["item_id"]) == ["12", ""]
    assert list(raw["device"]) == ["3", "7"] and list(raw["genres"]) == ["Drama|Action", ""]
    assert raw["price"].dtype == np.float32 and np.isnan(raw["price"][1])
    with pytest.raises(DataError) as err:
        frame_to_raw(frame.drop(columns="device"), spec)
    assert err.value.column == "device"
    with pytest.raises(DataError, match="'cheap' is not a number"):
        frame_to_raw(frame.assign(price=["1.5", "cheap"]), spec)


@pytest.mark.parametrize("which", ["ml-100k", "criteo"])
def test_inferred_spec_encodes_its_own_data(datasets_dir, which):
    """Inference and the encoders agree: every value seen during inference has its own index."""
    if which == "ml-100k":
        data = load_movielens_100k(str(dataset_path(datasets_dir, "ml-100k")))
        frame = data.interactions.head(3000).merge(data.items[["item_id", "genres"]], on="item_id")
    else:
        frame = load_criteo(str(dataset_path(datasets_dir, "criteo", "deepctr_criteo_sample.txt"))).frame
    spec = infer_schema(frame)
    out = FeaturePreprocessor(spec)({k: tf.constant(v) for k, v in frame_to_raw(frame, spec).items()})
    for f in spec.features:
        values = out[f.name].numpy()
        if f.kind == "multi_categorical":
            assert (values[out[mask_key(f.name)].numpy() > 0] > 0).all(), f.name
        elif f.is_categorical:
            assert (values > 0).all() and values.max() < f.cardinality, f.name
        elif f.kind == "numeric":
            present = ~np.isnan(pd.to_numeric(frame[f.name]).to_numpy())
            assert values[present].mean() == pytest.approx(0.0, abs=1e-4), f.name
            assert values[present].std() == pytest.approx(1.0, abs=1e-3), f.name


def test_field_embeddings_math():
    spec = _spec()
    layer = FieldEmbeddings(spec, 4)
    out = layer(FeaturePreprocessor(spec)(_raw()))
    assert out["field_vectors"].shape == (4, 6, 4) and out["first_order"].shape == (4, 6)
    assert out["dense"].shape == (4, 1 + len(TIMESTAMP_FEATURES)) and len(layer.dense_names) == 6
    for table in layer._linear.values():  # first-order tables start at zero; give them values to check
        table.embeddings.assign(tf.random.normal(table.embeddings.shape, seed=1))
    out = layer(FeaturePreprocessor(spec)(_raw()))
    genres = layer._tables["genres"].embeddings.numpy()
    vec = out["fields"]["genres"].numpy()
    np.testing.assert_allclose(vec[0], (genres[1] + genres[2]) / 2, rtol=1e-6)  # Drama|Comedy
    np.testing.assert_allclose(vec[1], 0.0)  # no genres
    np.testing.assert_allclose(vec[3], genres[0], rtol=1e-6)  # unknown genre -> the OOV row
    users = layer._tables["user_id"].embeddings.numpy()
    np.testing.assert_allclose(out["field_vectors"][:, 0], users[[2, 1, 0, 0]], rtol=1e-6)
    v_price = layer._vectors["price"].numpy()[0]
    np.testing.assert_allclose(out["fields"]["price"][:2], [1.0 * v_price, -1.0 * v_price], rtol=1e-6)
    w_genres = layer._linear["genres"].embeddings.numpy()[:, 0]
    np.testing.assert_allclose(out["first_order"][0, 3], (w_genres[1] + w_genres[2]) / 2, rtol=1e-6)
    assert layer.group_vectors(out, "user").shape == (4, 4)
    assert layer.group_vectors(out, "item").shape == (4, 12)  # item_id, genres, price
    assert layer.group_vectors(out, "context").shape == (4, 8)


def test_field_embeddings_dims_and_l2():
    spec = _spec()
    spec["genres"].embedding_dim = 2
    with pytest.raises(SchemaError, match="column_dims=True"):
        FieldEmbeddings(spec, 4)
    layer = FieldEmbeddings(spec, 4, column_dims=True, first_order=False, l2=0.1)
    out = layer(FeaturePreprocessor(spec)(_raw()))
    assert "field_vectors" not in out and "first_order" not in out
    assert out["fields"]["genres"].shape == (4, 2) and layer.group_vectors(out, "item").shape == (4, 10)
    penalty = sum(np.square(v.numpy()).sum(axis=1) for v in out["fields"].values()).mean()
    assert float(layer.losses[-1]) == pytest.approx(0.1 * penalty, rel=1e-5)
    spec["genres"].embedding_dim = None
    shared = FieldEmbeddings(spec, 4, l2=0.1)  # one D: the penalty is read off the stacked field vectors
    out = shared(FeaturePreprocessor(spec)(_raw()))
    penalty = sum(np.square(v.numpy()).sum(axis=1) for v in out["fields"].values()).mean()
    assert float(shared.losses[-1]) == pytest.approx(0.1 * penalty, rel=1e-5)


def test_layers_rebuild_from_config():
    spec = _spec()
    pre = FeaturePreprocessor(spec)
    again = FeaturePreprocessor.from_config(pre.get_config())
    for key, value in pre(_raw()).items():
        np.testing.assert_array_equal(again(_raw())[key], value)
    emb = FieldEmbeddings.from_config(FieldEmbeddings(spec, 3, l2=0.01).get_config())
    assert (emb.embedding_dim, emb.l2, emb.field_names) == (3, 0.01, spec.feature_names)


class _TinyModel(tf.keras.Model):
    """Raw features -> FeaturePreprocessor -> FieldEmbeddings -> Dense: a logit."""

    def __init__(self, spec: FeatureSpec, dim: int = 4):
        super().__init__()
        self.preprocess = FeaturePreprocessor(spec)
        self.embed = FieldEmbeddings(spec, dim)
        self.head = tf.keras.layers.Dense(1)

    def call(self, raw):
        out = self.embed(self.preprocess(raw))
        fields = out["field_vectors"]
        flat = tf.reshape(fields, [-1, fields.shape[1] * fields.shape[2]])
        return self.head(tf.concat([flat, out["first_order"], out["dense"]], axis=1))[:, 0]


def _synthetic_clicks(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Clicks from a known logit over a category, a genre, a price and the hour of day (peak at 20:00)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "device": rng.choice(["phone", "tablet", "desktop"], n),
        "genres": ["|".join(rng.choice(["Action", "Drama", "Comedy", "Horror"], rng.integers(0, 3),
                                       replace=False))
                   for _ in range(n)],
        "price": rng.normal(50, 10, n),
        "event_time": 1_600_000_000 + rng.integers(0, 14 * 86_400, n),
    })
    hour = (frame["event_time"] % 86_400).to_numpy() / 3600
    logit = (2.0 * (frame["device"] == "phone") + 2.0 * frame["genres"].str.contains("Action")
             - 0.15 * (frame["price"] - 50) + 2.0 * np.cos(2 * np.pi * (hour - 20) / 24)
             - 1.5).to_numpy(dtype=float)
    prob = 1 / (1 + np.exp(-logit))
    frame["click"] = (rng.random(n) < prob).astype(int)
    return frame, prob


def test_embeddings_learn_a_known_click_rule():
    tf.keras.utils.set_random_seed(0)
    train, _ = _synthetic_clicks(6000, seed=1)
    test, true_prob = _synthetic_clicks(3000, seed=2)
    spec = infer_schema(train, ["click"])
    assert spec["genres"].kind == "multi_categorical" and spec["event_time"].kind == "timestamp"
    model = _TinyModel(spec, dim=4)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02),
                  loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(frame_to_raw(train, spec), train["click"].to_numpy(np.float32), batch_size=256, epochs=6,
              verbose=0)
    scores = model.predict(frame_to_raw(test, spec), batch_size=1024, verbose=0)
    # ceiling 0.885; dropping any one signal from the true logit scores <= 0.861 (genres), 0.852 (device),
    # 0.799 (hour): within 0.015 of the ceiling means every field type carried its signal.
    ceiling = auc(test["click"], true_prob)
    assert auc(test["click"], scores) > ceiling - 0.015, (auc(test["click"], scores), ceiling)


_RELOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf  # no tfrs_recsys: the SavedModel must stand alone
    model = tf.saved_model.load(sys.argv[1])
    inputs = json.load(open(sys.argv[2]))
    serve = model.signatures["serving_default"]
    specs = serve.structured_input_signature[1]  # each input as the signature types it (float64 timestamps)
    feed = {k: tf.constant(v if specs[k].dtype == tf.string else
                           np.array([np.nan if x is None else x for x in v], specs[k].dtype.as_numpy_dtype))
            for k, v in inputs.items()}
    print(json.dumps(serve(**feed)["score"].numpy().tolist()))
""")


def test_saved_model_serves_raw_features_in_a_fresh_process(tmp_path):
    train, _ = _synthetic_clicks(400, seed=3)
    train["user_id"] = [f"u{i % 40}" for i in range(len(train))]
    spec = infer_schema(train, ["click"], vocab_max=30)  # user_id: hashed; device, genres: vocabularies
    assert spec["user_id"].encoding == "hash" and spec["device"].encoding == "vocabulary"
    model = _TinyModel(spec)
    requests = pd.DataFrame({"device": ["phone", "smart-tv", "", "desktop"],
                             "genres": ["Action|Drama", "Western|Action", "", "Comedy"],
                             "price": [55.0, np.nan, 40.0, 61.5],
                             "event_time": [1_600_000_000, 1_600_050_000, np.nan, 1_600_900_000],
                             "user_id": ["u1", "never-seen", "u39", ""]})
    raw = frame_to_raw(requests, spec)
    expected = model({k: tf.constant(v) for k, v in raw.items()}).numpy()

    @tf.function(input_signature=[raw_input_specs(spec)])
    def serve(features):
        return {"score": model(features)}

    export = tmp_path / "model"
    tf.saved_model.save(model, str(export), signatures={"serving_default": serve.get_concrete_function()})
    payload = tmp_path / "inputs.json"
    payload.write_text(json.dumps({k: [None if isinstance(x, float) and math.isnan(x) else x
                                       for x in v.tolist()]
                                   for k, v in raw.items()}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _RELOAD, str(export), str(payload)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    served = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    assert np.isfinite(served).all()


def test_a_boolean_column_takes_any_spelling_of_true_and_false():
    """Training writes booleans True / False; a JSON client sends true, another 1: the same index, not OOV."""
    frame = pd.DataFrame({"verified": [True, False, True, True], "y": [1, 0, 1, 0]})
    spec = infer_schema(frame, ["y"])
    assert spec["verified"].boolean_values and set(spec["verified"].vocabulary) == {"True", "False"}
    ids = FeaturePreprocessor(spec)({"verified": tf.constant(["True", "true", " TRUE", "1", "False", "false",
                                                              "0", "maybe", ""])})["verified"].numpy()
    assert len(set(ids[:4])) == 1 and len(set(ids[4:7])) == 1 and ids[0] != ids[4] and 0 not in ids[:7]
    assert ids[7] == 0 and ids[8] == 0  # anything else is unknown, as before
    as_ints = FeaturePreprocessor(spec)({"verified": tf.constant([1, 0], tf.int64)})["verified"].numpy()
    assert as_ints.tolist() == [ids[0], ids[4]]
    assert not infer_schema(pd.DataFrame({"c": ["a", "b"] * 3, "y": [0, 1] * 3}), ["y"])["c"].boolean_values
    lower = infer_schema(pd.DataFrame({"v": ["true", "false"] * 3, "y": [0, 1] * 3}), ["y"])  # a CSV's text
    ids = FeaturePreprocessor(lower)({"v": tf.constant(["true", "True", "1", "false", "0"])})["v"].numpy()
    assert lower["v"].boolean_values and len(set(ids[:3])) == 1 and ids[3] == ids[4] != ids[0]
    assert 0 not in ids
