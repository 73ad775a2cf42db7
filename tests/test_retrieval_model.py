"""Retrieval model: sequences, towers, losses (logQ sign, accidental hits), learning a known ground truth."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys.config import ConfigError, RetrievalConfig
from tfrs_recsys.data import sequence_splits
from tfrs_recsys.data import sequences as seq
from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.metrics import topk_metrics
from tfrs_recsys.models.retrieval import (
    InverseTemperature,
    TwoTowerRetrieval,
    Vocabularies,
    resolve_negatives,
    sampled_retrieval_task,
)
from tfrs_recsys.models.towers import ItemEncoder, ItemTower, QueryTower, SequenceEncoder
from tfrs_recsys.training import retrieval as training


def ring_interactions(num_users: int = 300, num_items: int = 60, *, min_len: int = 8, max_len: int = 16,
                      seed: int = 0) -> InteractionData:
    """Users walk a ring of items: next = last + step, step 1 for segment 'a' users and 2 for 'b'.

    The next item is fully determined by the history, so a sequence model can reach recall@10 = 1,
    while popularity is flat (recall@10 about 10 / num_items).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        step, start, length = 1 + u % 2, int(rng.integers(num_items)), int(rng.integers(min_len, max_len + 1))
        for t in range(length):
            rows.append((f"u{u}", f"i{(start + step * t) % num_items}", 4.0, 1_000_000 + 3600 * u + 60 * t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(num_items)],
                          "title": [f"Item {i}" for i in range(num_items)],
                          "genres": [[f"g{i % 5}"] for i in range(num_items)]})
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(num_users)],
                          "segment": ["ab"[u % 2] for u in range(num_users)]})
    return InteractionData(interactions, items, users, name="ring")


