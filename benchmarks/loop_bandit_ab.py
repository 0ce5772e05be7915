"""The whole loop: a policy bandit learns online from the exposure log, judged by an A/B test.

Trains the default-sized models (one epoch each), writes their bundle and builds a
repository whose ``recommend`` has an exposure log and a profile store (one embedded
SQLite store), an experiments file with one layer (``control``: the deterministic
ranking for every request; ``bandit``: no policy of its own, so the policy bandit picks
each request's slate policy among ``deterministic``, ``epsilon_greedy:0.1`` and
``plackett_luce:0.3`` from the request context and the user's segments), and the
bandit's state file. Simulated users (truth fitted on all of MovieLens-100K) visit in
``--chunks`` chunks of ``--visits`` visits; their clicks and dwell go through the real
producer and consumer; after each chunk the bandit's online updater reads the new
exposures and clicks from the stream in its own consumer group, and its state is saved,
which the serving side picks up for the next chunk. At the end the A/B analysis compares
the arms; the simulator's truth gives each arm's true expected CTR.

``--mode in-process`` (default) runs the same ``recommend`` computation in this process
(equal to the server's for the same seed: ``tests/sim/test_loop_triton.py``); ``--mode
triton`` sends the visits over gRPC to the local Triton server.

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/loop_bandit_ab.py --chunks 8 --visits 1000 \\
        --out results/loop_bandit
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_benchmark import load_average, train_models

REPO = Path(__file__).resolve().parents[1]
ARMS = ["deterministic", "epsilon_greedy:0.1", "plackett_luce:0.3"]
EXPERIMENTS = """
layers:
  - name: ranking_policy
    salt: loop-bandit-2026-12
    experiments:
      - name: bandit_vs_static
        arms:
          - {name: control, weight: 1, policy: deterministic}
          - {name: bandit, weight: 1}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
    )
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--visits", type=int, default=1000)
    parser.add_argument("--mode", choices=("in-process", "triton"), default="in-process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from recsys.bandits import ContextEncoder, LinUCB, save_state
    from recsys.bandits.online import BanditUpdater
    from recsys.bundle.writer import write_bundle
    from recsys.data.movielens import load_ml100k
    from recsys.events.schema import EventType
    from recsys.events.sqlite_store import SqliteStore
    from recsys.events.store import CommitBatch
    from recsys.events.validation import validate_event
    from recsys.experiments import load_experiments
    from recsys.experiments.analysis import analyze
    from recsys.experiments.data import check_table
    from recsys.experiments.report import write_report
    from recsys.serving.inprocess import engine_from_repository
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig
    from recsys.sim import (
        EngineRecommender,
        SimConfig,
        SimLog,
        StoreSink,
        TritonRecommender,
        World,
        WorldConfig,
        simulate,
    )

    recommender, two_tower, schema, dataset = train_models(args.data_dir)
    world = World.fit(load_ml100k(args.data_dir / "ml-100k"), WorldConfig(seed=0))
    segments_file = REPO / "configs/segments/movielens.yaml"
    encoder = ContextEncoder(segments=("engaged_clickers",))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recsys-loop-bandit-") as tmp:
        tmpdir = Path(tmp)
        db = tmpdir / "rt.db"
        SqliteStore(db).close()
        experiments_file = tmpdir / "experiments.yaml"
        experiments_file.write_text(EXPERIMENTS)
        bandit = LinUCB(len(ARMS), encoder.dim, alpha=0.5)
        state = save_state(bandit, tmpdir / "bandit.json", ARMS, encoder.names())
        bundle = write_bundle(recommender, two_tower, schema, dataset, tmpdir / "bundle")
        root = tmpdir / "repository"
        url = f"sqlite://{db}"
        build_repository(bundle, root, RepositoryConfig(
            profile_store=url, exposure_log=url, experiments=str(experiments_file),
            bandit_state=str(state), bandit_name="ranking",
        ))  # fmt: skip
        sink = StoreSink(url, schema, segments_file)
        updater = BanditUpdater(bandit, "ranking", window_s=600)
        reader = SqliteStore(db, group="bandit")
        server: Any = None
        if args.mode == "triton":
            server = LocalTritonServer(TritonServerConfig(
                model_repository=root, model_control_mode="explicit", load_models=("*",),
                startup_timeout_s=300)).start()  # fmt: skip
            client: Any = TritonRecommender(server.grpc_url)
        else:
            client = EngineRecommender(engine_from_repository(root), exposures=sink)
        log = SimLog(SimConfig())
        per_chunk = []
        try:
            for chunk in range(args.chunks):
                cfg = SimConfig(steps=args.visits, seed=args.seed * 1000 + chunk,
                                start_ms=SimConfig().start_ms + chunk * 86_400_000)  # fmt: skip
                part = simulate(world, client, cfg, sink=sink)
                # keep request ids unique across chunks (the seed is in them)
                log.steps.extend(part.steps)
                time.sleep(0.3 if args.mode == "triton" else 0.0)  # async exposure writes
                sink.flush()
                events = []
                while deliveries := reader.read("updater", 5000, 0, False):
                    for d in deliveries:
                        if d.payload:
                            events.append(validate_event(json.loads(d.payload)))
                    reader.commit(CommitBatch(acks=[d.entry_id for d in deliveries]))
                events.sort(key=lambda e: e.ts_us)
                for event in events:
                    updater.feed(event)
                updater.flush()
                save_state(bandit, state, ARMS, encoder.names())
                time.sleep(1.1)  # the serving side re-reads the state file every second
                shown = [e for e in events if e.type is EventType.RECOMMENDATION_IMPRESSION]
                arms_used = [e.payload.get("bandit_arm") for e in shown if "bandit" in e.payload]
                per_chunk.append({
                    "chunk": chunk, "bandit_version": bandit.version,
                    "bandit_arms": {ARMS[a]: arms_used.count(a) for a in range(len(ARMS))},
                })  # fmt: skip
                print(f"chunk {chunk}: bandit v{bandit.version}, arms chosen "
                      f"{per_chunk[-1]['bandit_arms']}", flush=True)  # fmt: skip
        finally:
            if args.mode == "triton":
                client.close()
                server.stop()
            sink.close()
            reader.close()
        loaded = load_experiments(experiments_file)
        table = log.exposure_table("bandit_vs_static")
        design = loaded.experiments.experiment("bandit_vs_static")
        checked = check_table(table.drop(columns=["true_clicks"]), "loop")
        analysis = analyze(checked, design, loaded.analysis["bandit_vs_static"])
        if args.out is not None:
            write_report(analysis, args.out)
    seconds = time.perf_counter() - started
    truth = {}
    for arm, rows in table.groupby("arm"):
        shown_items = float(rows["impressions"].sum())
        truth[str(arm)] = (len(rows), rows["clicks"].sum() / shown_items,
                           rows["true_clicks"].sum() / shown_items)  # fmt: skip
    [ctr] = [r for r in analysis.results if r.metric == "ctr"]
    c = ctr.plain
    lines = [
        "| arm | visits | observed CTR | true CTR of the lists shown |",
        "|---|---:|---:|---:|",
    ]
    for arm, (n, obs, true) in sorted(truth.items()):
        lines.append(f"| {arm} | {n} | {obs:.4f} | {true:.4f} |")
    table_md = "\n".join(lines)
    lift = (f"CTR lift of bandit vs control: {float(c.rel):+.1%} ({float(c.rel_low):+.1%} to "
            f"{float(c.rel_high):+.1%}), p = {float(c.p_value):.3g}")  # fmt: skip
    machine = f"{platform.machine()}, {os.cpu_count()} cores, CPU only, load {load_average()}"
    print("\n" + table_md)
    print(lift)
    print(f"decision: {analysis.decision}")
    print(f"{seconds:.0f} s, mode {args.mode}; {machine}")
    if args.out is not None:
        payload = {"table": table_md, "lift": lift, "decision": str(analysis.decision),
                   "chunks": per_chunk, "machine": machine, "mode": args.mode}  # fmt: skip
        (args.out / "loop_bandit.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
