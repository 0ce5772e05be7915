"""Request context, request ids and the exposure log through a real Triton server.

The repository is built from ``fresh_two_stage``'s run bundle with ``exposure_log`` set
to a real event store: the embedded SQLite store, and a real redis-server of its own.
Requests go over gRPC with and without a context; the exposures are read back from the
store's event stream and checked against what was served, and checked by the event
schema's own validator.
"""

from __future__ import annotations

import importlib.util
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from rt_testkit import REDIS_BIN, free_port, start_redis  # registered by tests/conftest.py

from recsys.events.validation import validate_event
from recsys.runtime.exposure import exposure_event_id
from recsys.serving.errors import InferenceError
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig

pytestmark = [pytest.mark.triton]


@dataclass
class Live:
    url: str
    open_store: Any
    bundle_id: str
    partitions: int


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def live(
    request: pytest.FixtureRequest, fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp(f"exposure-{request.param}")
    redis_proc, partitions = None, 1
    if request.param == "sqlite":
        from recsys.events.sqlite_store import SqliteStore

        path = tmp / "rt.db"
        SqliteStore(path).close()  # the served model opens an existing store only
        store_url = f"sqlite://{path}"

        def open_store() -> Any:
            return SqliteStore(path)
    else:
        if REDIS_BIN is None:
            pytest.skip("redis-server binary not found; install the Debian package redis-server")
        from recsys.events.redis_store import RedisStore

        port = free_port()
        redis_proc = start_redis(port)
        prefix = f"t{uuid.uuid4().hex[:10]}"
        store_url = f"redis://127.0.0.1:{port}/0?prefix={prefix}"
        # a partitioned stream, as the collector and consumers made it: the server,
        # opened by URL, must write where they read
        partitions = 2
        RedisStore(f"redis://127.0.0.1:{port}/0", prefix=prefix, partitions=partitions).close()

        def open_store() -> Any:
            return RedisStore(f"redis://127.0.0.1:{port}/0", prefix=prefix)

    bundle = fresh_two_stage.bundle(tmp / "bundle")
    root = tmp / "repository"
    build_repository(bundle, root, RepositoryConfig(exposure_log=store_url))
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    try:
        with LocalTritonServer(config) as server:
            yield Live(server.grpc_url, open_store, bundle.bundle_id, partitions)
    finally:
        if redis_proc is not None and redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


def _exposures(live: Live, want: set[str], timeout_s: float = 20.0) -> dict[str, dict[str, Any]]:
    """The exposure events of the stream, by request id, once ``want`` are all there."""
    import json

    store = live.open_store()
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for delivery in store.read(f"t-{uuid.uuid4().hex[:6]}", 1000, 0, False):
                event = json.loads(delivery.payload)
                if event.get("type") == "recommendation_impression":
                    found[event["payload"]["request_id"]] = event
            if want <= set(found):
                return found
            time.sleep(0.1)
    finally:
        store.close()
    raise AssertionError(f"exposures missing after {timeout_s} s: {sorted(want - set(found))}")


def test_every_answer_has_a_request_id_and_its_exposure_in_the_stream(live: Live) -> None:
    context = {
        "request_time_ms": 1_765_000_000_000,
        "utc_offset_minutes": 60,
        "device_type": "mobile",
        "os": "android",
        "country": "DE",
        "surface": "home",
        "session_id": "s-42",
        "request_id": f"r-{uuid.uuid4().hex[:8]}",
    }
    with RecommendClient(live.url) as client:
        plain = client.recommend(196, 10)
        with_context = client.recommend(196, 10, context=context)
        unknown = client.recommend(999_999, 5)
    assert re.fullmatch(r"[0-9a-f]{32}", plain.request_id or "")  # the server made one
    assert with_context.request_id == context["request_id"]  # the client's own id
    assert unknown.request_id not in (plain.request_id, with_context.request_id)
    # the context does not change the list yet: it is recorded
    np.testing.assert_array_equal(plain.item_ids, with_context.item_ids)

    answered = {r.request_id: r for r in (plain, with_context, unknown)}
    exposures = _exposures(live, set(answered))  # type: ignore[arg-type]
    for request_id, rec in answered.items():
        event = exposures[request_id]  # type: ignore[index]
        validate_event(event)  # the event schema's own validator accepts it
        payload = event["payload"]
        assert event["user_id"] == str(rec.user_id)
        assert payload["items"] == rec.item_ids.tolist()  # position = index
        np.testing.assert_allclose(payload["scores"], rec.scores, rtol=1e-6)
        assert payload["propensities"] == [1.0] * len(rec) and payload["slate_propensity"] == 1.0
        assert payload["policy"] == "deterministic" and payload["rules"] == []
        assert payload["bundle"] == live.bundle_id and payload["model"] == "recommend:1"
        assert payload["k"] == len(rec) or rec.user_id == 999_999
    assert exposures[unknown.request_id]["payload"]["fallback"] is True  # type: ignore[index]
    event = exposures[context["request_id"]]  # type: ignore[index]
    assert event["session_id"] == "s-42" and event["payload"]["surface"] == "home"
    assert event["context"] == {"device_type": "mobile", "os": "android", "country": "DE",
                                "utc_offset_minutes": 60}  # fmt: skip
    assert event["timestamp"] == pytest.approx(1_765_000_000.0)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"device": "mobile"}', "unknown context fields"),
        (b'{"device_type": "fridge"}', "unknown device type"),
        (b'{"country": "Germany"}', "ISO 3166-1"),
        (b'{"utc_offset_minutes": 900}', r"\[-720, 840\]"),
        (b'{"request_time_ms": "soon"}', "request_time_ms"),
        (b'{"request_id": "has space"}', "request_id"),
        (b"[1, 2]", "JSON object"),
        (b"{not json", "not UTF-8 JSON"),
        (b'{"os": "\xff\xfe"}', "not UTF-8 JSON"),
        (b'{"os": "' + b"x" * 5000 + b'"}', "at most 4096"),
    ],
)
def test_a_bad_context_is_invalid_argument_and_the_server_keeps_serving(
    live: Live, raw: bytes, message: str
) -> None:
    inputs = {
        "user_id": np.array([[196]], dtype=np.int64),
        "k": np.array([[5]], dtype=np.int64),
        "context": np.frombuffer(raw, dtype=np.uint8).reshape(1, -1),
    }
    with RecommendClient(live.url) as client:
        with pytest.raises(InferenceError) as error:
            client.client.infer("recommend", inputs, ["item_ids", "scores", "request_id"])
        assert error.value.status is grpc.StatusCode.INVALID_ARGUMENT, error.value
        assert re.search(message, str(error.value)), str(error.value)
        assert len(client.recommend(196, 5)) == 5  # the next request is answered


