"""Consent per purpose decides what an event is stored for."""

from __future__ import annotations

import json

from rt_testkit import raw_event

from recsys.events.producer import EventProducer
from recsys.events.store import RealtimeStore
from recsys.privacy.consent import ConsentPolicy, ConsentRecord, ConsentRegistry, Purpose
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.profiles.state import UserProfile


def make_consumer(store: RealtimeStore) -> StreamConsumer:
    # The default policy: nothing is granted without a record (opt-in).
    return StreamConsumer(
        store, EventProcessor(store), ConsumerConfig(block_ms=0, sweep_interval_s=None)
    )


def test_each_purpose_gates_its_own_store(store: RealtimeStore) -> None:
    reg = ConsentRegistry(store)
    reg.record("analytics_only", Purpose.ANALYTICS, True, source="banner", actor="user")
    reg.record("personal_only", Purpose.PERSONALIZATION, True, source="app", actor="user")
    reg.record("refused", Purpose.ANALYTICS, False, source="banner", actor="user")
    users = ["analytics_only", "personal_only", "refused", "never_asked"]
    EventProducer(store).publish([raw_event(i, user=u) for i, u in enumerate(users)])
    stats = make_consumer(store).run(until_idle=True)
    assert stats.applied == 4 and stats.skipped_no_consent == 2
    recs = store.load_users(users)
    assert store.user_events("analytics_only") and recs["analytics_only"].profile is None
    assert not store.user_events("personal_only") and recs["personal_only"].profile is not None
    for u in ("refused", "never_asked"):
        assert not store.user_events(u) and recs[u].profile is None
    assert store.active_users(0) == ["personal_only"]


def test_records_keep_time_source_and_history(store: RealtimeStore) -> None:
    reg = ConsentRegistry(store)
    reg.record("u1", "personalization", True, source="banner", actor="u1", at_us=10)
    reg.record("u1", Purpose.PERSONALIZATION, False, source="settings", actor="u1", at_us=20)
    assert reg.granted("u1") == frozenset()
    assert reg.current("u1")[Purpose.PERSONALIZATION] == ConsentRecord(
        Purpose.PERSONALIZATION, False, 20, "settings", "u1"
    )
    assert [(r.granted, r.at_us, r.source) for r in reg.history("u1")] == [
        (True, 10, "banner"),
        (False, 20, "settings"),
    ]
    assert ConsentRegistry(store, ConsentPolicy.grant_all()).granted("u2") == frozenset(Purpose)
    changes = [e for e in reg.audit.entries(subject="u1") if e.body["action"] == "consent.change"]
    assert [e.body["detail"]["granted"] for e in changes] == [True, False]


def test_withdrawal_reaches_a_running_consumer(store: RealtimeStore) -> None:
    reg = ConsentRegistry(store)
    reg.record("u1", Purpose.PERSONALIZATION, True, source="app", actor="u1")
    consumer = make_consumer(store)
    EventProducer(store).publish([raw_event(1, user="u1")])
    consumer.run(until_idle=True)
    assert "u1" in consumer.processor.cache  # the consumer holds u1 in memory
    reg.record("u1", Purpose.PERSONALIZATION, False, source="app", actor="u1")
    EventProducer(store).publish([raw_event(2, user="u1")])
    stats = consumer.run(until_idle=True)
    # The withdrawal bumped u1's version: the stale cached copy failed the
    # version check, was reloaded with the new consent, and the event skipped.
    assert stats.skipped_no_consent == 1 and stats.conflicts == 1
    doc = store.load_users(["u1"])["u1"].profile
    assert doc is not None and UserProfile.from_doc(json.loads(doc)).n_events == 1


def test_events_about_no_user_build_no_profile_even_when_all_is_granted(
    store: RealtimeStore,
) -> None:
    published = raw_event(1, user="editor", etype="item_published", item=7,
                          payload={"categories": ["Drama"]})  # fmt: skip
    anonymous = raw_event(2, user="anonymous", etype="recommendation_impression",
                          payload={"items": [1, 2], "personalized": False})  # fmt: skip
    personal = raw_event(3, user="u9", etype="recommendation_impression",
                         payload={"items": [1, 2], "personalized": True})  # fmt: skip
    EventProducer(store).publish([published, anonymous, personal, raw_event(4, user="u9")])
    consumer = StreamConsumer(
        store,
        EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all())),
        ConsumerConfig(block_ms=0, sweep_interval_s=None),
    )
    stats = consumer.run(until_idle=True)
    assert stats.applied == 4 and stats.dead_letters == 0
    assert consumer.processor.stats.skipped_no_user == 2
    recs = store.load_users(["editor", "anonymous", "u9"])
    for placeholder in ("editor", "anonymous"):
        assert recs[placeholder].profile is None and recs[placeholder].version == 0
        assert not store.user_events(placeholder)
    assert recs["u9"].profile is not None and len(store.user_events("u9")) == 2
    # a replay applies nothing twice, the skipped ones included
    EventProducer(store).publish([published, anonymous])
    assert consumer.run(until_idle=True).duplicates == 2
