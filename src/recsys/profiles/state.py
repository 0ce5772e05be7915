"""The dynamic part of a user profile, updated one event at a time.

:class:`UserProfile` holds, per user: counts per event type in time buckets
(exact sliding-window counts), lifetime totals, the last N items, category
affinities with exponential time decay, session statistics, device counts,
hour-of-day and weekday histograms, purchase totals, the categories seen per
event type (history predicates) and current segment memberships.

The same :meth:`UserProfile.apply` runs offline over a log and online in the
stream consumer, and the profile round-trips through :meth:`to_doc` /
:meth:`from_doc` without change, so both paths give identical profiles.

Example:
    >>> from recsys.events.schema import Event, EventType
    >>> cfg = ProfileConfig()
    >>> p = UserProfile("u1")
    >>> p.apply(Event("e1", "u1", "s1", EventType.CLICK, 3_600_000_000, item_id=7), cfg)
    >>> p.count("click", cfg.window("1h"), 3_600_000_000), p.recent_item_ids()
    (1, [7])
"""

from __future__ import annotations

from itertools import chain
from typing import Any

from recsys.events.schema import EMPTY_CONTEXT, Event, EventType, ItemId
from recsys.profiles.config import ProfileConfig, WindowSpec

HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
DOC_VERSION = 1
_PRUNE_SLACK = 16


