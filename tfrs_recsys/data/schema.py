"""Feature specs: what each column is, written as an editable JSON file the models consume.

A :class:`FeatureSpec` lists feature columns (kind, group, encoding and the
statistics the encoders need) and the label columns, which are never features.
:func:`infer_schema` writes a first spec from a sample of the data;
``python -m tfrs_recsys.data.schema FILE --labels ... --out spec.json`` does the same from a file.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from tfrs_recsys import paths
from tfrs_recsys.data.errors import DataError

KINDS = ("id", "categorical", "multi_categorical", "numeric", "timestamp")
GROUPS = ("user", "item", "context")
ENCODINGS = ("vocabulary", "hash", "none")
SPEC_VERSION = 1


class SchemaError(DataError):
    """A feature spec is inconsistent (e.g. a label used as a feature)."""


@dataclass
class FeatureColumn:
    """One input column.

    kind: ``id`` (high-cardinality categorical), ``categorical`` (low cardinality),
    ``multi_categorical`` (a list, or text joined by ``separator``), ``numeric``
    (standardized: (x - mean) / std, missing -> mean), ``timestamp`` (seconds; encoders
    derive cyclic hour/weekday and the standardized time, capped at ``newest``: serving runs
    after the training data, and an uncapped time would extrapolate further every day).
    encoding: ``vocabulary`` (StringLookup over ``vocabulary``, one OOV bucket),
    ``hash`` (``num_buckets`` hash bins), ``none`` (numeric and timestamp).
    integer_values: the values are integers written as text ("3"); encoders also accept
    "3.0", which is what a float-typed client writes for the same value.
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
    newest: float | None = None  # timestamp: the latest time seen in training; later times count as it
    embedding_dim: int | None = None
    raw_dtype: str = "string"  # dtype a serving client sends: string | int64 | float32
    integer_values: bool = False

    def __post_init__(self) -> None:
        if self.kind == "multi_categorical" and not self.separator:
            self.separator = "|"
        if self.kind not in KINDS:
            raise SchemaError(f"feature '{self.name}': unknown kind '{self.kind}'", column=self.name,
                              fix=f"use one of {KINDS}")
        if self.group not in GROUPS:
            raise SchemaError(f"feature '{self.name}': unknown group '{self.group}'", column=self.name,
                              fix=f"use one of {GROUPS}")
        if self.encoding not in ENCODINGS:
            raise SchemaError(f"feature '{self.name}': unknown encoding '{self.encoding}'", column=self.name,
                              fix=f"use one of {ENCODINGS}")
        categorical = self.kind in ("id", "categorical", "multi_categorical")
        if categorical and self.encoding == "vocabulary" and not self.vocabulary:
            raise SchemaError(f"feature '{self.name}': vocabulary encoding needs a vocabulary", column=self.name,
                              fix="list the values, or use encoding 'hash' with num_buckets")
        if categorical and self.encoding == "hash" and not (self.num_buckets and self.num_buckets > 0):
            raise SchemaError(f"feature '{self.name}': hash encoding needs num_buckets > 0", column=self.name,
                              fix="set num_buckets, e.g. 2x the expected number of distinct values")
        if categorical and self.encoding == "none":
            raise SchemaError(f"feature '{self.name}': categorical kinds need an encoding", column=self.name,
                              fix="use encoding 'vocabulary' or 'hash'")

    @property
    def is_categorical(self) -> bool:
        return self.kind in ("id", "categorical", "multi_categorical")

    @property
    def cardinality(self) -> int:
        """Number of embedding rows this column needs (OOV bucket included for vocabularies)."""
        if self.encoding == "vocabulary":
            return len(self.vocabulary or []) + 1
        if self.encoding == "hash":
            return int(self.num_buckets or 0)
        return 0


