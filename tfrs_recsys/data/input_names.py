"""The names a serving signature gives a table's columns: its inputs, and TensorFlow's op names, allow ASCII
letters, digits and ``_`` only, so ``âge`` is served as ``age``. The rule is fixed: a run's weights are saved
under names made by it (``vector_age``), and exports serve its inputs under them."""
from __future__ import annotations

import functools
import re
import unicodedata


@functools.lru_cache(maxsize=4096)  # the recall -> rank pipeline asks for its columns' at every request
def signature_name(name: str) -> str:
    """A column's name as a serving signature's input (and a TensorFlow op) can be named: letters
    transliterated to ASCII (``âge`` -> ``age``), another letter or digit as its code point (``年`` ->
    ``u5e74``, ``ß`` -> ``udf``), anything else ``_`` (``position dans la page`` ->
    ``position_dans_la_page``), and ``f_`` before a name that would not start with a letter. A valid name is
    its own."""
    def ascii_of(char: str) -> str:
        plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
        return plain or (f"u{ord(char):x}" if char.isalnum() else "_")

    text = re.sub(r"[^A-Za-z0-9_]", "_", "".join(ascii_of(c) if ord(c) > 127 else c for c in str(name)))
    return text if text[:1].isascii() and text[:1].isalpha() else f"f_{text}"
