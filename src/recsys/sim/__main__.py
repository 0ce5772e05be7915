"""``python -m recsys.sim run``: simulated users against a repository's ``recommend``.

Examples::

    # the real server (started here on the repository, or --url for a running one),
    # events through the repository's store and the real consumer
    python -m recsys.sim run --repository artifacts/triton_repo --steps 2000 \\
        --store sqlite:///tmp/rt.db --segments configs/segments/movielens.yaml --out sim-out

    # the same computation in-process, for large sweeps
    python -m recsys.sim run --repository artifacts/triton_repo --mode in-process --steps 20000

Writes ``steps.jsonl`` (one visit per line, with the true click probability of every
shown item) and ``summary.json`` into ``--out``, and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recsys.sim.loop import EngineRecommender, SimConfig, StoreSink, TritonRecommender, simulate
from recsys.sim.world import World, WorldConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recsys.sim", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate visits against a repository's recommend model")
    run.add_argument("--repository", type=Path, required=True, help="Triton model repository")
    run.add_argument("--mode", choices=("triton", "in-process"), default="triton")
    run.add_argument("--url", default=None, help="gRPC host:port of a running server (triton mode)")
    run.add_argument(
        "--store",
        default=None,
        help="event store the events go to (and the consumer reads): sqlite:///path or "
        "redis://host:port/db[?prefix=P]",
    )
    run.add_argument("--segments", type=Path, default=None, help="segment definitions")
    run.add_argument("--data-dir", type=Path,
                     default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
                     help="where ml-100k/ is (the truth is fitted on all of it)")  # fmt: skip
    run.add_argument("--steps", type=int, default=1000)
    run.add_argument("--k", type=int, default=10)
    run.add_argument("--users", type=int, default=None, help="visiting users (default: all)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--world-seed", type=int, default=0)
    run.add_argument("--out", type=Path, default=None, help="folder for steps.jsonl, summary.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from recsys.data.movielens import load_ml100k
    from recsys.features.schema import FeatureSchema
    from recsys.runtime.user_state import SCHEMA_FILE
    from recsys.serving.repository import model_versions

    data_dir = args.data_dir / "ml-100k"
    if not (data_dir / "u.data").is_file():
        print(
            f"error: MovieLens-100K not found under {args.data_dir} (--data-dir)", file=sys.stderr
        )
        return 2
    world = World.fit(load_ml100k(data_dir), WorldConfig(seed=args.world_seed))
    cfg = SimConfig(steps=args.steps, k=args.k, users=args.users, seed=args.seed, progress=True)
    sink = None
    if args.store:
        folder = (
            args.repository / "recommend" / str(model_versions(args.repository, "recommend")[-1])
        )
        schema = FeatureSchema.from_dict(json.loads((folder / SCHEMA_FILE).read_text()))
        sink = StoreSink(args.store, schema, args.segments)
    server: Any = None
    try:
        if args.mode == "in-process":
            from recsys.serving.inprocess import engine_from_repository

            recommender: Any = EngineRecommender(engine_from_repository(args.repository))
        else:
            url = args.url
            if url is None:
                from recsys.serving.server import LocalTritonServer, TritonServerConfig

                server = LocalTritonServer(TritonServerConfig(
                    model_repository=args.repository, model_control_mode="explicit",
                    load_models=("*",), startup_timeout_s=300))  # fmt: skip
                server.start()
                url = server.grpc_url
            recommender = TritonRecommender(url)
        log = simulate(world, recommender, cfg, sink=sink)
    finally:
        if sink is not None:
            sink.close()
        if server is not None:
            server.stop()
    summary = {**log.summary(), "mode": args.mode, "config": asdict(cfg)}
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with (args.out / "steps.jsonl").open("w", encoding="utf-8") as fh:
            for step in log.steps:
                fh.write(json.dumps(asdict(step)) + "\n")
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
