"""Segments in the pipeline: the worked example, hysteresis, change log, sweep, churn."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from rt_testkit import BASE_US, HOUR_US, MINUTE_US, raw_event

from recsys.events.producer import EventProducer
from recsys.events.redis_store import RedisStore
from recsys.events.store import RealtimeStore, partition_of
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.config import ProfileConfig
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.profiles.service import ProfileService
from recsys.segments.engine import SegmentEngine
from recsys.segments.errors import RuleError
from recsys.segments.loader import load_segments, load_segments_text
from recsys.segments.queries import churn, segment_size

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "segments" / "example.yaml"
SEGMENT = "young_mobile_evening_sports_readers"
EVENING = BASE_US + 11 * HOUR_US  # 2024-05-01 19:00 UTC


def run_pipeline(
    store: RealtimeStore, engine: SegmentEngine, events: list[dict[str, Any]]
) -> StreamConsumer:
    EventProducer(store).publish(events)
    proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine])
    consumer = StreamConsumer(store, proc, ConsumerConfig(block_ms=0, sweep_interval_s=None))
    consumer.run(until_idle=True)
    return consumer


def example_events(
    user: str, views: int = 5, device: str = "mobile", at: int = EVENING, category: str = "sports"
) -> list[dict[str, Any]]:
    buy = raw_event(
        0,
        user=user,
        etype="purchase",
        ts_us=at - 48 * HOUR_US,
        payload={"price": 80.0, "category": category},
    )
    buy["event_id"] = f"{user}-buy"
    out = [buy]
    for i in range(views):
        ev = raw_event(
            i + 1,
            user=user,
            etype="page_view",
            ts_us=at + i * MINUTE_US,
            context={"device_type": device},
        )
        ev["event_id"] = f"{user}-v{i}"
        out.append(ev)
    return out


def test_worked_example_rule(store: RealtimeStore) -> None:
    engine = SegmentEngine.from_yaml(EXAMPLE)
    service = ProfileService(store)
    cases = {
        "match": (29, {}),
        "too_old": (40, {}),
        "four_views": (29, {"views": 4}),
        "desktop": (29, {"device": "desktop"}),
        "noon": (29, {"at": BASE_US + 4 * HOUR_US}),
        "books": (29, {"category": "books"}),
    }
    events = []
    for user, (age, kw) in cases.items():
        service.set_attributes(user, {"age": age}, actor=user)
        events += example_events(user, **kw)
    run_pipeline(store, engine, events)
    assert store.segment_members(SEGMENT) == {"match"}
    (change,) = store.segment_log(segment=SEGMENT)
    assert (change.user_id, change.entered, change.trigger) == ("match", True, "match-v4")
    assert change.at_us == EVENING + 4 * MINUTE_US  # entered on the fifth view


def test_hysteresis_change_log_size_and_churn(store: RealtimeStore) -> None:
    rules = """
segments:
  - name: busy
    enter: count(click, 1h) >= 3
    exit: count(click, 1h) < 2
