"""Distributed training: the strategy a run picks, one step under MirroredStrategy against one device,
and two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy) training as well as one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serving_fixtures import free_ports

from tfrs_recsys.config import ConfigError
from tfrs_recsys.config_sources import config_from_args
from tfrs_recsys.training import distribution

REPO = Path(__file__).resolve().parents[1]
TWO_CPU_DEVICES = REPO / "tests" / "two_cpu_devices.py"
TIMEOUT = 240
# Small DeepFM on synthetic CTR logs with a known ground truth. patience 1 over 5 epochs: it stops early,
# and every worker must stop at the same epoch. The row L2 is on: it sees the rows of both workers'
# batches. float32: bfloat16 products of a worker's half batch round differently from those of the
# whole batch.
EPOCHS = 5
DEEPFM = ["deepfm", "--synthetic-rows", "8000", "--epochs", str(EPOCHS), "--patience", "1", "--batch-size",
          "256", "--learning-rate", "3e-3", "--embedding-dim", "8", "--hidden-units", "64,32", "--seed", "5",
          "--embedding-l2", "1e-3", "--precision", "float32", "--progress", "false"]
AUC_TOLERANCE = 0.01  # two processes sum the same gradients as one: AUCs agree far closer than this
RANDOM_AUC_BOUND = 0.6  # random scores get 0.5 (+- 0.03 on these 800 test rows); this data allows ~0.68


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG" and not k.startswith("RECSYS_")}
    return {**env, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def _run(command: list[str], log: Path, env: dict) -> subprocess.CompletedProcess:
    with open(log, "w") as fh:
        proc = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                              timeout=TIMEOUT)
    assert proc.returncode == 0, _tail(log)
    return proc


def _run_workers(args: list[str], out_dirs: list[Path], logs: list[Path], tmpdir: Path) -> list[int]:
    """One ``python -m tfrs_recsys.train`` per worker, each with its TF_CONFIG; killed on timeout."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(out_dirs))]}
    procs = []
    try:
        for index, (out, log) in enumerate(zip(out_dirs, logs)):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            with open(log, "w") as fh:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tfrs_recsys.train", *args, "--output-dir", str(out)],
                    stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                    env=_env(TF_CONFIG=tf_config, TMPDIR=str(tmpdir))))
        for proc, log in zip(procs, logs):
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a worker did not finish within {TIMEOUT}s; its log ends:\n{_tail(log)}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [proc.returncode for proc in procs]


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: the same DeepFM run in one process without a strategy."""
    out = tmp_path_factory.mktemp("single") / "run"
    _run([sys.executable, "-m", "tfrs_recsys.train", *DEEPFM, "--distribute", "none", "--output-dir",
          str(out)],
         out.parent / "log.txt", _env())
    return out


# --- choosing the strategy ----------------------------------------------------------------------

def test_auto_picks_the_strategy_from_tf_config_and_devices():
    two_workers = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    assert distribution.choose_strategy("auto", two_workers, num_gpus=0) == "multi_worker"
    assert (distribution.choose_strategy("auto", {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}}, 0)
            == "multi_worker")
    assert distribution.choose_strategy("auto", {"cluster": {"worker": ["a:1"]}}, num_gpus=0) == "none"
    assert distribution.choose_strategy("auto", {}, num_gpus=2) == "mirrored"
    assert distribution.choose_strategy("auto", {}, num_gpus=1) == "none"
    assert distribution.choose_strategy("none", two_workers, num_gpus=4) == "none"
    # the CLI reads "none" as None
    assert distribution.choose_strategy(None, two_workers, num_gpus=4) == "none"
    assert distribution.choose_strategy("mirrored", {}, num_gpus=0) == "mirrored"
    with pytest.raises(ConfigError, match="field 'distribute' = 'horovod'.*--distribute auto"):
        config_from_args("esmm", ["--distribute", "horovod"], environ={})


def test_tf_config_is_read_and_bad_json_is_explained():
    assert distribution.read_tf_config({}) == {}
    config = {"cluster": {"worker": ["h0:1", "h1:1", "h2:1"]}, "task": {"type": "worker", "index": 2}}
    assert distribution.cluster_size(distribution.read_tf_config({"TF_CONFIG": json.dumps(config)})) == 3
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON.*cluster"):
        distribution.read_tf_config({"TF_CONFIG": "{'cluster': }"})


def test_distribute_is_an_option_of_every_model():
    for model in ("retrieval", "esmm", "deepfm"):
        assert config_from_args(model, [], environ={}).distribute == "auto"
        assert (config_from_args(model, ["--distribute", "multi_worker"], environ={}).distribute
                == "multi_worker")
        assert config_from_args(model, [], environ={"RECSYS_DISTRIBUTE": "mirrored"}).distribute == "mirrored"


def test_thread_pools_are_options_set_before_the_first_op_and_refused_after():
    for model in ("retrieval", "esmm", "deepfm"):
        cfg = config_from_args(model, ["--intra-op-threads", "1"], environ={"RECSYS_INTER_OP_THREADS": "2"})
        assert (cfg.intra_op_threads, cfg.inter_op_threads) == (1, 2)
    with pytest.raises(ConfigError, match="field 'inter_op_threads' = -1 must be >= 0"):
        config_from_args("deepfm", ["--inter-op-threads", "-1"], environ={})
    script = (
        "import tfrs_recsys, tensorflow as tf\n"
        "from tfrs_recsys.config import ConfigError\n"
        "from tfrs_recsys.training import distribution\n"
        "distribution.configure_threads(1, 2)\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())\n"
        "tf.constant(1.0) + 1.0\n"
        "distribution.configure_threads(1, 2)  # unchanged: fine after the first op\n"
        "try:\n"
        "    distribution.configure_threads(3, 2)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "1 2"  # applied to this process's TensorFlow runtime
    assert ("field 'intra_op_threads' = 3 cannot take effect" in lines[1]
            and "before any TensorFlow op" in lines[1])


# --- MirroredStrategy over two logical CPU devices -----------------------------------------------

def test_one_mirrored_step_on_two_devices_is_the_step_on_one(tmp_path):
    """Same weights, same global batch, one step: 2 replicas (each half the batch, gradients summed)
    must move every weight as one device does. This fails if a replica's loss is its local mean
    (the update doubles), if layer (L2) losses are not scaled per replica, or if the rankers' row
    L2 sees only a replica's rows."""
    _run([sys.executable, str(TWO_CPU_DEVICES), "step"], tmp_path / "log.txt", _env())
    lines = (tmp_path / "log.txt").read_text().splitlines()
    differences = json.loads([line for line in lines if line.startswith("{")][-1])
    assert set(differences) == {"deepfm", "esmm", "retrieval"}
    assert all(d < 1e-4 for d in differences.values()), differences


