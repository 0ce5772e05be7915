"""Publishing events to the stream in pipelined batches.

:meth:`EventProducer.publish` appends whatever it is given (the consumer
validates every entry and dead-letters what fails). :meth:`EventProducer.publish_unique`
is for validated events: the store registers each event id with its user and
content (:meth:`~recsys.events.store.RealtimeStore.publish_new`), so a resent
event is counted as a duplicate instead of being published again, and an id
reused for other content or another user comes back as a conflict.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> from recsys.events.validation import validate_event
    >>> producer = EventProducer(SqliteStore())
    >>> producer.publish([{"event_id": "e1", "user_id": "u1", "session_id": "s1",
    ...                    "type": "search", "timestamp": 1714557600,
    ...                    "payload": {"query": "tents"}}])
    1
    >>> e = validate_event({"event_id": "e2", "user_id": "u1", "session_id": "s1",
    ...                     "type": "search", "timestamp": 1714557600,
    ...                     "payload": {"query": "tents"}})
    >>> r = producer.publish_unique([e, e])
    >>> r.published, r.duplicates, r.conflicts
    (1, 1, [])
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recsys.events.schema import Event
from recsys.events.store import (
    CONFLICT_REASONS,
    DUPLICATE,
    PUBLISHED,
    RealtimeStore,
    canonical_event,
    stream_user_of,
)


@dataclass(frozen=True)
class Conflict:
    """An event not published because its id was already used.

    Attributes:
        index: the event's position in the input (0-based).
        event: the event.
        outcome: :data:`~recsys.events.store.OTHER_USER` or
            :data:`~recsys.events.store.OTHER_CONTENT`.
    """

    index: int
    event: Event
    outcome: str

    @property
    def reason(self) -> str:
        """The conflict in words (``event_id: already used by ...``)."""
        return CONFLICT_REASONS[self.outcome]


@dataclass
class UniquePublishReport:
    """What :meth:`EventProducer.publish_unique` did.

    Attributes:
        published: events appended to the stream.
        duplicates: exact resends of published events (not appended again).
        conflicts: events whose id was published with other content or for
            another user, in input order (not appended; the caller
            dead-letters them).
    """

    published: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)


class EventProducer:
    """Serializes events and appends them to the store's stream.

    With a partitioned stream each event goes to its user's partition.

    Args:
        store: the stream's store.
        batch_size: events per pipelined round trip.
    """

    def __init__(self, store: RealtimeStore, batch_size: int = 500) -> None:
        self.store = store
        self.batch_size = batch_size

    def publish(self, events: Iterable[Event | Mapping[str, Any] | str]) -> int:
        """Publishes events (typed, raw mappings, or JSON text) as they are.

        Events are not validated here: the consumer validates every entry and
        dead-letters what fails, so nothing a producer sends is lost.

        Returns:
            The number of entries appended.
        """
        buf: list[str] = []
        users: list[str | None] = []
        n = 0
        for e in events:
            # The user id routes the entry to its stream partition; text is
            # parsed by the store only when it has several partitions.
            if isinstance(e, Event):
                buf.append(e.to_json())
                users.append(e.user_id)
            elif isinstance(e, str):
                buf.append(e)
                users.append(stream_user_of(e) if self.store.partitions > 1 else None)
            else:
                buf.append(json.dumps(e, separators=(",", ":"), default=str))
                uid = e.get("user_id")
                ok = isinstance(uid, str | int) and not isinstance(uid, bool)
                users.append(str(uid) if ok else None)
            if len(buf) >= self.batch_size:
                n += len(self.store.publish(buf, users=users))
                buf, users = [], []
        if buf:
            n += len(self.store.publish(buf, users=users))
        return n

    def publish_unique(self, events: Iterable[Event]) -> UniquePublishReport:
        """Publishes validated events once per event id.

        Each batch is one :meth:`~recsys.events.store.RealtimeStore.publish_new`
        call; ids are compared across batches and calls (the store keeps the
        registrations), and within the input (a later event with an earlier
        one's id is a duplicate or a conflict).

        Args:
            events: validated events, in publish order.

        Returns:
            Counts of published events and duplicates, and the conflicts.
        """
        report = UniquePublishReport()
        batch: list[Event] = []
        start = 0

        def flush() -> None:
            texts, keys = zip(*[canonical_event(e) for e in batch], strict=True)
            result = self.store.publish_new(texts, keys)
            for j, outcome in enumerate(result.outcomes):
                if outcome == PUBLISHED:
                    report.published += 1
                elif outcome == DUPLICATE:
                    report.duplicates += 1
                else:
                    report.conflicts.append(Conflict(start + j, batch[j], outcome))

        for e in events:
            batch.append(e)
            if len(batch) >= self.batch_size:
                flush()
                start += len(batch)
                batch = []
        if batch:
            flush()
        return report
