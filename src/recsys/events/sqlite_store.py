"""Embedded back end: the whole real-time store in one SQLite file.

It mirrors Redis Streams consumer-group semantics with three tables (the
stream, a cursor per group, and the pending entries list), so the consumer,
the collector and the privacy operations run unchanged with no server. Every
:meth:`SqliteStore.commit` is one ``BEGIN IMMEDIATE`` transaction: version
checks, writes and acknowledgements land together or not at all; so is
:meth:`SqliteStore.publish_new` (id registrations, table ``event_ids``, and
the stream entries).

Example:
    >>> store = SqliteStore(":memory:")
    >>> store.publish(['{"event_id": "e1"}'])
    ['1']
    >>> [d.entry_id for d in store.read("c1", 10, 0, pending=False)]
    ['1']
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recsys.events.deadletter import DeadLetter
from recsys.events.store import (
    PUBLISHED,
    AuditRecord,
    CommitBatch,
    CommitReply,
    Delivery,
    EventKey,
    MembershipChange,
    PublishResult,
    UserRecord,
    canonical_json,
    classify_keys,
    stream_user_of,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stream (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL,
    published_us INTEGER NOT NULL, user_id TEXT);
CREATE INDEX IF NOT EXISTS stream_user ON stream(user_id);
CREATE TABLE IF NOT EXISTS stream_cursor (grp TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stream_pending (
    seq INTEGER NOT NULL, grp TEXT NOT NULL, consumer TEXT NOT NULL,
    delivered_us INTEGER NOT NULL, deliveries INTEGER NOT NULL, PRIMARY KEY (grp, seq));
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, version INTEGER NOT NULL, profile TEXT);
CREATE TABLE IF NOT EXISTS attributes (
    user_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (user_id, name));
CREATE TABLE IF NOT EXISTS consent (
    user_id TEXT NOT NULL, purpose TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (user_id, purpose));
CREATE TABLE IF NOT EXISTS consent_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS consent_history_user ON consent_history(user_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id);
CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
-- No index on user_id: it would double the cost of publishing, for erasure
-- alone, which scans (as the Redis store's erasure scans its stream).
CREATE TABLE IF NOT EXISTS event_ids (
    event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, digest TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_user ON dead_letters(user_id);
CREATE TABLE IF NOT EXISTS memberships (
    segment TEXT NOT NULL, user_id TEXT NOT NULL, since_us INTEGER NOT NULL,
    PRIMARY KEY (segment, user_id));
CREATE INDEX IF NOT EXISTS memberships_user ON memberships(user_id);
CREATE TABLE IF NOT EXISTS segment_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, segment TEXT NOT NULL,
    entered INTEGER NOT NULL, at_us INTEGER NOT NULL, trigger TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS segment_log_segment ON segment_log(segment, at_us);
CREATE INDEX IF NOT EXISTS segment_log_user ON segment_log(user_id);
CREATE TABLE IF NOT EXISTS active (user_id TEXT PRIMARY KEY, last_seen_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS active_seen ON active(last_seen_us);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS erased (tombstone TEXT PRIMARY KEY, at_us INTEGER NOT NULL);
"""


def _now_us() -> int:
    return time.time_ns() // 1000


