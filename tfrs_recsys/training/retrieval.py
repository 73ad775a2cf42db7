"""Train and evaluate the two-tower retrieval model; write its run directory.

Evaluation is exact (DESIGN §5): every query is scored against every catalog item, the
items of the query's history are excluded (leave-last-out), and the 0-based rank of the
held-out item gives recall/NDCG/MRR@k (:func:`tfrs_recsys.metrics.topk_metrics`). Under the
TFRS tutorial protocol (``random_80_20``) nothing is excluded and ``recall@100`` is the
tutorial's top-100 hit rate (``factorized_top_k/top_100_categorical_accuracy``).

Pairwise evaluation (with ``loss`` = ``bpr`` | ``triplet``, or ``eval_pairwise``) scores the held-out
rated interactions of the random split, liked (rating >= ``positive_threshold``) or disliked:
``pairwise_auc`` = P(s(u, i+) > s(u, i-)) over the pairs of a held-out liked and a held-out disliked
item of the same user, ties counted half (:func:`tfrs_recsys.metrics.pairwise_auc`), and ``auc`` =
the global AUC of the scores against the liked label. ``pairwise_auc`` is then the early-stopping
monitor.

Run directory (beside the files of :mod:`tfrs_recsys.training.common`)::

    item_ids.txt           catalog, one raw id per line, in embedding row order
    item_embeddings.npy    [items, dim] float32, L2-normalized item vectors
    items.parquet          item metadata of the catalog (title, genres, ...)
    user_ids.txt           users with a trained embedding
    users.parquet          user features (when the data has them)
    histories.parquet      user_id, items: every user's full history, oldest first (for serving)
    feature_spec.json      item and user feature columns the towers use
    retrieval_meta.json    sizes, resolved negatives, learned inverse temperature, timings
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tfrs_recsys import paths
from tfrs_recsys.config import PAIRWISE_LOSSES, ConfigError, RetrievalConfig, build_config
from tfrs_recsys.data import pairs
from tfrs_recsys.data import sequences as seq
from tfrs_recsys.data.bundles import InteractionData
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.metrics import auc, pairwise_auc, rank_of_target, topk_metrics
from tfrs_recsys.models.retrieval import TwoTowerRetrieval, resolve_negatives
from tfrs_recsys.models.towers import ItemEncoder, ItemTower, QueryTower, SequenceEncoder
from tfrs_recsys.training import distribution
from tfrs_recsys.training.common import (BEST_WEIGHTS, CONFIG_FILE, TEST_METRICS, EpochEvaluator, fit_verbosity,
                                         plot_curves, prepare_run_dir, release_run_dir, tensorboard_callback,
                                         write_json)

TUTORIAL_KS = (1, 5, 10, 50, 100)
ITEM_IDS, ITEM_EMBEDDINGS, ITEMS, USER_IDS, USERS = (
    "item_ids.txt", "item_embeddings.npy", "items.parquet", "user_ids.txt", "users.parquet")
HISTORIES, FEATURE_SPEC, META = "histories.parquet", "feature_spec.json", "retrieval_meta.json"


@dataclass
class Vocabularies:
    """What the towers are built from: the catalog, the users and their feature tables."""

    catalog: np.ndarray
    users: np.ndarray | None
    spec: FeatureSpec
    item_tables: dict[str, np.ndarray]
    user_tables: dict[str, np.ndarray]


def _feature_columns(cfg_columns: tuple[str, ...], enabled: bool, frame: pd.DataFrame | None, key: str,
                     group: str) -> tuple[list[str], dict[str, str]]:
    if not enabled:
        return [], {}
    if cfg_columns:
        return list(cfg_columns), {}
    return seq.infer_entity_columns(frame, key, group)


def build_vocabularies(cfg: RetrievalConfig, data: InteractionData, catalog: np.ndarray, users: np.ndarray | None,
                       *, columns: dict[str, list[str]] | None = None) -> tuple[Vocabularies, dict]:
    """Feature tables of the catalog and users. ``columns`` ({"item": [...], "user": [...]}) fixes the
    columns (reloading a run); otherwise they follow the config. Returns (vocabularies, skipped columns)."""
    skipped: dict[str, str] = {}
    if columns is None:
        item_cols, skip_i = _feature_columns(cfg.item_feature_columns, cfg.use_item_features, data.items,
                                             "item_id", "item")
        user_cols, skip_u = _feature_columns(cfg.user_feature_columns, cfg.use_user_features and users is not None,
                                             data.users, "user_id", "user")
        skipped = {**{f"item.{k}": v for k, v in skip_i.items()}, **{f"user.{k}": v for k, v in skip_u.items()}}
    else:
        item_cols, user_cols = columns["item"], columns["user"]
    item_specs, item_tables = seq.entity_features(data.items, "item_id", catalog, item_cols, group="item")
    user_specs, user_tables = (seq.entity_features(data.users, "user_id", users, user_cols, group="user")
                               if users is not None else ([], {}))
    spec = FeatureSpec(item_specs + user_specs, labels=[], user_column="user_id", item_column="item_id")
    return Vocabularies(catalog, users, spec, item_tables, user_tables), skipped


def build_model(cfg: RetrievalConfig, vocab: Vocabularies, *, item_probabilities: np.ndarray | None = None,
                negatives: str = "full", targets_per_batch: float | None = None) -> TwoTowerRetrieval:
    """The model of ``cfg`` over ``vocab`` (variables are created on first call)."""
    dim = cfg.embedding_dim
    encoder = ItemEncoder(vocab.catalog, dim, feature_specs=vocab.spec.group("item"),
                          feature_tables=vocab.item_tables, name="item_encoder")
    sequence_encoder = (SequenceEncoder(cfg.max_history, dim, cfg.num_blocks, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                        name="sequence_encoder") if cfg.use_transformer else None)
    query = QueryTower(encoder, dim, sequence_encoder=sequence_encoder,
                       user_vocabulary=vocab.users if cfg.use_user_id or vocab.spec.group("user") else None,
                       use_user_embedding=cfg.use_user_id, user_feature_specs=vocab.spec.group("user"),
                       user_feature_tables=vocab.user_tables,
                       hidden_units=cfg.query_hidden_units, dropout=cfg.dropout, user_id_dropout=cfg.user_id_dropout,
                       name="query_tower")
    items = ItemTower(encoder, dim, cfg.item_hidden_units, cfg.dropout, name="item_tower")
    return TwoTowerRetrieval(query, items, vocab.catalog, negatives=negatives, item_probabilities=item_probabilities,
                             num_sampled=cfg.num_sampled_negatives, logq_correction=cfg.logq_correction,
                             remove_accidental_hits=cfg.remove_accidental_hits, hard_negatives=cfg.hard_negatives,
                             temperature=cfg.inverse_temperature, max_temperature=cfg.max_inverse_temperature,
                             targets_per_batch=targets_per_batch, loss=cfg.loss, margin=cfg.margin)


def query_vectors(model: TwoTowerRetrieval, user_ids: np.ndarray, histories: list[np.ndarray], max_len: int,
                  batch_size: int = 512) -> np.ndarray:
    """``tau * q`` for each (user, history), ``[N, D]`` float32."""
    out = []
    for lo in range(0, len(user_ids), batch_size):
        features = {"user_id": tf.constant(np.asarray(user_ids[lo:lo + batch_size]).astype(str)),
                    "history": tf.constant(seq.pad_left(histories[lo:lo + batch_size], max_len).astype(str))}
        out.append(model.query_embeddings(features).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.query_tower.head.layers[-1].units), np.float32)


def ranks(model: TwoTowerRetrieval, held: seq.HeldOut, max_len: int, chunk: int = 1024) -> np.ndarray:
    """0-based rank of each held-out target among all catalog items, its ``exclude`` items skipped."""
    catalog = model.catalog.numpy().astype(str)
    position = {item: i for i, item in enumerate(catalog)}
    candidates = model.candidate_embeddings().numpy()
    out = []
    for lo in range(0, len(held), chunk):
        hi = min(len(held), lo + chunk)
        queries = query_vectors(model, held.user_ids[lo:hi], held.histories[lo:hi], max_len)
        scores = queries @ candidates.T
        exclude = np.zeros(scores.shape, dtype=bool)
        for row, items in enumerate(held.exclude[lo:hi]):
            exclude[row, [position[i] for i in items if i in position]] = True
        targets = np.array([position[t] for t in held.targets[lo:hi]])
        out.append(rank_of_target(scores, targets, exclude))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate(model: TwoTowerRetrieval, held: seq.HeldOut, max_len: int, ks) -> dict[str, float]:
    return topk_metrics(ranks(model, held, max_len), ks)


def item_scores(model: TwoTowerRetrieval, rated: pairs.RatedHeldOut, max_len: int) -> np.ndarray:
    """``s(u, i) = tau * <q(u, history), c(i)>`` of each held-out row, ``[N]``."""
    position = {item: i for i, item in enumerate(model.catalog.numpy().astype(str))}
    # Rows of one user share the query (their training history): compute it once per user.
    users, first, inverse = np.unique(rated.user_ids.astype(str), return_index=True, return_inverse=True)
    queries = query_vectors(model, users, [rated.histories[i] for i in first], max_len)[inverse]
    items = model.candidate_embeddings().numpy()[[position[i] for i in rated.item_ids]]
    return np.sum(queries * items, axis=1)


def evaluate_pairwise(model: TwoTowerRetrieval, rated: pairs.RatedHeldOut, max_len: int) -> dict[str, float]:
    """``pairwise_auc`` (same-user liked vs disliked pairs) and global ``auc`` of the held-out scores."""
    scores = item_scores(model, rated, max_len)
    value, _, _ = pairwise_auc(rated.liked, scores, rated.user_ids)
    return {"pairwise_auc": value, "auc": auc(rated.liked, scores)}


def same_user_pairs(rated: pairs.RatedHeldOut) -> int:
    """How many (liked, disliked) pairs of one user ``pairwise_auc`` averages over."""
    counts = pd.DataFrame({"user": rated.user_ids, "liked": rated.liked}).groupby("user")["liked"].agg(["sum", "count"])
    return int((counts["sum"] * (counts["count"] - counts["sum"])).sum())


def pairwise_metrics_on(cfg: RetrievalConfig) -> bool:
    return cfg.loss in PAIRWISE_LOSSES or cfg.eval_pairwise


def resolve_protocol(cfg: RetrievalConfig) -> str:
    """``auto`` -> ``random_80_20`` when pairwise metrics are on (they need several held-out items per user)."""
    if cfg.protocol != "auto":
        return cfg.protocol
    return "random_80_20" if pairwise_metrics_on(cfg) else "leave_last_out"


def split_data(cfg: RetrievalConfig, data: InteractionData) -> seq.SequenceSplit:
    if resolve_protocol(cfg) == "leave_last_out":
        return seq.leave_last_out(data, min_interactions=cfg.min_interactions)
    return seq.random_split(data, test_fraction=0.2, validation_fraction=cfg.validation_fraction, seed=cfg.seed)


def run(cfg: RetrievalConfig) -> dict[str, float]:
    """Train on ``cfg.dataset``, early-stop on validation, write the run directory, return test metrics."""
    from tfrs_recsys.data.registry import load_interactions

    # First of all: MultiWorkerMirroredStrategy can only be created before TensorFlow runs any op.
    strategy = distribution.start_runtime(cfg)
    data = load_interactions(cfg)
    for report in data.skipped:
        report.log()
    return train_and_evaluate(cfg, data, strategy=strategy).test_metrics


@dataclass
class RunResult:
    test_metrics: dict[str, float]
    model: TwoTowerRetrieval
    split: seq.SequenceSplit
    run_dir: Path | str


def train_and_evaluate(cfg: RetrievalConfig, data: InteractionData, *,
                       strategy: tf.distribute.Strategy | None = None) -> RunResult:
    """The body of :func:`run` for data already in memory, under ``strategy`` (default: ``cfg.distribute``).

    ``cfg.batch_size`` is the global batch: with ``R`` replicas each trains on ``batch_size / R``
    windows per step, and in-batch negatives come from that local batch
    (:mod:`tfrs_recsys.models.retrieval`). Only the chief writes the run directory.
    """
    if strategy is None:
        strategy = distribution.start_runtime(cfg)
    chief = distribution.is_chief(strategy)
    tf.keras.utils.set_random_seed(cfg.seed)
    split = split_data(cfg, data)
    catalog = seq.catalog_ids(data.interactions)
    vocab, skipped = build_vocabularies(cfg, data, catalog, split.train.user_ids)
    if not cfg.use_transformer and not cfg.use_user_id and not vocab.spec.group("user"):
        raise ConfigError(f"use_transformer=false and use_user_id=false leave the query tower only user features, "
                          f"but {data.name} has none usable; set use_user_id=true")
    negatives = resolve_negatives(cfg.negatives, len(catalog), cfg.full_softmax_max_items)
    probabilities = seq.item_probabilities(split.train, catalog)
    sampler, targets_per_batch = None, None
    if cfg.loss in PAIRWISE_LOSSES:
        sampler = pairs.TripleSampler(split.rows.train, catalog, positive_threshold=cfg.positive_threshold,
                                      use_disliked=cfg.use_disliked, sampling=cfg.pairwise_sampling,
                                      max_len=cfg.max_history if cfg.use_transformer else 0, seed=cfg.seed,
                                      loss=cfg.loss)
        train_ds = sampler.dataset(cfg.batch_size)
        negatives_used = f"disliked, else {cfg.pairwise_sampling}" if cfg.use_disliked else cfg.pairwise_sampling
        examples = f"{len(sampler)} training triples (loss={cfg.loss}, {sampler.dropped} liked without a negative)"
    else:
        windows = seq.training_windows(split.train, cfg.max_history, mode=cfg.training_mode,
                                       stride=cfg.window_stride or None)
        train_ds = seq.training_dataset(windows, cfg.batch_size, seed=cfg.seed)
        # Batches group similar lengths: weigh targets alike by normalizing with the mean batch's count.
        targets_per_batch = float((windows["targets"] != seq.PAD).sum()) / len(windows["targets"]) * cfg.batch_size
        examples = f"{len(windows['user_id'])} training windows ({cfg.training_mode}), negatives={negatives}"
        negatives_used = negatives
    train_ds = distribution.shard_by_data(train_ds)
    rated = ({part: pairs.rated_held_out(getattr(split.rows, part), split.train, cfg.positive_threshold)
              for part in ("validation", "test")} if pairwise_metrics_on(cfg) else {})
    with strategy.scope():  # variables (model and optimizer) are mirrored on every replica
        model = build_model(cfg, vocab, item_probabilities=probabilities, negatives=negatives,
                            targets_per_batch=targets_per_batch)
        optimizer = (tf.keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay) if cfg.weight_decay
                     else tf.keras.optimizers.Adam(cfg.learning_rate))
        model.compile(optimizer=optimizer)

    tutorial = split.protocol == "random_80_20"
    ks = TUTORIAL_KS if tutorial else tuple(cfg.eval_ks)
    monitor = "recall@100" if tutorial else "ndcg@10" if 10 in ks else f"ndcg@{ks[0]}"
    if rated:
        if not same_user_pairs(rated["validation"]):
            print(f"retrieval: no held-out user has both a liked and a disliked item, so pairwise_auc is undefined; "
                  f"early stopping on {monitor}", flush=True)
        else:
            monitor = "pairwise_auc"

    def eval_fn(part: str, held: seq.HeldOut):
        def metrics(m: TwoTowerRetrieval) -> dict[str, float]:
            out = evaluate(m, held, cfg.max_history, ks)
            if rated:
                out.update(evaluate_pairwise(m, rated[part], cfg.max_history))
            return out
        return metrics

    run_dir = prepare_run_dir(cfg, "retrieval", chief=chief)
    print(f"retrieval: {data.name}, {len(catalog)} items, {len(split.train)} users, "
          f"{examples}, protocol={split.protocol}, features={vocab.spec.feature_names or 'none'}, "
          f"strategy: {distribution.describe(strategy)}", flush=True)
    for column, why in skipped.items():
        print(f"retrieval: feature column {column} not used: {why}", flush=True)

    evaluator = EpochEvaluator(eval_fn("validation", split.validation), run_dir, monitor=monitor,
                               patience=cfg.patience)
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=cfg.epochs, verbose=fit_verbosity(cfg),
                        callbacks=[evaluator, tensorboard_callback(run_dir)])
    train_seconds = time.perf_counter() - start
    if evaluator.best_epoch is None:
        model.save_weights(str(paths.join(run_dir, BEST_WEIGHTS)))

    metrics = eval_fn("test", split.test)(model)
    write_json(paths.join(run_dir, TEST_METRICS), metrics)
    write_artifacts(run_dir, model, data, vocab, split, {
        "protocol": split.protocol, "negatives": negatives_used, "monitor": monitor, "best_epoch": evaluator.best_epoch,
        "best_validation": evaluator.best_value, "train_seconds": round(train_seconds, 2),
        "epochs_run": len(history.epoch), "loss": cfg.loss,
        **({"training_triples": len(sampler), "liked_without_negative": sampler.dropped} if sampler else {}),
        **{f"pairwise_{part}": {"rows": len(r), "liked": int(r.liked.sum()), "pairs": same_user_pairs(r)}
           for part, r in rated.items()},
        "skipped_feature_columns": skipped,
        "item_feature_columns": [c.name for c in vocab.spec.group("item")],
        "user_feature_columns": [c.name for c in vocab.spec.group("user")]})
    plot_curves(run_dir)
    release_run_dir(run_dir, chief=chief)
    return RunResult(metrics, model, split, run_dir)


def write_artifacts(run_dir: Path | str, model: TwoTowerRetrieval, data: InteractionData, vocab: Vocabularies,
                    split: seq.SequenceSplit, meta: dict) -> None:
    catalog = [str(i) for i in vocab.catalog]
    paths.write_text(paths.join(run_dir, ITEM_IDS), "\n".join(catalog) + "\n")
    paths.save_npy(paths.join(run_dir, ITEM_EMBEDDINGS), model.candidate_embeddings().numpy().astype(np.float32))
    items = data.items.assign(item_id=data.items["item_id"].astype(str)).drop_duplicates("item_id")
    items = pd.DataFrame({"item_id": catalog}).merge(items, on="item_id", how="left")
    if "title" in items:
        items["title"] = items["title"].fillna(items["item_id"]).astype(str)
    paths.write_parquet(items, paths.join(run_dir, ITEMS), index=False)
    if vocab.users is not None:
        paths.write_text(paths.join(run_dir, USER_IDS), "".join(f"{u}\n" for u in vocab.users))
    if data.users is not None:
        paths.write_parquet(data.users.assign(user_id=data.users["user_id"].astype(str)), paths.join(run_dir, USERS),
                            index=False)
    histories = pd.DataFrame({"user_id": split.full.user_ids.astype(str),
                              "items": [list(map(str, s)) for s in split.full.items]})
    paths.write_parquet(histories, paths.join(run_dir, HISTORIES), index=False)
    vocab.spec.save(paths.join(run_dir, FEATURE_SPEC))
    meta = {"num_items": len(catalog), "num_users": 0 if vocab.users is None else len(vocab.users),
            "embedding_dim": int(model.item_tower(tf.constant(catalog[:1])).shape[-1]),
            "max_history": model.query_tower.sequence_encoder.max_len if model.query_tower.sequence_encoder else None,
            "inverse_temperature": float(model.temperature.value.numpy()), **meta}
    paths.write_text(paths.join(run_dir, META), json.dumps(meta, indent=2, default=str) + "\n")


@dataclass
class TrainedRetrieval:
    """A trained run reloaded from its directory."""

    model: TwoTowerRetrieval
    cfg: RetrievalConfig
    items: pd.DataFrame  # catalog order
    histories: dict[str, list[str]]
    meta: dict
    run_dir: Path | str

    @property
    def catalog(self) -> np.ndarray:
        return self.model.catalog.numpy().astype(str)


def load_trained(run_dir: str | Path) -> TrainedRetrieval:
    """Rebuild the model of a run directory (local or a URL) and restore its best weights."""
    run_dir = paths.as_path(run_dir)

    def at(name: str):
        return paths.join(run_dir, name)

    needed = [CONFIG_FILE, ITEM_IDS, ITEMS, HISTORIES, FEATURE_SPEC, META, BEST_WEIGHTS + ".index"]
    missing = [n for n in needed if not paths.exists(at(n))]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished retrieval run (missing {missing}); "
                                f"train one with `python -m tfrs_recsys.train retrieval --output-dir {run_dir}`")
    cfg = build_config("retrieval", environ={}, config_file=at(CONFIG_FILE))
    catalog = np.array(paths.read_text(at(ITEM_IDS)).splitlines(), dtype=object)
    items = paths.read_parquet(at(ITEMS))
    users = np.array(paths.read_text(at(USER_IDS)).splitlines(), dtype=object) if paths.exists(at(USER_IDS)) else None
    user_table = paths.read_parquet(at(USERS)) if paths.exists(at(USERS)) else None
    spec = FeatureSpec.load(at(FEATURE_SPEC))
    interactions = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 (("user_id", str), ("item_id", str), ("rating", float), ("timestamp", "int64"))})
    data = InteractionData(interactions, items, user_table)
    vocab, _ = build_vocabularies(cfg, data, catalog, users, columns={
        "item": [c.name for c in spec.group("item")], "user": [c.name for c in spec.group("user")]})
    model = build_model(cfg, vocab)
    history_frame = paths.read_parquet(at(HISTORIES))
    histories = {u: list(h) for u, h in zip(history_frame["user_id"], history_frame["items"])}
    # Create the variables, then restore them (optimizer slots in the checkpoint are not needed).
    model.query_embeddings({"user_id": tf.constant([""]), "history": tf.constant([[""] * cfg.max_history])})
    model.candidate_embeddings(tf.constant(catalog[:1].astype(str)))
    model.load_weights(str(at(BEST_WEIGHTS))).expect_partial().assert_existing_objects_matched()
    meta = paths.read_json(at(META))
    return TrainedRetrieval(model, cfg, items, histories, meta, run_dir)
