"""Columns of a user's own catalog and log as a spreadsheet writes them: decimal commas beside points, a
word among numbers, attributes named like outcomes, kinds declared over inference."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from tfrs_recsys.config import DeepFMConfig
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.number_text import formatted_numbers
from tfrs_recsys.data.schema_cli import main as schema_main
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.tabular import load_table
from tfrs_recsys.training.rankers import load_and_split, ranker_spec


def _restaurants(tmp_path) -> tuple[str, str]:
    """Clicks (a slot 1-10 per impression) and a ';' table of restaurants rated with decimal commas, one
    rating a word ('neu': new), one missing."""
    rng = np.random.default_rng(5)
    ratings = [f"{r:.1f}".replace(".", ",") for r in rng.uniform(3, 5, 40)]
    ratings[7], ratings[8] = "neu", ""
    items = pd.DataFrame({"restaurant": [f"R{i}" for i in range(40)], "rating": ratings,
                          "delivery_min": rng.integers(15, 60, 40)})
    rows = 600
    log = pd.DataFrame({"customer": [f"c{i % 30}" for i in range(rows)],
                        "restaurant": [f"R{i}" for i in rng.integers(40, size=rows)],
                        "slot": rng.integers(1, 11, rows), "clicked": rng.integers(2, size=rows)})
    log.to_csv(tmp_path / "clicks.csv", index=False)
    items.to_csv(tmp_path / "restaurants.csv", sep=";", index=False)
    return str(tmp_path / "clicks.csv"), str(tmp_path / "restaurants.csv")


def test_a_catalog_rating_with_a_typo_is_an_item_feature_once_declared(tmp_path):
    clicks, restaurants = _restaurants(tmp_path)
    cfg = DeepFMConfig(dataset="csv", data_dir=clicks, label_columns=("clicked",), user_column="customer",
                       item_column="restaurant", items=restaurants)
    with pytest.raises(DataError) as err:  # a word among decimal commas: a typo, not a list of digits
        load_and_split(cfg, "deepfm")
    assert (err.value.path, err.value.line, err.value.column) == (restaurants, 9, "rating")
    assert "38 of 39 values are numbers, not this one: 'neu'" in str(err.value)
    assert "--column-types rating=numeric" in err.value.fix
    declared = dataclasses.replace(cfg, skip_bad_rows=True, column_types=(
        "rating=numeric", "delivery_min=numeric", "slot=numeric"))
    data, split = load_and_split(declared, "deepfm")
    spec = ranker_spec(declared, data, split.train)  # 'rating' named like an outcome, yet the catalog's
    rating = spec["rating"]
    assert (rating.kind, rating.group) == ("numeric", "item")
    assert 3 <= rating.mean <= 5  # 4,2 read as 4.2 (once, with the table), 'neu' and the blank missing
    for name in ("delivery_min", "slot"):  # few distinct integers, declared quantities: not codes
        assert spec[name].kind == "numeric", spec.notes["decisions"][name]
    inferred = ranker_spec(dataclasses.replace(declared, column_types=("rating=numeric",)), data, split.train)
    assert inferred["slot"].is_categorical  # what inference makes of ten integers undeclared


def test_decimal_commas_beside_points_are_one_column_of_numbers(tmp_path):
    prices = ["11.31", "19,81 €", "7,50 €", "", "23.40", "5,05 €"] * 20
    numbers, comma = formatted_numbers(pd.Series(prices))
    assert comma and numbers[:6].tolist()[:3] == [11.31, 19.81, 7.5] and np.isnan(numbers[3])
    assert formatted_numbers(pd.Series(["101,234,567", "3,17", "8,9"])) is None  # ids joined by commas
    path = tmp_path / "orders.csv"
    stars = [f"{tenths / 10:.1f}".replace(".", ",") for tenths in range(30, 50)] * 5 + ["neu", "new"] * 10
    pd.DataFrame({"basket": prices, "stars": stars, "click": [0, 1] * 60}).to_csv(path, sep=";", index=False)
    words = infer_schema(load_table(str(path), labels=["click"]).frame, ["click"])
    assert words["stars"].kind == "categorical"  # a sixth words: "4,5" is one value, not the digits 4 and 5
    assert "--column-types stars=numeric reads them" in words.notes["decisions"]["stars"]
    pd.DataFrame({"basket": prices + [""], "stars": ["4,5", "3,9", "4,0", "4,1", "5", "2,2"] * 20 + ["neu"],
                  "click": [0, 1] * 60 + [1]}).to_csv(path, sep=";", index=False)
    with pytest.raises(DataError, match="'stars': 120 of 121 values are numbers, not this one: 'neu'"):
        load_table(str(path), labels=["click"])  # one word among numbers: a typo
    data = load_table(str(path), labels=["click"], column_types=["stars=numeric"], skip_bad_rows=True)
    spec = infer_schema(data.frame, ["click"])
    assert spec["basket"].kind == "numeric" and spec["stars"].kind == spec["stars"].kind == "numeric"
    assert spec["stars"].decimal_comma
    assert spec["basket"].mean == pytest.approx(np.mean([11.31, 19.81, 7.5, 23.4, 5.05]))


def test_the_schema_command_takes_trainings_flags(tmp_path):
    clicks, _ = _restaurants(tmp_path)
    out = tmp_path / "spec.json"
    assert schema_main([clicks, "--labels", "clicked", "--exclude-columns", "customer",
                        "--column-types", "slot=numeric", "--out", str(out)]) == 0
    spec = pd.read_json(out, typ="series")
    kinds = {f["name"]: f["kind"] for f in spec["features"]}
    assert kinds == {"restaurant": "categorical", "slot": "numeric"}  # 40 restaurants, not named an id
    _, restaurants = _restaurants(tmp_path)
    assert schema_main([clicks, "--labels", "clicked", "--item-column", "restaurant", "--items", restaurants,
                        "--column-types", "rating=numeric", "--skip-bad-rows", "--out", str(out)]) == 0
    joined = {f["name"]: (f["kind"], f["group"]) for f in pd.read_json(out, typ="series")["features"]}
    assert joined["rating"] == ("numeric", "item")  # the table's columns, as training joins them


def test_a_time_column_mixing_dates_seconds_and_a_typo_is_a_time(tmp_path, caplog):
    from tfrs_recsys.data.schema import frame_to_raw

    rows = 300
    start = 1_760_000_000
    ts = [pd.Timestamp(start + 3600 * i, unit="s", tz="UTC").isoformat() if i % 3 else str(start + 3600 * i)
          for i in range(rows)]
    ts[5] = ts[77] = "not-a-date"
    frame = pd.DataFrame({"visitor": [f"v{i % 20}" for i in range(rows)], "ts": ts,
                          "clicked": [i % 2 for i in range(rows)]})
    frame.to_csv(tmp_path / "clicks.csv", index=False)
    for time_column in ("ts", None):  # declared, or read from its name
        cfg = DeepFMConfig(dataset="csv", data_dir=str(tmp_path / "clicks.csv"), label_columns=("clicked",),
                           user_column="visitor", time_column=time_column)
        data, split = load_and_split(cfg, "deepfm")
        spec = ranker_spec(cfg, data, split.train)
        assert spec["ts"].kind == "timestamp", spec.notes["decisions"].get("ts")
        seconds = frame_to_raw(data.frame, spec)["ts"]
        assert np.isnan(seconds).sum() == 2  # the typos missing, every other value a time
        want = np.array([start + 3600 * i for i in range(rows) if i not in (5, 77)], dtype=float)
        np.testing.assert_array_equal(np.sort(seconds[np.isfinite(seconds)]), want)
    assert any("neither dates nor epoch seconds" in r.getMessage() for r in caplog.records)


def test_a_label_of_digits_with_a_few_words_reads_the_words(tmp_path):
    clicked = ["1", "0"] * 30 + ["yes", "no", "Yes"]
    path = tmp_path / "clicks.csv"
    items = [f"i{i % 7}" for i in range(len(clicked))]
    pd.DataFrame({"item": items, "clicked": clicked}).to_csv(path, index=False)
    data = load_table(str(path), labels=["clicked"], item_column="item", skip_bad_rows=True)
    assert len(data.frame) == 63 and data.frame["clicked"].tolist()[-3:] == [1, 0, 1]  # none skipped


def test_a_users_birthday_before_1970_is_a_time(tmp_path):
    clicks, _ = _restaurants(tmp_path)
    users = pd.DataFrame({"customer": [f"c{i}" for i in range(30)],
                          "birthday": [f"{1 + i % 28:02d}/{1 + i % 12:02d}/{1950 + i}" for i in range(30)]})
    users.to_csv(tmp_path / "users.csv", index=False)
    cfg = DeepFMConfig(dataset="csv", data_dir=clicks, label_columns=("clicked",), user_column="customer",
                       item_column="restaurant", users=str(tmp_path / "users.csv"))
    data, split = load_and_split(cfg, "deepfm")
    birthday = ranker_spec(cfg, data, split.train)["birthday"]
    assert (birthday.kind, birthday.group, birthday.raw_dtype) == ("timestamp", "user", "float64")
    assert data.frame["birthday"].min() < 0  # seconds before 1970, as a 1950s birthday is


def test_prices_in_several_currencies_are_said_to_be_read_as_one_scale(caplog):
    prices = pd.Series(["€12,81", "$22.18", "¥3,988", "16.96 EUR", "€4,50", None] * 20)
    spec = infer_schema(pd.DataFrame({"price": prices, "click": [0, 1] * 60}), ["click"])
    assert spec["price"].kind == "numeric"
    assert "in 3 currencies ($ ¥ €) read as one scale" in spec.notes["decisions"]["price"]
    assert any("convert them to one currency" in r.getMessage() for r in caplog.records)


def test_a_long_table_of_one_row_per_property_is_refused_with_how_to_pivot_it(tmp_path):
    from tfrs_recsys.data.entities import read_entity_table

    long = pd.DataFrame({"timestamp": [3, 1, 2, 1], "itemid": [7, 7, 7, 8],
                         "property": ["categoryid", "categoryid", "available", "categoryid"],
                         "value": ["12", "11", "1", "5"]})
    long.to_csv(tmp_path / "item_properties.csv", index=False)
    with pytest.raises(DataError, match="item '7' has two rows") as err:
        read_entity_table(str(tmp_path / "item_properties.csv"), "itemid", "item", False, [], [])
    pivot = err.value.fix.split("e.g. in pandas: table")[1].split(" (the latest")[0]
    wide = eval("long" + pivot)  # the fix's own code, run on the table
    assert wide.set_index("itemid").to_dict("index") == {7: {"available": "1", "categoryid": "12"},
                                                         8: {"available": np.nan, "categoryid": "5"}}
