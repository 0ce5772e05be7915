"""The sweep lets users enter time-based segments when time alone makes a rule hold
(recency thresholds, the evening), within the entry horizon; exits still work."""

from __future__ import annotations

from typing import Any

import pytest
from rt_testkit import BASE_US, HOUR_US, MINUTE_US, raw_event

from recsys.events.producer import EventProducer
from recsys.events.store import MembershipChange, RealtimeStore
from recsys.privacy.consent import ConsentPolicy, ConsentRegistry, Purpose
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.segments.engine import SegmentEngine
from recsys.segments.loader import load_segments_text

DAY_US = 24 * HOUR_US

RULES = """
segments:
  - name: lapsed
    enter: hours_since_last_event > 48
  - name: lapsed_buyers
    enter: purchase_count >= 1 and days_since_last_purchase > 30
  - name: recent
    enter: count(click, 1h) >= 1
  - name: evening
    enter: hour >= 18
"""


def consumer_for(store: RealtimeStore, engine: SegmentEngine) -> StreamConsumer:
    proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine])
    return StreamConsumer(
        store, proc, ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None)
    )


def consume(store: RealtimeStore, consumer: StreamConsumer, events: list[dict[str, Any]]) -> None:
    EventProducer(store).publish(events)
    consumer.run(until_idle=True)


def sweep_at(consumer: StreamConsumer, now_us: int) -> list[MembershipChange]:
    return consumer.processor.sweep(now_us)


def entries(changes: list[MembershipChange]) -> set[tuple[str, str]]:
    return {(c.user_id, c.segment) for c in changes if c.entered}


def test_users_who_stop_acting_enter_recency_segments_on_a_later_sweep(
    store: RealtimeStore,
) -> None:
    engine = SegmentEngine(load_segments_text(RULES))
    consumer = consumer_for(store, engine)
    buy = raw_event(1, user="buyer", etype="purchase", ts_us=BASE_US)
    consume(
        store,
        consumer,
        [
            raw_event(0, user="quiet", ts_us=BASE_US),  # 08:00 UTC, one click, then nothing
            buy,
            raw_event(2, user="busy", ts_us=BASE_US),
            raw_event(3, user="busy", ts_us=BASE_US + 47 * HOUR_US),
            raw_event(4, user="withdrawn", ts_us=BASE_US),
            raw_event(5, user="forgotten", ts_us=BASE_US - 100 * DAY_US),  # past the horizon
        ],
    )
    assert store.segment_members("lapsed") == set()
    ConsentRegistry(store).record(
        "withdrawn", Purpose.PERSONALIZATION, False, source="settings", actor="withdrawn"
    )

    # Half an hour later nobody is lapsed, and the clicks are still recent.
    assert entries(sweep_at(consumer, BASE_US + 30 * MINUTE_US)) == set()
    assert store.segment_members("recent") == {"quiet", "busy", "withdrawn"}

    # 49 hours later: 49 h without an event; "busy" acted 2 h ago.
    at = BASE_US + 49 * HOUR_US
    changes = sweep_at(consumer, at)
    assert entries(changes) == {("quiet", "lapsed"), ("buyer", "lapsed")}
    left = {(c.user_id, c.segment) for c in changes if not c.entered}
    assert {("quiet", "recent"), ("busy", "recent")} <= left  # exits still work
    assert all(c.trigger == "sweep" and c.at_us == at for c in changes)
    assert store.segment_members("lapsed") == {"quiet", "buyer"}
    (log,) = store.segment_log(segment="lapsed", user_id="quiet")
    assert log == MembershipChange("quiet", "lapsed", True, at, "sweep")
    assert store.segment_members("lapsed_buyers") == set()  # 2 days since the purchase
    profile = consumer.processor.cache["quiet"].profile
    assert profile.segments["lapsed"] == at  # the profile holds the membership too
    assert store.load_users(["quiet"])["quiet"].profile is not None
    stored = store.load_users(["quiet"])["quiet"].profile or ""
    assert '"lapsed"' in stored

    # A month on: the purchase is 31 days old; "busy" is lapsed now too.
    at = BASE_US + 31 * DAY_US
    assert entries(sweep_at(consumer, at)) == {("buyer", "lapsed_buyers"), ("busy", "lapsed")}
    assert store.segment_members("lapsed") == {"quiet", "buyer", "busy"}
    # Without personalization consent nobody enters; past the horizon nobody is looked at.
    for user in ("withdrawn", "forgotten"):
        assert store.segment_log(user_id=user, segment="lapsed") == []

    # A new event ends the recency membership at once (trigger: the event).
    consume(store, consumer, [raw_event(9, user="quiet", ts_us=at + MINUTE_US)])
    last = store.segment_log(segment="lapsed", user_id="quiet")[-1]
    assert (last.entered, last.trigger) == (False, "e9")
    assert store.segment_members("lapsed") == {"buyer", "busy"}


