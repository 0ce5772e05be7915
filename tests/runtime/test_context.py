"""The request context: every field optional, every value checked, one rule set with events."""

from __future__ import annotations

import re

import pytest

from recsys.events.schema import DeviceType
from recsys.events.validation import EventValidationError, validate_event
from recsys.runtime.context import (
    DEVICE_TYPES,
    UNKNOWN,
    ContextError,
    RequestContext,
    check_field,
)


def test_omitted_fields_are_unknown() -> None:
    ctx = RequestContext.from_values()
    assert ctx == UNKNOWN and ctx.local_hour is None and ctx.weekday is None
    assert RequestContext.from_values(device_type="", os="").to_dict() == {}


def test_local_time_follows_the_offset() -> None:
    # 2023-11-14 22:13:20 UTC is a Tuesday
    ctx = RequestContext.from_values(request_time_ms=1_700_000_000_000)
    assert (ctx.local_hour, ctx.weekday) == (22, 1)
    east = RequestContext.from_values(request_time_ms=1_700_000_000_000, utc_offset_minutes=120)
    assert (east.local_hour, east.weekday) == (0, 2)  # past midnight: Wednesday
    west = RequestContext.from_values(request_time_ms=1_700_000_000_000, utc_offset_minutes=-720)
    assert (west.local_hour, west.weekday) == (10, 1)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"device": "mobile"}, "unknown context fields"),
        ({"device_type": "phone"}, "unknown device type"),
        ({"country": "de"}, "ISO 3166-1"),
        ({"utc_offset_minutes": 841}, r"\[-720, 840\]"),
        ({"utc_offset_minutes": True}, "expected an integer"),
        ({"request_time_ms": 1.5e12}, "expected an integer"),
        ({"request_time_ms": 10}, "request_time_ms"),
        ({"os": "x" * 129}, "too long"),
        ({"region": "a\x00b"}, "control characters"),
        ({"surface": "\ud800"}, "lone surrogate"),
        ({"request_id": "-starts-with-dash"}, "request_id"),
        ({"session_id": "a b"}, "session_id"),
        ({"browser": 7}, "expected a string"),
    ],
)
def test_every_bad_value_is_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ContextError, match=message):
        RequestContext.from_values(**values)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ContextError) as error:
        RequestContext.from_values(country="xx", device_type="fridge")
    assert "country" in str(error.value) and "device_type" in str(error.value)


def test_a_request_id_is_made_only_when_the_client_sent_none() -> None:
    mine = RequestContext.from_values(request_id="r-1").with_request_id()
    assert mine.request_id == "r-1"
    made = {UNKNOWN.with_request_id().request_id for _ in range(100)}
    assert len(made) == 100 and all(re.fullmatch(r"[0-9a-f]{32}", m or "") for m in made)


def test_requests_and_events_share_the_context_rules() -> None:
    assert set(DEVICE_TYPES) == {d.value for d in DeviceType}
    base = {"event_id": "e1", "user_id": "u", "session_id": "s", "type": "page_view",
            "timestamp": 1_700_000_000}  # fmt: skip
    for field, value in (("device_type", "fridge"), ("country", "de"),
                         ("utc_offset_minutes", 900)):  # fmt: skip
        assert check_field(field, value) is not None  # refused by the request context ...
        with pytest.raises(EventValidationError):  # ... and in an event's context
            validate_event({**base, "context": {field: value}})
    ctx = RequestContext.from_values(device_type="tablet", country="FR", utc_offset_minutes=60)
    event = validate_event({**base, "context": ctx.event_context()})
    assert event.context.device_type == "tablet" and event.context.utc_offset_minutes == 60
