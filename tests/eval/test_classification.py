"""Click metrics against hand computations, brute-force pair counts and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import BinaryAUROC

from recsys.eval.classification import (
    auc,
    gauc,
    logloss,
    normalized_entropy,
    prior_entropy,
)


def _pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC by definition: P(score_pos > score_neg) + 0.5 P(tie), over all pairs."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_auc_hand_examples() -> None:
    # Pairs (pos, neg): (0.35 > 0.1) yes, (0.35 > 0.4) no, 0.8 beats both -> 3/4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # A tie between a positive and a negative counts one half: (1 + 0.5 + 1 + 1) / 4.
    assert auc([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == 0.875
    assert auc([0, 1], [0.2, 0.7]) == 1.0
    assert auc([1, 0], [0.2, 0.7]) == 0.0
    assert auc([1, 0, 1, 0, 0], [3.0] * 5) == 0.5


def test_auc_matches_pair_count_and_torchmetrics_with_many_ties() -> None:
    rng = np.random.default_rng(7)
    labels = (rng.random(3000) < 0.3).astype(np.int64)
    # Rounded scores: hundreds of ties, where naive sort-based AUCs go wrong.
    scores = np.round(rng.random(3000) + 0.3 * labels, 2)
    ours = auc(labels, scores)
    assert ours == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
    reference = BinaryAUROC(thresholds=None)(torch.from_numpy(scores), torch.from_numpy(labels))
    assert ours == pytest.approx(float(reference), abs=1e-6)
    assert 0.6 < ours < 0.8


def test_auc_depends_only_on_order_and_accepts_tensors() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(500) < 0.5).astype(np.float32)
    logits = rng.normal(size=500) + labels
    probs = 1 / (1 + np.exp(-logits))
    assert auc(labels, logits) == pytest.approx(auc(labels, probs), abs=1e-12)
    assert auc(torch.from_numpy(labels), torch.from_numpy(logits)) == auc(labels, logits)
    assert auc(labels, -logits) == pytest.approx(1 - auc(labels, logits), abs=1e-12)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 1], [0.1], "differ in length"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([], [], "empty"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_auc_rejects_bad_input(labels: list, scores: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auc(labels, scores)


def test_logloss_hand_values_and_torch_bce() -> None:
    assert logloss([1, 0], [0.8, 0.2]) == pytest.approx(-math.log(0.8))
    assert logloss([1, 0, 1], [0.5, 0.5, 0.5]) == pytest.approx(math.log(2))
    rng = np.random.default_rng(3)
    y = (rng.random(1000) < 0.4).astype(np.float64)
    p = rng.uniform(0.01, 0.99, 1000)
    bce = torch.nn.functional.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(y))
    assert logloss(y, p) == pytest.approx(float(bce), rel=1e-10)


def test_logloss_clips_certain_mistakes_and_rejects_logits() -> None:
    # A confident mistake costs -log(eps) instead of infinity.
    assert logloss([1], [0.0], eps=1e-7) == pytest.approx(-math.log(1e-7))
    assert logloss([1], [1.0]) == pytest.approx(0.0, abs=1e-11)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        logloss([1, 0], [2.3, -1.0])


def test_normalized_entropy_is_one_for_the_prior_and_below_for_signal() -> None:
    labels = np.array([1, 0, 0, 0] * 50)
    assert normalized_entropy(labels, np.full(200, 0.25)) == pytest.approx(1.0)
    assert prior_entropy(0.25) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    informative = np.where(labels == 1, 0.6, 0.1)
    assert normalized_entropy(labels, informative) < 0.7
    # The prior may come from elsewhere (the training rate): NE = logloss / H(prior).
    ne = normalized_entropy(labels, np.full(200, 0.25), prior=0.5)
    assert ne == pytest.approx(logloss(labels, np.full(200, 0.25)) / math.log(2))
    with pytest.raises(ValueError, match="strictly between"):
        normalized_entropy([1, 1], [0.9, 0.9])


def test_gauc_hand_example_counts_skipped_groups() -> None:
    result = gauc(
        labels=[1, 0, 0, 1, 0, 0, 1, 1],
        scores=[0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.4, 0.6],
        groups=["a", "a", "b", "b", "b", "c", "d", "d"],
    )
    # a: AUC 1 (2 rows); b: positive 0.2 below both negatives -> 0 (3 rows);
    # c: only a negative, d: only positives -> skipped.
    assert result.value == pytest.approx((2 * 1.0 + 3 * 0.0) / 5)
    assert (result.groups_used, result.groups_skipped) == (2, 2)
    assert (result.rows_used, result.rows_skipped) == (5, 3)


def test_gauc_matches_per_group_loop_and_equals_auc_for_one_group() -> None:
    rng = np.random.default_rng(11)
    n = 4000
    groups = rng.integers(0, 300, n)
    labels = (rng.random(n) < 0.25).astype(np.int64)
    scores = np.round(rng.random(n) + 0.2 * labels, 1)  # many ties inside groups
    result = gauc(labels, scores, groups)
    num = den = 0.0
    skipped = 0
    for g in np.unique(groups):
        m = groups == g
        if labels[m].min() == labels[m].max():
            skipped += 1
            continue
        num += m.sum() * _pairwise_auc(labels[m], scores[m])
        den += m.sum()
    assert result.value == pytest.approx(num / den, abs=1e-12)
    assert result.groups_skipped == skipped > 0
    assert result.groups_used + result.groups_skipped == 300
    one = gauc(labels, scores, np.zeros(n, dtype=int))
    assert one.value == pytest.approx(auc(labels, scores), abs=1e-12)


def test_gauc_all_groups_single_class_gives_nan() -> None:
    result = gauc([1, 1, 0], [0.1, 0.2, 0.3], [1, 1, 2])
    assert math.isnan(result.value)
    assert result.groups_used == 0 and result.rows_skipped == 3
    with pytest.raises(ValueError, match="groups"):
        gauc([1, 0], [0.1, 0.2], [1])
