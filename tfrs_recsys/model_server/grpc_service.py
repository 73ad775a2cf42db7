"""TF Serving's gRPC services over a :class:`ModelManager`.

``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata, Classify,
Regress, MultiInference) and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), on the servicer bases generated in tensorflow-serving-api.
A failure becomes the status TF Serving returns; nothing a request does can stop the server.
"""
from __future__ import annotations

import logging
from typing import Callable

import grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.apis.model_pb2 import ModelSpec

from tfrs_recsys.model_server.errors import ServingError, invalid_argument
from tfrs_recsys.model_server.model_manager import ModelManager

log = logging.getLogger("tfrs_recsys.model_server")


def _rpc(call: Callable[[ModelManager, object], object]):
    """A servicer method answering ``call(manager, request)``; a ServingError (or anything
    unexpected, as ``INTERNAL``) ends the call with its status."""
    def method(self, request, context):
        try:
            return call(self.manager, request)
        except ServingError as e:
            context.abort(e.code, e.message)
        except Exception as e:  # never let a request take the server down
            log.exception("Request failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
    return method


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


class Services(prediction_service_pb2_grpc.PredictionServiceServicer,
               model_service_pb2_grpc.ModelServiceServicer):
    """Both services' methods, answered by one :class:`ModelManager`.

    Args:
      manager: The manager whose versions the requests reach.
    """

    def __init__(self, manager: ModelManager):
        self.manager = manager

    Predict = _rpc(_on_servable("predict"))
    Classify = _rpc(_on_servable("classify"))
    Regress = _rpc(_on_servable("regress"))
    MultiInference = _rpc(_multi_inference)
    GetModelMetadata = _rpc(ModelManager.model_metadata)
    GetModelStatus = _rpc(ModelManager.model_status)
    HandleReloadConfigRequest = _rpc(_reload_config)


def add_services(server: grpc.Server, manager: ModelManager) -> None:
    """Registers PredictionService and ModelService on a gRPC server.

    Args:
      server: The server (not started yet).
      manager: The manager whose models the services reach.
    """
    services = Services(manager)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(services, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(services, server)
