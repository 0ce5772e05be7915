"""``python -m recsys.sim run``: simulated users against a repository's ``recommend``.

Examples::

    # the real server (started here on the repository, or --url for a running one),
    # events through the repository's store and the real consumer
    python -m recsys.sim run --repository artifacts/triton_repo --steps 2000 \\
        --store sqlite:///tmp/rt.db --segments configs/segments/movielens.yaml --out sim-out

    # the same computation in-process, for large sweeps
    python -m recsys.sim run --repository artifacts/triton_repo --mode in-process --steps 20000

    # the same run as a Hydra app over configs/sim/run.yaml (recsys.sim.app)
    python -m recsys.sim app repository=artifacts/triton_repo mode=in-process steps=20000

Writes ``steps.jsonl`` (one visit per line, with the true click probability of every
shown item) and ``summary.json`` into ``--out``, and prints the summary. The flags build
a :class:`~recsys.sim.run.SimRunConfig` and call :func:`~recsys.sim.run.run`, as the
Hydra app does. Exit status 2 on a bad config or missing data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from recsys.config import ConfigError
from recsys.sim.run import SimInputError, SimRunConfig, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recsys.sim", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="simulate visits against a repository's recommend model")
    run_cmd.add_argument("--repository", type=Path, required=True, help="Triton model repository")
    run_cmd.add_argument("--mode", choices=("triton", "in-process"), default="triton")
    run_cmd.add_argument("--url", default=None,
                         help="gRPC host:port of a running server (triton mode)")  # fmt: skip
    run_cmd.add_argument(
        "--store",
        default=None,
        help="event store the events go to (and the consumer reads): sqlite:///path or "
        "redis://host:port/db[?prefix=P]",
    )
    run_cmd.add_argument("--segments", type=Path, default=None, help="segment definitions")
    run_cmd.add_argument("--data-dir", type=Path,
                         default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
                         help="where ml-100k/ is (the truth is fitted on all of it)")  # fmt: skip
    run_cmd.add_argument("--steps", type=int, default=1000)
    run_cmd.add_argument("--k", type=int, default=10)
    run_cmd.add_argument("--users", type=int, default=None, help="visiting users (default: all)")
    run_cmd.add_argument("--seed", type=int, default=0)
    run_cmd.add_argument("--world-seed", type=int, default=0)
    run_cmd.add_argument("--out", type=Path, default=None,
                         help="folder for steps.jsonl, summary.json")  # fmt: skip
    run_cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("app", help="the same run as a Hydra app: key=value overrides of "
                   "configs/sim/run.yaml", add_help=False)  # fmt: skip
    return parser


def config_from_args(args: argparse.Namespace) -> SimRunConfig:
    """The :class:`SimRunConfig` of parsed ``run`` flags.

    Example:
        >>> args = _parser().parse_args(["run", "--repository", "repo", "--steps", "5"])
        >>> config_from_args(args).steps
        5
    """

    def text(value: Path | None) -> str | None:
        return None if value is None else str(value)

    return SimRunConfig(
        repository=str(args.repository),
        mode=args.mode,
        url=args.url,
        store=args.store,
        segments=text(args.segments),
        data_dir=str(args.data_dir),
        steps=args.steps,
        k=args.k,
        users=args.users,
        seed=args.seed,
        world_seed=args.world_seed,
        out=text(args.out),
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 on a bad config or missing data.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "app":
        from recsys.sim.app import run_app

        return run_app(argv[1:])
    args = _parser().parse_args(argv)
    try:
        summary = run(config_from_args(args))
    except (SimInputError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
