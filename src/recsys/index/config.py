"""Configuration of an approximate nearest-neighbour item index.

:class:`IndexConfig` says which FAISS index holds the item embeddings, how it is
trained and searched, and where it runs. It is a frozen dataclass that round-trips
through a plain dict (``to_dict`` / ``from_dict``), so it can come from a Hydra
YAML file and be written next to a saved index.

Example:
    >>> cfg = IndexConfig(kind="ivf_flat", nlist=1024, nprobe=32)
    >>> cfg.kind is IndexKind.IVF_FLAT
    True
    >>> IndexConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from recsys.config import build

# FAISS's k-means warns below 39 training points per centroid; fewer make poor lists.
MIN_POINTS_PER_CENTROID = 39
# Training points per centroid used when ``train_size`` is left to the index.
DEFAULT_POINTS_PER_CENTROID = 64


class IndexKind(StrEnum):
    """Which FAISS index stores the vectors."""

    FLAT = "flat"  # exact brute-force inner product (IndexFlatIP)
    IVF_FLAT = "ivf_flat"  # inverted lists of full vectors (IndexIVFFlat)
    IVF_PQ = "ivf_pq"  # inverted lists of product-quantized codes (IndexIVFPQ)
    HNSW = "hnsw"  # graph index (IndexHNSWFlat); CPU only


class Device(StrEnum):
    """Where the index is searched."""

    AUTO = "auto"  # GPU when a GPU and a FAISS GPU build are present, else CPU
    CPU = "cpu"
    GPU = "gpu"  # error if no GPU or no FAISS GPU build


class Metric(StrEnum):
    """Similarity the index ranks by. Only inner product: the two towers train on dot
    products, so L2 search would rank differently from training."""

    IP = "ip"


@dataclass(frozen=True)
class IndexConfig:
    """How an :class:`~recsys.index.ItemIndex` is built and searched.

    Attributes:
        kind (IndexKind | str): index type, one of ``flat`` (exact), ``ivf_flat``,
            ``ivf_pq``, ``hnsw``. Strings are stored as the enum member (also for
            ``metric`` and ``device``).
        metric (Metric | str): similarity; only ``ip`` (inner product, larger is
            closer). Normalize vectors beforehand to get cosine similarity.
        nlist (int | None): IVF only: number of inverted lists (k-means centroids).
            None picks :func:`auto_nlist` from the catalogue size (a power of two
            near ``4 * sqrt(N)``, e.g. 4096 for 1M items). Must not exceed the
            number of training vectors.
        nprobe (int): IVF only: lists visited per query; more is slower and more
            exact. Clamped to ``nlist`` at search time.
        pq_m (int): IVF-PQ only: sub-quantizers per vector; must divide the
            embedding dimension. Each vector is stored in ``pq_m * pq_nbits / 8``
            bytes.
        pq_nbits (int): IVF-PQ only: bits per sub-quantizer code (``2**pq_nbits``
            centroids each). FAISS GPU IVF-PQ supports 8 only.
        hnsw_m (int): HNSW only: graph neighbours per node; more is more exact and
            uses more memory.
        ef_construction (int): HNSW only: candidate list size while building;
            more builds a better graph, slower.
        ef_search (int): HNSW only: candidate list size while searching; FAISS uses
            ``max(ef_search, k)``.
        device (Device | str): ``auto``, ``cpu`` or ``gpu``. HNSW has no FAISS GPU
            version and always stays on the CPU (with a warning if ``gpu`` was
            asked for).
        gpu_id (int): CUDA device number used when on the GPU.
        train_size (int | None): IVF only: vectors sampled (without replacement,
            seeded) to train the coarse quantizer and PQ codebooks. None uses
            ``64 * nlist`` (at least ``64 * 2**pq_nbits`` for IVF-PQ), capped at N.
            Each PQ sub-quantizer's k-means uses at most 64 points per centroid.
        seed (int): seed of the training sample and of FAISS's k-means.
        num_threads (int | None): OpenMP threads FAISS uses on the CPU (a
            process-wide setting, applied at build, load and search). None keeps
            FAISS's default (all cores).
    """

    kind: IndexKind | str = IndexKind.FLAT
    metric: Metric | str = Metric.IP
    nlist: int | None = None
    nprobe: int = 16
    pq_m: int = 16
    pq_nbits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    device: Device | str = Device.AUTO
    gpu_id: int = 0
    train_size: int | None = None
    seed: int = 0
    num_threads: int | None = None

    def __post_init__(self) -> None:
        # Accept plain strings (YAML, JSON, keyword arguments); store the enum members,
        # so ``cfg.kind is IndexKind.HNSW`` holds whichever form was passed.
        for name, enum in (("kind", IndexKind), ("metric", Metric), ("device", Device)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum(value))
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in enum)
                raise ValueError(
                    f"IndexConfig.{name} must be one of {allowed}, got {value!r}"
                ) from None
        positive = {
            "nprobe": self.nprobe,
            "pq_m": self.pq_m,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
        }
        if self.nlist is not None:
            positive["nlist"] = self.nlist
        if self.train_size is not None:
            positive["train_size"] = self.train_size
        if self.num_threads is not None:
            positive["num_threads"] = self.num_threads
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"IndexConfig.{name} must be a positive int, got {value!r}")
        if not 1 <= self.pq_nbits <= 16:
            raise ValueError(f"IndexConfig.pq_nbits must be in [1, 16], got {self.pq_nbits!r}")
        if self.gpu_id < 0:
            raise ValueError(f"IndexConfig.gpu_id must be >= 0, got {self.gpu_id!r}")

    def resolved_nlist(self, n: int) -> int:
        """The number of IVF lists used for a catalogue of ``n`` vectors."""
        return self.nlist if self.nlist is not None else auto_nlist(n)

    def resolved_train_size(self, n: int) -> int:
        """How many of ``n`` vectors are sampled to train an IVF index."""
        if self.train_size is not None:
            return min(self.train_size, n)
        want = DEFAULT_POINTS_PER_CENTROID * self.resolved_nlist(n)
        if self.kind is IndexKind.IVF_PQ:
            want = max(want, DEFAULT_POINTS_PER_CENTROID * 2**self.pq_nbits)
        return min(want, n)

    def with_updates(self, **changes: Any) -> IndexConfig:
        """A copy with some fields changed (validated like the constructor)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (enums as their string values)."""
        out = asdict(self)
        for name in ("kind", "metric", "device"):
            out[name] = str(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "index") -> IndexConfig:
        """Builds a config from a mapping (:func:`recsys.config.build`: unknown keys and
        wrong types are errors naming the key under ``where``)."""
        return build(cls, data, where)


def auto_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: the power of two nearest ``4 * sqrt(n)``,
    lowered so every list gets at least 39 training points, and at least 1.

    Args:
        n: catalogue size.

    Returns:
        The list count, e.g. 4096 for 1,000,000 and 32 for 1,682.

    Example:
        >>> auto_nlist(1_000_000), auto_nlist(1682), auto_nlist(10)
        (4096, 32, 1)
    """
    if n <= 0:
        raise ValueError(f"catalogue size must be positive, got {n}")
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    while nlist > 1 and nlist * MIN_POINTS_PER_CENTROID > n:
        nlist //= 2
    return nlist
