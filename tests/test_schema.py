"""Schema inference on the real files, the label guard, the JSON round trip and the CLI."""
import json

import numpy as np
import pandas as pd
import pytest
from conftest import dataset_path

from tfrs_recsys.data.clicklogs import load_ali_ccp, load_aliexpress
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.label_leaks import looks_like_label
from tfrs_recsys.data.movielens import ML100K_GENRES, load_movielens_100k
from tfrs_recsys.data.schema import FeatureColumn, FeatureSpec, SchemaError, frame_to_raw
from tfrs_recsys.data.schema_cli import main
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.tabular import load_criteo, load_table, type_columns


def _kinds(spec):
    return {f.name: f.kind for f in spec.features}


def test_aliexpress(datasets_dir):
    data = load_aliexpress(str(dataset_path(datasets_dir, "aliexpress", "fuxictr_tiny_mtl_train.csv")))
    spec = infer_schema(data.frame, data.labels, session_column=data.session_column)
    frame = data.frame
    assert spec.labels == ["click", "conversion"] and spec.session_column == "search_id"
    assert not {"click", "conversion", "search_id"} & set(spec.feature_names)
    constant = [c for c in frame.columns if frame[c].nunique(dropna=False) == 1]
    assert constant == ["categorical_1", "numerical_58", "numerical_59", "numerical_60"]
    assert set(spec.notes["dropped"]) == set(constant)
    assert all("constant" in why for why in spec.notes["dropped"].values())
    for col in frame.columns:
        if col.startswith("categorical_") and col not in constant:
            f = spec[col]
            assert f.kind == "categorical" and f.encoding == "vocabulary" and f.group == "context"
            assert sorted(f.vocabulary) == sorted(frame[col].unique())
        if col.startswith("numerical_") and col not in constant:
            f = spec[col]
            assert f.kind == "numeric"
            assert (f.mean == pytest.approx(frame[col].mean())
                    and f.std == pytest.approx(frame[col].std(ddof=0)))
    assert len(spec.features) == 15 + 60


def test_ali_ccp_csv(datasets_dir):
    data = load_ali_ccp(str(dataset_path(datasets_dir, "ali-ccp", "torchrechub_ali_ccp_train_sample.csv")))
    spec = infer_schema(data.frame, data.labels, user_column=data.user_column, item_column=data.item_column)
    assert spec.labels == ["click", "conversion"]
    assert (spec.user_column, spec.item_column) == ("f101", "f205")
    assert spec["f205"].kind == "id" and spec["f205"].group == "item"
    # Ali-CCP field ids: 2xx describe the item, 5xx+ are user x item crosses (context here).
    assert {spec[c].group for c in ("f206", "f207", "f210", "f216")} == {"item"}
    assert {spec[c].group for c in ("f508", "f509", "f702", "f853")} == {"context"}
    assert {spec[c].kind for c in ("D508", "D509", "D702", "D853")} == {"numeric"}
    # The sample holds a single user: its id and profile fields are constant and say so.
    assert "f101" not in spec.feature_names and "constant" in spec.notes["dropped"]["f101"]
    assert all(spec[c].integer_values for c in ("f205", "f206"))


def test_ali_ccp_paddle_lists(datasets_dir):
    data = load_ali_ccp(str(dataset_path(datasets_dir, "ali-ccp", "paddlerec_esmm_train_small.txt")))
    spec = infer_schema(data.frame, data.labels, user_column=data.user_column, item_column=data.item_column)
    f210 = spec["f210"]  # intention nodes: 3..14 per row
    assert f210.kind == "multi_categorical" and f210.separator == "|"
    tokens = {str(t) for row in data.frame["f210"] for t in row}
    assert set(f210.vocabulary) == tokens
    raw = frame_to_raw(data.frame, spec)
    assert [r.split("|") for r in raw["f210"]] == [[str(t) for t in row] for row in data.frame["f210"]]
    assert spec["f206"].kind == "categorical"  # lists of one value are single-valued
    assert raw["f206"][0] == data.frame["f206"].iloc[0][0]


