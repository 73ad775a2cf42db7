"""The run directory: what training writes, and what export, evaluate, recommend, tune and the feature
store read back. Its layout is defined here and nowhere else.

Every run::

    config.json          model and resolved config: `train MODEL --config config.json --resume` continues
                         a stopped run; with --overwrite (or another --output-dir) it trains the run again
    train_log.jsonl      one line per epoch: training loss and validation metrics
    test_metrics.json    final metrics on the test split
    checkpoints/best*    the saved weights: the best validation epoch's (retrieval: averaged with later ones)
    tensorboard/         TensorBoard logs (train/ from Keras, validation/ from the per-epoch evaluator)
    training_curves.png  the curves of train_log.jsonl
    resume/              what a stopped run resumes from (training/resume.py); removed on completion
    COMPLETE             written last, once everything else is: export refuses a run without it

A ranker run (esmm, deepfm) adds::

    spec.json            the feature spec the model was built from (vocabularies, statistics, groups)
    split.json           how the data was split, and the row / session counts of each part
    baseline/            ESMM's clicked-only CVR baseline: its train_log.jsonl, TensorBoard logs, resume/
                         (a streamed run's: also its best checkpoint)
    predictions_<part>.parquet   the part's rows scored by `python -m tfrs_recsys.evaluate --run-dir`

A retrieval run adds::

    item_ids.txt         catalog, one raw id per line, in embedding row order
    item_embeddings.npy  [items, dim] float32, the item vectors c(i) (L2-normalized under --similarity cosine)
    items.parquet        item metadata of the catalog (title, genres, ...)
    user_ids.txt         users with a trained embedding
    users.parquet        user features (when the data has them)
    histories.parquet    user_id, items: every user's full history, oldest first
    feature_spec.json    item and user feature columns the towers use
    retrieval_meta.json  sizes, resolved negatives, learned inverse temperature, timings
    cooccurrence.npz     the training sequences' co-occurrence table, its weight and damping

A run directory may be a local path or a ``tf.io.gfile`` URL (:mod:`tfrs_recsys.paths`). In
multi-worker training only the chief writes it; the other workers write a temporary directory
(:func:`create` with ``chief=False``). :func:`create` checks a directory that holds a run already
(:mod:`tfrs_recsys.run_reuse`: another config's run is refused, ``--resume`` continues a stopped one,
``--overwrite`` replaces it). Readers check the files they need first and raise
:class:`RunDirError`, which names the missing file and the command that writes it.
"""
from __future__ import annotations

import atexit
import json
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_recsys import paths, run_lock
from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.config_sources import build_config, save_config
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.errors import UserError

CONFIG, TRAIN_LOG, TEST_METRICS = "config.json", "train_log.jsonl", "test_metrics.json"
CHECKPOINT, TENSORBOARD, CURVES = "checkpoints/best", "tensorboard", "training_curves.png"
SPEC, SPLIT, BASELINE, PREDICTIONS = "spec.json", "split.json", "baseline", "predictions_{part}.parquet"
ITEM_IDS, ITEM_EMBEDDINGS, ITEMS, USER_IDS, USERS = (
    "item_ids.txt", "item_embeddings.npy", "items.parquet", "user_ids.txt", "users.parquet")
HISTORIES, FEATURE_SPEC, META = "histories.parquet", "feature_spec.json", "retrieval_meta.json"
COOCCURRENCE = "cooccurrence.npz"
COMPLETE, RESUME, RESUME_STATE = "COMPLETE", "resume", "state.json"  # RESUME_STATE: in each resume/ folder
RANKERS = ("esmm", "deepfm")
MODELS = ("retrieval", *RANKERS)
# Every file and folder a run writes, besides predictions_<part>.parquet: what --overwrite deletes.
ARTIFACTS = (CONFIG, TRAIN_LOG, TEST_METRICS, CHECKPOINT.split("/")[0], TENSORBOARD, CURVES, SPEC, SPLIT,
             BASELINE, ITEM_IDS, ITEM_EMBEDDINGS, ITEMS, USER_IDS, USERS, HISTORIES, FEATURE_SPEC, META,
             COOCCURRENCE, RESUME, COMPLETE)


class RunDirError(UserError):
    """A run directory lacks a file a reader needs, or holds another model's run."""


# -- writing ------------------------------------------------------------------------------------------

