"""Off-policy evaluation from the event store as a Hydra app: ``python -m recsys.ope.app``.

Composes ``configs/ope/evaluate.yaml`` with the command line's overrides, builds the same
:class:`~recsys.ope.store_eval.StoreEvaluateConfig` as ``python -m recsys.ope evaluate
--store ...`` and calls the same :func:`~recsys.ope.store_eval.evaluate_store`.
``json_out: null`` writes ``estimates.json`` into Hydra's run folder (``outputs/ope/<date>/
<time>``, or ``hydra.run.dir=...``), and so does the gate's report (``report_dir: null``);
``--multirun`` sweeps, e.g. ``candidate=uniform,arm:deterministic``. A bad override or
value exits 2 with one message; so does an input the evaluation refuses (no exposures of
the bandit, a missing store). ``exit_code=true`` (with ``gate``) makes the gate's decision
the exit status, as ``--exit-code`` does: 0 promote, 1 keep the current policy.

Example::

    python -m recsys.ope.app store=sqlite:///tmp/rt.db bandit=ranking \\
        candidate=/tmp/bandit.json current=arm:deterministic gate=snips
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from recsys.config import ConfigError
from recsys.config.hydra_app import CONFIG_DIR, USER_ERROR, run_hydra_app
from recsys.ope.errors import OPEInputError
from recsys.ope.store_eval import config_from_mapping, evaluate_store

CONFIG_NAME = "evaluate"
"""``configs/ope/evaluate.yaml``."""


def task(values: dict[str, Any], output_dir: Path) -> int:
    """One evaluation from the composed config (the app's body).

    Args:
        values: the resolved ``configs/ope/evaluate.yaml`` with the overrides.
        output_dir: Hydra's run folder (the default ``json_out`` and ``report_dir``).

    Returns:
        0; with ``exit_code`` 1 when the gate kept the current policy; 2 on a bad value
        or an input the evaluation refuses.
    """
    values = dict(values)
    exit_code = values.pop("exit_code", False)
    if not isinstance(exit_code, bool):
        print(f"recsys ope: config error: exit_code: expected a bool, got {exit_code!r}",
              file=sys.stderr)  # fmt: skip
        return USER_ERROR
    if exit_code and values.get("gate") is None:
        print("recsys ope: config error: exit_code needs gate (the decision it reports)",
              file=sys.stderr)  # fmt: skip
        return USER_ERROR
    if values.get("json_out") is None:
        values["json_out"] = str(output_dir / "estimates.json")
    if values.get("report_dir") is None and values.get("gate") is not None:
        values["report_dir"] = str(output_dir)
    try:
        config = config_from_mapping(values, "ope")
    except ConfigError as error:
        print(f"recsys ope: config error: {error}", file=sys.stderr)
        return USER_ERROR
    try:
        out = evaluate_store(config)
    except (OPEInputError, FileNotFoundError) as error:
        print(f"recsys ope: error: {error}", file=sys.stderr)
        return USER_ERROR
    if exit_code:
        return 0 if out["promotion"]["promote"] else 1
    return 0


def run_app(argv: list[str] | None = None) -> int:
    """Runs the Hydra app on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_hydra_app(CONFIG_DIR / "ope", CONFIG_NAME, task, args, prog="recsys.ope.app")


if __name__ == "__main__":
    raise SystemExit(run_app())
