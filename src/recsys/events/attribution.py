"""Attribution: joins clicks, carts, purchases and dwell to the list that showed the item.

An *exposure* is a ``recommendation_impression`` event (one per served list, written
by the serving side: :mod:`recsys.runtime.exposure`). An *outcome* (click, cart,
purchase, dwell, like) joins an exposure:

1. by request id: the outcome's ``payload.request_id`` names an exposure of the same
   user that showed the item (``how = "request_id"``);
2. else by window: the user's latest exposure of that item at most ``window_s`` before
   the outcome (``how = "window"``).

An outcome that names a request id of another user, or of a list without its item, is
counted (``mismatched``) and then tried by window; one that joins nothing is counted as
``unattributed``. Nothing is dropped without a count.

:class:`Attributor` consumes events one at a time, in stream order (what a consumer
does online); :func:`attribute` runs the same object over a batch, time-ordered (what
the offline job does over a store or a log), so both give the same joins.
:func:`engagement` turns the exposures and their joins into rates per model version,
bundle, position, rule, policy, surface and segment (impressions, clicks, CTR,
conversions, mean dwell); :class:`EngagementCounter` keeps the same rows up to date one
exposure and one join at a time (what a long-running consumer keeps, without holding
every exposure). Per segment, an exposure counts once for each segment its user was in
when the list was served (the payload's ``segments``), lists of users in no segment
count under ``(none)``, and lists served without personalization (whose segments are
not recorded) under ``(not personalized)``. :mod:`recsys.events.lift` compares a
segment's members with the other users; :mod:`recsys.events.attribution_consumer` runs
this over a store's stream, online and as a batch job.

Example:
    >>> report = attribute(events)  # doctest: +SKIP
    >>> report.engagement("position")[0]  # doctest: +SKIP
    {'position': 0, 'impressions': 120, 'clicks': 9, 'ctr': 0.075, ...}
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recsys.events.schema import Event, EventType

OUTCOME_TYPES: tuple[EventType, ...] = (
    EventType.CLICK,
    EventType.RECOMMENDATION_CLICK,
    EventType.ADD_TO_CART,
    EventType.PURCHASE,
    EventType.DWELL,
    EventType.LIKE,
)
"""The event types attribution joins to exposures."""

CLICKS = frozenset({EventType.CLICK, EventType.RECOMMENDATION_CLICK})
CONVERSIONS = frozenset({EventType.PURCHASE})


@dataclass(frozen=True)
class AttributionConfig:
    """How outcomes join exposures.

    Attributes:
        window_s: an outcome joins the user's latest exposure of the item at most this
            many seconds before it (when it names no request id that fits).
        exposures_per_user: exposures remembered per user (the oldest are forgotten).
    """

    window_s: float = 1800.0
    exposures_per_user: int = 200

    def __post_init__(self) -> None:
        if self.window_s < 0 or self.exposures_per_user < 1:
            raise ValueError("window_s must be >= 0 and exposures_per_user >= 1")


@dataclass(frozen=True)
class Exposure:
    """One served list, as the exposure log recorded it."""

    request_id: str
    user_id: str
    ts_us: int
    items: tuple[Any, ...]
    propensities: tuple[float, ...]
    model: str
    bundle: str
    policy: str
    rules: tuple[str, ...]
    surface: str | None
    segments: tuple[str, ...] = ()
    personalized: bool = True

    @classmethod
    def from_event(cls, event: Event) -> Exposure:
        """The exposure an impression event records.

        Raises:
            ValueError: the payload's propensities do not match its items one to one.
        """
        p = event.payload
        items = tuple(p.get("items") or ())
        propensities = tuple(float(x) for x in p.get("propensities") or (1.0,) * len(items))
        if len(propensities) != len(items):
            raise ValueError(
                f"exposure {event.event_id}: {len(items)} items but {len(propensities)} "
                "propensities"
            )
        return cls(
            request_id=str(p.get("request_id") or event.event_id),
            user_id=event.user_id,
            ts_us=event.ts_us,
            items=items,
            propensities=propensities,
            model=str(p.get("model") or "unknown"),
            bundle=str(p.get("bundle") or "unknown"),
            policy=str(p.get("policy") or "unknown"),
            rules=tuple(p.get("rules") or ()),
            surface=p.get("surface"),
            # a segment listed twice is one membership
            segments=tuple(dict.fromkeys(str(s) for s in p.get("segments") or ())),
            personalized=bool(p.get("personalized", True)),
        )


@dataclass(frozen=True)
class Attribution:
    """One outcome joined to the exposure that showed its item.

    Attributes:
        event_id: the outcome's event id.
        type: the outcome's type.
        user_id: the user.
        item_id: the item.
        request_id: the exposure's request id.
        position: the item's position in that list (0 = first).
        propensity: the item's logged propensity at that position.
        model: model version of the list.
        bundle: run bundle of the list.
        policy: policy id of the list.
        rules: targeting rules applied to the list.
        surface: where the list was shown.
        how: ``request_id`` or ``window``.
        delay_s: seconds from the exposure to the outcome.
        dwell_ms: the dwell time of a dwell outcome.
        segments: the user's segments when the list was served.
        personalized: whether the list was served with personalization (else its
            segments were not recorded).
    """

    event_id: str
    type: str
    user_id: str
    item_id: Any
    request_id: str
    position: int
    propensity: float
    model: str
    bundle: str
    policy: str
    rules: tuple[str, ...]
    surface: str | None
    how: str
    delay_s: float
    dwell_ms: int | None = None
    segments: tuple[str, ...] = ()
    personalized: bool = True


@dataclass
class AttributionStats:
    """Counts of what the attributor saw (``malformed``: exposures whose payload does not
    hold one propensity per item, which are counted and not remembered)."""

    exposures: int = 0
    outcomes: int = 0
    by_request_id: int = 0
    by_window: int = 0
    mismatched: int = 0
    unattributed: int = 0
    malformed: int = 0


class Attributor:
    """Joins outcomes to exposures, one event at a time (stream order).

    Args:
        config: the join rules.
        keep_exposures: keep every exposure in :attr:`exposures` (what a batch report
            needs); a long-running consumer passes False and counts them as they come
            (:class:`EngagementCounter`): the join state itself is bounded per user.
    """

    def __init__(
        self, config: AttributionConfig | None = None, keep_exposures: bool = True
    ) -> None:
        self.config = config or AttributionConfig()
        self.keep_exposures = keep_exposures
        self.stats = AttributionStats()
        self._by_user: dict[str, deque[Exposure]] = defaultdict(
            lambda: deque(maxlen=self.config.exposures_per_user)
        )
        self._by_request: dict[str, Exposure] = {}
        self.exposures: list[Exposure] = []

    def feed(self, event: Event) -> Attribution | None:
        """Remembers an exposure, or joins an outcome; other events are ignored."""
        if event.type is EventType.RECOMMENDATION_IMPRESSION:
            self.expose(event)
            return None
        return self.join(event)

    def expose(self, event: Event) -> Exposure | None:
        """Remembers the exposure of an impression event and returns it (None, counted
        as ``malformed``, when its payload does not fit)."""
        try:
            exposure = Exposure.from_event(event)
        except (ValueError, TypeError):
            self.stats.malformed += 1
            return None
        queue = self._by_user[exposure.user_id]
        if len(queue) == queue.maxlen:
            self._by_request.pop(queue[0].request_id, None)
        queue.append(exposure)
        self._by_request[exposure.request_id] = exposure
        if self.keep_exposures:
            self.exposures.append(exposure)
        self.stats.exposures += 1
        return exposure

    def join(self, event: Event) -> Attribution | None:
        """The join of an outcome event (None: not an outcome, or joined nothing)."""
        if event.type not in OUTCOME_TYPES or event.item_id is None:
            return None
        self.stats.outcomes += 1
        found = self._by_id(event)
        how = "request_id"
        if found is None:
            found, how = self._by_window(event), "window"
        if found is None:
            self.stats.unattributed += 1
            return None
        if how == "request_id":
            self.stats.by_request_id += 1
        else:
            self.stats.by_window += 1
        exposure, position = found
        dwell = event.payload.get("dwell_ms") if event.type is EventType.DWELL else None
        return Attribution(
            event_id=event.event_id,
            type=event.type.value,
            user_id=event.user_id,
            item_id=event.item_id,
            request_id=exposure.request_id,
            position=position,
            propensity=float(exposure.propensities[position]),
            model=exposure.model,
            bundle=exposure.bundle,
            policy=exposure.policy,
            rules=exposure.rules,
            surface=exposure.surface,
            how=how,
            delay_s=(event.ts_us - exposure.ts_us) / 1e6,
            dwell_ms=None if dwell is None else int(dwell),
            segments=exposure.segments,
            personalized=exposure.personalized,
        )

    def _by_id(self, event: Event) -> tuple[Exposure, int] | None:
        request_id = event.payload.get("request_id")
        if request_id is None:
            return None
        exposure = self._by_request.get(str(request_id))
        if exposure is None or exposure.user_id != event.user_id:
            self.stats.mismatched += 1
            return None
        position = _position(exposure.items, event.item_id)
        if position is None:
            self.stats.mismatched += 1
            return None
        return exposure, position

    def _by_window(self, event: Event) -> tuple[Exposure, int] | None:
        earliest = event.ts_us - int(self.config.window_s * 1e6)
        for exposure in reversed(self._by_user.get(event.user_id, ())):
            if exposure.ts_us > event.ts_us:
                continue  # shown after the outcome
            if exposure.ts_us < earliest:
                break  # exposures are in time order: older ones are out of the window
            position = _position(exposure.items, event.item_id)
            if position is not None:
                return exposure, position
        return None


def _position(items: Sequence[Any], item: Any) -> int | None:
    for i, shown in enumerate(items):
        if shown == item or str(shown) == str(item):
            return i
    return None


@dataclass
class AttributionReport:
    """The joins of a batch and what they add up to.

    Attributes:
        attributions: one per attributed outcome, in time order.
        exposures: every exposure seen.
        stats: the attributor's counts.
    """

    attributions: list[Attribution]
    exposures: list[Exposure]
    stats: AttributionStats = field(default_factory=AttributionStats)

    def engagement(self, by: str) -> list[dict[str, Any]]:
        """Rates per value of ``by`` (see :func:`engagement`)."""
        return engagement(self.exposures, self.attributions, by)


def attribute(
    events: Iterable[Event], config: AttributionConfig | None = None
) -> AttributionReport:
    """The offline job: every event through one :class:`Attributor`, in time order.

    Events with equal timestamps keep their input order (an exposure published before
    a click of the same microsecond stays first).
    """
    ordered = sorted(events, key=lambda e: e.ts_us)
    attributor = Attributor(config)
    joined = [a for e in ordered if (a := attributor.feed(e)) is not None]
    return AttributionReport(joined, attributor.exposures, attributor.stats)


GROUPS: tuple[str, ...] = (
    "model",
    "bundle",
    "position",
    "rule",
    "policy",
    "surface",
    "segment",
)
"""The dimensions :func:`engagement` groups by."""

NONE = "(none)"
"""The group of lists without a rule, surface or segment."""

NOT_PERSONALIZED = "(not personalized)"
"""The segment group of lists served without personalization (no segments recorded)."""


def _keys(by: str, value: Exposure | Attribution, position: int | None) -> list[Any]:
    """The groups of ``by`` an exposure (or one of its positions) or a join counts for."""
    if by == "position":
        return [position]
    if by == "rule":
        return list(value.rules) or [NONE]
    if by == "segment":
        if not value.personalized:
            return [NOT_PERSONALIZED]
        return list(value.segments) or [NONE]
    key = getattr(value, by)
    return [key if key is not None else NONE]


def _check_by(by: str) -> None:
    if by not in GROUPS:
        raise ValueError(f"by must be one of {GROUPS}, got {by!r}")


_EMPTY = {"impressions": 0, "clicks": 0, "conversions": 0, "dwell_events": 0, "dwell_ms": 0}


def _count_join(row: dict[str, Any], joined: Attribution) -> None:
    kind = EventType(joined.type)
    if kind in CLICKS:
        row["clicks"] += 1
    elif kind in CONVERSIONS:
        row["conversions"] += 1
    elif kind is EventType.DWELL and joined.dwell_ms is not None:
        row["dwell_events"] += 1
        row["dwell_ms"] += joined.dwell_ms


def _rates(by: str, rows: Mapping[Any, Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for key in sorted(rows, key=lambda k: (str(type(k)), k)):
        r = rows[key]
        shown = max(r["impressions"], 1)
        out.append(
            {
                by: key,
                "impressions": r["impressions"],
                "clicks": r["clicks"],
                "ctr": r["clicks"] / shown,
                "conversions": r["conversions"],
                "conversion_rate": r["conversions"] / shown,
                "dwell_events": r["dwell_events"],
                "mean_dwell_ms": r["dwell_ms"] / r["dwell_events"] if r["dwell_events"] else None,
            }
        )
    return out


def engagement(
    exposures: Sequence[Exposure], attributions: Sequence[Attribution], by: str
) -> list[dict[str, Any]]:
    """Impressions and outcomes per group.

    Args:
        exposures: the exposures (each shown item is one impression).
        attributions: their joined outcomes.
        by: one of :data:`GROUPS`. ``rule``: an exposure counts for each rule it
            applied; lists without rules are ``(none)``. ``segment``: an exposure (and
            its outcomes) counts for each segment its user was in when it was served
            (an exposure of segments ``[a, b]`` counts for ``a`` and for ``b``, so the
            rows add up to more than the total); users in no segment are ``(none)``,
            lists served without personalization ``(not personalized)``.

    Returns:
        One row per group value, sorted by it: ``impressions``, ``clicks``, ``ctr``,
        ``conversions``, ``conversion_rate`` (per impression), ``dwell_events`` and
        ``mean_dwell_ms``.
    """
    _check_by(by)
    rows: dict[Any, dict[str, Any]] = {}

    def row(key: Any) -> dict[str, Any]:
        return rows.setdefault(key, dict(_EMPTY))

    for exposure in exposures:
        if by == "position":
            for position in range(len(exposure.items)):
                row(position)["impressions"] += 1
        else:
            for key in _keys(by, exposure, None):
                row(key)["impressions"] += len(exposure.items)
    for joined in attributions:
        for key in _keys(by, joined, joined.position):
            _count_join(row(key), joined)
    return _rates(by, rows)


class EngagementCounter:
    """The rows of :func:`engagement`, kept up to date one exposure and one join at a
    time (what a long-running consumer keeps instead of every exposure).

    Args:
        groups: the dimensions to count (default: all of :data:`GROUPS`).

    Example:
        >>> counter = EngagementCounter(("model",))
        >>> counter.engagement("model")
        []
    """

    def __init__(self, groups: Sequence[str] = GROUPS) -> None:
        for by in groups:
            _check_by(by)
        self.groups = tuple(groups)
        self._rows: dict[str, dict[Any, dict[str, Any]]] = {by: {} for by in self.groups}

    def add_exposure(self, exposure: Exposure) -> None:
        """Counts the impressions of one exposure."""
        for by, rows in self._rows.items():
            if by == "position":
                for position in range(len(exposure.items)):
                    rows.setdefault(position, dict(_EMPTY))["impressions"] += 1
            else:
                for key in _keys(by, exposure, None):
                    rows.setdefault(key, dict(_EMPTY))["impressions"] += len(exposure.items)

    def add_attribution(self, joined: Attribution) -> None:
        """Counts one joined outcome."""
        for by, rows in self._rows.items():
            for key in _keys(by, joined, joined.position):
                _count_join(rows.setdefault(key, dict(_EMPTY)), joined)

    def engagement(self, by: str) -> list[dict[str, Any]]:
        """The rows of :func:`engagement` for what was counted so far."""
        if by not in self._rows:
            raise ValueError(f"by must be one of {self.groups}, got {by!r}")
        return _rates(by, self._rows[by])