def create(cfg: TrainConfig, model: str, *, chief: bool = True) -> Path | str:
    """Create the run directory ``cfg.output_dir`` (default ``runs/<model>-<UTC time>``) and its config.json.

    A directory that holds a run already is checked first (:func:`tfrs_recsys.run_reuse.check`): with
    ``cfg.overwrite``, or when the run is this config's and did not complete an epoch, its files are
    deleted (:func:`clear`); with ``cfg.resume`` a stopped run's files stay for the training to continue.

    Args:
      cfg: The run's resolved config.
      model: The model name (``retrieval``, ``esmm``, ``deepfm``).
      chief: False on a multi-worker job's other workers: they get a fresh local temporary directory
        (``cfg.output_dir`` is left alone), which :func:`release` removes, or else the process's exit.

    Returns:
      The run directory.

    Raises:
      ConfigError: The directory holds a run this one may not write over (the error says what to pass).
    """
    if not chief:
        run_dir = Path(tempfile.mkdtemp(prefix=f"tfrs_recsys-{model}-worker-"))
        atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
        return run_dir
    if not cfg.output_dir:
        cfg.output_dir = str(Path("runs") / f"{model}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}")
    from tfrs_recsys import run_inputs, run_reuse  # the policy reads this module's layout

    run_lock.take(cfg.output_dir)
    action = run_reuse.check(cfg, model)
    if action == run_reuse.COMPLETE:
        raise ConfigError(f"--output-dir {cfg.output_dir} holds this {model} run, complete: there is nothing "
                          f"to resume; pass --overwrite to train it again, or another --output-dir")
    run_dir = paths.makedirs(cfg.output_dir)
    if action == run_reuse.REPLACE:
        clear(run_dir)
    elif action == run_reuse.NEW:  # a folder without config.json: only what a run's start would leave
        for name in (TRAIN_LOG, COMPLETE):
            paths.remove(paths.join(run_dir, name), missing_ok=True)
        paths.rmtree(paths.join(run_dir, RESUME), ignore_errors=True)
    if cfg.resume and action != run_reuse.RESUME:
        print(f"{model}: no completed epoch to resume in {run_dir}: training from the first", flush=True)
    save_config(cfg, paths.join(run_dir, CONFIG), model)
    run_inputs.record(cfg, run_dir)
    return run_dir


def clear(run_dir: Path | str) -> None:
    """Deletes the files and folders of a run (:data:`ARTIFACTS`, predictions), and nothing else."""
    names = [*ARTIFACTS, *(n for n in paths.listdir(run_dir) if n.startswith("predictions_")
                           and n.endswith(".parquet"))]
    for name in names:
        path = paths.join(run_dir, name)
        if paths.isdir(path):
            paths.rmtree(path)
        elif paths.exists(path):
            paths.remove(path)


