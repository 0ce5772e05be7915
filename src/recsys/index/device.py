"""Where FAISS indexes run: GPU detection, device resolution and CPU<->GPU copies.

FAISS facts this module encodes:

* The GPU is usable only with a FAISS GPU build (``faiss-gpu*``), which has
  ``faiss.StandardGpuResources``, *and* a visible CUDA device.
* GPU indexes cannot be written: :func:`to_cpu` copies one back first.
* HNSW has no GPU implementation; it stays on the CPU.
* The classic GPU kernels return at most :data:`GPU_MAX_K` results per query.

Example:
    >>> resolve_device(Device.CPU, IndexKind.FLAT)
    <Device.CPU: 'cpu'>
"""

from __future__ import annotations

import warnings
from typing import Any

import faiss

from recsys.index.config import Device, IndexKind

# Largest k (and nprobe) the classic FAISS GPU kernels accept.
GPU_MAX_K = 2048


class GpuUnavailableError(RuntimeError):
    """``device="gpu"`` was asked for but FAISS cannot use a GPU here."""


def faiss_has_gpu_build() -> bool:
    """True when the installed FAISS was built with GPU support."""
    return hasattr(faiss, "StandardGpuResources")


def gpu_available() -> bool:
    """True when FAISS has a GPU build and sees at least one CUDA device."""
    return faiss_has_gpu_build() and faiss.get_num_gpus() > 0


def gpu_unavailable_reason() -> str:
    """Why :func:`gpu_available` is False (empty string when it is True)."""
    if not faiss_has_gpu_build():
        return (
            f"the installed FAISS {faiss.__version__} is a CPU build "
            "(no faiss.StandardGpuResources); install faiss-gpu-cu12 (requirements/gpu.txt)"
        )
    if faiss.get_num_gpus() == 0:
        return "FAISS has GPU support but sees no CUDA device (faiss.get_num_gpus() == 0)"
    return ""


def resolve_device(requested: Device, kind: IndexKind) -> Device:
    """Turns the configured device into the one the index really runs on.

    Args:
        requested: ``auto``, ``cpu`` or ``gpu`` from :class:`IndexConfig`.
        kind: the index kind; HNSW always resolves to the CPU.

    Returns:
        ``Device.CPU`` or ``Device.GPU``.

    Raises:
        GpuUnavailableError: ``gpu`` was requested and no GPU can be used.
    """
    if requested is Device.CPU:
        return Device.CPU
    if requested is Device.GPU and not gpu_available():
        raise GpuUnavailableError(f"IndexConfig.device='gpu' but {gpu_unavailable_reason()}")
    if kind is IndexKind.HNSW:
        if requested is Device.GPU:
            warnings.warn(
                "FAISS has no GPU HNSW index; the HNSW index stays on the CPU",
                UserWarning,
                stacklevel=3,
            )
        return Device.CPU
    return Device.GPU if gpu_available() else Device.CPU


def to_gpu(cpu_index: faiss.Index, gpu_id: int, kind: IndexKind) -> tuple[faiss.Index, Any]:
    """Copies a CPU index to GPU ``gpu_id``.

    Args:
        cpu_index: a trained, filled CPU index.
        gpu_id: CUDA device number.
        kind: the index kind (selects the cloner options).

    Returns:
        ``(gpu_index, resources)``; keep ``resources`` alive as long as the index.
    """
    if gpu_id >= faiss.get_num_gpus():
        raise GpuUnavailableError(f"gpu_id={gpu_id} but FAISS sees {faiss.get_num_gpus()} GPU(s)")
    resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    # For IVF-PQ, useFloat16 means float16 lookup tables, which the GPU's shared
    # memory needs for larger pq_m. For Flat and IVF-Flat it would store the vectors
    # in float16, so it stays off there and their scores match the CPU's.
    options.useFloat16 = kind is IndexKind.IVF_PQ
    try:
        gpu_index = faiss.index_cpu_to_gpu(resources, gpu_id, cpu_index, options)
    except RuntimeError as err:
        raise RuntimeError(
            f"FAISS could not copy {type(cpu_index).__name__} to GPU {gpu_id}: {err}. "
            "GPU IVF-PQ needs pq_nbits=8 and a supported pq_m (e.g. 1-4, 8, 12, 16, 20, 24, "
            "28, 32, 48, 56, 64, 96)."
        ) from err
    return gpu_index, resources


def to_cpu(index: faiss.Index, on_gpu: bool) -> faiss.Index:
    """The CPU copy of ``index`` (itself when already on the CPU), e.g. to write it."""
    return faiss.index_gpu_to_cpu(index) if on_gpu else index