@dataclass
class FeatureSpec:
    """All feature columns of a dataset plus its labels and grouping columns."""

    features: list[FeatureColumn]
    labels: list[str]
    session_column: str | None = None
    user_column: str | None = None
    item_column: str | None = None
    timestamp_column: str | None = None
    version: int = SPEC_VERSION
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        names = [f.name for f in self.features]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise SchemaError(f"feature(s) {sorted(dupes)} listed twice", column=sorted(dupes)[0],
                              fix="keep one entry per column")
        leaked = [n for n in names if n in self.labels]
        if leaked:
            raise SchemaError(f"label column(s) {leaked} are also listed as features; a label can never be an "
                              f"input", column=leaked[0], fix="remove them from 'features' in the spec")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def group(self, group: str) -> list[FeatureColumn]:
        return [f for f in self.features if f.group == group]

    def __getitem__(self, name: str) -> FeatureColumn:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def select(self, names: Iterable[str]) -> "FeatureSpec":
        keep = set(names)
        return FeatureSpec([f for f in self.features if f.name in keep], list(self.labels), self.session_column,
                           self.user_column, self.item_column, self.timestamp_column, self.version, dict(self.notes))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "feature spec") -> "FeatureSpec":
        try:
            feats = [FeatureColumn(**f) for f in data["features"]]
            rest = {k: v for k, v in data.items() if k != "features"}
            return cls(features=feats, **rest)
        except (KeyError, TypeError) as exc:
            raise SchemaError(f"malformed feature spec ({exc})", path=source,
                              fix="regenerate it with infer_schema, or compare with a generated one") from None

    def save(self, path: str | Path) -> None:
        paths.write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSpec":
        p = paths.as_path(path)
        if not paths.isfile(p):
            raise SchemaError("feature spec file not found", path=str(p), fix="check the path, or infer a spec first")
        try:
            data = json.loads(paths.read_text(p))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc.msg}", path=str(p), line=exc.lineno,
                              fix="fix the JSON syntax at that line") from None
        return cls.from_dict(data, source=str(p))


# ----------------------------------------------------------------------------------------------
# Raw encoding: how a column's values are written for the encoders. Schema inference builds
# vocabularies from it and ``features.preprocessing.frame_to_raw`` feeds models with it, so the
# two can never disagree.

_INTEGER_TEXT = re.compile(r"-?\d+")


