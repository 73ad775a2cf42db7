"""Split invariants on real MovieLens 100K and synthetic sessions; the leakage checker on leaky splits."""
import numpy as np
import pandas as pd
import pytest
from conftest import dataset_path

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.movielens import load_movielens_100k
from tfrs_recsys.data.splits import (
    Split,
    check_no_leakage,
    leave_last_out,
    random_split,
    split_by_session,
    split_by_time,
)
from tfrs_recsys.data.synthetic import synthetic_sessions


@pytest.fixture(scope="module")
def ml100k(datasets_dir):
    return load_movielens_100k(dataset_path(datasets_dir, "ml-100k"))


@pytest.fixture(scope="module")
def sessions():
    return synthetic_sessions(num_sessions=400, session_size=10, seed=3).frame


def _partition(split: Split, frame: pd.DataFrame) -> None:
    """The parts are disjoint and together are exactly the input rows."""
    labels = np.concatenate([p.index.to_numpy() for p in split.parts().values()])
    assert len(labels) == len(frame) and len(np.unique(labels)) == len(frame)
    assert set(labels) == set(frame.index)
    for part in split.parts().values():
        pd.testing.assert_frame_equal(part, frame.loc[part.index])


def test_leave_last_out_on_movielens_100k(ml100k):
    frame = ml100k.interactions
    split = leave_last_out(ml100k)
    _partition(split, frame)
    assert len(split.test) == len(split.validation) == 943  # every ML-100K user has >= 20 ratings
    assert split.test["user_id"].is_unique and split.validation["user_id"].is_unique
    # The test row is each user's latest; among equal timestamps, the one later in the file.
    position = pd.Series(np.arange(len(frame)), index=frame.index)
    keyed = frame.assign(_pos=position).sort_values(["user_id", "timestamp", "_pos"])
    expected_test = keyed.groupby("user_id").tail(1).index
    expected_val = keyed.drop(expected_test).groupby("user_id").tail(1).index
    assert set(split.test.index) == set(expected_test)
    assert set(split.validation.index) == set(expected_val)
    latest_train = split.train.groupby("user_id")["timestamp"].max()
    val_time = split.validation.set_index("user_id")["timestamp"]
    test_time = split.test.set_index("user_id")["timestamp"]
    assert (latest_train <= val_time.reindex(latest_train.index)).all()
    assert (val_time <= test_time.reindex(val_time.index)).all()
    summary = split.summary()
    assert summary["train"] == {"rows": 98_114, "users": 943}
    assert summary["test"] == {"rows": 943, "users": 943} and summary["train_only_users"] == 0


def test_leave_last_out_ties_keep_file_order_and_short_users_stay_in_train():
    frame = pd.DataFrame({
        "user_id": ["a", "a", "a", "a", "b", "b", "c", "c", "c"],
        "item_id": ["1", "2", "3", "4", "1", "2", "9", "8", "7"],
        "timestamp": [10, 30, 20, 30, 5, 6, 3, 2, 1],
    }, index=[f"r{i}" for i in range(9)])
    split = leave_last_out(frame)
    assert split.test.set_index("user_id")["item_id"].to_dict() == {"a": "4", "c": "9"}
    assert split.validation.set_index("user_id")["item_id"].to_dict() == {"a": "2", "c": "8"}
    assert list(split.train["item_id"]) == ["1", "3", "1", "2", "7"]  # by user, then time
    summary = split.summary()
    assert summary["train_only_users"] == 1 and "1 user(s) with fewer than 3" in summary["notes"][0]
    assert summary["test"] == {"rows": 2, "users": 2}
    assert leave_last_out(frame, min_interactions=2).test["user_id"].tolist() == ["a", "b", "c"]