def segment_interactions(num_users: int = 300, num_items: int = 60, num_segments: int = 4, per_user: int = 10,
                         seed: int = 0) -> InteractionData:
    """Order-free tastes: a user of segment s interacts with random items of genre s only."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        pool = [i for i in range(num_items) if i % num_segments == u % num_segments]
        for t, i in enumerate(rng.choice(pool, size=per_user, replace=False)):
            rows.append((f"u{u}", f"i{i}", 4.0, 1_000_000 + 3600 * u + 60 * t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(num_items)],
                          "title": [f"Item {i}" for i in range(num_items)],
                          "genres": [[f"g{i % num_segments}"] for i in range(num_items)]})
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(num_users)],
                          "segment": [f"s{u % num_segments}" for u in range(num_users)]})
    return InteractionData(interactions, items, users, name="segments")


def small_config(tmp_path, **overrides) -> RetrievalConfig:
    values = dict(output_dir=str(tmp_path / "run"), epochs=12, batch_size=64, learning_rate=5e-3,
                  embedding_dim=32, max_history=16, num_blocks=1, num_heads=2, ff_dim=64, dropout=0.1,
                  patience=100, progress=False, seed=7, cooccurrence=False)
    values.update(overrides)
    return RetrievalConfig(**values)


def popularity_recall(split: seq.SequenceSplit, k: int = 10) -> float:
    counts = pd.Series(np.concatenate(split.train.items)).value_counts()
    ranks = []
    for target, exclude in zip(split.test.targets, split.test.exclude):
        order = [i for i in counts.index if i not in set(exclude)]
        ranks.append(order.index(target) if target in order else len(order))
    return topk_metrics(np.array(ranks), (k,))[f"recall@{k}"]


# --- sequences ----------------------------------------------------------------------------------

def test_test_targets_of_one_basket_with_the_history_are_said(caplog):
    rows = [(f"u{u}", f"i{(u + k) % 40}", 1.0, 1_700_000_000 + 86_400 * (k // 3))
            for u in range(30) for k in range(6)]  # two orders of three lines each
    baskets = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(40)]})
    with caplog.at_level("WARNING"):
        sequence_splits.leave_last_out(InteractionData(baskets, items))
    assert "100% of the test targets share their time" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # one item at a time: nothing said
        sequence_splits.leave_last_out(InteractionData(baskets.assign(timestamp=np.arange(180)), items))
    assert "share their time" not in caplog.text


def test_leave_last_out_orders_ties_by_file_order_and_holds_out_the_last_two():
    frame = pd.DataFrame({"user_id": ["u", "u", "u", "u", "v"], "item_id": ["c", "a", "b", "d", "a"],
                          "rating": 1.0, "timestamp": [5, 5, 1, 9, 1]})
    split = sequence_splits.leave_last_out(InteractionData(frame, pd.DataFrame({"item_id": list("abcd")})))
    # b (t=1), then c before a (same second, file order)
    u, v = split.train.histories(["u", "v"])
    assert u.tolist() == ["b", "c"]
    assert v.tolist() == ["a"]  # too short to evaluate: all training
    assert split.validation.targets.tolist() == ["a"] and split.test.targets.tolist() == ["d"]
    assert (split.test.histories[0].tolist() == ["b", "c", "a"]
            and split.test.exclude[0].tolist() == ["b", "c", "a"])


@pytest.mark.parametrize("max_len,stride", [(4, None), (4, 2), (3, 1), (20, None)])
def test_all_positions_windows_cover_every_target_once(max_len, stride):
    items = np.array([f"i{t}" for t in range(11)], dtype=object)
    windows = seq.training_windows(seq.Sequences(np.array(["u"], dtype=object), [items]), max_len,
                                   stride=stride)
    targets = [t for t in windows["targets"].ravel() if t]
    assert sorted(targets) == sorted(items[1:].tolist())  # every item but the first, exactly once
    for history, target in zip(windows["history"], windows["targets"]):
        for t in range(max_len):
            if target[t]:  # the target follows the history at its position
                assert int(target[t][1:]) == int(history[t][1:]) + 1
    assert all(w[-1] for w in windows["history"])  # right-aligned: the newest item is last
    with pytest.raises(ValueError, match="stride"):
        seq.training_windows(seq.Sequences(np.array(["u"], dtype=object), [items]), max_len, stride=0)
    stride = stride or max_len
    for history, target in zip(windows["history"], windows["targets"]):
        for t in np.flatnonzero(target):  # each target sees max_len - stride + 1 items, or all before it
            assert (history[:t + 1] != "").sum() >= min(max_len - stride + 1, int(target[t][1:]))


@pytest.mark.parametrize("mode", ["all_positions", "prefix"])
def test_each_batch_carries_the_items_its_windows_sequence_held_before_the_window(mode):
    catalog = np.array([f"i{t:02d}" for t in range(30)], dtype=object)
    train = seq.Sequences(np.array(["u", "v"], dtype=object), [catalog[:23], catalog[:22:-1]])  # disjoint
    windows = seq.training_windows(train, 4, mode=mode)
    ds = seq.training_dataset(windows, 3, sequence_positions=seq.catalog_positions(train, catalog))
    checked = 0
    for batch in ds:
        for history, before in zip(batch["history"].numpy().astype(str), batch["seen_before"].numpy()):
            first = next(i for i in history if i)
            sequence = next(s for s in train.items if first in s and history[-1] in s)
            expected = sequence[:list(sequence).index(first)]
            assert catalog[before[before > 0] - 1].tolist() == expected.tolist()
            checked += 1
    assert checked == len(windows["user_id"])


def test_prefix_windows_one_target_per_example():
    items = np.array(["a", "b", "c", "d"], dtype=object)
    windows = seq.training_windows(seq.Sequences(np.array(["u"], dtype=object), [items]), 2, mode="prefix")
    assert windows["history"].tolist() == [["", "a"], ["a", "b"], ["b", "c"]]
    assert windows["targets"].tolist() == [["", "b"], ["", "c"], ["", "d"]]


def test_entity_features_reject_unknown_columns():
    with pytest.raises(Exception, match="not in the item table"):
        seq.entity_features(pd.DataFrame({"item_id": ["a"]}), "item_id", np.array(["a"]), ["genre"],
                            group="item")


def test_entity_features_read_integer_codes_as_categories_and_quantities_as_numbers_as_the_rankers_do():
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(300)], "categoryid": np.arange(300) * 7 % 1700,
                          "available": np.arange(300) % 2, "price": np.arange(300) % 150,
                          "brand": np.arange(300) % 150, "shelf": np.nan})
    items.loc[:150, "shelf"] = np.arange(151) % 60  # codes beside a gap: whole floats
    catalog = np.array([*items["item_id"], "new"], dtype=object)
    columns = ["categoryid", "available", "price", "shelf"]
    specs, tables = seq.entity_features(items, "item_id", catalog, columns, group="item")
    kinds = {spec.name: spec.kind for spec in specs}
    assert kinds == {"categoryid": "categorical", "available": "categorical", "price": "numeric",
                     "shelf": "categorical"}  # a categoryid of 300 codes too: its name says codes
    vocabulary = next(spec for spec in specs if spec.name == "shelf").vocabulary
    assert "7" in vocabulary and "7.0" not in vocabulary and tables["shelf"][-1] == 0  # "new": none
    # a run reloaded reads its saved catalog's items (fewer distinct values) as the kinds it trained with
    trained = Vocabularies.build(catalog, None, items, None, ["brand"], [])  # 150 codes: a number
    reloaded = Vocabularies.of_spec(catalog[:90], None, items.head(90), None, trained.spec)
    assert trained.spec["brand"].kind == reloaded.spec["brand"].kind == "numeric"
    assert Vocabularies.build(catalog[:90], None, items.head(90), None, ["brand"], []).spec["brand"].kind == (
        "categorical")  # what reading the 90 anew would have made of it


# --- towers -------------------------------------------------------------------------------------

def _tiny_model(transformer: bool = True, **overrides) -> TwoTowerRetrieval:
    cfg = RetrievalConfig(embedding_dim=8, max_history=4, num_blocks=1, num_heads=2, ff_dim=8,
                          use_transformer=transformer, **overrides)
    data = ring_interactions(20, 12)
    catalog = seq.catalog_ids(data.interactions)
    vocab, _ = training.build_vocabularies(cfg, data, catalog,
                                           np.array([f"u{u}" for u in range(20)], dtype=object))
    return training.build_model(cfg, vocab)


def test_query_tower_handles_padding_side_unknown_items_unknown_users_and_empty_histories():
    model = _tiny_model(similarity="cosine")
    def q(users, hist):
        return model.query_embeddings({"user_id": tf.constant(users), "history": tf.constant(hist)}).numpy()

    same = q(["u1", "u1", "u1"], [["", "", "i3", "i4"], ["i3", "i4", "", ""], ["nope", "i3", "", "i4"]])
    np.testing.assert_allclose(same[0], same[1], atol=1e-5)
    np.testing.assert_allclose(same[0], same[2], atol=1e-5)
    edge = q(["unknown-user", "", "u2"], [["", "", "", "i1"], ["", "", "", ""], ["", "", "", ""]])
    assert np.all(np.isfinite(edge))
    norms = np.linalg.norm(edge, axis=1) / model.temperature.value.numpy()
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)  # tau * unit vector
    assert not np.allclose(edge[0], edge[1])  # the one-item history is used


def test_dot_similarity_leaves_norms_free_and_the_scale_fixed():
    """The softmax's default score is <q, c> of unnormalized towers (tau 1, fixed); cosine stays unit."""
    dot, cosine = _tiny_model(), _tiny_model(similarity="cosine")
    features = {"user_id": tf.constant(["u1", "u2"]), "history": tf.constant([["", "", "i3", "i4"]] * 2)}
    item_norms = np.linalg.norm(dot.candidate_embeddings().numpy(), axis=1)
    assert not np.allclose(item_norms, 1.0, rtol=1e-2) and np.all(item_norms > 0)
    assert not np.allclose(np.linalg.norm(dot.query_embeddings(features).numpy(), axis=1), 1.0, rtol=1e-2)
    assert dot.temperature.value.numpy() == 1.0 and not dot.temperature.trainable
    np.testing.assert_allclose(np.linalg.norm(cosine.candidate_embeddings().numpy(), axis=1), 1.0, rtol=1e-4)
    assert cosine.temperature.trainable
    assert _tiny_model(loss="bpr", protocol="random_80_20").item_tower.normalize  # auto: cosine for pairwise


