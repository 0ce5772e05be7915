"""The simulated users: a truth fitted on MovieLens-100K and the behaviour around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.data.movielens import load_ml100k
from recsys.sim.world import DEVICES, World, WorldConfig


@pytest.fixture(scope="module")
def data(ml100k_dir: Path) -> object:
    return load_ml100k(ml100k_dir)


@pytest.fixture(scope="module")
def world(data: object) -> World:
    return World.fit(data, WorldConfig(seed=3))


def test_the_truth_follows_the_real_interactions(world: World, data: object) -> None:
    truth = world.truth
    inter = data.interactions  # type: ignore[attr-defined]
    u = np.searchsorted(truth.user_ids, inter["user_id"].to_numpy())
    i = np.searchsorted(truth.item_ids, inter["item_id"].to_numpy())
    rng = np.random.default_rng(0)
    pos = np.einsum("nf,nf->n", truth.users[u], truth.items[i])
    random_items = truth.items[rng.integers(0, len(truth.item_ids), len(u))]
    neg = np.einsum("nf,nf->n", truth.users[u], random_items)
    auc = float((pos[:, None] > neg[None, :5000]).mean())
    assert auc > 0.85  # the fitted scores separate real interactions from random pairs
    assert len(truth.user_ids) == 943 and len(truth.item_ids) == 1682
    assert "Comedy" in world.genre_names


def test_position_bias_fatigue_and_drift(world: World) -> None:
    items = np.arange(10)
    exam = world.examination(10)
    assert exam[0] == 1.0 and (np.diff(exam) < 0).all()
    fresh = world
    before = fresh.click_probability(5, items, 0, 0.0)
    fresh.react(5, items, 0, 0.0, np.random.default_rng(0))
    after = fresh.click_probability(5, items, 0, 0.0)
    assert (after < before).all()  # shown once: less attractive
    later = fresh.attraction_logit(7, items, 0, 30.0)
    now = fresh.attraction_logit(7, items, 0, 0.0)
    assert not np.allclose(later, now)  # tastes drift
    still = World.fit(_tiny(), WorldConfig(drift=0.0, seed=1))
    a = still.attraction_logit(0, np.arange(3), 0, 0.0)
    b = still.attraction_logit(0, np.arange(3), 0, 50.0)
    np.testing.assert_allclose(a, b)


def test_reactions_are_consistent_and_seeded(world: World) -> None:
    items = np.arange(20, 30)
    out = world.react(11, items, 1, 1.0, np.random.default_rng(4))
    assert (~out.clicked | out.examined).all()  # a click needs an examination
    assert ((out.dwell_s > 0) == out.clicked).all()
    assert ((out.true_ctr >= 0) & (out.true_ctr <= 1)).all()
    again = World.fit(_tiny(), WorldConfig(seed=9))
    other = World.fit(_tiny(), WorldConfig(seed=9))
    x = again.react(0, np.arange(4), 0, 0.0, np.random.default_rng(1))
    y = other.react(0, np.arange(4), 0, 0.0, np.random.default_rng(1))
    assert x.clicked.tolist() == y.clicked.tolist() and x.true_ctr.tolist() == y.true_ctr.tolist()


def test_device_and_hour_habits(world: World) -> None:
    rng = np.random.default_rng(0)
    user = 3
    devices = [world.visit_device(user, rng) for _ in range(4000)]
    share = np.mean(np.asarray(devices) == world.device[user])
    loyalty = world.config.device_loyalty
    expected = loyalty + (1 - loyalty) * world.config.device_mix[int(world.device[user])]
    assert abs(share - expected) < 0.03
    mobile = DEVICES.index("mobile")
    hours = np.asarray([world.visit_hour(mobile, rng) for _ in range(4000)])
    assert np.mean((hours >= 18) & (hours < 23)) > np.mean(hours < 6) * 3  # evenings


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="base_ctr"):
        WorldConfig(base_ctr=1.5)
    with pytest.raises(ValueError, match="device_mix"):
        WorldConfig(device_mix=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="fatigue"):
        WorldConfig(fatigue=-1)
    with pytest.raises(KeyError, match="not in the data"):
        World.fit(_tiny(), WorldConfig()).user_row(10**9)


def _tiny() -> object:
    from types import SimpleNamespace

    import pandas as pd

    rng = np.random.default_rng(0)
    inter = pd.DataFrame({"user_id": rng.integers(0, 20, 200), "item_id": rng.integers(0, 15, 200)})
    genres = [["A"] if n % 2 else ["B"] for n in range(15)]
    items = pd.DataFrame({"item_id": np.arange(15), "genres": genres})
    return SimpleNamespace(interactions=inter, items=items)


class _TopItems:
    """Shows the same items every visit (the simulator, not a model, is under test)."""

    def recommend(self, user: int, k: int, context: object) -> object:
        from recsys.sim.loop import Shown

        return Shown(items=list(range(k)), request_id=str(context.request_id))  # type: ignore[attr-defined]


def test_a_run_continued_with_first_step_equals_one_long_run() -> None:
    from recsys.sim.loop import SimConfig, simulate

    data = _tiny()
    config = {"k": 5, "visits_per_day": 7, "seed": 4}
    whole = simulate(World.fit(data, WorldConfig(seed=1, drift=0.3)), _TopItems(),
                     SimConfig(steps=40, **config))  # fmt: skip
    world = World.fit(data, WorldConfig(seed=1, drift=0.3))
    first = simulate(world, _TopItems(), SimConfig(steps=25, **config))
    rest = simulate(world, _TopItems(), SimConfig(steps=15, first_step=25, **config))
    assert [s.step for s in rest.steps] == list(range(25, 40))
    joined = first.steps + rest.steps
    # same users, clock, drift and fatigue: the same true click probabilities and clicks
    assert [s.request_ms for s in joined] == [s.request_ms for s in whole.steps]
    assert [s.true_ctr for s in joined] == [s.true_ctr for s in whole.steps]
    assert [s.clicked for s in joined] == [s.clicked for s in whole.steps]
    # starting again at step 0 on the same world is not the same run (fatigue, clock)
    again = simulate(world, _TopItems(), SimConfig(steps=15, **config))
    assert [s.true_ctr for s in again.steps] != [s.true_ctr for s in rest.steps]
    with pytest.raises(ValueError, match="first_step"):
        SimConfig(first_step=-1)


def test_fatigue_fades_with_its_half_life() -> None:
    items = np.arange(3)
    config = WorldConfig(seed=2, drift=0.0, fatigue=0.8, fatigue_half_life_days=2.0)
    world = World.fit(_tiny(), config)
    fresh = world.attraction_logit(0, items, 0, 0.0)
    for _ in range(3):  # three exposures on day 0
        world.react(0, items, 0, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(world.attraction_logit(0, items, 0, 0.0), fresh - 0.8 * 3)
    # two half-lives later the three exposures weigh 0.75
    np.testing.assert_allclose(world.attraction_logit(0, items, 0, 4.0), fresh - 0.8 * 0.75)
    world.react(0, items, 0, 4.0, np.random.default_rng(0))  # one more: 1.75 on day 4
    np.testing.assert_allclose(world.attraction_logit(0, items, 0, 6.0), fresh - 0.8 * 0.875)
    never = World.fit(_tiny(), WorldConfig(seed=2, drift=0.0, fatigue=0.8))
    for _ in range(3):
        never.react(0, items, 0, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(never.attraction_logit(0, items, 0, 40.0), fresh - 0.8 * 3)
    with pytest.raises(ValueError, match="fatigue_half_life_days"):
        WorldConfig(fatigue_half_life_days=0.0)
