"""Errors and skip reports for user data: every problem names file, line, column and fix."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from tfrs_recsys.errors import UserError

logger = logging.getLogger("tfrs_recsys.data")


class DataError(UserError):
    """Bad input data: the message names file, line, column and the fix."""


class SchemaError(DataError):
    """A feature spec is inconsistent (e.g. a label used as a feature)."""


@dataclass
class SkipReport:
    """Rows a loader skipped at the user's request (``skip_bad_rows``), never silently.

    Attributes:
      path: The file read.
      skipped: Rows skipped.
      total: Rows read, skipped ones included.
      examples: The first few reasons, as :class:`DataError` text (without the fix).
      reasons: Rows skipped per reason (the column and what was wrong with it).
    """

    path: str
    skipped: int = 0
    total: int = 0
    examples: list[str] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    _logged: int = field(default=0, init=False, repr=False)  # the count last said

    def add(self, error: DataError, max_examples: int = 5, reason: str | None = None) -> None:
        """Counts a skipped row under ``reason`` (default: its column, else a malformed row); its error is
        kept among the first ``max_examples``."""
        self.skipped += 1
        self.reasons[reason or (f"column '{error.column}'" if error.column else "malformed row")] += 1
        if len(self.examples) < max_examples:  # without its fix: the row is skipped, not to be fixed now
            self.examples.append(str(DataError(error.message, path=error.path, line=error.line,
                                               column=error.column)))

    def check_rows_left(self, rows: int) -> None:
        """Raises a :class:`DataError` when skipping left no ``rows``: a column is wrong, not a few rows."""
        if not rows and self.skipped:
            reasons = "; ".join(f"{n} x {why}" for why, n in self.reasons.most_common(3))
            raise DataError(f"every row was skipped as bad ({reasons})", path=self.path,
                            fix="fix the column named: --skip-bad-rows is for a few bad rows, not a column")

    def log(self) -> None:
        """Warns of the skipped rows, if any and not already said, with their count per reason and the
        first rows."""
        if self.skipped and self.skipped != self._logged:
            self._logged = self.skipped
            counts = "; ".join(f"{n} x {why}" for why, n in self.reasons.most_common())
            logger.warning("%s: skipped %d of %d rows (skip_bad_rows=True): %s. First: %s", self.path,
                           self.skipped, self.total, counts, "; ".join(self.examples[:3]))
