"""Vowpal Wabbit's contextual-bandit reductions against the in-house LinUCB on the featured slot.

The runs of benchmarks/bandit_regret.py with its earlier context (the top-2 ``likes_``
segments, LinUCB alpha 0.5; its ``--compare-top 2`` row): the simulated
users fitted on all of MovieLens-100K (``WorldConfig(seed=0, trend=1.0,
trend_period_days=20.0)``: genre fashion cycling every 20 days, tastes drifting), one arm
per genre, the context of the request (device, time of day, weekend) and the user's
``likes_<genre>`` segments of their 2 most frequent genres, ``SlotConfig(rounds, seed)``
with seeds ``--first-seed`` onwards. ``run_slot`` draws the visits, the clicks and the
policy's own choices from one generator, so a policy that draws (uniform, VW) sees other
visits than LinUCB after its first draw: the same distribution, not the same sequence.

Policies, side by side in one run: uniform (for the ratio), LinUCB with ``alpha`` 0.5
(the in-house reference), and :class:`recsys.bandits.vw.VowpalWabbitBandit` with VW's
epsilon-greedy (0.05, VW's default), SquareCB (``gamma_scale`` 10, VW's default),
bagging (5 bags, epsilon 0.05) and online cover (5 policies, ``psi`` 0.1; both settings
from tests/bandits/test_vw.py, not tuned here). Reported: final cumulative regret against
the oracle (mean and min-max over ``--seeds``), its ratio to uniform's and to LinUCB's,
the CTR, the rounds per second of each policy in the simulated run, and its select +
update per second alone (one context at a time, random contexts, no world), all measured
in the same run so the speeds compare as ratios.

Usage:
    python benchmarks/bandit_vw.py --rounds 100000 --seeds 3 --out results/bandit_vw
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandit_regret import slot_world

Factory = Callable[[int, int, int], Any]  # (n_arms, dim, seed) -> a bandit


def make_policies(alpha: float = 0.5) -> dict[str, Factory]:
    """The benchmark's policies by name."""
    from recsys.bandits import make_bandit
    from recsys.bandits.vw import VowpalWabbitBandit

    def vw(**params: Any) -> Factory:
        return lambda k, d, seed: VowpalWabbitBandit(k, d, seed=seed, **params)

    return {
        "uniform": lambda k, d, seed: make_bandit("uniform", k, d),
        f"linucb {alpha:g}": lambda k, d, seed: make_bandit("linucb", k, d, alpha=alpha),
        "vw epsilon 0.05": vw(exploration="epsilon", epsilon=0.05),
        "vw squarecb 10": vw(exploration="squarecb", gamma_scale=10.0),
        "vw bag 5, epsilon 0.05": vw(exploration="bag", bag=5, epsilon=0.05),
        "vw cover 5, psi 0.1": vw(exploration="cover", cover=5, psi=0.1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
    )
    parser.add_argument("--rounds", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.5, help="LinUCB's alpha")
    parser.add_argument("--policies", default=None, help="comma-separated policy names to run")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args()

    from recsys.sim.slot_bandit import SlotConfig, genre_segments, run_slot, segment_encoder

    data, world, arms = slot_world(args.data_dir)
    enc, segments = segment_encoder(world), genre_segments(world, data, 2)
    policies = make_policies(args.alpha)
    if args.policies:
        wanted = set(args.policies.split(","))
        policies = {k: v for k, v in policies.items() if k in wanted}
    reference = f"linucb {args.alpha:g}"
    k, d = len(arms.items), enc.dim
    print(f"{k} arms, context dimension {d}", flush=True)

    final: dict[str, list[float]] = {name: [] for name in policies}
    ctr: dict[str, list[float]] = {name: [] for name in policies}
    speed: dict[str, list[float]] = {name: [] for name in policies}
    best_ctr: list[float] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        cfg = SlotConfig(rounds=args.rounds, seed=seed)
        best_ctr.append(float(run_slot(world, arms, None, cfg, enc, segments).best_ctr.mean()))
        for name, factory in policies.items():
            bandit = factory(k, d, seed)
            start = time.perf_counter()
            run = run_slot(world, arms, bandit, cfg, enc, segments)
            speed[name].append(args.rounds / (time.perf_counter() - start))
            final[name].append(float(run.cumulative_regret[-1]))
            ctr[name].append(float(run.rewards.mean()))
            print(
                f"seed {seed} {name}: regret {final[name][-1]:.0f}, "
                f"CTR {ctr[name][-1]:.4f}, {speed[name][-1]:.0f} rounds/s",
                flush=True,
            )
    throughput = _throughput(policies, k, d)

    uniform = np.mean(final["uniform"]) if "uniform" in final else float("nan")
    ref = np.mean(final[reference]) if reference in final else float("nan")
    lines = [
        f"| policy | cumulative regret, mean (min-max) | / uniform | / {reference} | CTR | "
        "rounds/s (simulated) | select+update/s | speed / LinUCB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref_rate = throughput.get(reference, float("nan"))
    for name in policies:
        f = np.asarray(final[name])
        lines.append(
            f"| {name} | {f.mean():.0f} ({f.min():.0f}-{f.max():.0f}) | "
            f"{f.mean() / uniform:.3f} | {f.mean() / ref:.3f} | {np.mean(ctr[name]):.4f} | "
            f"{np.mean(speed[name]):.0f} | {throughput[name]:.0f} | "
            f"{throughput[name] / ref_rate:.2f} |"
        )
    lines.append(f"| oracle | 0 | | | {np.mean(best_ctr):.4f} | | | |")
    table = "\n".join(lines)
    import vowpalwabbit

    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, "
        f"Python {platform.python_version()}, vowpalwabbit {vowpalwabbit.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("\n" + table)
    print(f"machine: {machine}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": machine, "rounds": args.rounds, "seeds": args.seeds,
            "first_seed": args.first_seed, "alpha": args.alpha, "table": table,
            "final_regret": final, "ctr": ctr, "best_ctr": best_ctr,
            "rounds_per_s": speed, "updates_per_s": throughput,
        }  # fmt: skip
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


def _throughput(policies: dict[str, Factory], k: int, d: int, n: int = 20_000) -> dict[str, float]:
    """Select + update per second of each policy alone (the contexts of bandit_regret.py's
    measurement: a bias and 20% of the other slots set; rewards at 10%)."""
    rng = np.random.default_rng(0)
    xs = (rng.random((n, d)) < 0.2).astype(np.float64)
    xs[:, 0] = 1.0
    out: dict[str, float] = {}
    for name, factory in policies.items():
        bandit = factory(k, d, 0)
        start = time.perf_counter()
        for x in xs:
            arm = bandit.select(x, rng).arm
            bandit.update(arm, x, float(rng.random() < 0.1))
        out[name] = n / (time.perf_counter() - start)
    return out


if __name__ == "__main__":
    main()
