"""A killed export never leaves one half of a retrieval pair served, and its staging folders go away."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfrs_recsys.export.tfserving import (
    PENDING_PREFIX,
    existing_versions,
    publish_versions,
    repair_exports,
    stage_version,
)

REPO = Path(__file__).resolve().parents[1]


def _save(folder: str) -> None:  # the layout's contract only: repair never loads a model
    Path(folder, "saved_model.pb").write_bytes(b"graph")


def _pair(base: Path, version: int = 1):
    return [stage_version(base, name, _save, version=version) for name in ("rec", "rec_portable")]


def test_a_kill_between_the_two_renames_is_rolled_forward(tmp_path):
    staged = _pair(tmp_path)
    # what publish_versions writes before renaming, then the first rename only: the kill
    (tmp_path / f"{PENDING_PREFIX}killed.json").write_text(json.dumps([[str(t), str(f)] for t, f in staged]))
    os.replace(*staged[0])
    assert existing_versions(tmp_path / "rec") == [1] and existing_versions(tmp_path / "rec_portable") == []
    done = repair_exports(tmp_path)
    assert done["completed"] == [str(staged[1][1])]
    assert existing_versions(tmp_path / "rec_portable") == [1]
    assert not list(tmp_path.glob(f"{PENDING_PREFIX}*")) and not list(tmp_path.glob("*/.tmp-*"))


def test_a_pair_whose_other_half_is_lost_is_rolled_back(tmp_path):
    staged = _pair(tmp_path)
    (tmp_path / f"{PENDING_PREFIX}killed.json").write_text(json.dumps([[str(t), str(f)] for t, f in staged]))
    os.replace(*staged[0])
    (Path(staged[1][0]) / "assets.extra" / "export_metadata.json").unlink()  # never finished staging
    done = repair_exports(tmp_path)
    assert str(staged[0][1]) in done["rolled_back"]
    assert existing_versions(tmp_path / "rec") == [] and existing_versions(tmp_path / "rec_portable") == []


def test_a_manifest_cut_short_by_a_kill_is_removed_and_the_next_export_goes_on(tmp_path):
    staged = _pair(tmp_path)
    torn = tmp_path / f"{PENDING_PREFIX}torn.json"
    torn.write_text(json.dumps([[str(t), str(f)] for t, f in staged])[:30])  # killed while writing it
    (tmp_path / f"{PENDING_PREFIX}other.json").write_text('{"not": "moves"}')
    assert repair_exports(tmp_path) == {"completed": [], "rolled_back": [], "removed": []}
    assert not list(tmp_path.glob(f"{PENDING_PREFIX}*"))  # nothing was renamed: nothing to undo
    assert existing_versions(tmp_path / "rec") == []
    assert [Path(f).name for f in publish_versions(tmp_path, _pair(tmp_path, 2))] == ["2", "2"]


def test_a_failed_rename_rolls_the_pair_back(tmp_path):
    staged = _pair(tmp_path)
    Path(staged[1][1]).mkdir()  # the second place is taken: the rename fails
    Path(staged[1][1], "keep").write_text("")
    with pytest.raises(OSError):
        publish_versions(tmp_path, staged)
    assert existing_versions(tmp_path / "rec") == [] and not list(tmp_path.glob(f"{PENDING_PREFIX}*"))
    assert not list(tmp_path.glob("*/.tmp-*"))
    assert [Path(f).name for f in publish_versions(tmp_path, _pair(tmp_path, 2))] == ["2", "2"]


def test_stale_staging_folders_are_removed_and_fresh_ones_kept(tmp_path):
    stale, _ = stage_version(tmp_path, "ranker", _save, version=1)
    fresh, _ = stage_version(tmp_path, "ranker", _save, version=2)
    an_hour_ago = time.time() - 7200
    os.utime(stale, (an_hour_ago, an_hour_ago))
    proc = subprocess.run([sys.executable, "-m", "tfrs_recsys.export", "--repair", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["removed"] == [str(stale)]
    assert not Path(stale).exists() and Path(fresh).exists()


def test_a_published_version_gets_the_umask_permissions_not_owner_only(tmp_path):
    """TF Serving running as another user reads the version folder (``mkdtemp`` staged it owner-only)."""
    umask = os.umask(0o022)
    try:
        published = publish_versions(tmp_path, _pair(tmp_path))
    finally:
        os.umask(umask)
    for version in published:
        assert Path(version).stat().st_mode & 0o777 == 0o755
        assert Path(version, "saved_model.pb").stat().st_mode & 0o777 == 0o644

