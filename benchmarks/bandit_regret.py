"""Cumulative regret of contextual bandits on the featured slot, over seeds, and their speed.

The simulated users (truth fitted on all of MovieLens-100K; genre fashion cycling every
20 days, tastes drifting) visit ``--rounds`` times per run; the bandit picks a genre's
item for the top slot from the request context and the user's genre segments
(:func:`recsys.sim.slot_bandit.genre_segments`: ``likes_<genre>`` for the
``--segments-top`` most frequent genres, ``loves_<genre>`` with ``--loves-lift``,
``avoids_<genre>`` with ``--avoids-min``). Policies: uniform, greedy (ridge estimates,
no exploration), epsilon-greedy, LinUCB, linear Thompson sampling, and LinUCB with
discounting; ``--compare-top N`` adds LinUCB with only the ``likes_<genre>`` segments of
the top N genres (the same rounds). The oracle knows every arm's true CTR. Reported:
final cumulative regret against the oracle (mean and spread over ``--seeds``), its ratio
to uniform's and to greedy's, the CTR, a PNG of the regret curves with bands (min-max
over seeds), and the updates per second of each policy (select + update, one context at
a time). A reference for each segment set: the expected regret of per-arm linear CTR
models of the context fitted on the truth with full information
(:func:`recsys.sim.slot_bandit.linear_limit`), what the linear policies could at best
learn. Seeds are ``--first-seed`` onwards (tune ``--alpha``/``--noise`` on other
seeds than the reported ones).

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

Policy = tuple[str, dict[str, Any], str]  # bandit kind, its parameters, segment set


def make_policies(
    alpha: float = 0.5,
    noise: float = 0.2,
    epsilon: float = 0.05,
    discount: float = 0.999,
    compare_top: int | None = None,
) -> dict[str, Policy]:
    """The benchmark's policies by name (segment set ``main`` or ``compare``)."""
    out: dict[str, Policy] = {
        "uniform": ("uniform", {}, "main"),
        "greedy": ("greedy", {}, "main"),
        f"epsilon_greedy {epsilon:g}": ("epsilon_greedy", {"epsilon": epsilon}, "main"),
        f"linucb {alpha:g}": ("linucb", {"alpha": alpha}, "main"),
        f"linucb {alpha:g}, discount {discount:g}": (
            "linucb",
            {"alpha": alpha, "discount": discount},
            "main",
        ),
        f"linear_ts {noise:g}": ("linear_ts", {"noise": noise, "propensity_draws": 50}, "main"),
    }
    if compare_top is not None:
        out[f"linucb {alpha:g}, likes top {compare_top} only"] = (
            "linucb",
            {"alpha": alpha},
            "compare",
        )
    return out


def slot_world(data_dir: Path) -> tuple[Any, Any, Any]:
    """The featured slot's world: MovieLens-100K, the users fitted on all of it with genre
    fashion cycling every 20 days, and one arm per genre. Returns (data, world, arms)."""
    from recsys.data.movielens import load_ml100k
    from recsys.sim.slot_bandit import genre_arms
    from recsys.sim.world import World, WorldConfig

    data = load_ml100k(data_dir / "ml-100k")
    world = World.fit(data, WorldConfig(seed=0, trend=1.0, trend_period_days=20.0))
    return data, world, genre_arms(world, data)


