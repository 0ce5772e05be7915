"""Engagement per segment, and the running counter that equals the batch rows."""

from __future__ import annotations

import random
from typing import Any

import pytest

from recsys.events.attribution import (
    GROUPS,
    NONE,
    NOT_PERSONALIZED,
    EngagementCounter,
    Exposure,
    attribute,
    engagement,
)
from recsys.events.schema import Event
from recsys.events.validation import validate_event
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import exposure_event

T0 = 1_700_000_000.0


def _shown(user: int, items: list[int], request_id: str, at: float, **kw: Any) -> Event:
    ctx = RequestContext.from_values(
        request_id=request_id, request_time_ms=int(at * 1000), surface=kw.pop("surface", "home")
    )
    raw = exposure_event(
        user_id=user,
        items=items,
        scores=[1.0] * len(items),
        context=ctx,
        k=len(items),
        bundle=kw.pop("bundle", "b1"),
        model=kw.pop("model", "recommend:1"),
        **kw,
    )
    return validate_event(raw)


def _outcome(user: int | str, item: int, at: float, kind: str = "click", **payload: Any) -> Event:
    if kind in ("purchase", "add_to_cart"):
        payload.setdefault("price", 9.5)
    if kind == "dwell":
        payload.setdefault("dwell_ms", 30_000)
    raw = {
        "event_id": f"{kind}-{user}-{item}-{at}",
        "user_id": str(user),
        "session_id": "s",
        "type": kind,
        "item_id": item,
        "timestamp": at,
        "payload": payload,
    }
    return validate_event(raw)


def test_an_exposure_counts_for_each_of_its_users_segments() -> None:
    events = [
        _shown(1, [10, 11], "r1", T0, segments=["a", "b"]),
        _shown(2, [20, 21, 22], "r2", T0, segments=["a"]),
        _shown(3, [30], "r3", T0),  # in no segment
        _shown(4, [40, 41], "r4", T0, segments=["a"], personalized=False),
        _outcome(1, 11, T0 + 1, request_id="r1"),
        _outcome(1, 11, T0 + 2, kind="purchase", request_id="r1"),
        _outcome(2, 20, T0 + 1),  # by window
        _outcome(3, 30, T0 + 1, kind="dwell", request_id="r3", dwell_ms=5_000),
        # the anonymous list's click: its user is "anonymous" (nothing personal logged)
        _outcome("anonymous", 41, T0 + 1, request_id="r4"),
    ]
    report = attribute(events)
    rows = {r["segment"]: r for r in report.engagement("segment")}
    assert list(rows) == [NONE, NOT_PERSONALIZED, "a", "b"]
    assert [rows[k]["impressions"] for k in ("a", "b", NONE, NOT_PERSONALIZED)] == [5, 2, 1, 2]
    assert [rows[k]["clicks"] for k in ("a", "b", NONE, NOT_PERSONALIZED)] == [2, 1, 0, 1]
    assert rows["a"]["ctr"] == pytest.approx(2 / 5)
    assert rows["b"]["conversions"] == 1 and rows["a"]["conversion_rate"] == pytest.approx(1 / 5)
    assert rows[NONE]["mean_dwell_ms"] == 5_000 and rows["a"]["mean_dwell_ms"] is None
    # the anonymous exposure's payload holds no segments at all
    assert report.exposures[3].segments == () and not report.exposures[3].personalized
    joined = {a.request_id: a for a in report.attributions}
    assert joined["r1"].segments == ("a", "b") and joined["r4"].personalized is False


def test_a_segment_listed_twice_counts_once() -> None:
    report = attribute([_shown(1, [10], "r1", T0, segments=["a", "a"]), _outcome(1, 10, T0 + 1)])
    (row,) = report.engagement("segment")
    assert (row["segment"], row["impressions"], row["clicks"]) == ("a", 1, 1)


def test_an_exposure_with_one_propensity_too_few_is_counted_not_remembered() -> None:
    good = _shown(1, [10, 11], "r1", T0)
    raw = good.to_dict()
    raw["event_id"], raw["payload"] = "bad", {**raw["payload"], "request_id": "r2",
                                              "propensities": [1.0]}  # fmt: skip
    bad = validate_event(raw)
    with pytest.raises(ValueError, match="2 items but 1 propensities"):
        Exposure.from_event(bad)
    report = attribute([good, bad, _outcome(1, 11, T0 + 1, request_id="r2")])
    assert report.stats.malformed == 1 and report.stats.exposures == 1
    # r2 was never remembered: the click names an unknown list and joins r1 by window
    assert [(a.request_id, a.how) for a in report.attributions] == [("r1", "window")]


def _random_stream(seed: int) -> list[Event]:
    rng = random.Random(seed)
    segments = ["a", "b", "c"]
    events: list[Event] = []
    for n in range(300):
        user, at = rng.randrange(30), T0 + n * 7
        items = rng.sample(range(60), rng.randint(1, 6))
        personalized = rng.random() < 0.9
        events.append(
            _shown(
                user,
                items,
                f"r{n}",
                at,
                segments=rng.sample(segments, rng.randint(0, 3)),
                rules=rng.sample(["boost", "pin"], rng.randint(0, 2)),
                model=rng.choice(["recommend:1", "recommend:2"]),
                surface=rng.choice(["home", "pdp"]),
                personalized=personalized,
            )
        )
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice(["click", "click", "purchase", "dwell", "add_to_cart"])
            payload = {"request_id": f"r{n}"} if rng.random() < 0.5 else {}
            if kind == "dwell":
                payload["dwell_ms"] = rng.randint(100, 90_000)
            outcome_user = user if personalized else "anonymous"
            events.append(_outcome(outcome_user, rng.choice(items), at + rng.uniform(0, 900),
                                   kind, **payload))  # fmt: skip
    return events


def test_the_running_counter_equals_the_batch_rows_for_every_dimension() -> None:
    report = attribute(_random_stream(1))
    counter = EngagementCounter()
    for exposure in report.exposures:
        counter.add_exposure(exposure)
    for joined in report.attributions:
        counter.add_attribution(joined)
    for by in GROUPS:
        assert counter.engagement(by) == engagement(report.exposures, report.attributions, by)
    rows = {r["segment"]: r for r in counter.engagement("segment")}
    assert {"a", "b", "c", NONE, NOT_PERSONALIZED} <= set(rows)
    assert all(r["clicks"] > 0 for r in rows.values())
    with pytest.raises(ValueError, match="by must be one of"):
        EngagementCounter(("model",)).engagement("segment")
