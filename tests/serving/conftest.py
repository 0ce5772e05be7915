"""Fixtures for the serving tests: a tiny Triton model repository and one real server.

The repository (built once per session under pytest's tmp dir) holds:

* ``mlp``: a torch MLP exported to ONNX ([B, 8] fp32 -> [B, 4]),
  ``platform: "onnxruntime_onnx"``, ``max_batch_size: 64``, ``dynamic_batching {}``
  and no ``instance_group`` -- the shape of a production config;
* ``embed_sum``: an ``nn.Embedding(10, 4)`` summed over 3 INT64 ids per row, with a
  config that leaves the id count free (``dims: [-1]``): a wrong shape passes
  Triton's own checks and reaches the stand-in's per-request validation, and an
  out-of-range id makes onnxruntime's Gather fail at run time;
* ``mlp_external``: the same graph saved with external data (a folder named
  ``model.onnx``), loaded on demand;
* ``py_affine``: a python-backend model (Y = 2X + 1, plus the numpy major version it
  runs with, plus an optional DELAY_MS input to make a slow request);
* ``broken`` (``model.onnx`` is not ONNX) and ``mismatched`` (config names an input
  the graph lacks): both must fail to load, with the reason.

The shared server runs in explicit model-control mode with mlp, embed_sum and
py_affine loaded at start.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

if "serving_kit" not in sys.modules:  # tests import it by name (pytest's importlib mode)
    _spec = importlib.util.spec_from_file_location(
        "serving_kit", Path(__file__).resolve().parent / "serving_kit.py"
    )
    assert _spec is not None and _spec.loader is not None
    _kit = importlib.util.module_from_spec(_spec)
    sys.modules["serving_kit"] = _kit
    _spec.loader.exec_module(_kit)

from serving_kit import SmallTwoStage, small_two_stage

PYTRITON_INSTALLED = importlib.util.find_spec("pytriton") is not None
SKIP_REASON = (
    "nvidia-pytriton (which ships the tritonserver binary) is not installed: "
    "pip install --no-deps nvidia-pytriton==0.7.0"
)

FEATURES = 8
OUTPUTS = 4
MAX_BATCH = 64
EMBED_ROWS = 10
EMBED_IDS = 3
PRELOADED = ("mlp", "embed_sum", "py_affine")

MLP_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {in_dim} ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
dynamic_batching {{ }}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
{extra}
"""

ONE_CPU_INSTANCE = "instance_group [ { count: 1 kind: KIND_CPU } ]"

