"""Profiles computed offline from an event log, with the online code path.

:func:`build_profiles` applies events in log order through the same
:meth:`UserProfile.apply` and hooks the stream consumer uses, skipping
repeated event ids as the consumer does. On a replayed log the result equals
what the consumer committed (a test checks it feature by feature).

Example:
    >>> from recsys.events.batch import load_yoochoose_clicks
    >>> log = load_yoochoose_clicks(path)  # doctest: +SKIP
    >>> profiles = build_profiles(log.events)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from recsys.events.consent import ConsentPolicy
from recsys.events.schema import Event, ItemId
from recsys.profiles.config import ProfileConfig
from recsys.profiles.processor import CachedUser, ProfileHook
from recsys.profiles.state import UserProfile


def build_profiles(
    events: Iterable[Event],
    config: ProfileConfig | None = None,
    hooks: Iterable[ProfileHook] = (),
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
    category_of: Callable[[ItemId], str | None] | None = None,
) -> dict[str, UserProfile]:
    """Builds every user's profile from events in order.

    Args:
        events: the log, in the order the stream would deliver it.
        config: profile settings.
        hooks: e.g. a segment engine, to compute memberships offline too.
        attributes: user -> non-PII static attributes (for hooks).
        category_of: item id -> category for events without one.

    Returns:
        user id -> profile. Consent is not applied here: filter the log first
        (the online path applies the events of users who consented to
        personalization).
    """
    config = config or ProfileConfig()
    hooks = list(hooks)
    attributes = attributes or {}
    users: dict[str, CachedUser] = {}
    seen: set[str] = set()
    granted = ConsentPolicy.grant_all().default_granted
    for ev in events:
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        user = users.get(ev.user_id)
        if user is None:
            user = users[ev.user_id] = CachedUser(
                ev.user_id,
                0,
                UserProfile(ev.user_id),
                dict(attributes.get(ev.user_id, {})),
                granted,
            )
        category = (
            category_of(ev.item_id) if category_of is not None and ev.item_id is not None else None
        )
        user.profile.apply(ev, config, category)
        for hook in hooks:
            hook.on_event(user, ev)
    return {uid: u.profile for uid, u in users.items()}
