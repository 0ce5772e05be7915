"""A bandit choosing a featured slot for the simulated users (truth fitted on ML-100K)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.bandits import make_bandit
from recsys.data.movielens import load_ml100k
from recsys.sim.slot_bandit import SlotConfig, genre_arms, genre_segments, run_slot, segment_encoder
from recsys.sim.world import World, WorldConfig


@pytest.fixture(scope="module")
def setup(ml100k_dir: Path) -> tuple[World, object, object, object]:
    data = load_ml100k(ml100k_dir)
    world = World.fit(data, WorldConfig(seed=0, trend=1.0))
    return world, genre_arms(world, data), genre_segments(world, data), segment_encoder(world)


def test_linucb_learns_the_slot_and_the_oracle_has_no_regret(setup: tuple) -> None:
    world, arms, segments, enc = setup
    cfg = SlotConfig(rounds=6000, seed=3)
    oracle = run_slot(world, arms, None, cfg, enc, segments)
    uniform = run_slot(world, arms, make_bandit("uniform", len(arms.items), enc.dim), cfg, enc,
                       segments)  # fmt: skip
    linucb = run_slot(world, arms, make_bandit("linucb", len(arms.items), enc.dim, alpha=0.5),
                      cfg, enc, segments)  # fmt: skip
    assert oracle.cumulative_regret[-1] == 0.0
    assert linucb.cumulative_regret[-1] < 0.75 * uniform.cumulative_regret[-1]
    assert linucb.rewards.mean() > uniform.rewards.mean()
    # the same seed gives the same run
    again = run_slot(world, arms, make_bandit("linucb", len(arms.items), enc.dim, alpha=0.5),
                     cfg, enc, segments)  # fmt: skip
    np.testing.assert_array_equal(again.arms, linucb.arms)
    assert len(arms.names) == len(arms.items) == len(world.genre_names)
    assert all(len(s) == 2 for s in segments)
