"""The columns of a table's shards checked against each other before they are joined into one frame.

Concatenating shards fills a column a shard lacks with missing values and joins a column stored as
numbers in one Parquet shard and as text in another into one column of mixed values: both silently.
The streamed read refuses the second (Arrow cannot unify the types) and warns of the first; the table
read into memory does the same here.
"""
from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd

from tfrs_recsys.data.errors import DataError

logger = logging.getLogger(__name__)


_KINDS = {"boolean": "booleans", "integer": "numbers", "floating": "numbers", "decimal": "numbers",
          "mixed-integer-float": "numbers", "string": "text", "empty": None}


def _kind(values: pd.Series) -> str | None:
    """What a shard's column holds, by its values (a Parquet bool column with a null reads as objects):
    booleans, numbers, text, another inferred kind, or None when it holds no value."""
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    return _KINDS.get(inferred, inferred)


def check_shards(frames: Sequence[pd.DataFrame], files: Sequence[str], parquet: Sequence[bool],
                 what: str) -> None:
    """Warns of columns some shards lack; refuses a column two Parquet shards store as different kinds.

    Args:
      frames: Each shard's rows, as read.
      files: Each shard's file.
      parquet: Whether each shard is Parquet (its types are the writer's; a text file's are read).
      what: The table in messages.

    Raises:
      DataError: A column is numbers in one Parquet shard and text (or booleans) in another.
    """
    columns = dict.fromkeys(c for frame in frames for c in frame.columns)
    for column in columns:
        lacking = [f for frame, f in zip(frames, files) if column not in frame.columns]
        if lacking:
            logger.warning("%s: column '%s' is missing from %d of %d shards (e.g. %s): read as missing there",
                           what, column, len(lacking), len(files), lacking[0])
        kinds = {}
        for frame, file, typed in zip(frames, files, parquet):
            if typed and column in frame.columns and (kind := _kind(frame[column])) is not None:
                kinds.setdefault(kind, file)
        if len(kinds) > 1:
            (first, first_file), (other, other_file) = list(kinds.items())[:2]
            raise DataError(f"{what}: {first} in {first_file} but {other} in {other_file}", path=other_file,
                            column=column,
                            fix="write every shard with the same columns and types")
