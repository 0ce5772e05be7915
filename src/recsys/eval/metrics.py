"""Offline top-k ranking metrics, computed on whole matrices at once.

Inputs share one index space (users ``0..U-1``, items ``0..n_items-1``):

* ``topk``: an integer matrix ``[U, K]``; row ``u`` holds user ``u``'s recommended
  items, best first. ``-1`` pads rows with fewer than ``K`` items and never counts
  as a hit.
* ``ground_truth``: the relevant (held-out) items of each user, as a
  :class:`UserItemCSR` or a dense boolean matrix ``[U, n_items]``. Relevance is
  binary. A CSR entry ``-1`` stands for a relevant item outside the catalogue
  (e.g. a test item never seen in training): it counts in ``|rel(u)|`` but can
  never be hit.

Definitions, for one user with hit indicators ``h_1..h_k`` (``h_r = 1`` when the
item at rank ``r`` is relevant) and ``R = |rel(u)|``; these follow Microsoft
Recommenders' ``python_evaluation`` so the MovieLens benchmark reproduces:

=================== ==========================================================
``precision@k``     ``sum(h) / k`` (also when fewer than k items are listed)
``recall@k``        ``sum(h) / R``
``ndcg@k``          ``DCG / IDCG``, ``DCG = sum_r h_r / log(1 + r)``, IDCG the
                    same sum over ranks ``1..min(k, R)``
``map@k``           ``sum_r h_r * P(r) / R`` with ``P(r)`` the precision at
                    rank r (Recommenders' ``map``, the benchmark's "MAP")
``capped_map@k``    ``sum_r h_r * P(r) / min(k, R)`` (Recommenders'
                    ``map_at_k``, RecBole's ``MAP@k``)
``hit_rate@k``      1 if any ``h_r`` else 0
``mrr@k``           ``1 / r`` of the first hit, 0 without a hit
``coverage@k``      distinct recommended items (top k of every row) / n_items
``novelty@k``       mean over recommended items of ``-log2 p(i)``
=================== ==========================================================

Averaging (:class:`RankingMetricsConfig.averaging`): with ``"recommenders"``,
per-user values average over users that have relevant items *and* at least one
recommendation, except NDCG, which averages over every user with relevant items
(a user without recommendations scores 0). With ``"test_users"`` every metric
averages over the users with relevant items. Users without relevant items never
count. Coverage and novelty are catalogue-level and use every row of ``topk``.

Example:
    >>> import numpy as np
    >>> topk = np.array([[3, 1, 2], [0, 2, -1]])
    >>> truth = UserItemCSR.from_pairs(users=[0, 1], items=[1, 4], n_users=2, n_items=5)
    >>> m = evaluate(topk, truth, k_values=[2])
    >>> round(m["precision@2"], 4), round(m["recall@2"], 4)
    (0.25, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

Averaging = Literal["recommenders", "test_users"]
ArrayLike = npt.ArrayLike | torch.Tensor

# Per-user metrics averaged over users; the rest are catalogue-level.
PER_USER_METRICS: tuple[str, ...] = (
    "precision",
    "recall",
    "ndcg",
    "map",
    "capped_map",
    "hit_rate",
    "mrr",
)
CATALOGUE_METRICS: tuple[str, ...] = ("coverage", "novelty")
METRIC_NAMES: tuple[str, ...] = PER_USER_METRICS + CATALOGUE_METRICS


def _as_int_array(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


@dataclass(frozen=True)
class UserItemCSR:
    """Each user's item set in compressed-row form (ground truth, or seen items).

    Row ``u`` is ``indices[indptr[u]:indptr[u + 1]]``. Entries are item indices in
    ``0..n_items-1``; ``-1`` marks an item outside the catalogue (counted as a
    relevant item that no ranking can hit; ignored when masking seen items).

    Attributes:
        indptr: int64 ``[n_users + 1]``, non-decreasing, starting at 0.
        indices: int64 ``[nnz]``.
        n_items: size of the item index space.

    Example:
        >>> csr = UserItemCSR.from_pairs([1, 0, 1], [2, 0, 1], n_users=3, n_items=4)
        >>> csr.indptr.tolist(), csr.indices.tolist()
        ([0, 1, 3, 3], [0, 1, 2])
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_items: int

    def __post_init__(self) -> None:
        indptr = _as_int_array(self.indptr, "indptr")
        indices = _as_int_array(self.indices, "indices")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        if indptr.ndim != 1 or indptr.size == 0 or indptr[0] != 0:
            raise ValueError("indptr must be 1-D, non-empty and start at 0")
        if np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must be non-decreasing")
        if indices.ndim != 1 or indptr[-1] != indices.size:
            raise ValueError(f"indptr[-1]={indptr[-1]} must equal len(indices)={indices.size}")
        if self.n_items < 0:
            raise ValueError(f"n_items must be >= 0, got {self.n_items}")
        if indices.size and (indices.min() < -1 or indices.max() >= self.n_items):
            bad = indices[(indices < -1) | (indices >= self.n_items)][:5].tolist()
            raise ValueError(f"item indices must be in [-1, {self.n_items}), got e.g. {bad}")

    @property
    def n_users(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def lengths(self) -> np.ndarray:
        """Entries per user (``-1`` entries included), int64 ``[n_users]``."""
        return np.diff(self.indptr)

    @classmethod
    def from_pairs(
        cls, users: ArrayLike, items: ArrayLike, n_users: int, n_items: int
    ) -> UserItemCSR:
        """Builds the CSR from ``(user, item)`` pairs in any order.

        Duplicate in-catalogue pairs collapse to one (the rows are sets);
        ``-1`` items are kept one per pair, since each stands for a distinct item
        outside the catalogue.

        Args:
            users: user indices in ``0..n_users-1``.
            items: item indices in ``-1..n_items-1``.
            n_users: number of rows.
            n_items: size of the item index space.

        Returns:
            The CSR, rows sorted by item.
        """
        u = _as_int_array(users, "users").ravel()
        i = _as_int_array(items, "items").ravel()
        if u.size != i.size:
            raise ValueError(f"users ({u.size}) and items ({i.size}) differ in length")
        if u.size and (u.min() < 0 or u.max() >= n_users):
            raise ValueError(f"user indices must be in [0, {n_users})")
        order = np.lexsort((i, u))
        u, i = u[order], i[order]
        if u.size:
            dup = np.r_[False, (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (i[1:] >= 0)]
            u, i = u[~dup], i[~dup]
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        return cls(indptr=indptr, indices=i, n_items=n_items)

    @classmethod
    def from_dense(cls, matrix: ArrayLike) -> UserItemCSR:
        """Builds the CSR from a boolean (or 0/1) matrix ``[n_users, n_items]``."""
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu().numpy()
        dense = np.asarray(matrix)
        if dense.ndim != 2:
            raise ValueError(f"relevance matrix must be 2-D, got shape {dense.shape}")
        users, items = np.nonzero(dense)
        return cls.from_pairs(users, items, n_users=dense.shape[0], n_items=dense.shape[1])

    def gather(self, users: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """All entries of the given users, flattened.

        Args:
            users: user indices (any order, repeats allowed).

        Returns:
            ``(row, item)``: ``row[j]`` is the position in ``users`` that entry
            ``item[j]`` belongs to.
        """
        u = _as_int_array(users, "users").ravel()
        if u.size and (u.min() < 0 or u.max() >= self.n_users):
            raise ValueError(f"user indices must be in [0, {self.n_users})")
        starts = self.indptr[u]
        lens = self.indptr[u + 1] - starts
        row = np.repeat(np.arange(u.size, dtype=np.int64), lens)
        # position of each output entry inside its user's run, then offset by the run start
        within = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(lens) - lens, lens
        )
        return row, self.indices[np.repeat(starts, lens) + within]

    def rows(self, users: ArrayLike) -> UserItemCSR:
        """The sub-CSR whose row ``j`` is row ``users[j]`` of this one."""
        u = _as_int_array(users, "users").ravel()
        row, items = self.gather(u)
        indptr = np.zeros(u.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=u.size), out=indptr[1:])
        return UserItemCSR(indptr=indptr, indices=items, n_items=self.n_items)

    def to_dense(self) -> np.ndarray:
        """Boolean ``[n_users, n_items]``; ``-1`` entries are dropped."""
        out = np.zeros((self.n_users, self.n_items), dtype=bool)
        row = np.repeat(np.arange(self.n_users), self.lengths())
        keep = self.indices >= 0
        out[row[keep], self.indices[keep]] = True
        return out

    def keys(self) -> np.ndarray:
        """Sorted ``user * n_items + item`` of the in-catalogue entries."""
        row = np.repeat(np.arange(self.n_users, dtype=np.int64), self.lengths())
        keep = self.indices >= 0
        return np.sort(row[keep] * self.n_items + self.indices[keep])


GroundTruth = UserItemCSR | np.ndarray | torch.Tensor


def _as_csr(ground_truth: GroundTruth) -> UserItemCSR:
    if isinstance(ground_truth, UserItemCSR):
        return ground_truth
    return UserItemCSR.from_dense(ground_truth)


def _check_topk(topk: ArrayLike, n_items: int) -> np.ndarray:
    rec = _as_int_array(topk, "topk")
    if rec.ndim != 2:
        raise ValueError(f"topk must be 2-D [users, k], got shape {rec.shape}")
    if rec.size and (rec.min() < -1 or rec.max() >= n_items):
        raise ValueError(f"topk entries must be in [-1, {n_items}) (-1 = padding)")
    if rec.shape[1] > 1:
        # a repeated item would be counted as several hits
        srt = np.sort(rec, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if dup.any():
            row = int(np.flatnonzero(dup.any(axis=1))[0])
            raise ValueError(f"topk row {row} lists an item twice: {rec[row].tolist()}")
    return rec


def _check_k(rec: np.ndarray, k: int | None) -> int:
    if k is None:
        return int(rec.shape[1])
    if k < 1 or k > rec.shape[1]:
        raise ValueError(f"k={k} must be in [1, {rec.shape[1]}] (the width of topk)")
    return int(k)


def hit_matrix(topk: ArrayLike, ground_truth: GroundTruth) -> np.ndarray:
    """Which recommended items are relevant.

    Args:
        topk: int ``[U, K]``, ``-1`` padded.
        ground_truth: relevant items of the same ``U`` users.

    Returns:
        bool ``[U, K]``; ``True`` where ``topk[u, r]`` is in ``rel(u)``.
    """
    truth = _as_csr(ground_truth)
    rec = _check_topk(topk, truth.n_items)
    if rec.shape[0] != truth.n_users:
        raise ValueError(
            f"topk has {rec.shape[0]} rows but the ground truth has {truth.n_users} users"
        )
    keys = truth.keys()
    if keys.size == 0:
        return np.zeros(rec.shape, dtype=bool)
    query = np.arange(rec.shape[0], dtype=np.int64)[:, None] * truth.n_items + rec
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return (rec >= 0) & (keys[pos] == query)


def _discounts(k: int) -> np.ndarray:
    # 1 / log(1 + r); the log base cancels in DCG / IDCG
    return 1.0 / np.log(np.arange(2, k + 2, dtype=np.float64))


def per_user_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Every per-user metric at cut-off ``k`` (definitions in the module docstring).

    Args:
        hits: bool ``[U, K]`` from :func:`hit_matrix`, ``K >= k``.
        n_relevant: ``|rel(u)|`` per user, int ``[U]``.
        k: cut-off.

    Returns:
        ``{name: float64 [U]}`` for :data:`PER_USER_METRICS`; ``NaN`` for users
        without relevant items (undefined there).
    """
    if k < 1 or k > hits.shape[1]:
        raise ValueError(f"k={k} must be in [1, {hits.shape[1]}] (the width of topk)")
    h = hits[:, :k].astype(np.float64)
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    defined = n_rel > 0
    safe_rel = np.where(defined, n_rel, 1.0)
    n_hit = h.sum(axis=1)
    ranks = np.arange(1, k + 1, dtype=np.float64)

    disc = _discounts(k)
    ideal = np.cumsum(disc)[np.clip(safe_rel, 1, k).astype(np.int64) - 1]
    ap_sum = (h * np.cumsum(h, axis=1) / ranks).sum(axis=1)
    first = np.argmax(h > 0, axis=1)

    out = {
        "precision": n_hit / k,
        "recall": n_hit / safe_rel,
        "ndcg": (h @ disc) / ideal,
        "map": ap_sum / safe_rel,
        "capped_map": ap_sum / np.minimum(safe_rel, k),
        "hit_rate": (n_hit > 0).astype(np.float64),
        "mrr": np.where(n_hit > 0, 1.0 / (first + 1.0), 0.0),
    }
    return {name: np.where(defined, v, np.nan) for name, v in out.items()}


def _user_masks(rec: np.ndarray, n_rel: np.ndarray, averaging: Averaging) -> dict[str, np.ndarray]:
    in_test = n_rel > 0
    if averaging == "test_users":
        return dict.fromkeys(PER_USER_METRICS, in_test)
    if averaging != "recommenders":
        raise ValueError(f"averaging must be 'recommenders' or 'test_users', got {averaging!r}")
    common = in_test & (rec >= 0).any(axis=1)
    masks = dict.fromkeys(PER_USER_METRICS, common)
    masks["ndcg"] = in_test
    return masks


def _mean_over(values: np.ndarray, mask: np.ndarray, name: str) -> float:
    if not mask.any():
        raise ValueError(f"no user qualifies for averaging {name}: no relevant items at all?")
    # NaN-free under the mask: every masked user has relevant items
    return float(values[mask].mean())


def _single(
    name: str, topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging
) -> float:
    truth = _as_csr(ground_truth)
    hits = hit_matrix(topk, truth)
    rec = _as_int_array(topk, "topk")
    n_rel = truth.lengths()
    values = per_user_metrics(hits, n_rel, k)[name]
    return _mean_over(values, _user_masks(rec, n_rel, averaging)[name], name)


def precision_at_k(
    topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging = "recommenders"
) -> float:
    """Mean of ``hits@k / k``.

    Args:
        topk: int ``[U, K]`` recommended items, ``-1`` padded.
        ground_truth: relevant items of the same users.
        k: cut-off, at most ``K``.
        averaging: user set averaged over (module docstring).

    Returns:
        Precision@k.
    """
    return _single("precision", topk, ground_truth, k, averaging)


def recall_at_k(
    topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging = "recommenders"
) -> float:
    """Mean of ``hits@k / |rel(u)|``. Arguments as :func:`precision_at_k`."""
    return _single("recall", topk, ground_truth, k, averaging)


def ndcg_at_k(
    topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging = "recommenders"
) -> float:
    """Mean binary NDCG@k: ``sum_r h_r/log(1+r)`` over its ideal for ``min(k, |rel|)`` hits.

    Arguments as :func:`precision_at_k`; with ``"recommenders"`` averaging, NDCG
    averages over every user with relevant items.
    """
    return _single("ndcg", topk, ground_truth, k, averaging)


def map_at_k(
    topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging = "recommenders"
) -> float:
    """Recommenders' ``map``: ``sum_r h_r * P(r) / |rel(u)|`` over the top k, averaged.

    The denominator is the full ``|rel(u)|``, so a user with 40 test items and
    a perfect top 10 scores 0.25. This is the "MAP" of the Recommenders MovieLens
    benchmark. Arguments as :func:`precision_at_k`.
    """
    return _single("map", topk, ground_truth, k, averaging)


def capped_map_at_k(
    topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging = "recommenders"
) -> float:
    """Standard MAP@k: ``sum_r h_r * P(r) / min(k, |rel(u)|)``, averaged.

    A perfect top k scores 1. Equals Recommenders' ``map_at_k`` and RecBole's
    ``MAP@k``. (torchmetrics' ``RetrievalMAP(top_k=k)`` divides by the number of
    hits in the top k instead.) Arguments as :func:`precision_at_k`.
    """
    return _single("capped_map", topk, ground_truth, k, averaging)


def hit_rate_at_k(
    topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging = "recommenders"
) -> float:
    """Share of users with at least one relevant item in the top k."""
    return _single("hit_rate", topk, ground_truth, k, averaging)


def mrr(
    topk: ArrayLike, ground_truth: GroundTruth, k: int, averaging: Averaging = "recommenders"
) -> float:
    """Mean reciprocal rank of the first relevant item within the top k (0 if none)."""
    return _single("mrr", topk, ground_truth, k, averaging)


def catalogue_coverage(topk: ArrayLike, n_items: int, k: int | None = None) -> float:
    """Share of the catalogue that appears in at least one user's top k.

    Args:
        topk: int ``[U, K]``, ``-1`` padded.
        n_items: catalogue size.
        k: cut-off (default ``K``).

    Returns:
        ``|distinct items in topk[:, :k]| / n_items``.
    """
    rec = _check_topk(topk, n_items)
    k = _check_k(rec, k)
    shown = rec[:, :k]
    return float(np.unique(shown[shown >= 0]).size / n_items)


def novelty(
    topk: ArrayLike,
    item_popularity: ArrayLike,
    k: int | None = None,
    denominator: float | None = None,
) -> float:
    """Mean self-information ``-log2 p(i)`` of the recommended items.

    ``p(i) = max(item_popularity[i], 1) / denominator``: an item never seen
    counts as seen once, so the value stays finite. With interaction counts and
    the default denominator (their sum), ``p`` is the item's share of all
    interactions; with distinct-user counts and ``denominator=n_users`` it is
    the share of users who interacted (Recommenders' ``novelty``).

    Args:
        topk: int ``[U, K]``, ``-1`` padded.
        item_popularity: non-negative ``[n_items]`` counts (e.g. train counts).
        k: cut-off (default ``K``).
        denominator: normaliser of the counts (default their sum).

    Returns:
        Mean over every listed (non-padding) entry of the top k, in bits.
    """
    pop = np.asarray(
        item_popularity.detach().cpu().numpy()
        if isinstance(item_popularity, torch.Tensor)
        else item_popularity,
        dtype=np.float64,
    )
    if pop.ndim != 1 or (pop < 0).any():
        raise ValueError("item_popularity must be a 1-D array of non-negative counts")
    rec = _check_topk(topk, pop.size)
    k = _check_k(rec, k)
    shown = rec[:, :k]
    shown = shown[shown >= 0]
    if shown.size == 0:
        raise ValueError("topk lists no item: novelty is undefined")
    total = float(pop.sum()) if denominator is None else float(denominator)
    if total <= 0:
        raise ValueError("the popularity denominator must be positive")
    return float(np.mean(-np.log2(np.maximum(pop[shown], 1.0) / total)))


@dataclass(frozen=True)
class RankingMetricsConfig:
    """What :func:`evaluate` computes (config group ``eval``).

    Attributes:
        k_values: cut-offs; every metric is reported at each, as ``"name@k"``.
        metrics: names from :data:`METRIC_NAMES`; ``None`` = all the inputs
            allow (``novelty`` only when item popularity is given).
        averaging: ``"recommenders"`` (P/R/MAP over users with test items and
            recommendations, NDCG over all users with test items) or
            ``"test_users"`` (everything over users with test items).
        novelty_denominator: normaliser of the popularity counts in
            :func:`novelty`; ``None`` = their sum.
    """

    k_values: tuple[int, ...] = (10,)
    metrics: tuple[str, ...] | None = None
    averaging: Averaging = "recommenders"
    novelty_denominator: float | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.k_values or any(int(k) < 1 for k in self.k_values):
            raise ValueError(f"k_values must be positive integers, got {self.k_values}")
        if self.metrics is not None:
            unknown = sorted(set(self.metrics) - set(METRIC_NAMES))
            if unknown:
                raise ValueError(f"unknown metrics {unknown}; known: {list(METRIC_NAMES)}")
        if self.averaging not in ("recommenders", "test_users"):
            raise ValueError(
                f"averaging must be 'recommenders' or 'test_users', got {self.averaging!r}"
            )


def evaluate(
    topk: ArrayLike,
    ground_truth: GroundTruth,
    k_values: Sequence[int] | None = None,
    item_popularity: ArrayLike | None = None,
    config: RankingMetricsConfig | None = None,
) -> dict[str, float]:
    """Every configured metric at every cut-off, from one hit matrix.

    Args:
        topk: int ``[U, K]`` recommendations, row ``u`` for user ``u`` of
            ``ground_truth``, ``-1`` padded; ``K >= max(k_values)``.
        ground_truth: relevant items per user (:class:`UserItemCSR` or a dense
            boolean ``[U, n_items]``).
        k_values: cut-offs; overrides ``config.k_values``.
        item_popularity: ``[n_items]`` counts for novelty (e.g. train counts).
        config: metric names and averaging rule (default
            :class:`RankingMetricsConfig()`).

    Returns:
        ``{"precision@10": ..., "ndcg@10": ..., ...}`` as Python floats.

    Example:
        >>> topk = np.array([[0, 1], [2, 0]])
        >>> truth = np.array([[True, False, False], [False, False, True]])
        >>> evaluate(topk, truth, k_values=[1])["hit_rate@1"]
        1.0
    """
    cfg = config or RankingMetricsConfig()
    ks = tuple(int(k) for k in (k_values if k_values is not None else cfg.k_values))
    if not ks or min(ks) < 1:
        raise ValueError(f"k_values must be positive integers, got {ks}")
    if cfg.metrics is not None:
        names = cfg.metrics
    else:
        names = PER_USER_METRICS + (
            ("coverage", "novelty") if item_popularity is not None else ("coverage",)
        )
    if "novelty" in names and item_popularity is None:
        raise ValueError("novelty needs item_popularity")

    truth = _as_csr(ground_truth)
    rec = _check_topk(topk, truth.n_items)
    for k in ks:
        _check_k(rec, k)
    hits = hit_matrix(rec, truth)
    n_rel = truth.lengths()
    masks = _user_masks(rec, n_rel, cfg.averaging)

    results: dict[str, float] = {}
    for k in ks:
        per_user = per_user_metrics(hits, n_rel, k) if set(names) & set(PER_USER_METRICS) else {}
        for name in names:
            if name in per_user:
                results[f"{name}@{k}"] = _mean_over(per_user[name], masks[name], name)
            elif name == "coverage":
                results[f"coverage@{k}"] = catalogue_coverage(rec, truth.n_items, k)
            elif name == "novelty" and item_popularity is not None:
                results[f"novelty@{k}"] = novelty(rec, item_popularity, k, cfg.novelty_denominator)
    return results
