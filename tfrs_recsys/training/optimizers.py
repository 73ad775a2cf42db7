"""Optimizers whose step on an embedding table costs the rows its batch looks up, not the table's size.

The rankers' optimizer (:func:`ranker_optimizer`): row-wise Adagrad (:class:`RowwiseAdagrad`) on the
embedding tables, Adam on every other variable. Retrieval's (:class:`LazyAdam`): Adam whose sparse steps
touch only the looked-up rows.

The tables' gradients are ``tf.IndexedSlices`` (one row per lookup). Row-wise Adagrad sums a gradient's
duplicate rows and applies them as a scatter: only the looked-up rows and their accumulators are read and
written, one accumulator per row rather than per element (as DLRM trains its tables), so a table of
dimension ``d`` costs ``d + 1`` floats a row with its optimizer state instead of ``2 d``:

    a_r <- a_r + mean_j g_rj^2,    E[r] <- E[r] - lr g_r / (sqrt(a_r) + eps)     for each touched row r.

(Adam on such a gradient still decays its two moments over the whole table every step.) The other
variables (MLPs, numeric-feature vectors, biases) are dense and small, and train with Adam. TFRS'
``CompositeOptimizer`` routes each variable to its optimizer.

``embedding_l2`` regularizes the touched rows: after the replicas' gradients are summed, every row
the global batch looks up gets the gradient of ``embedding_l2 * ||E[r]||^2`` added once, however often
the batch uses it. The step is the step on the loss ``L + embedding_l2 * sum_{r touched} ||E[r]||^2``,
the same with one replica or several. Rows no batch looks up are left as they are.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


def _slot_index(var_list: list[tf.Variable]) -> dict:
    """Each variable's position in ``var_list``, also under its replicas' copies (a step under a
    distribution strategy updates each replica's copy)."""
    strategy = tf.distribute.get_strategy()
    return {copy.ref(): index for index, var in enumerate(var_list)
            for copy in (var, *strategy.experimental_local_results(var))}


def _summed_rows(gradient: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """(the distinct rows ``gradient`` touches, their summed gradient rows)."""
    rows, positions = tf.unique(gradient.indices)
    return rows, tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(rows)[0])


def embedding_tables(model: tf.keras.Model) -> list[tf.Variable]:
    """The tables of ``model``'s ``tf.keras.layers.Embedding`` layers (built ones)."""
    return [layer.embeddings for layer in model.submodules
            if isinstance(layer, tf.keras.layers.Embedding) and layer.built]


def ranker_optimizer(model: tf.keras.Model, *, learning_rate: float, embedding_learning_rate: float,
                     embedding_l2: float = 0.0) -> tfrs.experimental.optimizers.CompositeOptimizer:
    """Row-wise Adagrad with touched-row L2 on ``model``'s embedding tables, Adam on the rest.

    The variables are looked up when the first step runs, so ``model`` may be unbuilt. Create it
    under the strategy the model was built under.

    Args:
      model: the model to train.
      learning_rate: Adam's learning rate.
      embedding_learning_rate: row-wise Adagrad's learning rate for the tables.
      embedding_l2: weight of the L2 penalty on the rows a step touches (see the module docstring).

    Returns:
      The optimizer, for ``model.compile``.
    """
    def dense() -> list[tf.Variable]:
        tables = {table.ref() for table in embedding_tables(model)}
        return [v for v in model.trainable_variables if v.ref() not in tables]

    return tfrs.experimental.optimizers.CompositeOptimizer([
        (RowwiseAdagrad(embedding_learning_rate, l2=embedding_l2), lambda: embedding_tables(model)),
        (tf.keras.optimizers.legacy.Adam(learning_rate), dense),
    ])


class RowwiseAdagrad(tf.keras.optimizers.Adagrad):
    """Adagrad with one accumulator per row of a table, its sparse steps touching only the looked-up rows.

    On the gradient of a 2-D variable (an embedding table's, a ``tf.IndexedSlices``), with ``R`` the rows
    it touches (duplicates summed; a dense gradient touches every row) and ``l2`` the touched-row
    penalty's weight:

        g_R <- g_R + 2 l2 E[R],    a[R] <- a[R] + mean_j g_Rj^2,    E[R] <- E[R] - lr g_R / (sqrt(a[R]) + eps)

    Rows outside ``R`` keep their values and accumulators. A variable that is not 2-D takes Adagrad's
    element-wise step, with an accumulator of its shape.

    Args:
      learning_rate: the learning rate.
      l2: weight of the L2 penalty on the rows a step touches (module docstring).
      **kwargs: the other arguments of ``tf.keras.optimizers.Adagrad`` (``initial_accumulator_value``,
        ``epsilon``, ...).
    """

    def __init__(self, learning_rate: float = 0.001, l2: float = 0.0, **kwargs):
        # XLA compiles one program per shape, and a sparse step's row count changes with every batch.
        kwargs.pop("jit_compile", None)
        kwargs.setdefault("name", "RowwiseAdagrad")
        super().__init__(learning_rate, jit_compile=False, **kwargs)
        self.l2 = l2
        self._row_slot_index: dict = {}
        self._row_accumulators: list[tf.Variable] = []

    def build(self, var_list: list[tf.Variable]):
        """Creates the accumulators: ``[rows, 1]`` for a 2-D variable, the variable's shape otherwise
        (skipping Adagrad's own, which this optimizer does not use)."""
        if self._row_accumulators:
            return
        tf.keras.optimizers.Optimizer.build(self, var_list)
        for var in var_list:
            shape = (var.shape[0], 1) if var.shape.rank == 2 else var.shape
            initial = tf.fill(shape, tf.constant(self.initial_accumulator_value, var.dtype))
            self._row_accumulators.append(self.add_variable_from_reference(
                var, "accumulator", shape=shape, initial_value=initial))
        self._row_slot_index = _slot_index(var_list)

    def update_step(self, gradient: tf.Tensor | tf.IndexedSlices, variable: tf.Variable):
        """Applies one step of ``gradient`` to ``variable`` (to the touched rows only, if sparse)."""
        accumulator = self._row_accumulators[self._row_slot_index[variable.ref()]]
        lr = tf.cast(self.learning_rate, variable.dtype)
        epsilon = tf.cast(self.epsilon, variable.dtype)
        if variable.shape.rank == 2:
            if not isinstance(gradient, tf.IndexedSlices):  # every row, as a sparse gradient over all of them
                gradient = tf.IndexedSlices(gradient, tf.range(tf.shape(variable)[0]))
            rows, values = _summed_rows(gradient)
            if self.l2:
                values += tf.cast(2.0 * self.l2, values.dtype) * tf.gather(variable, rows)
            a_rows = tf.gather(accumulator, rows) + tf.reduce_mean(tf.square(values), axis=1, keepdims=True)
            accumulator.scatter_update(tf.IndexedSlices(a_rows, rows))
            variable.scatter_sub(tf.IndexedSlices(lr * values / (tf.sqrt(a_rows) + epsilon), rows))
            return
        gradient = tf.convert_to_tensor(gradient)
        accumulator.assign_add(tf.square(gradient))
        variable.assign_sub(lr * gradient / (tf.sqrt(accumulator) + epsilon))

    @property
    def weights(self) -> list[tf.Variable]:
        """The optimizer's variables, under the name TFRS' ``CompositeOptimizer`` reads from its members."""
        return list(self.variables)

    def get_config(self) -> dict:
        """Adagrad's config and ``l2``."""
        return {**super().get_config(), "l2": self.l2}


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam whose step on a sparse gradient reads and writes only the rows the gradient touches.

    On a dense gradient it is Keras' Adam. On a ``tf.IndexedSlices`` gradient (an embedding table's,
    duplicate rows summed), with ``R`` the rows it touches and ``t`` the step:

        m[R] <- b1 m[R] + (1 - b1) g_R,        v[R] <- b2 v[R] + (1 - b2) g_R^2
        E[R] <- E[R] - alpha m[R] / (sqrt(v[R]) + eps),     alpha = lr sqrt(1 - b2^t) / (1 - b1^t)

    Rows outside ``R`` keep their values and both moments. Keras' Adam instead decays the moments of
    every row and moves every row with momentum left, each step: a cost that grows with the table (a
    large catalog under the sampled softmax, millions of users). On a table whose every row a step
    touches (the item table under the full softmax) the two take the same step.

    Args:
      learning_rate: Adam's learning rate.
      **kwargs: the other arguments of ``tf.keras.optimizers.Adam`` (not ``amsgrad`` or ``adaptive_epsilon``).
    """

    def __init__(self, learning_rate: float = 0.001, **kwargs):
        if kwargs.get("amsgrad") or kwargs.get("adaptive_epsilon"):
            raise ValueError("LazyAdam supports neither amsgrad nor adaptive_epsilon")
        # XLA compiles one program per shape, and a sparse step's row count changes with every batch.
        kwargs.pop("jit_compile", None)
        super().__init__(learning_rate, jit_compile=False, **kwargs)
        self._lazy_slot_index: dict = {}
        self._lazy_momenta: list[tf.Variable] = []
        self._lazy_velocities: list[tf.Variable] = []

    def build(self, var_list: list[tf.Variable]):
        """Creates both moments of every variable (skipping Adam's own, which this optimizer does not use)."""
        if self._lazy_momenta:
            return
        tf.keras.optimizers.Optimizer.build(self, var_list)
        for var in var_list:
            self._lazy_momenta.append(self.add_variable_from_reference(var, "m"))
            self._lazy_velocities.append(self.add_variable_from_reference(var, "v"))
        self._lazy_slot_index = _slot_index(var_list)

    def update_step(self, gradient: tf.Tensor | tf.IndexedSlices, variable: tf.Variable):
        """Applies one Adam step of ``gradient`` to ``variable`` (to the touched rows only, if sparse)."""
        index = self._lazy_slot_index[variable.ref()]
        m, v = self._lazy_momenta[index], self._lazy_velocities[index]
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        epsilon = tf.cast(self.epsilon, dtype)
        if not isinstance(gradient, tf.IndexedSlices):
            m.assign_add((gradient - m) * (1 - beta_1))
            v.assign_add((tf.square(gradient) - v) * (1 - beta_2))
            variable.assign_sub(alpha * m / (tf.sqrt(v) + epsilon))
            return
        rows, values = _summed_rows(gradient)
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))
