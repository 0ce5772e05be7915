"""Two-stage recommendation: retrieval candidates, a DLRM ranker, score aggregation.

* :mod:`recsys.recommend.ranker_data` -- ranker examples and features from one
  training split (:class:`RankerContext`), candidates from a FAISS index.
* :mod:`recsys.runtime.aggregation` -- weighted relevance, freshness decay,
  MMR diversity, business filters, diversity metrics.
* :mod:`recsys.recommend.two_stage` -- the ranker model and its training, and
  :class:`TwoStageRecommender` (``recommend(users, k)``).
* :mod:`recsys.recommend.evaluate` -- the variants scored in the common harness.

Submodules load on first use, so importing the numpy-only ``aggregation`` (as the
Triton-side serving code does) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "AggregationConfig": "recsys.runtime.aggregation",
    "Candidates": "recsys.recommend.ranker_data",
    "RankerContext": "recsys.recommend.ranker_data",
    "RankerDataConfig": "recsys.recommend.ranker_data",
    "RankerExamples": "recsys.recommend.ranker_data",
    "Recommendations": "recsys.recommend.two_stage",
    "RetrievalVectors": "recsys.recommend.two_stage",
    "TrainedRanker": "recsys.recommend.two_stage",
    "TwoStageRecommender": "recsys.recommend.two_stage",
    "build_bag_ranker": "recsys.recommend.two_stage",
    "build_ranker_examples": "recsys.recommend.ranker_data",
    "mmr_rerank": "recsys.runtime.aggregation",
    "retrieve_candidates": "recsys.recommend.ranker_data",
    "train_two_stage_ranker": "recsys.recommend.two_stage",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.recommend' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
