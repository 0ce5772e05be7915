"""Retrieval losses: sampled softmax with logQ correction, and BPR.

Example:
    >>> u = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    >>> v = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    >>> loss = sampled_softmax_loss(u, v, inv_temperature=torch.tensor(10.0))
    >>> bool(loss > 0)
    True
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def sampled_softmax_loss(
    user: torch.Tensor,
    item: torch.Tensor,
    inv_temperature: torch.Tensor,
    item_ids: torch.Tensor | None = None,
    item_log_q: torch.Tensor | None = None,
    neg_item: torch.Tensor | None = None,
    neg_ids: torch.Tensor | None = None,
    neg_log_q: torch.Tensor | None = None,
    item_bias: torch.Tensor | None = None,
    neg_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over in-batch positives (and optional extra negatives).

    Row ``i``'s positive is ``item[i]``; every other in-batch item and every extra
    negative is a negative. Because popular items appear in more batches, the raw
    in-batch softmax over-penalizes them; subtracting the log of each
    candidate's expected count among the sampled candidates (logQ correction,
    Yi et al. 2019) makes the estimate consistent with the full softmax.
    Candidates carrying the row's own positive id (accidental hits) are masked.

    Args:
        user: ``[B, D]`` query embeddings.
        item: ``[B, D]`` positive item embeddings.
        inv_temperature: scalar tensor multiplying the dot products.
        item_ids: ``[B]`` ids of the positives (for the accidental-hit mask).
        item_log_q: ``[B]`` log expected count of each positive as a candidate.
        neg_item: ``[M, D]`` extra negatives shared by all rows (mixed negative
            sampling), or None.
        neg_ids: ``[M]`` ids of the extra negatives.
        neg_log_q: ``[M]`` their log expected counts.
        item_bias: ``[B]`` additive score of each positive (or None).
        neg_bias: ``[M]`` additive score of each extra negative (or None).

    Returns:
        The mean cross-entropy, a scalar.
    """
    logits = (user @ item.T) * inv_temperature
    if item_bias is not None:
        logits = logits + item_bias[None, :]
    if item_log_q is not None:
        logits = logits - item_log_q[None, :]
    batch = user.shape[0]
    eye = torch.eye(batch, dtype=torch.bool, device=user.device)
    if item_ids is not None:
        hit = (item_ids[None, :] == item_ids[:, None]) & ~eye
        logits = logits.masked_fill(hit, float("-inf"))
    if neg_item is not None:
        neg_logits = (user @ neg_item.T) * inv_temperature
        if neg_bias is not None:
            neg_logits = neg_logits + neg_bias[None, :]
        if neg_log_q is not None:
            neg_logits = neg_logits - neg_log_q[None, :]
        if item_ids is not None and neg_ids is not None:
            neg_logits = neg_logits.masked_fill(
                neg_ids[None, :] == item_ids[:, None], float("-inf")
            )
        logits = torch.cat([logits, neg_logits], dim=1)
    target = torch.arange(batch, device=user.device)
    return F.cross_entropy(logits, target)


def bpr_loss(
    user: torch.Tensor,
    pos_item: torch.Tensor,
    neg_item: torch.Tensor,
    inv_temperature: torch.Tensor,
    pos_bias: torch.Tensor | None = None,
    neg_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bayesian personalized ranking: ``-log sigmoid(s(u, pos) - s(u, neg))``.

    Args:
        user: ``[B, D]``; pos_item: ``[B, D]``; neg_item: ``[B, D]`` one sampled
            negative per row.
        inv_temperature: scalar multiplying the dot products.
        pos_bias: ``[B]`` item biases of the positives (or None).
        neg_bias: ``[B]`` item biases of the negatives (or None).

    Returns:
        The mean loss, a scalar.
    """
    diff = ((user * pos_item).sum(1) - (user * neg_item).sum(1)) * inv_temperature
    if pos_bias is not None and neg_bias is not None:
        diff = diff + pos_bias - neg_bias
    return -F.logsigmoid(diff).mean()
