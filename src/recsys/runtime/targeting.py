"""Targeting rules as the request path applies them: select, then shape one list.

A :class:`RuleSet` holds compiled :class:`Rule` objects (``recsys.targeting.loader``
compiles them from YAML). Per request, :meth:`RuleSet.plan` picks the rules whose time
window is open and whose condition holds for the request's :class:`TargetingEnv` (the
user's current segments and the request context) and merges their actions into one
:class:`SlatePlan`. The recommender then applies the plan in three places, the same
functions online (:class:`~recsys.runtime.engine.RecommendEngine`) and offline
(``TwoStageRecommender.recommend``):

1. candidates: :func:`restrict_rows` drops excluded items and, with a pool, every item
   outside it (retrieval then searches the whole catalogue for that request);
2. scores: :meth:`SlatePlan.boosts` is added to each candidate's relevance before the
   diversity re-rank (relevance is a sum of per-list z-scores, so a weight of 1.0 moves
   an item by about one standard deviation of its list);
3. the final list: :func:`place_pins` puts pinned items at their positions.

Conflict order, stated once:

* rules are taken by ``priority`` (higher first), then by name;
* an excluded item (a rule's ``exclude``, or the user's seen and blocked items) is never
  shown: exclusion beats pins, pools and boosts;
* pools: only the highest-priority rule's pool restricts the list; a lower-priority
  pool is recorded as a conflict;
* boosts and buries add up;
* pins: the higher-priority pin takes its position; a pin whose position or item is
  already taken, or whose item is excluded, is skipped and recorded as a conflict.

Numpy and the standard library only (the module runs inside Triton's python backend).
The YAML loader is imported lazily by :class:`RuleFile`.

Example:
    >>> rule = Rule(name="evening", priority=1, boosts=((np.array([2]), 0.5),))
    >>> plan = RuleSet([rule]).plan(TargetingEnv())
    >>> plan.rules, plan.boosts(np.array([1, 2, 3])).tolist()
    (('evening',), [0.0, 0.5, 0.0])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.runtime.context import UNKNOWN, RequestContext
from recsys.runtime.reloading import ReloadingFile


@dataclass(frozen=True)
class TargetingEnv:
    """What a rule's condition and time window see of one request.

    Attributes:
        segments: the user's current segment memberships (empty: none, or not
            personalized).
        context: the request context.
        now_ms: the request time (epoch ms): the context's, else the server clock.
    """

    segments: frozenset[str] = frozenset()
    context: RequestContext = UNKNOWN
    now_ms: int | None = None

    @classmethod
    def of(
        cls, segments: Sequence[str] = (), context: RequestContext | None = None
    ) -> TargetingEnv:
        """An environment at the context's request time, else now."""
        ctx = context or UNKNOWN
        now = ctx.request_time_ms if ctx.request_time_ms is not None else int(time.time() * 1000)
        return cls(frozenset(segments), ctx, now)

    @property
    def clock_ms(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def local_time(self) -> tuple[int, int]:
        """(hour 0-23, weekday Monday=0) at the user's offset (UTC when unknown)."""
        seconds = self.clock_ms // 1000 + 60 * (self.context.utc_offset_minutes or 0)
        return (seconds // 3600) % 24, (seconds // 86_400 + 3) % 7


@dataclass(frozen=True)
class ItemCatalog:
    """The items rules can name: raw ids in index order and the items of each category.

    Attributes:
        item_ids: ``[I]`` raw item id of each item index (int64).
        categories: category name -> sorted item indices.
    """

    item_ids: np.ndarray
    categories: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_genres(
        cls, item_ids: np.ndarray, genres: Sequence[Sequence[str]] | None
    ) -> ItemCatalog:
        """A catalogue from each item's category list (None: no categories)."""
        members: dict[str, list[int]] = {}
        for index, names in enumerate(genres or ()):
            for name in names or ():
                members.setdefault(str(name), []).append(index)
        return cls(
            np.asarray(item_ids, dtype=np.int64),
            {k: np.asarray(v, dtype=np.int64) for k, v in sorted(members.items())},
        )

    def rows(self, raw_ids: Sequence[int]) -> np.ndarray:
        """Index of each raw item id, ``-1`` for ids outside the catalogue."""
        order = np.argsort(self.item_ids, kind="stable")
        ids = self.item_ids[order]
        raw = np.asarray(raw_ids, dtype=np.int64)
        if len(ids) == 0:
            return np.full(len(raw), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(ids, raw), len(ids) - 1)
        return np.where(ids[pos] == raw, order[pos], -1).astype(np.int64)


@dataclass(frozen=True)
class ActiveWindow:
    """When a rule may apply: an absolute period and local hours and weekdays.

    Attributes:
        start_ms: first moment (epoch ms, inclusive); None: always started.
        end_ms: end (exclusive); None: never ends.
        hours: local hours (0-23) it applies in; empty: every hour.
        weekdays: local weekdays (Monday = 0); empty: every day.
    """

    start_ms: int | None = None
    end_ms: int | None = None
    hours: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()

    def open_at(self, env: TargetingEnv) -> bool:
        now = env.clock_ms
        if self.start_ms is not None and now < self.start_ms:
            return False
        if self.end_ms is not None and now >= self.end_ms:
            return False
        if self.hours or self.weekdays:
            hour, weekday = env.local_time()
            if self.hours and hour not in self.hours:
                return False
            if self.weekdays and weekday not in self.weekdays:
                return False
        return True


ALWAYS = ActiveWindow()


@dataclass(frozen=True)
class Rule:
    """One compiled targeting rule (item ids already resolved to catalogue indices).

    Attributes:
        name: unique name, reported in responses and the exposure log.
        priority: higher applies first (see the module's conflict order).
        condition: ``env -> bool``; None: always.
        condition_text: the condition as written (for explanations).
        window: when the rule may apply.
        boosts: ``(item indices, weight)`` pairs; a negative weight buries.
        exclude: item indices never shown while the rule applies.
        pool: the only item indices that may be shown (None: no restriction).
        pins: ``(item index, position)`` pairs, positions 1-based.
        uses_segments: the condition reads segment memberships.
    """

    name: str
    priority: int = 0
    condition: Callable[[TargetingEnv], bool] | None = None
    condition_text: str = ""
    window: ActiveWindow = ALWAYS
    boosts: tuple[tuple[np.ndarray, float], ...] = ()
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pool: np.ndarray | None = None
    pins: tuple[tuple[int, int], ...] = ()
    uses_segments: bool = False

    def applies(self, env: TargetingEnv) -> bool:
        if not self.window.open_at(env):
            return False
        return self.condition is None or bool(self.condition(env))


@dataclass(frozen=True)
class SlatePlan:
    """The merged actions of the rules that apply to one request.

    Attributes:
        rules: names of the rules that applied, in conflict order.
        exclude: sorted item indices never shown.
        pool: sorted item indices the list is restricted to, or None.
        boost_items: sorted item indices with a boost; ``boost_weights`` their sums.
        pins: ``(item index, position)`` in the order they are placed.
        conflicts: what was overridden (``"rule: reason"``).
    """

    rules: tuple[str, ...] = ()
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pool: np.ndarray | None = None
    boost_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boost_weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    pins: tuple[tuple[int, int], ...] = ()
    conflicts: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.rules

    @property
    def filters(self) -> bool:
        """Whether the plan removes candidates (exclusions or a pool)."""
        return len(self.exclude) > 0 or self.pool is not None

    def boosts(self, items: np.ndarray) -> np.ndarray:
        """The summed boost of each item index in ``items`` (any shape; -1 pads get 0)."""
        out = np.zeros(np.shape(items), dtype=np.float64)
        if len(self.boost_items) == 0:
            return out
        flat = np.asarray(items, dtype=np.int64).reshape(-1)
        pos = np.minimum(np.searchsorted(self.boost_items, flat), len(self.boost_items) - 1)
        hit = self.boost_items[pos] == flat
        values = np.where(hit, self.boost_weights[pos], 0.0)
        return values.reshape(np.shape(items))

    def allows(self, items: np.ndarray) -> np.ndarray:
        """Whether each item index may be shown under this plan (exclusion and pool)."""
        items = np.asarray(items, dtype=np.int64)
        ok = ~np.isin(items, self.exclude)
        if self.pool is not None:
            ok &= np.isin(items, self.pool)
        return ok


NO_PLAN = SlatePlan()


class RuleSet:
    """Compiled rules in conflict order.

    Args:
        rules: the rules (names must be unique).
        source: where they came from (file and content hash), for logs.
    """

    def __init__(self, rules: Sequence[Rule] = (), source: str = "") -> None:
        names = [r.name for r in rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {dup}")
        self.rules = sorted(rules, key=lambda r: (-r.priority, r.name))
        self.source = source

    def __len__(self) -> int:
        return len(self.rules)

    def current(self) -> RuleSet:
        """These rules (a fixed rule source; :class:`RuleFile` reloads)."""
        return self

    def plan(self, env: TargetingEnv) -> SlatePlan:
        """The plan of the rules that apply to ``env`` (see the module's conflict order)."""
        applied: list[str] = []
        conflicts: list[str] = []
        exclude: list[np.ndarray] = []
        pool: np.ndarray | None = None
        boosts: dict[int, float] = {}
        pins: list[tuple[int, int]] = []
        for rule in self.rules:
            if not rule.applies(env):
                continue
            applied.append(rule.name)
            if len(rule.exclude):
                exclude.append(rule.exclude)
            if rule.pool is not None:
                if pool is None:
                    pool = rule.pool
                else:
                    conflicts.append(f"{rule.name}: pool overridden by a higher-priority pool")
            for items, weight in rule.boosts:
                for item in items.tolist():
                    boosts[item] = boosts.get(item, 0.0) + weight
            pins.extend((item, position) for item, position in rule.pins)
            if rule.pins:
                conflicts.extend(_pin_conflicts(rule.name, rule.pins, pins[: -len(rule.pins)]))
        if not applied:
            return NO_PLAN
        keys = np.array(sorted(boosts), dtype=np.int64)
        return SlatePlan(
            rules=tuple(applied),
            exclude=np.unique(np.concatenate(exclude)) if exclude else np.zeros(0, np.int64),
            pool=None if pool is None else np.unique(pool),
            boost_items=keys,
            boost_weights=np.array([boosts[k] for k in keys.tolist()], dtype=np.float64),
            pins=tuple(pins),
            conflicts=tuple(conflicts),
        )

    def uses_segments(self) -> bool:
        return any(r.uses_segments for r in self.rules)


def _pin_conflicts(
    name: str, new: Sequence[tuple[int, int]], earlier: Sequence[tuple[int, int]]
) -> list[str]:
    taken_pos = {p for _, p in earlier}
    taken_item = {i for i, _ in earlier}
    return [
        f"{name}: pin at position {p} skipped (taken by a higher-priority pin)"
        for i, p in new
        if p in taken_pos or i in taken_item
    ]


def restrict_rows(
    items: np.ndarray,
    scores: np.ndarray,
    plans: Sequence[SlatePlan],
    keep: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates with each row's plan applied: allowed items, the first ``keep``, in order.

    Args:
        items: ``[W, M]`` candidate item indices in retrieval order (``-1`` pads).
        scores: ``[W, M]`` their retrieval scores.
        plans: one plan per row.
        keep: candidates to keep per row.

    Returns:
        ``(items [W, keep], scores [W, keep])``, padded with ``-1`` and ``-inf``.
    """
    out = np.full((len(items), keep), -1, dtype=np.int64)
    out_scores = np.full((len(items), keep), -np.inf, dtype=np.asarray(scores).dtype)
    for w, plan in enumerate(plans):
        real = items[w] >= 0
        if not plan.empty and plan.filters:
            real &= plan.allows(items[w])
        take = np.flatnonzero(real)[:keep]
        out[w, : len(take)] = items[w, take]
        out_scores[w, : len(take)] = scores[w, take]
    return out, out_scores


def fetch_depth(plan: SlatePlan, wanted: int, n_items: int) -> int:
    """How many retrieval results a request needs so that ``wanted`` survive the plan."""
    if plan.pool is not None:
        return n_items
    return min(wanted + len(plan.exclude), n_items)


def place_pins(
    plan: SlatePlan,
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    allowed: Callable[[int], bool],
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A final list with the plan's pins at their positions.

    Args:
        plan: the request's plan.
        items: the ranked list (item indices, best first, no pads).
        scores: their scores.
        k: the list length asked for.
        allowed: whether an item index may be shown (not seen, blocked or excluded).

    Returns:
        ``(items, scores, skipped)``: at most ``k`` items; a pinned item takes the score
        the list had at its position; ``skipped`` names pins that could not be placed.
    """
    if not plan.pins:
        return items, scores, ()
    placed: dict[int, int] = {}
    skipped: list[str] = []
    for item, position in plan.pins:
        if position > k:
            continue
        if position in placed or item in placed.values():
            continue  # a higher-priority pin holds it: recorded in plan.conflicts
        if not allowed(item):
            skipped.append(f"pin of item index {item} at {position}: the item is excluded")
            continue
        placed[position] = item
    if not placed:
        return items, scores, tuple(skipped)
    pinned = set(placed.values())
    rest = [
        (int(i), float(s))
        for i, s in zip(items.tolist(), scores.tolist(), strict=True)
        if i not in pinned
    ]
    length = min(k, len(rest) + len(placed))
    out_items: list[int] = []
    out_scores: list[float] = []
    rest_pos = 0
    for position in range(1, length + 1):
        slot_score = float(scores[position - 1]) if position - 1 < len(scores) else float("nan")
        if position in placed:
            out_items.append(placed[position])
            out_scores.append(slot_score if np.isfinite(slot_score) else _last(out_scores))
        elif rest_pos < len(rest):
            out_items.append(rest[rest_pos][0])
            out_scores.append(rest[rest_pos][1])
            rest_pos += 1
    # pins beyond the end of a short list go at the end, in position order
    for position in sorted(p for p in placed if p > length):
        if len(out_items) < k:
            out_items.append(placed[position])
            out_scores.append(_last(out_scores))
    return (
        np.asarray(out_items, dtype=np.int64),
        np.asarray(out_scores, dtype=np.float32),
        tuple(skipped),
    )


def _last(values: Sequence[float]) -> float:
    return float(values[-1]) if values else 0.0


def rerank_fallback(
    plan: SlatePlan, items: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """A popularity list under the plan: allowed items, boosts added, re-sorted, top ``k``.

    Args:
        plan: the request's plan.
        items: allowed items in popularity order (more than ``k`` when a plan filters).
        scores: their popularity scores.
        k: list length.
    """
    if plan.empty:
        return items[:k], scores[:k]
    ok = plan.allows(items)
    items, base = items[ok], np.asarray(scores, dtype=np.float64)[ok]
    total = base + plan.boosts(items)
    order = np.lexsort((np.arange(len(items)), -total))[:k]
    return items[order], total[order].astype(np.float32)


class RuleFile(ReloadingFile[RuleSet]):
    """A rules file that reloads itself when it changes, without restarting the server
    (:class:`~recsys.runtime.reloading.ReloadingFile`: a file that fails to load keeps
    the previous rules serving, its error, with line and column, goes to ``warn``).

    Args:
        path: the YAML rules file.
        compile_rules: ``path -> RuleSet`` (the loader, bound to the catalogue).
        check_s: seconds between checks of the file.
        warn: called with a message on a failed load.
    """

    def __init__(
        self,
        path: str,
        compile_rules: Callable[[str], RuleSet],
        check_s: float = 1.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(path, compile_rules, "targeting rules", check_s, warn)
