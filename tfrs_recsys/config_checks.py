"""The checks a run configuration's fields pass when it is made, and the error that names a bad one."""
from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration value is unknown or cannot be parsed; names the field and the fix."""


def require(ok: bool, field: str, value: Any, why: str, fix: str) -> None:
    """Unless ``ok``, raises :class:`ConfigError` naming ``field``, its ``value``, ``why`` and the ``fix``."""
    if not ok:
        raise ConfigError(f"field '{field}' = {value!r} {why}; {fix}")


def one_of(cfg: Any, **choices: tuple) -> None:
    """Each ``field=options`` of ``choices``: the field's value is one of the options."""
    for field, options in choices.items():
        value = getattr(cfg, field)  # the config parser reads the word "none" of a string field as None
        require(value in options or (value is None and "none" in options), field, value,
                 f"is not one of {options}", f"e.g. --{field.replace('_', '-')} {options[0]}")


def at_least(cfg: Any, minimum: int, *fields: str) -> None:
    """Each of ``fields`` is at least ``minimum``."""
    for field in fields:
        require(getattr(cfg, field) >= minimum, field, getattr(cfg, field), f"must be >= {minimum}",
                 f"e.g. --{field.replace('_', '-')} {minimum}")


def check_by_name(cfg: Any) -> None:
    """The rules that follow from a field's name, for every model: rates, dropouts, fractions, widths."""
    for name, value in dataclasses.asdict(cfg).items():
        flag = f"--{name.replace('_', '-')}"
        if name.endswith("learning_rate"):
            require(value > 0, name, value, "must be > 0", f"e.g. {flag} 0.001")
        elif name.endswith(("dropout", "_fraction")):
            require(0 <= value < 1, name, value, "must be in [0, 1)", f"e.g. {flag} 0.1")
        elif name.endswith("_units"):
            require(min(value, default=1) >= 1, name, value, "needs layer widths >= 1", f"e.g. {flag} 64,32")
