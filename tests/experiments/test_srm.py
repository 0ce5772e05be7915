"""The sample-ratio-mismatch check against scipy.stats.chisquare, and on simulated splits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from recsys.experiments.simulate import SimulationConfig
from recsys.experiments.srm import srm_check
from recsys.experiments.validation import aa_study, srm_study


@pytest.mark.parametrize(
    ("counts", "weights"),
    [([5030, 4970], (1, 1)), ([4800, 5200], (0.5, 0.5)), ([1000, 2100, 6900], (1, 2, 7)),
     ([9050, 950], (9, 1))],
)  # fmt: skip
def test_the_statistic_and_p_value_are_scipys_chisquare(
    counts: list[int], weights: tuple[float, ...]
) -> None:
    r = srm_check(np.array(counts), weights)
    w = np.asarray(weights) / sum(weights)
    ref = stats.chisquare(counts, f_exp=w * sum(counts))
    assert float(r.statistic) == pytest.approx(ref.statistic, rel=1e-12)
    assert float(r.p_value) == pytest.approx(ref.pvalue, rel=1e-9)
    assert bool(r.flagged) == (ref.pvalue < 0.001)


def test_a_48_52_split_is_flagged() -> None:
    broken = SimulationConfig(units=20_000, weights=(0.48, 0.52))
    r = srm_study(broken, experiments=200, seed=41)
    assert r["flag_rate"] >= 0.95
    healthy = aa_study(SimulationConfig(units=20_000), experiments=200, seed=42)
    assert healthy["srm_false_flags"] <= 0.02  # level 0.001
