"""Two-stage recommendation: retrieval candidates, a DLRM ranker, score aggregation.

* :mod:`recsys.recommend.ranker_data` -- ranker examples and features from one
  training split (:class:`RankerContext`), candidates from a FAISS index.
* :mod:`recsys.recommend.aggregation` -- weighted relevance, freshness decay,
  MMR diversity, business filters, diversity metrics.
* :mod:`recsys.recommend.two_stage` -- the ranker model and its training, and
  :class:`TwoStageRecommender` (``recommend(users, k)``).
* :mod:`recsys.recommend.evaluate` -- the variants scored in the common harness.
"""

from recsys.recommend.aggregation import AggregationConfig, mmr_rerank
from recsys.recommend.ranker_data import (
    Candidates,
    RankerContext,
    RankerDataConfig,
    RankerExamples,
    build_ranker_examples,
    retrieve_candidates,
)
from recsys.recommend.two_stage import (
    Recommendations,
    RetrievalVectors,
    TrainedRanker,
    TwoStageRecommender,
    build_bag_ranker,
    train_two_stage_ranker,
)

__all__ = [
    "AggregationConfig",
    "Candidates",
    "RankerContext",
    "RankerDataConfig",
    "RankerExamples",
    "Recommendations",
    "RetrievalVectors",
    "TrainedRanker",
    "TwoStageRecommender",
    "build_bag_ranker",
    "build_ranker_examples",
    "mmr_rerank",
    "retrieve_candidates",
    "train_two_stage_ranker",
]
