"""Right of access, right to erasure (nothing remains), and the audit trail."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from rt_testkit import raw_event

from recsys.events.deadletter import DeadLetter
from recsys.events.producer import EventProducer
from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import RealtimeStore
from recsys.privacy.access import export_user
from recsys.privacy.audit import AuditIntegrityError, AuditLog, subject_pseudonym
from recsys.privacy.consent import ConsentRegistry, Purpose
from recsys.privacy.crypto import PiiCipher, generate_key
from recsys.privacy.erasure import erase_user, filter_erased, is_erased
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor
from recsys.profiles.service import ProfileService
from recsys.segments.engine import SegmentEngine
from recsys.segments.loader import load_segments_text

VICTIM = "victim-7f3a9c"
OTHER = "bystander-22b1"


def everything_in(store: RealtimeStore) -> str:
    """Every stored byte of the store as one text (for 'nothing remains' checks)."""
    parts: list[str] = []
    if isinstance(store, SqliteStore):
        db = store._db
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            parts += [repr(row) for row in db.execute(f"SELECT * FROM {table}")]
    else:
        assert isinstance(store, RedisStore)
        r = store.r
        for key in r.scan_iter(match=f"{store.prefix}:*", count=1000):
            parts.append(key)
            kind = r.type(key)
            if kind == "string":
                parts.append(r.get(key))
            elif kind == "hash":
                parts.append(repr(r.hgetall(key)))
            elif kind == "list":
                parts.append(repr(r.lrange(key, 0, -1)))
            elif kind == "set":
                parts.append(repr(r.smembers(key)))
            elif kind == "zset":
                parts.append(repr(r.zrange(key, 0, -1, withscores=True)))
            elif kind == "stream":
                parts.append(repr(r.xrange(key)))
                if key == store.stream_key:
                    parts.append(repr(r.xpending_range(key, store.group, "-", "+", 10_000)))
    return "\n".join(parts)


def populate(store: RealtimeStore, cipher: PiiCipher) -> None:
    reg = ConsentRegistry(store)
    for user in (VICTIM, OTHER):
        for purpose in Purpose:
            reg.record(user, purpose, True, source="banner", actor=user)
        ProfileService(store, cipher=cipher).set_attributes(
            user, {"age": 30, "email": f"{user}@example.org", "zip": "10115"}, actor=user
        )
    bad = raw_event(50, user=VICTIM)
    bad["payload"] = {"nope": 1}
    events = [raw_event(i, user=VICTIM if i % 2 else OTHER) for i in range(10)] + [bad]
    EventProducer(store).publish(events)
    engine = SegmentEngine(
        load_segments_text("segments: [{name: clickers, enter: 'count(click) >= 2'}]")
    )
    proc = EventProcessor(store, hooks=[engine])
    StreamConsumer(store, proc, ConsumerConfig(block_ms=0, sweep_interval_s=None)).run(
        until_idle=True
    )
    store.add_dead_letters([DeadLetter.from_raw({"user_id": VICTIM}, ["x: bad"], "http:web", 1)])


def test_export_then_erase_leaves_nothing(store: RealtimeStore) -> None:
    cipher = PiiCipher(generate_key())
    populate(store, cipher)
    assert VICTIM in everything_in(store)

    export = export_user(store, VICTIM, actor="dpo:kim", cipher=cipher)
    assert export["attributes"]["email"]["value"] == f"{VICTIM}@example.org"
    assert export["profile"]["n_events"] == 5 and len(export["events"]) == 5
    assert export["segments"]["current"] == ["clickers"]
    assert [c["action"] for c in export["segments"]["changes"]] == ["entered"]
    assert len(export["dead_letters"]) == 2
    assert len(export["consent"]["history"]) == 3
    assert set(export["consent"]["current"]) == {p.value for p in Purpose}

    counts = erase_user(store, VICTIM, actor="dpo:kim")
    assert counts["events"] == 5 and counts["dead_letters"] == 2 and counts["stream"] == 6
    # every store reports (and so audits) the same categories
    assert set(counts) == {
        "profile", "attributes", "consent", "consent_history", "events",
        "dead_letters", "memberships", "segment_log", "active", "stream",
    }  # fmt: skip
    assert counts["attributes"] == 3 and counts["consent"] == 3 and counts["active"] == 1
    dump = everything_in(store)
    assert VICTIM not in dump  # not in any table, key, value or stream entry
    assert f"{OTHER}@example.org" not in dump  # PII of others is still encrypted
    assert OTHER in dump and store.segment_members("clickers") == {OTHER}
    assert is_erased(store, VICTIM) and not is_erased(store, OTHER)

    after = export_user(store, VICTIM, actor="dpo:kim", cipher=cipher)
    assert after["profile"] is None and after["events"] == [] and after["attributes"] == {}
    assert after["dead_letters"] == [] and after["segments"]["changes"] == []

    trail = AuditLog(store)
    actions = [e.body["action"] for e in trail.entries(subject=VICTIM)]
    assert actions[-3:] == ["subject.export", "subject.erase", "subject.export"]
    assert trail.verify() == len(store.audit_records())


def test_training_data_drops_erased_users(store: RealtimeStore) -> None:
    frame = pd.DataFrame({"user_id": [VICTIM, OTHER, VICTIM], "item_id": [1, 2, 3]})
    assert filter_erased(frame, store)[1] == 0
    erase_user(store, VICTIM, actor="dpo:kim")
    kept, dropped = filter_erased(frame, store)
    assert dropped == 2 and kept["user_id"].tolist() == [OTHER]
    numeric = pd.DataFrame({"user_id": [7, 8]})
    erase_user(store, "7", actor="dpo:kim")
    assert filter_erased(numeric, store)[0]["user_id"].tolist() == [8]


def test_audit_trail_detects_tampering(store: RealtimeStore) -> None:
    log = AuditLog(store)
    for i in range(3):
        log.record("svc", "profile.read", f"u{i}")
    assert log.verify() == 3
    assert log.entries(subject="u1")[0].body["subject"] == subject_pseudonym("u1")
    with pytest.raises(ValueError, match="actor"):
        log.record("", "profile.read", "u1")
    if isinstance(store, SqliteStore):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store._db.execute("UPDATE audit SET body = '{}' WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store._db.execute("DELETE FROM audit WHERE seq = 2")
    else:
        assert isinstance(store, RedisStore)
        # Redis cannot forbid a raw write: the hash chain finds it instead.
        entries = store.r.xrange(f"{store.prefix}:audit")
        store.r.xdel(f"{store.prefix}:audit", entries[1][0])
        with pytest.raises(AuditIntegrityError, match="audit entry 3"):
            log.verify()
