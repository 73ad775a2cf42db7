"""Schema inference: a first :class:`~tfrs_recsys.data.schema.FeatureSpec` from a sample of the data.

:func:`infer_schema` decides each column's kind, encoding and group from its name and values, and
explains every decision in ``spec.notes``; ``python -m tfrs_recsys.data.schema FILE --labels ...
--out spec.json`` runs it on a CSV, TSV, JSON Lines or Parquet file
(:func:`tfrs_recsys.data.schema_cli.main`).
"""
from __future__ import annotations

import logging
import re
from collections import namedtuple
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tfrs_recsys.data.feature_groups import group_of
from tfrs_recsys.data.label_leaks import (
    leak_error,
    looks_like_label,
    norm_name,
    present_within_label,
    tells_label,
    unusual_within_label,
    within_label,
)
from tfrs_recsys.data.number_text import currencies, formatted_numbers, mostly_formatted_numbers, numbers_hint
from tfrs_recsys.data.numeric_bounds import robust_stats
from tfrs_recsys.data.readers import struct_fields
from tfrs_recsys.data.schema import (
    GROUPS,
    FeatureColumn,
    FeatureSpec,
    SchemaError,
    is_listlike,
    raw_strings,
    scalar_text,
)
from tfrs_recsys.data.text_values import (
    SEPARATORS,
    TIME_NAME,
    all_dates,
    date_text_seconds,
    detect_separator,
    free_text,
    id_named,
)
from tfrs_recsys.data.times import MAX_EPOCH_SECONDS, day_first, epoch_seconds, epoch_units, is_plain_number

_SESSION_NAMES = ("session_id", "sessionid", "search_id", "srch_id", "session", "query_id", "qid",
                  "request_id")
_USER_ID_NAMES = ("user_id", "userid", "uid", "user", "visitor_id", "visitorid", "customer_id", "customerid")
_ITEM_ID_NAMES = ("item_id", "itemid", "movie_id", "movieid", "iid", "item", "prop_id", "ad_id", "product_id")
_CATEGORICAL_NAME = re.compile(r"(^|_)(cat|cate|categorical|category|code|type|class|sparse)(_|\d|id$|$)"
                               r"|^c\d+$")
_NUMERIC_NAME = re.compile(
    r"(^|_)(num|numerical|numeric|dense|count|cnt|price|amount|score|ratio|duration|length|hotness|age"
    r"|quantity|qty|weight|total|menge|anzahl|preis|betrag|gewicht|cantidad|precio|importe|prix|montant"
    r"|quantite|prezzo|quantita|importo)(_|\d|$)|^i\d+$|^d\d")
_EPOCH_SECONDS = (1e8, 4.2e9)  # 1973-03 .. 2103


logger = logging.getLogger(__name__)
_Options = namedtuple("_Options", "vocab_max hash_multiplier low_cardinality_max")


