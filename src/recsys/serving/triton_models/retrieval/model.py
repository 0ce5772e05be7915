"""Triton python-backend model ``retrieval``: top-N items for query embeddings (FAISS).

Inputs (per row; ``max_batch_size`` > 0, so clients send ``[B, ...]``):

* ``query`` FP32 ``[D]``: a user-tower embedding.
* ``top_n`` INT32 ``[1]``: how many items to return (clamped to the catalogue).

Outputs:

* ``item_ids`` INT64 ``[n]``, best first; ``scores`` FP32 ``[n]`` (inner products);
* ``counts`` INT32 ``[1]``: real results in the row.

``n`` is the request's largest clamped ``top_n``. A one-row request is cut to its
real results, so it never holds padding; in a multi-row request a row with fewer real
results (approximate indexes only) is padded with id -2**63 and score -inf after its
``counts`` real items. FAISS's own ``-1`` padding is never looked up as an item.

The version folder holds the index as ``ItemIndex.save`` wrote it (``index.faiss``,
``item_ids.npy``, ``config.json``, ``metadata.json``). Requests merged by the dynamic
batcher run as one FAISS search. Imports numpy, FAISS and pure-numpy recsys modules
only, so it runs in NVIDIA's container as it is (see docs/serving.md).
"""

from __future__ import annotations

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from recsys.runtime.faiss_search import FaissSearcher
from recsys.runtime.python_backend import (
    RequestError,
    error_response,
    get_input,
    model_config,
    model_instance_device,
    output_tensor,
    string_parameter,
)


class TritonPythonModel:
    """FAISS top-N search behind Triton."""

    def initialize(self, args: dict[str, str]) -> None:
        """Loads the index of this version folder (GPU when the instance is on one)."""
        config = model_config(args)
        folder = os.path.join(args["model_repository"], args["model_version"])
        threads = int(string_parameter(config, "faiss_threads", "1"))
        self.searcher = FaissSearcher.load(
            folder, device=model_instance_device(args), threads=threads
        )
        pb_utils.Logger.log_info(
            f"retrieval: {len(self.searcher)} items, dim {self.searcher.dim}, "
            f"gpu={self.searcher.on_gpu}, from {folder}"
        )

    def _read(self, request: object) -> tuple[np.ndarray, np.ndarray]:
        query = get_input(pb_utils, request, "query")
        top_n = get_input(pb_utils, request, "top_n").reshape(-1).astype(np.int64)
        if query.ndim != 2 or query.shape[0] == 0:
            raise RequestError(f"input 'query' must be [B >= 1, D], got {list(query.shape)}")
        if query.shape[1] != self.searcher.dim:
            raise RequestError(
                f"input 'query' has dimension {query.shape[1]}; the index holds "
                f"{self.searcher.dim}-d vectors"
            )
        if len(top_n) != len(query):
            raise RequestError(f"'top_n' has {len(top_n)} rows for {len(query)} queries")
        if (top_n < 1).any():
            raise RequestError(f"'top_n' must be >= 1, got {int(top_n.min())}")
        if not np.isfinite(query).all():
            raise RequestError("input 'query' holds NaN or inf")
        return query, top_n

    def execute(self, requests: list[object]) -> list[object]:
        """One FAISS search for every valid request of the batch."""
        responses: list[object] = [None] * len(requests)
        parsed: list[tuple[int, np.ndarray, np.ndarray]] = []
        for index, request in enumerate(requests):
            try:
                query, top_n = self._read(request)
            except RequestError as error:
                responses[index] = error_response(pb_utils, error)
                continue
            parsed.append((index, query, top_n))
        if not parsed:
            return responses
        try:
            ids, scores, counts = self.searcher.search(
                np.concatenate([q for _, q, _ in parsed]),
                np.concatenate([t for _, _, t in parsed]),
            )
        except Exception as error:  # a FAISS failure fails this batch, not the model
            for index, _, _ in parsed:
                responses[index] = error_response(pb_utils, error)
            return responses
        start = 0
        for index, query, top_n in parsed:
            stop = start + len(query)
            row_counts = counts[start:stop]
            width = int(min(top_n.max(), self.searcher.max_results()))
            if len(query) == 1:
                width = int(row_counts[0])
            responses[index] = pb_utils.InferenceResponse(
                [
                    output_tensor(pb_utils, "item_ids", ids[start:stop, :width]),
                    output_tensor(pb_utils, "scores", scores[start:stop, :width]),
                    output_tensor(pb_utils, "counts", row_counts.astype(np.int32).reshape(-1, 1)),
                ]
            )
            start = stop
        return responses
