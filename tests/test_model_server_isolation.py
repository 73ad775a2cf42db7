"""The model server knows nothing of training, as ``tensorflow_model_server`` doesn't."""
import json
import subprocess
import sys

TRAINING_STAGES = ("tfrs_recsys.data", "tfrs_recsys.features", "tfrs_recsys.models", "tfrs_recsys.training",
                   "tfrs_recsys.export", "tfrs_recsys.config")


def test_model_server_imports_no_training_stage():
    code = (
        "import json, pkgutil, importlib, sys\n"
        "import tfrs_recsys.model_server as ms\n"
        "for info in pkgutil.iter_modules(ms.__path__):\n"
        "    if info.name != '__main__':\n"
        "        importlib.import_module('tfrs_recsys.model_server.' + info.name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tfrs_recsys'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "tfrs_recsys.model_server.server" in loaded
    leaked = [m for m in loaded if any(m == s or m.startswith(s + ".") for s in TRAINING_STAGES)]
    assert not leaked, f"the model server pulls in training-side modules: {leaked}"


def test_old_server_module_name_still_runs():
    out = subprocess.run([sys.executable, "-m", "tfrs_recsys.serving.server", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--model_config_file" in out.stdout and "--rest_api_port" in out.stdout
