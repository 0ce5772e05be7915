"""Logged-data files: the documented columns round-trip through CSV and Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.ope.errors import OPEInputError
from recsys.ope.logged_io import read_logged, write_logged
from recsys.ope.reward_model import ridge_refit
from recsys.ope.synthetic import SyntheticBandit, SyntheticBanditConfig


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_log_round_trips(tmp_path: Path, suffix: str) -> None:
    problem = SyntheticBandit(SyntheticBanditConfig(n_actions=4, dim=2, n_contexts=100))
    log = problem.sample(300, seed=0, candidate=problem.candidates()["near"]).log
    log = ridge_refit()(log)
    back = read_logged(write_logged(log, tmp_path / f"log{suffix}"))
    for name in ("action", "position", "reward", "pscore", "target_pscore", "action_dist",
                 "reward_hat", "context"):  # fmt: skip
        np.testing.assert_allclose(getattr(back, name), getattr(log, name), rtol=1e-12)
    assert back.n_actions == 4


def test_columns_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    pd.DataFrame({"action": [0, 1], "reward": [1, 0]}).to_csv(path, index=False)
    with pytest.raises(OPEInputError, match=r"missing columns \['pscore'\]"):
        read_logged(path)
    frame = pd.DataFrame({"action": [0, 1], "reward": [1, 0], "pscore": [0.5, 0.5],
                          "pi_0": [0.5, 0.5], "pi_2": [0.5, 0.5]})  # fmt: skip
    frame.to_csv(path, index=False)
    with pytest.raises(OPEInputError, match="without gaps"):
        read_logged(path)
    frame = pd.DataFrame({"action": [0, 1], "reward": [1, 0], "pscore": [0.5, 0.0],
                          "target_pscore": [0.2, 0.3]})  # fmt: skip
    frame.to_csv(path, index=False)
    with pytest.raises(OPEInputError, match="pscore: must be > 0"):
        read_logged(path)
    frame["pscore"] = [0.5, 0.5]
    frame.to_csv(path, index=False)
    only_target = read_logged(path, n_actions=5)
    assert only_target.n_actions == 5 and only_target.action_dist is None
    assert only_target.target_pscore is not None
