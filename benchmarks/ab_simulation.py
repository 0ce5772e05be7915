"""Simulated validation of the A/B analysis at full size: a markdown table and JSON.

Runs the studies of :mod:`recsys.experiments.validation` on the simulator's default
population (base CTR ~ Beta(1, 19), activity ~ Gamma(2, 10) so impressions are negative
binomial with mean 20, a pre-period of the same users):

1. A/A: false-positive rate at alpha 0.05 of CTR, conversion and dwell, without and
   with CUPED; CUPED's variance reduction; the SRM check's false flags;
2. SRM: a 48/52 split against a 50/50 design, flagged at p < 0.001;
3. plan: the traffic for power 0.8 at a 3% relative CTR lift, from a large pilot,
   without and with CUPED;
4. power: the simulated power at that traffic (plain), and with CUPED at CUPED's
   smaller traffic;
5. sequential: the mSPRT monitored at 50 looks, under A/A at the plan's traffic
   (false positives, coverage, and a fixed-horizon test peeked at every look for
   contrast) and under the 3% lift with twice the plan's traffic as the cap (power,
   the average share of the cap used before stopping).

Usage:
    python benchmarks/ab_simulation.py --json results/ab_simulation.json
    python benchmarks/ab_simulation.py --quick    # a smaller run (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from recsys.experiments.simulate import SimulationConfig
from recsys.experiments.validation import (
    aa_study,
    binomial_se,
    plan_study,
    power_study,
    sequential_study,
    srm_study,
)

LOOKS = 50


def _round_to(units: float, multiple: int) -> int:
    return int(-(-units // multiple) * multiple)  # up to a multiple (equal look groups)


def run(scale: float, seed: int) -> dict[str, Any]:
    """All studies; ``scale`` multiplies the number of simulated experiments.

    Args:
        scale: 1.0 for the full run.
        seed: root seed (each study adds its own offset).

    Returns:
        The results by study, with timings.
    """
    base = SimulationConfig()
    n = {k: max(20, int(v * scale)) for k, v in
         {"aa": 1000, "srm": 500, "power": 1000, "seq": 500}.items()}  # fmt: skip
    out: dict[str, Any] = {"config": base.__dict__ | {"weights": list(base.weights)}}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        start = time.perf_counter()
        result: dict[str, float] = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"  {name}: {timings[name]} s", file=sys.stderr)
        return result

    out["aa"] = timed("aa", aa_study, replace(base, units=20_000), n["aa"], seed + 1)
    out["srm"] = timed("srm", srm_study, replace(base, units=20_000, weights=(0.48, 0.52)),
                       n["srm"], seed + 2)  # fmt: skip
    plan = timed("plan", plan_study, replace(base, units=1_000_000), seed + 3, lift=0.03)
    out["plan"] = plan
    units = _round_to(plan["units_plain"], LOOKS)
    units_cuped = _round_to(plan["units_cuped"], LOOKS)
    lifted = replace(base, lift=0.03)
    out["power"] = timed("power", power_study, replace(lifted, units=units), n["power"], seed + 4)
    out["power_cuped_plan"] = timed(
        "power_cuped_plan", power_study, replace(lifted, units=units_cuped), n["power"], seed + 5
    )
    out["sequential_aa"] = timed(
        "sequential_aa", sequential_study, replace(base, units=units), n["seq"], seed + 6,
        looks=LOOKS,
    )  # fmt: skip
    out["sequential_ab"] = timed(
        "sequential_ab", sequential_study, replace(lifted, units=2 * units), n["seq"], seed + 7,
        looks=LOOKS,
    )  # fmt: skip
    out["sequential_ab_cuped"] = timed(
        "sequential_ab_cuped", sequential_study, replace(lifted, units=2 * units), n["seq"],
        seed + 7, looks=LOOKS, cuped=True,
    )  # fmt: skip
    out["units"] = {"plan_plain": units, "plan_cuped": units_cuped, "sequential_cap": 2 * units}
    out["timings_s"] = timings
    out["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, Python "
        f"{platform.python_version()}"
    )
    return out


def _pm(rate: float, trials: float) -> str:
    return f"{rate:.3f} ± {binomial_se(rate, int(trials)):.3f}"


def table(r: dict[str, Any]) -> str:
    """The markdown table of a run."""
    aa, srm, plan = r["aa"], r["srm"], r["plan"]
    pw, pc = r["power"], r["power_cuped_plan"]
    sa, sb, sc = r["sequential_aa"], r["sequential_ab"], r["sequential_ab_cuped"]
    u = r["units"]
    e = aa["experiments"]
    rows = [
        ("A/A false-positive rate, CTR (alpha 0.05)", f"{int(e)} x {int(aa['units'])} users",
         _pm(aa["fpr_ctr"], e), "[0.03, 0.07]"),
        ("A/A false-positive rate, CTR with CUPED", "same", _pm(aa["fpr_ctr_cuped"], e),
         "[0.03, 0.07]"),
        ("A/A false-positive rate, conversion / with CUPED", "same",
         f"{_pm(aa['fpr_conversion'], e)} / {_pm(aa['fpr_conversion_cuped'], e)}", "[0.03, 0.07]"),
        ("A/A false-positive rate, dwell / with CUPED", "same",
         f"{_pm(aa['fpr_dwell'], e)} / {_pm(aa['fpr_dwell_cuped'], e)}", "[0.03, 0.07]"),
        ("CUPED variance reduction, CTR / conversion / dwell", "same",
         f"{aa['variance_reduction_ctr']:.1%} / {aa['variance_reduction_conversion']:.1%} / "
         f"{aa['variance_reduction_dwell']:.1%}", ">= 20% (CTR)"),
        ("SRM false flags at p < 0.001 (50/50)", "same", _pm(aa["srm_false_flags"], e), "~0.001"),
        ("SRM flags a 48/52 split", f"{int(srm['experiments'])} x {int(srm['units'])} users",
         _pm(srm["flag_rate"], srm["experiments"]), "high"),
        ("users for power 0.8 at +3% CTR (pilot of 1,000,000)", "plain / CUPED",
         f"{int(plan['units_plain']):,} / {int(plan['units_cuped']):,} "
         f"(rho^2 = {plan['rho2']:.3f})", ""),
        ("power at +3% CTR, plain test", f"{int(pw['experiments'])} x {u['plan_plain']:,} users",
         _pm(pw["power"], pw["experiments"]), ">= 0.8"),
        ("power at +3% CTR, CUPED at the plain plan's traffic", "same",
         _pm(pw["power_cuped"], pw["experiments"]), ""),
        ("power at +3% CTR, CUPED at CUPED's plan",
         f"{int(pc['experiments'])} x {u['plan_cuped']:,} users",
         _pm(pc["power_cuped"], pc["experiments"]), ">= 0.8"),
        ("95% CI coverage of the true lift (plain)", f"{u['plan_plain']:,} users",
         _pm(pw["ci_coverage"], pw["experiments"]), "0.95"),
        (f"sequential A/A false positives, {LOOKS} looks",
         f"{int(sa['experiments'])} x {u['plan_plain']:,} users",
         _pm(sa["rejection_rate"], sa["experiments"]), "<= 0.05"),
        ("sequential A/A confidence-sequence coverage", "same",
         _pm(sa["cs_coverage"], sa["experiments"]), ">= 0.95"),
        (f"fixed-horizon test peeked at {LOOKS} looks (A/A)", "same",
         _pm(sa["peeking_rejection_rate"], sa["experiments"]), "(why sequential)"),
        ("sequential power at +3% CTR (cap 2x plan)",
         f"{int(sb['experiments'])} x {u['sequential_cap']:,} users",
         _pm(sb["rejection_rate"], sb["experiments"]), ""),
        ("sequential: mean share of the cap at the stop (stoppers)", "same",
         f"{sb['mean_stop_fraction']:.3f} (= {sb['mean_stop_fraction'] * 2:.2f} x plan)", "< 1"),
        ("sequential: expected share of the cap (non-stoppers run to it)", "same",
         f"{sb['expected_sample_fraction']:.3f} "
         f"(= {sb['expected_sample_fraction'] * 2:.2f} x plan)", ""),
        ("sequential with CUPED: power / expected share of the cap", "same",
         f"{_pm(sc['rejection_rate'], sc['experiments'])} / {sc['expected_sample_fraction']:.3f} "
         f"(= {sc['expected_sample_fraction'] * 2:.2f} x plan)", ""),
        ("sequential coverage of the true lift (+3%)", "same",
         _pm(sb["cs_coverage"], sb["experiments"]), ">= 0.95"),
    ]  # fmt: skip
    lines = ["| check | simulated | result | target |", "|---|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("results/ab_simulation.json"))
    parser.add_argument("--quick", action="store_true", help="a tenth of the experiments")
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run(0.1 if args.quick else 1.0, args.seed)
    result["total_s"] = round(time.perf_counter() - start, 1)
    result["command"] = "python benchmarks/ab_simulation.py" + (" --quick" if args.quick else "")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"\n{result['machine']}; {result['total_s']} s; JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
