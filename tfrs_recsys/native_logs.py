"""Keeps TensorFlow's native start-up and cost-model notices off a command's stderr; real errors pass.

TensorFlow's C++ side logs through two channels that ``TF_CPP_MIN_LOG_LEVEL`` only partly controls: on a
CPU-only machine the CUDA probe logs a ``cuInit`` failure at ERROR, oneDNN logs a notice at ERROR, and
Grappler's cost model logs ``op_level_cost_estimator`` warnings through absl before absl is initialized.
Silencing all errors (level 3) would hide real ones too, so instead file descriptor 2 is routed through a
pipe whose reader drops only the lines matching :data:`NOISE` and passes everything else through unchanged.
Python's own ``sys.stderr`` (tracebacks, warnings, our messages) and fault handler write to the real stderr
directly, so a crash report never waits in the pipe.
"""
from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import re
import sys
import threading
from typing import MutableMapping

NOISE = re.compile(
    rb"failed call to cuInit|cuda_platform\.cc|cuda_executor\.cc|op_level_cost_estimator\.cc"
    rb"|All log messages before absl::InitializeLog|oneDNN|cpu_feature_guard\.cc|TF_ENABLE_ONEDNN_OPTS"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc|cuda drivers on your machine"
    rb"|rebuild TensorFlow with the appropriate compiler flags"
    # ScaNN's index build: progress notices, and an empty k-means partition, which a small or clustered
    # catalog gives; the export measures the index's recall against exact search, the check that matters
    rb"|partitioner_factory_base\.cc|kmeans_tree_partitioner_utils\.h|Could not normalize centroid")


_installed = False


def _pump(read_fd: int, out_fd: int) -> None:
    """Copies complete lines from ``read_fd`` to ``out_fd``, leaving out the :data:`NOISE` ones."""
    pending = b""
    while chunk := os.read(read_fd, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not NOISE.search(line))
        if kept:
            os.write(out_fd, kept)
    if pending and not NOISE.search(pending):
        os.write(out_fd, pending)


def filter_native_logs(*, python_stderr: bool = True) -> None:
    """Routes file descriptor 2 through the :data:`NOISE` filter for the rest of the process (once).

    The Python loggers of absl and TensorFlow show errors only, too (their warnings are notices such as
    Keras' SavedModel serialization ones). Call it before TensorFlow is imported.

    Args:
      python_stderr: Whether ``sys.stderr`` and the fault handler go to the real stderr directly; False
        in a Jupyter kernel, whose ``sys.stderr`` is the notebook's and whose fd 2 it reads itself.
    """
    global _installed
    if _installed:
        return
    _installed = True
    real = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    if python_stderr:
        sys.stderr = os.fdopen(os.dup(real), "w", buffering=1, errors="backslashreplace")
        faulthandler.enable(sys.stderr)
    pump = threading.Thread(target=_pump, args=(read_fd, real), name="native-log-filter", daemon=True)
    pump.start()
    for name in ("absl", "tensorflow"):  # e.g. Keras' SavedModel serialization notices
        logging.getLogger(name).setLevel(logging.ERROR)
    if not python_stderr:  # in a Jupyter kernel TensorFlow sets its logger to INFO on import: import it now
        import tensorflow as tf

        tf.get_logger().setLevel(logging.ERROR)

    def restore() -> None:  # closes the pipe's last writer here, so the reader drains it and stops
        os.dup2(real, 2)
        pump.join(timeout=2)

    atexit.register(restore)


def install_for_command(argv: list[str], environ: MutableMapping[str, str] = os.environ) -> bool:
    """Filters a ``python -m tfrs_recsys.<command>`` run's stderr unless ``--verbose`` or ``RECSYS_VERBOSE``.

    Args:
      argv: The command line; ``--verbose`` is taken out of it.
      environ: The environment; ``TF_CPP_MIN_LOG_LEVEL`` is set in it (2 quiet, 0 verbose) unless set.

    Returns:
      Whether the filter was installed.
    """
    verbose = "--verbose" in argv or environ.get("RECSYS_VERBOSE", "").lower() in ("1", "true", "yes")
    while "--verbose" in argv:  # every command takes it; their own parsers never see it
        argv.remove("--verbose")
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if verbose:
        return False
    filter_native_logs()
    return True
