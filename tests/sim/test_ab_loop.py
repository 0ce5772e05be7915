"""An A/B test through the served arms and the simulated users, analysed like a real one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recsys.data.movielens import load_ml100k
from recsys.experiments import load_experiments
from recsys.serving.inprocess import engine_from_repository
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.sim import EngineRecommender, SimConfig, World, WorldConfig
from recsys.sim.ab_loop import run_ab

EXPERIMENTS = """
layers:
  - name: ranking_policy
    salt: sim-ab
    experiments:
      - name: explore_pl
        arms:
          - {name: control, weight: 1}
          - {name: explore, weight: 1, policy: "plackett_luce:0.3"}
"""


def test_an_ab_run_assigns_analyses_and_knows_the_truth(
    fresh_two_stage: Any, ml100k_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    root = tmp_path / "repository"
    build_repository(fresh_two_stage.bundle(tmp_path / "bundle"), root,
                     RepositoryConfig(experiments=str(path)))  # fmt: skip
    world = World.fit(load_ml100k(ml100k_dir), WorldConfig(seed=0))
    loaded = load_experiments(path)
    result = run_ab(
        world,
        EngineRecommender(engine_from_repository(root)),
        loaded,
        "explore_pl",
        SimConfig(steps=600, k=10, users=300, seed=2),
        report_dir=tmp_path / "report",
    )
    table = result.table
    assert len(table) == 600 and set(table["arm"]) == {"control", "explore"}
    # each user stays in the arm the offline assignment gives
    for unit, arm in table.groupby("unit")["arm"].first().items():
        [assignment] = loaded.experiments.assign(unit)
        assert assignment.arm == arm
    assert not result.analysis.srm.flagged
    # the analysis's CTR per arm is the log's
    [ctr] = [r for r in result.analysis.results if r.metric == "ctr"]
    for arm in ("control", "explore"):
        rows = table[table.arm == arm]
        assert result.truth[arm]["observed_ctr"] == pytest.approx(
            rows.clicks.sum() / rows.impressions.sum()
        )
    assert ctr.plain.n_control.sum() + ctr.plain.n_treatment.sum() == table.unit.nunique()
    assert 0 < result.truth["explore"]["true_ctr"] < 1
    assert (tmp_path / "report" / "report.md").is_file()
