"""Context vectors of the bandits: request context and segments as numbers.

:class:`ContextEncoder` turns one request's :class:`~recsys.runtime.context.RequestContext`
and the user's segments into a fixed-length vector: a constant 1 (the arm's base rate),
the device type one-hot, the local time of day in four bands (night 0-5, morning 6-11,
afternoon 12-17, evening 18-23) one-hot, a weekend flag, and one slot per named
segment. An unknown field leaves its slots at zero, so "unknown" is never mistaken for
a value.

Example:
    >>> enc = ContextEncoder(segments=("engaged_clickers",))
    >>> ctx = RequestContext(device_type="mobile", request_time_ms=1_765_045_800_000,
    ...                      utc_offset_minutes=60)
    >>> enc.names()[:3], enc.encode(ctx, ["engaged_clickers"]).sum()
    (['bias', 'device=desktop', 'device=mobile'], 4.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsys.runtime.context import DEVICE_TYPES, RequestContext

BANDS = ("night", "morning", "afternoon", "evening")


@dataclass(frozen=True)
class ContextEncoder:
    """Request context + segments -> vector (see the module docstring).

    Attributes:
        segments: the segments that get a slot, in order.
        devices: the device types that get a slot.
    """

    segments: tuple[str, ...] = ()
    devices: tuple[str, ...] = DEVICE_TYPES

    @property
    def dim(self) -> int:
        return 1 + len(self.devices) + len(BANDS) + 1 + len(self.segments)

    def names(self) -> list[str]:
        return [
            "bias",
            *(f"device={d}" for d in self.devices),
            *(f"time={b}" for b in BANDS),
            "weekend",
            *(f"segment={s}" for s in self.segments),
        ]

    def encode(self, context: RequestContext, segments: Sequence[str] = ()) -> np.ndarray:
        """The vector of one request."""
        x = np.zeros(self.dim)
        x[0] = 1.0
        if context.device_type in self.devices:
            x[1 + self.devices.index(context.device_type)] = 1.0
        base = 1 + len(self.devices)
        if context.local_hour is not None:
            x[base + context.local_hour // 6] = 1.0
        if context.weekday is not None:
            x[base + len(BANDS)] = float(context.weekday >= 5)
        members = set(segments)
        start = base + len(BANDS) + 1
        for n, name in enumerate(self.segments):
            x[start + n] = float(name in members)
        return x
