"""Run configuration: dataclasses with defaults, built and validated in one place.

Precedence, lowest to highest: dataclass defaults < ``--config FILE`` (JSON or YAML) < ``RECSYS_<FIELD>``
environment variables < command-line flags. Everything downstream receives the built dataclass; nothing
else reads the environment or ``sys.argv``. Each dataclass checks its own fields when it is made
(``validate``), so a bad value fails before any data is loaded, with a :class:`ConfigError` naming the
field and the fix.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from tfrs_recsys import paths

ENV_PREFIX = "RECSYS_"
# The values a choice field takes; the modules that act on a field import its choices from here.
STRATEGIES = ("auto", "none", "mirrored", "multi_worker")  # training/distribution.py
PRECISIONS = ("auto", "float32", "mixed_bfloat16")  # models/mlp.py
NEGATIVES = ("auto", "full", "in_batch", "sampled")  # models/retrieval.py
PAIRWISE_LOSSES = ("bpr", "triplet")  # models/pairwise.py
LOSSES = ("softmax",) + PAIRWISE_LOSSES
PROTOCOLS = ("auto", "leave_last_out", "random_80_20")  # training/retrieval.py
TRAINING_MODES = ("all_positions", "prefix")  # data/sequences.py
PAIRWISE_SAMPLING = ("uniform", "popularity")  # data/pairs.py


class ConfigError(ValueError):
    """A configuration value is unknown or cannot be parsed; names the field and the fix."""


def _require(ok: bool, field: str, value: Any, why: str, fix: str) -> None:
    if not ok:
        raise ConfigError(f"field '{field}' = {value!r} {why}; {fix}")


def _one_of(cfg: Any, **choices: tuple) -> None:
    for field, options in choices.items():
        value = getattr(cfg, field)
        # The config parser reads the word "none" of a string field as None.
        _require(value in options or (value is None and "none" in options), field, value,
                 f"is not one of {options}", f"e.g. --{field.replace('_', '-')} {options[0]}")


def _at_least(cfg: Any, minimum: int, *fields: str) -> None:
    for field in fields:
        _require(getattr(cfg, field) >= minimum, field, getattr(cfg, field), f"must be >= {minimum}",
                 f"e.g. --{field.replace('_', '-')} {minimum}")


def _check_by_name(cfg: Any) -> None:
    """The rules that follow from a field's name, for every model: rates, dropouts, fractions, widths."""
    for name, value in dataclasses.asdict(cfg).items():
        flag = f"--{name.replace('_', '-')}"
        if name.endswith("learning_rate"):
            _require(value > 0, name, value, "must be > 0", f"e.g. {flag} 0.001")
        elif name.endswith(("dropout", "_fraction")):
            _require(0 <= value < 1, name, value, "must be in [0, 1)", f"e.g. {flag} 0.1")
        elif name.endswith("_units"):
            _require(min(value, default=1) >= 1, name, value, "needs layer widths >= 1", f"e.g. {flag} 64,32")


@dataclass
class TrainConfig:
    """Options every model shares. A config checks its fields when it is made (:meth:`validate`)."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    output_dir: str | None = None  # default: runs/<model>-<timestamp>
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 42
    patience: int = 3  # early stopping, in epochs without validation improvement
    skip_bad_rows: bool = False
    progress: bool = True
    # Generic CSV/Parquet input (--dataset csv|parquet): which columns are labels and keys.
    label_columns: tuple[str, ...] = ()
    session_column: str | None = None
    user_column: str | None = None
    item_column: str | None = None
    feature_spec: str | None = None  # an edited spec JSON to use instead of inferring one
    tfds_download: bool = False
    # Synthetic data size (used when no dataset files are given).
    synthetic_users: int = 2000
    synthetic_items: int = 500
    # tf.distribute strategy (training/distribution.py): auto | none | mirrored | multi_worker. auto =
    # MultiWorkerMirroredStrategy when TF_CONFIG lists several workers, MirroredStrategy with several GPUs.
    distribute: str = "auto"
    # TensorFlow's thread pools for the run (0 = TensorFlow's default, one thread per core): threads one op
    # may split across, and ops run at once.
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises :class:`ConfigError` naming the field and the fix; each subclass adds its own fields."""
        _at_least(self, 1, "epochs", "batch_size")
        _one_of(self, distribute=STRATEGIES)
        _at_least(self, 0, "intra_op_threads", "inter_op_threads")  # 0: TensorFlow's default, one per core
        _check_by_name(self)


