"""Validation of raw events against the schema, with field-level errors.

:class:`EventValidator` turns a raw mapping (parsed JSON, a CSV row) into an
:class:`~recsys.events.schema.Event` or raises :class:`EventValidationError`
listing *every* problem found, each as ``path: message``. Fields the schema
does not declare are errors, so they are never stored. Text must be valid
Unicode: a lone surrogate (``"\\ud800"`` is valid JSON, but no UTF-8 text can
hold it) in any string or key is an error, so every accepted event can be
stored and every error message can be printed. Numbers must be finite and
integers fit in 64 bits where they name things (item ids, filter values).

Example:
    >>> v = EventValidator(ValidationConfig(max_future_skew_s=None))
    >>> v.validate({"event_id": "e1", "user_id": "u1", "session_id": "s1",
    ...             "type": "search", "timestamp": "2024-05-01T10:00:00Z",
    ...             "payload": {"query": "running shoes"}}).type.value
    'search'
    >>> try:
    ...     v.validate({"event_id": "e2", "user_id": "u1", "type": "click"})
    ... except EventValidationError as err:
    ...     print(err.errors[0])
    session_id: required field is missing
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recsys.data.compat import UTC
from recsys.events.schema import (
    CONTEXT_FIELDS,
    EMPTY_CONTEXT,
    EVENT_FIELDS,
    Event,
    EventContext,
    EventType,
    ItemId,
    datetime_to_us,
    new_event,
)
from recsys.runtime.context import COUNTRY, DEVICE_TYPES, UTC_OFFSET_RANGE

# \Z, not $: "$" also matches before a trailing newline, which would let "u1\n"
# pass as an id distinct from "u1".
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}\Z")
_COUNTRY_RE = COUNTRY  # the request context's rules (recsys.runtime.context)
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_DATE_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])\Z")
_MIN_TS_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
# 9999-12-31T23:59:59.999999Z, the last time a datetime (and so the event's
# ISO form) can hold: epoch numbers past it would fail when the event is written.
_MAX_TS_US = 253_402_300_799_999_999
#: Largest integer item id or filter value (a signed 64-bit integer, what the
#: feature and serving code store ids in).
MAX_INT = 2**63 - 1
_ID_MATCH = ID_PATTERN.match
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

try:  # optional accelerator of event reads; see decode_json
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

# Text orjson reads differently from the standard library (an integer beyond
# 64 bits becomes a float) holds a run of 19 digits. Found by mapping every
# digit to "0" and everything else to a space, then looking for 19 zeros: a
# tenth of the time of a regular expression.
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def lone_surrogate(text: str) -> int:
    """The position of the first lone surrogate in ``text``, or -1.

    JSON escapes such as ``"\\ud800"`` decode to such code points, which no
    UTF-8 text can hold: a store or a reply that encodes the string would fail.

    Example:
        >>> lone_surrogate("ok \\U0001F600"), lone_surrogate("bad \\ud800")
        (-1, 4)
    """
    if text.isascii():
        return -1
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return int(e.start)
    return -1


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udxxx`` escapes, so it can
    be encoded as UTF-8 (for error messages and dead letters); other text is
    returned unchanged.

    Example:
        >>> printable("k\\ud800")
        'k\\\\ud800'
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_error(path: str, text: str) -> str:
    at = lone_surrogate(text)
    return (
        f"{path}: holds a lone surrogate (U+{ord(text[at]):04X} at character {at}), "
        "which is not valid Unicode text; send UTF-8 text (an escaped pair such as "
        "\\ud83d\\ude00 is fine)"
    )


def decode_json(text: str | bytes) -> Any:
    """Parses JSON text to exactly what :func:`json.loads` returns.

    With the optional package ``orjson`` installed most text parses several
    times faster. orjson refuses some text the standard library accepts
    (``NaN``, lone surrogates, nesting past 1,024 levels) and reads integers
    beyond 64 bits as floats; refused text and text with a run of 19 digits
    go to the standard library, which accepts it or raises its usual error.

    Example:
        >>> decode_json('{"item_id": 18446744073709551617, "price": 9.5}')
        {'item_id': 18446744073709551617, 'price': 9.5}
    """
    if _orjson is not None:
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        digits = raw.translate(_DIGITS_TO_ZERO)
        if _LONG_RUN not in digits:
            try:
                return _orjson.loads(text)
            except ValueError:  # orjson.JSONDecodeError
                pass
    return json.loads(text)


class EventValidationError(ValueError):
    """A raw event broke the schema.

    Attributes:
        errors: one ``"path: message"`` string per problem, in field order.
        event_id: the raw event id when it could be read, else None.
        user_id: the raw user id when it could be read, else None.
    """

    def __init__(
        self, errors: list[str], event_id: str | None = None, user_id: str | None = None
    ) -> None:
        super().__init__("; ".join(errors))
        self.errors = tuple(errors)
        self.event_id = event_id
        self.user_id = user_id


@dataclass(frozen=True)
class FieldSpec:
    """Declares one payload field.

    Attributes:
        kind: ``str``, ``int``, ``number``, ``bool``, ``id_list`` (item ids),
            ``number_list`` (finite numbers in ``[min, max]``), ``str_list`` (short
            strings) or ``filters`` (a flat mapping of names to scalars or scalar lists).
        required: the field must be present for this event type.
        min: smallest allowed number.
        max: largest allowed number.
        max_len: longest string, or most list/mapping entries.
        pattern: regular expression a string must match in full.
    """

    kind: str
    required: bool = False
    min: float | None = None
    max: float | None = None
    max_len: int | None = None
    pattern: re.Pattern[str] | None = None


_CATEGORY = FieldSpec("str", max_len=128)
_POSITION = FieldSpec("int", min=0, max=100_000)
_PRICE = FieldSpec("number", min=0, max=1e9)
_COMMON: dict[str, FieldSpec] = {"category": _CATEGORY}
# the id of the served list an outcome belongs to (attribution, recsys.events.attribution)
_REQUEST_ID = FieldSpec("str", pattern=ID_PATTERN)

#: Payload fields each event type accepts. Anything else is rejected.
PAYLOAD_SPECS: dict[EventType, dict[str, FieldSpec]] = {
    EventType.PAGE_VIEW: {
        **_COMMON,
        "url": FieldSpec("str", max_len=2048),
        "title": FieldSpec("str", max_len=512),
    },
    EventType.CLICK: {
        **_COMMON,
        "position": _POSITION,
        "url": FieldSpec("str", max_len=2048),
        "request_id": _REQUEST_ID,
    },
    EventType.SCROLL: {**_COMMON, "scroll_depth": FieldSpec("number", True, 0.0, 1.0)},
    EventType.DWELL: {
        **_COMMON,
        "dwell_ms": FieldSpec("int", True, 0, 86_400_000),
        "request_id": _REQUEST_ID,
    },
    EventType.LIKE: {**_COMMON, "request_id": _REQUEST_ID},
    EventType.SHARE: {**_COMMON, "channel": FieldSpec("str", max_len=64)},
    EventType.COMMENT: {**_COMMON, "length": FieldSpec("int", min=0, max=1_000_000)},
    EventType.ADD_TO_CART: {
        **_COMMON,
        "price": FieldSpec("number", True, 0, 1e9),
        "quantity": FieldSpec("int", min=1, max=100_000),
        "currency": FieldSpec("str", pattern=_CURRENCY_RE),
        "request_id": _REQUEST_ID,
    },
    EventType.PURCHASE: {
        **_COMMON,
        "price": FieldSpec("number", True, 0, 1e9),
        "quantity": FieldSpec("int", min=1, max=100_000),
        "currency": FieldSpec("str", pattern=_CURRENCY_RE),
        "order_id": FieldSpec("str", pattern=ID_PATTERN),
        "request_id": _REQUEST_ID,
    },
    EventType.SUBSCRIBE: {**_COMMON, "plan": FieldSpec("str", max_len=64)},
    EventType.SEARCH: {
        **_COMMON,
        "query": FieldSpec("str", True, max_len=512),
        "results": FieldSpec("int", min=0, max=10_000_000),
    },
    EventType.FILTER: {**_COMMON, "filters": FieldSpec("filters", True, max_len=50)},
    EventType.RATING: {**_COMMON, "rating": FieldSpec("number", True, 0, 10)},
    # the exposure log: one event per served list (recsys.runtime.exposure)
    EventType.RECOMMENDATION_IMPRESSION: {
        **_COMMON,
        "items": FieldSpec("id_list", max_len=1000),
        "request_id": _REQUEST_ID,
        "position": _POSITION,
        "model": FieldSpec("str", max_len=128),
        "scores": FieldSpec("number_list", min=-1e30, max=1e30, max_len=1000),
        "propensities": FieldSpec("number_list", min=0.0, max=1.0, max_len=1000),
        "slate_propensity": FieldSpec("number", min=0.0, max=1.0),
        "position_propensities": FieldSpec("number_list", min=0.0, max=1.0, max_len=1000),
        # A/B assignments (recsys.runtime.experiments): one experiment's, and all of them
        "experiment": FieldSpec("str", max_len=128),
        "arm": FieldSpec("str", max_len=128),
        "experiments": FieldSpec("str_list", max_len=50),
        # the arm parameters the list was made with, "name=value" each
        "params": FieldSpec("str_list", max_len=50),
        # a contextual bandit's choice (recsys.bandits.online reads it back)
        "bandit": FieldSpec("str", max_len=128),
        "bandit_arm": FieldSpec("int", min=0, max=100_000),
        "bandit_context": FieldSpec("number_list", min=-1e6, max=1e6, max_len=1000),
        "bandit_propensity": FieldSpec("number", min=0.0, max=1.0),
        "policy": FieldSpec("str", max_len=128),
        "bundle": FieldSpec("str", max_len=128),
        "rules": FieldSpec("str_list", max_len=100),
        "segments": FieldSpec("str_list", max_len=200),
        "personalized": FieldSpec("bool"),
        "surface": FieldSpec("str", max_len=128),
        "fallback": FieldSpec("bool"),
        "k": FieldSpec("int", min=1, max=100_000),
    },
    EventType.RECOMMENDATION_CLICK: {
        **_COMMON,
        "request_id": _REQUEST_ID,
        "position": _POSITION,
        "model": FieldSpec("str", max_len=128),
    },
    # a catalogue item's attributes (recsys.events.catalogue checks the categories
    # against the served vocabularies)
    EventType.ITEM_PUBLISHED: {
        "title": FieldSpec("str", max_len=512),
        "categories": FieldSpec("str_list", max_len=20),
        "release_date": FieldSpec("str", pattern=_DATE_RE),
        # the year the year feature buckets (MovieLens: the title's year, which can
        # differ from the release date's); default: the release date's year
        "year": FieldSpec("int", min=1000, max=9999),
    },
}

#: Types whose event is about one item: ``item_id`` is required.
ITEM_REQUIRED: frozenset[EventType] = frozenset(
    {
        EventType.CLICK,
        EventType.LIKE,
        EventType.SHARE,
        EventType.COMMENT,
        EventType.ADD_TO_CART,
        EventType.PURCHASE,
        EventType.RATING,
        EventType.RECOMMENDATION_CLICK,
        EventType.ITEM_PUBLISHED,
    }
)
#: Types that are never about one item: ``item_id`` is rejected.
ITEM_FORBIDDEN: frozenset[EventType] = frozenset({EventType.SEARCH, EventType.FILTER})

#: Types with a required payload field.
_NEEDS_PAYLOAD: frozenset[EventType] = frozenset(
    t for t, specs in PAYLOAD_SPECS.items() if any(f.required for f in specs.values())
)
_TYPES = {t.value: t for t in EventType}
_DEVICES = frozenset(DEVICE_TYPES)
_UTC_LOW, _UTC_HIGH = UTC_OFFSET_RANGE
_TOP = frozenset(EVENT_FIELDS)
_CTX = frozenset(CONTEXT_FIELDS)


@dataclass(frozen=True)
class ValidationConfig:
    """Limits applied on top of the schema.

    Attributes:
        max_future_skew_s: reject timestamps more than this many seconds after
            the validator's clock (client clock skew allowance); None disables.
        min_timestamp_us: reject timestamps before this (default 2000-01-01).
        clock: seconds since the epoch, for the future check.
    """

    max_future_skew_s: float | None = 300.0
    min_timestamp_us: int = _MIN_TS_US
    clock: Callable[[], float] = time.time


class EventValidator:
    """Checks raw events against the schema and builds :class:`Event` s.

    Args:
        config: limits; defaults allow 5 minutes of client clock skew.
    """

    def __init__(self, config: ValidationConfig | None = None) -> None:
        self.config = config or ValidationConfig()

    def validate_json(self, text: str | bytes) -> Event:
        """Parses one JSON object and validates it.

        Raises:
            EventValidationError: the text is not a JSON object, or breaks the schema.
        """
        try:
            raw = decode_json(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise EventValidationError([f"$: not valid JSON ({e})"]) from None
        return self.validate(raw)

    def validate(self, raw: object) -> Event:
        """Validates one raw event.

        Args:
            raw: a mapping with the fields of :data:`EVENT_FIELDS`.

        Returns:
            The typed event.

        Raises:
            EventValidationError: with every problem found.
        """
        if type(raw) is dict:
            event = self._fast(raw)
            if event is not None:
                return event
        if not isinstance(raw, Mapping):
            raise EventValidationError([f"$: an event must be a JSON object, got {_kind(raw)}"])
        errors: list[str] = []
        for key in raw:
            if key not in _TOP:
                errors.append(f"{printable(str(key))}: field is not in the event schema")
        event_id = _check_id(raw, "event_id", errors)
        user_id = _check_id(raw, "user_id", errors)
        session_id = _check_id(raw, "session_id", errors)
        etype: EventType | None = None
        if "type" not in raw:
            errors.append("type: required field is missing")
        else:
            etype = _TYPES.get(raw["type"]) if isinstance(raw["type"], str) else None
            if etype is None:
                errors.append(
                    f"type: unknown event type {raw['type']!r}; expected one of {sorted(_TYPES)}"
                )
        ts_us = self._check_timestamp(raw, errors)
        item_id = _check_item(raw, etype, errors)
        context = _check_context(raw.get("context"), errors)
        payload = _check_payload(raw.get("payload"), etype, errors)
        if errors:
            raise EventValidationError(errors, event_id, user_id)
        assert event_id and user_id and session_id and etype is not None and ts_us is not None
        return Event(event_id, user_id, session_id, etype, ts_us, item_id, context, payload)

    def _fast(self, raw: dict[str, Any]) -> Event | None:
        """The common case (string ids, ISO timestamp, plain values) without
        collecting errors; None sends the event through the full checks, which
        accept and build exactly the same events and describe every problem."""
        if not raw.keys() <= _TOP:
            return None
        event_id = raw.get("event_id")
        user_id = raw.get("user_id")
        session_id = raw.get("session_id")
        if type(event_id) is not str or type(user_id) is not str or type(session_id) is not str:
            return None
        if not (_ID_MATCH(event_id) and _ID_MATCH(user_id) and _ID_MATCH(session_id)):
            return None
        name = raw.get("type")
        etype = _TYPES.get(name) if type(name) is str else None
        if etype is None:
            return None
        stamp = raw.get("timestamp")
        if type(stamp) is not str:
            return None
        try:
            dt = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        delta = dt - _EPOCH  # aware subtraction: the same as converting to UTC first
        ts_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        cfg = self.config
        if ts_us < cfg.min_timestamp_us:
            return None
        if (
            cfg.max_future_skew_s is not None
            and ts_us > (cfg.clock() + cfg.max_future_skew_s) * 1_000_000
        ):
            return None
        item_id = raw.get("item_id")
        if item_id is None:
            if etype in ITEM_REQUIRED:
                return None
        elif etype in ITEM_FORBIDDEN:
            return None
        elif type(item_id) is int:
            if item_id < 0 or item_id > MAX_INT:
                return None
        elif type(item_id) is not str or not _ID_MATCH(item_id):
            return None
        errors: list[str] = []
        context = raw.get("context")
        context = EMPTY_CONTEXT if context is None else _check_context(context, errors)
        payload: Mapping[str, Any]
        body = raw.get("payload")
        if body is None and etype not in _NEEDS_PAYLOAD:
            payload = {}
        else:
            payload = _check_payload(body, etype, errors)
        if errors:
            return None
        return new_event(event_id, user_id, session_id, etype, ts_us, item_id, context, payload)

    def _check_timestamp(self, raw: Mapping[str, Any], errors: list[str]) -> int | None:
        if "timestamp" not in raw:
            errors.append("timestamp: required field is missing")
            return None
        value = raw["timestamp"]
        ts_us: int
        if isinstance(value, bool):
            errors.append("timestamp: expected an ISO 8601 string or epoch seconds, got a boolean")
            return None
        if isinstance(value, int | float):
            if not math.isfinite(value):
                errors.append("timestamp: must be a finite number")
                return None
            if abs(value) > 1e15:
                # Checked before scaling: a float this large could overflow to inf
                # (and the year would be past 9999 anyway).
                where = "after 9999-12-31T23:59:59Z" if value > 0 else "before 2000-01-01"
                errors.append(f"timestamp: {_num(value)} is {where}")
                return None
            ts_us = round(value * 1_000_000) if isinstance(value, float) else value * 1_000_000
        elif isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                errors.append(f"timestamp: {value[:64]!r} is not an ISO 8601 date-time")
                return None
            if dt.tzinfo is None:
                errors.append(
                    f"timestamp: {value[:64]!r} has no UTC offset; write it in UTC, e.g. "
                    "'2024-05-01T10:00:00Z'"
                )
                return None
            ts_us = datetime_to_us(dt)  # aware: no conversion needed, no overflow near year 9999
        else:
            errors.append(
                f"timestamp: expected an ISO 8601 string or epoch seconds, got {_kind(value)}"
            )
            return None
        cfg = self.config
        if ts_us < cfg.min_timestamp_us:
            errors.append(f"timestamp: {value!r} is before the earliest accepted time (2000-01-01)")
            return None
        if cfg.max_future_skew_s is not None:
            limit = (cfg.clock() + cfg.max_future_skew_s) * 1_000_000
            if ts_us > limit:
                hint = " (epoch milliseconds? send seconds)" if ts_us > limit * 500 else ""
                errors.append(f"timestamp: {value!r} is in the future{hint}")
                return None
        if ts_us > _MAX_TS_US:  # reached with the future check off (logs)
            errors.append(f"timestamp: {value!r} is after 9999-12-31T23:59:59Z")
            return None
        return ts_us


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _check_id(raw: Mapping[str, Any], name: str, errors: list[str]) -> str | None:
    if name not in raw:
        errors.append(f"{name}: required field is missing")
        return None
    value = raw[name]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        errors.append(f"{name}: expected a string id, got {_kind(value)}")
        return None
    if not ID_PATTERN.match(value):
        errors.append(f"{name}: {value[:64]!r} is not an id (1-128 characters of A-Z a-z 0-9 _.:-)")
        return None
    return value


def _check_item_value(value: object, path: str, errors: list[str]) -> ItemId | None:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            errors.append(f"{path}: integer item ids must be >= 0, got {value}")
            return None
        if value > MAX_INT:
            errors.append(f"{path}: integer item ids must be < 2**63, got {_num(value)}")
            return None
        return value
    if isinstance(value, str):
        if not ID_PATTERN.match(value):
            errors.append(f"{path}: {value[:64]!r} is not an item id")
            return None
        return value
    errors.append(f"{path}: expected an integer or string item id, got {_kind(value)}")
    return None


def _check_item(
    raw: Mapping[str, Any], etype: EventType | None, errors: list[str]
) -> ItemId | None:
    value = raw.get("item_id")
    if value is None:
        if etype in ITEM_REQUIRED:
            errors.append(f"item_id: required for {etype.value} events")
        return None
    if etype in ITEM_FORBIDDEN:
        errors.append(f"item_id: not allowed for {etype.value} events")
        return None
    return _check_item_value(value, "item_id", errors)


def _check_context(value: object, errors: list[str]) -> EventContext:
    if value is None:
        return EMPTY_CONTEXT
    if not isinstance(value, Mapping):
        errors.append(f"context: expected an object, got {_kind(value)}")
        return EMPTY_CONTEXT
    out: dict[str, Any] = {}
    for key, v in value.items():
        path = f"context.{printable(str(key))}"
        if key not in _CTX:
            errors.append(f"{path}: field is not in the event schema")
            continue
        if v is None:
            continue
        if key == "utc_offset_minutes":
            if not isinstance(v, int) or isinstance(v, bool) or not _UTC_LOW <= v <= _UTC_HIGH:
                errors.append(
                    f"{path}: expected an integer in [{_UTC_LOW}, {_UTC_HIGH}], got {v!r}"
                )
                continue
        elif not isinstance(v, str):
            errors.append(f"{path}: expected a string, got {_kind(v)}")
            continue
        elif lone_surrogate(v) >= 0:
            errors.append(_surrogate_error(path, v))
            continue
        elif key == "device_type" and v not in _DEVICES:
            errors.append(f"{path}: unknown device type {v!r}; expected one of {sorted(_DEVICES)}")
            continue
        elif key == "country" and not _COUNTRY_RE.match(v):
            errors.append(f"{path}: expected an ISO 3166-1 alpha-2 code like 'DE', got {v!r}")
            continue
        elif len(v) > (2048 if key == "referrer" else 128):
            errors.append(f"{path}: too long ({len(v)} characters)")
            continue
        out[key] = v
    return EventContext(**out) if out else EMPTY_CONTEXT


def _check_scalar(spec: FieldSpec, value: object, path: str, errors: list[str]) -> bool:
    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {_kind(value)}")
            return False
        if spec.max_len is not None and len(value) > spec.max_len:
            errors.append(f"{path}: longer than {spec.max_len} characters")
            return False
        if lone_surrogate(value) >= 0:
            errors.append(_surrogate_error(path, value))
            return False
        if spec.pattern is not None and not spec.pattern.match(value):
            errors.append(f"{path}: {value[:64]!r} does not match {spec.pattern.pattern}")
            return False
        return True
    if kind == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean, got {_kind(value)}")
            return False
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(f"{path}: expected a number, got {_kind(value)}")
        return False
    if kind == "int" and not isinstance(value, int):
        errors.append(f"{path}: expected an integer, got {value!r}")
        return False
    if not math.isfinite(value):
        errors.append(f"{path}: must be finite")
        return False
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        errors.append(f"{path}: {value!r} is outside [{spec.min:g}, {spec.max:g}]")
        return False
    return True


def _check_filters(spec: FieldSpec, value: object, path: str, errors: list[str]) -> bool:
    if not isinstance(value, Mapping):
        errors.append(f"{path}: expected an object of filter names to values, got {_kind(value)}")
        return False
    if spec.max_len is not None and len(value) > spec.max_len:
        errors.append(f"{path}: more than {spec.max_len} filters")
        return False
    ok = True
    for name, v in value.items():
        where = f"{path}.{printable(str(name))}"
        items = v if isinstance(v, list) else [v]
        if len(str(name)) > 64 or len(items) > 100:
            errors.append(f"{where}: filter name or value list too long")
            ok = False
            continue
        if lone_surrogate(str(name)) >= 0:
            errors.append(_surrogate_error(where, str(name)))
            ok = False
            continue
        for x in items:
            problem = _filter_value_problem(x)
            if problem:
                errors.append(f"{where}: {problem}")
                ok = False
                break
    return ok


def _filter_value_problem(x: object) -> str:
    """Why ``x`` cannot be a filter value ("" when it can)."""
    if isinstance(x, bool):
        return ""
    if isinstance(x, str):
        if len(x) > 128:
            return "values must be short strings, numbers or booleans"
        if lone_surrogate(x) >= 0:
            return _surrogate_error("value", x)
        return ""
    if isinstance(x, int):
        # JSON readers other than Python's (and orjson) stop at 64 bits.
        return "" if -MAX_INT - 1 <= x <= MAX_INT else "integers must fit in 64 bits"
    if isinstance(x, float):
        return "" if math.isfinite(x) else "numbers must be finite"
    return "values must be short strings, numbers or booleans"


def _num(value: int | float) -> str:
    """A number for a message: an integer too long to show whole by its size
    (``str`` of one past 4,300 digits even raises)."""
    if isinstance(value, int) and value.bit_length() > 100:
        return f"a {int(value.bit_length() * 0.30103) + 1}-digit number"
    return repr(value)


def _check_payload(value: object, etype: EventType | None, errors: list[str]) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        errors.append(f"payload: expected an object, got {_kind(value)}")
        return {}
    if etype is None:
        return {}
    specs = PAYLOAD_SPECS[etype]
    out: dict[str, Any] = {}
    for key, v in value.items():
        path = f"payload.{printable(str(key))}"
        spec = specs.get(key)
        if spec is None:
            errors.append(
                f"{path}: field is not in the schema of {etype.value} events "
                f"(allowed: {', '.join(sorted(specs))})"
            )
            continue
        if v is None:
            continue
        if spec.kind == "id_list":
            if not isinstance(v, list) or (spec.max_len is not None and len(v) > spec.max_len):
                errors.append(f"{path}: expected a list of at most {spec.max_len} item ids")
                continue
            before = len(errors)
            ids = [_check_item_value(x, f"{path}[{i}]", errors) for i, x in enumerate(v)]
            if len(errors) == before:
                out[key] = ids
        elif spec.kind == "number_list" or spec.kind == "str_list":
            if not isinstance(v, list) or (spec.max_len is not None and len(v) > spec.max_len):
                errors.append(f"{path}: expected a list of at most {spec.max_len} values")
                continue
            numbers = spec.kind == "number_list"
            item = FieldSpec(
                "number" if numbers else "str",
                min=spec.min,
                max=spec.max,
                max_len=None if numbers else 128,
            )
            before = len(errors)
            for i, x in enumerate(v):
                if not _check_scalar(item, x, f"{path}[{i}]", errors):
                    break
            if len(errors) == before:
                out[key] = list(v)
        elif spec.kind == "filters":
            if _check_filters(spec, v, path, errors):
                out[key] = dict(v)
        elif _check_scalar(spec, v, path, errors):
            out[key] = v
    for key, spec in specs.items():
        if spec.required and value.get(key) is None:
            errors.append(f"payload.{key}: required for {etype.value} events")
    return out


_DEFAULT = EventValidator()


def validate_event(raw: object) -> Event:
    """Validates one raw event with the default :class:`ValidationConfig`.

    Raises:
        EventValidationError: with every problem found.
    """
    return _DEFAULT.validate(raw)
