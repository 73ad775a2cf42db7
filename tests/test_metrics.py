"""Metric definitions checked against brute-force computations."""
import numpy as np
import pytest

from tfrs_recsys import metrics
from tfrs_recsys.training.popularity import popularity_ranks


def _pairwise_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


def test_auc_matches_pairwise_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 10, 500).astype(float)  # many ties
    assert metrics.auc(y, s) == pytest.approx(_pairwise_auc(y, s))
    assert metrics.auc(y, y) == 1.0 and metrics.auc(y, -y) == 0.0
    assert np.isnan(metrics.auc(np.ones(5), np.arange(5)))


def test_gauc_weights_by_impressions_and_skips_one_class_groups():
    y = np.array([1, 0, 0, 1, 0, 1, 1, 1])
    s = np.array([.9, .1, .2, .3, .8, .5, .4, .3])
    g = np.array(["a", "a", "a", "b", "b", "c", "c", "c"])
    value, used, skipped = metrics.gauc(y, s, g)
    expected = (3 * 1.0 + 2 * 0.0) / 5  # group c has one class only
    assert value == pytest.approx(expected) and (used, skipped) == (2, 1)


def _tied_dcg(gains, scores, k):
    """DCG@k, tied items each taking the mean discount of the places their tie spans (brute force)."""
    total, place = 0.0, 0
    for score in sorted(set(scores), reverse=True):
        tied = [g for g, s in zip(gains, scores) if s == score]
        discounts = [1 / np.log2(p + 2) if p < k else 0.0 for p in range(place, place + len(tied))]
        total += sum((2.0 ** g - 1) * np.mean(discounts) for g in tied)
        place += len(tied)
    return total


def test_session_ndcg_of_tied_scores_does_not_depend_on_the_rows_order():
    """A constant model over clicks listed first or last: one value, the mean over the orders of the tie."""
    clicks_first, groups = np.array([1, 1, 0, 0, 0, 0]), np.zeros(6)
    constant = np.full(6, 0.5)
    first, _, _ = metrics.session_ndcg(clicks_first, constant, groups, k=3)
    last, _, _ = metrics.session_ndcg(clicks_first[::-1], constant, groups, k=3)
    # each of the 6 tied rows: the mean discount of places 0-5, nothing past k = 3; two of them clicks
    expected = 2 * sum(1 / np.log2(p + 2) for p in range(3)) / 6 / metrics.dcg([1, 1], 3)
    assert first == pytest.approx(expected) and last == pytest.approx(expected)
    assert 0.2 < expected < 0.6  # neither of the input orders' 1.0 and 0.15


def test_session_ndcg_hand_example():
    gains = np.array([0, 2, 1, 0])
    scores = np.array([.4, .3, .2, .1])
    groups = np.zeros(4)
    dcg = (2 ** 2 - 1) / np.log2(3) + (2 ** 1 - 1) / np.log2(4)
    idcg = (2 ** 2 - 1) / np.log2(2) + (2 ** 1 - 1) / np.log2(3)
    value, used, skipped = metrics.session_ndcg(gains, scores, groups, k=10)
    assert value == pytest.approx(dcg / idcg) and (used, skipped) == (1, 0)


@pytest.mark.parametrize("slice_rows", [None, 37])
def test_grouped_metrics_equal_one_group_at_a_time_with_ties_and_one_class_groups(slice_rows, monkeypatch):
    """gauc, pairwise_auc and session_ndcg compute the groups of a slice of rows at once (one slice here,
    or many with ``slice_rows``); each group alone, brute force."""
    if slice_rows:
        monkeypatch.setattr(metrics, "_SLICE_ROWS", slice_rows)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    y[:40] = 1  # whole one-class groups below
    s = rng.integers(0, 6, 600).astype(float)  # many ties within groups
    gains = rng.integers(0, 3, 600).astype(float)
    g = np.concatenate([np.repeat([-7, 1000], 20), rng.integers(0, 30, 560)])
    per_group, ndcgs = [], []
    for group in np.unique(g):
        yg, sg, gg = y[g == group], s[g == group], gains[g == group]
        if 0 < yg.sum() < len(yg):
            per_group.append((_pairwise_auc(yg, sg), len(yg), yg.sum() * (len(yg) - yg.sum())))
        if gg.max() > 0:
            ndcgs.append(_tied_dcg(gg, sg, 5) / metrics.dcg(np.sort(gg)[::-1], 5))
    aucs, sizes, pair_counts = map(np.array, zip(*per_group))
    groups = len(np.unique(g))
    assert metrics.gauc(y, s, g) == (pytest.approx(np.average(aucs, weights=sizes)), len(aucs),
                                     groups - len(aucs))
    assert metrics.pairwise_auc(y, s, g) == (pytest.approx(np.average(aucs, weights=pair_counts)),
                                             pair_counts.sum(), len(aucs))
    assert metrics.session_ndcg(gains, s, g, k=5) == (pytest.approx(np.mean(ndcgs)), len(ndcgs),
                                                      groups - len(ndcgs))