def _is_listlike(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def raw_strings(values: pd.Series, column: FeatureColumn | None = None) -> pd.Series:
    """A categorical column as the strings a client sends.

    Missing -> ""; integers (also integral floats, which is what pandas makes of an integer column
    with gaps) -> "3"; lists -> elements joined by the column's separator (``|`` by default).
    """
    sep = (column.separator if column is not None else None) or "|"
    if values.dtype.kind in "iub" and not values.hasnans:  # ints / bools without missing values: the fast path
        return values.astype(str).astype(object)
    if pd.api.types.is_string_dtype(values) and values.dtype != object:
        return values.fillna("").astype(object)
    return values.map(lambda v: _scalar_text(v, sep)).astype(object)


def _scalar_text(value, sep: str) -> str:
    if _is_listlike(value):
        return sep.join(_scalar_text(v, sep) for v in value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def epoch_seconds(values: pd.Series, name: str = "") -> np.ndarray:
    """A timestamp column as float64 seconds since 1970-01-01 UTC, NaN where missing.

    Accepts datetime columns (naive = UTC), numbers (already seconds) and date text.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    if not pd.api.types.is_datetime64_any_dtype(values):
        try:
            values = pd.to_datetime(values, utc=True)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"cannot read the timestamps ({exc})", column=name or None,
                              fix="store seconds since 1970 or ISO dates, or do not declare it a timestamp") from None
    if getattr(values.dt, "tz", None) is None:
        values = values.dt.tz_localize("UTC")
    seconds = (values - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype="float64", na_value=np.nan)


def frame_to_raw(frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Each feature of ``spec`` as the raw array a model (and a serving client) takes.

    Categorical kinds: object arrays of ``str`` (:func:`raw_strings`: lists joined by the column's
    separator, integers as "3", missing as ""). Numeric: float32, NaN where missing. Timestamp:
    float32 epoch seconds (float32 resolves about 2 minutes at today's dates, enough for hour features).
    """
    out: dict[str, np.ndarray] = {}
    for f in spec.features:
        if f.name not in frame.columns:
            raise DataError(f"feature '{f.name}' of the spec is missing from the data", column=f.name,
                            fix="add the column, or remove the feature from the spec")
        values = frame[f.name]
        if f.is_categorical:
            out[f.name] = raw_strings(values, f).to_numpy(dtype=object)
        elif f.kind == "timestamp":
            out[f.name] = epoch_seconds(values, f.name).astype(np.float32)
        else:
            out[f.name] = _numbers(values, f.name).astype(np.float32)
    return out


def _numbers(values: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    text = values.astype(object).where(values.notna(), "")
    numbers = pd.to_numeric(text.replace("", np.nan), errors="coerce")
    bad = numbers.isna() & (text != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"value {text.iloc[row]!r} in row {row} is not a number", column=name,
                        fix="clean the column, or make the feature categorical in the spec")
    return numbers.to_numpy(dtype="float64", na_value=np.nan)


# ----------------------------------------------------------------------------------------------
# Inference

# Outcome names: a column named like this is a label (or leaks one), never a feature.
_LABEL_NAMES = frozenset({
    "label", "labels", "target", "y", "click", "clicks", "clicked", "is_click", "click_bool", "conversion",
    "conversions", "converted", "is_conversion", "purchase", "purchases", "purchased", "is_purchase", "buy",
    "bought", "booking", "booked", "booking_bool", "is_booking", "gross_bookings_usd", "ctr", "cvr", "ctcvr",
    "rating", "ratings", "like", "liked", "finish", "finished",
})
_LABEL_AFFIX = re.compile(r"^(label|target|true)_|_(label|target)$")
_SESSION_NAMES = ("session_id", "sessionid", "search_id", "srch_id", "session", "query_id", "qid", "request_id")
_USER_ID_NAMES = ("user_id", "userid", "uid", "user", "visitor_id", "customer_id")
_ITEM_ID_NAMES = ("item_id", "itemid", "movie_id", "movieid", "iid", "item", "prop_id", "ad_id", "product_id")
# user_*, u_*, visitor_*, *_user; Ali-CCP field ids 1xx (f101, D109_14) are user fields.
_USER_NAME = re.compile(r"^(user|u|visitor|customer)_|_user$|^userid$|^[fd]?1\d\d(_\d+)?$")
# item_*, prop_* (hotels), movie*, ad_*, i_*, *_item; Ali-CCP field ids 2xx are item fields.
_ITEM_NAME = re.compile(r"^(item|prop|ad|i|product)_|^movie|_item$|^itemid$|^[fd]?2\d\d(_\d+)?$")
_TIME_NAME = re.compile(r"time|date|^ts$|_ts$|^ts_|_at$|epoch|unix")
_ID_NAME = re.compile(r"(^|_)ids?$")
_CATEGORICAL_NAME = re.compile(r"(^|_)(cat|cate|categorical|category|code|type|class|sparse)(_|\d|$)|^c\d+$")
_NUMERIC_NAME = re.compile(
    r"(^|_)(num|numerical|numeric|dense|count|cnt|price|amount|score|ratio|duration|length|hotness|age)(_|\d|$)"
    r"|^i\d+$|^d\d")
_EPOCH_SECONDS = (1e8, 4.2e9)  # 1973-03 .. 2103
_SEPARATORS = ("|", ";", ",")


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def looks_like_label(name: str) -> bool:
    """True for outcome names (click, conversion, purchase, label, booking_bool, ctr, rating, true_*, ...)."""
    n = _norm(name)
    return n in _LABEL_NAMES or bool(_LABEL_AFFIX.search(n))


def _id_named(name: str) -> bool:
    return bool(_ID_NAME.search(_norm(name))) or bool(re.search(r"[a-z]Id$|ID$", str(name)))


@dataclass
class _Options:
    vocab_max: int
    hash_multiplier: int
    low_cardinality_max: int


def infer_schema(
    frame: pd.DataFrame,
    labels: Sequence[str] | None = None,
    *,
    user_columns: Sequence[str] | None = None,
    item_columns: Sequence[str] | None = None,
    context_columns: Sequence[str] | None = None,
    session_column: str | None = None,
    user_column: str | None = None,
    item_column: str | None = None,
    timestamp_column: str | None = None,
    exclude: Sequence[str] = (),
    sample_rows: int = 100_000,
    vocab_max: int = 10_000,
    hash_multiplier: int = 2,
    low_cardinality_max: int = 100,
) -> FeatureSpec:
    """Decide each column's kind, encoding and group from a sample of ``frame``.

    Kinds, in the order they are tried:

    * lists (or text joined by ``|``, ``;`` or ``,`` whose parts recur across rows, e.g. genres)
      -> ``multi_categorical`` over the parts; a list column holding at most one value per row is
      single-valued;
    * datetime columns, and integers in 1973..2103 as epoch seconds under a time-like name
      (``timestamp``, ``*_time``, ``*_at``, ``ts``, ...) -> ``timestamp``;
    * the user / item id columns and ``*_id`` names -> ``id``;
    * numbers: a quantity-like name (``numerical_*``, ``I1``, ``D508``, ``*_count``, ``price``, ``age``)
      or a float dtype -> ``numeric`` (mean / std over the sample); an integer dtype with a
      categorical-like name (``categorical_*``, ``C1``, ``*_type``) or with at most
      ``low_cardinality_max`` distinct values -> categorical codes; other integers -> ``numeric``;
    * text and booleans -> ``categorical`` up to ``low_cardinality_max`` distinct values, ``id`` above.

    Categorical kinds use a vocabulary (strings, most frequent first, ties by value, so the spec is
    the same on every run) up to ``vocab_max`` distinct values, else ``hash_multiplier`` x distinct
    hash buckets. Columns with one value in the sample are dropped, and so are row keys (100+ sampled
    rows, every value different) other than the user / item id; every decision and drop is explained
    in ``spec.notes``.

    Groups: explicit ``user_columns`` / ``item_columns`` / ``context_columns`` win; then the user and
    item id columns; then names (``user_*``, ``u_*``, ``visitor_*``, ``*_user`` / ``item_*``, ``prop_*``,
    ``movie*``, ``ad_*``, ``i_*``); then a column constant within every user (item) id in the sample is a
    user (item) attribute; the rest is context.

    Labels: ``labels=None`` takes the columns named like outcomes (:func:`looks_like_label`). With
    declared labels, any other outcome-named column raises :class:`SchemaError` unless it is in
    ``exclude`` (left out) or listed in a group (a deliberate feature): a label that slips into the
    features makes a model that is useless in serving.
    Roles: ``session_column`` (groups rows, never a feature), ``user_column`` and ``item_column``
    default to the first column with a conventional name (``session_id``, ``search_id``, ``srch_id`` /
    ``user_id``, ``userId`` / ``item_id``, ``movieId``, ``prop_id``, ...); ``timestamp_column`` to the
    first timestamp feature.
    """
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise SchemaError("schema inference needs a non-empty DataFrame", fix="load the data first")
    frame = frame.rename(columns=str)
    columns = list(frame.columns)
    _require_columns(columns, labels=labels or [], exclude=exclude, user_columns=user_columns or [],
                     item_columns=item_columns or [], context_columns=context_columns or [],
                     session_column=[session_column] if session_column else [],
                     user_column=[user_column] if user_column else [],
                     item_column=[item_column] if item_column else [],
                     timestamp_column=[timestamp_column] if timestamp_column else [])
    opts = _Options(vocab_max, hash_multiplier, low_cardinality_max)
    sample = frame if len(frame) <= sample_rows else frame.sample(n=sample_rows, random_state=0)
    notes: dict = {"rows": len(frame), "sample_rows": len(sample), "decisions": {}, "dropped": {}}
    excluded = set(exclude)
    for name in excluded:
        notes["dropped"][name] = "excluded by the caller"

    listed = {*(user_columns or ()), *(item_columns or ()), *(context_columns or ())}
    if labels is None:
        labels = [c for c in columns if c not in excluded and c not in listed and looks_like_label(c)]
        notes["labels"] = f"inferred from column names: {labels}" if labels else "no label-like column found"
    else:
        labels = list(labels)
        undeclared = [c for c in columns
                      if c not in labels and c not in excluded and c not in listed and looks_like_label(c)]
        if undeclared:
            c = undeclared[0]
            raise SchemaError(
                f"looks like a label but is not declared as one (declared: {labels}); a label used as a "
                f"feature leaks the answer", column=c,
                fix=f"declare it as a label (labels={labels + [c]}) or leave it out with exclude=['{c}']; "
                    f"if it truly is an input, list it in user_columns, item_columns or context_columns")
    label_set = set(labels)

    explicit: dict[str, str] = {}
    for group, cols in (("user", user_columns), ("item", item_columns), ("context", context_columns)):
        for c in cols or ():
            if c in label_set:
                raise SchemaError(f"label column '{c}' is listed in {group}_columns; a label can never be a feature",
                                  column=c, fix=f"remove it from {group}_columns")
            if explicit.get(c, group) != group:
                raise SchemaError(f"column '{c}' is listed in both {explicit[c]}_columns and {group}_columns",
                                  column=c, fix="list it in one group only")
            explicit[c] = group

    candidates = [c for c in columns if c not in label_set and c not in excluded]
    for role, value in (("session_column", session_column), ("user_column", user_column),
                        ("item_column", item_column), ("timestamp_column", timestamp_column)):
        if value is not None and value in label_set:
            raise SchemaError(f"{role} '{value}' is a label", column=value, fix=f"pick another {role}")
    session_column = session_column or _first_named(candidates, _SESSION_NAMES)
    user_column = user_column or _first_named(candidates, _USER_ID_NAMES)
    item_column = item_column or _first_named(candidates, _ITEM_ID_NAMES)

    features: list[FeatureColumn] = []
    for name in candidates:
        if name == session_column:
            notes["decisions"][name] = "session column: groups rows, not a feature"
            continue
        column, why = _infer_column(name, sample[name], opts, as_id=name in (user_column, item_column),
                                    as_timestamp=name == timestamp_column)
        if column is None:
            notes["dropped"][name] = why
        else:
            features.append(column)
            notes["decisions"][name] = why
    if timestamp_column is None:
        timestamp_column = next((f.name for f in features if f.kind == "timestamp"), None)

    groups: dict[str, pd.Series] = {}
    for role, col in (("user", user_column), ("item", item_column)):
        if col is not None and col in sample.columns:
            groups[role] = raw_strings(sample[col])
    for f in features:
        f.group, why = _group_of(f, sample[f.name], explicit, user_column, item_column, groups)
        notes["decisions"][f.name] += f"; group {f.group}: {why}"
    return FeatureSpec(features, labels, session_column, user_column, item_column, timestamp_column, notes=notes)


def _require_columns(columns: list[str], **named: Sequence[str]) -> None:
    for arg, cols in named.items():
        for c in cols:
            if c not in columns:
                shown = ", ".join(columns[:30]) + (" ..." if len(columns) > 30 else "")
                raise SchemaError(f"{arg} names column '{c}', which is not in the data", column=c,
                                  fix=f"use one of the columns: {shown}")


def _first_named(columns: list[str], names: Sequence[str]) -> str | None:
    by_norm = {_norm(c): c for c in columns}
    return next((by_norm[n] for n in names if n in by_norm), None)


def _infer_column(name: str, values: pd.Series, opts: _Options, *, as_id: bool,
                  as_timestamp: bool) -> tuple[FeatureColumn | None, str]:
    """One column's FeatureColumn and the reason, or (None, why it was dropped)."""
    lname = _norm(name)
    if values.dtype == object and values.map(_is_listlike).any():
        return _list_column(name, values, opts, as_id=as_id)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    present = values.dropna()
    if as_timestamp or pd.api.types.is_datetime64_any_dtype(values):
        return _numeric_column(name, epoch_seconds(values, name), "timestamp",
                               "declared timestamp" if as_timestamp else "datetime values")
    if numeric:
        integral = pd.api.types.is_integer_dtype(values) or bool((present == np.floor(present)).all())
        if integral and _TIME_NAME.search(lname) and not present.empty:
            if _EPOCH_SECONDS[0] <= present.min() and present.max() <= _EPOCH_SECONDS[1]:
                return _numeric_column(name, epoch_seconds(values, name), "timestamp",
                                       "integer epoch seconds under a time-like name")
        if integral and (as_id or _id_named(name)):
            return _categorical_column(name, raw_strings(values), opts, "integer ids", id_like=True, entity=as_id)
        if _NUMERIC_NAME.search(lname):
            return _numeric_column(name, values.to_numpy("float64", na_value=np.nan), "numeric",
                                   "quantity-like name")
        if not pd.api.types.is_integer_dtype(values):
            return _numeric_column(name, values.to_numpy("float64", na_value=np.nan), "numeric",
                                   "floating-point values")
        distinct = present.nunique()
        if _CATEGORICAL_NAME.search(lname):
            return _categorical_column(name, raw_strings(values), opts, "integer codes, categorical-like name",
                                       id_like=False, entity=False)
        if distinct <= opts.low_cardinality_max:
            return _categorical_column(name, raw_strings(values), opts,
                                       f"{distinct} distinct integers (<= low_cardinality_max="
                                       f"{opts.low_cardinality_max}): codes, not quantities",
                                       id_like=False, entity=False)
        return _numeric_column(name, values.to_numpy("float64", na_value=np.nan), "numeric",
                               f"{distinct} distinct integers and no id/categorical hint in the name")
    text = raw_strings(values)
    separator = _detect_separator(text)
    if separator is not None:
        return _multi_column(name, text, separator, opts, f"text joined by {separator!r}")
    return _categorical_column(name, text, opts, "booleans" if pd.api.types.is_bool_dtype(values) else "text",
                               id_like=_id_named(name), entity=as_id)


def _numeric_column(name: str, values: np.ndarray, kind: str, why: str) -> tuple[FeatureColumn | None, str]:
    present = values[np.isfinite(values)]
    if present.size == 0 or np.ptp(present) == 0:
        single = f"{present[0]:g}" if present.size else "missing"
        return None, f"constant: every sampled value is {single} (or missing)"
    mean, std = float(present.mean()), float(present.std())
    newest = float(present.max()) if kind == "timestamp" else None
    return (FeatureColumn(name, kind, mean=mean, std=std, newest=newest, raw_dtype="float32"),
            f"{kind}: {why}; mean {mean:.4g}, std {std:.4g}")


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _vocabulary(tokens: pd.Series) -> list[str]:
    counts = tokens.value_counts()
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _encoded(name: str, kind: str, tokens: pd.Series, opts: _Options, **extra) -> tuple[FeatureColumn, str]:
    present = tokens[tokens != ""]
    integer_values = bool(present.size) and bool(present.str.fullmatch(_INTEGER_TEXT.pattern).all())
    vocab = _vocabulary(tokens)
    if len(vocab) <= opts.vocab_max:
        return (FeatureColumn(name, kind, encoding="vocabulary", vocabulary=vocab, integer_values=integer_values,
                              **extra), f"vocabulary of {len(vocab)}")
    buckets = opts.hash_multiplier * len(vocab)
    return (FeatureColumn(name, kind, encoding="hash", num_buckets=buckets, integer_values=integer_values, **extra),
            f"{len(vocab)} distinct > vocab_max={opts.vocab_max}: {buckets} hash buckets")


def _categorical_column(name: str, text: pd.Series, opts: _Options, why: str, *, id_like: bool,
                        entity: bool) -> tuple[FeatureColumn | None, str]:
    """``entity``: the user or item id column, kept even when every sampled value differs."""
    distinct = text.nunique()
    if distinct <= 1:
        return None, f"constant: every sampled value is {_short(text.iloc[0])}"
    if not entity and distinct == len(text) >= 100:
        return None, f"a row key: all {distinct} sampled values differ, so there is nothing to learn from it"
    kind = "id" if entity or id_like or distinct > opts.low_cardinality_max else "categorical"
    column, how = _encoded(name, kind, text, opts)
    return column, f"{kind}: {why}, {how}"


def _multi_column(name: str, text: pd.Series, separator: str, opts: _Options,
                  why: str) -> tuple[FeatureColumn | None, str]:
    if text.nunique() <= 1:
        return None, f"constant: every sampled value is {_short(text.iloc[0])}"
    tokens = text.str.split(separator, regex=False).explode().str.strip()
    column, how = _encoded(name, "multi_categorical", tokens[tokens != ""], opts, separator=separator)
    return column, f"multi_categorical: {why}, {how}"


def _list_column(name: str, values: pd.Series, opts: _Options, *, as_id: bool) -> tuple[FeatureColumn | None, str]:
    lists = values.map(lambda v: list(v) if _is_listlike(v) else ([] if _scalar_text(v, "|") == "" else [v]))
    tokens = lists.explode().dropna().map(lambda v: _scalar_text(v, "|"))
    separator = next((s for s in (*_SEPARATORS, "\t") if not tokens.str.contains(s, regex=False).any()), None)
    if separator is None:
        raise SchemaError("list values contain every separator (| ; , tab), so they cannot be sent as text",
                          column=name, fix="replace those characters in the values, or exclude the column")
    text = lists.map(lambda v: separator.join(_scalar_text(x, separator) for x in v))
    if lists.map(len).max() <= 1:
        return _categorical_column(name, text, opts, "lists of at most one value", id_like=_id_named(name),
                                   entity=as_id)
    return _multi_column(name, text, separator, opts, "lists")


def _detect_separator(text: pd.Series) -> str | None:
    """The separator of multi-valued text: one that splits some values into parts that recur.

    Genres ("Comedy|Drama") split into few distinct parts shared across rows; a title with a
    comma splits into parts as unique as the titles, so it stays single-valued.
    """
    present = text[text != ""]
    if present.empty:
        return None
    distinct_values = present.nunique()
    best, best_share = None, 0.0
    for sep in _SEPARATORS:
        has = present.str.contains(sep, regex=False)
        if has.sum() < 2 or has.mean() < 0.01:
            continue
        parts = present.str.split(sep, regex=False).explode().str.strip()
        parts = parts[parts != ""]
        if parts.nunique() <= distinct_values and has.mean() > best_share:
            best, best_share = sep, float(has.mean())
    return best


def _group_of(column: FeatureColumn, values: pd.Series, explicit: dict[str, str], user_column: str | None,
              item_column: str | None, ids: dict[str, pd.Series]) -> tuple[str, str]:
    name = column.name
    if name in explicit:
        return explicit[name], "listed explicitly"
    if name == user_column:
        return "user", "the user id column"
    if name == item_column:
        return "item", "the item id column"
    lname = _norm(name)
    if _USER_NAME.search(lname):
        return "user", "user-like name"
    if _ITEM_NAME.search(lname):
        return "item", "item-like name"
    key = raw_strings(values) if values.dtype == object else values
    per_user = "user" in ids and _constant_within(key, ids["user"])
    per_item = "item" in ids and _constant_within(key, ids["item"])
    if per_user != per_item:
        role = "user" if per_user else "item"
        return role, f"constant within each {role} id in the sample"
    return "context", "no user/item naming or id dependency"


def _constant_within(values: pd.Series, ids: pd.Series) -> bool:
    """True when ``values`` never changes within an id, and ids repeat enough for that to mean something."""
    distinct_ids = ids.nunique()
    if distinct_ids == 0 or len(ids) < 2 * distinct_ids:
        return False
    return bool((values.groupby(ids.to_numpy(), sort=False).nunique(dropna=False) <= 1).all())


# ----------------------------------------------------------------------------------------------
# CLI

def _split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfrs_recsys.data.schema FILE --labels click,conversion --out spec.json``."""
    from tfrs_recsys.data.tabular import load_table

    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.data.schema",
                                     description="Infer a feature spec from a CSV / TSV / Parquet file.")
    parser.add_argument("file", help="CSV, TSV or Parquet file with a header row")
    parser.add_argument("--labels", help="comma-separated label columns (default: inferred from column names)")
    parser.add_argument("--session-column")
    parser.add_argument("--user-column")
    parser.add_argument("--item-column")
    parser.add_argument("--timestamp-column")
    parser.add_argument("--user-columns", help="comma-separated columns of the user group")
    parser.add_argument("--item-columns", help="comma-separated columns of the item group")
    parser.add_argument("--context-columns", help="comma-separated columns of the context group")
    parser.add_argument("--exclude", help="comma-separated columns to leave out")
    parser.add_argument("--sep", help="field separator of a text file (default: ',' or tab for .tsv/.txt)")
    parser.add_argument("--sample-rows", type=int, default=100_000)
    parser.add_argument("--vocab-max", type=int, default=10_000)
    parser.add_argument("--hash-multiplier", type=int, default=2)
    parser.add_argument("--low-cardinality-max", type=int, default=100)
    parser.add_argument("--out", help="where to write the JSON spec (default: print it)")
    args = parser.parse_args(argv)
    labels = _split_list(args.labels)
    try:
        data = load_table(args.file, labels=labels or [], sep=args.sep, session_column=args.session_column,
                          user_column=args.user_column, item_column=args.item_column)
        spec = infer_schema(
            data.frame, labels, user_columns=_split_list(args.user_columns),
            item_columns=_split_list(args.item_columns), context_columns=_split_list(args.context_columns),
            session_column=args.session_column, user_column=args.user_column, item_column=args.item_column,
            timestamp_column=args.timestamp_column, exclude=_split_list(args.exclude) or (),
            sample_rows=args.sample_rows, vocab_max=args.vocab_max, hash_multiplier=args.hash_multiplier,
            low_cardinality_max=args.low_cardinality_max)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.out:
        print(json.dumps(spec.to_dict(), indent=2, ensure_ascii=False))
        return 0
    spec.save(args.out)
    for f in spec.features:
        size = f"{f.cardinality} rows" if f.is_categorical else f"mean {f.mean:.4g} std {f.std:.4g}"
        print(f"  {f.name:<24} {f.kind:<18} {f.group:<8} {f.encoding:<10} {size}", file=sys.stderr)
    print(f"wrote {args.out}: {len(spec.features)} features, labels {spec.labels}, "
          f"{len(spec.notes['dropped'])} dropped (see notes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
