"""Dynamic profile aggregates: exact windows, lists, decay, sessions, serialization."""

from __future__ import annotations

import json
import random

import pytest
from rt_testkit import BASE_US, HOUR_US, MINUTE_US, event

from recsys.profiles.config import ProfileConfig, WindowSpec, parse_duration
from recsys.profiles.state import UserProfile

CFG = ProfileConfig(recent_items=5)


def brute_count(times: list[int], window: WindowSpec, now_us: int) -> int:
    res = window.resolution_s * 1_000_000
    hi = now_us // res
    return sum(1 for t in times if hi - window.buckets < t // res <= hi)


def test_window_counts_are_exact_against_a_brute_force_count() -> None:
    rng = random.Random(7)
    span = 40 * 24 * HOUR_US
    times = sorted(BASE_US + rng.randrange(span) for _ in range(3000))
    shuffled = times[:]
    rng.shuffle(shuffled[-300:])  # some late, out-of-order events too
    p = UserProfile("u1")
    for i, t in enumerate(shuffled):
        p.apply(event(i, ts_us=t), CFG)
    last = max(times)
    checks = [last, last + 1, last + 59 * MINUTE_US, last + 25 * HOUR_US, last + 31 * 24 * HOUR_US]
    checks += [last - rng.randrange(HOUR_US) for _ in range(20)]
    for now in checks:
        for w in CFG.windows:
            assert p.count("click", w, now) == brute_count(times, w, now), (w.name, now)
    assert p.count(None, CFG.window("30d"), last) == brute_count(times, CFG.window("30d"), last)
    assert p.total("click") == 3000
    # Old buckets were pruned (memory stays bounded) without changing any count.
    assert len(p.buckets[60]["click"]) <= 1440 + 16
    assert len(p.buckets[3600]["click"]) <= 720 + 16


def test_windows_do_not_drift_as_time_passes() -> None:
    p = UserProfile("u1")
    for i in range(10):
        p.apply(event(i, ts_us=BASE_US + i * 10 * MINUTE_US), CFG)
    w1h = CFG.window("1h")
    # The last event is at +90 min; the 1 h window ending there holds +40..+90.
    assert p.count("click", w1h, BASE_US + 90 * MINUTE_US) == 6
    assert p.count("click", w1h, BASE_US + 149 * MINUTE_US) == 1
    assert p.count("click", w1h, BASE_US + 150 * MINUTE_US) == 0
    w24 = CFG.window("24h")
    assert p.count("click", w24, BASE_US + 24 * HOUR_US - MINUTE_US) == 10
    assert p.count("click", w24, BASE_US + 24 * HOUR_US) == 9  # minute 0 has left the window


def test_recent_items_are_most_recent_last_and_bounded() -> None:
    p = UserProfile("u1")
    for i in range(8):
        p.apply(event(i, item=i), CFG)
    p.apply(event(20, item=99, ts_us=BASE_US + 4 * MINUTE_US + 1), CFG)  # late
    p.apply(event(21, etype="search"), CFG)  # no item
    assert p.recent_item_ids() == [4, 99, 5, 6, 7]
    assert p.recent_item_ids(2) == [6, 7]


def test_affinity_decays_by_half_life_and_ignores_arrival_order() -> None:
    cfg = ProfileConfig(affinity_half_life_s=3600.0)
    a, b = UserProfile("a"), UserProfile("b")
    evs = [
        event(1, etype="purchase", payload={"price": 1.0, "category": "sports"}),
        event(2, etype="click", ts_us=BASE_US + HOUR_US, payload={"category": "sports"}),
    ]
    for e in evs:
        a.apply(e, cfg)
    for e in reversed(evs):
        b.apply(e, cfg)
    now = BASE_US + 3 * HOUR_US
    expected = 5.0 * 2 ** (-(now - evs[0].ts_us) / 3.6e9) + 1.0 * 2 ** (
        -(now - evs[1].ts_us) / 3.6e9
    )
    assert a.affinity_at("sports", now, 3600.0) == pytest.approx(expected, rel=1e-12)
    assert b.affinity_at("sports", now, 3600.0) == pytest.approx(expected, rel=1e-12)
    assert a.affinity_at("books", now, 3600.0) == 0.0
    assert a.ever("purchase", "sports") and not a.ever("purchase", "books")


def test_sessions_devices_hours_and_purchases() -> None:
    p = UserProfile("u1")
    ctx_m = {"device_type": "mobile", "utc_offset_minutes": 120}
    p.apply(event(0, session="s1", context=ctx_m), CFG)  # 08:00Z = 10:00 local
    p.apply(event(10, session="s1", context=ctx_m), CFG)
    p.apply(event(30, session="s2", context={"device_type": "desktop"}), CFG)
    p.apply(event(5, session="s1", context=ctx_m), CFG)  # late event of s1
    buy = {"price": 20.0, "quantity": 3, "currency": "EUR"}
    p.apply(event(40, session="s2", etype="purchase", payload=buy), CFG)
    assert p.session_count == 2 and p.session_events == 2 and p.session_events_total == 5
    assert p.avg_session_events() == 2.5
    assert p.avg_session_duration_s() == (10 * 60 + 10 * 60) / 2
    assert p.dominant_device == "mobile"
    assert p.hour_hist[10] == 3 and p.hour_hist[8] == 2 and sum(p.hour_hist) == 5
    assert p.weekday_hist[2] == 5  # 2024-05-01 was a Wednesday
    assert (p.purchase_count, p.purchase_quantity, p.purchase_total) == (1, 3, 60.0)
    assert p.spend == {"EUR": 60.0}
    assert p.last_context == {"device_type": "desktop", "utc_offset_minutes": 120}


def test_documents_round_trip_through_json_unchanged() -> None:
    p = UserProfile("u1")
    for i in range(50):
        p.apply(
            event(i, etype=["click", "purchase", "like"][i % 3], payload={"category": f"c{i % 4}"}),
            CFG,
        )
    p.segments["s"] = BASE_US
    doc = p.to_doc()
    back = UserProfile.from_doc(json.loads(json.dumps(doc)))
    assert back.to_doc() == doc
    w = CFG.window("24h")
    assert back.count("click", w, BASE_US + 60 * MINUTE_US) == p.count(
        "click", w, BASE_US + 60 * MINUTE_US
    )
    with pytest.raises(ValueError, match="version"):
        UserProfile.from_doc({**doc, "doc_version": 99})


def test_document_buckets_alternate_bucket_and_count() -> None:
    p = UserProfile("u1")
    t0 = BASE_US - BASE_US % HOUR_US  # the start of an hour: both events share its bucket
    for ts, etype in [(t0, "click"), (t0 + MINUTE_US, "click"), (t0 + 2 * MINUTE_US, "like")]:
        p.apply(event(0, etype=etype, ts_us=ts), CFG)
    buckets = p.to_doc()["buckets"]
    minute, hour = t0 // MINUTE_US, t0 // HOUR_US
    assert buckets["60"] == {"click": [minute, 1, minute + 1, 1], "like": [minute + 2, 1]}
    assert buckets["3600"] == {"click": [hour, 2], "like": [hour, 1]}


def test_config_windows() -> None:
    assert parse_duration("90m") == 5400 and parse_duration("7d") == 604_800
    with pytest.raises(ValueError):
        parse_duration("1w")
    with pytest.raises(ValueError, match="must divide"):
        WindowSpec("odd", 100, 60)
    with pytest.raises(KeyError, match="configured windows"):
        CFG.window("12h")
