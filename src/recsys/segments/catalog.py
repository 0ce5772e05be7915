"""The features a segment rule can use, their types, and how each is read.

A rule is evaluated against an :class:`Env`: the user (profile and non-PII
static attributes), the triggering event (None in the periodic sweep) and the
evaluation time. Context features (``device``, ``hour`` ...) come from the
event; in the sweep from the user's latest event and the sweep's clock.

Types: ``num``, ``str``, ``bool`` and ``list`` (of strings). A feature with no
value (attribute not set, no device reported) is missing: every comparison
with it is false.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsys.events.schema import Event, EventType
from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig, WindowSpec
from recsys.profiles.processor import CachedUser
from recsys.profiles.state import DAY_US, HOUR_US, local_hour, local_weekday

ALL_EVENTS: frozenset[str] = frozenset(t.value for t in EventType)


class Env:
    """What a rule sees at one evaluation.

    Args:
        user: the cached user (profile, attributes).
        event: the triggering event, or None in the sweep.
        now_us: evaluation time (windows end here).
        config: profile settings (windows, half-life).
    """

    __slots__ = ("attributes", "config", "counts", "event", "local_us", "now_us", "profile")

    def __init__(
        self, user: CachedUser, event: Event | None, now_us: int, config: ProfileConfig
    ) -> None:
        profile = self.profile = user.profile
        self.attributes = user.attributes
        self.event = event
        self.now_us = now_us
        self.config = config
        self.counts: dict[tuple[str | None, str], int] = {}  # memo: rules share counts
        if event is not None:
            offset = event.context.utc_offset_minutes
        else:
            offset = profile.last_context.get("utc_offset_minutes")
        self.local_us = (event.ts_us if event is not None else now_us) + (
            offset * 60_000_000 if offset else 0
        )

    def count(self, event_type: str | None, window: WindowSpec, key: tuple[str | None, str]) -> int:
        """``count(event_type, window)`` at :attr:`now_us`, computed once per evaluation."""
        n = self.counts.get(key)
        if n is None:
            n = self.counts[key] = self.profile.count(event_type, window, self.now_us)
        return n


@dataclass(frozen=True)
class Variable:
    """A feature rules can name.

    Attributes:
        name: how rules spell it.
        type: ``num``, ``str``, ``bool`` or ``list``.
        getter: reads the value from an :class:`Env` (None when missing).
        triggers: event types whose arrival can change it (ALL_EVENTS for
            context and per-event features, empty for static attributes).
        time_based: its value can change with time alone (sweep-relevant).
        description: for humans (docs, error hints).
        expr: the same read as a Python expression over ``env``, which the
            compiler inlines instead of calling ``getter`` (hot features).
        nullable: whether the value can be missing (None).
    """

    name: str
    type: str
    getter: Callable[[Env], Any]
    triggers: frozenset[str]
    time_based: bool
    description: str
    expr: str | None = None
    nullable: bool = True


def _ctx(key: str) -> Callable[[Env], Any]:
    def get(env: Env) -> Any:
        if env.event is not None:
            return getattr(env.event.context, key)
        return env.profile.last_context.get(key)

    return get


def _event_ctx(key: str) -> Callable[[Env], Any]:
    def get(env: Env) -> Any:
        return getattr(env.event.context, key) if env.event is not None else None

    return get


def _days_since_purchase(env: Env) -> float | None:
    p = env.profile
    return (env.now_us - p.last_purchase_us) / 8.64e10 if p.purchase_count else None


def _hours_since_event(env: Env) -> float | None:
    p = env.profile
    return (env.now_us - p.last_us) / 3.6e9 if p.n_events else None


def _days_since_first(env: Env) -> float | None:
    p = env.profile
    return (env.now_us - p.first_us) / 8.64e10 if p.n_events else None


def _attr(name: str) -> Callable[[Env], Any]:
    def get(env: Env) -> Any:
        return env.attributes.get(name)

    return get


_PURCHASE = frozenset({EventType.PURCHASE.value})
_NONE: frozenset[str] = frozenset()
_KIND_TYPE = {"int": "num", "float": "num", "str": "str", "bool": "bool", "str_list": "list"}


def build_catalog(attributes: AttributeSchema) -> dict[str, Variable]:
    """Every feature a rule may name: context, profile aggregates, static attributes.

    Args:
        attributes: the static attribute schema (PII attributes are left out).

    Raises:
        ValueError: an attribute's name collides with a built-in feature.
    """
    v = Variable
    out = {
        x.name: x
        for x in (
            v("device", "str", _ctx("device_type"), ALL_EVENTS, False, "event device type"),
            v("browser", "str", _event_ctx("browser"), ALL_EVENTS, False, "event browser"),
            v("os", "str", _event_ctx("os"), ALL_EVENTS, False, "event operating system"),
            v("country", "str", _ctx("country"), ALL_EVENTS, False, "event country (ISO 2)"),
            v("region", "str", _ctx("region"), ALL_EVENTS, False, "event region"),
            v("referrer", "str", _event_ctx("referrer"), ALL_EVENTS, False, "event referrer"),
            v(
                "event_type",
                "str",
                lambda e: e.event.type.value if e.event is not None else None,
                ALL_EVENTS,
                False,
                "type of the triggering event",
            ),
            v(
                "hour",
                "num",
                lambda e: local_hour(e.local_us),
                ALL_EVENTS,
                True,
                "local hour",
                f"env.local_us // {HOUR_US} % 24",
                False,
            ),
            v(
                "weekday",
                "num",
                lambda e: local_weekday(e.local_us),
                ALL_EVENTS,
                True,
                "local weekday, Monday = 0",
                f"(env.local_us // {DAY_US} + 3) % 7",
                False,
            ),
            v(
                "dominant_device",
                "str",
                lambda e: e.profile.dominant_device,
                ALL_EVENTS,
                False,
                "most used device type",
                "env.profile.dominant_device",
            ),
            v(
                "events_total",
                "num",
                lambda e: e.profile.n_events,
                ALL_EVENTS,
                False,
                "lifetime events",
                "env.profile.n_events",
                False,
            ),
            v(
                "session_count",
                "num",
                lambda e: e.profile.session_count,
                ALL_EVENTS,
                False,
                "sessions seen",
                "env.profile.session_count",
                False,
            ),
            v(
                "session_events",
                "num",
                lambda e: e.profile.session_events,
                ALL_EVENTS,
                False,
                "events in the current session",
                "env.profile.session_events",
                False,
            ),
            v(
                "avg_session_events",
                "num",
                lambda e: e.profile.avg_session_events(),
                ALL_EVENTS,
                False,
                "mean events per session",
                "env.profile.avg_session_events()",
                False,
            ),
            v(
                "purchase_count",
                "num",
                lambda e: e.profile.purchase_count,
                _PURCHASE,
                False,
                "lifetime purchases",
                "env.profile.purchase_count",
                False,
            ),
            v(
                "purchase_total",
                "num",
                lambda e: e.profile.purchase_total,
                _PURCHASE,
                False,
                "lifetime spend (price x quantity)",
                "env.profile.purchase_total",
                False,
            ),
            v(
                "days_since_last_purchase",
                "num",
                _days_since_purchase,
                _PURCHASE,
                True,
                "days since the latest purchase",
            ),
            v(
                "hours_since_last_event",
                "num",
                _hours_since_event,
                ALL_EVENTS,
                True,
                "hours since the latest event",
            ),
            v(
                "days_since_first_seen",
                "num",
                _days_since_first,
                ALL_EVENTS,
                True,
                "days since the first event",
            ),
        )
    }
    for spec in attributes.specs.values():
        if spec.pii:
            continue
        if spec.name in out:
            raise ValueError(f"attribute {spec.name!r} collides with a built-in rule feature")
        out[spec.name] = v(
            spec.name,
            _KIND_TYPE[spec.kind],
            _attr(spec.name),
            _NONE,
            False,
            "static attribute",
            f"env.attributes.get({spec.name!r})",
        )
    return out
