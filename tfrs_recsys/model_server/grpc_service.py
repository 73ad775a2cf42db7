"""TF Serving's gRPC services over a :class:`ModelManager`.

``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata, Classify,
Regress, MultiInference) and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), with tensorflow-serving-api's request and response messages. A
failure becomes the status TF Serving returns; nothing a request does can stop the server.

grpcio's server gives a call a worker thread before its request arrives, so calls still receiving are
bounded on their own (:class:`_Receiving`): 16 calls that never finished sending once held every worker
for ever. Calls whose request has arrived are counted against their own limit, as each holds its
request's bytes.

Request bytes are parsed by a deserializer that never raises: bytes that are not the method's
request message reach the handler as :class:`Undecodable` and are answered INVALID_ARGUMENT. A
raising deserializer would make grpcio answer INTERNAL and keep about 17 KB per such call
(grpcio 1.85, measured on a bare server), so any client could grow the server without bound.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from concurrent import futures
from typing import Callable

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)
from tensorflow_serving.apis.model_pb2 import ModelSpec

from tfrs_recsys.model_server.errors import ServingError, invalid_argument
from tfrs_recsys.model_server.model_manager import ModelManager

log = logging.getLogger("tfrs_recsys.model_server")


class Undecodable:
    """Request bytes that did not parse as the method's request message.

    Args:
      message_name: The full name of the expected message (``tensorflow.serving.PredictRequest``).
      error: What the parser said.
    """

    __slots__ = ("message",)

    def __init__(self, message_name: str, error: Exception):
        self.message = (f"Could not parse the request as a {message_name} ({type(error).__name__}: {error}); "
                        f"send a serialized {message_name}")


def _parser(message_class) -> Callable[[bytes], object]:
    """A request deserializer that returns :class:`Undecodable` instead of raising."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception as e:  # DecodeError, and whatever else the parser raises on hostile bytes
            return Undecodable(name, e)
    return parse


def _on_servable(method: str):
    """``servable.<method>(request)`` on the servable the request's ModelSpec names."""
    def call(manager: ModelManager, request):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        with manager.handle(request.model_spec) as servable:
            return getattr(servable, method)(request)
    return call


def _multi_inference(manager: ModelManager, request):
    with manager.handle(request.tasks[0].model_spec if request.tasks else ModelSpec()) as servable:
        return servable.multi_inference(request)


def _reload_config(manager: ModelManager, request: model_management_pb2.ReloadConfigRequest):
    if not manager.options.enable_model_reload_api:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "HandleReloadConfigRequest is off on this server "
                                                          "(--enable_model_reload_api=false)")
    if request.config.WhichOneof("config") != "model_config_list":
        raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                               "Only ModelConfigList is currently supported")
    for index, model in enumerate(request.config.model_config_list.config):
        log.info("Config entry index : %d path : %s name : %s platform : %s",
                 index, model.base_path, model.name, model.model_platform)
    manager.reload_config(request.config, requested=True)
    return model_management_pb2.ReloadConfigResponse(status={"error_code": 0})


# service -> {method: (request message, response message, call(manager, request))}
_METHODS = {
    "tensorflow.serving.PredictionService": {
        "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse, _on_servable("predict")),
        "Classify": (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse,
                     _on_servable("classify")),
        "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse,
                    _on_servable("regress")),
        "MultiInference": (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse,
                           _multi_inference),
        "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                             get_model_metadata_pb2.GetModelMetadataResponse, ModelManager.model_metadata)},
    "tensorflow.serving.ModelService": {
        "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest,
                           get_model_status_pb2.GetModelStatusResponse, ModelManager.model_status),
        "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest,
                                      model_management_pb2.ReloadConfigResponse, _reload_config)},
}


@dataclasses.dataclass(frozen=True)
class GrpcLimits:
    """How many calls the gRPC server holds, and how long a request may take to arrive.

    Args:
      threads: Calls running a model at once.
      max_concurrent_rpcs: Calls whose request has arrived, running or waiting to; one more is
        RESOURCE_EXHAUSTED rather than queued with its bytes.
      max_receiving_rpcs: Calls still receiving their request message; one more cancels the one that has
        been receiving longest (a legitimate request arrives in milliseconds).
      request_timeout_s: A request message must arrive whole within this, else the call is cancelled.
    """

    threads: int
    max_concurrent_rpcs: int
    max_receiving_rpcs: int
    request_timeout_s: float

    @property
    def workers(self) -> int:
        """gRPC's worker threads: one per call receiving or admitted, so neither kind waits for the other,
        and as many again for calls receiving: a cancelled call holds its thread until it has returned, and
        the call that made room for it must not find every thread taken."""
        return 2 * self.max_receiving_rpcs + self.max_concurrent_rpcs


