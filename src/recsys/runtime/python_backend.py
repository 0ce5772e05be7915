"""Helpers for ``model.py`` files that run inside Triton's python backend.

The ``retrieval`` and ``recommend`` models of the generated repository
(``recsys/serving/triton_models/*/model.py``) use these for tensor I/O, errors and BLS calls. The
module imports numpy only and stays Python-3.10-compatible, because NVIDIA's 24.10
container runs it with its own Python 3.10. ``triton_python_backend_utils`` exists only
inside the python-backend stub, so callers pass it in as ``pb``.

Tensor I/O goes through DLPack: with numpy 2 the stub shipped in nvidia-pytriton 0.7.0
returns zeros from ``Tensor.as_numpy()`` and empty outputs from ``pb_utils.Tensor(name,
array)`` (see ``docs/serving.md``, "numpy 2 and the python backend stub");
``np.from_dlpack`` and ``Tensor.from_dlpack`` work with numpy 1 and 2, locally and in
the container.

Example (inside a python-backend ``model.py``)::

    import triton_python_backend_utils as pb_utils
    from recsys.runtime.python_backend import bls_infer, input_array, output_tensor

    ids = input_array(pb_utils.get_input_tensor_by_name(request, "user_id"))
    out = bls_infer(pb_utils, "user_tower", {"ids": padded}, ["embeddings"])
    response = pb_utils.InferenceResponse([output_tensor(pb_utils, "scores", scores)])
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The stub renames a DLPack capsule it consumed to "used_dlpack"; numpy's capsule
# destructor only recognises "used_dltensor" and would print a traceback per tensor.
# The stub owns and frees the data either way: renaming only silences the destructor.
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_set_name.restype = ctypes.c_int
_USED_CAPSULE_NAME = ctypes.c_char_p(b"used_dltensor")  # module level: outlives capsules


class RequestError(ValueError):
    """A request the model refuses; reported to the client with ``code``.

    Args:
        message: what is wrong, for the client.
        code: a ``pb_utils.TritonError`` code name (``INVALID_ARG``, ``NOT_FOUND``,
            ``INTERNAL``, ``UNAVAILABLE``, ...).
    """

    def __init__(self, message: str, code: str = "INVALID_ARG") -> None:
        super().__init__(message)
        self.code = code


class BlsError(RuntimeError):
    """A BLS call from a python model to another model failed.

    Attributes:
        model_name: the model that was called.
        code: the ``TritonError`` code name to report (``INVALID_ARG`` when the
            called model refused the request, otherwise ``INTERNAL`` or ``UNAVAILABLE``).
    """

    def __init__(self, model_name: str, message: str, code: str = "INTERNAL") -> None:
        super().__init__(f"model '{model_name}' failed: {message}")
        self.model_name = model_name
        self.code = code


def input_array(tensor: Any) -> np.ndarray:
    """A python-backend tensor (input or BLS output) as numpy, via DLPack.

    The array views memory owned by the tensor: copy it if it must outlive the
    request or response it came from.
    """
    return np.from_dlpack(tensor)


def output_tensor(pb: Any, name: str, array: np.ndarray) -> Any:
    """Wraps a numpy array as a python-backend ``Tensor`` (numpy-2-safe, via DLPack).

    Args:
        pb: the ``triton_python_backend_utils`` module.
        name: the tensor name.
        array: the data (made contiguous; its dtype is the tensor's datatype).

    Returns:
        A ``pb_utils.Tensor``.
    """
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb.Tensor.from_dlpack(name, capsule)
    _capsule_set_name(capsule, _USED_CAPSULE_NAME)
    return tensor


def triton_error(pb: Any, message: str, code: str = "INVALID_ARG") -> Any:
    """A ``pb_utils.TritonError`` with a status code where this python backend has codes.

    Args:
        pb: the ``triton_python_backend_utils`` module.
        message: the message the client sees.
        code: a ``TritonError`` code name; INVALID_ARG reaches gRPC clients as
            INVALID_ARGUMENT, NOT_FOUND as NOT_FOUND, INTERNAL as INTERNAL.
    """
    value = getattr(pb.TritonError, code, None)
    if value is None:  # python backends before 23.10 have no codes
        return pb.TritonError(message)
    return pb.TritonError(message, value)


def error_response(pb: Any, error: Exception) -> Any:
    """An ``InferenceResponse`` carrying ``error`` (its ``code`` if it has one)."""
    code = getattr(error, "code", "INTERNAL")
    message = (
        str(error)
        if isinstance(error, RequestError | BlsError)
        else (f"{type(error).__name__}: {error}")
    )
    return pb.InferenceResponse(error=triton_error(pb, message, code))


def get_input(pb: Any, request: Any, name: str) -> np.ndarray:
    """The input ``name`` of ``request`` as numpy (a copy).

    Raises:
        RequestError: the input is missing.
    """
    tensor = pb.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise RequestError(f"input '{name}' is missing")
    return np.array(input_array(tensor), copy=True)


def bls_infer(
    pb: Any,
    model_name: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    model_version: int = -1,
) -> dict[str, np.ndarray]:
    """Calls another model of the server (Business Logic Scripting) and waits.

    Args:
        pb: the ``triton_python_backend_utils`` module.
        model_name: the model to call.
        inputs: input name -> array.
        outputs: the output names wanted.
        model_version: a version number; -1 lets the model's version policy choose
            (the newest loaded version by default, so a rolled-in version is used
            as soon as it is ready).

    Returns:
        Output name -> numpy array (copies, independent of the response).

    Raises:
        BlsError: the called model answered with an error, or an output is missing.
    """
    request = pb.InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        requested_output_names=list(outputs),
        inputs=[output_tensor(pb, name, array) for name, array in inputs.items()],
    )
    response = request.exec()
    if response.has_error():
        error = response.error()
        raise BlsError(model_name, error.message(), _code_name(pb, error))
    result: dict[str, np.ndarray] = {}
    for name in outputs:
        tensor = pb.get_output_tensor_by_name(response, name)
        if tensor is None:
            raise BlsError(model_name, f"the response has no output '{name}'")
        result[name] = np.array(input_array(tensor), copy=True)
    return result


def _code_name(pb: Any, error: Any) -> str:
    """The name of a ``TritonError``'s code (``INTERNAL`` when it has none)."""
    try:
        code = error.code()
    except Exception:  # python backends before 23.10
        return "INTERNAL"
    for name in ("INVALID_ARG", "NOT_FOUND", "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS"):
        if getattr(pb.TritonError, name, object()) == code:
            return name
    return "INTERNAL"


def string_parameter(model_config: Mapping[str, Any], key: str, default: str = "") -> str:
    """A ``parameters { key: ... value: { string_value: ... } }`` entry of a model config."""
    entry = model_config.get("parameters", {}).get(key)
    if entry is None:
        return default
    value = entry.get("string_value", "") if isinstance(entry, dict) else str(entry)
    return str(value) if value != "" else default


def model_config(args: Mapping[str, str]) -> dict[str, Any]:
    """The model configuration from ``initialize``'s ``args`` (as served)."""
    config: dict[str, Any] = json.loads(args["model_config"])
    return config


def model_instance_device(args: Mapping[str, str]) -> str:
    """``"gpu"`` when Triton placed this instance on a GPU, else ``"cpu"``."""
    return "gpu" if args.get("model_instance_kind", "CPU").upper() == "GPU" else "cpu"
