"""Experiment assignment: determinism, uniform buckets, exclusivity, independence, ramp-up,
weights, targeting, session units, and the checks of a compiled set."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from recsys.runtime.context import RequestContext
from recsys.runtime.experiments import (
    Arm,
    Assignment,
    Experiment,
    ExperimentSet,
    Layer,
    Targeting,
    bucket_of,
    merged_changes,
)

UNITS = [str(u) for u in range(40_000)]
ARMS = (Arm("control", 1.0), Arm("treatment", 1.0, policy="epsilon_greedy:0.1"))


EVERYONE = Targeting()


def experiment(name: str, first: int = 0, last: int = 9_999, traffic: float = 1.0,
               arms: tuple[Arm, ...] = ARMS, targeting: Targeting = EVERYONE,
               layer: str = "ranking") -> Experiment:  # fmt: skip
    return Experiment(name, layer, first, last, traffic, arms, f"{layer}/{name}", targeting)


def one_layer(*experiments: Experiment, salt: str = "ranking", unit: str = "user") -> ExperimentSet:
    return ExperimentSet((Layer("ranking", salt, unit, experiments),))


def test_the_bucket_is_sha256_of_salt_and_unit_mod_buckets() -> None:
    expected = int.from_bytes(hashlib.sha256(b"layer-a:user-17").digest()[:8], "big") % 10_000
    assert bucket_of("layer-a", "user-17") == expected
    assert bucket_of("layer-a", "user-17", 100) == expected % 100


def test_assignment_is_deterministic_and_integer_ids_hash_as_text() -> None:
    s = one_layer(experiment("e"))
    first = [s.assign(u) for u in UNITS[:2000]]
    # a second, separately built set: nothing depends on process state
    again = one_layer(experiment("e"))
    assert first == [again.assign(u) for u in UNITS[:2000]]
    assert s.assign(123) == s.assign("123")
    # and in a fresh interpreter (hash randomization does not touch SHA-256)
    code = (
        "from recsys.runtime.experiments import *\n"
        "arms = (Arm('control', 1.0), Arm('treatment', 1.0))\n"
        "e = Experiment('e', 'ranking', 0, 9999, 1.0, arms, 'ranking/e')\n"
        "s = ExperimentSet((Layer('ranking', 'ranking', 'user', (e,)),))\n"
        "print(''.join(s.assign(str(u))[0].arm[0] for u in range(200)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "".join(a[0].arm[0] for a in first[:200])


def test_buckets_are_uniform() -> None:
    counts = np.bincount([bucket_of("ranking", u, 100) for u in UNITS], minlength=100)
    result = stats.chisquare(counts)
    assert result.pvalue > 0.001, result
    # the full 10,000-bucket space is filled evenly too (about 4 units a bucket)
    full = np.bincount([bucket_of("ranking", u) for u in UNITS], minlength=10_000)
    assert stats.chisquare(full).pvalue > 0.001


def test_arms_follow_their_weights() -> None:
    arms = (Arm("a", 1.0), Arm("b", 2.0), Arm("c", 7.0))
    s = one_layer(experiment("e", arms=arms))
    counts = Counter(s.assign(u)[0].arm for u in UNITS)
    observed = [counts["a"], counts["b"], counts["c"]]
    expected = np.array([0.1, 0.2, 0.7]) * len(UNITS)
    assert stats.chisquare(observed, expected).pvalue > 0.001
    # a broken 45/55 split of the same units would be rejected: the test has power
    assert stats.chisquare(observed, np.array([0.12, 0.2, 0.68]) * len(UNITS)).pvalue < 0.001


def test_experiments_of_a_layer_are_mutually_exclusive() -> None:
    s = one_layer(experiment("a", 0, 2_999), experiment("b", 3_000, 5_999),
                  experiment("c", 6_000, 9_999))  # fmt: skip
    seen: Counter[str] = Counter()
    for u in UNITS:
        found = s.assign(u)
        assert len(found) == 1  # every bucket is owned here, and by one experiment only
        seen[found[0].experiment] += 1
        bucket = found[0].bucket
        owner = "a" if bucket < 3000 else "b" if bucket < 6000 else "c"
        assert found[0].experiment == owner
    assert stats.chisquare([seen["a"], seen["b"], seen["c"]],
                           np.array([0.3, 0.3, 0.4]) * len(UNITS)).pvalue > 0.001  # fmt: skip


def test_free_buckets_assign_nothing() -> None:
    s = one_layer(experiment("a", 0, 4_999))
    free = [u for u in UNITS[:4000] if not s.assign(u)]
    assert free and all(bucket_of("ranking", u) >= 5_000 for u in free)
    assert 0.45 < len(free) / 4000 < 0.55


def test_layers_are_independent() -> None:
    s = ExperimentSet(
        (
            Layer("policy", "policy-1", "user", (experiment("p", layer="policy"),)),
            Layer("model", "model-1", "user", (experiment("m", arms=(
                Arm("control", 1.0), Arm("v2", 1.0, model="ranker:2")), layer="model"),)),
        )
    )  # fmt: skip
    table = np.zeros((2, 2), dtype=np.int64)
    for u in UNITS:
        a, b = s.assign(u)
        table[int(a.arm != "control"), int(b.arm != "control")] += 1
    # chi-square test of independence of the two layers' arms
    assert stats.chi2_contingency(table).pvalue > 0.001, table
    # two layers with one salt (which ExperimentSet refuses) would be fully dependent:
    # the same test rejects them, so it has the power to see dependence
    x = Layer("x", "same", "user", (experiment("x", layer="x"),))
    y = Layer("y", "same", "user", (experiment("y", layer="y"),))
    dependent = np.zeros((2, 2), dtype=np.int64)
    for u in UNITS[:4000]:
        ax, ay = x.assign(u, (), RequestContext()), y.assign(u, (), RequestContext())
        assert ax is not None and ay is not None
        dependent[int(ax.bucket < 5000), int(ay.bucket < 5000)] += 1
    assert stats.chi2_contingency(dependent).pvalue < 1e-6
    other = np.array([bucket_of("model-1", u) for u in UNITS[:5000]])
    mine = np.array([bucket_of("policy-1", u) for u in UNITS[:5000]])
    assert abs(np.corrcoef(mine, other)[0, 1]) < 0.05


def test_ramp_up_only_adds_units_and_keeps_their_arms() -> None:
    ramps = [0.01, 0.1, 0.25, 0.5, 0.9, 1.0]
    exposed = []
    for t in ramps:
        s = one_layer(experiment("e", traffic=t))
        exposed.append({u: s.assign(u)[0].arm for u in UNITS if s.assign(u)})
    for low, high in itertools.pairwise(exposed):
        assert set(low) <= set(high)  # nobody leaves
        assert all(high[u] == arm for u, arm in low.items())  # nobody switches arm
    for t, e in zip(ramps, exposed, strict=True):
        assert abs(len(e) / len(UNITS) - t) < 4 * np.sqrt(t * (1 - t) / len(UNITS)) + 1e-9
    # the arms stay balanced among the units added by each step
    added = set(exposed[3]) - set(exposed[1])
    share = sum(exposed[3][u] == "treatment" for u in added) / len(added)
    assert abs(share - 0.5) < 0.03
    assert not one_layer(experiment("e", traffic=0.0)).assign("1")


def test_targeting_by_segments_and_context() -> None:
    targeting = Targeting(
        segments_any=frozenset({"fans", "new"}),
        segments_none=frozenset({"churn_risk"}),
        context={"device_type": frozenset({"mobile"}), "surface": frozenset({"home"})},
    )
    s = one_layer(experiment("e", targeting=targeting))
    phone = RequestContext(device_type="mobile", surface="home")
    assert s.assign("7", ["fans"], phone)
    assert s.assign("7", ("new", "other"), phone)
    assert not s.assign("7", [], phone)  # in none of `any`
    assert not s.assign("7", ["fans", "churn_risk"], phone)  # excluded
    assert not s.assign("7", ["fans"], RequestContext(device_type="desktop", surface="home"))
    assert not s.assign("7", ["fans"], RequestContext(surface="home"))  # unknown device
    required = one_layer(experiment("e", targeting=Targeting(segments_all=frozenset({"a", "b"}))))
    assert required.assign("7", {"a", "b", "c"}) and not required.assign("7", {"a"})
    # an eligible unit gets the same arm whatever else its request says
    arms = {s.assign("7", seg, phone)[0].arm for seg in (["fans"], ["new"], ["fans", "new"])}
    assert len(arms) == 1


def test_session_layers_hash_the_session_and_skip_requests_without_one() -> None:
    s = one_layer(experiment("e"), unit="session")
    ctx = RequestContext(session_id="s-1")
    a = s.assign("user-1", (), ctx)
    assert a and a[0].bucket == bucket_of("ranking", "s-1")
    assert s.assign("user-2", (), ctx) == a  # another user, same session: same arm
    assert s.assign("user-1") == []


def test_the_anonymous_user_is_in_no_user_layer() -> None:
    assert one_layer(experiment("e")).assign("anonymous") == []


def test_assignments_carry_what_the_arm_changes_and_merge() -> None:
    arms = (Arm("control", 1.0), Arm("t", 1e9, policy="plackett_luce:0.5", params={"mmr_depth": 3}))
    s = ExperimentSet(
        (
            Layer("policy", "p", "user", (experiment("p", arms=arms, layer="policy"),)),
            Layer("model", "m", "user", (experiment("m", layer="model", arms=(
                Arm("control", 1.0), Arm("v2", 1e9, model="ranker:2")),),)),
        )
    )  # fmt: skip
    found = s.assign("u1")
    assert [(a.experiment, a.arm) for a in found] == [("p", "t"), ("m", "v2")]
    merged = merged_changes(found)
    assert (merged.policy, merged.model, dict(merged.params)) == ("plackett_luce:0.5", "ranker:2",
                                                                  {"mmr_depth": 3})  # fmt: skip
    assert merged.exposures == ({"experiment": "p", "arm": "t"}, {"experiment": "m", "arm": "v2"})
    with pytest.raises(TypeError):
        found[0].params["mmr_depth"] = 4  # type: ignore[index]


def test_a_compiled_set_rejects_overlaps_shared_salts_and_shared_changes() -> None:
    with pytest.raises(ValueError, match="share buckets"):
        one_layer(experiment("a", 0, 5000), experiment("b", 5000, 9999))
    with pytest.raises(ValueError, match="different salts"):
        ExperimentSet((Layer("x", "s", "user", ()), Layer("y", "s", "user", ())))
    changes_policy = (Arm("c", 1.0), Arm("t", 1.0, policy="x"))
    with pytest.raises(ValueError, match="'policy' is changed in layers"):
        ExperimentSet(
            (
                Layer("x", "x", "user", (experiment("a", arms=changes_policy, layer="x"),)),
                Layer("y", "y", "user", (experiment("b", arms=changes_policy, layer="y"),)),
            )
        )
    with pytest.raises(ValueError, match="weight"):
        Arm("a", 0.0)
    with pytest.raises(ValueError, match="traffic"):
        experiment("a", traffic=1.5)


def test_assign_is_fast() -> None:
    plain = (Arm("control", 1.0), Arm("treatment", 1.0))
    s = ExperimentSet(
        tuple(Layer(f"l{i}", f"l{i}", "user", (experiment(f"e{i}", arms=plain, layer=f"l{i}"),))
              for i in range(3))
    )  # fmt: skip
    ctx = RequestContext(device_type="mobile")
    start = time.perf_counter()
    for u in UNITS[:20_000]:
        s.assign(u, ("fans",), ctx)
    per_call = (time.perf_counter() - start) / 20_000
    assert per_call < 200e-6  # three layers; about 10 us on a 2-core x86_64 machine


def test_assignment_returns_assignment_objects() -> None:
    [a] = one_layer(experiment("e")).assign("5")
    assert isinstance(a, Assignment) and a.payload() == {"experiment": "e", "arm": a.arm}
