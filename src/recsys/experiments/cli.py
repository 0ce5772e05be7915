"""``python -m recsys.experiments``: the experiment report, and writing simulated data.

Commands:

* ``report --data FILE --config FILE --out DIR [--experiment NAME] [--pre FILE]``:
  analyses one experiment of an experiments YAML from its exposure table (CSV, Parquet
  or JSON lines; :mod:`recsys.experiments.data` lists the columns) and writes
  ``report.md``, its plots and ``analysis.json`` into ``DIR``. The experiment is
  ``--experiment``, else the table's one ``experiment`` value, else the file's only
  experiment. Prints the decision; exits 0 whatever it is, 2 on bad input.
* ``simulate --out DIR [--units N] [--lift L] [--seed S]``: writes a simulated
  experiment (``exposures.csv``, ``pre.csv``) to try the report on.

Example::

    python -m recsys.experiments simulate --out /tmp/ab --units 100000 --lift 0.03
    python -m recsys.experiments report --data /tmp/ab/exposures.csv \\
        --pre /tmp/ab/pre.csv --config configs/experiments/example.yaml \\
        --experiment explore_eps10 --out /tmp/ab/report
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from recsys.experiments.analysis import analyze
from recsys.experiments.data import ExposureDataError, check_table, read_table
from recsys.experiments.errors import ExperimentConfigError
from recsys.experiments.loader import load_experiments
from recsys.experiments.report import write_report
from recsys.experiments.simulate import SimulationConfig, simulate_tables


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``report`` and ``simulate``)."""
    parser = argparse.ArgumentParser(
        prog="python -m recsys.experiments", description="A/B test reports for the recommender."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="analyse one experiment and write its report")
    rep.add_argument("--data", required=True, type=Path, help="exposure table (csv/parquet/jsonl)")
    rep.add_argument("--config", required=True, type=Path, help="experiments YAML")
    rep.add_argument("--out", required=True, type=Path, help="folder for report.md and plots")
    rep.add_argument("--experiment", help="the experiment (default: the data's or file's one)")
    rep.add_argument("--pre", type=Path, help="pre-period table for CUPED (unit + outcomes)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim = sub.add_parser("simulate", help="write a simulated experiment's tables")
    sim.add_argument("--out", required=True, type=Path)
    sim.add_argument("--units", type=int, default=100_000, help="simulated users")
    sim.add_argument("--lift", type=float, default=0.03, help="true relative CTR lift")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--arms", nargs=2, default=["control", "treatment"], metavar=("C", "T"))
    sim.add_argument("--experiment", default="simulated", help="the experiment column's value")
    return parser


def _report(args: argparse.Namespace) -> int:
    loaded = load_experiments(args.config)
    table = check_table(read_table(args.data), str(args.data))
    names = [e.name for layer in loaded.experiments.layers for e in layer.experiments]
    name = args.experiment
    if name is None and "experiment" in table.columns:
        values = sorted(table["experiment"].unique())
        if len(values) != 1:
            raise ExposureDataError(
                f"{args.data}: holds experiments {values}: pick one with --experiment"
            )
        name = values[0]
    if name is None:
        if len(names) != 1:
            raise ExposureDataError(
                f"{args.config} has experiments {names}: pick one with --experiment"
            )
        name = names[0]
    if name not in names:
        raise ExposureDataError(f"experiment {name!r} is not in {args.config} (it has {names})")
    if "experiment" in table.columns:
        table = table[table["experiment"] == name]
        if table.empty:
            raise ExposureDataError(f"{args.data}: no rows of experiment {name!r}")
    pre = check_table(read_table(args.pre), str(args.pre), pre=True) if args.pre else None
    design = loaded.experiments.experiment(name)
    config = loaded.analysis[name]
    show = not args.no_progress

    def progress(looks: list[float]) -> Iterable[float]:
        return tqdm(looks, desc=f"{name}: sequential looks", unit="look", disable=not show)

    analysis = analyze(table, design, config, pre, progress)
    report = write_report(analysis, args.out)
    d = analysis.decision
    print(f"{name}: {d.verdict}" + (f" ({d.arm})" if d.arm else ""))
    for reason in d.reasons:
        print(f"  - {reason}")
    print(f"report: {report}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    config = replace(SimulationConfig(), units=args.units, lift=args.lift)
    exposures, pre = simulate_tables(
        config, args.seed, arms=(args.arms[0], args.arms[1]), experiment=args.experiment
    )
    args.out.mkdir(parents=True, exist_ok=True)
    exposures.to_csv(args.out / "exposures.csv", index=False)
    pre.to_csv(args.out / "pre.csv", index=False)
    print(f"wrote {len(exposures)} exposures and {len(pre)} pre-period units to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 on a bad config or table.
    """
    args = build_parser().parse_args(argv)
    try:
        return _report(args) if args.command == "report" else _simulate(args)
    except (ExperimentConfigError, ExposureDataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
