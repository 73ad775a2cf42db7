"""CTR features: item hotness math, MovieLens as leak-free click logs."""
import math

import numpy as np
import pandas as pd
import pytest
from conftest import dataset_path

from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.ctr_features import (
    SECONDS_PER_DAY,
    hot_items,
    item_hotness,
    movielens_click_logs,
    point_in_time_hotness,
)
from tfrs_recsys.data.errors import DataError

DAY = SECONDS_PER_DAY


# ---------------------------------------------------------------- item hotness


def _log(rows):
    return pd.DataFrame(rows, columns=["item_id", "timestamp", "click"])


def test_hotness_decay_matches_a_hand_computed_example():
    now = 14 * DAY
    events = _log([("a", now, 1), ("a", now - 7 * DAY, 0), ("b", now - 14 * DAY, 1),
                   ("c", now - 7 * DAY, 0), ("c", now, 0)])
    out = item_hotness(events, click_col="click", half_life_days=7.0, prior_strength=2.0).set_index("item_id")
    # Weights 0.5 ** (age / 7 days): 1, 0.5, 0.25. Global CTR m = 1.25 / 3.25 = 5/13;
    # alpha = 2m, beta = 2(1-m).
    np.testing.assert_allclose(out.loc[["a", "b", "c"], "decayed_impressions"], [1.5, 0.25, 1.5])
    np.testing.assert_allclose(out.loc[["a", "b", "c"], "decayed_clicks"], [1.0, 0.25, 0.0])
    m = 5 / 13
    expected_ctr = [(1 + 2 * m) / 3.5, (0.25 + 2 * m) / 2.25, (2 * m) / 3.5]
    np.testing.assert_allclose(out.loc[["a", "b", "c"], "smoothed_ctr"], expected_ctr)
    np.testing.assert_allclose(out.loc[["a", "b", "c"], "hotness"],
                               np.log1p([1.5, 0.25, 1.5]) * np.array(expected_ctr))
    assert hot_items(out.reset_index(), 2) == ["a", "c"]
    # Without clicks: hotness is log1p of the decayed impressions; `now` moves the decay.
    plain = item_hotness(events, half_life_days=7.0, now=21 * DAY).set_index("item_id")
    np.testing.assert_allclose(plain.loc[["a", "b", "c"], "decayed_impressions"], [0.75, 0.125, 0.75])
    np.testing.assert_allclose(plain.loc[["a", "b"], "hotness"], np.log1p([0.75, 0.125]))
    assert plain["smoothed_ctr"].isna().all()


def test_prior_strength_comes_from_the_method_of_moments():
    events = _log([("x", 0, int(k < 8)) for k in range(10)] + [("y", 0, 0) for k in range(10)]
                  + [("z", 0, int(k < 6)) for k in range(20)])
    out = item_hotness(events, click_col="click").set_index("item_id")
    # m = 14/40 = 0.35; impression-weighted variance of the raw CTRs (0.8, 0, 0.3) around m is 3.3/40,
    # binomial noise adds 3 items * m(1-m) / 40 impressions; s = m(1-m) / (true variance) - 1.
    v = 3.3 / 40 - 3 * 0.35 * 0.65 / 40
    s = 0.35 * 0.65 / v - 1
    np.testing.assert_allclose(out.loc[["x", "y", "z"], "smoothed_ctr"],
                               [(8 + 0.35 * s) / (10 + s), (0.35 * s) / (10 + s), (6 + 0.35 * s) / (20 + s)])


def test_smoothing_pulls_low_count_items_toward_the_prior():
    rng = np.random.default_rng(0)
    rows = [(f"i{k}", 0, int(rng.random() < ctr)) for k, ctr in enumerate(rng.uniform(0.05, 0.15, 50))
            for _ in range(200)]
    rows += [("lucky", 0, 1)] + [("big", 0, int(k < 300)) for k in range(1000)]
    out = item_hotness(_log(rows), click_col="click").set_index("item_id")
    m = out["decayed_clicks"].sum() / out["decayed_impressions"].sum()
    raw = out["decayed_clicks"] / out["decayed_impressions"]
    assert out.loc["lucky", "smoothed_ctr"] < 0.3  # one click in one view is not a CTR of 1
    assert abs(out.loc["big", "smoothed_ctr"] - 0.3) < 0.02  # 1000 views speak for themselves
    assert np.all(np.abs(out["smoothed_ctr"] - m) <= np.abs(raw - m) + 1e-12)  # shrinks, never overshoots
    assert hot_items(out.reset_index(), 1) == ["big"]


def test_hotness_rejects_bad_input():
    events = _log([("a", 10, 1), ("b", 20, 0)])
    with pytest.raises(DataError, match="'timestamp'.*later than now"):
        item_hotness(events, click_col="click", now=15)
    with pytest.raises(DataError, match="'click'.*0 or 1"):
        item_hotness(events.assign(click=[1, 2]), click_col="click")
    with pytest.raises(DataError, match="'when'.*not in the data"):
        item_hotness(events, time_col="when")
    with pytest.raises(ValueError, match="half_life_days"):
        item_hotness(events, half_life_days=0)
    assert list(item_hotness(events.iloc[:0]).columns) == ["item_id", "decayed_impressions", "decayed_clicks",
                                                            "smoothed_ctr", "hotness"]


