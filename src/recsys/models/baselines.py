"""Non-neural baselines on implicit feedback: popularity and BPR matrix factorisation.

Both work on contiguous indices (users ``0..n_users-1``, items ``0..n_items-1``)
and expose ``score(user_idx) -> [len(user_idx), n_items]`` so that a full-ranking
evaluator can rank the whole catalogue for any batch of users. Mapping original
ids to indices is the caller's job (e.g. ``pandas.factorize`` over the training
frame with sorted unique ids).

Example:
    >>> import numpy as np
    >>> pop = PopularityRecommender().fit(np.array([0, 1, 1]), np.array([2, 2, 0]), 2, 3)
    >>> pop.score(np.array([0])).tolist()
    [[1.0, 0.0, 2.0]]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm


def _check_interactions(
    user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(user_idx).ravel()
    i = np.asarray(item_idx).ravel()
    for name, arr, n in (("user_idx", u, n_users), ("item_idx", i, n_items)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{name} must be in [0, {n}); got range [{arr.min()}, {arr.max()}]")
    if u.size != i.size:
        raise ValueError(f"user_idx ({u.size}) and item_idx ({i.size}) differ in length")
    if u.size == 0:
        raise ValueError("no interactions to fit on")
    return u.astype(np.int64), i.astype(np.int64)


def _check_users(user_idx: np.ndarray, n_users: int) -> np.ndarray:
    u = np.asarray(user_idx, dtype=np.int64).ravel()
    if u.size and (u.min() < 0 or u.max() >= n_users):
        raise ValueError(f"user indices must be in [0, {n_users})")
    return u


class PopularityRecommender:
    """Scores every item by its number of training interactions, for every user.

    Ranking ties (equal counts) are left to the ranker; ``full_ranking_topk``
    puts the smaller item index first.

    Attributes:
        counts: float32 ``[n_items]`` training interactions per item (after fit).
    """

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None
        self.n_users = 0

    def fit(
        self, user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int
    ) -> PopularityRecommender:
        """Counts interactions per item.

        Args:
            user_idx: int ``[N]`` user of each training interaction.
            item_idx: int ``[N]`` item of each training interaction.
            n_users: number of users (rows that ``score`` accepts).
            n_items: catalogue size.

        Returns:
            ``self``.
        """
        _, i = _check_interactions(user_idx, item_idx, n_users, n_items)
        self.counts = np.bincount(i, minlength=n_items).astype(np.float32)
        self.n_users = n_users
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """float32 ``[len(user_idx), n_items]``: the item counts, one row per user."""
        if self.counts is None:
            raise RuntimeError("call fit() before score()")
        u = _check_users(user_idx, self.n_users)
        return np.repeat(self.counts[None, :], u.size, axis=0)


@dataclass(frozen=True)
class BPRConfig:
    """Hyper-parameters of :class:`BPRRecommender` (config group ``model/bpr``).

    The defaults were chosen on a validation split carved from the MovieLens-100K
    benchmark's training set (80/20 per item): ``reg`` 0.01 beat 0.001, 0.005
    and 0.02, and validation NDCG@10 plateaued from 200 epochs. Cornac's
    benchmark setting is ``BPRConfig(reg=0.001)``.

    Attributes:
        factors: latent dimension.
        epochs: passes; each draws as many triples as there are interactions.
        lr: SGD learning rate (per triple: gradients are summed, not averaged,
            so it does not depend on ``batch_size``).
        reg: L2 weight; each triple shrinks the rows it touches by
            ``lr * reg`` (applied once per epoch, see ``_decay``).
        batch_size: triples per vectorised update.
        init_std: std of the normal initialisation of the factors.
        item_bias: learn an item bias added to the dot product.
        seed: seeds initialisation and sampling (same seed -> same model on CPU;
            CUDA's ``index_add_`` accumulates in a non-deterministic order).
        device: torch device for training and scoring.
        num_threads: CPU threads torch uses while fitting (restored after);
            ``None`` leaves the setting alone. The steps are small and
            memory-bound, so one thread is fastest on a shared machine (measured:
            a 4096 x 200 gather took 0.15 ms on one thread, 14 ms on two busy cores).
    """

    factors: int = 200
    epochs: int = 200
    lr: float = 0.01
    reg: float = 0.01
    batch_size: int = 4096
    init_std: float = 0.01
    item_bias: bool = True
    seed: int = 42
    device: str = "cpu"
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.factors < 1 or self.epochs < 0 or self.batch_size < 1:
            raise ValueError("factors and batch_size must be >= 1, epochs >= 0")
        if self.lr <= 0 or self.reg < 0 or self.init_std <= 0:
            raise ValueError("lr and init_std must be > 0, reg >= 0")
        if self.reg * self.lr >= 1:
            raise ValueError("lr * reg must be < 1 (it is the per-triple shrink factor)")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")


@dataclass
class BPRTrainLog:
    """What a fit did.

    Attributes:
        epoch_loss: mean ``-log sigmoid(s_ui - s_uj)`` over each epoch's used triples.
        skipped_triples: triples dropped because the negative was a training item.
        seconds: wall time of the fit.
    """

    epoch_loss: list[float] = field(default_factory=list)
    skipped_triples: int = 0
    seconds: float = 0.0


class BPRRecommender:
    """Matrix factorisation trained with Bayesian Personalised Ranking (Rendle et al. 2009).

    Score ``s(u, i) = p_u . q_i + b_i``. Each epoch draws ``N`` (number of
    interactions) training pairs ``(u, i)`` uniformly with replacement and a
    negative ``j`` uniformly from the catalogue per pair, and takes SGD steps on
    ``-log sigmoid(s(u, i) - s(u, j))``. A triple whose ``j`` is one of the
    user's training items is skipped (as in cornac's BPR) and counted in
    :attr:`log`.

    Args:
        config: hyper-parameters.

    Example:
        >>> cfg = BPRConfig(factors=8, epochs=2)
        >>> model = BPRRecommender(cfg).fit(np.array([0, 1]), np.array([1, 2]), 2, 3)
        >>> model.score(np.array([0, 1])).shape
        (2, 3)
    """

    def __init__(self, config: BPRConfig | None = None) -> None:
        self.config = config or BPRConfig()
        self.user_factors: torch.Tensor | None = None
        self.item_factors: torch.Tensor | None = None
        self.item_biases: torch.Tensor | None = None
        self.log = BPRTrainLog()

    def fit(
        self,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        n_users: int,
        n_items: int,
        show_progress: bool = False,
        on_epoch_end: Callable[[int, BPRRecommender], None] | None = None,
    ) -> BPRRecommender:
        """Trains from scratch on the given interactions.

        Args:
            user_idx: int ``[N]`` user of each training interaction.
            item_idx: int ``[N]`` item of each training interaction.
            n_users: number of users.
            n_items: catalogue size.
            show_progress: tqdm bar over epochs.
            on_epoch_end: called as ``fn(epoch, self)`` after each epoch (1-based);
                :meth:`score` then uses the current parameters (validation
                curves; raise to stop early).

        Returns:
            ``self``.
        """
        u_np, i_np = _check_interactions(user_idx, item_idx, n_users, n_items)
        threads = torch.get_num_threads()
        if self.config.num_threads is not None:
            torch.set_num_threads(self.config.num_threads)
        try:
            self._train(u_np, i_np, n_users, n_items, show_progress, on_epoch_end)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(
        self,
        u_np: np.ndarray,
        i_np: np.ndarray,
        n_users: int,
        n_items: int,
        show_progress: bool,
        on_epoch_end: Callable[[int, BPRRecommender], None] | None,
    ) -> None:
        cfg = self.config
        started = time.perf_counter()
        dev = torch.device(cfg.device)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

        p = (torch.randn(n_users, cfg.factors, generator=gen) * cfg.init_std).to(dev)
        q = (torch.randn(n_items, cfg.factors, generator=gen) * cfg.init_std).to(dev)
        b = torch.zeros(n_items, device=dev)
        users = torch.from_numpy(u_np).to(dev)
        items = torch.from_numpy(i_np).to(dev)
        # sorted user*n_items+item keys answer "is (u, j) a training pair?" by binary search
        seen = torch.unique(users * n_items + items)

        self.log = BPRTrainLog()
        # score() reads these; during training they are the live parameters
        self.user_factors, self.item_factors, self.item_biases = p, q, b
        n = users.numel()
        n_batches = math.ceil(n / cfg.batch_size)
        for epoch in tqdm(range(1, cfg.epochs + 1), desc="BPR epochs", disable=not show_progress):
            # sampled on the CPU generator so a seed gives the same triples on any device
            pick = torch.randint(n, (n,), generator=gen).to(dev)
            neg = torch.randint(n_items, (n,), generator=gen).to(dev)
            u, pos = users[pick], items[pick]
            key = u * n_items + neg
            where = torch.searchsorted(seen, key).clamp_max(seen.numel() - 1)
            valid = seen[where] != key
            weight = valid.to(p.dtype)
            total = torch.zeros((), device=dev)
            for bi in range(n_batches):
                sl = slice(bi * cfg.batch_size, (bi + 1) * cfg.batch_size)
                total += self._sgd_step(p, q, b, u[sl], pos[sl], neg[sl], weight[sl])
            self._decay(p, q, b, u, pos, neg, weight)
            n_used = int(valid.sum())
            self.log.skipped_triples += n - n_used
            self.log.epoch_loss.append(float(total) / max(n_used, 1))
            if on_epoch_end is not None:
                on_epoch_end(epoch, self)
        self.log.seconds = time.perf_counter() - started

    def _sgd_step(
        self,
        p: torch.Tensor,
        q: torch.Tensor,
        b: torch.Tensor,
        u: torch.Tensor,
        i: torch.Tensor,
        j: torch.Tensor,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        # Closed-form BPR gradients applied with index_add_: each triple moves its
        # rows as one sequential SGD step would (updates of a row repeated in the
        # batch add up), without autograd's dense gradient tensors. In-place ops
        # keep this memory-bound step about 3x faster than the plain expression.
        lr = self.config.lr
        pu, qi, qj = p.index_select(0, u), q.index_select(0, i), q.index_select(0, j)
        d = qi.sub_(qj)
        x = torch.linalg.vecdot(pu, d)
        if self.config.item_bias:
            x += b.index_select(0, i) - b.index_select(0, j)
        loss = (torch.nn.functional.softplus(-x) * weight).sum()
        z = torch.sigmoid(x.neg_()).mul_(weight)  # -dloss/dx; 0 for skipped triples
        zc = z[:, None]
        p.index_add_(0, u, d.mul_(zc), alpha=lr)
        g = pu.mul_(zc)
        q.index_add_(0, i, g, alpha=lr)
        q.index_add_(0, j, g, alpha=-lr)
        if self.config.item_bias:
            b.index_add_(0, i, z, alpha=lr)
            b.index_add_(0, j, z, alpha=-lr)
        return loss

    def _decay(
        self,
        p: torch.Tensor,
        q: torch.Tensor,
        b: torch.Tensor,
        u: torch.Tensor,
        i: torch.Tensor,
        j: torch.Tensor,
        weight: torch.Tensor,
    ) -> None:
        # Per-triple SGD on (reg/2)*||row||^2 multiplies a row by (1 - lr*reg) each
        # time a triple touches it; applying the product once per epoch equals it
        # up to O((lr*reg)^2) per step and costs O(rows) instead of
        # O(triples * factors).
        keep = 1.0 - self.config.lr * self.config.reg
        n_u = torch.bincount(u, weights=weight, minlength=p.shape[0])
        n_q = torch.bincount(i, weights=weight, minlength=q.shape[0]) + torch.bincount(
            j, weights=weight, minlength=q.shape[0]
        )
        p.mul_(torch.pow(keep, n_u).to(p.dtype)[:, None])
        shrink_q = torch.pow(keep, n_q).to(q.dtype)
        q.mul_(shrink_q[:, None])
        if self.config.item_bias:
            b.mul_(shrink_q)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """float32 ``[len(user_idx), n_items]``: ``p_u . q_i + b_i``."""
        if self.user_factors is None or self.item_factors is None or self.item_biases is None:
            raise RuntimeError("call fit() before score()")
        u = _check_users(user_idx, self.user_factors.shape[0])
        idx = torch.from_numpy(u).to(self.user_factors.device)
        with torch.no_grad():
            s = self.user_factors[idx] @ self.item_factors.T
            if self.config.item_bias:
                s += self.item_biases
        return s.cpu().numpy()
