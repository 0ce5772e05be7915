"""The storage contract shared by the embedded (SQLite) and Redis back ends.

One store holds everything the real-time side keeps: the event stream with
its consumer group, the per-user record (profile document, static attributes,
consent) under a version number, stored events, dead letters, segment
memberships and their change log, the audit trail and the erasure ledger.

The consumer's unit of work is :class:`CommitBatch`: profile writes guarded by
the versions they were computed from (compare-and-set), the events and dead
letters to store, the event ids now applied (idempotency keys), membership
changes, and the stream entries to acknowledge. :meth:`RealtimeStore.commit`
applies all of it atomically or none of it, so an entry is acknowledged only
once its effects are durable, and a replayed entry finds its event id applied.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from recsys.events.deadletter import DeadLetter


class Delivery(NamedTuple):
    """One stream entry handed to a consumer (a tuple: consumers build
    thousands per second).

    Attributes:
        entry_id: the store's id for the entry (acknowledge with it). With a
            partitioned Redis stream it is ``<partition>:<stream id>``.
        payload: the event as published (JSON text).
        published_us: when the producer handed it to the stream (epoch us);
            0 with an empty payload marks an entry deleted after delivery
            (erasure), which is only acknowledged.
        applied: True when the store already knew, while reading, that the
            entry's event id was committed (None: not checked).
        user_id: the user the producer routed the entry by, when the store
            knows it (None: unknown).
        user_version: the version of that user's record when the entry was
            published or read (0: no record), or None when unknown. A hint
            only: the commit still checks every version, so a stale hint
            costs a recomputation, never a wrong write.
    """

    entry_id: str
    payload: str
    published_us: int
    applied: bool | None = None
    user_id: str | None = None
    user_version: int | None = None


#: What :meth:`RealtimeStore.begin_commit_and_read` returns: call it once to
#: wait for ``(conflicts, entries read)``.
CommitReply = Callable[[], tuple[list[str], list[Delivery]]]


def stream_user_of(payload: str) -> str | None:
    """The user id of a published payload as validation will read it
    (integers become their decimal string), or None when there is none."""
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    uid = raw.get("user_id") if isinstance(raw, dict) else None
    return str(uid) if isinstance(uid, str | int) and not isinstance(uid, bool) else None


def partition_of(user_id: str | None, partitions: int) -> int:
    """The stream partition of a user: every event of a user goes to one
    partition, so one consumer applies them in order.

    A stable hash (CRC-32), not Python's per-process ``hash``: producers and
    consumers in different processes must agree. Entries without a readable
    user id go to partition 0 (they become dead letters there).

    Example:
        >>> partition_of("u1", 1), partition_of("u1", 4) == partition_of("u1", 4)
        (0, True)
    """
    if partitions <= 1 or user_id is None:
        return 0
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % partitions


@dataclass
class UserRecord:
    """Everything stored under one user id, as read at ``version``.

    Attributes:
        user_id: the user.
        version: bumped by every write to the record; 0 when there is none.
        profile: the profile document (JSON text), or None.
        attributes: static attribute name -> stored text (JSON, or a PII token).
        consent: purpose -> consent record (JSON text).
    """

    user_id: str
    version: int = 0
    profile: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    consent: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProfileWrite:
    """A new profile document, valid only if the record is still at ``expected_version``."""

    user_id: str
    expected_version: int
    doc: str


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A user entered or left a segment.

    Attributes:
        user_id: the user.
        segment: the segment name.
        entered: True when the user entered, False when they left.
        at_us: evaluation time (event time, or the sweep's clock).
        trigger: the event id that caused it, or ``"sweep"``.
    """

    user_id: str
    segment: str
    entered: bool
    at_us: int
    trigger: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "segment": self.segment,
            "action": "entered" if self.entered else "left",
            "at_us": self.at_us,
            "trigger": self.trigger,
        }


@dataclass
class CommitBatch:
    """One atomic unit of work; see the module docstring.

    Attributes:
        profiles: profile writes, each guarded by its expected version.
        events: ``(user_id, event JSON)`` to keep in the event store.
        applied_ids: event ids whose effects this batch commits.
        dead_letters: refused events.
        memberships: segment entries and exits.
        last_seen: user -> latest event time, for the activity index.
        acks: stream entry ids to acknowledge.
    """

    profiles: list[ProfileWrite] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    applied_ids: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    memberships: list[MembershipChange] = field(default_factory=list)
    last_seen: dict[str, int] = field(default_factory=dict)
    acks: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.profiles
            or self.events
            or self.applied_ids
            or self.dead_letters
            or self.memberships
            or self.acks
        )


