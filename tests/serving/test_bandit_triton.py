"""A policy bandit inside a real Triton server: it picks each request's slate policy,
the exposures record its choice, and a state saved by the online updater is picked up
without a restart."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving_kit import read_exposures

from recsys.bandits import ContextEncoder, LinUCB, save_state
from recsys.bandits.online import BanditUpdater
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.events.validation import validate_event
from recsys.runtime.policies import parse_policy
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig

pytestmark = [pytest.mark.triton]
ARMS = ["deterministic", "plackett_luce:0.3"]
ENCODER = ContextEncoder(segments=("engaged_clickers",))


@dataclass
class Live:
    url: str
    db: Path
    state: Path
    users: list[int]


@pytest.fixture(scope="module")
def live(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp("bandit")
    db = tmp / "rt.db"
    SqliteStore(db).close()
    state = save_state(LinUCB(len(ARMS), ENCODER.dim, alpha=2.0), tmp / "bandit.json", ARMS,
                       ENCODER.names())  # fmt: skip
    root = tmp / "repository"
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(exposure_log=f"sqlite://{db}", bandit_state=str(state),
                         bandit_name="ranking"),
    )  # fmt: skip
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    users = [int(u) for u in fresh_two_stage.recommender.context.user_ids[:40]]
    with LocalTritonServer(config) as server:
        yield Live(server.grpc_url, db, state, users)


def _ask(live: Live, tag: str) -> dict[str, dict[str, Any]]:
    ids = {}
    with RecommendClient(live.url) as client:
        for user in live.users:
            rid = f"{tag}-{user}"
            client.recommend(user, 10, context={"request_id": rid, "device_type": "mobile"})
            ids[rid] = user
    return read_exposures(live.db, set(ids))


def test_the_bandit_picks_the_policy_and_learns_from_the_stream(live: Live) -> None:
    first = _ask(live, "b1")
    for event in first.values():
        validate_event(event)
        payload = event["payload"]
        assert payload["bandit"] == "ranking@0"
        arm = payload["bandit_arm"]
        assert payload["policy"] == parse_policy(ARMS[arm]).id  # the arm's policy drew it
        assert len(payload["bandit_context"]) == ENCODER.dim
        assert payload["bandit_propensity"] == 1.0  # LinUCB is deterministic
    # an untrained LinUCB ties every arm and takes the first; the users click its lists
    assert {e["payload"]["bandit_arm"] for e in first.values()} == {0}
    clicks = [
        {"event_id": f"c-{rid}", "user_id": e["user_id"], "session_id": e["session_id"],
         "type": "click", "item_id": e["payload"]["items"][0], "timestamp": e["timestamp"] + 2,
         "payload": {"request_id": rid}}
        for rid, e in first.items()
    ]  # fmt: skip
    store = SqliteStore(live.db)
    try:
        EventProducer(store).publish(clicks)  # the clicks go to the stream as a site's would
    finally:
        store.close()
    # what the updater reads from the stream: the served exposures and the clicks
    events = [validate_event(e) for e in first.values()] + [validate_event(c) for c in clicks]
    events.sort(key=lambda e: e.ts_us)
    bandit = LinUCB(len(ARMS), ENCODER.dim, alpha=2.0)
    updater = BanditUpdater(bandit, "ranking", window_s=600)
    for event in events:
        updater.feed(event)
    updater.flush()
    assert updater.stats.updates == len(first) and updater.stats.rewarded == len(clicks)
    save_state(bandit, live.state, ARMS, ENCODER.names())
    time.sleep(1.5)  # the server checks the file every second
    second = _ask(live, "b2")
    versions = {e["payload"]["bandit"] for e in second.values()}
    assert versions == {f"ranking@{bandit.version}"}
    # arm 0 is now well known; the untried arm's confidence bonus wins every context
    assert {e["payload"]["bandit_arm"] for e in second.values()} == {1}
    assert {e["payload"]["policy"] for e in second.values()} == {"plackett_luce:0.3@50"}