EMBED_CONFIG = """
name: "embed_sum"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "ids" data_type: TYPE_INT64 dims: [ -1 ] } ]
output [ { name: "vec" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

PY_AFFINE_CONFIG = """
name: "py_affine"
backend: "python"
max_batch_size: 8
input [
  { name: "X" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "DELAY_MS" data_type: TYPE_INT32 dims: [ 1 ] optional: true }
]
output [
  { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "NUMPY_MAJOR" data_type: TYPE_INT32 dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

# Tensor I/O through DLPack: with numpy 2, the stub's as_numpy()/Tensor(name, array)
# return zeros / empty tensors (see docs/serving.md, "numpy 2 and the python backend stub").
PY_AFFINE_MODEL = """
import ctypes
import time

import numpy as np
import triton_python_backend_utils as pb_utils

_set_name = ctypes.pythonapi.PyCapsule_SetName
_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_USED = ctypes.c_char_p(b"used_dltensor")


def _tensor(name, array):
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_name(capsule, _USED)
    return tensor


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "X"))
            delay = pb_utils.get_input_tensor_by_name(request, "DELAY_MS")
            if delay is not None:
                time.sleep(float(np.from_dlpack(delay).max()) / 1000.0)
            major = int(np.__version__.split(".")[0])
            responses.append(
                pb_utils.InferenceResponse([
                    _tensor("Y", (2.0 * x + 1.0).astype(np.float32)),
                    _tensor("NUMPY_MAJOR", np.full((x.shape[0], 1), major, dtype=np.int32)),
                ])
            )
        return responses
"""


@dataclass
class TritonTestRepo:
    """The test repository and the torch model behind its ONNX files."""

    root: Path
    onnx_path: Path
    torch_forward: Callable[[np.ndarray], np.ndarray]
    embed_onnx_path: Path


def _export_mlp(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, OUTPUTS)
    ).eval()
    with warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deprecated but exports a
        # 3-layer MLP in 0.3 s against 6 s for the dynamo exporter.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, FEATURES),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return forward


def _export_embed_sum(path: Path) -> None:
    import torch

    class EmbedSum(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Embedding(EMBED_ROWS, OUTPUTS)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.table(ids).sum(dim=1)

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            EmbedSum().eval(),
            (torch.zeros(2, EMBED_IDS, dtype=torch.int64),),
            str(path),
            dynamo=False,
            input_names=["ids"],
            output_names=["vec"],
            dynamic_axes={"ids": {0: "batch"}, "vec": {0: "batch"}},
        )


def _write_model(root: Path, name: str, config: str) -> Path:
    version_dir = root / name / "1"
    version_dir.mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(config.strip() + "\n")
    return version_dir


def build_test_repository(root: Path) -> TritonTestRepo:
    """Writes the test repository described in this module's docstring."""
    import onnx

    root.mkdir(parents=True, exist_ok=True)
    mlp_dir = _write_model(root, "mlp", MLP_CONFIG.format(name="mlp", in_dim=FEATURES, extra=""))
    onnx_path = mlp_dir / "model.onnx"
    forward = _export_mlp(onnx_path)

    embed_dir = _write_model(root, "embed_sum", EMBED_CONFIG)
    _export_embed_sum(embed_dir / "model.onnx")

    external_dir = _write_model(
        root,
        "mlp_external",
        MLP_CONFIG.format(name="mlp_external", in_dim=FEATURES, extra=ONE_CPU_INSTANCE),
    )
    (external_dir / "model.onnx").mkdir()
    onnx.save_model(
        onnx.load(str(onnx_path)),
        str(external_dir / "model.onnx" / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )

    py_dir = _write_model(root, "py_affine", PY_AFFINE_CONFIG)
    (py_dir / "model.py").write_text(PY_AFFINE_MODEL)

    broken_dir = _write_model(
        root, "broken", MLP_CONFIG.format(name="broken", in_dim=FEATURES, extra=ONE_CPU_INSTANCE)
    )
    (broken_dir / "model.onnx").write_bytes(b"this is not an ONNX protobuf")

    mismatched_dir = _write_model(
        root,
        "mismatched",
        MLP_CONFIG.format(name="mismatched", in_dim=FEATURES, extra=ONE_CPU_INSTANCE).replace(
            'name: "x"', 'name: "features"'
        ),
    )
    shutil.copy(onnx_path, mismatched_dir / "model.onnx")
    return TritonTestRepo(
        root=root,
        onnx_path=onnx_path,
        torch_forward=forward,
        embed_onnx_path=embed_dir / "model.onnx",
    )


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> TritonTestRepo:
    """The test model repository (built once per session)."""
    return build_test_repository(tmp_path_factory.mktemp("triton") / "repository")


@pytest.fixture(scope="session")
def triton_server(triton_repo: TritonTestRepo) -> Iterator[object]:
    """One real local tritonserver (explicit model control) shared by the session."""
    if not PYTRITON_INSTALLED:
        pytest.skip(SKIP_REASON)
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    config = TritonServerConfig(
        model_repository=triton_repo.root,
        model_control_mode="explicit",
        load_models=PRELOADED,
        startup_timeout_s=120,
    )
    with LocalTritonServer(config) as server:
        yield server


@pytest.fixture(scope="session")
def triton_dist() -> object:
    """The installed tritonserver build (skips when nvidia-pytriton is missing)."""
    if not PYTRITON_INSTALLED:
        pytest.skip(SKIP_REASON)
    from recsys.serving.server import find_tritonserver

    return find_tritonserver()


@pytest.fixture
def ort_forward(triton_repo: TritonTestRepo) -> Callable[[np.ndarray], np.ndarray]:
    """The exported graph run by onnxruntime in this process."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(triton_repo.onnx_path), providers=["CPUExecutionProvider"])

    def forward(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["y"], {"x": x})[0])

    return forward


# -- a small two-stage recommender on MovieLens-100K (profile tests) ---------------------------

PROFILE_COLD_USER = 1
PROFILE_N_CANDIDATES = 60


@pytest.fixture(scope="module")
def fresh_two_stage(ml100k_dir: Path) -> SmallTwoStage:
    """Real MovieLens-100K (user 1's training rows dropped: a cold user), a 8-d
    two-tower and a small DLRM, freshly initialized; the aggregation uses ranker,
    retrieval, freshness and MMR. About 5 s."""
    from recsys.runtime.aggregation import AggregationConfig

    return small_two_stage(
        ml100k_dir,
        cold_user=PROFILE_COLD_USER,
        num_candidates=PROFILE_N_CANDIDATES,
        aggregation=AggregationConfig(
            ranker_weight=1.0, retrieval_weight=0.5, freshness_weight=0.2, mmr_lambda=0.7
        ),
    )
