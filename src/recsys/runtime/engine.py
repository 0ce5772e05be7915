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
4. ranker logits of every (user, candidate) pair (:class:`~recsys.runtime.ranker_features.
   RankerFeatures` makes its inputs);
5. relevance, freshness and MMR (:mod:`recsys.runtime.ranking`), cut to ``k``;
6. users that are unknown, or have no candidate left, get the most popular allowed
   items (training counts, ties to the smaller item index; seen items removed for
   known users), scored ``log(1 + count)``.

With a user-state source (:mod:`recsys.runtime.user_state`: the real-time profiles of
the Redis or SQLite store), each request first reads the user's profile. A profile's
recent items join the user's seen items (never recommended again), and the user tower's
and the ranker's history feature become the training history followed by those items
(last ``max_len`` kept). A user the training run does not know but whose profile has a
history goes through both stages from the profile's history and demographics instead of
the popularity fallback. Without a profile, or when the store cannot be read (counted
and logged), the answer is the one from the training tables alone.

A user whose profile record says personalization consent was withdrawn (the store's
``personalization`` consent record is ``granted: false``) gets the non-personalized
list: the most popular allowed items, from no personal data (neither the training
history nor the profile nor segments).

Targeting rules (:mod:`recsys.runtime.targeting`, a rule source such as
:class:`~recsys.runtime.targeting.RuleFile`): per request, the rules whose window is open
and whose condition holds for the user's current segments (read with the profile) and
the request context make a plan; exclusions and pools filter the candidates of step 3
(or the fallback's popular items), boosts are added to the relevance of step 5 before
MMR, and pins are placed in the final list. Each answer names the rules that applied.

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
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from recsys.runtime.context import UNKNOWN, RequestContext
from recsys.runtime.experiments import ExperimentSet, merged_changes, parse_model
from recsys.runtime.exposure import ANONYMOUS_USER
from recsys.runtime.policies import DETERMINISTIC, SlatePolicy, parse_policy, request_rng
from recsys.runtime.ranker_features import SECONDS_PER_YEAR, RankerFeatures
from recsys.runtime.ranking import AggregationSettings, id_order, mmr_rerank, relevance
from recsys.runtime.targeting import (
    NO_PLAN,
    ItemCatalog,
    RuleSet,
    SlatePlan,
    TargetingEnv,
    fetch_depth,
    place_pins,
    rerank_fallback,
)
from recsys.runtime.user_state import (
    ProfileEncoding,
    ProfileRow,
    UserStateSource,
    item_key,
    recent_items,
)

LOGGER = logging.getLogger(__name__)

SETTINGS_PARAMS: tuple[str, ...] = (
    "ranker_weight",
    "retrieval_weight",
    "freshness_weight",
    "freshness_half_life_years",
    "mmr_lambda",
    "mmr_depth",
    "num_candidates",
)
"""The arm parameters (:data:`recsys.runtime.experiments.ARM_PARAMS`) that change the
two stages: the aggregation settings and the retrieval depth."""

ARRAYS_FILE = "tables.npz"
META_FILE = "tables.json"


def served_max_k(max_k: int | None, num_candidates: int, n_items: int) -> int:
    """The largest ``k`` served: ``max_k``, by default the retrieval depth N, and never
    above the catalogue size.

    With ``k <= N`` every request costs the same (N candidates are retrieved and ranked
    whatever ``k`` is), so a burst of long lists costs no more than one of short lists; a
    larger ``max_k`` lets a request buy up to ``k`` candidates of work.

    Example:
        >>> served_max_k(None, 200, 1682), served_max_k(5000, 200, 1682)
        (200, 1682)
    """
    if max_k is not None and max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    return min(num_candidates if max_k is None else int(max_k), n_items)


UserTowerFn = Callable[[np.ndarray], np.ndarray]
"""``ids [W, F, L] int64 -> embeddings [W, D] float32``."""
RetrievalFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``(queries [W, D], top_n [W]) -> (item indices [W, T], scores [W, T], counts [W])``."""
RankerFn = Callable[..., np.ndarray]
"""The ranker's inputs, in its input order, -> logits float32: ``(dense [P, n_dense],
ids [P, F, L]) -> [P]`` per pair, or for a ranker that scores candidate lists
(:attr:`RankerFeatures.per_list`) ``(dense [U, C, n_dense], ids [U, C, F, L],
list_ids [U, F_list, L_list]) -> [U, C]``."""


class RequestValueError(ValueError):
    """A request value the engine refuses (bad ``k``); the client's fault."""


