"""Models: non-neural baselines, the two-tower retriever and the DLRM ranker.

Models work on contiguous user and item indices and never import
:mod:`recsys.eval`; evaluation wraps them through their ``score`` functions.
"""

from recsys.models.baselines import (
    BPRConfig,
    BPRRecommender,
    BPRTrainLog,
    PopularityRecommender,
)

__all__ = ["BPRConfig", "BPRRecommender", "BPRTrainLog", "PopularityRecommender"]
