"""TF Serving's on-disk contract, shared by the exporter and the model server.

A model lives at ``<base>/<name>/<integer version>/saved_model.pb``; names that are not
non-negative integers (such as the exporter's ``.tmp-*`` staging folders) are never versions.
Each version may carry ``assets.extra/tf_serving_warmup_requests``: a TFRecord of
``PredictionLog`` protos that the server replays before the version is marked available.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from tfrs_recsys import paths

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "export_metadata.json"
# export_metadata.json's word that every signature scores each input row on its own (outputs one row per
# input row, none depending on another row): the model server may then run a request's rows in parts.
ROWS_INDEPENDENT = "rows_independent"


def rows_independent(version_dir: str | os.PathLike) -> bool:
    """Whether a version's ``export_metadata.json`` says :data:`ROWS_INDEPENDENT` (False without one)."""
    try:
        meta = json.loads(paths.read_text(paths.join(version_dir, ASSETS_EXTRA, METADATA_FILE)))
    except (OSError, ValueError, paths.RemotePathError):
        return False
    return isinstance(meta, dict) and meta.get(ROWS_INDEPENDENT) is True


MAX_VERSION = (1 << 63) - 1  # the largest int64


def version_dirs(model_dir: str | os.PathLike) -> dict[int, str]:
    """The version directories under ``model_dir``, by version number.

    Args:
      model_dir: A local folder or a ``tf.io.gfile`` URL.

    Returns:
      ``{version: path}`` for each child whose name is an ASCII non-negative integer that fits an int64
      (a version number in every status and request, as TF Serving reads it; larger names are ignored).

    Raises:
      FileNotFoundError: ``model_dir`` does not exist.
    """
    children = {name: paths.join(model_dir, name) for name in paths.listdir(model_dir)}
    return {int(name): str(child) for name, child in children.items()
            if name.isascii() and name.isdigit() and int(name) <= MAX_VERSION and paths.isdir(child)}


def write_warmup_requests(version_dir: str | os.PathLike, model_name: str,
                          requests: Sequence[tuple[str, Mapping[str, np.ndarray]]]):
    """Writes the warmup file of a version: one ``PredictRequest`` per entry of ``requests``.

    Args:
      version_dir: The version directory (usually still a staging folder).
      model_name: The name written into each request's ``model_spec``.
      requests: ``(signature_name, inputs)`` pairs, replayed in this order.

    Returns:
      The path of the written file.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    out = paths.join(paths.makedirs(paths.join(version_dir, ASSETS_EXTRA)), WARMUP_FILE)
    with tf.io.TFRecordWriter(str(out)) as writer:
        for signature_name, inputs in requests:
            request = predict_pb2.PredictRequest(
                inputs={key: tf.make_tensor_proto(value) for key, value in inputs.items()})
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return out


def read_warmup_requests(version_dir: str | os.PathLike) -> list:
    """The ``PredictionLog`` records of a version's warmup file.

    Args:
      version_dir: The version directory.

    Returns:
      The records in file order; an empty list when the version has no warmup file.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = paths.join(version_dir, ASSETS_EXTRA, WARMUP_FILE)
    if not paths.isfile(path):
        return []
    records = tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    return [prediction_log_pb2.PredictionLog.FromString(record) for record in records]
