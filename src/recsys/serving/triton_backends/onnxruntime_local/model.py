"""LOCAL-ONLY STAND-IN for NVIDIA's C++ onnxruntime backend. NEVER DEPLOYED.

The tritonserver binary in PyPI ``nvidia-pytriton`` carries the python backend only,
so a model with ``platform: "onnxruntime_onnx"`` would fail to load on a development
machine ("unable to find backend library for backend 'onnxruntime'"). Triton also
accepts *Python-based backends*: a folder ``<backend-dir>/<name>/model.py``
implementing the python backend's ``TritonPythonModel`` interface.
``recsys.serving.server`` copies this file to ``<backend-dir>/onnxruntime/model.py``,
so the *unchanged* repository loads and serves on CPU with the ``onnxruntime`` wheel
of the project's venv.

Deployments use NVIDIA's official container (``nvcr.io/nvidia/tritonserver:*-py3``),
whose ``/opt/tritonserver/backends/onnxruntime`` is the real C++ backend: this file
must never be copied there or into any image. See ``docs/serving.md``, "The onnxruntime
stand-in (never deployed)".

What it mirrors from the real backend:

* the model file ``<model>/<version>/<default_model_filename or model.onnx>``, which may
  be a folder holding ``model.onnx`` plus external data;
* ``parameters`` ``intra_op_thread_count``, ``inter_op_thread_count``,
  ``execution_mode`` (0 sequential, 1 parallel) and ``optimization.graph.level``
  (-1 basic, 1 extended, 2 none; unset = all);
* load-time checks that the configuration's inputs and outputs match the ONNX graph
  (names, element types, ranks, fixed dimensions, a free batch dimension);
* batched execution: requests merged by the dynamic batcher run as one
  ``InferenceSession.run`` and are split back; a bad request gets its own error and
  the others in the batch still succeed.

What it does not do: GPU execution providers (it always runs on the CPU EP, whatever
the instance kind), TensorRT/OpenVINO accelerators, sequence batching, ragged inputs,
auto-completion of a configuration that omits inputs or outputs, and ``TYPE_STRING``
tensors (see below).

What it does differently: onnxruntime's thread pools do not spin while they wait
(``session.intra_op.allow_spinning`` and ``session.inter_op.allow_spinning`` are
"0"). Locally every model's stub, the server and the client share a few cores, and a
pool left spinning between requests burns a core that another process needs.

Per request it only does what the checks and the batching need: the graph's shapes
are read once at load time, inputs are read through DLPack without a copy (onnxruntime
runs on the stub's shared memory directly; a merged batch costs one concatenation),
and only the outputs some request asked for are fetched from ``session.run``. What
remains per request is the python backend's own IPC (inputs and outputs cross shared
memory between the server and the stub), which the C++ backend does not have.

Tensor I/O goes through DLPack, never ``Tensor.as_numpy()`` / ``pb_utils.Tensor(name,
ndarray)``: the python backend stub shipped with nvidia-pytriton 0.7.0 is built with a
pybind11 that predates numpy 2, and with the venv's numpy 2 those two calls return
zeros and zero-byte outputs (measured; BYTES tensors crash the stub outright).
``np.from_dlpack(tensor)`` and ``pb_utils.Tensor.from_dlpack`` carry the data
correctly under numpy 1 and 2 alike.
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# Triton TYPE_* -> the element type onnxruntime reports ("tensor(float)" ...).
TRITON_TO_ORT_TYPE: dict[str, str] = {
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_UINT16": "tensor(uint16)",
    "TYPE_UINT32": "tensor(uint32)",
    "TYPE_UINT64": "tensor(uint64)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_INT16": "tensor(int16)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP64": "tensor(double)",
}
GRAPH_LEVELS: dict[int, Any] = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
STAND_IN_NAME = "recsys local onnxruntime stand-in (python backend, CPU EP, never deployed)"

# The stub renames a DLPack capsule it consumed to "used_dlpack", but numpy's capsule
# destructor only recognises "used_dltensor" and otherwise prints a traceback for every
# tensor. The stub owns (and frees) the data either way; renaming only silences it.
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_set_name.restype = ctypes.c_int
_USED_CAPSULE_NAME = ctypes.c_char_p(b"used_dltensor")  # module-level: must outlive capsules


def input_array(tensor: Any) -> np.ndarray:
    """Reads a python-backend input tensor as numpy (numpy-2-safe, via DLPack)."""
    return np.from_dlpack(tensor)


def output_tensor(name: str, array: np.ndarray) -> Any:
    """Wraps a numpy array as a python-backend output tensor (numpy-2-safe, via DLPack)."""
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _capsule_set_name(capsule, _USED_CAPSULE_NAME)
    return tensor


class ConfigMismatchError(ValueError):
    """The model configuration does not describe the ONNX graph."""


class ModelFileError(RuntimeError):
    """The ONNX model file is missing or onnxruntime cannot load it."""


class BadRequestError(ValueError):
    """One request's tensors do not fit the ONNX graph."""


