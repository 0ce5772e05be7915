"""Segments, targeting rules and consent in the request path of a real Triton server.

The repository is built from ``fresh_two_stage``'s bundle with one embedded SQLite store
as profile store and exposure log, and a targeting rules file. Events go through the
real pipeline (store stream, ``StreamConsumer`` with a ``SegmentEngine``), so a user
enters a segment as in production; then ``recommend`` answers over gRPC. The served
lists are compared with the offline ``TwoStageRecommender.recommend`` given the same
rules, segments and context.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_kit import assert_same_ranking, read_exposures

from recsys.events.consent import ConsentPolicy, Purpose
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.events.validation import validate_event
from recsys.privacy.consent import ConsentRegistry
from recsys.profiles.config import ProfileConfig
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.runtime.context import RequestContext
from recsys.runtime.targeting import ItemCatalog, TargetingEnv
from recsys.segments import SegmentEngine, load_segments_text
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig
from recsys.targeting import load_rules

pytestmark = [pytest.mark.triton]

PINNED = 50  # Star Wars (1977)
RULES = f"""
rules:
  - name: busy_get_comedy
    priority: 5
    when: "in_segment('busy')"
    boost: [{{categories: [Comedy], weight: 3.0}}]
  - name: evening_mobile
    when: "device == 'mobile' and local_hour >= 18"
    exclude: {{categories: [Horror]}}
    pin: [{{item: {PINNED}, position: 1}}]
  - name: morning_desktop_drama
    when: "device == 'desktop' and local_hour < 12"
    pool: {{categories: [Drama]}}
