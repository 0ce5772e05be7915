"""``python -m recsys.ope``: off-policy evaluation from the command line.

Commands:

* ``evaluate --log FILE``: every estimator on a logged-data file (CSV/Parquet with the
  columns of :mod:`recsys.ope.logged_io`), a markdown table of estimates and intervals;
  ``--gate ESTIMATOR`` adds the promotion decision against the logging policy's own
  value (or ``--current-value``); with ``--exit-code`` the exit status is the decision
  (0 promote, 1 keep the current policy, 2 bad input), here and with ``--store``.
* ``evaluate --open-bandit``: the Open Bandit protocol on the sample
  (``--behavior random`` estimates BTS from the random log, ``--behavior bts`` the
  reverse).
* ``evaluate --store URL --bandit NAME --candidate SPEC``: a policy bandit's exposures
  and attributed clicks read straight from the event store (SQLite or Redis), evaluated
  at the arm level (:mod:`recsys.ope.store_eval`; the Hydra app ``python -m
  recsys.ope.app`` runs the same function), ``--since``/``--until`` bound the time.
* ``simulate --out FILE``: a synthetic log with a candidate's distribution attached
  and the candidate's exact value, to try the rest end to end.

Example::

    python -m recsys.ope simulate --out /tmp/log.csv --rows 20000 --candidate near
    python -m recsys.ope evaluate --log /tmp/log.csv --truth 0.48123 --gate DR
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.config import ConfigError
from recsys.ope.bootstrap import BootstrapConfig, Refit, on_policy_estimate
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import ESTIMATOR_NAMES, OffPolicyEstimator, estimator_by_name
from recsys.ope.evaluate import applicable, estimates_table, evaluate
from recsys.ope.gate import PromotionConfig, promote
from recsys.ope.logged import LoggedBandit
from recsys.ope.logged_io import read_logged, write_logged
from recsys.ope.open_bandit_protocol import OpenBanditConfig, run_open_bandit
from recsys.ope.reward_model import item_position_refit, ridge_refit
from recsys.ope.store_eval import StoreEvaluateConfig, config_from_mapping, evaluate_store
from recsys.ope.synthetic import REWARD_KINDS, SyntheticBandit, SyntheticBanditConfig

REWARD_MODELS: tuple[str, ...] = ("auto", "given", "item-position", "ridge")
STORE_REWARDS: tuple[str, ...] = ("ctr", "any_click")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recsys.ope", description="Off-policy evaluation of logged bandit feedback."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="estimate a candidate policy's value from a log")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--log", type=Path, help="logged-data file (.csv or .parquet)")
    src.add_argument("--open-bandit", action="store_true", help="the Open Bandit sample")
    src.add_argument(
        "--store",
        default=None,
        help="the event store (sqlite:///path, a SQLite file, redis://host:port/db[?prefix=P]): "
        "a policy bandit's exposures and attributed clicks, evaluated at the arm level",
    )
    ev.add_argument(
        "--estimators",
        default=None,
        help=f"comma-separated, of {', '.join(ESTIMATOR_NAMES)} (default: all the log allows)",
    )
    ev.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (0: none)")
    ev.add_argument("--level", type=float, default=0.95, help="interval coverage")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ev.add_argument("--switch-tau", type=float, default=10.0, help="switch-DR's weight cap")
    ev.add_argument("--dros-lambda", type=float, default=100.0, help="DRos's shrinkage scale")
    ev.add_argument(
        "--reward-model",
        choices=REWARD_MODELS,
        default="auto",
        help="auto: the file's q_* columns, else ridge on x_* columns, else the smoothed "
        "click rate per (action, position)",
    )
    ev.add_argument("--smoothing", type=float, default=10.0, help="click-rate model smoothing")
    ev.add_argument(
        "--no-refit",
        action="store_true",
        help="fit the reward model once, not on every bootstrap resample",
    )
    ev.add_argument("--truth", type=float, default=None, help="a known true value to compare with")
    ev.add_argument("--gate", default=None, help="estimator whose interval the promotion gate uses")
    ev.add_argument(
        "--current-value",
        type=float,
        default=None,
        help="the live policy's value for the gate (default: the log's own mean reward)",
    )
    ev.add_argument("--margin", type=float, default=0.0, help="the gate's absolute margin")
    ev.add_argument(
        "--exit-code", action="store_true",
        help="with --gate: exit 1 when the gate keeps the current policy (0: promote)",
    )  # fmt: skip
    ev.add_argument("--report-dir", type=Path, default=None, help="write the gate's report here")
    ev.add_argument("--json", type=Path, default=None, help="write the estimates as JSON")
    bar = ev.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", help="always show the progress bar")
    bar.add_argument("--no-progress", action="store_true", help="never show it")
    obd = ev.add_argument_group("Open Bandit sample")
    obd.add_argument("--behavior", choices=("random", "bts"), default="random",
                     help="the log to use; the other policy is evaluated")  # fmt: skip
    obd.add_argument("--data-dir", type=Path, default=None,
                     help="datasets folder (default $RECSYS_DATA_DIR, "
                          "else ../shared/datasets)")  # fmt: skip
    obd.add_argument("--campaign", default="all")
    obd.add_argument("--bts-samples", type=int, default=1_000_000,
                     help="Monte Carlo draws for the BTS probabilities")  # fmt: skip

    st = ev.add_argument_group("event store (--store)")
    st.add_argument("--bandit", default=None, help="the policy bandit whose exposures form the log")
    st.add_argument(
        "--candidate", default=None, help="a bandit state file, arm:<name> (that arm) or uniform"
    )
    st.add_argument("--current", default=None,
                    help="the live policy for the gate, in --candidate's form "
                         "(default: --current-value, else the log's mean reward)")  # fmt: skip
    st.add_argument("--arms", default=None,
                    help="comma-separated arm names (default: the state file's)")  # fmt: skip
    st.add_argument("--since", default=None, help="exposures at or after (ISO 8601 or epoch s)")
    st.add_argument("--until", default=None, help="exposures before (ISO 8601 or epoch s)")
    st.add_argument("--reward", choices=STORE_REWARDS, default="ctr",
                    help="ctr: clicks / items shown per list; any_click: 1 if clicked")  # fmt: skip
    st.add_argument("--window-s", type=float, default=1800.0, help="attribution window")
    st.add_argument("--relative-margin", type=float, default=0.0,
                    help="the gate's relative margin")  # fmt: skip

    sim = sub.add_parser("simulate", help="write a synthetic log with a known true value")
    sim.add_argument("--out", type=Path, required=True, help=".csv or .parquet")
    sim.add_argument("--rows", type=int, default=10_000)
    sim.add_argument("--candidate", choices=("logging", "near", "far", "uniform"), default="near")
    sim.add_argument("--reward", choices=REWARD_KINDS, default="logistic")
    sim.add_argument("--n-actions", type=int, default=10)
    sim.add_argument("--dim", type=int, default=5)
    sim.add_argument("--problem-seed", type=int, default=0, help="the problem's parameters")
    sim.add_argument("--seed", type=int, default=1, help="the log's draws")
    return parser


def _estimators(args: argparse.Namespace) -> list[OffPolicyEstimator] | None:
    if args.estimators is None:
        return None
    return [
        estimator_by_name(n, switch_tau=args.switch_tau, dros_lambda=args.dros_lambda)
        for n in args.estimators.split(",")
        if n.strip()
    ]


def _progress(args: argparse.Namespace) -> bool:
    if args.progress:
        return True
    return not args.no_progress and sys.stderr.isatty()


def _refit(args: argparse.Namespace, log: LoggedBandit) -> Refit | None:
    kind = args.reward_model
    if kind == "auto":
        kind = (
            "given"
            if log.reward_hat is not None
            else "ridge"
            if log.context is not None
            else "item-position"
        )
    if kind == "given":
        if log.reward_hat is None:
            raise OPEInputError("--reward-model given: the file has no q_* columns")
        return None
    if kind == "ridge":
        return ridge_refit()
    return item_position_refit(args.smoothing)


def _evaluate_file(args: argparse.Namespace, config: BootstrapConfig) -> dict[str, Any]:
    log = read_logged(args.log)
    if log.target_pscore is None:
        raise OPEInputError(
            f"{args.log}: no candidate policy (pi_* columns or a target_pscore column)"
        )
    chosen = _estimators(args)
    refit = _refit(args, log) if log.action_dist is not None else None
    if refit is not None and args.no_refit:
        log, refit = refit(log), None
    if chosen is None:
        probe = refit(log) if refit is not None else log
        chosen = applicable(probe, [
            estimator_by_name(n, switch_tau=args.switch_tau, dros_lambda=args.dros_lambda)
            for n in ESTIMATOR_NAMES
        ])  # fmt: skip
    estimates = evaluate(log, chosen, config, refit=refit)
    print(f"{args.log}: {log.n_rounds} rows, {log.n_actions} actions, {log.n_positions} positions, "
          f"logged mean reward {log.on_policy_value():.6f}")  # fmt: skip
    print()
    print(estimates_table(estimates, truth=args.truth))
    out: dict[str, Any] = {
        "log": str(args.log),
        "rows": log.n_rounds,
        "logged_mean_reward": log.on_policy_value(),
        "truth": args.truth,
        "estimates": [e.to_dict() for e in estimates],
    }
    if args.gate is not None:
        wanted = estimator_by_name(args.gate).name
        match = [e for e in estimates if e.estimator == wanted]
        if not match:
            raise OPEInputError(f"--gate {args.gate}: that estimator was not run")
        current: Any = args.current_value
        if current is None:
            current = on_policy_estimate(log, config)
        decision = promote(
            match[0],
            current,
            config=PromotionConfig(margin=args.margin),
            current_name="logging policy" if args.current_value is None else "current",
            report_dir=args.report_dir,
        )
        print()
        print(decision.to_markdown())
        out["promotion"] = decision.to_dict()
    return out


def _evaluate_open_bandit(args: argparse.Namespace, config: BootstrapConfig) -> dict[str, Any]:
    candidate = "bts" if args.behavior == "random" else "random"
    cfg = OpenBanditConfig(
        campaign=args.campaign,
        bts_samples=args.bts_samples,
        smoothing=args.smoothing,
        refit_reward_model=not args.no_refit,
        switch_tau=args.switch_tau,
        dros_lambda=args.dros_lambda,
        bootstrap=config,
    )
    result = run_open_bandit(
        args.behavior, candidate, data_dir=args.data_dir, config=cfg, estimators=_estimators(args)
    )
    print(f"Open Bandit sample, campaign {args.campaign}: {candidate}'s CTR from {args.behavior}'s "
          f"log ({result.rows} rows, {result.clicks} clicks); max weight {result.max_weight:.1f}, "
          f"effective sample size {result.effective_sample_size:.0f}")  # fmt: skip
    print()
    print(result.table())
    return result.to_dict()


def _simulate(args: argparse.Namespace) -> dict[str, Any]:
    problem = SyntheticBandit(
        SyntheticBanditConfig(
            n_actions=args.n_actions, dim=args.dim, reward=args.reward, seed=args.problem_seed
        )
    )
    policies = problem.candidates()
    pi = policies[args.candidate]
    sample = problem.sample(args.rows, seed=args.seed, candidate=pi)
    path = write_logged(sample.log, args.out)
    truth = problem.true_value(pi)
    logging = problem.true_value(problem.logging)
    print(f"wrote {path}: {args.rows} rows; true value of '{args.candidate}' {truth:.6f}, "
          f"of the logging policy {logging:.6f}")  # fmt: skip
    return {"path": str(path), "candidate": args.candidate, "truth": truth, "logging": logging}


def store_config_from_args(args: argparse.Namespace) -> StoreEvaluateConfig:
    """The :class:`StoreEvaluateConfig` of ``evaluate --store`` (what the Hydra app builds
    from ``configs/ope/evaluate.yaml``).

    Raises:
        ConfigError: a missing or bad value.
    """
    for flag in ("bandit", "candidate"):
        if getattr(args, flag) is None:
            raise ConfigError(f"--store needs --{flag}")
    return config_from_mapping({
        "store": args.store, "bandit": args.bandit, "candidate": args.candidate,
        "current": args.current, "current_value": args.current_value,
        "arms": None if args.arms is None else [a.strip() for a in args.arms.split(",")],
        "since": args.since, "until": args.until, "reward": args.reward,
        "estimators": args.estimators, "resamples": args.resamples, "level": args.level,
        "seed": args.seed, "switch_tau": args.switch_tau, "dros_lambda": args.dros_lambda,
        "refit": not args.no_refit, "window_s": args.window_s, "gate": args.gate,
        "margin": args.margin, "relative_margin": args.relative_margin, "truth": args.truth,
        "report_dir": None if args.report_dir is None else str(args.report_dir),
        "json_out": None if args.json is None else str(args.json),
        "progress": _progress(args),
    })  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2 on bad input)."""
    args = _parser().parse_args(argv)
    if getattr(args, "exit_code", False) and getattr(args, "gate", None) is None:
        print("error: --exit-code needs --gate (the decision it reports)", file=sys.stderr)
        return 2
    try:
        if args.command == "evaluate" and args.store is not None:
            out = evaluate_store(store_config_from_args(args))
            return _status(args, out)
        if args.command == "simulate":
            out = _simulate(args)
            json_path = None
        else:
            config = BootstrapConfig(
                n_resamples=args.resamples, level=args.level, seed=args.seed,
                progress=_progress(args),
            )  # fmt: skip
            out = (
                _evaluate_open_bandit(args, config)
                if args.open_bandit
                else _evaluate_file(args, config)
            )
            json_path = args.json
    except (OPEInputError, ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return _status(args, out)


def _status(args: argparse.Namespace, out: dict[str, Any]) -> int:
    """0, or with ``--exit-code`` 1 when the gate kept the current policy: a deploy step
    can branch on the decision without reading ``promotion.json``."""
    if not getattr(args, "exit_code", False):
        return 0
    return 0 if out["promotion"]["promote"] else 1
