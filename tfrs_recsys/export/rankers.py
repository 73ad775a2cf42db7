"""Export a trained ranker (ESMM or DeepFM) for TF Serving: raw features in, probabilities out.

``BASE/NAME/<integer version>/`` is written atomically by
:func:`tfrs_recsys.export.tfserving.publish_version`, with warmup requests and
``assets.extra/export_metadata.json`` (inputs, dtypes, outputs) and ``assets.extra/feature_spec.json``.

Signature ``serving_default``, for a batch of B candidates, one input per feature of the run's spec::

    inputs:  <feature>: string [B]   id / categorical / multi_categorical (lists joined by the
                                     column's separator or by "|", "" = missing)
             <feature>: int64 [B]    integer categories (an hour, a category code)
             <feature>: float32 [B]  numeric; NaN = missing
             <feature>: float64 [B]  timestamp (epoch s, ms, us or ns); NaN = missing
    outputs: ctr, cvr, ctcvr: float32 [B]   (ESMM)
             ctr: float32 [B]               (DeepFM)

Input names are the feature names (characters outside ``[A-Za-z0-9_.-]`` become ``_``; the
metadata lists both). Vocabularies and standardization live inside the SavedModel; an unknown
id falls into the OOV bucket and a missing value takes the training mean, never an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfrs_recsys import paths, runs
from tfrs_recsys.data.input_names import signature_name
from tfrs_recsys.data.schema import FeatureSpec
from tfrs_recsys.errors import UserError
from tfrs_recsys.export.tfserving import publish_version, repair_exports, update_models_config
from tfrs_recsys.features.preprocessing import raw_dtype, raw_input_specs
from tfrs_recsys.servable_layout import ROWS_INDEPENDENT

SIGNATURE = "serving_default"
OUTPUTS = {"esmm": ("ctr", "cvr", "ctcvr"), "deepfm": ("ctr",)}
SPEC_ASSET = "feature_spec.json"
MISSING = {"string": "", "int64": "any value outside the vocabulary"}  # else NaN


class RankerSignatures(tf.Module):
    """The trained model behind one raw-feature signature with named float32 outputs.

    Args:
      model: The ranker: raw features by feature name in, a dict of probabilities out.
      spec: The feature spec it was built from.
      outputs: The model's outputs the signature returns.
    """

    def __init__(self, model: tf.keras.Model, spec: FeatureSpec, outputs: Sequence[str]):
        super().__init__()
        self.model = model
        self._outputs = tuple(outputs)
        # Keyed by feature name here; the signature's inputs take the specs' (op-safe) names.
        self.serve = tf.function(self._serve, input_signature=[raw_input_specs(spec)])

    def _serve(self, features):
        scores = self.model(features, training=False)
        return {name: tf.cast(scores[name], tf.float32) for name in self._outputs}


def input_metadata(spec: FeatureSpec) -> list[dict]:
    """What a client sends: one entry (name, feature, dtype, missing value, ...) per signature input."""
    return [{"name": signature_name(f.name), "feature": f.name, "dtype": raw_dtype(f).name,
             "shape": [-1], "kind": f.kind, "group": f.group,
             "missing": MISSING.get(raw_dtype(f).name, "NaN"),
             **({"separator": f.separator} if f.kind == "multi_categorical" else {}),
             **({"boolean": True} if f.boolean_values else {})}
            for f in spec.features]


def warmup_inputs(spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Two candidates by signature input: one with a known value per feature, one with every value missing."""
    def column(f) -> np.ndarray:
        if raw_dtype(f) == tf.int64:
            return np.array([int(float((f.vocabulary or ["0"])[0])), -1], dtype=np.int64)
        if f.is_categorical:
            return np.array([(f.vocabulary or ["0"])[0].encode(), b""], dtype=object)
        return np.array([f.mean or 0.0, np.nan], dtype=raw_dtype(f).as_numpy_dtype)

    return {signature_name(f.name): column(f) for f in spec.features}


def export_ranker(model_dir: str | Path, export_base: str | Path, name: str, *, model_name: str | None = None,
                  version: int | None = None, allow_incomplete: bool = False) -> Path | str:
    """Export the ranker trained in ``model_dir`` as ``BASE/NAME/<version>``.

    Args:
      model_dir: The run directory of ``python -m tfrs_recsys.train esmm|deepfm``.
      export_base: The model server's base path.
      name: The model's name under it.
      model_name: ``esmm`` or ``deepfm``: the model the run must have trained (default: either).
      version: The version number (default: the next free one).
      allow_incomplete: Export a run that did not complete (killed, still training), with a warning.

    Returns:
      The version directory; the model is added to ``BASE/models.config``.

    Raises:
      RunDirError: The run did not complete (and not ``allow_incomplete``), or lacks a file.
    """
    runs.open_run(model_dir, (model_name,) if model_name else runs.RANKERS).require_complete(allow_incomplete)
    run, model, spec = runs.load_ranker(model_dir, model_name)
    module = RankerSignatures(model, spec, OUTPUTS[run.model_name])
    warmup = warmup_inputs(spec)
    module.serve({f.name: tf.constant(warmup[signature_name(f.name)]) for f in spec.features})  # to trace

    def save(path: str) -> None:
        tf.saved_model.save(module, path, signatures={SIGNATURE: module.serve})
        spec.save(paths.join(paths.makedirs(paths.join(path, "assets.extra")), SPEC_ASSET))

    metadata = {
        ROWS_INDEPENDENT: True,  # the model server may run a request's rows in parts
        "model": run.model_name,
        "signature": SIGNATURE,
        "inputs": input_metadata(spec),
        "outputs": {o: "float32 [B]" for o in OUTPUTS[run.model_name]},
        "labels": list(spec.labels),
        "oov": "unknown categorical values go to an out-of-vocabulary bucket; missing numbers take the mean",
        "feature_spec": f"assets.extra/{SPEC_ASSET}",
        "source_run": paths.absolute(model_dir),
        "source_run_complete": runs.is_complete(model_dir),
        "test_metrics": paths.read_json(run.file(runs.TEST_METRICS)) if run.has(runs.TEST_METRICS) else None,
    }
    repair_exports(export_base)  # what a killed export left
    version_dir = publish_version(export_base, name, save, version=version, warmup=[(SIGNATURE, warmup)],
                                  metadata=metadata)
    update_models_config(export_base, [name])
    return version_dir


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfrs_recsys.export esmm|deepfm --model-dir RUN --export-base BASE [options]``.

    Args:
      argv: The arguments from the model name on (default: the command line's).

    Returns:
      The exit code: 0, or 2 when nothing was exported.
    """
    parser = argparse.ArgumentParser(
        prog="python -m tfrs_recsys.export",
        description="Export an ESMM or DeepFM run for TF Serving (raw features in)")
    parser.add_argument("model", choices=sorted(OUTPUTS), help="the ranker the run trained")
    parser.add_argument("--model-dir", required=True, help="run directory written by `train esmm|deepfm`")
    parser.add_argument("--export-base", required=True, help="TF Serving base path (model folders go inside)")
    parser.add_argument("--name", help="model name under the base path (default: the model)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="export a run that did not complete (killed or still training), with a warning")
    args = parser.parse_args(argv)
    try:
        path = export_ranker(args.model_dir, args.export_base, args.name or args.model, model_name=args.model,
                             version=args.version, allow_incomplete=args.allow_incomplete)
    except (UserError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    answer = {"model": args.model, "export_dir": str(path), "version": int(paths.basename(path)),
              "models_config": str(paths.join(args.export_base, "models.config"))}
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