DEFAULT_TOP = 3
DEFAULT_LOVES_LIFT = 1.25
DEFAULT_AVOIDS_MIN = 30


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
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json, PNG")
    parser.add_argument(
        "--segments-top",
        type=int,
        default=DEFAULT_TOP,
        help="likes_<genre> for the user's N most frequent genres",
    )
    parser.add_argument(
        "--loves-lift",
        type=float,
        default=DEFAULT_LOVES_LIFT,
        help="loves_<genre> where the genre's share of the user's interactions "
        "is above this times its share of all (<= 0: none)",
    )
    parser.add_argument(
        "--avoids-min",
        type=int,
        default=DEFAULT_AVOIDS_MIN,
        help="avoids_<genre> for genres never touched in at least this many "
        "interactions (<= 0: none)",
    )
    parser.add_argument(
        "--compare-top",
        type=int,
        default=2,
        help="also LinUCB with only the likes_ of the top N genres (<= 0: no)",
    )
    parser.add_argument("--alpha", type=float, default=0.25, help="LinUCB's alpha")
    parser.add_argument("--noise", type=float, default=0.2, help="linear TS's noise")
    parser.add_argument("--discount", type=float, default=0.999, help="discounted LinUCB's gamma")
    parser.add_argument(
        "--policies", default=None, help="comma-separated kinds to run (e.g. uniform,greedy,linucb)"
    )
    args = parser.parse_args()

    from recsys.bandits import make_bandit
    from recsys.sim.slot_bandit import (
        SlotConfig,
        genre_segments,
        linear_limit,
        run_slot,
        segment_encoder,
    )

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    wall = time.perf_counter()
    data, world, arms = slot_world(args.data_dir)
    loves = args.loves_lift if args.loves_lift > 0 else None
    avoids = args.avoids_min if args.avoids_min > 0 else None
    kinds = ("likes",) + (("loves",) if loves else ()) + (("avoids",) if avoids else ())
    contexts = {
        "main": (segment_encoder(world, kinds), genre_segments(world, data, args.segments_top,
                                                               loves, avoids)),
    }  # fmt: skip
    compare_top = args.compare_top if args.compare_top > 0 else None
    if compare_top is not None:
        contexts["compare"] = (segment_encoder(world), genre_segments(world, data, compare_top))
    enc, segments = contexts["main"]
    sizes = np.array([len(s) for s in segments])
    settings = {
        "segments_top": args.segments_top, "loves_lift": loves, "avoids_min": avoids,
        "compare_top": compare_top, "context_dim": enc.dim,
        "segments_per_user": [float(sizes.mean()), int(sizes.min()), int(sizes.max())],
        "distinct_segment_sets": len(set(segments)), "first_seed": args.first_seed,
    }  # fmt: skip
    print(f"segments: {settings}", flush=True)
    policies = make_policies(
        args.alpha, args.noise, discount=args.discount, compare_top=compare_top
    )
    if args.policies:
        wanted = set(args.policies.split(","))
        policies = {k: v for k, v in policies.items() if v[0] in wanted or k in wanted}
    curves: dict[str, list[np.ndarray]] = {name: [] for name in policies}
    ctr: dict[str, list[float]] = {name: [] for name in policies}
    speed: dict[str, list[float]] = {name: [] for name in policies}
    best_ctr: list[float] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        cfg = SlotConfig(rounds=args.rounds, seed=seed)
        best_ctr.append(float(run_slot(world, arms, None, cfg, enc, segments).best_ctr.mean()))
        for name, (kind, params, which) in policies.items():
            penc, psegs = contexts[which]
            bandit = make_bandit(kind, len(arms.items), penc.dim, **params)
            start = time.perf_counter()
            run = run_slot(world, arms, bandit, cfg, penc, psegs)
            speed[name].append(args.rounds / (time.perf_counter() - start))
            curves[name].append(run.cumulative_regret)
            ctr[name].append(float(run.rewards.mean()))
            regret = run.cumulative_regret[-1]
            print(f"seed {seed} {name}: regret {regret:.0f}, CTR {run.rewards.mean():.4f}, "
                  f"{speed[name][-1]:.0f} rounds/s", flush=True)  # fmt: skip
    throughput = _update_throughput(make_bandit, len(arms.items), enc.dim, policies)

    final = {name: np.array([c[-1] for c in cs]) for name, cs in curves.items()}
    lines = [
        "| policy | cumulative regret, mean (min-max) | / uniform | / greedy | CTR | rounds/s "
        "(simulated) |",
        "|---|---|---|---|---|---|",
    ]
    uniform = final["uniform"].mean() if "uniform" in final else float("nan")
    greedy = final["greedy"].mean() if "greedy" in final else float("nan")
    for name in policies:
        f = final[name]
        lines.append(
            f"| {name} | {f.mean():.0f} ({f.min():.0f}-{f.max():.0f}) | "
            f"{f.mean() / uniform:.3f} | {f.mean() / greedy:.3f} | "
            f"{np.mean(ctr[name]):.4f} | {np.mean(speed[name]):.0f} |"
        )
    lines.append(f"| oracle | 0 | | | {np.mean(best_ctr):.4f} | |")
    table = "\n".join(lines)
    limit_lines = [
        "| segments | linear fit on the truth, refit daily: regret / uniform | one fit on all "
        "days: regret / uniform |",
        "|---|---|---|",
    ]
    limits = {}
    for which, (penc, psegs) in contexts.items():
        lim = linear_limit(world, arms, SlotConfig(rounds=args.rounds), penc, psegs)
        limits[which] = lim
        label = "these" if which == "main" else f"likes top {compare_top} only"
        limit_lines.append(
            f"| {label} | {lim['daily_fit'] / lim['uniform']:.3f} | "
            f"{lim['single_fit'] / lim['uniform']:.3f} |"
        )
    limit_table = "\n".join(limit_lines)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, "
        f"Python {platform.python_version()}"
    )
    print("\n" + table)
    print("\nexpected regret of per-arm linear CTR models fitted on the truth (full information):")
    print(limit_table)
    print("\nupdates/s (select + update of one context, no world):")
    for name, rate in throughput.items():
        print(f"  {name}: {rate:.0f}")
    print(f"machine: {machine}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        _plot(curves, args.out / "bandit_regret.png", args.rounds)
        payload = {
            "machine": machine, "rounds": args.rounds, "seeds": args.seeds, "table": table,
            "segments": settings, "alpha": args.alpha, "noise": args.noise,
            "started": started, "wall_s": time.perf_counter() - wall,
            "linear_limit": limits, "limit_table": limit_table,
            "final_regret": {k: v.tolist() for k, v in final.items()}, "ctr": ctr,
            "best_ctr": best_ctr, "updates_per_s": throughput,
        }  # fmt: skip
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


def _update_throughput(
    make_bandit: Any, n_arms: int, dim: int, policies: dict[str, Policy], n: int = 20_000
) -> dict[str, float]:
    rng = np.random.default_rng(0)
    xs = (rng.random((n, dim)) < 0.2).astype(np.float64)
    xs[:, 0] = 1.0
    out: dict[str, float] = {}
    for name, (kind, params, which) in policies.items():
        if which != "main":
            continue
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
