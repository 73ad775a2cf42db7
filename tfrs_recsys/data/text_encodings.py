"""The encoding a text file is read in: UTF-8, Windows-1252 for Western exports that are not UTF-8, and for
others (Shift-JIS, GBK, Korean, UTF-16) the encoding to name in the error's fix.
"""
from __future__ import annotations

import collections
import functools
import logging
import unicodedata

from tfrs_recsys.data.compressed import open_text
from tfrs_recsys.data.errors import DataError

logger = logging.getLogger(__name__)
FALLBACK_ENCODING = "cp1252"  # Windows' and Excel's CSV exports of Western languages
BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark, which Excel writes
# Encodings a file that is neither UTF-8 nor cp1252 is tried in, to name in the fix (a guess: they decode
# much of each other's text): Japanese (Excel's Shift-JIS), Chinese, Korean; UTF-16 where its mark says so.
OTHER_ENCODINGS = ("cp932", "gbk", "cp949")
_READS_AS: dict[str, tuple[str, ...]] = {}  # path -> those of OTHER_ENCODINGS its text reads in


def text_encoding(data: bytes, path: str, *, whole: bool = True) -> str:
    """The encoding to read a text file (or its first block) in: UTF-8, or :data:`FALLBACK_ENCODING` with a
    warning for text that is not UTF-8 (not 10 good characters of several bytes to one broken) and reads as
    cp1252.

    Text that is UTF-8 but for a few broken bytes stays UTF-8, so that its rows say where they are.

    Args:
      data: The bytes.
      path: The file, for the warning.
      whole: Whether ``data`` is the whole file (else its first block, which may end inside a character).

    Returns:
      ``"utf-8"`` or ``"cp1252"``.
    """
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        first = exc.start
        if not whole and exc.reason == "unexpected end of data":  # the block ends inside a character
            return "utf-8"
    text = data.decode("utf-8", errors="replace")
    broken = text.count("\ufffd")
    if sum(ord(c) > 127 for c in text) - broken > 10 * broken:  # UTF-8 but for a few broken bytes
        return "utf-8"
    if others := _east_asian(data):  # not read, but named in the errors' fix
        _READS_AS[path] = others
        return "utf-8"
    try:
        data.decode(FALLBACK_ENCODING)
    except UnicodeDecodeError:
        return "utf-8"
    logger.warning("%s is not UTF-8 (byte 0x%02x on line %d): read as Windows-1252 (cp1252), the encoding of "
                   "Excel's and Windows' CSV exports; if it is in another, re-save it as UTF-8", path,
                   data[first], data.count(b"\n", 0, first) + 1)
    return FALLBACK_ENCODING


SNIFFED_BYTES = 32 << 20  # at least the first block a streaming reader infers its column types from


def _east_asian(data: bytes) -> tuple[str, ...]:
    """Those of :data:`OTHER_ENCODINGS` (or UTF-16, by its mark) that decode ``data`` into text whose
    characters beyond ASCII are nearly all wide East Asian ones (kanji, kana, hanzi, hangul), most of them
    common ones (:func:`_common_pair`). GBK and Korean text both read in either of their encodings."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 decodes most bytes: only with its mark
        return ("utf-16",)
    if _western(data):  # its accented letters and the letters beside them also read as East Asian text
        return ()
    found = []
    for other in OTHER_ENCODINGS:
        try:
            wide = collections.Counter(c for c in data.decode(other) if ord(c) > 127)
        except UnicodeDecodeError:
            continue
        share = sum(wide.values())
        if (sum(n for c, n in wide.items() if unicodedata.east_asian_width(c) in "WF") >= 0.9 * share
                and sum(n for c, n in wide.items() if _common_pair(c.encode(other), other)) >= 0.5 * share):
            found.append(other)
    return tuple(found)


def _western(data: bytes) -> bool:
    """Whether ``data`` reads as Windows-1252 text of a Western language: half or more of its characters
    beyond ASCII are letters beside an ASCII letter (``ç`` of ``Ações``, ``ß`` of ``Größe``) or marks
    inside a word (``’`` of ``Don’t``). East Asian text read so is symbols and letters beside them."""
    try:
        text = data.decode(FALLBACK_ENCODING)
    except UnicodeDecodeError:
        return False
    beyond = [i for i, c in enumerate(text) if ord(c) > 127][:100_000]  # enough to judge by

    def in_word(i: int) -> bool:
        before, after = text[i - 1:i] or " ", text[i + 1:i + 2] or " "
        if text[i].isalpha():
            return any(c.isascii() and c.isalpha() for c in before + after)
        return before.isalpha() and after.isalpha()

    return sum(map(in_word, beyond)) >= 0.5 * len(beyond)


def _common_pair(pair: bytes, encoding: str) -> bool:
    """Whether a character's bytes lie where ``encoding`` puts its everyday characters: Shift-JIS's kana and
    first-level kanji lead with 0x81-0x9f; GB2312's hanzi and KS X 1001's hangul are two bytes of 0xa1 or
    more. Western text in Windows-1252 decodes in these encodings too, an accented letter and the ASCII
    letter after it read as one rare character (``â`` + ``g`` of ``âge``)."""
    if len(pair) != 2:
        return False
    if encoding == "cp932":
        return 0x81 <= pair[0] <= 0x9F
    return pair[0] >= 0xA1 and pair[1] >= 0xA1


@functools.lru_cache(maxsize=1024)
def file_encoding(path: str) -> str:
    """:func:`text_encoding` of a file's first :data:`SNIFFED_BYTES` (warned once a file), for readers that
    stream it."""
    with open_text(path) as fh:
        block = fh.read(SNIFFED_BYTES)
        return text_encoding(block, path, whole=len(block) < SNIFFED_BYTES or not fh.read(1))


def decode(raw: bytes, encoding: str, path: str | None = None, line: int | None = None) -> str:
    """``raw`` decoded, or a :class:`DataError` naming the byte, the file and line, and in its fix the
    encodings the file's text reads in (:func:`text_encoding`), if any."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        guesses = " or ".join(f"{guess} (iconv -f {guess.upper()} -t UTF-8 in > out)"
                              for guess in _READS_AS.get(str(path), ()))
        fix = f"re-save it as UTF-8; it may be {guesses}" if guesses else f"re-save the file as {encoding}"
        raise DataError(f"not valid {encoding}: byte 0x{raw[exc.start]:02x} at character {exc.start + 1}",
                        path=path, line=line, fix=fix) from None
