"""Events: the typed schema, validation, dead letters, the stream and its stores.

Public API:

* :class:`~recsys.events.schema.Event`, :class:`~recsys.events.schema.EventType`,
  :class:`~recsys.events.schema.EventContext` - the typed event;
* :class:`~recsys.events.validation.EventValidator`,
  :class:`~recsys.events.validation.EventValidationError` - raw input checks;
* :class:`~recsys.events.deadletter.DeadLetter` - refused events with reasons;
* :class:`~recsys.events.store.RealtimeStore` and its back ends
  :class:`~recsys.events.sqlite_store.SqliteStore` (embedded default) and
  :class:`~recsys.events.redis_store.RedisStore` (Redis Streams);
  :func:`~recsys.events.backend.open_store` picks one;
  :func:`~recsys.events.store.partition_of` maps users to stream partitions;
* :class:`~recsys.events.producer.EventProducer` - publishing;
* :func:`~recsys.events.batch.load_event_log`,
  :func:`~recsys.events.batch.load_yoochoose_clicks` - the batch path;
* :mod:`recsys.events.collector` - the HTTP collector;
* :mod:`recsys.events.consent`, :mod:`recsys.events.pii`, :mod:`recsys.events.audit` -
  consent records and policy, PII encryption and the audit trail, kept at this
  layer so profiles can use them (the privacy package re-exports them).
"""

from recsys.events.backend import StoreConfig, open_store
from recsys.events.deadletter import DeadLetter
from recsys.events.schema import DeviceType, Event, EventContext, EventType
from recsys.events.store import (
    CommitBatch,
    Delivery,
    MembershipChange,
    RealtimeStore,
    partition_of,
)
from recsys.events.validation import EventValidationError, EventValidator, ValidationConfig

__all__ = [
    "CommitBatch",
    "DeadLetter",
    "Delivery",
    "DeviceType",
    "Event",
    "EventContext",
    "EventType",
    "EventValidationError",
    "EventValidator",
    "MembershipChange",
    "RealtimeStore",
    "StoreConfig",
    "ValidationConfig",
    "open_store",
    "partition_of",
]
