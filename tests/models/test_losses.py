"""Sampled softmax with logQ correction and BPR, against direct computations."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from recsys.models.losses import bpr_loss, sampled_softmax_loss


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def test_in_batch_softmax_equals_cross_entropy_of_the_score_matrix() -> None:
    u, v = _unit(5, 4, 0), _unit(5, 4, 1)
    inv_t = torch.tensor(7.0)
    expected = F.cross_entropy(u @ v.T * 7.0, torch.arange(5))
    torch.testing.assert_close(sampled_softmax_loss(u, v, inv_t), expected)


def test_logq_correction_subtracts_log_frequency_per_candidate() -> None:
    u, v = _unit(4, 3, 2), _unit(4, 3, 3)
    log_q = torch.tensor([0.0, 1.0, 2.0, 3.0])
    expected = F.cross_entropy(u @ v.T * 5.0 - log_q[None, :], torch.arange(4))
    got = sampled_softmax_loss(u, v, torch.tensor(5.0), item_log_q=log_q)
    torch.testing.assert_close(got, expected)


def test_accidental_hits_are_masked() -> None:
    u, v = _unit(3, 3, 4), _unit(3, 3, 5)
    ids = torch.tensor([10, 11, 10])  # rows 0 and 2 share a positive
    logits = u @ v.T
    logits[0, 2] = logits[2, 0] = float("-inf")
    expected = F.cross_entropy(logits, torch.arange(3))
    got = sampled_softmax_loss(u, v, torch.tensor(1.0), item_ids=ids)
    torch.testing.assert_close(got, expected)


def test_extra_negatives_join_the_softmax_and_mask_the_positive() -> None:
    u, v, n = _unit(2, 3, 6), _unit(2, 3, 7), _unit(3, 3, 8)
    ids, neg_ids = torch.tensor([1, 2]), torch.tensor([2, 5, 6])
    logits = torch.cat([u @ v.T, u @ n.T], dim=1)
    logits[1, 2] = float("-inf")  # row 1's positive (id 2) drawn as a negative
    expected = F.cross_entropy(logits, torch.arange(2))
    got = sampled_softmax_loss(u, v, torch.tensor(1.0), item_ids=ids, neg_item=n, neg_ids=neg_ids)
    torch.testing.assert_close(got, expected)


def test_bpr_is_softplus_of_the_negative_margin() -> None:
    u, p, n = _unit(6, 4, 9), _unit(6, 4, 10), _unit(6, 4, 11)
    margin = ((u * p).sum(1) - (u * n).sum(1)) * 3.0
    expected = F.softplus(-margin).mean()
    torch.testing.assert_close(bpr_loss(u, p, n, torch.tensor(3.0)), expected)
