"""Synthetic generators: each one's ground truth is really in the data it produces."""
import numpy as np
import pandas as pd
import pytest

from tfrs_recsys.data.ctr_features import SECONDS_PER_DAY, item_hotness
from tfrs_recsys.data.synthetic import CATEGORIES, DEVICES, synthetic_ctr_logs, synthetic_sessions
from tfrs_recsys.data.synthetic_interactions import GENRES, synthetic_histories
from tfrs_recsys.metrics import auc, logloss


@pytest.fixture(scope="module")
def histories():
    return synthetic_histories(seed=7)


@pytest.fixture(scope="module")
def sessions():
    return synthetic_sessions(seed=7)


@pytest.fixture(scope="module")
def ctr_logs():
    return synthetic_ctr_logs(seed=7)


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.shape == b.shape and all(a[c].astype(str).equals(b[c].astype(str)) for c in a.columns)


# ---------------------------------------------------------------- histories


def test_histories_follow_the_interaction_contract(histories):
    inter, items = histories.interactions, histories.items
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert inter["timestamp"].dtype == np.int64 and inter["rating"].dtype == np.float64
    assert set(inter["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert histories.num_users == 2000 and len(items) == 500
    assert set(inter["item_id"]) <= set(items["item_id"])
    per_user = inter.groupby("user_id")
    assert per_user["timestamp"].apply(lambda t: bool(np.all(np.diff(t.to_numpy()) > 0))).all()
    assert not inter.duplicated(["user_id", "item_id"]).any()
    sizes = per_user.size()
    assert sizes.min() >= 5 and sizes.max() <= 60
    assert items["genres"].map(len).between(1, 3).all()
    assert set(g for gs in items["genres"] for g in gs) <= set(GENRES[:12])
    first = items.iloc[0]
    assert first["title"] == f"Item {first['item_id']} ({', '.join(first['genres'])})"


def test_histories_are_deterministic_with_the_seed():
    first, again = synthetic_histories(300, 200, seed=7), synthetic_histories(300, 200, seed=7)
    assert _frames_equal(again.interactions, first.interactions) and _frames_equal(again.items, first.items)
    assert not _frames_equal(synthetic_histories(300, 200, seed=8).interactions, first.interactions)


def test_history_popularity_is_heavy_tailed(histories):
    counts = np.sort(histories.interactions["item_id"].value_counts().to_numpy())[::-1]
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.25, top_share  # uniform popularity would give 0.10
    assert counts[0] > 10 * np.median(counts)


def _next_item_hit_rates(data, k=10):
    """Hit@k on each user's last item for co-occurrence, popularity and random, trained on the rest."""
    codes = pd.Index(data.items["item_id"])
    inter = data.interactions.sort_values(["user_id", "timestamp"])
    seqs = [codes.get_indexer(g.to_numpy()) for _, g in inter.groupby("user_id", sort=False)["item_id"]]
    seen = np.zeros((len(seqs), len(codes)))
    for u, s in enumerate(seqs):
        seen[u, s[:-1]] = 1.0
    target = np.array([s[-1] for s in seqs])
    cooc = seen.T @ seen
    np.fill_diagonal(cooc, 0.0)

    def hit(scores):
        scores = np.where(seen > 0, -np.inf, scores)
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        return float((top == target[:, None]).any(axis=1).mean())

    popularity = np.broadcast_to(seen.sum(axis=0), seen.shape)
    random_rate = float(np.mean(k / (len(codes) - seen.sum(axis=1))))
    return hit(seen @ cooc), hit(popularity), random_rate


def test_history_predicts_the_next_item_better_than_popularity(histories):
    cooc, popularity, random_rate = _next_item_hit_rates(histories)
    assert cooc > 5 * random_rate, (cooc, random_rate)
    assert cooc > 1.5 * popularity, (cooc, popularity)
    assert popularity > 2 * random_rate  # popularity is real, too


def _genre_similarity_by_lag(data, lag):
    genres = pd.Series(data.items["genres"].to_numpy(), index=data.items["item_id"])
    onehot = np.array([[g in gs for g in GENRES] for gs in genres], dtype=float)
    onehot /= np.linalg.norm(onehot, axis=1, keepdims=True)
    sim = onehot @ onehot.T
    codes = pd.Index(genres.index)
    near, far = [], []
    for _, g in data.interactions.sort_values(["user_id", "timestamp"]).groupby("user_id")["item_id"]:
        s = codes.get_indexer(g.to_numpy())
        near.append(sim[s[1:], s[:-1]].mean())
        far.append(sim[s[lag:], s[:-lag]].mean())
    return float(np.mean(near)), float(np.mean(far))


def test_tastes_drift_so_recent_items_are_more_alike_than_old_ones():
    kwargs = dict(num_users=600, seed=3, min_history=40, max_history=60)
    near, far = _genre_similarity_by_lag(synthetic_histories(drift=0.15, **kwargs), lag=30)
    assert near - far > 0.02, (near, far)
    near0, far0 = _genre_similarity_by_lag(synthetic_histories(drift=0.0, **kwargs), lag=30)
    assert abs(near0 - far0) < 0.01, (near0, far0)  # no drift: the lag does not matter


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_items=50, max_history=60), "max_history"),
    (dict(min_history=0), "min_history"),
    (dict(num_genres=40), "num_genres"),
    (dict(num_users=0), "num_users"),
])
def test_histories_reject_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        synthetic_histories(**kwargs)


