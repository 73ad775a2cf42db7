"""TF Serving's gRPC services over a :class:`ModelManager`.

``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata, Classify,
Regress, MultiInference) and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), with tensorflow-serving-api's request and response messages. A
failure becomes the status TF Serving returns; nothing a request does can stop the server.

Request bytes are parsed by a deserializer that never raises: bytes that are not the method's
request message reach the handler as :class:`Undecodable` and are answered INVALID_ARGUMENT. A
raising deserializer would make grpcio answer INTERNAL and keep about 17 KB per such call
(grpcio 1.85, measured on a bare server), so any client could grow the server without bound.
"""
from __future__ import annotations

import logging
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


def _handler(manager: ModelManager, request_class, response_class,
             call: Callable[[ModelManager, object], object]) -> grpc.RpcMethodHandler:
    """A unary handler answering ``call(manager, request)``; a ServingError (or anything unexpected, as
    ``INTERNAL``) ends the call with its status."""
    def answer(request, context):
        try:
            if isinstance(request, Undecodable):
                raise invalid_argument(request.message)
            return call(manager, request)
        except ServingError as e:
            context.abort(e.code, e.message)
        except Exception as e:  # never let a request take the server down
            log.exception("Request failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

    return grpc.unary_unary_rpc_method_handler(answer, request_deserializer=_parser(request_class),
                                               response_serializer=response_class.SerializeToString)


def add_services(server: grpc.Server, manager: ModelManager) -> None:
    """Registers PredictionService and ModelService on a gRPC server.

    Args:
      server: The server (not started yet).
      manager: The manager whose models the services reach.
    """
    for service, methods in _METHODS.items():
        handlers = {name: _handler(manager, *types_and_call) for name, types_and_call in methods.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
