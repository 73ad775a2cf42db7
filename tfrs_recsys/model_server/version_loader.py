"""Loading one model version: waiting for its directory to settle, loading, warming up.

A version directory can appear before it is complete: ``cp -r`` creates the folder and then fills
it, and an object-store upload shows each file as it lands. A load attempt on such a directory
fails, and with retries off (or once they run out) the version would never be served. So a version
is attempted only once its directory has settled: nothing under it (files, sizes, folders) changed
for ``--version_settle_seconds``, judged by the newest mtime, or, where the file system's clock
disagrees with ours, by scans of our own that keep seeing the same files for that long.
:class:`~tfrs_recsys.model_server.model_manager.ModelManager` attempts a failed version again when
its directory changes later (a copy that paused longer than the window and then went on).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, NamedTuple

import grpc

from tfrs_recsys import paths
from tfrs_recsys.model_server.errors import ServingError, invalid_argument
from tfrs_recsys.model_server.row_parts import MAX_ROWS_PER_CALL
from tfrs_recsys.model_server.servable import Servable
from tfrs_recsys.servable_layout import read_warmup_requests, rows_independent, version_dirs

log = logging.getLogger("tfrs_recsys.model_server")

MAX_WARMUP_RECORDS = 1000  # TF Serving's kMaxNumRecords
SETTLE_CHECK_SECONDS = 0.5  # the longest wait between two scans of a directory that is settling


class DirectoryState(NamedTuple):
    """What a scan of a version directory saw.

    ``files`` are ``(relative path, size, mtime in ns)``, sorted; ``newest`` is the newest mtime
    (seconds since the epoch) of anything under it, folders included (0 when unknown).
    """

    files: tuple[tuple[str, int, int], ...]
    newest: float


def scan(path: str) -> DirectoryState:
    """The files under a version directory, local or a ``tf.io.gfile`` URL.

    Args:
      path: The version directory.

    Returns:
      Its state; an empty one when it cannot be read (the load attempt then reports why).
    """
    files, newest = [], 0.0
    try:
        if paths.is_remote(path):
            import tensorflow as tf

            for folder, _, names in tf.io.gfile.walk(path):
                for name in names:
                    stat = tf.io.gfile.stat(f"{folder.rstrip('/')}/{name}")
                    files.append((f"{folder}/{name}"[len(path):], stat.length, stat.mtime_nsec))
                    newest = max(newest, stat.mtime_nsec / 1e9)
        else:
            for folder, _, names in os.walk(path):
                newest = max(newest, os.stat(folder).st_mtime)  # entries created or removed
                for name in names:
                    stat = os.stat(os.path.join(folder, name))
                    files.append((os.path.relpath(os.path.join(folder, name), path), stat.st_size,
                                  stat.st_mtime_ns))
                    newest = max(newest, stat.st_mtime)
    except Exception:  # gone, unreadable, or a URL the file system refuses: let the load attempt say so
        return DirectoryState((), 0.0)
    return DirectoryState(tuple(sorted(files)), newest)


def wait_until_settled(path: str, settle_seconds: float, cancel: threading.Event,
                       waiting: Callable[[str], None]) -> DirectoryState | None:
    """Returns once nothing under ``path`` changed for ``settle_seconds``.

    Args:
      path: The version directory.
      settle_seconds: ``--version_settle_seconds``; 0 returns at once.
      cancel: Set when the version is no longer wanted.
      waiting: Called with a note for GetModelStatus each time the directory is found still changing.

    Returns:
      The settled state, or None when ``cancel`` was set first.
    """
    last, since = None, time.monotonic()
    while True:
        state = scan(path)
        if state != last:
            last, since = state, time.monotonic()
        quiet = max(time.time() - state.newest, time.monotonic() - since)
        if settle_seconds <= 0 or quiet >= settle_seconds:
            return state
        waiting(f"waiting for the version directory to settle: it changed {max(quiet, 0.0):.1f} s ago; it is "
                f"loaded once nothing under it changed for {settle_seconds:g} s (--version_settle_seconds)")
        if cancel.wait(min(SETTLE_CHECK_SECONDS, settle_seconds - quiet)):
            return None


def wait_for_retry(path: str, seen: DirectoryState | None, seconds: float, cancel: threading.Event) -> bool:
    """Waits ``seconds`` before a failed version's next attempt, or less: until its directory differs
    from ``seen`` (the state the failed attempt loaded), as a copy that paused and went on does.

    Args:
      path: The version directory.
      seen: What the failed attempt saw (None: wait the whole time).
      seconds: ``--load_retry_interval_micros``, in seconds.
      cancel: Set when the version is no longer wanted.

    Returns:
      Whether ``cancel`` was set.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if cancel.wait(min(SETTLE_CHECK_SECONDS, left)):
            return True
        if seen is not None and scan(path) != seen:
            return False
    return cancel.is_set()