class _Receiving:
    """Calls whose request message is still arriving, oldest first.

    grpcio gives a call its worker thread before the request arrives: without a bound, a client that opens
    calls and never finishes sending them holds every worker. A call past ``timeout_s`` is cancelled by a
    watchdog thread, and a call beyond ``limit`` cancels the one receiving longest.
    """

    def __init__(self, limit: int, timeout_s: float):
        self._calls: OrderedDict[grpc.ServicerContext, float] = OrderedDict()
        self._changed = threading.Condition()
        self._limit, self._timeout_s = limit, timeout_s
        threading.Thread(target=self._watch, name="grpc-receive-watchdog", daemon=True).start()

    def begin(self, context: grpc.ServicerContext) -> None:
        with self._changed:
            evicted = self._calls.popitem(last=False)[0] if len(self._calls) >= self._limit else None
            self._calls[context] = time.monotonic() + self._timeout_s
            if len(self._calls) == 1:
                self._changed.notify()
        if evicted is not None:
            _cancel(evicted)

    def end(self, context: grpc.ServicerContext) -> bool:
        """Whether the call was still receiving: False once the watchdog or a newer call cancelled it."""
        with self._changed:
            return self._calls.pop(context, None) is not None

    def _watch(self) -> None:
        while True:
            with self._changed:
                while not self._calls:
                    self._changed.wait()
                context, deadline = next(iter(self._calls.items()))
                if (wait := deadline - time.monotonic()) > 0:
                    self._changed.wait(wait)
                    continue
                del self._calls[context]
            _cancel(context)


def _cancel(context: grpc.ServicerContext) -> None:
    try:
        context.cancel()
    except Exception:  # the watchdog must outlive any one call
        log.exception("Cancelling a call that did not send its request failed")


def _answer(manager: ModelManager, call: Callable[[ModelManager, object], object], request):
    """``call(manager, request)``; anything unexpected becomes ``INTERNAL``."""
    try:
        if isinstance(request, Undecodable):
            raise invalid_argument(request.message)
        return call(manager, request)
    except ServingError:
        raise
    except Exception as e:  # never let a request take the server down
        log.exception("Request failed")
        raise ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}") from None


class _Calls:
    """Reads each call's one request message within the limits, then answers it on the same thread."""

    def __init__(self, manager: ModelManager, limits: GrpcLimits):
        self.manager, self.limits = manager, limits
        self.receiving = _Receiving(limits.max_receiving_rpcs, limits.request_timeout_s)
        self.running = threading.BoundedSemaphore(limits.threads)
        self.admitted, self.lock = 0, threading.Lock()

    def handler(self, request_class, response_class, call) -> grpc.RpcMethodHandler:
        """A handler reading one request message (a unary call on the wire) and answering ``call``."""
        def answer(requests, context):
            self.receiving.begin(context)
            try:
                request = next(requests, None)
            except grpc.RpcError:
                request = None
            if not self.receiving.end(context):  # cancelled: past the timeout, or made room for a newer call
                context.abort(grpc.StatusCode.CANCELLED, (
                    f"the request message did not arrive within {self.limits.request_timeout_s:g}s "
                    "(--grpc_request_timeout_in_ms), or more calls were receiving theirs than "
                    "--grpc_max_receiving_rpcs"))
            if request is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
            with self.lock:
                admitted = self.admitted < self.limits.max_concurrent_rpcs
                self.admitted += admitted
            if not admitted:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                    f"Concurrent RPC limit exceeded! ({self.limits.max_concurrent_rpcs} calls in progress, "
                    "--grpc_max_concurrent_rpcs)"))
            try:
                with self.running:
                    return _answer(self.manager, call, request)
            except ServingError as e:
                error = e
            finally:
                with self.lock:
                    self.admitted -= 1
            context.abort(error.code, error.message)

        return grpc.stream_unary_rpc_method_handler(answer, request_deserializer=_parser(request_class),
                                                    response_serializer=response_class.SerializeToString)


def grpc_server(manager: ModelManager, limits: GrpcLimits, options: list[tuple]) -> grpc.Server:
    """A gRPC server with PredictionService and ModelService over ``manager``, not started.

    Args:
      manager: The manager whose models the services reach.
      limits: The server's :class:`GrpcLimits`.
      options: gRPC channel arguments of the server.

    Returns:
      The server; add its port and start it.
    """
    server = grpc.server(futures.ThreadPoolExecutor(limits.workers, thread_name_prefix="grpc"),
                         maximum_concurrent_rpcs=limits.workers, options=options)
    calls = _Calls(manager, limits)
    for service, methods in _METHODS.items():
        handlers = {name: calls.handler(*types) for name, types in methods.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    return server