def test_positions_from_start_count_from_the_first_known_item():
    """positions_from=start: a history reads the same positions whatever the padding before it."""
    model = _tiny_model(positions_from="start")
    def q(hist):
        features = {"user_id": tf.constant(["u1"]), "history": tf.constant([hist])}
        return model.query_embeddings(features).numpy()

    np.testing.assert_allclose(q(["", "", "i3", "i4"]), q(["i3", "i4", "", ""]), atol=1e-5)
    encoder = model.query_tower.sequence_encoder
    vectors = tf.zeros((2, 4, 8))
    known = tf.constant([[False, False, True, True], [True, True, True, True]])
    states = encoder(vectors, known)  # zero item vectors: the states come from the positions alone
    np.testing.assert_allclose(states[0, 2], states[1, 0], atol=1e-5)  # both are a history's first item
    np.testing.assert_allclose(states[0, 3], states[1, 1], atol=1e-5)


def test_serving_query_equals_the_last_training_position():
    """Serving computes only the last state (and skips all-padding columns): same vector as training's."""
    model = _tiny_model()
    features = {"user_id": tf.constant(["u1", "u2"]),
                "history": tf.constant([["", "", "i3", "i4"], ["", "", "", "i7"]])}
    served = model.query_tower(features).numpy()
    trained = model.query_tower(features, all_positions=True).numpy()[:, -1]
    np.testing.assert_allclose(served, trained, atol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_last_only_state_equals_the_full_encoders_and_ignores_padding(norm):
    """Both LayerNorm placements: the last-only path gives the full pass's last state, and the items
    before a row's first known one (padding) change nothing."""
    encoder = SequenceEncoder(max_len=8, dim=16, num_blocks=2, num_heads=2, ff_dim=16, dropout=0.0, norm=norm)
    vectors = tf.random.stateless_normal([3, 6, 16], seed=[3, 4])
    known = tf.constant([[False] * 2 + [True] * 4, [True] * 6, [False] * 5 + [True]])
    served = encoder(vectors, known, last_only=True).numpy()
    np.testing.assert_allclose(encoder(vectors, known).numpy()[:, -1], served, atol=1e-5)
    noise = tf.random.stateless_normal([3, 6, 16], seed=[5, 6]) * tf.cast(~known, tf.float32)[..., None]
    np.testing.assert_allclose(encoder(vectors + noise, known, last_only=True).numpy(), served, atol=1e-5)
    assert np.abs(served).sum() > 0


def test_last_only_training_states_equal_inference_and_their_gradients_keep_memory_intact():
    """Training reads the last state off the full block (the single-query attention gradient corrupts
    the heap under TF 2.20's oneDNN): same values as inference's last-only path. A fresh process then
    takes 3,000 gradients over random shapes; before the fix it died within about 1,600 (SIGSEGV/SIGABRT)."""
    encoder = SequenceEncoder(max_len=8, dim=16, num_blocks=2, num_heads=2, ff_dim=16, dropout=0.0)
    vectors = tf.random.stateless_normal([5, 6, 16], seed=[1, 2])
    known = tf.constant([[True] * 6, [False] * 5 + [True], [False] * 6, [False, True] * 3,
                         [True] * 3 + [False] * 3])
    served = encoder(vectors, known, last_only=True).numpy()
    np.testing.assert_allclose(encoder(vectors, known, training=True, last_only=True).numpy(), served,
                               atol=1e-5)
    np.testing.assert_allclose(encoder(vectors, known).numpy()[:, -1], served, atol=1e-5)

    script = textwrap.dedent("""
        import numpy as np
        import tfrs_recsys
        import tensorflow as tf
        from tfrs_recsys.models.towers import SequenceEncoder
        encoder = SequenceEncoder(max_len=8, dim=16, num_blocks=1, num_heads=2, ff_dim=16, dropout=0.0)
        @tf.function(reduce_retracing=True)
        def step(vectors, known):
            with tf.GradientTape() as tape:
                tape.watch(vectors)
                loss = tf.reduce_sum(encoder(vectors, known, training=True, last_only=True) ** 2)
            return tape.gradient(loss, [vectors] + encoder.trainable_variables)
        rng = np.random.default_rng(0)
        for _ in range(3000):
            batch, length = int(rng.integers(1, 130)), int(rng.integers(1, 9))
            step(tf.random.normal([batch, length, 16]), tf.constant(rng.random((batch, length)) < 0.8))
        print("ok")
    """)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.returncode, proc.stderr[-2000:])


