"""Items an operator removed: never recommended, read from a file the service watches (``--exclude-items``).

The file holds one item id a line (spaces around it trimmed, as ids are everywhere); blank lines and
lines starting with ``#`` are ignored. It is read again when it changes, so an item is pulled within
seconds, and put back by deleting its line, with no retraining and no restart.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from tfrs_recsys.serving.events import MAX_ID_CHARS

logger = logging.getLogger(__name__)


def read_item_ids(path: str | os.PathLike) -> frozenset[str]:
    """The item ids of an exclusion file (module docstring).

    Args:
      path: The file.

    Returns:
      Its ids.

    Raises:
      OSError: The file cannot be read.
      UnicodeDecodeError: It is not UTF-8 text.
    """
    with open(path, encoding="utf-8") as fh:
        lines = (line.strip() for line in fh)
        ids = [line for line in lines if line and not line.startswith("#")]
    if too_long := sum(len(i) > MAX_ID_CHARS for i in ids):  # no item has such an id
        logger.warning("--exclude-items %s: %d lines over %d characters left out (no item id is that long)",
                       path, too_long, MAX_ID_CHARS)
    return frozenset(i for i in ids if len(i) <= MAX_ID_CHARS)


class ExcludedItems:
    """The ids of an exclusion file, current: calling it answers them, re-read after the file changed.

    Args:
      path: The file (read at once).
      check_seconds: The file is looked at (one ``stat``) at most this often, on a call.

    Raises:
      OSError: The file cannot be read now.
      UnicodeDecodeError: It is not UTF-8 text.
    """

    def __init__(self, path: str | os.PathLike, *, check_seconds: float = 1.0):
        self.path, self.check_seconds = os.fspath(path), check_seconds
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._ids = read_item_ids(self.path)
        self._checked = time.monotonic()

    def _stat(self) -> tuple:
        stat = os.stat(self.path)  # an editor's save-by-rename changes the inode; an append, the size
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def __call__(self) -> frozenset[str]:
        """The ids to exclude now: the file read again first if it changed since it was last looked at."""
        if time.monotonic() - self._checked < self.check_seconds or not self._lock.acquire(blocking=False):
            return self._ids  # a request never waits on another's read
        try:
            self._checked = time.monotonic()
            stamp = self._stat()
            if stamp != self._stamp:
                ids = read_item_ids(self.path)
                self._stamp, self._ids = stamp, ids
                logger.warning("--exclude-items %s read again: %d items excluded", self.path, len(ids))
        except (OSError, UnicodeDecodeError) as e:
            if self._stamp is not None:  # said once, until the file reads again
                logger.error("--exclude-items %s cannot be read (%s): the previous %d items stay excluded",
                             self.path, e, len(self._ids))
            self._stamp = None
        finally:
            self._lock.release()
        return self._ids
