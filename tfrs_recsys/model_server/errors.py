"""The error type of the serving stack: a gRPC status code and TF Serving's message.

Every failure a request can meet is raised as :class:`ServingError` with the code
``tensorflow_model_server`` returns for it, so the gRPC and REST front ends report
the same thing the real server would. A message never carries more than
:data:`MAX_WORD_CHARS` characters of one word (a model name, a path, a JSON value) nor more
than :data:`MAX_MESSAGE_CHARS` in all, however long what the client sent.
"""
from __future__ import annotations

import functools
import re

import grpc

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc), indexed by the gRPC code number:
# OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS,
# PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED,
# INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED.
_HTTP_STATUS = (200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401)
_CODES = {code.value[0]: code for code in grpc.StatusCode}
MAX_WORD_CHARS = 256
MAX_MESSAGE_CHARS = 4096
_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_WORD_CHARS + 1))


def shorten(text: str, limit: int = MAX_WORD_CHARS) -> str:
    """``text``, or its first ``limit`` characters and an ellipsis that says how long it was.

    Args:
      text: A name or message quoted in an error.
      limit: The most characters of it kept.

    Returns:
      ``text`` when it fits, else ``text[:limit] + "...(N characters)"``.
    """
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


def _bounded(message: str) -> str:
    """A message with each overlong word shortened, and the whole capped."""
    return shorten(_LONG_WORD.sub(lambda m: shorten(m.group()), message), MAX_MESSAGE_CHARS)


class ServingError(Exception):
    """A request or load failure carrying the gRPC status code TF Serving uses for it.

    Args:
      code: The status code the gRPC front end reports (and the REST one maps to HTTP).
      message: TF Serving's message for the failure; overlong words in it are shortened.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        message = _bounded(message)  # a client's 1 MB model name is not echoed back in full
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers with for this code."""
        return _HTTP_STATUS[self.error_code]

    @property
    def error_code(self) -> int:
        """The ``tensorflow.error.Code`` number (the gRPC code number) for a StatusProto."""
        return self.code.value[0]

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def from_tf_error(cls, error) -> ServingError:
        """A TensorFlow runtime error as the ``ServingError`` to report.

        Args:
          error: A ``tf.errors.OpError``.

        Returns:
          A ``ServingError`` with the error's code (TF and gRPC share the numbering) and message, less the
          Python frames that defined the failing node (the server's paths are not the client's business).
        """
        return cls(_CODES[error.error_code], _without_frames(error.message))


def _without_frames(message: str) -> str:
    kept = [line for line in message.splitlines()
            if not line.startswith(("Detected at node", "  File ", "    "))]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


# The codes most failures carry: ``invalid_argument(message)`` is ``ServingError(INVALID_ARGUMENT, message)``.
invalid_argument = functools.partial(ServingError, grpc.StatusCode.INVALID_ARGUMENT)
not_found = functools.partial(ServingError, grpc.StatusCode.NOT_FOUND)
failed_precondition = functools.partial(ServingError, grpc.StatusCode.FAILED_PRECONDITION)



def ascii_hint(name: str) -> str:
    """For an input name not in ASCII: how signatures name such a column (TensorFlow names are ASCII)."""
    return "" if name.isascii() else (" (signature inputs are named in ASCII: a column named otherwise is "
                                      "served under its ASCII form, which the model's metadata lists)")
