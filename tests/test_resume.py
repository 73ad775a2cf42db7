"""A killed run resumes where it stopped (weights, optimizer, early stopping, input order) and ends where the
uninterrupted run ends; a run directory holding another run is refused unless --overwrite; export takes
complete runs only.

The kills are real: the train CLI runs in a subprocess that gets SIGKILL once its saved training state
shows the epoch asked for.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from side_by_side import run_side_by_side

from tfrs_recsys import runs
from tfrs_recsys.config import ConfigError
from tfrs_recsys.config_sources import build_config, config_from_args
from tfrs_recsys.export.rankers import export_ranker
from tfrs_recsys.export.tfserving import read_export_metadata
from tfrs_recsys.training import deepfm, esmm, retrieval
from tfrs_recsys.training.common import EpochEvaluator
from tfrs_recsys.training.resume import TrainingState

REPO = Path(__file__).resolve().parents[1]
KILL_TIMEOUT = 240
# Tiny runs whose epochs take long enough (a few hundred ms) for the kill to land inside the next one.
DEEPFM = {"synthetic_rows": "6000", "epochs": "4", "batch_size": "128", "embedding_dim": "4",
          "hidden_units": "16", "patience": "5", "seed": "3", "progress": "false"}
# No dropout: its masks come from stateful random ops, which start afresh in a resumed process.
RETRIEVAL = {"synthetic_users": "120", "synthetic_items": "80", "epochs": "4", "max_history": "12",
             "embedding_dim": "16", "num_blocks": "1", "ff_dim": "16", "batch_size": "32", "patience": "5",
             "dropout": "0", "user_id_dropout": "0", "progress": "false"}
ESMM = {"synthetic_sessions": "300", "session_size": "10", "epochs": "2", "batch_size": "256",
        "embedding_dim": "4", "hidden_units": "16", "tower_units": "8", "patience": "5", "seed": "3",
        "progress": "false"}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_") and k != "TF_CONFIG"}
    return {**env, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


def _flags(options: dict) -> list[str]:
    return [part for k, v in options.items() for part in (f"--{k.replace('_', '-')}", v)]


def _cfg(model: str, options: dict, out: Path, **more):
    return build_config(model, {**options, "output_dir": str(out), **more}, environ={})


def _saved_epoch(state: Path) -> int:
    return json.loads(state.read_text())["epoch"] if state.is_file() else 0


def _train_and_kill(model: str, options: dict, out: Path, *, after_epoch: int, state: Path,
                    interrupt: bool = False) -> int:
    """The train CLI in a subprocess, SIGKILLed (``interrupt``: given Ctrl-C's SIGINT) once ``state`` (a
    resume/state.json) shows ``after_epoch``; its exit status."""
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tfrs_recsys.train", model, *_flags(options),
                                 "--output-dir", str(out)], stdout=fh, stderr=subprocess.STDOUT, env=_env(),
                                cwd=REPO)
        try:
            deadline = time.monotonic() + KILL_TIMEOUT
            while _saved_epoch(state) < after_epoch:
                assert proc.poll() is None, (f"training ended before {state} showed epoch {after_epoch}:\n"
                                             f"{log.read_text()[-3000:]}")
                assert time.monotonic() < deadline, f"no epoch {after_epoch} in {state} after {KILL_TIMEOUT}s"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGINT) if interrupt else proc.kill()
            status = proc.wait(timeout=120)
    assert not runs.is_complete(out), f"the run completed before it was killed:\n{log.read_text()[-3000:]}"
    return status


def _losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in runs.read_train_log(run_dir)]


def _assert_same_run(resumed: dict, straight: dict, resumed_dir: Path, straight_dir: Path) -> None:
    """The resumed run's test metrics within 0.01 of the uninterrupted one's, its log epoch by epoch."""
    assert set(resumed) == set(straight)
    for key, value in straight.items():
        if isinstance(value, float):
            assert resumed[key] == pytest.approx(value, abs=0.01), key
        else:
            assert resumed[key] == value, key
    assert [r["epoch"] for r in runs.read_train_log(resumed_dir)] == [
        r["epoch"] for r in runs.read_train_log(straight_dir)]
    # The same batches, weights and optimizer state give the same training losses, epoch by epoch.
    np.testing.assert_allclose(_losses(resumed_dir), _losses(straight_dir), rtol=1e-4)
    assert runs.is_complete(resumed_dir) and not (resumed_dir / runs.RESUME).exists()


# -- killed runs resume to the uninterrupted result ------------------------------------------------------

@pytest.fixture(scope="module")
def killed_deepfm(tmp_path_factory):
    """A DeepFM run killed in its third epoch (two saved)."""
    out = tmp_path_factory.mktemp("deepfm") / "killed"
    _train_and_kill("deepfm", DEEPFM, out, after_epoch=2, state=out / runs.RESUME / runs.RESUME_STATE)
    return out


def test_ctrl_c_says_how_to_go_on_without_a_traceback(tmp_path):
    out = tmp_path / "interrupted"
    state = out / runs.RESUME / runs.RESUME_STATE
    status = _train_and_kill("deepfm", DEEPFM, out, after_epoch=1, state=state, interrupt=True)
    said = (tmp_path / "interrupted.log").read_text()
    assert status == 130 and "interrupted:" in said and "--resume" in said and "Traceback" not in said


def test_a_stopped_run_without_a_saved_state_is_told_to_train_again_not_to_resume(killed_deepfm, tmp_path):
    """A streamed run keeps no resumable state: neither training again nor export may point at --resume."""
    stopped = tmp_path / "streamed"
    shutil.copytree(killed_deepfm, stopped)
    shutil.rmtree(stopped / runs.RESUME)
    with pytest.raises(ConfigError, match="kept no state to resume from.*--overwrite") as refused:
        deepfm.run(_cfg("deepfm", DEEPFM, stopped))
    assert "--resume" not in str(refused.value)
    with pytest.raises(runs.RunDirError) as incomplete:
        runs.open_run(stopped).require_complete()
    assert "--overwrite` trains it" in incomplete.value.fix and "--resume" not in incomplete.value.fix


def test_a_killed_run_is_refused_without_resume_and_by_export(killed_deepfm, tmp_path):
    assert _saved_epoch(killed_deepfm / runs.RESUME / runs.RESUME_STATE) >= 2
    with pytest.raises(ConfigError, match="stopped before it completed.*pass --resume.*or --overwrite"):
        deepfm.run(_cfg("deepfm", DEEPFM, killed_deepfm))
    # export and evaluate, started together (each spends seconds loading TensorFlow)
    proc, evaluated = run_side_by_side(
        [[sys.executable, "-m", "tfrs_recsys.export", "deepfm", "--model-dir", str(killed_deepfm),
          "--export-base", str(tmp_path / "exports")],
         [sys.executable, "-m", "tfrs_recsys.evaluate", "--run-dir", str(killed_deepfm)]],
        timeout=300, env=_env(), cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert all(word in proc.stderr for word in ("did not complete", "--resume", "--allow-incomplete"))
    assert "Traceback" not in proc.stderr and not (tmp_path / "exports" / "deepfm").exists()
    saved = _saved_epoch(killed_deepfm / runs.RESUME / runs.RESUME_STATE)
    assert f"its last saved epoch is {saved} of" in proc.stderr
    assert (evaluated.returncode == 0 and "warning:" in evaluated.stderr
            and "did not complete" in evaluated.stderr), evaluated.stderr[-3000:]
    version = export_ranker(killed_deepfm, tmp_path / "exports", "deepfm", allow_incomplete=True)
    assert read_export_metadata(version)["source_run_complete"] is False


def test_deepfm_resumed_after_a_kill_ends_as_the_uninterrupted_run(killed_deepfm, tmp_path):
    straight = deepfm.run(_cfg("deepfm", DEEPFM, tmp_path / "straight"))
    resumed = deepfm.run(_cfg("deepfm", DEEPFM, killed_deepfm, resume="true"))
    _assert_same_run(resumed, straight, killed_deepfm, tmp_path / "straight")
    # Now complete: --resume again trains nothing and answers the run's metrics; export takes it.
    before = (killed_deepfm / runs.TRAIN_LOG).stat().st_mtime_ns
    assert deepfm.run(_cfg("deepfm", DEEPFM, killed_deepfm, resume="true")) == pytest.approx(
        json.loads((killed_deepfm / runs.TEST_METRICS).read_text()))
    assert (killed_deepfm / runs.TRAIN_LOG).stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="complete; pass --overwrite"):
        deepfm.run(_cfg("deepfm", DEEPFM, killed_deepfm))


def test_retrieval_resumed_by_the_cli_ends_as_the_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    _train_and_kill("retrieval", RETRIEVAL, out, after_epoch=2, state=out / runs.RESUME / runs.RESUME_STATE)
    straight = retrieval.run(_cfg("retrieval", RETRIEVAL, tmp_path / "straight"))
    proc = subprocess.run([sys.executable, "-m", "tfrs_recsys.train", "retrieval", *_flags(RETRIEVAL),
                           "--output-dir", str(out), "--resume"], capture_output=True, text=True, env=_env(),
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resume: continuing after epoch" in proc.stdout
    resumed = json.loads(proc.stdout[proc.stdout.rindex('{\n  "output_dir"'):])["test_metrics"]
    _assert_same_run(resumed, straight, out, tmp_path / "straight")
    assert json.loads((out / runs.META).read_text())["epochs_run"] == 4


@pytest.mark.slow  # three ESMM runs with baselines: about a minute on a loaded 2-core machine
def test_esmm_killed_in_its_baseline_resumes_the_baseline(tmp_path):
    out = tmp_path / "killed"
    _train_and_kill("esmm", ESMM, out, after_epoch=1,
                    state=out / runs.BASELINE / runs.RESUME / runs.RESUME_STATE)
    assert _saved_epoch(out / runs.RESUME / runs.RESUME_STATE) == 2  # the ESMM model itself had finished
    straight = esmm.run(_cfg("esmm", ESMM, tmp_path / "straight"))
    resumed = esmm.run(_cfg("esmm", ESMM, out, resume="true"))
    _assert_same_run(resumed, straight, out, tmp_path / "straight")
    np.testing.assert_allclose(_losses(out / runs.BASELINE), _losses(tmp_path / "straight" / runs.BASELINE),
                               rtol=1e-4)


@pytest.mark.slow  # two workers, killed and resumed, and one process: about 4 minutes on 2 cores
def test_two_workers_killed_and_resumed_train_like_one_process(tmp_path):
    """Both workers read the chief's resume/ (one --output-dir on storage both see); the non-chief writes its
    own state into a temporary folder."""
    from serving_fixtures import free_ports
    from test_distributed import DEEPFM as TWO_WORKER_DEEPFM

    out, args = tmp_path / "run", [*TWO_WORKER_DEEPFM, "--patience", "5"]

    def workers(*extra: str) -> list[subprocess.Popen]:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
        procs = []
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            command = [sys.executable, "-m", "tfrs_recsys.train", *args, "--output-dir", str(out), *extra]
            env = {**_env(), "TF_CONFIG": tf_config, "TMPDIR": str(tmp_path)}
            with open(tmp_path / f"worker{index}{''.join(extra)}.log", "w") as fh:
                procs.append(subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                              env=env))
        return procs

    procs = workers()
    try:
        deadline = time.monotonic() + KILL_TIMEOUT
        while _saved_epoch(out / runs.RESUME / runs.RESUME_STATE) < 2:
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    procs = workers("--resume")
    assert [proc.wait(timeout=KILL_TIMEOUT) for proc in procs] == [0, 0], (
        tmp_path / "worker0--resume.log").read_text()[-3000:]
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "tfrs_recsys.train", *args, "--distribute", "none", "--output-dir",
                    str(single)], capture_output=True, env=_env(), cwd=REPO, timeout=KILL_TIMEOUT, check=True)
    straight = json.loads((single / runs.TEST_METRICS).read_text())
    _assert_same_run(json.loads((out / runs.TEST_METRICS).read_text()), straight, out, single)


@pytest.mark.slow  # two retrieval workers, one killed, both resumed: about a minute on 2 cores
def test_a_stopped_retrieval_worker_is_said_and_both_resume_where_they_were(tmp_path):
    """Stopping one worker (SIGTERM) stops it at once and the other with one line saying what to do; resumed
    under the strategy, the lazy Adam finds each replica's slots and the run ends as the workers' run
    without the stop."""
    from serving_fixtures import free_ports

    out, args = tmp_path / "run", ["retrieval", *_flags({**RETRIEVAL, "epochs": "6"})]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}

    def workers(folder: Path, *extra: str) -> list[subprocess.Popen]:
        command = [sys.executable, "-m", "tfrs_recsys.train", *args, "--output-dir", str(folder), *extra]
        return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                 env={**_env(), "TMPDIR": str(tmp_path), "TF_CONFIG": json.dumps(
                                     {"cluster": cluster, "task": {"type": "worker", "index": index}})})
                for index in range(2)]

    procs = workers(out)
    try:
        deadline = time.monotonic() + KILL_TIMEOUT
        while _saved_epoch(out / runs.RESUME / runs.RESUME_STATE) < 2:
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)  # as Kubernetes stops a pod: TensorFlow's own handler ignored it
        _, err = procs[0].communicate(timeout=KILL_TIMEOUT)
        _, stopped = procs[1].communicate(timeout=KILL_TIMEOUT)
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert procs[1].returncode == 130 and "interrupted" in stopped
    assert procs[0].returncode == 1 and "lost another worker of the cluster" in err and "--resume" in err
    procs = workers(out, "--resume")
    outputs = [proc.communicate(timeout=KILL_TIMEOUT) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][1][-3000:]
    assert "resume: continuing after epoch" in outputs[0][0]
    # two workers' replicas each score their half batch against their own in-batch negatives: the
    # reference is the same pair of workers, never killed
    straight = tmp_path / "straight"
    procs = workers(straight)
    for proc in procs:
        proc.communicate(timeout=KILL_TIMEOUT)
    assert [proc.returncode for proc in procs] == [0, 0]
    _assert_same_run(json.loads((out / runs.TEST_METRICS).read_text()),
                     json.loads((straight / runs.TEST_METRICS).read_text()), out, straight)


# -- the state itself: early stopping and optimizer --------------------------------------------------------

class _Crash(Exception):
    """What the kill of a process is to the in-process tests below."""


class _CrashAfter(tf.keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise _Crash()


def _toy_fit(run_dir: Path, scores: list[float], *, resume: bool, crash_after: int | None = None,
             average: bool = False, optimizer=tf.keras.optimizers.Adam, strategy=None):
    """A linear model on fixed data (no shuffling), Adam, early stopping on a scripted validation score."""
    run_dir.mkdir(exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], dtype="float32"))[:, None]
    with (strategy or tf.distribute.get_strategy()).scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(4,))])
        model.compile(optimizer=optimizer(0.05), loss="mse")
    evaluator = EpochEvaluator(lambda m: {"score": scores[len(runs.read_train_log(run_dir))]}, run_dir,
                               monitor="score", patience=2, average_after_best=average)
    state = TrainingState(run_dir / runs.RESUME, resume=resume)
    initial = state.restore(model, evaluator, lambda: model(x[:1]), 8)
    callbacks = [evaluator, state] + ([_CrashAfter(crash_after)] if crash_after else [])
    model.fit(x, y, batch_size=32, epochs=8, initial_epoch=initial, shuffle=False, verbose=0,
              callbacks=callbacks)
    return model, evaluator


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("crash_after", [3, 4])
def test_early_stopping_and_adam_continue_where_they_were(tmp_path, crash_after, average):
    """Best at epoch 2, patience 2: the run stops after epoch 4 with epoch 2's weights (averaging: the mean
    of epochs 2-4's). Crashed after epoch 3 (one epoch without improvement) the resumed run must stop after
    one more; crashed after epoch 4 (it had stopped) it must train nothing. Without the saved patience count,
    best weights, sum of the averaged epochs or Adam's moments it would stop later, or end with other
    weights."""
    scores = [0.1, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    straight, reference = _toy_fit(tmp_path / "straight", scores, resume=False, average=average)
    assert reference.best_epoch == 2 and reference.epochs_run == 4
    assert reference.averaged_epochs == (2 if average else 0)
    run_dir = tmp_path / "crashed"
    with pytest.raises(_Crash):
        _toy_fit(run_dir, scores, resume=False, crash_after=crash_after, average=average)
    model, evaluator = _toy_fit(run_dir, scores, resume=True, average=average)
    assert (evaluator.best_epoch, evaluator.epochs_run, evaluator.best_value) == (2, 4, 0.9)
    assert evaluator.averaged_epochs == reference.averaged_epochs
    assert [r["epoch"] for r in runs.read_train_log(run_dir)] == [1, 2, 3, 4]
    for got, want in zip(model.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(got, want)  # the same weights in both
    np.testing.assert_allclose(_losses(run_dir), _losses(tmp_path / "straight"), rtol=1e-6)


def test_lazy_adam_resumes_under_a_distribution_strategy(tmp_path):
    """Workers resume under their strategy: the optimizer built to restore its slots must know each
    replica's copy of a variable, as one built by the first step does (else a KeyError at the first
    resumed step)."""
    from tfrs_recsys.training.optimizers import LazyAdam

    scores = [0.1, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    mirrored = {"optimizer": LazyAdam, "strategy": tf.distribute.MirroredStrategy(["/cpu:0"])}
    straight, _ = _toy_fit(tmp_path / "straight", scores, resume=False, **mirrored)
    with pytest.raises(_Crash):
        _toy_fit(tmp_path / "crashed", scores, resume=False, crash_after=3, **mirrored)
    model, evaluator = _toy_fit(tmp_path / "crashed", scores, resume=True, **mirrored)
    assert evaluator.epochs_run == 4
    for got, want in zip(model.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "other_shapes", "checkpoint_cut"])
def test_a_damaged_sum_of_averaged_weights_is_refused_naming_the_file_and_the_fix(tmp_path, damage):
    scores = [0.1, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    run_dir = tmp_path / "crashed"
    with pytest.raises(_Crash):
        _toy_fit(run_dir, scores, resume=False, crash_after=3, average=True)
    saved = run_dir / runs.RESUME / "sum-3.npz"
    named = r"sum-3\.npz .*--overwrite"
    if damage == "truncated":
        saved.write_bytes(saved.read_bytes()[:40])
    elif damage == "other_shapes":
        np.savez(saved, w0=np.zeros((2, 2), "float32"))
    else:  # the saved state's checkpoint cut short, as by a full disk
        data = next((run_dir / runs.RESUME).glob("epoch-3.data-*"))
        data.write_bytes(data.read_bytes()[:10])
        named = r"epoch-3 is damaged or cut short .*--overwrite"
    state = (run_dir / runs.RESUME / runs.RESUME_STATE).read_text()
    with pytest.raises(ConfigError, match=named):
        _toy_fit(run_dir, scores, resume=True, average=True)
    assert (run_dir / runs.RESUME / runs.RESUME_STATE).read_text() == state  # nothing was lost


def test_a_state_saved_by_another_optimizer_is_refused_naming_the_checkpoint_and_the_fix(tmp_path):
    """A run killed under one optimizer (here Keras' legacy Adam, as the rankers' tables trained with the
    legacy Adagrad before their row-wise one) and resumed under another: a clear error, not a traceback."""
    scores = [0.1, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    run_dir = tmp_path / "crashed"
    with pytest.raises(_Crash):
        _toy_fit(run_dir, scores, resume=False, crash_after=2, optimizer=tf.keras.optimizers.legacy.Adam)
    state = (run_dir / runs.RESUME / runs.RESUME_STATE).read_text()
    with pytest.raises(ConfigError, match=r"epoch-2 does not fit .*--overwrite"):
        _toy_fit(run_dir, scores, resume=True)
    assert (run_dir / runs.RESUME / runs.RESUME_STATE).read_text() == state  # nothing was lost


def test_a_resumed_run_drops_log_rows_of_epochs_after_the_saved_state(tmp_path):
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        _toy_fit(run_dir, scores, resume=False, crash_after=2)
    runs.append_log(run_dir, {"epoch": 3, "loss": 1.0})  # killed after logging epoch 3, before saving it
    _, evaluator = _toy_fit(run_dir, scores, resume=True)
    assert [r["epoch"] for r in runs.read_train_log(run_dir)] == list(range(1, 9))
    assert evaluator.best_epoch == 8


# -- a run directory that holds a run --------------------------------------------------------------------

def test_another_config_is_refused_naming_the_fields_and_overwrite_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    small = {**DEEPFM, "epochs": "1", "synthetic_rows": "1000"}
    deepfm.run(_cfg("deepfm", small, out))
    (out / "predictions_test.parquet").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    config = (out / runs.CONFIG).read_text()
    with pytest.raises(ConfigError) as error:
        deepfm.run(_cfg("deepfm", small, out, embedding_dim="8", batch_size="64"))
    message = str(error.value)
    assert "holds a deepfm run of another config" in message
    assert "embedding_dim: 4 there, 8 here" in message and "batch_size: 128 there, 64 here" in message
    assert "another --output-dir" in message and "--resume" in message and "--overwrite" in message
    with pytest.raises(ConfigError, match="holds a deepfm run, not an esmm one"):
        esmm.run(_cfg("esmm", {"epochs": "1", "progress": "false"}, out))
    assert (out / runs.CONFIG).read_text() == config and runs.is_complete(out)  # nothing was touched
    deepfm.run(_cfg("deepfm", small, out, embedding_dim="8", overwrite="true"))
    saved = json.loads((out / runs.CONFIG).read_text())["config"]
    assert saved["embedding_dim"] == 8 and saved["overwrite"] is False  # a rerun from it overwrites nothing
    assert not (out / "predictions_test.parquet").exists() and (out / "notes.txt").read_text() == "mine"
    runs.load_ranker(out)  # the checkpoint is the new model's: every variable restores


def test_an_overwrite_killed_before_its_first_epoch_is_refused_by_export_not_a_shape_error(tmp_path):
    """The old run's checkpoint is deleted with it: a killed overwrite leaves no weights of another shape."""
    out = tmp_path / "run"
    small = {**DEEPFM, "epochs": "1", "synthetic_rows": "1000"}
    deepfm.run(_cfg("deepfm", small, out))
    runs.create(_cfg("deepfm", small, out, embedding_dim="8", overwrite="true"), "deepfm")  # then killed
    assert not (out / "checkpoints").exists() and not runs.is_complete(out)
    with pytest.raises(runs.RunDirError, match="did not complete"):
        export_ranker(out, tmp_path / "exports", "deepfm")
    # Nothing was trained: the same config starts again without a flag.
    deepfm.run(_cfg("deepfm", small, out, embedding_dim="8"))
    assert runs.is_complete(out)
    export_ranker(out, tmp_path / "exports", "deepfm")


