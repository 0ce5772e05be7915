"""Cumulative regret of contextual bandits on the featured slot, over seeds, and their speed.

The simulated users (truth fitted on all of MovieLens-100K; genre fashion cycling every
20 days, tastes drifting) visit ``--rounds`` times per run; the bandit picks a genre's
item for the top slot from the request context and the user's ``likes_<genre>``
segments (:mod:`recsys.sim.slot_bandit`). Policies: uniform, greedy (ridge estimates,
no exploration), epsilon-greedy, LinUCB, linear Thompson sampling, and LinUCB with
discounting; the oracle knows every arm's true CTR. Reported: final cumulative regret
against the oracle (mean and spread over ``--seeds``), its ratio to uniform's and to
greedy's, the CTR, a PNG of the regret curves with bands (min-max over seeds), and the
updates per second of each policy (select + update, one context at a time).

Usage:
    python benchmarks/bandit_regret.py --rounds 100000 --seeds 3 --out results/bandits
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    "uniform": ("uniform", {}),
    "greedy": ("greedy", {}),
    "epsilon_greedy 0.05": ("epsilon_greedy", {"epsilon": 0.05}),
    "linucb 0.5": ("linucb", {"alpha": 0.5}),
    "linucb 0.5, discount 0.999": ("linucb", {"alpha": 0.5, "discount": 0.999}),
    "linear_ts 0.2": ("linear_ts", {"noise": 0.2, "propensity_draws": 50}),
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
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json, PNG")
    args = parser.parse_args()

    from recsys.bandits import make_bandit
    from recsys.data.movielens import load_ml100k
    from recsys.sim.slot_bandit import (
        SlotConfig,
        genre_arms,
        genre_segments,
        run_slot,
        segment_encoder,
    )
    from recsys.sim.world import World, WorldConfig

    data = load_ml100k(args.data_dir / "ml-100k")
    world = World.fit(data, WorldConfig(seed=0, trend=1.0, trend_period_days=20.0))
    arms, segments, enc = (
        genre_arms(world, data),
        genre_segments(world, data),
        segment_encoder(world),
    )
    curves: dict[str, list[np.ndarray]] = {name: [] for name in POLICIES}
    ctr: dict[str, list[float]] = {name: [] for name in POLICIES}
    speed: dict[str, list[float]] = {name: [] for name in POLICIES}
    best_ctr: list[float] = []
    for seed in range(args.seeds):
        cfg = SlotConfig(rounds=args.rounds, seed=seed)
        best_ctr.append(float(run_slot(world, arms, None, cfg, enc, segments).best_ctr.mean()))
        for name, (kind, params) in POLICIES.items():
            bandit = make_bandit(kind, len(arms.items), enc.dim, **params)
            start = time.perf_counter()
            run = run_slot(world, arms, bandit, cfg, enc, segments)
            speed[name].append(args.rounds / (time.perf_counter() - start))
            curves[name].append(run.cumulative_regret)
            ctr[name].append(float(run.rewards.mean()))
            regret = run.cumulative_regret[-1]
            print(f"seed {seed} {name}: regret {regret:.0f}, CTR {run.rewards.mean():.4f}, "
                  f"{speed[name][-1]:.0f} rounds/s", flush=True)  # fmt: skip
    throughput = _update_throughput(make_bandit, len(arms.items), enc.dim)

    final = {name: np.array([c[-1] for c in cs]) for name, cs in curves.items()}
    lines = [
        "| policy | cumulative regret, mean (min-max) | / uniform | / greedy | CTR | rounds/s "
        "(simulated) |",
        "|---|---|---|---|---|---|",
    ]
    for name in POLICIES:
        f = final[name]
        lines.append(
            f"| {name} | {f.mean():.0f} ({f.min():.0f}-{f.max():.0f}) | "
            f"{f.mean() / final['uniform'].mean():.3f} | {f.mean() / final['greedy'].mean():.3f} | "
            f"{np.mean(ctr[name]):.4f} | {np.mean(speed[name]):.0f} |"
        )
    lines.append(f"| oracle | 0 | | | {np.mean(best_ctr):.4f} | |")
    table = "\n".join(lines)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, "
        f"Python {platform.python_version()}"
    )
    print("\n" + table)
    print("\nupdates/s (select + update of one context, no world):")
    for name, rate in throughput.items():
        print(f"  {name}: {rate:.0f}")
    print(f"machine: {machine}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        _plot(curves, args.out / "bandit_regret.png", args.rounds)
        payload = {
            "machine": machine, "rounds": args.rounds, "seeds": args.seeds, "table": table,
            "final_regret": {k: v.tolist() for k, v in final.items()}, "ctr": ctr,
            "best_ctr": best_ctr, "updates_per_s": throughput,
        }  # fmt: skip
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


def _update_throughput(
    make_bandit: Any, n_arms: int, dim: int, n: int = 20_000
) -> dict[str, float]:
    rng = np.random.default_rng(0)
    xs = (rng.random((n, dim)) < 0.2).astype(np.float64)
    xs[:, 0] = 1.0
    out: dict[str, float] = {}
    for name, (kind, params) in POLICIES.items():
        bandit = make_bandit(kind, n_arms, dim, **params)
        start = time.perf_counter()
        for x in xs:
            arm = bandit.select(x, rng).arm
            bandit.update(arm, x, float(rng.random() < 0.1))
        out[name] = n / (time.perf_counter() - start)
    return out


def _plot(curves: dict[str, list[np.ndarray]], path: Path, rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    t = np.arange(1, rounds + 1)
    for name, cs in curves.items():
        stack = np.vstack(cs)
        ax.plot(t, stack.mean(axis=0), label=name)
        ax.fill_between(t, stack.min(axis=0), stack.max(axis=0), alpha=0.2)
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative regret against the oracle (expected clicks)")
    ax.set_title("Featured slot, simulated MovieLens-100K users (bands: min-max over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