def test_gauc_ties_nan_scores_as_auc_does():
    y, s = np.array([1, 0, 1, 0]), np.array([np.nan, np.nan, .5, .1])
    assert metrics.gauc(y, s, np.zeros(4)) == (pytest.approx(metrics.auc(y, s)), 1, 0)


def test_click_conversion_ndcg_ranks_by_expected_gain():
    """Clicked a (p_ctr .9, p_ctcvr .2) and converted b (p_ctr .5, p_ctcvr .45): with gains click=1 and
    conversion=2 their expected gains 2^g - 1 are .7 + 3 * .2 = 1.3 and .05 + 3 * .45 = 1.4, so b leads;
    p_ctr + p_ctcvr (1.1 vs .95) would put a first."""
    click, conversion = np.array([1, 1, 0]), np.array([0, 1, 0])
    p_ctr, p_ctcvr = np.array([.9, .5, .1]), np.array([.2, .45, .01])
    groups = np.zeros(3)
    best = metrics.dcg([2, 1, 0], 10)
    value, used, skipped = metrics.click_conversion_ndcg(click, conversion, p_ctr, p_ctcvr, groups)
    assert value == pytest.approx(1.0) and (used, skipped) == (1, 0)
    by_sum, _, _ = metrics.session_ndcg([1, 2, 0], p_ctr + p_ctcvr, groups)
    assert by_sum == pytest.approx(metrics.dcg([1, 2, 0], 10) / best) and by_sum < 0.9
    booking, _, _ = metrics.click_conversion_ndcg(click, conversion, p_ctr, p_ctcvr, groups, k=1,
                                                  gains={"click": 1, "conversion": 5}, scores=p_ctr)
    assert booking == pytest.approx(1 / 31)  # ranked by p_ctr: the click (2^1 - 1) first, not the booking


def test_expected_auc_matches_the_average_over_bernoulli_draws():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.6, size=300)
    scores = np.round(truth + rng.normal(0, 0.15, size=300), 1)  # ties on purpose
    draws = [metrics.auc(rng.random(300) < truth, scores) for _ in range(3000)]
    assert metrics.expected_auc(truth, scores) == pytest.approx(np.mean(draws), abs=0.005)
    assert metrics.expected_auc(truth, truth) > metrics.expected_auc(truth, -truth)


def test_spearman_is_the_correlation_of_mid_ranks():
    a, b = np.array([1.0, 2.0, 2.0, 5.0, 9.0]), np.array([3.0, 1.0, 4.0, 4.0, 10.0])
    ra, rb = np.array([1, 2.5, 2.5, 4, 5]), np.array([2, 1, 3.5, 3.5, 5])
    assert metrics.spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert metrics.spearman(a, np.exp(a)) == pytest.approx(1.0) and np.isnan(metrics.spearman(a, np.ones(5)))


def test_topk_metrics_and_rank_of_target_against_sorting():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(200, 60))
    target = rng.integers(0, 60, 200)
    exclude = rng.random((200, 60)) < 0.2
    exclude[np.arange(200), target] = False
    ranks = metrics.rank_of_target(scores, target, exclude)
    for i in range(200):
        kept = np.flatnonzero(~exclude[i])
        order = kept[np.argsort(-scores[i, kept])]
        assert ranks[i] == int(np.flatnonzero(order == target[i])[0])
    m = metrics.topk_metrics(ranks, ks=(10,))
    assert m["recall@10"] == pytest.approx(np.mean(ranks < 10))
    assert m["ndcg@10"] == pytest.approx(np.mean([1 / np.log2(r + 2) if r < 10 else 0 for r in ranks]))
    assert m["mrr@10"] == pytest.approx(np.mean([1 / (r + 1) if r < 10 else 0 for r in ranks]))
    exclude[np.arange(100), target[:100]] = True  # half the targets are excluded themselves: misses
    ranks_out = metrics.rank_of_target(scores, target, exclude)
    assert np.all(ranks_out[:100] == 60) and np.array_equal(ranks_out[100:], ranks[100:])