@pytest.mark.parametrize("file", ["dac_train_head1000.txt", "deepctr_criteo_sample.txt"])
def test_criteo(datasets_dir, file):
    path = str(dataset_path(datasets_dir, "criteo", file))
    data = load_criteo(path)  # raw TSV, or DeepCTR's CSV with a header and floats for integers
    spec = infer_schema(data.frame, data.labels)
    frame = data.frame
    assert spec.labels == ["label"] and "label" not in spec.feature_names
    for i in range(1, 14):
        if f"I{i}" in spec.feature_names:
            f = spec[f"I{i}"]
            assert f.kind == "numeric" and f.mean == pytest.approx(np.nanmean(frame[f"I{i}"]))
    cats = [f for f in spec.features if f.name.startswith("C")]
    assert cats and all(f.kind in ("categorical", "id") and f.encoding == "vocabulary" for f in cats)
    kept = {f.name for f in spec.features}
    assert kept | set(spec.notes["dropped"]) == set(frame.columns) - {"label"}
    for f in cats:  # more than low_cardinality_max distinct values -> an id-like field
        assert (f.kind == "id") == (frame[f.name].nunique() > 100)


@pytest.fixture(scope="module")
def ml100k(datasets_dir):
    data = load_movielens_100k(str(dataset_path(datasets_dir, "ml-100k")))
    return data.interactions.merge(data.items[["item_id", "genres"]], on="item_id")


def test_movielens_100k(ml100k):
    spec = infer_schema(ml100k)
    assert spec.labels == ["rating"] and "rating" not in spec.feature_names  # inferred by name
    assert (spec["user_id"].kind, spec["user_id"].group) == ("id", "user")
    assert (spec["item_id"].kind, spec["item_id"].group) == ("id", "item")
    assert spec["timestamp"].kind == "timestamp" and spec.timestamp_column == "timestamp"
    genres = spec["genres"]
    assert genres.kind == "multi_categorical" and genres.group == "item"  # constant within each item
    assert set(genres.vocabulary) <= set(ML100K_GENRES) and len(genres.vocabulary) >= 18
    # The same genres as '|'-joined text: the separator is detected and the vocabulary is the same.
    text = ml100k.assign(genres=ml100k["genres"].map("|".join))
    joined = infer_schema(text)["genres"]
    assert joined.separator == "|" and joined.vocabulary == genres.vocabulary


def test_movielens_latest_movies_csv(datasets_dir):
    data = load_table(str(dataset_path(datasets_dir, "ml-latest-small", "movies.csv")), labels=[])
    spec = infer_schema(data.frame, [])
    genres = spec["genres"]
    assert genres.kind == "multi_categorical" and genres.separator == "|"
    assert {"Comedy", "Drama", "Sci-Fi", "(no genres listed)"} <= set(genres.vocabulary)
    # Titles such as "American President, The (1995)" hold commas but are not lists.
    assert spec["title"].kind == "id" and spec["movieId"].group == "item"


def test_undeclared_label_like_column_fails_loudly(datasets_dir):
    data = load_aliexpress(str(dataset_path(datasets_dir, "aliexpress",
                                            "torchrechub_aliexpress_train_sample.csv")))
    with pytest.raises(SchemaError) as err:
        infer_schema(data.frame, ["click"], session_column="search_id")
    assert err.value.column == "conversion"
    fix = err.value.fix
    assert "--label-columns click,conversion" in fix and "--exclude-columns conversion" in fix
    spec = infer_schema(data.frame, ["click"], session_column="search_id", exclude=["conversion"])
    assert "conversion" not in spec.feature_names and spec.labels == ["click"]
    assert infer_schema(data.frame, session_column="search_id").labels == ["click", "conversion"]
    deliberate = infer_schema(data.frame, ["conversion"], session_column="search_id",
                              context_columns=["click"])
    assert deliberate["click"].group == "context" and deliberate.labels == ["conversion"]


def test_label_like_names():
    for name in ("click", "Conversion", "purchase", "label", "booking_bool", "click_bool", "ctr",
                 "true_ctcvr", "is_click", "ctr_label"):
        assert looks_like_label(name), name
    for name in ("smoothed_ctr", "random_bool", "user_id", "price", "clicks_7d_count", "position"):
        assert not looks_like_label(name), name


def test_label_in_hand_edited_spec_is_rejected_on_load(tmp_path):
    frame = pd.DataFrame({"device": ["a", "b", "a", "c"], "click": [0, 1, 0, 1]})
    path = tmp_path / "spec.json"
    infer_schema(frame, ["click"]).save(path)
    data = json.loads(path.read_text())
    data["features"].append({"name": "click", "kind": "categorical", "encoding": "vocabulary",
                             "vocabulary": ["0", "1"]})
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError) as err:
        FeatureSpec.load(path)
    assert err.value.column == "click" and "label" in str(err.value)
    with pytest.raises(SchemaError, match="label column 'click' is listed in user_columns"):
        infer_schema(frame, ["click"], user_columns=["click"])


