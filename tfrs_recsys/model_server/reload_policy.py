"""What a HandleReloadConfigRequest may do: load models from the allowed roots only, and only what is there.

The RPC carries no authentication (as in TF Serving), so whoever reaches the port could otherwise load any
SavedModel the process can read (``/etc`` as a base path), or unload every model with a config that then
fails. A network reload's base paths must lie under the allowed roots (``--allowed_model_roots``; default:
the parent folders of the base paths served at start-up, so a model exported beside them can be added),
and a model it adds or moves must already have a version on disk; both are checked before anything changes.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import grpc
from tensorflow_serving.config import model_server_config_pb2

from tfrs_recsys import paths
from tfrs_recsys.model_server.errors import ServingError
from tfrs_recsys.servable_layout import version_dirs


def real(path: str) -> str:
    """A base path with symlinks and ``..`` resolved (URLs as they are)."""
    return path if "://" in path else os.path.realpath(path)


def allowed_roots(config: model_server_config_pb2.ModelServerConfig,
                  explicit: Sequence[str] = ()) -> list[str]:
    """``explicit`` roots, else the parent folder of each base path ``config`` serves.

    Args:
      config: The start-up config.
      explicit: ``--allowed_model_roots``.

    Returns:
      The resolved roots.
    """
    if explicit:
        return [real(root) for root in explicit]
    served = config.model_config_list.config
    return sorted({real(c.base_path).rstrip("/").rsplit("/", 1)[0] or "/" for c in served})


def has_version(base_path: str) -> bool:
    """Whether ``base_path`` holds an integer folder with a ``saved_model.pb``."""
    try:
        return any(paths.isfile(paths.join(d, "saved_model.pb")) for d in version_dirs(base_path).values())
    except (OSError, ValueError):
        return False


def check_requested(models: Iterable, served: Mapping[str, str], roots: Sequence[str]) -> None:
    """Refuses a network reload that reaches outside ``roots`` or adds a model with nothing to load.

    Args:
      models: The requested ``ModelConfig`` entries.
      served: ``{name: base path}`` served now.
      roots: :func:`allowed_roots`.

    Raises:
      ServingError: PERMISSION_DENIED for a base path outside ``roots``; FAILED_PRECONDITION (a client's
        error: TF Serving answers UNKNOWN) for a new or moved model without a version.
    """
    def inside(path: str) -> bool:
        resolved = real(path)
        return any(resolved == r or resolved.startswith(r.rstrip("/") + "/") for r in roots)

    for model in models:
        if not model.name.strip() or "\0" in model.name + model.base_path:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Model {model.name[:256]!r}: a model needs a name, and neither its name nor "
                               f"its base path may hold a NUL byte; nothing was changed")
        if not inside(model.base_path):
            raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                               f"Model {model.name}: base path {model.base_path} is outside the allowed "
                               f"model roots {list(roots)}; --allowed_model_roots on the server adds roots")
        outside = [d for d in _version_dirs(model.base_path) if not inside(d)]
        if outside:  # a version folder linked elsewhere would load what the roots keep out
            raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                               f"Model {model.name}: version folder {outside[0]} leads outside the allowed "
                               f"model roots {list(roots)}; nothing was changed")
        if served.get(model.name) != model.base_path and not has_version(model.base_path):
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"Model {model.name}: no version (an integer folder holding saved_model.pb) "
                               f"under {model.base_path}; nothing was changed")


def _version_dirs(base_path: str) -> list[str]:
    try:
        return [] if "://" in base_path else list(version_dirs(base_path).values())
    except (OSError, ValueError):
        return []
