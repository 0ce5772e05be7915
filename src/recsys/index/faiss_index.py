"""Top-k item retrieval by inner product over a FAISS index.

:class:`ItemIndex` stores item embeddings in a FAISS index (Flat, IVF-Flat, IVF-PQ
or HNSW, chosen by :class:`~recsys.index.config.IndexConfig`), on the GPU when one
can be used, and answers top-k queries in terms of the caller's item ids.

Design decisions:

* FAISS only ever sees row numbers ``0..N-1``; the index keeps its own
  ``row -> item id`` array. This works the same on the CPU and the GPU
  (``GpuIndexFlat`` has no ``add_with_ids``) and allows string ids.
* Results are rectangular: :class:`SearchResult` holds ``[B, k']`` arrays with
  ``k' = min(k, N)`` (and at most 2048 on the GPU) and a boolean ``valid`` mask.
  FAISS's ``-1`` padding (IVF lists too short, HNSW dead ends, exclusions) is never
  looked up as a row: such slots are ``valid=False`` with id :data:`MISSING_INT_ID`
  (int64 ids) or :data:`MISSING_STR_ID` (string ids) and score ``-inf``. Valid
  slots always come first in a row, best score first.
* Exclusions (e.g. a user's seen items) are applied by fetching
  ``k + (most excluded ids of any query that are in the catalogue)`` candidates
  and filtering, so exact search still fills ``k`` slots whenever the catalogue
  has that many items left; approximate kinds fill them as far as the probed
  lists or graph reach.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.standard_normal((100, 8)).astype(np.float32)
    >>> index = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(
    ...     emb, np.arange(1000, 1100))
    >>> res = index.search(emb[:2], k=3, exclude=[np.array([1000]), None])
    >>> res.item_ids.shape, bool(res.valid.all()), int(res.item_ids[1, 0])
    ((2, 3), True, 1001)
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from recsys.index.config import DEFAULT_POINTS_PER_CENTROID, Device, IndexConfig, IndexKind
from recsys.index.device import GPU_MAX_K, resolve_device, to_cpu, to_gpu

MISSING_INT_ID: int = int(np.iinfo(np.int64).min)
"""Id in the padding slots of a result over int64 item ids; never a valid item id."""

MISSING_STR_ID: str = ""
"""Id in the padding slots of a result over string item ids; never a valid item id."""

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.npy"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"

# Vectors added per FAISS call while building, so progress can be shown.
_ADD_CHUNK = 131_072
_MAX_EXAMPLES = 5

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[Any]  # int64, or object holding str


@dataclass(frozen=True)
class SearchResult:
    """Top-k results of a batch of queries.

    Attributes:
        item_ids: ``[B, k']`` item ids (int64, or object array of str), best first;
            padding slots hold :data:`MISSING_INT_ID` / :data:`MISSING_STR_ID`.
        scores: ``[B, k']`` float32 inner products; ``-inf`` in padding slots.
        valid: ``[B, k']`` bool, True where the slot holds a real item. The valid
            slots of each row come first.
    """

    item_ids: IdArray
    scores: FloatArray
    valid: npt.NDArray[np.bool_]

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """``[B]`` number of valid results per query."""
        return self.valid.sum(axis=1).astype(np.int64)

    def row(self, i: int) -> tuple[IdArray, FloatArray]:
        """The valid ``(item_ids, scores)`` of query ``i``, without padding."""
        n = int(self.valid[i].sum())
        return self.item_ids[i, :n], self.scores[i, :n]


class ItemIndex:
    """Inner-product top-k search over item embeddings, keyed by item id.

    Args:
        config: index kind and parameters; defaults to exact Flat search on the
            best available device.

    Example:
        >>> import numpy as np
        >>> emb = np.eye(4, dtype=np.float32)
        >>> ids = np.array(["a", "b", "c", "d"], dtype=object)
        >>> index = ItemIndex(IndexConfig(device="cpu")).build(emb, ids)
        >>> index.search(emb[2:3], k=1).item_ids.tolist()
        [['c']]
    """

    def __init__(self, config: IndexConfig | None = None) -> None:
        self._config = config if config is not None else IndexConfig()
        self._index: Any = None
        self._gpu_resources: Any = None
        self._device = Device.CPU
        self._item_ids: IdArray = np.empty(0, dtype=np.int64)
        self._sorted_ids: IdArray = np.empty(0, dtype=np.int64)
        self._sorted_rows: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._dim = 0
        self._build_seconds = 0.0

    # ------------------------------------------------------------------ properties

    @property
    def config(self) -> IndexConfig:
        """The configuration, including search parameters set later."""
        return self._config

    @property
    def device(self) -> Device:
        """Where the index runs (``cpu`` or ``gpu``), after resolving ``auto``."""
        return self._device

    @property
    def is_built(self) -> bool:
        return self._index is not None

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def item_ids(self) -> IdArray:
        """``[N]`` item id of every row, in insertion order (a copy)."""
        return self._item_ids.copy()

    @property
    def id_dtype(self) -> str:
        """``"int64"`` or ``"str"``."""
        return "str" if self._item_ids.dtype == object else "int64"

    @property
    def build_seconds(self) -> float:
        """Wall time of the last :meth:`build` (training and adding)."""
        return self._build_seconds

    @property
    def faiss_index(self) -> Any:
        """The underlying FAISS index (CPU or GPU); rows are ``0..N-1``."""
        self._require_built()
        return self._index

    def __len__(self) -> int:
        return len(self._item_ids)

    def __repr__(self) -> str:
        return (
            f"ItemIndex(kind={self._config.kind!s}, n={len(self)}, dim={self._dim}, "
            f"device={self._device.value})"
        )

    # ------------------------------------------------------------------ building

    def build(
        self,
        embeddings: npt.ArrayLike,
        item_ids: npt.ArrayLike,
        *,
        progress: bool = False,
    ) -> ItemIndex:
        """Trains (IVF kinds) and fills the index, replacing any previous content.

        Args:
            embeddings: ``[N, D]`` real-valued item embeddings (cast to float32).
            item_ids: ``[N]`` unique item ids: any integer dtype (stored as int64)
                or strings (``str`` or object array of ``str``).
            progress: show a progress bar while adding vectors.

        Returns:
            ``self``, built.

        Raises:
            ValueError: bad shapes, dtypes, non-finite values, duplicate or
                reserved ids, ``D`` not divisible by ``pq_m``, or fewer training
                vectors than ``nlist`` (or than ``2**pq_nbits`` for IVF-PQ).
            GpuUnavailableError: ``device="gpu"`` without a usable GPU.
        """
        cfg = self._config
        x = _as_matrix(embeddings, "embeddings")
        n, dim = x.shape
        ids = _as_item_ids(item_ids, n)
        if cfg.kind is IndexKind.IVF_PQ and dim % cfg.pq_m != 0:
            raise ValueError(
                f"ivf_pq needs the dimension ({dim}) to be divisible by pq_m ({cfg.pq_m})"
            )
        device = resolve_device(Device(cfg.device), IndexKind(cfg.kind))
        _apply_threads(cfg)

        start = time.perf_counter()
        index = faiss.index_factory(dim, _factory_string(cfg, n), faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            _train(index, x, cfg)
        bar = tqdm(
            total=n,
            desc=f"add {cfg.kind!s}",
            unit="vec",
            disable=not progress,
            leave=False,
        )
        with bar:
            for lo in range(0, n, _ADD_CHUNK):
                chunk = x[lo : lo + _ADD_CHUNK]
                index.add(chunk)
                bar.update(len(chunk))

        self._install(index, ids, dim, device)
        self._build_seconds = time.perf_counter() - start
        return self

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Changes search-time parameters without rebuilding.

        Args:
            nprobe: IVF lists visited per query (IVF kinds; ignored otherwise).
            ef_search: HNSW candidate list size (HNSW; ignored otherwise).
        """
        changes: dict[str, int] = {}
        if nprobe is not None:
            changes["nprobe"] = nprobe
        if ef_search is not None:
            changes["ef_search"] = ef_search
        self._config = self._config.with_updates(**changes)
        if self._index is not None:
            _set_search_params(self._index, self._config, self._device)

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries: npt.ArrayLike,
        k: int,
        exclude: Sequence[npt.ArrayLike | None] | None = None,
    ) -> SearchResult:
        """Top-``k`` items by inner product for each query.

        Args:
            queries: ``[B, D]`` real-valued query embeddings (cast to float32).
            k: results wanted per query (> 0). Clamped to the catalogue size
                ``N``, and to 2048 on the GPU (with a warning).
            exclude: None, or one entry per query: the item ids that must not be
                returned for that query (e.g. items the user has seen), or None.
                Ids not in the catalogue are ignored.

        Returns:
            A :class:`SearchResult` of shape ``[B, min(k, N)]``.

        Raises:
            ValueError: wrong shape, dtype or dimension, non-finite values, bad
                ``k``, or ``exclude`` of the wrong length or id type.
            RuntimeError: the index has not been built or loaded.
        """
        self._require_built()
        q = _as_matrix(queries, "queries", allow_empty=True)
        if q.shape[1] != self._dim:
            raise ValueError(
                f"queries have dimension {q.shape[1]} but the index holds {self._dim}-d vectors"
            )
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
            raise ValueError(f"k must be a positive int, got {k!r}")
        n = len(self._item_ids)
        batch = q.shape[0]
        k_out = min(int(k), n)
        if self._device is Device.GPU and k_out > GPU_MAX_K:
            warnings.warn(
                f"FAISS GPU search returns at most {GPU_MAX_K} results per query; "
                f"k={k} clamped to {GPU_MAX_K}",
                UserWarning,
                stacklevel=2,
            )
            k_out = GPU_MAX_K

        excluded_rows = self._excluded_rows(exclude, batch)
        most_excluded = max((len(r) for r in excluded_rows), default=0)
        k_fetch = min(n, k_out + most_excluded)
        if self._device is Device.GPU and k_fetch > GPU_MAX_K:
            warnings.warn(
                f"exclusions need {k_fetch} candidates but FAISS GPU search returns at most "
                f"{GPU_MAX_K}; rows with many exclusions may get fewer than k results",
                UserWarning,
                stacklevel=2,
            )
            k_fetch = GPU_MAX_K
        if batch == 0:
            return self._empty_result(k_out)

        _apply_threads(self._config)
        scores, rows = self._index.search(q, k_fetch)
        keep = rows >= 0
        if most_excluded:
            keep &= ~_is_excluded(rows, excluded_rows, n)

        # Move kept slots to the front of each row, keeping FAISS's score order.
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k_out]
        rows = np.take_along_axis(rows, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        valid = np.take_along_axis(keep, order, axis=1)

        ids = np.full((batch, k_out), self._missing_id(), dtype=self._item_ids.dtype)
        ids[valid] = self._item_ids[rows[valid]]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        return SearchResult(item_ids=ids, scores=scores, valid=valid)

    def rows_of(
        self, item_ids: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Row numbers of some item ids.

        Args:
            item_ids: ``[M]`` ids of the index's id type.

        Returns:
            ``(rows, found)``: ``[M]`` row numbers (0 where not found) and ``[M]``
            bool, True where the id is in the catalogue.
        """
        self._require_built()
        wanted = self._as_query_ids(item_ids, "item_ids")
        return self._lookup(wanted)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Writes the index to ``directory`` (created if needed).

        Files: ``index.faiss`` (the CPU form of the index; GPU indexes are copied
        back first), ``item_ids.npy``, ``config.json`` and ``metadata.json``
        (n, dim, kind, id dtype, FAISS and numpy versions, build time).

        Args:
            directory: target folder; existing files of these names are replaced.

        Returns:
            The folder path.
        """
        self._require_built()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(to_cpu(self._index, self._device is Device.GPU), str(out / INDEX_FILE))
        if self.id_dtype == "str":
            stored = np.asarray(self._item_ids.tolist(), dtype=str)
            # numpy's fixed-width strings drop trailing NUL characters.
            if not np.array_equal(stored.astype(object), self._item_ids):
                raise ValueError("string item ids with trailing NUL characters cannot be saved")
        else:
            stored = self._item_ids
        np.save(out / IDS_FILE, stored, allow_pickle=False)
        (out / CONFIG_FILE).write_text(json.dumps(self._config.to_dict(), indent=2) + "\n")
        metadata = {
            "format_version": FORMAT_VERSION,
            "n": len(self._item_ids),
            "dim": self._dim,
            "kind": str(self._config.kind),
            "id_dtype": self.id_dtype,
            "faiss_version": faiss.__version__,
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "built_on_device": self._device.value,
            "build_seconds": round(self._build_seconds, 3),
        }
        (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str | Device | None = None) -> ItemIndex:
        """Reads an index written by :meth:`save`.

        Args:
            directory: folder written by :meth:`save`.
            device: where to put it (``auto``, ``cpu``, ``gpu``); None keeps the
                saved config's device setting.

        Returns:
            The loaded index, ready to search.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: the files disagree (sizes, dimension, format version).
        """
        folder = Path(directory)
        missing = [
            name
            for name in (INDEX_FILE, IDS_FILE, CONFIG_FILE, METADATA_FILE)
            if not (folder / name).is_file()
        ]
        if missing:
            raise FileNotFoundError(f"{folder} is not a saved ItemIndex: missing {missing}")
        metadata = json.loads((folder / METADATA_FILE).read_text())
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder}: format_version {metadata.get('format_version')!r} is not "
                f"{FORMAT_VERSION}"
            )
        config = IndexConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        if device is not None:
            config = config.with_updates(device=device)
        if metadata.get("faiss_version") != faiss.__version__:
            warnings.warn(
                f"{folder} was written by FAISS {metadata.get('faiss_version')}, "
                f"loading with {faiss.__version__}",
                UserWarning,
                stacklevel=2,
            )
        index = faiss.read_index(str(folder / INDEX_FILE))
        ids = np.load(folder / IDS_FILE, allow_pickle=False)
        if metadata["id_dtype"] == "str":
            ids = ids.astype(object)
        problems = []
        if index.ntotal != metadata["n"] or len(ids) != metadata["n"]:
            problems.append(
                f"index holds {index.ntotal} vectors, {IDS_FILE} {len(ids)} ids, "
                f"metadata says {metadata['n']}"
            )
        if index.d != metadata["dim"]:
            problems.append(f"index dimension {index.d}, metadata says {metadata['dim']}")
        if problems:
            raise ValueError(f"{folder}: inconsistent files: " + "; ".join(problems))

        out = cls(config)
        _apply_threads(config)
        device_used = resolve_device(Device(config.device), IndexKind(config.kind))
        out._install(index, _as_item_ids(ids, len(ids)), int(index.d), device_used)
        out._build_seconds = float(metadata.get("build_seconds", 0.0))
        return out

    # ------------------------------------------------------------------ internals

    def _install(self, cpu_index: Any, ids: IdArray, dim: int, device: Device) -> None:
        _set_search_params(cpu_index, self._config, Device.CPU)
        if device is Device.GPU:
            self._index, self._gpu_resources = to_gpu(
                cpu_index, self._config.gpu_id, IndexKind(self._config.kind)
            )
            _set_search_params(self._index, self._config, Device.GPU)
        else:
            self._index, self._gpu_resources = cpu_index, None
        self._device = device
        self._item_ids = ids
        self._dim = dim
        self._sorted_rows = np.argsort(ids, kind="stable").astype(np.int64)
        self._sorted_ids = ids[self._sorted_rows]

    def _require_built(self) -> None:
        if self._index is None:
            raise RuntimeError("the ItemIndex is empty: call build() or ItemIndex.load() first")

    def _missing_id(self) -> int | str:
        return MISSING_STR_ID if self.id_dtype == "str" else MISSING_INT_ID

    def _empty_result(self, k_out: int) -> SearchResult:
        return SearchResult(
            item_ids=np.full((0, k_out), self._missing_id(), dtype=self._item_ids.dtype),
            scores=np.empty((0, k_out), dtype=np.float32),
            valid=np.empty((0, k_out), dtype=bool),
        )

    def _lookup(self, wanted: IdArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        n = len(self._sorted_ids)
        pos = np.searchsorted(self._sorted_ids, wanted)
        pos_clipped = np.minimum(pos, n - 1)
        found = (pos < n) & (self._sorted_ids[pos_clipped] == wanted)
        rows = np.where(found, self._sorted_rows[pos_clipped], 0).astype(np.int64)
        return rows, np.asarray(found, dtype=bool)

    def _as_query_ids(self, values: npt.ArrayLike, what: str) -> IdArray:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"{what} must be a 1-d array of item ids, got shape {arr.shape}")
        if arr.size == 0:
            return np.empty(0, dtype=self._item_ids.dtype)
        if self.id_dtype == "int64":
            if arr.dtype.kind not in "iu":
                raise ValueError(
                    f"{what} must hold integer item ids like the index, got dtype {arr.dtype}"
                )
            return arr.astype(np.int64)
        if arr.dtype.kind == "U":
            return arr.astype(object)
        if arr.dtype == object and all(isinstance(v, str) for v in arr):
            return arr
        raise ValueError(f"{what} must hold string item ids like the index, got dtype {arr.dtype}")

    def _excluded_rows(
        self, exclude: Sequence[npt.ArrayLike | None] | None, batch: int
    ) -> list[npt.NDArray[np.int64]]:
        if exclude is None:
            return []
        if isinstance(exclude, np.ndarray) and exclude.ndim == 2:
            exclude = list(exclude)
        if len(exclude) != batch:
            raise ValueError(f"exclude must have one entry per query ({batch}), got {len(exclude)}")
        out = []
        for i, values in enumerate(exclude):
            if values is None:
                out.append(np.empty(0, dtype=np.int64))
                continue
            wanted = self._as_query_ids(values, f"exclude[{i}]")
            rows, found = self._lookup(wanted)
            out.append(np.unique(rows[found]))
        return out


# ---------------------------------------------------------------------- helpers


def _factory_string(cfg: IndexConfig, n: int) -> str:
    if cfg.kind is IndexKind.FLAT:
        return "Flat"
    if cfg.kind is IndexKind.HNSW:
        return f"HNSW{cfg.hnsw_m},Flat"
    nlist = cfg.resolved_nlist(n)
    if cfg.kind is IndexKind.IVF_FLAT:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{cfg.pq_m}x{cfg.pq_nbits}"


def _train(index: Any, x: FloatArray, cfg: IndexConfig) -> None:
    n = len(x)
    nlist = cfg.resolved_nlist(n)
    size = cfg.resolved_train_size(n)
    if size < nlist:
        raise ValueError(
            f"{cfg.kind!s} with nlist={nlist} needs at least {nlist} training vectors, "
            f"got {size} (catalogue {n}, train_size {cfg.train_size}); lower nlist or "
            "leave it None to derive it from the catalogue size"
        )
    if cfg.kind is IndexKind.IVF_PQ and size < 2**cfg.pq_nbits:
        raise ValueError(
            f"ivf_pq with pq_nbits={cfg.pq_nbits} needs at least {2**cfg.pq_nbits} training "
            f"vectors, got {size}; lower pq_nbits or use ivf_flat"
        )
    rng = np.random.default_rng(cfg.seed)
    sample = x if size == n else x[np.sort(rng.choice(n, size=size, replace=False))]
    ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.seed = cfg.seed
    if cfg.kind is IndexKind.IVF_PQ:
        ivf.pq.cp.seed = cfg.seed
        # FAISS samples up to 256 points per code centroid for each sub-quantizer's
        # k-means; low-dimensional k-means is memory-bound, and 64 per centroid trains
        # 3-4x faster with little loss in code quality.
        ivf.pq.cp.max_points_per_centroid = DEFAULT_POINTS_PER_CENTROID
        # index_factory turns on polysemous training, which only serves Hamming
        # pre-filtering (unused here) and dominates training time.
        ivf.do_polysemous_training = False
    index.train(np.ascontiguousarray(sample))


def _set_search_params(index: Any, cfg: IndexConfig, device: Device) -> None:
    space = faiss.GpuParameterSpace() if device is Device.GPU else faiss.ParameterSpace()
    if cfg.kind in (IndexKind.IVF_FLAT, IndexKind.IVF_PQ):
        cap = GPU_MAX_K if device is Device.GPU else index.nlist
        space.set_index_parameter(index, "nprobe", min(cfg.nprobe, index.nlist, cap))
    elif cfg.kind is IndexKind.HNSW:
        space.set_index_parameter(index, "efSearch", cfg.ef_search)


def _apply_threads(cfg: IndexConfig) -> None:
    if cfg.num_threads is not None:
        faiss.omp_set_num_threads(cfg.num_threads)


def _as_matrix(values: npt.ArrayLike, what: str, *, allow_empty: bool = False) -> FloatArray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [N, D], got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise ValueError(f"{what} must be a float array (float32 preferred), got {arr.dtype}")
    if arr.shape[1] == 0 or (arr.shape[0] == 0 and not allow_empty):
        raise ValueError(f"{what} is empty: shape {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{what} has {len(bad)} row(s) with NaN or inf (after casting to float32), "
            f"e.g. rows {bad[:_MAX_EXAMPLES].tolist()}"
        )
    return out


def _as_item_ids(values: npt.ArrayLike, n: int) -> IdArray:
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"item_ids must be a 1-d array of {n} ids, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and n and arr.max() > np.iinfo(np.int64).max:
            raise ValueError("item_ids above 2**63 - 1 do not fit int64")
        ids = arr.astype(np.int64)
        if (ids == MISSING_INT_ID).any():
            raise ValueError(
                f"item id {MISSING_INT_ID} is reserved for padding slots of search results"
            )
    elif arr.dtype.kind == "U":
        ids = arr.astype(object)
    elif arr.dtype == object:
        wrong = [i for i, v in enumerate(arr) if not isinstance(v, str)]
        if wrong:
            raise ValueError(
                f"object item_ids must all be str; {len(wrong)} are not, e.g. positions "
                f"{wrong[:_MAX_EXAMPLES]} ({[type(arr[i]).__name__ for i in wrong[:3]]})"
            )
        ids = arr
    else:
        raise ValueError(f"item_ids must be integers or strings, got dtype {arr.dtype}")
    if ids.dtype == object and (ids == MISSING_STR_ID).any():
        raise ValueError("the empty string is reserved for padding slots and cannot be an item id")
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != n:
        dups = uniq[counts > 1]
        raise ValueError(
            f"item_ids must be unique: {len(dups)} id(s) repeat, e.g. "
            f"{dups[:_MAX_EXAMPLES].tolist()}"
        )
    return ids


def _is_excluded(
    rows: npt.NDArray[np.int64], excluded_rows: list[npt.NDArray[np.int64]], n: int
) -> npt.NDArray[np.bool_]:
    """``[B, K]`` True where ``rows[b, j]`` is among query ``b``'s excluded rows."""
    # One vectorized membership test on keys (query, row) instead of a loop per query.
    offsets = np.arange(len(rows), dtype=np.int64)[:, None] * n
    keys = rows + offsets
    excluded = np.concatenate(
        [r + b * n for b, r in enumerate(excluded_rows)] or [np.empty(0, dtype=np.int64)]
    )
    return np.isin(keys, excluded) & (rows >= 0)
