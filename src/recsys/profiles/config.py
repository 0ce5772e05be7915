"""Settings of the dynamic profile: windows, recent items, affinity decay.

Example:
    >>> cfg = ProfileConfig()
    >>> [w.name for w in cfg.windows], cfg.window("24h").resolution_s
    (['1h', '24h', '7d', '30d'], 60)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from recsys.events.schema import EventType
from recsys.features.schema import FeatureSchema

_WINDOW_RE = re.compile(r"^(\d+)([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class WindowSpec:
    """A sliding window over event counts.

    Counts are kept in buckets of ``resolution_s`` seconds. The window at time
    ``t`` is the ``seconds / resolution_s`` whole buckets ending with the
    bucket that holds ``t``; the count is exact for that definition (no
    sampling, no decay), so online and offline agree to the event.

    Attributes:
        name: how rules and features spell it (``"24h"``).
        seconds: window length.
        resolution_s: bucket width; must divide ``seconds``.
    """

    name: str
    seconds: int
    resolution_s: int
    # Derived once: read on every count.
    buckets: int = field(init=False, repr=False, compare=False)
    resolution_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.resolution_s <= 0 or self.seconds % self.resolution_s:
            raise ValueError(
                f"window {self.name!r}: resolution {self.resolution_s}s must divide {self.seconds}s"
            )
        object.__setattr__(self, "buckets", self.seconds // self.resolution_s)
        object.__setattr__(self, "resolution_us", self.resolution_s * 1_000_000)


def parse_duration(text: str) -> int:
    """Seconds in ``"90m"``, ``"24h"`` or ``"7d"``.

    Raises:
        ValueError: any other spelling.
    """
    m = _WINDOW_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


DEFAULT_WINDOWS: tuple[WindowSpec, ...] = (
    WindowSpec("1h", 3600, 60),
    WindowSpec("24h", 86_400, 60),
    WindowSpec("7d", 604_800, 3600),
    WindowSpec("30d", 2_592_000, 3600),
)

#: Types whose item goes to the recent-items list.
DEFAULT_RECENT_TYPES: frozenset[EventType] = frozenset(
    {
        EventType.PAGE_VIEW,
        EventType.CLICK,
        EventType.LIKE,
        EventType.SHARE,
        EventType.COMMENT,
        EventType.ADD_TO_CART,
        EventType.PURCHASE,
        EventType.RATING,
        EventType.RECOMMENDATION_CLICK,
    }
)

DEFAULT_AFFINITY_WEIGHTS: Mapping[EventType, float] = MappingProxyType(
    {
        EventType.PAGE_VIEW: 0.5,
        EventType.CLICK: 1.0,
        EventType.RECOMMENDATION_CLICK: 1.0,
        EventType.DWELL: 0.5,
        EventType.LIKE: 2.0,
        EventType.SHARE: 2.0,
        EventType.COMMENT: 2.0,
        EventType.RATING: 1.5,
        EventType.ADD_TO_CART: 3.0,
        EventType.PURCHASE: 5.0,
        EventType.SUBSCRIBE: 3.0,
    }
)


@dataclass(frozen=True)
class ProfileConfig:
    """How events become the dynamic profile.

    Attributes:
        windows: count windows (rules say ``count(click, 24h)``).
        recent_items: length of the recent-items list (the schema's
            ``user_recent_items.max_len``; see :meth:`from_schema`).
        recent_types: event types whose item enters the recent-items list.
        affinity_half_life_s: category affinity halves every this many seconds.
        affinity_weights: what one event of a type adds to its category.
        max_categories: categories kept per affinity map and history list.
        recent_sessions: session ids remembered so a late event of an old
            session does not open a new one.
    """

    windows: tuple[WindowSpec, ...] = DEFAULT_WINDOWS
    recent_items: int = 50
    recent_types: frozenset[EventType] = DEFAULT_RECENT_TYPES
    affinity_half_life_s: float = 7 * 86_400.0
    affinity_weights: Mapping[EventType, float] = field(
        default_factory=lambda: DEFAULT_AFFINITY_WEIGHTS
    )
    max_categories: int = 100
    recent_sessions: int = 8

    def __post_init__(self) -> None:
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError(f"window names repeat: {names}")
        if self.recent_items < 1:
            raise ValueError("recent_items must be >= 1")

    @classmethod
    def from_schema(cls, schema: FeatureSchema, **overrides: object) -> ProfileConfig:
        """Takes ``recent_items`` from the schema's ``user_recent_items`` feature."""
        if "user_recent_items" in schema:
            overrides.setdefault("recent_items", schema["user_recent_items"].max_len)
        return cls(**overrides)  # type: ignore[arg-type]

    def window(self, name: str) -> WindowSpec:
        """The window called ``name``.

        Raises:
            KeyError: naming the windows that exist.
        """
        for w in self.windows:
            if w.name == name:
                return w
        raise KeyError(f"no window {name!r}; configured windows: {[w.name for w in self.windows]}")

    def retention(self) -> dict[int, int]:
        """Bucket resolution (s) -> buckets to keep (the longest window using it)."""
        return self._retention

    @cached_property
    def retention_items(self) -> tuple[tuple[int, int], ...]:
        """:meth:`retention` as a tuple (read on every event)."""
        return tuple(self._retention.items())

    @cached_property
    def bucket_plan(self) -> tuple[tuple[int, int, int], ...]:
        """``(resolution_s, resolution_us, buckets to keep)`` per resolution."""
        return tuple((res, res * 1_000_000, keep) for res, keep in self._retention.items())

    @cached_property
    def type_plan(self) -> Mapping[EventType, tuple[str, bool, float | None]]:
        """Per event type: ``(name, enters the recent-items list, affinity weight)``."""
        return MappingProxyType(
            {t: (t.value, t in self.recent_types, self.affinity_weights.get(t)) for t in EventType}
        )

    @cached_property
    def _retention(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for w in self.windows:
            out[w.resolution_s] = max(out.get(w.resolution_s, 0), w.buckets)
        return out
