"""Which model versions are served: polling, loading, warmup, labels, unloading.

TF Serving's ServerCore with an AspiredVersionsManager under the AvailabilityPreservingPolicy,
for the file-system source:

* every ``file_system_poll_wait_seconds`` each model's ``base_path`` is listed;
  integer directory names are versions, anything else (``.tmp-*`` being written) is
  ignored; the version policy (latest N / all / specific) picks the aspired ones;
* a new version goes START -> LOADING -> (warmup replayed) -> AVAILABLE; a failed load is retried
  ``max_num_load_retries`` times (its error shown at once), then ends in END, not tried again;
* a version that is no longer aspired is unloaded (UNLOADING -> END) only once an aspired
  version is AVAILABLE, so a model never has a moment with nothing to serve, and only after
  the requests holding it have finished;
* every version seen stays queryable (GetModelStatus), as with TF Serving's ServableStateMonitor.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfrs_recsys import paths
from tfrs_recsys.model_server import config_file, reload_policy
from tfrs_recsys.model_server.batching import Batcher
from tfrs_recsys.model_server.errors import ServingError, failed_precondition, invalid_argument, not_found
from tfrs_recsys.model_server.servable import MAX_REQUEST_ELEMENTS, Servable
from tfrs_recsys.servable_layout import read_warmup_requests, version_dirs

log = logging.getLogger("tfrs_recsys.model_server")

State = get_model_status_pb2.ModelVersionStatus
START, LOADING, AVAILABLE, UNLOADING, END = (State.START, State.LOADING, State.AVAILABLE, State.UNLOADING,
                                             State.END)
MAX_WARMUP_RECORDS = 1000  # TF Serving's kMaxNumRecords


@dataclass
class ManagerOptions:
    """The server flags that shape model lifecycle, named as ``tensorflow_model_server``'s.

    ``batching`` is the parsed ``--batching_parameters_file`` when ``--enable_batching`` (else None);
    ``model_config_file`` is re-read every ``model_config_file_poll_wait_seconds`` when that is > 0;
    ``max_request_elements`` caps the elements one Predict request may declare (ours, not TF Serving's);
    ``allowed_model_roots`` are the folders a HandleReloadConfigRequest may name base paths under (default:
    the parent folders of the base paths served at start-up).
    """

    file_system_poll_wait_seconds: float = 1.0
    enable_model_warmup: bool = True
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    batching: config_file.BatchingOptions | None = None
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    max_request_elements: int = MAX_REQUEST_ELEMENTS
    allowed_model_roots: tuple[str, ...] = ()
    enable_model_reload_api: bool = True


@dataclass
class VersionRecord:
    """What the manager knows of one version: its state, its load error, the loaded servable."""

    version: int
    state: int = START
    error: ServingError | None = None
    servable: Servable | None = None
    in_flight: int = 0
    retry_allowed: bool = False  # a failed version is retried only after it stopped being aspired


def _aspired(config: model_server_config_pb2.ModelConfig, listed: list[int]) -> list[int]:
    """Versions the model's ``model_version_policy`` asks for, among those on disk."""
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return sorted(listed)
    if choice == "specific":
        return sorted(v for v in listed if v in policy.specific.versions)
    n = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return sorted(listed)[-n:]


class ModelManager:
    """Serves the model versions a ModelServerConfig asks for; thread-safe.

    Args:
      options: The lifecycle flags (TF Serving's defaults when None).
    """

    def __init__(self, options: ManagerOptions | None = None):
        self.options = options or ManagerOptions()
        self._config = model_server_config_pb2.ModelServerConfig()
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._cond = threading.Condition()      # guards the tables above
        self._cycle_lock = threading.RLock()    # one poll/reload at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.allowed_roots: list[str] = []  # set by start(): under them, HandleReloadConfigRequest may load

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Loads the initial config, then polls the base paths (and the config file) in a thread.

        Args:
          config: The models to serve; a ServingError names one that cannot be served.
        """
        self.reload_config(config)
        options = self.options
        self.allowed_roots = reload_policy.allowed_roots(config, options.allowed_model_roots)
        if max(options.file_system_poll_wait_seconds, options.model_config_file_poll_wait_seconds) > 0:
            self._thread = threading.Thread(target=self._poll_forever, name="fs-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._cycle_lock:
            for name, records in list(self._versions.items()):
                for record in [r for r in records.values() if r.state == AVAILABLE]:
                    self._unload(name, record)

    def _poll_forever(self) -> None:
        waits = {self._reread_config_file: self.options.model_config_file_poll_wait_seconds,
                 self._cycle: self.options.file_system_poll_wait_seconds}
        due = {job: time.monotonic() + wait for job, wait in waits.items() if wait > 0}
        while not self._stop.wait(timeout=max(0.0, min(due.values()) - time.monotonic())):
            now = time.monotonic()
            for job in [job for job, at in due.items() if at <= now]:
                due[job] = now + waits[job]
                try:
                    job()
                except Exception:  # the poller must outlive any bad directory or config file
                    log.exception("File system poll failed")

    def _reread_config_file(self) -> None:
        """ReloadConfig with ``--model_config_file`` when its content changed."""
        path = self.options.model_config_file
        config = config_file.read_model_server_config(path)
        if config != self._config:
            log.info("Reloading %s", path)
            try:
                self.reload_config(config)
            except ServingError as e:
                log.error("ReloadConfig from %s failed: %s", path, e)

    # -- configuration --------------------------------------------------------------------------

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig, *,
                      requested: bool = False) -> None:
        """Replaces the served model set (ServerCore::ReloadConfig).

        Args:
          config: The new ModelServerConfig; an empty one changes nothing.
          requested: It came over the network (HandleReloadConfigRequest): every base path must lie under
            :attr:`allowed_roots`, and every model it adds or moves must have a version on disk, both
            checked before anything is unloaded, so a bad request changes nothing.

        Raises:
          ServingError: The config is invalid (PERMISSION_DENIED for a base path outside the allowed roots),
            or a model it adds did not become available.
        """
        kind = config.WhichOneof("config")
        if kind is None:
            log.info("Taking no action for empty config.")
            return
        if kind != "model_config_list":
            raise invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported")
        models = list(config.model_config_list.config)
        seen = set()
        for model in models:
            if model.name in seen:
                raise invalid_argument(f"Illegal to list model {model.name} multiple times in config list")
            seen.add(model.name)
            if not model.base_path.startswith("/") and "://" not in model.base_path:
                raise invalid_argument(f"Expected model {model.name} to have an absolute path or URI; got "
                                       f"base_path()={model.base_path}")
            if model.model_platform not in ("", config_file.TENSORFLOW_PLATFORM):
                raise invalid_argument(
                    f"Model {model.name} requests unsupported platform {model.model_platform}")
        if requested:
            served = {c.name: c.base_path for c in self._config.model_config_list.config}
            reload_policy.check_requested(models, served, self.allowed_roots)
        with self._cycle_lock:
            served = {c.name for c in self._config.model_config_list.config}
            new_models = [m.name for m in models if m.name not in served]
            self._update_labels(models)
            with self._cond:
                self._config = config
            missing = self._cycle()
            self._await_available(new_models, missing)

    def _update_labels(self, models) -> None:
        """ServerCore::UpdateModelVersionLabelMap: a label may only name an AVAILABLE version."""
        new_labels: dict[str, dict[str, int]] = {}
        with self._cond:
            for model in models:
                for label, version in model.version_labels.items():
                    existing = self._labels.get(model.name, {}).get(label)
                    allow = (self.options.allow_version_labels_for_unavailable_models
                             and existing in (None, version))
                    record = self._versions.get(model.name, {}).get(version)
                    if not allow and (record is None or record.state != AVAILABLE):
                        raise failed_precondition(
                            f"Request to assign label to version {version} of model {model.name}, "
                            "which is not currently available for inference")
                    new_labels.setdefault(model.name, {})[label] = version
            self._labels = new_labels

    def _await_available(self, names: list[str], missing: dict[str, str]) -> None:
        problems = []
        with self._cond:
            for name in names:
                records = self._versions.get(name, {})
                if any(r.state == AVAILABLE for r in records.values()):
                    continue
                r = max((r for r in records.values() if r.error is not None), key=lambda r: r.version,
                        default=None)
                problems.append(f"{{name: {name} version: {r.version}}} due to error: {r.error}" if r else
                                f"{{name: {name}}} due to error: {missing.get(name, 'no version loaded')}")
        if problems:
            listed = "".join(f"{{{p}}}, " for p in problems)
            raise ServingError(grpc.StatusCode.UNKNOWN,
                               f"{len(problems)} model(s) did not become available: {{{listed}}}")

    # -- one poll of the file system ------------------------------------------------------------

    def _cycle(self) -> dict[str, str]:
        """One poll: load aspired versions, unload the rest; returns models whose base path has none."""
        with self._cycle_lock:
            missing: dict[str, str] = {}
            configs = {m.name: m for m in self._config.model_config_list.config}
            for name, model in configs.items():
                try:
                    listed = version_dirs(model.base_path)
                except (OSError, paths.RemotePathError) as e:
                    where = f"base path {model.base_path} for servable {name}"
                    missing[name] = (f"INVALID_ARGUMENT: Could not find {where}"
                                     if isinstance(e, FileNotFoundError)
                                     else f"UNKNOWN: Could not list {where}: {e}")
                    log.error(missing[name])
                    continue
                if not listed:
                    missing[name] = f"No versions of servable {name} found under base path {model.base_path}"
                    log.warning(missing[name])
                self._apply(name, model, listed)
            for name in list(self._versions):
                if name not in configs:
                    self._apply(name, None, {})
            return missing

    def _apply(self, name: str, model, listed: dict[int, str]) -> None:
        aspired = _aspired(model, list(listed)) if model is not None else []
        with self._cond:
            records = self._versions.setdefault(name, {})
            for v, record in records.items():
                if v not in aspired and record.error is not None:
                    record.retry_allowed = True
            to_load = [v for v in aspired if v not in records or (
                records[v].state == END and (records[v].error is None or records[v].retry_allowed))]
        for v in to_load:
            self._load(name, v, listed[v])
        with self._cond:
            serving_aspired = any(records[v].state == AVAILABLE for v in aspired if v in records)
            to_unload = [r for v, r in records.items() if r.state == AVAILABLE and v not in aspired
                         and (serving_aspired or not aspired)]
        for record in to_unload:
            self._unload(name, record)

    def _load(self, name: str, version: int, path: str) -> None:
        record = VersionRecord(version, LOADING)
        with self._cond:
            self._versions[name][version] = record
        log.info("Loading servable: {name: %s version: %d}", name, version)
        attempts = 1 + max(0, self.options.max_num_load_retries)
        servable, error = None, None
        for attempt in range(attempts):
            try:
                servable = Servable.load(name, version, path)
                servable.max_request_elements = self.options.max_request_elements
                if self.options.enable_model_warmup:
                    self._warmup(servable)
                break
            except ServingError as e:
                error = e
            except Exception as e:  # a broken SavedModel can raise anything; it must not kill the server
                error = ServingError(grpc.StatusCode.UNKNOWN, f"{type(e).__name__}: {e}")
            servable = None
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, version, error)
            error = ServingError(error.code, f"{error.message} (load attempt {attempt + 1} of {attempts})")
            with self._cond:  # GetModelStatus shows the failure at once, while the version is retried
                record.error = error
            if attempt + 1 < attempts and self._stop.wait(self.options.load_retry_interval_micros / 1e6):
                break
        if servable is None:
            with self._cond:
                record.state, record.error = END, error
            return
        if self.options.batching is not None:
            servable.runner = Batcher(servable.run, self.options.batching, name=f"{name}-{version}-batch")
        with self._cond:
            record.servable, record.state, record.error = servable, AVAILABLE, None
            self._cond.notify_all()
        log.info("Successfully loaded servable version {name: %s version: %d}", name, version)

    def _warmup(self, servable: Servable) -> None:
        """Replay assets.extra/tf_serving_warmup_requests before the version is AVAILABLE."""
        logs = read_warmup_requests(servable.path)
        if len(logs) > MAX_WARMUP_RECORDS:
            raise invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {servable.path}")
        for record in logs:
            kind = record.WhichOneof("log_type")
            try:
                if kind not in ("predict_log", "classify_log", "regress_log", "multi_inference_log"):
                    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                       f"Unsupported log_type for warmup: {kind}")
                getattr(servable, kind.removesuffix("_log"))(getattr(record, kind).request)
            except ServingError as e:
                message = f"Failed to warm up {servable.path} with a {kind} record: {e.message}"
                raise ServingError(e.code, message) from None
        if logs:
            log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.",
                     servable.path, len(logs))

    def _unload(self, name: str, record: VersionRecord) -> None:
        with self._cond:
            record.state = UNLOADING
            self._cond.wait_for(lambda: record.in_flight == 0, timeout=60)
            servable, record.servable = record.servable, None
        if servable is not None and isinstance(servable.runner, Batcher):
            servable.runner.stop()
        with self._cond:
            record.state = END
        log.info("Unloaded servable version {name: %s version: %d}", name, record.version)

    # -- requests -------------------------------------------------------------------------------

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
          The versions' states, each with its load error (code 0 when none).
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
                error = record.error or ServingError(grpc.StatusCode.OK, "")
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
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        with self.handle(request.model_spec) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse(
                model_spec={"name": servable.name, "version": {"value": servable.version}})
            signature_defs = get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs)
            response.metadata["signature_def"].Pack(signature_defs)
        return response

