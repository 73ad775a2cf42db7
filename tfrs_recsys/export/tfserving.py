"""TF Serving's on-disk layout: ``<base>/<name>/<integer version>/saved_model.pb``.

A version is written to a temporary directory beside its final place and renamed
into place, so a server polling the base path never sees half a model. The base may be
a ``tf.io.gfile`` URL (gs://...): there the rename is ``tf.io.gfile.rename``, a copy of
each object on object stores (see :func:`tfrs_recsys.paths.rename`). Each version
carries ``assets.extra/tf_serving_warmup_requests`` (a TFRecord of ``PredictionLog``)
and ``assets.extra/export_metadata.json``. ``<base>/models.config`` lists what was exported there, and
``<base>/<name>/.last_version`` the largest version number handed out there
(:mod:`tfrs_recsys.export.version_numbers`).
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfrs_recsys import paths
from tfrs_recsys.export.version_numbers import reserve_version
from tfrs_recsys.servable_layout import ASSETS_EXTRA, METADATA_FILE, version_dirs, write_warmup_requests

logger = logging.getLogger(__name__)
STAGING_PREFIX = ".tmp-"  # a version being written: never a version to a server (not an integer)
PENDING_PREFIX = ".pending-"  # a manifest of renames that publish several versions as one


def existing_versions(model_dir: str | os.PathLike) -> list[int]:
    """Integer versions already published under ``model_dir``, ascending (none when it does not exist)."""
    return sorted(version_dirs(model_dir)) if paths.isdir(model_dir) else []


def stage_version(export_base: str | os.PathLike, name: str, save_fn: Callable[[str], None], *,
                  version: int | None = None, warmup: Sequence[tuple[str, Mapping[str, np.ndarray]]] = (),
                  metadata: Mapping | None = None) -> tuple[Path | str, Path | str]:
    """Writes one model version into a staging folder beside its final place, metadata last.

    ``save_fn(tmp_dir)`` writes the SavedModel; warmup requests and ``export_metadata.json`` are added
    after it, so a staging folder holding the metadata is complete.

    Args:
      export_base: The model server's base path (local or a ``tf.io.gfile`` URL).
      name: The model's name under it.
      save_fn: Writes the SavedModel into the directory it is given.
      version: The version number (default: the next one, :func:`reserve_version`: never one handed out
        before under ``BASE/NAME``). An existing version is never overwritten.
      warmup: ``(signature, inputs)`` requests for ``assets.extra/tf_serving_warmup_requests``.
      metadata: What ``assets.extra/export_metadata.json`` says besides the name and version.

    Returns:
      ``(staging folder, final version folder)``.

    Raises:
      FileExistsError: The version exists.
    """
    model_dir = paths.makedirs(paths.join(export_base, name))
    version = reserve_version(model_dir, version=version)  # recorded: never handed out again
    final = paths.join(model_dir, str(version))
    if paths.exists(final):
        raise FileExistsError(f"{final} already exists; export to a new version (omit --version) "
                              "or remove it")
    # A dot-prefixed, non-numeric name: TF Serving ignores it while it is being written.
    tmp = paths.make_temp_dir(model_dir, prefix=f"{STAGING_PREFIX}{version}-")
    try:
        save_fn(str(tmp))
        if not paths.isfile(paths.join(tmp, "saved_model.pb")):
            raise RuntimeError(f"save_fn wrote no saved_model.pb into {tmp}")
        if warmup:
            write_warmup_requests(tmp, name, warmup)
        meta = {"name": name, "version": version, **(metadata or {})}
        extra = paths.makedirs(paths.join(tmp, ASSETS_EXTRA))
        paths.write_text(paths.join(extra, METADATA_FILE), json.dumps(meta, indent=2, default=str) + "\n")
    except BaseException:
        paths.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, final


def publish_version(export_base: str | os.PathLike, name: str, save_fn: Callable[[str], None],
                    **options) -> Path | str:
    """Writes one model version atomically: :func:`stage_version`, then a rename into place.

    Args:
      export_base: The model server's base path (local or a ``tf.io.gfile`` URL).
      name: The model's name under it.
      save_fn: Writes the SavedModel into the directory it is given.
      **options: ``version``, ``warmup``, ``metadata`` of :func:`stage_version`.

    Returns:
      The version directory.
    """
    return publish_versions(export_base, [stage_version(export_base, name, save_fn, **options)])[0]


def publish_versions(export_base: str | os.PathLike,
                     staged: Sequence[tuple[Path | str, Path | str]]) -> list[Path | str]:
    """Renames staged versions into place as one: a manifest of the moves is written first and removed last,
    so a kill between two renames is completed by the next export (:func:`repair_exports`).

    Args:
      export_base: The base path the versions are under.
      staged: :func:`stage_version` results.

    Returns:
      The version directories.
    """
    manifest = paths.join(export_base, f"{PENDING_PREFIX}{uuid.uuid4().hex[:12]}.json")
    if len(staged) > 1:
        paths.write_text_atomic(manifest, json.dumps([[str(tmp), str(final)] for tmp, final in staged]))
    renamed = []
    try:
        for tmp, final in staged:
            paths.rename(tmp, final)
            renamed.append(final)
    except BaseException:  # an error (not a kill): roll back, never leaving one half of a pair
        for folder in [*renamed, *(tmp for tmp, _ in staged)]:
            paths.rmtree(folder, ignore_errors=True)
        if len(staged) > 1:
            paths.remove(manifest, missing_ok=True)
        raise
    if len(staged) > 1:
        paths.remove(manifest)
    return [final for _, final in staged]


def _moves(manifest) -> list[tuple[str, str]] | None:
    """A pending manifest's ``(staged, final)`` moves, or None if it cannot be read as such."""
    try:
        moves = json.loads(paths.read_text(manifest))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(moves, list) or not all(isinstance(m, list) and len(m) == 2
                                              and all(isinstance(p, str) for p in m) for m in moves):
        return None
    return [(tmp, final) for tmp, final in moves]


