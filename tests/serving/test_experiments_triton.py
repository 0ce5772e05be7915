"""A/B arms decide the slate policy inside a real Triton server; exposures record them.

The repository is built from ``fresh_two_stage``'s bundle with an experiments file (one
layer, control vs a Plackett-Luce exploration arm, 50/50) and the embedded SQLite store as
exposure log. Each user's arm must be the one the offline assignment gives, the arm's
policy must be the one its exposure records, and the split must follow the weights.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serving_kit import read_exposures

from recsys.events.sqlite_store import SqliteStore
from recsys.events.validation import validate_event
from recsys.experiments import load_experiments
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig

pytestmark = [pytest.mark.triton]

EXPERIMENTS = """
layers:
  - name: ranking_policy
    salt: test-ranking-policy
    experiments:
      - name: explore_pl
        arms:
          - {name: control, weight: 1}
          - {name: explore, weight: 1, policy: "plackett_luce:0.5"}
"""


@dataclass
class Live:
    url: str
    db: Path
    experiments: Any
    users: list[int]


@pytest.fixture(scope="module")
def live(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp("experiments")
    db = tmp / "rt.db"
    SqliteStore(db).close()
    path = tmp / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    root = tmp / "repository"
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(exposure_log=f"sqlite://{db}", experiments=str(path)),
    )
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    users = [int(u) for u in fresh_two_stage.recommender.context.user_ids[:120]]
    with LocalTritonServer(config) as server:
        yield Live(server.grpc_url, db, load_experiments(path).experiments, users)


def test_each_users_arm_sets_the_policy_and_the_exposure_records_it(live: Live) -> None:
    served: dict[str, tuple[int, Any]] = {}
    with RecommendClient(live.url) as client:
        for user in live.users:
            rid = f"ab-{user}"
            served[rid] = (user, client.recommend(user, 10, context={"request_id": rid}))
    exposures = read_exposures(live.db, set(served))
    arms = []
    for rid, (user, rec) in served.items():
        [assignment] = live.experiments.assign(str(user))
        event = exposures[rid]
        validate_event(event)
        payload = event["payload"]
        assert (payload["experiment"], payload["arm"]) == ("explore_pl", assignment.arm)
        assert payload["experiments"] == [f"explore_pl:{assignment.arm}"]
        assert rec.explanation["experiments"] == [{"experiment": "explore_pl",
                                                   "arm": assignment.arm}]  # fmt: skip
        want = "plackett_luce:0.5@50" if assignment.arm == "explore" else "deterministic"
        assert payload["policy"] == want
        arms.append(assignment.arm)
    share = arms.count("explore") / len(arms)
    assert 0.35 < share < 0.65  # 50/50 by weight (120 users)
