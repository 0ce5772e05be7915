"""The exposure writer: events reach a real store; a full buffer or a failing store drops
and counts, and never blocks or fails the caller."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recsys.events.sqlite_store import SqliteStore
from recsys.events.validation import validate_event
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import ExposureWriter, exposure_event, exposure_event_id


def _event(n: int, **kwargs: Any) -> dict[str, Any]:
    ctx = RequestContext.from_values(request_id=f"r-{n}", surface="home").with_request_id()
    return exposure_event(user_id=n, items=[3, 1, 2], scores=[0.9, 0.5, 0.1], context=ctx, k=3,
                          bundle="b1", model="recommend:1", **kwargs)  # fmt: skip


def test_an_exposure_is_a_valid_event_with_positions_and_propensities() -> None:
    event = _event(7, now_ms=1_700_000_000_000)
    parsed = validate_event(event)
    assert parsed.payload["items"] == [3, 1, 2] and parsed.payload["propensities"] == [1.0] * 3
    assert event["timestamp"] == 1_700_000_000.0 and event["session_id"] == "7"
    # the id a caller polls for to know the list is logged (the request's own)
    assert event["event_id"] == exposure_event_id("r-7") != exposure_event_id("r-8")
    stochastic = _event(8, propensities=[0.5, 0.4, 0.5], policy="softmax-t1")
    assert stochastic["payload"]["slate_propensity"] == pytest.approx(0.1)
    validate_event(stochastic)
    with pytest.raises(ValueError, match="same length"):
        _event(9, propensities=[1.0])
    with pytest.raises(ValueError, match="request id"):
        exposure_event(user_id=1, items=[], scores=[], context=RequestContext(), k=1,
                       bundle="b", model="m")  # fmt: skip


def test_written_exposures_arrive_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    SqliteStore(path).close()
    writer = ExposureWriter(f"sqlite://{path}", batch_size=16)
    for n in range(100):
        assert writer.submit(_event(n))
    stats = writer.close()
    assert (stats.submitted, stats.written, stats.dropped) == (100, 100, 0)
    store = SqliteStore(path)
    try:
        got = [json.loads(d.payload) for d in store.read("t", 1000, 0, False)]
    finally:
        store.close()
    assert sorted(e["payload"]["request_id"] for e in got) == sorted(f"r-{n}" for n in range(100))


class _SlowStore:
    """A store whose writes wait until released (a stalled Redis)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written = 0

    def publish(self, payloads: list[str], users: Any = None) -> list[str]:
        self.release.wait(10)
        self.written += len(payloads)
        return [str(i) for i in range(len(payloads))]


def test_a_full_buffer_drops_counts_and_reports_without_blocking() -> None:
    store = _SlowStore()
    warnings: list[str] = []
    writer = ExposureWriter(lambda: store, capacity=10, batch_size=1, report_interval_s=0.0,
                            warn=warnings.append)  # fmt: skip
    started = time.perf_counter()
    accepted = sum(writer.submit(_event(n)) for n in range(50))
    assert time.perf_counter() - started < 1.0  # never waits on the store
    store.release.set()
    stats = writer.close()
    assert accepted <= 11 and stats.dropped_full == 50 - accepted
    assert stats.written == accepted == store.written
    assert stats.submitted == stats.written + stats.dropped == 50
    assert any("dropped" in w for w in warnings)  # the drop is reported, not silent


class _BrokenStore:
    def __init__(self) -> None:
        self.calls = 0

    def publish(self, payloads: list[str], users: Any = None) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("redis is down")
        return [str(i) for i in range(len(payloads))]


def test_a_failing_store_drops_that_batch_counts_it_and_recovers() -> None:
    store = _BrokenStore()
    warnings: list[str] = []
    writer = ExposureWriter(lambda: store, batch_size=1, report_interval_s=0.0,
                            warn=warnings.append)  # fmt: skip
    writer.submit(_event(1))
    assert writer.flush(5)
    writer.submit(_event(2))
    stats = writer.close()
    assert (stats.failed, stats.written) == (1, 1)
    assert any("redis is down" in w for w in warnings)