def repair_exports(export_base: str | os.PathLike, *, grace_seconds: float = 3600.0) -> dict[str, list[str]]:
    """Finishes what a killed export left: interrupted pairs, then stale staging folders.

    A pending manifest (:func:`publish_versions`) whose staged members are all complete is rolled forward
    (the remaining renames made); one with a member lost is rolled back (its published members removed),
    so a server never serves one half of a pair. Staging folders older than ``grace_seconds`` that no
    manifest names are removed (a running export's are younger).

    Args:
      export_base: The base path.
      grace_seconds: The age from which a staging folder is stale.

    Returns:
      ``{"completed": [...], "rolled_back": [...], "removed": [...]}``: the folders concerned.
    """
    done: dict[str, list[str]] = {"completed": [], "rolled_back": [], "removed": []}
    if not paths.isdir(export_base):
        return done
    for entry in sorted(paths.listdir(export_base)):
        if not (entry.startswith(PENDING_PREFIX) and entry.endswith(".json")):
            continue
        manifest = paths.join(export_base, entry)
        moves = _moves(manifest)
        if moves is None:  # written whole before any rename: nothing was published, its staging is stale
            logger.warning("%s: an unreadable pending-export manifest, left by a kill before its first "
                           "rename; removed (its staging folders go once stale)", manifest)
            paths.remove(manifest)
            continue
        pending = [(tmp, final) for tmp, final in moves if not paths.exists(final)]
        if all(paths.isfile(paths.join(tmp, ASSETS_EXTRA, METADATA_FILE)) for tmp, _ in pending):
            for tmp, final in pending:
                paths.rename(tmp, final)
                done["completed"].append(str(final))
        else:
            for folder in (f for move in moves for f in move if paths.exists(f)):
                paths.rmtree(folder, ignore_errors=True)
                done["rolled_back"].append(str(folder))
        paths.remove(manifest)
    now = time.time()
    for name in paths.listdir(export_base):
        model_dir = paths.join(export_base, name)
        if name.startswith(".") or not paths.isdir(model_dir):
            continue
        for child in paths.listdir(model_dir):
            folder = paths.join(model_dir, child)
            if child.startswith(STAGING_PREFIX) and now - _modified(folder) > grace_seconds:
                paths.rmtree(folder, ignore_errors=True)
                done["removed"].append(str(folder))
    return done


