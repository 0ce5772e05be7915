"""Publishing events to the stream in pipelined batches.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> producer = EventProducer(SqliteStore())
    >>> producer.publish([{"event_id": "e1", "user_id": "u1", "session_id": "s1",
    ...                    "type": "search", "timestamp": 1714557600,
    ...                    "payload": {"query": "tents"}}])
    1
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from recsys.events.schema import Event
from recsys.events.store import RealtimeStore, stream_user_of


class EventProducer:
    """Serializes events and appends them to the store's stream.

    Events are not validated here: the consumer validates every entry and
    dead-letters what fails, so nothing a producer sends is lost. With a
    partitioned stream each event goes to its user's partition.

    Args:
        store: the stream's store.
        batch_size: events per pipelined round trip.
    """

    def __init__(self, store: RealtimeStore, batch_size: int = 500) -> None:
        self.store = store
        self.batch_size = batch_size

    def publish(self, events: Iterable[Event | Mapping[str, Any] | str]) -> int:
        """Publishes events (typed, raw mappings, or JSON text).

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