def as_serving_error(error: Exception) -> ServingError:
    """A load failure as the ServingError GetModelStatus shows (UNKNOWN for anything unexpected)."""
    if isinstance(error, ServingError):
        return error
    return ServingError(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")


def load_version(name: str, version: int, path: str, *, warmup: bool, max_request_elements: int,
                 max_rows_per_call: int = MAX_ROWS_PER_CALL) -> Servable:
    """Loads a version and replays its warmup requests.

    Args:
      name: The model name.
      version: The version number.
      path: The version directory.
      warmup: Replay ``assets.extra/tf_serving_warmup_requests`` (``--enable_model_warmup``).
      max_request_elements: ``--max_request_elements`` for the servable.
      max_rows_per_call: ``--max_rows_per_call`` for the servable, if its export says its rows are
        scored independently (``rows_independent``); else its requests run whole.

    Returns:
      The servable, ready to answer.

    Raises:
      ServingError: The SavedModel does not load, or a warmup request fails.
    """
    try:
        servable = Servable.load(name, version, path)
    except Exception as error:
        incomplete = (paths.exists(paths.join(path, "saved_model.pb"))
                      and not paths.exists(paths.join(path, "variables", "variables.index")))
        if not incomplete:
            raise
        raise ServingError(grpc.StatusCode.UNKNOWN,  # TensorFlow's own message blames devices
                           f"{path} has saved_model.pb but no variables/variables.index: a copy not "
                           f"finished? It is loaded again once its directory changes "
                           f"({type(error).__name__})") from None
    servable.max_request_elements = max_request_elements
    servable.max_rows_per_call = max_rows_per_call if rows_independent(path) else 0
    if warmup:
        replay_warmup(servable)
    return servable


def replay_warmup(servable: Servable) -> None:
    """Replays assets.extra/tf_serving_warmup_requests before the version is AVAILABLE.

    Args:
      servable: The loaded version.

    Raises:
      ServingError: Too many records, an unsupported log type, or a request that fails (its code).
    """
    logs = read_warmup_requests(servable.path)
    if len(logs) > MAX_WARMUP_RECORDS:
        raise invalid_argument(
            f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {servable.path}")
    for record in logs:
        kind = record.WhichOneof("log_type")
        try:
            if kind not in ("predict_log", "classify_log", "regress_log", "multi_inference_log"):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
            getattr(servable, kind.removesuffix("_log"))(getattr(record, kind).request)
        except ServingError as e:
            message = f"Failed to warm up {servable.path} with a {kind} record: {e.message}"
            raise ServingError(e.code, message) from None
    if logs:
        log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.",
                 servable.path, len(logs))


def layout_hint(base_path: str) -> str:
    """Why a base path lists no version, where its layout tells: it is a version folder, or a folder of
    models (each with version folders)."""
    try:
        if paths.exists(paths.join(base_path, "saved_model.pb")):
            parent = base_path.rstrip("/").rsplit("/", 1)[0]
            return f"; it holds a SavedModel itself: pass its parent ({parent}), which holds <version>/"
        folders = [n for n in paths.listdir(base_path) if paths.isdir(paths.join(base_path, n))]
        models = sorted(n for n in folders if version_dirs(paths.join(base_path, n)))
    except (OSError, paths.RemotePathError):
        return ""
    if not models:
        return ""
    return (f"; its folders {models[:5]} hold versions: pass one of them as the base path, or serve them "
            f"all with --model_config_file")
