"""A/B arms that change request parameters and the ranker version, in a real Triton server.

The repository is built from ``fresh_two_stage``'s bundle plus a second bundle whose
ranker is the first one negated (the last layer's weights times -1), added as version 2
of ``ranker``. One layer splits the users over three arms: ``control`` (the served
settings), ``diverse`` (only ``params: {mmr_lambda: 0.3, num_candidates: 40}``) and
``ranker_v2`` (only ``model: ranker:2``). Every served list must be the list
``TwoStageRecommender.recommend()`` gives offline for that user with the arm's settings
or ranker; the exposure's ``model`` and ``params`` and the explanation must say what
the list was made with. ``build_repository`` must refuse an arm naming a ranker version
the repository lacks, and parameters the served settings refuse.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from serving_kit import assert_same_ranking, read_exposures

from recsys.events.sqlite_store import SqliteStore
from recsys.events.validation import validate_event
from recsys.experiments import load_experiments
from recsys.recommend.two_stage import TrainedRanker
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository, model_versions
from recsys.serving.server import LocalTritonServer, TritonServerConfig

pytestmark = [pytest.mark.triton]

EXPERIMENTS = """
layers:
  - name: ranking
    salt: test-ranking-params
    experiments:
      - name: params_and_model
        arms:
          - {name: control, weight: 1}
          - {name: diverse, weight: 1, params: {mmr_lambda: 0.3, num_candidates: 40}}
          - {name: ranker_v2, weight: 1, model: "ranker:2"}
"""


def _negated(ranker: TrainedRanker) -> TrainedRanker:
    """The same ranker with its logits negated: another ranker with the same inputs."""
    model = copy.deepcopy(ranker.model)
    last = [m for m in model.dlrm.over_arch.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    return TrainedRanker(model.eval(), ranker.scaler, ranker.data_config)


@dataclass
class Live:
    url: str
    db: Path
    root: Path
    experiments: Any
    users: list[int]
    offline: dict[str, Any]  # arm -> (recommender, aggregation config or None)


@pytest.fixture(scope="module")
def second_bundle(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The recommender with the negated ranker, and its bundle."""
    from serving_kit import SmallTwoStage

    other = copy.copy(fresh_two_stage.recommender)
    other.ranker = _negated(fresh_two_stage.recommender.ranker)
    parts = SmallTwoStage(other, fresh_two_stage.two_tower, fresh_two_stage.schema,
                          fresh_two_stage.dataset)  # fmt: skip
    return other, parts.bundle(tmp_path_factory.mktemp("ranker2") / "bundle")


@pytest.fixture(scope="module")
def live(
    fresh_two_stage: Any, second_bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp("experiment_params")
    db = tmp / "rt.db"
    SqliteStore(db).close()
    path = tmp / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    root = tmp / "repository"
    other, other_bundle = second_bundle
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(
            exposure_log=f"sqlite://{db}",
            experiments=str(path),
            ranker_bundles=(str(other_bundle.root),),
        ),
    )
    base = fresh_two_stage.recommender
    shallow = copy.copy(base)  # the diverse arm's retrieval depth
    shallow.num_candidates = 40
    offline = {
        "control": (base, None),
        "diverse": (shallow, base.config.with_updates(mmr_lambda=0.3)),
        "ranker_v2": (other, None),
    }
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    users = [int(u) for u in base.context.user_ids[:90]]
    with LocalTritonServer(config) as server:
        yield Live(server.grpc_url, db, root, load_experiments(path).experiments, users, offline)


def test_the_repository_holds_both_ranker_versions(live: Live) -> None:
    assert model_versions(live.root, "ranker") == [1, 2]
    text = (live.root / "ranker" / "config.pbtxt").read_text()
    assert "version_policy: { all: { } }" in text


def test_each_arm_serves_the_offline_list_of_its_params_or_ranker(live: Live) -> None:
    served: dict[str, tuple[int, str, Any]] = {}
    with RecommendClient(live.url) as client:
        for user in live.users:
            [assignment] = live.experiments.assign(str(user))
            rid = f"params-{user}"
            rec = client.recommend(user, 10, context={"request_id": rid})
            served[rid] = (user, assignment.arm, rec)
    per_arm = {a: sum(1 for _, arm, _ in served.values() if arm == a) for a in live.offline}
    assert min(per_arm.values()) >= 15, per_arm  # every arm is exercised
    differs = {arm: 0 for arm in live.offline}
    for user, arm, rec in served.values():
        recommender, cfg = live.offline[arm]
        out = recommender.recommend(np.array([user]), 10, cfg)
        items, scores = out.item_ids[0][out.valid[0]], out.scores[0][out.valid[0]]
        assert_same_ranking(rec.item_ids, rec.scores, items, scores, what=f"{arm} user {user}")
        control = live.offline["control"][0].recommend(np.array([user]), 10)
        differs[arm] += not np.array_equal(control.item_ids[0], items)
    # the arms really change the lists (else the comparison above proves nothing)
    assert differs["control"] == 0
    assert differs["diverse"] >= per_arm["diverse"] // 2
    assert differs["ranker_v2"] >= per_arm["ranker_v2"] // 2

    exposures = read_exposures(live.db, set(served))
    for rid, (_, arm, rec) in served.items():
        payload = exposures[rid]["payload"]
        validate_event(exposures[rid])
        assert payload["arm"] == arm
        explanation = rec.explanation
        if arm == "ranker_v2":
            assert payload["model"] == "recommend:1/ranker:2"
            assert explanation["ranker"] == "ranker:2"
        else:
            assert payload["model"] == "recommend:1"
            assert "ranker" not in explanation
        if arm == "diverse":
            assert payload["params"] == ["mmr_lambda=0.3", "num_candidates=40"]
            assert explanation["params"] == {"mmr_lambda": 0.3, "num_candidates": 40}
        else:
            assert "params" not in payload and "params" not in explanation


def test_the_in_process_engine_routes_the_same_arms_as_the_server(live: Live) -> None:
    from recsys.serving.inprocess import engine_from_repository

    engine = engine_from_repository(live.root, user_state=False)
    users = live.users[:30]
    with RecommendClient(live.url) as client:
        served = [client.recommend(u, 10) for u in users]
    answers = engine.recommend(np.array(users), [10] * len(users))
    for user, rec, answer in zip(users, served, answers, strict=True):
        assert_same_ranking(rec.item_ids, rec.scores, answer.item_ids, answer.scores,
                            what=f"user {user}")  # fmt: skip
        assert answer.explanation() == rec.explanation


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ('model: "ranker:3"', "model 'ranker:3' is not in the repository"),
        ("params: {num_candidates: 5000}", "exceeds the served max_k"),
        (
            "params: {ranker_weight: 0, retrieval_weight: 0, freshness_weight: 0}",
            "every score weight is 0",
        ),
    ],
)
def test_build_repo_refuses_arms_the_repository_cannot_serve(
    fresh_two_stage: Any, second_bundle: Any, tmp_path: Path, arm: str, message: str
) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(
        "layers:\n  - name: ranking\n    experiments:\n      - name: bad\n        arms:\n"
        "          - {name: control, weight: 1}\n"
        f"          - {{name: treatment, weight: 1, {arm}}}\n"
    )
    with pytest.raises(ValueError, match=message) as caught:
        build_repository(
            fresh_two_stage.bundle(tmp_path / "bundle"),
            tmp_path / "repository",
            RepositoryConfig(experiments=str(path), ranker_bundles=(str(second_bundle[1].root),)),
        )
    assert "experiment 'bad' arm 'treatment'" in str(caught.value)
