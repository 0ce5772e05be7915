"""Dead letters: invalid events kept with the reason they were refused.

Nothing is dropped silently: an event that fails validation (or whose
processing raised) becomes a :class:`DeadLetter` in the store. Values of
fields outside the schema are *not* kept (only their names), so a dead letter
never stores data the schema does not allow. Lone surrogates (valid JSON
escapes that no UTF-8 text can hold) are kept as ``\\udxxx`` text in keys,
values and reasons, so every dead letter can itself be stored.

Example:
    >>> dl = DeadLetter.from_raw({"event_id": "e1", "email": "a@b.c"},
    ...                          ["email: field is not in the event schema"], "http", 0)
    >>> dl.raw["email"]
    '<removed: field not in schema>'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recsys.events.schema import CONTEXT_FIELDS, EVENT_FIELDS, EventType
from recsys.events.validation import ID_PATTERN, PAYLOAD_SPECS, printable

REMOVED = "<removed: field not in schema>"
_MAX_TEXT = 512
_TOP = frozenset(EVENT_FIELDS)
_CTX = frozenset(CONTEXT_FIELDS)
_ANY_PAYLOAD = frozenset(k for spec in PAYLOAD_SPECS.values() for k in spec)
_TYPES = {t.value: t for t in EventType}


_MAX_DEPTH = 16
TOO_DEEP = "<removed: nested too deep>"


def _key(key: object) -> str:
    return printable(str(key)[:64])


def _clip(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return printable(value[:_MAX_TEXT])
    if isinstance(value, list | Mapping) and depth >= _MAX_DEPTH:
        return TOO_DEEP  # also keeps the copy far from the recursion limit
    if isinstance(value, list):
        return [_clip(v, depth + 1) for v in value[:100]]
    if isinstance(value, Mapping):
        return {_key(k): _clip(v, depth + 1) for k, v in list(value.items())[:50]}
    return value


def _sanitize(raw: object) -> Any:
    if isinstance(raw, str | bytes):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return printable(text[:2000])
    if not isinstance(raw, Mapping):
        return _clip(raw)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = _key(key)
        if k not in _TOP:
            out[k] = REMOVED
        elif k == "context" and isinstance(value, Mapping):
            out[k] = {_key(c): (_clip(v) if c in _CTX else REMOVED) for c, v in value.items()}
        elif k == "payload" and isinstance(value, Mapping):
            rtype = raw.get("type")
            etype = _TYPES.get(rtype) if isinstance(rtype, str) else None
            allowed = PAYLOAD_SPECS[etype] if etype is not None else _ANY_PAYLOAD
            out[k] = {_key(p): (_clip(v) if p in allowed else REMOVED) for p, v in value.items()}
        else:
            out[k] = _clip(value)
    return out


def _id_of(raw: object, name: str) -> str | None:
    if isinstance(raw, Mapping):
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and ID_PATTERN.match(value):
            return value
    return None


@dataclass(frozen=True)
class DeadLetter:
    """One refused event.

    Attributes:
        received_us: when it was refused, epoch microseconds.
        source: where it came from (``stream``, ``http:<key name>``, ``file:<path>:<line>``).
        reasons: every validation error, ``"path: message"``.
        event_id: the raw event id when it was a valid id, else None.
        user_id: the raw user id when it was a valid id (so erasure and access
            find it), else None.
        raw: the event as received, minus values of fields outside the schema,
            long strings clipped.
    """

    received_us: int
    source: str
    reasons: tuple[str, ...]
    event_id: str | None
    user_id: str | None
    raw: Any

    @classmethod
    def from_raw(
        cls, raw: object, reasons: list[str] | tuple[str, ...], source: str, received_us: int
    ) -> DeadLetter:
        """Builds a dead letter from whatever was received.

        Args:
            raw: the raw event (mapping, or text that was not JSON).
            reasons: why it was refused.
            source: where it came from.
            received_us: when it was refused.
        """
        return cls(
            received_us=received_us,
            source=source,
            reasons=tuple(printable(r) for r in reasons),
            event_id=_id_of(raw, "event_id"),
            user_id=_id_of(raw, "user_id"),
            raw=_sanitize(raw),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "received_us": self.received_us,
                "source": self.source,
                "reasons": list(self.reasons),
                "event_id": self.event_id,
                "user_id": self.user_id,
                "raw": self.raw,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        d = json.loads(text)
        return cls(
            d["received_us"],
            d["source"],
            tuple(d["reasons"]),
            d["event_id"],
            d["user_id"],
            d["raw"],
        )
