"""Synthetic Criteo-shaped click logs with a known, learnable click model.

Rows come out in the same form as :func:`recsys.data.criteo.criteo_transform`:
``dense`` float32 ``[N, 13]`` already ``log1p``-transformed (0 where missing),
``sparse`` int64 ``[N, 26]`` ids in ``[0, table_size)`` with 0 = missing, and
``labels`` float32 ``[N]``. Use them for throughput benchmarks at realistic table
sizes and for tests that need a model to learn something.

How rows are drawn (all vectorized, one seeded ``numpy`` generator):

* sparse ids: for each table, a rank ``r`` with ``P(r) ~ (r + 1) ** -zipf_exponent``
  (click logs are heavy-tailed: a few ids carry most rows), mapped through a
  seeded permutation to ids in ``[1, size)``; a fraction ``sparse_missing_rate``
  of cells becomes 0 (missing).
* dense: counts ``floor(lognormal)`` per column (scales grow with the column
  index, as in Criteo's I1..I13), a fraction ``dense_missing_rate`` missing,
  then ``log1p``.
* labels: ``Bernoulli(sigmoid(logit))`` with ``logit = bias + per-id weights of
  informative_sparse features (spread evenly over the tables, small to large) +
  dense weights * standardized dense + a rank-4 interaction between two of the
  informative sparse features``; ``bias`` is solved so the mean click
  probability equals ``positive_rate``.

Example:
    >>> cfg = SyntheticCriteoConfig(rows=1000, table_sizes=(100,) * 26, seed=1)
    >>> dense, sparse, labels = generate_criteo(cfg)
    >>> dense.shape, sparse.shape, labels.shape, sparse.dtype.name
    ((1000, 13), (1000, 26), (1000,), 'int64')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 26 tables from tiny (a few values, like C6/C9) to 1M rows, spread geometrically.
DEFAULT_TABLE_SIZES: tuple[int, ...] = tuple(round(4 * 250_000 ** (i / 25)) for i in range(26))


@dataclass
class SyntheticCriteoConfig:
    """What :func:`generate_criteo` draws.

    Attributes:
        rows: number of examples.
        num_dense: dense (count) features.
        table_sizes: rows of each sparse feature's table (26 for Criteo); ids are
            drawn in ``[1, size)``, 0 means missing. Default: 4 .. 1,000,000.
        zipf_exponent: power-law exponent of id frequencies (0 = uniform).
        dense_missing_rate: fraction of dense cells missing (-> 0 after log1p).
        sparse_missing_rate: fraction of sparse cells missing (-> id 0).
        positive_rate: mean click probability (Criteo Kaggle: about 0.256).
        informative_sparse: how many sparse features carry per-id click weights
            (see :func:`informative_features` for which).
        informative_dense: how many dense features carry weights.
        id_weight_scale: std of the per-id logit weights.
        dense_weight_scale: std of the dense logit weights.
        interaction_scale: strength of the low-rank interaction between sparse
            features 0 and 1 (what the DLRM dot-product layer can model).
        seed: seed of every draw.
    """

    rows: int = 100_000
    num_dense: int = 13
    table_sizes: tuple[int, ...] = DEFAULT_TABLE_SIZES
    zipf_exponent: float = 1.05
    dense_missing_rate: float = 0.2
    sparse_missing_rate: float = 0.05
    positive_rate: float = 0.256
    informative_sparse: int = 8
    informative_dense: int = 6
    id_weight_scale: float = 1.0
    dense_weight_scale: float = 0.5
    interaction_scale: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rows < 1 or self.num_dense < 0:
            raise ValueError(
                f"need rows >= 1 and num_dense >= 0, got {self.rows}, {self.num_dense}"
            )
        if not self.table_sizes or min(self.table_sizes) < 2:
            raise ValueError(
                f"every table needs >= 2 rows (row 0 is 'missing'), got {self.table_sizes}"
            )
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        for name in ("dense_missing_rate", "sparse_missing_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.positive_rate < 1.0:
            raise ValueError(f"positive_rate must be in (0, 1), got {self.positive_rate}")
        if not 0 <= self.informative_sparse <= len(self.table_sizes):
            raise ValueError(f"informative_sparse must be in [0, {len(self.table_sizes)}]")
        if not 0 <= self.informative_dense <= self.num_dense:
            raise ValueError(f"informative_dense must be in [0, {self.num_dense}]")


def informative_features(config: SyntheticCriteoConfig) -> list[int]:
    """Indices of the sparse features whose ids move the click probability.

    Args:
        config: the generator config.

    Returns:
        ``config.informative_sparse`` distinct column indices spread evenly from
        the first table to the last (so small and large tables both matter).

    Example:
        >>> informative_features(SyntheticCriteoConfig(informative_sparse=3))
        [0, 12, 25]
    """
    k, n_sparse = config.informative_sparse, len(config.table_sizes)
    if k == 0:
        return []
    return sorted({round(float(x)) for x in np.linspace(0, n_sparse - 1, k)})


def _zipf_ids(rng: np.random.Generator, size: int, rows: int, exponent: float) -> np.ndarray:
    """``rows`` ids in ``[1, size)`` with power-law frequencies and shuffled identities."""
    n = size - 1
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(rows), side="right")
    np.minimum(ranks, n - 1, out=ranks)
    # Popular ids spread over the table instead of sitting at the smallest ids.
    return rng.permutation(n)[ranks].astype(np.int64) + 1


def _solve_bias(logit: np.ndarray, target: float) -> float:
    """The b with mean(sigmoid(logit + b)) == target (bisection; monotone in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def generate_criteo_with_probs(
    config: SyntheticCriteoConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`generate_criteo`, plus each row's true click probability.

    Args:
        config: what to draw.

    Returns:
        ``(dense, sparse, labels, probs)``; ``probs`` float64 ``[N]`` is the
        probability the labels were drawn with (the Bayes-optimal score).

    Example:
        >>> cfg = SyntheticCriteoConfig(rows=2000, table_sizes=(50,) * 26)
        >>> *_, labels, probs = generate_criteo_with_probs(cfg)
        >>> abs(float(probs.mean()) - cfg.positive_rate) < 1e-3
        True
    """
    rng = np.random.default_rng(config.seed)
    n = config.rows
    n_sparse = len(config.table_sizes)

    sparse = np.empty((n, n_sparse), dtype=np.int64)
    for j, size in enumerate(config.table_sizes):
        sparse[:, j] = _zipf_ids(rng, size, n, config.zipf_exponent)
    sparse[rng.random((n, n_sparse)) < config.sparse_missing_rate] = 0

    scales = np.linspace(0.5, 4.0, config.num_dense) if config.num_dense else np.zeros(0)
    counts = np.floor(rng.lognormal(mean=scales, sigma=1.0, size=(n, config.num_dense)))
    counts[rng.random((n, config.num_dense)) < config.dense_missing_rate] = 0.0
    dense = np.log1p(counts).astype(np.float32)

    logit = np.zeros(n, dtype=np.float64)
    informative = informative_features(config)
    for j in informative:
        table_weights = rng.normal(0.0, config.id_weight_scale, config.table_sizes[j])
        table_weights[0] = 0.0  # a missing value carries no signal
        logit += table_weights[sparse[:, j]]
    if config.informative_dense:
        cols = dense[:, : config.informative_dense].astype(np.float64)
        std = cols.std(axis=0)
        standardized = (cols - cols.mean(axis=0)) / np.where(std > 0, std, 1.0)
        logit += standardized @ rng.normal(0.0, config.dense_weight_scale, cols.shape[1])
    if len(informative) >= 2 and config.interaction_scale > 0:
        rank = 4
        a, b = informative[len(informative) // 2 - 1], informative[len(informative) // 2]
        u = rng.normal(0.0, 1.0, (config.table_sizes[a], rank))
        v = rng.normal(0.0, 1.0, (config.table_sizes[b], rank))
        u[0] = v[0] = 0.0
        pair = np.einsum("ij,ij->i", u[sparse[:, a]], v[sparse[:, b]]) / np.sqrt(rank)
        logit += config.interaction_scale * pair
    logit += _solve_bias(logit, config.positive_rate)
    probs = 1.0 / (1.0 + np.exp(-logit))
    labels = (rng.random(n) < probs).astype(np.float32)
    return dense, sparse, labels, probs


def generate_criteo(config: SyntheticCriteoConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws a Criteo-shaped data set whose clicks depend on ids and dense features.

    Args:
        config: rows, table sizes, id skew, click model and seed.

    Returns:
        ``dense`` float32 ``[N, num_dense]`` (log1p counts), ``sparse`` int64
        ``[N, len(table_sizes)]`` (0 = missing), ``labels`` float32 ``[N]`` (0/1).
        Same config (seed included) -> identical arrays.

    Example:
        >>> cfg = SyntheticCriteoConfig(rows=500, table_sizes=(20,) * 26, seed=3)
        >>> a, b = generate_criteo(cfg), generate_criteo(cfg)
        >>> all((x == y).all() for x, y in zip(a, b))
        True
    """
    dense, sparse, labels, _ = generate_criteo_with_probs(config)
    return dense, sparse, labels
