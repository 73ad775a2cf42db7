"""Rankers against DeepCTR 0.9.4 on the same data, split and epochs; ESMM against a clicked-only CVR model.

    .venv/bin/pip install -r bench/requirements.txt --no-deps
    .venv/bin/python bench/ranking.py [--models esmm,deepfm] [--epochs 3] [--seeds 42,43,44]
                                      [--speed-rounds 8] [--sessions 5000] [--ctr-rows 50000]
    .venv/bin/python bench/ranking.py --epochs 1 --intra-op-threads 1   # thread pools, for both models

Protocol, for each model family:

* data: synthetic search sessions (ESMM; split by session 80/10/10) and synthetic homepage CTR logs
  (DeepFM; random 80/10/10), both with known true probabilities (tfrs_recsys.data.synthetic);
* the feature spec is inferred from the training rows; DeepCTR gets exactly the same information,
  already encoded by our FeaturePreprocessor (indices, standardized numbers, the 5 time features),
  so it does no string work at all. Our trainer does the same: ``rankers.training_dataset`` encodes
  the rows once with the model's preprocessor before training (both encodings are outside the
  timed epochs; their times are printed), and the model still scores raw strings everywhere else
  (evaluation here, export, serving);
* our defaults (``--precision auto``: the MLP products train in bfloat16 on a CPU with native
  bfloat16, else float32; the embedding tables train with row-wise Adagrad at the config's
  ``embedding_learning_rate``, with its ``embedding_l2``); ``--precision float32`` for the float32
  figures;
* equal embedding size and hidden units (``--embedding-dim``, ``--hidden-units``), the same Adam
  learning rate (DeepCTR: every variable; ours: every variable but the tables), batch size and
  number of epochs, no early stopping;
* quality run, for each of ``--seeds`` (the data, the split and both models' initial weights
  change with the seed): epochs alternate (ours, DeepCTR's, ours, ...), each model evaluated after
  every epoch; the AUCs are reported per seed and as the mean over the seeds;
* throughput, measured apart on freshly built models of the first seed: ``--speed-rounds`` calls of
  ``fit(epochs=3)`` to each, alternating so that a busy shared machine slows both alike, one untimed
  call first (graph tracing); training examples per second of the median epoch, by wall clock and
  by this process's CPU time, two ways from the same calls (:func:`speed_rounds`): from one epoch's
  end to the next (what every epoch of a multi-epoch ``fit`` costs) and the first epoch of each
  call (one epoch plus ``fit``'s once-per-call setup); with the range of the per-call ratios
  (single short epochs swing widely on a shared machine, so a median of several is the figure to
  quote);
* test metrics come from the same NumPy functions (tfrs_recsys.metrics) for both, after every epoch
  (untimed); the table shows the last epoch, the curve line every epoch.

Printed: AUCs (mean over the seeds) and throughput of both and the ratios ours / DeepCTR (target:
>= 1x for each), and for ESMM the entire-space CVR quality of ESMM, DeepCTR's ESMM
(pCVR = pCTCVR / pCTR) and the clicked-only baseline.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

# isort: split
import tensorflow as tf

from tfrs_recsys import metrics as M
from tfrs_recsys.config import DeepFMConfig, ESMMConfig
from tfrs_recsys.data.splits import random_split, split_by_session
from tfrs_recsys.data.synthetic import synthetic_ctr_logs, synthetic_sessions
from tfrs_recsys.features.preprocessing import encode_frame, mask_key
from tfrs_recsys.models.deepfm import DeepFM
from tfrs_recsys.models.esmm import ESMM, ClickedCVR
from tfrs_recsys.models.mlp import resolve_precision
from tfrs_recsys.training import rankers
from tfrs_recsys.training.deepfm import evaluate_deepfm
from tfrs_recsys.training.esmm import cvr_metrics, evaluate_clicked_cvr, evaluate_esmm


def _deepctr():
    try:
        from deepctr import feature_column as fc
        from deepctr.models import DeepFM as PeerDeepFM
        from deepctr.models.multitask import ESMM as PeerESMM
    except ImportError as exc:
        sys.exit(f"DeepCTR is not installed ({exc}); run: "
                 ".venv/bin/pip install -r bench/requirements.txt --no-deps")
    return fc, PeerDeepFM, PeerESMM


def encode_for_peer(frame, spec) -> dict[str, np.ndarray]:
    """Our preprocessing, done once: what DeepCTR's Input layers take (ints, floats)."""
    batch = encode_frame(frame, spec)
    encoded = {}
    for f in spec.features:
        value = batch[f.name]
        if f.kind == "multi_categorical":
            # DeepCTR masks index 0 as padding: shift our indices (0 = OOV) up by one.
            value = np.where(batch[mask_key(f.name)] > 0, value + 1, 0)
        encoded[f.name] = value
    return encoded


