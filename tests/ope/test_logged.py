"""LoggedBandit checks its columns and says which field and rows are wrong."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ope.errors import OPEInputError
from recsys.ope.logged import LoggedBandit


def _log(**overrides: object) -> LoggedBandit:
    cols: dict[str, object] = {
        "action": [0, 1, 2, 1],
        "reward": [1.0, 0.0, 0.0, 1.0],
        "pscore": [0.2, 0.5, 0.3, 0.5],
        "n_actions": 3,
    }
    cols.update(overrides)
    return LoggedBandit.build(**cols)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pscore", "message"),
    [
        ([0.2, 0.0, 0.3, 0.5], "must be > 0"),
        ([0.2, -0.1, 0.3, 0.5], "must be > 0"),
        ([0.2, np.nan, 0.3, 0.5], "NaN"),
        ([0.2, 1.5, 0.3, 0.5], "<= 1"),
        ([0.2, np.inf, 0.3, 0.5], "NaN or infinite"),
    ],
)
def test_bad_propensities_are_refused_with_the_row(pscore: list[float], message: str) -> None:
    with pytest.raises(OPEInputError, match=message) as err:
        _log(pscore=pscore)
    assert "pscore" in str(err.value) and "row 1" in str(err.value)


def test_shapes_and_ranges_are_checked() -> None:
    with pytest.raises(OPEInputError, match="pscore: expected 4 rows"):
        _log(pscore=[0.5, 0.5])
    with pytest.raises(OPEInputError, match=r"action: must lie in \[0, 3\)"):
        _log(action=[0, 1, 3, 1])
    with pytest.raises(OPEInputError, match="action: expected integers"):
        _log(action=[0, 1.5, 2, 1])
    with pytest.raises(OPEInputError, match="reward: NaN"):
        _log(reward=[1.0, np.nan, 0.0, 0.0])
    with pytest.raises(OPEInputError, match="1-d"):
        _log(reward=[[1.0, 0.0, 0.0, 1.0]])
    with pytest.raises(OPEInputError, match="no rows"):
        LoggedBandit.build(action=[], reward=[], pscore=[], n_actions=2)
    with pytest.raises(OPEInputError, match=r"action_dist: expected shape \(4, 3\)"):
        _log(action_dist=np.full((4, 2), 0.5))


def test_candidate_distributions_must_be_probabilities_summing_to_one() -> None:
    good = np.array([[0.2, 0.3, 0.5]] * 4)
    with pytest.raises(OPEInputError, match="sum to 1"):
        _log(action_dist=good * 0.9)
    bad = good.copy()
    bad[2] = [1.2, -0.2, 0.0]
    with pytest.raises(OPEInputError, match=r"action_dist.*>= 0.*row 2"):
        _log(action_dist=bad)
    with pytest.raises(OPEInputError, match=r"target_pscore.*<= 1"):
        _log(target_pscore=[0.1, 1.1, 0.2, 0.3])
    with pytest.raises(OPEInputError, match="disagrees"):
        _log(action_dist=good, target_pscore=[0.9, 0.9, 0.9, 0.9])


def test_the_candidates_probability_of_the_logged_action_is_picked_per_row() -> None:
    rng = np.random.default_rng(0)
    dist = rng.dirichlet(np.ones(3), size=4)
    log = _log(action_dist=dist)
    assert log.target_pscore is not None
    for i, a in enumerate(log.action):
        assert log.target_pscore[i] == dist[i, a]
    np.testing.assert_allclose(log.importance_weights(), log.target_pscore / log.pscore)


def test_take_resamples_every_column_together() -> None:
    rng = np.random.default_rng(1)
    log = _log(
        action_dist=rng.dirichlet(np.ones(3), size=4),
        reward_hat=rng.random((4, 3)),
        context=rng.normal(size=(4, 2)),
        position=[0, 1, 0, 1],
    )
    sub = log.take([3, 3, 0])
    assert sub.n_rounds == 3 and sub.n_positions == log.n_positions == 2
    for name in ("action", "reward", "pscore", "position", "target_pscore"):
        np.testing.assert_array_equal(getattr(sub, name), getattr(log, name)[[3, 3, 0]])
    assert sub.action_dist is not None and log.action_dist is not None
    np.testing.assert_array_equal(sub.action_dist, log.action_dist[[3, 3, 0]])


def test_weights_need_a_candidate() -> None:
    with pytest.raises(OPEInputError, match="no candidate"):
        _log().importance_weights()
    assert _log().on_policy_value() == pytest.approx(np.mean([1.0, 0.0, 0.0, 1.0]))
