"""Score aggregation of the two-stage recommender: from candidate scores to a top-k list.

For each user the retrieval stage returns N candidates; this module turns their
scores into the final list, in four steps that each read the config
(:class:`AggregationConfig`, config group ``recommend``):

1. **Relevance** -- a weighted sum of the ranker score and the retrieval score,
   each standardized over the user's candidate list (the two models score on
   unrelated scales; within-list z-scores make the weights mean the same for
   every user), plus a freshness bonus.
2. **Freshness** -- ``0.5 ** (age / half_life)`` of the item's age in years at
   the request time: 1 for a new item, 0.5 one half-life later; items without a
   release date get no bonus.
3. **Business filters** -- items a user has seen, items of excluded genres and
   explicitly excluded items never reach the list (:func:`blocked_items`; seen
   items are removed by the retrieval search itself).
4. **Diversity** -- maximal marginal relevance (Carbonell & Goldstein, 1998):
   greedily pick the item maximizing ``lambda * rel - (1 - lambda) * max_sim``,
   where ``rel`` is the relevance min-max scaled to [0, 1] over the list and
   ``max_sim`` the largest cosine similarity of the item's embedding to the items
   already picked. ``lambda = 1`` keeps the relevance order. MMR picks the first
   ``mmr_depth`` positions; the rest of a longer list follows in relevance order,
   so the work of a request is bounded however large its ``k`` (the greedy picks
   cost ``O(depth * N * D)`` instead of ``O(k * N * D)``).

Ties (equal relevance in top-k, equal MMR objective) go to the smaller item id
when the caller passes the candidates' ids (``tie_ids``), else to the earlier list
position. Offline evaluation and serving pass the raw item ids, so both order
exact ties the same way whatever order their candidate lists came in.

Every function works on padded ``[B, N]`` arrays whose invalid slots (``valid``
False, e.g. FAISS padding) are never picked: they come out as position ``-1``.

Example:
    >>> import numpy as np
    >>> rel = np.array([[3.0, 2.9, 1.0]])
    >>> vecs = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    >>> top_k_positions(rel, np.ones((1, 3), bool), 2).tolist()
    [[0, 1]]
    >>> mmr_rerank(rel, vecs, np.ones((1, 3), bool), 2, lam=0.5).tolist()
    [[0, 2]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from recsys.config import build

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: List positions MMR picks greedily (:func:`mmr_rerank`); deeper positions follow
#: in relevance order.
DEFAULT_MMR_DEPTH = 100

_NO_ID = np.iinfo(np.int64).max


class ScoreWeights(Protocol):
    """The weights :func:`relevance` reads (``AggregationConfig`` and the serving
    side's settings both provide them)."""

    @property
    def ranker_weight(self) -> float: ...
    @property
    def retrieval_weight(self) -> float: ...
    @property
    def freshness_weight(self) -> float: ...
    @property
    def freshness_half_life_years(self) -> float: ...


@dataclass
class AggregationConfig:
    """How candidate scores become the final list (config group ``recommend``).

    Attributes:
        ranker_weight: weight of the ranker score (z-scored over the list).
        retrieval_weight: weight of the retrieval score (z-scored over the list).
        freshness_weight: weight of the freshness bonus in [0, 1].
        freshness_half_life_years: age at which the bonus halves.
        mmr_lambda: MMR trade-off in [0, 1]; 1 disables diversity re-ranking.
        mmr_depth: list positions MMR picks; later positions follow in relevance
            order (bounds the work of a long list).
        exclude_seen: never recommend a user's training items.
        exclude_genres: items with any of these genres are never recommended.
        exclude_items: item ids never recommended.
    """

    ranker_weight: float = 1.0
    retrieval_weight: float = 0.0
    freshness_weight: float = 0.0
    freshness_half_life_years: float = 10.0
    mmr_lambda: float = 1.0
    mmr_depth: int = DEFAULT_MMR_DEPTH
    exclude_seen: bool = True
    exclude_genres: tuple[str, ...] = ()
    exclude_items: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        self.exclude_genres = tuple(self.exclude_genres)
        self.exclude_items = tuple(self.exclude_items)
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.mmr_depth < 1:
            raise ValueError(f"mmr_depth must be >= 1, got {self.mmr_depth}")
        if self.freshness_half_life_years <= 0:
            raise ValueError("freshness_half_life_years must be positive")
        if min(self.ranker_weight, self.retrieval_weight, self.freshness_weight) < 0:
            raise ValueError("score weights must be >= 0")

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any] | None, where: str = "recommend.aggregation"
    ) -> AggregationConfig:
        """From a config mapping (:func:`recsys.config.build`: unknown keys are errors)."""
        return build(cls, raw, where)

    def with_updates(self, **changes: Any) -> AggregationConfig:
        out = asdict(self)
        out.update(changes)
        return AggregationConfig(**out)


def zscore_rows(scores: FloatArray, valid: BoolArray) -> FloatArray:
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


