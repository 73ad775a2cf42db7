"""A client for TF Serving's gRPC API (ours or a real ``tensorflow_model_server``), on its API's stubs.

::

    with ServingClient("127.0.0.1:8500", timeout=5.0) as client:
        top = client.retrieve("u42", ["m1", "m7"], k=20, exclude_seen=True)
        scores = client.rank("u42", top.item_ids, features={"price": prices}, model="esmm")

The client reads each model's SignatureDefs once (GetModelMetadata), and again when the server
answers from another version (or refuses a request built for the old one), and shapes its
requests from them: histories are cut to the signature's width and left-padded with
``""`` (most recent item last, as training windows are), exclusions padded to the
signature's static width, and ranker features given the dtype each input declares.
Every call has a deadline; a server that is not there is reported with its address
and how to start one; given a circuit breaker, calls to one that keeps not answering fail at once.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrs_recsys.model_server.tensors import fill_proto, to_ndarray
from tfrs_recsys.serving import DEFAULT_ADDRESS
from tfrs_recsys.serving.breaker import CircuitBreaker
from tfrs_recsys.serving.ranker_inputs import ranker_column
from tfrs_recsys.serving.signatures import PAD, SignatureInfo, TensorSpecInfo, fit_width

MAX_ITEM_ID_BYTES = 4096  # a model answering longer ids is broken: never passed on to a page
MAX_EXCLUSIONS_SENT = 4096  # exclusions a retrieval request carries: its size stays bounded
UNAVAILABLE, DEADLINE_EXCEEDED = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


class ServingClientError(RuntimeError):
    """A call the model server answered with an error (``code`` is the gRPC status code)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


class ServerUnavailableError(ServingClientError):
    """No model server answers at the address."""


class SignaturesChangedError(ServingClientError):
    """A call refused (INVALID_ARGUMENT) because the server now serves another version of the model than
    the one whose signatures the client had read; they are read again, so the call can be built anew."""


@dataclasses.dataclass(frozen=True)
class Retrieved:
    """Top items for one user, best first (padding and non-finite scores removed)."""

    item_ids: list[str]
    scores: list[float]
    version: int


@dataclasses.dataclass(frozen=True)
class Ranked:
    """Ranker outputs per candidate, aligned with ``candidates``."""

    candidates: list[str]
    outputs: dict[str, np.ndarray]
    version: int


def _retrieved(outputs: Mapping[str, np.ndarray], model: str,
               rows: int) -> tuple[list[list[str]], np.ndarray]:
    """A retrieval answer's item ids (text) and scores, ``rows`` rows of each, or a ServingClientError
    saying what the model answered instead."""
    missing = [name for name in ("item_ids", "scores") if name not in outputs]
    if missing:
        raise ServingClientError(f"retrieval model '{model}' answered without the outputs {missing}")
    ids, scores = outputs["item_ids"], outputs["scores"]
    if ids.ndim != 2 or ids.shape != scores.shape or ids.shape[0] != rows:
        raise ServingClientError(f"retrieval model '{model}' answered item_ids of shape {list(ids.shape)} "
                                 f"and scores of shape {list(scores.shape)} for {rows} user(s)")
    if (longest := max((len(i) for row in ids for i in row), default=0)) > MAX_ITEM_ID_BYTES:
        raise ServingClientError(f"retrieval model '{model}' answered an item id of {longest} bytes; ids "
                                 f"have at most {MAX_ITEM_ID_BYTES}")
    try:
        return [[i.decode() for i in row] for row in ids], scores.astype(np.float64)
    except (UnicodeDecodeError, AttributeError, ValueError):
        raise ServingClientError(f"retrieval model '{model}' answered item ids that are not UTF-8 text, or "
                                 "scores that are not numbers") from None


RECONNECT_BACKOFF_MS = (200, 1000)  # the first and the longest wait between reconnection attempts


