"""Shared fixtures: the real datasets folder (skipped with a reason when absent)."""
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """``$RECSYS_DATASETS_DIR`` or ../shared/datasets beside the repo."""
    path = Path(os.environ.get("RECSYS_DATASETS_DIR", _DEFAULT)).resolve()  # tests link to its files
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path}; set RECSYS_DATASETS_DIR to the shared/datasets "
                    "folder")
    return path


def dataset_path(datasets_dir: Path, *parts: str) -> Path:
    path = datasets_dir.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is missing from the datasets folder")
    return path
