"""Latency of a small ``recommend`` request while a burst of huge-``k`` requests is served.

One run, three repositories of the same models on the local ``tritonserver``, in turns:

* ``uncapped`` -- ``max_k`` = the catalogue and MMR over every position
  (``mmr_depth`` = the catalogue): the work a long list cost before the caps;
* ``depth`` -- ``max_k`` = the catalogue, MMR over the first ``mmr_depth`` (100)
  positions, relevance order after them;
* ``default`` -- the defaults: ``max_k`` = the retrieval depth N (200), MMR depth 100.

For each: the p50 of ``k=10`` requests on an idle server, then a burst of ``--burst``
concurrent requests for ``k = max_k`` (the largest that server accepts) with ``k=10``
probes sent one after the other until the burst is done. The first probe is queued
behind the whole burst, so the probes' max is the wait of a small request behind it.
Reported: the probes' p50 / p99 / max latency, the burst's wall time, and the ratios
of ``uncapped`` to each arm.

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/serving_burst.py --out results/burst
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import importlib.util
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _serving_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location(
        "serving_benchmark", Path(__file__).parent / "serving_benchmark.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serving_benchmark"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Arm:
    """What one repository measured (latencies in ms)."""

    name: str
    mmr_depth: int
    max_k: int
    idle_p50_ms: float
    burst_p50_ms: float
    burst_p99_ms: float
    burst_max_ms: float
    probes: int
    burst_seconds: float
    load_before: str
    load_after: str


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def _measure(url: str, users: list[int], max_k: int, burst: int, idle: int) -> dict[str, Any]:
    from recsys.serving.client import ClientConfig
    from recsys.serving.recommend_client import AsyncRecommendClient

    # a deadline far above what the slowest arm takes: every request is answered
    async with AsyncRecommendClient(ClientConfig(url, client_timeout_s=600)) as client:
        for user in users[:8]:
            await client.recommend(user, 10)
        idle_lat = []
        for user in users[:idle]:
            start = time.perf_counter()
            await client.recommend(user, 10)
            idle_lat.append((time.perf_counter() - start) * 1e3)
        done = asyncio.Event()

        async def big(user: int) -> None:
            rec = await client.recommend(user, max_k)
            assert len(rec) > 10

        async def probes() -> list[float]:
            out, i = [], 0
            while not done.is_set():
                start = time.perf_counter()
                await client.recommend(users[i % len(users)], 10)
                out.append((time.perf_counter() - start) * 1e3)
                i += 1
            return out

        start = time.perf_counter()
        probe_task = asyncio.create_task(probes())
        await asyncio.gather(*(big(users[i % len(users)]) for i in range(burst)))
        seconds = time.perf_counter() - start
        done.set()
        lat = await probe_task
    return {"idle": idle_lat, "burst": lat, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("RECSYS_DATA_DIR", REPO / "data"))
    )
    parser.add_argument("--burst", type=int, default=200, help="concurrent k=max_k requests")
    parser.add_argument("--idle", type=int, default=50, help="k=10 requests on an idle server")
    parser.add_argument("--rounds", type=int, default=2, help="turns of both arms")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args()

    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    from recsys.bundle.writer import write_bundle
    from recsys.runtime.engine import served_max_k
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    bench = _serving_benchmark()
    recommender, two_tower, schema, dataset = bench.train_models(args.data_dir)
    n_items = int(recommender.context.n_items)
    users = [int(u) for u in np.random.default_rng(0).permutation(recommender.context.user_ids)]
    arms: list[Arm] = []
    base = recommender.config
    with tempfile.TemporaryDirectory(prefix="recsys-burst-") as tmp:
        roots = {}
        for name, depth, max_k in (
            ("uncapped", n_items, n_items),
            ("depth", base.mmr_depth, n_items),
            ("default", base.mmr_depth, None),
        ):
            recommender.config = replace(base, mmr_depth=depth)
            root = Path(tmp) / name
            bundle = write_bundle(recommender, two_tower, schema, dataset, Path(tmp) / f"{name}.b")
            info = build_repository(bundle, root, RepositoryConfig(max_k=max_k))
            served = served_max_k(max_k, recommender.num_candidates, n_items)
            roots[name] = (info.root, depth, served)
        recommender.config = base
        for round_ in range(args.rounds):
            for name, (root, depth, max_k) in roots.items():
                config = TritonServerConfig(
                    model_repository=root,
                    model_control_mode="explicit",
                    load_models=("*",),
                    startup_timeout_s=300,
                )
                before = bench.load_average()
                with LocalTritonServer(config) as server:
                    got = asyncio.run(
                        _measure(server.grpc_url, users, max_k, args.burst, args.idle)
                    )
                probes = got["burst"]
                arm = Arm(
                    name, depth, max_k, _pct(got["idle"], 50),
                    _pct(probes, 50), _pct(probes, 99), max(probes, default=float("nan")),
                    len(probes), got["seconds"], before, bench.load_average(),
                )  # fmt: skip
                arms.append(arm)
                print(
                    f"round {round_} {name:8s} max_k {max_k:4d} idle p50 {arm.idle_p50_ms:6.2f} "
                    f"ms | probes during the burst: p50 {arm.burst_p50_ms:7.1f} p99 "
                    f"{arm.burst_p99_ms:7.1f} max {arm.burst_max_ms:7.1f} ms ({arm.probes}) | "
                    f"burst {arm.burst_seconds:6.2f} s | load {before} -> {arm.load_after}",
                    flush=True,
                )

    def med(name: str, field: str) -> float:
        return float(np.median([getattr(a, field) for a in arms if a.name == name]))

    ratios = {
        arm: {f: med("uncapped", f) / med(arm, f) for f in ("burst_max_ms", "burst_seconds")}
        for arm in ("depth", "default")
    }
    for arm, r in ratios.items():
        print(
            f"uncapped / {arm} (medians over rounds): small request's wait behind the burst "
            f"{r['burst_max_ms']:.1f}x, burst time {r['burst_seconds']:.1f}x"
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "burst": args.burst,
            "arms": [asdict(a) for a in arms],
            "ratios": ratios,
        }
        (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