def peer_columns(spec, encoded, dim: int):
    fc, _, _ = _deepctr()
    cols = []
    for f in spec.features:
        if f.kind == "multi_categorical":
            cols.append(fc.VarLenSparseFeat(fc.SparseFeat(f.name, f.cardinality + 1, embedding_dim=dim),
                                            maxlen=encoded[f.name].shape[1], combiner="mean"))
        elif f.is_categorical:
            cols.append(fc.SparseFeat(f.name, f.cardinality, embedding_dim=dim))
        else:
            cols.append(fc.DenseFeat(f.name, encoded[f.name].shape[1] if encoded[f.name].ndim == 2 else 1))
    return cols


def pad_like(encoded: dict, reference: dict) -> dict:
    """Multi-valued test arrays padded (or cut) to the training width DeepCTR's inputs were built with."""
    out = {}
    for name, value in encoded.items():
        if value.ndim == 2 and reference[name].ndim == 2 and value.shape[1] != reference[name].shape[1]:
            width = reference[name].shape[1]
            value = (value[:, :width] if value.shape[1] > width
                     else np.pad(value, ((0, 0), (0, width - value.shape[1]))))
        out[name] = value
    return out


EPOCHS_PER_CALL = 3


def _timed(fn):
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


@dataclass
class Prepared:
    """What both models of one family train on: the spec, our config and dataset, DeepCTR's arrays."""
    spec: object
    cfg: object
    ds: tf.data.Dataset
    steps: int
    x_train: dict
    x_test: dict
    encode_seconds: dict


def prepare(args, data, split, config_cls) -> Prepared:
    """Spec inferred from the training rows, the config from the bench's flags, and the training rows
    encoded once for each model (both encodings timed, outside the timed epochs)."""
    spec = rankers.ranker_spec(config_cls(), data, split.train)
    cfg = config_cls(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                     embedding_dim=args.embedding_dim, hidden_units=args.hidden_units, seed=args.seed,
                     precision=args.precision)
    (ds, steps), encode_ours = _timed(lambda: rankers.training_dataset(split.train, spec, cfg))
    x_train, encode_peer = _timed(lambda: encode_for_peer(split.train, spec))
    x_test = pad_like(encode_for_peer(split.test, spec), x_train)
    return Prepared(spec, cfg, ds, steps, x_train, x_test, {"ours": encode_ours, "peer": encode_peer})


def build_trainer(model_cls, spec, cfg, ds, steps: int):
    """A freshly seeded, compiled model of ours and a callable ``(epochs=1, callbacks=())`` that trains
    it on ``ds``."""
    tf.keras.utils.set_random_seed(cfg.seed)
    model = model_cls.from_spec(spec, cfg)
    rankers.compile_ranker(model, cfg)
    return model, lambda epochs=1, callbacks=(): model.fit(ds, epochs=epochs, steps_per_epoch=steps,
                                                           callbacks=list(callbacks), verbose=0)


def alternate_epochs(epochs: int, ours, peer) -> dict:
    """One epoch of each in turn, ``epochs`` times; after each epoch ``ours[1]()`` / ``peer[1]()``
    evaluate (untimed): the per-epoch test curves of the quality run."""
    curves = {"ours": [], "peer": []}
    for _ in range(epochs):
        for name, (fit_one, evaluate) in (("ours", ours), ("peer", peer)):
            fit_one()
            curves[name].append(evaluate())
    return curves


