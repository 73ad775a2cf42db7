"""TF Serving's text-format configuration files: ``models.config`` and the batching parameters file.

``models.config`` is a ``tensorflow.serving.ModelServerConfig`` in protobuf text format
(the message ships with tensorflow-serving-api). The batching parameters file is a
``tensorflow.serving.BatchingParameters`` (session_bundle_config.proto), which the pip
package does not ship: the message is declared here with the same field names and
wrapper types, so the same file parses here and in ``tensorflow_model_server``::

    max_batch_size { value: 64 }
    batch_timeout_micros { value: 2000 }
    num_batch_threads { value: 2 }
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger("tfrs_recsys.model_server")

TENSORFLOW_PLATFORM = "tensorflow"


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; the message names the file, the line and the fix."""


def _read(path: str | os.PathLike, flag: str, example: str) -> tuple[str, str]:
    """The text of the file ``--flag`` names, and its path; ``example`` is a file to copy."""
    p = Path(path)
    if not p.is_file():
        raise ConfigFileError(f"--{flag} {p} does not exist; write one like {example}")
    return p.read_text(), str(p)


def _parse(text: str, message, source: str, example: str):
    """``message`` parsed from protobuf text format; an error names ``source``, the line and an example."""
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ConfigFileError(f"{source}:{e}: not a {message.DESCRIPTOR.name} text proto; "
                              f"expected e.g. '{example}'") from None


