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

Publishers that validated their events (the HTTP collector, ``recsys realtime
publish``) use :meth:`RealtimeStore.publish_new` instead of ``publish``: the
store remembers each event id's user and content digest (:func:`canonical_event`)
in the same atomic step that appends the entry, so an exact resend is reported
as a duplicate and not published again, and an id reused for other content or
another user is reported as a conflict instead of being published and then
dropped by the consumer. Outcomes per event: :data:`PUBLISHED`,
:data:`DUPLICATE`, :data:`OTHER_USER`, :data:`OTHER_CONTENT`.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> from recsys.events.validation import validate_event
    >>> e = validate_event({"event_id": "e1", "user_id": "u1", "session_id": "s1",
    ...                     "type": "search", "timestamp": 1714557600,
    ...                     "payload": {"query": "tents"}})
    >>> text, key = canonical_event(e)
    >>> SqliteStore().publish_new([text, text], [key, key]).outcomes
    ['published', 'duplicate']
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from recsys.events.deadletter import DeadLetter
from recsys.events.schema import Event


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


#: :meth:`RealtimeStore.publish_new` outcomes: appended to the stream now ...
PUBLISHED = "published"
#: ... an exact resend (same id, user and content): not appended again ...
DUPLICATE = "duplicate"
#: ... a conflict: the id was published for another user ...
OTHER_USER = "other_user"
#: ... a conflict: the id was published for the same user with other content.
OTHER_CONTENT = "other_content"

#: What a client is told about each kind of conflict.
CONFLICT_REASONS: dict[str, str] = {
    OTHER_USER: "event_id: already used by an event of another user",
    OTHER_CONTENT: "event_id: already used by an event with different content",
}


class EventKey(NamedTuple):
    """What a store remembers of a published event id.

    Attributes:
        event_id: the event's id.
        user_id: its user.
        digest: a digest of the event's canonical content (:func:`event_key`).
    """

    event_id: str
    user_id: str
    digest: str


def canonical_event(event: Event) -> tuple[str, EventKey]:
    """The event as the text to publish, and its key.

    The text is the canonical JSON of the validated event
    (:func:`canonical_json` of :meth:`Event.to_dict`: sorted keys, compact,
    times in UTC), and the key's digest is 128 bits of BLAKE2b of that text.
    So the same event sent again, with its fields in another order or its
    time in another UTC offset, has the same digest; accidental collisions are
    out of reach, and digests stay short in the store. One serialization
    gives both (the collector's per-event cost).

    Example:
        >>> from recsys.events.validation import validate_event
        >>> raw = {"event_id": "e1", "user_id": "u1", "session_id": "s1", "type": "search",
        ...        "timestamp": "2024-05-01T12:00:00+02:00", "payload": {"query": "q"}}
        >>> text, key = canonical_event(validate_event(raw))
        >>> text[:59]
        '{"event_id":"e1","payload":{"query":"q"},"session_id":"s1",'
        >>> key == canonical_event(validate_event({**raw, "timestamp": "2024-05-01T10:00:00Z"}))[1]
        True
    """
    text = canonical_json(event.to_dict())
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
    return text, EventKey(event.event_id, event.user_id, digest)


def event_key(event: Event) -> EventKey:
    """The event's id, user and content digest (see :func:`canonical_event`).

    Example:
        >>> from recsys.events.validation import validate_event
        >>> raw = {"event_id": "e1", "user_id": "u1", "session_id": "s1", "type": "search",
        ...        "timestamp": 1714557600, "payload": {"query": "q"}}
        >>> a = event_key(validate_event(raw))
        >>> b = event_key(validate_event({**raw, "session_id": "s2"}))
        >>> a.event_id == b.event_id, a.digest == b.digest
        (True, False)
    """
    return canonical_event(event)[1]


def classify_keys(keys: Sequence[EventKey], known: dict[str, tuple[str, str]]) -> list[str]:
    """The outcome of publishing events in order, given the registrations
    ``known`` (event id -> (user id, digest)).

    The first event of an unknown id is :data:`PUBLISHED` and registered in
    ``known`` (so a later event of the batch with that id is a duplicate or a
    conflict); the others compare with the registration.

    Args:
        keys: each event's key, in publish order.
        known: registrations found in the store; updated in place.

    Returns:
        One outcome per key.
    """
    out: list[str] = []
    for key in keys:
        seen = known.get(key.event_id)
        if seen is None:
            known[key.event_id] = (key.user_id, key.digest)
            out.append(PUBLISHED)
        elif seen[0] != key.user_id:
            out.append(OTHER_USER)
        elif seen[1] != key.digest:
            out.append(OTHER_CONTENT)
        else:
            out.append(DUPLICATE)
    return out


@dataclass(frozen=True)
class PublishResult:
    """What :meth:`RealtimeStore.publish_new` did.

    Attributes:
        outcomes: per payload, in order: :data:`PUBLISHED`, :data:`DUPLICATE`,
            :data:`OTHER_USER` or :data:`OTHER_CONTENT`.
        entry_ids: the stream entry ids of the published payloads, in order.
    """

    outcomes: list[str]
    entry_ids: list[str]

    def count(self, outcome: str) -> int:
        """How many payloads had ``outcome``."""
        return sum(1 for o in self.outcomes if o == outcome)


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

    def publish_new(
        self,
        payloads: Sequence[str],
        keys: Sequence[EventKey],
        published_us: int | None = None,
    ) -> PublishResult:
        """Appends the payloads whose event id is new and registers each such
        id's user and digest, in one atomic step (see the module docstring).

        Args:
            payloads: validated events (JSON text).
            keys: each payload's :func:`event_key` (its user routes it).
            published_us: publish time (default: now).

        Returns:
            Each payload's outcome and the published entries' ids. Within the
            call, a later event with the id of an earlier one compares with
            it (a duplicate or a conflict). Registrations are kept until the
            user is erased.
        """
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
        dead letters, memberships, change log, the event id registrations of
        :meth:`publish_new`) and adds ``tombstone`` to the erasure ledger;
        returns what was deleted per store (registrations are not counted:
        the categories are those of the access export)."""
        ...

    def erased(self) -> set[str]:
        """Tombstones of erased users (see :mod:`recsys.privacy.erasure`)."""
        ...

    def close(self) -> None: ...
