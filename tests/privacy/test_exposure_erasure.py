"""Erasure removes a user's exposures (``recommendation_impression`` events written by
the exposure log) from the stream and the event store, on both stores."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rt_testkit import stream_events

from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import RealtimeStore
from recsys.privacy.consent import ConsentPolicy
from recsys.privacy.erasure import erase_user
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import EXPOSURE_TYPE, ExposureWriter, exposure_event

USER = 42  # an integer id, as MovieLens users are
OTHER = 43


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[RealtimeStore, Callable[[], RealtimeStore]]]:
    """A store, and a function opening another client of the same store (the writer's)."""
    opener: Callable[[], RealtimeStore]
    if request.param == "sqlite":
        path = tmp_path / "rt.db"

        def opener() -> RealtimeStore:
            return SqliteStore(path)

    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"x{uuid.uuid4().hex[:12]}"

        def opener() -> RealtimeStore:
            return RedisStore(url, prefix=prefix)

    store = opener()
    try:
        yield store, opener
    finally:
        store.close()


def _exposure(user: int, n: int, personalized: bool = True) -> dict[str, Any]:
    ctx = RequestContext.from_values(request_id=f"req-{n}", surface="home", device_type="mobile")
    return exposure_event(
        user_id=user,
        items=[5, 7, 9],
        scores=[0.9, 0.5, 0.2],
        context=ctx,
        k=3,
        bundle="b1",
        model="recommend:1",
        now_ms=1_714_550_400_000 + n * 1000,
        personalized=personalized,
    )


def _write(opener: Callable[[], RealtimeStore], events: list[dict[str, Any]]) -> None:
    writer = ExposureWriter(opener, batch_size=8, linger_s=0.0)
    for e in events:
        assert writer.submit(e)
    stats = writer.close()
    assert stats.written == len(events) and stats.dropped == 0


def test_erasure_removes_the_users_exposures_from_stream_and_event_store(
    stores: tuple[RealtimeStore, Callable[[], RealtimeStore]],
) -> None:
    store, opener = stores
    _write(opener, [_exposure(USER, 1), _exposure(OTHER, 2), _exposure(USER, 3)])
    consumer = StreamConsumer(
        store,
        EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all())),
        ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None),
    )
    stats = consumer.run(until_idle=True)
    assert stats.applied == 3 and stats.dead_letters == 0
    kept = [json.loads(t) for t in store.user_events(str(USER))]
    assert [e["type"] for e in kept] == [EXPOSURE_TYPE, EXPOSURE_TYPE]  # in the event store
    # One more list served after the consumer stopped: only in the stream (unread) ...
    # ... and one served without personalization (anonymous: not the user's).
    _write(opener, [_exposure(USER, 4), _exposure(USER, 5, personalized=False)])
    assert sum(e["user_id"] == str(USER) for e in stream_events(store)) == 3

    counts = erase_user(store, str(USER), actor="dpo:test")
    assert counts["events"] == 2 and counts["stream"] == 3

    left = stream_events(store)
    assert all(e["user_id"] != str(USER) for e in left)
    assert {e["payload"]["request_id"]: e["user_id"] for e in left} == {
        "req-2": str(OTHER),
        "req-5": "anonymous",
    }
    assert store.user_events(str(USER)) == []
    assert len(store.user_events(str(OTHER))) == 1  # others keep theirs
    # Nothing of the erased exposures comes back through the consumer either.
    assert consumer.run(until_idle=True).applied == 3 + 1  # only the anonymous one
    assert store.user_events(str(USER)) == []
    # The anonymous exposure belongs to no user: no profile, no per-user events (even
    # under a grant-all policy); it stays in the stream for attribution and OPE.
    assert consumer.processor.stats.skipped_no_user == 1
    anonymous = store.load_users(["anonymous"])["anonymous"]
    assert anonymous.profile is None and anonymous.version == 0
    assert store.user_events("anonymous") == []
    assert any(e["user_id"] == "anonymous" for e in stream_events(store))