def test_popularity_ranks_are_rank_of_target_of_the_counts_repeated_for_every_query():
    """Ties (small integer counts), excluded items, duplicate exclusions and excluded targets alike."""
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 6, 50)
    target = rng.integers(0, 50, 300)
    exclude = [rng.integers(0, 50, rng.integers(0, 8)) for _ in range(300)]
    exclude[:20] = [np.array([t, t]) for t in target[:20]]
    mask = np.zeros((300, 50), dtype=bool)
    for i, skipped in enumerate(exclude):
        mask[i, skipped] = True
    dense = metrics.rank_of_target(np.tile(counts, (300, 1)), target, mask)
    assert np.array_equal(popularity_ranks(counts, target, exclude), dense)
    assert np.all(dense[:20] == 50)


@pytest.mark.parametrize("cells", [7, 64, 10_000])
def test_dot_product_ranks_by_item_blocks_are_the_ranks_of_the_whole_score_matrix(cells):
    """Blocks of any size (one item, a few, all) give rank_of_target's ranks, with ties (integer vectors),
    excluded items, a target among its own excluded items and duplicate exclusions."""
    rng = np.random.default_rng(3)
    queries = rng.integers(-2, 3, (40, 4)).astype(np.float32)
    items = rng.integers(-2, 3, (90, 4)).astype(np.float32)
    targets = rng.integers(0, 90, 40)
    excluded = [rng.integers(0, 90, rng.integers(0, 12)) for _ in range(40)]
    excluded[0] = np.array([targets[0], targets[0], 5])
    mask = np.zeros((40, 90), bool)
    for row, items_out in enumerate(excluded):
        mask[row, items_out] = True
    expected = metrics.rank_of_target(queries @ items.T, targets, mask)
    assert len(set(expected)) > 10
    assert expected[0] == 90  # an excluded target is never retrieved
    np.testing.assert_array_equal(metrics.dot_product_ranks(queries, items, targets, excluded, cells=cells),
                                  expected)
    np.testing.assert_array_equal(metrics.dot_product_ranks(queries, items, targets, cells=cells),
                                  metrics.rank_of_target(queries @ items.T, targets))


@pytest.mark.parametrize("queries_at_once", [1, 5, 13])
def test_dot_product_ranks_count_rounding_ties_against_the_target(queries_at_once):
    """Real-valued vectors, every item with an exact twin: the ranks are the float64 brute force's with
    the documented tie band (so a twin is always ahead of its target, however each product rounds), and a
    model whose items all share one vector ranks every target last."""
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(13, 64)).astype(np.float32)
    vectors = rng.normal(size=(400, 64)).astype(np.float32)
    items = np.concatenate([vectors, vectors])
    targets = rng.integers(0, 400, 13)
    exact = queries.astype(np.float64) @ items.T.astype(np.float64)
    band = 4 * 2.0 ** -24 * np.linalg.norm(queries, axis=1) * np.linalg.norm(items, axis=1).max()
    ahead = exact >= (exact[np.arange(13), targets] - band)[:, None]
    ahead[np.arange(13), targets] = False
    ranks = metrics.dot_product_ranks(queries, items, targets, chunk=queries_at_once, cells=3000)
    np.testing.assert_array_equal(ranks, ahead.sum(axis=1))
    assert all(ahead[np.arange(13), targets + 400])  # the twins
    same = np.repeat(vectors[:1], 800, axis=0)
    np.testing.assert_array_equal(metrics.dot_product_ranks(queries, same, targets, chunk=queries_at_once,
                                                            cells=3000), np.full(13, 799))
    assert len(metrics.dot_product_ranks(queries[:0], items, targets[:0], [])) == 0


def test_ties_rank_against_the_target():
    ranks = metrics.rank_of_target(np.zeros((1, 5)), np.array([2]))
    assert ranks[0] == 4


def test_logloss():
    assert metrics.logloss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