def infer_schema(frame: pd.DataFrame, labels: Sequence[str] | None = None, *,
                 user_columns: Sequence[str] | None = None, item_columns: Sequence[str] | None = None,
                 context_columns: Sequence[str] | None = None, session_column: str | None = None,
                 user_column: str | None = None, item_column: str | None = None,
                 timestamp_column: str | None = None, exclude: Sequence[str] = (), sample_rows: int = 100_000,
                 column_kinds: Mapping[str, str] | None = None,
                 vocab_max: int = 10_000, hash_multiplier: int = 2,
                 low_cardinality_max: int = 100) -> FeatureSpec:
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

    Labels: ``labels=None`` takes the columns named like outcomes (:func:`looks_like_label`); with labels
    given, another outcome-named column raises :class:`SchemaError` unless ``exclude`` leaves it out or a
    group lists it (a label among the features makes a model useless in serving).
    Roles: ``session_column`` (never a feature), ``user_column`` and ``item_column`` default to the first
    conventional name (``session_id``, ``search_id`` / ``user_id``, ``userId`` / ``item_id``, ``movieId``,
    ...); ``timestamp_column`` to the first timestamp feature.

    Args:
      frame: The data, labels included.
      labels: The label columns (``None``: those named like outcomes).
      user_columns: Columns of the user group, whatever their names say.
      item_columns: Columns of the item group.
      context_columns: Columns of the context group.
      session_column: The column grouping the rows of one session (never a feature).
      user_column: The user id column.
      item_column: The item id column.
      timestamp_column: The time column.
      column_kinds: Kinds declared over inference, whatever the values and names look like
        (``--column-types``: ``{"signup": "timestamp", "delivery_min": "numeric", "zip": "categorical"}``).
      exclude: Columns to leave out.
      sample_rows: Rows sampled (seeded) to infer from.
      vocab_max: The largest vocabulary; more distinct values are hashed.
      hash_multiplier: Hash buckets per distinct value.
      low_cardinality_max: The most distinct values of a ``categorical`` column; more make an ``id``.

    Returns:
      The spec, with every decision and drop explained in ``notes``.

    Example:

    >>> spec = infer_schema(frame, ["click", "conversion"], session_column="search_id")
    >>> spec.save("spec.json")  # edit it by hand if a decision is wrong
    """
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise SchemaError("schema inference needs a non-empty DataFrame", fix="load the data first")
    frame = frame.rename(columns=str)
    columns = list(frame.columns)
    exclude = struct_fields(exclude, columns)
    explicit_lists = dict(zip(GROUPS, (user_columns or [], item_columns or [], context_columns or [])))
    roles = {"session_column": session_column, "user_column": user_column, "item_column": item_column,
             "timestamp_column": timestamp_column}
    _require_columns(columns, labels=labels or [], exclude=exclude,
                     **{f"{group}_columns": cols for group, cols in explicit_lists.items()},
                     **{role: [value] for role, value in roles.items() if value})
    opts = _Options(vocab_max, hash_multiplier, low_cardinality_max)
    sample = frame if len(frame) <= sample_rows else frame.sample(n=sample_rows, random_state=0)
    excluded = set(exclude)
    notes: dict = {"rows": len(frame), "sample_rows": len(sample), "decisions": {},
                   "dropped": dict.fromkeys(excluded, "left out on request (exclude, --exclude-columns)")}

    listed = {c for cols in explicit_lists.values() for c in cols}
    outcomes = [c for c in columns if c not in excluded and c not in listed and looks_like_label(c)]
    if labels is None:
        labels = outcomes
        notes["labels"] = f"inferred from column names: {labels}" if labels else "no label-like column found"
    else:
        labels = list(labels)
        undeclared = [c for c in outcomes if c not in labels]
        if undeclared:
            raise leak_error(undeclared[0], labels,
                             f"looks like a label but is not declared as one (declared: {labels})")
        for c in (c for c in columns if c not in excluded and c not in listed and c not in labels):
            if (within := within_label(sample, c, labels)) is not None:
                raise leak_error(c, labels, f"is 1 only on rows where the label '{within}' is 1 (a later "
                                            f"step of the same funnel, as a purchase is of a click)")
            if (within := present_within_label(sample, c, labels)) is not None:
                raise leak_error(c, labels, f"has values only on rows where the label '{within}' is 1, "
                                            f"blank on the others (known only with the outcome, as the "
                                            f"seconds an article was read are with its click)",
                                 may_be_label=False)
            if (unusual := unusual_within_label(sample, c, labels)) is not None:
                raise leak_error(c, labels, f"its {unusual[1]} occur only on rows where '{unusual[0]}' is 1 "
                                            f"({unusual[2]:,} rows; known only with the outcome, as a "
                                            f"conversion's value is)", may_be_label=False)
            ids = c in roles.values() or id_named(c)  # an id's order is the file's, not a measurement
            if not ids and (told := tells_label(sample, c, labels)) is not None:
                auc = f"{told[1]:.3f}" if told[1] >= 0.5 else f"{1 - told[1]:.3f}, in reverse"
                raise leak_error(c, labels, f"alone ranks the label '{told[0]}' with an AUC of {auc} "
                                            f"(a value known only with the outcome, as the seconds a track "
                                            f"was played are with its skip)", may_be_label=False)
    label_set = set(labels)

    explicit: dict[str, str] = {}
    for group, cols in explicit_lists.items():
        for c in cols:
            if c in label_set:
                raise SchemaError(f"label column '{c}' is listed in {group}_columns; a label can never be a "
                                  f"feature", column=c, fix=f"remove it from {group}_columns")
            if explicit.get(c, group) != group:
                raise SchemaError(f"column '{c}' is listed in both {explicit[c]}_columns and {group}_columns",
                                  column=c, fix="list it in one group only")
            explicit[c] = group

    candidates = [c for c in columns if c not in label_set and c not in excluded]
    for role, value in roles.items():
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
        declared = "timestamp" if name == timestamp_column else (column_kinds or {}).get(name)
        column, why = _infer_column(name, sample[name], opts, as_id=name in (user_column, item_column),
                                    declared=declared)
        notes["dropped" if column is None else "decisions"][name] = why
        if column is not None:
            features.append(column)
    if timestamp_column is None:
        timestamp_column = next((f.name for f in features if f.kind == "timestamp"), None)

    ids = {role: raw_strings(sample[col]) for role, col in (("user", user_column), ("item", item_column))
           if col is not None and col in sample.columns}
    for f in features:
        f.group, why = group_of(f, sample[f.name], explicit, user_column, item_column, ids)
        notes["decisions"][f.name] += f"; group {f.group}: {why}"
    return FeatureSpec(features, labels, session_column, user_column, item_column, timestamp_column,
                       notes=notes)


def _require_columns(columns: list[str], **named: Sequence[str]) -> None:
    for arg, cols in named.items():
        for c in cols:
            if c not in columns:
                shown = ", ".join(columns[:30]) + (" ..." if len(columns) > 30 else "")
                raise SchemaError(f"{arg} names column '{c}', which is not in the data", column=c,
                                  fix=f"use one of the columns: {shown}")


def _first_named(columns: list[str], names: Sequence[str]) -> str | None:
    by_norm = {norm_name(c): c for c in columns}
    return next((by_norm[n] for n in names if n in by_norm), None)


def _infer_column(name: str, values: pd.Series, opts: _Options, *, as_id: bool,
                  declared: str | None) -> tuple[FeatureColumn | None, str]:
    """One column's FeatureColumn and the reason, or (None, why it was dropped); ``declared``: the kind
    ``--column-types`` (or ``--time-column``) gives it."""
    lname = norm_name(name)
    if values.dtype == object and values.map(is_listlike).any():
        return _list_column(name, values, opts, as_id=as_id)
    if declared in ("numeric", "categorical") and not as_id:
        return _declared_column(name, values, opts, declared)
    datetimes = pd.api.types.is_datetime64_any_dtype(values)
    if declared == "timestamp" or datetimes:
        order = not is_plain_number(values) and not datetimes and day_first(values, name)
        why = "declared timestamp" if declared == "timestamp" else "datetime values"
        return _numeric_column(name, epoch_seconds(values, name, dates_day_first=order, strict=False),
                               "timestamp", why,
                               dates_day_first=order)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        present = values.dropna()
        integer_dtype = pd.api.types.is_integer_dtype(values)
        integral = integer_dtype or bool((present == np.floor(present)).all())
        seconds = epoch_units(present.to_numpy("float64")) if integral else None  # milliseconds too
        scaled = integral and not present.empty and present.max() >= MAX_EPOCH_SECONDS
        # a scaled epoch reads from 2001 on: 201901011230 (a YYYYMMDDhhmm) is no millisecond of 1976
        if (integral and TIME_NAME.search(lname) and not present.empty and seconds.max() <= _EPOCH_SECONDS[1]
                and (1e9 if scaled else _EPOCH_SECONDS[0]) <= seconds.min()):
            unit = "milli-, micro- or nanoseconds" if scaled else "seconds"
            return _numeric_column(name, epoch_seconds(values, name), "timestamp",
                                   f"integer epoch {unit} under a time-like name")
        # Integer categories stay integers end to end (int64 inputs); the user and item ids stay strings,
        # as every signature and the feature store hold them, and so do integers with gaps (NaN).
        raw = "int64" if integer_dtype and not as_id else "string"
        if integral and (as_id or id_named(name)):
            return _categorical_column(name, raw_strings(values), opts, "integer ids", id_like=True,
                                       entity=as_id, raw_dtype=raw)
        distinct = present.nunique()
        quantity, coded = _NUMERIC_NAME.search(lname), _CATEGORICAL_NAME.search(lname)
        if integer_codes(name, values, opts.low_cardinality_max):
            why = ("integer codes, categorical-like name" if coded else f"{distinct} distinct integers "
                   f"(<= low_cardinality_max={opts.low_cardinality_max}): codes, not quantities")
            return _categorical_column(name, raw_strings(values), opts, why, raw_dtype=raw)
        why = ("quantity-like name" if quantity else "floating-point values" if not integer_dtype
               else f"{distinct} distinct integers and no id/categorical hint in the name")
        return _numeric_column(name, values.to_numpy("float64", na_value=np.nan), "numeric", why)
    if TIME_NAME.search(lname) and (dates := date_text_seconds(values, name)) is not None:
        seconds, order = dates
        return _numeric_column(name, seconds, "timestamp", "date text under a time-like name"
                               + (", day first" if order else ""), dates_day_first=order)
    if not as_id and not id_named(name) and (read := formatted_numbers(values)) is not None:
        numbers, comma = read
        why = "numbers written as text (" + ("decimal comma" if comma else "decimal point") + ")"
        if len(units := currencies(values)) > 1:  # read as written: no exchange rate is applied
            why += f", in {len(units)} currencies ({' '.join(units)}) read as one scale"
            logger.warning("column '%s': prices in %d currencies (%s) read as one scale, unconverted: "
                           "convert them to one currency, or give the currency its own column", name,
                           len(units), " ".join(units))
        return _numeric_column(name, numbers, "numeric", why, decimal_comma=comma)
    text = raw_strings(values).str.strip() if as_id else raw_strings(values)
    counts = text.value_counts()  # each distinct value once, for every check below
    if not as_id and free_text(counts):
        return None, "free text (sentences): a category per text would be learned by heart"
    separator = detect_separator(counts)
    if separator == "," and _comma_decimals(values):
        why = f"text (mostly numbers with a decimal comma: --column-types {name}=numeric reads them)"
        return _categorical_column(name, text, opts, why, counts=counts)
    if separator is not None:
        return _categorical_column(name, text, opts, f"text joined by {separator!r}", separator=separator,
                                   counts=counts)
    why = "booleans" if pd.api.types.is_bool_dtype(values) else "text"
    if why == "text" and not as_id and all_dates(counts.index, name):
        why = f"text (all dates: --column-types {name}=timestamp reads them)"  # a name that says no time
    elif why == "text" and not as_id and (hint := numbers_hint(counts.index.to_series(), name)):
        why = f"text ({hint})"
        logger.warning("column '%s': %s", name, hint)
    return _categorical_column(name, text, opts, why, id_like=id_named(name), entity=as_id, counts=counts)


def _comma_decimals(values: pd.Series) -> bool:
    """Whether most values are numbers with a decimal comma (``4,5`` beside a word): not lists of digits."""
    read = mostly_formatted_numbers(values)
    return read is not None and read[2] and (~read[1]).sum() >= read[1].sum()


def _declared_column(name: str, values: pd.Series, opts: _Options,
                     kind: str) -> tuple[FeatureColumn | None, str]:
    """A column of the kind ``--column-types`` declares: numbers (plain or written for people; what is no
    number is missing, as the loaders left it), or categories (integer codes stay int64 inputs)."""
    if kind == "numeric":
        if is_plain_number(values):
            return _numeric_column(name, values.to_numpy("float64", na_value=np.nan), "numeric", "declared")
        read = formatted_numbers(values)
        numbers = read[0] if read else pd.to_numeric(values, errors="coerce").to_numpy("float64",
                                                                                     na_value=np.nan)
        return _numeric_column(name, numbers, "numeric", "declared", decimal_comma=bool(read and read[1]))
    integers = pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return _categorical_column(name, raw_strings(values), opts, "declared", id_like=id_named(name),
                               raw_dtype="int64" if integers else "string")


def integer_codes(name: str, values: pd.Series, low_cardinality_max: int = 100, *,
                  integral_floats: bool = False) -> bool:
    """Whether an integer column holds codes, not quantities: its name says so (``category``, ``type``,
    ``code``) or it has at most ``low_cardinality_max`` distinct values, and its name says no quantity
    (``price``, ``count``, ``age``). ``integral_floats``: whole numbers with gaps (NaN) count as integers."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return False
    present = values.dropna()
    if not pd.api.types.is_integer_dtype(values) and not (
            integral_floats and not present.empty and bool((present == np.floor(present)).all())):
        return False
    lname = norm_name(name)
    return not _NUMERIC_NAME.search(lname) and bool(
        _CATEGORICAL_NAME.search(lname) or values.nunique() <= low_cardinality_max)