def freshness_decay(age_years: FloatArray, half_life_years: float) -> FloatArray:
    """``0.5 ** (max(age, 0) / half_life)``; unknown ages (NaN) give 0.

    Example:
        >>> freshness_decay(np.array([0.0, 10.0, np.nan]), 10.0).tolist()
        [1.0, 0.5, 0.0]
    """
    age = np.asarray(age_years, dtype=np.float64)
    out = np.power(0.5, np.maximum(np.nan_to_num(age, nan=0.0), 0.0) / half_life_years)
    return np.where(np.isnan(age), 0.0, out)


def relevance(
    valid: BoolArray,
    config: ScoreWeights,
    ranker_scores: FloatArray | None = None,
    retrieval_scores: FloatArray | None = None,
    age_years: FloatArray | None = None,
) -> FloatArray:
    """Weighted relevance ``[B, N]``; ``-inf`` in invalid slots.

    Args:
        valid: ``[B, N]`` slots holding a candidate.
        config: weights.
        ranker_scores: ranker logits (needed when ``ranker_weight > 0``).
        retrieval_scores: retrieval scores (needed when ``retrieval_weight > 0``).
        age_years: item age at the request time (needed when ``freshness_weight > 0``).

    Returns:
        float64 relevance.
    """
    total = np.zeros(valid.shape, dtype=np.float64)
    terms = (
        ("ranker", config.ranker_weight, ranker_scores),
        ("retrieval", config.retrieval_weight, retrieval_scores),
    )
    used = False
    for name, weight, scores in terms:
        if weight == 0:
            continue
        if scores is None:
            raise ValueError(f"{name}_weight is {weight} but no {name} scores were given")
        total += weight * zscore_rows(np.asarray(scores, dtype=np.float64), valid)
        used = True
    if config.freshness_weight:
        if age_years is None:
            raise ValueError("freshness_weight > 0 needs the items' ages")
        total += config.freshness_weight * freshness_decay(
            age_years, config.freshness_half_life_years
        )
        used = True
    if not used:
        raise ValueError("every score weight is 0: nothing to rank by")
    return np.where(valid, total, -np.inf)


