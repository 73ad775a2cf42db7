"""Reading a Keras model's weights back from its checkpoint a few variables at a time.

``model.load_weights`` reads every variable of the checkpoint into new buffers before it assigns any, so
for a moment the process holds the model twice, and TensorFlow's CPU allocator keeps the freed half: a
ranker with embedding tables of millions of rows ends a run (or an export's load) that much larger.
:func:`read_weights` reads the same checkpoint (``model.save_weights``'s object graph) in groups of
variables of at most ``max_bytes``: the extra memory is one group's. Each group is read through a
``tf.train.Checkpoint`` skeleton that mirrors the paths from the model to its variables
(``tf.train.TrackableView``), so every variable lands where ``load_weights`` would put it.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from tfrs_recsys.errors import UserError

GROUP_BYTES = 128 << 20


def variable_paths(root) -> dict:
    """The checkpoint path (child names from ``root``) of each variable reachable from ``root``.

    Args:
      root: A trackable, e.g. a Keras model.

    Returns:
      ``{variable.ref(): (name, ..., name)}``, the first path found to each variable.
    """
    view = tf.train.TrackableView(root)
    found, seen, stack = {}, {id(root)}, [((), root)]
    while stack:
        path, node = stack.pop()
        for name, child in view.children(node).items():
            if isinstance(child, tf.Variable):
                found.setdefault(child.ref(), path + (name,))
            elif id(child) not in seen:
                seen.add(id(child))
                stack.append((path + (name,), child))
    return found


def _skeleton(entries: list[tuple[tuple[str, ...], tf.Variable]]) -> tf.train.Checkpoint:
    """A checkpoint object whose paths to ``entries``' variables are theirs in the model."""
    tree: dict = {}
    for path, variable in entries:
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = variable

    def build(node: dict) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(**{k: build(v) if isinstance(v, dict) else v for k, v in node.items()})

    return build(tree)


def read_weights(model: tf.keras.Model, checkpoint: str | Path, *, max_bytes: int = GROUP_BYTES) -> None:
    """Assigns ``model``'s weights (which must exist) from ``checkpoint``, a group of at most
    ``max_bytes`` at a time (a variable larger than that alone); the optimizer's state is not read.

    Under a strategy of several replicas it falls back to ``model.load_weights``.

    Args:
      model: A built Keras model.
      checkpoint: The path ``model.save_weights`` wrote.
      max_bytes: The most bytes of variables read at once.

    Raises:
      AssertionError: a weight of the model is not in the checkpoint.
      DamagedCheckpointError: the checkpoint's files are cut short or corrupt.
    """
    try:
        _read_weights(model, checkpoint, max_bytes)
    except (IndexError, tf.errors.DataLossError, tf.errors.OutOfRangeError) as error:
        reason = str(error).strip().splitlines()[0][:200]
        raise DamagedCheckpointError(f"the checkpoint's files are damaged or cut short ({reason})",
                                     path=str(checkpoint), fix="copy the run's checkpoints/ again from where "
                                     "it trained, or train it again (--overwrite)") from None


class DamagedCheckpointError(UserError):
    """A checkpoint whose files cannot be read whole: a copy cut short, a full disk, a corrupt file."""


def _read_weights(model: tf.keras.Model, checkpoint: str | Path, max_bytes: int) -> None:
    paths = variable_paths(model)
    if model.distribute_strategy.num_replicas_in_sync > 1 or any(w.ref() not in paths for w in model.weights):
        model.load_weights(str(checkpoint)).expect_partial().assert_existing_objects_matched()
        return
    group, size = [], 0
    for weight in model.weights:
        nbytes = weight.shape.num_elements() * weight.dtype.size
        if group and size + nbytes > max_bytes:
            _skeleton(group).read(str(checkpoint)).expect_partial().assert_existing_objects_matched()
            group, size = [], 0
        group.append((paths[weight.ref()], weight))
        size += nbytes
    if group:
        _skeleton(group).read(str(checkpoint)).expect_partial().assert_existing_objects_matched()
