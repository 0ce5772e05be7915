"""Training examples and features of the ranker in the two-stage recommender.

The ranker re-scores the top-N candidates of the retrieval stage. Everything it
sees about a (user, item) pair comes from one :class:`RankerContext`: the
statistics of a *training* split only (the interactions a deployed system would
have logged up to the request). The same code builds the features of training
examples and of serving requests, so the two cannot drift apart: every dense feature
is computed by :mod:`recsys.runtime.dense_features`, the numpy code that the Triton
runtime (:mod:`recsys.runtime.ranker_features`) runs too; this module only supplies
the offline rules as its parameters (z-score statistics over the candidate rows,
the unknown-age median over the rows of a call).

Request time. The dense features are taken at each user's *request time*, the time
of their last training interaction (the end of the training log for a user without
one), for training examples and test requests alike; the schema's ``hour`` /
``weekday`` user features are that time's too. With ``dense_time: request`` the
time-dependent dense features (user activity and item interactions in the last ``d``
days, item age) are taken at each example's request time instead (its held-out
interaction's time), as serving takes them at the request context's time; a request
without a time keeps the user's.

Requests. Every example belongs to a *request* (:class:`Requests`): the held-out
interactions of a user are grouped into requests by session (the ``session_id``
column when the data has one, else a gap of more than ``request_gap_minutes``
between consecutive interactions), each with the time of its first interaction and
the ``device`` / ``surface`` columns where the data has them. A held-out positive
belongs to its own interaction's request; the user's other examples (retrieval
candidates, easy negatives) are spread over the user's requests at random (seeded),
so a request's rows share its context. The request features of the schema
(``request_features`` in ``configs/schema/*.yaml``: local hour, weekday, part of the
day, device, surface; see :mod:`recsys.runtime.request_features`, the one encoder
serving calls too) are the request's, chosen by ``RankerDataConfig.request_features``;
a share ``context_dropout`` of the training requests is encoded as unknown so that
the unknown bucket, which a request without a context gets, is trained. The
``user_segments`` request feature is each user's segments at the end of the training
split (``segments`` of :meth:`RankerContext.from_processed`, from
:func:`recsys.segments.offline.memberships_at`: the online rules over the training
interactions), a bag of ids in the segment vocabulary saved with the bundle.
:func:`request_lists` makes one candidate list per held-out request (the per-request
evaluation: :func:`per_request_metrics`).

Features (:func:`dense_feature_names`, in this order):

* retrieval: the two-tower score (the inner product the index searches by:
  temperature-scaled cosine, plus the item bias when the model has one)
  standardized over the user's candidate list (two-tower models trained on
  different data score on different scales; the within-list z-score transfers
  from the model-selection run to the final one), ``log(1 + rank)`` in the
  retrieval list, and optionally the raw score;
* user activity: training interactions in the last ``d`` days before the
  request time for each window ``d``, and in total (log scale);
* item popularity: training interactions in total and in the last ``d`` days
  before the user's request time (log scale), and the item's age in years at
  the request time (from its release date, else its year);
* item-item affinity to the user's history (``affinity`` in the config): the sum
  of cosine co-occurrence similarities (``knn``) or of the closed-form
  item-item regression weights of EASE (Steck, 2019; ``ease``) between the item
  and the user's training items, raw and standardized over the candidate list.
* sparse features: every sparse feature of the schema (user id, demographics,
  hour, weekday, the user's recent items as a bag, item id, genres, year and
  popularity buckets), encoded with the ranker's own vocabularies.

Examples (:func:`build_ranker_examples`): for each user with held-out
interactions, every retrieval candidate (or a sample of the non-positive ones:
the *hard* negatives), the held-out items themselves (positives, also when the
retrieval missed them), and *easy* negatives drawn uniformly from the rest of
the catalogue (neither seen, held out nor retrieved). Labels are ``implicit``
(any held-out interaction is positive) or ``rating`` (held-out ratings at or
above a threshold are positive, the others negative).

Example:
    >>> ctx = RankerContext.from_processed(selection, schema, selection.vocabs,
    ...                                    RankerDataConfig())  # doctest: +SKIP
    >>> cands = retrieve_candidates(index, queries, np.arange(ctx.n_users), 200,
    ...                             exclude=ctx.seen)  # doctest: +SKIP
    >>> ex = build_ranker_examples(selection.test, ctx, cands, queries, item_vecs,
    ...                            RankerDataConfig())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torchrec import KeyedJaggedTensor
from torchrec.datasets.utils import Batch

from recsys.config import build
from recsys.data.frame import ITEM, RATING, TIMESTAMP, USER
from recsys.eval.metrics import UserItemCSR
from recsys.features.batching import EncodedFeatures, encode_features, kjt_from_parts
from recsys.features.schema import FeatureSchema, FeatureSpec, Role
from recsys.features.store import ProcessedDataset
from recsys.features.vocab import VocabularySet
from recsys.index import ItemIndex
from recsys.runtime import dense_features as runtime_dense
from recsys.runtime.dense_features import (
    AFFINITIES,
    SECONDS_PER_DAY,
    SECONDS_PER_YEAR,
    AffinityMethod,
    DenseFeatures,
)
from recsys.runtime.request_features import RequestFeature, encode_requests

__all__ = [
    "AFFINITIES",
    "CANDIDATE",
    "EASY_NEGATIVE",
    "IN_SAMPLE_POSITIVE",
    "MISSED_POSITIVE",
    "SECONDS_PER_DAY",
    "SECONDS_PER_YEAR",
    "Candidates",
    "DenseScaler",
    "LabelMode",
    "ListStats",
    "RankerBatches",
    "RankerContext",
    "RankerDataConfig",
    "RankerExamples",
    "Requests",
    "build_ranker_examples",
    "cosine_item_similarity",
    "dense_feature_names",
    "dense_matrix",
    "ease_item_weights",
    "held_out_pairs",
    "per_request_metrics",
    "ranker_sparse_specs",
    "request_feature_specs",
    "request_lists",
    "retrieve_candidates",
    "split_users",
]

# example kinds
CANDIDATE = 0
MISSED_POSITIVE = 1
EASY_NEGATIVE = 2
IN_SAMPLE_POSITIVE = 3

LabelMode = Literal["implicit", "rating"]


@dataclass
class RankerDataConfig:
    """How ranker examples and features are made (config key ``ranker.data``).

    Attributes:
        num_candidates: retrieval candidates per user (N).
        hard_negatives: non-positive candidates kept per user (-1: all of them,
            which matches what the ranker scores at serving time).
        easy_negatives_per_positive: catalogue negatives per positive, drawn
            uniformly from items the user neither saw, holds out nor was offered.
        include_missed_positives: keep held-out items the retrieval missed.
        in_sample_per_user: also use up to this many of each user's *training*
            interactions as positives (their features are computed with the
            interaction itself in the statistics; 0 disables; see
            ``docs/two_stage.md`` for what this does to accuracy).
        label: ``implicit`` or ``rating`` (see the module docstring).
        rating_threshold: ``rating`` labels: smallest positive rating.
        raw_retrieval_score: also feed the unstandardized retrieval score. Off
            by default: the model-selection two-tower and the final one score on
            different scales (ML-100K: top-200 scores around 12.8 vs 9.8), so a
            ranker trained on one misreads the other.
        windows_days: windows of the activity and popularity counts.
        affinity: item-item affinity features, a subset of ``("knn", "ease")``.
        ease_lambda: L2 penalty of the EASE item-item regression.
        max_affinity_items: catalogues larger than this refuse the affinity
            features (their dense ``[n_items, n_items]`` matrices).
        valid_user_fraction: share of users whose examples are held out for
            early stopping and for tuning the score weights.
        sparse_features: schema features fed to the ranker (None: every sparse one).
        request_features: request features of the schema (``request_features`` of
            ``configs/schema/*.yaml``: ``ctx_hour``, ``ctx_weekday``, ``ctx_daypart``,
            ``ctx_device``, ``ctx_surface``, ``user_segments``) fed to the ranker, taken
            from each example's request (empty: none).
        request_gap_minutes: held-out interactions of a user more than this apart
            start a new request (data without a ``session_id`` column).
        context_dropout: share of training requests whose request features are
            encoded as unknown (trains the bucket of requests without a context).
        dense_time: ``training`` (dense features at each user's last training
            interaction) or ``request`` (at each example's request time; served at the
            request context's time).
        seed: seed of negative sampling and the user split.
    """

    num_candidates: int = 200
    hard_negatives: int = -1
    easy_negatives_per_positive: float = 1.0
    include_missed_positives: bool = True
    in_sample_per_user: int = 0
    label: LabelMode = "implicit"
    rating_threshold: float = 4.0
    raw_retrieval_score: bool = False
    windows_days: tuple[int, ...] = (1, 7, 30)
    affinity: tuple[str, ...] = AFFINITIES
    ease_lambda: float = 300.0
    max_affinity_items: int = 20_000
    valid_user_fraction: float = 0.2
    sparse_features: tuple[str, ...] | None = None
    request_features: tuple[str, ...] = ()
    request_gap_minutes: float = 30.0
    context_dropout: float = 0.1
    dense_time: Literal["training", "request"] = "training"
    seed: int = 0

    def __post_init__(self) -> None:
        self.request_features = tuple(self.request_features)
        if len(set(self.request_features)) != len(self.request_features):
            raise ValueError(f"request_features names one twice: {self.request_features}")
        if self.request_gap_minutes <= 0:
            raise ValueError(
                f"request_gap_minutes must be positive, got {self.request_gap_minutes}"
            )
        if self.dense_time not in ("training", "request"):
            raise ValueError(f"dense_time must be 'training' or 'request', got {self.dense_time!r}")
        if not 0.0 <= self.context_dropout < 1.0:
            raise ValueError(f"context_dropout must be in [0, 1), got {self.context_dropout}")
        self.windows_days = tuple(int(d) for d in self.windows_days)
        self.affinity = tuple(self.affinity)
        if self.sparse_features is not None:
            self.sparse_features = tuple(self.sparse_features)
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.hard_negatives < -1:
            raise ValueError(f"hard_negatives must be -1 (all) or >= 0, got {self.hard_negatives}")
        if self.in_sample_per_user < 0:
            raise ValueError("in_sample_per_user must be >= 0")
        if self.easy_negatives_per_positive < 0:
            raise ValueError("easy_negatives_per_positive must be >= 0")
        if self.label not in ("implicit", "rating"):
            raise ValueError(f"label must be 'implicit' or 'rating', got {self.label!r}")
        unknown = sorted(set(self.affinity) - set(AFFINITIES))
        if unknown:
            raise ValueError(f"unknown affinity features {unknown}; known: {list(AFFINITIES)}")
        if any(d <= 0 for d in self.windows_days):
            raise ValueError(f"windows_days must be positive, got {self.windows_days}")
        if not 0.0 <= self.valid_user_fraction < 1.0:
            raise ValueError(
                f"valid_user_fraction must be in [0, 1), got {self.valid_user_fraction}"
            )
        if self.ease_lambda <= 0:
            raise ValueError(f"ease_lambda must be positive, got {self.ease_lambda}")

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any] | None, where: str = "ranker.data"
    ) -> RankerDataConfig:
        """From a config mapping (:func:`recsys.config.build`: unknown keys are errors)."""
        return build(cls, raw, where)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["windows_days"] = list(self.windows_days)
        out["affinity"] = list(self.affinity)
        out["request_features"] = list(self.request_features)
        if self.sparse_features is not None:
            out["sparse_features"] = list(self.sparse_features)
        return out


def dense_feature_names(config: RankerDataConfig) -> list[str]:
    """The ranker's dense features, in column order
    (:func:`recsys.runtime.dense_features.dense_feature_names`)."""
    return runtime_dense.dense_feature_names(
        config.windows_days, config.affinity, config.raw_retrieval_score
    )


# -- train-split statistics --------------------------------------------------------


def _seconds(ts: pd.Series) -> npt.NDArray[np.float64]:
    if not isinstance(ts.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(
        ts.dtype
    ):
        raise TypeError(f"column {TIMESTAMP!r} must be datetime64, got {ts.dtype}")
    values = ts.dt.tz_localize("UTC") if getattr(ts.dt, "tz", None) is None else ts
    ns = values.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ns.astype(np.float64) / 1e9


def _release_seconds(items: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Release time of each item: ``release_date``, else the middle of ``year``; NaN if neither."""
    out = np.full(len(items), np.nan)
    if "year" in items.columns:
        years = pd.to_numeric(items["year"], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        out = (years - 1970.0 + 0.5) * SECONDS_PER_YEAR
    if "release_date" in items.columns:
        dates = pd.to_datetime(items["release_date"], errors="coerce")
        known = dates.notna().to_numpy()
        if known.any():
            out[known] = _seconds(dates[known])
    return out


def _sorted_groups(
    groups: npt.NDArray[np.int64], times: npt.NDArray[np.float64], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``(offsets [n+1], times sorted by (group, time))``."""
    order = np.lexsort((times, groups))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(groups, minlength=n), out=offsets[1:])
    return offsets, times[order]


def cosine_item_similarity(seen: UserItemCSR, chunk: int = 2048) -> npt.NDArray[np.float32]:
    """Cosine similarity of items' binary user vectors, zero diagonal ``[I, I]``."""
    co = _cooccurrence(seen, chunk)
    norms = np.sqrt(np.diag(co)).astype(np.float32) + 1e-9
    sim = co / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    return sim.astype(np.float32)


def ease_item_weights(seen: UserItemCSR, lam: float, chunk: int = 2048) -> npt.NDArray[np.float32]:
    """EASE item-item weights: ``B = argmin ||X - XB||^2 + lam ||B||^2, diag(B) = 0``.

    Closed form (Steck, 2019): ``P = (X^T X + lam I)^-1``, ``B_ij = -P_ij / P_jj``.
    """
    gram = _cooccurrence(seen, chunk).astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    inv = np.linalg.inv(gram)
    weights = -inv / np.diag(inv)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def _cooccurrence(seen: UserItemCSR, chunk: int) -> npt.NDArray[np.float32]:
    n_items = seen.n_items
    co = np.zeros((n_items, n_items), dtype=np.float32)
    for lo in range(0, seen.n_users, chunk):
        block = _dense_rows(seen, np.arange(lo, min(lo + chunk, seen.n_users)))
        co += block.T @ block
    return co


def _dense_rows(seen: UserItemCSR, users: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    out = np.zeros((len(users), seen.n_items), dtype=np.float32)
    row, col = seen.gather(users)
    keep = col >= 0
    out[row[keep], col[keep]] = 1.0
    return out


@dataclass
class RankerContext:
    """What the ranker may know about users and items: one training split.

    Build it with :meth:`from_processed`. Index space: user ``u`` is row ``u`` of
    ``dataset.users``, item ``i`` row ``i`` of ``dataset.items``.

    Attributes:
        user_ids: original id per user index.
        item_ids: original id per item index.
        seen: each user's training items.
        request_time: seconds since the epoch per user (last training interaction).
        user_offsets: per-user runs of ``user_times``.
        user_times: training interaction times sorted by (user, time).
        item_offsets: per-item runs of ``item_times``.
        item_times: training interaction times sorted by (item, time).
        item_count: training interactions per item.
        release_time: release time per item in seconds (NaN unknown).
        item_item: per affinity feature its ``[I, I]`` matrix.
        users_encoded: sparse user-side features of every user.
        items_encoded: sparse item-side features of every item.
        sparse_names: the ranker's sparse features, KJT key order (the schema's, then
            the request features).
        user_keys: the user-side ones among them.
        num_embeddings: table rows per sparse feature (the vocabularies').
        config: the data config.
        request_specs: the request features (the last ``sparse_names``).
        segment_vocab: segment name -> id of ``user_segments`` (empty without it).
        user_segments: per user, its segments at the end of the training split.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    seen: UserItemCSR
    request_time: npt.NDArray[np.float64]
    user_offsets: npt.NDArray[np.int64]
    user_times: npt.NDArray[np.float64]
    item_offsets: npt.NDArray[np.int64]
    item_times: npt.NDArray[np.float64]
    item_count: npt.NDArray[np.float64]
    release_time: npt.NDArray[np.float64]
    item_item: dict[str, npt.NDArray[np.float32]]
    users_encoded: EncodedFeatures
    items_encoded: EncodedFeatures
    sparse_names: list[str]
    user_keys: list[str]
    num_embeddings: dict[str, int]
    config: RankerDataConfig = field(default_factory=RankerDataConfig)
    request_specs: list[RequestFeature] = field(default_factory=list)
    segment_vocab: dict[str, int] = field(default_factory=dict)
    user_segments: list[tuple[str, ...]] = field(default_factory=list)

    @classmethod
    def from_processed(
        cls,
        dataset: ProcessedDataset,
        schema: FeatureSchema,
        vocabs: VocabularySet,
        config: RankerDataConfig,
        segments: Mapping[str, Sequence[str]] | None = None,
        segment_names: Sequence[str] | None = None,
    ) -> RankerContext:
        """Statistics of ``dataset.train`` (its test and valid rows are never read).

        Args:
            dataset: a processed split.
            schema: the feature schema (sparse features and their sources).
            vocabs: the ranker's vocabularies (those of the data it is trained
                on: the ids must mean the same rows at training and serving time).
            config: feature settings.
            segments: raw user id (as a string) -> the user's segments at the end of
                ``dataset.train`` (:func:`recsys.segments.offline.memberships_at`);
                needed by a ``segments`` request feature (``user_segments``).
            segment_names: the segment vocabulary (every segment the rules define;
                ids ``1..`` in this order, saved with the bundle); default the sorted
                names found in ``segments``.

        Returns:
            The context.
        """
        train = dataset.train
        users, items = dataset.users, dataset.items
        user_index = pd.Index(users[USER].to_numpy())
        item_index = pd.Index(items[ITEM].to_numpy())
        u = user_index.get_indexer(train[USER].to_numpy())
        i = item_index.get_indexer(train[ITEM].to_numpy())
        if (u < 0).any() or (i < 0).any():
            raise ValueError(
                f"{int((u < 0).sum())} training rows name unknown users and "
                f"{int((i < 0).sum())} unknown items (the tables must cover train)"
            )
        n_users, n_items = len(user_index), len(item_index)
        t = _seconds(train[TIMESTAMP])
        end = float(t.max()) if t.size else 0.0
        request = np.full(n_users, end)
        if t.size:
            last = pd.Series(t).groupby(u).max()
            request[last.index.to_numpy()] = last.to_numpy()
        u_off, u_times = _sorted_groups(u.astype(np.int64), t, n_users)
        i_off, i_times = _sorted_groups(i.astype(np.int64), t, n_items)
        seen = UserItemCSR.from_pairs(u, i, n_users=n_users, n_items=n_items)

        item_item: dict[str, npt.NDArray[np.float32]] = {}
        if config.affinity and n_items > config.max_affinity_items:
            raise ValueError(
                f"affinity features need dense [{n_items}, {n_items}] matrices; the catalogue "
                f"exceeds max_affinity_items={config.max_affinity_items} (set affinity: [])"
            )
        if "knn" in config.affinity:
            item_item["knn"] = cosine_item_similarity(seen)
        if "ease" in config.affinity:
            item_item["ease"] = ease_item_weights(seen, config.ease_lambda)

        specs = ranker_sparse_specs(schema, config)
        names = [f.name for f in specs]
        user_specs = [f for f in specs if f.role in (Role.USER, Role.CONTEXT)]
        item_specs = [f for f in specs if f.role is Role.ITEM]
        user_keys = [f.name for f in user_specs]
        item_keys = [f.name for f in item_specs]
        users_encoded = encode_features(
            users, user_specs, vocabs, empty_features=item_keys, key_order=names
        )
        items_encoded = encode_features(
            items, item_specs, vocabs, empty_features=user_keys, key_order=names
        )
        sizes = vocabs.num_embeddings()
        wants_segments = any(
            schema.request_feature(n).source == "segments" for n in config.request_features
        )
        if wants_segments and segments is None:
            raise ValueError(
                "a segments request feature needs each user's segments at the training "
                "cut-off (recsys.segments.offline.memberships_at)"
            )
        names_seen = sorted({s for v in (segments or {}).values() for s in v})
        vocab_names = list(segment_names) if segment_names is not None else names_seen
        if len(set(vocab_names)) != len(vocab_names):
            raise ValueError(f"segment names repeat: {vocab_names}")
        segment_vocab = {name: k + 1 for k, name in enumerate(vocab_names)}
        user_segments = [
            tuple(sorted((segments or {}).get(str(uid), ()))) for uid in user_index.tolist()
        ]
        request_specs = request_feature_specs(schema, config, len(segment_vocab))
        return cls(
            user_ids=user_index.to_numpy(),
            item_ids=item_index.to_numpy(),
            seen=seen,
            request_time=request,
            user_offsets=u_off,
            user_times=u_times,
            item_offsets=i_off,
            item_times=i_times,
            item_count=np.bincount(i, minlength=n_items).astype(np.float64),
            release_time=_release_seconds(items),
            item_item=item_item,
            users_encoded=users_encoded,
            items_encoded=items_encoded,
            sparse_names=names + [f.name for f in request_specs],
            user_keys=user_keys,
            num_embeddings={
                **{name: int(sizes[name]) for name in names},
                **{f.name: f.size for f in request_specs},
            },
            config=config,
            request_specs=request_specs,
            segment_vocab=segment_vocab if wants_segments else {},
            user_segments=user_segments if wants_segments else [],
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def dense_names(self) -> list[str]:
        return dense_feature_names(self.config)

    def dense_features(self) -> DenseFeatures:
        """The dense features' implementation over this context's statistics: the
        :class:`~recsys.runtime.dense_features.DenseFeatures` that serving builds from
        the same arrays (:func:`recsys.bundle.runtime_tables.ranker_features`)."""
        return DenseFeatures(
            names=self.dense_names,
            windows_days=self.config.windows_days,
            affinity=self.config.affinity,
            request_time=self.request_time,
            user_offsets=self.user_offsets,
            user_times=self.user_times,
            item_offsets=self.item_offsets,
            item_times=self.item_times,
            item_count=self.item_count,
            release_time=self.release_time,
            seen_indptr=self.seen.indptr,
            seen_indices=self.seen.indices,
            item_item=self.item_item,
        )

    def item_age_years(
        self, items: npt.NDArray[np.int64], users: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """Years between each item's release and the user's request time (NaN unknown);
        any shape (:func:`recsys.runtime.dense_features.item_age_years`)."""
        return runtime_dense.item_age_years(self.request_time[users], self.release_time[items])

    def affinity(
        self,
        name: str,
        users: npt.NDArray[np.int64],
        items: npt.NDArray[np.int64],
        method: AffinityMethod = "matmul",
    ) -> npt.NDArray[np.float32]:
        """Sum over the user's training items ``j`` of ``item_item[name][j, item]``
        (:func:`recsys.runtime.dense_features.affinity_pairs`)."""
        return runtime_dense.affinity_pairs(
            self.item_item[name], self.seen.indptr, self.seen.indices, users, items, method
        )

    def raw_features(
        self,
        users: npt.NDArray[np.int64],
        items: npt.NDArray[np.int64],
        retrieval_score: npt.NDArray[np.float32],
        retrieval_rank: npt.NDArray[np.int64],
        affinity_method: AffinityMethod = "matmul",
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Every dense feature except the within-list z-scores, by name
        (:meth:`recsys.runtime.dense_features.DenseFeatures.raw`).

        An unknown release date takes the median known age over all the rows of the
        call (the catalogue's typical age at that time: a neutral value).
        """
        return self.dense_features().raw(
            users,
            items,
            retrieval_score,
            retrieval_rank,
            age_lists=None,
            affinity_method=affinity_method,
        )

    @property
    def request_names(self) -> list[str]:
        """The request features among :attr:`sparse_names` (their last entries)."""
        return [f.name for f in self.request_specs]

    def request_ids(
        self, requests: Requests, unknown: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.int64]:
        """``[R, F_request, L]`` ids of the request features of ``requests``
        (:func:`recsys.runtime.request_features.encode_requests`, the encoder serving
        runs); rows in ``unknown`` are encoded as requests without a context."""
        times = requests.time.copy()
        devices, surfaces = list(requests.device), list(requests.surface)
        if unknown is not None:
            times[unknown] = np.nan
            for r in np.flatnonzero(unknown).tolist():
                devices[r], surfaces[r] = None, None
        segments = None
        if self.user_segments:
            segments = [self.user_segments[u] if u >= 0 else () for u in requests.user.tolist()]
        return encode_requests(
            self.request_specs,
            request_time_s=times,
            devices=devices,
            surfaces=surfaces,
            segments=segments,
            segment_vocab=self.segment_vocab,
            n=len(requests),
        ).ids

    def unknown_request_ids(self, users: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """``[n, F_request, L]`` ids of requests without a context by ``users`` (their
        segments are those at the training cut-off)."""
        return self.request_ids(Requests.unknown(np.asarray(users, dtype=np.int64)))

    def sparse_batch(
        self,
        users: npt.NDArray[np.int64],
        items: npt.NDArray[np.int64],
        request_ids: npt.NDArray[np.int64] | None = None,
    ) -> KeyedJaggedTensor:
        """The KJT of the ranker's sparse features for (user, item) pairs.

        Args:
            users: user index per pair.
            items: item index per pair.
            request_ids: ``[n, F_request, L]`` request-feature ids per pair (``-1``
                padding), e.g. ``context.request_ids(requests)[example.request]``;
                None: requests without a context (and the users' segments at the
                training cut-off).
        """
        parts = []
        n_request = len(self.request_specs)
        for key in self.sparse_names[: len(self.sparse_names) - n_request]:
            table = self.users_encoded if key in self.user_keys else self.items_encoded
            rows = users if key in self.user_keys else items
            parts.append(table.sparse[key].rows(rows))
        if n_request:
            ids = self.unknown_request_ids(users) if request_ids is None else request_ids
            if ids.shape[:2] != (len(users), n_request):
                raise ValueError(
                    f"request ids must be [{len(users)}, {n_request}, L], got {ids.shape}"
                )
            for f in range(n_request):
                block = ids[:, f, :]
                present = block >= 0
                parts.append((block[present], present.sum(axis=1)))
        return kjt_from_parts(self.sparse_names, parts, len(users))


def request_feature_specs(
    schema: FeatureSchema, config: RankerDataConfig, n_segments: int = 0
) -> list[RequestFeature]:
    """The request features the ranker reads (``config.request_features``), as the
    runtime encoder takes them, from the schema's ``request_features`` declarations;
    a ``segments`` feature has ``1 + n_segments`` rows (id 0 stays unused: an unknown
    segment name is dropped, not mapped)."""
    out = []
    for name in config.request_features:
        spec = schema.request_feature(name)
        assert spec.vocab is not None
        size = 1 + max(n_segments, 1) if spec.source == "segments" else int(spec.vocab.size or 0)
        out.append(RequestFeature(spec.name, spec.source, size, spec.max_len))
    return out


def ranker_sparse_specs(schema: FeatureSchema, config: RankerDataConfig) -> list[FeatureSpec]:
    """The sparse schema features the ranker uses, in schema order."""
    sparse = schema.sparse()
    if config.sparse_features is None:
        return sparse
    unknown = sorted(set(config.sparse_features) - {f.name for f in sparse})
    if unknown:
        raise ValueError(f"sparse_features names {unknown}, not sparse features of the schema")
    return [f for f in sparse if f.name in config.sparse_features]


# -- candidates --------------------------------------------------------------------


@dataclass
class Candidates:
    """Top-N retrieval results per user, in the context's index space.

    Attributes:
        users: ``[U]`` user indices.
        items: ``[U, N]`` item indices, best first; ``-1`` pads short rows.
        scores: ``[U, N]`` retrieval scores; ``-inf`` in padding.
    """

    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        return self.items >= 0

    def pairs(
        self,
    ) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]
    ]:
        """Flat ``(users, items, scores, ranks)`` of the valid slots."""
        valid = self.valid
        rows, ranks = np.nonzero(valid)
        return self.users[rows], self.items[valid], self.scores[valid], ranks.astype(np.int64)


def retrieve_candidates(
    index: ItemIndex,
    query_vectors: npt.NDArray[np.float32],
    users: npt.NDArray[np.int64],
    n: int,
    exclude: UserItemCSR | None = None,
    blocked: npt.NDArray[np.int64] | None = None,
) -> Candidates:
    """Top-``n`` items per user from an :class:`ItemIndex` built over item indices.

    Args:
        index: built with ``item_ids = arange(n_items)`` (ids are item indices).
        query_vectors: ``[n_users, D]`` query vectors by user index.
        users: which users.
        n: candidates per user (clamped to the catalogue by the index).
        exclude: per-user items never returned (seen items).
        blocked: items never returned to anyone (business filters).

    Returns:
        :class:`Candidates` of shape ``[len(users), min(n, n_items)]``; FAISS's
        padding becomes ``-1`` with score ``-inf``, never an item.
    """
    users = np.asarray(users, dtype=np.int64)
    extra = np.asarray(blocked if blocked is not None else [], dtype=np.int64)
    excl: list[npt.NDArray[np.int64] | None] | None = None
    if exclude is not None or extra.size:
        excl = []
        for j in range(len(users)):
            own = (
                exclude.indices[exclude.indptr[users[j]] : exclude.indptr[users[j] + 1]]
                if exclude is not None
                else np.empty(0, dtype=np.int64)
            )
            own = own[own >= 0]
            excl.append(np.concatenate([own, extra]) if extra.size else own)
    result = index.search(query_vectors[users], n, exclude=excl)
    items = np.where(result.valid, result.item_ids, -1).astype(np.int64)
    scores = np.where(result.valid, result.scores, -np.inf).astype(np.float32)
    return Candidates(users=users, items=items, scores=scores)


# -- examples ----------------------------------------------------------------------


@dataclass
class Requests:
    """The requests the ranker's examples come from (a list = a request).

    Attributes:
        user: ``[R]`` user index of each request.
        time: ``[R]`` request time, seconds since the epoch (UTC; NaN unknown).
        device: ``[R]`` device class names (None unknown).
        surface: ``[R]`` surface names (None unknown).
    """

    user: npt.NDArray[np.int64]
    time: npt.NDArray[np.float64]
    device: npt.NDArray[np.object_]
    surface: npt.NDArray[np.object_]

    def __post_init__(self) -> None:
        n = len(self.user)
        if not len(self.time) == len(self.device) == len(self.surface) == n:
            raise ValueError("user, time, device and surface must have one entry per request")

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def unknown(cls, users: npt.NDArray[np.int64]) -> Requests:
        """One request per entry of ``users`` without any context."""
        n = len(users)
        none = np.full(n, None, dtype=object)
        return cls(np.asarray(users, np.int64), np.full(n, np.nan), none, none.copy())

    def summary(self) -> dict[str, float]:
        return {
            "requests": float(len(self)),
            "requests_per_user": float(len(self) / max(len(np.unique(self.user)), 1)),
            "with_time": float(np.isfinite(self.time).mean()) if len(self) else 0.0,
            "with_device": float(np.mean([d is not None for d in self.device]))
            if len(self)
            else 0.0,
        }


def _text_column(frame: pd.DataFrame, names: Sequence[str]) -> npt.NDArray[np.object_]:
    """The first of ``names`` that ``frame`` has, as objects (None where missing)."""
    for name in names:
        if name in frame.columns:
            col = frame[name]
            return np.asarray(
                [None if pd.isna(v) or v == "" else str(v) for v in col.tolist()], dtype=object
            )
    return np.full(len(frame), None, dtype=object)


def held_out_requests(
    held_out: pd.DataFrame, context: RankerContext, config: RankerDataConfig
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.int64],
    Requests,
]:
    """Held-out interactions as ``(users, items, labels, request, requests)``.

    The pairs are those of :func:`held_out_pairs`; ``request`` is each pair's request
    (see the module docstring: sessions, or gaps over ``config.request_gap_minutes``),
    ``requests`` sorted by (user, time).
    """
    u = pd.Index(context.user_ids).get_indexer(held_out[USER].to_numpy())
    i = pd.Index(context.item_ids).get_indexer(held_out[ITEM].to_numpy())
    keep = (u >= 0) & (i >= 0)
    if config.label == "rating":
        if RATING not in held_out.columns:
            raise ValueError("label='rating' needs a rating column in the held-out rows")
        ratings = held_out[RATING].to_numpy(dtype=np.float64)
        labels = (ratings >= config.rating_threshold).astype(np.float32)
    else:
        labels = np.ones(len(held_out), dtype=np.float32)
    t = (
        _seconds(held_out[TIMESTAMP])
        if TIMESTAMP in held_out.columns
        else np.full(len(held_out), np.nan)
    )
    frame = pd.DataFrame(
        {
            "u": u,
            "i": i,
            "y": labels,
            "t": t,
            "device": _text_column(held_out, ("device", "device_type")),
            "surface": _text_column(held_out, ("surface",)),
        }
    )
    if "session_id" in held_out.columns:
        frame["s"] = held_out["session_id"].to_numpy()
    frame = frame[keep].reset_index(drop=True)
    frame["row"] = np.arange(len(frame))
    frame = frame.sort_values(["u", "t", "row"], kind="stable", na_position="first")
    uu, tt = frame["u"].to_numpy(np.int64), frame["t"].to_numpy(np.float64)
    new_user = np.r_[True, uu[1:] != uu[:-1]] if len(uu) else np.zeros(0, bool)
    if "s" in frame.columns:
        ss = frame["s"].to_numpy()
        new = new_user | np.r_[True, ss[1:] != ss[:-1]] if len(ss) else new_user
    else:
        gap = np.r_[np.inf, np.diff(tt)] if len(tt) else np.zeros(0)
        # unknown times cannot be told apart: a user's rows without a time form one request
        new = new_user | (gap > 60.0 * config.request_gap_minutes)
    req_sorted = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    requests = Requests(
        user=uu[first],
        time=tt[first],
        device=frame["device"].to_numpy()[first],
        surface=frame["surface"].to_numpy()[first],
    )
    frame["r"] = req_sorted
    frame = frame.sort_values("row", kind="stable")
    frame = frame.drop_duplicates(["u", "i"], keep="last")
    return (
        frame["u"].to_numpy(np.int64),
        frame["i"].to_numpy(np.int64),
        frame["y"].to_numpy(np.float32),
        frame["r"].to_numpy(np.int64),
        requests,
    )


def _random_request(
    users: npt.NDArray[np.int64], requests: Requests, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """A uniformly drawn request of each row's user (every user must have one)."""
    n_users = int(max(users.max(initial=-1), requests.user.max(initial=-1))) + 1
    count = np.bincount(requests.user, minlength=n_users)
    if (count[users] == 0).any():
        raise ValueError("rows of users without a held-out request")
    start = np.r_[0, np.cumsum(count)[:-1]]
    pick = np.floor(rng.random(len(users)) * count[users]).astype(np.int64)
    return start[users] + pick


@dataclass
class RankerExamples:
    """Labelled (user, item) pairs with their retrieval score and rank.

    Attributes:
        users: user index per example.
        items: item index per example.
        labels: 0/1 float32.
        retrieval_score: the retrieval model's score.
        retrieval_rank: 0-based rank in the user's candidate list (N when the
            item was not retrieved).
        kind: :data:`CANDIDATE`, :data:`MISSED_POSITIVE`, :data:`EASY_NEGATIVE` or
            :data:`IN_SAMPLE_POSITIVE`.
        request: request index per example (into ``requests``).
        requests: the requests (None: one context-free request per user).
    """

    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    labels: npt.NDArray[np.float32]
    retrieval_score: npt.NDArray[np.float32]
    retrieval_rank: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int8]
    request: npt.NDArray[np.int64] | None = None
    requests: Requests | None = None

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> RankerExamples:
        return RankerExamples(
            users=self.users[mask],
            items=self.items[mask],
            labels=self.labels[mask],
            retrieval_score=self.retrieval_score[mask],
            retrieval_rank=self.retrieval_rank[mask],
            kind=self.kind[mask],
            request=None if self.request is None else self.request[mask],
            requests=self.requests,
        )

    def request_time(self) -> npt.NDArray[np.float64] | None:
        """Each example's request time (seconds, NaN unknown; None without requests)."""
        if self.requests is None or self.request is None:
            return None
        return self.requests.time[self.request]

    def request_ids(
        self, context: RankerContext, dropout: float = 0.0, seed: int = 0
    ) -> npt.NDArray[np.int64] | None:
        """``[n, F_request, L]`` request-feature ids of every example (None when the
        context has no request features); a seeded share ``dropout`` of the requests
        is encoded without a context."""
        if not context.request_specs:
            return None
        if self.requests is None or self.request is None:
            return context.unknown_request_ids(self.users)
        unknown = None
        if dropout > 0:
            unknown = np.random.default_rng([seed, 2]).random(len(self.requests)) < dropout
        return context.request_ids(self.requests, unknown)[self.request]

    def summary(self) -> dict[str, float]:
        return {
            "rows": float(len(self)),
            "users": float(len(np.unique(self.users))),
            "positives": float(self.labels.sum()),
            "candidates": float((self.kind == CANDIDATE).sum()),
            "missed_positives": float((self.kind == MISSED_POSITIVE).sum()),
            "easy_negatives": float((self.kind == EASY_NEGATIVE).sum()),
            "in_sample_positives": float((self.kind == IN_SAMPLE_POSITIVE).sum()),
        }


def held_out_pairs(
    held_out: pd.DataFrame, context: RankerContext, config: RankerDataConfig
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Held-out interactions as ``(users, items, labels)`` in the context's index space.

    Rows of users or items outside the context are dropped (the ranker cannot
    score them); duplicates keep their last rating.
    """
    u = pd.Index(context.user_ids).get_indexer(held_out[USER].to_numpy())
    i = pd.Index(context.item_ids).get_indexer(held_out[ITEM].to_numpy())
    keep = (u >= 0) & (i >= 0)
    if config.label == "rating":
        if RATING not in held_out.columns:
            raise ValueError("label='rating' needs a rating column in the held-out rows")
        ratings = held_out[RATING].to_numpy(dtype=np.float64)
        labels = (ratings >= config.rating_threshold).astype(np.float32)
    else:
        labels = np.ones(len(held_out), dtype=np.float32)
    frame = pd.DataFrame({"u": u[keep], "i": i[keep], "y": labels[keep]})
    frame = frame.drop_duplicates(["u", "i"], keep="last")
    return (
        frame["u"].to_numpy(np.int64),
        frame["i"].to_numpy(np.int64),
        frame["y"].to_numpy(np.float32),
    )


def build_ranker_examples(
    held_out: pd.DataFrame,
    context: RankerContext,
    candidates: Candidates,
    query_vectors: npt.NDArray[np.float32],
    item_vectors: npt.NDArray[np.float32],
    config: RankerDataConfig,
) -> RankerExamples:
    """Ranker examples of the users with held-out interactions.

    Args:
        held_out: the interactions to predict (never used for features).
        context: training-split statistics (its ``seen`` items are never labels).
        candidates: the retrieval's top-N of (at least) the held-out users.
        query_vectors: ``[n_users, D]`` retrieval query vectors, to score the
            held-out items the retrieval missed, the easy negatives and the
            in-sample positives (score = inner product, as in the index).
        item_vectors: ``[n_items, D]`` retrieval item vectors.
        config: negatives, labels.

    Returns:
        The examples; a negative is never a held-out or training item of its user.
    """
    rng = np.random.default_rng(config.seed)
    # requests are drawn from their own stream: the examples stay those of the
    # same seed without requests
    req_rng = np.random.default_rng([config.seed, 1])
    n_items = context.n_items
    hu, hi, hy, hr, requests = held_out_requests(held_out, context, config)
    seen_keys = context.seen.keys()
    held_key = hu * n_items + hi
    if np.isin(held_key, seen_keys).any():
        raise ValueError(
            f"{int(np.isin(held_key, seen_keys).sum())} held-out pairs are also training "
            "interactions of the context: the ranker would learn from its own features"
        )
    label_of = pd.Series(hy, index=held_key)
    request_of = pd.Series(hr, index=held_key)
    wanted = np.isin(candidates.users, np.unique(hu))
    cu, ci, cs, cr = Candidates(
        candidates.users[wanted], candidates.items[wanted], candidates.scores[wanted]
    ).pairs()
    c_key = cu * n_items + ci
    c_label = label_of.reindex(c_key).fillna(0.0).to_numpy(np.float32)
    # a held-out item with a negative (low-rating) label is an explicit negative, kept
    is_held = np.isin(c_key, held_key)
    keep = np.ones(len(cu), dtype=bool)
    if config.hard_negatives >= 0:
        keep = is_held.copy()
        order = rng.permutation(len(cu))
        ranked = order[np.argsort(cu[order], kind="stable")]
        pool = ranked[~is_held[ranked]]
        pool_users = cu[pool]
        starts = np.searchsorted(pool_users, pool_users, "left")
        within = np.arange(len(pool)) - starts
        keep[pool[within < config.hard_negatives]] = True
    c_req = _random_request(cu, requests, req_rng)
    c_req[is_held] = request_of.reindex(c_key[is_held]).to_numpy(np.int64)
    parts = [
        (cu[keep], ci[keep], c_label[keep], cs[keep], cr[keep], CANDIDATE),
    ]
    req_parts = [c_req[keep]]

    missed = ~np.isin(held_key, c_key)
    if config.include_missed_positives and missed.any():
        mu, mi = hu[missed], hi[missed]
        score = np.einsum("ij,ij->i", query_vectors[mu], item_vectors[mi]).astype(np.float32)
        rank = np.full(len(mu), candidates.items.shape[1], dtype=np.int64)
        parts.append((mu, mi, hy[missed], score, rank, MISSED_POSITIVE))
        req_parts.append(hr[missed])

    if config.in_sample_per_user > 0:
        users = np.unique(hu)
        row, item = context.seen.gather(users)
        owner = users[row]
        order = rng.permutation(len(owner))
        order = order[np.argsort(owner[order], kind="stable")]
        starts = np.searchsorted(owner[order], owner[order], "left")
        pick = order[(np.arange(len(order)) - starts) < config.in_sample_per_user]
        iu, ii = owner[pick], item[pick]
        score = np.einsum("ij,ij->i", query_vectors[iu], item_vectors[ii]).astype(np.float32)
        rank = np.full(len(iu), candidates.items.shape[1], dtype=np.int64)
        parts.append((iu, ii, np.ones(len(iu), np.float32), score, rank, IN_SAMPLE_POSITIVE))
        req_parts.append(_random_request(iu, requests, req_rng))

    n_pos = np.bincount(hu[hy > 0], minlength=context.n_users)
    n_easy = np.floor(n_pos * config.easy_negatives_per_positive + rng.random(len(n_pos)))
    n_easy = n_easy.astype(np.int64)
    if n_easy.sum() > 0:
        eu = np.repeat(np.arange(context.n_users, dtype=np.int64), n_easy)
        # oversample, then drop forbidden draws (seen, held out, retrieved)
        draw_u = np.repeat(eu, 3)
        draw_i = rng.integers(0, n_items, len(draw_u))
        key = draw_u * n_items + draw_i
        forbidden = np.isin(key, seen_keys) | np.isin(key, held_key) | np.isin(key, c_key)
        draw_u, draw_i = draw_u[~forbidden], draw_i[~forbidden]
        _, first = np.unique(draw_u * n_items + draw_i, return_index=True)
        first = np.sort(first)
        draw_u, draw_i = draw_u[first], draw_i[first]
        starts = np.searchsorted(draw_u, draw_u, "left")
        take = (np.arange(len(draw_u)) - starts) < n_easy[draw_u]
        eu, ei = draw_u[take], draw_i[take]
        score = np.einsum("ij,ij->i", query_vectors[eu], item_vectors[ei]).astype(np.float32)
        rank = np.full(len(eu), candidates.items.shape[1], dtype=np.int64)
        parts.append((eu, ei, np.zeros(len(eu), np.float32), score, rank, EASY_NEGATIVE))
        req_parts.append(_random_request(eu, requests, req_rng))

    return RankerExamples(
        users=np.concatenate([p[0] for p in parts]).astype(np.int64),
        items=np.concatenate([p[1] for p in parts]).astype(np.int64),
        labels=np.concatenate([p[2] for p in parts]).astype(np.float32),
        retrieval_score=np.concatenate([p[3] for p in parts]).astype(np.float32),
        retrieval_rank=np.concatenate([p[4] for p in parts]).astype(np.int64),
        kind=np.concatenate([np.full(len(p[0]), p[5], dtype=np.int8) for p in parts]),
        request=np.concatenate(req_parts).astype(np.int64),
        requests=requests,
    )


def request_lists(
    held_out: pd.DataFrame,
    context: RankerContext,
    candidates: Candidates,
    config: RankerDataConfig,
) -> RankerExamples:
    """One candidate list per held-out request (the per-request evaluation).

    Each request of a user (see :func:`held_out_requests`) gets all of the user's
    retrieval candidates; those that are held-out items of this request are its
    positives, those held out in another of the user's requests are left out of it
    (they are another context's answers). Held-out items the retrieval missed are not
    in any list (as in the per-user candidate metrics).

    Args:
        held_out: the interactions to predict.
        context: training-split statistics.
        candidates: the retrieval's top-N of (at least) the held-out users.
        config: labels and request grouping.

    Returns:
        :data:`CANDIDATE` examples with ``request`` set (a list = a request).
    """
    n_items = context.n_items
    hu, hi, hy, hr, requests = held_out_requests(held_out, context, config)
    wanted = np.isin(candidates.users, np.unique(hu))
    cu, ci, cs, cr = Candidates(
        candidates.users[wanted], candidates.items[wanted], candidates.scores[wanted]
    ).pairs()
    order = np.argsort(cu, kind="stable")
    cu, ci, cs, cr = cu[order], ci[order], cs[order], cr[order]
    n_users = context.n_users
    c_count = np.bincount(cu, minlength=n_users)
    c_start = np.r_[0, np.cumsum(c_count)[:-1]]
    req_users = requests.user
    lengths = c_count[req_users]
    owner = np.repeat(np.arange(len(requests)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = c_start[req_users][owner] + within
    key = cu[rows] * n_items + ci[rows]
    held_key = hu * n_items + hi
    held_req = pd.Series(hr, index=held_key).reindex(key).fillna(-1).to_numpy(np.int64)
    held_lab = pd.Series(hy, index=held_key).reindex(key).fillna(0.0).to_numpy(np.float32)
    keep = (held_req < 0) | (held_req == owner)
    rows, owner = rows[keep], owner[keep]
    labels = np.where(held_req[keep] == owner, held_lab[keep], 0.0).astype(np.float32)
    return RankerExamples(
        users=cu[rows],
        items=ci[rows],
        labels=labels,
        retrieval_score=cs[rows],
        retrieval_rank=cr[rows],
        kind=np.full(len(rows), CANDIDATE, dtype=np.int8),
        request=owner.astype(np.int64),
        requests=requests,
    )


def per_request_metrics(
    labels: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    request: npt.NDArray[np.int64],
    k: int = 10,
) -> dict[str, float]:
    """NDCG@k and hit rate@k of each request's list, averaged over requests.

    Rows are ranked within their request by ``scores`` (ties: row order); requests
    without a positive are skipped. Binary gains.

    Args:
        labels: 0/1 per row.
        scores: ranker logits (or any score) per row.
        request: request of each row.
        k: cut-off.

    Returns:
        ``ndcg@k``, ``hit@k``, ``requests`` (with a positive).

    Example:
        >>> r = per_request_metrics(np.array([0, 1, 1, 0], np.float32),
        ...                         np.array([0.9, 0.1, 0.5, 0.2], np.float32),
        ...                         np.array([0, 0, 1, 1]), k=1)
        >>> r["ndcg@1"], r["requests"]
        (0.5, 2.0)
    """
    labels = np.asarray(labels, dtype=np.float64)
    request = np.asarray(request, dtype=np.int64)
    order = np.lexsort((np.arange(len(labels)), -np.asarray(scores, np.float64), request))
    req, lab = request[order], labels[order]
    start = np.r_[True, req[1:] != req[:-1]] if len(req) else np.zeros(0, bool)
    begin = np.flatnonzero(start)
    pos = np.arange(len(req)) - np.repeat(begin, np.diff(np.r_[begin, len(req)]))
    disc = 1.0 / np.log2(pos + 2.0)
    top = pos < k
    _, inv = np.unique(req, return_inverse=True)
    n_req = len(begin)
    dcg = np.bincount(inv, weights=lab * disc * top, minlength=n_req)
    hits = np.bincount(inv, weights=lab * top, minlength=n_req)
    n_pos = np.bincount(inv, weights=lab, minlength=n_req)
    ideal_disc = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))]
    idcg = ideal_disc[np.minimum(n_pos, k).astype(np.int64)]
    has = n_pos > 0
    return {
        f"ndcg@{k}": float(np.mean(dcg[has] / idcg[has])) if has.any() else float("nan"),
        f"hit@{k}": float(np.mean(hits[has] > 0)) if has.any() else float("nan"),
        "requests": float(has.sum()),
    }


def split_users(
    users: npt.NDArray[np.int64], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(train_users, valid_users)``: a seeded random share ``fraction`` of the distinct users."""
    uniq = np.unique(users)
    rng = np.random.default_rng(seed)
    valid = rng.random(len(uniq)) < fraction
    return uniq[~valid], uniq[valid]


# -- dense features ----------------------------------------------------------------


@dataclass
class ListStats:
    """Per-user mean and standard deviation of features over the candidate list.

    Attributes:
        mean: feature name -> ``[n_users]`` mean (0 where a user has no list).
        std: feature name -> ``[n_users]`` standard deviation (1 where undefined).
    """

    mean: dict[str, npt.NDArray[np.float64]]
    std: dict[str, npt.NDArray[np.float64]]

    @classmethod
    def from_rows(
        cls, users: npt.NDArray[np.int64], values: dict[str, npt.NDArray[np.float64]], n_users: int
    ) -> ListStats:
        """Statistics of ``values`` per user
        (:func:`recsys.runtime.dense_features.list_mean_std`)."""
        mean, std = {}, {}
        for name, v in values.items():
            mean[name], std[name] = runtime_dense.list_mean_std(v, users, n_users)
        return cls(mean, std)


def dense_matrix(
    context: RankerContext,
    users: npt.NDArray[np.int64],
    items: npt.NDArray[np.int64],
    retrieval_score: npt.NDArray[np.float32],
    retrieval_rank: npt.NDArray[np.int64],
    list_mask: npt.NDArray[np.bool_] | None = None,
    affinity_method: AffinityMethod = "matmul",
    request_time: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float32]:
    """The dense features ``[n, F]`` (unscaled) in :func:`dense_feature_names` order.

    Computed by :meth:`recsys.runtime.dense_features.DenseFeatures.unscaled`, the code
    serving runs, with the offline rules as its parameters: each user's rows form one
    list; the z-scores' statistics come from the rows in ``list_mask`` and apply to
    all the user's rows; an unknown item age takes the median over all rows of the call.

    Args:
        context: train-split statistics.
        users: user index per row.
        items: item index per row.
        retrieval_score: retrieval score per row.
        retrieval_rank: 0-based retrieval rank per row.
        list_mask: rows that make up the users' candidate lists, over which the
            z-scores are computed (default: all rows).
        affinity_method: how the affinities are summed
            (:func:`recsys.runtime.dense_features.affinity_pairs`): ``matmul`` (0/1
            user rows times the item-item matrix, as this module always did: BLAS
            over the training examples' hundreds of rows per user) or ``gather``
            (serving's per-user sum; the same sums in another order).
        request_time: per row, the time of its time-dependent features (seconds; NaN:
            the user's request time), read when ``context.config.dense_time`` is
            ``request``.

    Returns:
        float32 features.
    """
    return context.dense_features().unscaled(
        users,
        items,
        retrieval_score,
        retrieval_rank,
        list_ids=users,
        n_lists=context.n_users,
        list_mask=list_mask,
        age_lists=None,
        affinity_method=affinity_method,
        request_time=request_time if context.config.dense_time == "request" else None,
    )


@dataclass
class DenseScaler:
    """Standardizes dense features with statistics of the training examples only.

    Attributes:
        names: feature names (column order).
        mean: per-column mean.
        std: per-column standard deviation (1 for constant columns).
    """

    names: list[str]
    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]

    @classmethod
    def fit(cls, x: npt.NDArray[np.float32], names: Sequence[str]) -> DenseScaler:
        if x.ndim != 2 or x.shape[1] != len(names) or x.shape[0] == 0:
            raise ValueError(f"need a non-empty [n, {len(names)}] matrix, got {x.shape}")
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        return cls(list(names), mean, np.where(std > 1e-9, std, 1.0))

    def transform(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(x - mean) / std`` (:func:`recsys.runtime.dense_features.scale_dense`)."""
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"expected [n, {len(self.names)}] features, got {x.shape}")
        return runtime_dense.scale_dense(x, self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DenseScaler:
        return cls(list(raw["names"]), np.asarray(raw["mean"]), np.asarray(raw["std"]))


# -- batches -----------------------------------------------------------------------


class RankerBatches:
    """Re-iterable :class:`~torchrec.datasets.utils.Batch` es of ranker examples.

    Args:
        context: supplies the sparse features.
        users: user index per row.
        items: item index per row.
        dense: scaled dense features ``[n, F]``.
        labels: ``[n]`` 0/1 (zeros when scoring unlabelled pairs).
        batch_size: rows per batch.
        shuffle: new seeded order on every pass.
        seed: shuffling seed.
        request_ids: ``[n, F_request, L]`` request-feature ids per row
            (:meth:`RankerExamples.request_ids`); None: requests without a context.

    Example:
        >>> batches = RankerBatches(ctx, ex.users, ex.items, x, ex.labels, 1024)  # doctest: +SKIP
        >>> next(iter(batches)).dense_features.shape  # doctest: +SKIP
        torch.Size([1024, 16])
    """

    def __init__(
        self,
        context: RankerContext,
        users: npt.NDArray[np.int64],
        items: npt.NDArray[np.int64],
        dense: npt.NDArray[np.float32],
        labels: npt.NDArray[np.float32] | None,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        request_ids: npt.NDArray[np.int64] | None = None,
    ) -> None:
        n = len(users)
        if request_ids is not None and len(request_ids) != n:
            raise ValueError(f"{len(request_ids)} request-id rows for {n} examples")
        self.request_ids = request_ids
        if len(items) != n or dense.shape[0] != n or (labels is not None and len(labels) != n):
            raise ValueError("users, items, dense and labels must have the same rows")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.context = context
        self.users = users
        self.items = items
        self.dense = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
        self.labels = torch.from_numpy(
            np.ascontiguousarray(labels if labels is not None else np.zeros(n), dtype=np.float32)
        )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._passes = 0

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.users)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self._passes]).permutation(n)
        else:
            order = np.arange(n)
        self._passes += 1
        for lo in range(0, n, self.batch_size):
            rows = order[lo : lo + self.batch_size]
            t_rows = torch.from_numpy(rows)
            yield Batch(
                dense_features=self.dense[t_rows],
                sparse_features=self.context.sparse_batch(
                    self.users[rows],
                    self.items[rows],
                    None if self.request_ids is None else self.request_ids[rows],
                ),
                labels=self.labels[t_rows],
            )