def read_model_server_config(path: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """Parses a ``models.config`` file.

    Args:
      path: The ``tensorflow.serving.ModelServerConfig`` in protobuf text format.

    Returns:
      The config.

    Raises:
      ConfigFileError: The file is missing or does not parse (the line is named).
    """
    text, source = _read(path, "model_config_file", "export/models.config")
    example = ('model_config_list { config { name: "..." base_path: "/abs/path" '
               'model_platform: "tensorflow" } }')
    return _parse(text, model_server_config_pb2.ModelServerConfig(), source, example)


class PolledConfigFile:
    """``--model_config_file`` as a poll reads it: a file being edited or broken is said once, in one line,
    and the models it named stay served until it reads again (said too).

    Args:
      path: The file.
    """

    def __init__(self, path: str):
        self.path, self._problem = path, ""

    def read(self) -> model_server_config_pb2.ModelServerConfig | None:
        """The config, or None while the file cannot be read."""
        try:
            config = read_model_server_config(self.path)
        except (ConfigFileError, OSError, UnicodeDecodeError) as e:
            if str(e) != self._problem:
                log.error("Cannot read the model config file (the models it named stay served): %s", e)
            self._problem = str(e)
            return None
        if self._problem:
            log.info("%s reads again", self.path)
            self._problem = ""
        return config


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config ``--model_name``/``--model_base_path`` stand for: one model, latest version.

    Args:
      name: The model name.
      base_path: The absolute path or URL holding its version folders.

    Returns:
      A ModelServerConfig with that one model.
    """
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path, model_platform=TENSORFLOW_PLATFORM)
    return config


def _batching_parameters_class():
    wrappers = descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(wrappers)
    f = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=[wrappers.name])
    msg = f.message_type.add(name="BatchingParameters")
    fdp = descriptor_pb2.FieldDescriptorProto
    int64, string, boolean = (f".google.protobuf.{kind}Value" for kind in ("Int64", "String", "Bool"))
    fields = [  # field numbers follow the order
        ("max_batch_size", int64), ("batch_timeout_micros", int64), ("max_enqueued_batches", int64),
        ("num_batch_threads", int64), ("thread_pool_name", string), ("allowed_batch_sizes", fdp.TYPE_INT64),
        ("pad_variable_length_inputs", fdp.TYPE_BOOL), ("enable_large_batch_splitting", boolean),
        ("max_execution_batch_size", int64), ("batch_padding_policy", fdp.TYPE_STRING)]
    for number, (name, kind) in enumerate(fields, start=1):
        type_ = {"type": fdp.TYPE_MESSAGE, "type_name": kind} if isinstance(kind, str) else {"type": kind}
        msg.field.add(name=name, number=number, **type_,
                      label=fdp.LABEL_REPEATED if name == "allowed_batch_sizes" else fdp.LABEL_OPTIONAL)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{f.package}.{msg.name}"))


BatchingParameters = _batching_parameters_class()


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching; defaults are TF Serving's (BasicBatchScheduler::Options)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None


def read_batching_parameters(path: str | os.PathLike | None) -> BatchingOptions:
    """Reads ``--batching_parameters_file`` (see :func:`parse_batching_parameters`).

    Args:
      path: The file; None gives TF Serving's defaults.

    Returns:
      The batching options.

    Raises:
      ConfigFileError: The file is missing, does not parse or holds invalid values.
    """
    if path is None:
        return BatchingOptions()
    text, source = _read(path, "batching_parameters_file", "export/batching_parameters.txt")
    return parse_batching_parameters(text, source)


MODEL_BATCHING_FILE = "batching_params.pbtxt"  # a version's own batching parameters, as TF Serving names it
MAX_BATCHING_FILE_BYTES = 1 << 20
MAX_BATCH_TIMEOUT_MICROS = 3_600_000_000  # an hour: a batch never waits longer for company


def read_model_batching_parameters(version_dir: str) -> BatchingOptions | None:
    """A version's own batching parameters (``--enable_per_model_batching_parameters``).

    Args:
      version_dir: The SavedModel's version directory (local or a ``tf.io.gfile`` URL).

    Returns:
      The parameters in ``<version_dir>/batching_params.pbtxt``, or None when it has none (TF Serving
      then serves the model unbatched).

    Raises:
      ConfigFileError: The file does not parse or holds invalid values.
    """
    import tensorflow as tf

    path = f"{str(version_dir).rstrip('/')}/{MODEL_BATCHING_FILE}"
    if not tf.io.gfile.exists(path):
        return None
    try:
        if tf.io.gfile.isdir(path) or tf.io.gfile.stat(path).length > MAX_BATCHING_FILE_BYTES:
            raise ConfigFileError(f"{path}: not a BatchingParameters text file of at most "
                                  f"{MAX_BATCHING_FILE_BYTES} bytes")
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (tf.errors.OpError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{path}: cannot be read as UTF-8 text ({type(e).__name__})") from None
    return parse_batching_parameters(text, path)


def parse_batching_parameters(text: str, source: str = "<batching_parameters>") -> BatchingOptions:
    """Parses a ``BatchingParameters`` text proto and checks it as TF Serving does.

    Args:
      text: The protobuf text.
      source: The name errors give the text (its file).

    Returns:
      The batching options; fields the text does not set keep TF Serving's defaults.

    Raises:
      ConfigFileError: The text does not parse, or a value is invalid.
    """
    params = _parse(text, BatchingParameters(), source, "max_batch_size { value: 64 }")
    scalars = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
               "max_execution_batch_size", "enable_large_batch_splitting")
    given = {name: getattr(params, name).value for name in scalars if params.HasField(name)}
    options = BatchingOptions(allowed_batch_sizes=tuple(params.allowed_batch_sizes), **given)
    for name, least in (("max_batch_size", 1), ("num_batch_threads", 1), ("batch_timeout_micros", 0),
                        ("max_enqueued_batches", 1), ("max_execution_batch_size", 1)):
        value = getattr(options, name)
        if value is not None and value < least:
            raise ConfigFileError(f"{source}: {name} must be >= {least}, got {value}")
    for name, most in (("batch_timeout_micros", MAX_BATCH_TIMEOUT_MICROS), ("num_batch_threads", 1024)):
        if getattr(options, name) > most:
            raise ConfigFileError(f"{source}: {name} must be <= {most}, got {getattr(options, name)}")
    sizes = options.allowed_batch_sizes
    if sizes and any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ConfigFileError(
            f"{source}: allowed_batch_sizes entries must be monotonically increasing: {list(sizes)}")
    if sizes and sizes[-1] != options.max_batch_size:
        raise ConfigFileError(f"{source}: final entry in allowed_batch_sizes ({sizes[-1]}) must equal "
                              f"max_batch_size ({options.max_batch_size})")
    return options
