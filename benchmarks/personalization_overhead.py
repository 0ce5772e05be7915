"""What live personalization costs a ``recommend`` request: plain, exposure log, everything.

One run trains the default-sized models for one epoch each (as
``benchmarks/serving_benchmark.py`` does), writes their run bundle and builds four
Triton repositories from it:

* ``plain``: no profile store, no rules, no exposure log; requests carry no context;
* ``context``: the same repository as ``plain``; requests carry a context (what the
  context alone costs: the client building and sending it, the server checking it);
* ``exposure``: the exposure log on (the embedded SQLite store); requests carry a context;
* ``full``: the profile store (the same SQLite store; every benchmark user has a
  profile, half of them are members of ``engaged_clickers`` through clicks applied by the
  real consumer with a ``SegmentEngine``), the targeting rules of
  ``configs/targeting/movielens.yaml`` (a segment rule and a context rule), the exposure
  log, and requests with a context (request time, device: half of them mobile in the
  evening, session, surface).

``--retrieval-mode models inline`` adds a fifth server, ``full-inline``: ``full`` built
with ``RepositoryConfig.retrieval_mode="inline"`` (the user tower and the FAISS search
inside ``recommend``), so the two modes are compared in one run.

The servers run side by side and get the same requests in turns (plain, context,
exposure, full, ...) so that load from other processes hits them alike. After the
servers' turns at each concurrency, in every round, the naive in-process baseline does
the same work as ``full`` for each request, one call at a time per thread: a profile
read (``ProfileStoreReader``), the user tower's forward in PyTorch eager (the offline
recommender reads training-time user vectors; a request computes its user's, as the
server's user tower does), the offline ``TwoStageRecommender.recommend`` with the same
rules, segments and context, and a synchronous write of the exposure to the store.

Reported per concurrency: medians over rounds of requests/s, p50 and p99 of each
variant; the p99 differences context - plain, exposure - context and full - plain with
their ranges over rounds; each full variant's throughput over the naive baseline's of
the same round (median and range); how many answers a rule changed; and the exposures
the store holds against the requests answered with the log on.

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/personalization_overhead.py --rounds 5 \\
        --retrieval-mode models inline --out results/personalization
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import contextlib
import json
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_benchmark import load_average, mean_batch, train_models, user_tower_forward

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "configs/targeting/movielens.yaml"
SEGMENTS = REPO / "configs/segments/movielens.yaml"
EVENING_MS = 1_765_045_800_000  # 2025-12-06 19:30 at UTC+1
VARIANTS = ("plain", "context", "exposure", "full")


def request_context(i: int) -> dict[str, Any]:
    """Request ``i``'s context: half mobile in the evening, half desktop at noon (pairs of
    requests alternate, so members and non-members of the segment get both)."""
    mobile = (i // 2) % 2 == 0
    return {
        "request_time_ms": EVENING_MS if mobile else EVENING_MS - 7 * 3_600_000,
        "utc_offset_minutes": 60,
        "device_type": "mobile" if mobile else "desktop",
        "surface": "home",
        "session_id": f"s-{i % 97}",
    }


def measure(
    url: str, users: list[int], k: int, concurrency: int, total: int, with_context: bool
) -> dict[str, Any]:
    """``total`` gRPC requests from ``concurrency`` coroutines."""
    from recsys.serving.recommend_client import AsyncRecommendClient

    latencies: list[float] = []
    ruled = 0

    async def main() -> float:
        nonlocal ruled
        async with AsyncRecommendClient(url) as client:
            for user in users[:concurrency]:  # warm-up
                await client.recommend(
                    user, k, context=request_context(0) if with_context else None
                )
            counter = iter(range(total))

            async def worker() -> None:
                nonlocal ruled
                for i in counter:
                    ctx = request_context(i) if with_context else None
                    start = time.perf_counter()
                    rec = await client.recommend(users[i % len(users)], k, context=ctx)
                    latencies.append(time.perf_counter() - start)
                    ruled += bool(rec.rules)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start

    seconds = asyncio.run(main())
    return _result(concurrency, total, seconds, latencies, ruled, total + concurrency)


def _result(
    c: int, total: int, seconds: float, latencies: list[float], ruled: int, requests: int
) -> dict[str, Any]:
    lat = np.asarray(latencies) * 1e3
    return {
        "concurrency": c,
        "rps": total / seconds,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "ruled": ruled,
        "load": load_average(),
        "requests": requests,
    }


def naive_full(
    recommender: Any, store_path: Path, folder: Path, tower: Callable[[int], None]
) -> Callable[[int, int], int]:
    """One request of ``full``'s work in-process: profile read, the user tower's forward
    (``tower``), offline two-stage with rules, synchronous exposure write. Returns whether
    a rule applied."""
    from recsys.events.producer import EventProducer
    from recsys.events.sqlite_store import SqliteStore
    from recsys.runtime.context import RequestContext
    from recsys.runtime.exposure import exposure_event
    from recsys.runtime.targeting import ItemCatalog, TargetingEnv
    from recsys.runtime.user_state import ProfileStoreReader
    from recsys.targeting import load_rules

    rules = load_rules(RULES, ItemCatalog.from_genres(recommender.context.item_ids,
                                                      recommender.item_genres))  # fmt: skip
    local = threading.local()
    counter = iter(range(10**9))
    lock = threading.Lock()

    def recommend(user: int, k: int) -> int:
        if not hasattr(local, "reader"):  # one connection per thread, as SQLite wants
            local.reader = ProfileStoreReader.from_folder(f"sqlite://{store_path}", folder)
            local.producer = EventProducer(SqliteStore(store_path))
        with lock:
            i = next(counter)
        ctx = RequestContext.from_values(**request_context(i)).with_request_id()
        [profile] = local.reader.read([user])
        segments = tuple(profile.segments) if profile is not None else ()
        env = TargetingEnv.of(segments, ctx)
        tower(user)
        lists = recommender.recommend(np.array([user]), k, rules=rules, targeting=[env])
        valid = lists.valid[0]
        local.producer.publish(
            [
                exposure_event(
                    user_id=user,
                    items=lists.item_ids[0][valid].tolist(),
                    scores=lists.scores[0][valid].tolist(),
                    context=ctx,
                    k=k,
                    bundle="naive",
                    model="naive",
                    rules=lists.rules[0] if lists.rules else (),
                    segments=segments,
                )
            ]
        )
        return int(bool(lists.rules and lists.rules[0]))

    return recommend


def run_naive(
    fn: Callable[[int, int], int], users: list[int], k: int, c: int, total: int
) -> dict[str, Any]:
    latencies: list[float] = []
    ruled = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal ruled
        fn(users[0], k)  # warm-up (opens the thread's connections)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            hit = fn(users[i % len(users)], k)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                ruled += hit

    threads = [threading.Thread(target=worker) for _ in range(c)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _result(c, total, time.perf_counter() - start, latencies, ruled, total + c)


def populate(store_path: Path, schema: Any, users: list[int], item_ids: np.ndarray) -> int:
    """Profiles for ``users`` through the real consumer; even positions click 3 items
    (they enter ``engaged_clickers``), odd ones view one. Returns the members."""
    from recsys.events.consent import ConsentPolicy
    from recsys.events.producer import EventProducer
    from recsys.events.sqlite_store import SqliteStore
    from recsys.profiles.config import ProfileConfig
    from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
    from recsys.profiles.processor import EventProcessor, ProcessorConfig
    from recsys.segments import SegmentEngine

    rng = np.random.default_rng(1)
    now = time.time()
    events = []
    for n, user in enumerate(users):
        count, kind = (3, "click") if n % 2 == 0 else (1, "page_view")
        for j, item in enumerate(rng.choice(item_ids, count, replace=False)):
            events.append({"event_id": f"b-{uuid.uuid4().hex}", "user_id": str(user),
                           "session_id": f"s-{user}", "type": kind, "timestamp": now - 60 + j,
                           **({"item_id": int(item)} if kind == "click" else {})})  # fmt: skip
    store = SqliteStore(store_path)
    try:
        EventProducer(store).publish(events)
        profile = ProfileConfig.from_schema(schema)
        processor = EventProcessor(
            store,
            ProcessorConfig(profile=profile, consent=ConsentPolicy.grant_all()),
            hooks=[SegmentEngine.from_yaml(SEGMENTS, profile)],
        )
        StreamConsumer(
            store, processor,
            ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None),
        ).run(until_idle=True)  # fmt: skip
        return store.segment_size("engaged_clickers")
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--users", type=int, default=300, help="distinct users requested")
    parser.add_argument("--rounds", type=int, default=5, help="turns of every variant")
    parser.add_argument("--naive-requests", type=int, default=100)
    parser.add_argument(
        "--recommend-instances", type=int, default=None,
        help="CPU instances of recommend in every variant (default: RepositoryConfig's)",
    )  # fmt: skip
    parser.add_argument(
        "--retrieval-mode", choices=("models", "inline"), nargs="+", default=["models"],
        help="RepositoryConfig.retrieval_mode of every variant (BLS calls to the user_tower "
        "and retrieval models, or both stages inside recommend); each further mode adds a "
        "variant full-MODE, served side by side (default: models)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args()

    from recsys.bundle.writer import write_bundle
    from recsys.events.sqlite_store import SqliteStore
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    t0 = time.perf_counter()
    recommender, two_tower, schema, dataset = train_models(args.data_dir)
    items = dataset.items
    assert np.array_equal(items["item_id"].to_numpy(), recommender.context.item_ids)
    recommender.item_genres = [list(g) if g is not None else [] for g in items["genres"]]
    print(f"models: trained here ({time.perf_counter() - t0:.0f} s)", flush=True)
    rng = np.random.default_rng(0)
    users = [int(u) for u in rng.permutation(recommender.context.user_ids)[: args.users]]
    modes = list(dict.fromkeys(args.retrieval_mode))
    # the first mode serves every variant; each further one adds a `full` in that mode
    variants = [*VARIANTS, *(f"full-{m}" for m in modes[1:])]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in (*variants, "naive")}
    with tempfile.TemporaryDirectory(prefix="recsys-personalization-bench-") as tmp:
        bundle = write_bundle(recommender, two_tower, schema, dataset, Path(tmp) / "bundle")
        store_path = Path(tmp) / "rt.db"
        SqliteStore(store_path).close()
        members = populate(store_path, schema, users, recommender.context.item_ids)
        print(f"profiles: {len(users)} users, {members} in engaged_clickers", flush=True)
        url = f"sqlite://{store_path}"
        full = RepositoryConfig(profile_store=url, exposure_log=url, targeting_rules=str(RULES))
        settings = {
            "plain": RepositoryConfig(),
            "context": RepositoryConfig(),
            "exposure": RepositoryConfig(exposure_log=url),
            "full": full,
            **{f"full-{m}": replace(full, retrieval_mode=m) for m in modes[1:]},
        }
        settings = {
            name: cfg if name.startswith("full-") else replace(cfg, retrieval_mode=modes[0])
            for name, cfg in settings.items()
        }
        if args.recommend_instances is not None:
            settings = {
                name: replace(cfg, recommend_instances=args.recommend_instances)
                for name, cfg in settings.items()
            }
        roots = {name: Path(tmp) / name for name in variants}
        for name in variants:
            build_repository(bundle, roots[name], settings[name])
        configs = {
            name: TritonServerConfig(model_repository=roots[name], model_control_mode="explicit",
                                     load_models=("*",), startup_timeout_s=300)
            for name in variants
        }  # fmt: skip
        # the naive baseline is measured in the same rounds, between the servers' turns
        tower = user_tower_forward(recommender, two_tower, dataset)
        naive = naive_full(recommender, store_path, roots["full"] / "recommend" / "1", tower)
        length_before = _stream_length(store_path)
        naive_logged = 0
        with contextlib.ExitStack() as stack:
            servers = {name: stack.enter_context(LocalTritonServer(configs[name]))
                       for name in variants}  # fmt: skip
            counts = {name: mean_batch(servers[name], (0, 0))[1] for name in variants}
            for round_ in range(args.rounds):
                for c in args.concurrency:
                    for name in variants:
                        r = measure(servers[name].grpc_url, users, args.k, c, args.requests,
                                    name != "plain")  # fmt: skip
                        r["round"] = round_
                        # requests per recommend execution (the dynamic batcher's merges)
                        r["mean_batch"], counts[name] = mean_batch(servers[name], counts[name])
                        runs[name].append(r)
                        print(f"round {round_} c={c} {name}: {r['rps']:.0f} req/s p50 "
                              f"{r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms, batch "
                              f"{r['mean_batch']:.2f}, ruled {r['ruled']}, load {r['load']}",
                              flush=True)  # fmt: skip
                    # the servers' exposures written first: the naive path's synchronous
                    # writes then find the store idle, as in a run of their own
                    _wait_for_exposures(store_path, length_before + naive_logged + sum(
                        r["requests"] for n in variants if n not in ("plain", "context")
                        for r in runs[n]))  # fmt: skip
                    r = run_naive(naive, users, args.k, c, args.naive_requests)
                    r["round"] = round_
                    naive_logged += r["requests"]
                    runs["naive"].append(r)
                    print(f"round {round_} c={c} naive: {r['rps']:.1f} req/s p50 "
                          f"{r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms, ruled {r['ruled']}",
                          flush=True)  # fmt: skip
            logged_names = [n for n in variants if n != "plain" and n != "context"]
            answered = sum(r["requests"] for n in logged_names for r in runs[n])
            _wait_for_exposures(store_path, length_before + naive_logged + answered)
            logged = _stream_length(store_path) - length_before - naive_logged

    table = summarize(runs, args.concurrency, variants)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, Python "
        f"{platform.python_version()}, load at end {load_average()}"
    )
    setup = (
        f"retrieval_mode {modes[0]}"
        + "".join(f" (full-{m}: {m})" for m in modes[1:])
        + f", recommend instances {settings['full'].recommend_instances}"
    )
    print("\n" + table)
    print(f"exposures in the store: {logged} of {answered} answered requests with the log on")
    print(f"servers: {setup}")
    print(f"machine: {machine}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine, "servers": setup, "runs": runs, "table": table,
                   "answered": answered, "logged": logged}  # fmt: skip
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


def _wait_for_exposures(path: Path, length: int, timeout_s: float = 30.0) -> None:
    """Waits until the store's stream holds ``length`` events (at most ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while _stream_length(path) < length and time.monotonic() < deadline:
        time.sleep(0.05)


