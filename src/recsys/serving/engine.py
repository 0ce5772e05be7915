"""The ``recommend`` entry point's logic: user -> candidates -> ranker -> top-k (numpy).

:class:`RecommendEngine` answers a batch of ``(user_id, k)`` requests with the same
steps, in the same order, as ``recsys.recommend.TwoStageRecommender.recommend``:

1. look the user up in :class:`RecommendTables` (users of the training run, by raw id);
   unknown users go to step 6;
2. query vector from the user tower on the user's padded ids (``[1, F, L]``, from the
   user feature table exported next to the model), scaled by the two-tower model's
   inverse temperature (plus a constant 1 when the index's item vectors end in a bias);
3. retrieval top ``n = max(num_candidates, k)`` (at most the catalogue) with the user's
   seen items and the blocked items removed: the engine asks the index for ``n`` plus
   the number of excluded items and filters; FAISS's ``-1`` padding is never an item;
4. ranker logits of every (user, candidate) pair (:class:`~recsys.serving.ranker_features.
   RankerFeatures` makes its inputs);
5. relevance, freshness and MMR (:mod:`recsys.serving.ranking`), cut to ``k``;
6. users that are unknown, or have no candidate left, get the most popular allowed
   items (training counts, ties to the smaller item index; seen items removed for
   known users), scored ``log(1 + count)``.

The three models are plain callables, so the same engine runs inside Triton's python
backend (BLS calls to ``user_tower``, ``retrieval`` and ``ranker``) and in-process (in
tests, with onnxruntime and FAISS). The module imports numpy only (Python 3.10
compatible: it runs in NVIDIA's container).

Example::

    engine = RecommendEngine(tables, features, user_tower=..., retrieval=..., ranker=...)
    [(items, scores)] = engine.recommend(np.array([196]), np.array([10]))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.serving.ranker_features import SECONDS_PER_YEAR, RankerFeatures
from recsys.serving.ranking import AggregationSettings, mmr_rerank, relevance

ARRAYS_FILE = "tables.npz"
META_FILE = "tables.json"
DEFAULT_MAX_K = 10_000
"""Largest ``k`` a request may ask for, unless the model config says otherwise."""

UserTowerFn = Callable[[np.ndarray], np.ndarray]
"""``ids [W, F, L] int64 -> embeddings [W, D] float32``."""
RetrievalFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``(queries [W, D], top_n [W]) -> (item indices [W, T], scores [W, T], counts [W])``."""
RankerFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(dense [P, n_dense] float32, ids [P, F, L] int64) -> logits [P] float32``."""


class RequestValueError(ValueError):
    """A request value the engine refuses (bad ``k``); the client's fault."""