@pytest.mark.slow  # the fast suite checks the same update: the one-step test above
def test_mirrored_strategy_on_two_logical_cpus_trains_like_one_process(tmp_path, single_process):
    out = tmp_path / "run"
    _run([sys.executable, str(TWO_CPU_DEVICES), "train", *DEEPFM, "--distribute", "mirrored", "--output-dir",
          str(out)], tmp_path / "log.txt", _env())
    assert "MirroredStrategy, 2 replica(s)" in (tmp_path / "log.txt").read_text()
    metrics = json.loads((out / "test_metrics.json").read_text())
    reference = json.loads((single_process / "test_metrics.json").read_text())
    assert metrics["auc"] > RANDOM_AUC_BOUND
    assert metrics["auc"] == pytest.approx(reference["auc"], abs=AUC_TOLERANCE)
    assert len(_log(out)) == len(_log(single_process))


# --- MultiWorkerMirroredStrategy: two processes on 127.0.0.1 -------------------------------------

@pytest.mark.slow  # the fast suite trains two workers like one process: the shards test below
def test_two_workers_on_loopback_train_deepfm_like_one_process(tmp_path, single_process):
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    codes = _run_workers(DEEPFM, [chief_dir, worker_dir], logs, tmpdir)
    assert codes == [0, 0], "\n\n".join(_tail(log) for log in logs)
    assert "worker:0 of 2 (chief)" in logs[0].read_text()
    assert "worker:1 of 2 (not chief" in logs[1].read_text()

    # Only the chief wrote a run directory; the other worker's temporary one is gone.
    for name in ("test_metrics.json", "train_log.jsonl", "config.json", "checkpoints/best.index", "spec.json",
                 "training_curves.png"):
        assert (chief_dir / name).is_file(), name
    assert not worker_dir.exists()
    assert not list(tmpdir.glob("tfrs_recsys-*"))

    metrics = json.loads((chief_dir / "test_metrics.json").read_text())
    reference = json.loads((single_process / "test_metrics.json").read_text())
    assert metrics["auc"] > RANDOM_AUC_BOUND and metrics["ctr_true_auc"] > RANDOM_AUC_BOUND
    assert metrics["auc"] == pytest.approx(reference["auc"], abs=AUC_TOLERANCE)
    # Early stopping took the same decisions, and the logged loss (mean per example over the epoch,
    # aggregated over both workers) is the single process's.
    log, reference_log = _log(chief_dir), _log(single_process)
    assert len(log) == len(reference_log) < EPOCHS and metrics["best_epoch"] == reference["best_epoch"]
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in reference_log], rel=1e-3)