# ---------------------------------------------------------------- sessions


def test_sessions_follow_the_labeled_contract(sessions):
    f = sessions.frame
    assert sessions.labels == ["click", "conversion"]
    assert (sessions.session_column, sessions.user_column, sessions.item_column) == ("session_id", "user_id",
                                                                                      "item_id")
    assert len(f) == 5000 * 20 and f["session_id"].nunique() == 5000
    assert (list(sessions.truth.columns) == ["true_ctr", "true_cvr", "true_ctcvr"]
            and len(sessions.truth) == len(f))
    np.testing.assert_allclose(sessions.truth["true_ctcvr"],
                               sessions.truth["true_ctr"] * sessions.truth["true_cvr"])
    for col in ("user_id", "user_segment", "item_id", "item_category", "price", "position", "device",
                "destination", "hour"):
        assert col in sessions.feature_columns
    assert not set(sessions.truth.columns) & set(f.columns)
    per_session = f.groupby("session_id")
    assert (per_session["position"].apply(lambda p: sorted(p) == list(range(1, 21)))).all()
    for col in ("user_id", "device", "destination", "hour", "timestamp"):
        assert (per_session[col].nunique() == 1).all(), col
    assert not f.duplicated(["session_id", "item_id"]).any()
    assert (f["hour"] == (f["timestamp"] % SECONDS_PER_DAY) // 3600).all()
    assert set(f["device"]) == set(DEVICES) and set(f["item_category"]) <= set(CATEGORIES)


def test_conversion_implies_click(sessions):
    f = sessions.frame
    assert set(f["click"].unique()) <= {0, 1} and set(f["conversion"].unique()) <= {0, 1}
    assert not ((f["conversion"] == 1) & (f["click"] == 0)).any()
    assert f["conversion"].sum() > 100


def test_session_labels_are_calibrated_to_the_truth(sessions):
    f, t = sessions.frame, sessions.truth
    n, clicks = len(f), f["click"].sum()
    ctr = t["true_ctr"].mean()
    assert 0.03 <= f["click"].mean() <= 0.08
    assert abs(f["click"].mean() - ctr) < 4 * np.sqrt(ctr * (1 - ctr) / n)
    # P(conversion | click) over the clicked rows, against the truth's expectation for a click.
    cvr_expected = float((t["true_ctr"] * t["true_cvr"]).sum() / t["true_ctr"].sum())
    assert (abs(f["conversion"].sum() / clicks - cvr_expected)
            < 4 * np.sqrt(cvr_expected * (1 - cvr_expected) / clicks))
    ctcvr = t["true_ctcvr"].mean()
    assert abs(f["conversion"].mean() - ctcvr) < 4 * np.sqrt(ctcvr / n)
    assert auc(f["click"], t["true_ctr"]) > 0.75
    clicked = f["click"] == 1
    assert auc(f.loc[clicked, "conversion"], t.loc[clicked, "true_cvr"]) > 0.7
    assert auc(f["click"], -f["position"]) > 0.55  # position bias


def test_clicked_rows_cover_the_impression_space_unevenly(sessions):
    f, t = sessions.frame, sessions.truth
    clicked = f["click"] == 1
    # Features that raise CTR and lower CVR are over-represented among clicks.
    assert f.loc[clicked, "discount"].mean() > f["discount"].mean() + 0.08
    assert f.loc[clicked, "price"].median() < 0.9 * f["price"].median()
    assert f.loc[clicked, "position"].mean() < f["position"].mean() - 1.5
    mobile = f["device"] == "mobile"
    assert mobile[clicked].mean() > mobile.mean() + 0.02
    # So the CVR seen on clicks is not the CVR of the whole space it must be predicted on.
    assert abs(t.loc[clicked, "true_cvr"].mean() - t["true_cvr"].mean()) > 0.02
    # Hotels that are never clicked take a large share of impressions and convert worse.
    item_clicks = f.groupby("item_id")["click"].transform("sum")
    never = item_clicks == 0
    assert never.mean() > 0.1, never.mean()
    assert t.loc[never, "true_cvr"].mean() < 0.8 * t.loc[~never, "true_cvr"].mean()


def test_sessions_are_deterministic_and_validate_arguments(sessions):
    again = synthetic_sessions(seed=7)
    assert _frames_equal(again.frame, sessions.frame) and _frames_equal(again.truth, sessions.truth)
    small = synthetic_sessions(50, 4, seed=1, num_users=30, num_items=100, num_destinations=5)
    assert len(small.frame) == 200 and small.frame["position"].max() == 4
    with pytest.raises(ValueError, match="session_size"):
        synthetic_sessions(10, 0)
    with pytest.raises(ValueError, match="num_items"):
        synthetic_sessions(10, 20, num_items=100, num_destinations=20)
    with pytest.raises(ValueError, match="ctr"):
        synthetic_sessions(10, 5, ctr=1.5)


# ---------------------------------------------------------------- CTR logs


def test_ctr_logs_follow_the_contract(ctr_logs):
    f = ctr_logs.frame
    assert ctr_logs.labels == ["label"] and list(ctr_logs.truth.columns) == ["true_ctr"]
    assert len(f) == 50000 and len(ctr_logs.truth) == len(f)
    assert {"user_id", "item_id", "item_category", "user_segment", "device", "item_tags", "price", "user_age",
            "item_hotness", "timestamp"} <= set(ctr_logs.feature_columns)
    assert set(f["label"].unique()) == {0, 1}
    assert np.all(np.diff(f["timestamp"].to_numpy()) >= 0)
    tags = f["item_tags"].str.split("|")
    assert (tags.map(len).between(1, 4).all()
            and tags.map(lambda t: all(x.startswith("tag_") for x in t)).all())
    for col in ("price", "user_age", "item_hotness"):
        assert f[col].dtype == np.float64 and f[col].notna().all()
    assert (f["item_hotness"] >= 0).all()
    first_day = f["timestamp"] < f["timestamp"].min() // SECONDS_PER_DAY * SECONDS_PER_DAY + SECONDS_PER_DAY
    assert ((f.loc[first_day, "item_hotness"] == 0).all()
            and (f.loc[~first_day, "item_hotness"] > 0).mean() > 0.9)


def test_ctr_log_hotness_is_item_hotness_of_earlier_days(ctr_logs):
    f = ctr_logs.frame
    day = f["timestamp"] // SECONDS_PER_DAY * SECONDS_PER_DAY
    start = np.sort(day.unique())[5]
    past = item_hotness(f[f["timestamp"] < start], click_col="label", half_life_days=3.0, now=start)
    expected = f.loc[day == start, "item_id"].map(past.set_index("item_id")["hotness"]).fillna(0.0)
    np.testing.assert_allclose(f.loc[day == start, "item_hotness"], expected, rtol=1e-9, atol=1e-12)
    assert auc(f["label"], f["item_hotness"]) > 0.55  # a real, if noisy, signal of item quality


def test_ctr_log_labels_match_the_true_ctr(ctr_logs):
    y, p = ctr_logs.frame["label"], ctr_logs.truth["true_ctr"]
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(y))
    assert auc(y, p) > 0.75
    assert logloss(y, p) < logloss(y, np.full(len(y), y.mean())) - 0.03
    # Calibrated within deciles of the truth, not only on average.
    bins = pd.qcut(p, 10, labels=False)
    observed, predicted = y.groupby(bins).mean(), p.groupby(bins).mean()
    assert np.all(np.abs(observed - predicted)
                  < 4 * np.sqrt(predicted * (1 - predicted) / (len(y) / 10)) + 0.005)


