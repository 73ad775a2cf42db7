"""The names a serving signature gives a table's columns: its inputs, and TensorFlow's op names, allow ASCII
letters, digits and ``_`` only, so ``âge`` is served as ``age`` and ``Größe`` as ``Grosse``."""
from __future__ import annotations

import functools
import re
import unicodedata

# Latin letters that Unicode does not decompose into an ASCII letter and a mark, as they are transliterated
_LATIN_LETTERS = {"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                  "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i"}


@functools.lru_cache(maxsize=4096)  # the recall -> rank pipeline asks for its columns' at every request
def signature_name(name: str) -> str:
    """A column's name as a serving signature's input (and a TensorFlow op) can be named: letters
    transliterated to ASCII (``âge`` -> ``age``, ``Größe`` -> ``Grosse``, ``bøn`` -> ``bon``), another letter
    or digit as its code point (``年`` -> ``u5e74``), anything else ``_`` (``position dans la page`` ->
    ``position_dans_la_page``), and ``f_`` before a name that would not start with a letter. A valid name
    is its own."""
    def ascii_of(char: str) -> str:
        if char in _LATIN_LETTERS:
            return _LATIN_LETTERS[char]
        plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
        return plain or (f"u{ord(char):x}" if char.isalnum() else "_")

    text = re.sub(r"[^A-Za-z0-9_]", "_", "".join(ascii_of(c) if ord(c) > 127 else c for c in str(name)))
    return text if text[:1].isascii() and text[:1].isalpha() else f"f_{text}"
