"""The experiment report as a Hydra app: ``python -m recsys.experiments.app key=value ...``.

Composes ``configs/experiments/report.yaml`` with the command line's overrides, builds
the same :class:`~recsys.experiments.cli.ReportConfig` as ``python -m
recsys.experiments report`` and calls the same :func:`~recsys.experiments.cli.report`.
``out: null`` (the default) writes the report into Hydra's run folder
(``outputs/experiments/<date>/<time>``, or ``hydra.run.dir=...``). A bad override, a bad
value or bad input (the experiments file, the tables) exits 2 with one message.

Example::

    python -m recsys.experiments.app data=/tmp/ab/exposures.csv pre=/tmp/ab/pre.csv \\
        config=configs/experiments/example.yaml experiment=explore_eps10
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from recsys.config import ConfigError, build
from recsys.config.hydra_app import CONFIG_DIR, USER_ERROR, run_hydra_app
from recsys.experiments.cli import ReportConfig, print_result, report
from recsys.experiments.data import ExposureDataError
from recsys.experiments.errors import ExperimentConfigError

CONFIG_NAME = "report"
"""``configs/experiments/report.yaml``."""


def task(values: dict[str, Any], output_dir: Path) -> int:
    """One report from the composed config (the app's body).

    Args:
        values: the resolved ``configs/experiments/report.yaml`` with the overrides.
        output_dir: Hydra's run folder (the default ``out``).

    Returns:
        0 whatever the decision, 2 on a bad value or bad input.
    """
    try:
        if values.get("out") is None:
            values = {**values, "out": str(output_dir)}
        config = build(ReportConfig, values, "report")
        print_result(report(config))
    except ConfigError as error:
        print(f"recsys experiments: config error: {error}", file=sys.stderr)
        return USER_ERROR
    except (ExperimentConfigError, ExposureDataError, FileNotFoundError) as error:
        print(f"recsys experiments: input error: {error}", file=sys.stderr)
        return USER_ERROR
    return 0


def run_app(argv: list[str] | None = None) -> int:
    """Runs the Hydra app on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_hydra_app(
        CONFIG_DIR / "experiments", CONFIG_NAME, task, args, prog="recsys.experiments.app"
    )


if __name__ == "__main__":
    raise SystemExit(run_app())