def test_the_evening_begins_and_ends_without_events(store: RealtimeStore) -> None:
    engine = SegmentEngine(load_segments_text(RULES))
    consumer = consumer_for(store, engine)
    consume(store, consumer, [raw_event(0, user="u1", ts_us=BASE_US + 2 * HOUR_US)])  # 10:00
    assert store.segment_members("evening") == set()
    assert entries(sweep_at(consumer, BASE_US + 9 * HOUR_US)) == set()  # 17:00
    assert entries(sweep_at(consumer, BASE_US + 10 * HOUR_US)) == {("u1", "evening")}  # 18:00
    changes = sweep_at(consumer, BASE_US + 16 * HOUR_US)  # midnight
    assert [(c.segment, c.entered, c.trigger) for c in changes] == [("evening", False, "sweep")]


def test_the_entry_horizon_bounds_the_candidates(store: RealtimeStore) -> None:
    short = SegmentEngine(load_segments_text(RULES), entry_horizon_s=24 * 3600)
    consumer = consumer_for(store, short)
    consume(store, consumer, [raw_event(0, user="quiet", ts_us=BASE_US)])
    sweep_at(consumer, BASE_US + 2 * HOUR_US)  # the click is no longer recent
    assert store.segment_members("recent") == set()
    at = BASE_US + 49 * HOUR_US
    assert short.sweep_candidates(store, at) == set()  # not active within 24 h
    assert short.sweep_candidates(store, BASE_US + HOUR_US) == {"quiet"}
    assert entries(sweep_at(consumer, at)) == set()

    # The default is twice the longest count window (30 d): 60 days.
    default = SegmentEngine(load_segments_text(RULES))
    assert default.entry_horizon_us == 60 * DAY_US
    assert default.sweep_candidates(store, at) == {"quiet"}
    assert default.sweep_candidates(store, BASE_US + 61 * DAY_US) == set()
    # 0 turns entries off; rules that time cannot satisfy add no candidates.
    off = SegmentEngine(load_segments_text(RULES), entry_horizon_s=0)
    assert off.sweep_candidates(store, at) == set()
    counts = SegmentEngine(
        load_segments_text("segments: [{name: buyers, enter: 'purchase_count >= 1'}]")
    )
    assert counts.sweep_candidates(store, at) == set()
    with pytest.raises(ValueError, match="entry_horizon_s"):
        SegmentEngine([], entry_horizon_s=-1)


def test_the_consumers_periodic_sweep_lets_users_enter(store: RealtimeStore) -> None:
    engine = SegmentEngine(load_segments_text(RULES))
    proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine])
    cfg = ConsumerConfig(block_ms=0, sweep_interval_s=0.0, clock="event", gc_freeze_interval_s=None)
    EventProducer(store).publish(
        [raw_event(0, user="old"), raw_event(1, user="new", ts_us=BASE_US + 50 * HOUR_US)]
    )
    StreamConsumer(store, proc, cfg).run(until_idle=True)
    # The sweep runs at the latest event time: "old" has been quiet for 50 h there.
    assert store.segment_members("lapsed") == {"old"}
    (change,) = store.segment_log(segment="lapsed")
    assert (change.user_id, change.entered, change.trigger) == ("old", True, "sweep")
