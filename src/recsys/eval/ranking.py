"""Full-catalogue top-k ranking with seen-item exclusion, batched over users.

Every item in the catalogue is scored for each user (no candidate sampling), the
user's training items are masked to ``-inf``, and the k best remain. Ties are
broken deterministically toward the smaller item index: among equal scores the
item with the lower index ranks first, on every device and batch size. With
item indices from a sorted factorisation of the original ids, that is the
smaller original id (the rule of the Recommenders popularity baseline).

How the tie rule is enforced: ``torch.topk`` takes ``k + margin`` candidates;
they are re-ordered by a stable descending sort applied after sorting them by
index, so equal scores keep index order. If the candidate set's last score still
equals the k-th (a tie group may continue past the candidates), that row is
re-ranked with a stable sort over the whole catalogue. Results are exact, not
approximated with index-based epsilons.

Example:
    >>> import numpy as np
    >>> scores = np.array([[0.1, 0.9, 0.9, 0.5]], dtype=np.float32)
    >>> seen = UserItemCSR.from_pairs([0], [1], n_users=1, n_items=4)
    >>> items, vals = full_ranking_topk(scores, np.array([0]), k=2, exclude=seen)
    >>> items.tolist()
    [[2, 3]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.eval.metrics import UserItemCSR

ScoreMatrix = np.ndarray | torch.Tensor
ScoreFn = Callable[[np.ndarray], ScoreMatrix]

# extra candidates taken by torch.topk so that ties at the k-th place usually
# resolve without sorting the whole catalogue
_TIE_MARGIN = 32


def _to_tensor(x: ScoreMatrix, device: torch.device | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_floating_point(t):
        t = t.to(torch.float32)
    return t.to(device) if device is not None else t


def topk_smallest_index_ties(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row top k by (score descending, item index ascending).

    Args:
        scores: float ``[B, n]`` without NaN; ``-inf`` allowed.
        k: number kept, ``1 <= k <= n``.

    Returns:
        ``(values, indices)``, each ``[B, k]``, best first.

    Example:
        >>> topk_smallest_index_ties(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 2)[1].tolist()
        [[1, 2]]
    """
    n = scores.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, {n}]")
    m = min(n, k + _TIE_MARGIN)
    cand_vals, cand_idx = torch.topk(scores, m, dim=1, sorted=True)
    idx_sorted, perm = torch.sort(cand_idx, dim=1)
    vals_by_idx = torch.gather(cand_vals, 1, perm)
    order = torch.sort(vals_by_idx, dim=1, descending=True, stable=True).indices[:, :k]
    values = torch.gather(vals_by_idx, 1, order)
    indices = torch.gather(idx_sorted, 1, order)

    if m < n:
        kth = cand_vals[:, k - 1]
        # a tie group reaching past the candidates may hide a smaller index;
        # -inf rows are padding anyway
        spill = (cand_vals[:, m - 1] == kth) & torch.isfinite(kth)
        if bool(spill.any()):
            rows = torch.nonzero(spill).squeeze(1)
            full = torch.sort(scores[rows], dim=1, descending=True, stable=True)
            values[rows] = full.values[:, :k]
            indices[rows] = full.indices[:, :k]
    return values, indices


def full_ranking_topk(
    scores: ScoreFn | ScoreMatrix,
    users: np.ndarray,
    k: int,
    exclude: UserItemCSR | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items of every user over the whole catalogue.

    Args:
        scores: either a callable ``score_fn(user_idx) -> [len(user_idx), n_items]``
            (numpy or torch; e.g. ``lambda u: user_emb[u] @ item_emb.T``) or a
            precomputed ``[n_users, n_items]`` matrix indexed by user.
        users: int ``[U]`` user indices to rank for; output row ``j`` is
            ``users[j]``.
        k: list length. Users with fewer than ``k`` rankable items get ``-1``
            (score ``-inf``) padding; so does a catalogue smaller than ``k``.
        exclude: items never recommended to a user (their training items), as
            a CSR over user indices; ``-1`` entries are ignored.
        batch_size: users scored at once (memory ``batch_size * n_items`` floats).
        device: where masking and top-k run (default: where the scores are).
        show_progress: tqdm bar over batches.

    Returns:
        ``(items, scores)``: int64 ``[U, k]`` item indices, best first, and their
        float scores ``[U, k]``. Items scored ``-inf`` (masked or by the model)
        are never returned.

    Raises:
        ValueError: NaN scores, wrong shapes, or indices out of range.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    user_idx = np.asarray(users, dtype=np.int64).ravel()
    if user_idx.size and user_idx.min() < 0:
        raise ValueError("user indices must be non-negative")
    dev = torch.device(device) if device is not None else None
    matrix = None if callable(scores) else _to_tensor(scores, dev)
    if matrix is not None:
        if matrix.ndim != 2:
            raise ValueError(f"score matrix must be 2-D, got shape {tuple(matrix.shape)}")
        if user_idx.size and user_idx.max() >= matrix.shape[0]:
            raise ValueError(f"user index {user_idx.max()} >= score rows {matrix.shape[0]}")

    out_items: list[np.ndarray] = []
    out_scores: list[np.ndarray] = []
    n_items: int | None = None
    starts = range(0, user_idx.size, batch_size)
    for start in tqdm(starts, desc="full ranking", disable=not show_progress):
        batch = user_idx[start : start + batch_size]
        if matrix is not None:
            s = matrix[torch.from_numpy(batch).to(matrix.device)]
        else:
            assert callable(scores)
            s = _to_tensor(scores(batch), dev)
        if s.ndim != 2 or s.shape[0] != batch.size:
            raise ValueError(f"scores for {batch.size} users have shape {tuple(s.shape)}")
        if n_items is None:
            n_items = int(s.shape[1])
        elif s.shape[1] != n_items:
            raise ValueError(f"score width changed from {n_items} to {s.shape[1]}")
        if bool(torch.isnan(s).any()):
            bad = int(batch[int(torch.nonzero(torch.isnan(s).any(dim=1))[0, 0])])
            raise ValueError(f"NaN score for user index {bad}")
        if exclude is not None:
            if exclude.n_items != n_items:
                raise ValueError(f"exclude has {exclude.n_items} items, scores have {n_items}")
            row, col = exclude.gather(batch)
            keep = col >= 0
            r = torch.from_numpy(row[keep]).to(s.device)
            c = torch.from_numpy(col[keep]).to(s.device)
            # out of place: a precomputed matrix or a model's cache must stay intact
            s = s.index_put((r, c), torch.tensor(float("-inf"), dtype=s.dtype, device=s.device))
        kk = min(k, n_items)
        vals, idx = topk_smallest_index_ties(s, kk)
        idx = torch.where(torch.isneginf(vals), torch.full_like(idx, -1), idx)
        items_np = idx.cpu().numpy().astype(np.int64)
        vals_np = vals.cpu().numpy()
        if kk < k:
            items_np = np.pad(items_np, ((0, 0), (0, k - kk)), constant_values=-1)
            vals_np = np.pad(vals_np, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        out_items.append(items_np)
        out_scores.append(vals_np)

    if not out_items:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
    return np.concatenate(out_items), np.concatenate(out_scores)
