"""Feature specs: what each column is, written as an editable JSON file the models consume.

A :class:`FeatureSpec` lists feature columns (kind, group, encoding and the statistics the
encoders need) and the label columns, which are never features. :func:`frame_to_raw` writes a
frame's columns as the raw arrays the encoders (and serving clients) take.
:func:`tfrs_recsys.data.schema_inference.infer_schema` writes a first spec from a sample of the
data; ``python -m tfrs_recsys.data.schema FILE --labels ... --out spec.json`` does the same from a file.
"""
from __future__ import annotations

import json
import logging
import sys
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tfrs_recsys import paths
from tfrs_recsys.data.errors import DataError, SchemaError
from tfrs_recsys.data.input_names import signature_name
from tfrs_recsys.data.number_text import MISSING_NUMBER_WORDS, read_numbers
from tfrs_recsys.data.times import MAX_EPOCH_SECONDS, epoch_seconds, is_plain_number

KINDS = ("id", "categorical", "multi_categorical", "numeric", "timestamp")
CATEGORICAL_KINDS = ("id", "categorical", "multi_categorical")
logger = logging.getLogger(__name__)
GROUPS = ("user", "item", "context")
ENCODINGS = ("vocabulary", "hash", "none")
SPEC_VERSION = 1
MISSING_INT = np.iinfo(np.int64).min  # an int64 categorical input's "missing": outside every vocabulary


@dataclass
class FeatureColumn:
    """One input column.

    Attributes:
      name: The column.
      kind: ``id`` (high-cardinality categorical), ``categorical`` (low cardinality),
        ``multi_categorical`` (a list, or text joined by ``separator``), ``numeric`` (standardized:
        ``(x - mean) / std``, missing -> mean), ``timestamp`` (seconds; encoders derive cyclic
        hour / weekday and the standardized time, capped at ``newest``: serving runs after the
        training data, and an uncapped time would extrapolate further every day).
      group: ``user``, ``item`` or ``context``: the tower or part of the model that reads it.
      encoding: ``vocabulary`` (StringLookup over ``vocabulary``, one OOV bucket), ``hash``
        (``num_buckets`` hash bins), ``none`` (numeric and timestamp).
      vocabulary: The values of a ``vocabulary`` encoding, most frequent first.
      num_buckets: The bins of a ``hash`` encoding.
      separator: What joins the values of a ``multi_categorical`` text (``|`` by default).
      mean: The mean of a numeric or timestamp column.
      std: Its standard deviation.
      newest: The latest time seen in training; later times count as it.
      clip_low, clip_high: A numeric column's bounds: its inputs are clipped to them before they are
        standardized, as its ``mean`` and ``std`` were taken (:mod:`~tfrs_recsys.data.numeric_bounds`);
        ``None`` where the sample had no outlier (and in specs written before the bounds): unclipped.
      embedding_dim: The embedding width, instead of the model's default.
      raw_dtype: What a serving client sends: ``string``, ``int64``, ``float32`` or (timestamps) ``float64``.
      integer_values: The values are integers written as text ("3"); encoders also accept "3.0",
        which is what a float-typed client writes for the same value.
      boolean_values: The values are booleans (``True``/``False``, or as the data spelled them); encoders
        also accept any case (``true``, as JSON writes them) and ``1`` / ``0``.
      day_first: A timestamp column's date text is written day first (``31/12/2025``), not month first;
        schema inference tells it from the values (:func:`day_first`).
      decimal_comma: A numeric column written for people (``€12,50``) has a comma as its decimal mark;
        schema inference tells it from the values (:mod:`~tfrs_recsys.data.number_text`).
    """

    name: str
    kind: str
    group: str = "context"
    encoding: str = "none"
    vocabulary: list[str] | None = None
    num_buckets: int | None = None
    separator: str | None = None
    mean: float | None = None
    std: float | None = None
    newest: float | None = None
    clip_low: float | None = None
    clip_high: float | None = None
    embedding_dim: int | None = None
    raw_dtype: str = "string"
    integer_values: bool = False
    boolean_values: bool = False
    day_first: bool = False
    decimal_comma: bool = False

    def __post_init__(self) -> None:
        if self.kind == "multi_categorical" and not self.separator:
            self.separator = "|"
        if self.separator and self.kind != "multi_categorical":  # an edited spec's: read as it would not be
            self._fail(f"a separator ({self.separator!r}) on a {self.kind} column",
                       "set its kind to multi_categorical (and list the vocabulary's values), or drop it")
        for attribute, allowed in (("kind", KINDS), ("group", GROUPS), ("encoding", ENCODINGS)):
            if getattr(self, attribute) not in allowed:
                self._fail(f"unknown {attribute} '{getattr(self, attribute)}'", f"use one of {allowed}")
        if not self.is_categorical:
            return
        if self.encoding == "vocabulary" and not self.vocabulary:
            self._fail("vocabulary encoding needs a vocabulary",
                       "list the values, or use encoding 'hash' with num_buckets")
        if self.encoding == "hash" and not (self.num_buckets and self.num_buckets > 0):
            self._fail("hash encoding needs num_buckets > 0",
                       "set num_buckets, e.g. 2x the expected number of distinct values")
        if self.encoding == "none":
            self._fail("categorical kinds need an encoding", "use encoding 'vocabulary' or 'hash'")

    def _fail(self, problem: str, fix: str) -> None:
        raise SchemaError(f"feature '{self.name}': {problem}", column=self.name, fix=fix)

    @property
    def is_categorical(self) -> bool:
        """Whether the column is embedded (``id``, ``categorical``, ``multi_categorical``)."""
        return self.kind in CATEGORICAL_KINDS

    @property
    def cardinality(self) -> int:
        """Number of embedding rows this column needs (OOV bucket included for vocabularies)."""
        vocabulary = len(self.vocabulary or []) + 1 if self.encoding == "vocabulary" else None
        return vocabulary or (int(self.num_buckets or 0) if self.encoding == "hash" else 0)


