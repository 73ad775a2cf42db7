"""TF Serving's gRPC services over a :class:`ModelManager`.

``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata, Classify,
Regress, MultiInference) and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), on the servicer bases generated in tensorflow-serving-api.
A failure becomes the status TF Serving returns; nothing a request does can stop the server.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

import grpc
from tensorflow_serving.apis import (
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2, model_management_pb2,
    model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from tfrs_recsys.model_server.errors import ServingError, invalid_argument
from tfrs_recsys.model_server.model_manager import ModelManager

log = logging.getLogger("tfrs_recsys.model_server")
R = TypeVar("R")


def serve_call(context: grpc.ServicerContext, empty: Callable[[], R], fn: Callable[[], R]) -> R:
    """Run ``fn``; report a ServingError (or anything unexpected) as the call's status."""
    try:
        return fn()
    except ServingError as e:
        context.set_code(e.code)
        context.set_details(e.message)
    except Exception as e:  # never let a request take the server down
        log.exception("Request failed")
        context.set_code(grpc.StatusCode.INTERNAL)
        context.set_details(f"{type(e).__name__}: {e}")
    return empty()


def _require_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        _require_spec(request)
        with self.manager.handle(request.model_spec) as servable:
            return servable.predict(request)

    def _classify(self, request: classification_pb2.ClassificationRequest) -> classification_pb2.ClassificationResponse:
        _require_spec(request)
        with self.manager.handle(request.model_spec) as servable:
            return servable.classify(request)

    def _regress(self, request: regression_pb2.RegressionRequest) -> regression_pb2.RegressionResponse:
        _require_spec(request)
        with self.manager.handle(request.model_spec) as servable:
            return servable.regress(request)

    def _multi_inference(self, request: inference_pb2.MultiInferenceRequest) -> inference_pb2.MultiInferenceResponse:
        spec = request.tasks[0].model_spec if request.tasks else predict_pb2.PredictRequest().model_spec
        with self.manager.handle(spec) as servable:
            return servable.multi_inference(request)

    def Predict(self, request, context):
        return serve_call(context, predict_pb2.PredictResponse, lambda: self._predict(request))

    def GetModelMetadata(self, request, context):
        return serve_call(context, get_model_metadata_pb2.GetModelMetadataResponse,
                          lambda: self.manager.model_metadata(request))

    def Classify(self, request, context):
        return serve_call(context, classification_pb2.ClassificationResponse, lambda: self._classify(request))

    def Regress(self, request, context):
        return serve_call(context, regression_pb2.RegressionResponse, lambda: self._regress(request))

    def MultiInference(self, request, context):
        return serve_call(context, inference_pb2.MultiInferenceResponse, lambda: self._multi_inference(request))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):
        return serve_call(context, get_model_status_pb2.GetModelStatusResponse,
                          lambda: self.manager.model_status(request))

    def HandleReloadConfigRequest(self, request, context):
        def reload():
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported")
            for index, model in enumerate(request.config.model_config_list.config):
                log.info("Config entry index : %d path : %s name : %s platform : %s",
                         index, model.base_path, model.name, model.model_platform)
            self.manager.reload_config(request.config)
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = 0
            return response

        return serve_call(context, model_management_pb2.ReloadConfigResponse, reload)


def add_services(server: grpc.Server, manager: ModelManager) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
