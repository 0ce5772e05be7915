"""Score aggregation at serving time: relevance, freshness, MMR, top-k (numpy only).

The steps are :mod:`recsys.runtime.aggregation`'s, the ones the offline
``TwoStageRecommender`` uses, re-exported with the serving side's settings. The
``recommend`` model runs inside Triton's python backend: this module and
``recsys.runtime.aggregation`` import numpy only (``recsys.recommend`` loads its
torch-based submodules lazily). Tests check the served lists against
``TwoStageRecommender.recommend``.

1. relevance = ``ranker_weight * z(ranker logits) + retrieval_weight * z(retrieval
   scores) + freshness_weight * 0.5 ** (age / half_life)``, z-scores over the valid
   slots of each user's candidate list;
2. maximal marginal relevance over the candidates' embeddings (``mmr_lambda = 1``:
   plain top-k by relevance, ties in list order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

# One implementation for offline evaluation and serving (re-exported here).
from recsys.runtime.aggregation import (
    DEFAULT_MMR_DEPTH,
    freshness_decay,
    id_order,
    mmr_rerank,
    relevance,
    top_k_positions,
    zscore_rows,
)

__all__ = [
    "AggregationSettings",
    "freshness_decay",
    "id_order",
    "mmr_rerank",
    "relevance",
    "top_k_positions",
    "zscore_rows",
]


@dataclass(frozen=True)
class AggregationSettings:
    """The aggregation part of ``recsys.recommend.AggregationConfig``, as served.

    Business filters (excluded genres and items) are resolved to item indices when
    the repository is built (``RecommendTables.blocked``).

    Attributes:
        ranker_weight: weight of the z-scored ranker logit.
        retrieval_weight: weight of the z-scored retrieval score.
        freshness_weight: weight of the freshness bonus.
        freshness_half_life_years: age at which the bonus halves.
        mmr_lambda: MMR trade-off in [0, 1]; 1 = relevance order.
        mmr_depth: list positions MMR picks; later ones follow in relevance order.
        exclude_seen: never recommend a user's training items.
    """

    ranker_weight: float = 1.0
    retrieval_weight: float = 0.0
    freshness_weight: float = 0.0
    freshness_half_life_years: float = 10.0
    mmr_lambda: float = 1.0
    mmr_depth: int = DEFAULT_MMR_DEPTH
    exclude_seen: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.mmr_depth < 1:
            raise ValueError(f"mmr_depth must be >= 1, got {self.mmr_depth}")
        if self.freshness_half_life_years <= 0:
            raise ValueError("freshness_half_life_years must be positive")
        if min(self.ranker_weight, self.retrieval_weight, self.freshness_weight) < 0:
            raise ValueError("score weights must be >= 0")
        if not (self.ranker_weight or self.retrieval_weight or self.freshness_weight):
            raise ValueError("every score weight is 0: nothing to rank by")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AggregationSettings:
        """From a mapping (e.g. ``asdict(AggregationConfig)``); other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
