"""An A/B test through the real server: exploration arms against the static ranker.

Trains the default-sized models (one epoch each, as ``benchmarks/serving_benchmark.py``),
writes their bundle, builds a repository whose ``recommend`` has an experiments file
(one layer: ``control`` = the deterministic ranking, ``explore_pl`` = Plackett-Luce at
temperature 0.3, ``explore_eps`` = epsilon-greedy 0.1; equal weights), serves it on the
local Triton server, sends ``--steps`` simulated visits over gRPC (users from the truth
fitted on all of MovieLens-100K) and analyses the experiment with
``recsys.experiments``. Printed: per arm the visits, the observed CTR and the true
expected CTR of the lists shown (known from the simulator), and the analysis's relative
CTR lift of each treatment with its interval and the decision; the report (markdown,
plots, JSON) goes to ``--out``.

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/loop_ab.py --steps 6000 --out results/loop_ab
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_benchmark import load_average, train_models

EXPERIMENTS = """
layers:
  - name: ranking_policy
    salt: loop-ab-2026-12
    experiments:
      - name: exploration
        arms:
          - {name: control, weight: 1}
          - {name: explore_pl, weight: 1, policy: "plackett_luce:0.3"}
          - {name: explore_eps, weight: 1, policy: "epsilon_greedy:0.1"}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
    )
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from recsys.bundle.writer import write_bundle
    from recsys.data.movielens import load_ml100k
    from recsys.experiments import load_experiments
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig
    from recsys.sim import SimConfig, TritonRecommender, World, WorldConfig
    from recsys.sim.ab_loop import run_ab

    recommender, two_tower, schema, dataset = train_models(args.data_dir)
    world = World.fit(load_ml100k(args.data_dir / "ml-100k"), WorldConfig(seed=0))
    with tempfile.TemporaryDirectory(prefix="recsys-loop-ab-") as tmp:
        path = Path(tmp) / "experiments.yaml"
        path.write_text(EXPERIMENTS)
        bundle = write_bundle(recommender, two_tower, schema, dataset, Path(tmp) / "bundle")
        root = Path(tmp) / "repository"
        build_repository(bundle, root, RepositoryConfig(experiments=str(path)))
        config = TritonServerConfig(model_repository=root, model_control_mode="explicit",
                                    load_models=("*",), startup_timeout_s=300)  # fmt: skip
        start = time.perf_counter()
        with LocalTritonServer(config) as server:
            client = TritonRecommender(server.grpc_url)
            try:
                result = run_ab(
                    world, client, load_experiments(path), "exploration",
                    SimConfig(steps=args.steps, seed=args.seed, progress=True),
                    report_dir=args.out,
                )  # fmt: skip
            finally:
                client.close()
        seconds = time.perf_counter() - start
    lines = [
        "| arm | visits | observed CTR | true CTR of the lists shown | CTR lift vs control "
        "(relative, interval) | p |",
        "|---|---:|---:|---:|---|---:|",
    ]
    ctr = {r.arm: r for r in result.analysis.results if r.metric == "ctr"}
    for arm, t in sorted(result.truth.items()):
        cell, p = "", ""
        if arm in ctr:
            c = ctr[arm].plain
            cell = f"{float(c.rel):+.1%} ({float(c.rel_low):+.1%} to {float(c.rel_high):+.1%})"
            p = f"{float(c.p_value):.3g}"
        lines.append(f"| {arm} | {t['visits']:.0f} | {t['observed_ctr']:.4f} | "
                     f"{t['true_ctr']:.4f} | {cell} | {p} |")  # fmt: skip
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, CPU only, load {load_average()}"
    print("\n" + table)
    print(f"decision: {result.analysis.decision}")
    print(f"SRM p-value {float(result.analysis.srm.p_value):.3f}; {seconds:.0f} s; {machine}")
    if args.out is not None:
        payload = {"table": table, "truth": result.truth, "machine": machine,
                   "decision": str(result.analysis.decision), "steps": args.steps}  # fmt: skip
        (args.out / "loop_ab.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
