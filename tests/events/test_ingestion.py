"""Stream ingestion end to end: at-least-once delivery, exactly-once effects."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rt_testkit import raw_event

from recsys.events.batch import load_yoochoose_clicks
from recsys.events.producer import EventProducer
from recsys.events.redis_store import RedisStore
from recsys.events.store import (
    CommitBatch,
    CommitReply,
    Delivery,
    MembershipChange,
    RealtimeStore,
)
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.offline import build_profiles
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.profiles.state import UserProfile
from recsys.segments.engine import SegmentEngine

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


class _Intercept:
    """Wraps a store, forwarding everything; subclasses see each commit
    before it is sent (:meth:`sent`) and may replace its reply
    (:meth:`answer`). Overlapped and sequential consumers both commit
    through ``begin_commit_and_read`` here."""

    def __init__(self, inner: RealtimeStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sent(self, batch: CommitBatch) -> None:
        """Called before ``batch`` reaches the store."""

    def answer(self, batch: CommitBatch, reply: CommitReply) -> CommitReply:
        """The reply the consumer gets."""
        return reply

    def begin_commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> CommitReply:
        self.sent(batch)
        reply = self.inner.begin_commit_and_read(batch, consumer, count, partitions)
        return self.answer(batch, reply)

    def commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> tuple[list[str], list[Delivery]]:
        return self.begin_commit_and_read(batch, consumer, count, partitions)()


class _Hook:
    """A segment hook that changes nothing; subclasses watch the events."""

    def on_event(self, user: Any, event: Any) -> list[MembershipChange]:
        return []

    def on_sweep(self, user: Any, now_us: int) -> list[MembershipChange]:
        return []

    def sweep_candidates(self, store: RealtimeStore, now_us: int) -> set[str]:
        return set()


class _CrashOnCommit(_Intercept):
    """The first commit raises as if the process died mid-batch."""

    crashed = False

    def sent(self, batch: CommitBatch) -> None:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("simulated crash before commit")

    def commit(self, batch: CommitBatch) -> list[str]:
        self.sent(batch)
        return self.inner.commit(batch)


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "sequential"])
def test_a_crash_before_commit_redelivers_and_applies_once(
    store: RealtimeStore, overlap: bool
) -> None:
    # One event per publish call, so one per stream entry in both stores.
    EventProducer(store, batch_size=1).publish([raw_event(i, user=f"u{i % 2}") for i in range(10)])
    first = consumer(store, batch_size=4, overlap_commits=overlap)
    first.run(max_entries=4)  # one batch committed
    assert first.processor.stats.entries == 4
    crashing = _CrashOnCommit(store)
    first.store = crashing  # type: ignore[assignment]
    first.processor.store = crashing  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        first.step()
    # Read but never acknowledged: the batch the commit read, and with
    # overlapping also the one read while the first batch was computed.
    assert store.stream_stats()["pending"] == (6 if overlap else 4)
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
    a.settle()
    b.settle()
    assert stored_profile(store, "shared").total("click") == 30
    assert a.processor.stats.conflicts + b.processor.stats.conflicts >= 2  # stale caches caught


_CONSUMER_SCRIPT = """
import sys
from recsys.events.redis_store import RedisStore
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.segments.engine import SegmentEngine
url, prefix, segments, partitions, part = sys.argv[1:]
store = RedisStore(url, prefix=prefix, partitions=int(partitions))
engine = SegmentEngine.from_yaml(segments)
proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine])
StreamConsumer(store, proc, ConsumerConfig(name=f"fault-{part}", batch_size=200, block_ms=100,
               sweep_interval_s=None, partitions=(int(part),))).run()
