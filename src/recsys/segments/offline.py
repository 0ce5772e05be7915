"""Segment memberships at a cut-off, from an interactions table, with the online rules.

The ranker's ``user_segments`` feature is trained on the segments each user belongs
to at the end of the training log and served with the segments read with the live
profile. Both come from the same code: :func:`memberships_at` turns the training
interactions into events (:func:`interaction_events`), builds the profiles with
:func:`recsys.profiles.offline.build_profiles` and a :class:`~recsys.segments.engine.
SegmentEngine` as its hook (what the stream consumer runs per event), then sweeps every
user at the cut-off (what the consumer's periodic sweep does), so time-based
memberships that the cut-off ends are gone.

Event types: the table's ``event_type`` column where it has one (the synthetic log's
``view`` is a ``page_view``), else ``default_type`` for every row (MovieLens ratings
are ``rating`` events). The ``device`` (or ``device_type``) column becomes the events'
device; a rating's value and a purchase's price go to the payload, as the event schema
has them.

Example:
    >>> from recsys.segments.loader import load_segments_text
    >>> engine = SegmentEngine(load_segments_text(
    ...     "segments: [{name: heavy, enter: 'count(rating) >= 2'}]"))
    >>> frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5],
    ...     "timestamp": pd.to_datetime([10, 20, 30], unit="s", utc=True)})
    >>> memberships_at(frame, engine, default_type="rating")
    {'1': ('heavy',), '2': ()}
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from recsys.data.frame import ITEM, TIMESTAMP, USER
from recsys.events.consent import ConsentPolicy
from recsys.events.schema import EMPTY_CONTEXT, Event, EventContext, EventType
from recsys.profiles.config import ProfileConfig
from recsys.profiles.offline import build_profiles
from recsys.profiles.processor import CachedUser
from recsys.segments.engine import SegmentEngine

__all__ = ["EVENT_TYPE_NAMES", "interaction_events", "memberships_at"]

EVENT_TYPE_NAMES: Mapping[str, str] = {"view": "page_view"}
"""Event-type names of interaction tables that differ from the event schema's."""


def _microseconds(ts: pd.Series) -> np.ndarray:
    values = ts.dt.tz_localize("UTC") if getattr(ts.dt, "tz", None) is None else ts
    ns = values.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ns // 1000


def interaction_events(frame: pd.DataFrame, default_type: str = "click") -> list[Event]:
    """The rows of an interactions table as events, in time order.

    Args:
        frame: ``user_id``, ``item_id``, ``timestamp`` (+ optional ``event_type``,
            ``device``/``device_type``, ``session_id``).
        default_type: the event type of rows without an ``event_type``.

    Returns:
        One event per row (ids ``offline-<row>``), sorted by time (stable).

    Raises:
        ValueError: an event type the event schema does not know.
    """
    for column in (USER, ITEM, TIMESTAMP):
        if column not in frame.columns:
            raise ValueError(f"interaction_events needs a {column!r} column")
    ts = _microseconds(frame[TIMESTAMP])
    order = np.argsort(ts, kind="stable")
    types = (
        frame["event_type"].astype(str).to_numpy()
        if "event_type" in frame.columns
        else np.full(len(frame), default_type, dtype=object)
    )
    known = {t.value: t for t in EventType}
    device_col = next((c for c in ("device", "device_type") if c in frame.columns), None)
    devices = frame[device_col].to_numpy() if device_col else None
    sessions = frame["session_id"].to_numpy() if "session_id" in frame.columns else None
    # the payload fields the event schema asks for (a rating's value, a purchase's price)
    ratings = frame["rating"].to_numpy() if "rating" in frame.columns else None
    prices = frame["price"].to_numpy() if "price" in frame.columns else None
    users = frame[USER].to_numpy()
    items = frame[ITEM].to_numpy()
    contexts: dict[str, EventContext] = {}
    out: list[Event] = []
    for row in order.tolist():
        name = EVENT_TYPE_NAMES.get(str(types[row]), str(types[row]))
        kind = known.get(name)
        if kind is None:
            raise ValueError(f"row {row}: event type {name!r} is not one of {sorted(known)}")
        ctx = EMPTY_CONTEXT
        if devices is not None and isinstance(devices[row], str):
            ctx = contexts.setdefault(devices[row], EventContext(device_type=devices[row]))
        item = items[row]
        payload: dict[str, float] = {}
        if kind is EventType.RATING and ratings is not None:
            payload["rating"] = float(ratings[row])
        elif kind in (EventType.PURCHASE, EventType.ADD_TO_CART) and prices is not None:
            payload["price"] = float(prices[row])
        out.append(
            Event(
                event_id=f"offline-{row}",
                user_id=str(users[row]),
                session_id=f"offline-{sessions[row] if sessions is not None else users[row]}",
                type=kind,
                ts_us=int(ts[row]),
                item_id=int(item) if isinstance(item, int | np.integer) else str(item),
                context=ctx,
                payload=payload,
            )
        )
    return out


def memberships_at(
    frame: pd.DataFrame,
    engine: SegmentEngine,
    config: ProfileConfig | None = None,
    cut_off_us: int | None = None,
    default_type: str = "click",
) -> dict[str, tuple[str, ...]]:
    """Each user's segments at ``cut_off_us`` after the interactions of ``frame``.

    Args:
        frame: the interactions up to the cut-off (e.g. a training split).
        engine: the segment rules (the online consumer's engine, from the same YAML).
        config: profile settings (the engine's by default).
        cut_off_us: when the memberships are read (epoch microseconds); default the
            latest interaction. Every user is swept at this time, as the online
            consumer's sweep does.
        default_type: the event type of rows without an ``event_type``.

    Returns:
        raw user id (as a string, the event schema's) -> sorted segment names.
    """
    config = config or engine.config
    events = interaction_events(frame, default_type)
    profiles = build_profiles(events, config, hooks=[engine])
    now = cut_off_us if cut_off_us is not None else max((e.ts_us for e in events), default=0)
    granted = ConsentPolicy.grant_all().default_granted
    out: dict[str, tuple[str, ...]] = {}
    for uid, profile in profiles.items():
        engine.on_sweep(CachedUser(uid, 0, profile, {}, granted), now)
        out[uid] = tuple(sorted(profile.segments))
    return out