# -- options ---------------------------------------------------------------------------------------------

def test_resume_and_overwrite_options():
    assert config_from_args("deepfm", ["--output-dir", "r", "--resume"], environ={}).resume is True
    assert config_from_args("deepfm", ["--output-dir", "r"], environ={"RECSYS_RESUME": "1"}).resume is True
    assert config_from_args("esmm", ["--overwrite"], environ={}).overwrite is True
    with pytest.raises(ConfigError, match="field 'resume'.*contradicts --overwrite"):
        config_from_args("deepfm", ["--output-dir", "r", "--resume", "--overwrite"], environ={})
    with pytest.raises(ConfigError, match="field 'resume'.*needs the run to continue.*--output-dir"):
        config_from_args("retrieval", ["--resume"], environ={})


def test_a_run_that_stopped_before_its_first_epoch_is_replaced_whatever_its_config(tmp_path):
    """Fixing the data (or a flag) after a run stopped at a mistake in it needs no --overwrite."""
    out = tmp_path / "run"
    small = {**DEEPFM, "epochs": "1", "synthetic_rows": "1000"}
    runs.create(_cfg("deepfm", small, out, embedding_dim="8"), "deepfm")  # stopped at its data
    deepfm.run(_cfg("deepfm", small, out))
    assert json.loads((out / runs.CONFIG).read_text())["config"]["embedding_dim"] == 4
    assert runs.is_complete(out)