class EpochClock(tf.keras.callbacks.Callback):
    """Wall clock and process CPU time at the start of a ``fit`` call and at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.marks = [(time.perf_counter(), time.process_time())]

    def on_epoch_end(self, epoch, logs=None):
        self.marks.append((time.perf_counter(), time.process_time()))


def speed_rounds(rounds: int, ours, peer, rows: int, epochs_per_call: int = EPOCHS_PER_CALL) -> dict:
    """Training throughput of freshly built models, measured two ways in the same ``fit`` calls.

    ``rounds`` calls of ``fit(epochs=epochs_per_call)`` to each model, alternating so that a busy
    shared machine slows both alike; one untimed call first (graph tracing). The times are read at
    the call's start and at every epoch's end (:class:`EpochClock`):

    * ``wall`` / ``cpu``: the epochs of a training run, from one epoch's end to the next inside a
      call: everything a multi-epoch ``fit`` pays per epoch (a model that rebuilds its input
      iterator every epoch pays that here), nothing it pays once per call;
    * ``first_wall`` / ``first_cpu``: the first epoch of each call, from the call's start: one epoch
      plus the once-per-call setup of ``fit`` (data adapter, iterator, callbacks), which is what a
      caller pays who trains one epoch per ``fit`` call.

    Examples per second from the median of each, by wall clock and by this process's CPU time, and
    the range of the per-call ratios ours / peer of the mean epoch-to-epoch wall time.
    """
    if epochs_per_call < 2:
        raise ValueError("epochs_per_call must be at least 2: an epoch-to-epoch time needs two epoch ends")
    times = {key: {"ours": [], "peer": []} for key in ("wall", "cpu", "first_wall", "first_cpu")}
    call_means = {"ours": [], "peer": []}
    for round_index in range(rounds + 1):
        for name, fit in (("ours", ours), ("peer", peer)):
            clock = EpochClock()
            fit(epochs=epochs_per_call, callbacks=[clock])
            if round_index == 0:
                continue
            marks = np.array(clock.marks)
            steps = np.diff(marks, axis=0)
            times["first_wall"][name].append(steps[0, 0])
            times["first_cpu"][name].append(steps[0, 1])
            times["wall"][name].extend(steps[1:, 0])
            times["cpu"][name].extend(steps[1:, 1])
            call_means[name].append(float(steps[1:, 0].mean()))
    ratios = np.array(call_means["peer"]) / np.array(call_means["ours"])
    out = {key: {k: rows / float(np.median(v)) for k, v in per_model.items()}
           for key, per_model in times.items()}
    return {**out, "round_ratios": (float(ratios.min()), float(ratios.max())), "rounds": rounds,
            "epochs_per_call": epochs_per_call}


def bench_esmm(args, speed: bool) -> dict:
    _, _, PeerESMM = _deepctr()
    data = synthetic_sessions(args.sessions, 20, seed=args.seed)
    split = split_by_session(data.frame, "session_id", seed=args.seed)
    prep = prepare(args, data, split, ESMMConfig)
    spec, cfg, ds, steps = prep.spec, prep.cfg, prep.ds, prep.steps
    x_train, x_test = prep.x_train, prep.x_test
    click = split.train["click"].to_numpy(np.float32)
    ctcvr = click * split.train["conversion"].to_numpy(np.float32)

    def build_ours():
        return build_trainer(ESMM, spec, cfg, ds, steps)

    def build_peer():
        model = PeerESMM(peer_columns(spec, x_train, cfg.embedding_dim),
                         tower_dnn_hidden_units=cfg.hidden_units,
                         seed=args.seed)
        model.compile(tf.keras.optimizers.Adam(cfg.learning_rate),
                      loss=["binary_crossentropy", "binary_crossentropy"])
        return model, lambda epochs=1, callbacks=(): model.fit(
            x_train, [click, ctcvr], batch_size=cfg.batch_size, epochs=epochs, shuffle=True,
            callbacks=list(callbacks), verbose=0)

    truth = data.truth.loc[split.test.index]
    test_click = split.test["click"].to_numpy(np.float64)
    test_conv = split.test["conversion"].to_numpy(np.float64)
    (ours, fit_ours), (peer, fit_peer) = build_ours(), build_peer()

    def evaluate_peer() -> dict:
        p_ctr, p_ctcvr = (np.asarray(p, np.float64).ravel()
                          for p in peer.predict(x_test, batch_size=8192, verbose=0))
        return {"ctr_auc": M.auc(test_click, p_ctr), "ctcvr_auc": M.auc(test_click * test_conv, p_ctcvr),
                **cvr_metrics(p_ctcvr / np.maximum(p_ctr, 1e-12), test_click, test_conv, truth)}

    curves = alternate_epochs(args.epochs,
                              (fit_ours, lambda: evaluate_esmm(ours, split.test, spec, truth=truth)),
                              (fit_peer, evaluate_peer))

    clicked = split.train[split.train["click"] > 0]
    bds, bsteps = rankers.training_dataset(clicked, spec, cfg)
    baseline, _ = build_trainer(ClickedCVR, spec, cfg, bds, bsteps)
    baseline.fit(bds, epochs=cfg.epochs, steps_per_epoch=bsteps, verbose=0)
    base = evaluate_clicked_cvr(baseline, split.test, spec, truth=truth)
    if speed:
        speed = speed_rounds(args.speed_rounds, build_ours()[1], build_peer()[1], len(split.train))
    return {"rows_train": len(split.train), "ours": curves["ours"][-1], "deepctr": curves["peer"][-1],
            "baseline": base, "curves": curves, "speed": speed,
            "encode_seconds": prep.encode_seconds, "precision": resolve_precision(cfg.precision)}


def bench_deepfm(args, speed: bool) -> dict:
    _, PeerDeepFM, _ = _deepctr()
    data = synthetic_ctr_logs(args.ctr_rows, seed=args.seed)
    split = random_split(data.frame, test_fraction=0.1, validation_fraction=0.1, seed=args.seed)
    prep = prepare(args, data, split, DeepFMConfig)
    spec, cfg, ds, steps = prep.spec, prep.cfg, prep.ds, prep.steps
    x_train, x_test = prep.x_train, prep.x_test
    label = split.train["label"].to_numpy(np.float32)

    def build_ours():
        return build_trainer(DeepFM, spec, cfg, ds, steps)

    def build_peer():
        cols = peer_columns(spec, x_train, cfg.embedding_dim)
        model = PeerDeepFM(cols, cols, dnn_hidden_units=cfg.hidden_units, seed=args.seed)
        model.compile(tf.keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy")
        return model, lambda epochs=1, callbacks=(): model.fit(
            x_train, label, batch_size=cfg.batch_size, epochs=epochs, shuffle=True, callbacks=list(callbacks),
            verbose=0)

    truth = data.truth.loc[split.test.index]
    y = split.test["label"].to_numpy(np.float64)
    (ours, fit_ours), (peer, fit_peer) = build_ours(), build_peer()

    def evaluate_peer() -> dict:
        p = np.asarray(peer.predict(x_test, batch_size=8192, verbose=0), np.float64).ravel()
        return {"auc": M.auc(y, p), "logloss": M.logloss(y, p),
                "gauc": M.gauc(y, p, split.test["user_id"].to_numpy())[0],
                "ctr_true_auc": M.expected_auc(truth["true_ctr"].to_numpy(), p)}

    curves = alternate_epochs(args.epochs,
                              (fit_ours, lambda: evaluate_deepfm(ours, split.test, spec, truth=truth)),
                              (fit_peer, evaluate_peer))
    if speed:
        speed = speed_rounds(args.speed_rounds, build_ours()[1], build_peer()[1], len(split.train))
    return {"rows_train": len(split.train), "ours": curves["ours"][-1], "deepctr": curves["peer"][-1],
            "curves": curves, "speed": speed,
            "encode_seconds": prep.encode_seconds, "precision": resolve_precision(cfg.precision)}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b else "n/a"


def _mean(runs: list[dict], part: str, key: str) -> float:
    return float(np.mean([run[part][key] for run in runs]))


def report(name: str, runs: list[dict], seeds: list[int], keys: list[str]) -> None:
    """Per-seed and mean test metrics of ``runs`` (one per seed), then the first seed's throughput."""
    first, speed = runs[0], runs[0]["speed"]
    print(f"\n== {name}: {first['rows_train']} training rows (seed {seeds[0]}), test after the last epoch; "
          f"ours trains its MLP products in {first['precision']} ==")
    print(f"per seed, ours | DeepCTR ({', '.join(keys)}):")
    for seed, run in zip(seeds, runs):
        print(f"  {seed}: " + " ".join(f"{run['ours'][k]:.4f}" for k in keys) + " | "
              + " ".join(f"{run['deepctr'][k]:.4f}" for k in keys))
    print(f"{f'metric, mean of {len(runs)} seeds':28s} {'ours':>9s} {'DeepCTR':>9s} {'ours/DeepCTR':>13s}")
    for k in keys:
        ours, theirs = _mean(runs, "ours", k), _mean(runs, "deepctr", k)
        print(f"{k:28s} {ours:9.4f} {theirs:9.4f} {_ratio(ours, theirs):>13s}")
    print(f"training throughput (seed {seeds[0]}), fresh models, {speed['rounds']} alternating fit calls of "
          f"{speed['epochs_per_call']} epochs each:")
    for key, what in (("wall", "examples/wall s"), ("cpu", "examples/CPU s"),
                      ("first_wall", "examples/wall s"), ("first_cpu", "examples/CPU s")):
        label = ("first epoch of a call, " if key.startswith("first") else "epoch to epoch, ") + what
        print(f"{label:40s} {speed[key]['ours']:9.0f} {speed[key]['peer']:9.0f} "
              f"{_ratio(speed[key]['ours'], speed[key]['peer']):>13s}")
    low, high = speed["round_ratios"]
    print(f"per-call epoch-to-epoch wall ratios ours/DeepCTR from {low:.3f}x to {high:.3f}x")
    enc = first["encode_seconds"]
    print(f"encoding the training rows once, before the timed epochs: ours {enc['ours']:.2f} s "
          f"(training_dataset), DeepCTR's input {enc['peer']:.2f} s")
    print(f"per-epoch test {keys[0]} (seed {seeds[0]}): ours "
          + " ".join(f"{c[keys[0]]:.4f}" for c in first["curves"]["ours"])
          + " | DeepCTR " + " ".join(f"{c[keys[0]]:.4f}" for c in first["curves"]["peer"]))
    if "baseline" in first:
        print(f"\nESMM vs clicked-only CVR baseline, pCVR over the ENTIRE impression space (test, same "
              f"epochs, mean of {len(runs)} seeds):")
        print(f"{'metric':22s} {'ESMM':>9s} {'DeepCTR':>9s} {'baseline':>9s}")
        for k in ("cvr_true_auc", "cvr_true_spearman", "cvr_auc_clicked"):
            print(f"{k:22s} {_mean(runs, 'ours', k):9.4f} {_mean(runs, 'deepctr', k):9.4f} "
                  f"{_mean(runs, 'baseline', k):9.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="esmm,deepfm")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--hidden-units", default="256,128,64")
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--ctr-rows", type=int, default=50000)
    parser.add_argument("--seeds", "--seed", default="42,43,44",
                        help="seeds of the quality runs, comma-separated (AUCs: their mean); "
                             "throughput: the first")
    parser.add_argument("--speed-rounds", type=int, default=8,
                        help=f"timed fit calls of {EPOCHS_PER_CALL} epochs to each model (fresh ones) for "
                             "the throughput figures")
    parser.add_argument("--precision", default="auto",
                        help="ours: auto | float32 | mixed_bfloat16 (MLP products)")
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="TensorFlow intra-op threads for both models (0 = TensorFlow's default)")
    parser.add_argument("--inter-op-threads", type=int, default=0,
                        help="TensorFlow inter-op threads for both models (0 = TensorFlow's default)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    print(f"TensorFlow threads (intra, inter) for both models: "
          f"({args.intra_op_threads or 'default'}, {args.inter_op_threads or 'default'})")
    args.hidden_units = tuple(int(u) for u in args.hidden_units.split(","))
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.speed_rounds < 1:
        parser.error("--speed-rounds must be at least 1")
    benches = {"esmm": ("ESMM", bench_esmm, ["ctr_auc", "ctcvr_auc", "cvr_auc_clicked", "cvr_true_auc"]),
               "deepfm": ("DeepFM", bench_deepfm, ["auc", "gauc", "ctr_true_auc", "logloss"])}
    results = {}
    for name in args.models.split(","):
        if name not in benches:
            parser.error(f"unknown model '{name}'; use esmm and/or deepfm")
        title, bench, keys = benches[name]
        results[name] = [bench(argparse.Namespace(**{**vars(args), "seed": seed}), speed=i == 0)
                         for i, seed in enumerate(seeds)]
        report(title, results[name], seeds, keys)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
