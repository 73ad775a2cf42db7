"""Search spaces: which config fields a tuner may change, and over which values.

A space is plain data (a JSON/YAML mapping), keyed by config field name, so that every
tuned value is a field of the model's config and the best trial *is* a config file::

    {"learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},   # Float (float field)
     "num_blocks":    {"min": 1, "max": 3},                             # Int (int field)
     "dropout":       {"min": 0.0, "max": 0.4, "step": 0.1},
     "embedding_dim": {"values": [32, 64, 128]},                        # Choice; a bare list is the same
     "hidden_units":  {"values": ["256,128,64", [128, 64]]},            # tuple fields: lists or "a,b"
     "use_user_id":   {"value": true}}                                  # Fixed

Ranges take the field's type: ``min``/``max`` of an int field give ``hp.Int``, of a float
field ``hp.Float``. Fields that change the data or the evaluation (dataset, split protocol,
metric cut-offs, synthetic sizes, seed) cannot be tuned: trials would no longer be scored
on the same validation set.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import keras_tuner as kt

from tfrs_recsys import config_sources
from tfrs_recsys.config import MODEL_CONFIGS, ConfigError, TrainConfig
from tfrs_recsys.config_sources import build_config, config_to_dict

DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "retrieval": {
        "learning_rate": {"min": 3e-4, "max": 1e-2, "sampling": "log"},
        "embedding_dim": {"values": [32, 64, 128]},
        "num_blocks": {"min": 1, "max": 3},
        "num_heads": {"values": [1, 2, 4]},
        "ff_dim": {"values": [128, 256]},
        "dropout": {"min": 0.0, "max": 0.4, "step": 0.1},
    },
    "esmm": {
        "learning_rate": {"min": 3e-4, "max": 1e-2, "sampling": "log"},
        "embedding_learning_rate": {"min": 0.05, "max": 1.0, "sampling": "log"},
        "embedding_dim": {"values": [8, 16, 32]},
        "tower_units": {"values": ["32", "64", "128"]},
        "hidden_units": {"values": ["256,128,64", "128,64", "64,32"]},
        "dropout": {"min": 0.0, "max": 0.3, "step": 0.1},
        "l2_reg": {"values": [0.0, 1e-6, 1e-5]},
    },
    "deepfm": {
        "learning_rate": {"min": 3e-4, "max": 1e-2, "sampling": "log"},
        "embedding_learning_rate": {"min": 0.05, "max": 1.0, "sampling": "log"},
        "embedding_dim": {"values": [8, 16, 32]},
        "hidden_units": {"values": ["256,128,64", "128,64", "64,32"]},
        "dropout": {"min": 0.0, "max": 0.3, "step": 0.1},
        "l2_reg": {"values": [0.0, 1e-6, 1e-5]},
    },
}

_RANGE_KEYS = {"min", "max", "step", "sampling"}
# Fields that define the data, the split or the metric: fixed for a whole search.
FROZEN_FIELDS = frozenset({
    "dataset", "data_dir", "output_dir", "seed", "skip_bad_rows", "progress", "label_columns",
    "session_column", "user_column", "item_column", "feature_spec", "tfds_download", "synthetic_users",
    "synthetic_items", "protocol", "eval_ks", "min_interactions", "validation_fraction", "top_k",
    "synthetic_sessions", "session_size", "ndcg_k", "baseline", "synthetic_rows",
})


def _kind(cls: type[TrainConfig], name: str) -> type:
    """The Python type of a field, from its default value (bool before int: bool is an int)."""
    default = getattr(cls(), name)
    for tp in (bool, int, float, tuple, str):
        if isinstance(default, tp):
            return tp
    return str


def _hp_value(kind: type, value: Any) -> Any:
    """A value as keras-tuner stores it: tuples as their comma-separated text, numbers as the field's type
    (a Choice must hold one type: ``[0, 1e-6]`` of a float field becomes ``[0.0, 1e-6]``)."""
    if kind is tuple:
        return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    if kind in (int, float) and not isinstance(value, bool):
        return kind(value)
    return value


def validate_space(model: str, space: Mapping[str, Any], source: str = "search space") -> dict[str, dict]:
    """Check ``space`` against the model's config.

    Args:
      model: ``retrieval``, ``esmm`` or ``deepfm``.
      space: ``{field: entry}`` (module docstring).
      source: where the space came from, for messages.

    Returns:
      The space with every entry in the dict form.

    Raises:
      ConfigError: an unknown or frozen field, a malformed entry or a value the field cannot take.
    """
    if model not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model '{model}'; choose one of {sorted(MODEL_CONFIGS)}")
    cls = MODEL_CONFIGS[model]
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{source}: expected a non-empty mapping of config field names to value ranges")
    out: dict[str, dict] = {}
    for name, entry in space.items():
        if name not in known:
            raise ConfigError(f"{source}: '{name}' is not a field of the {model} config; "
                              f"tunable fields: {', '.join(sorted(known - FROZEN_FIELDS))}")
        if name in FROZEN_FIELDS:
            raise ConfigError(f"{source}: '{name}' changes the data or the evaluation and cannot be tuned; "
                              f"set it with a flag (--{name.replace('_', '-')}) for the whole search")
        entry = dict(entry if isinstance(entry, Mapping) else
                     {"values": entry} if isinstance(entry, list) else {"value": entry})
        keys = set(entry)
        if keys not in ({"values"}, {"value"}) and not {"min", "max"} <= keys <= _RANGE_KEYS:
            raise ConfigError(f"{source}: field '{name}' = {entry!r}: give {{'values': [...]}}, "
                              f"{{'value': x}} or "
                              f"{{'min': a, 'max': b[, 'step': s][, 'sampling': 'linear'|'log']}}")
        kind = _kind(cls, name)
        if "min" in entry and kind not in (int, float):
            raise ConfigError(f"{source}: field '{name}' is not numeric; list its candidates under 'values'")
        values = entry.get("values", [entry.get("value")] if "value" in entry else [entry.get("min"),
                                                                                     entry.get("max")])
        if "values" in entry and not values:
            raise ConfigError(f"{source}: field '{name}' has an empty 'values' list")
        # Each value must parse as the field's type; a trial's config checks the values together.
        for v in values:
            config_sources.parse_value(name, v if kind in (int, float) else _hp_value(kind, v),
                                       config_sources.field_types(cls)[name], source)
        if "min" in entry:
            if entry["min"] > entry["max"]:
                raise ConfigError(f"{source}: field '{name}' has min {entry['min']} > max {entry['max']}")
            if entry.get("sampling", "linear") not in ("linear", "log"):
                raise ConfigError(f"{source}: field '{name}' sampling must be 'linear' or 'log'")
            if entry.get("sampling") == "log" and entry["min"] <= 0:
                raise ConfigError(f"{source}: field '{name}' with log sampling needs min > 0")
        out[name] = entry
    return out


def load_space(path: str | Path) -> dict[str, Any]:
    """Read a search space from a JSON or YAML file.

    Args:
      path: the file (``.yaml``/``.yml`` is YAML, anything else JSON).

    Returns:
      The space, not yet validated.
    """
    return config_sources.read_mapping_file(path, "--search-space")


def declare(model: str, space: Mapping[str, Any]) -> kt.HyperParameters:
    """keras-tuner hyperparameters for ``space`` (named after the config fields).

    Args:
      model: the model whose config the fields belong to.
      space: the search space.

    Returns:
      The declared hyperparameters.
    """
    cls = MODEL_CONFIGS[model]
    space = validate_space(model, space)
    hp = kt.HyperParameters()
    for name, entry in space.items():
        kind = _kind(cls, name)
        if "value" in entry:
            hp.Fixed(name, _hp_value(kind, entry["value"]))
        elif "values" in entry:
            hp.Choice(name, [_hp_value(kind, v) for v in entry["values"]], ordered=kind in (int, float))
        else:
            make = hp.Int if kind is int else hp.Float
            make(name, kind(entry["min"]), kind(entry["max"]), step=entry.get("step"),
                 sampling=entry.get("sampling", "linear"))
    return hp


def trial_config(model: str, base: TrainConfig, values: Mapping[str, Any], **overrides: Any) -> TrainConfig:
    """``base`` with a trial's hyperparameter ``values`` (keras-tuner's own ``tuner/*`` keys ignored) and
    ``overrides`` applied, parsed by the config loader exactly as a config file would be.

    Args:
      model: the model.
      base: the search's base config.
      values: the trial's hyperparameter values.
      **overrides: further fields (the trial's output directory, Hyperband's epochs).

    Returns:
      The trial's config.
    """
    fields = config_to_dict(base)
    # 12 significant digits: a stepped Float's 0.30000000000000004 is written as 0.3.
    fields.update({k: float(f"{v:.12g}") if isinstance(v, float) else v
                   for k, v in values.items() if not k.startswith("tuner/")})
    fields.update(overrides)
    return build_config(model, {k: v for k, v in fields.items() if v is not None}, environ={})
