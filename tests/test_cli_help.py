"""Every option of every command has a help sentence, and the top-level helps list what there is."""
import importlib
import re

import pytest

COMMANDS = [("tfrs_recsys.train", ["retrieval"]), ("tfrs_recsys.train", ["esmm"]),
            ("tfrs_recsys.train", ["deepfm"]), ("tfrs_recsys.tune", ["deepfm"]),
            ("tfrs_recsys.export.__main__", ["retrieval"]),
            ("tfrs_recsys.export.__main__", ["deepfm"]), ("tfrs_recsys.export.__main__", ["describe"]),
            ("tfrs_recsys.recommend", []), ("tfrs_recsys.evaluate", []), ("tfrs_recsys.demo", []),
            ("tfrs_recsys.model_server.server", []), ("tfrs_recsys.serving.http_service", []),
            ("tfrs_recsys.serving.feature_store", []), ("tfrs_recsys.serving.publish", []),
            ("tfrs_recsys.data.schema_cli", [])]


def _help(module: str, args: list[str], capsys) -> str:
    try:
        code = importlib.import_module(module).main([*args, "--help"])
    except SystemExit as exit_:
        code = exit_.code
    assert code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("module, args", COMMANDS, ids=[" ".join([m, *a]) for m, a in COMMANDS])
def test_every_option_has_a_help_sentence(module, args, capsys):
    lines = _help(module, args, capsys).splitlines()
    silent = []
    for i, line in enumerate(lines):
        option = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        wrapped = i + 1 < len(lines) and re.match(r"^\s{10,}\S", lines[i + 1])
        if option and not option.group(2) and not wrapped:
            silent.append(option.group(1))
    assert not silent, f"options without help: {silent}"


def test_the_top_level_helps_list_the_commands_and_datasets(capsys):
    export = _help("tfrs_recsys.export.__main__", [], capsys)
    assert all(command in export for command in ("retrieval", "describe", "deepfm"))
    tune = _help("tfrs_recsys.tune", [], capsys)
    assert "usage: python -m tfrs_recsys.tune" in tune and "``" not in tune and ":mod:" not in tune
    datasets = _help("tfrs_recsys.train", ["retrieval"], capsys)
    assert re.search(r"^  interactions\s+your interaction log", datasets, re.M)
    assert re.search(r"^  movielens-100k\s+folder with u.data", datasets, re.M)


BENCH_IMPORTS = """
import importlib.util, pathlib, sys
sys.path.insert(0, "bench")
failed = []
for path in sorted(pathlib.Path("bench").glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = sys.modules[path.stem] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        failed.append(f"{path}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_bench_script_imports():
    """The benchmarks are not run by the suite: this at least catches a name they import that moved."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", BENCH_IMPORTS], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


LIGHT_HELPS = """
import importlib, sys
for module, args in [("tfrs_recsys.train", ["retrieval"]), ("tfrs_recsys.tune", ["deepfm"]),
                     ("tfrs_recsys.recommend", []), ("tfrs_recsys.evaluate", []),
                     ("tfrs_recsys.model_server.server", []), ("tfrs_recsys.serving.feature_store", []),
                     ("tfrs_recsys.data.schema_cli", [])]:
    try:
        importlib.import_module(module).main([*args, "--help"])
    except SystemExit:
        pass
    if "tensorflow" in sys.modules:
        sys.exit(f"{module} --help imported TensorFlow")
"""


def test_the_helps_of_commands_a_user_types_first_answer_without_loading_tensorflow():
    """TensorFlow takes seconds to import: a command's --help must not wait for it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LIGHT_HELPS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
