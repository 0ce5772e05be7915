"""Stream ingestion end to end: at-least-once delivery, exactly-once effects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rt_testkit import raw_event

from recsys.events.batch import load_yoochoose_clicks
from recsys.events.producer import EventProducer
from recsys.events.redis_store import RedisStore
from recsys.events.store import CommitBatch, RealtimeStore
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.offline import build_profiles
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.profiles.state import UserProfile

GRANT_ALL = ProcessorConfig(consent=ConsentPolicy.grant_all())


def consumer(store: RealtimeStore, name: str = "c1", **kw: Any) -> StreamConsumer:
    proc = EventProcessor(store, GRANT_ALL)
    cfg = ConsumerConfig(name=name, block_ms=0, sweep_interval_s=None, **kw)
    return StreamConsumer(store, proc, cfg)


def stored_profile(store: RealtimeStore, user: str) -> UserProfile:
    rec = store.load_users([user])[user]
    assert rec.profile is not None, f"no profile for {user}"
    return UserProfile.from_doc(json.loads(rec.profile))


def test_valid_invalid_and_duplicate_entries(store: RealtimeStore) -> None:
    bad_schema = raw_event(3, user="u1")
    bad_schema["payload"] = {"colour": "red"}
    entries: list[Any] = [
        raw_event(1, user="u1"),
        raw_event(2, user="u2"),
        bad_schema,
        "{not json",
        raw_event(1, user="u1"),  # same event id again (a client retry)
        raw_event(4, user="u1", etype="purchase", payload={"price": 5.0, "quantity": 2}),
    ]
    EventProducer(store, batch_size=2).publish(
        e if isinstance(e, str) else json.dumps(e) for e in entries
    )
    stats = consumer(store, batch_size=4).run(until_idle=True)
    assert (stats.entries, stats.applied, stats.duplicates, stats.dead_letters) == (6, 3, 1, 2)
    assert store.stream_stats()["pending"] == 0
    p1 = stored_profile(store, "u1")
    assert p1.total("click") == 1 and p1.purchase_count == 1 and p1.purchase_total == 10.0
    letters = store.dead_letters()
    assert any(
        "payload.colour: field is not in the schema of click events" in r
        for r in letters[0].reasons
    )
    assert letters[0].user_id == "u1" and letters[1].raw == "{not json"
    assert [json.loads(e)["event_id"] for e in store.user_events("u1")] == ["e1", "e4"]


def test_replaying_the_stream_changes_nothing(store: RealtimeStore) -> None:
    events = [raw_event(i, user=f"u{i % 3}") for i in range(30)]
    EventProducer(store).publish(events)
    consumer(store).run(until_idle=True)
    before = {u: stored_profile(store, u).to_doc() for u in ("u0", "u1", "u2")}
    versions = {u: r.version for u, r in store.load_users(["u0", "u1", "u2"]).items()}
    EventProducer(store).publish(events)  # the whole log again
    stats = consumer(store, name="c2").run(until_idle=True)
    assert (stats.applied, stats.duplicates) == (0, 30)
    assert {u: stored_profile(store, u).to_doc() for u in before} == before
    assert {u: r.version for u, r in store.load_users(list(before)).items()} == versions
    assert sum(len(store.user_events(u)) for u in before) == 30


class _CrashOnCommit:
    """Wraps a store; the first commit raises as if the process died mid-batch."""

    def __init__(self, inner: RealtimeStore) -> None:
        self.inner = inner
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def commit(self, batch: CommitBatch) -> list[str]:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("simulated crash before commit")
        return self.inner.commit(batch)


def test_a_crash_before_commit_redelivers_and_applies_once(store: RealtimeStore) -> None:
    EventProducer(store).publish([raw_event(i, user=f"u{i % 2}") for i in range(10)])
    first = consumer(store, batch_size=4)
    first.run(max_entries=4)  # one batch committed
    crashing = _CrashOnCommit(store)
    first.store = crashing  # type: ignore[assignment]
    first.processor.store = crashing  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        first.step()
    assert store.stream_stats()["pending"] == 4  # read but never acknowledged
    restarted = consumer(store, batch_size=4)  # same name, fresh memory
    stats = restarted.run(until_idle=True)
    assert stats.entries == 6 and stats.applied == 6
    assert stored_profile(store, "u0").total() + stored_profile(store, "u1").total() == 10
    assert store.stream_stats()["pending"] == 0


def test_two_consumers_sharing_users_stay_exact(store: RealtimeStore) -> None:
    producer = EventProducer(store)
    a, b = consumer(store, name="a", batch_size=5), consumer(store, name="b", batch_size=5)
    n = 0
    for round_ in range(6):
        producer.publish([raw_event(n + i, user="shared") for i in range(5)])
        n += 5
        (a if round_ % 2 == 0 else b).step()
    assert stored_profile(store, "shared").total("click") == 30
    assert a.processor.stats.conflicts + b.processor.stats.conflicts >= 2  # stale caches caught


_CONSUMER_SCRIPT = """
import sys
from recsys.events.redis_store import RedisStore
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.segments.engine import SegmentEngine
store = RedisStore(sys.argv[1], prefix=sys.argv[2])
engine = SegmentEngine.from_yaml(sys.argv[3])
proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine])
StreamConsumer(store, proc, ConsumerConfig(name="fault", batch_size=200, block_ms=100,
               sweep_interval_s=None)).run()
"""


@pytest.mark.redis
def test_killing_the_consumer_mid_stream_applies_every_event_once(
    redis_url: str, yoochoose_path: Path
) -> None:
    events = load_yoochoose_clicks(yoochoose_path).events[:6000]
    prefix = f"fault{os.getpid()}"
    store = RedisStore(redis_url, prefix=prefix)
    EventProducer(store).publish(events)
    segments = str(Path(__file__).parents[2] / "configs" / "segments" / "yoochoose.yaml")
    cmd = [sys.executable, "-c", _CONSUMER_SCRIPT, redis_url, prefix, segments]
    applied_key = f"{prefix}:applied"
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 60
        while store.r.scard(applied_key) < 1500:
            assert proc.poll() is None and time.monotonic() < deadline, "consumer stalled"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # no cleanup, no final ack
        proc.wait()
        killed_at = store.r.scard(applied_key)
        assert 0 < killed_at < len(events)
        proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 120
        while store.r.scard(applied_key) < len(events) or store.stream_stats()["pending"]:
            assert proc.poll() is None and time.monotonic() < deadline, "restart stalled"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    offline = build_profiles(events)
    users = sorted(offline)
    online = store.load_users(users)
    for u in users:
        got = UserProfile.from_doc(json.loads(online[u].profile or "null"))
        assert got.type_totals == offline[u].type_totals, u
        assert got.to_doc()["buckets"] == offline[u].to_doc()["buckets"], u
    assert sum(len(store.user_events(u)) for u in users[:200]) == sum(
        offline[u].n_events for u in users[:200]
    )


def test_a_duplicate_committed_after_the_read_is_still_applied_once(
    store: RealtimeStore,
) -> None:
    EventProducer(store).publish([raw_event(1, user="u1"), raw_event(1, user="u1")])
    a, b = EventProcessor(store, GRANT_ALL), EventProcessor(store, GRANT_ALL)
    (first,) = store.read("a", 1, 0, pending=False)
    (second,) = store.read("b", 1, 0, pending=False)
    assert b.handle([second]) == 1
    # a read its copy before b committed: any read-time check said "not applied".
    assert a.handle([first]) == 0
    assert a.stats.duplicates == 1
    assert stored_profile(store, "u1").total() == 1
    assert store.stream_stats()["pending"] == 0
