"""Top-N search over a saved :class:`~recsys.index.ItemIndex`, for Triton's python backend.

The ``retrieval`` model of the generated repository runs inside Triton's python
backend, which in NVIDIA's 24.10 container is Python 3.10 with numpy and FAISS but
neither tqdm nor the rest of the project's dependencies. :mod:`recsys.index` needs
Python 3.11 (``StrEnum``) and tqdm, so this module reads the folder that
:meth:`ItemIndex.save <recsys.index.ItemIndex.save>` writes with FAISS directly:

* ``index.faiss`` (rows ``0..N-1``), ``item_ids.npy`` (row -> item id, int64),
  ``config.json`` (kind, ``nprobe``, ``ef_search``), ``metadata.json`` (n, dim).

It answers like ``ItemIndex.search``: rows best first, FAISS's ``-1`` padding (IVF
lists too short, HNSW dead ends) is never looked up as a row but reported as
:data:`MISSING_ID` with score ``-inf`` and a per-row count of real results.

Example::

    searcher = FaissSearcher.load("repo/retrieval/1", device="cpu", threads=1)
    ids, scores, counts = searcher.search(queries, top_n=np.array([10, 50]))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MISSING_ID = int(np.iinfo(np.int64).min)
"""Item id of the padding slots of a result (same value as ``recsys.index.MISSING_INT_ID``)."""

INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.npy"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"

_GPU_MAX_K = 2048  # the classic FAISS GPU kernels return at most this many per query


class FaissSearcher:
    """Inner-product top-N over a saved ItemIndex folder, with FAISS only.

    Args:
        index: the FAISS index (rows ``0..N-1``).
        item_ids: ``[N]`` int64 item id of each row.
        on_gpu: the index was copied to a GPU (results are capped at 2048 per query).
        resources: the GPU resources to keep alive with a GPU index.
    """

    def __init__(
        self, index: Any, item_ids: np.ndarray, on_gpu: bool = False, resources: Any = None
    ) -> None:
        if int(index.ntotal) != len(item_ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(item_ids)} item ids")
        self.index = index
        self.item_ids = np.ascontiguousarray(item_ids, dtype=np.int64)
        self.on_gpu = on_gpu
        self._resources = resources

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.index.d)

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def load(
        cls, folder: str | Path, device: str = "cpu", threads: int | None = 1
    ) -> FaissSearcher:
        """Reads a folder written by ``ItemIndex.save`` (int64 item ids only).

        Args:
            folder: the folder holding ``index.faiss``, ``item_ids.npy``,
                ``config.json`` and ``metadata.json``.
            device: ``"cpu"``, or ``"gpu"`` to copy Flat/IVF indexes to GPU 0 when the
                FAISS build and the machine have one (HNSW stays on the CPU).
            threads: OpenMP threads of FAISS on the CPU (a process-wide setting); one
                per model instance keeps instances from competing for cores.

        Returns:
            The searcher.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: the files disagree, or the item ids are not integers.
        """
        import faiss  # imported here: only the retrieval model needs it

        path = Path(folder)
        missing = [
            name
            for name in (INDEX_FILE, IDS_FILE, CONFIG_FILE, METADATA_FILE)
            if not (path / name).is_file()
        ]
        if missing:
            raise FileNotFoundError(f"{path} is not a saved ItemIndex: missing {missing}")
        config = json.loads((path / CONFIG_FILE).read_text())
        metadata = json.loads((path / METADATA_FILE).read_text())
        if metadata.get("id_dtype") != "int64":
            raise ValueError(
                f"{path}: the serving index needs int64 item ids, not {metadata.get('id_dtype')}"
            )
        index = faiss.read_index(str(path / INDEX_FILE))
        ids = np.load(path / IDS_FILE, allow_pickle=False)
        if index.ntotal != metadata["n"] or len(ids) != metadata["n"] or index.d != metadata["dim"]:
            raise ValueError(
                f"{path}: inconsistent files: index {index.ntotal}x{index.d}, {len(ids)} ids, "
                f"metadata {metadata['n']}x{metadata['dim']}"
            )
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        kind = str(config.get("kind", "flat"))
        space = faiss.ParameterSpace()
        if kind in ("ivf_flat", "ivf_pq"):
            ivf = faiss.extract_index_ivf(index)
            space.set_index_parameter(index, "nprobe", min(int(config["nprobe"]), ivf.nlist))
        elif kind == "hnsw":
            space.set_index_parameter(index, "efSearch", int(config["ef_search"]))
        use_gpu = (
            device == "gpu"
            and kind != "hnsw"
            and hasattr(faiss, "StandardGpuResources")
            and faiss.get_num_gpus() > 0
        )
        if not use_gpu:
            return cls(index, ids)
        resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = kind == "ivf_pq"  # as recsys.index: float32 vectors stay exact
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, index, options)
        if kind in ("ivf_flat", "ivf_pq"):
            faiss.GpuParameterSpace().set_index_parameter(
                gpu_index, "nprobe", min(int(config["nprobe"]), _GPU_MAX_K)
            )
        return cls(gpu_index, ids, on_gpu=True, resources=resources)

    def max_results(self) -> int:
        """The most results one query can get (the catalogue; 2048 on a GPU)."""
        return min(len(self), _GPU_MAX_K) if self.on_gpu else len(self)

    def search(
        self, queries: np.ndarray, top_n: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best ``top_n[b]`` items of each query ``b``, best first.

        Args:
            queries: ``[B, D]`` float32.
            top_n: ``[B]`` positive ints; each is clamped to :meth:`max_results`.

        Returns:
            ``(item_ids [B, n], scores [B, n], counts [B])`` with ``n`` the largest
            clamped ``top_n``: row ``b`` holds ``counts[b]`` real items first, then
            padding (:data:`MISSING_ID`, score ``-inf``). ``counts[b] < top_n[b]`` only
            where an approximate index found fewer items.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        wanted = np.minimum(np.asarray(top_n, dtype=np.int64).reshape(-1), self.max_results())
        batch = len(queries)
        n = int(wanted.max(initial=0))
        if batch == 0 or n == 0:
            return (
                np.full((batch, n), MISSING_ID, dtype=np.int64),
                np.full((batch, n), -np.inf, dtype=np.float32),
                np.zeros(batch, dtype=np.int64),
            )
        scores, rows = self.index.search(queries, n)
        # FAISS pads with row -1; it must never index item_ids (that would be the last item).
        valid = (rows >= 0) & (np.arange(n)[None, :] < wanted[:, None])
        order = np.argsort(~valid, axis=1, kind="stable")  # real results first, FAISS order kept
        rows = np.take_along_axis(rows, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        valid = np.take_along_axis(valid, order, axis=1)
        ids = np.full((batch, n), MISSING_ID, dtype=np.int64)
        ids[valid] = self.item_ids[rows[valid]]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        return ids, scores, valid.sum(axis=1).astype(np.int64)
