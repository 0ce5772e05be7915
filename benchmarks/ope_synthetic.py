"""Off-policy estimators against the exact truth of synthetic bandits, over many seeds.

For each reward kind (logistic clicks, linear with Gaussian noise) and candidate policy
(``near``: 80 % logger + 20 % a sharp softmax over the true score; ``far``: that sharp
softmax; ``uniform``), every seed draws a fresh log of the logging policy (softmax over a
noisy score), fits the ridge reward model (on an independent log of the same size by
default, so DR's unbiasedness holds exactly; ``--model same`` fits it on the evaluated
log, as one would in practice), and runs every estimator. Reported per estimator: bias
(mean - truth), std over seeds, RMSE, RMSE relative to the truth, and the largest
relative error of one seed. The truth is exact: the problem's context population is
finite (:mod:`recsys.ope.synthetic`).

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/ope_synthetic.py --seeds 100 --rows 5000 \\
        --out results/ope_synthetic.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys.ope.estimators import default_estimators
from recsys.ope.reward_model import RidgeRewardModel
from recsys.ope.synthetic import SyntheticBandit, SyntheticBanditConfig


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def run_case(
    reward: str, policy: str, *, rows: int, seeds: int, model: str, problem_seed: int
) -> dict[str, Any]:
    """Every estimator's errors on one (reward kind, candidate) over ``seeds`` logs."""
    problem = SyntheticBandit(SyntheticBanditConfig(reward=reward, seed=problem_seed))
    pi = problem.candidates()[policy]
    truth = problem.true_value(pi)
    estimators = default_estimators()
    values: dict[str, list[float]] = {e.name: [] for e in estimators}
    for seed in range(seeds):
        log = problem.sample(rows, seed=seed, candidate=pi).log
        fit_on = log if model == "same" else problem.sample(rows, seed=10_000_000 + seed).log
        assert fit_on.context is not None and log.context is not None
        ridge = RidgeRewardModel.fit(fit_on.context, fit_on.action, fit_on.reward, log.n_actions)
        log = log.with_reward_model(ridge.predict(log.context))
        for e in estimators:
            values[e.name].append(e.estimate(log))
    weights = pi / problem.logging
    rows_out = []
    for name, v in values.items():
        arr = np.asarray(v)
        err = arr - truth
        rows_out.append(
            {
                "estimator": name,
                "bias": float(err.mean()),
                "std": float(arr.std(ddof=1)),
                "rmse": float(np.sqrt(np.mean(err**2))),
                "relative_rmse": float(np.sqrt(np.mean(err**2)) / abs(truth)),
                "max_relative_error": float(np.max(np.abs(err)) / abs(truth)),
            }
        )
    return {
        "reward": reward,
        "policy": policy,
        "truth": truth,
        "logging_value": problem.true_value(problem.logging),
        "max_weight": float(weights.max()),
        "estimators": rows_out,
    }


def table(cases: list[dict[str, Any]]) -> str:
    """One markdown table of all cases."""
    lines = [
        "| reward | candidate | truth | estimator | bias | std | RMSE | RMSE / truth "
        "| max rel. error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        for r in c["estimators"]:
            lines.append(
                f"| {c['reward']} | {c['policy']} | {c['truth']:.4f} | {r['estimator']} | "
                f"{r['bias']:+.5f} | {r['std']:.5f} | {r['rmse']:.5f} | "
                f"{r['relative_rmse']:.2%} | {r['max_relative_error']:.1%} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--model", choices=("heldout", "same"), default="heldout")
    parser.add_argument("--problem-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/ope_synthetic.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cases = [
        run_case(
            reward,
            policy,
            rows=args.rows,
            seeds=args.seeds,
            model=args.model,
            problem_seed=args.problem_seed,
        )
        for reward in ("logistic", "linear")
        for policy in ("near", "far", "uniform")
    ]
    seconds = time.perf_counter() - start
    info = machine()
    print(f"OPE on synthetic bandits: {args.seeds} seeds x {args.rows} rows, reward model "
          f"fitted on {'the evaluated log' if args.model == 'same' else 'an independent log'}; "
          f"{info['machine']}, {info['cpus']} CPUs, {seconds:.1f} s")  # fmt: skip
    print()
    print(table(cases))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"command": " ".join(["python", f"benchmarks/{Path(__file__).name}",
                                  *(argv or sys.argv[1:])]),
             "seeds": args.seeds, "rows": args.rows, "model": args.model,
             "seconds": seconds, "machine": info, "cases": cases},
            indent=2,
        ) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
