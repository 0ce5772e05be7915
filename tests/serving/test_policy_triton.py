"""A stochastic slate policy through a real Triton server: draws, propensities, exposures.

The repository is built from ``fresh_two_stage``'s bundle with ``policy =
plackett_luce:0.5`` and the embedded SQLite store as exposure log. The same request id
must draw the same slate; different ids draw different slates; every exposure records the
policy and its exact propensities; and each served slate equals the one the in-process
engine draws with the same policy for the same request id.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_kit import in_process_engine, read_exposures

from recsys.events.sqlite_store import SqliteStore
from recsys.events.validation import validate_event
from recsys.runtime.context import RequestContext
from recsys.runtime.policies import parse_policy
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig

pytestmark = [pytest.mark.triton]
POLICY = "plackett_luce:0.5"


@dataclass
class Live:
    url: str
    db: Path
    root: Path
    parts: Any


@pytest.fixture(scope="module")
def live(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp("policy")
    db = tmp / "rt.db"
    SqliteStore(db).close()
    root = tmp / "repository"
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(exposure_log=f"sqlite://{db}", policy=POLICY, policy_depth=30),
    )
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    with LocalTritonServer(config) as server:
        yield Live(server.grpc_url, db, root, fresh_two_stage)


def test_a_request_id_draws_one_slate_and_the_exposure_has_its_propensities(live: Live) -> None:
    user = int(live.parts.recommender.context.user_ids[9])
    ids = [f"pl-{n}" for n in range(30)]
    with RecommendClient(live.url) as client:
        first = client.recommend(user, 10, context={"request_id": ids[0]})
        again = client.recommend(user, 10, context={"request_id": ids[0]})
        served = [client.recommend(user, 10, context={"request_id": rid}) for rid in ids[1:]]
    assert first.item_ids.tolist() == again.item_ids.tolist()
    assert len({tuple(r.item_ids.tolist()) for r in served}) > 10  # the policy explores
    exposures = read_exposures(live.db, set(ids[1:]))
    for rec in served:
        event = exposures[str(rec.request_id)]
        validate_event(event)
        payload = event["payload"]
        assert payload["policy"] == parse_policy(POLICY, 30).id == "plackett_luce:0.5@30"
        assert payload["items"] == rec.item_ids.tolist()
        props = np.asarray(payload["propensities"])
        assert ((props > 0) & (props <= 1)).all()
        assert payload["slate_propensity"] == pytest.approx(float(np.prod(props)), rel=1e-9)
        assert payload["slate_propensity"] < 1.0
        assert "position_propensities" not in payload  # no closed form for Plackett-Luce


def test_served_slates_equal_the_in_process_engine_with_the_same_request_ids(live: Live) -> None:
    engine = in_process_engine(live.root, policy=parse_policy(POLICY, 30))
    users = [int(u) for u in live.parts.recommender.context.user_ids[[0, 4, 50, 120]]]
    with RecommendClient(live.url) as client:
        for user in users:
            rid = f"eq-{user}"
            served = client.recommend(user, 10, context={"request_id": rid})
            [local] = engine.recommend(
                np.array([user]), np.array([10]), [RequestContext(request_id=rid)]
            )
            assert served.item_ids.tolist() == local.item_ids.tolist()
            np.testing.assert_allclose(served.scores, local.scores, atol=1e-4)
            assert local.propensities is not None and local.policy == "plackett_luce:0.5@30"


def test_each_request_of_a_batch_can_carry_its_own_policy(live: Live) -> None:
    stochastic = in_process_engine(live.root, policy=parse_policy(POLICY, 30))
    plain = in_process_engine(live.root)
    user = int(live.parts.recommender.context.user_ids[7])
    ctxs = [RequestContext(request_id="mix-1"), RequestContext(request_id="mix-1")]
    fixed, drawn = stochastic.recommend(
        np.array([user, user]),
        np.array([10, 10]),
        ctxs,
        policies=[parse_policy("deterministic"), None],
    )
    [top] = plain.recommend(np.array([user]), np.array([10]), ctxs[:1])
    [alone] = stochastic.recommend(np.array([user]), np.array([10]), ctxs[:1])
    assert fixed.item_ids.tolist() == top.item_ids.tolist() and fixed.policy == "deterministic"
    assert drawn.item_ids.tolist() == alone.item_ids.tolist() and drawn.policy.startswith(
        "plackett"
    )