def _error(message: str, code_name: str = "INVALID_ARG") -> Any:
    """Builds a TritonError with a status code where this python backend has codes."""
    code = getattr(pb_utils.TritonError, code_name, None)
    if code is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code)


def _parameter(config: dict[str, Any], key: str) -> str | None:
    entry = config.get("parameters", {}).get(key)
    if entry is None:
        return None
    value = entry.get("string_value", "") if isinstance(entry, dict) else str(entry)
    return value or None


def _int_parameter(config: dict[str, Any], key: str) -> int | None:
    value = _parameter(config, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigMismatchError(f"parameter {key!r} must be an integer, not {value!r}") from None


def session_options(config: dict[str, Any]) -> ort.SessionOptions:
    """Builds onnxruntime session options from the real backend's config keys."""
    options = ort.SessionOptions()
    # Local machines are shared by every stub, the server and the client: waiting pool
    # threads sleep instead of spinning (no effect with one intra-op thread, no pool).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    intra = _int_parameter(config, "intra_op_thread_count")
    if intra is not None:
        options.intra_op_num_threads = intra
    inter = _int_parameter(config, "inter_op_thread_count")
    if inter is not None:
        options.inter_op_num_threads = inter
    mode = _int_parameter(config, "execution_mode")
    if mode is not None:
        if mode not in (0, 1):
            raise ConfigMismatchError(f"parameter 'execution_mode' must be 0 or 1, not {mode}")
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if mode == 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        )
    level = config.get("optimization", {}).get("graph", {}).get("level")
    if level is not None:
        level = int(level)
        if level not in GRAPH_LEVELS:
            raise ConfigMismatchError(f"optimization.graph.level must be -1, 1 or 2, not {level}")
        options.graph_optimization_level = GRAPH_LEVELS[level]
    return options


def resolve_model_path(model_dir: str, version: str, config: dict[str, Any]) -> str:
    """Finds the ONNX file: ``<model_dir>/<version>/<filename>``, file or folder."""
    filename = config.get("default_model_filename") or "model.onnx"
    path = os.path.join(model_dir, version, filename)
    if os.path.isdir(path):
        # A model with external data is a folder named model.onnx holding model.onnx.
        path = os.path.join(path, "model.onnx")
    if not os.path.isfile(path):
        raise ModelFileError(f"no ONNX model file at {path}")
    return path


class TensorSpec:
    """One input or output as configured, checked against the ONNX graph."""

    def __init__(self, entry: dict[str, Any], batched: bool) -> None:
        self.name = str(entry["name"])
        self.data_type = str(entry["data_type"])
        reshape = entry.get("reshape", {}).get("shape")
        dims = [int(d) for d in (reshape if reshape is not None else entry.get("dims", []))]
        self.has_reshape = reshape is not None
        self.model_dims = ([-1] if batched else []) + dims  # shape the graph sees
        # Shape the client sees (differs from model_dims only with `reshape`).
        self.client_dims = ([-1] if batched else []) + [int(d) for d in entry.get("dims", [])]
        # The graph's shape, -1 where free; set by check_against (read once, not per request).
        self.graph_dims: tuple[int, ...] = ()

    def check_against(self, graph_arg: Any, batched: bool, kind: str) -> None:
        """Raises ConfigMismatchError when the graph's tensor disagrees with the config."""
        expected_type = TRITON_TO_ORT_TYPE.get(self.data_type)
        if expected_type is None:
            raise ConfigMismatchError(
                f"{kind} '{self.name}': data type {self.data_type} is not supported by the "
                f"local stand-in (supported: {', '.join(TRITON_TO_ORT_TYPE)})"
            )
        if graph_arg.type != expected_type:
            raise ConfigMismatchError(
                f"{kind} '{self.name}': configured {self.data_type} but the ONNX graph has "
                f"{graph_arg.type}"
            )
        graph_shape = list(graph_arg.shape)
        self.graph_dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in graph_shape)
        if len(graph_shape) != len(self.model_dims):
            raise ConfigMismatchError(
                f"{kind} '{self.name}': configured rank {len(self.model_dims)} "
                f"(shape {self.model_dims}, batch dimension included: {batched}) but the ONNX "
                f"graph has rank {len(graph_shape)} (shape {graph_shape})"
            )
        if batched and isinstance(graph_shape[0], int) and graph_shape[0] != -1:
            raise ConfigMismatchError(
                f"{kind} '{self.name}': max_batch_size > 0 needs a free first dimension, "
                f"but the ONNX graph fixes it to {graph_shape[0]}"
            )
        for axis, (want, have) in enumerate(zip(self.model_dims, graph_shape, strict=True)):
            if want >= 0 and isinstance(have, int) and have >= 0 and want != have:
                raise ConfigMismatchError(
                    f"{kind} '{self.name}': dimension {axis} is {want} in the config but "
                    f"{have} in the ONNX graph"
                )


