"""The event schema: every type validates, every violation is reported clearly."""

from __future__ import annotations

import json

import pytest
from rt_testkit import BASE_US, raw_event

from recsys.events.deadletter import REMOVED, DeadLetter
from recsys.events.schema import EventType
from recsys.events.validation import EventValidationError, EventValidator, ValidationConfig

V = EventValidator(ValidationConfig(max_future_skew_s=300, clock=lambda: BASE_US / 1e6 + 3600))


def errors_of(raw: object) -> list[str]:
    with pytest.raises(EventValidationError) as info:
        V.validate(raw)
    return list(info.value.errors)


@pytest.mark.parametrize("etype", [t.value for t in EventType])
def test_every_type_validates_and_round_trips(etype: str) -> None:
    raw = raw_event(1, etype=etype, context={"device_type": "mobile", "country": "DE"})
    ev = V.validate(raw)
    assert ev.type.value == etype
    assert ev.ts_us == BASE_US + 60_000_000
    again = V.validate(json.loads(ev.to_json()))
    assert again == ev


def test_full_event_keeps_every_field() -> None:
    raw = raw_event(
        2,
        etype="purchase",
        item="sku-9",
        context={
            "device_type": "tablet",
            "browser": "firefox",
            "os": "android",
            "country": "FR",
            "region": "FR-IDF",
            "referrer": "https://example.org/a",
            "utc_offset_minutes": 120,
        },
        payload={"price": 19.5, "quantity": 2, "currency": "EUR", "category": "sports"},
    )
    ev = V.validate(raw)
    assert ev.item_id == "sku-9"
    assert ev.context.utc_offset_minutes == 120 and ev.context.region == "FR-IDF"
    assert ev.payload == {"price": 19.5, "quantity": 2, "currency": "EUR", "category": "sports"}
    assert ev.local_us == ev.ts_us + 120 * 60_000_000


def test_missing_required_fields_are_all_listed() -> None:
    errs = errors_of({"type": "click"})
    for name in ("event_id", "user_id", "session_id", "timestamp", "item_id"):
        assert any(e.startswith(name + ":") for e in errs), (name, errs)


def test_fields_outside_the_schema_are_rejected_by_path() -> None:
    raw = raw_event(3, etype="search")
    raw["email"] = "a@b.c"
    raw["context"] = {"device_type": "mobile", "ip": "10.0.0.1"}
    raw["payload"]["zip"] = "10115"
    errs = errors_of(raw)
    assert "email: field is not in the event schema" in errs
    assert "context.ip: field is not in the event schema" in errs
    assert any(
        e.startswith("payload.zip: field is not in the schema of search events") for e in errs
    )


@pytest.mark.parametrize(
    ("timestamp", "fragment"),
    [
        ("2024-05-01T08:00:00", "has no UTC offset"),
        ("yesterday", "is not an ISO 8601 date-time"),
        (True, "got a boolean"),
        (1_714_550_400_000, "in the future (epoch milliseconds? send seconds)"),
        ("1999-12-31T23:59:59Z", "before the earliest accepted time"),
        ("2024-05-01T10:00:00Z", "in the future"),
    ],
)
def test_bad_timestamps(timestamp: object, fragment: str) -> None:
    raw = raw_event(4)
    raw["timestamp"] = timestamp
    errs = errors_of(raw)
    assert any(e.startswith("timestamp:") and fragment in e for e in errs), errs


def test_offsets_are_converted_to_utc_and_epoch_seconds_accepted() -> None:
    raw = raw_event(5)
    raw["timestamp"] = "2024-05-01T10:00:00+02:00"
    assert V.validate(raw).ts_us == BASE_US
    raw["timestamp"] = BASE_US / 1e6
    assert V.validate(raw).ts_us == BASE_US


def test_item_id_rules_per_type() -> None:
    raw = raw_event(6, etype="click")
    del raw["item_id"]
    assert "item_id: required for click events" in errors_of(raw)
    raw = raw_event(7, etype="search", item=5)
    assert "item_id: not allowed for search events" in errors_of(raw)
    raw = raw_event(8, item=-1)
    assert any("must be >= 0" in e for e in errors_of(raw))


@pytest.mark.parametrize(
    ("etype", "payload", "fragment"),
    [
        ("scroll", {"scroll_depth": 1.5}, "payload.scroll_depth: 1.5 is outside [0, 1]"),
        ("dwell", {"dwell_ms": 2.5}, "payload.dwell_ms: expected an integer"),
        ("purchase", {"price": "9.99"}, "payload.price: expected a number, got a string"),
        ("purchase", {"currency": "euro"}, "payload.currency: 'euro' does not match"),
        ("search", {"query": None}, "payload.query: required for search events"),
        ("filter", {"filters": {"a": {"b": 1}}}, "payload.filters.a: values must be"),
    ],
)
def test_payload_errors(etype: str, payload: dict[str, object], fragment: str) -> None:
    raw = raw_event(9, etype=etype, payload=payload)
    assert any(fragment in e for e in errors_of(raw)), errors_of(raw)


def test_context_errors() -> None:
    raw = raw_event(
        10, context={"device_type": "phone", "country": "de", "utc_offset_minutes": 900}
    )
    errs = errors_of(raw)
    assert any(e.startswith("context.device_type: unknown device type 'phone'") for e in errs)
    assert any(e.startswith("context.country: expected an ISO 3166-1") for e in errs)
    assert any(e.startswith("context.utc_offset_minutes:") for e in errs)


def test_ids_are_checked_and_integers_become_strings() -> None:
    raw = raw_event(11)
    raw["user_id"] = 42
    assert V.validate(raw).user_id == "42"
    raw["user_id"] = "has space"
    assert any(e.startswith("user_id: 'has space' is not an id") for e in errors_of(raw))


def test_unknown_type_and_non_objects() -> None:
    assert any("unknown event type 'view'" in e for e in errors_of(raw_event(12, etype="view")))
    assert errors_of([1, 2]) == ["$: an event must be a JSON object, got a list"]
    with pytest.raises(EventValidationError, match="not valid JSON"):
        V.validate_json("{oops")


def test_errors_carry_ids_for_dead_letters() -> None:
    raw = raw_event(13, user="alice")
    raw["payload"] = {"nope": 1}
    with pytest.raises(EventValidationError) as info:
        V.validate(raw)
    assert info.value.event_id == "e13" and info.value.user_id == "alice"


def test_dead_letters_keep_reasons_but_not_values_outside_the_schema() -> None:
    raw = raw_event(14, etype="search", user="bob", context={"device_type": "tv"})
    raw["email"] = "bob@example.org"
    raw["context"]["ip"] = "10.1.2.3"
    raw["payload"]["ssn"] = "123-45-6789"
    errs = errors_of(raw)
    dl = DeadLetter.from_raw(raw, errs, "http:web", 1)
    text = dl.to_json()
    assert "bob@example.org" not in text and "10.1.2.3" not in text and "123-45" not in text
    assert dl.raw["email"] == REMOVED and dl.raw["context"]["ip"] == REMOVED
    assert dl.raw["context"]["device_type"] == "tv"
    assert dl.user_id == "bob" and dl.event_id == "e14" and dl.reasons == tuple(errs)
    assert DeadLetter.from_json(text) == dl
