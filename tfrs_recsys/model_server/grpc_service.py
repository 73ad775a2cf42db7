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
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

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


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def _on_servable(self, context, request, response_type, method: str,
                     spec: model_pb2.ModelSpec | None = None):
        """``servable.<method>(request)`` on the servable the request's ModelSpec (or ``spec``) names."""
        def run():
            if spec is None and not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            with self.manager.handle(request.model_spec if spec is None else spec) as servable:
                return getattr(servable, method)(request)

        return serve_call(context, response_type, run)

    def Predict(self, request, context):
        return self._on_servable(context, request, predict_pb2.PredictResponse, "predict")

    def GetModelMetadata(self, request, context):
        return serve_call(context, get_model_metadata_pb2.GetModelMetadataResponse,
                          lambda: self.manager.model_metadata(request))

    def Classify(self, request, context):
        return self._on_servable(context, request, classification_pb2.ClassificationResponse, "classify")

    def Regress(self, request, context):
        return self._on_servable(context, request, regression_pb2.RegressionResponse, "regress")

    def MultiInference(self, request, context):
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        response_type = inference_pb2.MultiInferenceResponse
        return self._on_servable(context, request, response_type, "multi_inference", spec)


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
