"""Latency and throughput of the ``recommend`` entry point behind Triton, vs. a naive baseline.

One run measures, side by side on the same models, the same users and the same ``k``:

* ``triton`` -- the generated repository (:mod:`recsys.serving.repository`) on the local
  ``tritonserver`` (:class:`~recsys.serving.server.LocalTritonServer`), queried over gRPC
  with the project's asyncio client (:class:`~recsys.serving.recommend_client.
  AsyncRecommendClient`): ``concurrency`` coroutines, each sending one request after the
  other; the dynamic batcher merges concurrent requests and the ``recommend`` model
  answers a merged batch with one BLS call to each stage (ONNX Runtime for the towers
  and the ranker, FAISS for retrieval, numpy for the rest);
* ``naive`` -- the same computation in-process in PyTorch eager, one request at a time
  per worker, ``concurrency`` worker threads: the user tower (TorchRec, eager) on the
  user's features, then ``TwoStageRecommender.recommend([user], k)`` (FAISS, the
  TorchRec DLRM ranker in eager mode on the user's N candidates, the same aggregation).

Both sides run on the same machine; the concurrency levels run in turns (triton, naive,
triton, naive, ...) so that load from other processes hits both alike. Reported per
concurrency: requests/s, p50 and p99 latency (client-side wall time), the throughput
ratio triton / naive, and Triton's mean dynamic batch size of ``recommend``. The script
also times the ranker alone on 200 candidates, ONNX Runtime vs PyTorch eager
(:func:`recsys.export.onnx_export.time_ranker`, one intra-op thread each).

Models: trained here for one epoch each on MovieLens-100K at the main job's default
sizes (two-tower 64-d, towers 256-64; DLRM ranker 16-d, N = 200 candidates); the
Triton side serves their run bundle (:func:`recsys.bundle.writer.write_bundle`), the
naive side runs the PyTorch models themselves.

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/serving_benchmark.py --out results/serving
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting steal the two cores of a shared machine, and
# BLAS / OpenMP pools per worker thread oversubscribe them (measured: the naive
# baseline at 32 threads fell to 4 requests/s at a load average of 27). One thread per
# request on both sides: the server's stubs inherit this environment, and every ONNX
# Runtime session and FAISS instance of the repository is set to one thread too.
# Must be set before numpy, torch and FAISS load their thread pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import json
import platform
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    """One measured configuration."""

    system: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_batch: float | None
    load_before: str
    load_after: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def load_average() -> str:
    """``uptime``'s load averages (1, 5, 15 min) of the machine."""
    with open("/proc/loadavg", encoding="ascii") as fh:
        return " ".join(fh.read().split()[:3])


# -- models ---------------------------------------------------------------------------------