@dataclass(frozen=True)
class AuditRecord:
    """One audit trail entry as stored.

    Attributes:
        seq: position in the trail (1-based).
        body: the entry (``actor``, ``action``, ``subject``, ``fields``, ``at_us`` ...).
        prev_hash: hash of the previous entry ("" for the first).
        hash: sha256 of ``prev_hash`` + canonical body JSON.
    """

    seq: int
    body: dict[str, Any]
    prev_hash: str
    hash: str


def canonical_json(value: Any) -> str:
    """Deterministic compact JSON (sorted keys), used for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@runtime_checkable
class RealtimeStore(Protocol):
    """What the events, profiles, segments and privacy code need from storage."""

    #: Number of stream partitions (users are spread by :func:`partition_of`).
    partitions: int

    # -- stream ---------------------------------------------------------------
    def publish(
        self,
        payloads: Sequence[str],
        published_us: int | None = None,
        users: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Appends events (JSON text) to the stream; returns their entry ids.
        ``users`` (the user id of each payload) routes them to partitions
        without parsing; None reads the ids from the payloads when needed."""
        ...

    def read(
        self,
        consumer: str,
        count: int,
        block_ms: int,
        pending: bool,
        partitions: Sequence[int] | None = None,
    ) -> list[Delivery]:
        """Reads for ``consumer``: its own unacknowledged entries when
        ``pending``, else new entries (waiting up to ``block_ms``), from the
        given partitions (None: all)."""
        ...

    def claim_stale(
        self,
        consumer: str,
        min_idle_ms: int,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> list[Delivery]:
        """Takes over entries other consumers read but did not acknowledge in
        time (in the given partitions; None: all)."""
        ...

    def stream_stats(self) -> dict[str, int]:
        """``length`` (entries kept) and ``pending`` (read, not acknowledged)."""
        ...

    # -- per-user records -------------------------------------------------------
    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        """Records of ``user_ids`` (version 0 and empty for unknown users)."""
        ...

    def applied(self, event_ids: Sequence[str]) -> set[str]:
        """The subset of ``event_ids`` already committed."""
        ...

    def commit(self, batch: CommitBatch) -> list[str]:
        """Applies ``batch`` atomically. Returns the user ids whose version
        moved (or event ids already applied, prefixed ``dup:``); then nothing
        was written or acknowledged."""
        ...

    def commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> tuple[list[str], list[Delivery]]:
        """:meth:`commit`, then, only when it committed, :meth:`read` of new
        entries without waiting (what a consumer does next), in one round
        trip where the store can. Returns the conflicts (then nothing was
        written, acknowledged or read) and the entries read."""
        ...

    def begin_commit_and_read(
        self,
        batch: CommitBatch,
        consumer: str,
        count: int,
        partitions: Sequence[int] | None = None,
    ) -> CommitReply:
        """Starts :meth:`commit_and_read` and returns a function that waits
        for its result (call it once). Until then the caller may compute,
        which overlaps its work with the store's; a store that cannot overlap
        runs the call at once."""
        ...

    def write_attributes(self, user_id: str, values: Mapping[str, str | None]) -> int:
        """Sets (None: deletes) stored attribute texts; returns the new version."""
        ...

    def write_consent(self, user_id: str, purpose: str, record: str) -> int:
        """Sets the current consent record of a purpose and appends it to the
        history; returns the new version."""
        ...

    def consent_history(self, user_id: str) -> list[str]:
        """Every consent record of the user, oldest first."""
        ...

    def user_events(self, user_id: str) -> list[str]:
        """Stored events (JSON text) of the user, in commit order."""
        ...

    def active_users(self, since_us: int) -> list[str]:
        """Users with an event at or after ``since_us``."""
        ...

    # -- dead letters -------------------------------------------------------------
    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Stores refused events outside a consumer batch (collector, batch loads)."""
        ...

    def dead_letters(self, user_id: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        """Stored dead letters, oldest first (only the user's when given)."""
        ...

    def dead_letter_count(self) -> int: ...

    # -- segments -----------------------------------------------------------------
    def segment_members(self, segment: str) -> set[str]: ...

    def segment_size(self, segment: str) -> int: ...

    def segment_log(
        self,
        segment: str | None = None,
        user_id: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
    ) -> list[MembershipChange]:
        """Membership changes, in the order they were committed."""
        ...

    # -- privacy --------------------------------------------------------------------
    def append_audit(self, body: dict[str, Any]) -> AuditRecord:
        """Appends one entry to the hash-chained, append-only audit trail."""
        ...

    def audit_records(self) -> list[AuditRecord]: ...

    def erase_user(self, user_id: str, tombstone: str) -> dict[str, int]:
        """Deletes every trace of the user (record, events, stream entries,
        dead letters, memberships, change log) and adds ``tombstone`` to the
        erasure ledger; returns what was deleted per store."""
        ...

    def erased(self) -> set[str]:
        """Tombstones of erased users (see :mod:`recsys.privacy.erasure`)."""
        ...

    def close(self) -> None: ...
