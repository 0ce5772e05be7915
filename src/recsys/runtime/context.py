"""The live context a ``recommend`` request carries, validated once for serving and events.

A request may say when it is made (epoch milliseconds) and the user's offset from UTC,
the device class, operating system and browser, country and region, the surface or
placement the list is for, the session, and a client request id. Every field is
optional; an omitted one is *unknown* (``None``), never filled from the training run.

The rules (device classes, country codes, the UTC offset range, lengths) are the event
schema's too: :mod:`recsys.events.validation` checks an event's ``context`` with
:func:`check_field`, so a request and the events it leads to agree on what a valid
context is.

Example:
    >>> ctx = RequestContext.from_values(request_time_ms=1_700_000_000_000,
    ...                                  utc_offset_minutes=60, device_type="mobile")
    >>> ctx.local_hour, ctx.weekday, ctx.device_type
    (23, 1, 'mobile')
    >>> try:
    ...     RequestContext.from_values(country="Germany")
    ... except ContextError as error:
    ...     print(error)
    country: expected an ISO 3166-1 alpha-2 code like 'DE', got 'Germany'
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, fields
from typing import Any

DEVICE_TYPES: tuple[str, ...] = (
    "desktop",
    "mobile",
    "tablet",
    "tv",
    "console",
    "wearable",
    "other",
)
"""The device classes a client may report (the event schema's ``DeviceType``)."""

UTC_OFFSET_RANGE: tuple[int, int] = (-720, 840)
"""Smallest and largest UTC offset in minutes (UTC-12:00 to UTC+14:00)."""

MAX_TEXT = 128
"""Longest text value of a context field (characters)."""

COUNTRY = re.compile(r"^[A-Z]{2}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
"""A request id: 1-128 characters, letters, digits and ``. _ : -``, not starting with
punctuation (the event schema's id pattern)."""

REQUEST_TIME_RANGE_MS: tuple[int, int] = (946_684_800_000, 4_102_444_800_000)
"""Request times accepted: 2000-01-01 to 2100-01-01 UTC, in epoch milliseconds."""

TEXT_FIELDS: tuple[str, ...] = (
    "device_type",
    "os",
    "browser",
    "country",
    "region",
    "surface",
    "session_id",
    "request_id",
)
"""The string fields of :class:`RequestContext`, which are also ``recommend``'s BYTES inputs."""

INT_FIELDS: tuple[str, ...] = ("request_time_ms", "utc_offset_minutes")
"""The integer fields, which are also ``recommend``'s INT64 inputs."""


class ContextError(ValueError):
    """A context value is invalid; the message names the field."""


def check_field(name: str, value: Any) -> str | None:
    """Checks one context value; returns the error message, or None when it is valid.

    Args:
        name: a field of :class:`RequestContext` (or of an event's ``context``).
        value: the value (None is always valid: unknown).

    Example:
        >>> check_field("utc_offset_minutes", 900)
        'utc_offset_minutes: expected an integer in [-720, 840], got 900'
    """
    if value is None:
        return None
    if name in INT_FIELDS:
        low, high = UTC_OFFSET_RANGE if name == "utc_offset_minutes" else REQUEST_TIME_RANGE_MS
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"{name}: expected an integer in [{low}, {high}], got {value!r}"
        return None
    if not isinstance(value, str):
        return f"{name}: expected a string, got {type(value).__name__}"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return f"{name}: holds a lone surrogate (not valid UTF-8)"
    if name == "device_type" and value not in DEVICE_TYPES:
        return f"{name}: unknown device type {value!r}; expected one of {sorted(DEVICE_TYPES)}"
    if name == "country" and not COUNTRY.match(value):
        return f"{name}: expected an ISO 3166-1 alpha-2 code like 'DE', got {value!r}"
    if name in ("request_id", "session_id") and not REQUEST_ID.match(value):
        return (
            f"{name}: expected 1-128 letters, digits or . _ : - (not starting with "
            f"punctuation), got {value[:40]!r}"
        )
    if len(value) > MAX_TEXT:
        return f"{name}: too long ({len(value)} characters, at most {MAX_TEXT})"
    if not value.isprintable():
        return f"{name}: holds control characters"
    return None


@dataclass(frozen=True)
class RequestContext:
    """What one request says about itself; every field None when unknown.

    Attributes:
        request_time_ms: when the request is made, epoch milliseconds (UTC).
        utc_offset_minutes: the user's offset from UTC (local time = UTC + offset).
        device_type: one of :data:`DEVICE_TYPES`.
        os: operating system family, e.g. ``android``.
        browser: browser family, e.g. ``firefox``.
        country: ISO 3166-1 alpha-2 code, upper case.
        region: subdivision code or region name.
        surface: the surface or placement the list is shown on, e.g. ``home``.
        session_id: the client's session.
        request_id: the client's id for this request (the server makes one when absent).
    """

    request_time_ms: int | None = None
    utc_offset_minutes: int | None = None
    device_type: str | None = None
    os: str | None = None
    browser: str | None = None
    country: str | None = None
    region: str | None = None
    surface: str | None = None
    session_id: str | None = None
    request_id: str | None = None

    @classmethod
    def from_values(cls, **values: Any) -> RequestContext:
        """A checked context; empty strings count as unknown.

        Raises:
            ContextError: an unknown field, or a value that breaks its rule (every
                problem named, in field order).
        """
        known = {f.name for f in fields(cls)}
        extra = sorted(set(values) - known)
        if extra:
            raise ContextError(f"unknown context fields {extra}; known: {sorted(known)}")
        clean = {k: (None if v == "" else v) for k, v in values.items()}
        problems = [p for name in known if (p := check_field(name, clean.get(name))) is not None]
        if problems:
            raise ContextError("; ".join(sorted(problems)))
        return cls(**clean)

    @property
    def local_hour(self) -> int | None:
        """Hour of day (0-23) at the user, or None without a request time."""
        local = self._local_seconds()
        return None if local is None else (local // 3600) % 24

    @property
    def weekday(self) -> int | None:
        """Day of week at the user (Monday = 0), or None without a request time."""
        local = self._local_seconds()
        # 1970-01-01 was a Thursday (weekday 3)
        return None if local is None else (local // 86_400 + 3) % 7

    def _local_seconds(self) -> int | None:
        if self.request_time_ms is None:
            return None
        return self.request_time_ms // 1000 + 60 * (self.utc_offset_minutes or 0)

    def with_request_id(self) -> RequestContext:
        """This context with a request id: the client's, else a new random one."""
        if self.request_id is not None:
            return self
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["request_id"] = uuid.uuid4().hex
        return RequestContext(**values)

    def event_context(self) -> dict[str, Any]:
        """The fields an event's ``context`` holds (those that are known)."""
        names = ("device_type", "os", "browser", "country", "region", "utc_offset_minutes")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def to_dict(self) -> dict[str, Any]:
        """The known fields, as a plain mapping."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


UNKNOWN = RequestContext()
"""The context of a request that says nothing about itself."""