def test_spec_json_round_trip(tmp_path, ml100k):
    spec = infer_schema(ml100k.head(5000), ["rating"], vocab_max=50)
    assert spec["genres"].encoding == "vocabulary" and spec["item_id"].encoding == "hash"
    path = tmp_path / "spec.json"
    spec.save(path)
    loaded = FeatureSpec.load(path)
    assert loaded == spec
    assert json.loads(path.read_text())["features"][0]["name"] == spec.features[0].name


def test_hash_buckets_and_stable_vocabulary_order():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice(["b", "a", "c", "d"], size=400, p=[0.4, 0.2, 0.2, 0.2]),
                          "user_id": [f"u{i % 150}" for i in range(400)], "click": rng.integers(0, 2, 400)})
    frame.loc[:3, "city"] = ["b", "b", "b", "b"]
    counts = frame["city"].value_counts()
    expected = sorted(counts.index, key=lambda v: (-counts[v], v))
    spec = infer_schema(frame, ["click"], vocab_max=100, hash_multiplier=3)
    assert spec["city"].vocabulary == expected
    shuffled = infer_schema(frame.sample(frac=1.0, random_state=7), ["click"], vocab_max=100,
                            hash_multiplier=3)
    assert shuffled.to_dict()["features"] == spec.to_dict()["features"]
    assert spec["user_id"].encoding == "hash" and spec["user_id"].num_buckets == 3 * 150
    ties = infer_schema(pd.DataFrame({"c": ["z", "y", "x", "y", "z", "x"], "label": [0, 1] * 3}))
    assert ties["c"].vocabulary == ["x", "y", "z"]


def test_integer_columns_timestamps_and_groups():
    n = 300
    rng = np.random.default_rng(1)
    seconds = 1_600_000_000 + rng.integers(0, 10**6, n)
    frame = pd.DataFrame({
        "hour": rng.integers(0, 24, n),                      # few distinct ints: codes
        "views_count": rng.integers(0, 20, n),               # quantity-like name: numeric
        "big_int": rng.integers(0, 10**6, n),                # many distinct ints, no hint: numeric
        "device_type": rng.integers(0, 500, n),              # categorical-like name
        "event_time": 1_600_000_000 + rng.integers(0, 10**6, n),
        "event_time_ms": (1_600_000_000 + rng.integers(0, 10**6, n)) * 1000,
        "when": pd.to_datetime(seconds, unit="s"),
        "user_age": rng.integers(18, 70, n), "visitor_country": rng.choice(["nl", "de"], n),
        "prop_stars": rng.integers(1, 6, n), "ad_campaign": rng.choice(["x", "y", "z"], n),
        "movie_genres": rng.choice(["a|b", "b", "c|a"], n), "weather": rng.choice(["sun", "rain"], n),
        "booking_bool": rng.integers(0, 2, n), "price": rng.normal(100, 10, n), "const": 1,
    })
    spec = infer_schema(frame, ["booking_bool"], context_columns=["prop_stars"])
    kinds = _kinds(spec)
    assert (kinds["hour"] == "categorical" and kinds["views_count"] == "numeric"
            and kinds["big_int"] == "numeric")
    assert kinds["device_type"] == "id"
    assert kinds["event_time"] == kinds["when"] == kinds["event_time_ms"] == "timestamp"  # ms as docs say
    assert spec.timestamp_column == "event_time"
    assert spec["when"].mean == pytest.approx(seconds.mean())
    groups = {f.name: f.group for f in spec.features}
    assert groups["user_age"] == groups["visitor_country"] == "user"
    assert groups["ad_campaign"] == groups["movie_genres"] == "item"
    assert groups["prop_stars"] == "context"  # explicit lists win over names
    assert groups["weather"] == "context" and "const" in spec.notes["dropped"]
    assert set(spec.notes["decisions"]) == set(spec.feature_names)


def test_cli_writes_spec(tmp_path, datasets_dir, capsys):
    path = str(dataset_path(datasets_dir, "aliexpress", "torchrechub_aliexpress_train_sample.csv"))
    out = tmp_path / "spec.json"
    assert (main([path, "--labels", "click,conversion", "--session-column", "search_id", "--out", str(out)])
            == 0)
    spec = FeatureSpec.load(out)
    assert spec.labels == ["click", "conversion"] and spec.session_column == "search_id"
    assert spec.feature_names == infer_schema(load_table(path, labels=["click", "conversion"]).frame,
                                              ["click", "conversion"],
                                              session_column="search_id").feature_names
    assert "wrote" in capsys.readouterr().err
    assert main([path, "--labels", "click", "--session-column", "search_id", "--out", str(out)]) == 2
    assert "column 'conversion'" in capsys.readouterr().err
    # spelled as training spells it
    assert main([path, "--label-columns", "click,conversion", "--session-column", "search_id", "--out",
                 str(out)]) == 0
    assert FeatureSpec.load(out).labels == ["click", "conversion"]


