"""A bandit choosing a featured slot for the simulated users (truth fitted on ML-100K)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys.bandits import make_bandit
from recsys.data.movielens import load_ml100k
from recsys.sim.slot_bandit import (
    SlotConfig,
    genre_arms,
    genre_counts,
    genre_segments,
    linear_limit,
    run_slot,
    segment_encoder,
)
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
    # the full-information linear reference: uniform's expected regret is the simulated
    # one (up to chance and the mid-day clock), the fitted models lose far less
    limit = linear_limit(world, arms, cfg, enc, segments)
    assert limit["uniform"] == pytest.approx(uniform.cumulative_regret[-1], rel=0.05)
    assert 0 < limit["daily_fit"] <= limit["single_fit"] < 0.75 * limit["uniform"]


def _tiny() -> tuple[SimpleNamespace, SimpleNamespace]:
    """Genres A, B, C; items 10 (A), 11 (B), 12 (A and C); users 1, 2, 3."""
    truth = SimpleNamespace(
        user_ids=np.array([1, 2, 3]),
        item_ids=np.array([10, 11, 12]),
        genres=[("A",), ("B",), ("A", "C")],
    )
    world = SimpleNamespace(truth=truth, genre_names=["A", "B", "C"])
    world.item_rows = lambda raw: np.searchsorted(truth.item_ids, raw)
    interactions = pd.DataFrame(
        {"user_id": [1, 1, 1, 1, 2, 2, 2, 3], "item_id": [10, 10, 12, 11, 11, 11, 11, 12]}
    )
    return world, SimpleNamespace(interactions=interactions)


def test_genre_segments_likes_loves_avoids_on_a_tiny_profile() -> None:
    world, data = _tiny()
    counts, n = genre_counts(world, data)
    np.testing.assert_array_equal(counts, [[3, 1, 1], [0, 3, 0], [1, 0, 1]])
    np.testing.assert_array_equal(n, [4, 3, 1])
    # likes: the top genres the user touched (ties: the genre listed first)
    assert genre_segments(world, data, top=2) == [
        ("likes_A", "likes_B"),
        ("likes_B",),
        ("likes_A", "likes_C"),
    ]
    # overall shares A 4/8, B 4/8, C 2/8; loves: the user's share above 1.4 times that
    # (A > 0.7, B > 0.7, C > 0.35); avoids: an untouched genre in at least 3 interactions
    assert genre_segments(world, data, top=1, loves_lift=1.4, avoids_min=3) == [
        ("likes_A", "loves_A"),
        ("likes_B", "loves_B", "avoids_A", "avoids_C"),
        ("likes_A", "loves_A", "loves_C"),
    ]
    assert genre_segments(world, data, top=0, loves_lift=1.5) == [
        (),
        ("loves_B",),
        ("loves_A", "loves_C"),
    ]
    enc = segment_encoder(world, ("likes", "loves", "avoids"))
    assert enc.segments == tuple(f"{k}_{g}" for k in ("likes", "loves", "avoids") for g in "ABC")
    with pytest.raises(ValueError, match="unknown segment kinds"):
        segment_encoder(world, ("hates",))
    with pytest.raises(ValueError, match="top"):
        genre_segments(world, data, top=-1)
