"""The versions a model server knows, and the requests that read them.

:class:`VersionTable` holds one :class:`VersionRecord` per (model, version) ever seen and answers what
requests ask of it: which servable a ModelSpec names (held until the request ends), GetModelStatus
and GetModelMetadata. :class:`~tfrs_recsys.model_server.model_manager.ModelManager` fills it.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Iterator

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from tfrs_recsys.model_server.config_file import BatchingOptions
from tfrs_recsys.model_server.errors import ServingError, invalid_argument, not_found
from tfrs_recsys.model_server.servable import Servable
from tfrs_recsys.model_server.version_loader import DirectoryState

State = get_model_status_pb2.ModelVersionStatus
START, LOADING, AVAILABLE, UNLOADING, END = (State.START, State.LOADING, State.AVAILABLE, State.UNLOADING,
                                             State.END)


@dataclass(eq=False)
class VersionRecord:
    """What the manager knows of one version: its state, its load error, the loaded servable.

    ``note`` is shown in GetModelStatus while there is no error (waiting for the directory to settle);
    ``cancel`` stops the waits and retries of its loader; ``seen`` is the directory the last failed
    attempt read, so a change to it brings another attempt.
    """

    version: int
    state: int = START
    error: ServingError | None = None
    servable: Servable | None = None
    in_flight: int = 0
    retry_allowed: bool = False  # a failed version is retried after it stopped being aspired
    note: str = ""
    loading: bool = False  # a loader thread owns the record
    cancel: threading.Event = field(default_factory=threading.Event)
    seen: DirectoryState | None = None
    batching: BatchingOptions | None = None  # how the loaded version is batched (None: it is not)


class VersionTable:
    """The version records of every model, and the request-side reads of them; thread-safe."""

    def __init__(self):
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._cond = threading.Condition()  # guards the tables

    def _resolve(self, spec: model_pb2.ModelSpec) -> VersionRecord:
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        records = self._versions.get(spec.name, {})
        if choice == "version_label":
            version = self._labels.get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
        elif choice == "version":
            version = spec.version.value
        else:
            available = [v for v, r in records.items() if r.state == AVAILABLE]
            if not available:
                raise not_found(f"Servable not found for request: Latest({spec.name})")
            version = max(available)
        record = records.get(version)
        if record is None or record.state != AVAILABLE:
            raise not_found(f"Servable not found for request: Specific({spec.name}, {version})")
        return record

    @contextlib.contextmanager
    def handle(self, spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """The servable a ModelSpec names, held (not unloaded) until the block exits.

        Args:
          spec: The model name and a version, a version label, or neither (the latest version).

        Yields:
          The ``Servable``.

        Raises:
          ServingError: No such model, version or label is available.
        """
        with self._cond:
            record = self._resolve(spec)
            record.in_flight += 1
            servable = record.servable
        try:
            yield servable
        finally:
            with self._cond:
                record.in_flight -= 1
                if record.in_flight == 0:
                    self._cond.notify_all()

    def model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                     ) -> get_model_status_pb2.GetModelStatusResponse:
        """TF Serving's GetModelStatus: one version, or every version ever seen (newest first).

        Args:
          request: The request; without a version in its ModelSpec every version is listed.

        Returns:
          The versions' states, each with its load error (code 0 when none, with a note while the version
          waits for its directory to settle).
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        response = get_model_status_pb2.GetModelStatusResponse()
        with self._cond:
            records = self._versions.get(spec.name, {})
            if spec.HasField("version") and spec.version.value not in records:
                raise not_found(f"Could not find version {spec.version.value} of model {spec.name}")
            if not records:
                raise not_found(f"Could not find any versions of model {spec.name}")
            selected = ([records[spec.version.value]] if spec.HasField("version")
                        else sorted(records.values(), key=lambda r: -r.version))
            for record in selected:
                error = record.error or ServingError(grpc.StatusCode.OK, record.note)
                status = {"error_code": error.error_code, "error_message": error.message}
                response.model_version_status.add(version=record.version, state=record.state, status=status)
        return response

    def model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """TF Serving's GetModelMetadata: the ``signature_def`` field, a packed SignatureDefMap.

        Args:
          request: The request; ``signature_def`` is the only metadata field there is.

        Returns:
          The resolved model spec and the version's SignatureDefs as written.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for name in request.metadata_field:
            if name != "signature_def":
                raise invalid_argument(f"Metadata field {name} is not supported")
        with self.handle(request.model_spec) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse(
                model_spec={"name": servable.name, "version": {"value": servable.version}})
            signature_defs = get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs)
            response.metadata["signature_def"].Pack(signature_defs)
        return response