def test_bad_arguments_name_the_column():
    frame = pd.DataFrame({"a": ["x", "y"], "click": [0, 1]})
    with pytest.raises(SchemaError) as err:
        infer_schema(frame, ["clicks"])
    assert err.value.column == "clicks" and "a, click" in str(err.value)
    with pytest.raises(SchemaError, match="hash encoding needs num_buckets"):
        FeatureColumn("x", "id", encoding="hash")
    with pytest.raises(SchemaError, match="a separator .* on a categorical column") as err:  # an edited spec
        FeatureColumn("path", "categorical", encoding="vocabulary", vocabulary=["a > b"], separator=" > ")
    assert "multi_categorical" in err.value.fix


def test_dates_written_day_first_are_read_day_first_in_every_chunk():
    seconds = pd.Timestamp("2024-03-06", tz="UTC").timestamp()  # 6 March 2024
    frame = pd.DataFrame({"event_date": ["06/03/2024", "31/03/2024 10:00", "07/03/2024", None] * 30,
                          "click": [0, 1] * 60})
    spec = infer_schema(frame, ["click"])
    assert spec["event_date"].kind == "timestamp" and spec["event_date"].day_first
    assert spec["event_date"].raw_dtype == "float64"  # as the serving signature takes it
    assert "float64" in next(line for line in spec.table().splitlines() if line.startswith("event_date"))
    sessions = FeatureSpec(spec.features, spec.labels, session_column="request_id")
    assert any(line.split()[:2] == ["request_id", "session"] for line in sessions.table().splitlines())
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))["event_date"].day_first
    # a later chunk of ambiguous dates only is read in the spec's order, not guessed anew
    raw = frame_to_raw(pd.DataFrame({"event_date": ["06/03/2024", "07/03/2024"]}), spec)["event_date"]
    assert raw.tolist() == [seconds, seconds + 86_400]
    month_first = frame.assign(event_date=["03/06/2024", "03/31/2024 10:00", "03/07/2024", None] * 30)
    month_spec = infer_schema(month_first, ["click"])
    assert not month_spec["event_date"].day_first
    with pytest.raises(SchemaError, match="'24/03/2024' is written day first") as err:  # a later chunk
        frame_to_raw(pd.DataFrame({"event_date": ["06/03/2024", "24/03/2024"]}), month_spec)
    assert '"day_first": true' in err.value.fix
    unnamed = infer_schema(frame.rename(columns={"event_date": "shown"}), ["click"])  # its name says no time
    assert "--column-types shown=timestamp reads them" in unnamed.notes["decisions"]["shown"]
    declared = infer_schema(frame.rename(columns={"event_date": "shown"}), ["click"],
                            column_kinds={"shown": "timestamp"})
    assert declared["shown"].kind == "timestamp" and declared["shown"].day_first
    both = frame.assign(event_date=["31/03/2024", "03/31/2024"] * 60)
    with pytest.raises(SchemaError, match="day first .* and month first") as err:
        infer_schema(both, ["click"])
    assert err.value.column == "event_date" and "ISO" in err.value.fix


def test_a_funnel_step_named_like_no_outcome_is_refused_as_a_leak():
    rng = np.random.default_rng(4)
    clicked = (rng.random(600) < 0.3).astype(int)
    frame = pd.DataFrame({"device": rng.choice(["m", "d"], 600), "clicked": clicked,
                          "checkout": clicked * (rng.random(600) < 0.4),  # only ever after a click
                          "promo": (rng.random(600) < 0.3).astype(int)})  # 0/1, but not within clicks
    with pytest.raises(SchemaError, match="is 1 only on rows where the label 'clicked' is 1") as err:
        infer_schema(frame, ["clicked"])
    assert err.value.column == "checkout" and "--exclude-columns checkout" in err.value.fix
    assert "promo" in infer_schema(frame, ["clicked"], exclude=["checkout"]).feature_names
    assert infer_schema(frame, ["clicked", "checkout"]).labels == ["clicked", "checkout"]


