"""The simulator through the real servers, and its in-process mode, on the same seed.

The repository is built from ``fresh_two_stage``'s bundle with the embedded SQLite store
as profile store and exposure log. The simulated users (a truth fitted on all of
MovieLens-100K) ask the real Triton server over gRPC; their clicks and dwell go through
the real producer, stream and profile consumer. The in-process mode runs the same
``recommend`` computation without the server and must give the same outcomes.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recsys.data.movielens import load_ml100k
from recsys.events.attribution import attribute
from recsys.events.sqlite_store import SqliteStore
from recsys.events.validation import validate_event
from recsys.serving.inprocess import engine_from_repository
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig
from recsys.sim import (
    EngineRecommender,
    SimConfig,
    StoreSink,
    TritonRecommender,
    World,
    WorldConfig,
    simulate,
)

pytestmark = [pytest.mark.triton]


@dataclass
class Live:
    url: str
    root: Path
    db: Path
    parts: Any
    world: World


@pytest.fixture(scope="module")
def live(
    fresh_two_stage: Any, ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp("sim")
    db = tmp / "rt.db"
    SqliteStore(db).close()
    root = tmp / "repository"
    url = f"sqlite://{db}"
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(profile_store=url, exposure_log=url),
    )
    world = World.fit(load_ml100k(ml100k_dir), WorldConfig(seed=0))
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    with LocalTritonServer(config) as server:
        yield Live(server.grpc_url, root, db, fresh_two_stage, world)


def test_server_and_in_process_modes_give_the_same_outcomes(live: Live) -> None:
    cfg = SimConfig(steps=40, k=10, users=60, seed=5)
    live.world.reset()
    served = TritonRecommender(live.url)
    try:
        over_grpc = simulate(live.world, served, cfg)
    finally:
        served.close()
    live.world.reset()
    local = EngineRecommender(engine_from_repository(live.root, user_state=False))
    in_process = simulate(live.world, local, cfg)
    assert over_grpc.outcomes() == in_process.outcomes()
    assert over_grpc.summary() == in_process.summary()
    assert over_grpc.summary()["clicks"] > 0  # the users do click
    # another seed draws other visits
    live.world.reset()
    other = simulate(live.world, local, SimConfig(steps=40, k=10, users=60, seed=6))
    assert other.outcomes() != in_process.outcomes()


def test_the_loop_closes_through_the_real_pipeline(live: Live) -> None:
    live.world.reset()
    sink = StoreSink(f"sqlite://{live.db}", live.parts.schema)
    served = TritonRecommender(live.url)
    cfg = SimConfig(steps=80, k=10, users=20, seed=11, consume_every=20)
    try:
        log = simulate(live.world, served, cfg, sink=sink)
        ours = {s.request_id for s in log.steps}
        users = sorted({s.user for s in log.steps})
        # the server writes exposures asynchronously: consume until all of them are in
        deadline = time.monotonic() + 20
        while True:
            sink.flush()
            events = _events(live.db, users)
            exposures = [
                e for e in events
                if e.type.value == "recommendation_impression" and e.payload["request_id"] in ours
            ]  # fmt: skip
            if len(exposures) >= len(log.steps) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        served.close()
        sink.close()
    clicks = int(log.summary()["clicks"])
    assert clicks > 0 and sink.published == 2 * clicks  # a click and a dwell each
    assert sink.applied >= sink.published  # the consumer applied them (and the exposures)
    assert len(exposures) == len(log.steps)  # the server logged every list it served
    report = attribute(events)
    joined = [a for a in report.attributions if a.request_id in ours]
    clicked = [(s.request_id, s.items[p]) for s in log.steps for p, c in enumerate(s.clicked) if c]
    assert all(a.how == "request_id" for a in joined)
    # every click (and its dwell) joins the list and position that showed it
    assert sorted((a.request_id, a.item_id) for a in joined if a.type == "click") == sorted(clicked)


def _events(db: Path, users: list[int]) -> list[Any]:
    store = SqliteStore(db)
    try:
        return [
            validate_event(json.loads(e)) for user in users for e in store.user_events(str(user))
        ]
    finally:
        store.close()


def test_the_command_runs_a_simulation_and_writes_its_log(
    live: Live, ml100k_dir: Path, tmp_path: Path
) -> None:
    from recsys.cli import main

    out = tmp_path / "sim-out"
    args = ["sim", "run", "--repository", str(live.root), "--mode", "in-process",
            "--steps", "25", "--users", "10", "--data-dir", str(ml100k_dir.parent),
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(steps) == 25 and summary["visits"] == 25.0 and summary["mode"] == "in-process"
    assert all(len(s["items"]) == 10 == len(s["true_ctr"]) for s in steps)
    assert summary["clicks"] == sum(sum(s["clicked"]) for s in steps)
    missing = ["sim", "run", "--repository", str(live.root), "--data-dir", str(tmp_path)]
    assert main(missing) == 2  # no MovieLens there: a clear error, not a traceback
