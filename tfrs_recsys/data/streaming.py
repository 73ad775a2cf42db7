"""Labeled tables read as a stream of file shards: for logs larger than memory.

Nothing here holds the whole log. A :class:`FileTable` is the list of shards (Parquet, JSON Lines, or CSV or
TSV with a header) and their row count (Parquet metadata; text files count their lines); rows are read in
Arrow record batches of :data:`CHUNK_ROWS` (``pyarrow.parquet.ParquetFile.iter_batches``,
``pyarrow.csv.open_csv``, :func:`~tfrs_recsys.data.json_lines.batches`), with the column types of the first
shard fixed for every shard.

* **Split** (:func:`split_parts`): every row gets a part (train / validation / test, 80 / 10 / 10) from a
  seeded hash of its session id, so a session never straddles parts, or without a session column of its
  shard and row number. The same row lands in the same part however the files are chunked or sharded.
  Split by time (:func:`~tfrs_recsys.data.stream_parts.cut_in_time`), a row's time against the two times
  below which 80% and 90% of the rows fall, read in one pass over the time column before training.
* **Sample** (:func:`sample_rows`): schema inference, vocabularies and normalization statistics come from
  a seeded sample of at most ``rows`` training rows (Parquet: whole row groups in a seeded order; text:
  the first blocks of every shard, shards in a seeded order), subsampled uniformly.
* **Training input** (:func:`stream_dataset`): ``tf.data`` interleaves the shards (in a new seeded order
  every epoch; one reader thread, four shards round robin), a generator per shard parses record batches,
  drops the other parts' rows, shuffles each batch's rows and yields raw feature batches; the model's
  preprocessor encodes them in the graph. The shuffle is thus: shard order, rows within a record batch,
  and a buffer of :data:`SHUFFLE_BATCHES` batches. Nothing is cached. With several workers,
  :func:`~tfrs_recsys.data.stream_parts.worker_files` gives each its own shards before anything is read.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import tensorflow as tf

from tfrs_recsys import paths
from tfrs_recsys.data import json_lines
from tfrs_recsys.data.bad_rows import BadRows, labels_of
from tfrs_recsys.data.compressed import EXPANSION, file_format, is_compressed, open_text
from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.headers import SAMPLE_ROWS, missing_column
from tfrs_recsys.data.packing import pack, packed_signature, unpack
from tfrs_recsys.data.pipelines import without_autotune
from tfrs_recsys.data.quoting import csv_quoted
from tfrs_recsys.data.readers import plain_batch, plain_columns
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.data.tabular import (
    PARQUET_SUFFIXES,
    declared_text,
    parse_column_types,
    table_files,
    text_separator,
)
from tfrs_recsys.data.text_encodings import file_encoding
from tfrs_recsys.data.times import epoch_seconds

CHUNK_ROWS = 65_536  # rows parsed at once: bounds the reader's memory
SHUFFLE_BATCHES = 16
FRACTIONS = (0.8, 0.1, 0.1)
PARTS = ("train", "validation", "test")
_GOLDEN = 0x9E3779B97F4A7C15


@dataclasses.dataclass
class FileTable:
    """A labeled table of file shards, read a record batch at a time.

    Attributes:
      files: The shards, sorted.
      labels: The label columns.
      schema: The Arrow schema of the first shard; every shard is read with its types.
      rows: Rows of every shard together.
      bytes: Their size on disk.
      session_column: The column grouping a session's rows (the split keeps sessions whole).
      user_column: The user id column, if any.
      item_column: The item id column, if any.
      joins: Tables whose columns every record batch read gets (``--items``, ``--users``:
        :class:`~tfrs_recsys.data.entities.EntityJoin`).
      bad_rows: The rows reading left out (:class:`BadRows`).
      failure: The error that stopped a training input's reader: raised inside a ``tf.data`` graph, it
        reaches the caller as an ``InvalidArgumentError``, which the caller replaces with it.
      absent: The spec's features a shard was read without (warned of once).
      split_sessions: Whether the split keeps a session's rows together (``--split random``: no).
      time_column: The column a split by time reads (:func:`~tfrs_recsys.data.stream_parts.cut_in_time`).
      time_cuts: The times (seconds) that start validation and test, in a split by time.
      day_first: Whether the time column's date text is written day first.
      counted: Each shard's rows, once counted.
    """

    files: list[str]
    labels: list[str]
    schema: pa.Schema
    rows: int
    bytes: int
    session_column: str | None = None
    user_column: str | None = None
    item_column: str | None = None
    joins: list = dataclasses.field(default_factory=list)
    bad_rows: BadRows = dataclasses.field(default_factory=lambda: BadRows())
    failure: DataError | None = None
    absent: set = dataclasses.field(default_factory=set)
    split_sessions: bool = True
    time_column: str | None = None
    time_cuts: tuple[float, float] | None = None
    day_first: bool | None = None
    counted: dict = dataclasses.field(default_factory=dict)

    def rows_of(self, file: str) -> int:
        """Rows of one shard (Parquet metadata; a JSON Lines file's objects; a text file's lines, header
        excluded)."""
        if file not in self.counted:
            self.counted[file] = _rows_in(file)
        return self.counted[file]


def _rows_in(file: str) -> int:
    if file_format(file) in json_lines.JSON_SUFFIXES:
        return json_lines.count_rows(file)
    if file_format(file) not in PARQUET_SUFFIXES:
        return _count_lines(file) - 1
    with paths.open_file(file) as fh:
        return pq.ParquetFile(fh).metadata.num_rows


def _count_lines(file: str) -> int:
    lines, last = 0, b"\n"
    with open_text(file) as fh:
        while block := fh.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def total_bytes(path: str) -> int:
    """The size of the files a table path names (a file, glob or folder); a compressed file's counted at
    :data:`~tfrs_recsys.data.compressed.EXPANSION` times its own (an estimate of its text's)."""
    return sum(paths.size(f) * (EXPANSION if is_compressed(f) else 1) for f in table_files(path, "--data"))


def open_table(path: str, *, labels: Sequence[str], session_column: str | None = None,
               user_column: str | None = None, item_column: str | None = None,
               column_types: Sequence[str] = ()) -> FileTable:
    """The shards of ``path`` (:func:`~tfrs_recsys.data.tabular.table_files`), checked for the named columns.

    Args:
      path: A file, glob or folder of Parquet, CSV or TSV files with a header.
      labels: The label columns.
      session_column: The session column, if any.
      user_column: The user id column, if any.
      item_column: The item id column, if any.
      column_types: ``--column-types`` entries: a text file's reader keeps those not numeric as text.

    Returns:
      The table.

    Raises:
      DataError: a named column is missing from the first shard, naming the flag to change.
    """
    files = table_files(path, "--data")
    if len({_family(f) for f in files}) > 1:
        raise DataError("the shards mix formats (Parquet, JSON Lines, CSV or TSV)", path=str(path),
                        fix="point --data at one format, e.g. a glob like shards/*.parquet")
    firsts = (batch for file in files for batch in record_batches(file, None, CHUNK_ROWS, lambda row: "skip"))
    first = next((batch for batch in firsts if batch.num_rows), None)  # an empty part file has no types
    if first is None:
        raise DataError("no rows in any shard", path=str(path),
                        fix="check the files, or point --data elsewhere")
    schema = first.schema
    texts = [user_column, item_column, *declared_text(column_types)]
    # a column empty in the first rows has no type yet: text takes any value it holds later
    texts += [f.name for f in schema if pa.types.is_null(f.type)]
    if _family(files[0]) == "text":
        texts += labels  # read as text, a label's stray word is a bad row rather than a parse error
    for column in (c for c in texts if c in schema.names):
        schema = schema.set(schema.get_field_index(column), pa.field(column, pa.string()))
    declared = parse_column_types(column_types)
    # whole numbers in the first rows, decimals later: a declared numeric column reads all as decimals
    for column in (c for c, kind in declared.items() if kind == "numeric" and c in schema.names):
        schema = schema.set(schema.get_field_index(column), pa.field(column, pa.float64()))
    flags = {"--label-columns": list(labels), "--session-column": [session_column],
             "--user-column": [user_column], "--item-column": [item_column]}
    head = list(zip(*(c.to_pylist() for c in first.slice(0, SAMPLE_ROWS).columns)))
    for flag, columns in flags.items():
        for column in (c for c in columns if c and c not in schema.names):
            text = _family(files[0]) == "text"
            raise missing_column("--data", column, schema.names, flag, path=files[0],
                                 rows=head if text else (), sep=text_separator(files[0]) if text else None)
    table = FileTable(files, list(labels), schema, 0, sum(paths.size(f) for f in files), session_column,
                      user_column, item_column)
    table.rows = sum(table.rows_of(f) for f in files)
    return table


def _family(file: str) -> str:
    """A shard's format: ``parquet``, ``json`` or ``text``; every shard of a table has one."""
    suffix = file_format(file)
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "json" if suffix in json_lines.JSON_SUFFIXES else "text"


def record_batches(file: str, schema: pa.Schema | None, rows: int,
             malformed: Callable | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of one shard; ``schema`` fixes a text file's column types; ``malformed`` takes a
    text line of another field count than the header's (:meth:`BadRows.malformed_lines`)."""
    if file_format(file) in PARQUET_SUFFIXES:
        with paths.open_file(file) as fh:
            yield from (plain_batch(b, file) for b in pq.ParquetFile(fh).iter_batches(batch_size=rows))
        return
    if file_format(file) in json_lines.JSON_SUFFIXES:
        yield from json_lines.batches(file, schema, rows)
        return
    # one thread numbers bad lines
    reading = pa_csv.ReadOptions(block_size=rows * 400, use_threads=False, encoding=file_encoding(file))
    sep = text_separator(file)
    parsing = pa_csv.ParseOptions(delimiter=sep, quote_char='"' if csv_quoted(file, sep) else False,
                                  invalid_row_handler=malformed)
    types = {f.name: f.type for f in schema} if schema is not None else None
    with open_text(file) as fh:
        try:  # the reader parses its first block on opening: a type error may come from either
            yield from pa_csv.open_csv(fh, read_options=reading, parse_options=parsing,
                                       convert_options=pa_csv.ConvertOptions(column_types=types))
        except pa.ArrowInvalid as exc:
            undecodable = "invalid UTF8" in str(exc)  # past the bytes that set the encoding
            raise DataError(f"cannot parse: {exc}", path=file,
                            fix="re-save it as UTF-8 (its first 32 MiB read as UTF-8)" if undecodable else
                            "check that every shard has the first shard's columns and value types") from None


def _uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded uniform [0, 1) number per uint64 key (splitmix64's finalizer)."""
    z = keys.astype(np.uint64) + np.uint64(seed * _GOLDEN % 2 ** 64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((z ^ (z >> np.uint64(31))) >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


def split_parts(batch: pa.RecordBatch, table: FileTable, file_index: int, first_row: int,
                seed: int) -> np.ndarray:
    """Each row's part (0 train, 1 validation, 2 test; module docstring).

    Args:
      batch: Rows of shard ``file_index``, starting at its row ``first_row``.
      table: Their table.
      file_index: The shard's place in ``table.files``.
      first_row: The batch's first row in the shard.
      seed: The split's seed.

    Returns:
      int8 parts.
    """
    if table.time_cuts is not None:
        seconds = seconds_of(batch.column(table.time_column), table)
        return (seconds >= table.time_cuts[0]).astype(np.int8) + (seconds >= table.time_cuts[1])
    if table.session_column and table.split_sessions:
        column = batch.column(table.session_column)
        if pa.types.is_integer(column.type):
            keys = column.fill_null(-1).to_numpy().astype(np.int64).view(np.uint64)
        else:
            keys = pd.util.hash_array(column.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False))
    else:
        keys = (np.uint64(file_index) << np.uint64(40)) + np.arange(first_row, first_row + batch.num_rows,
                                                                  dtype=np.uint64)
    u = _uniform(keys, seed)
    return (u >= FRACTIONS[0]).astype(np.int8) + (u >= FRACTIONS[0] + FRACTIONS[1])


def seconds_of(column, table: FileTable) -> np.ndarray:
    """A batch's times as seconds since 1970, as :func:`~tfrs_recsys.data.times.epoch_seconds` reads them."""
    return epoch_seconds(column.to_pandas(), table.time_column, dates_day_first=table.day_first)


def read_part(table: FileTable, files: Sequence[str], part: int, seed: int, *,
              row_filter: Callable[[pa.RecordBatch], np.ndarray] | None = None,
              limit: int | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of ``part`` in ``files`` (a subset of ``table.files``), a record batch at a time.

    Args:
      table: The table.
      files: The shards to read, in this order.
      part: 0 train, 1 validation, 2 test.
      seed: The split's seed.
      row_filter: Keeps the rows where it is True (e.g. clicked rows), optional.
      limit: Stop after this many rows.

    Yields:
      Record batches of the part's rows.
    """
    left = math.inf if limit is None else limit
    for file in files:
        offset, (malformed, handler) = 0, table.bad_rows.malformed_lines(file)
        for batch in record_batches(file, table.schema, CHUNK_ROWS, handler):
            keep = split_parts(batch, table, table.files.index(file), offset, seed) == part
            offset += batch.num_rows
            if row_filter is not None:
                keep &= row_filter(batch)
            keep = table.bad_rows.screen(batch, table, file, offset - batch.num_rows, keep, malformed)
            batch = _joined(table, batch.filter(pa.array(keep)))
            if batch.num_rows:
                yield batch.slice(0, int(min(left, batch.num_rows)))
                left -= batch.num_rows
            if left <= 0:
                return


def _joined(table: FileTable, rows):
    for join in table.joins:
        rows = join.batch(rows)
    return rows


def sample_rows(table: FileTable, rows: int, seed: int) -> pd.DataFrame:
    """A seeded sample of at most ``rows`` training rows (module docstring), as a frame.

    Args:
      table: The table.
      rows: The most rows.
      seed: The split's and the sample's seed.

    Returns:
      The rows.
    """
    rng = np.random.default_rng(seed)
    wanted = 2 * rows  # read twice the rows wanted, then subsample uniformly
    chunks, sources, have = [], [], 0
    if file_format(table.files[0]) in PARQUET_SUFFIXES:
        groups = []
        for index, file in enumerate(table.files):
            with paths.open_file(file) as fh:
                meta = pq.ParquetFile(fh).metadata
            starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
            groups += [(index, g, int(starts[g])) for g in range(meta.num_row_groups)]
        for index, group, start in (groups[i] for i in rng.permutation(len(groups))):
            with paths.open_file(table.files[index]) as fh:
                batch = plain_columns(pq.ParquetFile(fh).read_row_group(group), table.files[index])
            batch = _joined(table, batch.filter(pa.array(split_parts(batch, table, index, start, seed) == 0)))
            chunks.append(batch)
            sources.append(table.files[index])
            have += batch.num_rows
            if have >= wanted:
                break
    else:
        per_file = math.ceil(wanted / len(table.files))
        for index in rng.permutation(len(table.files)):
            read = list(read_part(table, [table.files[index]], 0, seed, limit=per_file))
            chunks, sources = chunks + read, sources + [table.files[index]] * len(read)
    if not chunks:
        raise DataError("no training rows in the data", path=table.files[0], fix="check the files")
    # shards written apart may differ in width (int32 / int64), nullness or an extra index column
    read = pa.Table.from_batches([chunks[0]]) if isinstance(chunks[0], pa.RecordBatch) else chunks[0]
    for i, chunk in enumerate(chunks[1:], 1):  # one at a time, to name the shard that differs
        try:
            read = pa.concat_tables([read, pa.Table.from_batches([chunk]) if isinstance(chunk, pa.RecordBatch)
                                     else chunk], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            before = ", ".join(dict.fromkeys(paths.basename(f) for f in sources[:i]))
            raise DataError(f"its columns and those of {before} (read before it) cannot be unified; one "
                            f"side differs: {exc}", path=sources[i],
                            fix="write every shard with the same columns and types") from None
    # Subsampled in Arrow, in a random order (the spec's distinct counts read its halves): only the sample
    # becomes Python objects.
    sample = read.take(pa.array(rng.permutation(read.num_rows)[:rows]))
    return sample.to_pandas().assign(**labels_of(sample, table.labels))


def stream_dataset(table: FileTable, spec: FeatureSpec, files: Sequence[str], *, batch_size: int, seed: int,
                   part: int = 0, shuffle: bool = True, repeat: bool = True,
                   row_filter: Callable[[pa.RecordBatch], np.ndarray] | None = None,
                   encode: Callable | None = None) -> tf.data.Dataset:
    """``(features, labels)`` batches of ``part``'s rows of ``files``, streamed (module docstring).

    Args:
      table: The table.
      spec: The feature spec (features and labels).
      files: The shards to read (this worker's).
      batch_size: Rows per batch.
      seed: The split's and the shuffle's seed.
      part: 0 train, 1 validation, 2 test.
      shuffle: Shuffle the shard order every epoch, rows in a record batch, and batches in a buffer.
      repeat: Repeat endlessly.
      row_filter: Keeps the rows where it is True, optional.
      encode: Maps a batch's raw features in the graph (the preprocessor; no AutoGraph), optional.

    Returns:
      The dataset.
    """
    labels = list(spec.labels)

    def generate(file: bytes, draw: int):
        rng = np.random.default_rng([seed, int(draw)])
        try:
            for batch in read_part(table, [file.decode()], part, seed, row_filter=row_filter):
                if shuffle:
                    batch = batch.take(pa.array(rng.permutation(batch.num_rows)))
                yield pack(batch, spec, table.absent), labels_of(batch, labels)
        except Exception as error:  # a corrupt shard raises Arrow's or the OS's errors
            table.failure = error if isinstance(error, DataError) else DataError(
                f"cannot read it ({type(error).__name__}: {error})", path=file.decode(),
                fix="check the file, or move it out of --data")
            raise

    signature = (packed_signature(spec), {name: tf.TensorSpec([None], tf.float32) for name in labels})
    names = tf.data.Dataset.from_tensor_slices(list(files))
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    sources = tf.data.Dataset.zip((names, draws))
    if repeat:
        sources = sources.repeat()
    # One reader thread, round robin over 4 shards: a parallel interleave buffers whole record batches per
    # shard (gigabytes at Criteo's width), and one reader already outpaces a training step several times.
    ds = sources.interleave(
        lambda file, draw: tf.data.Dataset.from_generator(generate, output_signature=signature,
                                                          args=(file, draw)),
        cycle_length=min(len(files), 4), block_length=1)
    plain = tf.autograph.experimental.do_not_convert  # no tensor branches: converting costs more than tracing
    ds = ds.map(plain(lambda x, y: (unpack(x, spec), y)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.rebatch(batch_size)
    if encode is not None:
        ds = ds.map(plain(lambda x, y: (encode(x), y)), num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(SHUFFLE_BATCHES, seed=seed)
    options = tf.data.Options()
    # Each worker already reads only its own shards: tf.data must not shard them again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return without_autotune(ds.with_options(options).prefetch(tf.data.AUTOTUNE))
