"""Which model versions are served: polling, loading, warmup, labels, unloading.

TF Serving's ServerCore with an AspiredVersionsManager under the AvailabilityPreservingPolicy,
for the file-system source:

* every ``file_system_poll_wait_seconds`` each model's ``base_path`` is listed;
  integer directory names are versions, anything else (``.tmp-*`` being written) is
  ignored; the version policy (latest N / all / specific) picks the aspired ones;
* a new version goes START -> LOADING -> (warmup replayed) -> AVAILABLE, in a thread of its own, so
  one version's retries never hold up another's load or the polling: it stays in START (with a note)
  until its directory has settled (:mod:`~tfrs_recsys.model_server.version_loader`); a failed load is
  retried ``max_num_load_retries`` times (its error shown at once), then ends in END, and is tried
  again only if its directory changes (or it stops being aspired and comes back); a version that
  stops being aspired while it waits or retries is abandoned (END, with its last error), as TF
  Serving cancels such loads; load attempts themselves run one at a time;
* a version that is no longer aspired is unloaded (UNLOADING -> END) only once an aspired
  version is AVAILABLE, so a model never has a moment with nothing to serve, and only after
  the requests holding it have finished;
* every version seen stays queryable (GetModelStatus), as with TF Serving's ServableStateMonitor.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

import grpc
from tensorflow_serving.config import model_server_config_pb2

from tfrs_recsys import paths
from tfrs_recsys.model_server import config_file, reload_policy
from tfrs_recsys.model_server.batching import Batcher
from tfrs_recsys.model_server.errors import ServingError, failed_precondition, invalid_argument
from tfrs_recsys.model_server.row_parts import MAX_ROWS_PER_CALL
from tfrs_recsys.model_server.servable import MAX_REQUEST_ELEMENTS, Servable
from tfrs_recsys.model_server.version_loader import (
    as_serving_error,
    layout_hint,
    load_version,
    scan,
    wait_for_retry,
    wait_until_settled,
)
from tfrs_recsys.model_server.version_table import (
    AVAILABLE,
    END,
    LOADING,
    START,
    UNLOADING,
    VersionRecord,
    VersionTable,
)
from tfrs_recsys.servable_layout import version_dirs

log = logging.getLogger("tfrs_recsys.model_server")


@dataclass
class ManagerOptions:
    """The server flags that shape model lifecycle, named as ``tensorflow_model_server``'s.

    ``batching`` is the parsed ``--batching_parameters_file`` when ``--enable_batching`` (else None); with
    ``enable_per_model_batching_parameters`` a version is batched by its own ``batching_params.pbtxt``
    (taking only ``num_batch_threads`` from ``batching``), and a version without one is not batched;
    ``model_config_file`` is re-read every ``model_config_file_poll_wait_seconds`` when that is > 0;
    ``max_request_elements`` caps the elements one Predict request may declare, ``max_rows_per_call`` the
    rows one call of a signature runs (ours, not TF Serving's; 0: all at once; at most a batch's);
    ``allowed_model_roots`` are the folders a HandleReloadConfigRequest may name base paths under (default:
    the parent folders of the base paths served at start-up); ``version_settle_seconds`` is how long
    nothing under a version directory must change before it is loaded (ours; 0: at once, as TF Serving).
    """

    file_system_poll_wait_seconds: float = 1.0
    enable_model_warmup: bool = True
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    batching: config_file.BatchingOptions | None = None
    enable_per_model_batching_parameters: bool = False
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    max_request_elements: int = MAX_REQUEST_ELEMENTS
    max_rows_per_call: int = MAX_ROWS_PER_CALL
    allowed_model_roots: tuple[str, ...] = ()
    enable_model_reload_api: bool = True
    version_settle_seconds: float = 2.0


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


class ModelManager(VersionTable):
    """Serves the model versions a ModelServerConfig asks for; thread-safe.

    Args:
      options: The lifecycle flags (TF Serving's defaults when None).
    """

    def __init__(self, options: ManagerOptions | None = None):
        super().__init__()
        self.options = options or ManagerOptions()
        self._config = model_server_config_pb2.ModelServerConfig()
        self._config_file = config_file.PolledConfigFile(self.options.model_config_file)
        self._aspired: dict[str, list[int]] = {}  # guarded by _cond, as the version records
        self._cycle_lock = threading.RLock()    # one poll/reload at a time
        self._load_lock = threading.Lock()      # one load attempt at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaders: list[threading.Thread] = []
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
        """Stops polling and loading, and unloads every version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._cond:
            for records in self._versions.values():
                for record in records.values():
                    record.cancel.set()
        for loader in self._loaders:
            loader.join(timeout=60)
        with self._cycle_lock:
            for name, records in list(self._versions.items()):
                with self._cond:
                    claimed = [self._claim(r) for r in records.values() if r.state == AVAILABLE]
                for record in claimed:
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
        config = self._config_file.read()
        if config is not None and config != self._config:
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

        Returns once the loads it started have ended (AVAILABLE, or failed after their retries).

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
            missing, started = self._cycle()
        self._await_available(new_models, missing, started)

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

    def _await_available(self, names: list[str], missing: dict[str, str],
                         started: list[VersionRecord]) -> None:
        """Waits for the loads a reload started, then raises for a new model with nothing AVAILABLE."""
        problems = []
        with self._cond:
            self._cond.wait_for(lambda: self._stop.is_set() or not any(r.loading for r in started))
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

    def _cycle(self) -> tuple[dict[str, str], list[VersionRecord]]:
        """One poll: start loading aspired versions, unload the rest.

        Returns:
          The models whose base path has no version (with why), and the records whose loads it started.
        """
        with self._cycle_lock:
            missing: dict[str, str] = {}
            started: list[VersionRecord] = []
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
                    missing[name] = (f"No versions of servable {name} found under base path {model.base_path}"
                                     + layout_hint(model.base_path))
                    log.warning(missing[name])
                started += self._apply(name, model, listed)
            for name in list(self._versions):
                if name not in configs:
                    self._apply(name, None, {})
            return missing, started

    def _apply(self, name: str, model, listed: dict[int, str]) -> list[VersionRecord]:
        aspired = _aspired(model, list(listed)) if model is not None else []
        with self._cond:
            self._aspired[name] = aspired
            records = self._versions.setdefault(name, {})
            for v, record in records.items():
                if v not in aspired:
                    record.retry_allowed = record.error is not None
                    record.cancel.set()  # its waits and retries end: nothing wants it any more
            candidates = {v: records.get(v) for v in aspired}
        started = [self._start_load(name, v, listed[v]) for v, record in candidates.items()
                   if self._wants_load(record, listed[v])]
        self._retire(name)
        return started

    @staticmethod
    def _wants_load(record: VersionRecord | None, path: str) -> bool:
        """Whether an aspired version needs a (new) load: never tried, unloaded, or failed and then
        un-aspired or changed on disk since."""
        if record is None:
            return True
        if record.loading or record.state != END:
            return False
        if record.error is None or record.retry_allowed:
            return True
        return record.seen is not None and scan(path) != record.seen

    def _start_load(self, name: str, version: int, path: str) -> VersionRecord:
        record = VersionRecord(version, START, loading=not self._stop.is_set())
        with self._cond:
            self._versions[name][version] = record
        if record.loading:
            loader = threading.Thread(target=self._load, args=(name, record, path), daemon=True,
                                      name=f"load-{name}-{version}")
            self._loaders = [t for t in self._loaders if t.is_alive()] + [loader]
            loader.start()
        return record

    def _load(self, name: str, record: VersionRecord, path: str) -> None:
        """A version's loader thread: settle, load (one attempt at a time), retry, then serve or end."""
        options = self.options
        attempts = 1 + max(0, options.max_num_load_retries)
        result: Servable | ServingError | None = None

        def waiting(note: str) -> None:
            with self._cond:
                record.note = note

        try:
            for attempt in range(attempts):
                seen = wait_until_settled(path, options.version_settle_seconds, record.cancel, waiting)
                result = self._attempt(name, record, path) if seen is not None else None
                if not isinstance(result, ServingError):
                    break
                log.error("Loading servable: {name: %s version: %d} failed: %s", name, record.version, result)
                message = f"{result.message} (load attempt {attempt + 1} of {attempts})"
                result = ServingError(result.code, message)
                with self._cond:  # GetModelStatus shows the failure at once, while the version is retried
                    record.error, record.seen = result, seen
                interval = options.load_retry_interval_micros / 1e6
                if attempt + 1 < attempts and wait_for_retry(path, seen, interval, record.cancel):
                    break
            if isinstance(result, Servable):
                self._serve(name, record, result)
                return
            error = record.error
            if record.cancel.is_set() and error is not None:
                message = f"{error.message}; not retried: the version is no longer aspired"
                error = ServingError(error.code, message)
                log.info("Abandoned servable version {name: %s version: %d}", name, record.version)
            with self._cond:
                record.state, record.error, record.note = END, error, ""
        finally:
            with self._cond:
                record.loading = False
                self._cond.notify_all()

    def _attempt(self, name: str, record: VersionRecord, path: str) -> Servable | ServingError | None:
        """One load attempt (None when the version was abandoned while it waited for its turn)."""
        with self._load_lock:
            if record.cancel.is_set():
                return None
            with self._cond:
                record.state, record.note = LOADING, ""
            log.info("Loading servable: {name: %s version: %d}", name, record.version)
            try:
                record.batching = self._batching_of(path)  # first: a bad file fails before the model loads
                return load_version(name, record.version, path, warmup=self.options.enable_model_warmup,
                                    max_request_elements=self.options.max_request_elements,
                                    max_rows_per_call=self.options.max_rows_per_call)
            except Exception as e:  # a broken SavedModel can raise anything; it must not kill the server
                return as_serving_error(e)

    def _batching_of(self, path: str) -> config_file.BatchingOptions | None:
        """How the version at ``path`` is batched: the common parameters, or its own file's (None: not)."""
        common = self.options.batching
        if common is None or not self.options.enable_per_model_batching_parameters:
            return common
        try:
            own = config_file.read_model_batching_parameters(path)
        except config_file.ConfigFileError as e:
            raise invalid_argument(str(e)) from None
        return None if own is None else dataclasses.replace(own, num_batch_threads=common.num_batch_threads)

    def _serve(self, name: str, record: VersionRecord, servable: Servable) -> None:
        if record.batching is not None:
            servable.runner = Batcher(servable.run, record.batching, name=f"{name}-{record.version}-batch")
            servable.max_rows_per_call = min(servable.max_rows_per_call, record.batching.max_batch_size)
        with self._cond:
            record.servable, record.state, record.error = servable, AVAILABLE, None
            self._cond.notify_all()
        log.info("Successfully loaded servable version {name: %s version: %d}", name, record.version)
        self._retire(name)

    def _retire(self, name: str) -> None:
        """Unloads the AVAILABLE versions no longer aspired, once an aspired one serves (or none is)."""
        with self._cond:
            aspired, records = self._aspired.get(name, []), self._versions.get(name, {})
            serving_aspired = any(records[v].state == AVAILABLE for v in aspired if v in records)
            claimed = [self._claim(r) for v, r in records.items() if r.state == AVAILABLE and v not in aspired
                       and (serving_aspired or not aspired)]
        for record in claimed:
            self._unload(name, record)

    @staticmethod
    def _claim(record: VersionRecord) -> VersionRecord:
        """Marks an AVAILABLE record UNLOADING (under the lock), so that one thread unloads it."""
        record.state = UNLOADING
        return record

    def _unload(self, name: str, record: VersionRecord) -> None:
        with self._cond:
            self._cond.wait_for(lambda: record.in_flight == 0, timeout=60)
            servable, record.servable = record.servable, None
        if servable is not None and isinstance(servable.runner, Batcher):
            servable.runner.stop()
        with self._cond:
            record.state = END
        log.info("Unloaded servable version {name: %s version: %d}", name, record.version)