"""
SEGMENTS = "segments: [{name: busy, enter: 'count(click, 1h) >= 2'}]"
# 2025-12-06 19:30 and 08:30 in Berlin (UTC+1)
EVENING = {"request_time_ms": 1_765_045_800_000, "utc_offset_minutes": 60, "device_type": "mobile"}
MORNING = {"request_time_ms": 1_765_006_200_000, "utc_offset_minutes": 60, "device_type": "desktop"}


@dataclass
class Live:
    url: str
    db: Path
    rules_path: Path
    parts: Any
    catalog: ItemCatalog


@pytest.fixture(scope="module")
def live(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp("targeting")
    db = tmp / "rt.db"
    SqliteStore(db).close()
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(RULES)
    root = tmp / "repository"
    url = f"sqlite://{db}"
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(
            profile_store=url,
            exposure_log=url,
            targeting_rules=str(rules_path),
            rules_check_s=0.2,
        ),
    )
    rec = fresh_two_stage.recommender
    catalog = ItemCatalog.from_genres(rec.context.item_ids, rec.item_genres)
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    with LocalTritonServer(config) as server:
        yield Live(server.grpc_url, db, rules_path, fresh_two_stage, catalog)


def _publish_and_consume(live: Live, events: list[dict[str, Any]]) -> None:
    store = SqliteStore(live.db)
    try:
        EventProducer(store).publish(events)
        processor = EventProcessor(
            store,
            ProcessorConfig(
                profile=ProfileConfig.from_schema(live.parts.schema),
                consent=ConsentPolicy.grant_all(),
            ),
            hooks=[SegmentEngine(load_segments_text(SEGMENTS))],
        )
        StreamConsumer(
            store,
            processor,
            ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None),
        ).run(until_idle=True)
    finally:
        store.close()


def _genre_count(live: Live, items: np.ndarray, genre: str) -> int:
    members = set(live.catalog.item_ids[live.catalog.categories[genre]].tolist())
    return sum(int(i) in members for i in items.tolist())


def _offline(live: Live, user: int, k: int, segments: tuple[str, ...], ctx: dict[str, Any]) -> Any:
    rules = load_rules(live.rules_path, live.catalog)
    env = TargetingEnv.of(segments, RequestContext.from_values(**ctx))
    return live.parts.recommender.recommend(np.array([user]), k, rules=rules, targeting=[env])


def _user(live: Live, n: int) -> int:
    return int(live.parts.recommender.context.user_ids[n])


def test_a_user_who_enters_a_segment_gets_its_rule_on_the_next_request(live: Live) -> None:
    user = _user(live, 11)
    with RecommendClient(live.url) as client:
        before = client.recommend(user, 20)
        assert before.explanation["rules"] == [] and before.explanation["segments"] == []
        now = time.time()
        clicked = [int(i) for i in before.item_ids[-2:]]  # low in the list: little else moves
        _publish_and_consume(
            live,
            [
                {"event_id": f"e-{uuid.uuid4().hex}", "user_id": str(user), "session_id": "s",
                 "type": "click", "item_id": item, "timestamp": now - 10 + n}
                for n, item in enumerate(clicked)
            ],
        )  # fmt: skip
        after = client.recommend(user, 20)
    assert after.explanation["segments"] == ["busy"]
    assert after.rules == ["busy_get_comedy"]
    assert _genre_count(live, after.item_ids, "Comedy") > _genre_count(
        live, before.item_ids, "Comedy"
    )
    assert not np.isin(clicked, after.item_ids).any()  # clicked items are seen now


def test_the_same_user_in_the_evening_on_mobile_and_the_morning_on_desktop(live: Live) -> None:
    ctx = live.parts.recommender.context
    pinned_index = int(np.flatnonzero(ctx.item_ids == PINNED)[0])
    row = next(u for u in range(3, ctx.n_users)
               if pinned_index not in ctx.seen.rows(np.array([u])).indices)  # fmt: skip
    user = _user(live, row)
    with RecommendClient(live.url) as client:
        evening = client.recommend(user, 10, context=EVENING)
        morning = client.recommend(user, 10, context=MORNING)
        plain = client.recommend(user, 10)
    assert evening.rules == ["evening_mobile"] and morning.rules == ["morning_desktop_drama"]
    assert plain.rules == []
    assert int(evening.item_ids[0]) == PINNED
    assert _genre_count(live, evening.item_ids, "Horror") == 0
    assert _genre_count(live, morning.item_ids, "Drama") == len(morning) == 10
    assert evening.item_ids.tolist() != morning.item_ids.tolist()


@pytest.mark.parametrize("ctx", [EVENING, MORNING, {}], ids=["evening", "morning", "none"])
def test_served_lists_equal_the_offline_recommender_with_the_same_rules(
    live: Live, ctx: dict[str, Any]
) -> None:
    users = [_user(live, n) for n in (0, 5, 20, 77, 300)]
    with RecommendClient(live.url) as client:
        for user in users:
            served = client.recommend(user, 15, context=ctx or None)
            offline = _offline(live, user, 15, (), ctx)
            valid = offline.valid[0]
            assert served.rules == list(offline.rules[0])
            assert_same_ranking(
                served.item_ids, served.scores, offline.item_ids[0][valid],
                offline.scores[0][valid], what=f"user {user} {ctx}",
            )  # fmt: skip


def test_the_exposure_records_the_rules_and_segments(live: Live) -> None:
    user = _user(live, 11)  # a member of 'busy' (first test)
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    with RecommendClient(live.url) as client:
        served = client.recommend(user, 10, context={**EVENING, "request_id": request_id})
    event = read_exposures(live.db, {request_id})[request_id]
    validate_event(event)
    payload = event["payload"]
    assert payload["rules"] == served.rules and set(served.rules) >= {"evening_mobile"}
    assert payload["segments"] == served.explanation["segments"] and payload["personalized"]
    assert payload["items"] == served.item_ids.tolist()


def test_a_user_who_withdrew_consent_gets_the_non_personalized_list(live: Live) -> None:
    user = _user(live, 42)
    stranger = 987_654  # unknown: the popularity list
    with RecommendClient(live.url) as client:
        personal = client.recommend(user, 10, context=EVENING)
        popular = client.recommend(stranger, 10)
        store = SqliteStore(live.db)
        try:
            ConsentRegistry(store).record(
                str(user), Purpose.PERSONALIZATION, False, "app-settings", "user"
            )
        finally:
            store.close()
        request_id = f"r-{uuid.uuid4().hex[:8]}"
        after = client.recommend(user, 10, context={**EVENING, "request_id": request_id,
                                                      "session_id": "s-9"})  # fmt: skip
        plain = client.recommend(user, 10)
    assert personal.explanation["personalized"] and not after.explanation["personalized"]
    assert plain.item_ids.tolist() == popular.item_ids.tolist()  # nothing personal used
    assert after.item_ids.tolist() != personal.item_ids.tolist()
    assert after.explanation["segments"] == []
    event = read_exposures(live.db, {request_id})[request_id]
    validate_event(event)
    assert event["user_id"] == "anonymous" and event["session_id"] == "anonymous"
    assert "context" not in event and event["payload"]["segments"] == []
    assert event["payload"]["personalized"] is False


def test_rules_reload_without_a_restart_and_a_broken_file_keeps_them(live: Live) -> None:
    user = _user(live, 5)
    with RecommendClient(live.url) as client:
        first = client.recommend(user, 10)
        banned = int(first.item_ids[0])
        try:
            _write(
                live.rules_path, RULES + f"  - name: ban_top\n    exclude: {{items: [{banned}]}}\n"
            )
            after = _wait_for(client, user, lambda r: r.rules == ["ban_top"])
            assert banned not in after.item_ids.tolist()
            _write(live.rules_path, RULES + '  - name: broken\n    when: "nope > 1"\n')
            time.sleep(1.0)  # several checks of the file
            for _ in range(8):
                kept = client.recommend(user, 10)
                assert kept.rules == ["ban_top"]  # the previous rules still serve
        finally:
            _write(live.rules_path, RULES)
        restored = _wait_for(client, user, lambda r: r.rules == [])
    assert restored.item_ids.tolist() == first.item_ids.tolist()


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time() + 1
    os.utime(path, (stamp, stamp))


def _wait_for(client: RecommendClient, user: int, done: Any, timeout_s: float = 15.0) -> Any:
    """The answer once ``done`` holds for 8 requests in a row (every ``recommend``
    instance checks the file on its own requests)."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while True:
        answer = client.recommend(user, 10)
        streak = streak + 1 if done(answer) else 0
        if streak >= 8:
            return answer
        assert time.monotonic() < deadline, answer.explanation
        time.sleep(0.05)
