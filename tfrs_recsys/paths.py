"""Local paths and ``tf.io.gfile`` URLs (gs://, s3://, hdfs://, file://, ram://) behind one small API.

Every stage reads and writes user paths through these functions. A path without a scheme
takes the standard library, exactly as before; a path with one (``scheme://...``) goes
through ``tf.io.gfile``, which TensorFlow's own savers (SavedModel, checkpoints, summaries,
TFRecords) use too. Libraries that write to a file object (pandas, NumPy, matplotlib) write
into memory and the bytes are written in one piece; libraries that need a real directory
get a local one that is copied up afterwards (:func:`staged_dir`).

Local paths come back as :class:`pathlib.Path`, URLs as ``str`` (``Path`` would fold the
``//`` of ``gs://bucket``). Failures on a URL name it and say what to do: a missing object
raises ``FileNotFoundError``; missing credentials, an unreachable host or a scheme this
TensorFlow cannot read raise :class:`RemotePathError`.
"""
from __future__ import annotations

import contextlib
import io
import json
import operator
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator, Union

from tfrs_recsys.errors import UserError

PathLike = Union[str, "os.PathLike[str]"]

# Schemes that tensorflow-io registers when it is imported (TensorFlow 2.20 itself has gs:// and ram://).
_TFIO_SCHEMES = ("s3", "az", "hdfs", "viewfs", "har", "http", "https")
_FIXES = {
    "gs": "authenticate (`gcloud auth application-default login`, or "
          "GOOGLE_APPLICATION_CREDENTIALS=key.json) and check the bucket name and network access",
    "s3": "install tensorflow-io built for this TensorFlow (`import tensorflow_io` registers s3://) and set "
          "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION (S3_ENDPOINT for MinIO and other stores)",
    "hdfs": "install tensorflow-io built for this TensorFlow and set HADOOP_HDFS_HOME / CLASSPATH",
}


class RemotePathError(UserError):
    """A URL cannot be used: no file system for its scheme, no credentials, or no network."""


def is_remote(path: PathLike) -> bool:
    """True for ``scheme://...`` (anything ``tf.io.gfile`` resolves), false for a local path."""
    return "://" in str(path)


def scheme(path: PathLike) -> str:
    """The URL scheme of ``path`` (``gs`` for ``gs://bucket``), ``""`` for a local path."""
    return str(path).split("://", 1)[0] if is_remote(path) else ""


def as_path(path: PathLike) -> Path | str:
    """A path in the form the other functions return.

    Args:
      path: A local path or a URL.

    Returns:
      ``Path`` for a local path, the URL as ``str`` (trailing ``/`` dropped) for a remote one.
    """
    text = os.fspath(path)
    if is_remote(text):
        head, rest = text.split("://", 1)
        return f"{head}://{rest.rstrip('/')}" if rest.rstrip("/") else text
    return Path(text)


def join(base: PathLike, *parts: str) -> Path | str:
    """``base / part / ...``.

    Args:
      base: A local path or a URL.
      *parts: Names to append.

    Returns:
      A ``Path`` locally, the ``/``-joined URL for a remote ``base``.

    Example:

    ```python
    paths.join("gs://bucket/", "runs", "a")  # "gs://bucket/runs/a"
    ```
    """
    if is_remote(base):
        return "/".join([str(as_path(base)), *(p.strip("/") for p in parts)])
    return Path(base, *parts)


def basename(path: PathLike) -> str:
    """The last component of ``path``."""
    return str(as_path(path)).rsplit("/", 1)[-1] if is_remote(path) else Path(path).name


def parent(path: PathLike) -> Path | str:
    """The folder holding ``path``."""
    return str(as_path(path)).rsplit("/", 1)[0] if is_remote(path) else Path(path).parent


def absolute(path: PathLike) -> str:
    """The path to record in metadata: resolved locally, the URL as is."""
    return str(as_path(path)) if is_remote(path) else str(Path(path).resolve())


# -- tf.io.gfile with errors that say what to do ----------------------------------------------------

def _translate(error: Exception, path: str) -> Exception:
    import tensorflow as tf

    kind = scheme(path)
    if isinstance(error, tf.errors.NotFoundError):
        return FileNotFoundError(2, f"no such file or directory ({error.message or 'not found'}); "
                                    f"check the URL, e.g. list its folder", path)
    if isinstance(error, tf.errors.UnimplementedError):
        fix = _FIXES.get(kind, "use a scheme tf.io.gfile supports (gs://, file://, or those tensorflow-io "
                               "registers: s3://, hdfs://, az://)")
        return RemotePathError(f"this TensorFlow has no file system for '{kind}://' ({error.message})",
                               path=path, fix=fix)
    if isinstance(error, tf.errors.AlreadyExistsError):
        return FileExistsError(17, "already exists", path)
    if isinstance(error, (tf.errors.PermissionDeniedError, tf.errors.UnauthenticatedError,
                          tf.errors.FailedPreconditionError, tf.errors.UnavailableError,
                          tf.errors.DeadlineExceededError)):
        return RemotePathError(f"cannot access the path ({type(error).__name__}: {error.message})", path=path,
                               fix=_FIXES.get(kind, "check the URL, your credentials and network access"))
    return error