def _numeric_column(name: str, values: np.ndarray, kind: str, why: str, dates_day_first: bool = False,
                    decimal_comma: bool = False) -> tuple[FeatureColumn | None, str]:
    present = values[np.isfinite(values)]
    if present.size == 0 or np.ptp(present) == 0:
        single = f"{present[0]:g}" if present.size else "missing"
        return None, f"constant: every sampled value is {single} (or missing)"
    # a time is capped at the newest instead; a number's outliers are clipped to fences (numeric_bounds)
    mean, std, low, high = (robust_stats(name, present) if kind == "numeric" else
                            (float(present.mean()), float(present.std()), None, None))
    newest = float(present.max()) if kind == "timestamp" else None
    clipped = "" if low is None else f"; values clipped to [{low:.4g}, {high:.4g}]"
    return (FeatureColumn(name, kind, mean=mean, std=std, newest=newest, clip_low=low, clip_high=high,
                          raw_dtype="float64" if kind == "timestamp" else "float32",
                          day_first=dates_day_first, decimal_comma=decimal_comma),
            f"{kind}: {why}; mean {mean:.4g}, std {std:.4g}{clipped}")


def _encoded(name: str, kind: str, tokens: pd.Series, opts: _Options, counts: pd.Series | None = None,
             **extra) -> tuple[FeatureColumn, str]:
    if counts is None:
        counts = tokens.value_counts()  # the checks below read each distinct value once, not every row
    present = pd.Series(counts.index[counts.index != ""], dtype=object)
    # RE2's ASCII \d, as the encoder's own check in the graph
    extra["integer_values"] = bool(present.size) and pc.all(
        pc.match_substring_regex(pa.array(present.to_numpy(), type=pa.string()), r"^-?\d+$")).as_py()
    extra["boolean_values"] = (kind == "categorical" and bool(present.size)  # a list's tokens are not mapped
                               and set(present.str.lower()) <= {"true", "false"})
    if len(counts) <= opts.vocab_max:
        ranked = pd.DataFrame({"value": counts.index, "count": counts.to_numpy()})
        # most frequent first, ties by value
        vocab = ranked.sort_values(["count", "value"], ascending=[False, True])["value"].tolist()
        return (FeatureColumn(name, kind, encoding="vocabulary", vocabulary=vocab, **extra),
                f"vocabulary of {len(vocab)}")
    buckets = opts.hash_multiplier * len(counts)
    return (FeatureColumn(name, kind, encoding="hash", num_buckets=buckets, **extra),
            f"{len(counts)} distinct > vocab_max={opts.vocab_max}: {buckets} hash buckets")


