"""Every notebook runs top to bottom on the default synthetic data, and is committed without outputs.

Each notebook is executed by nbclient in a Jupyter kernel of *this* interpreter (the venv's
python, with tfrs_recsys installed), from the repository root, with its artifacts in a temp
folder (``RECSYS_NOTEBOOK_WORKDIR``). A cell that raises fails the test with the cell's source
and traceback.
"""
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600
KERNEL = "tfrs-recsys-test"


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_retrieval.ipynb", "02_esmm_ranking.ipynb", "03_deepfm.ipynb",
                                           "04_serving.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `python tools/strip_notebooks.py {path}`"
    config = [c for c in code if re.search(r"^DATASET\s*=", c.source, re.M)]
    assert len(config) == 1 and re.search(r"^DATA_DIR\s*=", config[0].source, re.M), \
        f"{path.name} needs exactly one config cell, the one that sets DATASET and DATA_DIR"


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    """Kernels of this interpreter, whatever 'python3' kernels the user's Jupyter knows."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / KERNEL
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tfrs_recsys (test)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    return lambda: KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, kernel_manager_factory):
    monkeypatch.setenv("RECSYS_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
    for name in ("RECSYS_NOTEBOOK_DATASET", "RECSYS_NOTEBOOK_DATA_DIR"):  # the default (synthetic) data
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=kernel_manager_factory(), timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} raised in a cell:\n{exc}", pytrace=False)
    finally:  # nbclient cleans up only kernels it created: stop this one (about 1 GB with TensorFlow loaded)
        if client.kc is not None:
            client.kc.stop_channels()
        if client.km.has_kernel:
            client.km.shutdown_kernel(now=True)
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in ran)
    images = sum("image/png" in o.get("data", {}) for c in ran for o in c.outputs)
    assert images >= 1, f"{path.name} drew no plot"
    noise = [line for c in ran for o in c.outputs if o.get("output_type") == "stream"
             for line in o.get("text", "").splitlines()
             if re.search(r"cuInit|oneDNN|WARNING:tensorflow|DeprecationWarning|Pandas4Warning", line)]
    assert not noise, f"{path.name} printed library notices a reader would take for errors: {noise[:3]}"
    assert os.listdir(tmp_path / "work"), f"{path.name} wrote no artifacts under RECSYS_NOTEBOOK_WORKDIR"
