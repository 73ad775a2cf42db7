"""TF Serving's gRPC services over a :class:`ModelManager`, on an asyncio gRPC server.

``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata, Classify,
Regress, MultiInference) and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), with tensorflow-serving-api's request and response messages. A
failure becomes the status TF Serving returns; nothing a request does can stop the server.

A call waits for its request message on the event loop and takes a worker thread only once the
message is whole: with grpcio's thread-per-call server, 16 calls that never finish sending held every
worker for ever. The message must arrive within a timeout, and calls whose message has arrived are
counted against their own limit, as each holds its request's bytes.

Request bytes are parsed by a deserializer that never raises: bytes that are not the method's
request message reach the handler as :class:`Undecodable` and are answered INVALID_ARGUMENT. A
raising deserializer would make grpcio answer INTERNAL and keep about 17 KB per such call
(grpcio 1.85, measured on a bare server), so any client could grow the server without bound.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
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
      threads: Worker threads running calls whose request has arrived.
      max_concurrent_rpcs: Calls whose request has arrived, running or waiting for a worker; one more is
        RESOURCE_EXHAUSTED rather than queued with its bytes.
      max_receiving_rpcs: Calls still receiving their request message (each holds only the bytes sent so
        far); one more is RESOURCE_EXHAUSTED.
      request_timeout_s: A request message must arrive whole within this, else DEADLINE_EXCEEDED.
    """

    threads: int
    max_concurrent_rpcs: int
    max_receiving_rpcs: int
    request_timeout_s: float


def _answer(manager: ModelManager, call: Callable[[ModelManager, object], object], request):
    """``call(manager, request)`` on a worker thread; anything unexpected becomes ``INTERNAL``."""
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
    """Runs each call's work on a worker thread once its request has arrived, within the limits."""

    def __init__(self, manager: ModelManager, limits: GrpcLimits):
        self.manager, self.limits = manager, limits
        self.executor = futures.ThreadPoolExecutor(limits.threads, thread_name_prefix="grpc")
        self.admitted = 0  # touched on the event loop only

    def handler(self, request_class, response_class, call) -> grpc.RpcMethodHandler:
        """A handler reading one request message (a unary call on the wire) and answering ``call``."""
        async def answer(requests, context):
            try:
                request = await asyncio.wait_for(anext(requests), self.limits.request_timeout_s)
            except asyncio.TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, (
                    f"the request message did not arrive within {self.limits.request_timeout_s:g}s "
                    "(--grpc_request_timeout_in_ms)"))
            except StopAsyncIteration:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
            if self.admitted >= self.limits.max_concurrent_rpcs:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                    f"Concurrent RPC limit exceeded! ({self.limits.max_concurrent_rpcs} calls in progress, "
                    "--grpc_max_concurrent_rpcs)"))
            self.admitted += 1
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self.executor, _answer, self.manager, call, request)
            except ServingError as e:
                error = e
            finally:
                self.admitted -= 1
            await context.abort(error.code, error.message)

        return grpc.stream_unary_rpc_method_handler(answer, request_deserializer=_parser(request_class),
                                                    response_serializer=response_class.SerializeToString)


class GrpcServer:
    """PredictionService and ModelService on a ``grpc.aio`` server whose event loop has a thread of its own.

    Args:
      manager: The manager whose models the services reach.
      address: ``host:port`` to listen on (port 0: any free one).
      limits: The server's :class:`GrpcLimits`.
      options: gRPC channel arguments of the server.

    Raises:
      RuntimeError: The address cannot be bound.
    """

    def __init__(self, manager: ModelManager, address: str, limits: GrpcLimits, options: list[tuple]):
        self._calls = _Calls(manager, limits)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop", daemon=True)
        self._thread.start()
        try:
            self.port = self._run(self._bind(address, limits, options))
        except BaseException:
            self._close()
            raise

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _bind(self, address: str, limits: GrpcLimits, options: list[tuple]) -> int:
        self._server = grpc.aio.server(
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs + limits.max_receiving_rpcs, options=options)
        for service, methods in _METHODS.items():
            handlers = {name: self._calls.handler(*types) for name, types in methods.items()}
            self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        return self._server.add_insecure_port(address)

    def start(self) -> None:
        """Starts answering calls."""
        self._run(self._server.start())

    def stop(self, grace: float | None = None) -> None:
        """Stops: calls in progress get ``grace`` seconds to finish, then are cancelled."""
        self._run(self._server.stop(grace))
        self._close()

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._calls.executor.shutdown(wait=False, cancel_futures=True)
