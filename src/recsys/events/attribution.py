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
bundle, position, rule, policy and surface (impressions, clicks, CTR, conversions,
mean dwell).

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

    @classmethod
    def from_event(cls, event: Event) -> Exposure:
        p = event.payload
        items = tuple(p.get("items") or ())
        return cls(
            request_id=str(p.get("request_id") or event.event_id),
            user_id=event.user_id,
            ts_us=event.ts_us,
            items=items,
            propensities=tuple(p.get("propensities") or (1.0,) * len(items)),
            model=str(p.get("model") or "unknown"),
            bundle=str(p.get("bundle") or "unknown"),
            policy=str(p.get("policy") or "unknown"),
            rules=tuple(p.get("rules") or ()),
            surface=p.get("surface"),
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


@dataclass
class AttributionStats:
    """Counts of what the attributor saw."""

    exposures: int = 0
    outcomes: int = 0
    by_request_id: int = 0
    by_window: int = 0
    mismatched: int = 0
    unattributed: int = 0


class Attributor:
    """Joins outcomes to exposures, one event at a time (stream order).

    Args:
        config: the join rules.
    """

    def __init__(self, config: AttributionConfig | None = None) -> None:
        self.config = config or AttributionConfig()
        self.stats = AttributionStats()
        self._by_user: dict[str, deque[Exposure]] = defaultdict(
            lambda: deque(maxlen=self.config.exposures_per_user)
        )
        self._by_request: dict[str, Exposure] = {}
        self.exposures: list[Exposure] = []

    def feed(self, event: Event) -> Attribution | None:
        """Remembers an exposure, or joins an outcome; other events are ignored."""
        if event.type is EventType.RECOMMENDATION_IMPRESSION:
            exposure = Exposure.from_event(event)
            queue = self._by_user[exposure.user_id]
            if len(queue) == queue.maxlen:
                self._by_request.pop(queue[0].request_id, None)
            queue.append(exposure)
            self._by_request[exposure.request_id] = exposure
            self.exposures.append(exposure)
            self.stats.exposures += 1
            return None
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


GROUPS: tuple[str, ...] = ("model", "bundle", "position", "rule", "policy", "surface")
"""The dimensions :func:`engagement` groups by."""


def engagement(
    exposures: Sequence[Exposure], attributions: Sequence[Attribution], by: str
) -> list[dict[str, Any]]:
    """Impressions and outcomes per group.

    Args:
        exposures: the exposures (each shown item is one impression).
        attributions: their joined outcomes.
        by: one of :data:`GROUPS` (``rule``: an exposure counts for each rule it
            applied; lists without rules are ``(none)``).

    Returns:
        One row per group value, sorted by it: ``impressions``, ``clicks``, ``ctr``,
        ``conversions``, ``conversion_rate`` (per impression), ``dwell_events`` and
        ``mean_dwell_ms``.
    """
    if by not in GROUPS:
        raise ValueError(f"by must be one of {GROUPS}, got {by!r}")
    rows: dict[Any, dict[str, Any]] = {}

    def row(key: Any) -> dict[str, Any]:
        empty = {"impressions": 0, "clicks": 0, "conversions": 0, "dwell_events": 0}
        return rows.setdefault(key, {by: key, **empty, "dwell_ms": 0})

    def keys_of(value: Mapping[str, Any], position: int | None) -> list[Any]:
        if by == "position":
            return [position]
        if by == "rule":
            return list(value["rules"]) or ["(none)"]
        return [value[by] if value[by] is not None else "(none)"]

    for exposure in exposures:
        fields_ = vars(exposure)
        if by == "position":
            for position in range(len(exposure.items)):
                row(position)["impressions"] += 1
        else:
            for key in keys_of(fields_, None):
                row(key)["impressions"] += len(exposure.items)
    for joined in attributions:
        values = vars(joined)
        for key in keys_of(values, joined.position):
            r = row(key)
            kind = EventType(joined.type)
            if kind in CLICKS:
                r["clicks"] += 1
            elif kind in CONVERSIONS:
                r["conversions"] += 1
            elif kind is EventType.DWELL and joined.dwell_ms is not None:
                r["dwell_events"] += 1
                r["dwell_ms"] += joined.dwell_ms
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
