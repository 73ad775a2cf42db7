"""``python -m tfrs_recsys.data.schema FILE --labels click --out spec.json``: a feature spec from a file.

It reads the file as training does (the same flags: ``--column-types``, ``--exclude-columns``,
``--skip-bad-rows``), infers the spec and writes it, with a summary per feature, for editing by hand and
passing back with ``--feature-spec``.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Sequence

from tfrs_recsys.data.entities import entity_joins
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.schema import GROUPS
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.tabular import load_table, parse_column_types

_ROLE_FLAGS = {"session_column": "the column grouping one session's rows (never a feature)",
               "user_column": "the user id column", "item_column": "the item id column",
               "timestamp_column": "a time column (epoch seconds or dates)"}
_LIMIT_FLAGS = {"sample_rows": "rows sampled to infer from",
                "vocab_max": "the largest vocabulary; more distinct values are hashed",
                "hash_multiplier": "hash buckets per distinct value above --vocab-max",
                "low_cardinality_max": "the most distinct integers of a categorical code column"}


def _split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfrs_recsys.data.schema FILE --labels click,conversion --out spec.json``.

    Infers a spec from the file (:func:`~tfrs_recsys.data.schema_inference.infer_schema`), writes it to
    ``--out`` with a summary per feature on stderr, or prints it.

    Args:
      argv: The arguments (default: the command line's).

    Returns:
      The exit status: 0, or 2 after an error the user can fix.
    """
    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.data.schema",
                                     description="Infer a feature spec from a CSV, TSV, JSON Lines or "
                                                 "Parquet file.")
    parser.add_argument("file", help="CSV or TSV file with a header row, JSON Lines or Parquet file")
    parser.add_argument("--labels", "--label-columns", dest="labels",
                        help="comma-separated label columns (default: inferred from their names)")
    for role, about in _ROLE_FLAGS.items():
        flags = ["--" + role.replace("_", "-")] + (["--time-column"] if role == "timestamp_column" else [])
        parser.add_argument(*flags, dest=role, help=about)
    for group in ("item", "user"):
        parser.add_argument(f"--{group}s", help=f"a {group} table joined by --{group}-column, as training's")
    for group in GROUPS:
        parser.add_argument(f"--{group}-columns", help=f"comma-separated columns of the {group} group")
    parser.add_argument("--exclude", "--exclude-columns", dest="exclude",
                        help="comma-separated columns to leave out")
    parser.add_argument("--column-types", help="column kinds over inference, as training takes them: "
                                               "price=numeric,zip=categorical,signup=timestamp")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="skip and count malformed rows (and bad values of a column declared numeric)")
    parser.add_argument("--sep", help="field separator of a text file (default: read from its header line)")
    defaults = inspect.signature(infer_schema).parameters
    for option, about in _LIMIT_FLAGS.items():
        parser.add_argument("--" + option.replace("_", "-"), type=int, default=defaults[option].default,
                            help=f"{about} (default {defaults[option].default})")
    parser.add_argument("--out", help="where to write the JSON spec (default: print it)")
    args = parser.parse_args(argv)
    labels = _split_list(args.labels)
    try:
        column_types = _split_list(args.column_types) or []
        reports: list = []
        joins = entity_joins((), items=args.items, users=args.users, item_column=args.item_column,
                             user_column=args.user_column, skip_bad_rows=args.skip_bad_rows,
                             column_types=column_types, reports=reports,
                             exclude=_split_list(args.exclude) or ())
        joined = {c for join in joins for c in join.columns}  # --column-types about them: the tables'
        data = load_table(args.file, labels=labels or [], sep=args.sep, session_column=args.session_column,
                          user_column=args.user_column, item_column=args.item_column,
                          column_types=[e for e in column_types if e.partition("=")[0] not in joined],
                          skip_bad_rows=args.skip_bad_rows, what="the file",
                          exclude=_split_list(args.exclude) or ())
        groups = {g: _split_list(getattr(args, f"{g}_columns")) or [] for g in GROUPS}
        kinds = parse_column_types(column_types)
        for join in joins:
            data.frame = join.frame(data.frame)
            groups[join.group] += [c for c in join.columns if c not in groups[join.group]]
            kinds = {**dict.fromkeys(join.times, "timestamp"), **kinds}
        for report in [*data.skipped, *reports]:
            report.log()
        spec = infer_schema(data.frame, labels, exclude=_split_list(args.exclude) or (), column_kinds=kinds,
                            **{f"{g}_columns": columns or None for g, columns in groups.items()},
                            **{name: getattr(args, name) for name in (*_ROLE_FLAGS, *_LIMIT_FLAGS)})
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.out:
        print(json.dumps(spec.to_dict(), indent=2, ensure_ascii=False))
        return 0
    spec.save(args.out)
    print(spec.table(), file=sys.stderr)
    print(f"wrote {args.out}: {len(spec.features)} features, labels {spec.labels}, "
          f"{len(spec.notes['dropped'])} dropped (see notes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