def test_point_in_time_hotness_is_item_hotness_of_strictly_earlier_windows():
    rng = np.random.default_rng(1)
    n = 600
    log = pd.DataFrame({"item_id": rng.choice(list("abcdefg"), n), "timestamp": rng.integers(0, 6 * DAY, n),
                        "click": (rng.random(n) < 0.2).astype(int)})
    values = point_in_time_hotness(log, log, click_col="click", half_life_days=2.0)
    start = log["timestamp"] // DAY * DAY
    assert (values[start == 0] == 0).all()
    for day in range(1, 6):
        rows = start == day * DAY
        past = item_hotness(log[log["timestamp"] < day * DAY], click_col="click", half_life_days=2.0,
                            now=day * DAY).set_index("item_id")["hotness"]
        np.testing.assert_allclose(values[rows], log.loc[rows, "item_id"].map(past).fillna(0.0), rtol=1e-9)


# ---------------------------------------------------------------- MovieLens click logs


@pytest.fixture(scope="module")
def ml100k(datasets_dir):
    from tfrs_recsys.data.movielens import load_movielens_100k

    return load_movielens_100k(str(dataset_path(datasets_dir, "ml-100k")))


@pytest.fixture(scope="module")
def clicks(ml100k):
    return movielens_click_logs(ml100k, seed=3)


def test_movielens_click_logs_have_every_rating_as_a_click(ml100k, clicks):
    f = clicks.frame
    assert clicks.labels == ["label"] and clicks.user_column == "user_id" and clicks.item_column == "item_id"
    assert int(f["label"].sum()) == 100_000 and len(f) == 500_000
    pos = f[f["label"] == 1]
    pairs = pd.MultiIndex.from_frame(ml100k.interactions[["user_id", "item_id", "timestamp"]])
    assert (pd.MultiIndex.from_frame(pos[["user_id", "item_id", "timestamp"]]).sort_values()
            .equals(pairs.sort_values()))
    for col in ("genres", "age", "gender", "occupation", "hour", "weekday", "item_hotness", "timestamp"):
        assert col in clicks.feature_columns, col
    assert f["hour"].between(0, 23).all() and f["weekday"].between(0, 6).all()
    star_wars = f.loc[f["item_id"] == "50", "genres"].iloc[0]
    assert star_wars == "Action|Adventure|Romance|Sci-Fi|War"


def test_movielens_negatives_are_unseen_items_at_the_positive_timestamps(ml100k, clicks):
    f = clicks.frame
    neg = f[f["label"] == 0]
    seen = set(zip(ml100k.interactions["user_id"], ml100k.interactions["item_id"]))
    assert not any(pair in seen for pair in zip(neg["user_id"], neg["item_id"]))
    assert neg["item_id"].nunique() > 1500  # drawn from the whole catalog, not only rated items
    per_time = f.groupby(["user_id", "timestamp"])["label"].agg(["sum", "size"])
    assert (per_time["size"] == 5 * per_time["sum"]).all()
    again = movielens_click_logs(ml100k, seed=3).frame
    assert again["item_id"].equals(f["item_id"])
    assert not movielens_click_logs(ml100k, seed=4).frame["item_id"].equals(f["item_id"])


def test_movielens_hotness_uses_only_earlier_days(ml100k, clicks):
    f, ratings = clicks.frame, ml100k.interactions
    day = f["timestamp"] // DAY * DAY
    first = day == day.min()
    assert (f.loc[first, "item_hotness"] == 0).all()
    # Equal to item_hotness over the ratings before the row's day, decayed to its start.
    start = int(np.sort(day.unique())[100])
    past = item_hotness(ratings[ratings["timestamp"] < start], half_life_days=30.0, now=start)
    rows = day == start
    expected = f.loc[rows, "item_id"].map(past.set_index("item_id")["hotness"]).fillna(0.0)
    np.testing.assert_allclose(f.loc[rows, "item_hotness"], expected, rtol=1e-9)
    # Future ratings cannot move it: drop every rating from a cutoff day on and nothing before it changes.
    cutoff = int(np.sort(day.unique())[60])
    earlier = f[f["timestamp"] < cutoff]
    again = point_in_time_hotness(ratings[ratings["timestamp"] < cutoff], earlier, half_life_days=30.0)
    np.testing.assert_array_equal(again, earlier["item_hotness"].to_numpy())
    # And it carries signal: clicked items were hotter than the sampled negatives.
    later = ~first
    assert f.loc[later & (f["label"] == 1), "item_hotness"].mean() > 1.5 * f.loc[later & (f["label"] == 0),
                                                                                     "item_hotness"].mean()


def test_movielens_click_logs_reject_users_who_rated_everything():
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["a", "b"], "genres": [["Drama"], []]})
    inter = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["1", "2", "1"], "rating": [4.0, 5.0, 3.0],
                          "timestamp": np.array([1, 2, 3], dtype=np.int64)})
    data = InteractionData(inter, items)
    with pytest.raises(DataError, match="'u' rated every item"):
        movielens_click_logs(data)
    out = movielens_click_logs(data, negatives_per_positive=0).frame
    assert len(out) == 3 and out["label"].eq(1).all() and set(out["genres"]) == {"Drama", ""}
    with pytest.raises(ValueError, match="negatives_per_positive"):
        movielens_click_logs(data, negatives_per_positive=-1)
    assert math.isclose(movielens_click_logs(InteractionData(inter[inter["user_id"] == "v"], items),
                                             negatives_per_positive=3).frame["label"].mean(), 0.25)
