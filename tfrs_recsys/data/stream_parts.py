"""Which rows and shards each part and worker of a streamed table gets: the time cuts of a split by time, and
each worker's own shards.

* **By time** (:func:`cut_in_time`): one pass over the time column of every shard finds the times below
  which 80% and 90% of the rows fall; :func:`~tfrs_recsys.data.streaming.split_parts` then places each row
  by its time. The order of date text (day or month first) is told once, for every batch alike.
* **Workers** (:func:`worker_files`): worker ``i`` of ``N`` reads shards ``i, i+N, ...``; shards of quite
  different sizes are warned of (:func:`uneven_workers`).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tfrs_recsys import paths
from tfrs_recsys.data.compressed import file_format
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.readers import plain_batch
from tfrs_recsys.data.streaming import CHUNK_ROWS, FRACTIONS, FileTable, record_batches, seconds_of
from tfrs_recsys.data.tabular import PARQUET_SUFFIXES
from tfrs_recsys.data.times import NUMERIC_DATE, date_order_shown, day_first


def cut_in_time(table: FileTable, column: str, fractions: Sequence[float] = FRACTIONS) -> None:
    """Sets ``table`` to split by time: the times below which ``fractions[0]`` and ``fractions[0] +
    fractions[1]`` of the rows fall, from one pass over ``column`` in every shard (a Parquet file's column
    alone; at most 4,000,000 times kept, evenly spaced over the rows).

    Raises:
      DataError: a row without a time, naming its file; or too few distinct times to cut.
    """
    stride, kept = max(1, table.rows // 4_000_000), []
    table.time_column, table.day_first = column, _date_order(table, column)
    for file in table.files:
        for batch in _column_batches(file, column, table.schema):
            seconds = seconds_of(batch.column(column), table)
            if np.isnan(seconds).any():
                raise DataError(f"{int(np.isnan(seconds).sum())} row(s) without a time; a split by time "
                                "places every row by it", path=file, column=column,
                                fix="fill or drop those rows, or choose --split random or session")
            kept.append(seconds[::stride])
    ordered = np.sort(np.concatenate(kept))
    cuts = (float(ordered[int(len(ordered) * fractions[0])]),
            float(ordered[min(int(len(ordered) * sum(fractions[:2])), len(ordered) - 1)]))
    if not ordered[0] < cuts[0] < cuts[1]:
        raise DataError("the rows' times cannot be cut into train, validation and test: too many rows "
                        "share a time", column=column,
                        fix="use a finer time column, or --split random / session")
    table.time_cuts = cuts


def _date_order(table: FileTable, column: str) -> bool | None:
    """Whether ``column``'s date text is written day first, from the first batch whose dates show it (else
    as :func:`~tfrs_recsys.data.times.day_first` reads the first dates); None for times that are not text.
    Decided once, so that every batch reads its dates alike."""
    first = None
    for file in table.files:
        for batch in _column_batches(file, column, table.schema):
            values = batch.column(column).to_pandas()
            if not pd.api.types.is_string_dtype(values.dtype) or not values.str.match(NUMERIC_DATE).any():
                return None  # numbers, datetimes or ISO text: no order to tell
            if (shown := date_order_shown(values)) is not None:
                return shown
            first = values if first is None else first
    return None if first is None else day_first(first, column)


def _column_batches(file: str, column: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    if file_format(file) in PARQUET_SUFFIXES:
        with paths.open_file(file) as fh:
            parquet = pq.ParquetFile(fh)
            if column in parquet.schema_arrow.names:  # not a struct's field
                yield from (plain_batch(b, file) for b in parquet.iter_batches(CHUNK_ROWS, columns=[column]))
                return
    yield from record_batches(file, schema, CHUNK_ROWS, lambda row: "skip")


def worker_files(files: Sequence[str], index: int, workers: int) -> list[str]:
    """The shards worker ``index`` of ``workers`` reads: every ``workers``-th, from its index.

    Raises:
      DataError: fewer shards than workers (a worker would read nothing).
    """
    if len(files) < workers:
        raise DataError(f"{len(files)} file shard(s) for {workers} workers: each worker reads its own shards",
                        path=str(files[0]) if files else None,
                        fix=f"write the data as at least {workers} shards (a multiple of {workers} "
                            "balances them), or train with fewer workers")
    return list(files[index::workers])


def uneven_workers(table: FileTable, workers: int) -> str | None:
    """A warning when the workers' shards hold rows of quite different counts, else None.

    Every worker takes the same steps an epoch, so one with fewer rows reads them several times an epoch
    and one with more leaves some unread: the small shards' rows weigh more.

    Raises:
      DataError: fewer shards than workers (:func:`worker_files`).
    """
    shares = [sum(table.rows_of(f) for f in worker_files(table.files, i, workers)) for i in range(workers)]
    if max(shares) <= 1.25 * max(1, min(shares)):
        return None
    small, large = shares.index(min(shares)), shares.index(max(shares))
    return (f"the workers' shards hold {', '.join(f'{n:,}' for n in shares)} rows (worker 0 first): each "
            f"worker takes the same steps an epoch, so worker {small} reads its rows about "
            f"{max(shares) / max(1, min(shares)):.1f} times as often as worker {large}; "
            f"write the data as shards of similar size, a multiple of {workers} of them")
