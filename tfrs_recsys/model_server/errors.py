"""The error type of the serving stack: a gRPC status code and TF Serving's message.

Every failure a request can meet is raised as :class:`ServingError` with the code
``tensorflow_model_server`` returns for it, so the gRPC and REST front ends report
the same thing the real server would.
"""
from __future__ import annotations

import grpc

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request or load failure carrying the gRPC status code TF Serving uses for it."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    @property
    def error_code(self) -> int:
        """The ``tensorflow.error.Code`` number (the gRPC code number) for a StatusProto."""
        return self.code.value[0]

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def from_tf_error(error: Exception) -> ServingError:
    """Map a TensorFlow runtime error to its status code (TF and gRPC share the numbering)."""
    import tensorflow as tf

    if isinstance(error, tf.errors.OpError):
        for code in grpc.StatusCode:
            if code.value[0] == error.error_code:
                return ServingError(code, error.message)
    return ServingError(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")