@dataclass
class RetrievalConfig(TrainConfig):
    """Two-tower retrieval with a Transformer user tower (see models/retrieval.py)."""

    epochs: int = 30
    batch_size: int = 128
    embedding_dim: int = 64
    max_history: int = 50
    num_blocks: int = 2
    num_heads: int = 2
    ff_dim: int = 256
    dropout: float = 0.2
    use_transformer: bool = True
    use_user_id: bool = True
    use_item_features: bool = True
    training_mode: str = "all_positions"  # or "prefix"
    negatives: str = "auto"  # auto | full | in_batch | sampled
    num_sampled_negatives: int = 1024
    full_softmax_max_items: int = 50_000
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    hard_negatives: int = 0
    protocol: str = "auto"  # leave_last_out | random_80_20 | auto (random_80_20 when pairwise metrics are on)
    eval_ks: tuple[int, ...] = (10, 50)
    top_k: int = 100
    # Added by the retrieval model (models/towers.py, models/retrieval.py, training/retrieval.py).
    inverse_temperature: float = 10.0  # initial tau of score = tau * cos(q, c); learned
    max_inverse_temperature: float = 100.0
    item_hidden_units: tuple[int, ...] = ()  # item MLP before the projection; () = id + features only
    query_hidden_units: tuple[int, ...] = ()  # query MLP before the projection to embedding_dim
    use_user_features: bool = True
    item_feature_columns: tuple[str, ...] = ()  # () = every usable item column (e.g. genres)
    user_feature_columns: tuple[str, ...] = ()  # () = every usable user column (e.g. age, gender)
    user_id_dropout: float = 0.1  # rate of replacing a known user id by the OOV id while training
    window_stride: int = 0  # all_positions windows of long histories; 0 = max_history (no overlap)
    weight_decay: float = 0.0  # AdamW decoupled weight decay; 0 = Adam
    min_interactions: int = 3  # leave_last_out: users with fewer are only trained on
    validation_fraction: float = 0.05  # random_80_20: share of interactions held out for early stopping
    # Pairwise losses on (user, liked item, disliked item) triples (models/pairwise.py, data/pairs.py).
    loss: str = "softmax"  # softmax | bpr | triplet
    margin: float = 1.0  # triplet: the lead s(u, i+) - s(u, i-) asked for, in score units (tau * cosine)
    positive_threshold: float = 4.0  # rating >= this is liked, below is disliked (all liked without ratings)
    use_disliked: bool = True  # pairwise negatives: the user's disliked items when they have some
    pairwise_sampling: str = "uniform"  # negatives of users without disliked items: uniform | popularity
    eval_pairwise: bool = False  # pairwise_auc / auc on held-out rated items; always on with a pairwise loss

    def validate(self) -> None:
        super().validate()
        _at_least(self, 1, "embedding_dim", "max_history", "num_heads", "ff_dim")
        _at_least(self, 0, "window_stride", "num_sampled_negatives", "hard_negatives")
        _require(not self.use_transformer or self.embedding_dim % self.num_heads == 0, "embedding_dim",
                 self.embedding_dim, f"must be divisible by num_heads = {self.num_heads}",
                 "change embedding_dim or num_heads")
        _require(self.use_transformer or self.use_user_id or self.use_user_features, "use_transformer", False,
                 "leaves the query tower nothing to read (use_user_id and use_user_features are false too)",
                 "set use_user_id=true")
        _require(self.window_stride <= self.max_history, "window_stride", self.window_stride,
                 f"must be <= max_history = {self.max_history}", "e.g. --window-stride 0 (= max_history)")
        _one_of(self, training_mode=TRAINING_MODES, negatives=NEGATIVES, protocol=PROTOCOLS, loss=LOSSES,
                pairwise_sampling=PAIRWISE_SAMPLING)
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

    Optimizer (training/optimizers.py): Adam at ``learning_rate`` on the dense layers; Adagrad at
    ``embedding_learning_rate`` on the embedding tables, whose update touches only the rows a batch
    looks up. Two L2 penalties on the tables, both on the rows a batch looks up only:

    * ``l2_reg``: ``l2_reg * mean_b sum_f ||e_bf||^2`` over the batch's field vectors (a layer
      loss), so a row is penalized in proportion to how often the batch uses it;
    * ``embedding_l2``: ``embedding_l2 * ||E[r]||^2`` once per step for every row ``r`` the global
      batch looks up, however often (applied by the table optimizer after the replicas' gradients
      are summed), so a rare id is pulled toward 0 as hard as a frequent one when it is seen.
    """

    epochs: int = 10
    batch_size: int = 512
    embedding_dim: int = 16
    tower_units: tuple[int, ...] = (32,)  # user / item tower widths: ReLU layers, the last one linear
    hidden_units: tuple[int, ...] = (256, 128, 64)
    ctr_loss_weight: float = 1.0
    ctcvr_loss_weight: float = 1.0
    dropout: float = 0.0
    l2_reg: float = 0.0
    # Chosen on the synthetic sessions' VALIDATION split (3 epochs, 3 seeds), where embedding_l2 > 0 did
    # not help.
    embedding_learning_rate: float = 0.5
    embedding_l2: float = 0.0
    ndcg_k: int = 10
    synthetic_sessions: int = 5000
    session_size: int = 20
    baseline: bool = True  # also train the clicked-only CVR model and report it as baseline_*
    # MLP products while training: auto | float32 | mixed_bfloat16 (models/mlp.py). auto = bfloat16 on a
    # CPU with native bfloat16 (AMX, AVX512-BF16) and no GPU; inference and export are float32 always.
    precision: str = "auto"

    def validate(self) -> None:
        super().validate()
        _at_least(self, 1, "embedding_dim", "ndcg_k")
        _one_of(self, precision=PRECISIONS)


@dataclass
class DeepFMConfig(TrainConfig):
    """FM (first + second order) and a DNN over shared field embeddings (see models/deepfm.py).

    Optimizer and the table regularization (``l2_reg``, ``embedding_l2``) as in :class:`ESMMConfig`.
    """

    epochs: int = 10
    batch_size: int = 512
    embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.0
    l2_reg: float = 0.0
    # Chosen on the synthetic CTR logs' VALIDATION split (3 and 6 epochs, 3 seeds), as ESMMConfig's.
    embedding_learning_rate: float = 0.7
    embedding_l2: float = 0.0
    synthetic_rows: int = 50_000
    precision: str = "auto"  # MLP products while training, as ESMMConfig.precision

    def validate(self) -> None:
        super().validate()
        _at_least(self, 1, "embedding_dim")
        _one_of(self, precision=PRECISIONS)


MODEL_CONFIGS: dict[str, type[TrainConfig]] = {"retrieval": RetrievalConfig, "esmm": ESMMConfig,
                                                "deepfm": DeepFMConfig}

# The spellings of a boolean in a flag, an environment variable or a file.
_BOOLEANS = {**dict.fromkeys(("1", "true", "yes", "on"), True),
             **dict.fromkeys(("0", "false", "no", "off"), False)}
# Short CLI spellings users expect, mapped to field names.
_FLAG_ALIASES = {"learning_rate": ["--lr"], "use_transformer": ["--transformer"]}


def field_types(cls: type) -> dict[str, Any]:
    """The field types of a config dataclass, as :func:`parse_value` takes them.

    Args:
      cls: a config dataclass, e.g. :class:`RetrievalConfig`.

    Returns:
      ``{field: type}``, an ``X | None`` field as ``X``.
    """
    hints = {name: typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
             for name, tp in typing.get_type_hints(cls).items()}
    return {f.name: next(a for a in hints[f.name] if a is not type(None)) for f in dataclasses.fields(cls)}


def parse_value(name: str, raw: Any, tp: Any, source: str) -> Any:
    """Coerce ``raw`` (a string from the CLI/env, or a JSON/YAML value) to ``tp``.

    Args:
      name: the field, for the error message.
      raw: the value; a comma-separated string or a list for a tuple field; ``none`` or ``null``
        is None for a string field.
      tp: the field's type (:func:`field_types`).
      source: where the value came from, for the error message (e.g. ``--epochs``).

    Returns:
      The value as ``tp``.

    Raises:
      ConfigError: the value cannot be read as ``tp``.
    """
    try:
        if raw is None:
            return None
        if typing.get_origin(tp) in (tuple, list):
            (elem,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
            items = [p for p in raw.replace(" ", "").split(",") if p] if isinstance(raw, str) else raw
            return tuple(elem(i) for i in items)
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in _BOOLEANS:
                raise ValueError("expected true/false")
            return _BOOLEANS[text]
        if tp is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError("expected an integer")
        if isinstance(raw, str) and raw.strip().lower() in ("none", "null") and tp is str:
            return None
        return tp(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: field '{name}' = {raw!r} is not a valid {getattr(tp, '__name__', tp)} "
                          f"({exc}); fix the value, e.g. a comma-separated list for list fields") from None


def read_mapping_file(path: str | os.PathLike, flag: str = "--config") -> Any:
    """The parsed content of a JSON or YAML file (``.yaml``/``.yml`` is YAML, anything else JSON).

    Args:
      path: the file, local or remote.
      flag: the option that named it, for the error message.

    Returns:
      The parsed value (``{}`` for an empty YAML file); a missing file or invalid JSON raises ConfigError.
    """
    p = paths.as_path(path)
    if not paths.isfile(p):
        raise ConfigError(f"{flag}: file '{p}' does not exist; pass the path of a JSON or YAML file")
    text = paths.read_text(p)
    if str(p).lower().endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} {p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON or YAML config file into a flat dict of field values.

    Args:
      path: a ``.json``, ``.yaml`` or ``.yml`` file (local or remote), either a flat mapping of
        fields or a saved run config (fields under ``"config"``).

    Returns:
      ``{field: raw value}``.

    Raises:
      ConfigError: the file is missing, unreadable or not a mapping.
    """
    data = read_mapping_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"--config {paths.as_path(path)}: expected a mapping of field names to values")
    # A resolved run config nests the fields under "config"; accept both shapes.
    return data["config"] if isinstance(data.get("config"), dict) else data


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    """Add ``--config`` and one ``--flag`` per dataclass field (underscores become dashes) to ``parser``.

    Args:
      parser: the parser to extend; every flag defaults to None (unset).
      cls: the config dataclass.
    """
    parser.add_argument("--config",
                        help="JSON or YAML file of option values (lower precedence than flags and env)")
    types_of = field_types(cls)
    for f in dataclasses.fields(cls):
        flags = [f"--{f.name.replace('_', '-')}"] + _FLAG_ALIASES.get(f.name, [])
        # A bare boolean flag means true: `--skip-bad-rows` == `--skip-bad-rows true`.
        extra = {"nargs": "?", "const": "true"} if types_of[f.name] is bool else {}
        parser.add_argument(*flags, dest=f.name, default=None, metavar="VALUE",
                            help=f"default {f.default!r}; env {ENV_PREFIX + f.name.upper()}", **extra)


