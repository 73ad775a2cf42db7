"""``python -m tfrs_recsys.export describe BASE/NAME[/VERSION]``: what a served model takes and returns.

Reads ``saved_model.pb`` without loading the model (so it works without ScaNN's ops installed) and
prints each signature's inputs and outputs (name, dtype, shape; ``-1`` is any size) and whether the
graph needs ScaNN's ops.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from tfrs_recsys import paths
from tfrs_recsys.servable_layout import ASSETS_EXTRA, METADATA_FILE, version_dirs

SCANN_NOTE = ("needs ScaNN's TensorFlow ops: serve it with `python -m tfrs_recsys.model_server` or a "
              "ScaNN-linked tensorflow_model_server; in Python, `import scann` before tf.saved_model.load")
STANDARD_NOTE = "standard TensorFlow ops only: any TF Serving serves it"


def describe(path: str | os.PathLike) -> dict:
    """The signatures of a SavedModel and the custom ops it needs.

    Args:
      path: A version directory (holding ``saved_model.pb``) or a model directory (its newest version).

    Returns:
      ``{"path", "signatures": {name: {"inputs"|"outputs": {tensor: {"dtype", "shape"}}}}, "scann_ops",
      "inputs"}``; ``inputs``: a ranker export's entry per input (kind, separator, missing value).

    Raises:
      FileNotFoundError: ``path`` holds no SavedModel and no version of one.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    if not paths.isfile(paths.join(path, "saved_model.pb")):
        versions = version_dirs(path) if paths.isdir(path) else {}
        if not versions:
            raise FileNotFoundError(f"{path} holds no saved_model.pb and no version folder (BASE/NAME/<int>)")
        path = versions[max(versions)]
    proto = saved_model_pb2.SavedModel.FromString(paths.read_bytes(paths.join(path, "saved_model.pb")))
    graph = proto.meta_graphs[0]
    ops = {n.op for n in graph.graph_def.node} | {
        n.op for fn in graph.graph_def.library.function for n in fn.node_def}

    def tensors(infos) -> dict:
        return {name: {"dtype": tf.dtypes.as_dtype(info.dtype).name,
                       "shape": None if info.tensor_shape.unknown_rank else
                       [d.size for d in info.tensor_shape.dim]} for name, info in sorted(infos.items())}

    signatures = {name: {"inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}
                  for name, sig in sorted(graph.signature_def.items()) if not name.startswith("__")}
    scann_ops = sorted(op for op in ops if op.startswith("Scann"))
    metadata = paths.join(path, ASSETS_EXTRA, METADATA_FILE)  # an export of ours says what each input holds
    about = json.loads(paths.read_text(metadata)) if paths.isfile(metadata) else {}
    inputs = {entry["name"]: entry for entry in about.get("inputs", []) if isinstance(entry, dict)}
    return {"path": str(path), "signatures": signatures, "scann_ops": scann_ops, "inputs": inputs}


def input_note(entry: dict) -> str:
    """How a client writes one ranker input, from its export metadata: a list's separator, a time's unit,
    and the column it was trained from where the input is named otherwise (``âge`` served as ``age``)."""
    notes = {"multi_categorical": f"several values joined by {entry.get('separator', '|')!r}",
             "timestamp": "epoch seconds (or ms, us, ns)"}
    note = notes.get(entry.get("kind"), entry.get("kind", ""))
    if entry.get("boolean"):
        note += ": a boolean, true or false (any case) or 1 or 0"
    if entry.get("feature") not in (None, entry.get("name")):
        note = f"column {entry['feature']!r}, {note}"
    missing = entry.get("missing")
    return f"{note}; missing: {missing!r}" if missing is not None else note


def main(argv: Sequence[str] | None = None) -> int:
    """Prints :func:`describe` of a model, as text or ``--json``.

    Args:
      argv: The arguments after ``describe`` (default: the command line's).

    Returns:
      The exit code: 0, or 2 when there is no model at the path.
    """
    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.export describe",
                                     description="Print a served model's signatures and the ops it needs")
    parser.add_argument("path", help="BASE/NAME (its newest version) or BASE/NAME/VERSION")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        about = describe(args.path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(about, indent=2))
        return 0
    print(about["path"])
    for name, signature in about["signatures"].items():
        print(f"  signature {name}")
        for side in ("inputs", "outputs"):
            for tensor, info in signature[side].items():
                entry = about["inputs"].get(tensor) if side == "inputs" else None
                line = f"    {side[:-1]:6s} {tensor:24s} {info['dtype']:8s} {str(info['shape']):8s} "
                print((line + (input_note(entry) if entry else "")).rstrip())
    print(f"  {SCANN_NOTE} ({', '.join(about['scann_ops'])})" if about["scann_ops"] else f"  {STANDARD_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