def test_towers_share_the_item_id_table():
    model = _tiny_model()
    assert model.query_tower.item_encoder is model.item_tower.encoder
    model.query_embeddings({"user_id": tf.constant(["u1"]), "history": tf.constant([["", "", "i3", "i4"]])})
    model.candidate_embeddings()
    tables = [v for v in model.trainable_variables if "item_embedding" in v.name]
    assert len(tables) == 1


# --- losses -------------------------------------------------------------------------------------

def test_logq_correction_subtracts_log_probability():
    """Equal raw scores, the positive is the popular candidate: logits - log Q push it down."""
    task = sampled_retrieval_task(remove_accidental_hits=False)
    probs = np.array([0.9, 0.1], np.float32)
    q = tf.constant([[1.0]])
    c = tf.constant([[0.0], [0.0]])  # both raw scores 0; candidate 0 is the positive
    loss = float(task(q, c, candidate_sampling_probability=tf.constant(probs), compute_metrics=False)[0])
    corrected = -np.log(probs)
    assert loss == pytest.approx(-(corrected[0] - np.log(np.exp(corrected).sum())), rel=1e-5)  # about 2.30
    assert loss > 2.0  # the wrong sign (logits + log Q) would give -log 0.9 = 0.105


@pytest.mark.parametrize("logq", [True, False])
def test_in_batch_softmax_recovers_item_popularity_only_with_logq(logq):
    """One user, targets drawn from a skewed p. In-batch negatives are drawn ~p too, so without the
    correction the learned scores are flat (log p - log p); with it softmax(scores) recovers p.
    (Accidental-hit removal is off: it drops the positive's own copies, a separate, known bias.)"""
    num_items, rng = 8, np.random.default_rng(0)
    p = np.array([0.4, 0.2, 0.12, 0.1, 0.08, 0.05, 0.03, 0.02])
    catalog = np.array([f"i{i}" for i in range(num_items)], dtype=object)
    encoder = ItemEncoder(catalog, 4)
    query = QueryTower(encoder, 4, user_vocabulary=["u"])
    model = TwoTowerRetrieval(query, ItemTower(encoder, 4), catalog, negatives="in_batch",
                              item_probabilities=p, logq_correction=logq, remove_accidental_hits=False,
                              temperature=5.0)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    draws = catalog[rng.choice(num_items, size=(4000, 1), p=p)].astype(str)
    ds = tf.data.Dataset.from_tensor_slices({"user_id": np.full(4000, "u"), "history": np.full((4000, 1), ""),
                                             "targets": draws}).batch(100)
    model.fit(ds, epochs=6, verbose=0)
    scores = model.candidate_embeddings().numpy() @ model.query_embeddings(
        {"user_id": tf.constant(["u"]), "history": tf.constant([[""]])}).numpy()[0]
    learned = np.exp(scores - scores.max())
    learned /= learned.sum()
    distance = 0.5 * np.abs(learned - p).sum()  # total variation to the true item distribution
    if logq:
        assert distance < 0.12, (learned.round(3), p)
    else:
        assert distance > 0.2, (learned.round(3), p)