_tfio_tried = False


def _call(path: PathLike, fn):
    """``fn()`` on a URL; an unknown scheme first tries to register tensorflow-io's file systems."""
    global _tfio_tried
    import tensorflow as tf

    try:
        return fn()
    except tf.errors.OpError as e:
        if isinstance(e, tf.errors.UnimplementedError) and scheme(path) in _TFIO_SCHEMES and not _tfio_tried:
            _tfio_tried = True
            try:
                import tensorflow_io  # noqa: F401  (registers s3://, hdfs://, az://, http://)
            except ImportError:
                pass
            else:
                return _call(path, fn)
        raise _translate(e, str(path)) from None


def _tf_io(name: str, path: PathLike, *args):
    """``tf.io.<name>(path, *args)`` (``gfile.exists``, ``read_file``, ...) through :func:`_call`.

    TensorFlow is imported on the first URL, never for local paths.
    """
    import tensorflow as tf

    return _call(path, lambda: operator.attrgetter(name)(tf.io)(str(path), *args))


def exists(path: PathLike) -> bool:
    """Whether ``path`` exists."""
    return bool(_tf_io("gfile.exists", path)) if is_remote(path) else Path(path).exists()


def isdir(path: PathLike) -> bool:
    """Whether ``path`` is a directory."""
    return bool(_tf_io("gfile.isdir", path)) if is_remote(path) else Path(path).is_dir()


def isfile(path: PathLike) -> bool:
    """Whether ``path`` is a file."""
    return exists(path) and not isdir(path) if is_remote(path) else Path(path).is_file()


def size(path: PathLike) -> int:
    """The bytes of the file ``path``."""
    return int(_tf_io("gfile.stat", path).length) if is_remote(path) else Path(path).stat().st_size


def makedirs(path: PathLike) -> Path | str:
    """``mkdir -p``; returns the path (``Path`` locally)."""
    if is_remote(path):
        _tf_io("gfile.makedirs", path)
    else:
        Path(path).mkdir(parents=True, exist_ok=True)
    return as_path(path)


def listdir(path: PathLike) -> list[str]:
    """Names (not paths) in a directory; object stores' trailing ``/`` on sub-folders is dropped."""
    names = _tf_io("gfile.listdir", path) if is_remote(path) else os.listdir(path)
    return sorted(name.rstrip("/") for name in names)


def open_file(path: PathLike, mode: str = "rb"):
    """A file object: ``open`` locally, ``tf.io.gfile.GFile`` for a URL."""
    return _tf_io("gfile.GFile", path, mode) if is_remote(path) else open(path, mode)


def read_bytes(path: PathLike) -> bytes:
    """The whole file."""
    return _tf_io("read_file", path).numpy() if is_remote(path) else Path(path).read_bytes()


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """The whole file, decoded."""
    return read_bytes(path).decode(encoding) if is_remote(path) else Path(path).read_text(encoding=encoding)


def write_bytes(path: PathLike, data: bytes) -> Path | str:
    """Writes a whole file.

    Args:
      path: A local path (its folder must exist) or a URL (parent folders are created: object stores
        have none).
      data: The content.

    Returns:
      ``as_path(path)``.
    """
    if is_remote(path):
        _tf_io("write_file", path, data)  # creates the parent folders
    else:
        Path(path).write_bytes(data)
    return as_path(path)


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path | str:
    """Write ``text`` (the whole file)."""
    return write_bytes(path, text.encode(encoding))


def write_text_atomic(path: PathLike, text: str) -> Path | str:
    """Write ``text`` so that readers see the old content or the new, never a part: locally a temporary
    file in the same folder, then ``os.replace``; a URL's object is written whole. The file gets the
    permissions any new file gets (the umask's), not ``mkstemp``'s owner-only ones: a model server or a
    colleague running as another user reads the run."""
    if is_remote(path):
        return write_text(path, text)
    tmp = Path(path).parent / f".{Path(path).name}.{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return as_path(path)


