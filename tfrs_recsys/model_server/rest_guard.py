"""What the REST front end does before uvicorn sees a byte: limits, timeouts, malformed requests.

uvicorn's HTTP/1.1 protocol (``H11Protocol``) arms no timer until the first response is sent, so
a connection that sends half a request line holds its slot for ever; it answers a broken request
with a text/plain 400 and counts idle connections against ``limit_concurrency``. Each connection
here is a :class:`GuardedConnection` wrapped around an unmodified ``H11Protocol`` (given to uvicorn
through its public ``Config(http=...)`` option). It reads the byte stream first with its own h11
parser and

* cuts off a request whose head (request line and headers) has not arrived within
  ``header_timeout_s`` with 408, and refuses a head larger than ``max_header_bytes`` with 431;
* answers what is not HTTP/1.x (an HTTP/0.9 line, TLS or HTTP/2 bytes, a bad Content-Length)
  with 400 as soon as it can tell, rather than waiting for a blank line that never comes;
* keeps at most ``max_connections`` open: one more closes the connection idle the longest (no
  request in progress), or when none is idle is answered 503 and closed;
* hands uvicorn only bytes it has validated, holding pipelined requests until the one before is
  answered (the ASGI app reports that through :meth:`GuardedConnection.response_done`).

Its own answers are TF Serving's ``{"error": ...}`` JSON with ``Connection: close``, followed by a
lingering close (half-close, then drain for a moment) so the client reads the answer rather than
a reset.
"""
from __future__ import annotations

import asyncio
import dataclasses
import http
import json
import re

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# The key in the ASGI scope's ``state`` under which the app finds its GuardedConnection.
CONNECTION_KEY = "tfrs_recsys.connection"
_LINGER_S = 1.0  # how long a refused connection is drained after its answer
_PIPELINE_HOLD_BYTES = 1 << 16  # pipelined bytes held before reading pauses
MAX_BODY_PIECES = 10_000  # a body's chunks (parser events): clients send KBs at a time, not single bytes
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE = re.compile(_TOKEN + rb"+ [\x21-\x7e]+ HTTP/1\.[01]\r?")
_METHOD_START = re.compile(_TOKEN)


@dataclasses.dataclass(frozen=True)
class RestOptions:
    """The REST front end's limits (each from the ``--rest_api_*`` flag of the same meaning).

    Args:
      max_body_bytes: The largest request body (``--max_request_bytes``); larger: 413.
      timeout_s: Reading a request's body and answering it (``--rest_api_timeout_in_ms``).
      header_timeout_s: Receiving a request's line and headers (``--rest_api_header_timeout_in_ms``).
      max_header_bytes: The largest request line plus headers (``--rest_api_max_header_bytes``).
      max_connections: Open connections at most (``--rest_api_max_connections``).
      backlog: The listen queue (``--rest_api_backlog``).
      num_threads: Threads running model calls (``--rest_api_num_threads``); 0: 4 x cores, at least 16.
      keep_alive_s: An idle keep-alive connection is closed after this long.
      connections_flag: The flag of ``max_connections``, named in the answers it causes.
    """

    max_body_bytes: int = 64 << 20
    timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 << 10
    max_connections: int = 1000
    backlog: int = 1024
    num_threads: int = 0
    keep_alive_s: float = 5.0
    connections_flag: str = "--rest_api_max_connections"


def error_json(message: str) -> bytes:
    """TF Serving's REST error body for ``message``."""
    return json.dumps({"error": message}, indent=1).encode("utf-8")


