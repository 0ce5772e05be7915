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
* ``app key=value ...``: the report as a Hydra app over
  ``configs/experiments/report.yaml`` (:mod:`recsys.experiments.app`).

The ``report`` flags build a :class:`ReportConfig` and call :func:`report`, as the Hydra
app does.

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
from dataclasses import dataclass, replace
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
    sub.add_parser("app", help="the report as a Hydra app: key=value overrides of "
                   "configs/experiments/report.yaml", add_help=False)  # fmt: skip
    sim = sub.add_parser("simulate", help="write a simulated experiment's tables")
    sim.add_argument("--out", required=True, type=Path)
    sim.add_argument("--units", type=int, default=100_000, help="simulated users")
    sim.add_argument("--lift", type=float, default=0.03, help="true relative CTR lift")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--arms", nargs=2, default=["control", "treatment"], metavar=("C", "T"))
    sim.add_argument("--experiment", default="simulated", help="the experiment column's value")
    return parser


@dataclass(frozen=True)
class ReportConfig:
    """One experiment report (``configs/experiments/report.yaml`` annotates each key).

    The ``report`` flags and the Hydra app (``python -m recsys.experiments.app``) build
    this and call :func:`report`.

    Attributes:
        data: the exposure table (CSV, Parquet or JSON lines).
        config: the experiments YAML.
        out: folder for ``report.md``, its plots and ``analysis.json``.
        experiment: the experiment; None: the table's one ``experiment`` value, else the
            file's only experiment.
        pre: a pre-period table for CUPED; None: no adjustment.
        progress: show a progress bar over the sequential looks.

    Example:
        >>> ReportConfig(data="x.csv", config="e.yaml", out="r").progress
        True
    """

    data: str
    config: str
    out: str
    experiment: str | None = None
    pre: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class ReportResult:
    """What :func:`report` did: the experiment, its decision and the report's path."""

    experiment: str
    verdict: str
    arm: str | None
    reasons: tuple[str, ...]
    report: Path


def report(cfg: ReportConfig) -> ReportResult:
    """Analyses one experiment and writes its report.

    Args:
        cfg: the inputs and the output folder.

    Returns:
        The decision and where the report is.

    Raises:
        ExperimentConfigError: the experiments file does not load.
        ExposureDataError: the tables are wrong or do not pick one experiment.
        FileNotFoundError: an input is missing.
    """
    loaded = load_experiments(cfg.config)
    table = check_table(read_table(Path(cfg.data)), cfg.data)
    names = [e.name for layer in loaded.experiments.layers for e in layer.experiments]
    name = cfg.experiment
    if name is None and "experiment" in table.columns:
        values = sorted(table["experiment"].unique())
        if len(values) != 1:
            raise ExposureDataError(
                f"{cfg.data}: holds experiments {values}: pick one with --experiment"
            )
        name = values[0]
    if name is None:
        if len(names) != 1:
            raise ExposureDataError(
                f"{cfg.config} has experiments {names}: pick one with --experiment"
            )
        name = names[0]
    if name not in names:
        raise ExposureDataError(f"experiment {name!r} is not in {cfg.config} (it has {names})")
    if "experiment" in table.columns:
        table = table[table["experiment"] == name]
        if table.empty:
            raise ExposureDataError(f"{cfg.data}: no rows of experiment {name!r}")
    pre = check_table(read_table(Path(cfg.pre)), cfg.pre, pre=True) if cfg.pre else None
    design = loaded.experiments.experiment(name)
    plan = loaded.analysis[name]

    def progress(looks: list[float]) -> Iterable[float]:
        return tqdm(looks, desc=f"{name}: sequential looks", unit="look", disable=not cfg.progress)

    analysis = analyze(table, design, plan, pre, progress)
    path = write_report(analysis, Path(cfg.out))
    d = analysis.decision
    return ReportResult(name, d.verdict, d.arm, tuple(d.reasons), path)


def print_result(result: ReportResult) -> None:
    """Prints the decision, its reasons and the report's path (both entry points)."""
    print(f"{result.experiment}: {result.verdict}" + (f" ({result.arm})" if result.arm else ""))
    for reason in result.reasons:
        print(f"  - {reason}")
    print(f"report: {result.report}")


def config_from_args(args: argparse.Namespace) -> ReportConfig:
    """The :class:`ReportConfig` of parsed ``report`` flags."""
    return ReportConfig(
        data=str(args.data),
        config=str(args.config),
        out=str(args.out),
        experiment=args.experiment,
        pre=None if args.pre is None else str(args.pre),
        progress=not args.no_progress,
    )


def _report(args: argparse.Namespace) -> int:
    print_result(report(config_from_args(args)))
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "app":
        from recsys.experiments.app import run_app

        return run_app(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _report(args) if args.command == "report" else _simulate(args)
    except (ExperimentConfigError, ExposureDataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