def _categorical_column(name: str, text: pd.Series, opts: _Options, why: str, *, id_like: bool = False,
                        entity: bool = False, separator: str | None = None, raw_dtype: str = "string",
                        counts: pd.Series | None = None) -> tuple[FeatureColumn | None, str]:
    """``entity``: the user or item id column, kept even when every sampled value differs; ``separator``
    joins the values of a multi-valued column; ``raw_dtype``: what a client sends (``int64`` codes);
    ``counts``: ``text.value_counts()``, when already computed."""
    if counts is None:
        counts = text.value_counts()
    distinct = len(counts)
    if distinct <= 1:
        value = text.iloc[0]
        shown = value if len(value) <= 40 else value[:40] + "..."
        return None, f"constant: every sampled value is {shown!r}"
    if separator is not None:
        tokens = text.str.split(separator, regex=False).explode().str.strip()
        column, how = _encoded(name, "multi_categorical", tokens[tokens != ""], opts, separator=separator)
        return column, f"multi_categorical: {why}, {how}"
    if not entity and distinct == len(text) >= 100:
        return None, f"a row key: all {distinct} sampled values differ, so there is nothing to learn from it"
    kind = "id" if entity or id_like or distinct > opts.low_cardinality_max else "categorical"
    column, how = _encoded(name, kind, text, opts, counts=counts, raw_dtype=raw_dtype)
    return column, f"{kind}: {why}, {how}" + (", int64 input" if raw_dtype == "int64" else "")


def _list_column(name: str, values: pd.Series, opts: _Options, *,
                 as_id: bool) -> tuple[FeatureColumn | None, str]:
    lists = values.map(lambda v: list(v) if is_listlike(v) else ([] if scalar_text(v) == "" else [v]))
    tokens = lists.explode().dropna().map(scalar_text)
    separator = next((s for s in (*SEPARATORS, "\t") if not tokens.str.contains(s, regex=False).any()), None)
    if separator is None:
        raise SchemaError("list values contain every separator (| ; , tab), so they cannot be sent as text",
                          column=name, fix="replace those characters in the values, or exclude the column")
    text = lists.map(lambda v: scalar_text(v, separator))
    if lists.map(len).max() <= 1:
        return _categorical_column(name, text, opts, "lists of at most one value", id_like=id_named(name),
                                   entity=as_id)
    return _categorical_column(name, text, opts, "lists", separator=separator)