def test_accidental_hits_are_removed_from_in_batch_negatives():
    """Rows 0 and 1 share their positive item: each must not count the other's copy as a negative."""
    q = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = tf.constant([[0.5, 0.5], [0.5, 0.5], [-1.0, 0.0]])
    ids = tf.constant([7, 7, 3])
    logits = q.numpy() @ c.numpy().T
    expected = []
    for i in range(3):
        keep = [j for j in range(3) if j == i or ids.numpy()[j] != ids.numpy()[i]]
        row = logits[i, keep]
        expected.append(-(logits[i, i] - np.log(np.exp(row).sum())))
    with_removal = sampled_retrieval_task(remove_accidental_hits=True)(q, c, candidate_ids=ids,
                                                                       compute_metrics=False)
    without = sampled_retrieval_task(remove_accidental_hits=False)(q, c, candidate_ids=ids,
                                                                   compute_metrics=False)
    np.testing.assert_allclose(with_removal.numpy(), expected, rtol=1e-5)  # per query
    assert without.numpy().mean() > with_removal.numpy().mean() + 0.1


def test_negatives_resolve_automatically_and_on_request():
    assert resolve_negatives("auto", 1_000, 50_000) == "full"
    assert resolve_negatives("auto", 100_000, 50_000) == "sampled"
    assert resolve_negatives("in_batch", 10, 50_000) == "in_batch"
    with pytest.raises(ConfigError, match="field 'negatives' = 'nce' is not one of"):
        RetrievalConfig(negatives="nce")


