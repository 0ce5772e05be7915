"""The query side of retrieval run inside the ``recommend`` process (``retrieval_mode``).

A ``recommend`` model built with ``RepositoryConfig(retrieval_mode="inline")`` runs the
user tower (onnxruntime, CPU execution provider) and the FAISS search (CPU) in its own
process instead of calling the ``user_tower`` and ``retrieval`` models through BLS. On a
CPU server each BLS call is a round trip through Triton and a python-backend stub that
costs more than the work it carries (well under a millisecond of compute for a batch of
users); in-process, the two stages cost only their compute. The ranker stays a Triton
model (it rolls in alone and runs on TensorRT where there is a GPU).

The files sit in the ``recommend`` version folder, so one version holds the user tower,
the item vectors and the query scale of the same two-tower model:

* ``user_tower.onnx``: the exported user tower (``ids [B, F, L] int64 -> embeddings``);
* ``index/``: the FAISS index as ``ItemIndex.save`` wrote it.

This module owns that layout. It imports numpy, and onnxruntime and FAISS when the
stages are loaded, so it runs in NVIDIA's container.

Example:
    >>> RETRIEVAL_MODES
    ('models', 'inline')
    >>> stages = load_inline_stages("repo/recommend/1")  # doctest: +SKIP
    >>> queries = tables.query_vectors(stages.user_tower(ids))  # doctest: +SKIP
    >>> items, scores, counts = stages.retrieval(queries, np.array([200]))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.runtime.faiss_search import FaissSearcher

RETRIEVAL_MODES: tuple[str, ...] = ("models", "inline")
"""``models``: BLS calls to the ``user_tower`` and ``retrieval`` models; ``inline``: both
stages in the ``recommend`` process."""

USER_TOWER_FILE = "user_tower.onnx"
"""The user tower in a ``recommend`` version folder (inline retrieval)."""

INDEX_DIR = "index"
"""The FAISS index folder in a ``recommend`` version folder (inline retrieval)."""


def onnx_tower(path: str | Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """An exported tower through onnxruntime's CPU execution provider.

    Args:
        path: a tower graph with input ``ids`` (int64 ``[B, F, L]``, ``-1`` padding) and
            output ``embeddings`` (the user tower and the item tower are both such).
        threads: onnxruntime intra-op threads.

    Returns:
        ``ids -> embeddings [B, D] float32``.
    """
    import onnxruntime as ort  # imported here: only in-process towers need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["embeddings"], {"ids": ids})[0], dtype=np.float32)

    return run


@dataclass(frozen=True)
class InlineStages:
    """The user tower and the retrieval search of one ``recommend`` version, in-process.

    Attributes:
        user_tower: padded ids ``[B, F, L]`` -> embeddings ``[B, D]`` (the engine's
            ``user_tower`` call).
        retrieval: queries ``[B, D']`` and ``top_n [B]`` -> ``(item_ids, scores,
            counts)`` (the engine's ``retrieval`` call, as the ``retrieval`` model
            answers it).
        searcher: the FAISS searcher behind ``retrieval``.
    """

    user_tower: Callable[[np.ndarray], np.ndarray]
    retrieval: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    searcher: FaissSearcher


def load_inline_stages(
    folder: str | Path, *, threads: int = 1, faiss_threads: int = 1
) -> InlineStages:
    """Loads the inline stages of a ``recommend`` version folder.

    Args:
        folder: the version folder (``recommend/<v>``) holding :data:`USER_TOWER_FILE`
            and :data:`INDEX_DIR`.
        threads: onnxruntime intra-op threads of the user tower.
        faiss_threads: OpenMP threads of FAISS (a process-wide setting).

    Returns:
        An :class:`InlineStages`.

    Raises:
        FileNotFoundError: the folder lacks the tower or the index (a repository built
            with ``retrieval_mode="models"``).
    """
    path = Path(folder)
    tower = path / USER_TOWER_FILE
    if not tower.is_file():
        raise FileNotFoundError(
            f"{path} has no {USER_TOWER_FILE}: inline retrieval needs a repository built "
            "with retrieval_mode='inline'"
        )
    searcher = FaissSearcher.load(path / INDEX_DIR, device="cpu", threads=faiss_threads)

    def retrieval(
        queries: np.ndarray, top_n: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return searcher.search(queries, np.asarray(top_n, dtype=np.int64).reshape(-1))

    return InlineStages(onnx_tower(tower, threads), retrieval, searcher)
