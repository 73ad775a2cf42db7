"""What do cheap hostile HTTP requests cost the recommender service (uvicorn behind the connection guard)?

Starts the HTTP service in this process on loopback over a tiny in-process store (no model server: the
requests below never need one) and sends one request of a kind:

* ``chunks``: ``POST /events`` with a body of ``--count`` one-byte chunks (``Transfer-Encoding: chunked``):
  the seconds until it is answered, and the slowest ``GET /recall`` another client got meanwhile (each
  chunk costs the HTTP parsers time on the event loop every connection shares);
* ``params``: ``GET /recall/<user>`` with ``--count`` distinct value-less query parameters (kept under the
  64 KiB head limit): the status and the seconds until the answer.

    .venv/bin/python bench/http_abuse.py --kind chunks --count 300000
    .venv/bin/python bench/http_abuse.py --kind params --count 15000
"""
from __future__ import annotations

import argparse
import socket
import threading
import time

import httpx
import numpy as np
import pandas as pd

import tfrs_recsys  # noqa: F401  (before TensorFlow: the Keras 2 switch)
from tfrs_recsys.serving.client import ServingClient
from tfrs_recsys.serving.feature_store import FeatureStore
from tfrs_recsys.serving.http_service import BackgroundServer, create_app
from tfrs_recsys.serving.pipeline import RecallRankPipeline
from tfrs_recsys.serving.stores.memory import MemoryStore


def _send(url: str, head: bytes, body: bytes = b"") -> tuple[str, float]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=120) as conn:
        start = time.perf_counter()
        conn.sendall(head)
        try:
            conn.sendall(body)
        except OSError:
            pass  # the server answered and closed before the body was all sent
        status = conn.recv(200).split(b"\r\n")[0].decode()
        return status, time.perf_counter() - start


def chunks(url: str, count: int) -> str:
    slowest, done = [0.0], threading.Event()

    def probe() -> None:
        with httpx.Client() as http:
            while not done.is_set():
                start = time.perf_counter()
                http.get(f"{url}/recall/nobody", timeout=60)
                slowest[0] = max(slowest[0], time.perf_counter() - start)
                time.sleep(0.05)

    thread = threading.Thread(target=probe)
    thread.start()
    time.sleep(0.5)
    status, took = _send(url, b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n",
                         b"1\r\n \r\n" * count + b"0\r\n\r\n")
    time.sleep(0.5)
    done.set()
    thread.join()
    return f"{count} one-byte chunks: {status} after {took:.2f} s; slowest GET meanwhile {slowest[0]:.2f} s"


def params(url: str, count: int) -> str:
    query = "&".join(np.base_repr(i, 36).lower() for i in range(count))
    status, took = _send(url, f"GET /recall/nobody?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return f"{count} query parameters ({len(query)} bytes): {status} after {took:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("chunks", "params"), required=True)
    parser.add_argument("--count", type=int, default=300_000, help="chunks, or query parameters")
    args = parser.parse_args()
    hot = pd.DataFrame({"item_id": ["a", "b"], "hotness": [2.0, 1.0]})
    store = MemoryStore(FeatureStore({"u1": ["a"]}, hot))
    app = create_app(RecallRankPipeline(ServingClient("127.0.0.1:1", timeout=0.5), store))
    with BackgroundServer(app) as url:
        print((chunks if args.kind == "chunks" else params)(url, args.count))


if __name__ == "__main__":
    main()
