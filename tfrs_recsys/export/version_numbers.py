"""Export version numbers that one base path never hands out twice.

A model server serves the largest version under ``BASE/NAME``, so an export takes the largest number
there plus one. After a rollback (the newest version folder moved out) that number would come back, and
two different models would both be "v2" in the logs. ``BASE/NAME/.last_version`` therefore records the
largest number ever handed out or published there; a base path without it (exported before it existed)
goes on from its folders. Its name is no integer, so the model server ignores it as it ignores the
staging folders. On a local disk the file is locked while a number is reserved, so two exports at once
get two numbers; on an object store (``gs://``) it is read and written whole, unlocked.
"""
from __future__ import annotations

import contextlib
import fcntl
import os

from tfrs_recsys import paths
from tfrs_recsys.errors import UserError
from tfrs_recsys.servable_layout import MAX_VERSION, version_dirs

VERSION_MARKER = ".last_version"


class _Marker:
    """One model's marker, held (locked, where the disk can) from ``with`` to its end."""

    def __init__(self, model_dir: str | os.PathLike):
        self.path = paths.join(model_dir, VERSION_MARKER)
        self._fd: int | None = None

    def __enter__(self) -> _Marker:
        if not paths.is_remote(self.path):
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask's permissions
            except OSError as e:
                raise UserError(f"cannot open the version marker ({e.strerror})", path=str(self.path),
                                fix="let the exporting user write it (it records the largest version ever "
                                    "exported here)") from None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock

    def read(self) -> int:
        """The number recorded (0: none yet).

        Raises:
          UserError: The marker holds something else than a version number: guessing could hand out a
            number again.
        """
        if self._fd is not None:
            text = os.pread(self._fd, 64, 0).decode("ascii", errors="replace").strip()
        else:
            raw = paths.read_bytes(self.path) if paths.isfile(self.path) else b""
            text = raw[:64].decode("ascii", errors="replace").strip()
        if text and not (text.isascii() and text.isdigit() and int(text) <= MAX_VERSION):
            raise UserError(f"the version marker holds {text[:20]!r}, not a version number up to "
                            f"{MAX_VERSION}", path=str(self.path),
                            fix="write the largest version ever exported here into it (or delete it to go "
                                "on from the version folders)")
        return int(text or 0)

    def write(self, number: int) -> None:
        text = f"{number}\n"
        if self._fd is None:
            paths.write_text(self.path, text)
            return
        os.pwrite(self._fd, text.encode(), 0)
        os.ftruncate(self._fd, len(text))
        os.fsync(self._fd)


def _on_disk(model_dir: str | os.PathLike) -> list[int]:
    return list(version_dirs(model_dir)) if paths.isdir(model_dir) else []


def highest_version(*model_dirs: str | os.PathLike) -> int:
    """The largest version number published or handed out under any of ``model_dirs`` (0: none).

    Args:
      *model_dirs: Model folders (``BASE/NAME``; local or ``tf.io.gfile`` URLs); missing ones count none.

    Returns:
      The largest of their version folders and of the numbers their markers recorded.

    Raises:
      UserError: A marker holds no version number.
    """
    recorded = [_Marker(d).read() for d in model_dirs if paths.isfile(paths.join(d, VERSION_MARKER))]
    return max([0, *recorded, *(v for d in model_dirs for v in _on_disk(d))])


def reserve_version(*model_dirs: str | os.PathLike, version: int | None = None) -> int:
    """Hands out a version number for an export to every one of ``model_dirs`` (a retrieval pair shares
    one), recorded in their markers so that it is never handed out again.

    Args:
      *model_dirs: The model folders the export writes (created when missing).
      version: The number the export was told to take (recorded, so later numbers go above it); default:
        one more than :func:`highest_version`.

    Returns:
      The version number.

    Raises:
      UserError: A marker cannot be opened or holds no version number, or the number is past the largest
        the model server reads.
    """
    dirs = sorted({str(paths.makedirs(d)) for d in model_dirs})  # one lock order: no two exports deadlock
    with contextlib.ExitStack() as stack:
        markers = [stack.enter_context(_Marker(d)) for d in dirs]
        recorded = [m.read() for m in markers]
        number = (max([0, *recorded, *(v for d in dirs for v in _on_disk(d))]) + 1 if version is None
                  else int(version))
        if not 0 < number <= MAX_VERSION:  # the model server reads no larger version folder
            raise UserError(f"version {number} is not a version the model server reads (1 to {MAX_VERSION})",
                            path=dirs[0], fix="export with a smaller --version, or to another base path")
        for marker, before in zip(markers, recorded):
            if number > before:
                marker.write(number)
    return number
