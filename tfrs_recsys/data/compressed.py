"""Compressed text files: ``events.csv.gz`` reads as ``events.csv``, decompressed as it is read.

Logs are often exported compressed. A CSV, TSV or JSON Lines file ending in ``.gz`` (gzip) or ``.bz2``
(bzip2) is read like the file without that suffix, in memory or streamed one block at a time; its format is
the suffix before (``.tsv.gz`` is TSV). Parquet compresses inside the file and takes no such suffix.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import posixpath
import zlib
from typing import Iterator

from tfrs_recsys import paths
from tfrs_recsys.data.errors import DataError

CODECS = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File}
TEXT_FORMATS = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json")
# --streaming auto counts a compressed file at this multiple of its size: text logs compress 5-10 times
EXPANSION = 8


def file_format(path: str) -> str:
    """A file's format suffix, lower case: ``.csv`` for ``a.CSV`` and for ``a.csv.gz``."""
    stem, suffix = posixpath.splitext(str(path).lower())
    inner = posixpath.splitext(stem)[1]
    return inner if suffix in CODECS and inner in TEXT_FORMATS else suffix


def is_compressed(path: str) -> bool:
    """Whether ``path`` is a text file read through a decompressor (:func:`file_format`)."""
    return posixpath.splitext(str(path).lower())[1] in CODECS and file_format(path) in TEXT_FORMATS


@contextlib.contextmanager
def open_text(path: str) -> Iterator:
    """A binary file object of ``path``'s text, decompressed when it is compressed (module docstring).

    Args:
      path: A local path or a ``tf.io.gfile`` URL.

    Yields:
      The file object.

    Raises:
      DataError: The compressed bytes are damaged or cut short, naming the file.
    """
    with paths.open_file(path) as raw:
        if not is_compressed(path):
            yield raw
            return
        codec = CODECS[posixpath.splitext(str(path).lower())[1]]
        try:
            with codec(fileobj=raw) if codec is gzip.GzipFile else codec(raw) as fh:
                yield fh
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"cannot decompress it: {exc}", path=str(path),
                            fix="check the file is whole (was the copy or download cut short?) and that its "
                                "suffix names its compression (.gz for gzip, .bz2 for bzip2)") from None


def read_text_bytes(path: str) -> bytes:
    """The whole of ``path``'s text, decompressed (:func:`open_text`)."""
    if not is_compressed(path):
        return paths.read_bytes(path)
    with open_text(path) as fh:
        return fh.read()