def _dims_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d >= 0 else "-1" for d in shape) + "]"


def _fits(shape: Sequence[int], graph_dims: Sequence[int]) -> bool:
    """Whether an array shape fits a graph shape (-1 = any size)."""
    return len(shape) == len(graph_dims) and all(
        want < 0 or want == have for want, have in zip(graph_dims, shape, strict=True)
    )


class TritonPythonModel:
    """Serves one ``onnxruntime_onnx`` model through the python backend (local only)."""

    def initialize(self, args: dict[str, str]) -> None:
        """Loads the ONNX model and checks it against the model configuration.

        Args:
            args: the python backend's arguments (``model_config`` JSON,
                ``model_repository`` = the model's folder, ``model_version``, ...).

        Raises:
            ModelFileError: the ONNX file is missing or onnxruntime cannot parse it.
            ConfigMismatchError: the configuration and the graph disagree.
            Triton reports the model as failed to load with the error's message.
        """
        self.model_config: dict[str, Any] = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.batched = int(self.model_config.get("max_batch_size", 0)) > 0
        path = resolve_model_path(
            args["model_repository"], args["model_version"], self.model_config
        )
        try:
            self.session = ort.InferenceSession(
                path,
                sess_options=session_options(self.model_config),
                providers=["CPUExecutionProvider"],
            )
        except Exception as error:
            raise ModelFileError(
                f"onnxruntime could not load {path}: {type(error).__name__}: {error}"
            ) from error
        self.inputs = [TensorSpec(e, self.batched) for e in self.model_config.get("input", [])]
        self.outputs = [TensorSpec(e, self.batched) for e in self.model_config.get("output", [])]
        self.graph_inputs = {arg.name: arg for arg in self.session.get_inputs()}
        graph_outputs = {arg.name: arg for arg in self.session.get_outputs()}
        configured_in = {spec.name for spec in self.inputs}
        if configured_in != set(self.graph_inputs):
            raise ConfigMismatchError(
                f"inputs differ: config has {sorted(configured_in)}, the ONNX graph has "
                f"{sorted(self.graph_inputs)}"
            )
        unknown_out = {spec.name for spec in self.outputs} - set(graph_outputs)
        if not self.outputs or unknown_out:
            raise ConfigMismatchError(
                f"outputs {sorted(unknown_out) or '(none configured)'} are not among the ONNX "
                f"graph's outputs {sorted(graph_outputs)}"
            )
        for spec in self.inputs:
            spec.check_against(self.graph_inputs[spec.name], self.batched, "input")
        for spec in self.outputs:
            spec.check_against(graph_outputs[spec.name], self.batched, "output")
        self.output_names = [spec.name for spec in self.outputs]
        self.output_specs = {spec.name: spec for spec in self.outputs}
        pb_utils.Logger.log_info(
            f"{STAND_IN_NAME}: loaded {path} for model '{self.model_name}' "
            f"(intra_op_threads={self.session.get_session_options().intra_op_num_threads})"
        )

    def _read_request(self, request: Any) -> tuple[dict[str, np.ndarray], list[str], int]:
        """Returns a request's inputs (graph-shaped), wanted outputs and batch size."""
        feeds: dict[str, np.ndarray] = {}
        batch = 1
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise BadRequestError(f"input '{spec.name}' is missing")
            array = input_array(tensor)
            if spec.has_reshape:
                lead = [array.shape[0]] if self.batched else []
                try:
                    array = array.reshape(lead + [d for d in spec.model_dims[len(lead) :]])
                except ValueError as error:
                    raise BadRequestError(f"input '{spec.name}': {error}") from None
            if not _fits(array.shape, spec.graph_dims):
                raise BadRequestError(
                    f"input '{spec.name}' has shape {list(array.shape)}; the model expects "
                    f"{_dims_text(spec.graph_dims)}"
                )
            feeds[spec.name] = array
            if self.batched:
                batch = int(array.shape[0])
        wanted = list(request.requested_output_names()) or self.output_names
        unknown = [name for name in wanted if name not in self.output_names]
        if unknown:
            raise BadRequestError(f"unknown outputs requested: {unknown}")
        return feeds, wanted, batch

    def _run(self, feeds: dict[str, np.ndarray], wanted: Collection[str]) -> dict[str, np.ndarray]:
        """Runs the session for the ``wanted`` outputs only (in configuration order)."""
        names = [name for name in self.output_names if name in wanted]
        results = self.session.run(names, feeds)
        return dict(zip(names, results, strict=True))

    def _response(self, outputs: dict[str, np.ndarray], wanted: list[str]) -> Any:
        tensors = []
        for name in wanted:
            array, spec = outputs[name], self.output_specs[name]
            if spec.has_reshape:
                lead = [array.shape[0]] if self.batched else []
                array = array.reshape(lead + spec.client_dims[len(lead) :])
            tensors.append(output_tensor(name, array))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Runs a batch of requests; returns one response (or error) per request.

        Requests whose inputs share every non-batch dimension run as one merged
        ``session.run``; the outputs are split back by each request's batch size.
        """
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray], list[str], int]]] = {}
        for index, request in enumerate(requests):
            try:
                feeds, wanted, batch = self._read_request(request)
            except BadRequestError as error:
                responses[index] = pb_utils.InferenceResponse(error=_error(str(error)))
                continue
            if self.batched:
                key: tuple[Any, ...] = tuple(
                    (name, feeds[name].shape[1:], feeds[name].dtype.str) for name in sorted(feeds)
                )
            else:
                key = ("request", index)
            groups.setdefault(key, []).append((index, feeds, wanted, batch))

        for members in groups.values():
            if len(members) == 1:
                self._run_single(members[0], responses)
                continue
            merged = {
                name: np.concatenate([feeds[name] for _, feeds, _, _ in members], axis=0)
                for name in members[0][1]
            }
            wanted_any = {name for *_, names, _ in members for name in names}
            try:
                outputs = self._run(merged, wanted_any)
            except Exception:  # retry one by one to isolate the bad request
                for member in members:
                    self._run_single(member, responses)
                continue
            offsets = np.cumsum([0] + [batch for *_, batch in members])
            for (index, _, wanted, _), start, stop in zip(
                members, offsets[:-1], offsets[1:], strict=True
            ):
                part = {name: outputs[name][start:stop] for name in wanted}
                try:
                    responses[index] = self._response(part, wanted)
                except Exception as error:  # e.g. an output that cannot take its reshape
                    responses[index] = pb_utils.InferenceResponse(
                        error=_error(f"bad output: {type(error).__name__}: {error}", "INTERNAL")
                    )
        return responses

    def _run_single(
        self,
        member: tuple[int, dict[str, np.ndarray], list[str], int],
        responses: list[Any],
    ) -> None:
        index, feeds, wanted, _ = member
        try:
            responses[index] = self._response(self._run(feeds, wanted), wanted)
        except Exception as error:  # one bad request must not kill the model
            # onnxruntime raises InvalidArgument for bad values (e.g. an id outside an
            # embedding table): the caller's fault, so not reported as a server fault.
            code = "INVALID_ARG" if type(error).__name__ == "InvalidArgument" else "INTERNAL"
            responses[index] = pb_utils.InferenceResponse(
                error=_error(f"onnxruntime failed: {type(error).__name__}: {error}", code)
            )

    def finalize(self) -> None:
        """Releases the onnxruntime session."""
        self.session = None
