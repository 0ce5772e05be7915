"""The whole loop with the OPE promotion gate: log, learn, judge off-policy, then A/B test.

Trains the default-sized models (one epoch each) and writes their bundle once; then, per
seed:

1. **Log.** A repository whose ``recommend`` has an exposure log and a profile store
   (one embedded SQLite store) and a policy bandit whose state is a fresh
   epsilon-greedy bandit over the arms ``deterministic``, ``epsilon_greedy:0.1``,
   ``plackett_luce:0.3`` and ``epsilon_greedy:1`` (a uniformly random slate of the top
   50): with no data its greedy arm is the first, so it serves the static ranking and
   explores the other arms with probability ``--log-epsilon``, logging each choice's
   exact probability. Simulated users (truth fitted on all of MovieLens-100K; a
   shown item loses ``--fatigue`` logit per earlier exposure, halving every
   ``--fatigue-half-life-days``) visit;
   clicks and dwell go through the real producer and consumer (segments included).
2. **Learn and judge.** A LinUCB candidate is trained on that log by the online updater
   (``BanditUpdater``, reading the store's stream), its state saved. ``recsys.ope``
   estimates it straight from the store (:func:`recsys.ope.store_eval.evaluate_store`:
   the arm-level log, SNIPS and DR with bootstrap intervals) against the static ranker
   (``arm:deterministic``, same log, same estimator); the gate decides and writes its
   report. A second candidate, always the uniformly random slate of the top 50, goes
   through the same gate (under the simulator's fatigue a repeated list loses clicks,
   so this arm is not necessarily worse than the static ranking: read its result).
3. **A/B, only if promoted.** The same users go on: the world of phase 1 (its clock,
   drift and fatigue memory) and the same store (profiles, segments), as a policy that
   goes live meets the population where the logging left it; an experiments file with
   ``control`` (the deterministic ranking) and ``candidate`` (the promoted bandit state,
   frozen); visits sized with
   ``recsys.experiments.power`` for the OPE-estimated lift (per-user variance of the
   linearized CTR measured on the phase-1 log); analysed with ``recsys.experiments``
   (delta-method interval, sequential test, SRM). The simulator's truth gives each arm's
   true CTR, against which the OPE estimate of the candidate is checked.

``--mode in-process`` (default) runs the served computation in this process (equal to
the server's for the same seed: ``tests/sim/test_loop_triton.py``); ``--mode triton``
sends the visits over gRPC to a local Triton server (one per phase).

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/loop_gate.py --seeds 0,1,2 \\
        --out results/loop_gate
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_benchmark import load_average, train_models

REPO = Path(__file__).resolve().parents[1]
ARMS = ["deterministic", "epsilon_greedy:0.1", "plackett_luce:0.3", "epsilon_greedy:1"]
BAD = "arm:epsilon_greedy:1"
EXPERIMENTS = """
layers:
  - name: ranking_policy
    salt: loop-gate-{seed}
    experiments:
      - name: gate_ab
        arms:
          - {{name: control, weight: 1, policy: deterministic}}
          - {{name: candidate, weight: 1}}
        analysis: {{primary: ctr}}
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--log-visits", type=int, default=20_000, help="phase-1 visits")
    parser.add_argument("--log-epsilon", type=float, default=0.5,
                        help="the logging policy's exploration over the arms")  # fmt: skip
    parser.add_argument("--visits-per-day", type=int, default=1000)
    parser.add_argument("--users", type=int, default=None,
                        help="how many users visit, in both phases (default: all 943)")  # fmt: skip
    parser.add_argument("--fatigue", type=float, default=0.3,
                        help="the world's logit penalty per earlier exposure")  # fmt: skip
    parser.add_argument("--fatigue-half-life-days", type=float, default=3.0,
                        help="simulated days after which an exposure's fatigue halves "
                             "(0: never fades)")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=0.5, help="the candidate LinUCB's alpha")
    parser.add_argument("--resamples", type=int, default=1000, help="OPE bootstrap resamples")
    parser.add_argument("--gate", default="snips", help="the gate's estimator")
    parser.add_argument("--power", type=float, default=0.8, help="the A/B's planned power")
    parser.add_argument("--min-ab-visits", type=int, default=4000)
    parser.add_argument("--max-ab-visits", type=int, default=60_000)
    parser.add_argument("--mode", choices=("in-process", "triton"), default="in-process")
    parser.add_argument("--out", type=Path, default=None)
    return parser