# --- learning a known ground truth --------------------------------------------------------------

@pytest.fixture(scope="module")
def ring():
    return ring_interactions()


@pytest.mark.parametrize("mode,negatives,hard_negatives,bound", [
    ("all_positions", "full", 0, 0.9),
    ("all_positions", "sampled", 0, 0.8),
    ("all_positions", "in_batch", 0, 0.8),
    ("all_positions", "sampled", 8, 0.75),  # the 8 hardest negatives learn the ring slowest (0.79-0.87)
    ("prefix", "full", 0, 0.8),
])
def test_transformer_learns_the_next_item(tmp_path, ring, mode, negatives, hard_negatives, bound):
    cfg = small_config(tmp_path, training_mode=mode, negatives=negatives, num_sampled_negatives=32,
                       hard_negatives=hard_negatives, epochs=15 if mode == "all_positions" else 6)
    result = training.train_and_evaluate(cfg, ring)
    popularity = popularity_recall(result.split)
    assert popularity < 0.35
    assert result.test_metrics["recall@10"] > bound, result.test_metrics
    assert result.test_metrics["ndcg@10"] > 0.5 * bound


def test_exact_metrics_match_a_brute_force_loop(tmp_path, ring):
    result = training.train_and_evaluate(small_config(tmp_path, epochs=2), ring)
    model, held = result.model, result.split.test
    catalog = model.catalog_ids.tolist()
    items = model.candidate_embeddings().numpy()
    loop_ranks = []
    for user, history, target, exclude in zip(held.user_ids, held.histories, held.targets, held.exclude):
        padded = seq.pad_left([history], 16).astype(str)
        query = model.query_embeddings({"user_id": tf.constant([user]),
                                        "history": tf.constant(padded)}).numpy()[0]
        scores = {item: float(items[j] @ query) for j, item in enumerate(catalog) if item not in set(exclude)}
        loop_ranks.append(sum(s >= scores[target] for item, s in scores.items() if item != target))
    np.testing.assert_array_equal(training.ranks(model, held, 16), loop_ranks)
    ours = result.test_metrics
    k = 10
    r = np.array(loop_ranks)
    assert ours[f"recall@{k}"] == pytest.approx(np.mean(r < k))
    assert ours[f"ndcg@{k}"] == pytest.approx(np.mean(np.where(r < k, 1 / np.log2(r + 2), 0)))
    assert ours[f"mrr@{k}"] == pytest.approx(np.mean(np.where(r < k, 1 / (r + 1), 0)))