def _random_ndcg_at_10(users: int, items: int, max_history: int) -> float:
    """Expected NDCG@10 of a random ranking on the leave-last-out test split (history items excluded)."""
    import numpy as np

    from tfrs_recsys.config import RetrievalConfig
    from tfrs_recsys.training import retrieval

    cfg = RetrievalConfig(synthetic_users=users, synthetic_items=items, max_history=max_history,
                          protocol="leave_last_out")
    data = retrieval.load_data(cfg)
    split = retrieval.split_data(cfg, data)
    candidates = np.array([data.interactions["item_id"].nunique() - len(set(e)) for e in split.test.exclude])
    # the target is at each rank with prob 1/candidates
    gain = sum(1 / np.log2(rank + 1) for rank in range(1, 11))
    return float(np.mean(gain / candidates))


@pytest.mark.slow
def test_two_workers_train_retrieval_with_in_batch_negatives_like_one_process(tmp_path):
    """Transformer retrieval, in-batch negatives: each worker's softmax sees only its half of the
    batch, so the runs differ, but reach the same quality."""
    args = ["retrieval", "--synthetic-users", "800", "--synthetic-items", "100", "--epochs", "10",
            "--max-history", "12", "--embedding-dim", "32", "--num-blocks", "1", "--ff-dim", "32",
            "--batch-size", "64", "--negatives", "in_batch", "--patience", "10", "--progress", "false"]
    single = tmp_path / "single"
    _run([sys.executable, "-m", "tfrs_recsys.train", *args, "--distribute", "none", "--output-dir",
          str(single)],
         tmp_path / "single.log", _env())
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    codes = _run_workers(args, [tmp_path / "chief", tmp_path / "worker"], logs, tmpdir)
    assert codes == [0, 0], "\n\n".join(_tail(log) for log in logs)
    metrics = json.loads((tmp_path / "chief" / "test_metrics.json").read_text())
    reference = json.loads((single / "test_metrics.json").read_text())
    random = _random_ndcg_at_10(800, 100, 12)  # about 0.06; both runs reach about 0.16
    assert (metrics["ndcg@10"] > random + 0.05
            and reference["ndcg@10"] > random + 0.05), (random, metrics, reference)
    assert metrics["ndcg@10"] == pytest.approx(reference["ndcg@10"], abs=0.04)


# --- workers reading their own file shards -----------------------------------------------------

SHARDED = ["deepfm", "--dataset", "parquet", "--label-columns", "label", "--streaming", "always", "--epochs",
           "2", "--patience", "2", "--batch-size", "256", "--embedding-dim", "8", "--hidden-units", "32",
           "--precision", "float32", "--seed", "5", "--progress", "false"]
STREAMED_AUC_TOLERANCE = 0.03  # the workers' batches hold other rows than one process's: close, not equal