def _serve(root: Path, mode: str, sink: Any) -> tuple[Any, Any]:
    """The recommender of a repository (and the server to stop, in triton mode)."""
    from recsys.serving.inprocess import engine_from_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig
    from recsys.sim import EngineRecommender, TritonRecommender

    if mode == "triton":
        server = LocalTritonServer(TritonServerConfig(
            model_repository=root, model_control_mode="explicit", load_models=("*",),
            startup_timeout_s=300)).start()  # fmt: skip
        return TritonRecommender(server.grpc_url), server
    return EngineRecommender(engine_from_repository(root), exposures=sink), None


def _simulate(
    world: Any, root: Path, url: str, schema: Any, mode: str, cfg: Any, users: list[int] | None
) -> Any:
    """One phase's visits by ``users`` (None: all) through the repository, events into the
    store at ``url``."""
    from recsys.sim import StoreSink, simulate

    sink = StoreSink(url, schema, REPO / "configs/segments/movielens.yaml")
    client, server = _serve(root, mode, sink)
    try:
        log = simulate(world, client, cfg, sink=sink, users=users)
        if server is not None:
            time.sleep(1.0)  # the server writes exposures from a background thread
        sink.flush()
    finally:
        if server is not None:
            client.close()
            server.stop()
        sink.close()
    return log


def _per_user_ctr_variance(steps: list[Any]) -> tuple[float, float]:
    """Per-user variance of the linearized CTR, and the visits per user it was seen at."""
    clicks: dict[int, float] = {}
    shown: dict[int, float] = {}
    visits: dict[int, int] = {}
    for s in steps:
        clicks[s.user] = clicks.get(s.user, 0.0) + sum(s.clicked)
        shown[s.user] = shown.get(s.user, 0.0) + len(s.items)
        visits[s.user] = visits.get(s.user, 0) + 1
    c = np.array(list(clicks.values()))
    n = np.array([shown[u] for u in clicks])
    ratio = c.sum() / n.sum()
    # the delta method's linearization of a ratio metric (recsys.experiments.stats)
    linear = (c - ratio * n) / n.mean()
    return float(linear.var(ddof=1)), float(np.mean(list(visits.values())))