class ServingClient:
    """A gRPC client of ``tensorflow.serving.PredictionService`` and ``ModelService``.

    Args:
      address: The model server's ``HOST:PORT``.
      timeout: The deadline of each call, in seconds, where a call does not set its own.
      retrieval_model: The model :meth:`retrieve` asks by default.
      ranker_model: The model :meth:`rank` asks by default.
      breaker: Makes calls fail at once while the server keeps not answering
        (:class:`~tfrs_recsys.serving.breaker.CircuitBreaker`); None: every call waits its deadline.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, timeout: float = 5.0, *,
                 retrieval_model: str = "retrieval", ranker_model: str = "deepfm",
                 breaker: CircuitBreaker | None = None):
        self.address = address
        self.timeout = timeout
        self.breaker = breaker
        self.retrieval_model = retrieval_model
        self.ranker_model = ranker_model
        # gRPC's reconnect backoff grows to 2 minutes while the server is down: capped, the client finds a
        # restarted server within a second or two rather than up to minutes later.
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1])])
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._metadata: dict[tuple, dict[str, SignatureInfo]] = {}
        self._described: dict[tuple, int] = {}  # the version each remembered metadata describes

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, what: str, timeout: float | None):
        if self.breaker is None:
            return self._call_server(method, request, what, timeout)
        # a call its request left under half the timeout says little of the server when it runs out
        short = timeout is not None and timeout < self.timeout / 2
        return self.breaker.call(
            lambda: self._call_server(method, request, what, timeout), ServerUnavailableError,
            lambda wait: ServerUnavailableError(f"{what} at {self.address} was not sent: "
                                                f"{self.breaker.describe(wait)}", UNAVAILABLE),
            counts=lambda e: not (short and e.code == DEADLINE_EXCEEDED))

    def _call_server(self, method, request, what: str, timeout: float | None):
        deadline = self.timeout if timeout is None else timeout
        try:
            return method(request, timeout=deadline)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):  # down, or stopping mid-call
                raise ServerUnavailableError(
                    f"no model server answers at {self.address} ({code.name}: {details}). Start one, e.g. "
                    "`python -m tfrs_recsys.model_server --model_config_file=/abs/path/models.config` "
                    "(or tensorflow_model_server with the same flags), or pass the right address.",
                    code) from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # overloaded (its calls at once): for now, as down
                raise ServerUnavailableError(
                    f"the model server at {self.address} is busy ({code.name}: {details}); retry, or raise "
                    "its --grpc_max_concurrent_rpcs", code) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:  # no answer in time: unavailable, as when down
                raise ServerUnavailableError(
                    f"{what} at {self.address} did not answer within its {deadline:g}s deadline; "
                    "raise the client's timeout (the service's --timeout, ServingClient(timeout=...)) or "
                    "check the server's load", code) from None
            missing = code == grpc.StatusCode.NOT_FOUND
            hint = "; name the model as the server's models.config does" if missing else ""
            raise ServingClientError(f"{what} at {self.address} failed: {code.name}: {details}{hint}",
                                     code) from None

    def metadata(self, model: str, version: int | None = None, *, timeout: float | None = None,
                 refresh: bool = False) -> dict[str, SignatureInfo]:
        """A model's signatures, asked once (GetModelMetadata) and then remembered.

        Args:
          model: The model name.
          version: A version (default: the one the server serves).
          timeout: The call's deadline (default: the client's).
          refresh: Ask again.

        Returns:
          The signatures by name (the ``__saved_model_init_op`` and the like left out).
        """
        key = (model, version)
        if refresh or key not in self._metadata:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec={"name": model, "version": None if version is None else {"value": version}},
                metadata_field=["signature_def"])
            response = self._call(self._predictions.GetModelMetadata, request, f"GetModelMetadata({model})",
                                  timeout)
            defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(defs)
            self._metadata[key] = {name: SignatureInfo.from_proto(sig)
                                   for name, sig in defs.signature_def.items() if not name.startswith("__")}
            self._described[key] = response.model_spec.version.value
        return self._metadata[key]

    def _rolled_out(self, model: str, timeout: float | None) -> bool:
        """Whether the server serves another version of ``model`` than the remembered signatures describe
        (then those of the served one are remembered instead)."""
        before = self._described.get((model, None))
        if before is None:
            return False
        try:
            self.metadata(model, timeout=timeout, refresh=True)
        except ServingClientError:  # the refusal is the error to report
            return False
        return self._described[(model, None)] != before

    def status(self, model: str, *, timeout: float | None = None) -> list[dict]:
        """Every version of ``model`` the server knows of (GetModelStatus).

        Args:
          model: The model name.
          timeout: The call's deadline (default: the client's).

        Returns:
          ``{"version", "state", "error_code", "error_message"}`` per version, as the server lists them;
          ``state`` is a name such as ``"AVAILABLE"``.
        """
        request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model})
        response = self._call(self._models.GetModelStatus, request, f"GetModelStatus({model})", timeout)
        return [{"version": s.version, "state": s.State.Name(s.state), "error_code": s.status.error_code,
                 "error_message": s.status.error_message} for s in response.model_version_status]

    def _signature(self, model: str, signature: str) -> SignatureInfo:
        signatures = self.metadata(model)
        if signature not in signatures:
            raise ServingClientError(f"model '{model}' at {self.address} has no signature '{signature}' "
                                     f"(it has {sorted(signatures)})", grpc.StatusCode.FAILED_PRECONDITION)
        return signatures[signature]

    def predict(self, model: str, inputs: Mapping[str, np.ndarray], *, signature: str = "serving_default",
                version: int | None = None, label: str | None = None, output_filter: Sequence[str] = (),
                timeout: float | None = None) -> tuple[dict[str, np.ndarray], int]:
        """A raw Predict call.

        Numbers go as ``tensor_content`` bytes and strings as ``string_val`` (str as UTF-8),
        what ``tf.make_tensor_proto`` writes; outputs are read without TensorFlow ops.

        Args:
          model: The model name.
          inputs: The signature's inputs.
          signature: The signature name.
          version: A version to ask (default: the one the server serves).
          label: A version label to ask instead.
          output_filter: The outputs wanted (default: all).
          timeout: The call's deadline (default: the client's).

        Returns:
          ``(outputs, version)``: the outputs as numpy arrays, and the version that answered.

        Raises:
          SignaturesChangedError: The server refused ``inputs`` (INVALID_ARGUMENT) and serves another version
            than the remembered signatures describe: build the inputs again from :meth:`metadata`.
          ServingClientError: Any other failed call (:class:`ServerUnavailableError`: no answer).
        """
        request = predict_pb2.PredictRequest(
            model_spec={"name": model, "signature_name": signature, "version_label": label,
                        "version": None if version is None else {"value": version}},
            output_filter=output_filter)
        for key, value in inputs.items():
            fill_proto(request.inputs[key], value, content=True)
        try:
            response = self._call(self._predictions.Predict, request, f"Predict({model}/{signature})",
                                  timeout)
        except ServingClientError as e:
            # A rollout of other inputs refuses the old ones before any version answers: ask what is served.
            if e.code == INVALID_ARGUMENT and version is None and label is None and \
                    self._rolled_out(model, timeout):
                raise SignaturesChangedError(f"{e} (model '{model}' now serves version "
                                             f"{self._described[(model, None)]}, of other signatures: they "
                                             f"were read again)", e.code) from None
            raise
        answered = response.model_spec.version.value
        if version is None and label is None and self._described.get((model, None), answered) != answered:
            self._metadata.pop((model, None), None)  # a new version rolled out: ask its signatures again
            self._described.pop((model, None), None)
        try:
            return {k: to_ndarray(v, k) for k, v in response.outputs.items()}, answered
        except (ValueError, TypeError) as e:
            raise ServingClientError(f"Predict({model}/{signature}) at {self.address} answered an output "
                                     f"that cannot be read: {e}") from None

    def retrieve(self, user_id: str, history: Sequence[str], k: int | None = None,
                 exclude_seen: bool = False, *, model: str | None = None, exclude: Sequence[str] = (),
                 timeout: float | None = None) -> Retrieved:
        """Top items for a user from a retrieval export (``serving_default`` or ``query_with_exclusions``).

        Args:
          user_id: The raw user id.
          history: The user's item ids, oldest first; the most recent the signature's width takes are sent.
          k: How many items (default: all the export returns).
          exclude_seen: Leave out the history's items: in the model where the exclusion width allows
            (the most recent ones), and always in the result.
          model: The model (default: the client's ``retrieval_model``).
          exclude: More item ids to leave out, as the history's (the last :data:`MAX_EXCLUSIONS_SENT` of the
            history then these in the model, where the list keeps its length; the rest from its answer,
            which they can shorten).
          timeout: The call's deadline (default: the client's).

        Returns:
          The items and their scores, best first.

        Raises:
          ValueError: ``k`` is more than the export returns.
        """
        model = model or self.retrieval_model
        # Oldest history first, the operator's last (sorted past the cap: every replica sends the same): a
        # static exclusion width and the cap keep the last ones. An id in both keeps its last place.
        given = sorted(exclude) if len(exclude) > MAX_EXCLUSIONS_SENT else list(exclude)
        banned = list(dict.fromkeys(reversed([*(history if exclude_seen else ()), *given])))[::-1]
        signature = "query_with_exclusions" if banned else "serving_default"
        info = self._signature(model, signature)
        row = fit_width([str(h) for h in history], info.inputs["history"], left=True)
        inputs = {"user_id": np.array([str(user_id)], object), "history": np.array([row], object)}
        if banned:  # past the cap the rest are only filtered from the answer, which they can then shorten
            excluded = fit_width(banned[-MAX_EXCLUSIONS_SENT:], info.inputs["exclude_item_ids"], left=False)
            inputs["exclude_item_ids"] = np.array([excluded], object)
        outputs, version = self.predict(model, inputs, signature=signature, timeout=timeout,
                                        output_filter=["item_ids", "scores"])
        (ids,), (scores,) = _retrieved(outputs, model, 1)
        if k is not None and k > len(ids):
            raise ValueError(f"model '{model}' returns at most {len(ids)} items; ask for k <= {len(ids)}")
        banned = set(banned)
        pairs = [(i, float(s)) for i, s in zip(ids, scores) if i and np.isfinite(s) and i not in banned][:k]
        return Retrieved([i for i, _ in pairs], [s for _, s in pairs], version)

    def retrieve_many(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]], k: int | None = None,
                      exclude_seen: bool = False, *, model: str | None = None,
                      timeout: float | None = None) -> list[Retrieved]:
        """:meth:`retrieve` for many users in one request (rows padded with ``""`` to one width).

        Args:
          user_ids: The raw user ids.
          histories: Each user's item ids, oldest first.
          k: How many items per user (default: all the export returns).
          exclude_seen: Leave out each user's history (as :meth:`retrieve`).
          model: The model (default: the client's ``retrieval_model``).
          timeout: The call's deadline (default: the client's).

        Returns:
          One :class:`Retrieved` per user, in order.
        """
        model = model or self.retrieval_model
        if len(user_ids) != len(histories):
            raise ValueError(f"{len(user_ids)} user ids but {len(histories)} histories; "
                             "give one history per user")
        if not user_ids:
            return []
        signature = "query_with_exclusions" if exclude_seen else "serving_default"
        info = self._signature(model, signature)

        def rows(values: list[list[str]], spec: TensorSpecInfo, left: bool) -> np.ndarray:
            fitted = [fit_width(v, spec, left=left) for v in values]
            width = max(map(len, fitted))
            return np.array([[PAD] * (width - len(r)) + r if left else r + [PAD] * (width - len(r))
                             for r in fitted], object)

        histories = [[str(h) for h in history] for history in histories]
        inputs = {"user_id": np.array([str(u) for u in user_ids], object),
                  "history": rows(histories, info.inputs["history"], True)}
        if exclude_seen:
            inputs["exclude_item_ids"] = rows([list(dict.fromkeys(h)) for h in histories],
                                              info.inputs["exclude_item_ids"], False)
        outputs, version = self.predict(model, inputs, signature=signature, timeout=timeout,
                                        output_filter=["item_ids", "scores"])
        all_ids, all_scores = _retrieved(outputs, model, len(user_ids))
        if k is not None and k > all_scores.shape[-1]:
            raise ValueError(f"model '{model}' returns at most {all_scores.shape[-1]} items; "
                             f"ask for k <= {all_scores.shape[-1]}")
        found = []
        for ids, scores, history in zip(all_ids, all_scores, histories):
            banned = set(history) if exclude_seen else set()
            pairs = [(i, float(s)) for i, s in zip(ids, scores)
                     if i and np.isfinite(s) and i not in banned][:k]
            found.append(Retrieved([i for i, _ in pairs], [s for _, s in pairs], version))
        return found

    def rank(self, user_id: str, candidates: Sequence[str], features: Mapping[str, object] | None = None, *,
             model: str | None = None, user_feature: str | None = "user_id",
             item_feature: str | None = "item_id", timeout: float | None = None) -> Ranked:
        """Scores ``candidates`` for a user with a ranker export, one row per candidate.

        Args:
          user_id: The raw user id, sent as ``user_feature`` unless ``features`` has it.
          candidates: Item ids, sent as ``item_feature`` unless ``features`` has it.
          features: A ranker input's value: a scalar (the same for every candidate) or one per candidate.
            Inputs not given are sent as missing (``""`` or NaN), as in training.
          model: The model (default: the client's ``ranker_model``).
          user_feature: The ranker's user id input (None: the ranker takes none); a name it lacks is an
            error, except the default for a ranker of no user id input.
          item_feature: The ranker's item id input (None: the ranker takes none); a name it lacks is an
            error, except the default when ``features`` fills every input.
          timeout: The call's deadline (default: the client's).

        Returns:
          The ranker's outputs per candidate.

        Raises:
          ValueError: ``features``, ``user_feature`` or ``item_feature`` names an input the ranker does not
            have, or a value has the wrong length.
        """
        model = model or self.ranker_model
        candidates = [str(c) for c in candidates]
        if not candidates:
            return Ranked([], {}, 0)
        info = self._signature(model, "serving_default")
        given = dict(features or {})
        unknown = sorted(set(given) - set(info.inputs))
        if unknown:
            raise ValueError(f"model '{model}' has no inputs {unknown}; its inputs are {sorted(info.inputs)}")
        for role, name, value in (("user_feature", user_feature, str(user_id)),
                                  ("item_feature", item_feature, candidates)):
            if name and name not in info.inputs:
                if name == f"{role[:4]}_id" and (role == "user_feature" or set(info.inputs) <= set(given)):
                    continue  # the default: a ranker of no user id input, or every input given by name
                # else the ids would go nowhere: every candidate scored alike
                raise ValueError(f"model '{model}' has no input '{name}' for the {role[:4]} ids; its inputs "
                                 f"are {sorted(info.inputs)}: pass {role}= the column its training named "
                                 f"by --{role[:4]}-column, or {role}=None if it takes none")
            if name:
                given.setdefault(name, value)
        inputs = {name: ranker_column(given.get(name), spec.dtype, len(candidates), name)
                  for name, spec in info.inputs.items()}
        outputs, version = self.predict(model, inputs, timeout=timeout)
        n = len(candidates)
        for name, values in outputs.items():  # one score per candidate, as [n] or [n, 1]
            if values.dtype.kind not in "fiub" or values.ndim not in (1, 2) or values.shape[0] != n or \
                    values.size != n:
                raise ServingClientError(f"ranker '{model}' at {self.address} answered '{name}' of shape "
                                         f"{list(values.shape)} and dtype {values.dtype} for {n} candidates; "
                                         f"one number per candidate expected")
        return Ranked(candidates, {name: values.reshape(-1) for name, values in outputs.items()}, version)