def local_hour(local_us: int) -> int:
    """Hour of day (0-23) of a (possibly offset-shifted) epoch time."""
    return (local_us // HOUR_US) % 24


def local_weekday(local_us: int) -> int:
    """Weekday, Monday = 0, of a (possibly offset-shifted) epoch time."""
    return (local_us // DAY_US + 3) % 7  # 1970-01-01 was a Thursday


class UserProfile:
    """Aggregates of one user's events. See the module docstring.

    Args:
        user_id: the user.
    """

    __slots__ = (
        "_spans",
        "affinity",
        "buckets",
        "categories",
        "devices",
        "first_us",
        "hour_hist",
        "last_context",
        "last_purchase_us",
        "last_us",
        "n_events",
        "purchase_count",
        "purchase_quantity",
        "purchase_total",
        "recent",
        "recent_sessions",
        "segments",
        "session_count",
        "session_duration_total_us",
        "session_events",
        "session_events_total",
        "session_id",
        "session_last_us",
        "session_start_us",
        "spend",
        "type_totals",
        "user_id",
        "weekday_hist",
    )

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.first_us = 0
        self.last_us = 0
        self.n_events = 0
        self.type_totals: dict[str, int] = {}
        self.buckets: dict[int, dict[str, dict[int, int]]] = {}
        # Tuples rather than lists for pairs: the garbage collector stops
        # tracking tuples of plain values, and a consumer caches hundreds of
        # thousands of profiles.
        self.recent: list[tuple[ItemId, int]] = []  # (item_id, ts_us), oldest first
        self.affinity: dict[str, tuple[float, int]] = {}  # category -> (score, reference us)
        self.categories: dict[str, list[str]] = {}  # event type -> categories, newest last
        self.session_id: str | None = None
        self.session_start_us = 0
        self.session_last_us = 0
        self.session_events = 0
        self.session_count = 0
        self.session_events_total = 0
        self.session_duration_total_us = 0  # closed sessions only
        self.recent_sessions: list[str] = []
        self.devices: dict[str, int] = {}
        self.hour_hist = [0] * 24
        self.weekday_hist = [0] * 7
        self.purchase_count = 0
        self.purchase_quantity = 0
        self.purchase_total = 0.0
        self.spend: dict[str, float] = {}
        self.last_purchase_us = 0
        self.last_context: dict[str, Any] = {}
        self.segments: dict[str, int] = {}  # segment -> entry time
        # Derived, not stored: (resolution, type) -> [sum, lowest, highest bucket],
        # so a window that covers every kept bucket is counted without a scan.
        self._spans: dict[tuple[int, str], tuple[int, int, int]] = {}

    # -- updates ------------------------------------------------------------------
    def apply(self, event: Event, config: ProfileConfig, category: str | None = None) -> None:
        """Adds one event.

        Args:
            event: a validated event of this user.
            config: windows, list lengths, affinity weights.
            category: the item's category when the event's payload has none
                (from a catalogue); the payload's ``category`` wins.
        """
        ts = event.ts_us
        t, recent_type, weight = config.type_plan[event.type]
        n = self.n_events
        newest = n == 0 or ts >= self.last_us
        if n == 0:
            self.first_us = self.last_us = ts
        elif newest:
            self.last_us = ts
        elif ts < self.first_us:
            self.first_us = ts
        self.n_events = n + 1
        totals = self.type_totals
        totals[t] = totals.get(t, 0) + 1
        self._count(t, ts, config)

        payload = event.payload
        cat = (payload.get("category") if payload else None) or category
        item = event.item_id
        if item is not None and recent_type:
            self._remember_item(item, ts, config.recent_items)
        if cat:
            if weight:
                self._add_affinity(cat, weight, ts, config)
            history = self.categories.setdefault(t, [])
            if cat in history:
                history.remove(cat)
            history.append(cat)
            if len(history) > config.max_categories:
                del history[0]

        self._session(event.session_id, ts, config.recent_sessions)
        ctx = event.context
        offset = ctx.utc_offset_minutes
        local = ts if offset is None else ts + offset * 60_000_000
        self.hour_hist[local // HOUR_US % 24] += 1
        self.weekday_hist[(local // DAY_US + 3) % 7] += 1
        if ctx is not EMPTY_CONTEXT:
            device = ctx.device_type
            if device is not None:
                self.devices[device] = self.devices.get(device, 0) + 1
            if newest:
                last = self.last_context
                for key in ("device_type", "utc_offset_minutes", "country", "region"):
                    value = getattr(ctx, key)
                    if value is not None:
                        last[key] = value
        if event.type is EventType.PURCHASE:
            qty = int(payload.get("quantity", 1))
            amount = float(payload.get("price", 0.0)) * qty
            self.purchase_count += 1
            self.purchase_quantity += qty
            self.purchase_total += amount
            cur = str(payload.get("currency", ""))
            self.spend[cur] = self.spend.get(cur, 0.0) + amount
            self.last_purchase_us = max(self.last_purchase_us, ts)

    def _count(self, t: str, ts: int, config: ProfileConfig) -> None:
        buckets = self.buckets
        spans = self._spans
        for res_s, res_us, keep in config.bucket_plan:
            b = ts // res_us
            per_type = buckets.get(res_s)
            if per_type is None:
                per_type = buckets[res_s] = {}
            per = per_type.get(t)
            if per is None:
                per = per_type[t] = {}
            per[b] = per.get(b, 0) + 1
            span = spans.get((res_s, t))
            if span is not None:
                total, lo, hi = span
                spans[(res_s, t)] = (total + 1, b if b < lo else lo, b if b > hi else hi)
            if len(per) > keep + _PRUNE_SLACK:
                # Buckets older than the longest window at the user's latest
                # event can never be counted again; dropping them bounds memory.
                cutoff = self.last_us // res_us - keep
                for old in [k for k in per if k <= cutoff]:
                    del per[old]
                spans.pop((res_s, t), None)

    def _remember_item(self, item: ItemId, ts: int, keep: int) -> None:
        recent = self.recent
        if not recent or ts >= recent[-1][1]:
            recent.append((item, ts))
        else:  # late event: keep the list in time order
            i = len(recent)
            while i > 0 and recent[i - 1][1] > ts:
                i -= 1
            recent.insert(i, (item, ts))
        if len(recent) > keep:
            del recent[: len(recent) - keep]

    def _add_affinity(self, cat: str, weight: float, ts: int, config: ProfileConfig) -> None:
        half_life_us = config.affinity_half_life_s * 1e6
        cur = self.affinity.get(cat)
        if cur is None:
            self.affinity[cat] = (weight, ts)
        elif ts >= cur[1]:
            self.affinity[cat] = (cur[0] * 2.0 ** (-(ts - cur[1]) / half_life_us) + weight, ts)
        else:
            self.affinity[cat] = (cur[0] + weight * 2.0 ** (-(cur[1] - ts) / half_life_us), cur[1])
        if len(self.affinity) > config.max_categories:
            weakest = min(
                self.affinity,
                key=lambda c: (self.affinity_at(c, self.last_us, config.affinity_half_life_s), c),
            )
            del self.affinity[weakest]

    def _session(self, sid: str, ts: int, remember: int) -> None:
        if sid != self.session_id:
            if sid in self.recent_sessions:  # late event of an earlier session
                self.session_events_total += 1
                return
            if self.session_id is not None:
                self.session_duration_total_us += self.session_last_us - self.session_start_us
            self.session_id = sid
            self.session_start_us = self.session_last_us = ts
            self.session_events = 0
            self.session_count += 1
            self.recent_sessions.append(sid)
            if len(self.recent_sessions) > remember:
                del self.recent_sessions[0]
        self.session_events += 1
        self.session_events_total += 1
        if ts < self.session_start_us:
            self.session_start_us = ts
        if ts > self.session_last_us:
            self.session_last_us = ts

    # -- reads ------------------------------------------------------------------------
    def count(self, event_type: str | None, window: WindowSpec, now_us: int) -> int:
        """Events of ``event_type`` (None: all types) in ``window`` ending at ``now_us``.

        Exact for the bucket-aligned window of :class:`WindowSpec`.
        """
        per_type = self.buckets.get(window.resolution_s)
        if not per_type:
            return 0
        hi = now_us // window.resolution_us
        if event_type is not None:
            per = per_type.get(event_type)
            if not per:
                return 0
            span = self._spans.get((window.resolution_s, event_type))
            if span is not None and hi - window.buckets < span[1] and span[2] <= hi:
                return span[0]  # the common case, without a call
            return self._window_sum(window, event_type, per, hi)
        return sum(self._window_sum(window, t, per, hi) for t, per in per_type.items() if per)

    def _window_sum(self, window: WindowSpec, t: str, per: dict[int, int], hi: int) -> int:
        n = window.buckets
        lo = hi - n  # exclusive
        key = (window.resolution_s, t)
        span = self._spans.get(key)
        if span is None:
            keys = per.keys()
            span = self._spans[key] = (sum(per.values()), min(keys), max(keys))
        if lo < span[1] and span[2] <= hi:  # every kept bucket is in the window
            return span[0]
        if len(per) <= n:
            return sum(c for b, c in per.items() if lo < b <= hi)
        get = per.get
        return sum(get(b, 0) for b in range(lo + 1, hi + 1))

    def total(self, event_type: str | None = None) -> int:
        """Lifetime events of a type (None: all)."""
        return self.n_events if event_type is None else self.type_totals.get(event_type, 0)

    def affinity_at(self, category: str, now_us: int, half_life_s: float) -> float:
        """Decayed affinity of ``category`` at ``now_us`` (0 if never seen)."""
        cur = self.affinity.get(category)
        if cur is None:
            return 0.0
        return cur[0] * 2.0 ** (-(now_us - cur[1]) / (half_life_s * 1e6))

    def ever(self, event_type: str, category: str | None = None) -> bool:
        """Whether the user ever had an event of the type (in the category)."""
        if category is None:
            return self.type_totals.get(event_type, 0) > 0
        return category in self.categories.get(event_type, ())

    def recent_item_ids(self, n: int | None = None) -> list[ItemId]:
        """The last ``n`` items, most recent last."""
        items = [i for i, _ in self.recent]
        return items if n is None else items[-n:] if n > 0 else []

    @property
    def dominant_device(self) -> str | None:
        """The most used device type (ties: alphabetical), or None."""
        if not self.devices:
            return None
        return min(self.devices.items(), key=lambda kv: (-kv[1], kv[0]))[0]

    def avg_session_events(self) -> float:
        return self.session_events_total / self.session_count if self.session_count else 0.0

    def avg_session_duration_s(self) -> float:
        if not self.session_count:
            return 0.0
        total = self.session_duration_total_us + self.session_last_us - self.session_start_us
        return total / self.session_count / 1e6

    # -- serialization --------------------------------------------------------------------
    def to_doc(self) -> dict[str, Any]:
        """A JSON-ready document; :meth:`from_doc` rebuilds an equal profile."""
        return {
            "doc_version": DOC_VERSION,
            "user_id": self.user_id,
            "first_us": self.first_us,
            "last_us": self.last_us,
            "n_events": self.n_events,
            "type_totals": self.type_totals,
            "buckets": self._flat_buckets(),
            "recent": self.recent,
            "affinity": self.affinity,
            "categories": self.categories,
            "session": [
                self.session_id,
                self.session_start_us,
                self.session_last_us,
                self.session_events,
                self.session_count,
                self.session_events_total,
                self.session_duration_total_us,
            ],
            "recent_sessions": self.recent_sessions,
            "devices": self.devices,
            "hour_hist": self.hour_hist,
            "weekday_hist": self.weekday_hist,
            "purchases": [
                self.purchase_count,
                self.purchase_quantity,
                self.purchase_total,
                self.last_purchase_us,
            ],
            "spend": self.spend,
            "last_context": self.last_context,
            "segments": self.segments,
        }

    def _flat_buckets(self) -> dict[str, dict[str, list[int]]]:
        """Buckets as ``{resolution: {type: [bucket, count, bucket, count ...]}}``."""
        flat = chain.from_iterable  # C-level flattening: this runs for every written profile
        out: dict[str, dict[str, list[int]]] = {}
        for res, by_type in self.buckets.items():
            out[str(res)] = {t: list(flat(per.items())) for t, per in by_type.items()}
        return out

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> UserProfile:
        """Rebuilds a profile from :meth:`to_doc` output (after JSON)."""
        if doc.get("doc_version") != DOC_VERSION:
            raise ValueError(f"profile document version {doc.get('doc_version')} is not supported")
        p = cls(doc["user_id"])
        p.first_us, p.last_us, p.n_events = doc["first_us"], doc["last_us"], doc["n_events"]
        p.type_totals = doc["type_totals"]
        p.buckets = {
            int(res): {
                t: dict(zip(flat[::2], flat[1::2], strict=True)) for t, flat in by_type.items()
            }
            for res, by_type in doc["buckets"].items()
        }
        p.recent = [(item, ts) for item, ts in doc["recent"]]
        p.affinity = {c: (score, ref) for c, (score, ref) in doc["affinity"].items()}
        p.categories = doc["categories"]
        (
            p.session_id,
            p.session_start_us,
            p.session_last_us,
            p.session_events,
            p.session_count,
            p.session_events_total,
            p.session_duration_total_us,
        ) = doc["session"]
        p.recent_sessions = doc["recent_sessions"]
        p.devices = doc["devices"]
        p.hour_hist = doc["hour_hist"]
        p.weekday_hist = doc["weekday_hist"]
        p.purchase_count, p.purchase_quantity, p.purchase_total, p.last_purchase_us = doc[
            "purchases"
        ]
        p.spend = doc["spend"]
        p.last_context = doc["last_context"]
        p.segments = doc["segments"]
        return p