def _error_response(status: int, message: str) -> bytes:
    body = error_json(message)
    return (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii") + body


class ConnectionGuard:
    """The state the connections of one server share: the limits and who is open.

    Args:
      options: The limits.
    """

    def __init__(self, options: RestOptions):
        self.options = options
        self.open: dict[GuardedConnection, None] = {}  # insertion-ordered: oldest first

    def protocol_factory(self, **uvicorn_args) -> GuardedConnection:
        """Builds a connection's protocol; uvicorn calls it (as ``Config.http``) with its own arguments."""
        return GuardedConnection(self, **uvicorn_args)

    def make_room(self) -> bool:
        """Closes the connection idle the longest when the limit is reached; False if all are busy."""
        if len(self.open) < self.options.max_connections:
            return True
        idle = [c for c in self.open if c.state == GuardedConnection.HEAD]
        if not idle:
            return False
        min(idle, key=lambda c: c.idle_since).evict()
        return True

    def close_all(self) -> None:
        """Closes every connection still open (when the server stops)."""
        for connection in list(self.open):
            connection.transport.close()


class GuardedConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: validates the byte stream, then hands it to uvicorn's ``H11Protocol``.

    Args:
      guard: The server's shared :class:`ConnectionGuard`.
      config: uvicorn's ``Config`` (passed through).
      server_state: uvicorn's ``ServerState`` (passed through).
      app_state: The ASGI lifespan state; the app finds this connection in it.
      _loop: The event loop (uvicorn's argument name).
    """

    HEAD, REQUEST, WAIT, CLOSING = "head", "request", "wait", "closing"

    def __init__(self, guard: ConnectionGuard, *, config, server_state, app_state, _loop=None):
        self.guard = guard
        self.options = guard.options
        self.loop = _loop or asyncio.get_event_loop()
        self.inner = H11Protocol(config=config, server_state=server_state,
                                 app_state={**app_state, CONNECTION_KEY: self}, _loop=self.loop)
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=self.options.max_header_bytes)
        self.transport: asyncio.Transport | None = None
        self.state = self.HEAD
        self.idle_since = self.loop.time()
        self.head_seen = True  # a fresh connection owes its first request: a timeout answers 408
        self.held = 0  # pipelined bytes in the parser's buffer that uvicorn has not seen
        self.pieces = 0  # the request body's pieces so far
        self.first_line: bytearray | None = bytearray()  # the request line so far; None once checked
        self.timer: asyncio.TimerHandle | None = None
        self.connected = False
        self.eof = False  # the client has half-closed: no more requests will come

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if not self.guard.make_room():
            limit = f"{self.options.connections_flag}={self.options.max_connections}"
            self._refuse(503, f"The server has {self.options.max_connections} connections open, all busy "
                              f"({limit}); retry later")
            return
        self.guard.open[self] = None
        self.connected = True
        self.inner.connection_made(transport)
        self._arm(self.options.header_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.state == self.CLOSING:
            return  # draining after our answer
        self.parser.receive_data(data)
        if self.state == self.WAIT:  # a pipelined request: read once this response is out
            self.held += len(data)
            if self.held > _PIPELINE_HOLD_BYTES:
                self.transport.pause_reading()
            return
        if self.state == self.HEAD and not self.head_seen:  # the first byte of a keep-alive request
            self.head_seen = True
            self._arm(self.options.header_timeout_s, self._head_timed_out)
        self._validate_and_forward(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.state == self.WAIT:
            return True  # a half-closed client still gets its answer; response_done closes after it
        self._at_eof()
        return None  # close once what was written is sent

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.state = self.CLOSING
        self.guard.open.pop(self, None)
        if self.connected:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.connected:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.connected:
            self.inner.resume_writing()

    # -- called by the ASGI app and the guard -----------------------------------------------------

    def response_done(self, close: bool) -> None:
        """The app has sent its whole answer to the current request.

        Args:
          close: The answer closes the connection (sent before the request was read to its end).
        """
        if self.state != self.WAIT or close:
            self.state = self.CLOSING  # uvicorn closes the transport after such an answer
            return
        # h11 moves to the next request only once its side of this one is done too; the answer
        # itself went out through uvicorn.
        self.parser.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
        self.parser.send(h11.EndOfMessage())
        try:
            self.parser.start_next_cycle()
        except h11.LocalProtocolError:  # "Connection: close" or HTTP/1.0: uvicorn closes after this answer
            self.state = self.CLOSING
            return
        self.state, self.idle_since, self.first_line = self.HEAD, self.loop.time(), bytearray()
        held, self.held = self.held, 0
        self.head_seen = held > 0
        if held:
            self._arm(self.options.header_timeout_s, self._head_timed_out)
            self.transport.resume_reading()
            self._validate_and_forward(self.parser.trailing_data[0])
        if self.eof and self.state in (self.HEAD, self.REQUEST):
            self._at_eof()

    def evict(self) -> None:
        """Closes this idle connection to make room for a new one (408 if a request had begun)."""
        if self.head_seen:
            self._refuse(408, f"Closed to make room for a new connection ({self.options.connections_flag}="
                              f"{self.options.max_connections}) before this request's headers arrived")
        else:
            self.state = self.CLOSING
            self.transport.close()
        self.guard.open.pop(self, None)

    # -- internals -------------------------------------------------------------------------------

    def _validate_and_forward(self, data: bytes) -> None:
        """Runs ``data`` (already in the parser) through the parser; uvicorn gets what passes."""
        problem = self._check_request_line(data) if self.state == self.HEAD else None
        problem = problem or self._advance()
        if problem:
            self._refuse(*problem)
            return
        if self.state == self.WAIT:  # what follows the request's end waits for the answer
            tail = len(self.parser.trailing_data[0])
            self.held = tail
            data = data[:len(data) - tail]
        if data:
            self.inner.data_received(data)

    def _advance(self) -> tuple[int, str] | None:
        """Parser events until more data is needed; the (status, message) to refuse with, if any."""
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as e:
                return self._protocol_error(e)
            if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                fields = sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
                if len(event.target) + fields > self.options.max_header_bytes:
                    return self._too_large()
                if event.http_version not in (b"1.0", b"1.1"):
                    return 400, f"HTTP/{event.http_version.decode()} is not spoken here: send HTTP/1.1"
                if event.method == b"CONNECT":  # a tunnel request: uvicorn would log a traceback for it
                    return 400, "Malformed request: CONNECT is not spoken here"
                names = {name.lower() for name, _ in event.headers}
                if b"content-length" in names and b"transfer-encoding" in names:
                    # proxies may frame such a request differently from us (request smuggling): refuse it
                    return 400, ("Malformed request: both Content-Length and Transfer-Encoding; send one "
                                 "of them")
                self._disarm()
                self.state, self.pieces = self.REQUEST, 0
            elif isinstance(event, h11.Data):
                self.pieces += 1  # each costs the parsers Python time: 1-byte chunks would stall the loop
                if self.pieces > MAX_BODY_PIECES:
                    return 413, f"Request body sent in more than {MAX_BODY_PIECES} chunks: send larger ones"
            elif isinstance(event, h11.EndOfMessage):
                self.state = self.WAIT

    def _check_request_line(self, data: bytes) -> tuple[int, str] | None:
        """Refuses a head whose first line is not HTTP/1.x as soon as that line (or its first byte)
        is in, rather than when a blank line arrives, which for HTTP/0.9 or TLS it never does."""
        if self.first_line is None or not data:
            return None
        if not self.first_line and not _METHOD_START.match(data):
            return 400, ("Malformed request: this port speaks HTTP/1.1 (plain text, no TLS); the bytes "
                         "received do not start with an HTTP method")
        end = data.find(b"\n")
        self.first_line += data if end < 0 else data[:end]
        if end < 0:
            return None
        line, self.first_line = bytes(self.first_line), None
        if not _REQUEST_LINE.fullmatch(line):
            shown = line[:200].decode("utf-8", errors="replace").rstrip("\r")
            if any(byte > 127 for byte in line) or line.count(b" ") > 2:  # a name left as is, or a space
                return 400, (f"Malformed request line {shown!r}: a URL is ASCII; percent-encode the path and "
                             "the query, names and values (urllib.parse.urlencode; curl's --data-urlencode "
                             "'name=value' encodes the value only)")
            return 400, (f"Malformed request line {shown!r}: expected 'METHOD /path HTTP/1.1' "
                         "(HTTP/0.9 and HTTP/2 are not spoken here)")
        return None

    def _protocol_error(self, error: h11.RemoteProtocolError) -> tuple[int, str]:
        if error.error_status_hint == 431:
            return self._too_large()
        text = str(error)
        if "Content-Length" in text:
            return 400, f"Invalid Content-Length header ({text}): give the body's size in bytes, once"
        return 400, f"Malformed HTTP request: {text}"

    def _too_large(self) -> tuple[int, str]:
        return 431, (f"Request line and headers are over --rest_api_max_header_bytes="
                     f"{self.options.max_header_bytes}")

    def _at_eof(self) -> None:
        """The client half-closed with no request in progress: answer a partial head, else close."""
        if self.state == self.HEAD and self.parser.trailing_data[0]:
            self._refuse(400, "Malformed request: the client closed its side of the connection before the "
                              "request line and headers were complete")
        elif self.state != self.CLOSING:
            self.state = self.CLOSING  # nothing to answer; a body cut short is a disconnect to the app
            self.transport.close()

    def _head_timed_out(self) -> None:
        self.timer = None
        if self.state == self.HEAD:
            ms = round(self.options.header_timeout_s * 1000)
            self._refuse(408, f"The request line and headers did not arrive within {ms} ms "
                              f"(--rest_api_header_timeout_in_ms={ms})")

    def _refuse(self, status: int, message: str) -> None:
        """Answers ``status`` with a JSON error, half-closes, and drains a moment before closing."""
        self._disarm()
        self.state = self.CLOSING
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_error_response(status, message))
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(_LINGER_S, transport.close)

    def _arm(self, delay: float, callback) -> None:
        self._disarm()
        self.timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