def test_a_number_that_alone_ranks_the_label_almost_perfectly_is_refused_as_a_leak():
    rng = np.random.default_rng(5)
    listened = (rng.random(600) < 0.7).astype(int)
    played = np.where(listened, rng.uniform(30, 300, 600), rng.uniform(0, 29, 600))
    frame = pd.DataFrame({"listened": listened, "seconds_played": played,
                          "duration": rng.uniform(100, 300, 600) + 80 * listened})  # strong, but an input
    with pytest.raises(SchemaError, match="alone ranks the label 'listened' with an AUC of 1.000") as err:
        infer_schema(frame, ["listened"])
    assert err.value.column == "seconds_played" and "--exclude-columns seconds_played" in err.value.fix
    assert "--label-columns" not in err.value.fix  # a number of seconds is no 0/1 label
    with pytest.raises(SchemaError, match="an AUC of 1.000, in reverse"):  # a skip: fewer seconds played
        infer_schema(frame.assign(listened=1 - listened), ["listened"], exclude=["duration"])
    spec = infer_schema(frame, ["listened"], exclude=["seconds_played"])
    assert spec["duration"].kind == "numeric"  # AUC about 0.85 alone: a feature
    assert "seconds_played" in infer_schema(frame.iloc[:25], ["listened"]).feature_names  # too few to judge


def test_a_column_blank_except_on_positives_is_refused_as_a_leak():
    rng = np.random.default_rng(6)
    clicked = (rng.random(600) < 0.3).astype(int)
    dwell = np.where(clicked & (rng.random(600) < 0.9), rng.uniform(1, 120, 600), np.nan)  # AUC about 0.95
    frame = pd.DataFrame({"clicked": clicked, "dwell_s": dwell, "note": np.where(clicked, "read", ""),
                          "price": np.where(rng.random(600) < 0.2, np.nan, rng.uniform(1, 9, 600))})
    with pytest.raises(SchemaError, match="has values only on rows where the label 'clicked' is 1") as err:
        infer_schema(frame, ["clicked"], exclude=["note"])
    assert err.value.column == "dwell_s" and "--exclude-columns dwell_s" in err.value.fix
    with pytest.raises(SchemaError, match="only on rows where") as err:  # text blank off the clicks
        infer_schema(frame, ["clicked"], exclude=["dwell_s"])
    assert err.value.column == "note"
    spec = infer_schema(frame, ["clicked"], exclude=["dwell_s", "note"])
    assert "price" in spec.feature_names  # gaps at random


def test_values_other_than_the_usual_one_only_on_positives_are_refused_as_a_leak():
    """A conversion's value: 0.0 except on converted rows (within the clicks); alone its AUC is only ~0.65."""
    rng = np.random.default_rng(8)
    clicked = (rng.random(2000) < 0.1).astype(int)
    converted = clicked * (rng.random(2000) < 0.3)
    value = np.where(converted, rng.uniform(1, 50, 2000), 0.0)
    frame = pd.DataFrame({"clicked": clicked, "conversion_value": value,
                          "discount": np.where(rng.random(2000) < 0.05, rng.uniform(1, 5, 2000), 0.0),
                          "device": rng.choice(["m", "d"], 2000)})
    with pytest.raises(SchemaError, match=r"its non-zero values occur only on rows where 'clicked' is 1 "
                                          rf"\({converted.sum()} rows") as err:
        infer_schema(frame, ["clicked"])
    assert err.value.column == "conversion_value" and "--exclude-columns conversion_value" in err.value.fix
    with pytest.raises(SchemaError, match="only on rows where 'clicked' is 1"):  # every ranker label
        infer_schema(frame.assign(converted=converted), ["clicked", "converted"])
    spec = infer_schema(frame, ["clicked"], exclude=["conversion_value"])
    assert "discount" in spec.feature_names  # rare, but on rows of either label
    few = frame.assign(conversion_value=np.where(converted & (np.cumsum(converted) <= 15), 9.5, 0.0))
    assert "conversion_value" in infer_schema(few, ["clicked"]).feature_names  # 15 rows: could be chance