def train_models(data_dir: Path, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Default-sized two-tower and ranker, one epoch each on MovieLens-100K."""
    from recsys.data.movielens import load_ml100k
    from recsys.data.splits import stratified_split
    from recsys.features.build import build_features
    from recsys.features.schema import FeatureSchema
    from recsys.index import IndexConfig, ItemIndex
    from recsys.models.dlrm import RankerConfig
    from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig
    from recsys.recommend import (
        AggregationConfig,
        RankerContext,
        RankerDataConfig,
        TwoStageRecommender,
        build_ranker_examples,
        retrieve_candidates,
        train_two_stage_ranker,
    )
    from recsys.recommend.two_stage import RetrievalVectors
    from recsys.training.ranker_trainer import RankerTrainerConfig
    from recsys.training.retrieval import RetrievalData, RetrievalTrainer, RetrievalTrainerConfig

    torch.manual_seed(seed)
    data = load_ml100k(data_dir / "ml-100k")
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    schema = FeatureSchema.from_yaml(REPO / "configs/schema/ml100k.yaml")
    dataset = build_features(data, (train, test), schema)
    tower_schema = schema.select([f.name for f in schema if f.name not in ("hour", "weekday")])
    tower = TowerConfig((256, 64))
    two_tower = TwoTower(
        tower_schema,
        dataset.vocabs.num_embeddings(),
        TwoTowerConfig(embedding_dim=64, user_tower=tower, item_tower=tower, seed=seed),
    )
    rdata = RetrievalData.build(dataset, two_tower.schema, two_tower.feature_names)
    trainer = RetrievalTrainer(two_tower, rdata, RetrievalTrainerConfig(epochs=1, progress=True))
    trainer.fit(None)
    two_tower.eval()
    queries, item_vecs = (t.numpy() for t in trainer.retrieval_vectors())
    vectors = RetrievalVectors(queries, item_vecs, trainer.item_embeddings().numpy())
    data_cfg = RankerDataConfig(num_candidates=200, hard_negatives=50)
    context = RankerContext.from_processed(dataset, schema, dataset.vocabs, data_cfg)
    index = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(
        item_vecs, np.arange(context.n_items)
    )
    held = test[test["user_id"].isin(pd.unique(test["user_id"])[:400])]
    users = pd.Index(context.user_ids).get_indexer(pd.unique(held["user_id"]))
    cands = retrieve_candidates(index, queries, users, 200, exclude=context.seen)
    examples = build_ranker_examples(held, context, cands, queries, item_vecs, data_cfg)
    fit = train_two_stage_ranker(
        context,
        examples,
        schema,
        RankerConfig(),
        RankerTrainerConfig(epochs=1, sharding="local", progress=True),
    )
    recommender = TwoStageRecommender(
        context,
        index,
        vectors,
        fit.ranker,
        AggregationConfig(ranker_weight=1.0, retrieval_weight=0.5, mmr_lambda=0.8),
        num_candidates=200,
    )
    return recommender, two_tower, schema, dataset


def user_tower_forward(recommender: Any, two_tower: Any, dataset: Any) -> Callable[[int], None]:
    """One user's user-tower forward in PyTorch eager (TorchRec), as a request needs it.

    The offline recommender reads the user vectors computed at training time; a request
    computes its user's vector, so the naive baselines run this forward per request.
    """
    from recsys.features.batching import encode_features
    from recsys.features.schema import Role

    keys = two_tower.feature_names
    specs = [f for f in two_tower.schema.by_role(Role.USER, Role.CONTEXT) if f.name in keys]
    item_keys = [f.name for f in two_tower.schema.by_role(Role.ITEM) if f.name in keys]
    users = encode_features(
        dataset.users, specs, dataset.vocabs, empty_features=item_keys, key_order=keys
    )
    row_of = pd.Index(recommender.context.user_ids)

    def forward(user: int) -> None:
        row = int(row_of.get_indexer([user])[0])
        if row >= 0:
            with torch.inference_mode():
                two_tower.encode_users(users.batch(np.array([row])).sparse)

    return forward


def naive_recommend(recommender: Any, two_tower: Any, dataset: Any) -> Callable[[int, int], Any]:
    """The per-request PyTorch-eager path: user tower forward, then the offline recommender."""
    forward = user_tower_forward(recommender, two_tower, dataset)

    def recommend(user: int, k: int) -> Any:
        forward(user)
        return recommender.recommend(np.array([user]), k)

    return recommend


# -- load generators --------------------------------------------------------------------------


def run_triton(url: str, users: list[int], k: int, concurrency: int, total: int) -> Run:
    from recsys.serving.recommend_client import AsyncRecommendClient

    latencies: list[float] = []

    async def main() -> float:
        async with AsyncRecommendClient(url) as client:
            for user in users[:concurrency]:  # warm-up
                await client.recommend(user, k)
            counter = iter(range(total))

            async def worker() -> None:
                for i in counter:
                    start = time.perf_counter()
                    await client.recommend(users[i % len(users)], k)
                    latencies.append(time.perf_counter() - start)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start

    before = load_average()
    seconds = asyncio.run(main())
    lat = np.asarray(latencies) * 1e3
    return Run("triton", concurrency, total, seconds, *_pct(lat), None, before, load_average())


def run_naive(fn: Callable[[int, int], Any], users: list[int], k: int, c: int, total: int) -> Run:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    for user in users[:2]:
        fn(user, k)

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            fn(users[i % len(users)], k)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    before = load_average()
    threads = [threading.Thread(target=worker) for _ in range(c)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e3
    return Run("naive", c, total, seconds, *_pct(lat), None, before, load_average())


def _pct(lat: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def run_perf_analyzer(
    root: Path, url: str, users: list[int], k: int, concurrency: int, workdir: Path
) -> dict[str, float]:
    """NVIDIA ``perf_analyzer`` against ``recommend`` at one concurrency (gRPC, sync calls).

    ``root`` holds the unpacked wheel ``perf_analyzer/bin/perf_analyzer`` (PyPI
    ``perf-analyzer==2.60.0``, manylinux_2_38) and, under ``usr/lib/x86_64-linux-gnu``,
    Debian 13's libc6, libstdc++6 and libgcc-s1 (``dpkg -x``): the binary needs glibc 2.38,
    so it runs through that folder's dynamic loader (see FIELD-NOTES section 4).

    Returns:
        ``rps``, ``p50_ms``, ``p99_ms`` (empty when perf_analyzer found no stable window).
    """
    data = {
        "data": [
            {"user_id": {"content": [u], "shape": [1]}, "k": {"content": [k], "shape": [1]}}
            for u in users[:300]
        ]
    }
    inputs = workdir / "perf_analyzer_input.json"
    inputs.write_text(json.dumps(data))
    libs = root / "usr" / "lib" / "x86_64-linux-gnu"
    command = [
        str(libs / "ld-linux-x86-64.so.2"),
        "--library-path",
        f"{libs}:/lib/x86_64-linux-gnu",
        str(root / "perf_analyzer" / "bin" / "perf_analyzer"),
        *("-m", "recommend", "-u", url, "-i", "grpc", "--input-data", str(inputs)),
        *("--concurrency-range", f"{concurrency}:{concurrency}", "--percentile", "99"),
        *("--measurement-interval", "4000", "--max-trials", "12", "--stability-percentage", "30"),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600).stdout
    found: dict[str, float] = {}
    for line in out.splitlines():
        text = line.strip()
        if text.startswith("Throughput:"):
            found["rps"] = float(text.split()[1])
        elif text.startswith(("p50 latency:", "p99 latency:")):
            found[text[:3] + "_ms"] = float(text.split()[2]) / 1000.0
    return found


def mean_batch(server: Any, previous: tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """Mean requests per ``recommend`` execution since ``previous`` (Triton's statistics,
    an admin API: the server's key opens it)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        stats = client.get_inference_statistics("recommend", headers=server.admin_headers)
        stats = stats.model_stats[0]
    finally:
        client.close()
    now = (int(stats.inference_count), int(stats.execution_count))
    done = (now[0] - previous[0], now[1] - previous[1])
    return (done[0] / done[1] if done[1] else float("nan")), now


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every concurrency")
    parser.add_argument("--max-queue-delay-us", type=int, default=100)
    parser.add_argument(
        "--recommend-instances",
        type=int,
        default=None,
        help="CPU instances of the recommend entry point (default: RepositoryConfig's; "
        "0: Triton's default, one)",
    )
    parser.add_argument(
        "--retrieval-mode",
        choices=("models", "inline"),
        default="models",
        help="RepositoryConfig.retrieval_mode: BLS calls to the user_tower and retrieval "
        "models, or both stages inside recommend (default: models)",
    )
    parser.add_argument("--ranker-repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    parser.add_argument(
        "--perf-analyzer-root",
        type=Path,
        default=None,
        help="folder with the unpacked perf_analyzer wheel and Debian 13 libraries "
        "(see run_perf_analyzer); also measure with NVIDIA perf_analyzer",
    )
    args = parser.parse_args()
    # One thread per request on both sides, as every ONNX Runtime session and FAISS
    # instance of the repository gets (RepositoryConfig.intra_op_threads/faiss_threads).
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)

    from recsys.bundle import layout
    from recsys.bundle.writer import write_bundle
    from recsys.export.manifest import ExportManifest
    from recsys.export.onnx_export import ranker_twin, time_ranker
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    t0 = time.perf_counter()
    recommender, two_tower, schema, dataset = train_models(args.data_dir)
    print(f"models: trained here, one epoch each, default sizes "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    naive = naive_recommend(recommender, two_tower, dataset)
    users = recommender.context.user_ids.tolist()
    rng = np.random.default_rng(0)
    users = [int(u) for u in rng.permutation(users)]

    import tempfile

    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp:
        root = Path(tmp) / "repository"
        repo_cfg = RepositoryConfig(
            max_queue_delay_us=args.max_queue_delay_us, retrieval_mode=args.retrieval_mode
        )
        if args.recommend_instances is not None:
            repo_cfg = replace(repo_cfg, recommend_instances=args.recommend_instances)
        # the Triton side serves the run bundle, as every deployment does; the naive
        # side keeps the PyTorch models the bundle was written from
        bundle = write_bundle(recommender, two_tower, schema, dataset, Path(tmp) / "bundle")
        build_repository(bundle, root, repo_cfg)
        onnx_ranker = root / "ranker" / "1" / "model.onnx"
        # the served ranker's inputs: one candidate list of 200
        entry = ExportManifest.load(bundle.path(layout.EXPORT_MANIFEST))["ranker"]
        twin = ranker_twin(recommender.ranker.model, entry)
        ranker_latency = time_ranker(
            twin, onnx_ranker, 200, args.ranker_repeats, threads=1, model=recommender.ranker.model
        )
        server_cfg = TritonServerConfig(
            model_repository=root,
            model_control_mode="explicit",
            load_models=("*",),
            startup_timeout_s=300,
        )
        with LocalTritonServer(server_cfg) as server:
            stats = mean_batch(server, (0, 0))[1]
            # same answers on both sides before timing anything
            from recsys.serving.recommend_client import RecommendClient

            with RecommendClient(server.grpc_url) as client:
                for user in users[:5]:
                    served = client.recommend(user, args.k).item_ids
                    offline = naive(user, args.k)
                    assert np.array_equal(served, offline.item_ids[0][offline.valid[0]]), user
            for round_ in range(args.rounds):
                for c in args.concurrency:
                    r = run_triton(server.grpc_url, users, args.k, c, args.requests)
                    r.mean_batch, stats = mean_batch(server, stats)
                    results.append(r)
                    n = run_naive(naive, users, args.k, c, args.requests)
                    results.append(n)
                    print(
                        f"round {round_} c={c}: triton {r.rps:.0f} req/s p50 {r.p50_ms:.1f} "
                        f"p99 {r.p99_ms:.1f} ms (batch {r.mean_batch:.1f}) | naive {n.rps:.0f} "
                        f"req/s p50 {n.p50_ms:.1f} p99 {n.p99_ms:.1f} ms | load {n.load_after}",
                        flush=True,
                    )

            perf: dict[int, dict[str, float]] = {}
            if args.perf_analyzer_root is not None:
                for c in args.concurrency:
                    perf[c] = run_perf_analyzer(
                        args.perf_analyzer_root, server.grpc_url, users, args.k, c, Path(tmp)
                    )
                    perf[c]["load"] = float(load_average().split()[0])
                    print(f"perf_analyzer c={c}: {perf[c]}", flush=True)

    table = summarize(results, args.concurrency)
    if perf:
        table += "\n\n| concurrency | perf_analyzer req/s | p50 ms | p99 ms | load (1 min) |\n"
        table += "|---|---|---|---|---|\n"
        table += "\n".join(
            f"| {c} | {p.get('rps', float('nan')):.0f} | {p.get('p50_ms', float('nan')):.1f} | "
            f"{p.get('p99_ms', float('nan')):.1f} | {p['load']:.2f} |"
            for c, p in perf.items()
        )
    print("\n" + table)
    print(
        f"\nranker, {ranker_latency.n_candidates} candidates, 1 thread: PyTorch eager (twin) "
        f"p50 {ranker_latency.eager_p50_ms:.2f} ms, TorchRec eager p50 "
        f"{ranker_latency.torchrec_p50_ms:.2f} ms, ONNX Runtime p50 "
        f"{ranker_latency.onnxruntime_p50_ms:.2f} ms -> ONNX Runtime is "
        f"{ranker_latency.torchrec_p50_ms / ranker_latency.onnxruntime_p50_ms:.1f}x faster than "
        f"TorchRec eager, {ranker_latency.eager_p50_ms / ranker_latency.onnxruntime_p50_ms:.1f}x "
        f"than the eager twin (max |diff| {ranker_latency.max_abs_diff:.1e})"
    )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, Python "
        f"{platform.python_version()}, load at end {load_average()}"
    )
    print(f"server: retrieval_mode {repo_cfg.retrieval_mode}, recommend instances "
          f"{repo_cfg.recommend_instances}")  # fmt: skip
    print(f"machine: {machine}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "models": "trained here, one epoch each, default sizes",
            "retrieval_mode": repo_cfg.retrieval_mode,
            "recommend_instances": repo_cfg.recommend_instances,
            "machine": machine,
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "k": args.k,
            "runs": [asdict(r) | {"rps": r.rps} for r in results],
            "ranker_200": asdict(ranker_latency),
            "table": table,
            "perf_analyzer": perf,
        }
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")


def summarize(results: list[Run], levels: list[int]) -> str:
    """A markdown table: per concurrency, the median over rounds of each system."""
    lines = [
        "| concurrency | triton req/s | triton p50 ms | triton p99 ms | mean batch | "
        "naive req/s | naive p50 ms | naive p99 ms | throughput ratio | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in levels:
        t = [r for r in results if r.system == "triton" and r.concurrency == c]
        n = [r for r in results if r.system == "naive" and r.concurrency == c]

        def med(rs: list[Run], attr: str) -> float:
            return float(np.median([getattr(r, attr) for r in rs]))

        lines.append(
            f"| {c} | {med(t, 'rps'):.0f} | {med(t, 'p50_ms'):.1f} | {med(t, 'p99_ms'):.1f} | "
            f"{med(t, 'mean_batch'):.1f} | {med(n, 'rps'):.0f} | {med(n, 'p50_ms'):.1f} | "
            f"{med(n, 'p99_ms'):.1f} | {med(t, 'rps') / med(n, 'rps'):.1f}x | "
            f"{', '.join(r.load_after.split()[0] for r in t + n)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
