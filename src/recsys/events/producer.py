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
from recsys.events.store import RealtimeStore


class EventProducer:
    """Serializes events and appends them to the store's stream.

    Events are not validated here: the consumer validates every entry and
    dead-letters what fails, so nothing a producer sends is lost.

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
        n = 0
        for e in events:
            if isinstance(e, Event):
                buf.append(e.to_json())
            elif isinstance(e, str):
                buf.append(e)
            else:
                buf.append(json.dumps(e, separators=(",", ":"), default=str))
            if len(buf) >= self.batch_size:
                n += len(self.store.publish(buf))
                buf = []
        if buf:
            n += len(self.store.publish(buf))
        return n