"""


@pytest.mark.redis
def test_killing_consumers_mid_stream_applies_every_event_once(
    redis_url: str, yoochoose_path: Path
) -> None:
    """Two consumer processes, one per partition; each is killed with SIGKILL
    mid-stream (while the other keeps going) and restarted."""
    events = load_yoochoose_clicks(yoochoose_path).events[:6000]
    prefix = f"fault{os.getpid()}"
    store = RedisStore(redis_url, prefix=prefix, partitions=2)
    EventProducer(store).publish(events)
    segments = str(Path(__file__).parents[2] / "configs" / "segments" / "yoochoose.yaml")

    def start(part: int) -> subprocess.Popen[bytes]:
        args = [redis_url, prefix, segments, "2", str(part)]
        return subprocess.Popen([sys.executable, "-c", _CONSUMER_SCRIPT, *args])

    applied_key = f"{prefix}:applied"
    procs = [start(0), start(1)]
    try:
        deadline = time.monotonic() + 120
        for part, mark in ((0, 1500), (1, 3500)):
            while store.r.scard(applied_key) < mark:
                assert all(p.poll() is None for p in procs), "a consumer died"
                assert time.monotonic() < deadline, "consumers stalled"
                time.sleep(0.005)
            procs[part].send_signal(signal.SIGKILL)  # no cleanup, no final ack
            procs[part].wait()
            killed_at = store.r.scard(applied_key)
            assert 0 < killed_at < len(events)
            procs[part] = start(part)
        while store.r.scard(applied_key) < len(events) or store.stream_stats()["pending"]:
            assert all(p.poll() is None for p in procs), "a restarted consumer died"
            assert time.monotonic() < deadline, "restart stalled"
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    # The offline build runs the same rules: whole documents must be equal
    # (counts, buckets, recent items in order, sessions, segment memberships).
    offline = build_profiles(events, hooks=[SegmentEngine.from_yaml(segments)])
    users = sorted(offline)
    online = store.load_users(users)
    for u in users:
        assert json.loads(online[u].profile or "null") == json.loads(
            json.dumps(offline[u].to_doc())
        ), u
    assert sum(len(store.user_events(u)) for u in users) == len(events)
    members = {s: {u for u, p in offline.items() if s in p.segments} for s in ("weekly_heavy",)}
    assert store.segment_members("weekly_heavy") == members["weekly_heavy"]


@pytest.mark.redis
def test_consumers_of_separate_partitions_never_contend(
    redis_url: str, yoochoose_path: Path
) -> None:
    events = load_yoochoose_clicks(yoochoose_path).events[:3000]
    store = RedisStore(redis_url, prefix=f"parts{os.getpid()}", partitions=2)
    EventProducer(store, batch_size=97).publish(events)
    consumers = [consumer(store, name=f"p{k}", partitions=(k,), batch_size=50) for k in (0, 1)]
    while any(c.step() for c in consumers):  # interleaved, batch by batch
        pass
    stats = [c.processor.stats for c in consumers]
    assert sum(s.applied for s in stats) == 3000 and all(s.applied > 500 for s in stats)
    assert [s.conflicts for s in stats] == [0, 0]
    offline = build_profiles(events)
    online = store.load_users(sorted(offline))
    for u, prof in offline.items():
        assert json.loads(online[u].profile or "null") == json.loads(json.dumps(prof.to_doc()))


def test_unreadable_entries_become_dead_letters(store: RealtimeStore) -> None:
    deep = "[" * 100_000  # past the JSON parser's nesting limit
    nested: object = 1
    for _ in range(40):
        nested = [nested]
    store.publish(["", deep, json.dumps({"event_id": nested})])
    stats = consumer(store).run(until_idle=True)
    assert (stats.entries, stats.dead_letters, stats.applied) == (3, 3, 0)
    assert store.stream_stats()["pending"] == 0
    letters = store.dead_letters()
    assert [ls.reasons[0].split(":")[0] for ls in letters[:2]] == ["$", "$"]
    assert letters[1].raw == deep[:2000]
    assert "nested too deep" in json.dumps(letters[2].raw)


def test_the_consumer_returns_the_garbage_collector_as_it_found_it(store: RealtimeStore) -> None:
    thresholds = gc.get_threshold()
    EventProducer(store).publish([raw_event(i) for i in range(5)])
    consumer(store, gc_freeze_interval_s=0.0).run(until_idle=True)
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_a_duplicate_committed_after_the_read_is_still_applied_once(
    store: RealtimeStore,
) -> None:
    # One event per publish call: two stream entries (Redis would group them).
    EventProducer(store, batch_size=1).publish([raw_event(1, user="u1"), raw_event(1, user="u1")])
    a, b = EventProcessor(store, GRANT_ALL), EventProcessor(store, GRANT_ALL)
    (first,) = store.read("a", 1, 0, pending=False)
    (second,) = store.read("b", 1, 0, pending=False)
    assert b.handle([second]) == 1
    # a read its copy before b committed: any read-time check said "not applied".
    assert a.handle([first]) == 0
    assert a.stats.duplicates == 1
    assert stored_profile(store, "u1").total() == 1
    assert store.stream_stats()["pending"] == 0


class _CountingLoads(_Intercept):
    """Records which users the store was asked to load."""

    def __init__(self, inner: RealtimeStore) -> None:
        super().__init__(inner)
        self.loaded: list[str] = []

    def load_users(self, user_ids: Sequence[str]) -> dict[str, Any]:
        self.loaded += user_ids
        return self.inner.load_users(user_ids)


def test_users_without_a_record_are_not_loaded_and_stale_hints_are_caught(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}")
    counting = _CountingLoads(store)
    proc = EventProcessor(counting, GRANT_ALL)  # type: ignore[arg-type]
    EventProducer(store).publish([raw_event(i, user=f"n{i % 3}") for i in range(6)])
    deliveries = store.read("c", 100, 0, pending=False)
    assert proc.handle(deliveries) == 6 and counting.loaded == []  # all new: no load
    # A hint that went stale between the read and the commit (an attribute
    # write) fails the version check; the retry loads the user.
    EventProducer(store).publish([raw_event(10, user="late")])
    (d,) = store.read("c", 100, 0, pending=False)
    assert d.user_version == 0
    store.write_attributes("late", {"age": '{"v": 41, "s": "crm", "c": 1.0, "t": 1}'})
    assert proc.handle([d]) == 1
    assert proc.stats.conflicts == 1 and counting.loaded == ["late"]
    assert proc.cache["late"].attributes == {"age": 41}
    assert stored_profile(store, "late").total() == 1
    # Entries carry the version from publishing: a write between publishing
    # and reading leaves the hint stale, and the commit catches that too.
    EventProducer(store).publish([raw_event(11, user="later")])
    store.write_attributes("later", {"age": '{"v": 29, "s": "crm", "c": 1.0, "t": 1}'})
    (d,) = store.read("c", 100, 0, pending=False)
    assert d.user_version == 0
    assert proc.handle([d]) == 1
    assert proc.stats.conflicts == 2 and counting.loaded == ["late", "later"]
    assert proc.cache["later"].attributes == {"age": 29}


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "sequential"])
def test_a_consumer_reads_the_next_batch_with_each_commit(
    store: RealtimeStore, overlap: bool
) -> None:
    EventProducer(store, batch_size=1).publish([raw_event(i, user=f"u{i}") for i in range(9)])
    c = consumer(store, batch_size=3, overlap_commits=overlap)
    calls: list[str] = []
    inner = store

    class _Spy:
        def __getattr__(self, name: str) -> Any:
            attr = getattr(inner, name)
            if name in ("read", "commit", "commit_and_read", "begin_commit_and_read"):
                calls.append(name)
            return attr

    c.store = c.processor.store = _Spy()  # type: ignore[assignment]
    stats = c.run(until_idle=True)
    assert stats.applied == 9 and stats.batches == 3 and store.stream_stats()["pending"] == 0
    if overlap:
        # pending check, first read, a commit-free read so that the second
        # batch arrives while the first is computed, one call per batch (the
        # last two read nothing), the read that finds the stream idle.
        assert calls == ["read", "read", *["begin_commit_and_read"] * 4, "read"]
    else:
        # pending check, first read, then one call per batch (the last reads nothing).
        assert calls == ["read", "read", *["commit_and_read"] * 3, "read"]


class _Timeline(_Intercept, _Hook):
    """Logs when commits are sent and answered, and when events are evaluated."""

    def __init__(self, inner: RealtimeStore) -> None:
        super().__init__(inner)
        self.log: list[str] = []

    def sent(self, batch: CommitBatch) -> None:
        self.log.append(f"send [{','.join(batch.applied_ids)}]")

    def answer(self, batch: CommitBatch, reply: CommitReply) -> CommitReply:
        def answered() -> tuple[list[str], list[Delivery]]:
            self.log.append(f"reply [{','.join(batch.applied_ids)}]")
            return reply()

        return answered

    def on_event(self, user: Any, event: Any) -> list[MembershipChange]:
        self.log.append(f"eval {event.event_id}")
        return []


def test_the_next_batch_is_computed_while_the_commit_is_in_flight(store: RealtimeStore) -> None:
    # Two events of one user per batch: the second batch is computed on the
    # state the first batch's commit (not yet answered) writes.
    events = [raw_event(i, user="same") for i in range(6)]
    EventProducer(store, batch_size=1).publish(events)
    timeline = _Timeline(store)
    proc = EventProcessor(timeline, GRANT_ALL, hooks=[timeline])  # type: ignore[arg-type]
    cfg = ConsumerConfig(name="c1", batch_size=2, block_ms=0, sweep_interval_s=None)
    c = StreamConsumer(timeline, proc, cfg)  # type: ignore[arg-type]
    stats = c.run(until_idle=True)
    ids = [e["event_id"] for e in events]
    assert timeline.log[:12] == [
        "send []",  # reads the second batch while the first is computed
        f"eval {ids[0]}",
        f"eval {ids[1]}",
        "reply []",
        f"send [{ids[0]},{ids[1]}]",
        f"eval {ids[2]}",
        f"eval {ids[3]}",
        f"reply [{ids[0]},{ids[1]}]",
        f"send [{ids[2]},{ids[3]}]",
        f"eval {ids[4]}",
        f"eval {ids[5]}",
        f"reply [{ids[2]},{ids[3]}]",
    ]
    # The versions the speculative batches expected were the ones written.
    assert stats.conflicts == 0 and stats.applied == 6 and stats.batches == 3
    assert stored_profile(store, "same").total("click") == 6
    assert store.load_users(["same"])["same"].version == 3


class _WriteBeforeCommit(_Intercept):
    """A concurrent writer: before the first commit of a batch with events
    reaches the store, an API call changes the user's record, so that commit
    conflicts (a fault that timing alone cannot cause reliably)."""

    def __init__(self, inner: RealtimeStore, user: str) -> None:
        super().__init__(inner)
        self.user = user
        self.fired = False

    def sent(self, batch: CommitBatch) -> None:
        if batch.applied_ids and not self.fired:
            self.fired = True
            age = '{"v": 30, "s": "crm", "c": 1.0, "t": 1}'
            self.inner.write_attributes(self.user, {"age": age})


def test_a_conflict_in_flight_voids_the_batch_computed_on_it(store: RealtimeStore) -> None:
    events = [raw_event(i, user="same" if i % 2 else f"other{i}") for i in range(12)]
    EventProducer(store, batch_size=1).publish(events)
    wrapped = _WriteBeforeCommit(store, "same")
    proc = EventProcessor(wrapped, GRANT_ALL)  # type: ignore[arg-type]
    cfg = ConsumerConfig(name="c1", batch_size=4, block_ms=0, sweep_interval_s=None)
    stats = StreamConsumer(wrapped, proc, cfg).run(until_idle=True)  # type: ignore[arg-type]
    assert wrapped.fired and stats.conflicts == 1
    assert stats.applied == 12 and stats.entries == 12 and stats.duplicates == 0
    assert store.stream_stats()["pending"] == 0
    # Every event once: the speculative batch built on the conflicting one
    # was discarded, not committed on top of it.
    assert stored_profile(store, "same").total("click") == 6
    assert sum(len(store.user_events(u)) for u in {e["user_id"] for e in events}) == 12
    assert proc.cache["same"].attributes == {"age": 30}


class _FailOn(_Hook):
    """A segment hook with a bug that shows on one event."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id

    def on_event(self, user: Any, event: Any) -> list[MembershipChange]:
        if event.event_id == self.event_id:
            raise KeyError("no such segment feature")
        return []


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "sequential"])
def test_an_event_that_fails_processing_is_dead_lettered_and_the_rest_applied_once(
    store: RealtimeStore, overlap: bool
) -> None:
    events = [raw_event(i, user="same" if i % 2 else f"other{i}") for i in range(8)]
    EventProducer(store, batch_size=1).publish(events)
    bad = events[5]["event_id"]  # in the third batch: computed while the second commits
    proc = EventProcessor(store, GRANT_ALL, hooks=[_FailOn(bad)])
    cfg = ConsumerConfig(
        name="c1", batch_size=2, block_ms=0, sweep_interval_s=None, overlap_commits=overlap
    )
    stats = StreamConsumer(store, proc, cfg).run(until_idle=True)
    assert stats.entries == 8 and stats.applied == 7 and stats.dead_letters == 1
    (letter,) = store.dead_letters()
    assert letter.reasons == ("processing failed: KeyError: 'no such segment feature'",)
    assert letter.event_id == bad
    # The failed event left no trace in the profile; the others count once.
    assert stored_profile(store, "same").total("click") == 3
    assert store.stream_stats()["pending"] == 0


