"""Segment lift: the delta-method interval over users, checked three independent ways.

1. statsmodels: a Poisson regression of clicks on membership with the impressions as
   exposure has the lift as its coefficient and, with user-clustered (sandwich)
   errors, the delta method's standard error;
2. a large user-level bootstrap gives the same spread;
3. over 200 simulated datasets with a known true lift and correlated clicks within
   each user, the 95 % interval covers the truth about 95 % of the time (and the naive
   interval that treats impressions as independent does not).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from recsys.events.attribution import Attribution, Exposure
from recsys.events.lift import SegmentTally, ratio_lift, render_lift_markdown, segment_lift

TRUE_LIFT = 0.2


def _simulate(
    rng: np.random.Generator, users: int = 400
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Per-user member and non-member clicks and impressions.

    Each user has their own click probability (Beta(1, 19), mean 5 %: clicks within a
    user are correlated); members click 1.2 times as often. 30 % of the users are
    members, 20 % changed membership and have exposures on both sides. The impressions
    are independent of the probabilities, so the true lift of the ratio metric is 0.2.
    """
    p = rng.beta(1.0, 19.0, users)
    group = rng.random(users)
    has_member = group < 0.5  # [0, 0.3): members only, [0.3, 0.5): both
    has_other = group >= 0.3
    n_m = np.where(has_member, 1 + rng.poisson(30, users), 0)
    n_o = np.where(has_other, 1 + rng.poisson(30, users), 0)
    c_m = rng.binomial(n_m, np.minimum(1.0, (1 + TRUE_LIFT) * p))
    c_o = rng.binomial(n_o, p)
    return c_m, n_m, c_o, n_o


def test_the_interval_is_statsmodels_poisson_regression_with_user_clusters() -> None:
    sm = pytest.importorskip("statsmodels.api")
    c_m, n_m, c_o, n_o = _simulate(np.random.default_rng(7))
    est = ratio_lift(c_m, n_m, c_o, n_o)
    # One row per user and side with impressions; the user is the cluster.
    rows = [(u, 1.0, c_m[u], n_m[u]) for u in range(len(c_m)) if n_m[u] > 0]
    rows += [(u, 0.0, c_o[u], n_o[u]) for u in range(len(c_o)) if n_o[u] > 0]
    user, member, clicks, shown = np.asarray(rows, dtype=np.float64).T
    fit = sm.GLM(
        clicks,
        sm.add_constant(member),
        family=sm.families.Poisson(),
        offset=np.log(shown),
    ).fit(cov_type="cluster", cov_kwds={"groups": user.astype(int), "use_correction": False})
    assert math.exp(fit.params[1]) - 1 == pytest.approx(est.lift, rel=1e-9)
    g = len(np.unique(user))
    # ratio_lift applies the small-sample factor G / (G - 1) to the sandwich
    assert est.se_log == pytest.approx(fit.bse[1] * math.sqrt(g / (g - 1)), rel=1e-6)
    # the same interval on the log scale as statsmodels' with that factor
    z = NormalDist().inv_cdf(0.975)
    low, high = fit.conf_int(alpha=0.05)[1]
    widen = z * (est.se_log - fit.bse[1])
    assert math.log1p(est.low) == pytest.approx(low - widen, abs=1e-9)
    assert math.log1p(est.high) == pytest.approx(high + widen, abs=1e-9)
    assert est.p_value == pytest.approx(2 * (1 - NormalDist().cdf(abs(fit.params[1]) / est.se_log)))


def test_a_user_level_bootstrap_gives_the_same_spread() -> None:
    rng = np.random.default_rng(11)
    c_m, n_m, c_o, n_o = _simulate(rng)
    est = ratio_lift(c_m, n_m, c_o, n_o)
    draws = rng.integers(0, len(c_m), size=(4000, len(c_m)))  # users, with replacement
    log_ratio = np.log(
        (c_m[draws].sum(1) / n_m[draws].sum(1)) / (c_o[draws].sum(1) / n_o[draws].sum(1))
    )
    assert float(np.std(log_ratio)) == pytest.approx(est.se_log, rel=0.08)
    lo, hi = np.quantile(log_ratio, [0.025, 0.975])
    assert math.log1p(est.low) == pytest.approx(lo, abs=0.03)
    assert math.log1p(est.high) == pytest.approx(hi, abs=0.03)


def test_the_95_percent_interval_covers_the_true_lift_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2024)
    covered = naive_covered = 0
    runs = 200
    for _ in range(runs):
        c_m, n_m, c_o, n_o = _simulate(rng)
        est = ratio_lift(c_m, n_m, c_o, n_o)
        covered += est.low <= TRUE_LIFT <= est.high
        # the interval that treats every impression as an independent trial
        se = math.sqrt(
            1 / c_m.sum() - 1 / n_m.sum() + 1 / c_o.sum() - 1 / n_o.sum()
        )  # binomial log-ratio
        log_ratio = math.log1p(est.lift)
        naive_covered += (
            math.exp(log_ratio - 1.96 * se) - 1 <= TRUE_LIFT <= math.exp(log_ratio + 1.96 * se) - 1
        )
    assert 0.92 <= covered / runs <= 0.98
    assert naive_covered / runs < 0.9  # clicks within a user are correlated


