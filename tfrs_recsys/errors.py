"""The base of every error a user can fix: it names where the problem is and what to do."""
from __future__ import annotations


class UserError(ValueError):
    """A problem in the user's input. ``str()`` reads ``path:line: column 'c': what is wrong. Fix: what to do``.

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
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path:
            where = str(self.path)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        col = f"column '{self.column}': " if self.column else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}{col}{self.message}.{fix}"
