"""Errors and skip reports for user data: every problem names file, line, column and fix."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tfrs_recsys.errors import UserError

logger = logging.getLogger("tfrs_recsys.data")


class DataError(UserError):
    """Bad input data: the message names file, line, column and the fix."""


@dataclass
class SkipReport:
    """Rows a loader skipped at the user's request (``skip_bad_rows``), never silently.

    Attributes:
      path: The file read.
      skipped: Rows skipped.
      total: Rows read, skipped ones included.
      examples: The first few reasons, as :class:`DataError` text.
    """

    path: str
    skipped: int = 0
    total: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, error: DataError, max_examples: int = 5) -> None:
        """Counts a skipped row; its error is kept among the first ``max_examples``."""
        self.skipped += 1
        if len(self.examples) < max_examples:
            self.examples.append(str(error))

    def log(self) -> None:
        """Warns of the skipped rows, if any, with the first reasons."""
        if self.skipped:
            logger.warning("%s: skipped %d of %d rows (skip_bad_rows=True); first: %s",
                           self.path, self.skipped, self.total, "; ".join(self.examples[:3]))
