"""Kaggle "Personalize Expedia Hotel Searches" (ICDM 2013): hotel search impressions for ESMM.

One row per hotel shown in a search; ``NULL`` marks a missing value. ``train.csv`` has 54 columns::

    srch_id, date_time, site_id, visitor_location_country_id, visitor_hist_starrating,
    visitor_hist_adr_usd, prop_country_id, prop_id, prop_starrating, prop_review_score, prop_brand_bool,
    prop_location_score1, prop_location_score2, prop_log_historical_price, position, price_usd,
    promotion_flag, srch_destination_id, srch_length_of_stay, srch_booking_window, srch_adults_count,
    srch_children_count, srch_room_count, srch_saturday_night_bool, srch_query_affinity_score,
    orig_destination_distance, random_bool, comp{1..8}_rate, comp{1..8}_inv, comp{1..8}_rate_percent_diff,
    click_bool, gross_bookings_usd, booking_bool

``test.csv`` lacks the train-only ``position``, ``click_bool``, ``gross_bookings_usd`` and ``booking_bool``.

Mapping to ESMM (:func:`load_expedia`):

* labels ``click`` = click_bool and ``conversion`` = booking_bool; a booking implies a click (checked);
* session ``srch_id`` (the hotels of one search are ranked together), item ``prop_id``, no user id
  (``visitor_*`` describe the searcher and are user features); ``date_time`` -> ``timestamp``
  (int64 seconds, read as UTC);
* never features: the labels; ``gross_bookings_usd`` (the booking's value, present only when booked);
  ``position`` (the rank Expedia's own ranker showed the hotel at: test.csv does not have it, a served
  ranker produces the order instead of receiving it, and clicks follow it, so a model fed with it
  would learn the old ranking rather than the hotels).

The competition metric is NDCG@38 per search with gain booking = 5, click = 1, else 0:
``python -m tfrs_recsys.evaluate ... --ndcg-k 38 --gains booking=5,click=1``.

``python -m tfrs_recsys.data.expedia setup --data DIR --work-dir runs/expedia`` (``make benchmark-setup``)
validates the downloaded files and writes them as Parquet; ``--dataset expedia`` reads either.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from tfrs_recsys import paths
from tfrs_recsys.data import readers
from tfrs_recsys.data.bundles import LabeledData
from tfrs_recsys.data.compressed import file_format, open_text
from tfrs_recsys.data.errors import DataError, SkipReport

_COMP = tuple(f"comp{i}_{part}" for i in range(1, 9) for part in ("rate", "inv", "rate_percent_diff"))
TRAIN_COLUMNS = (
    "srch_id", "date_time", "site_id", "visitor_location_country_id", "visitor_hist_starrating",
    "visitor_hist_adr_usd", "prop_country_id", "prop_id", "prop_starrating", "prop_review_score",
    "prop_brand_bool", "prop_location_score1", "prop_location_score2", "prop_log_historical_price",
    "position", "price_usd", "promotion_flag", "srch_destination_id", "srch_length_of_stay",
    "srch_booking_window", "srch_adults_count", "srch_children_count", "srch_room_count",
    "srch_saturday_night_bool", "srch_query_affinity_score", "orig_destination_distance", "random_bool",
    *_COMP, "click_bool", "gross_bookings_usd", "booking_bool",
)
TRAIN_ONLY = ("position", "click_bool", "gross_bookings_usd", "booking_bool")
TEST_COLUMNS = tuple(c for c in TRAIN_COLUMNS if c not in TRAIN_ONLY)
COLUMNS = {"train": TRAIN_COLUMNS, "test": TEST_COLUMNS}
# The columns that may be NULL in the Kaggle files (float64); every other numeric one never is (int64).
FLOAT_COLUMNS = ("visitor_hist_starrating", "visitor_hist_adr_usd", "prop_review_score",
                 "prop_location_score1", "prop_location_score2", "prop_log_historical_price", "price_usd",
                 "srch_query_affinity_score", "orig_destination_distance", *_COMP, "gross_bookings_usd")
INT_COLUMNS = tuple(c for c in TRAIN_COLUMNS if c not in FLOAT_COLUMNS and c != "date_time")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
CLICK, CONVERSION = "click", "conversion"
NOT_FEATURES = ("position", "gross_bookings_usd")  # see the module docstring
SESSION_COLUMN, ITEM_COLUMN, TIMESTAMP_COLUMN = "srch_id", "prop_id", "timestamp"
FULL_TRAIN_ROWS = 9_917_530  # rows of the complete Kaggle train.csv
CHUNK_ROWS = 200_000
WORK_FILES = {"train": "train.parquet", "test": "test.parquet"}
MANIFEST = "manifest.json"

DOWNLOAD_HELP = (
    "download the data yourself: sign in to Kaggle, open the competition 'expedia-personalized-sort' "
    "(https://www.kaggle.com/c/expedia-personalized-sort/data), accept its rules, download the data "
    "(or `kaggle competitions download -c expedia-personalized-sort`) and unzip it so that the folder "
    "holds train.csv (and test.csv); our machines cannot reach Kaggle for you")


def _blank_nulls(data: bytes) -> bytes:
    """Kaggle's ``NULL`` fields made empty, which is how read_delimited spells missing.

    A NULL first field stays: srch_id is never missing, and read_delimited then names the value.
    Twice for ``,NULL,``: adjacent NULLs share a comma, so one pass only replaces every other one.
    """
    data = data.replace(b",NULL,", b",,").replace(b",NULL,", b",,")
    return data.replace(b",NULL\n", b",\n").replace(b",NULL\r\n", b",\r\n")


def _check_header(path: str, part: str) -> None:
    """Raise unless ``path`` starts with the unmodified Kaggle header of ``part``."""
    header = [h.strip() for h in readers.first_line(path, f"{part}.csv", DOWNLOAD_HELP).strip().split(",")]
    other = "test" if part == "train" else "train"
    missing = [c for c in COLUMNS[part] if c not in header]
    extra = [c for c in header if c not in COLUMNS[part]]
    if missing:
        hint = (f"this looks like {other}.csv" if set(COLUMNS[other]) == set(header)
                else "this is not the unzipped Kaggle Expedia file, or it was edited")
        raise DataError(f"{part}.csv header lacks column(s) {missing} ({hint})", path=path, line=1,
                        column=missing[0],
                        fix=f"use the unmodified {part}.csv of the competition; {DOWNLOAD_HELP}")
    if extra:
        why = ("train-only columns, the labels among them" if set(extra) <= set(TRAIN_ONLY)
               else "unknown columns")
        raise DataError(f"{part}.csv header has {why} {extra}", path=path, line=1, column=extra[0],
                        fix=f"use the unmodified {part}.csv; for other layouts use --dataset csv")


def _lines(fh, read_size: int = 64 << 20) -> Iterator[bytes]:
    """The remaining lines of ``fh`` without their newline, read in large blocks (fast on gs:// too)."""
    rest = b""
    while block := fh.read(read_size):
        *lines, rest = (rest + block).split(b"\n")
        yield from lines
    if rest:
        yield rest


def _line_blocks(path: str, chunk_rows: int) -> Iterator[tuple[int, list[bytes]]]:
    """Consecutive data lines in blocks of ``chunk_rows`` non-blank ones: ``(first line number, lines)``."""
    with open_text(path) as fh:
        fh.readline()
        first, block, filled = 2, [], 0
        for line in _lines(fh):
            block.append(line)
            filled += bool(line.strip())
            if filled >= chunk_rows:
                yield first, block
                first, block, filled = first + len(block), [], 0
        if filled:
            yield first, block


def iter_expedia_csv(path: str, *, part: str = "train", skip_bad_rows: bool = False,
                     chunk_rows: int = CHUNK_ROWS,
                     report: SkipReport | None = None) -> Iterator[pd.DataFrame]:
    """Typed blocks of a Kaggle ``train.csv`` / ``test.csv``, in file order, in bounded memory.

    Columns come in the Kaggle order: integer columns int64, the others float64 (NULL -> NaN),
    ``date_time`` datetime64[s]. Every problem raises :class:`DataError` with file, line and column
    (with ``skip_bad_rows`` the row is skipped and counted in ``report`` instead): a wrong header,
    a short or long row, a value of the wrong type, NULL in a column that is never missing, a bad
    ``date_time``, a label other than 0/1, a booking without a click.

    Args:
      path: The file (a local path or URL).
      part: ``train`` or ``test``.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.
      chunk_rows: Rows read at a time.
      report: Counts the rows read and skipped (a new report by default).

    Yields:
      Frames of at most ``chunk_rows`` rows.
    """
    path = str(path)
    columns = COLUMNS[part]
    _check_header(path, part)
    nullable = [c for c in FLOAT_COLUMNS if c in columns]
    types = dict.fromkeys(nullable, "float") | {c: "int" for c in INT_COLUMNS if c in columns}
    report = report if report is not None else SkipReport(path=path)
    any_rows = False
    for first, block in _line_blocks(path, chunk_rows):
        frame, _ = readers.read_delimited(
            path, data=_blank_nulls(b"\n".join(block) + b"\n"), first_line=first, sep=",", columns=columns,
            column_types=types, nullable=nullable, skip_bad_rows=skip_bad_rows, quoting=False, report=report)
        frame = _check_rows(frame, part, path, first, skip_bad_rows, report)
        any_rows = any_rows or not frame.empty
        yield frame
    if not any_rows:
        raise DataError(f"{part}.csv has no usable data rows", path=path, fix=DOWNLOAD_HELP)


def _check_rows(frame: pd.DataFrame, part: str, path: str, first: int | None, skip_bad_rows: bool,
                report: SkipReport) -> pd.DataFrame:
    """Checks that need whole rows: the date, the labels, booking implies click. Returns the kept rows.

    ``first`` is the file line of the frame's first row (``None`` for rows read from Parquet).
    """
    text = frame["date_time"]
    when = text if pd.api.types.is_datetime64_any_dtype(text) else pd.to_datetime(text, format=DATE_FORMAT,
                                                                                   errors="coerce")
    checks = [(when.isna().to_numpy(), "date_time",
               lambda r: f"date_time {text.iloc[r]!r} is not a date like 2013-04-04 08:32:15",
               "correct the date, or rerun with --skip-bad-rows to skip and count the row")]
    if part == "train":
        checks += [*readers.binary_checks(frame, ("click_bool", "booking_bool"), fix="correct the label"),
                   (((frame["booking_bool"] == 1) & (frame["click_bool"] == 0)).to_numpy(), "booking_bool",
                    lambda r: "booking_bool = 1 on a hotel that was not clicked (click_bool = 0); a booking "
                              "always follows a click",
                    "set click_bool = 1 on that row or drop it: conversion must mean click-then-book")]
    where = lambda r: f"srch_id {frame['srch_id'].iloc[r]}, prop_id {frame['prop_id'].iloc[r]}: "
    return readers.check_rows(frame.assign(date_time=when.astype("datetime64[s]")), path, checks, where=where,
                              first_data_line=first, skip_bad_rows=skip_bad_rows, report=report)


def read_expedia_csv(path: str, *, part: str = "train", skip_bad_rows: bool = False,
                     chunk_rows: int = CHUNK_ROWS) -> tuple[pd.DataFrame, SkipReport]:
    """A whole Kaggle ``train.csv`` / ``test.csv`` as one typed frame (see :func:`iter_expedia_csv`).

    Args:
      path: The file.
      part: ``train`` or ``test``.
      skip_bad_rows: Skip and count malformed rows instead of failing on the first.
      chunk_rows: Rows read at a time.

    Returns:
      The frame and the report of skipped rows.
    """
    report = SkipReport(path=str(path))
    blocks = list(iter_expedia_csv(path, part=part, skip_bad_rows=skip_bad_rows, chunk_rows=chunk_rows,
                                   report=report))
    report.log()
    return pd.concat(blocks, ignore_index=True), report


def load_expedia(path: str, *, skip_bad_rows: bool = False) -> LabeledData:
    """Expedia training impressions for ESMM (the mapping of the module docstring).

    Args:
      path: ``train.parquet`` (written by :func:`setup_benchmark`), ``train.csv``, or a folder holding
        either (the Parquet file first).
      skip_bad_rows: Skip and count malformed rows of a CSV file instead of failing on the first.

    Returns:
      The rows: labels ``click`` / ``conversion``, session ``srch_id``, item ``prop_id``, ``timestamp``
      in seconds; ``position`` and ``gross_bookings_usd`` dropped.
    """
    path = str(path)
    setup = "run `make benchmark-setup DATA=<folder with train.csv>`"
    if file_format(path) not in (".csv", ".parquet"):
        candidates = [paths.join(path, name) for name in (WORK_FILES["train"], "train.csv", "train.csv.gz")]
        found = next((str(c) for c in candidates if paths.exists(c)), None)
        if found is None:
            raise DataError("neither train.parquet nor train.csv is in the folder", path=path,
                            fix=f"{setup} and pass its work folder (runs/expedia), or pass the folder "
                                f"holding train.csv; {DOWNLOAD_HELP}")
        path = found
    skipped = []
    if path.endswith(".parquet"):
        frame = readers.read_parquet(path, columns=TRAIN_COLUMNS, what="Expedia Parquet", fix_missing=setup)
        extra = [c for c in frame.columns if c not in TRAIN_COLUMNS]
        if extra:
            raise DataError(f"column(s) {extra} are not in the Kaggle layout", path=path, column=extra[0],
                            fix="drop them; for other layouts use --dataset parquet|csv and --label-columns")
        # A Parquet file may have been edited since setup checked it.
        frame = _check_rows(frame[list(TRAIN_COLUMNS)], "train", path, None, False, SkipReport(path=path))
    else:
        frame, report = read_expedia_csv(path, skip_bad_rows=skip_bad_rows)
        skipped.append(report)
    frame = frame.drop(columns=list(NOT_FEATURES)).rename(
        columns={"click_bool": CLICK, "booking_bool": CONVERSION, "date_time": TIMESTAMP_COLUMN})
    frame[TIMESTAMP_COLUMN] = frame[TIMESTAMP_COLUMN].astype("int64")  # datetime64[s]: seconds
    return LabeledData(frame, [CLICK, CONVERSION], name="expedia", session_column=SESSION_COLUMN,
                       item_column=ITEM_COLUMN, skipped=skipped)


def _in_sample(srch_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded pseudo-random choice of whole searches (Knuth's multiplicative hash of the id)."""
    hashed = (srch_id.astype(np.uint64) * np.uint64(2654435761) + np.uint64(seed)) % np.uint64(1 << 32)
    return hashed.astype(np.float64) / float(1 << 32) < fraction


def _write_part(source: str, target: Path, part: str, *, sample_fraction: float, seed: int,
                chunk_rows: int) -> dict:
    """Validate ``source`` block by block into Parquet at ``target``; return its counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_read, writer = 0, None
    try:
        for frame in iter_expedia_csv(source, part=part, chunk_rows=chunk_rows):
            rows_read += len(frame)
            frame = frame[_in_sample(frame["srch_id"].to_numpy(), sample_fraction, seed)]
            if not frame.empty:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(target, table.schema)
                writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise DataError(f"no {part} rows left after sampling {sample_fraction:g} of the searches",
                        path=source, fix="raise --sample-searches")
    labels = ["click_bool", "booking_bool"] if part == "train" else []
    kept = pq.read_table(target, columns=["srch_id", *labels]).to_pandas()
    stats = {"source": source, "rows_read": rows_read, "rows": len(kept),
             "searches": kept["srch_id"].nunique()}
    if labels:
        stats.update(clicks=int(kept["click_bool"].sum()), bookings=int(kept["booking_bool"].sum()),
                     searches_with_booking=kept.loc[kept["booking_bool"] == 1, "srch_id"].nunique())
    return stats


def setup_benchmark(data_dir: str, work_dir: str | Path, *, strict: bool = False,
                    sample_fraction: float = 1.0, seed: int = 0, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Validate the downloaded ``train.csv`` (and ``test.csv`` when present) and write ``train.parquet``
    (``test.parquet``) and ``manifest.json`` into ``work_dir``.

    Validation: the files exist with the Kaggle headers; every row parses (types, NULLs only where the
    Kaggle data has them, dates, 0/1 labels, booking implies click); the row and search counts are
    recorded, and ``strict`` requires the complete train.csv (9,917,530 rows). ``sample_fraction``
    keeps that share of the searches (whole searches, seeded), for a quicker benchmark.
    Files are written under temporary names and renamed when all are valid. A ``work_dir`` URL
    (gs://...) gets the files of a local staging folder once all are written.

    Args:
      data_dir: The folder holding the unzipped ``train.csv`` (and ``test.csv``).
      work_dir: Where the Parquet files and the manifest go.
      strict: Require the complete ``train.csv``.
      sample_fraction: The share of searches kept.
      seed: The seed of the sample.
      chunk_rows: Rows read at a time.

    Returns:
      The manifest: what was read and written, row and search counts per part, notes.
    """
    if paths.is_remote(work_dir):
        with paths.staged_dir(work_dir) as local:
            manifest = setup_benchmark(data_dir, local, strict=strict, sample_fraction=sample_fraction,
                                       seed=seed, chunk_rows=chunk_rows)
            manifest["work_dir"] = str(paths.as_path(work_dir))
            (local / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest
    data_dir = str(data_dir)
    if not 0.0 < sample_fraction <= 1.0:
        raise DataError(f"--sample-searches must be in (0, 1], got {sample_fraction}", fix="pass e.g. 0.1")
    sources = {part: str(paths.join(data_dir, f"{part}.csv")) for part in COLUMNS}
    sources = {part: src for part, src in sources.items() if paths.exists(src)}
    if "train" not in sources:
        zips = sorted(p.name for p in Path(data_dir).glob("*.zip")) if Path(data_dir).is_dir() else []
        found = f" (the folder holds {zips}: unzip them there)" if zips else ""
        raise DataError(f"train.csv not found in the folder{found}", path=data_dir, fix=DOWNLOAD_HELP)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    partial = {part: work / (WORK_FILES[part] + ".partial") for part in sources}
    notes: list[str] = []
    try:
        parts = {part: _write_part(src, partial[part], part, sample_fraction=sample_fraction, seed=seed,
                                   chunk_rows=chunk_rows) for part, src in sources.items()}
        complete = parts["train"]["rows_read"] == FULL_TRAIN_ROWS
        if not complete:
            notes.append(f"train.csv has {parts['train']['rows_read']:,} rows; the complete Kaggle train.csv "
                         f"has {FULL_TRAIN_ROWS:,} (a sample, or a cut-short download)")
            if strict:
                raise DataError(notes[-1], path=sources["train"],
                                fix=f"download train.csv again; {DOWNLOAD_HELP}")
    except BaseException:
        for p in partial.values():
            p.unlink(missing_ok=True)
        raise
    if "test" not in sources:
        notes.append("no test.csv: only needed to score the competition's unlabeled searches")
    for part, tmp in partial.items():
        os.replace(tmp, work / WORK_FILES[part])
    manifest = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data_dir": data_dir,
                "work_dir": str(work), "sample_fraction": sample_fraction, "seed": seed,
                "complete_train": complete, "parts": parts, "notes": notes,
                "metric": "NDCG@38 per search, gain booking = 5, click = 1, else 0"}
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfrs_recsys.data.expedia setup --data DIR [--work-dir runs/expedia]``.

    Args:
      argv: The arguments (default: the command line's).

    Returns:
      The exit status: 0, or 2 after an error the user can fix.
    """
    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.data.expedia",
                                     description="The Kaggle Expedia hotel-search benchmark (ICDM 2013).")
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="validate the downloaded CSV files and write them as Parquet")
    setup.add_argument("--data", default="", help="folder holding the unzipped train.csv (and test.csv)")
    setup.add_argument("--work-dir", default="runs/expedia", help="where the Parquet files go (%(default)s)")
    setup.add_argument("--strict", action="store_true", help="require the full train.csv (9,917,530 rows)")
    setup.add_argument("--sample-searches", type=float, default=1.0,
                       help="keep this share of the searches, e.g. 0.1 (default: all)")
    setup.add_argument("--seed", type=int, default=0, help="seed of --sample-searches")
    args = parser.parse_args(argv)
    if not args.data:
        print(f"error: no data folder given (make benchmark-setup DATA=<folder>). To get the data, "
              f"{DOWNLOAD_HELP}.", file=sys.stderr)
        return 2
    try:
        manifest = setup_benchmark(args.data, args.work_dir, strict=args.strict,
                                   sample_fraction=args.sample_searches, seed=args.seed)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Expedia benchmark data validated and written to {args.work_dir}:")
    for part, s in manifest["parts"].items():
        line = f"  {part}: {s['rows']:,} rows, {s['searches']:,} searches"
        if part == "train":
            line += (f", {s['clicks']:,} clicks, {s['bookings']:,} bookings "
                     f"({s['searches_with_booking']:,} searches)")
        if s["rows"] != s["rows_read"]:
            line += f" (sampled from {s['rows_read']:,} rows)"
        print(line + f" -> {paths.join(manifest['work_dir'], WORK_FILES[part])}")
    for note in manifest["notes"]:
        print(f"  note: {note}")
    print(f"next: make benchmark-train BENCH_DIR={args.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
