"""The lock of a run directory: one training writes it at a time, whatever its flags.

Two trainings writing one folder (a second ``--overwrite`` while the first still runs) would leave one's
config beside the other's weights. The training holds an exclusive ``flock`` on ``RUN/.training.lock`` from
the moment it takes the folder until the run ends (:func:`release`) or its process does; the kernel releases
it however the process ends, a kill included, so no stale lock stays. A folder on a ``tf.io.gfile`` URL has
no such lock, nor has one on Windows.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, no lock
    fcntl = None

from tfrs_recsys import paths
from tfrs_recsys.config import ConfigError

LOCK = ".training.lock"
_HELD: dict = {}  # this process's locks, by path: a second take is a no-op


def take(run_dir: str | os.PathLike) -> None:
    """Takes ``run_dir``'s lock for this process (created with the folder), or refuses the folder.

    Args:
      run_dir: The run directory; a URL is left unlocked.

    Raises:
      ConfigError: Another process holds the lock, naming its process id and host.
    """
    if paths.is_remote(run_dir) or fcntl is None:
        return
    path = str(Path(paths.makedirs(run_dir)).resolve() / LOCK)
    held = _HELD.get(path)
    if held is not None and os.path.exists(path) and os.fstat(held.fileno()).st_ino == os.stat(path).st_ino:
        return  # this process holds it (a folder deleted and made again is locked anew)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"--output-dir {run_dir} is being written by another training ({holder}); wait for "
                          "it to end, or pass another --output-dir") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _HELD[path] = handle


def release(run_dir: str | os.PathLike) -> None:
    """Releases ``run_dir``'s lock if this process holds it (the run ended: another may train there)."""
    if not paths.is_remote(run_dir) and (held := _HELD.pop(str(Path(run_dir).resolve() / LOCK), None)):
        held.close()
