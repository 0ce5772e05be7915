"""Test kit of the real-time tests: a real redis-server, both stores, event builders.

Every real-time test directory loads this file in its conftest (by path, as
module ``rt_testkit``: pytest runs in importlib mode, so test folders cannot
import each other), and test modules import builders from ``rt_testkit``.
The Redis fixture starts ``redis-server`` on a free loopback port with
persistence off, once per session, and skips with a reason if the binary is
missing (install: ``apt-get install redis-server``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from recsys.events.redis_codec import GROUP_SEP
from recsys.events.redis_store import RedisStore
from recsys.events.schema import Event, us_to_iso
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import RealtimeStore
from recsys.events.validation import EventValidator, ValidationConfig

REDIS_BIN = shutil.which("redis-server")
YOOCHOOSE = "yoochoose-rsc15-100k/yoochoose-clicks-100k_train_full.txt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """Starts a throwaway redis-server and waits until it answers."""
    assert REDIS_BIN is not None
    proc = subprocess.Popen(
        [REDIS_BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real redis-server started for this test session."""
    if REDIS_BIN is None:
        pytest.skip("redis-server binary not found; install the Debian package redis-server")
    port = free_port()
    proc = start_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_store(kind: str, request: pytest.FixtureRequest) -> RealtimeStore:
    if kind == "sqlite":
        return SqliteStore(":memory:")
    url = request.getfixturevalue("redis_url")
    return RedisStore(url, prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[RealtimeStore]:
    """The embedded store and the Redis store, one test run each."""
    s = make_store(request.param, request)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def yoochoose_path() -> Path:
    """The real YOOCHOOSE click log under RECSYS_DATA_DIR."""
    root = os.environ.get("RECSYS_DATA_DIR")
    if not root:
        pytest.skip("RECSYS_DATA_DIR is not set")
    path = Path(root) / YOOCHOOSE
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


#: 2024-05-01T08:00:00Z (a Wednesday).
BASE_US = 1_714_550_400_000_000
MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000

_VALIDATOR = EventValidator(ValidationConfig(max_future_skew_s=None))

_PAYLOADS: dict[str, dict[str, Any]] = {
    "scroll": {"scroll_depth": 0.5},
    "dwell": {"dwell_ms": 1200},
    "add_to_cart": {"price": 10.0},
    "purchase": {"price": 10.0},
    "search": {"query": "tents"},
    "filter": {"filters": {"color": "red"}},
    "rating": {"rating": 4},
}
_NEEDS_ITEM = {
    "click",
    "like",
    "share",
    "comment",
    "add_to_cart",
    "purchase",
    "rating",
    "recommendation_click",
    "item_published",
}


def raw_event(
    n: int,
    user: str = "u1",
    etype: str = "click",
    ts_us: int | None = None,
    item: int | str | None = None,
    session: str | None = None,
    context: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid raw event ``e<n>`` (item 100+n when the type needs one)."""
    raw: dict[str, Any] = {
        "event_id": f"e{n}",
        "user_id": user,
        "session_id": session or f"s-{user}",
        "type": etype,
        "timestamp": us_to_iso(ts_us if ts_us is not None else BASE_US + n * MINUTE_US),
    }
    if item is None and etype in _NEEDS_ITEM:
        item = 100 + n
    if item is not None:
        raw["item_id"] = item
    if context:
        raw["context"] = context
    body = dict(_PAYLOADS.get(etype, {}))
    body.update(payload or {})
    if body:
        raw["payload"] = body
    return raw


def event(n: int, **kwargs: Any) -> Event:
    """The validated :func:`raw_event`."""
    return _VALIDATOR.validate(raw_event(n, **kwargs))


def stream_events(store: RealtimeStore) -> list[dict[str, Any]]:
    """Every event in the stream, without consuming it (a Redis entry can hold
    several events of a user)."""
    if isinstance(store, SqliteStore):
        rows = store._db.execute("SELECT payload FROM stream ORDER BY seq").fetchall()
        return [json.loads(r[0]) for r in rows]
    assert isinstance(store, RedisStore)
    out = []
    for key in store.stream_keys:
        for _id, fields in store.r.xrange(key):
            texts = [fields["e"]] if "e" in fields else fields["g"].split(GROUP_SEP)
            out += [json.loads(t) for t in texts]
    return out
