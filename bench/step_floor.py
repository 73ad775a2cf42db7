"""DeepFM's training step three ways on one fixed batch: DeepCTR's, ours, and bare TensorFlow ops.

    .venv/bin/pip install -r bench/requirements.txt --no-deps
    .venv/bin/python bench/step_floor.py [--instances 3] [--rounds 8] [--intra-op-threads N]

What it is for: bench/ranking.py compares whole training epochs with DeepCTR 0.9.4 (target: ours at
1.5x). This bench measures the step alone, and the least TensorFlow needs for that step:

* DeepCTR: ``deepctr.models.DeepFM`` as bench/ranking.py builds it (Adam, float32);
* ours: :class:`tfrs_recsys.models.deepfm.DeepFM` with its defaults (bfloat16 MLP products on a CPU
  with native bfloat16, fused Adam, table L2), the step ``model.fit`` runs;
* minimal: the same model written as bare TensorFlow ops: one merged table for the single-valued
  categorical fields, the FM in closed form, the same bfloat16 MLP, L2 terms and fused Adam; no Keras,
  no metrics, no loss bookkeeping: about what TensorFlow's op-by-op executor needs for this model on
  this machine. ``DeepCTR / minimal`` is then how much a lean TensorFlow step gains over DeepCTR's, and
  ``ours / minimal`` what our model code costs above it.

Protocol: the data, split and sizes of bench/ranking.py's DeepFM (synthetic CTR logs); one fixed,
already encoded batch (the first ``--batch-size`` training rows, the same rows for all three); 16
steps per graph call for all three (DeepCTR included, which spares it the per-step Python round trip
of ``fit``); ``--instances`` freshly built copies of each, their calls interleaved for ``--rounds``
rounds so that a busy shared machine slows all alike; per instance the median round, then the mean
over instances, by wall clock and by this process's CPU time.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from ranking import _deepctr, encode_for_peer, peer_columns
from tfrs_recsys.config import DeepFMConfig
from tfrs_recsys.data.pipelines import frame_to_label_columns
from tfrs_recsys.data.splits import random_split
from tfrs_recsys.data.synthetic import synthetic_ctr_logs
from tfrs_recsys.features.preprocessing import as_encoded, encode_frame, mask_key
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.models.mlp import resolve_precision
from tfrs_recsys.training import rankers
from tfrs_recsys.training.optimizers import FusedAdam

STEPS_PER_CALL = 16


def minimal_step(spec, encoded: dict[str, np.ndarray], label: np.ndarray, cfg: DeepFMConfig, seed: int):
    """A graph call of ``STEPS_PER_CALL`` DeepFM steps in bare TensorFlow ops, on the encoded batch."""
    rng = np.random.default_rng(seed)
    dim, batch = cfg.embedding_dim, len(label)
    bf16 = resolve_precision(cfg.precision) == "mixed_bfloat16"

    def uniform(*shape):
        return tf.Variable(rng.uniform(-0.05, 0.05, shape).astype(np.float32))

    single = [f for f in spec.features if f.is_categorical and f.kind != "multi_categorical"]
    multi = [f for f in spec.features if f.kind == "multi_categorical"]
    offsets = np.cumsum([0] + [f.cardinality for f in single])
    index = tf.constant(np.stack([encoded[f.name] + o for f, o in zip(single, offsets)], axis=1))
    table, linear = uniform(int(offsets[-1]), dim), tf.Variable(tf.zeros([int(offsets[-1]), 1]))
    multi_inputs = [(tf.constant(encoded[f.name]), tf.constant(encoded[mask_key(f.name)], tf.float32)[:, :, None],
                     uniform(f.cardinality, dim), tf.Variable(tf.zeros([f.cardinality, 1]))) for f in multi]
    dense_fields = [f for f in spec.features if not f.is_categorical]
    dense = tf.constant(np.concatenate([np.asarray(encoded[f.name], np.float32).reshape(batch, -1)
                                        for f in dense_fields], axis=1))
    widths = [np.asarray(encoded[f.name]).reshape(batch, -1).shape[1] for f in dense_fields]
    dense_vectors = [uniform(w, dim) for w in widths]
    dense_weights = tf.Variable(tf.zeros([sum(widths), 1]))
    fields = len(single) + len(multi) + len(dense_fields)
    units = (fields * dim + sum(widths),) + tuple(cfg.hidden_units)
    kernels = [uniform(a, b) for a, b in zip(units[:-1], units[1:])] + [uniform(units[-1], 1)]
    biases = [tf.Variable(tf.zeros([b])) for b in units[1:]]
    bias = tf.Variable(0.0)
    labels = tf.constant(label, tf.float32)
    variables = ([table, linear, dense_weights, bias] + [v for m in multi_inputs for v in m[2:]] + dense_vectors
                 + kernels + biases)
    optimizer = FusedAdam(cfg.learning_rate)
    starts = np.cumsum([0] + widths)

    def step():
        with tf.GradientTape() as tape:
            vectors = [tf.gather(table, index)]
            first = tf.reduce_sum(tf.gather(linear, index), axis=1)
            for ids, mask, rows, weights in multi_inputs:
                count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
                vectors.append((tf.reduce_sum(tf.gather(rows, ids) * mask, axis=1) / count)[:, None])
                first += tf.reduce_sum(tf.gather(weights, ids) * mask, axis=1) / count
            vectors += [tf.matmul(dense[:, a:b], v)[:, None] for a, b, v in zip(starts[:-1], starts[1:], dense_vectors)]
            field_vectors = tf.concat(vectors, axis=1)
            total = tf.reduce_sum(field_vectors, axis=1)
            fm = 0.5 * (tf.reduce_sum(tf.square(total), axis=-1) - tf.reduce_sum(tf.square(field_vectors), axis=[1, 2]))
            h = tf.concat([tf.reshape(field_vectors, [-1, fields * dim]), dense], axis=1)
            for kernel, b in zip(kernels[:-1], biases):
                if bf16:
                    h = tf.nn.relu(tf.nn.bias_add(tf.matmul(tf.cast(h, tf.bfloat16), tf.cast(kernel, tf.bfloat16)),
                                                  tf.cast(b, tf.bfloat16)))
                else:
                    h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, kernel), b))
            logit = (tf.matmul(tf.cast(h, tf.float32), kernels[-1])[:, 0] + fm + first[:, 0]
                     + tf.matmul(dense, dense_weights)[:, 0] + bias)
            loss = (tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logit))
                    + cfg.embedding_l2 * 2.0 * tf.add_n([tf.nn.l2_loss(table)] + [tf.nn.l2_loss(m[2]) for m in multi_inputs]))
            if cfg.l2_reg:  # as FieldEmbeddings, which adds the row penalty only when it is set
                loss += cfg.l2_reg * 2.0 * tf.nn.l2_loss(field_vectors) / batch
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    @tf.function
    def run():
        for _ in tf.range(STEPS_PER_CALL):
            step()

    return run


def ours_step(spec, rows, cfg: DeepFMConfig, seed: int):
    tf.keras.utils.set_random_seed(seed)
    model = DeepFM.from_spec(spec, cfg)
    rankers.compile_ranker(model, cfg)
    features = as_encoded({k: tf.constant(v) for k, v in encode_frame(rows, spec).items()})
    labels = {k: tf.constant(v) for k, v in frame_to_label_columns(rows, spec.labels).items()}

    @tf.function
    def run():
        for _ in tf.range(STEPS_PER_CALL):
            model.train_step((features, labels))

    return run


def peer_step(spec, x_train: dict, label: np.ndarray, batch: int, cfg: DeepFMConfig, seed: int):
    _, PeerDeepFM, _ = _deepctr()
    columns = peer_columns(spec, x_train, cfg.embedding_dim)
    model = PeerDeepFM(columns, columns, dnn_hidden_units=cfg.hidden_units, seed=seed)
    model.compile(tf.keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy")
    x = {k: tf.constant(v[:batch]) for k, v in x_train.items()}
    y = tf.constant(label[:batch, None])

    @tf.function
    def run():
        for _ in tf.range(STEPS_PER_CALL):
            model.train_step((x, y))

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ctr-rows", type=int, default=50000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--hidden-units", default="256,128,64")
    parser.add_argument("--instances", type=int, default=3, help="freshly built copies of each step")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds of 3 graph calls per copy")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--intra-op-threads", type=int, default=0, help="0 = TensorFlow's default")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="0 = TensorFlow's default")
    args = parser.parse_args(argv)
    if args.instances < 1 or args.rounds < 1:
        parser.error("--instances and --rounds must be at least 1")
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    data = synthetic_ctr_logs(args.ctr_rows, seed=args.seed)
    split = random_split(data.frame, test_fraction=0.1, validation_fraction=0.1, seed=args.seed)
    spec = rankers.ranker_spec(DeepFMConfig(), data, split.train)
    cfg = DeepFMConfig(batch_size=args.batch_size, embedding_dim=args.embedding_dim, seed=args.seed,
                       hidden_units=tuple(int(u) for u in args.hidden_units.split(",")))
    rows = split.train.iloc[:args.batch_size]
    x_train = encode_for_peer(split.train, spec)
    label = split.train["label"].to_numpy(np.float32)
    builders = {
        "DeepCTR": lambda i: peer_step(spec, x_train, label, args.batch_size, cfg, args.seed + i),
        "ours": lambda i: ours_step(spec, rows, cfg, args.seed + i),
        "minimal": lambda i: minimal_step(spec, encode_frame(rows, spec), label[:args.batch_size], cfg, args.seed + i),
    }
    calls = [(name, i, build(i)) for i in range(args.instances) for name, build in builders.items()]
    for _, _, run in calls:
        run()  # trace and warm up, untimed
    times = {(name, i): [] for name, i, _ in calls}
    for _ in range(args.rounds):
        for name, i, run in calls:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(3):
                run()
            steps = 3 * STEPS_PER_CALL
            times[(name, i)].append(((time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps))
    per_step = {name: np.mean([np.median(np.array(times[(name, i)]), axis=0) for i in range(args.instances)], axis=0)
                for name in builders}
    print(f"DeepFM training step, one fixed batch of {args.batch_size}, {STEPS_PER_CALL} steps per graph call; "
          f"TensorFlow threads (intra, inter) = ({args.intra_op_threads or 'default'}, "
          f"{args.inter_op_threads or 'default'}); ours and minimal in {resolve_precision(cfg.precision)}")
    print(f"{'step':10s} {'wall ms':>9s} {'cpu ms':>9s}")
    for name, (wall, cpu) in per_step.items():
        print(f"{name:10s} {wall * 1e3:9.3f} {cpu * 1e3:9.3f}")
    for a, b, meaning in (("DeepCTR", "ours", "our step's speed-up over DeepCTR's"),
                          ("DeepCTR", "minimal", "a bare-TensorFlow step's speed-up over DeepCTR's"),
                          ("ours", "minimal", "our model code's cost above bare TensorFlow")):
        wall, cpu = per_step[a] / per_step[b]
        print(f"{a}/{b}: wall {wall:.3f}x, cpu {cpu:.3f}x  ({meaning})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
