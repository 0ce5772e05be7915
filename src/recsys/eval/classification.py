"""Click-prediction metrics: AUC, log loss, normalized entropy and per-group AUC.

Every function takes 1-D array-likes (numpy arrays, lists, CPU tensors), checks
them (same length, labels 0/1, finite scores) and runs vectorized in
``O(n log n)``.

* :func:`auc` -- area under the ROC curve via the rank-sum (Mann-Whitney U)
  statistic; tied scores get their average rank, i.e. count one half.
* :func:`logloss` -- mean binary cross-entropy of probabilities.
* :func:`normalized_entropy` -- log loss divided by the entropy of the label
  prior (He et al., 2014, "Practical Lessons from Predicting Clicks on Ads at
  Facebook"): 1.0 = no better than always predicting the base rate.
* :func:`gauc` -- AUC per group (e.g. per user), averaged with weights equal to
  the groups' row counts; groups whose rows are all one class have no AUC and
  are skipped and counted.

Example:
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> round(normalized_entropy([0, 1], [0.5, 0.5]), 6)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_EPS = 1e-12


def _as_1d(name: str, values: Any, dtype: type) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensors, without importing torch here
        values = values.detach().cpu().numpy()
    array: np.ndarray = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _check_labels_scores(
    labels: Any, scores: Any, score_name: str
) -> tuple[np.ndarray, np.ndarray]:
    y = _as_1d("labels", labels, np.float64)
    s = _as_1d(score_name, scores, np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape[0]}) and {score_name} ({s.shape[0]}) differ in length")
    if y.size == 0:
        raise ValueError("no examples: labels and scores are empty")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0 or 1; {int(bad.sum())} are not, e.g. {y[bad][:3]}")
    if not np.isfinite(s).all():
        raise ValueError(f"{score_name} contain {int((~np.isfinite(s)).sum())} NaN/inf values")
    return y, s


def _average_ranks(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """1-based ranks of ``keys[order]`` (already sorted) with ties averaged, in sorted order."""
    sorted_keys = keys[order]
    n = sorted_keys.size
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], n]
    # Positions start..end-1 (0-based) share the mean rank (start + end + 1) / 2.
    return np.repeat((starts + ends + 1) / 2.0, ends - starts)


def auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve.

    Args:
        labels: 0/1 per example.
        scores: any real-valued score per example (logits or probabilities);
            only the order matters.

    Returns:
        AUC in ``[0, 1]``; a tie between a positive and a negative counts 1/2.

    Raises:
        ValueError: mismatched lengths, labels not 0/1, non-finite scores, or
            only one class present (AUC is undefined then).

    Example:
        >>> auc([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5])
        0.875
    """
    y, s = _check_labels_scores(labels, scores, "scores")
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"AUC needs both classes; got {int(n_pos)} positives, {int(n_neg)} negatives"
        )
    order = np.argsort(s, kind="mergesort")
    ranks = _average_ranks(s, order)
    rank_sum = float(ranks[y[order] == 1.0].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def logloss(labels: Any, probs: Any, eps: float = DEFAULT_EPS) -> float:
    """Mean binary cross-entropy (natural log).

    Args:
        labels: 0/1 per example.
        probs: predicted click probability per example, in ``[0, 1]``.
        eps: probabilities are clipped to ``[eps, 1 - eps]`` so that a confident
            mistake costs ``-log(eps)`` rather than infinity.

    Returns:
        ``-mean(y log p + (1 - y) log(1 - p))``.

    Raises:
        ValueError: bad labels, probabilities outside ``[0, 1]`` or non-finite.

    Example:
        >>> round(logloss([1, 0], [0.8, 0.2]), 6)
        0.223144
    """
    y, p = _check_labels_scores(labels, probs, "probs")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probs must lie in [0, 1] (pass sigmoid(logits), not logits)")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def prior_entropy(rate: float) -> float:
    """Entropy (nats) of a Bernoulli(rate): the log loss of always predicting ``rate``.

    Example:
        >>> round(prior_entropy(0.5), 6)
        0.693147
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"the label prior must be strictly between 0 and 1, got {rate}")
    return float(-(rate * np.log(rate) + (1.0 - rate) * np.log1p(-rate)))


def normalized_entropy(
    labels: Any, probs: Any, prior: float | None = None, eps: float = DEFAULT_EPS
) -> float:
    """Log loss divided by the entropy of the label prior.

    Args:
        labels: 0/1 per example.
        probs: predicted probabilities.
        prior: background click rate; defaults to the mean of ``labels``
            (He et al. use the training set's rate: pass it here to do the same).
        eps: clipping of :func:`logloss`.

    Returns:
        NE; below 1 means better than predicting the prior for every example.

    Raises:
        ValueError: as :func:`logloss`, or a prior of exactly 0 or 1.

    Example:
        >>> round(normalized_entropy([1, 0, 0, 0], [0.25] * 4), 6)
        1.0
    """
    loss = logloss(labels, probs, eps)
    rate = float(_as_1d("labels", labels, np.float64).mean()) if prior is None else float(prior)
    return loss / prior_entropy(rate)


@dataclass(frozen=True)
class GaucResult:
    """Group AUC and what it left out.

    Attributes:
        value: size-weighted mean AUC over the groups that have both classes
            (NaN if none has).
        groups_used: groups that entered the mean.
        groups_skipped: groups with a single class (no AUC defined).
        rows_used: examples in the used groups (the weights' sum).
        rows_skipped: examples in the skipped groups.
    """

    value: float
    groups_used: int
    groups_skipped: int
    rows_used: int
    rows_skipped: int


def gauc(labels: Any, scores: Any, groups: Any) -> GaucResult:
    """Per-group AUC weighted by group size (e.g. per-user AUC of a ranker).

    Args:
        labels: 0/1 per example.
        scores: score per example.
        groups: group key per example (ints or strings), e.g. user ids.

    Returns:
        A :class:`GaucResult`; ``value = sum_g n_g * AUC_g / sum_g n_g`` over groups
        with at least one positive and one negative.

    Raises:
        ValueError: as :func:`auc`, or ``groups`` of another length.

    Example:
        >>> r = gauc([1, 0, 1, 0, 1], [0.9, 0.1, 0.2, 0.8, 0.5], ["a", "a", "b", "b", "c"])
        >>> r.value, r.groups_used, r.groups_skipped, r.rows_skipped
        (0.5, 2, 1, 1)
    """
    y, s = _check_labels_scores(labels, scores, "scores")
    g = np.asarray(groups.detach().cpu().numpy() if hasattr(groups, "detach") else groups)
    if g.ndim != 1 or g.shape[0] != y.shape[0]:
        raise ValueError(f"groups must be 1-D with {y.shape[0]} entries, got shape {g.shape}")
    _, group_idx = np.unique(g, return_inverse=True)
    group_idx = group_idx.reshape(-1)
    n_groups = int(group_idx.max()) + 1
    sizes = np.bincount(group_idx, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(group_idx, weights=y, minlength=n_groups)
    n_neg = sizes - n_pos

    # Sort by (group, score); within a group a run of equal scores shares its mean rank.
    order = np.lexsort((s, group_idx))
    sorted_groups = group_idx[order]
    sorted_scores = s[order]
    n = y.size
    run_start = np.r_[
        True, (sorted_groups[1:] != sorted_groups[:-1]) | (sorted_scores[1:] != sorted_scores[:-1])
    ]
    starts = np.flatnonzero(run_start)
    ends = np.r_[starts[1:], n]
    global_ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    group_offset = np.r_[0.0, np.cumsum(sizes)[:-1]]
    ranks = global_ranks - group_offset[sorted_groups]
    pos_rank_sum = np.bincount(sorted_groups, weights=ranks * y[order], minlength=n_groups)

    valid = (n_pos > 0) & (n_neg > 0)
    aucs = (pos_rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2.0) / (
        n_pos[valid] * n_neg[valid]
    )
    weights = sizes[valid]
    value = float(np.sum(aucs * weights) / weights.sum()) if valid.any() else float("nan")
    return GaucResult(
        value=value,
        groups_used=int(valid.sum()),
        groups_skipped=int((~valid).sum()),
        rows_used=int(weights.sum()),
        rows_skipped=int(sizes[~valid].sum()),
    )
