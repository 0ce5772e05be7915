"""The typed event: what a tracked user action looks like once validated.

An :class:`Event` is immutable and carries only fields the schema declares.
Timestamps are kept as integer microseconds since the Unix epoch (UTC), so a
value survives every round trip (JSON, Redis, SQLite) unchanged and window
bucketing never meets a float rounding edge.

Example:
    >>> e = Event("e1", "u1", "s1", EventType.CLICK, 1_396_437_466_940_000, item_id=214716935)
    >>> e.to_dict()["timestamp"]
    '2014-04-02T11:17:46.940000Z'
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from recsys.data.compat import UTC, StrEnum

ItemId = int | str

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventType(StrEnum):
    """Every kind of tracked action."""

    PAGE_VIEW = "page_view"
    CLICK = "click"
    SCROLL = "scroll"
    DWELL = "dwell"
    LIKE = "like"
    SHARE = "share"
    COMMENT = "comment"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    SUBSCRIBE = "subscribe"
    SEARCH = "search"
    FILTER = "filter"
    RATING = "rating"
    RECOMMENDATION_IMPRESSION = "recommendation_impression"
    RECOMMENDATION_CLICK = "recommendation_click"
    # a catalogue change: an item published (or re-published) with its attributes
    # (recsys.events.catalogue); user_id names the publisher
    ITEM_PUBLISHED = "item_published"


class DeviceType(StrEnum):
    """The device class a client reports in ``context.device_type``."""

    DESKTOP = "desktop"
    MOBILE = "mobile"
    TABLET = "tablet"
    TV = "tv"
    CONSOLE = "console"
    WEARABLE = "wearable"
    OTHER = "other"


def us_to_iso(ts_us: int) -> str:
    """Formats epoch microseconds as ISO 8601 UTC with a ``Z`` suffix."""
    sec, us = divmod(ts_us, 1_000_000)
    t = time.gmtime(sec)  # several times faster than datetime.strftime
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{us:06d}Z"
    )


def datetime_to_us(dt: datetime) -> int:
    """Epoch microseconds of an aware datetime (exact, no float step)."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class EventContext:
    """Where an event happened. Every field is optional.

    Attributes:
        device_type: one of :class:`DeviceType`.
        browser: browser family, e.g. ``"firefox"``.
        os: operating system family, e.g. ``"android"``.
        country: ISO 3166-1 alpha-2 code, upper case.
        region: ISO 3166-2 subdivision code or a region name.
        referrer: referring URL.
        utc_offset_minutes: the client's offset from UTC; when present, the
            hour of day and weekday used by profiles and segments are local.
    """

    device_type: str | None = None
    browser: str | None = None
    os: str | None = None
    country: str | None = None
    region: str | None = None
    referrer: str | None = None
    utc_offset_minutes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as a plain mapping."""
        out: dict[str, Any] = {}
        for name in CONTEXT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


CONTEXT_FIELDS: tuple[str, ...] = (
    "device_type",
    "browser",
    "os",
    "country",
    "region",
    "referrer",
    "utc_offset_minutes",
)
EMPTY_CONTEXT = EventContext()

#: Top-level fields of a raw event, in canonical order.
EVENT_FIELDS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "session_id",
    "type",
    "timestamp",
    "item_id",
    "context",
    "payload",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One validated user action.

    Build events with :func:`recsys.events.validation.validate_event` from raw
    input; the constructor itself does not validate.

    Attributes:
        event_id: globally unique id; replays and duplicates share it.
        user_id: persistent user id.
        session_id: the client session the event belongs to.
        type: what happened.
        ts_us: when it happened, epoch microseconds UTC.
        item_id: the item acted on, where the type has one.
        context: device, browser, OS, location and referrer.
        payload: type-specific values (query, dwell ms, scroll depth, price ...).
    """

    event_id: str
    user_id: str
    session_id: str
    type: EventType
    ts_us: int
    item_id: ItemId | None = None
    context: EventContext = EMPTY_CONTEXT
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def timestamp(self) -> datetime:
        """The event time as an aware UTC datetime."""
        return _EPOCH + timedelta(microseconds=self.ts_us)

    @property
    def local_us(self) -> int:
        """Event time shifted by the client's UTC offset (for hour-of-day)."""
        offset = self.context.utc_offset_minutes
        return self.ts_us if offset is None else self.ts_us + offset * 60_000_000

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON-ready form; :func:`validate_event` reads it back."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "type": self.type.value,
            "timestamp": us_to_iso(self.ts_us),
        }
        if self.item_id is not None:
            out["item_id"] = self.item_id
        ctx = self.context.to_dict()
        if ctx:
            out["context"] = ctx
        if self.payload:
            out["payload"] = dict(self.payload)
        return out

    def to_json(self) -> str:
        """Compact canonical JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


# Slot setters in constructor order (the slot descriptors bypass the frozen __setattr__).
_EVENT_SLOTS = tuple(Event.__dict__[f.name].__set__ for f in fields(Event))
_NEW = object.__new__


def new_event(
    event_id: str,
    user_id: str,
    session_id: str,
    event_type: EventType,
    ts_us: int,
    item_id: ItemId | None,
    context: EventContext,
    payload: Mapping[str, Any],
) -> Event:
    """``Event(...)`` with every field given, for the validator's hot path:
    the frozen dataclass's ``__init__`` goes through ``object.__setattr__`` per
    field, which costs more than the rest of building an event."""
    e = _NEW(Event)
    s0, s1, s2, s3, s4, s5, s6, s7 = _EVENT_SLOTS
    s0(e, event_id)
    s1(e, user_id)
    s2(e, session_id)
    s3(e, event_type)
    s4(e, ts_us)
    s5(e, item_id)
    s6(e, context)
    s7(e, payload)
    return e
