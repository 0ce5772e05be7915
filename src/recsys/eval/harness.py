"""One evaluation harness for every model: the same users, items, exclusions
and metrics, so numbers from different models are comparable.

The index space is the processed dataset's: user ``u`` is row ``u`` of
``dataset.users`` and item ``i`` is row ``i`` of ``dataset.items``. A model
plugs in as a score function ``score_fn(user_idx) -> [len(user_idx), n_items]``.
Each evaluation returns the metrics and the top-k lists it scored, which
:func:`recsys.eval.report.write_topk` stores in the dataset's original ids.

Example:
    >>> harness = EvalHarness.from_processed(dataset)  # doctest: +SKIP
    >>> result = harness.evaluate(lambda u: user_emb[u] @ item_emb.T)  # doctest: +SKIP
    >>> result.metrics["ndcg@10"]  # doctest: +SKIP
    0.45
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.data.frame import ITEM, USER
from recsys.eval.metrics import RankingMetricsConfig, UserItemCSR, evaluate
from recsys.eval.ranking import ScoreFn, ScoreMatrix, full_ranking_topk
from recsys.features.store import ProcessedDataset


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation protocol (config group ``eval``).

    Attributes:
        k: length of the recommendation lists that are scored.
        k_values: cut-offs reported (each <= k).
        exclude_seen: never recommend a user's training items.
        averaging: see :class:`~recsys.eval.metrics.RankingMetricsConfig`.
        batch_size: users scored at once.
    """

    k: int = 10
    k_values: tuple[int, ...] = (10,)
    exclude_seen: bool = True
    averaging: str = "recommenders"
    batch_size: int = 1024


@dataclass
class EvalResult:
    """Metrics and the lists they were computed from (index space)."""

    metrics: dict[str, float]
    topk_items: np.ndarray
    topk_scores: np.ndarray
    users: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


@dataclass
class EvalHarness:
    """Ground truth, exclusions and id maps of one train/test split.

    Attributes:
        user_ids: original user id of each user index.
        item_ids: original item id of each item index.
        train: CSR of each user's training items (excluded from rankings).
        test: CSR of each user's test items (the relevant ones); test items
            outside the catalogue are kept as ``-1`` (relevant, never hit).
        item_popularity: training interactions per item (novelty, popularity).
        config: the protocol.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    train: UserItemCSR
    test: UserItemCSR
    item_popularity: np.ndarray
    config: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_frames(
        cls,
        train: pd.DataFrame,
        test: pd.DataFrame,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        config: EvalConfig | None = None,
    ) -> EvalHarness:
        """Builds the harness from interaction frames and the index order of ids.

        Args:
            train: training interactions (``user_id``, ``item_id``).
            test: test interactions.
            user_ids: original ids in user-index order.
            item_ids: original ids in item-index order.
            config: the protocol.
        """
        users = pd.Index(user_ids)
        items = pd.Index(item_ids)
        if not users.is_unique or not items.is_unique:
            raise ValueError("user_ids and item_ids must be unique")

        def csr(frame: pd.DataFrame) -> UserItemCSR:
            u = users.get_indexer(frame[USER].to_numpy())
            i = items.get_indexer(frame[ITEM].to_numpy())
            keep = u >= 0  # users outside the index space are not evaluated
            return UserItemCSR.from_pairs(u[keep], i[keep], n_users=len(users), n_items=len(items))

        train_csr = csr(train)
        pop = np.bincount(train_csr.indices[train_csr.indices >= 0], minlength=len(items)).astype(
            np.float64
        )
        return cls(
            user_ids=np.asarray(user_ids),
            item_ids=np.asarray(item_ids),
            train=train_csr,
            test=csr(test),
            item_popularity=pop,
            config=config or EvalConfig(),
        )

    @classmethod
    def from_processed(
        cls, dataset: ProcessedDataset, config: EvalConfig | None = None, split: str = "test"
    ) -> EvalHarness:
        """The harness of a processed dataset; ``split`` is ``test`` or ``valid``."""
        held_out = dataset.test if split == "test" else dataset.valid
        if held_out is None:
            raise ValueError(f"the dataset has no {split!r} split")
        return cls.from_frames(
            dataset.train,
            held_out,
            dataset.users[USER].to_numpy(),
            dataset.items[ITEM].to_numpy(),
            config,
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Training interactions as ``(user_idx, item_idx)`` arrays."""
        users = np.repeat(np.arange(self.n_users), self.train.lengths())
        return users, self.train.indices.copy()

    def test_users(self) -> np.ndarray:
        """Users with at least one test item."""
        return np.flatnonzero(self.test.lengths() > 0)

    def evaluate(self, scores: ScoreFn | ScoreMatrix, show_progress: bool = False) -> EvalResult:
        """Ranks the whole catalogue for every test user and scores the lists.

        Args:
            scores: ``score_fn(user_idx) -> [len, n_items]`` or a full matrix.
            show_progress: tqdm bar over user batches.

        Returns:
            The metrics and the top-k lists (rows follow ``result.users``).
        """
        cfg = self.config
        users = self.test_users()
        items, item_scores = full_ranking_topk(
            scores,
            users,
            cfg.k,
            exclude=self.train if cfg.exclude_seen else None,
            batch_size=cfg.batch_size,
            show_progress=show_progress,
        )
        metrics = evaluate(
            items,
            self.test.rows(users),
            k_values=cfg.k_values,
            item_popularity=self.item_popularity,
            config=RankingMetricsConfig(k_values=cfg.k_values, averaging=cfg.averaging),  # type: ignore[arg-type]
        )
        return EvalResult(metrics, items, item_scores, users)

    def topk_frame(self, result: EvalResult) -> pd.DataFrame:
        """The scored lists in original ids: user, item, rank (1-based), score."""
        valid = result.topk_items >= 0
        rows, ranks = np.nonzero(valid)
        return pd.DataFrame(
            {
                "user": self.user_ids[result.users[rows]],
                "item": self.item_ids[result.topk_items[rows, ranks]],
                "rank": ranks + 1,
                "score": result.topk_scores[rows, ranks].astype(np.float32),
            }
        )
