"""Outcomes join the list that showed their item: by request id, else by time window."""

from __future__ import annotations

import random
from typing import Any

import pytest

from recsys.events.attribution import (
    AttributionConfig,
    Attributor,
    attribute,
    engagement,
)
from recsys.events.schema import Event
from recsys.events.validation import validate_event
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import exposure_event

T0 = 1_700_000_000.0


def _shown(user: int, items: list[int], request_id: str, at: float, **kw: Any) -> Event:
    ctx = RequestContext.from_values(request_id=request_id, request_time_ms=int(at * 1000),
                                     surface=kw.pop("surface", "home"))  # fmt: skip
    return validate_event(exposure_event(
        user_id=user, items=items, scores=[1.0] * len(items), context=ctx, k=len(items),
        bundle=kw.pop("bundle", "b1"), model=kw.pop("model", "recommend:1"), **kw,
    ))  # fmt: skip


def _outcome(user: int, item: int, at: float, kind: str = "click", **payload: Any) -> Event:
    if kind == "purchase":
        payload.setdefault("price", 9.5)
    if kind == "dwell":
        payload.setdefault("dwell_ms", 30_000)
    return validate_event({
        "event_id": f"{kind}-{user}-{item}-{at}", "user_id": str(user), "session_id": "s",
        "type": kind, "item_id": item, "timestamp": at, "payload": payload,
    })  # fmt: skip


def test_an_outcome_with_the_request_id_joins_that_list_at_the_items_position() -> None:
    report = attribute([
        _shown(1, [10, 11, 12], "r1", T0),
        _shown(1, [12, 13], "r2", T0 + 5),
        _outcome(1, 12, T0 + 6, request_id="r1"),  # the older list, by its id
    ])  # fmt: skip
    (joined,) = report.attributions
    assert (joined.request_id, joined.position, joined.how) == ("r1", 2, "request_id")
    assert joined.delay_s == pytest.approx(6.0) and joined.propensity == 1.0
    assert report.stats.by_request_id == 1


def test_without_an_id_the_latest_exposure_in_the_window_wins() -> None:
    report = attribute(
        [
            _shown(1, [10, 11, 12], "r1", T0),
            _shown(1, [12, 13], "r2", T0 + 5),
            _outcome(1, 12, T0 + 60),  # latest exposure of 12: r2, position 0
            _outcome(1, 10, T0 + 100),  # only in r1
            _outcome(1, 13, T0 + 5000),  # out of the 1,800 s window
            _outcome(2, 10, T0 + 10),  # another user: never shown to them
        ],
        AttributionConfig(window_s=1800),
    )
    got = [(a.item_id, a.request_id, a.position, a.how) for a in report.attributions]
    assert got == [(12, "r2", 0, "window"), (10, "r1", 0, "window")]
    assert (report.stats.outcomes, report.stats.unattributed) == (4, 2)


def test_an_id_of_another_user_or_list_is_counted_and_the_window_tried() -> None:
    report = attribute([
        _shown(1, [10, 11], "r1", T0),
        _shown(2, [20, 21], "r2", T0),
        _outcome(2, 10, T0 + 1, request_id="r1"),  # user 1's list: not user 2's click
        _outcome(1, 99, T0 + 2, request_id="r1"),  # the list never showed 99
        _outcome(1, 11, T0 + 3, request_id="r9"),  # unknown id: joined by window
    ])  # fmt: skip
    assert report.stats.mismatched == 3
    assert [(a.item_id, a.how) for a in report.attributions] == [(11, "window")]


def test_an_outcome_before_the_exposure_is_not_caused_by_it() -> None:
    report = attribute([_outcome(1, 10, T0 - 1), _shown(1, [10], "r1", T0)])
    assert report.attributions == [] and report.stats.unattributed == 1


def test_engagement_by_position_model_and_rule() -> None:
    events = [
        _shown(1, [10, 11], "r1", T0, model="recommend:1"),
        _shown(2, [10, 12], "r2", T0, model="recommend:2", rules=["boost-new"]),
        _outcome(1, 10, T0 + 1, request_id="r1"),
        _outcome(2, 12, T0 + 1, request_id="r2"),
        _outcome(2, 12, T0 + 2, kind="dwell", request_id="r2", dwell_ms=40_000),
        _outcome(2, 12, T0 + 3, kind="purchase", request_id="r2"),
    ]
    report = attribute(events)
    by_position = {r["position"]: r for r in report.engagement("position")}
    assert (by_position[0]["impressions"], by_position[0]["clicks"]) == (2, 1)
    assert by_position[1]["ctr"] == pytest.approx(0.5)
    by_model = {r["model"]: r for r in report.engagement("model")}
    assert by_model["recommend:2"]["conversions"] == 1
    assert by_model["recommend:2"]["mean_dwell_ms"] == 40_000
    assert by_model["recommend:1"]["mean_dwell_ms"] is None
    by_rule = {r["rule"]: r for r in report.engagement("rule")}
    assert by_rule["boost-new"]["clicks"] == 1 and by_rule["(none)"]["impressions"] == 2
    with pytest.raises(ValueError, match="by must be one of"):
        engagement([], [], "colour")


def test_online_in_stream_order_equals_the_offline_batch() -> None:
    rng = random.Random(0)
    events: list[Event] = []
    for n in range(200):
        user, at = rng.randrange(20), T0 + n * 10
        items = rng.sample(range(50), 5)
        events.append(_shown(user, items, f"r{n}", at))
        if rng.random() < 0.5:
            item = rng.choice(items) if rng.random() < 0.8 else rng.randrange(50)
            rid = f"r{n}" if rng.random() < 0.5 else None
            payload = {"request_id": rid} if rid else {}
            events.append(_outcome(user, item, at + rng.uniform(0, 3000), **payload))
    online = Attributor()
    joined_online = [a for e in sorted(events, key=lambda e: e.ts_us)
                     if (a := online.feed(e)) is not None]  # fmt: skip
    shuffled = events[:]
    rng.shuffle(shuffled)
    offline = attribute(shuffled)
    assert joined_online == offline.attributions
    assert vars(online.stats) == vars(offline.stats)
    assert offline.stats.by_request_id > 0 and offline.stats.by_window > 0
    total = offline.stats.by_request_id + offline.stats.by_window + offline.stats.unattributed
    assert total == offline.stats.outcomes
