"""TensorFlow's native notices stay off a command's stderr; real errors, tracebacks and --verbose do not."""
import os
import subprocess
import sys
from pathlib import Path

from side_by_side import run_side_by_side

REPO = Path(__file__).resolve().parents[1]
NOTICES = [b"E0000 cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error",
           b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
           b"W0000 op_level_cost_estimator.cc:699] Error in PredictCost() for the op: op: \"Softmax\"",
           b"E tensorflow/core/util/util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512.",
           b"I0000 partitioner_factory_base.cc:58] Size of sampled dataset for training partition: 400",
           b"W0000 gmm_utils.cc:1026] Could not normalize centroid due to zero norm or empty or zero-weight "
           b"partition.",
           b"I0000 kmeans_tree_partitioner_utils.h:90] PartitionerFactory ran in 893.339us."]
SCRIPT = f"""
import os, sys
from tfrs_recsys.native_logs import filter_native_logs
filter_native_logs()
for line in {NOTICES!r}:
    os.write(2, line + b"\\n")
os.write(2, b"E0000 some_kernel.cc:1] a real native error\\n")
print("python's own stderr", file=sys.stderr)
os.write(2, b"last words without a newline")
raise SystemExit("failing at exit")
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RECSYS_VERBOSE")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_the_filter_drops_only_the_known_notices():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=60, env=_env())
    assert proc.returncode == 1
    for notice in NOTICES:
        assert notice not in proc.stderr
    for kept in (b"a real native error", b"python's own stderr", b"last words without a newline",
                 b"failing at exit"):
        assert kept in proc.stderr


def test_commands_are_quiet_by_default_and_verbose_on_request(tmp_path):
    command = [sys.executable, "-m", "tfrs_recsys.export", "describe", str(tmp_path)]
    # the two runs, started together (each spends seconds loading TensorFlow)
    quiet, verbose = run_side_by_side([command, command], timeout=120,
                                      envs=[_env(), _env(RECSYS_VERBOSE="1")], cwd=REPO)
    assert quiet.returncode == 2 and "holds no saved_model.pb" in quiet.stderr
    assert not any(n.decode()[:40] in quiet.stderr for n in NOTICES), quiet.stderr
    assert quiet.stderr.strip().splitlines() == [f"error: {tmp_path} holds no saved_model.pb and no version "
                                                 "folder (BASE/NAME/<int>)"]
    assert verbose.returncode == 2 and "holds no saved_model.pb" in verbose.stderr
