"""The simple reward models DM and DR use."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ope.errors import OPEInputError
from recsys.ope.logged import LoggedBandit
from recsys.ope.reward_model import ItemPositionClickRate, RidgeRewardModel, item_position_refit


def test_click_rates_are_shrunk_towards_the_positions_rate() -> None:
    #          a0 at p0 twice (1 click), a1 at p0 once (0), a0 at p1 once (1 click)
    log = LoggedBandit.build(action=[0, 0, 1, 0], reward=[1, 0, 0, 1], pscore=[0.5] * 4,
                             position=[0, 0, 0, 1], n_positions=2, n_actions=3)  # fmt: skip
    raw = ItemPositionClickRate.fit(log, smoothing=0.0).rates
    assert raw[0, 0] == pytest.approx(1 / 2) and raw[1, 0] == 0.0 and raw[0, 1] == 1.0
    pos0 = 1 / 3  # position 0's click rate
    assert raw[2, 0] == pytest.approx(pos0)  # never shown: the position's rate
    smooth = ItemPositionClickRate.fit(log, smoothing=3.0).rates
    assert smooth[1, 0] == pytest.approx((0 + 3 * pos0) / (1 + 3))
    assert raw[1, 0] < smooth[1, 0] < pos0
    pred = item_position_refit(3.0)(log).reward_hat
    assert pred is not None
    np.testing.assert_allclose(pred[3], smooth[:, 1])  # row 3 sits at position 1
    with pytest.raises(OPEInputError, match="smoothing"):
        ItemPositionClickRate.fit(log, smoothing=-1.0)


def test_ridge_recovers_linear_rewards() -> None:
    rng = np.random.default_rng(0)
    n, d, k = 4000, 3, 2
    x = rng.normal(size=(n, d))
    coef = rng.normal(size=(k, d))
    action = rng.integers(0, k, size=n)
    reward = np.einsum("ij,ij->i", x, coef[action]) + 0.5 + rng.normal(scale=0.01, size=n)
    model = RidgeRewardModel.fit(x, action, reward, k, l2=1e-6)
    np.testing.assert_allclose(model.coef[:, :d], coef, atol=0.01)
    np.testing.assert_allclose(model.coef[:, -1], 0.5, atol=0.01)
    assert model.predict(x).shape == (n, k)


def test_ridge_predictions_stay_in_the_range_of_the_rewards() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    action = rng.integers(0, 2, size=200)
    reward = (x[:, 0] > 0).astype(float)  # clicks: a linear fit leaves [0, 1]
    model = RidgeRewardModel.fit(x, action, reward, 2)
    far = np.array([[10.0, 0.0], [-10.0, 0.0]])
    raw = model.predict(far, clip=False)
    assert raw.max() > 1.0 and raw.min() < 0.0
    clipped = model.predict(far)
    assert clipped.min() == 0.0 and clipped.max() == 1.0