def _modified(path: Path | str) -> float:
    """A folder's modification time (seconds since 1970); now when it cannot be read (then it is kept)."""
    import tensorflow as tf

    try:
        return tf.io.gfile.stat(str(path)).mtime_nsec / 1e9
    except (tf.errors.OpError, OSError):
        return time.time()


def read_export_metadata(version_dir: str | os.PathLike) -> dict:
    """A version's ``assets.extra/export_metadata.json`` (empty when it has none)."""
    path = paths.join(version_dir, ASSETS_EXTRA, METADATA_FILE)
    return paths.read_json(path) if paths.isfile(path) else {}


MODELS_CONFIG = "models.config"


def update_models_config(export_base: str | os.PathLike, names: Sequence[str]) -> Path | str:
    """Adds ``names`` to ``BASE/models.config`` (TF Serving's ``--model_config_file``), keeping the rest.

    A new entry serves the latest version from ``BASE/NAME`` (an absolute path); an entry already there
    gets its base path pointed at ``BASE/NAME`` and keeps its version policy and labels.

    Args:
      export_base: The model server's base path.
      names: The models exported under it.

    Returns:
      The file's path.

    Raises:
      ValueError: The existing file is not a ``ModelServerConfig`` text proto (nothing is written).
    """
    path = paths.join(export_base, MODELS_CONFIG)
    config = model_server_config_pb2.ModelServerConfig()
    if paths.isfile(path):
        try:
            text_format.Parse(paths.read_text(path), config)
        except text_format.ParseError as e:
            raise ValueError(f"{path}:{e}: not a models.config text proto; fix or remove it") from None
    entries = config.model_config_list.config
    for name in names:
        entry = next((c for c in entries if c.name == name), None) or entries.add(name=name)
        entry.base_path, entry.model_platform = paths.absolute(paths.join(export_base, name)), "tensorflow"
        if not entry.HasField("model_version_policy"):
            entry.model_version_policy.latest.num_versions = 1
    text = text_format.MessageToString(config)
    if paths.is_remote(path):
        return paths.write_text(path, text)  # one object, replaced whole
    # Renamed into place: a server polling the file never reads half of it.
    paths.rename(paths.write_text(f"{path}.tmp-{os.getpid()}", text), path)
    return path


def write_models_config(path: str | os.PathLike, models: Sequence[Mapping]) -> Path | str:
    """Writes TF Serving's ``models.config`` (a ``ModelServerConfig`` text proto).

    Args:
      path: The file to write.
      models: ``{"name", "base_path", "policy"?, "labels"?}`` per model. ``policy`` is ``"latest"``
        (default), ``"all"`` or a list of versions to serve; ``labels`` maps a label to a version.

    Returns:
      ``path``.
    """
    lines = ["model_config_list {"]
    for m in models:
        policy = m.get("policy", "latest")
        if policy == "all":
            policy = "all {}"
        elif isinstance(policy, (list, tuple)):
            policy = "specific { " + " ".join(f"versions: {int(v)}" for v in policy) + " }"
        else:
            policy = "latest { num_versions: 1 }"
        lines += ["  config {", f'    name: "{m["name"]}"', f'    base_path: "{m["base_path"]}"',
                  '    model_platform: "tensorflow"', f"    model_version_policy {{ {policy} }}",
                  *(f'    version_labels {{ key: "{label}" value: {int(v)} }}'
                    for label, v in (m.get("labels") or {}).items()),
                  "  }"]
    lines.append("}")
    return paths.write_text(path, "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfrs_recsys.export repair BASE``: :func:`repair_exports`, printed as JSON.

    Args:
      argv: ``BASE [--grace-seconds S]`` (default: the command line's).

    Returns:
      The exit code: 0.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.export repair",
                                     description="Finish what a killed export left under a base path")
    parser.add_argument("base", help="the export base (TF Serving's base path folder)")
    parser.add_argument("--grace-seconds", type=float, default=3600.0,
                        help="staging folders older than this are removed (default 3600)")
    args = parser.parse_args(argv)
    print(json.dumps(repair_exports(args.base, grace_seconds=args.grace_seconds), indent=2))
    return 0