def append_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Appends to a file (created if missing).

    Args:
      path: A local path or a URL; a file system without appendable files gets the file rewritten whole.
      text: What to append.
      encoding: How ``text`` is encoded.
    """
    if not is_remote(path):
        with open(path, "a", encoding=encoding) as fh:
            fh.write(text)
        return
    import tensorflow as tf

    try:
        with open_file(path, "a") as fh:
            fh.write(text.encode(encoding))
    except tf.errors.UnimplementedError:
        write_bytes(path, (read_bytes(path) if exists(path) else b"") + text.encode(encoding))
    except tf.errors.OpError as e:
        raise _translate(e, str(path)) from None


def read_json(path: PathLike) -> Any:
    """The parsed JSON file."""
    return json.loads(read_text(path))


def read_parquet(path: PathLike, **kwargs) -> "pd.DataFrame":  # noqa: F821
    """``pd.read_parquet`` of a local file or a URL (read whole into memory)."""
    import pandas as pd

    return pd.read_parquet(io.BytesIO(read_bytes(path)) if is_remote(path) else path, **kwargs)


def _write_with(path: PathLike, write) -> Path | str:
    """``write(target)`` to a local path, or into memory and then to the URL in one piece."""
    if not is_remote(path):
        write(path)
        return as_path(path)
    buffer = io.BytesIO()
    write(buffer)
    return write_bytes(path, buffer.getvalue())


def write_parquet(frame: "pd.DataFrame", path: PathLike, **kwargs) -> Path | str:  # noqa: F821
    """``frame.to_parquet`` to a local file or a URL."""
    return _write_with(path, lambda target: frame.to_parquet(target, **kwargs))


def save_npy(path: PathLike, array) -> Path | str:
    """``np.save`` to a local file or a URL."""
    import numpy as np

    return _write_with(path, lambda target: np.save(target, array))


def remove(path: PathLike, *, missing_ok: bool = False) -> None:
    """Delete a file; with ``missing_ok`` a missing one is not an error."""
    if not is_remote(path):
        Path(path).unlink(missing_ok=missing_ok)
    elif not missing_ok or exists(path):
        _tf_io("gfile.remove", path)


def rmtree(path: PathLike, *, ignore_errors: bool = False) -> None:
    """Delete a directory and everything in it."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    with contextlib.suppress(Exception) if ignore_errors else contextlib.nullcontext():
        if exists(path):
            _tf_io("gfile.rmtree", path)


def copytree(src: PathLike, dst: PathLike) -> None:
    """Copy the files under ``src`` to the same relative paths under ``dst`` (either side local or a URL)."""
    makedirs(dst)
    _copy_files(src, dst, _relative_files(src))


def _copy_files(src: PathLike, dst: PathLike, relative: list[str]) -> None:
    for rel in relative:
        write_bytes(join(dst, *rel.split("/")), read_bytes(join(src, *rel.split("/"))))


def _relative_files(root: PathLike) -> list[str]:
    """``/``-separated paths of the files under ``root``. What a listing shows is checked to be a file:
    ram:// lists by name prefix (``assets`` shows the ``.extra`` of ``assets.extra``)."""
    import tensorflow as tf

    base = str(as_path(root))
    found = []
    for folder, _, names in _call(root, lambda: list(tf.io.gfile.walk(base))):
        rel = folder[len(base):].strip("/")
        found += [f"{rel}/{name}".lstrip("/") for name in names]
    return [rel for rel in found if isfile(join(root, *rel.split("/")))]


def rename(src: PathLike, dst: PathLike) -> None:
    """Move a file or directory into place; ``dst`` must not exist.

    Locally this is ``os.replace`` (atomic on one file system). On a URL it is
    ``tf.io.gfile.rename``: atomic where the file system renames (HDFS), a copy of each object
    then a delete on object stores (gs://, s3://), where readers may see a folder fill up.
    File systems without a directory rename get a copy and a delete.

    Args:
      src: The file or folder to move.
      dst: Where it goes.

    Raises:
      FileExistsError: ``dst`` exists (URLs only; ``os.replace`` overwrites).
    """
    if not is_remote(src) and not is_remote(dst):
        os.replace(src, dst)
        return
    import tensorflow as tf

    if exists(dst):
        raise FileExistsError(17, "already exists", str(dst))
    folder = isdir(src)
    if scheme(src) == scheme(dst):
        files = _relative_files(src) if folder else []
        try:
            tf.io.gfile.rename(str(src), str(dst), overwrite=False)
        except (tf.errors.UnimplementedError, tf.errors.FailedPreconditionError):
            pass  # no rename on this file system: copy, then delete
        except tf.errors.OpError as e:
            raise _translate(e, str(dst)) from None
        else:
            # Some file systems (ram://) rename the folder entry but not what is inside: copy the rest.
            left = [rel for rel in files if not exists(join(dst, *rel.split("/")))]
            _copy_files(src, dst, left)
            if left:
                rmtree(src, ignore_errors=True)
            return
    if folder:
        copytree(src, dst)
        rmtree(src)
    else:
        write_bytes(dst, read_bytes(src))
        remove(src)


def make_temp_dir(directory: PathLike, prefix: str) -> Path | str:
    """Creates a new, uniquely named folder with the permissions any new folder gets (the umask's: an
    export staged here is renamed into place, and ``mkdtemp``'s owner-only folder would keep a model
    server running as another user out of it).

    Args:
      directory: Where to create it.
      prefix: The start of its name.

    Returns:
      The new folder.
    """
    folder = join(directory, f"{prefix}{uuid.uuid4().hex[:12]}")
    if is_remote(directory):
        return makedirs(folder)
    folder.mkdir()  # a name taken already raises: never two writers in one folder
    return folder


@contextlib.contextmanager
def staged_dir(path: PathLike) -> Iterator[Path]:
    """A local folder for writers that need one; on success its files are copied to ``path``.

    Args:
      path: The destination folder; a local one is created and yielded itself (nothing is copied).

    Yields:
      The local folder to write into.
    """
    if not is_remote(path):
        yield makedirs(path)  # type: ignore[misc]
        return
    with tempfile.TemporaryDirectory(prefix="tfrs_recsys-stage-") as local:
        yield Path(local)
        copytree(local, path)
