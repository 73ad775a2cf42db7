"""Every worker of ``TF_CONFIG`` reachable before ``MultiWorkerMirroredStrategy`` is built.

Building the strategy blocks inside TensorFlow until every task of the cluster has connected, holding the
Python interpreter: it prints nothing, never times out, and neither Ctrl-C nor SIGTERM (which TensorFlow's
preemption notifier takes) stops it. So each worker first waits here, in Python, where a signal stops it:
it listens on its own ``host:port`` of the cluster (the kernel completes a peer's connection; nothing is
accepted or sent) and connects to every other task's until each answers, saying which it waits for, and
gives up after ``timeout`` seconds naming them. It then closes its port and builds the strategy, whose
server takes the port over: a peer still checking meanwhile finds that server there instead.
"""
from __future__ import annotations

import contextlib
import socket
import time
from typing import Mapping

from tfrs_recsys.config import ConfigError

TASK_TYPES = ("chief", "worker")
SAY_EVERY = 30.0  # seconds between "still waiting" lines


def tasks(tf_config: Mapping) -> list[tuple[str, int, str]]:
    """``(type, index, host:port)`` of every training task of the cluster, chief first."""
    cluster = tf_config.get("cluster", {})
    return [(kind, index, address) for kind in TASK_TYPES
            for index, address in enumerate(cluster.get(kind, []))]


def check_task(tf_config: Mapping) -> None:
    """This process's ``task`` names a training task of the cluster.

    Raises:
      ConfigError: the task's type or index is not in the cluster.
    """
    task, cluster = tf_config.get("task") or {}, tf_config.get("cluster", {})
    kind, index = task.get("type"), task.get("index", 0)
    members = cluster.get(kind, []) if isinstance(kind, str) else []
    if kind not in TASK_TYPES or not isinstance(index, int) or not 0 <= index < len(members):
        listed = ", ".join(f"{k} 0-{len(cluster[k]) - 1}" for k in TASK_TYPES if cluster.get(k)) or "none"
        raise ConfigError(f"environment TF_CONFIG's task {task or '(missing)'} is not a training task of its "
                          f"cluster (tasks: {listed}); give each process the same cluster and its own "
                          f"task, e.g. {{\"type\": \"worker\", \"index\": 0}} on the first machine")


def wait_for_workers(tf_config: Mapping, timeout: float) -> None:
    """Returns once every other task's ``host:port`` takes a connection (module docstring).

    Args:
      tf_config: the parsed ``TF_CONFIG`` (its task checked by :func:`check_task`).
      timeout: seconds to wait in all.

    Raises:
      ConfigError: some task did not answer within ``timeout``, naming it.
    """
    task = tf_config["task"]
    me = (task["type"], task.get("index", 0))
    own = next(address for kind, index, address in tasks(tf_config) if (kind, index) == me)
    others = [(kind, index, address) for kind, index, address in tasks(tf_config) if (kind, index) != me]
    start, said = time.monotonic(), -SAY_EVERY
    with _listening(own):
        while others:
            others = [peer for peer in others if not _answers(peer[2])]
            waited = time.monotonic() - start
            if others and waited > timeout:
                raise ConfigError(f"waited {waited:.0f} s for {_named(others)} of TF_CONFIG's cluster: start "
                                  "every worker with the same command and cluster (each its own task), check "
                                  "the hosts and ports are reachable from here, or wait longer with "
                                  "--cluster-wait-seconds")
            if others and time.monotonic() - said >= SAY_EVERY:  # at once, then every SAY_EVERY s
                said = time.monotonic()
                print(f"distribute: waiting for {_named(others)} ({waited:.0f} s of {timeout:.0f})",
                      flush=True)
            if others:
                time.sleep(0.5)


def _named(peers: list[tuple[str, int, str]]) -> str:
    return ", ".join(f"{kind} {index} at {address}" for kind, index, address in peers)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def _listening(address: str):
    """A socket listening on this task's port, on every interface (IPv6 and IPv4 where the host has both),
    as TensorFlow's server binds it."""
    dual = socket.has_dualstack_ipv6()
    try:
        listener = socket.create_server(("", _split(address)[1]), backlog=64, dualstack_ipv6=dual,
                                        family=socket.AF_INET6 if dual else socket.AF_INET)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}, this task's address in TF_CONFIG ({exc}): another "
                          "process holds the port; choose a free one") from None
    try:
        yield
    finally:
        listener.close()


def _answers(address: str) -> bool:
    try:
        with socket.create_connection(_split(address), timeout=2.0):
            return True
    except (OSError, ValueError):
        return False
