"""The REST front end under hostile and heavy clients: raw sockets over loopback against a real server.

Every misbehaving client gets a JSON ``{"error": ...}`` answer (400/405/408/411/413/431/503) within
a deadline, or is cut off; none holds a connection slot for ever, none gets a 5xx or a silent
drop; and the server answers a valid Predict identically afterwards.
"""
import concurrent.futures
import json
import shutil
import socket
import subprocess
import threading
import time

import grpc
import httpx
import pytest
import serving_fixtures as fx
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

import tfrs_recsys  # noqa: F401

HEADER_TIMEOUT_S, BODY_TIMEOUT_S, MAX_CONNECTIONS, MAX_HEADER_BYTES = 1.5, 3.0, 8, 8192
PREDICT = b'{"instances": [1.0, 2.5]}'
PREDICT_PATH = b"/v1/models/utility/versions/1:predict"


def _post(body: bytes, extra: bytes = b"", path: bytes = PREDICT_PATH) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def _get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"


class Client:
    """A raw TCP client: ``answer()`` reads until the server closes (or ``timeout``) and times it."""

    def __init__(self, port: int, payload: bytes = b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.start = time.monotonic()
        if payload:
            self.sock.sendall(payload)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(payload)

    def answer(self, timeout: float = 10.0) -> tuple[bytes, float]:
        """The bytes the server sent before closing, and the seconds since connecting; raises
        ``socket.timeout`` when the server neither answers nor closes within ``timeout``."""
        self.sock.settimeout(timeout)
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # what came before the reset is the answer
        finally:
            self.sock.close()
        return data, time.monotonic() - self.start

    def close(self) -> None:
        self.sock.close()


def _parse(answer: bytes) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one HTTP/1.1 response."""
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _json_error(answer: bytes, statuses: tuple[int, ...]) -> str:
    status, headers, body = _parse(answer)
    assert status in statuses, answer[:300]
    assert headers[b"content-type"] == b"application/json", answer[:300]
    return json.loads(body)["error"]


def _start(base, extra: list[str]) -> fx.ServerProcess:
    config = fx.models_config(base, {"utility": {"policy": "all", "labels": {"stable": 1}}})
    return fx.start_server(base, [f"--model_config_file={config}",
                                  "--allow_version_labels_for_unavailable_models", *extra])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("frontend")
    fx.publish_utility(base, version=1, scale=2.0)
    fx.publish_utility(base, version=2, scale=3.0)
    return base


@pytest.fixture(scope="module")
def tight(models):
    """A server with small limits and short timeouts, and the answer a valid Predict gets from it."""
    server = _start(models, [f"--rest_api_header_timeout_in_ms={HEADER_TIMEOUT_S * 1000:.0f}",
                             f"--rest_api_timeout_in_ms={BODY_TIMEOUT_S * 1000:.0f}",
                             f"--rest_api_max_connections={MAX_CONNECTIONS}",
                             f"--rest_api_max_header_bytes={MAX_HEADER_BYTES}", "--max_request_bytes=100000"])
    reference, _ = Client(server.rest_port, _post(PREDICT)).answer()
    assert json.loads(_parse(reference)[2]) == {"predictions": [3.0, 6.0]}, reference
    yield server, _parse(reference)[2]
    assert server.stop() == 0, server.log_tail()


def _still_answers(tight) -> None:
    server, reference = tight
    status, _, body = _parse(Client(server.rest_port, _post(PREDICT)).answer()[0])
    assert (status, body) == (200, reference)


def _answer_all(clients: list[Client], timeout: float) -> list[tuple[bytes, float]]:
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(lambda c: c.answer(timeout), clients))


def test_a_request_head_that_never_completes_is_cut_off_with_408(tight):
    server, _ = tight
    heads = [b"", b"GET /v1/mo", b"GET /v1/models/utility HTTP/1.1\r\nHost: x\r\n"]
    clients = [Client(server.rest_port, head) for head in heads]
    dripping = Client(server.rest_port, b"G")  # one byte at a time: each would reset an idle timer

    def drip():
        for byte in b"ET /v1/models/utility HTTP/1.1\r\nX-Slow: yes":
            time.sleep(0.25)
            try:
                dripping.send(bytes([byte]))
            except OSError:
                return  # cut off

    threading.Thread(target=drip, daemon=True).start()
    for answer, seconds in _answer_all(clients + [dripping], timeout=HEADER_TIMEOUT_S + 8):
        assert "did not arrive within 1500 ms" in _json_error(answer, (408,))
        assert HEADER_TIMEOUT_S - 0.2 <= seconds <= HEADER_TIMEOUT_S + 8
    _still_answers(tight)


def test_a_body_that_never_completes_is_cut_off_with_408(tight):
    server, _ = tight
    head = b"POST /v1/models/utility:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    stalled = Client(server.rest_port, head + b'{"instances"')
    dripping = Client(server.rest_port, head)

    def drip():
        for byte in b'{"instances": [1.0, 2.0, 3.0]}':
            time.sleep(0.3)
            try:
                dripping.send(bytes([byte]))
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    for answer, seconds in _answer_all([stalled, dripping], timeout=BODY_TIMEOUT_S + 8):
        assert "request body did not arrive within 3000 ms" in _json_error(answer, (408,))
        assert BODY_TIMEOUT_S - 0.2 <= seconds <= BODY_TIMEOUT_S + 8
    _still_answers(tight)


def test_idle_connections_over_the_limit_do_not_hold_the_server(tight):
    server, reference = tight
    idle = [Client(server.rest_port, b"GET /v1/models/util" if i % 2 else b"")
            for i in range(3 * MAX_CONNECTIONS)]
    time.sleep(0.3)
    status, _, body = _parse(Client(server.rest_port, _post(PREDICT)).answer(timeout=10)[0])
    assert (status, body) == (200, reference)
    # every idle connection is closed (408, or dropped when never used) within the header timeout
    for answer, seconds in _answer_all(idle, timeout=HEADER_TIMEOUT_S + 8):
        assert seconds <= HEADER_TIMEOUT_S + 8
        if answer:
            _json_error(answer, (408,))
    _still_answers(tight)


def test_a_connection_over_the_limit_when_all_are_busy_gets_503(tight):
    server, _ = tight
    head = b"POST /v1/models/utility:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"
    busy = [Client(server.rest_port, head) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.5)
    extra = Client(server.rest_port, _post(PREDICT))
    answer, _ = extra.answer(timeout=BODY_TIMEOUT_S + 8)
    assert f"--rest_api_max_connections={MAX_CONNECTIONS}" in _json_error(answer, (503,))
    for answer, _ in _answer_all(busy, timeout=BODY_TIMEOUT_S + 8):  # the body deadline frees them
        _json_error(answer, (408,))
    _still_answers(tight)


CLIENT_HELLO = bytes.fromhex("16030100f4010000f00303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"
MANY_HEADERS = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(99))  # each small, over 8 KiB in all
MALFORMED = [
    # (what, request bytes, acceptable statuses, words of the error)
    ("HTTP/0.9 line", b"GET /v1/models/utility\r\n", (400,), "Malformed request line"),
    ("TLS ClientHello", CLIENT_HELLO, (400,), "no TLS"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400,), "Malformed request line"),
    ("a query name not percent-encoded", "GET /v1/models/utility?表示=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
     (400,), "percent-encode the path and the query"),
    ("a query with spaces", b"GET /v1/models/utility?position dans la page=1 HTTP/1.1\r\nHost: x\r\n\r\n",
     (400,), "percent-encode the path and the query"),
    ("POST without Content-Length", b"POST /v1/models/utility:predict HTTP/1.1\r\nHost: x\r\n\r\n", (411,),
     "Content-Length"),
    ("one oversized header", _get(b"/v1/models/utility", b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n"),
     (431,), f"--rest_api_max_header_bytes={MAX_HEADER_BYTES}"),
    ("many headers", _get(b"/v1/models/utility", MANY_HEADERS),
     (431,), "--rest_api_max_header_bytes"),
    ("1 MB URL", _get(b"/v1/models/" + b"m" * 1_000_000), (431,), "--rest_api_max_header_bytes"),
    ("unknown method", _get(b"/v1/models/utility").replace(b"GET", b"BREW"), (400, 405), "Malformed request"),
    ("non-ASCII target", _get(b"/v1/models/\xff\xfe"), (400,), "Malformed"),
    ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", (400,), "CONNECT"),
]


BAD_LENGTHS = [
    ("negative Content-Length", _post(b"").replace(b"Length: 0", b"Length: -5"), (400,),
     "Invalid Content-Length"),
    ("non-numeric Content-Length", _post(b"").replace(b"Length: 0", b"Length: abc"), (400,),
     "Invalid Content-Length"),
    ("float Content-Length", _post(b"").replace(b"Length: 0", b"Length: 1e18"), (400,),
     "Invalid Content-Length"),
    ("5,000-digit Content-Length", _post(b"").replace(b"Length: 0", b"Length: " + b"9" * 5000), (400,),
     "Invalid Content-Length"),
    ("conflicting Content-Lengths", _post(PREDICT, b"Content-Length: 3\r\n"), (400,), "Content-Length"),
    ("Content-Length and chunked", _post(b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"), (400,),
     "both Content-Length and Transfer-Encoding"),
    ("huge Content-Length", _post(b"").replace(b"Length: 0", b"Length: 1000000000000000000"), (413,),
     "--max_request_bytes=100000"),
]


@pytest.mark.parametrize("what, payload, statuses, words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_request_gets_a_json_client_error(tight, what, payload, statuses, words):
    server, _ = tight
    answer, _ = Client(server.rest_port, payload).answer(timeout=HEADER_TIMEOUT_S + 8)
    assert words in _json_error(answer, statuses), (what, answer[:300])  # a timeout would be 408
    _still_answers(tight)


def test_every_bad_content_length_gets_400_or_413(tight):
    server, _ = tight
    for what, payload, statuses, words in BAD_LENGTHS:
        answer, _ = Client(server.rest_port, payload).answer(timeout=HEADER_TIMEOUT_S + 8)
        assert words in _json_error(answer, statuses), (what, answer[:300])
    _still_answers(tight)


def test_a_half_closed_client_is_answered(tight):
    server, reference = tight
    whole = Client(server.rest_port, _post(PREDICT).replace(b"Connection: close\r\n", b""))
    whole.sock.shutdown(socket.SHUT_WR)  # uvicorn alone closes here, before the answer is written
    status, _, body = _parse(whole.answer()[0])
    assert (status, body) == (200, reference)
    partial = Client(server.rest_port, b"POST /v1/models/utility:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
    partial.sock.shutdown(socket.SHUT_WR)
    assert "closed its side" in _json_error(partial.answer()[0], (400,))


def test_keep_alive_answers_are_not_held_back_by_delayed_acks(tight):
    # An answer's head and body go out as two segments: without TCP_NODELAY the body waits for the
    # client's delayed ACK, ~40 ms a request, where the whole exchange takes well under 1 ms.
    server, _ = tight
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        times = []
        for _ in range(21):
            start = time.perf_counter()
            sock.sendall(b"GET /v1/models/utility/versions/1 HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            times.append(time.perf_counter() - start)
    assert sorted(times)[10] < 0.02, times


def test_a_chunked_predict_answers_as_a_sized_one(tight):
    server, reference = tight
    chunked = (b"POST " + PREDICT_PATH + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(PREDICT), PREDICT))
    status, _, body = _parse(Client(server.rest_port, chunked).answer()[0])
    assert (status, body) == (200, reference)


def test_status_by_label_names_one_version_and_an_unknown_label_is_an_error(tight):
    server, _ = tight
    answer, _ = Client(server.rest_port, _get(b"/v1/models/utility/labels/stable")).answer()
    status, _, body = _parse(answer)
    assert status == 200 and [s["version"] for s in json.loads(body)["model_version_status"]] == ["1"]
    answer, _ = Client(server.rest_port, _get(b"/v1/models/utility/labels/nope")).answer()
    assert "Unrecognized servable version label: nope" in _json_error(answer, (400,))


def test_a_long_model_name_is_not_echoed_back_in_full(tight):
    server, _ = tight
    answer, _ = Client(server.rest_port, _get(b"/v1/models/" + b"n" * 5000)).answer()
    error = _json_error(answer, (404,))
    assert "...(5000 characters)" in error and len(error) < 400, error[:400]
    # A request target must be ASCII (RFC 9112): raw UTF-8 bytes are a 400 that echoes them as sent (not
    # as Latin-1 mojibake); percent-encoded, the name is looked up.
    answer, _ = Client(server.rest_port, _get("/v1/models/módel_ü".encode())).answer()
    assert "módel_ü" in _json_error(answer, (400,))
    answer, _ = Client(server.rest_port, _get(b"/v1/models/m%C3%B3del")).answer()
    assert _parse(answer)[0] == 404, answer[:300]
    with grpc.insecure_channel(server.address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "n" * 90_000})
        with pytest.raises(grpc.RpcError) as info:
            stub.GetModelStatus(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "...(90000 characters)" in info.value.details() and len(info.value.details()) < 400


def _listen_backlog(port: int) -> int:
    """The accept-queue length of the socket listening on ``port`` (``ss``' Send-Q for a listener)."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read the listen backlog")
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
    (line,) = out.stdout.strip().splitlines()
    return int(line.split()[2])


def test_a_predict_past_the_deadline_gets_504_and_the_server_goes_on(tmp_path_factory):
    base = tmp_path_factory.mktemp("deadline")
    fx.publish_slow(base)
    fx.publish_utility(base, version=1)
    config = fx.models_config(base, {"slow": {}, "utility": {}})
    # Two inter-op threads (the fixture's default is one): the slow graph keeps one busy after the 504.
    server = fx.start_server(base, [f"--model_config_file={config}", "--rest_api_timeout_in_ms=300",
                                    "--tensorflow_inter_op_parallelism=2"])
    try:
        # About 10 ms of matmuls per thousand rounds: far past the 300 ms deadline.
        slow = _post(b'{"instances": [400000.0]}', path=b"/v1/models/slow:predict")
        answer, seconds = Client(server.rest_port, slow).answer(timeout=60)
        assert "--rest_api_timeout_in_ms=300" in _json_error(answer, (504,))
        assert seconds < 3.0, seconds  # answered at the deadline, not when the model finished
        fast, _ = Client(server.rest_port, _post(PREDICT, path=b"/v1/models/utility:predict")).answer()
        assert json.loads(_parse(fast)[2]) == {"predictions": [3.0, 6.0]}, fast
    finally:
        assert server.stop() == 0, server.log_tail()


def test_32_concurrent_clients_get_every_answer(models):
    server = _start(models, [])
    try:
        url = f"{server.rest_url}/v1/models/utility/versions/1:predict"
        expected = {"predictions": [3.0, 6.0]}

        def client(i: int) -> int:
            answered = 0
            with httpx.Client(timeout=60, headers={} if i % 2 else {"Connection": "close"}) as http:
                for _ in range(10):
                    reply = http.post(url, content=PREDICT)
                    assert reply.status_code == 200 and reply.json() == expected, reply.text
                    status = http.get(f"{server.rest_url}/v1/models/utility/versions/2")
                    assert status.status_code == 200, status.text
                    answered += 2
            return answered

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            assert sum(pool.map(client, range(32))) == 640
        # a burst of new connections waits in the listen queue rather than being dropped (and retried
        # a second later): the queue is --rest_api_backlog (1024) deep, not the standard library's 5
        assert _listen_backlog(server.rest_port) >= 1024
    finally:
        assert server.stop() == 0, server.log_tail()