def test_feature_two_tower_without_transformer_learns_segments(tmp_path):
    data = segment_interactions()
    cfg = small_config(tmp_path, use_transformer=False, use_user_id=False, epochs=10)
    result = training.train_and_evaluate(cfg, data)
    assert (result.model.query_tower.sequence_encoder is None
            and result.model.query_tower.user_embedding is None)
    assert result.model.query_tower.user_features.embeddings.field_names == ["segment"]
    assert result.test_metrics["recall@10"] > 0.8, result.test_metrics  # random: about 0.2


def test_config_errors_name_the_field(tmp_path, ring):
    with pytest.raises(ConfigError, match="protocol"):
        training.train_and_evaluate(small_config(tmp_path, protocol="nope"), ring)
    with pytest.raises(ConfigError, match="embedding_dim"):
        training.train_and_evaluate(small_config(tmp_path, embedding_dim=30, num_heads=4), ring)


def test_the_temperature_cap_never_freezes_the_temperature():
    layer = InverseTemperature(initial=10.0, maximum=20.0)
    optimizer = tf.keras.optimizers.Adam(0.5)
    for sign in (-1.0, 1.0):  # push tau up well past the cap, then down
        for _ in range(30):
            with tf.GradientTape() as tape:
                loss = sign * layer.value
            optimizer.apply_gradients(zip(tape.gradient(loss, [layer.log_tau]), [layer.log_tau]))
        if sign < 0:
            assert layer.value.numpy() == pytest.approx(20.0) and layer.log_tau.numpy() <= np.log(20.0) + 1e-6
    assert layer.value.numpy() < 5.0  # it came back down


def test_exclude_seen_leaves_each_targets_history_out_of_its_catalog_softmax():
    """The loss equals a brute-force softmax over the items each target's history does not hold, in its
    window or before it (its own target kept even when seen before), and differs from the plain one."""
    catalog = np.array([f"i{i}" for i in range(7)], dtype=object)
    history = np.array([["", "i0", "i1", "i2"], ["", "", "i3", "i0"]])
    targets = np.array([["", "i1", "i2", "i4"], ["", "", "i0", "i3"]])  # i3 follows a history holding it
    before = [["i5", "i6"], ["i4"]]  # the sequences' items before the windows; i4 is row 0's last target
    seen_before = np.array([[6, 7], [5, 0]], np.int32)  # catalog position + 1, 0: padding
    features = {"user_id": tf.constant(["u0", "u1"]), "history": tf.constant(history),
                "targets": tf.constant(targets), "seen_before": tf.constant(seen_before)}
    losses = {}
    for exclude in (True, False):
        tf.keras.utils.set_random_seed(3)
        encoder = ItemEncoder(catalog, 4)
        query = QueryTower(encoder, 4, sequence_encoder=SequenceEncoder(4, 4, 1, 1, 8, 0.0),
                           user_vocabulary=["u0", "u1"], normalize=False)
        model = TwoTowerRetrieval(query, ItemTower(encoder, 4, normalize=False), catalog, negatives="full",
                                  temperature=None, exclude_seen=exclude)
        losses[exclude] = float(model.compute_loss(features))
    queries = model.query_tower(features, all_positions=True).numpy()
    scores = queries @ model.candidate_embeddings().numpy().T  # [B, L, items]
    position = {item: i for i, item in enumerate(catalog)}
    expected = []
    for b in range(2):
        for t in range(4):
            if not targets[b, t]:
                continue
            target = position[targets[b, t]]
            seen = {position[i] for i in [*before[b], *history[b, :t + 1]] if i} - {target}
            keep = [j for j in range(len(catalog)) if j not in seen]
            expected.append(np.log(np.exp(scores[b, t, keep]).sum()) - scores[b, t, target])
    assert losses[True] == pytest.approx(float(np.mean(expected)), rel=1e-4)
    assert losses[False] > losses[True] + 1e-3


def test_item_labels_write_codes_read_as_floats_as_integers():
    from tfrs_recsys.data.bundles import item_labels

    items = pd.DataFrame({"item_id": ["a", "b"], "categoryid": [100.0, np.nan], "price": [2.5, 3.0]})
    assert item_labels(items) == {"a": "categoryid=100 price=2.5", "b": "price=3"}
