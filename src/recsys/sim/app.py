"""The simulation as a Hydra app: ``python -m recsys.sim.app key=value ...``.

Composes ``configs/sim/run.yaml`` with the command line's overrides, builds the same
:class:`~recsys.sim.run.SimRunConfig` as ``python -m recsys.sim run`` and calls the same
:func:`~recsys.sim.run.run`. ``out: null`` (the default) writes ``steps.jsonl`` and
``summary.json`` into Hydra's run folder (``outputs/<date>/<time>``, or
``hydra.run.dir=...``); ``--multirun`` sweeps, e.g. ``seed=0,1,2``. A bad override or
value exits 2 with one message; missing MovieLens-100K too.

Example::

    python -m recsys.sim.app repository=artifacts/triton_repo mode=in-process steps=2000
    python -m recsys.sim.app --multirun repository=artifacts/triton_repo mode=in-process seed=0,1,2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from recsys.config import ConfigError
from recsys.config.hydra_app import CONFIG_DIR, USER_ERROR, run_hydra_app
from recsys.sim.run import SimInputError, config_from_mapping, run

CONFIG_NAME = "run"
"""``configs/sim/run.yaml``."""


def task(values: dict[str, Any], output_dir: Path) -> int:
    """One run from the composed config (the app's body).

    Args:
        values: the resolved ``configs/sim/run.yaml`` with the overrides.
        output_dir: Hydra's run folder (the default ``out``).

    Returns:
        0, or 2 on a bad value or missing data.
    """
    try:
        if values.get("out") is None:
            values = {**values, "out": str(output_dir)}
        config = config_from_mapping(values, "sim")
    except ConfigError as error:
        print(f"recsys sim: config error: {error}", file=sys.stderr)
        return USER_ERROR
    try:
        summary = run(config)
    except SimInputError as error:
        print(f"recsys sim: data error: {error}", file=sys.stderr)
        return USER_ERROR
    print(json.dumps(summary, indent=2))
    return 0


def run_app(argv: list[str] | None = None) -> int:
    """Runs the Hydra app on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_hydra_app(CONFIG_DIR / "sim", CONFIG_NAME, task, args, prog="recsys.sim.app")


if __name__ == "__main__":
    raise SystemExit(run_app())
