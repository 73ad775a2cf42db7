"""Real SavedModels and a real server process for the serving tests.

The models have the shapes and names of the export contracts (retrieval:
``user_id [B]``, ``history [B, L]`` -> ``item_ids [B, K]``, ``scores [B, K]``; ranker:
raw features -> ``ctr``, ``cvr``, ``ctcvr [B]``) and weights drawn from fixed seeds,
so every expected answer is recomputed here in numpy, independently of TensorFlow
Serving code. Each is published with ``tfrs_recsys.export.tfserving.publish_version``
(atomic rename, warmup requests, metadata).

Run as a script to write the same models and a models.config for a real
``tensorflow_model_server`` (the ``real_tfserving`` tests)::

    python tests/serving_fixtures.py /tmp/tfs_models
    docker run -p 8500:8500 -p 8501:8501 -v /tmp/tfs_models:/tmp/tfs_models tensorflow/serving \\
        --model_config_file=/tmp/tfs_models/models.config --allow_version_labels_for_unavailable_models=true
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = Path(__file__).resolve().parents[1]

NUM_ITEMS = 40
DIM = 8
HISTORY_LEN = 5
TOP_K = 10
EXCLUDE_LEN = 5
ITEM_IDS = [f"item_{i:02d}" for i in range(NUM_ITEMS)]
KNOWN_USERS = ["u1", "u2", "u3"]


# -- the numpy ground truth ---------------------------------------------------------------------

def retrieval_weights(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(NUM_ITEMS, DIM)).astype(np.float32)
    users = rng.normal(size=(len(KNOWN_USERS), DIM)).astype(np.float32)
    return items, users


def retrieval_reference(user_id: str, history: list[str], exclude: list[str] = (), seed: int = 7,
                        k: int = TOP_K):
    """Top-k (item ids, scores) the retrieval fixture must return: dot(user + mean(history), item)."""
    items, users = retrieval_weights(seed)
    index = {item: i for i, item in enumerate(ITEM_IDS)}
    query = np.zeros(DIM, np.float32)
    if user_id in KNOWN_USERS:
        query += users[KNOWN_USERS.index(user_id)]
    seen = [index[h] for h in history if h in index]
    if seen:
        query += items[seen].mean(axis=0)
    scores = items @ query
    for e in exclude:
        if e in index:
            scores[index[e]] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [ITEM_IDS[i] for i in order], scores[order]


def ranker_reference(price: np.ndarray, genres: list[str], device: list[str]) -> dict[str, np.ndarray]:
    """ctr = sigmoid(0.8 price - 1 + 0.3 #genres), cvr = sigmoid(0.5 - 0.2 price + 0.4 [mobile]),
    ctcvr = ctr cvr."""
    price = np.asarray(price, np.float32)
    n_genres = np.array([len([g for g in s.split("|") if g]) for s in genres], np.float32)
    mobile = np.array([d == "mobile" for d in device], np.float32)
    ctr = 1 / (1 + np.exp(-(0.8 * price - 1.0 + 0.3 * n_genres)))
    cvr = 1 / (1 + np.exp(-(0.5 - 0.2 * price + 0.4 * mobile)))
    return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}


RANKER_INPUTS = {"user_id": "string", "item_id": "string", "genres": "string", "price": "float32",
                 "device": "string"}


# -- SavedModels ---------------------------------------------------------------------------------

def _retrieval_module(seed: int, top_k: int = TOP_K):
    import tensorflow as tf

    items, users = retrieval_weights(seed)

    class Retrieval(tf.Module):
        def __init__(self):
            super().__init__()
            self.items = tf.Variable(items, name="item_embeddings")
            self.users = tf.Variable(users, name="user_embeddings")
            self.item_ids = tf.constant(ITEM_IDS)
            self.item_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(ITEM_IDS),
                                                    tf.range(NUM_ITEMS, dtype=tf.int64)), -1)
            self.user_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(KNOWN_USERS),
                                                    tf.range(len(KNOWN_USERS), dtype=tf.int64)), -1)

        def _scores(self, user_id, history):
            uidx = self.user_table.lookup(user_id)
            user_vec = tf.where(uidx[:, None] >= 0, tf.gather(self.users, tf.maximum(uidx, 0)), 0.0)
            hidx = self.item_table.lookup(history)
            mask = tf.cast(hidx >= 0, tf.float32)
            hist = tf.gather(self.items, tf.maximum(hidx, 0)) * mask[..., None]
            count = tf.reduce_sum(mask, axis=1, keepdims=True)
            query = user_vec + tf.math.divide_no_nan(tf.reduce_sum(hist, axis=1), count)
            return tf.matmul(query, self.items, transpose_b=True)

        def _top_k(self, scores):
            values, indices = tf.math.top_k(scores, k=top_k)
            return {"item_ids": tf.gather(self.item_ids, indices), "scores": values}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                      tf.TensorSpec([None, HISTORY_LEN], tf.string, name="history")])
        def serving_default(self, user_id, history):
            return self._top_k(self._scores(user_id, history))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                      tf.TensorSpec([None, HISTORY_LEN], tf.string, name="history"),
                                      tf.TensorSpec([None, EXCLUDE_LEN], tf.string, name="exclude_item_ids")])
        def query_with_exclusions(self, user_id, history, exclude_item_ids):
            scores = self._scores(user_id, history)
            eidx = self.item_table.lookup(exclude_item_ids)
            hit = tf.reduce_any(tf.equal(eidx[:, :, None],
                                         tf.range(NUM_ITEMS, dtype=tf.int64)[None, None, :]), axis=1)
            return self._top_k(tf.where(hit, tf.constant(-np.inf, tf.float32), scores))

    return Retrieval()


def _ranker_module():
    import tensorflow as tf

    class Ranker(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                      tf.TensorSpec([None], tf.string, name="item_id"),
                                      tf.TensorSpec([None], tf.string, name="genres"),
                                      tf.TensorSpec([None], tf.float32, name="price"),
                                      tf.TensorSpec([None], tf.string, name="device")])
        def serving_default(self, user_id, item_id, genres, price, device):
            parts = tf.strings.split(genres, "|")
            n = tf.cast(tf.reduce_sum(tf.cast(tf.strings.length(parts) > 0, tf.int32), axis=1), tf.float32)
            mobile = tf.cast(tf.equal(device, "mobile"), tf.float32)
            ctr = tf.sigmoid(0.8 * price - 1.0 + 0.3 * n)
            cvr = tf.sigmoid(0.5 - 0.2 * price + 0.4 * mobile)
            return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}

    return Ranker()


def _utility_module(scale: float):
    import tensorflow as tf

    class Utility(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(scale, name="scale")
            self.counter = tf.Variable(0, dtype=tf.int64, name="counter")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serving_default(self, x):
            return {"y": self.scale * x + 1.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def batch_size(self, x):
            b = tf.shape(x)[0]
            return {"batch_size": tf.fill([b], b), "y": self.scale * x + 1.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def count(self, x):
            value = self.counter.assign_add(1)
            return {"count": tf.fill(tf.shape(x), value)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="payload")])
        def echo(self, payload):
            return {"echo_bytes": payload, "text": payload, "length": tf.strings.length(payload)}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="m")])
        def matrix(self, m):
            return {"row_sum": tf.reduce_sum(m, axis=1), "doubled": 2.0 * m}

    return Utility()


def _save_tf1_examples_model(path: str) -> None:
    """A TF1-style SavedModel with classify and regress signatures over tf.Examples (feature ``x``)."""
    import tensorflow as tf

    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="examples")
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"][:, 0]
        p = tf.sigmoid(x)
        scores = tf.stack([1 - p, p], axis=1)
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1])
        x_in = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        builder = tf.compat.v1.saved_model.Builder(path)
        sm = tf.compat.v1.saved_model
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
            "classify_x": sm.classification_signature_def(serialized, classes, scores),
            "classify_scores": sm.classification_signature_def(serialized, None, scores),
            "regress_x": sm.regression_signature_def(serialized, tf.reshape(2 * x + 1, [-1, 1])),
            "serving_default": sm.predict_signature_def({"x": x_in}, {"y": 2 * x_in + 1}),
        })
        builder.save()


def _tf_save(module, signature_names):
    import tensorflow as tf

    def save(path):
        tf.saved_model.save(module, path, signatures={n: getattr(module, n) for n in signature_names})

    return save


def publish_retrieval(base: Path, name: str = "retrieval", version: int | None = None, seed: int = 7,
                      top_k: int = TOP_K) -> Path:
    from tfrs_recsys.export.tfserving import publish_version

    module = _retrieval_module(seed, top_k)
    warm = {"user_id": np.array([b"u1"], object),
            "history": np.array([[b"item_01"] + [b""] * (HISTORY_LEN - 1)], object)}
    warm_excl = dict(warm, exclude_item_ids=np.array([[b""] * EXCLUDE_LEN], object))
    return publish_version(base, name, _tf_save(module, ["serving_default", "query_with_exclusions"]),
                           version=version,
                           warmup=[("serving_default", warm), ("query_with_exclusions", warm_excl)],
                           metadata={"kind": "retrieval", "k": top_k, "history_length": HISTORY_LEN,
                                     "exclusion_width": EXCLUDE_LEN, "seed": seed})


def publish_ranker(base: Path, name: str = "ranker", version: int | None = None) -> Path:
    from tfrs_recsys.export.tfserving import publish_version

    warm = {"user_id": np.array([b"u1"], object), "item_id": np.array([b"item_00"], object),
            "genres": np.array([b"a|b"], object), "price": np.array([1.0], np.float32),
            "device": np.array([b"mobile"], object)}
    return publish_version(base, name, _tf_save(_ranker_module(), ["serving_default"]), version=version,
                           warmup=[("serving_default", warm)],
                           metadata={"kind": "ranker", "inputs": RANKER_INPUTS,
                                     "outputs": ["ctr", "cvr", "ctcvr"]})


def publish_failing(base: Path, name: str = "failing", version: int = 1) -> Path:
    """``y = 2 x`` that raises inside the graph (an assertion) for an ``x`` that is not positive."""
    import tensorflow as tf

    from tfrs_recsys.export.tfserving import publish_version

    class Failing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serving_default(self, x):
            tf.debugging.assert_positive(x, message="x must be positive")
            return {"y": 2.0 * x}

    return publish_version(base, name, _tf_save(Failing(), ["serving_default"]), version=version)


def publish_slow(base: Path, name: str = "slow", version: int = 1) -> Path:
    """``y = x`` after ``x[0]`` rounds of a 64 x 64 matmul: a request whose cost the client picks."""
    import tensorflow as tf

    from tfrs_recsys.export.tfserving import publish_version

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serving_default(self, x):
            halve = tf.eye(64) * 0.5
            _, state = tf.while_loop(lambda i, _: i < tf.cast(x[0], tf.int32),
                                     lambda i, m: (i + 1, tf.matmul(m, halve) + 1.0), (0, tf.eye(64)))
            return {"y": x + 0.0 * tf.reduce_sum(state)}

    return publish_version(base, name, _tf_save(Slow(), ["serving_default"]), version=version)


def publish_utility(base: Path, name: str = "utility", version: int | None = None, scale: float = 2.0,
                    warmup_counts: int = 0) -> Path:
    """``y = scale * x + 1`` plus the batch_size / count / echo / matrix signatures.

    ``warmup_counts`` warmup records call ``count``, so the first client call of ``count``
    sees ``warmup_counts + 1`` only if warmup was replayed before the version served.
    """
    from tfrs_recsys.export.tfserving import publish_version

    signatures = ["serving_default", "batch_size", "count", "echo", "matrix"]
    warmup = [("serving_default", {"x": np.array([1.0], np.float32)})]
    warmup += [("count", {"x": np.array([0.0], np.float32)})] * warmup_counts
    return publish_version(base, name, _tf_save(_utility_module(scale), signatures), version=version,
                           warmup=warmup, metadata={"kind": "utility", "scale": scale})


def publish_tf1_examples(base: Path, name: str = "examples", version: int | None = None) -> Path:
    from tfrs_recsys.export.tfserving import publish_version

    return publish_version(base, name, _save_tf1_examples_model, version=version,
                           warmup=[("serving_default", {"x": np.array([1.0], np.float32)})])


def write_corrupt_version(base: Path, name: str, version: int) -> Path:
    """A version directory whose saved_model.pb is not a SavedModel (renamed into place atomically)."""
    model_dir = Path(base) / name
    tmp = model_dir / f".tmp-corrupt-{version}"
    tmp.mkdir(parents=True)
    (tmp / "saved_model.pb").write_bytes(b"this is not a protobuf \x00\xff\x10")
    final = model_dir / str(version)
    os.replace(tmp, final)
    return final


def models_config(base: Path, models: dict[str, dict]) -> Path:
    """models.config for ``{name: {policy?, labels?}}`` under ``base``."""
    from tfrs_recsys.export.tfserving import write_models_config

    return write_models_config(Path(base) / "models.config", [
        {"name": name, "base_path": str(Path(base).resolve() / name), **spec}
        for name, spec in models.items()])


def write_all(base: Path) -> Path:
    """Every fixture model (two utility versions, label ``stable`` -> 1, ``canary`` -> 2) and its
    models.config."""
    base = Path(base)
    publish_retrieval(base, version=1)
    publish_ranker(base, version=1)
    publish_utility(base, version=1, scale=2.0)
    publish_utility(base, version=2, scale=3.0)
    publish_tf1_examples(base, version=1)
    return models_config(base, {
        "retrieval": {}, "ranker": {}, "examples": {},
        "utility": {"policy": "all", "labels": {"stable": 1, "canary": 2}},
    })


# -- the server process --------------------------------------------------------------------------

def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: each socket stays bound until all are chosen, so two calls in
    a row cannot hand out the same port."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


class ServerProcess:
    """``python -m tfrs_recsys.model_server.server`` in its own process, on free loopback ports."""

    def __init__(self, args: list[str], log_path: Path, grpc_port: int, rest_port: int):
        self.grpc_port, self.rest_port, self.log_path = grpc_port, rest_port, log_path
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfrs_recsys.model_server.server", f"--port={grpc_port}",
             f"--rest_api_port={rest_port}", "--tensorflow_intra_op_parallelism=1",
             "--tensorflow_inter_op_parallelism=1", *args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = 120.0) -> "ServerProcess":
        import grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    grpc.channel_ready_future(channel).result(timeout=1.0)
                    return self
                except grpc.FutureTimeoutError:
                    continue
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def start_server(tmp_path: Path, args: list[str], *, ready: bool = True) -> ServerProcess:
    server = ServerProcess(args, Path(tmp_path) / f"server-{time.monotonic_ns()}.log", *free_ports(2))
    return server.wait_ready() if ready else server


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {message}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/serving_fixtures.py OUTPUT_DIR")
    sys.path.insert(0, str(REPO))
    print(write_all(Path(sys.argv[1]).resolve()))
