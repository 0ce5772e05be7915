"""Retrieval index: top-k items by inner product over FAISS, on the GPU when present.

Parts:

* :class:`IndexConfig` (``config.py``): index kind (``flat``, ``ivf_flat``,
  ``ivf_pq``, ``hnsw``), its parameters and the device.
* :class:`ItemIndex` (``faiss_index.py``): build from ``[N, D]`` embeddings and
  item ids, search with exclusions, save and load.
* ``device.py``: GPU detection (a FAISS GPU build *and* a CUDA device) and the
  CPU<->GPU copies. HNSW always runs on the CPU; GPU search returns at most
  :data:`GPU_MAX_K` results per query.

This package imports only numpy, faiss and the lower ``recsys`` layers.

Example:
    >>> import numpy as np
    >>> from recsys.index import IndexConfig, ItemIndex
    >>> emb = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    >>> index = ItemIndex(IndexConfig(kind="hnsw", device="cpu")).build(emb, np.arange(500))
    >>> index.search(emb[:4], k=10).item_ids.shape
    (4, 10)
"""

from recsys.index.config import Device, IndexConfig, IndexKind, Metric, auto_nlist
from recsys.index.device import (
    GPU_MAX_K,
    GpuUnavailableError,
    faiss_has_gpu_build,
    gpu_available,
    gpu_unavailable_reason,
)
from recsys.index.faiss_index import MISSING_INT_ID, MISSING_STR_ID, ItemIndex, SearchResult

__all__ = [
    "GPU_MAX_K",
    "MISSING_INT_ID",
    "MISSING_STR_ID",
    "Device",
    "GpuUnavailableError",
    "IndexConfig",
    "IndexKind",
    "ItemIndex",
    "Metric",
    "SearchResult",
    "auto_nlist",
    "faiss_has_gpu_build",
    "gpu_available",
    "gpu_unavailable_reason",
]
