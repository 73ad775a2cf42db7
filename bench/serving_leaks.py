"""How much memory does the model server keep per bad request?

Starts ``python -m tfrs_recsys.model_server`` on loopback with a small model (``utility``) and one whose
signature raises for x <= 0 (``failing``), sends ``--warmup`` requests of a kind, then ``--requests`` more,
and prints the server process's RSS growth per request (psutil). Kinds:

* ``good``: a Predict that succeeds (the noise floor);
* ``not_found``: a Predict for a model that is not served (refused before anything runs);
* ``undecodable``: bytes that are not a PredictRequest (a raising deserializer made grpcio keep ~19 KB);
* ``model_failure``: a Predict that fails inside the model (TensorFlow keeps ~1 KB of each, see
  docs/serving.md);
* ``in_process_failure``: no server: the same SavedModel's signature called in this process with x < 0,
  this process's RSS measured (what TensorFlow alone keeps per failed call);
* ``strings``: one Predict of ``--elements`` two-byte strings (the ``echo`` signature, which answers them
  back), ``--requests`` times in turn: the server's RSS before, at its peak and after (what a request at
  ``--max_request_elements`` costs, and what stays);
* ``rest_empties``: a REST Predict of ``--elements`` empty lists (``{"instances": [[], [], ...]}``), the
  same three figures and the seconds to the answer.

    .venv/bin/python bench/serving_leaks.py --kind undecodable --requests 20000
    .venv/bin/python bench/serving_leaks.py --kind model_failure --requests 20000
    .venv/bin/python bench/serving_leaks.py --kind in_process_failure --requests 20000
    .venv/bin/python bench/serving_leaks.py --kind strings --elements 2000000 --requests 5
    .venv/bin/python bench/serving_leaks.py --kind rest_empties --elements 5000000 --requests 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import grpc
import psutil
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import serving_fixtures as fx  # noqa: E402  (the server-process helper of the tests)

KINDS = ("good", "not_found", "undecodable", "model_failure", "in_process_failure", "strings", "rest_empties")


def _caller(channel, kind: str):
    """A function sending one request of ``kind``; it returns the status code's name."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict", request_serializer=None,
                              response_deserializer=None)
    model, x = {"good": ("utility", 1.0), "not_found": ("no_such_model", 1.0),
                "model_failure": ("failing", -1.0)}.get(kind, ("utility", 1.0))
    request = predict_pb2.PredictRequest(model_spec={"name": model})
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([x], np.float32)))

    def call() -> str:
        try:
            if kind == "undecodable":
                raw(b"\xff\xff\xff\xff\x0f not a protobuf", timeout=30)
            else:
                stub.Predict(request, timeout=30)
        except grpc.RpcError as e:
            return e.code().name
        return "OK"
    return call


def _in_process(path: Path):
    """Calls the failing signature in this process; returns the call and this process's RSS reader."""
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    x = tf.constant([-1.0])

    def call() -> str:
        try:
            signature(x=x)
        except tf.errors.InvalidArgumentError:
            return "INVALID_ARGUMENT"
        return "OK"
    return call, psutil.Process().memory_info


def _measure(kind: str, call, rss, args) -> None:
    print(f"{kind}: answered {call()}")
    for _ in range(args.warmup):
        call()
    before, started = rss().rss, time.perf_counter()
    for _ in range(args.requests):
        call()
    seconds, after = time.perf_counter() - started, rss().rss
    per_request, rate = (after - before) / args.requests, args.requests / seconds
    print(f"{kind}: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB over {args.requests} requests: "
          f"{per_request:.0f} bytes per request ({rate:.0f} requests/s)")


def _strings(channel, args):
    """A Predict of ``--elements`` two-byte strings (the ``echo`` signature answers them back)."""
    request = predict_pb2.PredictRequest(model_spec={"name": "utility", "signature_name": "echo"})
    payload = request.inputs["payload"]
    payload.dtype = tf.string.as_datatype_enum
    payload.tensor_shape.dim.add(size=args.elements)
    payload.string_val.extend([b"%02d" % (i % 100) for i in range(args.elements)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def send() -> str:
        try:
            stub.Predict(request, timeout=120)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name
    return send


def _rest_empties(server, args):
    """A REST Predict body of ``--elements`` empty lists: no tensor element, millions of JSON values."""
    import urllib.error
    import urllib.request

    body = b'{"instances": [' + b",".join([b"[]"] * args.elements) + b"]}"
    url = f"{server.rest_url}/v1/models/utility:predict"

    def send() -> str:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=120) as answer:
                return str(answer.status)
        except urllib.error.HTTPError as e:
            return str(e.code)
    return send


def _peaks(kind: str, send, rss, args) -> None:
    """``--requests`` calls of ``send``, one at a time; RSS sampled every 20 ms."""
    import threading

    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss().rss)

    threading.Thread(target=sample, daemon=True).start()
    start = rss().rss
    for i in range(args.requests):
        peak[0], before, began = 0, rss().rss, time.perf_counter()
        answer, seconds = send(), time.perf_counter() - began
        time.sleep(0.2)
        print(f"{kind}: request {i + 1} of {args.elements} elements: {answer} in {seconds:.2f} s; RSS "
              f"{before / 2**20:.0f} -> peak {max(peak[0], before) / 2**20:.0f} -> after "
              f"{rss().rss / 2**20:.0f} MiB")
    done.set()
    print(f"{kind}: RSS {start / 2**20:.0f} -> {rss().rss / 2**20:.0f} MiB over {args.requests} requests")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=KINDS, required=True, help="which request to repeat")
    p.add_argument("--requests", type=int, default=20_000, help="requests measured, after the warm-up")
    p.add_argument("--warmup", type=int, default=2_000, help="requests sent before the first measurement")
    p.add_argument("--elements", type=int, default=2_000_000, help="strings or empty lists per request")
    p.add_argument("--server-flag", action="append", default=[], help="a model server flag, repeatable")
    args = p.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="serving-leaks-"))
    fx.publish_utility(base)
    failing = fx.publish_failing(base)
    if args.kind == "in_process_failure":
        _measure(args.kind, *_in_process(failing), args)
        return 0
    config = fx.models_config(base, {"utility": {}, "failing": {}})
    server = fx.start_server(base, [f"--model_config_file={config}", *args.server_flag])
    try:
        options = [(f"grpc.max_{way}_message_length", 256 << 20) for way in ("send", "receive")]
        with grpc.insecure_channel(server.address, options=options) as channel:
            server_rss = psutil.Process(server.proc.pid).memory_info
            if args.kind == "strings":
                _peaks(args.kind, _strings(channel, args), server_rss, args)
            elif args.kind == "rest_empties":
                _peaks(args.kind, _rest_empties(server, args), server_rss, args)
            else:
                _measure(f"{args.kind} (server)", _caller(channel, args.kind), server_rss, args)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
