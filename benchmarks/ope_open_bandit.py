"""The Open Bandit protocol on the sample: each policy's CTR estimated from the other's log.

Reads ``$RECSYS_DATA_DIR/open-bandit-sample`` (default ``../shared/datasets``): the
random log (uniform random, propensity 1/80) and the BTS log (Bernoulli Thompson
sampling, its true propensities). BTS's CTR is estimated from the random log with BTS's
item-position probabilities computed by Monte Carlo from its Beta priors, and the
random policy's CTR from the BTS log (1/80 per item and position); every estimator, with
bootstrap intervals; compared with each policy's own logged CTR. DM and the doubly
robust estimators use a smoothed per-(item, position) click-rate model fitted on the
behavior log and refitted on every bootstrap resample.

Usage:
    OMP_WAIT_POLICY=PASSIVE RECSYS_DATA_DIR=../shared/datasets \\
        python benchmarks/ope_open_bandit.py --resamples 1000 --out results/ope_open_bandit.json
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

import numpy as np

from recsys.ope.bootstrap import BootstrapConfig
from recsys.ope.open_bandit import (
    bts_position_probabilities,
    load_bts_prior,
    load_open_bandit_log,
    open_bandit_dir,
)
from recsys.ope.open_bandit_protocol import OpenBanditConfig, run_open_bandit


def prior_bts_vs_logged_bts(root: Path, cfg: OpenBanditConfig) -> dict[str, float]:
    """How closely the BTS policy of the priors reproduces the BTS that wrote the log.

    The logging BTS updated its posteriors during the week (its logged propensities
    vary per item and position over time); the policy evaluated here is the one of the
    priors alone, as in the Open Bandit Pipeline.
    """
    log = load_open_bandit_log("bts", data_dir=root, n_actions=cfg.n_items).data
    prior = load_bts_prior(cfg.campaign, root)
    bts = bts_position_probabilities(
        prior, n_samples=cfg.bts_samples, seed=cfg.seed, groups=cfg.bts_groups
    )
    freq = np.zeros((log.n_actions, log.n_positions))
    np.add.at(freq, (log.action, log.position), 1.0)
    freq /= freq.sum(axis=0, keepdims=True)
    at_rows = bts.probabilities[log.action, log.position]
    return {
        "mean_logged_propensity": float(log.pscore.mean()),
        "mean_prior_probability_at_logged_rows": float(at_rows.mean()),
        "frequency_correlation": float(np.corrcoef(freq.ravel(), bts.probabilities.ravel())[0, 1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and Monte Carlo seed")
    parser.add_argument("--bts-samples", type=int, default=1_000_000)
    parser.add_argument("--smoothing", type=float, default=10.0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/ope_open_bandit.json"))
    args = parser.parse_args(argv)
    try:
        root = open_bandit_dir(args.data_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cfg = OpenBanditConfig(
        bts_samples=args.bts_samples,
        seed=args.seed,
        smoothing=args.smoothing,
        bootstrap=BootstrapConfig(
            n_resamples=args.resamples, level=args.level, seed=args.seed, progress=args.progress
        ),
    )
    info = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    results = []
    for behavior, candidate in (("random", "bts"), ("bts", "random")):
        start = time.perf_counter()
        result = run_open_bandit(behavior, candidate, data_dir=root, config=cfg)
        seconds = time.perf_counter() - start
        print(f"## {candidate}'s CTR from {behavior}'s log")
        print()
        print(f"{result.rows} rows, {result.clicks} clicks (CTR {result.behavior_ctr:.5f}); "
              f"largest weight {result.max_weight:.1f}, effective sample size "
              f"{result.effective_sample_size:.0f}; {seconds:.1f} s on {info['machine']}, "
              f"{info['cpus']} CPUs")  # fmt: skip
        if result.bts_samples:
            se = result.policy_probability_error
            print(f"BTS probabilities: {result.bts_samples:,} Monte Carlo draws, largest "
                  f"standard error of one probability {se:.1e}")  # fmt: skip
        print()
        print(result.table())
        print()
        results.append({**result.to_dict(), "seconds": seconds})
    check = prior_bts_vs_logged_bts(root, cfg)
    print("## The BTS of the priors vs the BTS that logged")
    print()
    print(f"mean logged propensity on the BTS log {check['mean_logged_propensity']:.4f}; the "
          f"priors' BTS gives those rows {check['mean_prior_probability_at_logged_rows']:.4f} "
          f"on average; correlation of the log's item-position frequencies with the priors' "
          f"probabilities {check['frequency_correlation']:.2f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"command": " ".join(["python", f"benchmarks/{Path(__file__).name}",
                                  *(argv or sys.argv[1:])]),
             "resamples": args.resamples, "level": args.level, "bts_samples": args.bts_samples,
             "smoothing": args.smoothing, "machine": info, "results": results,
             "prior_bts_vs_logged_bts": check},
            indent=2,
        ) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
