"""The rows a streamed run leaves out as it reads: a label that is not 0 or 1, an impression of no item.

A streamed run checks its files as it reads them, not before (they may be larger than memory): each
record batch is screened, the bad rows left out and counted per reason with the first of each, by file
and line. The training stops at the first (``--skip-bad-rows`` is off), or reports the count at its end.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tfrs_recsys.data.errors import DataError
from tfrs_recsys.data.tabular import binary_label, first_data_line


class BadRows:
    """Counts of the rows left out per reason, and the first of each (``file:line``, value); shared by
    the threads that read."""

    def __init__(self):
        self.rows: dict[str, set[tuple[str, int]]] = {}  # reason -> (file, line): each row once, every epoch
        self.first: dict[str, tuple[str, int, object]] = {}
        self.said = 0  # the count last reported
        self._lock = threading.Lock()

    @property
    def counts(self) -> Counter:
        """Rows left out per reason."""
        return Counter({reason: len(rows) for reason, rows in self.rows.items()})

    @property
    def total(self) -> int:
        """Rows left out so far."""
        return sum(self.counts.values())

    def screen(self, batch: pa.RecordBatch, table, file: str, first_row: int,
               among: np.ndarray, malformed: Sequence[int] = ()) -> np.ndarray:
        """Which of the ``among`` rows of ``batch`` (rows ``first_row``... of ``file``) to keep; the others
        are counted.

        Args:
          batch: The rows, as read.
          table: Their :class:`~tfrs_recsys.data.streaming.FileTable` (its labels and item column).
          file: The shard.
          first_row: The batch's first row in the shard (0-based).
          among: The rows wanted (the part's); only they are screened.
          malformed: The file's lines its reader left out so far (:meth:`malformed_lines`), in order.

        Returns:
          A boolean mask.
        """
        checks = [(f"column '{name}': label must be 0 or 1", name, ~np.isin(value, (0.0, 1.0)))
                  for name, value in labels_of(batch, table.labels).items()]
        if (item := table.item_column) in batch.schema.names:
            column = batch.column(item)
            empty = pc.is_null(column)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):  # in Arrow: fast
                empty = pc.or_kleene(empty, pc.equal(pc.utf8_trim_whitespace(column), ""))
            checks.append((f"column '{item}': empty item id", item, empty.to_numpy(zero_copy_only=False)))
        keep, header = among.copy(), first_data_line(file)
        for reason, column, bad in checks:
            if (bad := bad & among).any():
                lines = np.flatnonzero(bad) + first_row + header  # a text file's line 1 is its header
                if len(malformed):  # the n-th line read is n plus the left-out lines before it
                    skipped = np.asarray(malformed) - np.arange(len(malformed))
                    lines = lines + np.searchsorted(skipped, lines, side="right")
                with self._lock:
                    self.rows.setdefault(reason, set()).update((file, int(line)) for line in lines)
                    row = int(np.flatnonzero(bad)[0])
                    self.first.setdefault(reason, (file, int(lines[0]), batch.column(column)[row].as_py()))
                keep &= ~bad
        return keep

    def malformed_lines(self, file: str) -> tuple[list[int], Callable]:
        """A text reader's ``invalid_row_handler`` for ``file``: a line whose fields are not the header's
        count is left out and counted here; and the list of those lines (1-based, the header line 1)."""
        lines: list[int] = []

        def handler(row) -> str:
            reason = f"line: {row.expected_columns} fields expected, as the header has"
            with self._lock:
                self.rows.setdefault(reason, set()).add((file, row.number))
                self.first.setdefault(reason, (file, row.number, row.text[:200]))
            lines.append(row.number)
            return "skip"
        return lines, handler

    def error(self) -> DataError:
        """The first bad row, as the error that stops a run without ``--skip-bad-rows``."""
        reason, (file, line, value) = next(iter(self.first.items()))
        column = reason.split("'")[1] if "'" in reason else None
        return DataError(f"{reason.split(': ', 1)[1]}, found {value!r} ({self.counts[reason]} such rows read "
                         f"so far)", path=file, line=line, column=column,
                         fix="fix the rows (the separator is read from the header line), or pass "
                             "--skip-bad-rows to leave such rows out and count them")

    def summary(self) -> str:
        """The rows left out per reason, with the first of each."""
        return "; ".join(f"{n} x {reason} (first: {self.first[reason][0]}:{self.first[reason][1]}, "
                         f"{self.first[reason][2]!r})" for reason, n in self.counts.most_common())


def labels_of(batch: pa.RecordBatch, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """The label columns as float32 (missing or not a number: NaN; yes/no as ``binary_label`` reads them)."""
    out = {}
    for name in labels:
        column = batch.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:  # digits, as a CSV's labels read as text mostly are: in Arrow
                column = pc.cast(column, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                numbers = pd.to_numeric(binary_label(column.to_pandas()), errors="coerce")
                column = pa.array(numbers.to_numpy("float64", na_value=np.nan), pa.float64())
        out[name] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
    return out