def _click_shards(folder: Path, shards: int = 4, rows: int = 2000) -> None:
    """``shards`` Parquet files of clicks on items whose CTR depends on the item and its category."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    effect = rng.normal(0, 1.2, 300)
    for index in range(shards):
        item = rng.integers(0, 300, rows)
        frame = pd.DataFrame({"user_id": rng.integers(0, 500, rows), "item_id": item,
                              "item_category": item % 12, "price": rng.gamma(2.0, 10.0, rows)})
        frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(1.0 - effect[item]))).astype(int)
        frame.to_parquet(folder / f"part-{index:05d}.parquet", index=False)


def test_two_workers_each_read_their_own_parquet_shards(tmp_path):
    import re

    data = tmp_path / "data"
    _click_shards(data / "parquet")
    args = [*SHARDED, "--data", str(data / "parquet")]
    single = tmp_path / "single"
    _run([sys.executable, "-m", "tfrs_recsys.train", *args, "--distribute", "none", "--output-dir",
          str(single)], tmp_path / "single.log", _env())
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    codes = _run_workers(args, [tmp_path / "chief", tmp_path / "worker"], logs, tmpdir)
    assert codes == [0, 0], "\n\n".join(_tail(log) for log in logs)

    read = []
    for index, log in enumerate(logs):
        found = re.search(rf"streaming: worker {index} of 2 reads 2 of 4 shards: (\[.*\]) \((\d+) rows\)",
                          log.read_text())
        assert found, _tail(log)
        read.append((set(json.loads(found.group(1))), int(found.group(2))))
    assert not read[0][0] & read[1][0]
    assert read[0][0] | read[1][0] == {f"part-{i:05d}.parquet" for i in range(4)}
    assert read[0][1] + read[1][1] == 8000

    metrics = json.loads((tmp_path / "chief" / "test_metrics.json").read_text())
    reference = json.loads((single / "test_metrics.json").read_text())
    assert metrics["rows"] == reference["rows"]  # the same test rows, evaluated exactly
    assert metrics["auc"] > RANDOM_AUC_BOUND
    assert metrics["auc"] == pytest.approx(reference["auc"], abs=STREAMED_AUC_TOLERANCE)


# --- a cluster that does not come together --------------------------------------------------------------

def test_a_task_outside_its_cluster_and_multi_worker_without_tf_config_are_refused(monkeypatch):
    from tfrs_recsys.training import rendezvous

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    rendezvous.check_task({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    for task in ({"type": "worker", "index": 5}, {"type": "ps", "index": 0}, None):
        with pytest.raises(ConfigError, match=r"not a training task of its cluster \(tasks: worker 0-1\)"):
            rendezvous.check_task({"cluster": cluster, "task": task})
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG is not set for distribute=multi_worker.*none"):
        distribution.build_strategy("multi_worker")


def _worker(index: int, ports: list[int], args: list[str], out: Path) -> subprocess.Popen:
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                            "task": {"type": "worker", "index": index}})
    return subprocess.Popen([sys.executable, "-m", "tfrs_recsys.train", *args, "--output-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=_env(TF_CONFIG=tf_config))


def test_a_worker_whose_peer_never_starts_says_so_and_stops_on_a_deadline_or_sigterm(tmp_path):
    """It waits in Python, before TensorFlow's blocking start: a deadline and a signal both end it."""
    import signal
    import time

    args = ["deepfm", "--synthetic-rows", "2000", "--epochs", "1"]
    ports = free_ports(2)
    proc = _worker(0, ports, [*args, "--cluster-wait-seconds", "2"], tmp_path / "a")
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2 and f"waited 2 s for worker 1 at 127.0.0.1:{ports[1]}" in out
    proc = _worker(0, ports, args, tmp_path / "b")  # the default wait is 10 minutes
    deadline = time.monotonic() + TIMEOUT
    while "distribute: waiting for worker 1" not in proc.stdout.readline():  # said as the wait begins
        assert proc.poll() is None and time.monotonic() < deadline
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM


def test_workers_started_with_other_options_are_refused_naming_them(tmp_path):
    base = ["deepfm", "--synthetic-rows", "2000", "--epochs", "1", "--progress", "false"]
    ports = free_ports(2)
    procs = [_worker(0, ports, base, tmp_path / "a"),
             _worker(1, ports, [*base, "--learning-rate", "0.01", "--epochs", "2"], tmp_path / "b")]
    for proc in procs:
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 2, out[-2000:]
        assert "started with different options (--epochs, --learning-rate)" in out
    assert not (tmp_path / "a").exists()  # refused before anything was written


def test_workers_whose_shards_differ_in_rows_are_warned_and_too_few_shards_refused(tmp_path):
    import pandas as pd

    from tfrs_recsys.data import stream_parts, streaming
    from tfrs_recsys.data.errors import DataError

    _click_shards(tmp_path / "data")
    even = streaming.open_table(str(tmp_path / "data"), labels=["label"])
    assert stream_parts.uneven_workers(even, 2) is None
    first = tmp_path / "data" / "part-00000.parquet"
    pd.concat([pd.read_parquet(first)] * 5).to_parquet(first, index=False)  # 10,000 rows beside 2,000s
    table = streaming.open_table(str(tmp_path / "data"), labels=["label"])
    warning = stream_parts.uneven_workers(table, 2)  # worker 0: parts 0 and 2; worker 1: parts 1 and 3
    assert "12,000, 4,000 rows" in warning and "worker 1 reads its rows about 3.0 times" in warning
    with pytest.raises(DataError, match="4 file shard"):
        stream_parts.uneven_workers(table, 5)