def id_order(item_ids: npt.NDArray[Any]) -> IntArray:
    """Each item's rank in the order of its raw id: the ``tie_ids`` of
    :func:`top_k_positions` and :func:`mmr_rerank` for ids of any sortable type.

    Example:
        >>> id_order(np.array(["b", "c", "a"])).tolist()
        [1, 2, 0]
    """
    order = np.argsort(np.asarray(item_ids), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    return ranks


def top_k_positions(
    scores: FloatArray, valid: BoolArray, k: int, tie_ids: IntArray | None = None
) -> IntArray:
    """Positions of the ``k`` best valid slots per row, best first.

    Args:
        scores: ``[B, N]`` relevance.
        valid: ``[B, N]`` selectable slots.
        k: list length.
        tie_ids: ``[B, N]`` item ids; equal scores go to the smaller id (None: to
            the earlier position).

    Returns:
        ``[B, k]`` positions; rows with fewer than ``k`` valid slots are padded
        with ``-1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = scores.shape[1]
    masked = np.where(valid, scores, -np.inf)
    if tie_ids is None:
        # a stable sort of the negated scores keeps equal scores in list order
        order = np.argsort(-masked, axis=1, kind="stable")[:, : min(k, n)]
    else:
        order = np.lexsort((np.asarray(tie_ids, dtype=np.int64), -masked), axis=-1)
        order = order[:, : min(k, n)]
    picked_valid = np.take_along_axis(valid, order, axis=1)
    out = np.where(picked_valid, order, -1).astype(np.int64)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out


def mmr_rerank(
    scores: FloatArray,
    vectors: npt.NDArray[np.floating[Any]],
    valid: BoolArray,
    k: int,
    lam: float,
    tie_ids: IntArray | None = None,
    depth: int | None = None,
) -> IntArray:
    """Maximal marginal relevance selection of ``k`` positions per row.

    Args:
        scores: ``[B, N]`` relevance (any scale; min-max scaled per row).
        vectors: ``[B, N, D]`` item embeddings (cosine similarity is used).
        valid: ``[B, N]`` selectable slots.
        k: list length.
        lam: 1 = relevance only, 0 = diversity only.
        tie_ids: ``[B, N]`` item ids; an exact tie of the objective goes to the
            smaller id (None: to the earlier position).
        depth: positions picked by MMR (None: all ``k``); the positions after it
            take the remaining slots in relevance order.

    Returns:
        ``[B, k]`` positions in pick order, ``-1`` padded.

    Example:
        >>> rel = np.array([[1.0, 1.0, 0.0]])
        >>> vecs = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
        >>> mmr_rerank(rel, vecs, np.ones((1, 3), bool), 3, 0.5, np.array([[9, 4, 7]])).tolist()
        [[1, 0, 2]]
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if lam == 1.0:
        return top_k_positions(scores, valid, k, tie_ids)
    b, n = scores.shape
    v = np.asarray(vectors, dtype=np.float64)
    if v.shape[:2] != (b, n):
        raise ValueError(f"vectors {v.shape} do not match scores {scores.shape}")
    ids = None if tie_ids is None else np.asarray(tie_ids, dtype=np.int64)
    if ids is not None and ids.shape != (b, n):
        raise ValueError(f"tie_ids {ids.shape} do not match scores {scores.shape}")
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
    greedy = min(k, n) if depth is None else min(k, n, depth)
    for step in range(greedy):
        objective = lam * rel - (1.0 - lam) * max_sim if step else rel.copy()
        objective[~available] = -np.inf
        if ids is None:
            pick = np.argmax(objective, axis=1)
        else:
            best = objective.max(axis=1, keepdims=True)
            pick = np.argmin(np.where(objective == best, ids, _NO_ID), axis=1)
        ok = available[rows, pick]
        out[ok, step] = pick[ok]
        available[rows[ok], pick[ok]] = False
        sim = np.einsum("bnd,bd->bn", v, v[rows, pick])
        max_sim = np.where(ok[:, None], np.maximum(max_sim, sim), max_sim)
    if greedy < min(k, n):
        rest = top_k_positions(x, available, min(k, n) - greedy, ids)
        # (a row that ran out during the greedy steps has no slot left: -1 here too)
        out[:, greedy : min(k, n)] = rest
    return out


def blocked_items(
    item_ids: npt.NDArray[Any],
    item_genres: Sequence[Sequence[str]] | None,
    config: AggregationConfig,
) -> IntArray:
    """Item indices that business filters remove for every user.

    Args:
        item_ids: original id per item index.
        item_genres: genres per item index (None: no genre information).
        config: ``exclude_genres`` and ``exclude_items``.

    Returns:
        Sorted unique item indices.

    Raises:
        ValueError: genres are excluded but the catalogue has no genres.
    """
    blocked = np.zeros(len(item_ids), dtype=bool)
    if config.exclude_genres:
        if item_genres is None:
            raise ValueError("exclude_genres is set but the catalogue has no genres")
        banned = {str(g).lower() for g in config.exclude_genres}
        blocked |= np.fromiter(
            (bool(banned.intersection(str(g).lower() for g in genres)) for genres in item_genres),
            dtype=bool,
            count=len(item_ids),
        )
    if config.exclude_items:
        blocked |= np.isin(item_ids, np.asarray(config.exclude_items))
    return np.flatnonzero(blocked).astype(np.int64)


def intra_list_diversity(topk: IntArray, item_vectors: npt.NDArray[np.floating[Any]]) -> float:
    """Mean over lists of the mean pairwise ``1 - cosine`` of the listed items.

    Args:
        topk: ``[U, k]`` item indices, ``-1`` padded.
        item_vectors: ``[n_items, D]`` embeddings.

    Returns:
        The diversity; lists with fewer than two items are left out (NaN if all are).
    """
    vecs = np.asarray(item_vectors, dtype=np.float64)
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    valid = topk >= 0
    v = np.where(valid[..., None], vecs[np.maximum(topk, 0)], 0.0)
    gram = np.einsum("ukd,ujd->ukj", v, v)
    n = valid.sum(axis=1).astype(np.float64)
    pairs = n * (n - 1)
    sim_sum = gram.sum(axis=(1, 2)) - np.einsum("ukk->u", gram)
    ok = pairs > 0
    if not ok.any():
        return float("nan")
    return float(np.mean(1.0 - sim_sum[ok] / pairs[ok]))


def genre_diversity(topk: IntArray, item_genres: Sequence[Sequence[str]]) -> float:
    """Mean over lists of the mean pairwise Jaccard distance of the items' genre sets."""
    vocab = sorted({str(g) for genres in item_genres for g in genres})
    col = {g: j for j, g in enumerate(vocab)}
    onehot = np.zeros((len(item_genres), max(len(vocab), 1)), dtype=np.float64)
    for i, genres in enumerate(item_genres):
        for g in genres:
            onehot[i, col[str(g)]] = 1.0
    valid = topk >= 0
    m = np.where(valid[..., None], onehot[np.maximum(topk, 0)], 0.0)
    inter = np.einsum("ukg,ujg->ukj", m, m)
    size = m.sum(axis=2)
    union = size[:, :, None] + size[:, None, :] - inter
    dist = np.where(union > 0, 1.0 - inter / np.where(union > 0, union, 1.0), 0.0)
    pair = valid[:, :, None] & valid[:, None, :]
    diag = np.arange(topk.shape[1])
    pair[:, diag, diag] = False
    n_pairs = pair.sum(axis=(1, 2))
    ok = n_pairs > 0
    if not ok.any():
        return float("nan")
    return float(np.mean((dist * pair).sum(axis=(1, 2))[ok] / n_pairs[ok]))