@dataclass
class FeatureSpec:
    """All feature columns of a dataset plus its labels and grouping columns.

    Attributes:
      features: The feature columns.
      labels: The label columns, never features.
      session_column: The column grouping the rows of one session, if any.
      user_column: The user id column, if any.
      item_column: The item id column, if any.
      timestamp_column: The time column, if any.
      version: The spec format's version.
      notes: Why schema inference decided what it did, and what it dropped.
    """

    features: list[FeatureColumn]
    labels: list[str]
    session_column: str | None = None
    user_column: str | None = None
    item_column: str | None = None
    timestamp_column: str | None = None
    version: int = SPEC_VERSION
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = self.feature_names
        if dupes := {n for n in names if names.count(n) > 1}:
            raise SchemaError(f"feature(s) {sorted(dupes)} listed twice", column=sorted(dupes)[0],
                              fix="keep one entry per column")
        inputs: dict[str, list[str]] = {}
        for name in names:
            inputs.setdefault(signature_name(name), []).append(name)
        if clashes := [columns for columns in inputs.values() if len(columns) > 1]:
            raise SchemaError(f"columns {clashes[0]} would be one serving input, "
                              f"'{signature_name(clashes[0][0])}' (inputs are named in ASCII letters, digits "
                              f"and _)", column=clashes[0][0],
                              fix="rename one of them, or leave one out with --exclude-columns")
        if leaked := [n for n in names if n in self.labels]:
            raise SchemaError(f"label column(s) {leaked} are also listed as features; a label can never be "
                              f"an input", column=leaked[0], fix="remove them from 'features' in the spec")

    @property
    def feature_names(self) -> list[str]:
        """The feature columns' names, in order."""
        return [f.name for f in self.features]

    def group(self, group: str) -> list[FeatureColumn]:
        """The features of ``group`` (``user``, ``item`` or ``context``), in order."""
        return [f for f in self.features if f.group == group]

    def __getitem__(self, name: str) -> FeatureColumn:
        return {f.name: f for f in self.features}[name]

    def table(self, width: int = 160) -> str:
        """The spec as a text table: column, kind, group, the input's dtype, vocabulary or buckets (or mean
        and std), and why inference chose it (cut to ``width`` columns); dropped columns last, with why."""
        decisions = self.notes.get("decisions", {})
        rows = [("column", "kind", "group", "input", "encoding", "why")]
        for f in self.features:
            size = (f"vocab {len(f.vocabulary or [])}" if f.encoding == "vocabulary" else
                    f"{f.num_buckets} buckets" if f.encoding == "hash" else
                    f"mean {f.mean or 0:.4g} std {f.std or 1:.4g}")
            # what a serving client sends (specs written before timestamps said float64 say float32)
            dtype = ("float64" if f.kind == "timestamp" else f.raw_dtype if f.is_categorical
                     or f.raw_dtype != "string" else "float32")
            why = decisions.get(f.name, "from the spec file").replace("; group", " | group")
            rows.append((f.name, f.kind, f.group, dtype, size, why))
        if self.session_column:  # not a feature, yet what GAUC, session NDCG and the splits group by
            rows.append((self.session_column, "session", "", "", "", "groups the rows of one session"))
        rows += [(name, "dropped", "", "", "", why) for name, why in self.notes.get("dropped", {}).items()]
        def shown(text) -> int:  # a terminal shows a wide East Asian character in two columns
            return sum(1 + (unicodedata.east_asian_width(c) in "WF") for c in str(text))

        def cut(line: str) -> str:
            while shown(line) > width - 3:
                line = line[:-1]
            return line + "..."

        sizes = [max(shown(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(v + " " * (n - shown(v)) for v, n in zip(r, sizes)) + "  " + r[5] for r in rows]
        return "\n".join(line if shown(line) <= width else cut(line) for line in lines)

    def to_dict(self) -> dict:
        """The spec as the JSON object :meth:`save` writes."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "feature spec") -> "FeatureSpec":
        """The spec of a JSON object :meth:`to_dict` made; ``source`` names it in an error."""
        try:
            rest = {k: v for k, v in data.items() if k != "features"}
            spec = cls(features=[FeatureColumn(**f) for f in data["features"]], **rest)
        except (KeyError, TypeError) as exc:
            fix = "regenerate it with infer_schema, or compare with a generated one"
            raise SchemaError(f"malformed feature spec ({exc})", path=source, fix=fix) from None
        for f in spec.features:
            seen = max(abs(f.mean or 0.0), abs(f.newest or 0.0))
            if f.kind == "timestamp" and seen >= MAX_EPOCH_SECONDS:
                raise SchemaError(f"timestamp feature '{f.name}' was fitted on epoch milliseconds read as "
                                  f"seconds ({seen:g}), as versions before 0.2 read them: its hour, "
                                  f"weekday and scale were wrong", path=source,
                                  fix="train the run again (the model learned from those wrong features)")
        return spec

    def save(self, path: str | Path) -> None:
        """Writes the spec as JSON to a local path or URL."""
        paths.write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSpec":
        """The spec :meth:`save` wrote; a missing, broken or inconsistent file raises :class:`SchemaError`."""
        p = paths.as_path(path)
        if not paths.isfile(p):
            raise SchemaError("feature spec file not found", path=str(p),
                              fix="check the path, or infer a spec first")
        try:
            data = json.loads(paths.read_text(p))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc.msg}", path=str(p), line=exc.lineno,
                              fix="fix the JSON syntax at that line") from None
        return cls.from_dict(data, source=str(p))


# ----------------------------------------------------------------------------------------------
# Raw encoding: how a column's values are written for the encoders. Schema inference builds
# vocabularies from it and models are fed with it, so the two can never disagree.

def is_listlike(value) -> bool:
    """Whether a cell holds several values (a list, tuple or array)."""
    return isinstance(value, (list, tuple, np.ndarray))


def raw_strings(values: pd.Series, column: FeatureColumn | None = None) -> pd.Series:
    """A categorical column as the strings a client sends.

    Missing -> ""; integers (integral floats too) -> "3"; lists -> joined by the column's separator (``|``).

    Args:
      values: The column.
      column: Its spec, for the separator.

    Returns:
      A Series of ``str``: pandas' own text dtype where ``values`` has it (its hashing and counting run in
      Arrow, without a Python object per value), else object.
    """
    sep = (column.separator if column is not None else None) or "|"
    if values.dtype.kind in "iub" and not values.hasnans:  # ints / bools without missing values: fast path
        return values.astype(str).astype(object)
    if pd.api.types.is_string_dtype(values) and values.dtype != object:
        return values.fillna("")
    return values.map(lambda v: scalar_text(v, sep)).astype(object)


def scalar_text(value, sep: str = "|") -> str:
    """One value as :func:`raw_strings` writes it.

    Args:
      value: A cell.
      sep: What joins the elements of a list.

    Returns:
      The text.
    """
    if is_listlike(value):
        return sep.join(scalar_text(v, sep) for v in value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def frame_to_raw(frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Each feature of ``spec`` as the raw array a model (and a serving client) takes.

    Args:
      frame: Rows holding every feature of ``spec``.
      spec: The features.

    Returns:
      Per feature: for categorical kinds an object array of ``str`` (:func:`raw_strings`: lists joined by
      the column's separator, integers as "3", missing as ""), or int64 for ``raw_dtype`` ``int64``
      (missing or not an integer: :data:`MISSING_INT`, which no vocabulary holds); for numeric ones
      float32, NaN where missing; for a timestamp float64 epoch seconds.
    """
    out: dict[str, np.ndarray] = {}
    for f in spec.features:
        if f.name not in frame.columns:
            raise DataError(f"feature '{f.name}' of the spec is missing from the data", column=f.name,
                            fix="add the column, or remove the feature from the spec")
        values = frame[f.name]
        if f.is_categorical and f.raw_dtype == "int64":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            known = np.isfinite(numbers) & (numbers == np.floor(numbers))
            out[f.name] = np.where(known, numbers, MISSING_INT).astype(np.int64)
        elif f.is_categorical:
            out[f.name] = raw_strings(values, f).to_numpy(dtype=object)
        elif f.kind == "timestamp":
            out[f.name] = epoch_seconds(values, f.name, dates_day_first=f.day_first, strict=False)
        else:
            out[f.name] = _numbers(values, f).astype(np.float32)
    return out


def _numbers(values: pd.Series, column: FeatureColumn) -> np.ndarray:
    if is_plain_number(values):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    missing = values.isna() | values.astype(str).str.strip().isin(MISSING_NUMBER_WORDS)  # "", "unknown"
    numbers = pd.to_numeric(values.mask(missing), errors="coerce")
    # "€12,50", or not a number at all; with a decimal comma "1.250" is 1250, not what pandas reads
    if column.decimal_comma or (numbers.isna() & ~missing).any():
        return read_numbers(values, column.name, comma_decimal=column.decimal_comma)
    return numbers.to_numpy(dtype="float64", na_value=np.nan)


if __name__ == "__main__":  # the command line lives apart: python -m tfrs_recsys.data.schema
    from tfrs_recsys.data.schema_cli import main

    sys.exit(main())