def test_leave_last_out_accepts_datetimes_and_rejects_bad_arguments():
    frame = pd.DataFrame({"user_id": ["a"] * 3, "item_id": ["1", "2", "3"],
                          "when": pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-02"])})
    assert leave_last_out(frame, time_col="when").test["item_id"].tolist() == ["1"]
    with pytest.raises(DataError) as err:
        leave_last_out(frame)
    assert err.value.column == "timestamp" and "time_col" in err.value.fix
    with pytest.raises(DataError, match="empty"):
        leave_last_out(frame.iloc[:0], time_col="when")
    with pytest.raises(DataError) as err:
        leave_last_out(frame.assign(when=[pd.NaT, *frame["when"][1:]]), time_col="when")
    assert err.value.column == "when" and "missing" in str(err.value)
    with pytest.raises(DataError, match="min_interactions"):
        leave_last_out(frame, time_col="when", min_interactions=1)


def test_random_split_is_the_seeded_80_20(ml100k):
    frame = ml100k.interactions
    split = random_split(frame)
    _partition(split, frame)
    assert (len(split.train), len(split.test)) == (80_000, 20_000) and split.validation is None
    again, other = random_split(frame, seed=42), random_split(frame, seed=7)
    assert split.test.index.equals(again.test.index)
    assert not split.test.index.equals(other.test.index)
    three = random_split(frame, test_fraction=0.1, validation_fraction=0.1)
    _partition(three, frame)
    assert (len(three.train), len(three.validation), len(three.test)) == (80_000, 10_000, 10_000)
    for bad in (dict(test_fraction=0.0), dict(test_fraction=1.2),
                dict(test_fraction=0.5, validation_fraction=0.5)):
        with pytest.raises(DataError, match="fraction"):
            random_split(frame, **bad)


def test_split_by_session_keeps_sessions_whole(sessions):
    split = split_by_session(sessions, "session_id")
    _partition(split, sessions)
    owners = [set(p["session_id"]) for p in split.parts().values()]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    summary = split.summary()
    assert ((summary["train"]["sessions"], summary["validation"]["sessions"], summary["test"]["sessions"])
            == (320, 40, 40))
    same = split_by_session(sessions, "session_id", seed=42)
    assert same.test.index.equals(split.test.index)
    assert not split_by_session(sessions, "session_id", seed=1).test.index.equals(split.test.index)
    two = split_by_session(sessions, "session_id", fractions=(0.7, 0.0, 0.3))
    assert two.validation is None and two.summary()["test"]["sessions"] == 120


def test_split_by_session_bad_arguments(sessions):
    with pytest.raises(DataError) as err:
        split_by_session(sessions, "session_id", fractions=(0.8, 0.1, 0.2))
    assert "fractions" in str(err.value) and "summing to 1" in str(err.value)
    with pytest.raises(DataError) as err:
        split_by_session(sessions, "search_id")
    assert err.value.column == "search_id" and "session_col" in str(err.value)
    with pytest.raises(DataError, match="too few"):
        split_by_session(sessions.iloc[:10], "session_id")


def test_leakage_checker_catches_leaky_splits(ml100k, sessions):
    clean = leave_last_out(ml100k)
    check_no_leakage(clean)
    # Swap one user's test row with their earliest training row: the test is no longer their latest.
    user = clean.test["user_id"].iloc[0]
    earliest = clean.train[clean.train["user_id"] == user].index[0]
    test_row = clean.test.index[0]
    leaky = Split(pd.concat([clean.train.drop(earliest), clean.test.loc[[test_row]]]), clean.validation,
                  pd.concat([clean.train.loc[[earliest]], clean.test.drop(test_row)]),
                  method="leave_last_out", user_column="user_id", time_column="timestamp")
    with pytest.raises(DataError, match=f"user '{user}' has a training interaction later"):
        check_no_leakage(leaky)
    # A held-out row that is also in train.
    copied = Split(pd.concat([clean.train, clean.test.iloc[:1]]), None, clean.test, method="random")
    with pytest.raises(DataError, match="in both train and test"):
        check_no_leakage(copied)
    # A session on two sides.
    by_session = split_by_session(sessions, "session_id")
    moved = by_session.test.index[:1]
    leaky = Split(pd.concat([by_session.train, by_session.test.loc[moved]]), by_session.validation,
                  by_session.test.drop(moved), method="session", session_column="session_id")
    with pytest.raises(DataError, match="has rows in both train and test"):
        check_no_leakage(leaky)
    # A training row later than a test row of a split by time.
    by_time = split_by_time(sessions, "timestamp")
    moved = by_time.test.index[-1:]
    leaky = Split(pd.concat([by_time.train, by_time.test.loc[moved]]), by_time.validation,
                  by_time.test.drop(moved), method="time", time_column="timestamp")
    with pytest.raises(DataError, match="a train row is later than a validation row"):
        check_no_leakage(leaky)


def test_the_tutorial_protocol_queries_each_target_with_the_training_items_before_it():
    """A random split leaves about half of a user's training items after a target: the query reads only
    those before it (by time, then by the log's row at one time); ranking may still skip them all."""
    from tfrs_recsys.data import pairs, sequence_splits
    from tfrs_recsys.data.bundles import InteractionData

    rng = np.random.default_rng(3)
    users, per_user = 30, 40
    frame = pd.DataFrame({"user_id": np.repeat([f"u{i}" for i in range(users)], per_user),
                          "item_id": [f"i{i}" for i in rng.integers(0, 500, users * per_user)],
                          "rating": rng.integers(1, 6, users * per_user).astype(float),
                          "timestamp": rng.integers(0, 60, users * per_user)})  # many ties in time
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # the log's rows out of order
    items = pd.DataFrame({"item_id": sorted(frame["item_id"].unique())})
    split = sequence_splits.random_split(InteractionData(frame, items), seed=1)
    order = frame.assign(row=np.arange(len(frame)))
    order = order.sort_values(["user_id", "timestamp", "row"], kind="stable")
    rank = dict(zip(order["row"], range(len(order))))
    train = split.rows.train
    later_items = 0
    for held, rows in ((split.test, split.rows.test), (split.validation, split.rows.validation)):
        for k, row in enumerate(rows.itertuples()):
            target = rank[row.Index]  # the parts keep the log's row labels
            mine = sorted(train[train["user_id"] == row.user_id].itertuples(), key=lambda r: rank[r.Index])
            earlier = [r.item_id for r in mine if rank[r.Index] < target]  # oldest first
            later_items += len(mine) - len(earlier)
            assert held.histories[k].tolist() == earlier
            assert held.seen[k].tolist() == split.train.histories([row.user_id])[0].tolist()
    assert later_items > 0.3 * len(train)  # the future the queries no longer read
    rated = pairs.rated_held_out(split.rows.test, train, positive_threshold=4)  # every row rated: all kept
    assert [h.tolist() for h in rated.histories] == [h.tolist() for h in split.test.histories]


def test_a_split_by_time_trains_on_the_past_and_tests_on_what_follows():
    rng = np.random.default_rng(5)
    seconds = rng.integers(1_700_000_000, 1_700_900_000, 500)
    frame = pd.DataFrame({"when": pd.to_datetime(seconds, unit="s").strftime("%d.%m.%Y %H:%M:%S"),
                          "session": rng.integers(0, 120, 500), "click": rng.integers(0, 2, 500)})
    split = split_by_time(frame, "when")  # dotted dates, day first, as text
    _partition(split, frame)
    times = {name: seconds[part.index] for name, part in split.parts().items()}
    assert times["train"].max() < times["validation"].min() <= times["validation"].max() < times["test"].min()
    assert [len(p) for p in split.parts().values()] == [400, 50, 50]
    whole = split_by_time(frame, "when", session_col="session")
    assert not set(whole.train["session"]) & set(whole.test["session"])
    first = pd.Series(seconds).groupby(frame["session"]).transform("min").to_numpy()
    assert first[whole.train.index].max() < first[whole.test.index].min()  # a session sits at its start
    with pytest.raises(DataError, match="too many rows share a time"):
        split_by_time(frame.assign(when="01.01.2024"), "when")
    days = pd.DataFrame({"day": pd.date_range("2024-01-01", "2024-02-15").strftime("%d/%m/%Y")})
    by_day = split_by_time(days, "day")  # validation's 06/02-10/02 alone would read month first
    assert by_day.test["day"].tolist() == [f"{day}/02/2024" for day in range(11, 16)]
    with pytest.raises(DataError, match="without a time"):
        split_by_time(days.assign(day=[""] + days["day"].tolist()[1:]), "day")
    leaky = Split(frame.iloc[100:], None, frame.iloc[:100], method="time", time_column="when")
    with pytest.raises(DataError, match="later than a test row"):
        check_no_leakage(leaky)


def test_a_ranker_run_splits_by_time_when_told(datasets_dir, tmp_path):
    from tfrs_recsys.config import ConfigError, DeepFMConfig
    from tfrs_recsys.training import rankers

    cfg = DeepFMConfig(dataset="movielens-100k", data_dir=str(dataset_path(datasets_dir, "ml-100k")),
                       split="time")
    _, split = rankers.load_and_split(cfg, "deepfm")
    assert split.method == "time" and split.train["timestamp"].max() <= split.test["timestamp"].min()
    table = tmp_path / "clicks.csv"
    table.write_text("user,click\nu1,1\nu2,0\n")
    with pytest.raises(ConfigError, match="needs --time-column"):
        DeepFMConfig(dataset="csv", data_dir=str(table), label_columns=("click",), split="time")
