"""Soak: does the model server stay fast, small and correct through rollouts and hostile traffic?

One run starts ``python -m tfrs_recsys.model_server`` (default load-retry flags) on a ranker
(100 candidates per request) and, for ``--minutes``:

* ``--clients`` threads send valid Predict requests back to back over gRPC;
* every ``--version-every`` seconds a new version is dropped into the base path as an operator
  would: complete versions by copy-then-rename; on the way one corrupt version (its
  ``saved_model.pb`` is not a protobuf) and one copied in place slowly (``saved_model.pb``
  first, then the variables in chunks over several poll intervals, as a slow ``cp -r``);
* one thread mixes in ``--malformed`` hostile requests spread over the run: undecodable gRPC
  bytes, tensors whose shape does not match their values, unknown models and signatures, bad
  REST JSON, bad ``Content-Length`` and raw junk on the REST port;
* a monitor samples the server's RSS every second and polls GetModelStatus to see each version
  become AVAILABLE (and how long it spent LOADING: its own load and warm-up time).

It prints, and writes as JSON (``--out``), the targets: 0 failed valid requests; RSS growth
<= 50 MB between minute 2 and the end; p99 <= 3 x p50 at the clients' concurrency outside the
10 s after each version load (and over the whole soak, for reference); every good version
served within the poll interval plus its own load and warm-up time (plus the monitor's 0.2 s
resolution).

    .venv/bin/python bench/soak.py                       # 10 minutes, 8 clients, 100,000 malformed
    .venv/bin/python bench/soak.py --minutes 3 --malformed 20000 --version-every 30
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import grpc
import httpx
import psutil
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import serving_fixtures as fx  # noqa: E402  (fixture models and the server-process helper)

MODEL = "ranker"
CANDIDATES = 100
QUIET_AFTER_LOAD_S = 10.0
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
LOADING = get_model_status_pb2.ModelVersionStatus.LOADING


def valid_request() -> predict_pb2.PredictRequest:
    rng = np.random.default_rng(0)
    columns = {
        "user_id": np.array([f"u{rng.integers(100)}" for _ in range(CANDIDATES)], object),
        "item_id": np.array([f"i{rng.integers(1000)}" for _ in range(CANDIDATES)], object),
        "genres": np.array(["Action|Drama"] * CANDIDATES, object),
        "price": rng.uniform(0, 5, CANDIDATES).astype(np.float32),
        "device": np.array(["mobile", "desktop"] * (CANDIDATES // 2), object),
    }
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    for name, values in columns.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
    return request


# -- rollouts ------------------------------------------------------------------------------------

def drop_complete(template: Path, base: Path, version: int) -> float:
    """Copies the template beside the versions, then renames it into place; returns when it is visible."""
    staging = base / MODEL / f".incoming-{version}"
    shutil.copytree(template, staging)
    os.replace(staging, base / MODEL / str(version))
    return time.monotonic()


def drop_corrupt(base: Path, version: int) -> float:
    fx.write_corrupt_version(base, MODEL, version)
    return time.monotonic()


def drop_slowly(template: Path, base: Path, version: int, seconds: float) -> float:
    """Copies in place, ``saved_model.pb`` first, the rest in chunks over ``seconds``; returns when done."""
    target = base / MODEL / str(version)
    target.mkdir()
    files = sorted(template.rglob("*"), key=lambda p: (p.name != "saved_model.pb", str(p)))
    payload = [(p, p.read_bytes()) for p in files if p.is_file()]
    chunks = sum(max(1, len(data) // 4096) for _, data in payload)
    pause = seconds / chunks
    for path, data in payload:
        out = target / path.relative_to(template)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            step = max(1, len(data) // max(1, len(data) // 4096))
            for at in range(0, max(1, len(data)), step):
                f.write(data[at:at + step])
                f.flush()
                time.sleep(pause)
    return time.monotonic()


# -- hostile traffic -----------------------------------------------------------------------------

def malformed_sender(address: str, rest_port: int, total: int, seconds: float, stop: threading.Event,
                     counts: dict) -> None:
    """Sends ``total`` hostile requests evenly over ``seconds``; counts answers by kind."""
    rng = random.Random(0)
    channel = grpc.insecure_channel(address)
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict", request_serializer=None,
                              response_deserializer=None)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    http = httpx.Client(base_url=f"http://127.0.0.1:{rest_port}", timeout=10)
    good = valid_request().SerializeToString()

    def hostile_proto():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = rng.choice([MODEL, "nosuch", "x" * 5000])
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=rng.choice([-5, 50_000_000, 3, 1 << 40]))])
        request.inputs[rng.choice(["price", "user_id", "zzz"])].CopyFrom(tensor_pb2.TensorProto(
            dtype=rng.choice([types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT64]),
            tensor_shape=shape, float_val=[1.0]))
        return request

    def rest_junk():
        with socket.create_connection(("127.0.0.1", rest_port), timeout=10) as s:
            s.sendall(rng.choice([b"\x16\x03\x01\x02\x00\x01\x00", b"GET\r\n\r\n",
                                  b"POST /v1/models/ranker:predict HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                                  b"POST /v1/models/ranker:predict HTTP/1.1\r\nContent-Length: 1e18"
                                  b"\r\n\r\n"]))
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            head = answer.split(b"\r\n", 1)[0].split()
            return f"HTTP {head[1].decode()}" if len(head) > 1 else "no answer"

    kinds = {
        "grpc bytes": lambda: raw(rng.randbytes(rng.randrange(1, 64)), timeout=10) and "OK",
        "grpc mutated": lambda: raw(good[:rng.randrange(len(good))] + b"\xff\xff", timeout=10) and "OK",
        "grpc shapes": lambda: stub.Predict(hostile_proto(), timeout=10) and "OK",
        "rest json": lambda: "HTTP %d" % http.post(f"/v1/models/{MODEL}:predict", content=rng.choice(
            [b"{", b'{"instances": [[[', b"[]", b'{"inputs": 1}'])).status_code,
        "rest junk": rest_junk,
    }
    names = list(kinds)
    start = time.monotonic()
    for n in range(total):
        if stop.is_set():
            break
        delay = start + n * seconds / total - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        kind = names[n % len(names)]
        try:
            outcome = kinds[kind]()
        except grpc.RpcError as e:
            outcome = e.code().name
        except (OSError, httpx.HTTPError) as e:
            outcome = type(e).__name__
        counts[f"{kind}: {outcome}"] = counts.get(f"{kind}: {outcome}", 0) + 1
    channel.close()
    http.close()


# -- valid traffic and monitoring ----------------------------------------------------------------

def client(address: str, stop: threading.Event, out: list) -> None:
    channel = grpc.insecure_channel(address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = valid_request()
    while not stop.is_set():
        start = time.monotonic()
        try:
            reply = stub.Predict(request, timeout=30)
            out.append((start, time.monotonic() - start, reply.model_spec.version.value, ""))
        except grpc.RpcError as e:
            out.append((start, time.monotonic() - start, 0, f"{e.code().name}: {e.details()[:200]}"))
    channel.close()


def monitor(address: str, pid: int, stop: threading.Event, rss: list, states: dict) -> None:
    """RSS every second; the first time each version is seen LOADING and AVAILABLE (0.2 s polls)."""
    channel = grpc.insecure_channel(address)
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    process = psutil.Process(pid)
    next_rss = 0.0
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_rss:
            rss.append((now, process.memory_info().rss))
            next_rss = now + 1.0
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL
        try:
            for status in stub.GetModelStatus(request, timeout=5).model_version_status:
                seen = states.setdefault(status.version, {})
                seen.setdefault(get_model_status_pb2.ModelVersionStatus.State.Name(status.state), now)
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    channel.close()


def percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "ratio": None, "requests": 0}
    ms = np.array(latencies) * 1000
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    return {"p50_ms": p50, "p99_ms": p99, "ratio": p99 / p50, "requests": len(latencies)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--malformed", type=int, default=100_000, help="hostile requests spread over the run")
    p.add_argument("--version-every", type=float, default=60, help="seconds between new versions")
    p.add_argument("--poll-seconds", type=float, default=2,
                   help="the server's --file_system_poll_wait_seconds")
    p.add_argument("--out", default="soak.json")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    print("command:", " ".join([".venv/bin/python", "bench/soak.py", *given]))
    duration = args.minutes * 60

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        tmp = Path(tmp)
        template = fx.publish_ranker(tmp / "template", name=MODEL, version=1)
        base = tmp / "models"
        (base / MODEL).mkdir(parents=True)
        drop_complete(template, base, 1)
        server = fx.start_server(tmp, [f"--model_name={MODEL}", f"--model_base_path={base / MODEL}",
                                       f"--file_system_poll_wait_seconds={args.poll_seconds}"])
        stop, results, rss, states, counts = threading.Event(), [], [], {}, {}
        threads = [threading.Thread(target=client, args=(server.address, stop, results), daemon=True)
                   for _ in range(args.clients)]
        threads.append(threading.Thread(target=monitor, daemon=True,
                                        args=(server.address, server.proc.pid, stop, rss, states)))
        threads.append(threading.Thread(target=malformed_sender, daemon=True,
                                        args=(server.address, server.rest_port, args.malformed, duration,
                                              stop, counts)))
        start = time.monotonic()
        for t in threads:
            t.start()
        drops, version = {}, 1
        plan = ["good", "corrupt", "good", "slow"]
        while time.monotonic() - start + args.version_every < duration:
            time.sleep(max(0.0, start + version * args.version_every - time.monotonic()))
            version += 1
            kind = plan[version - 2] if version - 2 < len(plan) else "good"
            if kind == "good":
                drops[version] = ("good", drop_complete(template, base, version))
            elif kind == "corrupt":
                drops[version] = ("corrupt", drop_corrupt(base, version))
            else:
                drops[version] = ("slow copy", drop_slowly(template, base, version, 3 * args.poll_seconds))
        time.sleep(max(0.0, start + duration - time.monotonic()))
        stop.set()
        for t in threads:
            t.join(timeout=60)
        log = server.log_tail(2000)
        code = server.stop()

    failed = [r for r in results if r[3]]
    loads = [states[v]["AVAILABLE"] for v in states if "AVAILABLE" in states[v]]
    quiet = [r[1] for r in results if not r[3] and not any(0 <= r[0] - t < QUIET_AFTER_LOAD_S for t in loads)]
    rss_mb = [(t - start, value / 2**20) for t, value in rss]
    at_two = [v for t, v in rss_mb if 110 <= t <= 130] or [rss_mb[0][1]]
    at_end = [v for t, v in rss_mb if t >= rss_mb[-1][0] - 20]
    rollouts = []
    for v, (kind, dropped) in sorted(drops.items()):
        seen = states.get(v, {})
        entry = {"version": v, "kind": kind}
        if "AVAILABLE" in seen:
            own = seen["AVAILABLE"] - seen.get("LOADING", seen["AVAILABLE"])
            entry |= {"served_after_s": seen["AVAILABLE"] - dropped, "own_load_s": own,
                      "within_bound": seen["AVAILABLE"] - dropped <= args.poll_seconds + own + 0.2}
        else:
            entry |= {"served_after_s": None, "states": sorted(seen)}
        rollouts.append(entry)
    summary = {
        "minutes": args.minutes, "clients": args.clients, "poll_seconds": args.poll_seconds,
        "valid_requests": len(results), "failed_valid_requests": len(failed), "failures": failed[:5],
        "malformed_answers": counts, "malformed_sent": sum(counts.values()),
        "rss_mb_minute_2": float(np.mean(at_two)), "rss_mb_end": float(np.mean(at_end)),
        "rss_growth_mb": float(np.mean(at_end) - np.mean(at_two)),
        "latency_outside_loads": percentiles(quiet),
        "latency_whole": percentiles([r[1] for r in results if not r[3]]),
        "rollouts": rollouts, "server_exit": code,
    }
    Path(args.out).write_text(json.dumps(summary, indent=1))

    quiet_stats, whole = summary["latency_outside_loads"], summary["latency_whole"]
    print(f"\n{summary['valid_requests']:,} valid requests from {args.clients} clients over "
          f"{args.minutes} min, {summary['malformed_sent']:,} malformed")
    print(f"  failed valid requests: {len(failed)} [{'OK' if not failed else 'MISS'}]")
    print(f"  RSS {summary['rss_mb_minute_2']:.0f} MB at minute 2 -> {summary['rss_mb_end']:.0f} MB at the "
          f"end: growth {summary['rss_growth_mb']:+.1f} MB "
          f"[{'OK' if summary['rss_growth_mb'] <= 50 else 'MISS'}]")
    print(f"  outside {QUIET_AFTER_LOAD_S:.0f} s after each load: p50 {quiet_stats['p50_ms']:.2f} ms, "
          f"p99 {quiet_stats['p99_ms']:.2f} ms, p99/p50 {quiet_stats['ratio']:.2f}x "
          f"[{'OK' if quiet_stats['ratio'] <= 3 else 'MISS'}]")
    print(f"  whole soak:              p50 {whole['p50_ms']:.2f} ms, p99 {whole['p99_ms']:.2f} ms, "
          f"p99/p50 {whole['ratio']:.2f}x")
    for r in rollouts:
        if r["served_after_s"] is None:
            seen = ", ".join(r["states"]) or "none"
            print(f"  v{r['version']} ({r['kind']}): never served (states seen: {seen})")
        else:
            print(f"  v{r['version']} ({r['kind']}): served {r['served_after_s']:.2f} s after it was "
                  f"complete; own load {r['own_load_s']:.2f} s [{'OK' if r['within_bound'] else 'MISS'}]")
    print("  malformed answers: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if failed:
        print("  first failures:", *failed[:3], sep="\n    ")
    if code != 0:
        print(f"  server exited with {code}:\n{log}")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
