"""What the exposure log costs a ``recommend`` request: the same repository with it off and on.

One run trains the default-sized models for one epoch each (as
``benchmarks/serving_benchmark.py`` does), writes their run bundle, builds two Triton
repositories from it that differ only in ``exposure_log`` (off; the embedded SQLite
store), starts both servers and sends the same requests to each in turns (off, on,
off, on, ...) so that load from other processes hits both alike. Requests carry a
context (request time, device, surface, session), as a site's would. Reported per
concurrency: the median over rounds of requests/s, p50 and p99 for each side, the p99
difference (on - off) with its range over rounds, and, on the logging side, the
exposures the store holds against the requests answered (they must be equal: nothing
dropped at this rate).

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/exposure_overhead.py --rounds 5 --out results/exposure
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import json
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


def measure(url: str, users: list[int], k: int, concurrency: int, total: int) -> dict[str, Any]:
    """``total`` requests with a context from ``concurrency`` coroutines."""
    from recsys.serving.recommend_client import AsyncRecommendClient

    latencies: list[float] = []

    def context(i: int) -> dict[str, Any]:
        return {"request_time_ms": int(time.time() * 1000), "device_type": "mobile",
                "surface": "home", "session_id": f"s-{i % 97}"}  # fmt: skip

    async def main() -> float:
        async with AsyncRecommendClient(url) as client:
            for user in users[:concurrency]:  # warm-up
                await client.recommend(user, k, context=context(0))
            counter = iter(range(total))

            async def worker() -> None:
                for i in counter:
                    start = time.perf_counter()
                    await client.recommend(users[i % len(users)], k, context=context(i))
                    latencies.append(time.perf_counter() - start)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start

    seconds = asyncio.run(main())
    lat = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "rps": total / seconds,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "load": load_average(),
        "requests": total + concurrency,  # with the warm-up
    }


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
    parser.add_argument("--rounds", type=int, default=5, help="turns of off and on")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args()

    from recsys.bundle.writer import write_bundle
    from recsys.events.sqlite_store import SqliteStore
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    t0 = time.perf_counter()
    recommender, two_tower, schema, dataset = train_models(args.data_dir)
    print(f"models: trained here ({time.perf_counter() - t0:.0f} s)", flush=True)
    users = [int(u) for u in np.random.default_rng(0).permutation(recommender.context.user_ids)]
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="recsys-exposure-bench-") as tmp:
        bundle = write_bundle(recommender, two_tower, schema, dataset, Path(tmp) / "bundle")
        store_path = Path(tmp) / "rt.db"
        SqliteStore(store_path).close()
        roots = {}
        for name, log in (("off", ""), ("on", f"sqlite://{store_path}")):
            roots[name] = Path(tmp) / name
            build_repository(bundle, roots[name], RepositoryConfig(exposure_log=log))
        configs = {
            name: TritonServerConfig(
                model_repository=root,
                model_control_mode="explicit",
                load_models=("*",),
                startup_timeout_s=300,
            )
            for name, root in roots.items()
        }
        with LocalTritonServer(configs["off"]) as off, LocalTritonServer(configs["on"]) as on:
            urls = {"off": off.grpc_url, "on": on.grpc_url}
            for round_ in range(args.rounds):
                for c in args.concurrency:
                    for name in ("off", "on"):
                        r = measure(urls[name], users, args.k, c, args.requests)
                        r["round"] = round_
                        runs[name].append(r)
                        print(f"round {round_} c={c} {name}: {r['rps']:.0f} req/s p50 "
                              f"{r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms, load {r['load']}",
                              flush=True)  # fmt: skip
            answered = sum(r["requests"] for r in runs["on"])
            deadline = time.monotonic() + 30
            store = SqliteStore(store_path)
            try:
                while store.stream_stats()["length"] < answered and time.monotonic() < deadline:
                    time.sleep(0.1)
                logged = store.stream_stats()["length"]
            finally:
                store.close()

    lines = [
        "| concurrency | off req/s | off p50 ms | off p99 ms | on req/s | on p50 ms | "
        "on p99 ms | p99 on - off, median (range over rounds) ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in args.concurrency:
        off_r = [r for r in runs["off"] if r["concurrency"] == c]
        on_r = [r for r in runs["on"] if r["concurrency"] == c]
        diffs = [b["p99_ms"] - a["p99_ms"] for a, b in zip(off_r, on_r, strict=True)]

        def med(rs: list[dict[str, Any]], key: str) -> float:
            return float(np.median([r[key] for r in rs]))

        lines.append(
            f"| {c} | {med(off_r, 'rps'):.0f} | {med(off_r, 'p50_ms'):.2f} | "
            f"{med(off_r, 'p99_ms'):.2f} | {med(on_r, 'rps'):.0f} | {med(on_r, 'p50_ms'):.2f} | "
            f"{med(on_r, 'p99_ms'):.2f} | {np.median(diffs):+.2f} "
            f"({min(diffs):+.2f} to {max(diffs):+.2f}) |"
        )
    table = "\n".join(lines)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, Python "
        f"{platform.python_version()}, load at end {load_average()}"
    )
    print("\n" + table)
    print(f"exposures in the store: {logged} of {answered} answered requests")
    print(f"machine: {machine}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine, "runs": runs, "table": table,
                   "answered": answered, "logged": logged}  # fmt: skip
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