"""
    engine = SegmentEngine(load_segments_text(rules))
    t = BASE_US
    clicks = [t, t + MINUTE_US, t + 2 * MINUTE_US]  # enters at the third click
    clicks += [t + 61 * MINUTE_US + 30_000_000]  # 2 clicks left in the hour: stays (hysteresis)
    clicks += [t + 200 * MINUTE_US]  # 1 click in the hour: leaves
    events = [raw_event(i, user="u1", ts_us=ts) for i, ts in enumerate(clicks)]
    events += [raw_event(10 + i, user="u2", ts_us=t + i * MINUTE_US) for i in range(3)]
    run_pipeline(store, engine, events)
    log = store.segment_log(segment="busy")
    assert [(m.user_id, m.entered, m.trigger) for m in log] == [
        ("u1", True, "e2"),
        ("u1", False, "e4"),
        ("u2", True, "e12"),
    ]
    assert segment_size(store, "busy") == 1 and store.segment_members("busy") == {"u2"}
    report = churn(store, "busy", since_us=t + 30 * MINUTE_US, until_us=t + 300 * MINUTE_US)
    assert (report.size_start, report.entered, report.left, report.size_end) == (2, 0, 1, 1)
    assert report.churn_rate == 0.5
    whole = churn(store, "busy", since_us=0, until_us=t + 300 * MINUTE_US)
    assert (whole.size_start, whole.entered, whole.left) == (0, 2, 1)


def test_sweep_ends_memberships_when_time_passes(store: RealtimeStore) -> None:
    rules = "segments: [{name: recent, enter: 'count(click, 1h) >= 1'}]"
    engine = SegmentEngine(load_segments_text(rules))
    consumer = run_pipeline(store, engine, [raw_event(1, user="u1"), raw_event(2, user="u2")])
    assert store.segment_members("recent") == {"u1", "u2"}
    # Nothing else arrives; only the sweep can notice the window emptying.
    assert consumer.processor.sweep(BASE_US + 30 * MINUTE_US) == []
    changes = consumer.processor.sweep(BASE_US + 2 * HOUR_US)
    assert sorted((c.user_id, c.entered, c.trigger) for c in changes) == [
        ("u1", False, "sweep"),
        ("u2", False, "sweep"),
    ]
    assert store.segment_size("recent") == 0
    assert ProfileService(store).profile("u1", actor="test").segments == {}  # type: ignore[union-attr]


def test_event_clock_sweep_in_the_consumer(store: RealtimeStore) -> None:
    rules = "segments: [{name: recent, enter: 'count(click, 1h) >= 1'}]"
    engine = SegmentEngine(load_segments_text(rules))
    events = [raw_event(1, user="old"), raw_event(2, user="new", ts_us=BASE_US + 3 * HOUR_US)]
    EventProducer(store).publish(events)
    proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine])
    cfg = ConsumerConfig(block_ms=0, sweep_interval_s=0.0, clock="event")
    StreamConsumer(store, proc, cfg).run(until_idle=True)
    # The sweep runs at the latest event time: "old" is 3 h stale there.
    assert store.segment_members("recent") == {"new"}


def test_rules_only_run_on_relevant_events() -> None:
    engine = SegmentEngine(
        load_segments_text(
            "segments: [{name: buyers, enter: 'purchase_count >= 1'},"
            " {name: any, enter: 'age > 1'}]"
        )
    )
    assert [s.name for s in engine._by_type["purchase"]] == ["buyers", "any"]
    assert [s.name for s in engine._by_type["click"]] == ["any"]


@pytest.mark.parametrize("cfg", [ProfileConfig()])
def test_example_file_loads(cfg: ProfileConfig) -> None:
    (seg,) = SegmentEngine.from_yaml(EXAMPLE, cfg).segments.values()
    assert seg.name == SEGMENT and seg.exit is not None and seg.time_based
    assert {"page_view", "purchase"} <= seg.triggers


def test_a_list_of_paths_may_name_folders(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("segments: [{name: buyers, enter: 'purchase_count >= 1'}]")
    names = [s.name for s in load_segments([EXAMPLE.parent, extra])]
    assert names[-1] == "buyers" and SEGMENT in names and "active_clickers" in names
    with pytest.raises(RuleError, match="also defined"):
        load_segments([EXAMPLE.parent, EXAMPLE])


@pytest.mark.redis
def test_each_partition_consumer_sweeps_its_own_users(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=f"sw{uuid.uuid4().hex[:10]}", partitions=2)
    rules = "segments: [{name: recent, enter: 'count(click, 1h) >= 1'}]"
    users = [f"user{i}" for i in range(12)]
    EventProducer(store).publish(raw_event(i, user=u) for i, u in enumerate(users))
    consumers = []
    for k in (0, 1):
        engine = SegmentEngine(load_segments_text(rules))
        proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()), [engine])
        cfg = ConsumerConfig(name=f"c{k}", block_ms=0, sweep_interval_s=None, partitions=(k,))
        consumers.append(StreamConsumer(store, proc, cfg))
        consumers[-1].run(until_idle=True)
    assert store.segment_members("recent") == set(users)
    mine = {u for u in users if partition_of(u, 2) == 0}
    assert 0 < len(mine) < len(users)
    consumers[0].now_us = lambda: BASE_US + 5 * HOUR_US  # type: ignore[method-assign]
    assert consumers[0].sweep() == len(mine)  # only its own users leave
    assert store.segment_members("recent") == set(users) - mine
    assert consumers[0].processor.stats.conflicts == 0