@dataclass
class RecommendTables:
    """What the ``recommend`` model knows about users and items of one training run.

    Index space: user ``u`` / item ``i`` are rows of the run's user / item tables (the
    ranker context's), the FAISS index returns item indices.

    Attributes:
        user_ids: ``[U]`` raw user id of each user row (int64).
        item_ids: ``[I]`` raw item id of each item row (int64).
        user_tower_ids: ``[U, F, L]`` each user's padded user-tower input (``-1`` pad).
        user_tower_features: the ``F`` features, in the exported tower's order.
        user_tower_num_embeddings: table rows per user-tower feature (ids are checked).
        seen_indptr: ``[U + 1]`` CSR rows of each user's training items.
        seen_indices: item indices of those rows.
        item_count: ``[I]`` training interactions per item (popularity).
        request_time: ``[U]`` request time per user (seconds; freshness).
        release_time: ``[I]`` release time per item (seconds, NaN unknown).
        item_embeddings: ``[I, D]`` unit item vectors MMR compares (the recommender's
            ``diversity_vectors``).
        blocked: sorted item indices removed for every user (business filters).
        settings: relevance weights, freshness, MMR, seen filtering.
        num_candidates: ``N``, candidates retrieved per user (at least ``k``).
        query_scale: the user tower's output times this is the query vector (the
            two-tower model's inverse temperature).
        query_append_one: append a constant 1 to each query (models with an item
            bias: the index's item vectors end in the bias).
        extra: provenance (schema, versions, build time), kept in the JSON file.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_tower_ids: np.ndarray
    user_tower_features: list[str]
    user_tower_num_embeddings: dict[str, int]
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    item_count: np.ndarray
    request_time: np.ndarray
    release_time: np.ndarray
    item_embeddings: np.ndarray
    blocked: np.ndarray
    settings: AggregationSettings
    num_candidates: int = 200
    query_scale: float = 1.0
    query_append_one: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_ids = np.asarray(self.user_ids, dtype=np.int64)
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        checks = {
            "user_tower_ids": (self.user_tower_ids.shape[0], n_users),
            "seen_indptr": (len(self.seen_indptr), n_users + 1),
            "item_count": (len(self.item_count), n_items),
            "request_time": (len(self.request_time), n_users),
            "release_time": (len(self.release_time), n_items),
            "item_embeddings": (self.item_embeddings.shape[0], n_items),
        }
        bad = {name: got for name, (got, want) in checks.items() if got != want}
        if bad:
            raise ValueError(f"recommend tables disagree in length: {bad}")
        if self.user_tower_ids.ndim != 3 or self.user_tower_ids.shape[1] != len(
            self.user_tower_features
        ):
            raise ValueError(
                f"user_tower_ids must be [U, {len(self.user_tower_features)}, L], got "
                f"{self.user_tower_ids.shape}"
            )
        sizes = np.array(
            [self.user_tower_num_embeddings[f] for f in self.user_tower_features], dtype=np.int64
        )
        over = (self.user_tower_ids >= sizes[None, :, None]) | (self.user_tower_ids < -1)
        if over.any():
            u, f, _ = (int(x) for x in np.argwhere(over)[0])
            raise ValueError(
                f"user row {u} holds an id outside feature "
                f"'{self.user_tower_features[f]}' (table of {int(sizes[f])} rows)"
            )
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        order = np.argsort(self.user_ids, kind="stable")
        self._sorted_users = self.user_ids[order]
        self._sorted_rows = order.astype(np.int64)
        if len(self._sorted_users) > 1 and (np.diff(self._sorted_users) == 0).any():
            raise ValueError("user_ids must be unique")
        # popularity order: training count, ties to the smaller item index
        self.popular_order = np.lexsort((np.arange(n_items), -self.item_count)).astype(np.int64)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def query_vectors(self, embeddings: np.ndarray) -> np.ndarray:
        """The index's query vectors from user-tower outputs (scale, then the bias slot)."""
        queries = np.asarray(embeddings, dtype=np.float32) * np.float32(self.query_scale)
        if self.query_append_one:
            queries = np.hstack([queries, np.ones((len(queries), 1), dtype=np.float32)])
        return np.ascontiguousarray(queries, dtype=np.float32)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_rows(self, raw_user_ids: np.ndarray) -> np.ndarray:
        """Row of each raw user id, ``-1`` for users the run does not know."""
        raw = np.asarray(raw_user_ids, dtype=np.int64).reshape(-1)
        if self.n_users == 0:
            return np.full(len(raw), -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted_users, raw)
        clipped = np.minimum(pos, self.n_users - 1)
        found = self._sorted_users[clipped] == raw
        return np.where(found, self._sorted_rows[clipped], -1).astype(np.int64)

    def seen(self, row: int) -> np.ndarray:
        """Item indices user ``row`` interacted with in training."""
        items = self.seen_indices[self.seen_indptr[row] : self.seen_indptr[row + 1]]
        return items[items >= 0]

    def excluded(self, row: int) -> np.ndarray:
        """Sorted unique item indices never recommended to user ``row``."""
        if not self.settings.exclude_seen:
            return self.blocked
        return np.union1d(self.seen(row), self.blocked).astype(np.int64)

    def popular(self, k: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most popular allowed items (indices) and their ``log(1 + count)``.

        Args:
            k: list length.
            row: the user's row (``-1``: unknown user, only blocked items removed).
        """
        drop = np.zeros(self.n_items, dtype=bool)
        drop[self.blocked] = True
        if row >= 0 and self.settings.exclude_seen:
            drop[self.seen(row)] = True
        order = self.popular_order[~drop[self.popular_order]][:k]
        return order, np.log1p(self.item_count[order]).astype(np.float32)

    # -- files ---------------------------------------------------------------------

    def save(self, folder: str | Path) -> list[Path]:
        """Writes ``tables.npz`` and ``tables.json`` into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {
            name: getattr(self, name)
            for name in (
                "user_ids",
                "item_ids",
                "user_tower_ids",
                "seen_indptr",
                "seen_indices",
                "item_count",
                "request_time",
                "release_time",
                "item_embeddings",
                "blocked",
            )
        }
        np.savez(out / ARRAYS_FILE, **arrays)
        meta = {
            "user_tower_features": self.user_tower_features,
            "user_tower_num_embeddings": self.user_tower_num_embeddings,
            "settings": self.settings.to_dict(),
            "num_candidates": self.num_candidates,
            "query_scale": self.query_scale,
            "query_append_one": self.query_append_one,
            "extra": self.extra,
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return [out / ARRAYS_FILE, out / META_FILE]

    @classmethod
    def load(cls, folder: str | Path) -> RecommendTables:
        """Reads what :meth:`save` wrote."""
        path = Path(folder)
        meta = json.loads((path / META_FILE).read_text())
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        return cls(
            user_tower_features=list(meta["user_tower_features"]),
            user_tower_num_embeddings={
                k: int(v) for k, v in meta["user_tower_num_embeddings"].items()
            },
            settings=AggregationSettings.from_dict(meta["settings"]),
            num_candidates=int(meta["num_candidates"]),
            query_scale=float(meta.get("query_scale", 1.0)),
            query_append_one=bool(meta.get("query_append_one", False)),
            extra=dict(meta.get("extra", {})),
            **arrays,
        )


@dataclass
class RankedList:
    """One answer: raw item ids best first, their scores, and how it was made."""

    item_ids: np.ndarray
    scores: np.ndarray
    fallback: bool


class RecommendEngine:
    """Answers ``(user_id, k)`` requests from the tables and three model callables.

    Args:
        tables: users, items, filters and settings of the training run.
        features: the ranker's request-time features (None: no ranker; then
            ``ranker_weight`` must be 0).
        user_tower: padded ids -> user embeddings.
        retrieval: query embeddings and per-row ``top_n`` -> item indices, scores and
            per-row counts of real results.
        ranker: ``(dense, ids)`` -> logits (None: no ranker).
        max_k: the largest ``k`` accepted.
    """

    def __init__(
        self,
        tables: RecommendTables,
        features: RankerFeatures | None,
        user_tower: UserTowerFn,
        retrieval: RetrievalFn,
        ranker: RankerFn | None,
        max_k: int = DEFAULT_MAX_K,
    ) -> None:
        if tables.settings.ranker_weight > 0 and (features is None or ranker is None):
            raise ValueError("ranker_weight > 0 needs the ranker and its feature tables")
        if features is not None and (
            features.n_users != tables.n_users or features.n_items != tables.n_items
        ):
            raise ValueError(
                f"ranker features cover {features.n_users} users x {features.n_items} items, "
                f"the tables {tables.n_users} x {tables.n_items}"
            )
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}")
        self.tables = tables
        self.features = features
        self.user_tower = user_tower
        self.retrieval = retrieval
        self.ranker = ranker
        self.max_k = int(max_k)

    def check_k(self, k: int) -> None:
        """Raises :class:`RequestValueError` unless ``1 <= k <= max_k``."""
        if k < 1:
            raise RequestValueError(f"k must be >= 1, got {k}")
        if k > self.max_k:
            raise RequestValueError(
                f"k={k} exceeds max_k={self.max_k} (the catalogue has {self.tables.n_items} "
                "items; any k above that already returns every item the user has not seen)"
            )

    def recommend(self, user_ids: np.ndarray, ks: Sequence[int] | np.ndarray) -> list[RankedList]:
        """The top-``k`` list of each request.

        Args:
            user_ids: ``[R]`` raw user ids (unknown ones get popular items).
            ks: ``[R]`` list lengths, each in ``1..max_k``.

        Returns:
            One :class:`RankedList` per request, at most ``k`` items each (fewer when
            fewer allowed items remain); never a padding id.

        Raises:
            RequestValueError: a ``k`` is out of range.
        """
        raw = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        ks_arr = np.asarray(ks, dtype=np.int64).reshape(-1)
        if len(raw) != len(ks_arr):
            raise ValueError(f"{len(raw)} users but {len(ks_arr)} k values")
        for k in ks_arr:
            self.check_k(int(k))
        rows = self.tables.user_rows(raw)
        out: list[RankedList | None] = [None] * len(raw)
        warm = np.flatnonzero(rows >= 0)
        if len(warm):
            answers = self._two_stage(rows[warm], ks_arr[warm])
            for position, answer in zip(warm.tolist(), answers, strict=True):
                out[position] = answer
        for position in range(len(raw)):
            if out[position] is None:
                items, scores = self.tables.popular(int(ks_arr[position]), int(rows[position]))
                out[position] = RankedList(self.tables.item_ids[items], scores, fallback=True)
        return [r for r in out if r is not None]

    # -- stages ----------------------------------------------------------------------

    def candidates(
        self, rows: np.ndarray, ks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Retrieval candidates of known users, seen and blocked items removed.

        Returns:
            ``(items [W, N], scores [W, N], valid [W, N])`` in the index space; row
            ``w`` holds at most ``min(max(num_candidates, ks[w]), n_items)`` valid
            slots, first, in retrieval order.
        """
        t = self.tables
        embeddings = np.asarray(self.user_tower(t.user_tower_ids[rows]), dtype=np.float32)
        if embeddings.shape[0] != len(rows):
            raise RuntimeError(f"user tower returned {embeddings.shape[0]} rows for {len(rows)}")
        queries = t.query_vectors(embeddings)
        wanted = np.minimum(np.maximum(t.num_candidates, ks), t.n_items)
        excluded = [t.excluded(int(r)) for r in rows]
        top_n = np.minimum(wanted + np.array([len(e) for e in excluded]), t.n_items)
        ids, scores, counts = self.retrieval(queries, top_n)
        width = int(wanted.max())
        items = np.full((len(rows), width), -1, dtype=np.int64)
        cand_scores = np.full((len(rows), width), -np.inf, dtype=np.float32)
        for w in range(len(rows)):
            real = ids[w, : int(counts[w])]
            keep = (real >= 0) & (real < t.n_items) & ~np.isin(real, excluded[w])
            take = np.flatnonzero(keep)[: int(wanted[w])]
            items[w, : len(take)] = real[take]
            cand_scores[w, : len(take)] = scores[w, take]
        return items, cand_scores, items >= 0

    def _ranker_scores(
        self, rows: np.ndarray, items: np.ndarray, scores: np.ndarray, valid: np.ndarray
    ) -> np.ndarray:
        assert self.features is not None and self.ranker is not None
        lists, ranks = np.nonzero(valid)
        pair_users = rows[lists]
        pair_items = items[valid]
        dense, ids = self.features.inputs(
            pair_users, pair_items, scores[valid], ranks.astype(np.int64), lists, len(rows)
        )
        logits = np.asarray(self.ranker(dense, ids), dtype=np.float32).reshape(-1)
        if len(logits) != len(pair_users):
            raise RuntimeError(f"ranker returned {len(logits)} scores for {len(pair_users)} pairs")
        out = np.zeros(valid.shape, dtype=np.float64)
        out[valid] = logits
        return out

    def _two_stage(self, rows: np.ndarray, ks: np.ndarray) -> list[RankedList | None]:
        t = self.tables
        settings = t.settings
        items, scores, valid = self.candidates(rows, ks)
        ranker_scores = None
        if settings.ranker_weight > 0 and valid.any():
            ranker_scores = self._ranker_scores(rows, items, scores, valid)
        age = None
        if settings.freshness_weight > 0:
            safe = np.maximum(items, 0)
            age = (t.request_time[rows][:, None] - t.release_time[safe]) / SECONDS_PER_YEAR
        rel = relevance(valid, settings, ranker_scores, scores.astype(np.float64), age)
        widths = np.minimum(np.maximum(t.num_candidates, ks), t.n_items)
        kk = np.minimum(ks, widths)
        # MMR is greedy: the first kk picks of a longer run are the picks of a kk-run.
        vectors = t.item_embeddings[np.maximum(items, 0)]
        positions = mmr_rerank(rel, vectors, valid, int(kk.max()), settings.mmr_lambda)
        out: list[RankedList | None] = []
        for w in range(len(rows)):
            pos = positions[w, : int(kk[w])]
            pos = pos[pos >= 0]
            if len(pos) == 0:
                out.append(None)  # no candidate left: the popularity fallback answers
                continue
            chosen = items[w, pos]
            out.append(
                RankedList(t.item_ids[chosen], rel[w, pos].astype(np.float32), fallback=False)
            )
        return out
