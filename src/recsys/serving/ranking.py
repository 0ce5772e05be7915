"""Score aggregation at serving time: relevance, freshness, MMR, top-k (numpy only).

The same steps as :mod:`recsys.recommend.aggregation`, which the offline
``TwoStageRecommender`` uses. They are restated here because the ``recommend`` model
runs inside Triton's python backend, and in NVIDIA's container importing
``recsys.recommend`` would import torch (its package ``__init__`` loads the ranker
training code). This module imports numpy only and is Python-3.10-compatible; tests
check it against :mod:`recsys.recommend.aggregation` on the same inputs and the served
lists against ``TwoStageRecommender.recommend``.

1. relevance = ``ranker_weight * z(ranker logits) + retrieval_weight * z(retrieval
   scores) + freshness_weight * 0.5 ** (age / half_life)``, z-scores over the valid
   slots of each user's candidate list;
2. maximal marginal relevance over the candidates' embeddings (``mmr_lambda = 1``:
   plain top-k by relevance, ties in list order).

Example:
    >>> rel = np.array([[3.0, 2.9, 1.0]])
    >>> vecs = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    >>> mmr_rerank(rel, vecs, np.ones((1, 3), bool), 2, lam=0.5).tolist()
    [[0, 2]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


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
        exclude_seen: never recommend a user's training items.
    """

    ranker_weight: float = 1.0
    retrieval_weight: float = 0.0
    freshness_weight: float = 0.0
    freshness_half_life_years: float = 10.0
    mmr_lambda: float = 1.0
    exclude_seen: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
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


def zscore_rows(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row standardized over its valid entries; invalid entries become 0.

    Example:
        >>> zscore_rows(np.array([[1.0, 3.0, 9.0]]), np.array([[True, True, False]])).tolist()
        [[-1.0, 1.0, 0.0]]
    """
    x = np.where(valid, scores, 0.0).astype(np.float64)
    count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    mean = x.sum(axis=1, keepdims=True) / count
    var = (np.where(valid, x - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
    std = np.sqrt(var)
    z = (x - mean) / np.where(std > 1e-12, std, 1.0)
    return np.where(valid, z, 0.0)


def freshness_decay(age_years: np.ndarray, half_life_years: float) -> np.ndarray:
    """``0.5 ** (max(age, 0) / half_life)``; unknown ages (NaN) give 0.

    Example:
        >>> freshness_decay(np.array([0.0, 10.0, np.nan]), 10.0).tolist()
        [1.0, 0.5, 0.0]
    """
    age = np.asarray(age_years, dtype=np.float64)
    out = np.power(0.5, np.maximum(np.nan_to_num(age, nan=0.0), 0.0) / half_life_years)
    return np.where(np.isnan(age), 0.0, out)


def relevance(
    valid: np.ndarray,
    settings: AggregationSettings,
    ranker_scores: np.ndarray | None = None,
    retrieval_scores: np.ndarray | None = None,
    age_years: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted relevance ``[B, N]`` (float64); ``-inf`` in invalid slots.

    Args:
        valid: ``[B, N]`` slots holding a candidate.
        settings: weights.
        ranker_scores: ranker logits (needed when ``ranker_weight > 0``).
        retrieval_scores: retrieval scores (needed when ``retrieval_weight > 0``).
        age_years: item ages at the request time (needed when ``freshness_weight > 0``).
    """
    total = np.zeros(valid.shape, dtype=np.float64)
    for name, weight, scores in (
        ("ranker", settings.ranker_weight, ranker_scores),
        ("retrieval", settings.retrieval_weight, retrieval_scores),
    ):
        if weight == 0:
            continue
        if scores is None:
            raise ValueError(f"{name}_weight is {weight} but no {name} scores were given")
        total += weight * zscore_rows(np.asarray(scores, dtype=np.float64), valid)
    if settings.freshness_weight:
        if age_years is None:
            raise ValueError("freshness_weight > 0 needs the items' ages")
        total += settings.freshness_weight * freshness_decay(
            age_years, settings.freshness_half_life_years
        )
    return np.where(valid, total, -np.inf)


def top_k_positions(scores: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best valid slots per row, best first; ties keep list order.

    Rows with fewer than ``k`` valid slots are padded with ``-1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = scores.shape[1]
    masked = np.where(valid, scores, -np.inf)
    # a stable sort of the negated scores keeps equal scores in list (retrieval) order
    order = np.argsort(-masked, axis=1, kind="stable")[:, : min(k, n)]
    picked_valid = np.take_along_axis(valid, order, axis=1)
    out = np.where(picked_valid, order, -1).astype(np.int64)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out


def mmr_rerank(
    scores: np.ndarray, vectors: np.ndarray, valid: np.ndarray, k: int, lam: float
) -> np.ndarray:
    """Maximal marginal relevance selection of ``k`` positions per row.

    Args:
        scores: ``[B, N]`` relevance (min-max scaled per row).
        vectors: ``[B, N, D]`` item embeddings (cosine similarity).
        valid: ``[B, N]`` selectable slots.
        k: list length.
        lam: 1 = relevance only, 0 = diversity only.

    Returns:
        ``[B, k]`` positions in pick order, ``-1`` padded.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if lam == 1.0:
        return top_k_positions(scores, valid, k)
    b, n = scores.shape
    v = np.asarray(vectors, dtype=np.float64)
    if v.shape[:2] != (b, n):
        raise ValueError(f"vectors {v.shape} do not match scores {scores.shape}")
    v = v / np.maximum(np.linalg.norm(v, axis=2, keepdims=True), 1e-12)
    x = np.asarray(scores, dtype=np.float64)
    lo = np.where(valid, x, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, x, -np.inf).max(axis=1, keepdims=True)
    spread = np.where(np.isfinite(hi - lo) & (hi > lo), hi - lo, 1.0)
    rel = np.where(valid, (x - np.where(np.isfinite(lo), lo, 0.0)) / spread, 0.0)
    max_sim = np.zeros((b, n))
    available = valid.copy()
    rows = np.arange(b)
    out = np.full((b, k), -1, dtype=np.int64)
    for step in range(min(k, n)):
        objective = lam * rel - (1.0 - lam) * max_sim if step else rel.copy()
        objective[~available] = -np.inf
        pick = np.argmax(objective, axis=1)
        ok = available[rows, pick]
        out[ok, step] = pick[ok]
        available[rows[ok], pick[ok]] = False
        sim = np.einsum("bnd,bd->bn", v, v[rows, pick])
        max_sim = np.where(ok[:, None], np.maximum(max_sim, sim), max_sim)
    return out