def build_config(
    model: str,
    cli_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> TrainConfig:
    """Build the config of ``model`` from defaults, a file, the environment and CLI values.

    Args:
      model: ``retrieval``, ``esmm`` or ``deepfm``.
      cli_values: ``{field: raw value}`` from flags; None values are unset.
      environ: the environment (default ``os.environ``), read for ``RECSYS_<FIELD>``.
      config_file: a JSON or YAML file of field values.

    Returns:
      The validated config dataclass.

    Raises:
      ConfigError: an unknown model or field, or a value that cannot be parsed or used.
    """
    if model not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model '{model}'; choose one of {sorted(MODEL_CONFIGS)}")
    cls = MODEL_CONFIGS[model]
    types_of = field_types(cls)
    values: dict[str, Any] = {}
    if config_file:
        for key, raw in load_config_file(config_file).items():
            name = key.replace("-", "_")
            if name not in types_of:
                raise ConfigError(f"--config {config_file}: unknown field '{key}' for model '{model}'; "
                                  f"known fields: {', '.join(sorted(types_of))}")
            values[name] = parse_value(name, raw, types_of[name], f"--config {config_file}")
    environ = os.environ if environ is None else environ
    for name, tp in types_of.items():
        env = ENV_PREFIX + name.upper()
        if env in environ:
            values[name] = parse_value(name, environ[env], tp, f"environment {env}")
    for name, raw in (cli_values or {}).items():
        if raw is None or name == "config":
            continue
        if name not in types_of:
            raise ConfigError(f"unknown option '{name}' for model '{model}'")
        values[name] = parse_value(name, raw, types_of[name], f"--{name.replace('_', '-')}")
    return cls(**values)


def config_from_args(model: str, argv: Sequence[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> TrainConfig:
    """Parse ``argv`` (flags only, no model name; default ``sys.argv[1:]``) into the model's config.

    Args and returns as :func:`build_config`'s, the flags replacing ``cli_values`` and ``config_file``.
    """
    parser = argparse.ArgumentParser(prog=f"tfrs_recsys.train {model}")
    add_config_arguments(parser, MODEL_CONFIGS[model])
    ns = vars(parser.parse_args(argv))
    return build_config(model, ns, environ, ns.get("config"))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``{field: value}`` of ``cfg``, JSON-ready (tuples as lists); :func:`load_config_file` reads it back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: TrainConfig, path: str | os.PathLike, model: str) -> None:
    """Write the resolved config so that ``train --config PATH`` reproduces the run.

    Args:
      cfg: the config.
      path: the JSON file to write (local or remote).
      model: the model name, stored next to the fields.
    """
    paths.write_text(path, json.dumps({"model": model, "config": config_to_dict(cfg)}, indent=2) + "\n")
