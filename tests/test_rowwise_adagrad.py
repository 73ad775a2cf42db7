"""The rankers' table optimizer: Adagrad with one accumulator per row, sparse steps on the looked-up rows."""
import numpy as np
import tensorflow as tf

import tfrs_recsys  # noqa: F401
from tfrs_recsys.training.optimizers import RowwiseAdagrad, ranker_optimizer

LR, INITIAL, EPS = 0.1, 0.1, 1e-7


def _reference(table: np.ndarray, steps, l2: float = 0.0) -> np.ndarray:
    """Row-wise Adagrad in NumPy, for the loss sum(E[ids]^2 * weights): duplicate lookups summed."""
    table, accumulator = table.copy(), np.full((len(table), 1), INITIAL)
    for ids, weights in steps:
        rows = np.unique(ids)
        grad = np.zeros_like(table)
        np.add.at(grad, ids, 2 * table[ids] * weights[:, None])
        g = grad[rows] + 2 * l2 * table[rows]
        accumulator[rows] += np.mean(g ** 2, axis=1, keepdims=True)
        table[rows] -= LR * g / (np.sqrt(accumulator[rows]) + EPS)
    return table


def _train(table: np.ndarray, steps, l2: float = 0.0) -> tuple[np.ndarray, RowwiseAdagrad]:
    variable = tf.Variable(table)
    optimizer = RowwiseAdagrad(LR, l2=l2, initial_accumulator_value=INITIAL, epsilon=EPS)
    for ids, weights in steps:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(variable, ids) ** 2 * weights[:, None])
        grad = tape.gradient(loss, variable)
        assert isinstance(grad, tf.IndexedSlices)
        optimizer.apply_gradients([(grad, variable)])
    return variable.numpy(), optimizer


def test_sparse_steps_follow_the_row_wise_rule_and_leave_other_rows_alone():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(30, 6))
    steps = [(np.array([1, 4, 4, 9]), rng.uniform(0.5, 2, 4)), (np.array([4, 20, 1]), rng.uniform(0.5, 2, 3)),
             (np.array([9, 9, 9]), rng.uniform(0.5, 2, 3))]
    for l2 in (0.0, 0.3):
        trained, _ = _train(table, steps, l2)
        np.testing.assert_allclose(trained, _reference(table, steps, l2), rtol=1e-5, atol=1e-6)
        untouched = np.setdiff1d(np.arange(30), [1, 4, 9, 20])
        np.testing.assert_array_equal(trained[untouched], table[untouched])
        assert np.abs(trained[[1, 4, 9, 20]] - table[[1, 4, 9, 20]]).min() > 1e-3


def test_a_table_keeps_one_accumulator_per_row():
    """The optimizer state of a [rows, d] table is [rows, 1]: a row costs d + 1 floats, not 2 d."""
    _, optimizer = _train(np.ones((1000, 16)), [(np.array([3, 7]), np.ones(2))])
    shapes = [tuple(v.shape) for v in optimizer.variables if v.shape.rank == 2]
    assert shapes == [(1000, 1)]


def test_a_dense_gradient_is_a_step_on_every_row_and_other_shapes_step_element_wise():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(5, 3))
    steps = [(np.arange(5), rng.uniform(0.5, 2, 5)) for _ in range(2)]
    variable = tf.Variable(table)
    optimizer = RowwiseAdagrad(LR, initial_accumulator_value=INITIAL, epsilon=EPS)
    for ids, weights in steps:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(variable ** 2 * weights[:, None])
        grad = tape.gradient(loss, variable)
        assert not isinstance(grad, tf.IndexedSlices)
        optimizer.apply_gradients([(grad, variable)])
    np.testing.assert_allclose(variable.numpy(), _reference(table, steps), rtol=1e-5, atol=1e-6)

    bias, reference = tf.Variable([0.5, -1.0, 2.0]), tf.Variable([0.5, -1.0, 2.0])
    for variable, optimizer in ((bias, RowwiseAdagrad(LR, epsilon=EPS)),
                                (reference, tf.keras.optimizers.Adagrad(LR, epsilon=EPS))):
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(variable))
            optimizer.apply_gradients([(tape.gradient(loss, variable), variable)])
    # Keras' Adagrad divides by sqrt(a + eps), this one by sqrt(a) + eps: equal well above eps.
    np.testing.assert_allclose(bias.numpy(), reference.numpy(), rtol=1e-5)
    assert RowwiseAdagrad.from_config(RowwiseAdagrad(0.3, l2=0.01).get_config()).l2 == 0.01


def test_the_ranker_optimizer_lists_the_row_accumulators_with_adams_moments():
    """TFRS' CompositeOptimizer reads its members' ``weights``: the row-wise accumulators are among them."""
    model = tf.keras.Sequential([tf.keras.layers.Embedding(50, 4), tf.keras.layers.GlobalAveragePooling1D(),
                                 tf.keras.layers.Dense(1)])
    ids = tf.constant([[1, 2, 2], [7, 1, 3]])
    model(ids)
    optimizer = ranker_optimizer(model, learning_rate=0.01, embedding_learning_rate=0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(ids) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    shapes = sorted(tuple(w.shape) for w in optimizer.weights)
    assert (50, 1) in shapes and shapes.count((4, 1)) == 2 and shapes.count((1,)) == 2, shapes
    assert len(optimizer.get_weights()) == len(optimizer.weights)