def _one_hot(frame: pd.DataFrame, columns: list) -> np.ndarray:
    """Intercept plus one-hot of each column, or of the pair's joint value for a (column, column) cross."""
    parts = [np.ones((len(frame), 1))]
    for c in columns:
        key = (frame[c].astype(str) if isinstance(c, str)
               else frame[c[0]].astype(str) + "x" + frame[c[1]].astype(str))
        codes, uniques = pd.factorize(key)
        parts.append(np.eye(len(uniques))[codes])
    return np.hstack(parts)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 8) -> np.ndarray:
    """L2-regularized logistic regression by Newton's method (closed-form steps, no library)."""
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        w -= np.linalg.solve(hess, grad)
    return w


def _cross_gain(data) -> tuple[float, float]:
    """Test AUC of logistic regression on main effects, and with segment x category, device x category."""
    f = data.frame.iloc[:30000]
    y = f["label"].to_numpy(float)
    main = ["user_segment", "item_category", "device"]
    crossed = main + [("user_segment", "item_category"), ("device", "item_category")]
    train = np.arange(len(f)) < int(0.8 * len(f))
    scores = []
    for columns in (main, crossed):
        x = _one_hot(f, columns)
        w = _fit_logistic(x[train], y[train])
        scores.append(auc(y[~train], x[~train] @ w))
    return scores[0], scores[1]


def test_pairwise_field_interactions_carry_signal(ctr_logs):
    without, with_cross = _cross_gain(ctr_logs)
    assert with_cross > without + 0.03, (without, with_cross)
    # Control: with the interactions switched off in the generator the crosses add nothing.
    control_without, control_with = _cross_gain(synthetic_ctr_logs(30000, seed=7, interaction_scale=0.0))
    assert control_with < control_without + 0.01, (control_without, control_with)


def test_ctr_logs_are_deterministic_and_validate_arguments(ctr_logs):
    again = synthetic_ctr_logs(seed=7)
    assert _frames_equal(again.frame, ctr_logs.frame)
    with pytest.raises(ValueError, match="num_rows"):
        synthetic_ctr_logs(0)
    with pytest.raises(ValueError, match="ctr"):
        synthetic_ctr_logs(10, ctr=0.0)