def _stream_length(path: Path) -> int:
    from recsys.events.sqlite_store import SqliteStore

    store = SqliteStore(path)
    try:
        return int(store.stream_stats()["length"])
    finally:
        store.close()


def summarize(runs: dict[str, list[dict[str, Any]]], levels: list[int], variants: list[str]) -> str:
    """The markdown table: medians per variant, p99 differences, each full over naive (the
    median of the rounds' ratios, with their range)."""

    def at(name: str, c: int) -> list[dict[str, Any]]:
        return [r for r in runs[name] if r["concurrency"] == c]

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return float(np.median([r[key] for r in rs]))

    def diff(name: str, c: int, base: str = "plain") -> str:
        d = [b["p99_ms"] - a["p99_ms"] for a, b in zip(at(base, c), at(name, c), strict=True)]
        return f"{np.median(d):+.2f} ({min(d):+.2f} to {max(d):+.2f})"

    def ratio(name: str, c: int) -> str:
        q = [a["rps"] / b["rps"] for a, b in zip(at(name, c), at("naive", c), strict=True)]
        return f"{np.median(q):.1f}x ({min(q):.1f}-{max(q):.1f})"

    fulls = [n for n in variants if n.startswith("full")]
    lines = [
        "| c | "
        + " | ".join(f"{n} req/s, p50, p99, batch" for n in variants)
        + " | p99 context - plain | p99 exposure - context | p99 full - plain | "
        "naive req/s, p99 | "
        + " | ".join(f"{n} / naive" for n in fulls)
        + " | answers a rule changed (full) |",
        "|---" * (len(variants) + len(fulls) + 6) + "|",
    ]
    for c in levels:
        cells = [
            f"{med(at(n, c), 'rps'):.0f}, {med(at(n, c), 'p50_ms'):.2f}, "
            f"{med(at(n, c), 'p99_ms'):.2f}, {med(at(n, c), 'mean_batch'):.2f}"
            for n in variants
        ]
        naive = at("naive", c)
        ruled = sum(r["ruled"] for r in at("full", c))
        asked = sum(r["requests"] - r["concurrency"] for r in at("full", c))
        lines.append(
            f"| {c} | {' | '.join(cells)} | {diff('context', c)} | "
            f"{diff('exposure', c, 'context')} | {diff('full', c)} | "
            f"{med(naive, 'rps'):.1f}, {med(naive, 'p99_ms'):.1f} | "
            + " | ".join(ratio(n, c) for n in fulls)
            + f" | {ruled} / {asked} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
