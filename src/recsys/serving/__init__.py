"""Serving layer: a local Triton Inference Server, a generated model repository, clients.

* :mod:`recsys.serving.server`: start/stop a real ``tritonserver`` (from PyPI
  ``nvidia-pytriton``) on a model repository, without Docker; ``onnxruntime_onnx``
  models run on a local-only Python stand-in for NVIDIA's C++ onnxruntime backend.
* :mod:`recsys.serving.client`: :class:`RecsysClient` / :class:`AsyncRecsysClient`
  (numpy in and out, deadlines, retries on UNAVAILABLE, typed errors).
* :mod:`recsys.serving.recommend_client`: typed ``recommend(user_id, k)`` on top of them.
* :mod:`recsys.serving.repository`: generates the Triton model repository of the
  two-stage recommender (``user_tower``, ``retrieval``, ``ranker``, ``recommend``) from a
  training run, and rolls in new model versions.
* :mod:`recsys.serving.cli`: ``build-repo``, ``serve``, ``recommend``, ``roll-in``.
* :mod:`recsys.serving.errors`: the errors they raise.

Modules that run INSIDE Triton's python backend (:mod:`recsys.runtime.python_backend`,
:mod:`recsys.serving.tables`, :mod:`recsys.runtime.ranking`) import numpy (and FAISS)
only and stay Python-3.10-compatible: NVIDIA's 24.10 container runs them with its own
Python 3.10 and neither torch nor tritonclient. That is why the names below are loaded
lazily: ``import recsys.runtime.ranking`` must not pull in tritonclient and grpc.

This is the top layer: it may import every other layer, and none imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.serving.client import (
        AsyncRecsysClient,
        ClientConfig,
        LatencyStats,
        ModelMetadata,
        RecsysClient,
        TensorMetadata,
        measure_latency,
    )
    from recsys.serving.errors import (
        InferenceError,
        InvalidRequestError,
        ModelLoadError,
        ServerStartError,
        ServingError,
        TritonNotInstalledError,
    )
    from recsys.serving.server import LocalTritonServer, TritonServerConfig, find_tritonserver

_SOURCES: dict[str, tuple[str, ...]] = {
    "recsys.serving.client": (
        "AsyncRecsysClient",
        "ClientConfig",
        "LatencyStats",
        "ModelMetadata",
        "RecsysClient",
        "TensorMetadata",
        "measure_latency",
    ),
    "recsys.serving.errors": (
        "InferenceError",
        "InvalidRequestError",
        "ModelLoadError",
        "ServerStartError",
        "ServingError",
        "TritonNotInstalledError",
    ),
    "recsys.serving.server": ("LocalTritonServer", "TritonServerConfig", "find_tritonserver"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "AsyncRecsysClient",
    "ClientConfig",
    "InferenceError",
    "InvalidRequestError",
    "LatencyStats",
    "LocalTritonServer",
    "ModelLoadError",
    "ModelMetadata",
    "RecsysClient",
    "ServerStartError",
    "ServingError",
    "TensorMetadata",
    "TritonNotInstalledError",
    "TritonServerConfig",
    "find_tritonserver",
    "measure_latency",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
