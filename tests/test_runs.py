"""The run directory's readers: a missing file or another model's run fails naming the file and the command
that writes it (the round trip of real training runs is in test_ranker_export and test_retrieval_train)."""
import os
import sys
from pathlib import Path

import pytest
from side_by_side import run_side_by_side

from tfrs_recsys import run_lock, runs
from tfrs_recsys.config_sources import build_config
from tfrs_recsys.data.schema_inference import infer_schema
from tfrs_recsys.data.splits import random_split
from tfrs_recsys.data.synthetic import synthetic_ctr_logs

REPO = Path(__file__).resolve().parents[1]


def _ranker_run_without_checkpoint(run_dir: Path) -> Path:
    """What training has written before its first epoch ends: config.json, spec.json, split.json."""
    data = synthetic_ctr_logs(200, seed=1, num_users=20, num_items=30)
    split = random_split(data.frame, test_fraction=0.2, validation_fraction=0.2, seed=1)
    cfg = build_config("deepfm", {"output_dir": str(run_dir)}, environ={})
    runs.write_ranker_files(runs.create(cfg, "deepfm"), infer_schema(split.train, data.labels), split)
    return run_dir


def test_a_directory_without_config_names_it_and_the_train_command(tmp_path):
    with pytest.raises(runs.RunDirError) as error:
        runs.load_retrieval(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path}: the run directory has no config.json")
    assert f"python -m tfrs_recsys.train retrieval --output-dir {tmp_path}" in message


def test_a_run_without_checkpoint_names_it_and_the_command_that_writes_it(tmp_path):
    run_dir = _ranker_run_without_checkpoint(tmp_path / "run")
    assert runs.open_run(run_dir).model_name == "deepfm"
    with pytest.raises(runs.RunDirError) as error:
        runs.load_ranker(run_dir)
    message = str(error.value)
    assert "the deepfm run has no checkpoints/best" in message and "spec.json" not in message
    assert f"python -m tfrs_recsys.train deepfm --config {run_dir / 'config.json'}" in message
    (run_dir / runs.SPEC).unlink()
    with pytest.raises(runs.RunDirError, match="has no spec.json, checkpoints/best"):
        runs.load_ranker(run_dir)


def test_another_models_run_is_refused(tmp_path):
    run_dir = _ranker_run_without_checkpoint(tmp_path / "run")
    with pytest.raises(runs.RunDirError, match="the run trained 'deepfm', not 'retrieval'"):
        runs.load_retrieval(run_dir)
    with pytest.raises(runs.RunDirError, match="the run trained 'deepfm', not 'esmm'"):
        runs.load_ranker(run_dir, "esmm")


def test_the_commands_print_the_error_and_exit_2(tmp_path):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    run_dir = _ranker_run_without_checkpoint(tmp_path / "run")
    commands = (["tfrs_recsys.recommend", "--run-dir", str(tmp_path), "--user-id", "1"],
                ["tfrs_recsys.export", "deepfm", "--model-dir", str(run_dir), "--export-base",
                 str(tmp_path / "out"), "--name", "x"])
    # started together (each spends seconds loading TensorFlow)
    for done in run_side_by_side([[sys.executable, "-m", *command] for command in commands], timeout=300,
                                 env=env, cwd=REPO):
        assert done.returncode == 2, done.stderr[-2000:]
        assert "config.json" in done.stderr and "python -m tfrs_recsys.train" in done.stderr


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_corrupt_config_is_named_not_a_traceback(tmp_path, text):
    (tmp_path / runs.CONFIG).write_text(text)
    with pytest.raises(runs.RunDirError, match="config.json is not a JSON object of options"):
        runs.open_run(tmp_path)


def test_the_run_files_get_the_umask_permissions_not_owner_only(tmp_path):
    """A model server or a colleague running as another user reads the run (``mkstemp`` made config.json
    and COMPLETE owner-only)."""
    umask = os.umask(0o022)
    try:
        run_dir = _ranker_run_without_checkpoint(tmp_path / "run")
        runs.mark_complete(run_dir)
    finally:
        os.umask(umask)
    modes = {f.name: f.stat().st_mode & 0o777 for f in run_dir.iterdir() if f.is_file()}
    assert {"config.json", "COMPLETE", "spec.json"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o644)
    assert [p.name for p in run_dir.glob(".*")] == [run_lock.LOCK]  # no temporary file left



def test_a_directory_another_training_writes_is_refused_even_with_overwrite(tmp_path):
    import subprocess

    from tfrs_recsys.config import ConfigError

    holder = subprocess.Popen(  # another training: it has taken the folder and writes on
        [sys.executable, "-c", "import sys, time; from tfrs_recsys import run_lock; "
         "run_lock.take(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = build_config("deepfm", {"output_dir": str(tmp_path), "overwrite": True}, environ={})
        with pytest.raises(ConfigError, match=f"being written by another training \\(pid {holder.pid} on"):
            runs.create(cfg, "deepfm")
        from tfrs_recsys.training.common import completed_run

        plain = build_config("deepfm", {"output_dir": str(tmp_path)}, environ={})
        with pytest.raises(ConfigError, match="being written by another training"):  # before data is read
            completed_run(plain, "deepfm")
    finally:
        holder.kill()
        holder.wait()
    _ranker_run_without_checkpoint(tmp_path)  # its lock went with it, even killed
    assert (tmp_path / "spec.json").is_file()
    runs.release(tmp_path)  # this run ended: another process may train there now
    taken = subprocess.run([sys.executable, "-c", "import sys; from tfrs_recsys import run_lock; "
                            "run_lock.take(sys.argv[1])", str(tmp_path)],
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert taken.returncode == 0
    runs.mark_complete(tmp_path)
    with pytest.raises(ConfigError, match="not an esmm one"):  # refused: the folder is let go at once
        completed_run(build_config("esmm", {"output_dir": str(tmp_path)}, environ={}), "esmm")
    taken = subprocess.run(taken.args, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert taken.returncode == 0
