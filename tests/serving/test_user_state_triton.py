"""``recommend`` over gRPC reads real-time profiles from a real Redis (real Triton).

A redis-server of its own (this test stops it), the repository built from
``fresh_two_stage`` with ``profile_store`` = that Redis (own key prefix), and
``LocalTritonServer``. Events are published to the Redis stream with ``EventProducer``
and applied by the real ``StreamConsumer``; then ``recommend`` answers over gRPC. Finally
Redis is stopped and requests are still answered, from the training tables.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from rt_testkit import REDIS_BIN, free_port, start_redis  # registered by tests/conftest.py

from recsys.events.consent import ConsentPolicy
from recsys.events.producer import EventProducer
from recsys.events.redis_store import RedisStore
from recsys.profiles.config import ProfileConfig
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig

pytestmark = [pytest.mark.triton, pytest.mark.redis]
NEW_USER = 999_001


@dataclass
class Live:
    url: str
    redis_url: str
    prefix: str
    redis: Any
    server: LocalTritonServer
    parts: Any


@pytest.fixture(scope="module")
def live(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    if REDIS_BIN is None:
        pytest.skip("redis-server binary not found; install the Debian package redis-server")
    port = free_port()
    redis_proc = start_redis(port)
    redis_url = f"redis://127.0.0.1:{port}/0"
    prefix = f"t{uuid.uuid4().hex[:10]}"
    parts = fresh_two_stage
    tmp = tmp_path_factory.mktemp("profile-triton")
    root = tmp / "repository"
    build_repository(
        parts.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(profile_store=f"{redis_url}?prefix={prefix}"),
    )
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    try:
        with LocalTritonServer(config) as server:
            yield Live(server.grpc_url, redis_url, prefix, redis_proc, server, parts)
    finally:
        if redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


def _click(live: Live, user: int, items: list[int]) -> None:
    """Publishes clicks to the Redis stream and runs the real consumer over them."""
    store = RedisStore(live.redis_url, prefix=live.prefix)
    try:
        now = time.time()
        events = [
            {"event_id": f"e-{uuid.uuid4().hex}", "user_id": str(user), "session_id": "s",
             "type": "click", "item_id": item, "timestamp": now - 30 + n}
            for n, item in enumerate(items)
        ]  # fmt: skip
        EventProducer(store).publish(events)
        processor = EventProcessor(
            store,
            ProcessorConfig(
                profile=ProfileConfig.from_schema(live.parts.schema),
                consent=ConsentPolicy.grant_all(),
            ),
        )
        stats = StreamConsumer(
            store,
            processor,
            ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None),
        ).run(until_idle=True)
        assert stats.applied == len(events)
    finally:
        store.close()


def test_recommend_reflects_events_and_survives_a_stopped_store(live: Live) -> None:
    ctx = live.parts.recommender.context
    user = int(ctx.user_ids[7])
    with RecommendClient(live.url) as client:
        before = client.recommend(user, 20)
        popular = client.recommend(NEW_USER, 10)  # no profile yet: the popularity list
        clicked = [int(i) for i in before.item_ids[:3]]
        _click(live, user, clicked)
        history = [int(i) for i in ctx.item_ids[[0, 1, 2, 3]]]
        _click(live, NEW_USER, history)

        after = client.recommend(user, 20)
        assert len(after) == 20
        assert not np.isin(clicked, after.item_ids).any()
        rest = [i for i in before.item_ids.tolist() if i not in clicked]
        assert after.item_ids.tolist()[: len(rest)] != rest  # re-ranked, not just filtered
        new = client.recommend(NEW_USER, 10)
        assert len(new) == 10 and not np.isin(history, new.item_ids).any()
        assert new.item_ids.tolist() != popular.item_ids.tolist()  # through the towers

        live.redis.terminate()
        live.redis.wait(timeout=10)
        for _ in range(3):  # the first fails on the store, the next skip it
            down = client.recommend(user, 20)
            np.testing.assert_array_equal(down.item_ids, before.item_ids)
            np.testing.assert_allclose(down.scores, before.scores, atol=1e-6)
        again = client.recommend(NEW_USER, 10)
        np.testing.assert_array_equal(again.item_ids, popular.item_ids)
    deadline = time.monotonic() + 5
    while "real-time profiles unavailable" not in live.server.log_tail(200):
        assert time.monotonic() < deadline, live.server.log_tail(40)
        time.sleep(0.1)