class SqliteStore:
    """:class:`~recsys.events.store.RealtimeStore` in one SQLite database.

    Args:
        path: database file, or ``":memory:"``.
        group: consumer group name of the stream.

    Thread-safe: one connection guarded by a lock (the HTTP collector writes
    from several threads). The stream has one partition.
    """

    partitions = 1

    def __init__(self, path: str | Path = ":memory:", group: str = "profiles") -> None:
        self.path = str(path)
        self.group = group
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO stream_cursor (grp, last_seq) VALUES (?, 0)", (group,)
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- stream -------------------------------------------------------------------
    def publish(
        self,
        payloads: Sequence[str],
        published_us: int | None = None,
        users: Sequence[str | None] | None = None,
    ) -> list[str]:
        # One partition: ``users`` is not needed; the user column (for erasure)
        # always comes from the payload itself.
        ts = published_us if published_us is not None else _now_us()
        rows = [(p, ts, stream_user_of(p)) for p in payloads]
        with self._tx() as db:
            first = _last_seq(db)
            db.executemany(
                "INSERT INTO stream (payload, published_us, user_id) VALUES (?, ?, ?)", rows
            )
        return [str(first + 1 + j) for j in range(len(rows))]

    def publish_new(
        self,
        payloads: Sequence[str],
        keys: Sequence[EventKey],
        published_us: int | None = None,
    ) -> PublishResult:
        if len(keys) != len(payloads):
            raise ValueError(f"{len(payloads)} payloads but {len(keys)} keys")
        ts = published_us if published_us is not None else _now_us()
        with self._tx() as db:
            known: dict[str, tuple[str, str]] = {}
            for chunk in _chunks(list({k.event_id: None for k in keys}), 500):
                marks = ",".join("?" * len(chunk))
                for eid, uid, digest in db.execute(
                    f"SELECT event_id, user_id, digest FROM event_ids WHERE event_id IN ({marks})",
                    chunk,
                ):
                    known[eid] = (uid, digest)
            outcomes = classify_keys(keys, known)
            new = [i for i, o in enumerate(outcomes) if o == PUBLISHED]
            db.executemany(
                "INSERT INTO event_ids VALUES (?, ?, ?)",
                [(keys[i].event_id, keys[i].user_id, keys[i].digest) for i in new],
            )
            # The key's user is the event's: no need to parse the payload for it.
            first = _last_seq(db)
            db.executemany(
                "INSERT INTO stream (payload, published_us, user_id) VALUES (?, ?, ?)",
                [(payloads[i], ts, keys[i].user_id) for i in new],
            )
        return PublishResult(outcomes, [str(first + 1 + j) for j in range(len(new))])

    def read(
        self,
        consumer: str,
        count: int,
        block_ms: int,
        pending: bool,
        partitions: Sequence[int] | None = None,
    ) -> list[Delivery]:
        now = _now_us()
        if pending:
            with self._tx() as db:
                rows = db.execute(
                    "SELECT s.seq, s.payload, s.published_us FROM stream_pending p "
                    "JOIN stream s ON s.seq = p.seq WHERE p.grp = ? AND p.consumer = ? "
                    "ORDER BY p.seq LIMIT ?",
                    (self.group, consumer, count),
                ).fetchall()
                db.executemany(
                    "UPDATE stream_pending SET delivered_us = ?, deliveries = deliveries + 1 "
                    "WHERE grp = ? AND seq = ?",
                    [(now, self.group, r[0]) for r in rows],
                )
            return [Delivery(str(r[0]), r[1], r[2]) for r in rows]
        deadline = time.monotonic() + block_ms / 1000
        while True:
            with self._tx() as db:
                last = db.execute(
                    "SELECT last_seq FROM stream_cursor WHERE grp = ?", (self.group,)
                ).fetchone()[0]
                rows = db.execute(
                    "SELECT seq, payload, published_us FROM stream WHERE seq > ? ORDER BY seq "
                    "LIMIT ?",
                    (last, count),
                ).fetchall()
                if rows:
                    db.executemany(
                        "INSERT OR REPLACE INTO stream_pending VALUES (?, ?, ?, ?, 1)",
                        [(r[0], self.group, consumer, now) for r in rows],
                    )
                    db.execute(
                        "UPDATE stream_cursor SET last_seq = ? WHERE grp = ?",
                        (rows[-1][0], self.group),
                    )
            if rows or time.monotonic() >= deadline:
                return [Delivery(str(r[0]), r[1], r[2]) for r in rows]
            time.sleep(0.005)

    def claim_stale(
        self,
        consumer: str,
        min_idle_ms: int,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> list[Delivery]:
        now = _now_us()
        with self._tx() as db:
            rows = db.execute(
                "SELECT s.seq, s.payload, s.published_us FROM stream_pending p "
                "JOIN stream s ON s.seq = p.seq WHERE p.grp = ? AND p.consumer != ? "
                "AND p.delivered_us <= ? ORDER BY p.seq LIMIT ?",
                (self.group, consumer, now - min_idle_ms * 1000, count),
            ).fetchall()
            db.executemany(
                "UPDATE stream_pending SET consumer = ?, delivered_us = ?, "
                "deliveries = deliveries + 1 WHERE grp = ? AND seq = ?",
                [(consumer, now, self.group, r[0]) for r in rows],
            )
        return [Delivery(str(r[0]), r[1], r[2]) for r in rows]

    def stream_stats(self) -> dict[str, int]:
        length = self._q("SELECT COUNT(*) FROM stream")[0][0]
        pending = self._q("SELECT COUNT(*) FROM stream_pending WHERE grp = ?", (self.group,))[0][0]
        return {"length": int(length), "pending": int(pending)}

    # -- per-user records -----------------------------------------------------------
    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        out = {u: UserRecord(u) for u in user_ids}
        if not out:
            return out
        with self._lock:
            for chunk in _chunks(list(out), 500):
                marks = ",".join("?" * len(chunk))
                for uid, version, profile in self._db.execute(
                    f"SELECT user_id, version, profile FROM users WHERE user_id IN ({marks})", chunk
                ):
                    rec = out[uid]
                    rec.version, rec.profile = int(version), profile
                for uid, name, value in self._db.execute(
                    f"SELECT user_id, name, value FROM attributes WHERE user_id IN ({marks})", chunk
                ):
                    out[uid].attributes[name] = value
                for uid, purpose, record in self._db.execute(
                    f"SELECT user_id, purpose, record FROM consent WHERE user_id IN ({marks})",
                    chunk,
                ):
                    out[uid].consent[purpose] = record
        return out

    def applied(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._lock:
            for chunk in _chunks(list(event_ids), 500):
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in self._db.execute(
                        f"SELECT event_id FROM applied WHERE event_id IN ({marks})", chunk
                    )
                )
        return found

    def commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> tuple[list[str], list[Delivery]]:
        # Embedded: no round trip to save, so the two calls run one after the other.
        conflicts = self.commit(batch)
        if conflicts:
            return conflicts, []
        return [], self.read(consumer, count, 0, False, partitions)

    def begin_commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> CommitReply:
        # In-process: nothing to overlap with.
        result = self.commit_and_read(batch, consumer, count, partitions)
        return lambda: result

    def commit(self, batch: CommitBatch) -> list[str]:
        with self._tx() as db:
            conflicts = []
            for w in batch.profiles:
                row = db.execute(
                    "SELECT version FROM users WHERE user_id = ?", (w.user_id,)
                ).fetchone()
                if (row[0] if row else 0) != w.expected_version:
                    conflicts.append(w.user_id)
            dups = []
            for chunk in _chunks(batch.applied_ids, 500):
                marks = ",".join("?" * len(chunk))
                dups += [
                    "dup:" + r[0]
                    for r in db.execute(
                        f"SELECT event_id FROM applied WHERE event_id IN ({marks})", chunk
                    )
                ]
            if conflicts or dups:
                # Nothing written: leave the transaction empty (it commits as a no-op).
                return conflicts + dups
            db.executemany(
                "INSERT INTO users (user_id, version, profile) VALUES (?, 1, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET version = version + 1, "
                "profile = excluded.profile",
                [(w.user_id, w.doc) for w in batch.profiles],
            )
            db.executemany("INSERT INTO events (user_id, body) VALUES (?, ?)", batch.events)
            db.executemany(
                "INSERT INTO applied (event_id) VALUES (?)", [(e,) for e in batch.applied_ids]
            )
            db.executemany(
                "INSERT INTO dead_letters (user_id, body) VALUES (?, ?)",
                [(d.user_id, d.to_json()) for d in batch.dead_letters],
            )
            for m in batch.memberships:
                if m.entered:
                    db.execute(
                        "INSERT OR REPLACE INTO memberships VALUES (?, ?, ?)",
                        (m.segment, m.user_id, m.at_us),
                    )
                else:
                    db.execute(
                        "DELETE FROM memberships WHERE segment = ? AND user_id = ?",
                        (m.segment, m.user_id),
                    )
                db.execute(
                    "INSERT INTO segment_log (user_id, segment, entered, at_us, trigger) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (m.user_id, m.segment, int(m.entered), m.at_us, m.trigger),
                )
            db.executemany(
                "INSERT INTO active VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET "
                "last_seen_us = MAX(last_seen_us, excluded.last_seen_us)",
                list(batch.last_seen.items()),
            )
            db.executemany(
                "DELETE FROM stream_pending WHERE grp = ? AND seq = ?",
                [(self.group, int(a)) for a in batch.acks],
            )
        return []

    def _bump(self, db: sqlite3.Connection, user_id: str) -> int:
        db.execute(
            "INSERT INTO users (user_id, version, profile) VALUES (?, 1, NULL) "
            "ON CONFLICT(user_id) DO UPDATE SET version = version + 1",
            (user_id,),
        )
        return int(
            db.execute("SELECT version FROM users WHERE user_id = ?", (user_id,)).fetchone()[0]
        )

    def write_attributes(self, user_id: str, values: Mapping[str, str | None]) -> int:
        with self._tx() as db:
            for name, value in values.items():
                if value is None:
                    db.execute(
                        "DELETE FROM attributes WHERE user_id = ? AND name = ?", (user_id, name)
                    )
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO attributes VALUES (?, ?, ?)", (user_id, name, value)
                    )
            return self._bump(db, user_id)

    def write_consent(self, user_id: str, purpose: str, record: str) -> int:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO consent VALUES (?, ?, ?)", (user_id, purpose, record)
            )
            db.execute(
                "INSERT INTO consent_history (user_id, record) VALUES (?, ?)", (user_id, record)
            )
            return self._bump(db, user_id)

    def consent_history(self, user_id: str) -> list[str]:
        rows = self._q(
            "SELECT record FROM consent_history WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return [r[0] for r in rows]

    def user_events(self, user_id: str) -> list[str]:
        return [
            r[0]
            for r in self._q("SELECT body FROM events WHERE user_id = ? ORDER BY id", (user_id,))
        ]

    def active_users(self, since_us: int) -> list[str]:
        rows = self._q(
            "SELECT user_id FROM active WHERE last_seen_us >= ? ORDER BY user_id", (since_us,)
        )
        return [r[0] for r in rows]

    # -- dead letters -------------------------------------------------------------------
    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO dead_letters (user_id, body) VALUES (?, ?)",
                [(d.user_id, d.to_json()) for d in letters],
            )

    def dead_letters(self, user_id: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        if user_id is None:
            rows = self._q("SELECT body FROM dead_letters ORDER BY id LIMIT ?", (limit,))
        else:
            rows = self._q(
                "SELECT body FROM dead_letters WHERE user_id = ? ORDER BY id LIMIT ?",
                (user_id, limit),
            )
        return [DeadLetter.from_json(r[0]) for r in rows]

    def dead_letter_count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM dead_letters")[0][0])

    # -- segments ------------------------------------------------------------------------
    def segment_members(self, segment: str) -> set[str]:
        return {
            r[0] for r in self._q("SELECT user_id FROM memberships WHERE segment = ?", (segment,))
        }

    def segment_size(self, segment: str) -> int:
        return int(self._q("SELECT COUNT(*) FROM memberships WHERE segment = ?", (segment,))[0][0])

    def segment_log(
        self,
        segment: str | None = None,
        user_id: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
    ) -> list[MembershipChange]:
        where, args = [], []
        for cond, arg in (
            ("segment = ?", segment),
            ("user_id = ?", user_id),
            ("at_us >= ?", since_us),
            ("at_us < ?", until_us),
        ):
            if arg is not None:
                where.append(cond)
                args.append(arg)
        sql = "SELECT user_id, segment, entered, at_us, trigger FROM segment_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._q(sql + " ORDER BY id", args)
        return [MembershipChange(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

    # -- privacy ---------------------------------------------------------------------------
    def append_audit(self, body: dict[str, Any]) -> AuditRecord:
        text = canonical_json(body)
        with self._tx() as db:
            row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            prev = row[1] if row else ""
            digest = hashlib.sha256((prev + text).encode()).hexdigest()
            cur = db.execute(
                "INSERT INTO audit (body, prev_hash, hash) VALUES (?, ?, ?)", (text, prev, digest)
            )
            seq = int(cur.lastrowid or 0)
        return AuditRecord(seq, body, prev, digest)

    def audit_records(self) -> list[AuditRecord]:
        rows = self._q("SELECT seq, body, prev_hash, hash FROM audit ORDER BY seq")
        return [AuditRecord(int(r[0]), json.loads(r[1]), r[2], r[3]) for r in rows]

    def erase_user(self, user_id: str, tombstone: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._tx() as db:
            for name, sql in (
                ("profile", "DELETE FROM users WHERE user_id = ?"),
                ("attributes", "DELETE FROM attributes WHERE user_id = ?"),
                ("consent", "DELETE FROM consent WHERE user_id = ?"),
                ("consent_history", "DELETE FROM consent_history WHERE user_id = ?"),
                ("events", "DELETE FROM events WHERE user_id = ?"),
                ("dead_letters", "DELETE FROM dead_letters WHERE user_id = ?"),
                ("memberships", "DELETE FROM memberships WHERE user_id = ?"),
                ("segment_log", "DELETE FROM segment_log WHERE user_id = ?"),
                ("active", "DELETE FROM active WHERE user_id = ?"),
                ("event_ids", "DELETE FROM event_ids WHERE user_id = ?"),
            ):
                counts[name] = db.execute(sql, (user_id,)).rowcount
            seqs = [
                r[0] for r in db.execute("SELECT seq FROM stream WHERE user_id = ?", (user_id,))
            ]
            db.executemany("DELETE FROM stream_pending WHERE seq = ?", [(s,) for s in seqs])
            db.executemany("DELETE FROM stream WHERE seq = ?", [(s,) for s in seqs])
            counts["stream"] = len(seqs)
            # Not a category of its own: every store reports the same ones.
            counts.pop("event_ids")
            db.execute("INSERT OR IGNORE INTO erased VALUES (?, ?)", (tombstone, _now_us()))
        return counts

    def erased(self) -> set[str]:
        return {r[0] for r in self._q("SELECT tombstone FROM erased")}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _last_seq(db: sqlite3.Connection) -> int:
    """The stream's last sequence number ever given. AUTOINCREMENT numbers the
    rows of one transaction from it + 1 (one writer at a time: the store's
    lock and BEGIN IMMEDIATE), also after the newest rows were deleted
    (erasure), when ``MAX(seq)`` would be behind."""
    row = db.execute(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'stream'), 0), "
        "COALESCE((SELECT MAX(seq) FROM stream), 0))"
    ).fetchone()
    return int(row[0])


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
