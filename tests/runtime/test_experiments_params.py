"""Arm parameters and model versions: the declared table, load-time errors at
``file:line:column``, the merged changes, and the engine applying them in the request.

The engine here is small and real: random tables of 40 users x 120 items, a linear user
tower, exact dot-product retrieval and relevance from the retrieval score (no ranker), so
the aggregation and MMR steps run exactly as in serving. An arm's parameters must give
the list an engine whose tables carry those settings gives, and record them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recsys.experiments.errors import ExperimentConfigError
from recsys.experiments.loader import load_experiments_text
from recsys.runtime.context import RequestContext
from recsys.runtime.engine import RecommendEngine, RecommendTables
from recsys.runtime.experiments import (
    ARM_PARAMS,
    Arm,
    Assignment,
    Changes,
    Experiment,
    ExperimentSet,
    Layer,
    check_param,
    merged_changes,
    parse_model,
)
from recsys.runtime.ranking import AggregationSettings

FILE = """\
layers:
  - name: ranking
    experiments:
      - name: exp
        arms:
          - {name: control, weight: 1}
          - {name: treatment, weight: 1, ARM}
"""


def _load(arm: str) -> object:
    return load_experiments_text(FILE.replace("ARM", arm), "exp.yaml")


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("mmr_lambda", 0.0, True),
        ("mmr_lambda", 1.0, True),
        ("mmr_lambda", 1.0001, False),
        ("mmr_depth", 5, True),
        ("mmr_depth", 5.5, False),
        ("mmr_depth", 0, False),
        ("temperature", 0.0, False),  # open at 0: a temperature must be > 0
        ("temperature", 0.01, True),
        ("epsilon", True, False),  # YAML's true is not a number
        ("num_candidates", 100_001, False),
        ("ranker_weight", float("nan"), False),
    ],
)
def test_param_table_checks_kind_and_range(name: str, value: object, ok: bool) -> None:
    assert (check_param(name, value) is None) is ok


def test_every_settings_param_is_a_served_setting() -> None:
    fields = set(AggregationSettings().to_dict()) | {"num_candidates", "epsilon", "temperature"}
    assert set(ARM_PARAMS) <= fields


@pytest.mark.parametrize(
    ("arm", "message", "token"),
    [
        ("params: {mmr_lamda: 0.3}", "unknown parameter 'mmr_lamda'", "mmr_lamda"),
        ("params: {mmr_lambda: 1.5}", "parameter 'mmr_lambda' must be in [0, 1]", "1.5"),
        ("params: {mmr_depth: 2.5}", "must be an integer", "2.5"),
        ('model: "ranker"', "must be <model>:<version>", '"ranker"'),
        ('model: "user_tower:2"', "must be <model>:<version>", '"user_tower:2"'),
        ('policy: "plackett_luce:1", params: {epsilon: 0.1}', "each choose the slate policy", "{"),
        ("params: {epsilon: 0.1, temperature: 1}", "each choose the slate policy", "{"),
    ],
)
def test_bad_params_and_models_fail_at_their_line_and_column(
    arm: str, message: str, token: str
) -> None:
    line = FILE.replace("ARM", arm).splitlines()[6]
    column = line.index(token) + 1  # the node that is wrong (the arm itself for "{")
    with pytest.raises(ExperimentConfigError) as caught:
        _load(arm)
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"exp.yaml:7:{column}:"), text
    assert "arm 'treatment'" in text


def test_a_policy_parameter_counts_as_changing_the_policy() -> None:
    assert Arm("a", 1.0, params={"epsilon": 0.2, "mmr_lambda": 0.5}).changes() == (
        "policy",
        "params.mmr_lambda",
    )
    two_layers = """\
layers:
  - name: one
    experiments:
      - name: a
        arms: [{name: c, weight: 1}, {name: t, weight: 1, policy: "plackett_luce:1"}]
  - name: two
    experiments:
      - name: b
        arms: [{name: c, weight: 1}, {name: t, weight: 1, params: {temperature: 2}}]
