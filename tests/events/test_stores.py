"""The store contract, run against SQLite and a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from rt_testkit import event, raw_event

from recsys.events.backend import StoreConfig, open_store
from recsys.events.deadletter import DeadLetter
from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import (
    CONFLICT_REASONS,
    DUPLICATE,
    OTHER_CONTENT,
    OTHER_USER,
    PUBLISHED,
    CommitBatch,
    EventKey,
    MembershipChange,
    ProfileWrite,
    PublishResult,
    RealtimeStore,
    canonical_event,
    partition_of,
)
from recsys.events.validation import EventValidator, ValidationConfig


def publish(store: RealtimeStore, n: int, user: str = "u1") -> list[str]:
    return store.publish([json.dumps({"event_id": f"e{i}", "user_id": user}) for i in range(n)])


def test_consumer_group_delivers_once_and_keeps_unacked_pending(store: RealtimeStore) -> None:
    ids = publish(store, 5)
    first = store.read("c1", 3, 0, pending=False)
    second = store.read("c1", 10, 0, pending=False)
    assert [d.entry_id for d in first + second] == ids
    assert store.read("c1", 10, 0, pending=False) == []
    assert store.stream_stats() == {"length": 5, "pending": 5}
    # A restarted consumer with the same name gets its unacknowledged entries back.
    again = store.read("c1", 10, 0, pending=True)
    assert [d.entry_id for d in again] == ids
    assert store.commit(CommitBatch(acks=ids[:2])) == []
    assert [d.entry_id for d in store.read("c1", 10, 0, pending=True)] == ids[2:]
    assert store.stream_stats()["pending"] == 3


def test_stale_entries_are_claimed_by_another_consumer(store: RealtimeStore) -> None:
    ids = publish(store, 3)
    store.read("dead", 10, 0, pending=False)
    assert store.claim_stale("alive", min_idle_ms=60_000, count=10) == []
    claimed = store.claim_stale("alive", min_idle_ms=0, count=10)
    assert [d.entry_id for d in claimed] == ids
    assert json.loads(claimed[0].payload)["event_id"] == "e0"
    assert [d.entry_id for d in store.read("alive", 10, 0, pending=True)] == ids
    assert store.read("dead", 10, 0, pending=True) == []


def test_commit_is_all_or_nothing_under_version_conflicts(store: RealtimeStore) -> None:
    ids = publish(store, 2)
    store.read("c", 10, 0, pending=False)
    ok = CommitBatch(
        profiles=[ProfileWrite("u1", 0, '{"n": 1}')],
        events=[("u1", '{"event_id": "e0"}')],
        applied_ids=["e0"],
        acks=ids[:1],
        last_seen={"u1": 5},
    )
    assert store.commit(ok) == []
    rec = store.load_users(["u1", "nobody"])
    assert rec["u1"].version == 1 and rec["u1"].profile == '{"n": 1}'
    assert rec["nobody"].version == 0 and rec["nobody"].profile is None
    stale = CommitBatch(
        profiles=[ProfileWrite("u1", 0, '{"n": 2}')],
        events=[("u1", '{"event_id": "e1"}')],
        applied_ids=["e1"],
        acks=ids[1:],
    )
    assert store.commit(stale) == ["u1"]
    assert store.load_users(["u1"])["u1"].profile == '{"n": 1}'
    assert store.user_events("u1") == ['{"event_id": "e0"}']
    assert store.applied(["e0", "e1"]) == {"e0"}
    assert store.stream_stats()["pending"] == 1
    assert store.active_users(0) == ["u1"] and store.active_users(6) == []


def test_commit_refuses_an_already_applied_event_id(store: RealtimeStore) -> None:
    assert store.commit(CommitBatch(applied_ids=["x1"])) == []
    assert store.commit(CommitBatch(applied_ids=["x2", "x1"])) == ["dup:x1"]
    assert store.applied(["x1", "x2"]) == {"x1"}


def test_attribute_and_consent_writes_bump_the_version(store: RealtimeStore) -> None:
    assert store.write_attributes("u2", {"age": '{"v": 30}'}) == 1
    assert store.write_consent("u2", "analytics", '{"granted": true}') == 2
    assert store.write_attributes("u2", {"age": None}) == 3
    rec = store.load_users(["u2"])["u2"]
    assert (
        rec.version == 3
        and rec.attributes == {}
        and rec.consent == {"analytics": '{"granted": true}'}
    )
    assert store.consent_history("u2") == ['{"granted": true}']
    assert store.commit(CommitBatch(profiles=[ProfileWrite("u2", 2, "{}")])) == ["u2"]


def test_dead_letters_and_segments(store: RealtimeStore) -> None:
    letters = [
        DeadLetter.from_raw(
            {"user_id": "u3", "x": 1}, ["x: field is not in the event schema"], "t", 1
        ),
        DeadLetter.from_raw("garbage", ["$: not valid JSON"], "t", 2),
    ]
    store.add_dead_letters(letters)
    assert store.dead_letter_count() == 2
    assert store.dead_letters() == letters
    assert store.dead_letters(user_id="u3") == letters[:1]
    changes = [
        MembershipChange("u3", "seg", True, 10, "e1"),
        MembershipChange("u4", "seg", True, 20, "e2"),
        MembershipChange("u3", "seg", False, 30, "sweep"),
    ]
    assert store.commit(CommitBatch(memberships=changes)) == []
    assert store.segment_members("seg") == {"u4"} and store.segment_size("seg") == 1
    assert store.segment_log(segment="seg") == changes
    assert store.segment_log(user_id="u3") == [changes[0], changes[2]]
    assert store.segment_log(segment="seg", since_us=15, until_us=30) == [changes[1]]


def test_audit_trail_is_hash_chained(store: RealtimeStore) -> None:
    a = store.append_audit({"actor": "x", "action": "read"})
    b = store.append_audit({"actor": "y", "action": "write"})
    assert (a.seq, b.seq) == (1, 2) and b.prev_hash == a.hash and a.prev_hash == ""
    assert [r.body["actor"] for r in store.audit_records()] == ["x", "y"]


@pytest.mark.parametrize("n", [1200])
def test_large_batches_commit_in_one_piece(store: RealtimeStore, n: int) -> None:
    ids = publish(store, n)
    store.read("c", n, 0, pending=False)
    batch = CommitBatch(applied_ids=[f"e{i}" for i in range(n)], acks=ids)
    assert store.commit(batch) == []
    assert store.stream_stats()["pending"] == 0
    assert len(store.applied([f"e{i}" for i in range(n)])) == n


def test_text_with_any_characters_round_trips(store: RealtimeStore) -> None:
    # The Redis store joins lists with NUL and U+0001 and falls back to JSON
    # when an element holds one; nothing may be lost or split either way.
    odd = ["plain", "with\x00nul", "with\x01soh", "", "ünïcödé \n\t"]
    ids = store.publish(odd)
    got = store.read("c", 10, 0, pending=False)
    assert [d.payload for d in got] == odd and [d.entry_id for d in got] == ids
    assert all(d.published_us > 0 for d in got)
    assert store.commit(CommitBatch(events=[("u9", t) for t in odd], acks=ids)) == []
    assert store.commit(CommitBatch(events=[("u9", "again")])) == []
    assert store.user_events("u9") == [*odd, "again"]
    letter = DeadLetter.from_raw("bad\x00text", ["$: not valid JSON"], "t", 1)
    store.add_dead_letters([letter])
    assert store.dead_letters(user_id=None) == [letter]
    change = MembershipChange("u\x00x", "seg", True, 5, "e\x01")
    assert store.commit(CommitBatch(memberships=[change])) == []
    assert store.segment_log(segment="seg") == [change]


def test_the_embedded_store_refuses_partitions() -> None:
    with pytest.raises(ValueError, match="partitioned stream needs Redis"):
        open_store(StoreConfig(partitions=2))


def test_partition_of_is_the_same_in_every_process() -> None:
    users = [f"user-{i}" for i in range(300)] + ["3", "17794", "ünï"]
    here = [partition_of(u, 4) for u in users]
    code = (
        "import json, sys; from recsys.events.store import partition_of; "
        "print(json.dumps([partition_of(u, 4) for u in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hashes differ per process
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(users)], env=env, capture_output=True, check=True
    )
    assert json.loads(out.stdout) == here
    assert set(here) == {0, 1, 2, 3}  # spread over every partition
    assert partition_of("u1", 1) == 0 and partition_of(None, 4) == 0


@pytest.mark.redis
def test_a_partitioned_stream_keeps_each_user_in_one_partition(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}", partitions=3)
    users = [f"user{i}" for i in range(30)]
    raws = [{"event_id": f"e{n}", "user_id": users[n % 30], "n": n} for n in range(120)]
    # The user ids given to the store (routing without parsing) ...
    given = [users[n % 30] for n in range(60)]
    ids = store.publish([json.dumps(r) for r in raws[:60]], users=given)
    # ... or read from the payloads.
    ids += store.publish([json.dumps(r) for r in raws[60:]])
    assert len(set(ids)) == 120
    seen: dict[str, int] = {}
    order: dict[str, list[int]] = {}
    for k in range(3):
        got = store.read("c", 500, 0, pending=False, partitions=[k])
        for d in got:
            raw = json.loads(d.payload)
            assert d.entry_id.startswith(f"{k}:")
            assert partition_of(raw["user_id"], 3) == k
            assert seen.setdefault(raw["user_id"], k) == k  # one partition per user
            order.setdefault(raw["user_id"], []).append(raw["n"])
    assert sorted(n for ns in order.values() for n in ns) == list(range(120))
    assert all(ns == sorted(ns) for ns in order.values())  # each user's events in order
    # A user's events of one publish call share an entry: 30 users x 2 calls.
    assert store.stream_stats() == {"length": 60, "pending": 60}
    # A consumer that restarts gets its own entries back, per partition.
    again = store.read("c", 500, 0, pending=True, partitions=[1])
    assert again and all(d.entry_id.startswith("1:") for d in again)
    claimed = store.claim_stale("other", 0, 500, partitions=[2])
    assert claimed and all(d.entry_id.startswith("2:") for d in claimed)
    # One commit acknowledges entries of every partition.
    assert store.commit(CommitBatch(acks=ids)) == []
    assert store.stream_stats() == {"length": 60, "pending": 0}
    with pytest.raises(ValueError, match="do not exist"):
        store.read("c", 1, 0, pending=False, partitions=[3])
    # Erasure finds the user's entries whatever their partition.
    counts = store.erase_user("user7", "tomb")
    # Counted in events (4), though they were 2 entries.
    assert counts["stream"] == 4 and store.stream_stats()["length"] == 58


@pytest.mark.redis
def test_a_prefix_keeps_its_partition_count_and_refuses_another(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    first = RedisStore(redis_url, prefix=prefix, partitions=2)
    first.publish([json.dumps({"event_id": f"e{n}", "user_id": f"u{n}"}) for n in range(20)])
    # opened without a count (a server's exposure log, a report): the prefix's own
    by_url = RedisStore(redis_url, prefix=prefix)
    assert by_url.partitions == 2 and by_url.stream_keys == first.stream_keys
    assert by_url.stream_stats()["length"] == 20
    by_url.publish([json.dumps({"event_id": "late", "user_id": "u3"})])
    assert first.r.xlen(first.stream_keys[partition_of("u3", 2)]) >= 2
    assert not first.r.exists(f"{prefix}:stream")  # nothing in an unread 1-partition stream
    with pytest.raises(ValueError, match=r"2 partition\(s\), not 3: every producer"):
        RedisStore(redis_url, prefix=prefix, partitions=3)
    # a new prefix opened without a count has one, and keeps it
    other = f"t{uuid.uuid4().hex[:12]}"
    assert RedisStore(redis_url, prefix=other).partitions == 1
    with pytest.raises(ValueError, match=r"1 partition\(s\), not 2"):
        RedisStore(redis_url, prefix=other, partitions=2)
    # a prefix written before the count was recorded: its stream keys give it
    first.r.delete(f"{prefix}:partitions")
    assert RedisStore(redis_url, prefix=prefix).partitions == 2
    first.r.delete(f"{prefix}:partitions")
    with pytest.raises(ValueError, match=r"2 partition\(s\), not 1"):
        RedisStore(redis_url, prefix=prefix, partitions=1)
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        RedisStore(redis_url, prefix=prefix, partitions=0)


def test_a_blocked_read_returns_what_arrives(store: RealtimeStore) -> None:
    payloads = [json.dumps({"event_id": f"e{i}", "user_id": "u1"}) for i in range(100)]
    timer = threading.Timer(0.05, lambda: store.publish(payloads))
    timer.start()
    try:
        got = store.read("c", 500, 5000, pending=False)
    finally:
        timer.join()
    # Everything published in one call comes back in one read, in order
    # (past the few entries the blocked call itself takes).
    assert [d.payload for d in got] == payloads
    assert store.stream_stats() == {"length": 100, "pending": 100}
    assert store.read("c", 500, 50, pending=False) == []  # waits, then nothing


def test_commit_and_read_commits_then_reads_only_when_committed(store: RealtimeStore) -> None:
    ids = publish(store, 1, user="a") + publish(store, 1, user="b")
    (first,) = store.read("c", 1, 0, pending=False)
    ok = CommitBatch(profiles=[ProfileWrite("a", 0, "{}")], applied_ids=["e0"], acks=[ids[0]])
    conflicts, nxt = store.commit_and_read(ok, "c", 10)
    assert conflicts == [] and [d.entry_id for d in nxt] == ids[1:]
    assert store.load_users(["a"])["a"].version == 1
    assert store.stream_stats()["pending"] == 1  # the next batch, read and not yet acknowledged
    publish(store, 1, user="d")
    # A conflict writes, acknowledges and reads nothing.
    stale = CommitBatch(profiles=[ProfileWrite("a", 0, "{}")], acks=[nxt[0].entry_id])
    assert store.commit_and_read(stale, "c", 10) == (["a"], [])
    assert store.stream_stats() == {"length": 3, "pending": 1}
    assert first.entry_id == ids[0]


def test_a_begun_commit_lands_before_its_reply_is_read(store: RealtimeStore) -> None:
    # Redis: the first call loads the script (a call that meets NOSCRIPT runs
    # only when its reply is read and it is sent again).
    assert store.commit_and_read(CommitBatch(), "c", 10) == ([], [])
    ids = publish(store, 1, user="a") + publish(store, 1, user="b")
    store.read("c", 1, 0, pending=False)
    batch = CommitBatch(profiles=[ProfileWrite("a", 0, "{}")], applied_ids=["e0"], acks=[ids[0]])
    reply = store.begin_commit_and_read(batch, "c", 10)
    # Meanwhile the store serves other calls (Redis: on another connection),
    # and the server runs the commit without waiting for the reply to be read.
    deadline = time.monotonic() + 5
    while store.load_users(["a"])["a"].version != 1:
        assert time.monotonic() < deadline, "the commit did not land"
        time.sleep(0.001)
    assert store.applied(["e0"]) == {"e0"}
    conflicts, nxt = reply()
    assert conflicts == [] and [d.entry_id for d in nxt] == ids[1:]
    # The kept connection is free again: the next call's reply is its own.
    stale = CommitBatch(profiles=[ProfileWrite("a", 0, "{}")], acks=[nxt[0].entry_id])
    assert store.begin_commit_and_read(stale, "c", 10)() == (["a"], [])
    assert store.stream_stats() == {"length": 2, "pending": 1}


@pytest.mark.redis
def test_closing_with_a_reply_outstanding_does_not_wait(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}")
    reply = store.begin_commit_and_read(CommitBatch(), "c", 10)
    store.close()  # returned: it did not wait for the reply's reader
    with pytest.raises(redis.ConnectionError):
        reply()
    # A later call connects again.
    assert store.commit_and_read(CommitBatch(), "c", 10) == ([], [])


@pytest.mark.redis
def test_a_users_events_of_one_publish_call_share_an_entry(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}")
    texts = [json.dumps({"event_id": f"e{i}", "user_id": "ab"[i % 2]}) for i in range(6)]
    texts.append('{"bad":"\x1e"}')  # holds the separator: travels alone
    ids = store.publish(texts, users=["a", "b"] * 3 + ["a"])
    assert store.stream_stats() == {"length": 3, "pending": 0}
    got = store.read("c", 10, 0, pending=False)
    by_id = {d.entry_id: d for d in got}
    assert sorted(by_id) == sorted(ids) and len(got) == 7
    assert [by_id[i].payload for i in ids] == texts  # every event, unsplit and in order
    a_ids = [i for i, t in zip(ids, texts[:6], strict=False) if '"a"' in t]
    assert [i.split("/")[1] for i in a_ids] == ["0", "1", "2"]  # one entry, indexed
    assert len({i.split("/")[0] for i in a_ids}) == 1
    # Unknown users have no record: version 0, so the consumer need not load them.
    assert {(d.user_id, d.user_version) for d in got} == {("a", 0), ("b", 0)}
    # Acknowledging an event of a grouped entry acknowledges the entry.
    assert store.commit(CommitBatch(acks=[a_ids[0]])) == []
    assert store.stream_stats()["pending"] == 2
    store.write_attributes("b", {"age": "30"})
    store.publish([texts[1]], users=["b"])
    (again,) = store.read("c", 10, 0, pending=False)
    assert (again.user_id, again.user_version) == ("b", 1)
    # Without grouping: one entry per event.
    plain = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}", group_user_events=False)
    plain_ids = plain.publish(texts[:4], users=["a", "b", "a", "b"])
    assert "/" not in "".join(plain_ids) and plain.stream_stats()["length"] == 4


@pytest.mark.redis
def test_a_blocked_read_returns_user_versions(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:12]}")
    store.write_attributes("old", {"age": "30"})
    texts = [json.dumps({"event_id": f"e{i}", "user_id": u}) for i, u in enumerate(["old", "new"])]
    assert store.read("c", 500, 0, pending=False) == []  # drained: the next read blocks
    timer = threading.Timer(0.05, lambda: store.publish(texts, users=["old", "new"]))
    calls: list[bytes] = []
    channel_call = store._channel.call

    def spy(packed: bytes, decode: bool) -> Any:
        if threading.current_thread() is threading.main_thread():  # not the publisher
            calls.append(packed)
        return channel_call(packed, decode)

    store._channel.call = spy  # type: ignore[method-assign]
    timer.start()
    try:
        got = store.read("c", 500, 5000, pending=False)
    finally:
        timer.join()
    assert [(d.payload, d.user_id, d.user_version) for d in got] == [
        (texts[0], "old", 1),
        (texts[1], "new", 0),
    ]
    # The versions came with the entries (stamped when published): one call.
    assert len(calls) == 1 and b"XREADGROUP" in calls[0]


# -- publishing once per event id (publish_new) ---------------------------------------
def keyed(n: int, user: str = "u1", item: int = 0) -> tuple[str, EventKey]:
    """A validated event e<n> as publish_new takes it: (text, key)."""
    return canonical_event(event(n, user=user, item=100 + n + item))


def publish_new(store: RealtimeStore, events: list[tuple[str, EventKey]]) -> PublishResult:
    return store.publish_new([t for t, _ in events], [k for _, k in events])


def test_publish_new_publishes_each_id_once_and_names_conflicts(store: RealtimeStore) -> None:
    first = publish_new(store, [keyed(1), keyed(2), keyed(1)])
    assert first.outcomes == [PUBLISHED, PUBLISHED, DUPLICATE]
    got = store.read("c", 10, 0, pending=False)
    assert [d.entry_id for d in got] == first.entry_ids and len(got) == 2
    assert [d.payload for d in got] == [keyed(1)[0], keyed(2)[0]]
    # Ids known from an earlier call: a resend, other content, another user;
    # and within the call a new id used twice with different content.
    again = publish_new(store, [keyed(2), keyed(1, item=7), keyed(2, user="u2"), keyed(3),
                                keyed(3, item=1)])  # fmt: skip
    assert again.outcomes == [DUPLICATE, OTHER_CONTENT, OTHER_USER, PUBLISHED, OTHER_CONTENT]
    (new,) = store.read("c", 10, 0, pending=False)
    assert new.entry_id == again.entry_ids[0] and json.loads(new.payload)["event_id"] == "e3"
    assert again.count(PUBLISHED) == 1 and set(CONFLICT_REASONS) == {OTHER_USER, OTHER_CONTENT}
    assert store.publish_new([], []) == PublishResult([], [])
    with pytest.raises(ValueError, match="2 payloads but 1 keys"):
        store.publish_new(["a", "b"], [keyed(9)[1]])


def test_the_digest_ignores_field_order_and_utc_offsets() -> None:
    raw = raw_event(1, etype="search", payload={"query": "q", "category": "c"})
    moved = dict(reversed(list(raw.items())))
    moved["payload"] = {"category": "c", "query": "q"}
    moved["timestamp"] = "2024-05-01T10:01:00+02:00"
    validator = EventValidator(ValidationConfig(max_future_skew_s=None))
    a, b = (canonical_event(validator.validate(r)) for r in (raw, moved))
    assert a == b
    assert a[1].digest != canonical_event(validator.validate({**raw, "session_id": "s9"}))[1].digest


def test_concurrent_publishers_of_the_same_ids_publish_each_once(store: RealtimeStore) -> None:
    events = [keyed(n, user=f"u{n % 7}") for n in range(300)]
    results: list[PublishResult] = []

    def publisher(offset: int) -> None:
        rotated = events[offset:] + events[:offset]  # each thread starts elsewhere
        for start in range(0, 300, 50):
            results.append(publish_new(store, rotated[start : start + 50]))

    threads = [threading.Thread(target=publisher, args=(k * 25,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    published = sum(r.count(PUBLISHED) for r in results)
    assert published == 300 and sum(r.count(DUPLICATE) for r in results) == 1200 - 300
    got = store.read("c", 1000, 0, pending=False)
    assert sorted(json.loads(d.payload)["event_id"] for d in got) == sorted(
        f"e{n}" for n in range(300)
    )


def test_erasure_removes_the_users_id_registrations(store: RealtimeStore) -> None:
    victim, other = "victim-a1b2", "other-c3d4"
    publish_new(store, [keyed(1, user=victim), keyed(2, user=other), keyed(3, user=victim)])
    dump_before = _registrations(store)
    assert victim in dump_before and other in dump_before
    counts = store.erase_user(victim, "tomb")
    assert "event_ids" not in counts  # the categories stay those of the access export
    dump = _registrations(store)
    assert victim not in dump and other in dump
    # The other user's ids are still known; the victim's are free again (the
    # consumer's applied ids still keep an erased event from coming back).
    assert publish_new(store, [keyed(2, user=other)]).outcomes == [DUPLICATE]
    assert publish_new(store, [keyed(1, user="someone")]).outcomes == [PUBLISHED]


def _registrations(store: RealtimeStore) -> str:
    """Everything the store keeps about published event ids, as text."""
    if isinstance(store, SqliteStore):
        return repr(store._db.execute("SELECT * FROM event_ids").fetchall())
    assert isinstance(store, RedisStore)
    keys = sorted(store.r.scan_iter(match=f"{store.prefix}:e*", count=1000))
    return repr(keys) + repr(store.r.hgetall(f"{store.prefix}:eid"))


def test_ids_stay_right_after_the_newest_entries_were_erased(store: RealtimeStore) -> None:
    # SQLite numbers rows after the highest number ever given (AUTOINCREMENT),
    # not after the highest left: the ids returned must be the rows' ids.
    publish(store, 3, user="keep")
    publish(store, 2, user="gone")
    store.read("c", 10, 0, pending=False)
    store.erase_user("gone", "tomb")
    ids = publish(store, 2, user="next")
    ids += publish_new(store, [keyed(7, user="next")]).entry_ids
    assert [d.entry_id for d in store.read("c", 10, 0, pending=False)] == ids