def test_resume_refuses_input_files_changed_since_the_run_began(tmp_path, datasets_dir):
    data = tmp_path / "log.csv"
    data.write_text("user_id,item_id,click\nu1,i1,1\nu2,i2,0\n")
    options = {"dataset": "csv", "data_dir": str(data), "label_columns": "click", "epochs": "3"}
    run_dir = runs.create(_cfg("deepfm", options, tmp_path / "run"), "deepfm")
    (Path(run_dir) / runs.TRAIN_LOG).write_text(json.dumps({"epoch": 1, "loss": 0.5}) + "\n")  # 1 epoch
    from tfrs_recsys import run_lock, run_reuse

    run_lock.release(run_dir)
    resumed = _cfg("deepfm", options, tmp_path / "run", resume=True)
    assert run_reuse.check(resumed, "deepfm") == run_reuse.RESUME  # the same files: it goes on
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))  # copied again, same bytes
    assert run_reuse.check(resumed, "deepfm") == run_reuse.RESUME
    data.write_text("user_id,item_id,click\nu1,i1,1\nu2,i2,0\nu3,i3,1\n")  # tomorrow's export, same path
    with pytest.raises(ConfigError, match=r"log.csv changed \(size .* then, .* now\).*--overwrite"):
        run_reuse.check(resumed, "deepfm")
    # a named dataset's folder is its loader's: a run on MovieLens begins (and records nothing of it)
    movielens = {"dataset": "movielens-100k", "data_dir": str(datasets_dir / "ml-100k"),
                 "epochs": "1"}
    run_lock.release(runs.create(_cfg("retrieval", movielens, tmp_path / "ml"), "retrieval"))