def test_parquet_text_of_plain_numbers_stays_a_category(tmp_path, capsys):
    """A Parquet string column of versions ("15.0" is not "15") stays text; a CSV reader reads numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    versions = ["14.1", "15.0", "16.2", "11", "12", "15"] * 20
    table = pa.table({"os_version": pa.array(versions, pa.string()),
                      "sdk": pa.array(["30", "31", "33"] * 40, pa.large_string()),
                      "bid": np.linspace(0.1, 5, 120), "ad_id": [f"a{i % 7}" for i in range(120)],
                      "clicked": [0, 1, 1, 0] * 30})
    pq.write_table(table, tmp_path / "log.parquet")
    data = load_table(str(tmp_path / "log.parquet"), labels=["clicked"], item_column="ad_id")
    assert data.frame["os_version"].tolist() == versions
    spec = infer_schema(data.frame, ["clicked"], item_column="ad_id")
    assert spec["os_version"].kind == "categorical" and {"15.0", "15"} <= set(spec["os_version"].vocabulary)
    assert spec["sdk"].kind == "categorical" and spec["bid"].kind == "numeric"
    assert main([str(tmp_path / "log.parquet"), "--labels", "clicked"]) == 0
    assert json.loads(capsys.readouterr().out)["features"][0]["kind"] == "categorical"
    declared = load_table(str(tmp_path / "log.parquet"), labels=["clicked"],
                          column_types=["os_version=numeric"])
    assert declared.frame["os_version"].dtype == np.float64
    table.to_pandas().to_csv(tmp_path / "log.csv", index=False)  # docs/data.md: CSV text reads as numbers
    assert load_table(str(tmp_path / "log.csv"), labels=["clicked"]).frame["os_version"].dtype == np.float64


def test_numbers_written_for_people_are_numbers_in_every_chunk():
    prices = ["€12,50", "€1.250,00", "€ 3,99", None, "-€2,00"]
    frame = pd.DataFrame({"price": prices * 24, "discount": ["10%", "2.5%", "", "0%", "15%"] * 24,
                          "app_version": ["1.10", "1.2", "2.0", "1.10", "3.1"] * 24,  # plain digits: codes
                          "click": [0, 1] * 60})
    spec = infer_schema(frame, ["click"])
    price = spec["price"]
    assert price.kind == "numeric" and price.decimal_comma
    assert "decimal comma" in spec.notes["decisions"]["price"]
    assert price.mean == pytest.approx(np.mean([12.5, 1250.0, 3.99, -2.0]))
    assert spec["discount"].kind == "numeric" and not spec["discount"].decimal_comma
    assert spec["app_version"].kind == "categorical"
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))["price"].decimal_comma
    # a later chunk is read with the spec's decimal mark, also where pandas alone would read it otherwise
    def price_of(values, spec):
        return frame_to_raw(pd.DataFrame({"price": values}), FeatureSpec([spec["price"]], []))["price"]

    assert price_of(["1.250", "7"], spec).tolist() == [1250.0, 7.0]
    assert price_of(["$1,234.50"], spec).tolist() == [1234.5]  # reads one way only: so, whatever the mark
    with pytest.raises(DataError, match="'cheap' is not a number") as err:
        price_of(["€2,00", "cheap"], spec)
    assert err.value.column == "price"
    point = infer_schema(frame.assign(price=["$1,234.50", "$3.99", "$12", None, "$0.50"] * 24), ["click"])
    assert not point["price"].decimal_comma
    assert price_of(["$2,000", ""], point)[0] == 2000.0
    lists = infer_schema(frame.assign(price=["101,234,567", "3,17", "5", None, "8,9"] * 24), ["click"])
    assert lists["price"].is_categorical  # ids joined by commas show no mark of a number
    grouped = infer_schema(frame.assign(price=["104,494", "3,685", "999", None, "12,000"] * 24), ["click"])
    assert grouped["price"].kind == "numeric" and price_of(["2,500"], grouped).tolist() == [2500.0]
    # declared numeric, with a word for missing: typing leaves the text to the spec, which reads it
    typed = type_columns(pd.DataFrame({"price": ["€12,50", "N/A", "€3,00"] * 4, "click": [0, 1] * 6}),
                         ["price=numeric"])
    declared = infer_schema(typed, ["click"])
    read = price_of(typed["price"][:3], declared)
    assert declared["price"].decimal_comma and read[::2].tolist() == [12.5, 3] and np.isnan(read[1])


def test_epoch_milliseconds_under_a_time_like_name_are_a_timestamp_read_as_seconds():
    day = 1_433_000_000
    for scale in (1, 1_000, 1_000_000):
        times = [(day + 60 * i) * scale for i in range(120)]
        frame = pd.DataFrame({"timestamp": times, "click": [0, 1] * 60})
        spec = infer_schema(frame, ["click"])
        assert spec["timestamp"].kind == "timestamp", spec.notes["decisions"]["timestamp"]
        assert frame_to_raw(frame.head(2), spec)["timestamp"].tolist() == [day, day + 60]
    counts = pd.DataFrame({"views": [(day + i) * 1000 for i in range(120)], "click": [0, 1] * 60})
    assert infer_schema(counts, ["click"])["views"].kind == "numeric"  # no time in the name: a number
    minutes = pd.DataFrame({"event_time": [201901011230 + i for i in range(120)], "click": [0, 1] * 60})
    assert infer_schema(minutes, ["click"])["event_time"].kind != "timestamp"  # YYYYMMDDhhmm: no ms of 1976


def test_a_german_erp_exports_columns_read_by_their_names_and_breadcrumbs_as_category_levels():
    paths = [f"{root} > {middle} > {leaf}" for root in ("Haushalt", "Damen", "Herren")
             for middle in ("Küche", "Schuhe", "Garten", "Bad") for leaf in ("Messer", "Töpfe")]  # 24 paths
    frame = pd.DataFrame({"Kategoriepfad": paths * 5, "Menge": [1, 2, 3, 1] * 30,
                          "Erstellt": ["2021-03-04T10:00:00+01:00", "2021-07-04T10:00:00+02:00"] * 60,
                          "click": [0, 1] * 60})
    spec = infer_schema(frame, ["click"])
    assert spec["Kategoriepfad"].kind == "multi_categorical" and spec["Kategoriepfad"].separator == " > "
    assert set(spec["Kategoriepfad"].vocabulary) >= {"Haushalt", "Küche", "Schuhe", "Damen"}
    assert spec["Menge"].kind == "numeric"  # a quantity, whatever its few values
    assert spec["Erstellt"].kind == "timestamp"
    bands = pd.DataFrame({"band": ["0-50", "50-100", "> 100"] * 40, "click": [0, 1] * 60})
    assert infer_schema(bands, ["click"])["band"].kind == "categorical"  # no path: "> 100" is one value


def test_dates_written_with_words_or_as_amazon_reviews_write_them_are_times_not_comma_lists():
    seconds = pd.Timestamp("2009-09-13", tz="UTC").timestamp()
    for written in (["09 13, 2009", "01 2, 2010"], ["Sep 13, 2009", "Jan 2, 2010"],
                    ["13 September 2009", "2 January 2010"], ["September 13th, 2009", "January 2nd, 2010"]):
        frame = pd.DataFrame({"reviewTime": written * 60, "click": [0, 1] * 60})
        spec = infer_schema(frame, ["click"])
        assert spec["reviewTime"].kind == "timestamp", (written, spec.notes["decisions"]["reviewTime"])
        assert frame_to_raw(frame.head(2), spec)["reviewTime"].tolist() == [seconds, seconds + 111 * 86_400]
    unnamed = infer_schema(frame.rename(columns={"reviewTime": "shown"}), ["click"])  # a name of no time
    assert "--column-types shown=timestamp reads them" in unnamed.notes["decisions"]["shown"]


def test_prices_with_a_few_ranges_say_how_to_read_them_as_numbers_and_nothing_of_dates(caplog):
    """``$8.58`` beside ``$3.99 - $15.99`` stays text (each price a category), with the flag that reads it;
    the dates probe that tries such text no longer warns of values 'neither dates nor epoch seconds'."""
    from tfrs_recsys.data.sequences import infer_entity_columns

    prices = [f"${5 + i % 120 * 0.37:.2f}" for i in range(240)] + ["$3.99 - $15.99", "$1.00 - $2.00", ""]
    frame = pd.DataFrame({"item": [f"i{i}" for i in range(len(prices))], "price": prices,
                          "y": np.arange(len(prices)) % 2})
    with caplog.at_level("WARNING"):
        spec = infer_schema(frame, ["y"], item_column="item")
    assert spec["price"].is_categorical
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "--column-types price=numeric" in said and "neither dates" not in said
    assert "--column-types price=numeric" in infer_entity_columns(frame, "item", "item")[1]["price"]


def test_prose_is_free_text_not_a_list_joined_by_commas():
    """Reviews (each its own) are left out as free text, in the schema and among retrieval's item features;
    lists of multi-word tags, numbers joined by commas, categories with a sentence among them, addresses,
    titles with initials and long listing titles stay."""
    from tfrs_recsys.data.sequences import infer_entity_columns
    from tfrs_recsys.data.text_values import free_text

    rng = np.random.default_rng(0)
    words = ["good", "battery", "screen", "slow", "cheap", "broke", "after", "week", "love", "colour",
             "kids", "gift", "returned", "works", "fine", "sound", "loud", "small", "large", "fits"]
    tags = ["Free to Play", "Massively Multiplayer", "Open World", "Action", "RPG", "Indie", "Early Access",
            "Great Soundtrack", "Story Rich", "Co-op", "Sci-fi", "Strategy"]
    conditions = ["New", "Used - Like New. No scratches", "Used - Good", "Refurbished", "Used - Acceptable"]

    def review() -> str:
        return ". ".join(" ".join(rng.choice(words, 6)).capitalize() for _ in range(2)) + "!"

    n = 400
    frame = pd.DataFrame({"item": [f"i{i % 80}" for i in range(n)], "review": [review() for _ in range(n)],
                          "tags": [", ".join(rng.choice(tags, 7, replace=False)) for _ in range(n)],
                          "sizes": [", ".join(map(str, rng.integers(0, 9, 10))) for _ in range(n)],
                          "condition": [conditions[i % 5] for i in range(n)],
                          "show": [f"Dr. Who {i % 30}" for i in range(n)], "y": np.arange(n) % 2})
    unique = pd.DataFrame({"address": [f"{i} St. James Ave. Apt {i % 30}" for i in range(n)],  # each its own
                           "book": [f"The Hobbit by J. R. R. Tolkien, Vol. {i}" for i in range(n)],
                           "listing": [f"Apple iPhone 12 Pro Max 128GB Blue Unlocked Renewed Premium {i}"
                                       for i in range(n)]})
    for column in unique:
        assert not free_text(unique[column].value_counts()), column
    spec = infer_schema(frame, ["y"], item_column="item")
    assert "free text" in spec.notes["dropped"]["review"]
    assert spec["tags"].kind == spec["sizes"].kind == "multi_categorical" and spec["tags"].separator == ","
    assert spec["condition"].kind == "categorical" and spec["show"].is_categorical
    items = frame.drop(columns="y").drop_duplicates("item")
    skipped = infer_entity_columns(items, "item", "item")[1]
    assert skipped.get("review") == "free text" and not {"show", "tags", "condition"} & set(skipped)


def test_a_spec_fitted_on_milliseconds_read_as_seconds_is_refused(tmp_path):
    """Versions before 0.2 read epoch milliseconds as seconds: a run's spec whose time feature says so is
    refused on load, with the fix, rather than served features its model never saw."""
    spec = FeatureSpec([FeatureColumn("ts", "timestamp", mean=1.6e9, std=1e6, newest=1.7e9)], [])
    spec.save(tmp_path / "spec.json")
    assert FeatureSpec.load(tmp_path / "spec.json")["ts"].mean == 1.6e9
    data = json.loads((tmp_path / "spec.json").read_text())
    data["features"][0].update(mean=1.6e12, newest=1.7e12)
    (tmp_path / "spec.json").write_text(json.dumps(data))
    with pytest.raises(SchemaError, match="'ts' was fitted on epoch milliseconds.*train the run again"):
        FeatureSpec.load(tmp_path / "spec.json")


def test_a_column_left_out_stops_nothing_with_its_values(tmp_path):
    """97 prices and 3 ranges: an error naming --column-types, unless the column is left out
    (--exclude-columns), whose values are then not typed at all."""
    prices = [f"{5 + i % 40}.99" for i in range(97)] + ["3.99 - 15.99"] * 3
    path = tmp_path / "clicks.csv"
    pd.DataFrame({"user": [f"u{i % 9}" for i in range(100)], "price": prices,
                  "click": np.arange(100) % 2}).to_csv(path, index=False)
    with pytest.raises(DataError, match="price=numeric"):
        load_table(str(path), labels=["click"], user_column="user")
    kept = load_table(str(path), labels=["click"], user_column="user", exclude=["price"]).frame
    assert kept["price"].tolist() == prices
    out = tmp_path / "spec.json"
    assert main([str(path), "--labels", "click", "--user-column", "user", "--out", str(out)]) == 2
    assert main([str(path), "--labels", "click", "--user-column", "user", "--exclude-columns", "price",
                 "--out", str(out)]) == 0  # the schema command reads the file as training does
    assert "price" not in FeatureSpec.load(out).feature_names


def test_a_column_the_given_feature_spec_does_not_list_is_said_left_out(tmp_path, capsys):
    from tfrs_recsys.config_sources import build_config
    from tfrs_recsys.data.bundles import LabeledData
    from tfrs_recsys.training.rankers import ranker_spec

    rng = np.random.default_rng(0)
    day1 = pd.DataFrame({"device": rng.choice(["ios", "android"], 400), "price": rng.random(400),
                         "clicked": rng.integers(0, 2, 400)})
    infer_schema(day1, ["clicked"]).save(tmp_path / "spec.json")
    day2 = day1.assign(placement=rng.choice(["top", "side"], 400))  # a column added since
    cfg = build_config("deepfm", {"feature_spec": str(tmp_path / "spec.json")}, environ={})
    spec = ranker_spec(cfg, LabeledData(day2, ["clicked"]), day2)
    assert "placement" not in {f.name for f in spec.features}
    said = capsys.readouterr().out
    assert "does not list are left out: placement" in said and "price" not in said
