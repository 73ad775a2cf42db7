"""Co-occurrence counts fused with the two-tower: the table against brute force, and what fusion learns."""
import numpy as np
import pandas as pd
import pytest
from test_retrieval_model import small_config

import tfrs_recsys  # noqa: F401
from tfrs_recsys.data import sequences as seq
from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.metrics import target_metrics
from tfrs_recsys.models import cooccurrence as co
from tfrs_recsys.models.cooccurrence import CooccurrenceTable
from tfrs_recsys.training import retrieval as training
from tfrs_recsys.training.cooccurrence import fused_ranks_of_tables, largest_weight_within_one_se


def brute_force_rows(sequences, num_items, damping=0.0):
    table, occurrences = np.zeros((num_items, num_items)), np.zeros(num_items)
    for s in sequences:
        for t in range(len(s)):
            occurrences[s[t]] += 1
            for j in range(1, co.WINDOW + 1):
                if t + j < len(s):
                    table[s[t], s[t + j]] += co.AHEAD_DECAY ** (j - 1)
                    table[s[t + j], s[t]] += co.BEHIND_WEIGHT * co.AHEAD_DECAY ** (j - 1)
    table = table / np.maximum(occurrences, 1) ** damping
    return table / np.maximum(table.sum(axis=1, keepdims=True), 1e-12)


def dense(table, num_items):
    out = np.zeros((num_items, num_items))
    for a in range(num_items):
        known = table.items[a] >= 0
        out[a, table.items[a][known]] = table.weights[a][known]
    return out


def test_the_table_holds_each_items_largest_normalized_counts_and_scores_recent_items():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 12, size=int(rng.integers(2, 15))) for _ in range(40)]
    sequences.append(np.array([3, -1, 4]))  # an item outside the catalog is skipped
    want = brute_force_rows([s[s >= 0] for s in sequences], 12)
    full = CooccurrenceTable.build(sequences, 12, neighbors=50)
    np.testing.assert_allclose(dense(full, 12), want, rtol=1e-5, atol=1e-7)
    # Damped, an item's counts are divided by its occurrences ** alpha before each row is normalized.
    damped = CooccurrenceTable.build(sequences, 12, neighbors=50, damping=0.5)
    np.testing.assert_allclose(dense(damped, 12), brute_force_rows([s[s >= 0] for s in sequences], 12, 0.5),
                               rtol=1e-5, atol=1e-7)
    assert CooccurrenceTable.from_bytes(damped.to_bytes()).damping == 0.5
    damped_want = brute_force_rows([s[s >= 0] for s in sequences], 12, 0.5)
    damped_top = CooccurrenceTable.build(sequences, 12, neighbors=3, damping=0.5)  # the 3 largest, sum 1
    for a in range(12):
        largest = np.sort(damped_want[a])[::-1][:3]
        np.testing.assert_allclose(damped_top.weights[a], largest / largest.sum(), rtol=1e-5)
    top = CooccurrenceTable.build(sequences, 12, neighbors=3)  # each row's 3 largest, largest first, sum 1
    for a in range(12):
        largest = np.sort(want[a])[::-1][:3]
        np.testing.assert_allclose(top.weights[a], largest / largest.sum(), rtol=1e-5)
    history = np.array([5, 1, -1, 2, 7, 9, 11])  # unknown items (-1) skipped; the 5 most recent count
    expected = sum(co.RECENT_DECAY ** k * want[i] for k, i in enumerate([11, 9, 7, 2, 1]))
    np.testing.assert_allclose(full.scores([history])[0], expected, rtol=1e-5, atol=1e-7)


def bundle_interactions(num_users=240, num_items=60, bundle=6, seed=0) -> InteractionData:
    """Users consume whole bundles of 6 items (i, i+1, .., i+5 of a shuffled catalog), each in a random
    order: which items come next is known from the bundle, their order is noise."""
    rng = np.random.default_rng(seed)
    catalog = rng.permutation(num_items)
    rows = []
    for u in range(num_users):
        t = 0
        for b in rng.choice(num_items // bundle, size=3, replace=False):
            for i in rng.permutation(catalog[b * bundle:(b + 1) * bundle]):
                rows.append((f"u{u}", f"i{i}", 4.0, 1_000_000 + 3600 * u + 60 * t))
                t += 1
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(num_items)]})
    return InteractionData(frame, items, None, name="bundles")


def test_the_weight_is_the_largest_within_one_standard_error_of_the_best():
    rng = np.random.default_rng(0)
    base, noise = rng.random(400), rng.normal(0, 0.05, 400)
    noise -= noise.mean()
    values = {(0, 1.0): base + 0.02, (0, 2.0): base + 0.018 + noise, (1, 2.0): base + 0.018 - noise,
              (0, 4.0): base - 0.05}
    # weight 2 trails the best (weight 1) by less than its standard error (0.0025); weight 4 by 20 of them
    assert largest_weight_within_one_se(values) == (0, 2.0)
    assert largest_weight_within_one_se({(0, 1.0): base, (0, 2.0): base - 0.002}) == (0, 1.0)  # no noise


def test_fusion_is_chosen_on_validation_and_lifts_a_weak_tower(tmp_path):
    data = bundle_interactions()
    cfg = small_config(tmp_path, epochs=1, cooccurrence=True, use_user_id=False)
    result = training.train_and_evaluate(cfg, data)
    trained = training.runs.load_retrieval(result.run_dir)
    assert trained.cooccurrence.beta > 0
    # The counts are the training sequences' only (no held-out item), and validation chose the damping and
    # the weight.
    catalog = result.model.catalog_ids.astype(object)
    positions = seq.catalog_positions(result.split.train, catalog)
    tables = [CooccurrenceTable.build(positions, len(catalog), damping=d) for d in co.DAMPINGS]
    chosen = co.DAMPINGS.index(trained.cooccurrence.damping)
    np.testing.assert_array_equal(trained.cooccurrence.items, tables[chosen].items)
    np.testing.assert_allclose(trained.cooccurrence.weights, tables[chosen].weights)
    by_table = fused_ranks_of_tables(result.model, result.split.validation, cfg.max_history, tables, co.BETAS,
                                     cells=training.EVAL_CELLS)
    # The largest weight within one standard error (paired over the validation targets) of the best.
    values = {(d, b): target_metrics(r, (10,))["ndcg@10"] for d, by_beta in zip(co.DAMPINGS, by_table)
              for b, r in by_beta.items()}
    best = values[max(values, key=lambda pair: values[pair].mean())]

    def within_one_se(v):
        gap = v - best
        return gap.mean() >= -gap.std(ddof=1) / np.sqrt(len(gap))

    assert within_one_se(values[trained.cooccurrence.damping, trained.cooccurrence.beta])
    assert not any(within_one_se(v) for (d, b), v in values.items() if b > trained.cooccurrence.beta)
    two_tower = trained.meta["two_tower_test"]["recall@10"]
    # A bundle's last item is one of the 2 (test) or 3 (validation) items left of it: the counts find it.
    assert result.test_metrics["recall@10"] > 0.9 > two_tower + 0.2, (result.test_metrics, two_tower)
    off = training.train_and_evaluate(small_config(tmp_path / "off", epochs=1, cooccurrence=False,
                                                   use_user_id=False), data)
    assert off.test_metrics["recall@10"] == pytest.approx(two_tower, abs=0.1)
