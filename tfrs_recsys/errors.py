"""The base of every error a user can fix: it names where the problem is and what to do."""
from __future__ import annotations


class UserError(ValueError):
    """A problem in the user's input, rendered ``path:line: column 'c': what is wrong. Fix: what to do``.

    Args:
      message: What is wrong.
      path: The file or URL concerned.
      line: The 1-based line in ``path``.
      column: The column concerned.
      fix: What the user should do.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: str | None = None, fix: str | None = None):
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.fix = fix
        where = f"{path}:{line}: " if path and line is not None else f"{path}: " if path else ""
        column_part = f"column '{column}': " if column else ""
        fix_part = f" Fix: {fix}" if fix else ""
        super().__init__(f"{where}{column_part}{message}.{fix_part}")
