"""Runs in a fresh process: splits the CPU into two logical devices, then does one of

    python tests/two_cpu_devices.py step
        one step of each model (the rankers with their own optimizer, retrieval with its lazy Adam) from the
        same weights on the same global batch, under MirroredStrategy over the two devices (2
        replicas, each half the batch) and under the default strategy; prints JSON
        {model: max |update_mirrored - update_default| / max |update_default|}.
    python tests/two_cpu_devices.py train MODEL [options]
        ``python -m tfrs_recsys.train MODEL [options]`` (e.g. with ``--distribute mirrored``).

Logical devices can only be configured before TensorFlow starts, hence a separate process.
"""
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from tfrs_recsys.config import DeepFMConfig, ESMMConfig, RetrievalConfig  # noqa: E402
from tfrs_recsys.data import sequences as seq  # noqa: E402
from tfrs_recsys.data.pipelines import labeled_dataset  # noqa: E402
from tfrs_recsys.data.registry import load_labeled, options_from  # noqa: E402
from tfrs_recsys.data.schema_inference import infer_schema  # noqa: E402
from tfrs_recsys.models.deepfm import DeepFM  # noqa: E402
from tfrs_recsys.models.esmm import ESMM  # noqa: E402
from tfrs_recsys.training import retrieval  # noqa: E402
from tfrs_recsys.training.optimizers import LazyAdam, ranker_optimizer  # noqa: E402

BATCH = 64


def ranker_case(model_cls, cfg, task):
    data = load_labeled(task, **options_from(cfg, load_labeled))
    spec = infer_schema(data.frame, data.labels, session_column=data.session_column,
                        user_column=data.user_column, item_column=data.item_column)
    batch = next(iter(labeled_dataset(data.frame.head(BATCH), spec, batch_size=BATCH, shuffle=False)))
    return (lambda: model_cls.from_spec(spec, cfg)), batch, (lambda model: model(batch[0]))


def retrieval_case():
    cfg = RetrievalConfig(synthetic_users=60, synthetic_items=80, embedding_dim=8, max_history=6,
                          num_blocks=1, ff_dim=8, dropout=0.0, user_id_dropout=0.0, protocol="leave_last_out")
    data = retrieval.load_data(cfg)
    split = retrieval.split_data(cfg, data)
    catalog = seq.catalog_ids(data.interactions)
    vocab, _ = retrieval.build_vocabularies(cfg, data, catalog, split.train.user_ids)
    windows = seq.training_windows(split.train, cfg.max_history)
    batch = {k: tf.constant(v[:BATCH].astype(str)) for k, v in windows.items()}
    targets = float((windows["targets"][:BATCH] != seq.PAD).sum())

    def build():
        return retrieval.build_model(cfg, vocab, negatives="full", targets_per_batch=targets)

    def create_variables(model):
        model.query_embeddings({"user_id": batch["user_id"], "history": batch["history"]})
        model.candidate_embeddings()
    return build, batch, create_variables


def relative_step_difference(build, batch, create_variables, strategy, optimizer) -> float:
    """Max |mirrored update - default update| over the largest default update (0 = the same step)."""
    updates = []
    initial = None
    for current in (tf.distribute.get_strategy(), strategy):
        with current.scope():
            model = build()
            create_variables(model)
            if initial is None:
                initial = model.get_weights()
            model.set_weights(initial)
            model.compile(optimizer=optimizer(model))
        model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        updates.append([after - before for after, before in zip(model.get_weights(), initial)])
    scale = max(float(np.abs(u).max()) for u in updates[0])
    return max(float(np.abs(a - b).max()) for a, b in zip(*updates)) / scale


def _ranker_optimizer(model):
    """The rankers' own optimizer; its row L2 must see the rows of both replicas' halves of the batch."""
    return ranker_optimizer(model, learning_rate=0.01, embedding_learning_rate=0.5, embedding_l2=0.01)


def main(argv):
    if argv[:1] == ["train"]:
        from tfrs_recsys.train import main as train_main
        return train_main(argv[1:])
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    # Seeded: with some initial weights a tiny gradient's float rounding exceeded the bound (once in 4 runs).
    tf.keras.utils.set_random_seed(0)
    optimizers = {"deepfm": _ranker_optimizer, "esmm": _ranker_optimizer,
                  # epsilon 1: Adam's first step, lr g / (|g| + epsilon), would otherwise turn the float
                  # rounding of a tiny gradient's two half-batch sums into a relative change of ~1e-4.
                  "retrieval": lambda model: LazyAdam(0.01, epsilon=1.0)}
    cases = {
        # l2 > 0: the layer (regularization) losses must be scaled per replica as well. float32: bfloat16
        # products of a half batch round differently from those of the whole batch.
        "deepfm": ranker_case(DeepFM, DeepFMConfig(synthetic_rows=400, embedding_dim=4, hidden_units=(8,),
                                                   l2_reg=0.05, embedding_l2=0.01, precision="float32"),
                              "deepfm"),
        "esmm": ranker_case(ESMM, ESMMConfig(synthetic_sessions=30, session_size=10, embedding_dim=4,
                                             tower_units=(8,), hidden_units=(8,), l2_reg=0.05,
                                             embedding_l2=0.01, precision="float32"), "esmm"),
        "retrieval": retrieval_case(),
    }
    out = {name: relative_step_difference(*case, strategy, optimizers[name]) for name, case in cases.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
