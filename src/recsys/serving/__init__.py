"""Serving layer: a local Triton Inference Server and gRPC clients for it.

* :mod:`recsys.serving.server`: start/stop a real ``tritonserver`` (from PyPI
  ``nvidia-pytriton``) on a model repository, without Docker; ``onnxruntime_onnx``
  models run on a local-only Python stand-in for NVIDIA's C++ onnxruntime backend.
* :mod:`recsys.serving.client`: :class:`RecsysClient` / :class:`AsyncRecsysClient`
  (numpy in and out, deadlines, retries on UNAVAILABLE, typed errors).
* :mod:`recsys.serving.errors`: the errors both raise.

This is the top layer: it may import every other layer, and none imports it.
"""

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