class _LoseCommitReply(_Intercept):
    """The connection drops after the store ran a commit but before its reply
    arrived (a fault no real server can be made to produce on cue)."""

    def __init__(self, inner: RealtimeStore, after: int) -> None:
        super().__init__(inner)
        self.after = after
        self.commits = 0

    def answer(self, batch: CommitBatch, reply: CommitReply) -> CommitReply:
        if not batch.applied_ids:
            return reply
        self.commits += 1
        if self.commits != self.after:
            return reply

        def lost() -> tuple[list[str], list[Delivery]]:
            reply()  # it ran; only its answer is lost
            raise ConnectionError("connection lost while reading the reply")

        return lost


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "sequential"])
def test_a_reply_lost_in_flight_and_a_new_run_apply_every_event_once(
    store: RealtimeStore, overlap: bool
) -> None:
    events = [raw_event(i, user=f"u{i % 3}") for i in range(30)]
    EventProducer(store, batch_size=1).publish(events)
    flaky = _LoseCommitReply(store, after=2)
    proc = EventProcessor(flaky, GRANT_ALL)  # type: ignore[arg-type]
    cfg = ConsumerConfig(
        name="c1", batch_size=4, block_ms=0, sweep_interval_s=None, overlap_commits=overlap
    )
    c = StreamConsumer(flaky, proc, cfg)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        c.run(until_idle=True)
    c.run(until_idle=True)  # the same process carries on
    # The lost commit was applied once: its entries were acknowledged, and
    # the batch computed on it found its users moved and was recomputed.
    assert sum(stored_profile(store, f"u{k}").total("click") for k in range(3)) == 30
    assert sum(len(store.user_events(f"u{k}")) for k in range(3)) == 30
    assert store.stream_stats()["pending"] == 0
    assert proc.stats.entries == 30 - 4  # the lost batch counted nowhere
