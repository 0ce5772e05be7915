"""ONNX export of the TorchRec models: padded-input twins, checked exports, a manifest.

* :mod:`recsys.export.twins` -- :class:`UserTowerTwin`, :class:`ItemTowerTwin` and
  :class:`RankerTwin`: the models' functions on fixed-shape padded ids ``[B, F, L]``
  (``-1`` = padding), with copies of the trained weights.
* :mod:`recsys.export.onnx_export` -- :func:`export_onnx` (checker, no Loop or
  sequence ops, onnxruntime parity, external data, Triton layout),
  :func:`export_two_tower`, :func:`export_ranker`, :func:`time_ranker`.
* :mod:`recsys.export.manifest` -- :class:`ExportManifest` (``manifest.json``) and
  :func:`validate_request`, which serving calls before inference.

Names are imported lazily: ``from recsys.export.manifest import validate_request``
(or ``from recsys.export import validate_request``) loads numpy only, not torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.export.manifest import (
        MANIFEST_FILE,
        ExportManifest,
        ManifestError,
        ManifestMismatchError,
        ModelManifest,
        TensorSpec,
        validate_request,
    )
    from recsys.export.onnx_export import (
        DEFAULT_OPSET,
        EXTERNAL_DATA_THRESHOLD,
        ExportBundle,
        ExportError,
        ExportResult,
        RankerLatency,
        export_onnx,
        export_ranker,
        export_two_tower,
        time_ranker,
    )
    from recsys.export.twins import (
        ItemTowerTwin,
        PaddedEmbeddingBag,
        PaddedSparseArch,
        RankerTwin,
        UserTowerTwin,
        padded_to_kjt,
    )

_SOURCES: dict[str, tuple[str, ...]] = {
    "recsys.export.manifest": (
        "MANIFEST_FILE",
        "ExportManifest",
        "ManifestError",
        "ManifestMismatchError",
        "ModelManifest",
        "TensorSpec",
        "validate_request",
    ),
    "recsys.export.onnx_export": (
        "DEFAULT_OPSET",
        "EXTERNAL_DATA_THRESHOLD",
        "ExportBundle",
        "ExportError",
        "ExportResult",
        "RankerLatency",
        "export_onnx",
        "export_ranker",
        "export_two_tower",
        "ranker_twin",
        "ranker_twin",
        "time_ranker",
    ),
    "recsys.export.twins": (
        "ItemTowerTwin",
        "PaddedEmbeddingBag",
        "PaddedSparseArch",
        "RankerTwin",
        "UserTowerTwin",
        "padded_to_kjt",
    ),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "DEFAULT_OPSET",
    "EXTERNAL_DATA_THRESHOLD",
    "MANIFEST_FILE",
    "ExportBundle",
    "ExportError",
    "ExportManifest",
    "ExportResult",
    "ItemTowerTwin",
    "ManifestError",
    "ManifestMismatchError",
    "ModelManifest",
    "PaddedEmbeddingBag",
    "PaddedSparseArch",
    "RankerLatency",
    "RankerTwin",
    "TensorSpec",
    "UserTowerTwin",
    "export_onnx",
    "export_ranker",
    "export_two_tower",
    "padded_to_kjt",
    "ranker_twin",
    "time_ranker",
    "validate_request",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
