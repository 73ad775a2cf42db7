"""Retrieval's optimizer: Adam whose sparse steps touch only the rows a batch looks up."""
import numpy as np
import pytest
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys.config import RetrievalConfig
from tfrs_recsys.models.retrieval import Vocabularies, build_model
from tfrs_recsys.training.optimizers import LazyAdam, embedding_tables

CATALOG = 200_000


def _steps(optimizer, ids_per_step, rows: int = 50):
    """Adam steps on a [rows, 4] table and a dense [4, 2] kernel of the loss sum((E[ids] W)^2)."""
    tf.keras.utils.set_random_seed(0)
    table, kernel = tf.Variable(tf.random.normal([rows, 4])), tf.Variable(tf.random.normal([4, 2]))
    history = [table.numpy()]
    for ids in ids_per_step:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.matmul(tf.gather(table, tf.constant(ids)), kernel) ** 2)
        grads = tape.gradient(loss, [table, kernel])
        assert isinstance(grads[0], tf.IndexedSlices)
        optimizer.apply_gradients(zip(grads, [table, kernel]))
        history.append(table.numpy())
    return history, kernel.numpy()


def test_steps_that_touch_every_row_are_keras_adams_steps():
    every_row = [np.r_[np.arange(50), np.arange(7)]] * 4  # duplicates: their gradients are summed
    lazy, lazy_kernel = _steps(LazyAdam(0.01), every_row)
    keras, keras_kernel = _steps(tf.keras.optimizers.Adam(0.01), every_row)
    np.testing.assert_allclose(lazy[-1], keras[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy_kernel, keras_kernel, rtol=1e-5, atol=1e-6)
    assert np.abs(lazy[-1] - lazy[0]).max() > 0.02


def test_a_row_left_out_of_a_step_keeps_its_value_and_moments():
    """Rows 0-9 in step 1, rows 10-19 in step 2: Keras' Adam moves rows 0-9 again in step 2 (their
    momentum), the lazy one leaves them, and their moments, for the step that touches them next."""
    steps = [np.arange(10), np.arange(10, 20), np.arange(10)]
    lazy, _ = _steps(LazyAdam(0.01), steps)
    keras, _ = _steps(tf.keras.optimizers.Adam(0.01), steps)
    np.testing.assert_array_equal(lazy[2][:10], lazy[1][:10])
    assert np.abs(keras[2][:10] - keras[1][:10]).max() > 1e-4
    np.testing.assert_array_equal(lazy[2][20:], lazy[0][20:])
    # Step 3 on rows 0-9 continues from step 1's moments: m = b1 m1 + (1 - b1) g, not decayed twice.
    assert not np.array_equal(lazy[3][:10], lazy[2][:10])


def test_amsgrad_is_refused_and_the_config_round_trips():
    with pytest.raises(ValueError, match="amsgrad"):
        LazyAdam(0.01, amsgrad=True)
    config = LazyAdam(0.02, beta_1=0.8).get_config()
    copy = LazyAdam.from_config(config)
    assert (copy.beta_1, float(copy.learning_rate), copy.jit_compile) == (0.8, pytest.approx(0.02), False)


def test_a_sampled_step_on_a_large_catalog_changes_only_the_rows_the_batch_scores():
    """One retrieval step under the sampled softmax on a 200,000-item catalog: the item table changes
    in at most the batch's items plus the sampled negatives, and no tensor of the step's graph has the
    table's shape (no dense gradient, moment decay or whole-table read)."""
    cfg = RetrievalConfig(embedding_dim=8, max_history=6, num_blocks=1, num_heads=1, ff_dim=8, dropout=0.0,
                          user_id_dropout=0.0, num_sampled_negatives=64)
    catalog = np.array([f"i{i}" for i in range(CATALOG)])
    users = np.array([f"u{u}" for u in range(16)])
    vocab = Vocabularies.build(catalog, users, None, None, [], [])
    model = build_model(cfg, vocab, item_probabilities=np.full(CATALOG, 1.0 / CATALOG), negatives="sampled")
    rng = np.random.default_rng(0)
    items = rng.choice(catalog, size=(16, 7), replace=False)
    batch = {"user_id": tf.constant(users), "history": tf.constant(items[:, :6]),
             "targets": tf.constant(items[:, 1:])}
    model.compile(LazyAdam(0.01))
    model.query_embeddings({"user_id": batch["user_id"], "history": batch["history"]})
    table = next(t for t in embedding_tables(model) if t.shape[0] >= CATALOG)
    before = table.numpy()

    @tf.function
    def step(features):
        return model.train_step(features)

    step(batch)
    changed = np.flatnonzero(np.any(table.numpy() != before, axis=1))
    looked_up = set(model.item_tower.encoder.lookup(tf.constant(items)).numpy().ravel())
    assert looked_up <= set(changed.tolist())
    assert len(changed) <= len(looked_up) + cfg.num_sampled_negatives
    graph = step.get_concrete_function(batch).graph
    whole_table = [op.name for op in graph.get_operations() for t in op.outputs
                   if t.shape.rank == 2 and t.shape[0] == table.shape[0]]
    assert not whole_table, whole_table[:5]
