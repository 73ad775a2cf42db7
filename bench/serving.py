"""What does serving over gRPC cost next to calling the SavedModel in-process?

For a retrieval model (k=100) and a ranker (100 candidates per request), one run measures
latency p50/p99 and throughput of

* the baseline: the signature function called in this process, from 1 and 8 threads;
* gRPC Predict (``ServingClient.predict``) to ``python -m tfrs_recsys.model_server`` in its
  own process over loopback, from 1 and 8 client threads, with server-side batching off and on;
* the transport floor: a bare grpcio round trip to an empty unary method of a server in its own
  process (no TensorFlow, no protos), and a GetModelStatus round trip to the model server;
* the REST front end (uvicorn): the ranker's Predict as JSON columns and a model status GET, from
  1 and 32 client threads (one pooled httpx client), to see its tail under concurrency;
* with ``--client-processes``, the gRPC calls at concurrency 8 made from 8 client processes (one channel
  and interpreter each, as separate callers are) rather than 8 threads of this process, whose shared
  interpreter lock spreads their requests out in time;
* the CPU milliseconds each call costs this process (the clients, or the in-process model) and the
  server process, and the model's in-process cost on a batch of 8 requests' rows (of
  ``--batch-requests`` when fewer): with clients and server on the same cores, these bound what
  server-side batching can gain with every core busy (printed as "cpu budget").

Both model paths start from the same numpy inputs and end with numpy outputs: the baseline
converts to tensors and back, the gRPC path builds the PredictRequest and reads the response
tensors. All configurations run interleaved in shuffled rounds (every server up throughout), so
load from other processes on a shared machine falls on all of them alike. TensorFlow's thread
pools are set alike in this process and in the servers (``--intra-op-threads`` /
``--inter-op-threads``, 0 = TensorFlow's default), so the figures compare serving overhead, not
thread settings.

Targets, printed with each figure: the serving overhead, gRPC Predict p50 - in-process p50 at
concurrency 1, is at most the bare grpcio round trip + 0.15 ms; with batching on at
concurrency 8, throughput is at least 1.5x batching off; gRPC p99 <= 3 x p50 at concurrency 8;
REST p99 <= 5 x p50 at concurrency 32 (the stdlib server it replaced showed p99 1-2 s at p50 4 ms).
Absolute times depend on the (shared) machine; compare differences and ratios of one run.

Without ``--export-base`` the bench builds representative SavedModels with the export
contracts' shapes (retrieval: user_id [B], history [B, 50] -> item_ids, scores [B, 100] over
a 1,682-item catalog (``--catalog-items``) through one Transformer block; ranker: ids, 8 categorical
and 4 numeric raw features -> ctr, cvr, ctcvr [B] from hashed embeddings and two MLP towers).

    .venv/bin/python bench/serving.py --requests 300
    .venv/bin/python bench/serving.py --requests 300 --intra-op-threads 1 --inter-op-threads 1
    .venv/bin/python bench/serving.py --requests 300 --catalog-items 100000
    .venv/bin/python bench/serving.py --requests 400 --batch-requests 8 --batch-timeout-micros 4000
    .venv/bin/python bench/serving.py --requests 400 --batch-requests 8 --batch-timeout-micros 4000 \
        --client-processes
    .venv/bin/python bench/serving.py --export-base exports --retrieval-name retrieval_portable \
        --ranker-name esmm
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import serving_fixtures as fx  # noqa: E402  (the server-process helper of the tests)

from tfrs_recsys.export.tfserving import existing_versions, publish_version, write_models_config  # noqa: E402
from tfrs_recsys.model_server.config_file import MODEL_BATCHING_FILE  # noqa: E402
from tfrs_recsys.model_server.servable import read_meta_graph  # noqa: E402
from tfrs_recsys.serving.client import ServingClient  # noqa: E402

NUM_ITEMS, DIM, HISTORY, TOP_K, CANDIDATES = 1682, 64, 50, 100, 100  # NUM_ITEMS: the default catalog
CATEGORICAL = [f"c{i}" for i in range(8)]
NUMERIC = [f"n{i}" for i in range(4)]


# -- representative models ----------------------------------------------------------------------

def _retrieval_module(num_items: int):
    rng = np.random.default_rng(0)
    ids = [f"m{i}" for i in range(num_items)]

    def dense(n_in, n_out):
        return tf.Variable(rng.normal(scale=n_in ** -0.5, size=(n_in, n_out)).astype(np.float32))

    class Retrieval(tf.Module):
        def __init__(self):
            super().__init__()
            self.items = tf.Variable(rng.normal(size=(num_items + 1, DIM)).astype(np.float32))
            self.users = tf.Variable(rng.normal(size=(5000, DIM)).astype(np.float32))
            self.positions = tf.Variable(rng.normal(scale=0.1, size=(HISTORY, DIM)).astype(np.float32))
            self.wq, self.wk, self.wv, self.wo = (dense(DIM, DIM), dense(DIM, DIM), dense(DIM, DIM),
                                                  dense(DIM, DIM))
            self.ff1, self.ff2 = dense(DIM, 4 * DIM), dense(4 * DIM, DIM)
            self.ids = tf.constant(ids)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(ids),
                                                    tf.range(1, num_items + 1, dtype=tf.int64)), 0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                      tf.TensorSpec([None, HISTORY], tf.string, name="history")])
        def serving_default(self, user_id, history):
            idx = self.table.lookup(history)
            mask = tf.cast(idx > 0, tf.float32)
            x = tf.gather(self.items, idx) + self.positions
            q, k, v = x @ self.wq, x @ self.wk, x @ self.wv
            att = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / DIM ** 0.5
                                + (1.0 - mask[:, None, :]) * -1e9)
            x = x + tf.matmul(att, v) @ self.wo
            x = x + tf.nn.relu(x @ self.ff1) @ self.ff2
            pooled = tf.math.divide_no_nan(tf.reduce_sum(x * mask[..., None], 1),
                                           tf.reduce_sum(mask, 1, keepdims=True))
            query = pooled + tf.gather(self.users, tf.strings.to_hash_bucket_fast(user_id, 5000))
            scores, top = tf.math.top_k(tf.matmul(query, self.items[1:], transpose_b=True), k=TOP_K)
            return {"item_ids": tf.gather(self.ids, top), "scores": scores}

    return Retrieval()


def _ranker_module():
    rng = np.random.default_rng(1)
    fields = ["user_id", "item_id", *CATEGORICAL]
    width = 16 * len(fields) + len(NUMERIC)

    def mlp(sizes):
        return [tf.Variable(rng.normal(scale=a ** -0.5, size=(a, b)).astype(np.float32))
                for a, b in zip(sizes, sizes[1:])]

    class Ranker(tf.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = tf.Variable(
                rng.normal(scale=0.05, size=(len(fields), 10_000, 16)).astype(np.float32))
            self.ctr_tower, self.cvr_tower = mlp([width, 256, 128, 64, 1]), mlp([width, 256, 128, 64, 1])

        def _tower(self, x, weights):
            for w in weights[:-1]:
                x = tf.nn.relu(x @ w)
            return tf.sigmoid(tf.squeeze(x @ weights[-1], -1))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=n) for n in fields]
                     + [tf.TensorSpec([None], tf.float32, name=n) for n in NUMERIC])
        def serving_default(self, *features):
            parts = [tf.gather(self.embeddings[i], tf.strings.to_hash_bucket_fast(f, 10_000))
                     for i, f in enumerate(features[:len(fields)])]
            dense_x = tf.stack([tf.where(tf.math.is_nan(f), 0.0, f) for f in features[len(fields):]], axis=1)
            x = tf.concat(parts + [dense_x], axis=1)
            ctr, cvr = self._tower(x, self.ctr_tower), self._tower(x, self.cvr_tower)
            return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}

    return Ranker()


def build_models(base: Path, num_items: int) -> None:
    def save(module):
        return lambda path: tf.saved_model.save(module, path,
                                                signatures={"serving_default": module.serving_default})

    publish_version(base, "retrieval", save(_retrieval_module(num_items)), version=1,
                    warmup=[("serving_default", retrieval_inputs(num_items))])
    publish_version(base, "ranker", save(_ranker_module()), version=1,
                    warmup=[("serving_default", ranker_inputs(None))])


def retrieval_inputs(num_items: int = NUM_ITEMS) -> dict[str, np.ndarray]:
    history = [""] * 20 + [f"m{i * 37 % num_items}" for i in range(HISTORY - 20)]
    return {"user_id": np.array(["u42"], object), "history": np.array([history], object)}


def ranker_inputs(signature) -> dict[str, np.ndarray]:
    """100 candidate rows for every input of the ranker signature (or the bench model's inputs)."""
    rng = np.random.default_rng(2)
    if signature is None:
        specs = ({n: tf.string for n in ["user_id", "item_id", *CATEGORICAL]}
                 | {n: tf.float32 for n in NUMERIC})
    else:
        specs = {k: tf.dtypes.as_dtype(v.dtype) for k, v in signature.inputs.items()}
    out = {}
    for name, dtype in specs.items():
        if dtype == tf.string:
            out[name] = np.array([f"{name}_{rng.integers(1000)}" for _ in range(CANDIDATES)], object)
        else:
            out[name] = rng.normal(size=CANDIDATES).astype(dtype.as_numpy_dtype)
    return out


# -- measurement --------------------------------------------------------------------------------

def run_block(call, requests: int, concurrency: int) -> tuple[list[float], float]:
    """Per-call latencies (s) and wall time of ``requests`` calls from ``concurrency`` threads."""
    def worker(n):
        out = []
        for _ in range(n):
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
        return out

    per_thread = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    latencies = []
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for part in pool.map(worker, per_thread):
            latencies.extend(part)
    return latencies, time.perf_counter() - start


# A client process: takes pickled commands on stdin, answers each with a pickled reply on stdout.
# ("add", key, address, model, inputs) makes a client of a configuration (and warms it up);
# ("run", key, n) makes n calls and answers (latencies in s, this process's CPU seconds).
_CLIENT_PROCESS = """
import pickle, sys, time
from tfrs_recsys.serving.client import ServingClient
calls, clients = {}, {}
source, sink = sys.stdin.buffer, sys.stdout.buffer
while True:
    try:
        command = pickle.load(source)
    except EOFError:
        break
    if command[0] == "add":
        _, key, address, model, inputs = command
        client = clients.setdefault(address, ServingClient(address, timeout=30))
        calls[key] = lambda client=client, model=model, inputs=inputs: client.predict(model, inputs)
        for _ in range(20):
            calls[key]()
        reply = None
    else:
        _, key, n = command
        cpu, latencies = time.process_time(), []
        for _ in range(n):
            start = time.perf_counter()
            calls[key]()
            latencies.append(time.perf_counter() - start)
        reply = (latencies, time.process_time() - cpu)
    pickle.dump(reply, sink)
    sink.flush()
"""


class ClientProcesses:
    """``n`` client processes, each with its own gRPC channel and interpreter: callers that do not share
    one Python interpreter's lock, as separate services calling the model server do."""

    def __init__(self, n: int):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.procs = [subprocess.Popen([sys.executable, "-c", _CLIENT_PROCESS], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, env=env) for _ in range(n)]

    def _ask(self, commands: list) -> list:
        for proc, command in zip(self.procs, commands):
            pickle.dump(command, proc.stdin)
            proc.stdin.flush()
        return [pickle.load(proc.stdout) for proc, _ in zip(self.procs, commands)]

    def add(self, key, address: str, model: str, inputs: dict[str, np.ndarray]) -> "ProcessBlock":
        self._ask([("add", key, address, model, inputs)] * len(self.procs))
        return ProcessBlock(self, key)

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(timeout=60)


class ProcessBlock:
    """A configuration measured from every client process at once (:class:`ClientProcesses`)."""

    def __init__(self, processes: ClientProcesses, key):
        self.processes, self.key = processes, key

    def block(self, requests: int) -> tuple[list[float], float, float]:
        """Latencies (s), wall time and the clients' CPU seconds of ``requests`` calls spread over them."""
        n = len(self.processes.procs)
        start = time.perf_counter()
        shares = [requests // n + (i < requests % n) for i in range(n)]
        replies = self.processes._ask([("run", self.key, share) for share in shares])
        wall = time.perf_counter() - start
        return [t for latencies, _ in replies for t in latencies], wall, sum(cpu for _, cpu in replies)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_interleaved(configs: dict[tuple, tuple], requests: int, rounds: int) -> dict[tuple, dict]:
    """Every configuration ``key -> (call or ProcessBlock, concurrency, server pid or None)`` measured in
    ``rounds`` shuffled rounds of ``requests / rounds`` calls, so that load from other processes hits all
    of them alike. Besides latency and throughput, each gets the CPU milliseconds per call of its clients
    (this process, its client processes, or the in-process model) and of its server."""
    for call, _, _ in configs.values():
        for _ in range(20 if callable(call) else 0):
            call()
    samples = {key: {"latencies": [], "wall": 0.0, "cpu": 0.0, "server_cpu": 0.0} for key in configs}
    rng = np.random.default_rng(0)
    keys = list(configs)
    per_round = max(1, requests // rounds)
    for _ in range(rounds):
        for i in rng.permutation(len(keys)):
            call, concurrency, pid = configs[keys[i]]
            cpu, server_cpu = time.process_time(), process_cpu_seconds(pid) if pid else 0.0
            if isinstance(call, ProcessBlock):
                latencies, wall, client_cpu = call.block(per_round)
            else:
                latencies, wall = run_block(call, per_round, concurrency)
                client_cpu = time.process_time() - cpu
            sample = samples[keys[i]]
            sample["cpu"] += client_cpu
            sample["server_cpu"] += process_cpu_seconds(pid) - server_cpu if pid else 0.0
            sample["latencies"] += latencies
            sample["wall"] += wall
    out = {}
    for key, sample in samples.items():
        ms, calls = np.array(sample["latencies"]) * 1000, len(sample["latencies"])
        out[key] = {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                    "qps": calls / sample["wall"], "cpu_ms": 1000 * sample["cpu"] / calls,
                    "server_cpu_ms": 1000 * sample["server_cpu"] / calls}
    return out


def in_process_call(path: Path, inputs: dict[str, np.ndarray]):
    """numpy in, numpy out, through the SavedModel's signature function in this process."""
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda: {k: v.numpy() for k, v in fn(**{n: tf.constant(a) for n, a in inputs.items()}).items()}


def grpc_call(client: ServingClient, model: str, inputs: dict[str, np.ndarray]):
    """numpy in, numpy out, through a PredictRequest over gRPC (the product's client)."""
    return lambda: client.predict(model, inputs)


def rest_predict_call(http: httpx.Client, model: str, inputs: dict[str, np.ndarray]):
    """numpy in, numpy out, through REST Predict with JSON columns (``{"inputs": {...}}``)."""
    body = {"inputs": {name: array.astype(str).tolist() if array.dtype == object else array.tolist()
                       for name, array in inputs.items()}}

    def call():
        reply = http.post(f"/v1/models/{model}:predict", json=body)
        reply.raise_for_status()
        return {k: np.asarray(v) for k, v in reply.json()["outputs"].items()}
    return call


def rest_status_call(http: httpx.Client, model: str):
    """A REST model status GET: uvicorn, the guard and a near-empty handler only."""
    return lambda: http.get(f"/v1/models/{model}").raise_for_status()


def status_call(client: ServingClient, model: str):
    """A bare GetModelStatus round trip (``ServingClient.status``): gRPC and a near-empty handler only."""
    return lambda: client.status(model)


# An empty unary method on a bare grpcio server: what a loopback round trip costs without TensorFlow,
# protos or our handlers. Run in its own process, as the model server is.
_BARE_SERVER = """
import sys
from concurrent import futures
import grpc
handler = grpc.method_handlers_generic_handler("bench.Empty", {
    "Call": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")})
server = grpc.server(futures.ThreadPoolExecutor(8))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
"""


def start_bare_grpc_server() -> tuple[subprocess.Popen, str]:
    """A bare grpcio server (one empty unary method) in its own process; stops when its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", _BARE_SERVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, f"127.0.0.1:{int(proc.stdout.readline())}"


def bare_call(channel):
    """One round trip of the empty method: bytes in, bytes out, no (de)serialization."""
    call = channel.unary_unary("/bench.Empty/Call", request_serializer=None, response_deserializer=None)
    return lambda: call(b"", timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export-base", default=None, help="serve these exports instead of building bench models")
    p.add_argument("--catalog-items", type=int, default=NUM_ITEMS,
                   help="items the bench retrieval model scores per request (without --export-base)")
    p.add_argument("--retrieval-name", default="retrieval")
    p.add_argument("--ranker-name", default="ranker")
    p.add_argument("--requests", type=int, default=300, help="measured calls per configuration")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds the calls are spread over")
    p.add_argument("--max-batch-size", type=int, default=512)
    p.add_argument("--batch-timeout-micros", type=int, default=0)
    p.add_argument("--batch-requests", type=int, default=0,
                   help="batch each model by its own batching_params.pbtxt: max_batch_size = N x the "
                        "model's rows per request, with --batch-timeout-micros")
    p.add_argument("--client-processes", action="store_true",
                   help="make the gRPC calls at concurrency 8 from 8 client processes, not 8 threads of "
                        "this one")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="TensorFlow intra-op threads, here and in the servers")
    p.add_argument("--inter-op-threads", type=int, default=0,
                   help="TensorFlow inter-op threads, here and in the servers")
    args = p.parse_args(argv)
    for flag in ("requests", "rounds", "max_batch_size"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    for flag in ("batch_requests", "batch_timeout_micros"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag.replace('_', '-')} must be >= 0")
    batch = min(8, args.batch_requests or 8)  # requests in the largest batch 8 clients can form
    print("command:",
          " ".join([".venv/bin/python", "bench/serving.py", *(argv if argv is not None else sys.argv[1:])]))
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp = Path(tmp)
        base = Path(args.export_base).resolve() if args.export_base else tmp / "models"
        if not args.export_base:
            build_models(base, args.catalog_items)
        names = {"retrieval": args.retrieval_name, "ranker": args.ranker_name}
        paths = {}
        for kind, name in names.items():
            versions = existing_versions(base / name)
            if not versions:
                sys.exit(f"error: no versions of {name} under {base}; build exports or omit --export-base")
            paths[kind] = base / name / str(versions[-1])
        ranker_sig = read_meta_graph(paths["ranker"]).signature_def["serving_default"]
        inputs = {"retrieval": retrieval_inputs(args.catalog_items),
                  "ranker": ranker_inputs(ranker_sig if args.export_base else None)}
        config = write_models_config(tmp / "models.config",
                                     [{"name": n, "base_path": str(base / n)} for n in names.values()])
        params = tmp / "batching.txt"
        params.write_text(f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                          f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                          "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n")
        per_model = []
        if args.batch_requests:
            if args.export_base:
                sys.exit("error: --batch-requests writes into the version directories; use the bench models")
            for kind, path in paths.items():  # a batch fills when every client's request is in
                rows = next(iter(inputs[kind].values())).shape[0]
                (path / MODEL_BATCHING_FILE).write_text(
                    f"max_batch_size {{ value: {args.batch_requests * rows} }}\n"
                    f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                    "max_enqueued_batches { value: 100 }\n")
            per_model = ["--enable_per_model_batching_parameters"]

        # the servers' thread pools as this process's (the test helper pins 1)
        common = [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0",
                  f"--tensorflow_intra_op_parallelism={args.intra_op_threads}",
                  f"--tensorflow_inter_op_parallelism={args.inter_op_threads}"]
        servers = {"grpc": fx.start_server(tmp, common)}
        try:
            servers["grpc+batching"] = fx.start_server(tmp, [*common, "--enable_batching", *per_model,
                                                             f"--batching_parameters_file={params}"])
        except BaseException:
            servers["grpc"].stop()
            raise
        clients = {mode: ServingClient(server.address, timeout=30) for mode, server in servers.items()}
        rest = httpx.Client(base_url=servers["grpc"].rest_url, timeout=60,
                            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        bare_server, bare_address = start_bare_grpc_server()
        bare_channel = grpc.insecure_channel(bare_address)
        processes = ClientProcesses(8) if args.client_processes else None
        try:
            configs = {}
            for kind in ("retrieval", "ranker"):
                local = in_process_call(paths[kind], inputs[kind])
                # what the largest batch 8 clients can form costs the model: the most batching can save
                merged = {name: np.concatenate([array] * batch) for name, array in inputs[kind].items()}
                configs[(kind, f"in-process x{batch}", 1)] = (in_process_call(paths[kind], merged), 1, None)
                for c in (1, 8):
                    configs[(kind, "in-process", c)] = (local, c, None)
                    for mode, client in clients.items():
                        call = grpc_call(client, names[kind], inputs[kind])
                        if processes is not None and c == 8:
                            call = processes.add((kind, mode), servers[mode].address, names[kind],
                                                 inputs[kind])
                        configs[(kind, mode, c)] = (call, c, servers[mode].proc.pid)
            grpc_pid = servers["grpc"].proc.pid
            status = status_call(clients["grpc"], names["ranker"])
            configs[("transport", "status rtt", 1)] = (status, 1, grpc_pid)
            configs[("transport", "bare grpcio", 1)] = (bare_call(bare_channel), 1, bare_server.pid)
            rest_predict = rest_predict_call(rest, names["ranker"], inputs["ranker"])
            for c in (1, 32):
                configs[("ranker", "rest", c)] = (rest_predict, c, grpc_pid)
                configs[("transport", "rest status", c)] = (rest_status_call(rest, names["ranker"]), c,
                                                            grpc_pid)
            table = measure_interleaved(configs, args.requests, args.rounds)
        finally:
            if processes is not None:
                processes.close()
            rest.close()
            bare_channel.close()
            bare_server.stdin.close()
            bare_server.wait(timeout=30)
            for client in clients.values():
                client.close()
            for server in servers.values():
                server.stop()

    if not args.export_base:
        print(f"\nbench models: retrieval over {args.catalog_items:,} items, ranker over {CANDIDATES} "
              "candidates")
    print(f"\nTensorFlow threads (intra, inter) here and in the servers: "
          f"({args.intra_op_threads or 'default'}, {args.inter_op_threads or 'default'})")
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    print(f"\nserver CPU comes from /proc in {tick_ms:.0f} ms ticks: "
          f"per call +-{tick_ms / args.requests:.3f} ms")
    print(f"\n{'model':<10} {'mode':<14} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
          f"{'cpu ms/call: here':>18} {'server':>7}")
    for (kind, mode, c), m in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        print(f"{kind:<10} {mode:<14} {c:>4} {m['p50']:>8.2f} {m['p99']:>8.2f} {m['qps']:>8.1f} "
              f"{m['cpu_ms']:>18.3f} {m['server_cpu_ms']:>7.3f}")
    floor = table[("transport", "bare grpcio", 1)]["p50"]
    print(f"\ntargets: overhead (gRPC p50 - in-process p50, c=1) <= bare grpcio round trip "
          f"({floor:.3f} ms) + 0.15 ms; batching on >= 1.5x batching off in throughput at c=8; "
          "p99 <= 3x p50 at c=8")
    for kind in ("retrieval", "ranker"):
        base_p50 = table[(kind, "in-process", 1)]["p50"]
        for mode in ("grpc", "grpc+batching"):
            overhead = table[(kind, mode, 1)]["p50"] - base_p50
            m8 = table[(kind, mode, 8)]
            r8 = m8["p99"] / m8["p50"]
            print(f"  {kind:<10} {mode:<14} overhead {overhead:6.3f} ms = floor + {overhead - floor:6.3f} ms "
                  f"[{'OK' if overhead <= floor + 0.15 else 'MISS'}]   c=8 p99/p50 {r8:5.2f}x "
                  f"[{'OK' if r8 <= 3 else 'MISS'}]   p50 vs in-process "
                  f"{table[(kind, mode, 1)]['p50'] / base_p50:4.2f}x")
        gain = table[(kind, "grpc+batching", 8)]["qps"] / table[(kind, "grpc", 8)]["qps"]
        local8, off8 = table[(kind, "in-process", 8)], table[(kind, "grpc", 8)]
        print(f"  {kind:<10} {'batching':<14} c=8 throughput on / off {gain:4.2f}x "
              f"[{'OK' if gain >= 1.5 else 'MISS'}]   in-process c=8 p99/p50 "
              f"{local8['p99'] / local8['p50']:5.2f}x")
        # Were every core busy, throughput would be cores / CPU per call. Merging calls saves at most what a
        # model call costs beyond its share of the largest batch the clients can form:
        total = off8["cpu_ms"] + off8["server_cpu_ms"]
        one = table[(kind, "in-process", 1)]["cpu_ms"]
        share = table[(kind, f"in-process x{batch}", 1)]["cpu_ms"] / batch
        saved = min(max(one - share, 0.0), total)
        cores, busy = os.cpu_count() or 1, total * off8["qps"] / 1000
        ceiling = cores * 1000 / max(total - saved, 1e-9)
        print(f"  {kind:<10} {'cpu budget':<14} c=8 batching off: {total:.2f} cpu ms per call (clients "
              f"{off8['cpu_ms']:.2f}, server {off8['server_cpu_ms']:.2f}), {busy:.2f} of {cores} cores busy; "
              f"the model costs {one:.2f} cpu ms per call alone and {share:.2f} in a batch of {batch}, so "
              f"batching could serve at most {ceiling:.0f} req/s with every core busy: "
              f"{ceiling / off8['qps']:4.2f}x batching off")
    for kind, mode in (("ranker", "rest"), ("transport", "rest status")):
        m1, m32 = table[(kind, mode, 1)], table[(kind, mode, 32)]
        r32 = m32["p99"] / m32["p50"]
        print(f"  {kind:<10} {mode:<14} c=32 p99/p50 {r32:5.2f}x [{'OK' if r32 <= 5 else 'MISS'}]   "
              f"c=32 p99 {m32['p99']:7.2f} ms   c=1 p50 {m1['p50']:6.2f} ms   c=32 throughput "
              f"{m32['qps']:7.1f} req/s")
    rest_vs_grpc = table[("ranker", "rest", 1)]["p50"] / table[("ranker", "grpc", 1)]["p50"]
    print(f"  {'ranker':<10} {'rest vs grpc':<14} c=1 p50 {rest_vs_grpc:4.2f}x (JSON against protos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