def _exposure(user: str, n: int, segments: tuple[str, ...], personalized: bool = True) -> Exposure:
    return Exposure(
        request_id=f"r-{user}-{n}-{segments}",
        user_id=user,
        ts_us=0,
        items=tuple(range(n)),
        propensities=(1.0,) * n,
        model="m",
        bundle="b",
        policy="p",
        rules=(),
        surface=None,
        segments=segments,
        personalized=personalized,
    )


def _join(exposure: Exposure, kind: str = "click") -> Attribution:
    return Attribution(
        event_id=f"{kind}-{exposure.request_id}",
        type=kind,
        user_id=exposure.user_id,
        item_id=0,
        request_id=exposure.request_id,
        position=0,
        propensity=1.0,
        model="m",
        bundle="b",
        policy="p",
        rules=(),
        surface=None,
        how="request_id",
        delay_s=1.0,
        segments=exposure.segments,
        personalized=exposure.personalized,
    )


def _tally(seed: int = 3, users: int = 200) -> tuple[SegmentTally, dict[str, Any]]:
    """Users with exposures in segments; the expected per-user counts beside them."""
    rng = np.random.default_rng(seed)
    exposures: list[Exposure] = []
    joins: list[Attribution] = []
    for u in range(users):
        p = rng.beta(2, 20)
        vip = rng.random() < 0.4
        for k in range(rng.integers(1, 6)):
            segments = ("vip", "all") if vip or (k == 0 and u % 7 == 0) else ("all",)
            exposure = _exposure(f"u{u}", int(rng.integers(3, 8)), segments)
            exposures.append(exposure)
            rate = p * (1.5 if "vip" in segments else 1.0)
            joins += [_join(exposure) for _ in range(rng.binomial(len(exposure.items), rate))]
            if rng.random() < 0.2:
                joins.append(_join(exposure, "purchase"))
    exposures.append(_exposure("anonymous", 10, (), personalized=False))
    joins.append(_join(exposures[-1]))
    # a segment of two users: too few members
    for u in (0, 1):
        exposures.append(_exposure(f"u{u}", 4, ("rare",)))
        joins.append(_join(exposures[-1]))
    tally = SegmentTally.of(exposures, joins)
    return tally, {"exposures": exposures, "joins": joins}


def test_the_report_splits_members_and_non_members_and_says_when_too_few() -> None:
    tally, data = _tally()
    rows = {(r.segment, r.metric): r for r in segment_lift(tally, min_users=30)}
    assert sorted({s for s, _ in rows}) == ["all", "rare", "vip"]
    vip = rows["vip", "ctr"]
    members = [e for e in data["exposures"] if e.personalized and "vip" in e.segments]
    others = [e for e in data["exposures"] if e.personalized and "vip" not in e.segments]
    assert vip.member_users == len({e.user_id for e in members})
    assert vip.member_impressions == sum(len(e.items) for e in members)
    assert vip.other_impressions == sum(len(e.items) for e in others)
    vip_clicks = sum(1 for j in data["joins"] if j.type == "click" and "vip" in j.segments
                     and j.personalized)  # fmt: skip
    assert vip.member_events == vip_clicks
    assert vip.member_rate == pytest.approx(vip_clicks / vip.member_impressions)
    assert vip.estimate is not None and vip.note is None
    assert vip.estimate.low < vip.estimate.lift < vip.estimate.high
    assert vip.estimate.lift == pytest.approx(vip.member_rate / vip.other_rate - 1)
    # only the two users' "rare" lists are outside "all": no interval
    assert rows["all", "ctr"].estimate is None and rows["all", "ctr"].other_users == 2
    assert rows["all", "ctr"].note == "too few non-members: 2 users (an interval needs 30)"
    rare = rows["rare", "conversion_rate"]
    assert rare.estimate is None and rare.member_users == 2
    assert rare.note == "too few members: 2 users (an interval needs 30)"
    # the anonymous list is in no comparison
    assert tally.skipped == 1 and tally.users == 200
    table = render_lift_markdown(list(rows.values()))
    assert "| vip | ctr |" in table and f"| {vip.member_impressions:,} |" in table
    assert "too few members: 2 users" in table and "delta method" in table
    flat = rows["vip", "ctr"].to_dict()
    assert flat["lift"] == vip.estimate.lift and flat["ci_low"] == vip.estimate.low


def test_a_side_without_outcomes_has_no_interval() -> None:
    exposures = [_exposure(f"u{u}", 5, ("s",) if u < 40 else ()) for u in range(80)]
    joins = [_join(e) for e in exposures[40:]]  # only non-members click
    (row,) = segment_lift(SegmentTally.of(exposures, joins), metrics=["ctr"])
    assert row.estimate is None and row.member_rate == 0.0
    assert row.note == "no clicks among members: the ratio has no interval"


def test_ratio_lift_refuses_what_has_no_interval() -> None:
    with pytest.raises(ValueError, match="impressions and outcomes"):
        ratio_lift([0, 0], [5, 5], [1, 2], [5, 5])
    with pytest.raises(ValueError, match="one length"):
        ratio_lift([1], [5, 5], [1, 2], [5, 5])
    with pytest.raises(ValueError, match="metrics must be among"):
        segment_lift(SegmentTally(), metrics=["revenue"])
