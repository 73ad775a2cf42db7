"""Do gRPC calls that never finish sending their request keep others from the model server?

grpcio's server gives a call its worker thread before the request arrives. Before the model server bounded
calls still receiving (``--grpc_max_receiving_rpcs``, ``--grpc_request_timeout_in_ms``), 16 such calls held
every worker and every other call timed out. This bench starts ``python -m tfrs_recsys.model_server`` on a
tiny SavedModel (``y = 2x + 1``) and loops legitimate Predict calls from one client for ``--seconds`` in
each of three phases, in this order:

* ``alone``: nothing else (the baseline);
* ``held``: ``--held`` calls opened first that never send a byte of their request;
* ``churn``: ``--attackers`` processes opening such calls as fast as they can, for the whole phase.

It prints one JSON line per phase (calls, failures by status, p50 / p99 / max seconds, p50 against
``alone``), then the server's threads and RSS.

    .venv/bin/python bench/grpc_half_sent.py --held 2000 --attackers 2 --seconds 20
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import tfrs_recsys  # noqa: F401  (before TensorFlow and grpc: the Keras 2 switch, grpc's transport)

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model(base: Path) -> None:
    import tensorflow as tf

    class Linear(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 2.0 * x + 1.0}

    module = Linear()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})


def _never_sent(stop):
    stop.wait()
    yield b""


def _attack(address: str, stop) -> None:
    """Opens calls that never send their request, as fast as it can, until ``stop``."""
    import grpc

    never = threading.Event()
    channels = [grpc.insecure_channel(address) for _ in range(4)]
    opened = []
    while not stop.is_set():
        opened.append(channels[len(opened) % 4].stream_unary(PREDICT).future(_never_sent(never)))
        if len(opened) > 3000:
            for call in opened[:1000]:
                call.cancel()
            del opened[:1000]
    never.set()


def _phase(stub, request, seconds: float) -> dict:
    import grpc

    latencies, failures = [], {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            stub.Predict(request, timeout=10)
            latencies.append(time.perf_counter() - start)
        except grpc.RpcError as e:
            failures[e.code().name] = failures.get(e.code().name, 0) + 1
    latencies = np.sort(latencies) if latencies else np.array([np.nan])
    return {"calls": len(latencies) + sum(failures.values()), "failures": failures,
            "p50_s": round(float(np.percentile(latencies, 50)), 4),
            "p99_s": round(float(np.percentile(latencies, 99)), 4), "max_s": round(float(latencies[-1]), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--held", type=int, default=2000, help="calls held open in the 'held' phase")
    p.add_argument("--attackers", type=int, default=2, help="processes opening such calls in 'churn'")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    args = p.parse_args()

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with tempfile.TemporaryDirectory() as folder:
        _tiny_model(Path(folder) / "m")
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "tfrs_recsys.model_server", f"--port={port}",
                                   "--rest_api_port=0", "--model_name=m", f"--model_base_path={folder}/m"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        address = f"127.0.0.1:{port}"
        try:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
            deadline = time.monotonic() + 120
            while True:
                try:
                    stub.Predict(request, timeout=5)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            results = {"alone": _phase(stub, request, args.seconds)}
            never = threading.Event()
            channel = grpc.insecure_channel(address)
            held = [channel.stream_unary(PREDICT).future(_never_sent(never)) for _ in range(args.held)]
            time.sleep(1.0)
            results["held"] = _phase(stub, request, args.seconds)
            never.set()
            for call in held:
                call.cancel()
            stop = multiprocessing.Event()
            attackers = [multiprocessing.Process(target=_attack, args=(address, stop))
                         for _ in range(args.attackers)]
            for attacker in attackers:
                attacker.start()
            time.sleep(2.0)
            results["churn"] = _phase(stub, request, args.seconds)
            stop.set()
            for attacker in attackers:
                attacker.join(timeout=30)
            for name, result in results.items():
                ratio = result["p50_s"] / results["alone"]["p50_s"]
                print(json.dumps({"phase": name, **result, "p50_vs_alone": round(ratio, 2)}))
            status = Path(f"/proc/{server.pid}/status").read_text().splitlines()
            print(json.dumps({"server": {line.split(":")[0]: line.split(":")[1].strip() for line in status
                                         if line.startswith(("Threads", "VmRSS"))}}))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
