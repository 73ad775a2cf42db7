"""The REST front end: :class:`~tfrs_recsys.model_server.rest.RestApi` served by uvicorn.

:class:`RestApp` is a plain ASGI app: it checks a request's framing (411 without a length on POST,
413 over ``--max_request_bytes`` before a byte of the body is read), reads the body within the
request's deadline (408 when it stalls), and runs the blocking model call on a thread pool
(``--rest_api_num_threads``) so that a slow prediction holds no other connection up; past the
deadline (``--rest_api_timeout_in_ms``) the answer is 504 DEADLINE_EXCEEDED, as in TF Serving.
Connection limits, header timeouts and malformed requests are handled in front of uvicorn by
:mod:`tfrs_recsys.model_server.rest_guard`. :class:`RestServer` runs it all from a daemon thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import urllib.parse

import grpc
import uvicorn

from tfrs_recsys.model_server.errors import ServingError
from tfrs_recsys.model_server.rest import PATH_REGEX, RestApi
from tfrs_recsys.model_server.rest_guard import CONNECTION_KEY, ConnectionGuard, RestOptions, error_json

log = logging.getLogger("tfrs_recsys.model_server")


class _Answer(Exception):
    """An answer given before the request is read to its end (the connection then closes)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class RestApp:
    """The ASGI app answering TF Serving's REST API.

    Args:
      api: The request dispatch.
      options: The limits.
      executor: Where the (blocking) model calls run.
    """

    def __init__(self, api: RestApi, options: RestOptions, executor: concurrent.futures.Executor):
        self.api = api
        self.options = options
        self.executor = executor

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        connection = scope.get("state", {}).get(CONNECTION_KEY)
        close = False
        try:
            status, payload = await self._answer(scope, receive)
        except _Answer as early:
            status, payload, close = early.status, error_json(early.message), True
        if status is None:  # the client went away
            return
        headers = [(b"content-type", b"application/json")] if payload else []
        headers.append((b"content-length", str(len(payload)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if connection is not None:
            connection.response_done(close)

    async def _answer(self, scope, receive) -> tuple[int | None, bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.timeout_s
        method = scope["method"]
        length, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)  # h11 has checked it is digits, and given once
            elif name == b"transfer-encoding":
                chunked = True  # h11 accepts only "chunked"
        if method == "POST" and length is None and not chunked:
            raise _Answer(411, "A POST needs a Content-Length header (or Transfer-Encoding: chunked)")
        if length is not None and length > self.options.max_body_bytes:
            raise _Answer(413, f"Request body of {length} bytes is over --max_request_bytes="
                               f"{self.options.max_body_bytes}")
        body = await self._read_body(receive, deadline)
        if body is None:
            return None, b""
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        # Names are UTF-8 (as models.config's); bytes that are not UTF-8 cannot name a model anyway.
        path = urllib.parse.urlsplit(raw_path.decode("utf-8", errors="replace")).path
        if not PATH_REGEX.fullmatch(path):
            return 404, b""
        call = loop.run_in_executor(self.executor, self.api.handle, method, path, body)
        try:
            status, text = await asyncio.wait_for(call, max(0.0, deadline - loop.time()))
        except TimeoutError:
            error = ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Request not answered within "
                                 f"--rest_api_timeout_in_ms={round(self.options.timeout_s * 1000)}")
            return error.http_status, error_json(error.message)
        return status, text.encode("utf-8")

    async def _read_body(self, receive, deadline: float) -> bytes | None:
        """The whole body, or None when the client disconnected; a stalled or oversized one is answered."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.options.max_body_bytes:
                        raise _Answer(413, "Request body is over --max_request_bytes="
                                           f"{self.options.max_body_bytes}")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            ms = round(self.options.timeout_s * 1000)
            raise _Answer(408, f"The request body did not arrive within {ms} ms (--rest_api_timeout_in_ms="
                               f"{ms}); {size} bytes were read") from None


class RestServer:
    """uvicorn serving :class:`RestApp` behind :class:`ConnectionGuard`, from a daemon thread.

    Args:
      api: The request dispatch.
      host: The address to bind.
      port: The port; 0 picks a free one.
      options: The limits.

    Raises:
      OSError: The address cannot be bound.
    """

    def __init__(self, api: RestApi, host: str, port: int, options: RestOptions = RestOptions()):
        threads = options.num_threads or max(16, 4 * (os.cpu_count() or 1))
        self.executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="rest")
        self.guard = ConnectionGuard(options)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they
        # are TCP, and without it the body segment of every answer waits ~40 ms for a delayed ACK.
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            self.executor.shutdown(wait=False)
            raise
        self.server_address = self.socket.getsockname()[:2]
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # no per-start banner lines
        config = uvicorn.Config(
            RestApp(api, options, self.executor), http=self.guard.protocol_factory, ws="none",
            lifespan="off", loop="asyncio", log_config=None, access_log=False, proxy_headers=False,
            server_header=False, backlog=options.backlog, timeout_keep_alive=options.keep_alive_s,
            timeout_graceful_shutdown=5, h11_max_incomplete_event_size=options.max_header_bytes)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="rest", daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.01)
        if not self.server.started:
            raise OSError(f"the REST server on {host}:{port} did not start")

    @property
    def port(self) -> int:
        """The port served."""
        return self.server_address[1]

    def _run(self) -> None:
        async def serve():
            await self.server.serve(sockets=[self.socket])
            self.guard.close_all()

        asyncio.run(serve())

    def stop(self, timeout: float = 10.0) -> None:
        """Stops accepting, lets requests in progress finish (up to 5 s), and closes every connection.

        Args:
          timeout: How long to wait for the server thread.
        """
        self.server.should_exit = True
        self.thread.join(timeout)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.socket.close()
