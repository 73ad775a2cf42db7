"""Run configuration: dataclasses with defaults, built and validated in one place.

Precedence, lowest to highest: dataclass defaults < ``--config FILE`` (JSON or YAML) < ``RECSYS_<FIELD>``
environment variables < command-line flags. Everything downstream receives the built dataclass; nothing
else reads the environment or ``sys.argv``. Each dataclass checks its fields when made (``validate``): a
bad value fails before any data is loaded, with a :class:`ConfigError` naming the field and the fix.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tfrs_recsys.config_checks import ConfigError
from tfrs_recsys.config_checks import at_least as _at_least
from tfrs_recsys.config_checks import check_by_name as _check_by_name
from tfrs_recsys.config_checks import one_of as _one_of
from tfrs_recsys.config_checks import require as _require

ENV_PREFIX = "RECSYS_"
# The values a choice field takes; the modules that act on a field import its choices from here.
STRATEGIES = ("auto", "none", "mirrored", "multi_worker")  # training/distribution.py
PRECISIONS = ("auto", "float32", "mixed_bfloat16")  # models/mlp.py
SPLITS = ("auto", "random", "session", "time")  # training/rankers.py
NEGATIVES = ("auto", "full", "in_batch", "sampled")  # models/retrieval.py
PAIRWISE_LOSSES = ("bpr", "triplet")  # models/pairwise.py
LOSSES = ("softmax",) + PAIRWISE_LOSSES
PROTOCOLS = ("auto", "leave_last_out", "random_80_20")  # training/retrieval.py
TRAINING_MODES = ("all_positions", "prefix")  # data/sequences.py
SIMILARITIES = ("auto", "dot", "cosine")  # models/retrieval.py
POSITIONS_FROM = ("start", "end")  # models/towers.py
PAIRWISE_SAMPLING = ("uniform", "popularity")  # data/pairs.py
RUN_ACTIONS = ("resume", "overwrite")  # runs.py: asked of one command, so config.json stores them off
# Fields that change how a run is carried out, not what it learns: a run may resume with other values.
HOW_TO_RUN = ("output_dir", "progress", "distribute", "cluster_wait_seconds", "intra_op_threads",
              "inter_op_threads", *RUN_ACTIONS)
STREAMING = ("auto", "always", "never")  # training/stream.py


SYNTHETIC = ("synthetic", "synthetic-histories", "synthetic-ratings")
# Every --dataset name (data/registry.py says what each reads and which models take it); "tfds:" a prefix.
DATASETS = (*SYNTHETIC, "interactions", "csv", "parquet", "movielens-100k", "movielens-csv",
            "movielens-latest-small", "movielens-1m", "aliexpress", "ali-ccp", "criteo", "expedia", "tfds:",
            "movielens/")
# Options only some datasets read: (options, datasets, what they apply to); set for another dataset, an
# option is an error naming both. A name ending in ":" is a prefix (tfds:<name>).
DATASET_OPTIONS = (
    (("label_columns", "session_column", "streaming", "stream_sample_rows", "stream_validation_rows"),
     ("csv", "parquet"), "--dataset csv or parquet"),
    (("user_column", "item_column", "time_column", "column_types", "items", "users", "exclude_columns"),
     ("interactions", "csv", "parquet"), "--dataset interactions, csv or parquet"),
    (("rating_column", "min_rating", "rating_values"), ("interactions",), "--dataset interactions"),
    (("tfds_download",), ("tfds:", "movielens/"), "--dataset tfds:<name>"),
    (("data_dir",), None, "datasets read from files (synthetic ones read none)"),
)


def _applies(dataset: str, datasets: tuple[str, ...] | None) -> bool:
    if datasets is None:
        return dataset not in SYNTHETIC
    return dataset in datasets or any(dataset.startswith(d) for d in datasets if d.endswith((":", "/")))


def _check_dataset_options(cfg: Any) -> None:
    """Fails on an option the chosen dataset does not read (:data:`DATASET_OPTIONS`, synthetic_options)."""
    _require(_applies(cfg.dataset, DATASETS), "dataset", cfg.dataset, "is not a dataset name",
             f"choose one of {', '.join(DATASETS[:-1])} (`--help` says what each reads)")
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for options, datasets, what in (*DATASET_OPTIONS, *cfg.synthetic_options()):
        for name in options:
            if getattr(cfg, name) != defaults[name] and not _applies(cfg.dataset, datasets):
                flag, value = f"--{name.replace('_', '-')}", getattr(cfg, name)
                shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else repr(value)
                hint = (f" (--data alone does not choose one: name its kind, e.g. --dataset {datasets[0]})"
                        if cfg.dataset in SYNTHETIC and datasets and cfg.data_dir else "")
                raise ConfigError(f"{flag} {shown} applies to {what}, not to --dataset "
                                  f"{cfg.dataset}; drop {flag}, or choose a dataset that reads it{hint}")


def _check_split(cfg: Any) -> None:
    """A ranker's ``--split`` names columns a table run must name too (a dataset's own are checked later)."""
    if cfg.dataset in ("csv", "parquet"):
        for split, flag, column in (("session", "--session-column", cfg.session_column),
                                    ("time", "--time-column", cfg.time_column)):
            _require(cfg.split != split or bool(column), "split", cfg.split, f"needs {flag} for a table",
                     f"name the column with {flag}, or choose --split auto")


@dataclass
class TrainConfig:
    """Options every model shares. A config checks its fields when it is made (:meth:`validate`).

    Attributes:
      dataset: What to train on: one of the --dataset values below (synthetic data needs no files).
      data_dir: The dataset's file, glob or folder of shards (local or a URL); ``--data`` also names it.
      output_dir: The run directory to write (default: runs/<model>-<timestamp>).
      epochs: The most training epochs (early stopping may end sooner).
      batch_size: Examples per training step (0: sized from the data, as each model says).
      learning_rate: Adam's learning rate (of the dense layers, for the rankers).
      seed: The seed of initialization, shuffling, splits and synthetic data.
      patience: Epochs without a better validation score before training stops (0: about 500 training
        steps' worth, at least 3).
      skip_bad_rows: Skip and count malformed rows instead of stopping at the first.
      progress: Show a progress bar per epoch in a terminal or notebook (false, or output to a pipe or
        file: one line per epoch).
      label_columns: The label columns of a csv or parquet dataset (esmm: click,conversion).
      session_column: The column grouping one session's rows (csv, parquet).
      user_column: The user id column of your data (interactions, csv, parquet).
      item_column: The item id column of your data (interactions, csv, parquet).
      time_column: The time column: of a log (epoch seconds or dates; default: file order), or a ranker's
        timestamp feature (csv, parquet; default: told by its name and values).
      rating_column: The rating (or weight) column of an interactions log; none: every row counts as 1.
      min_rating: Keep only interactions rated at least this (interactions, with rating_column).
      rating_values: The rating of each text value of rating_column, e.g. view=1,cart=3,purchase=5.
      items: An item table joined by item_column (file, glob or folder): to a log's items, or a ranker's rows.
      users: A user table joined by user_column, likewise.
      column_types: Column kinds that override schema inference, e.g. price=numeric,zip=categorical.
      exclude_columns: Columns of the data or its tables left out of the features (e.g. a second outcome).
      feature_spec: An edited feature spec JSON to use instead of inferring one (rankers).
      tfds_download: Let TensorFlow Datasets download a tfds: dataset.
      synthetic_users: Users of synthetic data.
      synthetic_items: Items of synthetic data.
      distribute: The tf.distribute strategy: auto (several workers in TF_CONFIG: multi_worker; several
        GPUs: mirrored), none, mirrored or multi_worker.
      cluster_wait_seconds: How long a worker of a cluster (TF_CONFIG) waits for the others to start.
      intra_op_threads: Threads one TensorFlow op may use (0: TensorFlow's default, one per core).
      inter_op_threads: TensorFlow ops run at once (0: TensorFlow's default).
      resume: Continue the run in --output-dir that was stopped (killed) before it completed, from its
        last completed epoch, with its optimizer and early-stopping state; the config must be the run's.
      overwrite: Delete the run in --output-dir (its files only) and train a new one there.
      streaming: Stream a ranker's csv or parquet files through tf.data, never holding the whole log: auto
        (files of 256 MiB or more), always or never.
      stream_sample_rows: The most training rows a streamed run infers the spec from (seeded sample).
      stream_validation_rows: The validation rows a streamed run evaluates after each epoch.
    """

    dataset: str = "synthetic"
    data_dir: str | None = None
    output_dir: str | None = None
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 42
    patience: int = 0
    skip_bad_rows: bool = False
    progress: bool = True
    label_columns: tuple[str, ...] = ()
    session_column: str | None = None
    user_column: str | None = None
    item_column: str | None = None
    time_column: str | None = None
    rating_column: str | None = None
    min_rating: float | None = None
    rating_values: tuple[str, ...] = ()
    items: str | None = None
    users: str | None = None
    column_types: tuple[str, ...] = ()
    exclude_columns: tuple[str, ...] = ()
    feature_spec: str | None = None
    tfds_download: bool = False
    synthetic_users: int = 2000
    synthetic_items: int = 500
    distribute: str = "auto"
    cluster_wait_seconds: int = 600
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    resume: bool = False
    overwrite: bool = False
    streaming: str = "auto"
    stream_sample_rows: int = 200_000
    stream_validation_rows: int = 100_000

    def __post_init__(self) -> None:
        self.validate()

    def synthetic_options(self) -> tuple:
        """The :data:`DATASET_OPTIONS` rows of this model's synthetic-data sizes."""
        return ((("synthetic_users", "synthetic_items"), SYNTHETIC, "the synthetic datasets"),)

    def validate(self) -> None:
        """Raises :class:`ConfigError` naming the field and the fix; each subclass adds its own fields."""
        _at_least(self, 1, "epochs")
        _at_least(self, 0, "batch_size")  # 0: every model sizes its batches itself
        _one_of(self, distribute=STRATEGIES)
        _at_least(self, 1, "cluster_wait_seconds")
        _at_least(self, 0, "intra_op_threads", "inter_op_threads")  # 0: TensorFlow's default, one per core
        _one_of(self, streaming=STREAMING)
        _at_least(self, 100, "stream_sample_rows", "stream_validation_rows")
        _check_by_name(self)
        _check_dataset_options(self)
        _require(not (self.resume and self.overwrite), "resume", self.resume, "contradicts --overwrite",
                 "pass --resume to continue the run in --output-dir, or --overwrite to replace it")
        _require(not self.resume or bool(self.output_dir), "resume", self.resume,
                 "needs the run to continue", "pass its folder as --output-dir")


@dataclass
class RetrievalConfig(TrainConfig):
    """Two-tower retrieval with a Transformer user tower (see models/retrieval.py).

    Attributes:
      batch_size: History windows per training step (0: as many as hold about 1,024 training targets).
      learning_rate: Adam's learning rate (lazy on the embedding tables: training/optimizers.py).
      patience: Epochs without a better validation NDCG before stopping (0: about 500 steps' worth, >= 3).
      embedding_dim: The width of item, user and query embeddings.
      max_history: The most recent items of a history the user tower reads.
      num_blocks: Transformer blocks of the user tower.
      num_heads: Attention heads per block (must divide embedding_dim).
      ff_dim: The width of each block's feed-forward layer.
      dropout: The dropout rate of the user tower.
      positions_from: Learned positions count from the history's start (first item 0, as SASRec) or end.
      block_norm: The blocks' LayerNorm: pre (each branch's input) or post (each sum and the input, as BERT).
      use_transformer: Encode the history with the Transformer (false: a mean of its item embeddings).
      use_user_id: Give the query tower a learned user id embedding.
      use_item_features: Give the item tower the item table's feature columns.
      training_mode: all_positions (every position of a history window is a target) or prefix (the last).
      negatives: The softmax's negatives: auto, full (the catalog), in_batch or sampled.
      num_sampled_negatives: Negatives per step with --negatives sampled.
      full_softmax_max_items: The largest catalog that --negatives auto scores in full.
      logq_correction: Subtract log(sampling probability) from in-batch and sampled negatives' logits.
      remove_accidental_hits: Mask a negative that is the example's own target.
      exclude_seen: Leave a target's history out of its full-catalog softmax, as ranking and serving do
        (leave_last_out; other protocols: never).
      hard_negatives: The highest-scoring negatives per example kept in the loss (0: all).
      cooccurrence: Fuse short-range co-occurrence counts into the scores (weight, damping: validation's).
      protocol: leave_last_out, random_80_20, or auto (random_80_20 when pairwise metrics are on).
      eval_ks: The cut-offs of recall, NDCG and MRR, e.g. 10,50.
      top_k: Items a recommendation lists.
      similarity: The score: dot (<q, c>, unnormalized: an item's norm can carry its popularity), cosine
        (tau * cos(q, c) with tau learned) or auto (dot for the softmax, cosine for bpr and triplet).
      inverse_temperature: The initial tau of score = tau * cos(q, c) (similarity cosine); learned.
      max_inverse_temperature: The largest tau training may reach.
      item_hidden_units: Widths of an item MLP before the projection (none: id and features only).
      query_hidden_units: Widths of a query MLP before the projection to embedding_dim.
      use_user_features: Give the query tower the user table's feature columns.
      item_feature_columns: The item columns to use (none: every usable one, e.g. genres).
      user_feature_columns: The user columns to use (none: every usable one, e.g. age, gender).
      user_id_dropout: How often training replaces a known user id by the unknown id.
      window_stride: all_positions windows' step (0: max_history); each target sees >= max_history - it + 1.
      weight_decay: Decoupled weight decay, as AdamW's (0: none; it decays every row of every table).
      ema_momentum: Average the weights over the steps (Keras' optimizer EMA with this momentum), written
        into the model at each epoch's end for validation, early stopping and the saved model (0: off).
      min_interactions: Users with fewer interactions are only trained on (leave_last_out).
      validation_fraction: The share of interactions held out for early stopping (random_80_20).
      loss: softmax over items, or a pairwise loss on (user, liked, disliked) triples: bpr or triplet.
      margin: The lead s(u, i+) - s(u, i-) the triplet loss asks for, in score units.
      positive_threshold: A rating at least this is liked, below it disliked.
      use_disliked: Pairwise negatives are the user's disliked items when they have some.
      pairwise_sampling: Negatives of users without disliked items: uniform or popularity.
      eval_pairwise: Also report pairwise_auc and auc on held-out rated items (on with a pairwise loss).
      validation_users: The most held-out users each epoch's validation ranks, seeded (0: all; test: all).
      steps_per_epoch: Training steps between validations (0: one pass over the training data); with N the
        input repeats and each epoch is N steps: a large data set is validated and checkpointed every N.
    """

    epochs: int = 50
    batch_size: int = 0
    learning_rate: float = 0.002
    embedding_dim: int = 64
    max_history: int = 50
    num_blocks: int = 2
    num_heads: int = 2
    ff_dim: int = 256
    dropout: float = 0.2
    positions_from: str = "end"
    block_norm: str = "pre"
    use_transformer: bool = True
    use_user_id: bool = True
    use_item_features: bool = True
    training_mode: str = "all_positions"
    negatives: str = "auto"
    num_sampled_negatives: int = 1024
    full_softmax_max_items: int = 50_000
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    exclude_seen: bool = True
    hard_negatives: int = 0
    cooccurrence: bool = True
    protocol: str = "auto"
    eval_ks: tuple[int, ...] = (10, 50)
    top_k: int = 100
    similarity: str = "auto"
    inverse_temperature: float = 10.0
    max_inverse_temperature: float = 100.0
    item_hidden_units: tuple[int, ...] = ()
    query_hidden_units: tuple[int, ...] = ()
    use_user_features: bool = True
    item_feature_columns: tuple[str, ...] = ()
    user_feature_columns: tuple[str, ...] = ()
    user_id_dropout: float = 0.1
    window_stride: int = 0
    weight_decay: float = 0.0
    ema_momentum: float = 0.0
    min_interactions: int = 3
    validation_fraction: float = 0.05
    loss: str = "softmax"
    margin: float = 1.0
    positive_threshold: float = 4.0
    use_disliked: bool = True
    pairwise_sampling: str = "uniform"
    eval_pairwise: bool = False
    validation_users: int = 20_000
    steps_per_epoch: int = 0

    def validate(self) -> None:
        super().validate()
        _at_least(self, 1, "embedding_dim", "max_history", "num_heads", "ff_dim")
        _at_least(self, 0, "window_stride", "num_sampled_negatives", "hard_negatives", "validation_users",
                  "steps_per_epoch")
        _require(0 <= self.ema_momentum < 1, "ema_momentum", self.ema_momentum, "must be in [0, 1)",
                 "e.g. --ema-momentum 0.99, or 0 for no averaging")
        _require(not self.use_transformer or self.embedding_dim % self.num_heads == 0, "embedding_dim",
                 self.embedding_dim, f"must be divisible by num_heads = {self.num_heads}",
                 "change embedding_dim or num_heads")
        _require(self.use_transformer or self.use_user_id or self.use_user_features, "use_transformer", False,
                 "leaves the query tower nothing to read (use_user_id and use_user_features are false too)",
                 "set use_user_id=true")
        _require(self.window_stride <= self.max_history, "window_stride", self.window_stride,
                 f"must be <= max_history = {self.max_history}", "e.g. --window-stride 0 (= max_history)")
        _one_of(self, training_mode=TRAINING_MODES, negatives=NEGATIVES, protocol=PROTOCOLS, loss=LOSSES,
                pairwise_sampling=PAIRWISE_SAMPLING, similarity=SIMILARITIES,
                positions_from=POSITIONS_FROM, block_norm=("pre", "post"))
        _require(self.loss != "triplet" or self.margin > 0, "margin", self.margin,
                 "must be > 0 for the triplet loss", "e.g. --margin 1.0")
        _require(0 < self.inverse_temperature <= self.max_inverse_temperature, "inverse_temperature",
                 self.inverse_temperature, f"must be in (0, {self.max_inverse_temperature}], the maximum",
                 "e.g. --inverse-temperature 10")
        if self.protocol == "leave_last_out" and (self.loss in PAIRWISE_LOSSES or self.eval_pairwise):
            why = f"loss={self.loss}" if self.loss in PAIRWISE_LOSSES else "eval_pairwise=true"
            _require(False, "protocol", self.protocol, f"holds out one item per user, but {why} is evaluated "
                     "by pairwise AUC over held-out liked and disliked items of the same user",
                     "set protocol=random_80_20 (or auto)")


@dataclass
class ESMMConfig(TrainConfig):
    """Entire-space multitask ranker: p_ctcvr = p_ctr * p_cvr (see models/esmm.py).

    Optimizer (training/optimizers.py): Adam at ``learning_rate`` on the dense layers, row-wise Adagrad at
    ``embedding_learning_rate`` on the tables (only the rows a batch looks up). Two L2 penalties on the
    tables, both on the rows a batch looks up only:

    * ``l2_reg``: ``l2_reg * mean_b sum_f ||e_bf||^2`` over the batch's field vectors (a layer
      loss), so a row is penalized in proportion to how often the batch uses it;
    * ``embedding_l2``: ``embedding_l2 * ||E[r]||^2`` once per step for every row ``r`` the global
      batch looks up, however often (applied by the table optimizer after the replicas' gradients
      are summed), so a rare id is pulled toward 0 as hard as a frequent one when it is seen.

    Attributes:
      batch_size: Rows per training step (0: a power of two, 64 to 512, by the training rows).
      embedding_dim: The width of each field's embedding.
      tower_units: User and item tower widths: ReLU layers, the last one linear.
      hidden_units: The widths of the CTR and CVR towers' hidden layers.
      ctr_loss_weight: The weight of the CTR loss.
      ctcvr_loss_weight: The weight of the CTCVR loss.
      dropout: The dropout rate of the towers.
      l2_reg: L2 on the field vectors a batch uses, in proportion to their use.
      embedding_learning_rate: row-wise Adagrad's learning rate on the embedding tables.
      embedding_l2: L2 on each table row a step looks up, once per step.
      ndcg_k: The cut-off of the session NDCG.
      synthetic_sessions: Sessions of synthetic data.
      session_size: Impressions per synthetic session.
      baseline: Also train the clicked-only CVR model and report it as baseline_*.
      precision: MLP products while training: auto (bfloat16 on a CPU with native bfloat16, no GPU),
        float32 or mixed_bfloat16; inference and export are float32 always.
      split: How rows go to train / validation / test (80 / 10 / 10): auto (whole sessions with a session
        column, else random rows), random, session, or time (the earliest rows train, the latest test, by
        the time column).
    """

    epochs: int = 10
    batch_size: int = 0
    embedding_dim: int = 16
    tower_units: tuple[int, ...] = (32,)
    hidden_units: tuple[int, ...] = (256, 128, 64)
    ctr_loss_weight: float = 1.0
    ctcvr_loss_weight: float = 1.0
    dropout: float = 0.0
    l2_reg: float = 0.0
    embedding_learning_rate: float = 0.5
    embedding_l2: float = 0.0
    ndcg_k: int = 10
    synthetic_sessions: int = 5000
    session_size: int = 20
    baseline: bool = True
    precision: str = "auto"
    split: str = "auto"

    def synthetic_options(self) -> tuple:
        return ((("synthetic_sessions", "session_size"), ("synthetic",), "--dataset synthetic"),
                (("synthetic_users", "synthetic_items"), (), "no esmm dataset"))

    def validate(self) -> None:
        super().validate()
        _at_least(self, 1, "embedding_dim", "ndcg_k")
        _one_of(self, precision=PRECISIONS, split=SPLITS)
        _check_split(self)


@dataclass
class DeepFMConfig(TrainConfig):
    """FM (first + second order) and a DNN over shared field embeddings (see models/deepfm.py).

    Optimizer and the table regularization (``l2_reg``, ``embedding_l2``) as in :class:`ESMMConfig`.

    Attributes:
      batch_size: Rows per training step (0: a power of two, 64 to 512, by the training rows).
      embedding_dim: The width of each field's embedding.
      hidden_units: The widths of the DNN's hidden layers.
      dropout: The dropout rate of the DNN.
      l2_reg: L2 on the field vectors a batch uses, in proportion to their use.
      embedding_learning_rate: row-wise Adagrad's learning rate on the embedding tables.
      embedding_l2: L2 on each table row a step looks up, once per step.
      synthetic_rows: Rows of synthetic CTR logs.
      precision: MLP products while training: auto, float32 or mixed_bfloat16 (as ESMM's).
      split: How rows go to train / validation / test: auto, random, session or time (as ESMM's).
    """

    epochs: int = 10
    batch_size: int = 0
    embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.0
    l2_reg: float = 0.0
    embedding_learning_rate: float = 0.7
    embedding_l2: float = 0.0
    synthetic_rows: int = 50_000
    precision: str = "auto"
    split: str = "auto"

    def synthetic_options(self) -> tuple:
        return ((("synthetic_rows",), ("synthetic",), "--dataset synthetic"),
                (("synthetic_users", "synthetic_items"), ("synthetic-histories",),
                 "--dataset synthetic-histories"))

    def validate(self) -> None:
        super().validate()
        _at_least(self, 1, "embedding_dim")
        _one_of(self, precision=PRECISIONS, split=SPLITS)
        _check_split(self)


MODEL_CONFIGS: dict[str, type[TrainConfig]] = {"retrieval": RetrievalConfig, "esmm": ESMMConfig,
                                                "deepfm": DeepFMConfig}