class StageInputError(RuntimeError):
    """A stage's input or output that ``recommend`` built holds NaN or infinity.

    Such a value would rank garbage silently (NaN compares false with everything),
    so the lists it touches fail instead, with this message; the other lists of the
    batch are still answered.

    Attributes:
        positions: positions, in the served batch, of the lists that failed.
    """

    def __init__(self, message: str, positions: Sequence[int]) -> None:
        super().__init__(message)
        self.positions = sorted({int(p) for p in positions})


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
        profile: how real-time profile values become user-tower ids (history feature,
            item vocabulary, demographic maps); None: profiles cannot feed the tower.
        categories: category (genre) name -> sorted item indices, for targeting rules.
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
    profile: ProfileEncoding | None = None
    categories: dict[str, np.ndarray] = field(default_factory=dict)

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
        if self.profile is not None:
            if len(self.profile.item_vocab) != n_items:
                raise ValueError(
                    f"the profile item vocabulary covers {len(self.profile.item_vocab)} items, "
                    f"the tables {n_items}"
                )
            if self.profile.features != self.user_tower_features:
                raise ValueError("the profile encoding's features are not the user tower's")
        item_order = np.argsort(self.item_ids, kind="stable")
        self._sorted_items = self.item_ids[item_order]
        self._sorted_item_rows = item_order.astype(np.int64)
        # tie order of the aggregation: equal scores go to the smaller raw item id
        self.id_order = id_order(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def catalog(self) -> ItemCatalog:
        """The items and categories targeting rules may name."""
        return ItemCatalog(self.item_ids, self.categories)

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

    def item_rows(self, raw_item_ids: Sequence[Any]) -> np.ndarray:
        """Row of each raw item id (see :func:`~recsys.runtime.user_state.item_key`),
        ``-1`` for ids outside the catalogue."""
        keys = [item_key(v) for v in raw_item_ids]
        out = np.full(len(keys), -1, dtype=np.int64)
        known = np.array([k is not None for k in keys], dtype=bool)
        if self.n_items == 0 or not known.any():
            return out
        raw = np.array([k for k in keys if k is not None], dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_items, raw), self.n_items - 1)
        found = self._sorted_items[pos] == raw
        out[known] = np.where(found, self._sorted_item_rows[pos], -1)
        return out

    @property
    def new_user_request_time(self) -> float:
        """Request time of a user without training interactions: the end of training
        (what the offline context gives a cold user)."""
        return float(self.request_time.max()) if len(self.request_time) else 0.0

    def seen(self, row: int) -> np.ndarray:
        """Item indices user ``row`` interacted with in training."""
        items = self.seen_indices[self.seen_indptr[row] : self.seen_indptr[row + 1]]
        return items[items >= 0]

    def excluded(self, row: int, also_seen: np.ndarray | None = None) -> np.ndarray:
        """Sorted unique item indices never recommended to user ``row``.

        Args:
            row: the user's row (``-1``: a user without training items).
            also_seen: further item indices the user has seen (real-time profile).
        """
        if not self.settings.exclude_seen:
            return self.blocked
        seen = self.seen(row) if row >= 0 else np.zeros(0, dtype=np.int64)
        if also_seen is not None and len(also_seen):
            seen = np.concatenate([seen, also_seen])
        return np.union1d(seen, self.blocked).astype(np.int64)

    def popular(
        self, k: int, row: int, also_seen: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most popular allowed items (indices) and their ``log(1 + count)``.

        Args:
            k: list length.
            row: the user's row (``-1``: unknown user, only blocked items removed).
            also_seen: further item indices the user has seen (real-time profile).
        """
        drop = np.zeros(self.n_items, dtype=bool)
        drop[self.blocked] = True
        if self.settings.exclude_seen:
            if row >= 0:
                drop[self.seen(row)] = True
            if also_seen is not None:
                drop[also_seen] = True
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
        if self.profile is not None:
            arrays["profile_item_vocab"] = self.profile.item_vocab
        names = sorted(self.categories)
        if names:
            members = [np.asarray(self.categories[n], dtype=np.int64) for n in names]
            arrays["category_indptr"] = np.cumsum([0, *(len(m) for m in members)]).astype(np.int64)
            arrays["category_indices"] = np.concatenate(members)
        np.savez(out / ARRAYS_FILE, **arrays)
        meta = {
            "profile": None if self.profile is None else self.profile.to_json(),
            "user_tower_features": self.user_tower_features,
            "user_tower_num_embeddings": self.user_tower_num_embeddings,
            "settings": self.settings.to_dict(),
            "num_candidates": self.num_candidates,
            "query_scale": self.query_scale,
            "query_append_one": self.query_append_one,
            "extra": self.extra,
            "category_names": names,
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
        vocab = arrays.pop("profile_item_vocab", None)
        indptr = arrays.pop("category_indptr", None)
        indices = arrays.pop("category_indices", None)
        categories: dict[str, np.ndarray] = {}
        if indptr is not None and indices is not None:
            for i, name in enumerate(meta.get("category_names", [])):
                categories[str(name)] = indices[indptr[i] : indptr[i + 1]]
        profile = None
        if meta.get("profile") is not None and vocab is not None:
            profile = ProfileEncoding.from_json(meta["profile"], vocab)
        return cls(
            profile=profile,
            user_tower_features=list(meta["user_tower_features"]),
            user_tower_num_embeddings={
                k: int(v) for k, v in meta["user_tower_num_embeddings"].items()
            },
            settings=AggregationSettings.from_dict(meta["settings"]),
            num_candidates=int(meta["num_candidates"]),
            query_scale=float(meta.get("query_scale", 1.0)),
            query_append_one=bool(meta.get("query_append_one", False)),
            extra=dict(meta.get("extra", {})),
            categories=categories,
            **arrays,
        )


@dataclass
class RankedList:
    """One answer: raw item ids best first, their scores, and how it was made.

    Attributes:
        item_ids: raw item ids, best first.
        scores: their scores.
        fallback: the popularity fallback answered (no two-stage list).
        profile: the user's real-time profile shaped the list (history or seen items).
        error: why this request could not be answered (then the arrays are empty),
            e.g. a non-finite stage input (:class:`StageInputError`); None: answered.
        rules: the targeting rules that applied, in conflict order.
        segments: the user's segments the rules saw (empty when not personalized).
        personalized: False when the user withdrew personalization consent.
        conflicts: rule actions that were overridden or skipped.
        policy: the slate policy's id (:mod:`recsys.runtime.policies`).
        propensities: per shown item, its sequential choice probability under the
            policy (None: 1.0 each, a deterministic list); a pinned item's is 1.0.
        slate_propensity: the probability of the policy's slate.
        position_propensities: per shown item, its marginal probability at its
            position, where the policy has one and no pin moved the slate.
        experiments: the request's A/B assignments, ``{"experiment", "arm"}`` each.
        bandit: a policy bandit's choice for the exposure log (empty: none).
        params: the arm parameters this list was made with (name -> effective value,
            e.g. ``num_candidates`` after the ``max_k`` cap); empty: none.
        ranker: the ranker version an arm routed the list to (``ranker:2``); None: the
            served default.
    """

    item_ids: np.ndarray
    scores: np.ndarray
    fallback: bool
    profile: bool = False
    error: str | None = None
    rules: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    personalized: bool = True
    conflicts: tuple[str, ...] = ()
    policy: str = DETERMINISTIC
    propensities: np.ndarray | None = None
    slate_propensity: float = 1.0
    position_propensities: np.ndarray | None = None
    experiments: tuple[dict[str, str], ...] = ()
    bandit: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    ranker: str | None = None

    def explanation(self) -> dict[str, Any]:
        """How the list was made: rules, the segments they saw, consent, conflicts, and
        the A/B arms with the parameters and ranker version they applied."""
        out = {
            "rules": list(self.rules),
            "segments": list(self.segments),
            "personalized": self.personalized,
            "fallback": self.fallback,
            "conflicts": list(self.conflicts),
            "experiments": [dict(e) for e in self.experiments],
        }
        if self.params:
            out["params"] = dict(self.params)
        if self.ranker is not None:
            out["ranker"] = self.ranker
        return out

    def exposure_model(self, served: str) -> str:
        """The exposure's ``model`` field: the served model, plus the ranker version an
        arm routed the list to (``recommend:1/ranker:2``)."""
        return served if self.ranker is None else f"{served}/{self.ranker}"

    def exposure_extra(self) -> dict[str, Any] | None:
        """Payload fields beyond the slate: the bandit's choice and the arm parameters
        applied (``params``: ``["mmr_lambda=0.3", ...]``); None when there are none."""
        extra: dict[str, Any] = dict(self.bandit)
        if self.params:
            extra["params"] = [f"{k}={v}" for k, v in sorted(self.params.items())]
        return extra or None


@dataclass(frozen=True, eq=False)  # one cached object per distinct overrides: identity
class RequestVariant:
    """What A/B arms change in a request's two stages (``RecommendEngine`` makes them).

    Attributes:
        settings: the aggregation settings (the tables' with the arm's overrides).
        num_candidates: the retrieval depth N.
        ranker: the ranker version (``ranker:2``), or None for the served default.
        params: the overrides as applied, for the exposure log and the explanation.
    """

    settings: AggregationSettings
    num_candidates: int
    ranker: str | None = None
    params: tuple[tuple[str, Any], ...] = ()


@dataclass
class ServedUsers:
    """The users of one batch that go through the two stages, with their inputs.

    Attributes:
        rows: ``[W]`` training row of each user, ``-1`` for a user known only from the
            real-time profile.
        tower_ids: ``[W, F, L]`` user-tower input.
        excluded: per user, sorted item indices never recommended (seen + blocked).
        request_time: ``[W]`` request time (seconds; freshness).
        ranker_ids: ``[W, F', L']`` the ranker's user-side ids, or None to take the
            training rows' (no profile in the batch).
        profile: per user, whether a profile changed its inputs.
        affinity_items: per user, item indices consumed since training (from the
            profile, not among the training items) that the ranker's affinity
            features also sum over; None: none in the batch.
    """

    rows: np.ndarray
    tower_ids: np.ndarray
    excluded: list[np.ndarray]
    request_time: np.ndarray
    ranker_ids: np.ndarray | None = None
    profile: list[bool] = field(default_factory=list)
    affinity_items: list[np.ndarray | None] | None = None
    plans: list[SlatePlan] | None = None
    request_ids: list[str | None] | None = None
    policies: list[SlatePolicy] | None = None
    # each list's request context and the segments read with its profile: the ranker's
    # request features (recsys.runtime.request_features)
    contexts: list[RequestContext] | None = None
    segments: list[tuple[str, ...]] | None = None

    def subset(self, positions: np.ndarray) -> ServedUsers:
        """The users at ``positions`` (all of them: ``self``)."""
        if len(positions) == len(self.rows):
            return self
        picked = positions.tolist()
        return ServedUsers(
            rows=self.rows[positions],
            tower_ids=self.tower_ids[positions],
            excluded=[self.excluded[p] for p in picked],
            request_time=self.request_time[positions],
            ranker_ids=None if self.ranker_ids is None else self.ranker_ids[positions],
            profile=[self.profile[p] for p in picked] if self.profile else [],
            affinity_items=None
            if self.affinity_items is None
            else [self.affinity_items[p] for p in picked],
            plans=None if self.plans is None else [self.plans[p] for p in picked],
            request_ids=None if self.request_ids is None else [self.request_ids[p] for p in picked],
            policies=None if self.policies is None else [self.policies[p] for p in picked],
            contexts=None if self.contexts is None else [self.contexts[p] for p in picked],
            segments=None if self.segments is None else [self.segments[p] for p in picked],
        )


@dataclass
class UserStateStats:
    """Profile reads of an engine: requests, profiles used, store failures."""

    requests: int = 0
    profiles: int = 0
    new_users: int = 0
    failures: int = 0


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
        max_k: the largest ``k`` accepted (None: the retrieval depth N); capped at
            the catalogue size (see :func:`served_max_k`).
        user_state: real-time profiles (e.g. a
            :class:`~recsys.runtime.user_state.ProfileStoreReader`); None: the
            training tables alone.
        warn: called with a message when the user state cannot be read (default: the
            module's logger); the request is then answered from the tables.
        rules: targeting rules (anything with ``current() -> RuleSet``: a
            :class:`~recsys.runtime.targeting.RuleSet`, or a
            :class:`~recsys.runtime.targeting.RuleFile` that reloads); None: no rules.
        policy: how the shown slate is drawn from the ranking (default: its top k);
            stochastic policies draw with the request id's generator and report
            exact propensities (:mod:`recsys.runtime.policies`).
        experiments: A/B tests (:class:`~recsys.runtime.experiments.ExperimentSet`):
            each request's user (or session) is assigned to arms from its segments
            and context, and an arm's ``policy`` decides the request's slate policy.
        chooser: picks the slate policy of requests no experiment arm decides
            (anything with ``choose(context, segments) -> (SlatePolicy, payload)``,
            e.g. :class:`recsys.bandits.serving.PolicyBandit`); its payload goes to the
            exposure log. Only for personalized requests.
        rankers: other ranker versions an arm's ``model`` may route to, by reference
            (``{"ranker:2": fn}``); every arm's model must be one of them, and every
            arm's ``params`` must make valid settings (checked here, at start-up).
    """

    def __init__(
        self,
        tables: RecommendTables,
        features: RankerFeatures | None,
        user_tower: UserTowerFn,
        retrieval: RetrievalFn,
        ranker: RankerFn | None,
        max_k: int | None = None,
        user_state: UserStateSource | None = None,
        warn: Callable[[str], None] | None = None,
        rules: Any = None,
        policy: SlatePolicy | None = None,
        experiments: ExperimentSet | None = None,
        chooser: Any = None,
        rankers: Mapping[str, RankerFn] | None = None,
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
        self.tables = tables
        self.features = features
        self.user_tower = user_tower
        self.retrieval = retrieval
        self.ranker = ranker
        self.unknown_segments = 0  # segment names outside the ranker's vocabulary (dropped)
        self.max_k = served_max_k(max_k, tables.num_candidates, tables.n_items)
        self.user_state = user_state
        self.warn = warn or LOGGER.warning
        self.user_state_stats = UserStateStats()
        self.rules = rules
        self.policy = policy or SlatePolicy()
        self.experiments = experiments
        self.chooser = chooser
        self._policies: dict[str, SlatePolicy] = {}
        self.rankers = dict(rankers or {})
        self._variants: dict[tuple[Any, ...], RequestVariant] = {}
        for ref in self.rankers:
            parse_model(ref)
        if experiments is not None:
            for layer in experiments.layers:
                for exp in layer.experiments:
                    for arm in exp.arms:
                        try:
                            self.variant(
                                {k: v for k, v in arm.params.items() if k in SETTINGS_PARAMS},
                                arm.model,
                            )
                        except ValueError as error:
                            raise ValueError(
                                f"experiment {exp.name!r} arm {arm.name!r}: {error}"
                            ) from None

    def check_k(self, k: int) -> None:
        """Raises :class:`RequestValueError` unless ``1 <= k <= max_k``."""
        if k < 1:
            raise RequestValueError(f"k must be >= 1, got {k}")
        if k > self.max_k:
            raise RequestValueError(
                f"k={k} exceeds max_k={self.max_k} (the catalogue has {self.tables.n_items} "
                "items; max_k is at most that)"
            )

    @property
    def serves_new_users(self) -> bool:
        """Whether a profile-only user can go through the towers (tables support it)."""
        return self.tables.profile is not None and (
            self.features is None or self.features.profile is not None
        )

    def recommend(
        self,
        user_ids: np.ndarray,
        ks: Sequence[int] | np.ndarray,
        contexts: Sequence[RequestContext] | None = None,
        policies: Sequence[SlatePolicy | None] | None = None,
    ) -> list[RankedList]:
        """The top-``k`` list of each request.

        Args:
            user_ids: ``[R]`` raw user ids (unknown ones get popular items, unless
                their real-time profile has a history).
            ks: ``[R]`` list lengths, each in ``1..max_k``.
            contexts: ``[R]`` request contexts (what targeting rules see besides the
                user's segments); None: unknown.
            policies: ``[R]`` the slate policy of each request (e.g. an experiment arm's);
                None (or a None entry): the engine's policy.

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
        ctxs = list(contexts) if contexts is not None else [UNKNOWN] * len(raw)
        if len(ctxs) != len(raw):
            raise ValueError(f"{len(raw)} users but {len(ctxs)} contexts")
        rows = self.tables.user_rows(raw)
        profiles = self._read_profiles(raw)
        personal = [True] * len(raw)
        segments: list[tuple[str, ...]] = [()] * len(raw)
        if profiles is not None:
            for position, prof in enumerate(profiles):
                if prof is None:
                    continue
                if getattr(prof, "personalized", True) is False:
                    # consent withdrawn: no personal data, neither stored nor trained
                    personal[position] = False
                    profiles[position] = None
                    rows[position] = -1
                else:
                    segments[position] = tuple(sorted(getattr(prof, "segments", ()) or ()))
        plans = self._plans(segments, ctxs)
        arms: list[tuple[dict[str, str], ...]] = [()] * len(raw)
        variants: list[RequestVariant | None] = [None] * len(raw)
        if self.experiments is not None and self.experiments.layers:
            chosen: list[SlatePolicy | None] = (
                list(policies) if policies is not None else [None] * len(raw)
            )
            for position in range(len(raw)):
                # a user without personalization consent is hashed as the anonymous user
                unit = str(int(raw[position])) if personal[position] else ANONYMOUS_USER
                changes = merged_changes(
                    self.experiments.assign(unit, segments[position], ctxs[position])
                )
                arms[position] = tuple(dict(r) for r in changes.exposures)
                policy_text = changes.effective_policy
                if policy_text is not None and chosen[position] is None:
                    chosen[position] = self._policy(policy_text)
                if changes.settings_params or changes.model is not None:
                    variants[position] = self.variant(changes.settings_params, changes.model)
            policies = chosen
        bandit_payload: list[dict[str, Any]] = [{} for _ in range(len(raw))]
        if self.chooser is not None:
            picked = list(policies) if policies is not None else [None] * len(raw)
            for position in range(len(raw)):
                if picked[position] is None and personal[position]:
                    ctx = ctxs[position].with_request_id()
                    picked[position], bandit_payload[position] = self.chooser.choose(
                        ctx, segments[position]
                    )
            policies = picked
        out: list[RankedList | None] = [None] * len(raw)
        also_seen: list[np.ndarray | None] = [None] * len(raw)
        if profiles is None or all(p is None for p in profiles):
            warm = np.flatnonzero(rows >= 0)
            served = self._from_tables(rows[warm]) if len(warm) else None
        else:
            warm, served, also_seen = self._from_profiles(rows, profiles)
        if served is not None and len(warm):
            served.plans = [plans[p] for p in warm.tolist()]
            served.request_ids = [ctxs[p].request_id for p in warm.tolist()]
            served.contexts = [ctxs[p] for p in warm.tolist()]
            served.segments = [segments[p] for p in warm.tolist()]
            if policies is not None:
                if len(policies) != len(raw):
                    raise ValueError(f"{len(raw)} users but {len(policies)} policies")
                served.policies = [policies[p] or self.policy for p in warm.tolist()]
            # one pass of the stages per variant (arms that change settings or ranker)
            keyed = [variants[p] for p in warm.tolist()]
            for variant in dict.fromkeys(keyed):
                group = np.array([i for i, v in enumerate(keyed) if v is variant], np.int64)
                at = warm[group]
                answers = self._two_stage_checked(
                    served.subset(group), ks_arr[at], raw[at], variant
                )
                for position, answer in zip(at.tolist(), answers, strict=True):
                    out[position] = answer
        for position in range(len(raw)):
            if out[position] is None:
                extra = also_seen[position]
                length, row, plan = int(ks_arr[position]), int(rows[position]), plans[position]
                need = length if plan.empty else fetch_depth(plan, length, self.tables.n_items)
                items, scores = self.tables.popular(need, row, extra)
                skipped: tuple[str, ...] = ()
                if not plan.empty:
                    items, scores = rerank_fallback(plan, items, scores, length)
                    items, scores, skipped = place_pins(
                        plan,
                        items,
                        scores,
                        length,
                        _allowed(self.tables.excluded(row, extra), plan),
                    )
                out[position] = RankedList(
                    self.tables.item_ids[items],
                    scores,
                    fallback=True,
                    profile=extra is not None and len(extra) > 0,
                    conflicts=skipped,
                )
        return [
            replace(
                answer,
                rules=plans[position].rules,
                segments=segments[position],
                personalized=personal[position],
                conflicts=(*plans[position].conflicts, *answer.conflicts),
                experiments=arms[position],
                bandit=bandit_payload[position],
            )
            for position, answer in enumerate(out)
            if answer is not None
        ]

    def variant(self, params: dict[str, Any], model: str | None = None) -> RequestVariant:
        """The stages' settings with an arm's overrides (cached per distinct overrides).

        Args:
            params: aggregation settings and ``num_candidates`` by name
                (:data:`recsys.runtime.experiments.ARM_PARAMS` less the policy's).
            model: a ranker version (``ranker:2``) among ``rankers``, or None.

        Returns:
            The :class:`RequestVariant`; ``num_candidates`` is capped at ``max_k``.

        Raises:
            ValueError: the overrides make invalid settings, or an unknown ranker.

        Example::

            engine.variant({"mmr_lambda": 0.3}).settings.mmr_lambda   # 0.3
        """
        key = (tuple(sorted(params.items())), model)
        if key in self._variants:
            return self._variants[key]
        unknown = sorted(set(params) - set(SETTINGS_PARAMS))
        if unknown:
            raise ValueError(f"parameters {unknown} are not settings; known {SETTINGS_PARAMS}")
        if model is not None and model not in self.rankers:
            raise ValueError(
                f"model {model!r} is not served (ranker versions: {sorted(self.rankers)})"
            )
        t = self.tables
        updates = {k: v for k, v in params.items() if k != "num_candidates"}
        if "mmr_depth" in updates:
            updates["mmr_depth"] = int(updates["mmr_depth"])
        settings = replace(t.settings, **updates) if updates else t.settings
        if settings.ranker_weight > 0 and (self.features is None or self.ranker is None):
            raise ValueError("ranker_weight > 0 needs the ranker and its feature tables")
        depth = min(int(params.get("num_candidates", t.num_candidates)), self.max_k)
        applied = {**params}
        if "num_candidates" in params:
            applied["num_candidates"] = depth
        variant = RequestVariant(settings, depth, model, tuple(sorted(applied.items())))
        self._variants[key] = variant
        return variant

    def _policy(self, text: str) -> SlatePolicy:
        """An arm's policy, parsed once (same depth as the engine's own policy)."""
        if text not in self._policies:
            self._policies[text] = parse_policy(text, depth=self.policy.depth)
        return self._policies[text]

    def _plans(
        self, segments: Sequence[tuple[str, ...]], contexts: Sequence[RequestContext]
    ) -> list[SlatePlan]:
        """Each request's targeting plan (no rules: empty plans)."""
        rules: RuleSet | None = self.rules.current() if self.rules is not None else None
        if rules is None or len(rules) == 0:
            return [NO_PLAN] * len(segments)
        return [
            rules.plan(TargetingEnv.of(segs, ctx))
            for segs, ctx in zip(segments, contexts, strict=True)
        ]

    def _two_stage_checked(
        self,
        users: ServedUsers,
        ks: np.ndarray,
        raw: np.ndarray,
        variant: RequestVariant | None = None,
    ) -> list[RankedList | None]:
        """:meth:`_two_stage`, with the lists whose stage inputs are not finite failed
        (:class:`StageInputError`) and the others computed without them."""
        keep = np.arange(len(users.rows))
        failed: dict[int, str] = {}
        while len(keep):
            try:
                answers = self._two_stage(users.subset(keep), ks[keep], variant)
            except StageInputError as error:
                bad = keep[error.positions]
                for position in bad.tolist():
                    failed[position] = f"user {int(raw[position])}: {error}"
                keep = np.setdiff1d(keep, bad)
                continue
            done: list[RankedList | None] = [None] * len(users.rows)
            for position, answer in zip(keep.tolist(), answers, strict=True):
                done[position] = answer
            break
        else:
            done = [None] * len(users.rows)
        empty_items, empty_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        for position, message in failed.items():
            done[position] = RankedList(empty_items, empty_scores, fallback=False, error=message)
        return done

    # -- user state ------------------------------------------------------------------

    def _read_profiles(self, raw: np.ndarray) -> list[ProfileRow | None] | None:
        """Each user's profile, or None for the whole batch (no source, or it failed)."""
        if self.user_state is None or len(raw) == 0:
            return None
        self.user_state_stats.requests += len(raw)
        try:
            rows = list(self.user_state.read([int(u) for u in raw]))
        except Exception as error:
            # A store that cannot be read must not fail the request: the training
            # tables still answer it.
            self.user_state_stats.failures += 1
            self.warn(
                f"recommend: real-time profiles unavailable, serving {len(raw)} request(s) "
                f"from the training tables ({self.user_state_stats.failures} failed reads "
                f"so far): {error}"
            )
            return None
        if len(rows) != len(raw):
            raise RuntimeError(f"the user state returned {len(rows)} rows for {len(raw)} users")
        return rows

    def _from_tables(self, rows: np.ndarray) -> ServedUsers:
        t = self.tables
        return ServedUsers(
            rows=rows,
            tower_ids=t.user_tower_ids[rows],
            excluded=[t.excluded(int(r)) for r in rows],
            request_time=t.request_time[rows],
        )

    def _from_profiles(
        self, rows: np.ndarray, profiles: Sequence[ProfileRow | None]
    ) -> tuple[np.ndarray, ServedUsers | None, list[np.ndarray | None]]:
        """Served users of a batch whose profiles were read, and their seen items."""
        t, features = self.tables, self.features
        tower_history = t.profile.recent_items if t.profile is not None else None
        also: list[np.ndarray | None] = [None] * len(rows)
        item_rows: list[np.ndarray] = []
        warm: list[int] = []
        for position, (row, prof) in enumerate(zip(rows.tolist(), profiles, strict=True)):
            items = np.zeros(0, dtype=np.int64)
            if prof is not None:
                self.user_state_stats.profiles += 1
                history = recent_items(prof, tower_history or "user_recent_items")
                items = t.item_rows(history) if history else items
                also[position] = items[items >= 0]
            if row >= 0 or (len(items) and self.serves_new_users):
                warm.append(position)
                item_rows.append(items)
        if not warm:
            return np.zeros(0, dtype=np.int64), None, also
        served_rows = rows[warm]
        tower = t.user_tower_ids[np.maximum(served_rows, 0)].copy()
        ranker_ids = None
        if features is not None:
            ranker_ids = features.user_ids[np.maximum(served_rows, 0)].copy()
        excluded, times, changed = [], np.empty(len(warm)), []
        affinity_items: list[np.ndarray | None] = []
        for w, (position, row, items) in enumerate(
            zip(warm, served_rows.tolist(), item_rows, strict=True)
        ):
            prof = profiles[position]
            seen_now = also[position]
            if row >= 0:
                if len(items) and t.profile is not None:
                    tower[w] = t.profile.with_history(tower[w], items)
                if (
                    len(items)
                    and ranker_ids is not None
                    and features is not None
                    and (features.profile is not None)
                ):
                    ranker_ids[w] = features.profile.with_history(ranker_ids[w], items)
                times[w] = t.request_time[row]
            else:
                assert prof is not None and t.profile is not None
                self.user_state_stats.new_users += 1
                tower[w] = t.profile.new_user(prof.values, items)
                if ranker_ids is not None and features is not None:
                    assert features.profile is not None
                    ranker_ids[w] = features.profile.new_user(prof.values, items)
                times[w] = t.new_user_request_time
            excluded.append(t.excluded(row, seen_now))
            changed.append(bool(len(items)))
            affinity_items.append(
                np.setdiff1d(seen_now, features.training_items(row))
                if features is not None and seen_now is not None and len(seen_now)
                else None
            )
        return (
            np.asarray(warm, dtype=np.int64),
            ServedUsers(
                rows=served_rows,
                tower_ids=tower,
                excluded=excluded,
                request_time=times,
                ranker_ids=ranker_ids,
                profile=changed,
                affinity_items=affinity_items,
            ),
            also,
        )

    # -- stages ----------------------------------------------------------------------

    def candidates(
        self, users: ServedUsers, ks: np.ndarray, num_candidates: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Retrieval candidates of the served users, seen and blocked items removed.

        ``num_candidates`` replaces the tables' retrieval depth (an arm's override).

        Returns:
            ``(items [W, N], scores [W, N], valid [W, N])`` in the index space; row
            ``w`` holds at most ``min(max(num_candidates, ks[w]), n_items)`` valid
            slots, first, in retrieval order.
        """
        t = self.tables
        embeddings = np.asarray(self.user_tower(users.tower_ids), dtype=np.float32)
        if embeddings.shape[0] != len(users.rows):
            raise RuntimeError(
                f"user tower returned {embeddings.shape[0]} rows for {len(users.rows)}"
            )
        _require_finite("user_tower output", embeddings)
        queries = t.query_vectors(embeddings)
        depth = t.num_candidates if num_candidates is None else num_candidates
        wanted = np.minimum(np.maximum(depth, ks), t.n_items)
        plans = users.plans or [NO_PLAN] * len(users.rows)
        excluded = [
            e if len(p.exclude) == 0 else np.union1d(e, p.exclude)
            for e, p in zip(users.excluded, plans, strict=True)
        ]
        top_n = np.array(
            [
                fetch_depth(p, int(w) + len(e), t.n_items)
                for p, w, e in zip(plans, wanted, excluded, strict=True)
            ],
            dtype=np.int64,
        )
        ids, scores, counts = self.retrieval(queries, top_n)
        real = np.arange(np.shape(scores)[1])[None, :] < np.asarray(counts).reshape(-1, 1)
        _require_finite("retrieval scores", np.where(real, scores, 0.0))
        width = int(wanted.max())
        items = np.full((len(users.rows), width), -1, dtype=np.int64)
        cand_scores = np.full((len(users.rows), width), -np.inf, dtype=np.float32)
        for w in range(len(users.rows)):
            real = ids[w, : int(counts[w])]
            keep = (real >= 0) & (real < t.n_items) & ~np.isin(real, excluded[w])
            pool = plans[w].pool
            if pool is not None:
                keep &= np.isin(real, pool)
            take = np.flatnonzero(keep)[: int(wanted[w])]
            items[w, : len(take)] = real[take]
            cand_scores[w, : len(take)] = scores[w, take]
        return items, cand_scores, items >= 0

    def _request_ids(self, users: ServedUsers, lists: np.ndarray) -> np.ndarray | None:
        """The ranker's request-feature ids of each pair (None: it reads none): the
        lists' contexts and the segments read with their profiles (without a profile
        store: the training cut-off's) through the encoder training used."""
        assert self.features is not None
        if not self.features.request_features:
            return None
        n = len(users.rows)
        contexts = users.contexts if users.contexts is not None else [UNKNOWN] * n
        segments = users.segments
        if self.user_state is None:
            # no profile store: the memberships of the offline profile build at the
            # training cut-off, as the offline lists take them
            segments = self.features.training_segments(users.rows)
        encoded = self.features.encode_requests(contexts, segments)
        self.unknown_segments += encoded.dropped_segments
        return encoded.ids[lists]

    def _ranker_scores(
        self,
        users: ServedUsers,
        items: np.ndarray,
        scores: np.ndarray,
        valid: np.ndarray,
        ranker: str | None = None,
    ) -> np.ndarray:
        assert self.features is not None and self.ranker is not None
        model = self.ranker if ranker is None else self.rankers[ranker]
        lists, ranks = np.nonzero(valid)
        pair_users = users.rows[lists]
        pair_items = items[valid]
        dense = self.features.dense(
            pair_users,
            pair_items,
            scores[valid],
            ranks.astype(np.int64),
            lists,
            len(users.rows),
            extra_seen=users.affinity_items,
            request_time=None
            if users.contexts is None
            else _request_seconds(users.contexts)[lists],
        )
        _require_finite("ranker dense input", dense, lists, self.features.dense_names)
        if not self.features.per_list:
            ids = self.features.sparse(
                pair_users,
                pair_items,
                None if users.ranker_ids is None else users.ranker_ids[lists],
                self._request_ids(users, lists),
            )
            logits = np.asarray(model(dense, ids), dtype=np.float32).reshape(-1)
        else:
            # the lists as they are: empty slots score padding, and are not read
            by_list = np.zeros((*valid.shape, dense.shape[1]), dtype=np.float32)
            by_list[valid] = dense
            pair_ids, list_ids = self.features.list_sparse(
                users.rows,
                np.where(valid, items, -1),
                user_ids=users.ranker_ids,
                request_ids=self._request_ids(users, np.arange(len(users.rows))),
            )
            scored = np.asarray(model(by_list, pair_ids, list_ids), dtype=np.float32)
            if scored.shape != valid.shape:
                raise RuntimeError(f"ranker returned {scored.shape} scores for {valid.shape} lists")
            logits = scored[valid]
        if len(logits) != len(pair_users):
            raise RuntimeError(f"ranker returned {len(logits)} scores for {len(pair_users)} pairs")
        _require_finite("ranker logits", logits[:, None], lists)
        out = np.zeros(valid.shape, dtype=np.float64)
        out[valid] = logits
        return out

    def _two_stage(
        self, users: ServedUsers, ks: np.ndarray, variant: RequestVariant | None = None
    ) -> list[RankedList | None]:
        t = self.tables
        settings = t.settings if variant is None else variant.settings
        depth = t.num_candidates if variant is None else variant.num_candidates
        items, scores, valid = self.candidates(users, ks, depth)
        ranker_scores = None
        if settings.ranker_weight > 0 and valid.any():
            ranker = None if variant is None else variant.ranker
            ranker_scores = self._ranker_scores(users, items, scores, valid, ranker)
        age = None
        if settings.freshness_weight > 0:
            safe = np.maximum(items, 0)
            age = (users.request_time[:, None] - t.release_time[safe]) / SECONDS_PER_YEAR
        rel = relevance(valid, settings, ranker_scores, scores.astype(np.float64), age)
        plans = users.plans or [NO_PLAN] * len(users.rows)
        if any(len(p.boost_items) for p in plans):
            boost = np.stack([p.boosts(row) for p, row in zip(plans, items, strict=True)])
            rel = np.where(valid, rel + boost, rel)
        widths = np.minimum(np.maximum(depth, ks), t.n_items)
        kk = np.minimum(ks, widths)
        # MMR is greedy: the first kk picks of a longer run are the picks of a kk-run.
        vectors = t.item_embeddings[np.maximum(items, 0)]
        policies = users.policies or [self.policy] * len(users.rows)
        pool = np.minimum(
            np.array([p.pool_size(int(x)) for p, x in zip(policies, kk, strict=True)]), widths
        )
        positions = mmr_rerank(
            rel,
            vectors,
            valid,
            int(pool.max()),
            settings.mmr_lambda,
            tie_ids=t.id_order[np.maximum(items, 0)],
            depth=settings.mmr_depth,
        )
        out: list[RankedList | None] = []
        request_ids = users.request_ids or [None] * len(users.rows)
        for w in range(len(users.rows)):
            pos = positions[w, : int(pool[w])]
            pos = pos[pos >= 0]
            if len(pos) == 0:
                out.append(None)  # no candidate left: the popularity fallback answers
                continue
            slate = None
            policy = policies[w]
            if policy.stochastic:
                rng = request_rng(request_ids[w] or f"user-row-{int(users.rows[w])}")
                slate = policy.choose(rel[w, pos], int(kk[w]), rng)
                pos = pos[slate.order]
            else:
                pos = pos[: int(kk[w])]
            chosen, chosen_scores = items[w, pos], rel[w, pos].astype(np.float32)
            skipped: tuple[str, ...] = ()
            before_pins = chosen
            if plans[w].pins:
                chosen, chosen_scores, skipped = place_pins(
                    plans[w],
                    chosen,
                    chosen_scores,
                    int(kk[w]),
                    _allowed(users.excluded[w], plans[w]),
                )
            logged: dict[str, Any] = {}
            if slate is not None:
                logged = _logged_propensities(slate, before_pins, chosen)
                logged["policy"] = policy.id
            out.append(
                RankedList(
                    t.item_ids[chosen],
                    chosen_scores,
                    fallback=False,
                    profile=bool(users.profile[w]) if users.profile else False,
                    conflicts=skipped,
                    params={} if variant is None else dict(variant.params),
                    ranker=None if variant is None else variant.ranker,
                    **logged,
                )
            )
        return out


def _logged_propensities(slate: Any, drawn: np.ndarray, shown: np.ndarray) -> dict[str, Any]:
    """The policy's probabilities aligned with the shown list (after pins).

    A pinned item was put there by a rule (probability 1); an item a pin moved keeps its
    sequential choice probability, and the marginals then no longer hold (None).
    """
    if np.array_equal(drawn, shown):
        return {
            "propensities": slate.propensities,
            "slate_propensity": slate.slate_propensity,
            "position_propensities": slate.position_propensities,
        }
    of = dict(zip(drawn.tolist(), slate.propensities.tolist(), strict=True))
    return {
        "propensities": np.array([of.get(i, 1.0) for i in shown.tolist()], dtype=np.float64),
        "slate_propensity": slate.slate_propensity,
        "position_propensities": None,
    }


def _allowed(excluded: np.ndarray, plan: SlatePlan) -> Callable[[int], bool]:
    """Whether an item index may be pinned: not seen, blocked or excluded by a rule."""
    banned = set(np.asarray(excluded).tolist()) | set(plan.exclude.tolist())
    return lambda item: item not in banned


def _request_seconds(contexts: Sequence[RequestContext]) -> np.ndarray:
    """Each request's time in seconds since the epoch (NaN where it has none)."""
    return np.array(
        [np.nan if c.request_time_ms is None else c.request_time_ms / 1000.0 for c in contexts],
        dtype=np.float64,
    )


def _require_finite(
    stage: str,
    values: np.ndarray,
    lists: np.ndarray | None = None,
    columns: Sequence[str] = (),
) -> None:
    """Raises :class:`StageInputError` naming the lists and columns of ``values``
    (``[rows, columns]``) that hold NaN or infinity.

    Args:
        stage: what ``values`` is, for the message.
        values: one row per list, or per (list, candidate) pair with ``lists``.
        lists: the list of each row (None: row ``r`` is list ``r``).
        columns: column names for the message.
    """
    finite = np.isfinite(values)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.all(axis=1))
    bad_cols = np.flatnonzero(~finite.all(axis=0)).tolist()
    names = [columns[c] if c < len(columns) else str(c) for c in bad_cols]
    owners = bad_rows if lists is None else np.asarray(lists)[bad_rows]
    raise StageInputError(
        f"the {stage} holds NaN or infinity ({len(bad_rows)} row(s); column(s) "
        f"{', '.join(names)}): the list is not served rather than ranked on garbage",
        owners.tolist(),
    )
