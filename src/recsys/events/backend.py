"""Choosing the store: Redis when a URL is configured, else embedded SQLite.

Example:
    >>> store = open_store(StoreConfig())  # no Redis configured: SQLite in memory
    >>> type(store).__name__
    'SqliteStore'
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import RealtimeStore

REDIS_URL_ENV = "RECSYS_REDIS_URL"


@dataclass(frozen=True)
class StoreConfig:
    """Where the real-time state lives.

    Attributes:
        redis_url: ``redis://host:port/db``; None reads ``RECSYS_REDIS_URL`` and,
            when that is unset too, uses the embedded store.
        sqlite_path: database file of the embedded store (``":memory:"`` keeps
            nothing after exit).
        prefix: Redis key prefix.
        group: consumer group of the event stream.
        stream_maxlen: Redis stream cap (``XADD MAXLEN ~``); None keeps all.
        partitions: Redis stream partitions (users spread by a stable hash; one
            consumer per partition keeps each user's events in order). The first
            store opened on a prefix records it; None uses the recorded number (1 on
            a new prefix) and another number is refused (see
            :class:`~recsys.events.redis_store.RedisStore`).
    """

    redis_url: str | None = None
    sqlite_path: str = ":memory:"
    prefix: str = "rt"
    group: str = "profiles"
    stream_maxlen: int | None = None
    partitions: int | None = None


def open_store(config: StoreConfig | None = None) -> RealtimeStore:
    """Opens the configured store.

    Args:
        config: see :class:`StoreConfig`; defaults to the embedded store unless
            ``RECSYS_REDIS_URL`` is set.

    Returns:
        A :class:`RedisStore` or a :class:`SqliteStore`.
    """
    config = config or StoreConfig()
    url = config.redis_url or os.environ.get(REDIS_URL_ENV) or None
    if url:
        return RedisStore(url, config.prefix, config.group, config.stream_maxlen, config.partitions)
    if config.partitions not in (None, 1):
        raise ValueError(
            f"partitions={config.partitions}: the embedded SQLite store has one stream "
            "partition; a partitioned stream needs Redis (set redis_url)"
        )
    return SqliteStore(config.sqlite_path, config.group)