"""
    with pytest.raises(ExperimentConfigError, match="changes 'policy', which layer 'one'"):
        load_experiments_text(two_layers, "two.yaml")


def test_merged_changes_give_the_policy_and_the_settings_overrides() -> None:
    a = Assignment("l1", "e1", "t", 1, params={"temperature": 0.5})
    b = Assignment("l2", "e2", "t", 2, model="ranker:2", params={"mmr_lambda": 0.2})
    changes = merged_changes([a, b])
    assert changes.effective_policy == "plackett_luce:0.5"
    assert changes.settings_params == {"mmr_lambda": 0.2}
    assert changes.model == "ranker:2"
    assert Changes(policy="deterministic", params={"epsilon": 0.3}).effective_policy == (
        "deterministic"
    )
    assert parse_model(" ranker:12 ") == ("ranker", 12)


# -- the engine -------------------------------------------------------------------------

N_USERS, N_ITEMS, DIM = 40, 120, 6


def _tables(settings: AggregationSettings, num_candidates: int = 30) -> RecommendTables:
    rng = np.random.default_rng(3)
    seen = [rng.choice(N_ITEMS, size=4, replace=False) for _ in range(N_USERS)]
    vectors = rng.normal(size=(N_ITEMS, DIM))
    return RecommendTables(
        user_ids=np.arange(100, 100 + N_USERS),
        item_ids=np.arange(1000, 1000 + N_ITEMS),
        user_tower_ids=np.arange(N_USERS).reshape(N_USERS, 1, 1),
        user_tower_features=["user_id"],
        user_tower_num_embeddings={"user_id": N_USERS},
        seen_indptr=np.cumsum([0] + [len(s) for s in seen]),
        seen_indices=np.concatenate(seen),
        item_count=rng.integers(1, 50, N_ITEMS),
        request_time=np.full(N_USERS, 1.6e9),
        release_time=rng.uniform(0.9e9, 1.6e9, N_ITEMS),
        item_embeddings=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        blocked=np.zeros(0, dtype=np.int64),
        settings=settings,
        num_candidates=num_candidates,
    )


USER_VECTORS = np.random.default_rng(4).normal(size=(N_USERS, DIM)).astype(np.float32)
ITEM_VECTORS = np.random.default_rng(5).normal(size=(N_ITEMS, DIM)).astype(np.float32)


def _tower(ids: np.ndarray) -> np.ndarray:
    return USER_VECTORS[ids[:, 0, 0]]


def _retrieval(queries: np.ndarray, top_n: np.ndarray) -> tuple[np.ndarray, ...]:
    scores = queries @ ITEM_VECTORS.T
    width = int(top_n.max())
    order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    return order, np.take_along_axis(scores, order, axis=1), np.minimum(top_n, N_ITEMS)


BASE = AggregationSettings(ranker_weight=0.0, retrieval_weight=1.0, freshness_weight=0.5,
                           mmr_lambda=1.0)  # fmt: skip


def _engine(settings: AggregationSettings = BASE, n: int = 30, **kw: object) -> RecommendEngine:
    return RecommendEngine(_tables(settings, n), None, _tower, _retrieval, None, max_k=60, **kw)  # type: ignore[arg-type]


def _one_layer(*arms: Arm) -> ExperimentSet:
    return ExperimentSet(
        (Layer("l", "l", "user", (Experiment("e", "l", 0, 9_999, 1.0, arms, "l/e"),)),)
    )


def test_an_arms_params_give_the_list_of_engine_with_those_settings() -> None:
    arms = (
        Arm("control", 1.0),
        Arm("diverse", 1.0, params={"mmr_lambda": 0.2, "freshness_weight": 2.0, "mmr_depth": 8}),
        Arm("deep", 1.0, params={"num_candidates": 55}),
    )
    experiments = _one_layer(*arms)
    engine = _engine(experiments=experiments)
    references = {
        "control": _engine(),
        "diverse": _engine(replace(BASE, mmr_lambda=0.2, freshness_weight=2.0, mmr_depth=8)),
        "deep": _engine(n=55),
    }
    users = np.arange(100, 100 + N_USERS)
    answers = engine.recommend(users, np.full(N_USERS, 10))
    seen_arms = set()
    changed = 0
    for user, answer in zip(users.tolist(), answers, strict=True):
        [assignment] = experiments.assign(str(user))
        seen_arms.add(assignment.arm)
        [want] = references[assignment.arm].recommend(np.array([user]), [10])
        np.testing.assert_array_equal(answer.item_ids, want.item_ids)
        np.testing.assert_allclose(answer.scores, want.scores, atol=1e-5)  # batch float order
        [control] = references["control"].recommend(np.array([user]), [10])
        changed += assignment.arm != "control" and not np.array_equal(
            control.item_ids, answer.item_ids
        )
        arm = next(a for a in arms if a.name == assignment.arm)
        assert answer.params == dict(arm.params)
        assert answer.explanation().get("params", {}) == dict(arm.params)
        assert (answer.exposure_extra() or {}).get("params", []) == [
            f"{k}={v}" for k, v in sorted(arm.params.items())
        ]
    assert seen_arms == {"control", "diverse", "deep"}
    assert changed >= 10  # the overrides do change lists


def test_policy_params_set_the_slate_policy() -> None:
    arm = Arm("t", 1.0, params={"epsilon": 0.4})
    engine = _engine(experiments=_one_layer(Arm("c", 1.0), arm))
    users = np.arange(100, 100 + N_USERS)
    ctx = [RequestContext(request_id=f"r{u}") for u in users.tolist()]
    for user, answer in zip(users.tolist(), engine.recommend(users, [5] * N_USERS, ctx),
                            strict=True):  # fmt: skip
        arm = engine.experiments.assign(str(user))[0].arm  # type: ignore[union-attr]
        assert answer.policy == ("epsilon_greedy:0.4@50" if arm == "t" else "deterministic")
        assert answer.params == {}  # the policy records itself, not as a param


def test_num_candidates_is_capped_at_max_k_and_recorded_as_applied() -> None:
    engine = _engine()
    assert engine.variant({"num_candidates": 5000}).num_candidates == engine.max_k == 60
    assert dict(engine.variant({"num_candidates": 5000}).params) == {"num_candidates": 60}


def test_the_engine_refuses_arms_it_cannot_serve_at_start_up() -> None:
    with pytest.raises(ValueError, match="arm 't': model 'ranker:2' is not served"):
        _engine(experiments=_one_layer(Arm("c", 1.0), Arm("t", 1.0, model="ranker:2")))
    with pytest.raises(ValueError, match="ranker_weight > 0 needs the ranker"):
        ranked = Arm("t", 1.0, params={"ranker_weight": 1.0})
        _engine(experiments=_one_layer(Arm("c", 1.0), ranked))
    with pytest.raises(ValueError, match="every score weight is 0"):
        _engine(experiments=_one_layer(
            Arm("c", 1.0), Arm("t", 1.0, params={"retrieval_weight": 0, "freshness_weight": 0})
        ))  # fmt: skip
