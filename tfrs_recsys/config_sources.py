"""Building a run config from its sources: defaults < ``--config FILE`` < ``RECSYS_*`` < command-line flags.

The one place a config is built (:func:`build_config`, :func:`config_from_args`) and saved
(:func:`save_config`); the dataclasses and their checks are in :mod:`tfrs_recsys.config`. Each flag's
help sentence is its field's entry in the dataclass's ``Attributes:`` docstring.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
import types
import typing
from typing import Any, Mapping, Sequence

from tfrs_recsys import paths
from tfrs_recsys.config import ENV_PREFIX, MODEL_CONFIGS, RUN_ACTIONS, ConfigError, TrainConfig

logger = logging.getLogger(__name__)
# RECSYS_* variables of the serving side, the notebooks and the tests: not training options
OTHER_VARIABLES = ("STORE", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_SERVER", "REDIS_NAMESPACE",
                   "DATASETS_DIR", "VERBOSE", "NOTEBOOK_WORKDIR", "NOTEBOOK_DATA_DIR", "NOTEBOOK_DATASET")

# The spellings of a boolean in a flag, an environment variable or a file.
_BOOLEANS = {**dict.fromkeys(("1", "true", "yes", "on"), True),
             **dict.fromkeys(("0", "false", "no", "off"), False)}
# Short CLI spellings users expect, mapped to field names.
_FLAG_ALIASES = {"learning_rate": ["--lr"], "use_transformer": ["--transformer"], "data_dir": ["--data"]}
_ATTRIBUTE = re.compile(r"^ {6}(\w+): (.*)$")


def field_help(cls: type) -> dict[str, str]:
    """Each field's help sentence: its entry in the ``Attributes:`` docstring of ``cls`` or a base class.

    Args:
      cls: a config dataclass.

    Returns:
      ``{field: sentence}``; an entry's indented continuation lines are joined to it.
    """
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = (klass.__doc__ or "").split("Attributes:\n", 1)
        name = None
        for line in doc[1].splitlines() if len(doc) == 2 else ():
            if match := _ATTRIBUTE.match(line):
                name = match.group(1)
                out[name] = match.group(2).strip()
            elif name and line.startswith(" " * 8):
                out[name] += " " + line.strip()
            else:
                name = None
    # Help speaks in flags: another field's multi-word name becomes its flag; docstring markup goes.
    multi_word = sorted((n for n in out if "_" in n), key=len, reverse=True)
    names = re.compile(r"\b(" + "|".join(multi_word) + r")\b")
    return {k: names.sub(lambda m: "--" + m.group(1).replace("_", "-"), v.replace("``", ""))
            for k, v in out.items()}


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
        listed = typing.get_origin(tp) in (tuple, list)
        example = {bool: "true or false", int: "a whole number, e.g. 3", float: "a number, e.g. 0.5"}.get(
            tp, "a comma-separated list, e.g. 10,50" if listed else "a string")
        raise ConfigError(f"{source}: field '{name}' = {raw!r} is not a valid {getattr(tp, '__name__', tp)} "
                          f"({exc}); give {example}") from None


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


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig],
                         exclude: Sequence[str] = ()) -> None:
    """Add ``--config`` and one ``--flag`` per dataclass field (underscores become dashes) to ``parser``.

    Args:
      parser: the parser to extend; every flag defaults to None (unset).
      cls: the config dataclass.
      exclude: fields that get no flag (the command has its own option of that name).
    """
    parser.add_argument("--config",
                        help="JSON or YAML file of option values (lower precedence than flags and env)")
    types_of, helps = field_types(cls), field_help(cls)
    for f in (f for f in dataclasses.fields(cls) if f.name not in exclude):
        flags = [f"--{f.name.replace('_', '-')}"] + _FLAG_ALIASES.get(f.name, [])
        # A bare boolean flag means true: `--skip-bad-rows` == `--skip-bad-rows true`.
        extra = {"nargs": "?", "const": "true"} if types_of[f.name] is bool else {}
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        about = f"{helps.get(f.name, '')} [default: {default}; env {ENV_PREFIX + f.name.upper()}]"
        metavar = ("BOOL" if types_of[f.name] is bool else "N" if f.name.endswith("_per_epoch")
                   else f.name.split("_")[-1].upper())
        parser.add_argument(*flags, dest=f.name, default=None, metavar=metavar,
                            help=about, **extra)


def _say_unknown_variables(environ: Mapping[str, str]) -> None:
    """Warns of a ``RECSYS_*`` variable no model and no command reads (``RECSYS_EPOCHZ``): a typo there is
    otherwise silently the default."""
    known = {name.upper() for cls in MODEL_CONFIGS.values() for name in field_types(cls)}
    known |= set(OTHER_VARIABLES)
    for variable in sorted(v for v in environ if v.startswith(ENV_PREFIX)):
        name = variable[len(ENV_PREFIX):]
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            logger.warning("environment %s is not an option of any model and is ignored%s", variable,
                           f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else "")


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
    sources: dict[str, str] = {}  # where each value came from, for an error about it
    if config_file:
        for key, raw in load_config_file(config_file).items():
            name = key.replace("-", "_")
            if name not in types_of:
                raise ConfigError(f"--config {config_file}: unknown field '{key}' for model '{model}'; "
                                  f"known fields: {', '.join(sorted(types_of))}")
            values[name] = parse_value(name, raw, types_of[name], f"--config {config_file}")
            sources[name] = f"--config {config_file}"
    environ = os.environ if environ is None else environ
    for name, tp in types_of.items():
        env = ENV_PREFIX + name.upper()
        if env in environ:
            values[name] = parse_value(name, environ[env], tp, f"environment {env}")
            sources[name] = f"environment {env}"
    _say_unknown_variables(environ)
    for name, raw in (cli_values or {}).items():
        if raw is None or name == "config":
            continue
        if name not in types_of:
            raise ConfigError(f"unknown option '{name}' for model '{model}'")
        values[name] = parse_value(name, raw, types_of[name], f"--{name.replace('_', '-')}")
        sources[name] = f"--{name.replace('_', '-')}"
    try:
        return cls(**values)
    except ConfigError as e:  # a value out of range: say where it was set, as a parse error does
        named = re.match(r"field '(\w+)'", str(e))
        source = sources.get(named.group(1)) if named else None
        if source is None or source.startswith("--") and not source.startswith("--config"):
            raise
        raise ConfigError(f"{source}: {e}") from None


def config_from_args(model: str, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
                     *, description: str | None = None, epilog: str | None = None) -> TrainConfig:
    """Parse ``argv`` (flags only, no model name; default ``sys.argv[1:]``) into the model's config.

    Args and returns as :func:`build_config`'s, the flags replacing ``cli_values`` and ``config_file``;
    ``description`` and ``epilog`` are the ``--help`` text around the options.
    """
    parser = argparse.ArgumentParser(prog=f"python -m tfrs_recsys.train {model}", description=description,
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, MODEL_CONFIGS[model])
    args, extra = parser.parse_known_args(argv)
    if extra:
        files = [e for e in extra if not e.startswith("-") and paths.exists(e)]
        hint = f" ({files[0]} is a file: quote a glob so that the shell leaves it to --data)" if files else ""
        flags = [f"--{field.name.replace('_', '-')}" for field in dataclasses.fields(MODEL_CONFIGS[model])]
        for typo in (e.split("=")[0] for e in extra if e.startswith("--")):
            hint += "".join(f" ({typo}: did you mean {close[0]}?)" for close in
                            [difflib.get_close_matches(typo, flags, n=1, cutoff=0.75)] if close)
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    ns = vars(args)
    return build_config(model, ns, environ, ns.get("config"))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``{field: value}`` of ``cfg``, JSON-ready (tuples as lists); :func:`load_config_file` reads it back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: TrainConfig, path: str | os.PathLike, model: str) -> None:
    """Write the resolved config so that ``train --config PATH`` reproduces the run.

    ``resume`` and ``overwrite`` (:data:`~tfrs_recsys.config.RUN_ACTIONS`) are stored off: they were asked of
    one command, and a rerun from the file must not overwrite a run unasked.

    Args:
      cfg: the config.
      path: the JSON file to write (local or remote).
      model: the model name, stored next to the fields.
    """
    fields = {**config_to_dict(cfg), **dict.fromkeys(RUN_ACTIONS, False)}
    paths.write_text_atomic(path, json.dumps({"model": model, "config": fields}, indent=2) + "\n")