def test_the_client_checks_a_context_before_sending_it(live: Live) -> None:
    from recsys.serving.errors import InvalidRequestError

    with RecommendClient(live.url) as client, pytest.raises(InvalidRequestError, match="device"):
        client.recommend(1, 5, context={"device_type": "fridge"})


def test_many_concurrent_requests_leave_one_exposure_each(live: Live, tmp_path: Path) -> None:
    import asyncio

    from recsys.serving.recommend_client import AsyncRecommendClient

    users = list(range(1, 121))

    async def ask() -> list[Any]:
        async with AsyncRecommendClient(live.url) as client:
            return await asyncio.gather(*(client.recommend(u, 10) for u in users))

    recs = asyncio.run(ask())
    ids = {r.request_id for r in recs}
    assert len(ids) == len(users)  # one id per request, never reused
    exposures = _exposures(live, ids)  # type: ignore[arg-type]
    for rec in recs:
        assert exposures[rec.request_id]["payload"]["items"] == rec.item_ids.tolist()


def test_each_exposure_is_in_its_users_partition(live: Live) -> None:
    import json

    from recsys.events.store import partition_of

    users = [4, 5, 6, 7, 8, 9]
    with RecommendClient(live.url) as client:
        ids = {client.recommend(u, 5).request_id: str(u) for u in users}
    store = live.open_store()
    labels: dict[str, str] = {}
    deadline = time.monotonic() + 20
    try:
        assert store.partitions == live.partitions
        while set(ids) - set(labels) and time.monotonic() < deadline:
            for d in store.read(f"t-{uuid.uuid4().hex[:6]}", 10_000, 0, False):
                event = json.loads(d.payload)
                if event.get("type") == "recommendation_impression":
                    labels[event["payload"]["request_id"]] = d.entry_id
            time.sleep(0.1)
    finally:
        store.close()
    assert set(ids) <= set(labels)
    for rid, user in ids.items():
        # an unpartitioned stream's entry ids carry no partition label
        want = "" if live.partitions == 1 else f"{partition_of(user, live.partitions)}:"
        assert labels[rid].startswith(want) and labels[rid].count(":") == bool(want)
    assert live.partitions == 1 or len({labels[r][:2] for r in ids}) == live.partitions


def test_clicks_on_a_served_list_are_attributed_to_it(live: Live) -> None:
    import json

    from recsys.events.attribution import attribute
    from recsys.events.producer import EventProducer

    now = time.time()
    with RecommendClient(live.url) as client:
        first = client.recommend(2, 10, context={"request_time_ms": int(now * 1000)})
        second = client.recommend(3, 10, context={"request_time_ms": int(now * 1000)})
    clicked = int(first.item_ids[3])
    store = live.open_store()
    click_ids = [f"c-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"]
    try:
        EventProducer(store).publish([
            {"event_id": click_ids[0], "user_id": "2", "session_id": "s2",
             "type": "click", "item_id": clicked, "timestamp": now + 5,
             "payload": {"request_id": first.request_id}},
            # no request id: joined by the attribution window
            {"event_id": click_ids[1], "user_id": "3", "session_id": "s3",
             "type": "click", "item_id": int(second.item_ids[0]), "timestamp": now + 9},
        ])  # fmt: skip
        # the exposures are written asynchronously: they may land after the clicks
        raw: list[dict[str, Any]] = []
        want = {
            exposure_event_id(first.request_id),
            exposure_event_id(second.request_id),
            *click_ids,
        }
        deadline = time.monotonic() + 20
        while not want <= {e["event_id"] for e in raw} and time.monotonic() < deadline:
            reader = f"t-{uuid.uuid4().hex[:6]}"
            raw += [json.loads(d.payload) for d in store.read(reader, 10_000, 0, False)]
            time.sleep(0.1)
    finally:
        store.close()
    events = [validate_event(e) for e in raw if e["event_id"] in want]
    report = attribute(events)
    joined = {a.request_id: a for a in report.attributions}
    by_id = joined[first.request_id]  # type: ignore[index]
    assert (by_id.item_id, by_id.position, by_id.how) == (clicked, 3, "request_id")
    assert by_id.model == "recommend:1" and by_id.bundle == live.bundle_id
    by_window = joined[second.request_id]  # type: ignore[index]
    assert (by_window.position, by_window.how) == (0, "window")