def mark_complete(run_dir: Path | str) -> None:
    """Writes COMPLETE, atomically, once every other file of the run is written; the resume state goes."""
    stamp = {"completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    paths.write_text_atomic(paths.join(run_dir, COMPLETE), json.dumps(stamp) + "\n")
    for parts in ((RESUME,), (BASELINE, RESUME)):
        paths.rmtree(paths.join(run_dir, *parts), ignore_errors=True)


def resumable(run_dir) -> bool:
    """Whether a run saved a training state that ``--resume`` continues from (runs trained in memory)."""
    return any(paths.isfile(paths.join(run_dir, *parts, RESUME, RESUME_STATE)) for parts in ((), (BASELINE,)))


def is_complete(run_dir: Path | str) -> bool:
    """Whether the run finished (:func:`mark_complete`): killed or still training, it has no COMPLETE."""
    return paths.isfile(paths.join(run_dir, COMPLETE))


def release(run_dir: Path | str, *, chief: bool = True) -> None:
    """Removes a non-chief worker's temporary run directory (``run_dir``: what :func:`create` returned for
    ``chief``); the chief's is the run's output."""
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_lock.release(run_dir)


def jsonable(obj: Any) -> Any:
    """``obj``, through nested dicts and lists, with NumPy scalars as numbers and NaN and infinities as
    null: what every JSON reader accepts."""
    if isinstance(obj, Mapping):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    obj = obj.item() if hasattr(obj, "item") else obj
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def write_test_metrics(run_dir: Path | str, metrics: Mapping[str, Any]) -> None:
    """Writes test_metrics.json (:func:`jsonable`, keys sorted)."""
    text = json.dumps(jsonable(metrics), indent=2, sort_keys=True) + "\n"
    paths.write_text(paths.join(run_dir, TEST_METRICS), text)


def append_log(run_dir: Path | str, row: Mapping[str, Any]) -> None:
    """Append one epoch's row to train_log.jsonl."""
    paths.append_text(paths.join(run_dir, TRAIN_LOG), json.dumps(jsonable(row)) + "\n")


def rewrite_train_log(run_dir: Path | str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replaces train_log.jsonl by ``rows`` (a resumed run drops the epochs it trains again)."""
    text = "".join(json.dumps(jsonable(row)) + "\n" for row in rows)
    paths.write_text_atomic(paths.join(run_dir, TRAIN_LOG), text)


def read_train_log(run_dir: Path | str) -> list[dict]:
    """The rows of train_log.jsonl, one per finished epoch (none before the first)."""
    path = paths.join(run_dir, TRAIN_LOG)
    lines = paths.read_text(path).splitlines() if paths.isfile(path) else []
    return [json.loads(line) for line in lines if line.strip()]


def save_checkpoint(model, run_dir: Path | str) -> None:
    """Writes ``model``'s weights as the run's best checkpoint."""
    model.save_weights(str(paths.join(run_dir, CHECKPOINT)))


def write_ranker_files(run_dir: Path | str, spec: FeatureSpec, split) -> None:
    """Writes spec.json and split.json of a ranker run.

    Args:
      run_dir: The run directory.
      spec: The feature spec the model is built from.
      split: The :class:`~tfrs_recsys.data.splits.Split` of the data.
    """
    spec.save(paths.join(run_dir, SPEC))
    paths.write_text(paths.join(run_dir, SPLIT), json.dumps(split.summary(), indent=2) + "\n")


def write_retrieval_files(run_dir: Path | str, model, data, vocab, histories, meta: dict,
                          cooccurrence=None) -> None:
    """The files a retrieval run adds (module docstring).

    Args:
      run_dir: The run directory.
      model: The trained :class:`~tfrs_recsys.models.retrieval.TwoTowerRetrieval`.
      data: The :class:`~tfrs_recsys.data.bundles.InteractionData` it trained on (item and user tables).
      vocab: Its :class:`~tfrs_recsys.models.retrieval.Vocabularies`.
      histories: Every user's full history (:class:`~tfrs_recsys.data.sequences.Sequences`).
      meta: What training reports, beside the sizes and the learned inverse temperature.
      cooccurrence: The training sequences' :class:`~tfrs_recsys.models.cooccurrence.CooccurrenceTable`.
    """
    catalog = [str(i) for i in vocab.catalog]
    paths.write_text(paths.join(run_dir, ITEM_IDS), "\n".join(catalog) + "\n")
    embeddings = model.candidate_embeddings().numpy().astype(np.float32)
    paths.save_npy(paths.join(run_dir, ITEM_EMBEDDINGS), embeddings)
    items = data.items.assign(item_id=data.items["item_id"].astype(str)).drop_duplicates("item_id")
    items = pd.DataFrame({"item_id": catalog}).merge(items, on="item_id", how="left")
    if "title" in items:
        items["title"] = items["title"].fillna(items["item_id"]).astype(str)
    paths.write_parquet(items, paths.join(run_dir, ITEMS), index=False)
    if vocab.users is not None:
        paths.write_text(paths.join(run_dir, USER_IDS), "".join(f"{u}\n" for u in vocab.users))
    if data.users is not None:
        users = data.users.assign(user_id=data.users["user_id"].astype(str))
        paths.write_parquet(users, paths.join(run_dir, USERS), index=False)
    paths.write_parquet(pd.DataFrame({"user_id": histories.user_ids.astype(str),
                                      "items": [list(map(str, s)) for s in histories.items]}),
                        paths.join(run_dir, HISTORIES), index=False)
    vocab.spec.save(paths.join(run_dir, FEATURE_SPEC))
    if cooccurrence is not None:
        paths.write_bytes(paths.join(run_dir, COOCCURRENCE), cooccurrence.to_bytes())
    meta = {"num_items": len(catalog), "num_users": 0 if vocab.users is None else len(vocab.users),
            "embedding_dim": int(embeddings.shape[1]),
            "max_history": getattr(model.query_tower.sequence_encoder, "max_len", None),
            "inverse_temperature": float(model.temperature.value.numpy()), **meta}
    paths.write_text(paths.join(run_dir, META), json.dumps(meta, indent=2, default=str) + "\n")


# -- reading ------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A run directory opened by :func:`open_run`: where it is, the model it trained, its resolved config."""

    path: Path | str
    model_name: str
    config: TrainConfig

    def file(self, name: str) -> Path | str:
        """The path of the run's file ``name`` (one of this module's names)."""
        return paths.join(self.path, name)

    def has(self, name: str) -> bool:
        """Whether the run has the file ``name`` (for the checkpoint: its index)."""
        return paths.exists(self.file(f"{name}.index" if name == CHECKPOINT else name))

    def require(self, *names: str) -> None:
        """Raise :class:`RunDirError` naming every one of ``names`` the run lacks."""
        missing = [n for n in names if not self.has(n)]
        if missing:
            raise RunDirError(f"the {self.model_name} run has no {', '.join(missing)}", path=str(self.path),
                              fix=f"train it (again) to write them: `python -m tfrs_recsys.train "
                                  f"{self.model_name} --config {self.file(CONFIG)} --overwrite`")

    def require_complete(self, allow_incomplete: bool = False) -> None:
        """Raise :class:`RunDirError` when the run did not complete (:func:`is_complete`).

        Args:
          allow_incomplete: Warn on stderr instead (``--allow-incomplete``; evaluate and recommend always).
        """
        if is_complete(self.path):
            return
        state = paths.join(self.path, RESUME, RESUME_STATE)
        saved = paths.read_json(state).get("epoch") if paths.isfile(state) else None
        rows, epochs = read_train_log(self.path), self.config.epochs
        done = (f"its last saved epoch is {saved} of {epochs}" if saved
                else f"its log ends at epoch {rows[-1].get('epoch')} of {epochs}" if rows
                else f"none of its {epochs} epochs completed")
        what = (f"the {self.model_name} run did not complete ({done}; its test metrics and files may be "
                f"another run's): it was stopped, is still training, or was trained before runs were marked "
                f"{COMPLETE}")
        again = "--resume` finishes" if resumable(self.path) else "--overwrite` trains"  # streamed: no state
        finish = f"`python -m tfrs_recsys.train {self.model_name} --config {self.file(CONFIG)} {again} it"
        if allow_incomplete:
            print(f"warning: {self.path}: {what}; used as it is ({finish})", file=sys.stderr)
            return
        raise RunDirError(what, path=str(self.path),
                          fix=f"{finish}, or pass --allow-incomplete to use it as it is")


def open_run(run_dir: str | Path, models: Sequence[str] = MODELS) -> Run:
    """Open a run directory for reading.

    Args:
      run_dir: A local path or URL.
      models: The models the caller reads.

    Returns:
      The run, its config resolved from config.json.

    Raises:
      RunDirError: ``run_dir`` has no config.json, or the run trained a model not in ``models``.
    """
    run_dir = paths.as_path(run_dir)
    config = paths.join(run_dir, CONFIG)
    if not paths.isfile(config):
        raise RunDirError(f"the run directory has no {CONFIG}", path=str(run_dir),
                          fix=f"pass the --output-dir of a training run, or train one: "
                              f"`python -m tfrs_recsys.train {'|'.join(models)} --output-dir {run_dir}`")
    try:
        name = paths.read_json(config).get("model")
    except (ValueError, AttributeError) as error:  # not JSON, or JSON that is not a mapping
        raise RunDirError(f"{CONFIG} is not a JSON object of options ({error})", path=str(config),
                          fix="restore it from the training run, or train again with --output-dir") from None
    if name not in models:
        raise RunDirError(f"the run trained '{name}', not {' or '.join(repr(m) for m in models)}",
                          path=str(config), fix=f"pass the directory of a run of {' or '.join(models)}")
    return Run(run_dir, name, build_config(name, environ={}, config_file=config))


def _restore(model, run: Run) -> None:
    """The best checkpoint into ``model``, whose variables exist; every one must be restored (the
    optimizer's slots in the checkpoint are not needed), a few variables at a time."""
    from tfrs_recsys.checkpoints import read_weights

    read_weights(model, run.file(CHECKPOINT))


def build_ranker(model, spec: FeatureSpec) -> None:
    """Creates a ranker's variables (under its strategy): a call on two rows of missing values."""
    import tensorflow as tf

    missing = {f.name: tf.constant([""] * 2) if f.is_categorical else tf.constant([np.nan] * 2, tf.float32)
               for f in spec.features}
    with model.distribute_strategy.scope():
        model(missing, training=False)


def build_retrieval(model, max_history: int, catalog: np.ndarray) -> None:
    """Creates a two-tower model's variables (under its strategy): a query and a candidate embedding."""
    import tensorflow as tf

    with model.distribute_strategy.scope():
        model.query_embeddings({"user_id": tf.constant([""]), "history": tf.constant([[""] * max_history])})
        model.candidate_embeddings(tf.constant(np.asarray(catalog[:1]).astype(str)))


def load_ranker(run_dir: str | Path, model_name: str | None = None) -> tuple[Run, Any, FeatureSpec]:
    """Rebuild a ranker run's model with its best weights.

    Args:
      run_dir: An ``esmm`` or ``deepfm`` run directory.
      model_name: The model the run must have trained (default: either ranker).

    Returns:
      ``(run, model, spec)``: the :class:`Run`, the Keras model, the spec it was built from.

    Raises:
      RunDirError: The run is not a ranker run (of ``model_name``), or lacks its spec or checkpoint.
    """
    from tfrs_recsys.models.deepfm import DeepFM
    from tfrs_recsys.models.esmm import ESMM

    run = open_run(run_dir, (model_name,) if model_name else RANKERS)
    run.require(SPEC, CHECKPOINT)
    spec = FeatureSpec.load(run.file(SPEC))
    model = {"esmm": ESMM, "deepfm": DeepFM}[run.model_name].from_spec(spec, run.config)
    build_ranker(model, spec)
    _restore(model, run)
    return run, model, spec


@dataclass
class TrainedRetrieval:
    """A retrieval run reloaded from its directory (:func:`load_retrieval`)."""

    model: Any  # TwoTowerRetrieval
    cfg: TrainConfig
    catalog: np.ndarray  # item ids, in embedding row order
    items: pd.DataFrame  # catalog order
    histories: dict[str, list[str]]
    meta: dict
    run_dir: Path | str
    cooccurrence: Any = None  # CooccurrenceTable of the training sequences, when the run fused one


def load_retrieval(run_dir: str | Path) -> TrainedRetrieval:
    """Rebuild a retrieval run's model with its saved weights, with its catalog, items and histories.

    Args:
      run_dir: A ``retrieval`` run directory.

    Returns:
      The reloaded run.

    Raises:
      RunDirError: The run is not a retrieval run, or lacks a file.
    """
    from tfrs_recsys.models.cooccurrence import CooccurrenceTable
    from tfrs_recsys.models.retrieval import Vocabularies, build_model

    run = open_run(run_dir, ("retrieval",))
    run.require(ITEM_IDS, ITEMS, HISTORIES, FEATURE_SPEC, META, CHECKPOINT)
    cfg, catalog = run.config, np.array(paths.read_text(run.file(ITEM_IDS)).splitlines(), dtype=object)
    users = (np.array(paths.read_text(run.file(USER_IDS)).splitlines(), dtype=object) if run.has(USER_IDS)
             else None)
    items, spec = paths.read_parquet(run.file(ITEMS)), FeatureSpec.load(run.file(FEATURE_SPEC))
    user_table = paths.read_parquet(run.file(USERS)) if run.has(USERS) else None
    vocab = Vocabularies.of_spec(catalog, users, items, user_table, spec)
    model = build_model(cfg, vocab)
    build_retrieval(model, cfg.max_history, catalog)
    _restore(model, run)
    frame = paths.read_parquet(run.file(HISTORIES))
    table = run.has(COOCCURRENCE) and CooccurrenceTable.from_bytes(paths.read_bytes(run.file(COOCCURRENCE)))
    return TrainedRetrieval(model, cfg, catalog.astype(str), items,
                            {u: list(h) for u, h in zip(frame["user_id"], frame["items"])},
                            paths.read_json(run.file(META)), run.path, table or None)


def training_interactions(run_dir: str | Path):
    """The :class:`~tfrs_recsys.data.bundles.InteractionData` a ``retrieval`` run directory trained on,
    loaded again from the data its config names."""
    from tfrs_recsys.data import registry

    return registry.load_interactions(**registry.options_from(open_run(run_dir, ("retrieval",)).config,
                                                              registry.load_interactions))