def _arm_truth(steps: list[Any], arm_of: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per arm: visits, observed CTR and the true CTR of the lists it showed."""
    out: dict[str, dict[str, float]] = {}
    for a, name in enumerate(ARMS):
        rows = [s for s in steps if arm_of.get(s.request_id) == a]
        shown = sum(len(s.items) for s in rows)
        out[name] = {
            "visits": float(len(rows)),
            "observed_ctr": sum(sum(s.clicked) for s in rows) / max(shown, 1),
            "true_ctr": sum(sum(s.true_ctr) for s in rows) / max(shown, 1),
        }
    return out


def run_seed(seed: int, args: argparse.Namespace, models: tuple[Any, ...], tmp: Path) -> dict:
    """The three phases for one seed (see the module docstring)."""
    from recsys.bandits import ContextEncoder, EpsilonGreedy, LinUCB, save_state
    from recsys.bandits.online import BanditUpdater
    from recsys.data.movielens import load_ml100k
    from recsys.events.schema import EventType
    from recsys.events.sqlite_store import SqliteStore
    from recsys.experiments import load_experiments
    from recsys.experiments.analysis import analyze
    from recsys.experiments.data import check_table
    from recsys.experiments.power import power_at, required_units
    from recsys.experiments.report import write_report
    from recsys.ope.store_eval import StoreEvaluateConfig, evaluate_store, read_store_events
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.sim import SimConfig, SimLog, World, WorldConfig

    bundle, schema = models
    ml = load_ml100k(args.data_dir / "ml-100k")
    encoder = ContextEncoder(segments=("engaged_clickers",))
    folder = tmp / f"seed{seed}"
    folder.mkdir()
    out = args.out / f"seed{seed}" if args.out is not None else folder / "out"
    started = time.perf_counter()

    # -- phase 1: the current policy serves and logs --------------------------------
    db1 = folder / "log.db"
    SqliteStore(db1).close()
    url1 = f"sqlite://{db1}"
    logger = EpsilonGreedy(len(ARMS), encoder.dim, epsilon=args.log_epsilon)
    logger_state = save_state(logger, folder / "logger.json", ARMS, encoder.names())
    root1 = folder / "repository-log"
    build_repository(bundle, root1, RepositoryConfig(
        profile_store=url1, exposure_log=url1, bandit_state=str(logger_state),
        bandit_name="ranking"))  # fmt: skip
    day = SimConfig().start_ms
    cfg1 = SimConfig(steps=args.log_visits, seed=seed * 1000 + 1, start_ms=day,
                     visits_per_day=args.visits_per_day)  # fmt: skip
    half_life = args.fatigue_half_life_days or None
    world = World.fit(ml, WorldConfig(seed=seed, fatigue=args.fatigue,
                                      fatigue_half_life_days=half_life))  # fmt: skip
    users = None
    if args.users is not None:  # one seeded sample of users for both phases
        pool = np.random.default_rng(seed).permutation(world.truth.user_ids)
        users = pool[: args.users].tolist()
    log1 = _simulate(world, root1, url1, schema, args.mode, cfg1, users)
    events = sorted(read_store_events(url1), key=lambda e: e.ts_us)
    shown = [e for e in events if e.type is EventType.RECOMMENDATION_IMPRESSION]
    arm_of = {str(e.payload["request_id"]): int(e.payload["bandit_arm"])
              for e in shown if "bandit_arm" in e.payload}  # fmt: skip
    phase1 = _arm_truth(log1.steps, arm_of)
    logged_visits = len(arm_of)

    # -- phase 2: a candidate learns from the log; OPE and the gate judge it ---------
    candidate = LinUCB(len(ARMS), encoder.dim, alpha=args.alpha)
    updater = BanditUpdater(candidate, "ranking", window_s=600)
    for event in events:
        updater.feed(event)
    updater.flush()
    cand_state = save_state(candidate, folder / "candidate.json", ARMS, encoder.names())
    common = {"store": url1, "bandit": "ranking", "current": "arm:deterministic",
              "estimators": "snips,dr", "gate": args.gate, "resamples": args.resamples,
              "seed": seed, "window_s": 600.0, "arms": ARMS}  # fmt: skip
    good = evaluate_store(
        StoreEvaluateConfig(
            candidate=str(cand_state), report_dir=str(out / "gate_candidate"), **common
        ),
        echo=False,
    )
    bad = evaluate_store(
        StoreEvaluateConfig(candidate=BAD, report_dir=str(out / "gate_bad"), **common), echo=False
    )
    promoted = bool(good["promotion"]["promote"])
    estimates = {e["estimator"]: e for e in good["estimates"]}
    current_value = float(good["promotion"]["current_value"])
    chosen = good["promotion"]["candidate"]

    result: dict[str, Any] = {
        "seed": seed,
        "phase1": {
            "visits": len(log1.steps),
            "logged_exposures": logged_visits,
            "arms": phase1,
            "ctr": log1.summary()["ctr"],
        },
        "candidate_updates": updater.stats.updates,
        "candidate_arms_on_log": {
            a: c
            for a, c in zip(
                ARMS,
                np.bincount(_candidate_arms(candidate, events), minlength=len(ARMS)).tolist(),
                strict=True,
            )
        },
        "ope": {
            "estimates": estimates,
            "current_value": current_value,
            "gate_estimate": chosen,
            "promote": promoted,
            "reason": good["promotion"]["reason"],
        },
        "bad_candidate": {
            "estimate": bad["promotion"]["candidate"],
            "promote": bool(bad["promotion"]["promote"]),
            "reason": bad["promotion"]["reason"],
        },
    }
    print(f"seed {seed}: phase 1 {logged_visits} exposures, arms "
          f"{ {a: int(v['visits']) for a, v in phase1.items()} }; candidate "
          f"{args.gate} {chosen['value']:.5f} [{chosen['lower']:.5f}, {chosen['upper']:.5f}] vs "
          f"deterministic {current_value:.5f}: {'promote' if promoted else 'keep'}; "
          f"bad candidate {'promote' if bad['promotion']['promote'] else 'refused'}",
          flush=True)  # fmt: skip
    if not promoted:
        result["seconds"] = time.perf_counter() - started
        return result

    # -- phase 3: A/B on fresh traffic, sized for the estimated lift ------------------
    variance, per_user = _per_user_ctr_variance(log1.steps)
    effect = max(chosen["value"] - current_value, 1e-6)
    users_needed = required_units(variance, effect, power=args.power)
    # the analysis unit is the user; more visits per user shrink the per-user variance
    # (about 1 / visits of a ratio of independent visits), so the visits needed are
    # the units needed at the phase-1 rate times the visits each had
    ab_visits = int(min(max(math.ceil(users_needed * per_user), args.min_ab_visits),
                        args.max_ab_visits))  # fmt: skip
    n_users = len(users) if users is not None else len(world.truth.user_ids)
    planned_power = power_at(variance * per_user / (ab_visits / n_users), effect, n_users)
    url3 = url1  # the population goes on: same profiles and segments
    experiments_file = folder / "experiments.yaml"
    experiments_file.write_text(EXPERIMENTS.format(seed=seed))
    root3 = folder / "repository-ab"
    build_repository(bundle, root3, RepositoryConfig(
        profile_store=url3, exposure_log=url3, experiments=str(experiments_file),
        bandit_state=str(cand_state), bandit_name="ranking"))  # fmt: skip
    cfg3 = SimConfig(steps=ab_visits, seed=seed * 1000 + 3, start_ms=day,
                     visits_per_day=args.visits_per_day, first_step=args.log_visits)  # fmt: skip
    log3: SimLog = _simulate(world, root3, url3, schema, args.mode, cfg3, users)
    loaded = load_experiments(experiments_file)
    table = log3.exposure_table("gate_ab")
    design = loaded.experiments.experiment("gate_ab")
    checked = check_table(table.drop(columns=["true_clicks"]), "loop")
    analysis = analyze(checked, design, loaded.analysis["gate_ab"])
    write_report(analysis, out / "ab")
    [ctr] = [r for r in analysis.results if r.metric == "ctr"]
    truth = {}
    for arm, rows in table.groupby("arm"):
        n = float(rows["impressions"].sum())
        truth[str(arm)] = {"visits": len(rows), "observed_ctr": rows["clicks"].sum() / n,
                           "true_ctr": rows["true_clicks"].sum() / n}  # fmt: skip
    true_value = truth["candidate"]["true_ctr"]
    p = ctr.plain
    seq = ctr.sequential
    result["ab"] = {
        "visits": ab_visits, "users_needed_at_phase1_rate": users_needed,
        "per_user_variance": variance, "phase1_visits_per_user": per_user,
        "planned_effect": effect, "planned_power": planned_power,
        "arms": truth, "lift": float(p.rel), "lift_low": float(p.rel_low),
        "lift_high": float(p.rel_high), "p_value": float(p.p_value),
        "sequential_p": None if seq is None else float(seq.p_values[-1]),
        "srm_p": float(np.asarray(analysis.srm.p_value).reshape(-1)[0]),
        "decision": str(analysis.decision),
        "true_lift": true_value / truth["control"]["true_ctr"] - 1,
    }  # fmt: skip
    result["ope_vs_truth"] = {
        name: {"estimate": e["value"], "truth": true_value,
               "rel_error": e["value"] / true_value - 1,
               "covers": e["lower"] <= true_value <= e["upper"]}
        for name, e in estimates.items()
    }  # fmt: skip
    result["ope_vs_truth"]["current (deterministic)"] = {
        "estimate": current_value, "truth": truth["control"]["true_ctr"],
        "rel_error": current_value / truth["control"]["true_ctr"] - 1, "covers": None,
    }  # fmt: skip
    ab = result["ab"]
    print(f"seed {seed}: A/B {ab_visits} visits (planned power {planned_power:.2f} at "
          f"{effect:.5f}): lift {ab['lift']:+.1%} [{ab['lift_low']:+.1%}, {ab['lift_high']:+.1%}]"
          f", p {ab['p_value']:.3g}, sequential p {ab['sequential_p']}, SRM p "
          f"{ab['srm_p']:.3f}, {ab['decision']}; true lift {ab['true_lift']:+.1%}; candidate "
          f"true CTR {true_value:.5f}", flush=True)  # fmt: skip
    result["seconds"] = time.perf_counter() - started
    return result


def _candidate_arms(bandit: Any, events: list[Any]) -> list[int]:
    """The arm the candidate would choose at each logged bandit context."""
    from recsys.ope.policy_choice import arm_distribution

    xs = [e.payload["bandit_context"] for e in events if "bandit_context" in e.payload]
    if not xs:
        return []
    return np.argmax(arm_distribution(bandit, np.array(xs)), axis=1).tolist()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from recsys.bundle.writer import write_bundle

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    started = time.perf_counter()
    recommender, two_tower, schema, dataset = train_models(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="recsys-loop-gate-") as tmp:
        bundle = write_bundle(recommender, two_tower, schema, dataset, Path(tmp) / "bundle")
        results = [run_seed(s, args, (bundle, schema), Path(tmp)) for s in seeds]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, CPU only, load {load_average()}"
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "arms": ARMS,
               "results": results, "machine": machine,
               "seconds": time.perf_counter() - started}  # fmt: skip
    print(f"{payload['seconds']:.0f} s, mode {args.mode}; {machine}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "loop_gate.json").write_text(json.dumps(payload, indent=2, default=float)
                                                 + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
