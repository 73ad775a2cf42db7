"""Whether a text file's fields are CSV-quoted.

A file separated by anything but tabs (a comma, a semicolon, a pipe) follows CSV's quote rules. A
tab-separated file has no quoting (IANA text/tab-separated-values): Last.fm and MIND write
``"Weird Al" Yankovic`` as it is, and CSV rules would drop its quotes, or run an unclosed one
(``"Heroes (live``) into the next rows. Pandas and Excel write TSVs CSV-quoted, though (such a field
wrapped in quotes, its own quotes doubled): a TSV whose sample holds only such fields is read with
quoting, any other without, the whole file alike.
"""
from __future__ import annotations

import functools
import logging
import re

from tfrs_recsys import paths
from tfrs_recsys.data.compressed import open_text

logger = logging.getLogger(__name__)
SAMPLE_BYTES = 1 << 20
# A quote that opens a field, and a whole CSV-quoted field (its quotes doubled inside) up to its end.
_OPENING = re.compile(r'(?:\A|(?<=[\t\n]))"')
_QUOTED = re.compile(r'"(?:[^"]|"")*"(?=\t|\r?\n|\Z)')


def sample_quoted(text: str, *, cut: bool = False) -> tuple[bool, int | None]:
    """Whether every field of a tab-separated sample that opens with ``"`` is closed as CSV closes it.

    Args:
      text: The sample's lines.
      cut: Whether the file goes on past ``text`` (a field opened near its end may close further on).

    Returns:
      ``(quoted, line)``: quoted is True when some field is quoted and none breaks the rules; line is the
      first line with a field opening with ``"`` (the broken one where quoted is False), None if none.
    """
    pos, first, line, counted = 0, None, 1, 0
    while match := _OPENING.search(text, pos):
        line += text.count("\n", counted, match.start())  # from the last match: linear in the sample
        counted = match.start()
        first = first or line
        field = _QUOTED.match(text, match.start())
        if field is None:
            if cut and first < line and '"' not in text[match.start() + 1:]:  # it may close past the cut
                return True, first
            return False, line
        pos = field.end()
    return first is not None, first


@functools.lru_cache(maxsize=256)
def _file_quoted(file: str, size: int) -> bool:
    with open_text(file) as fh:
        data = fh.read(SAMPLE_BYTES + 1)
    cut = len(data) > SAMPLE_BYTES
    if cut:  # whole lines only
        data = data[:SAMPLE_BYTES].rpartition(b"\n")[0]
    quoted, line = sample_quoted(data.decode("utf-8", errors="replace"), cut=cut)
    if line is not None and quoted:
        logger.warning("%s: tab-separated fields open with '\"' and close CSV-style (line %d): read with "
                       "CSV quoting, as pandas and Excel write TSVs ('\"\"\"a\"\" b\"' is '\"a\" b', "
                       "'\"Heroes\"' is 'Heroes')", file, line)
    elif line is not None:
        logger.warning("%s: line %d: a field opens with '\"' but is not CSV-quoted: quotes are kept as "
                       "written in the whole file (TSV has no quoting: '\"Heroes (live' stays so)", file,
                       line)
    return quoted


def csv_quoted(file: str, sep: str) -> bool:
    """Whether a delimited text file's fields may be quoted (module docstring): always for a separator
    other than tab; for tab, as a sample of the file's first MiB says.

    Args:
      file: The file (local or a ``tf.io.gfile`` URL; compressed ones are read decompressed).
      sep: Its field separator.

    Returns:
      Whether to read it with CSV quote rules; said once per file in the log when a field opens with a quote.
    """
    if sep != "\t":
        return True
    return _file_quoted(str(file), paths.size(file))
