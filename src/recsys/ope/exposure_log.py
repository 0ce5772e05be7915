"""The project's own exposure log as logged bandit feedback, at the item-position level.

Every ``recommendation_impression`` event (:func:`recsys.runtime.exposure.exposure_event`)
records a served list: its items (position = list index), each item's propensity at
its position under the serving policy, and the policy id. Attribution
(:mod:`recsys.events.attribution`) joins clicks to the list and position that showed
the item. Here each shown (list, position) becomes one row of a
:class:`~recsys.ope.logged.LoggedBandit`: action = the item, reward = 1 when a click was
attributed to that list at that position (0 otherwise), pscore = the logged propensity.

Propensities must be the policy's real probabilities: the deterministic policy logs 1.0
for every item, and a candidate that would show other items then has no logged
support; its estimates only count the rows where it agrees with the log.

Example:
    >>> from recsys.events.attribution import attribute  # doctest: +SKIP
    >>> report = attribute(events)  # doctest: +SKIP
    >>> log = logged_from_exposures(report.exposures, report.attributions)  # doctest: +SKIP
    >>> log.action_ids[log.action[0]]  # the first row's item id  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from recsys.events.attribution import (
    CLICKS,
    Attribution,
    AttributionConfig,
    Exposure,
    attribute,
)
from recsys.events.schema import Event, EventType
from recsys.events.validation import validate_event
from recsys.ope.errors import OPEInputError
from recsys.ope.logged import LoggedBandit

ExposureLike = Exposure | Event | Mapping[str, Any]
"""An exposure: attribution's :class:`Exposure`, a typed event, or a raw event dict."""


def _exposure(value: ExposureLike) -> Exposure | None:
    if isinstance(value, Exposure):
        return value
    event = value if isinstance(value, Event) else validate_event(value)
    if event.type is not EventType.RECOMMENDATION_IMPRESSION:
        return None
    return Exposure.from_event(event)


def _sort_key(item: Any) -> tuple[str, Any]:
    # items of mixed types (ints and strings) sort by type name first, never compare
    return (type(item).__name__, item)


def logged_from_exposures(
    exposures: Iterable[ExposureLike],
    attributions: Iterable[Attribution],
    *,
    policy: str | None = None,
    items: Sequence[Any] | None = None,
    n_positions: int | None = None,
    reward_types: Collection[EventType] = CLICKS,
) -> LoggedBandit:
    """One row per shown (exposure, position): reward = a click attributed to it.

    Args:
        exposures: the exposures (events of other types are skipped).
        attributions: their joined outcomes (:func:`recsys.events.attribution.attribute`).
        policy: keep only exposures of this policy id (OPE needs the propensities of
            the policy that logged each row; one policy per log keeps them comparable).
        items: the action space, in action order (default: every item shown, sorted);
            ``action_ids`` of the result.
        n_positions: slots (default: the longest list).
        reward_types: outcome types that count as reward 1 (default: clicks).

    Returns:
        The logged data; ``action_ids[a]`` is action ``a``'s item id.

    Raises:
        OPEInputError: no exposure is left, a shown item is not in ``items``, a list is
            longer than ``n_positions``, or a propensity is not in ``(0, 1]``.
    """
    kept = [e for e in (_exposure(x) for x in exposures) if e is not None and e.items]
    if policy is not None:
        kept = [e for e in kept if e.policy == policy]
    if not kept:
        raise OPEInputError(
            "exposures: none to turn into rows"
            + (f" (policy {policy!r})" if policy is not None else "")
        )
    kinds = {t.value for t in reward_types}
    clicked = {(a.request_id, a.position) for a in attributions if a.type in kinds}
    catalogue = (
        list(items)
        if items is not None
        else sorted({i for e in kept for i in e.items}, key=_sort_key)
    )
    index = {item: a for a, item in enumerate(catalogue)}
    if len(index) != len(catalogue):
        raise OPEInputError("items: ids must be unique")
    longest = max(len(e.items) for e in kept)
    slots = longest if n_positions is None else n_positions
    if longest > slots:
        raise OPEInputError(f"n_positions: a list has {longest} items, more than {slots}")
    action: list[int] = []
    position: list[int] = []
    reward: list[float] = []
    pscore: list[float] = []
    for e in kept:
        if len(e.propensities) != len(e.items):
            raise OPEInputError(
                f"exposure {e.request_id}: {len(e.items)} items but "
                f"{len(e.propensities)} propensities"
            )
        for pos, (item, p) in enumerate(zip(e.items, e.propensities, strict=True)):
            if item not in index:
                raise OPEInputError(f"exposure {e.request_id}: item {item!r} is not in items")
            action.append(index[item])
            position.append(pos)
            reward.append(1.0 if (e.request_id, pos) in clicked else 0.0)
            pscore.append(float(p))
    return LoggedBandit.build(
        action=np.asarray(action, dtype=np.int64),
        reward=np.asarray(reward),
        pscore=np.asarray(pscore),
        position=np.asarray(position, dtype=np.int64),
        n_positions=slots,
        n_actions=len(catalogue),
        action_ids=catalogue,
    )


def logged_from_events(
    events: Iterable[Event | Mapping[str, Any]],
    *,
    attribution: AttributionConfig | None = None,
    **options: Any,
) -> LoggedBandit:
    """Attributes a batch of events (exposures and outcomes) and builds the rows.

    Args:
        events: the stream's events, any order (raw dicts are validated).
        attribution: the join rules (default :class:`AttributionConfig`).
        **options: :func:`logged_from_exposures`'s keyword arguments.

    Returns:
        The logged data.
    """
    typed = [e if isinstance(e, Event) else validate_event(e) for e in events]
    report = attribute(typed, attribution)
    return logged_from_exposures(report.exposures, report.attributions, **options)
