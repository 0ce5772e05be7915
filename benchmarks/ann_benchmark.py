"""Recall-vs-speed benchmark of the FAISS item indexes in :mod:`recsys.index`.

For every index setting (exact Flat; IVF-Flat at several ``nprobe``; IVF-PQ;
HNSW at several ``efSearch``) it measures, on the original catalogue and on a
large catalogue made from it:

* build time (training + adding, seconds),
* recall@k (default k=100) against exact Flat search, over the batched queries,
* queries/s at batch 1 (``--single-queries`` queries, one ``search`` call each)
  and at batch ``--batch-size`` (``--batched-queries`` queries),

all through :class:`recsys.index.ItemIndex` (id mapping and -1 filtering
included, as a server would call it). A setting *meets the target* when its
recall@k >= 0.95 and its queries/s is at least 10x exact Flat search's at the
same batch size, on the large catalogue.

Inputs:

* ``--embeddings PATH.npy``: item embeddings ``[N, D]``. Without it, clustered
  synthetic unit vectors are generated (``--n-items``, ``--dim``, ``--clusters``,
  seeded).
* ``--queries PATH.npy``: query (user) embeddings ``[Q, D]``. Without it, queries
  are items drawn at random with relative Gaussian noise (``--query-noise``).
* ``--catalogue-size``: the large catalogue, built by jittered copies: copy ``i``
  is ``normalize(e[i % N] + sigma * ||e[i % N]|| * z)`` with ``z ~ N(0, I / D)``
  (``sigma = --jitter``, seeded).

Outputs under ``--out``: ``results.json`` (every number plus the machine and the
arguments), ``results.md`` (a table) and ``recall_vs_qps.png``.

Example (the run reported in the project docs, about 6 minutes on 2 CPU cores):
    python benchmarks/ann_benchmark.py --catalogue-size 1000000 --out artifacts/ann

Quick run:
    python benchmarks/ann_benchmark.py --catalogue-size 20000 --n-items 5000 --out /tmp/ann
"""

from __future__ import annotations

import os

# FAISS's OpenMP threads otherwise spin while waiting; on shared or busy cores that
# makes multi-threaded FAISS many times slower. Must be set before faiss loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from recsys.index import IndexConfig, IndexKind, ItemIndex, auto_nlist

TARGET_RECALL = 0.95
TARGET_SPEEDUP = 10.0

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Setting:
    """One index configuration to measure.

    Attributes:
        name: label in the table, e.g. ``"ivf_flat nprobe=32"``.
        build_key: settings with the same key share one built index (only search
            parameters differ).
        config: the index configuration (search parameters included).
    """

    name: str
    build_key: str
    config: IndexConfig


@dataclass
class Measurement:
    """The numbers of one setting on one catalogue."""

    catalogue: str
    n: int
    dim: int
    setting: str
    kind: str
    params: dict[str, Any]
    device: str
    build_s: float
    recall: float
    qps_batch1: float
    qps_batched: float
    speedup_batch1: float = 1.0
    speedup_batched: float = 1.0
    meets_target_batch1: bool = False
    meets_target_batched: bool = False
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- data


def normalize(x: FloatArray) -> FloatArray:
    """Rows scaled to unit length (zero rows left as they are)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def synthetic_items(n: int, dim: int, clusters: int, spread: float, seed: int) -> FloatArray:
    """Clustered unit vectors: ``normalize(center + spread * z)``, ``z ~ N(0, I / D)``,
    cluster sizes drawn uniformly at random (seeded)."""
    rng = np.random.default_rng(seed)
    centers = normalize(rng.standard_normal((clusters, dim)).astype(np.float32))
    labels = rng.integers(0, clusters, size=n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return normalize(centers[labels] + spread * noise)


def jittered_catalogue(
    base: FloatArray, size: int, sigma: float, seed: int, chunk: int = 262_144
) -> FloatArray:
    """``size`` vectors: copy ``i = normalize(e[i % N] + sigma * ||e[i % N]|| * z)``."""
    rng = np.random.default_rng(seed)
    n, dim = base.shape
    norms = np.linalg.norm(base, axis=1, keepdims=True).astype(np.float32)
    out = np.empty((size, dim), dtype=np.float32)
    for lo in tqdm(range(0, size, chunk), desc="jittered copies", leave=False):
        hi = min(lo + chunk, size)
        src = np.arange(lo, hi) % n
        z = rng.standard_normal((hi - lo, dim)).astype(np.float32) / np.sqrt(dim)
        out[lo:hi] = normalize(base[src] + sigma * norms[src] * z)
    return out


def sample_queries(base: FloatArray, count: int, noise: float, seed: int) -> FloatArray:
    """``count`` queries ``e[j] + noise * ||e[j]|| * z`` for random items ``j``."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(base), size=count)
    z = rng.standard_normal((count, base.shape[1])).astype(np.float32) / np.sqrt(base.shape[1])
    norms = np.linalg.norm(base[rows], axis=1, keepdims=True)
    return (base[rows] + noise * norms * z).astype(np.float32)


def load_matrix(path: Path, what: str) -> FloatArray:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise SystemExit(
            f"{what} {path}: expected a float [N, D] array, got {arr.dtype} {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise SystemExit(f"{what} {path}: contains NaN or inf")
    return np.ascontiguousarray(arr, dtype=np.float32)


# ---------------------------------------------------------------------- settings


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def settings_for(n: int, dim: int, args: argparse.Namespace) -> list[Setting]:
    """The index settings measured on a catalogue of ``n`` vectors."""
    base = IndexConfig(device=args.device, num_threads=args.threads, seed=args.seed)
    nlist = args.nlist or auto_nlist(n)
    out = [Setting("flat (exact)", "flat", base.with_updates(kind="flat"))]
    ivf = base.with_updates(kind="ivf_flat", nlist=nlist, train_size=args.train_size)
    for nprobe in parse_ints(args.nprobe):
        if nprobe <= nlist:
            out.append(
                Setting(
                    f"ivf_flat nlist={nlist} nprobe={nprobe}",
                    "ivf_flat",
                    ivf.with_updates(nprobe=nprobe),
                )
            )
    pq_m = args.pq_m if dim % args.pq_m == 0 else 1
    pq = ivf.with_updates(kind="ivf_pq", pq_m=pq_m, pq_nbits=8)
    if n >= 2**8:
        for nprobe in parse_ints(args.pq_nprobe):
            if nprobe <= nlist:
                out.append(
                    Setting(
                        f"ivf_pq nlist={nlist} m={pq_m} nprobe={nprobe}",
                        "ivf_pq",
                        pq.with_updates(nprobe=nprobe),
                    )
                )
    hnsw = base.with_updates(kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    for ef in parse_ints(args.ef_search):
        out.append(
            Setting(f"hnsw M={args.hnsw_m} efSearch={ef}", "hnsw", hnsw.with_updates(ef_search=ef))
        )
    return out


def search_params(cfg: IndexConfig) -> dict[str, Any]:
    if cfg.kind is IndexKind.FLAT:
        return {}
    if cfg.kind is IndexKind.HNSW:
        return {"M": cfg.hnsw_m, "efConstruction": cfg.ef_construction, "efSearch": cfg.ef_search}
    params: dict[str, Any] = {"nlist": cfg.nlist, "nprobe": cfg.nprobe}
    if cfg.kind is IndexKind.IVF_PQ:
        params.update(m=cfg.pq_m, nbits=cfg.pq_nbits)
    return params


# ---------------------------------------------------------------------- timing


def batches(x: FloatArray, size: int) -> Iterator[FloatArray]:
    for lo in range(0, len(x), size):
        yield x[lo : lo + size]


# Timed passes stop once this many seconds have been spent: a long pass already
# averages out other processes, and the exact 1M search is the slowest part.
REPEAT_BUDGET_S = 2.0


def time_batched(
    index: ItemIndex, queries: FloatArray, k: int, batch_size: int, repeats: int
) -> tuple[float, npt.NDArray[Any]]:
    """(queries/s, item ids [Q, k]) searching ``queries`` in batches; the best of up
    to ``repeats`` timed passes, since other processes on shared cores only slow it."""
    index.search(queries[: min(8, len(queries))], k)  # warm-up
    best, spent = float("inf"), 0.0
    ids: list[npt.NDArray[Any]] = []
    for _ in range(repeats):
        start = time.perf_counter()
        ids = [index.search(b, k).item_ids for b in batches(queries, batch_size)]
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= REPEAT_BUDGET_S:
            break
    return len(queries) / best, np.concatenate(ids)


def time_single(index: ItemIndex, queries: FloatArray, k: int, repeats: int) -> float:
    """queries/s with one query per ``search`` call (best of up to ``repeats`` passes)."""
    index.search(queries[:1], k)  # warm-up
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(queries)):
            index.search(queries[i : i + 1], k)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= REPEAT_BUDGET_S:
            break
    return len(queries) / best


def recall_at_k(found: npt.NDArray[Any], exact: npt.NDArray[Any]) -> float:
    """Mean over queries of |found ∩ exact| / |exact| (row-wise)."""
    hits = [
        len(np.intersect1d(f, e, assume_unique=True)) for f, e in zip(found, exact, strict=True)
    ]
    return float(np.mean(np.asarray(hits) / exact.shape[1]))


# ---------------------------------------------------------------------- run


def run_catalogue(
    label: str,
    items: FloatArray,
    single: FloatArray,
    batched: FloatArray,
    args: argparse.Namespace,
) -> list[Measurement]:
    """Measures every setting on one catalogue."""
    n, dim = items.shape
    k = min(args.k, n)
    ids = np.arange(n, dtype=np.int64)
    results: list[Measurement] = []
    exact_ids: npt.NDArray[Any] | None = None
    built: dict[str, ItemIndex] = {}
    settings = settings_for(n, dim, args)
    for setting in tqdm(settings, desc=f"{label} (N={n:,})", unit="setting"):
        index = built.get(setting.build_key)
        if index is None:
            built.clear()  # free the previous kind's memory before building the next
            index = ItemIndex(setting.config).build(items, ids, progress=True)
            built[setting.build_key] = index
            build_s = index.build_seconds
        else:
            index.set_search_params(
                nprobe=setting.config.nprobe, ef_search=setting.config.ef_search
            )
            build_s = index.build_seconds
        qps_batched, found = time_batched(index, batched, k, args.batch_size, args.repeats)
        if exact_ids is None:  # the first setting is exact Flat search
            exact_ids = found
        qps_1 = time_single(index, single, k, args.repeats)
        m = Measurement(
            catalogue=label,
            n=n,
            dim=dim,
            setting=setting.name,
            kind=str(setting.config.kind),
            params=search_params(index.config),
            device=index.device.value,
            build_s=round(build_s, 3),
            recall=round(recall_at_k(found, exact_ids), 4),
            qps_batch1=round(qps_1, 1),
            qps_batched=round(qps_batched, 1),
        )
        results.append(m)
        tqdm.write(
            f"  {label:>9} {m.setting:<38} build {m.build_s:7.1f}s recall@{k} {m.recall:.3f} "
            f"qps b1 {m.qps_batch1:9.1f} b{args.batch_size} {m.qps_batched:9.1f}"
        )
    flat = results[0]
    for m in results:
        m.speedup_batch1 = round(m.qps_batch1 / flat.qps_batch1, 2)
        m.speedup_batched = round(m.qps_batched / flat.qps_batched, 2)
        m.meets_target_batch1 = m.recall >= TARGET_RECALL and m.speedup_batch1 >= TARGET_SPEEDUP
        m.meets_target_batched = m.recall >= TARGET_RECALL and m.speedup_batched >= TARGET_SPEEDUP
    return results


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work competing for the cores)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(args: argparse.Namespace, load_at_start: list[float] | None) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "faiss_threads": args.threads or faiss.omp_get_max_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "gpu": args.device,
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
    }


def markdown_table(results: Sequence[Measurement], args: argparse.Namespace) -> str:
    lines = [
        f"| catalogue | N | setting | device | build s | recall@{args.k} | q/s batch 1 | "
        f"q/s batch {args.batch_size} | speed-up b1 | speed-up b{args.batch_size} | "
        "target b1 | target b" + str(args.batch_size) + " |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|:-:|:-:|",
    ]
    for m in results:
        big = m.catalogue == "large"
        lines.append(
            f"| {m.catalogue} | {m.n:,} | {m.setting} | {m.device} | {m.build_s:.1f} | "
            f"{m.recall:.3f} | {m.qps_batch1:,.0f} | {m.qps_batched:,.0f} | "
            f"{m.speedup_batch1:.1f}x | {m.speedup_batched:.1f}x | "
            f"{_mark(m.meets_target_batch1, big)} | {_mark(m.meets_target_batched, big)} |"
        )
    return "\n".join(lines)


def _mark(ok: bool, applies: bool) -> str:
    if not applies:
        return "-"
    return "**yes**" if ok else "no"


def plot(results: Sequence[Measurement], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    catalogues = list(dict.fromkeys(m.catalogue for m in results))
    fig, axes = plt.subplots(len(catalogues), 2, figsize=(12, 4.5 * len(catalogues)), squeeze=False)
    colors = {"flat": "black", "ivf_flat": "tab:blue", "ivf_pq": "tab:orange", "hnsw": "tab:green"}
    for row, catalogue in enumerate(catalogues):
        rows = [m for m in results if m.catalogue == catalogue]
        flat = rows[0]
        for col, (attr, label) in enumerate(
            (("qps_batch1", "batch 1"), ("qps_batched", f"batch {args.batch_size}"))
        ):
            ax = axes[row][col]
            for kind, color in colors.items():
                # In parameter order (nprobe / efSearch ascending), not sorted by speed.
                pts = [(getattr(m, attr), m.recall) for m in rows if m.kind == kind]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, marker="o", color=color, label=kind)
            ax.axhline(TARGET_RECALL, color="grey", linestyle="--", linewidth=0.8)
            ax.axvline(
                TARGET_SPEEDUP * getattr(flat, attr), color="grey", linestyle=":", linewidth=0.8
            )
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
            ax.set_xlabel("queries / s (log)")
            ax.set_ylabel(f"recall@{args.k} vs exact")
            ax.set_title(f"{catalogue} catalogue, N={flat.n:,}, {label}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower left")
    fig.suptitle("recall vs speed (dashed: recall 0.95; dotted: 10x exact Flat q/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--embeddings", type=Path, help="item embeddings [N, D] .npy (optional)")
    p.add_argument("--queries", type=Path, help="query/user embeddings [Q, D] .npy (optional)")
    p.add_argument("--catalogue-size", type=int, default=1_000_000, help="large catalogue size")
    p.add_argument("--out", type=Path, default=Path("artifacts/ann_benchmark"))
    p.add_argument("--n-items", type=int, default=50_000, help="synthetic items (no --embeddings)")
    p.add_argument("--dim", type=int, default=64, help="synthetic dimension")
    p.add_argument("--clusters", type=int, default=1000, help="synthetic clusters")
    p.add_argument("--spread", type=float, default=0.5, help="synthetic cluster spread")
    p.add_argument("--jitter", type=float, default=0.1, help="sigma of the jittered copies")
    p.add_argument("--query-noise", type=float, default=0.1, help="relative noise of queries")
    p.add_argument("--k", type=int, default=100, help="recall@k and results per query")
    p.add_argument("--single-queries", type=int, default=200, help="queries timed at batch 1")
    p.add_argument("--batched-queries", type=int, default=2000, help="queries timed batched")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--nlist", type=int, default=0, help="IVF lists; 0 = auto (4*sqrt(N))")
    p.add_argument("--train-size", type=int, default=None, help="IVF training sample")
    p.add_argument("--nprobe", default="4,8,16,32,64", help="IVF-Flat nprobe values")
    p.add_argument("--pq-m", type=int, default=16, help="IVF-PQ sub-quantizers")
    p.add_argument("--pq-nprobe", default="16,64", help="IVF-PQ nprobe values")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--ef-search", default="64,128,256,512", help="HNSW efSearch values")
    p.add_argument("--threads", type=int, default=None, help="FAISS threads (default: all)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument(
        "--repeats", type=int, default=3, help="timed passes (until 2 s spent); the best is kept"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-original", action="store_true", help="measure the large one only")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    load_at_start = load_average()
    if args.embeddings is not None:
        base = load_matrix(args.embeddings, "--embeddings")
        source = str(args.embeddings)
    else:
        base = synthetic_items(args.n_items, args.dim, args.clusters, args.spread, args.seed)
        source = (
            f"synthetic: {args.n_items} unit vectors, dim {args.dim}, {args.clusters} clusters, "
            f"spread {args.spread}, seed {args.seed}"
        )
    need = args.single_queries + args.batched_queries
    if args.queries is not None:
        queries = load_matrix(args.queries, "--queries")
        if queries.shape[1] != base.shape[1]:
            raise SystemExit(f"--queries dim {queries.shape[1]} != embeddings dim {base.shape[1]}")
        rng = np.random.default_rng(args.seed + 2)
        queries = queries[rng.choice(len(queries), size=need, replace=len(queries) < need)]
    else:
        queries = sample_queries(base, need, args.query_noise, args.seed + 2)
    single, batched = queries[: args.single_queries], queries[args.single_queries :]

    results: list[Measurement] = []
    if not args.skip_original:
        results += run_catalogue("original", base, single, batched, args)
    large = jittered_catalogue(base, args.catalogue_size, args.jitter, args.seed + 1)
    results += run_catalogue("large", large, single, batched, args)
    del large

    args.out.mkdir(parents=True, exist_ok=True)
    winners = [m.setting for m in results if m.catalogue == "large" and m.meets_target_batched]
    winners_1 = [m.setting for m in results if m.catalogue == "large" and m.meets_target_batch1]
    machine = machine_info(args, load_at_start)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "embeddings": source,
        "machine": machine,
        "target": f"recall@{args.k} >= {TARGET_RECALL} and >= {TARGET_SPEEDUP:g}x exact q/s "
        "on the large catalogue",
        "meets_target_batched": winners,
        "meets_target_batch1": winners_1,
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": [asdict(m) for m in results],
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(results, args)
    summary = (
        f"# ANN benchmark\n\nEmbeddings: {source}. Large catalogue: {args.catalogue_size:,} "
        f"jittered copies (sigma {args.jitter}). Queries: {args.single_queries} at batch 1, "
        f"{args.batched_queries} at batch {args.batch_size}; k={args.k}.\n\n"
        f"Machine: {machine['machine']}, {machine['cpu_count']} cores, "
        f"FAISS {faiss.__version__}, {machine['faiss_threads']} threads, "
        f"load average (1, 5, 15 min) at start {machine['load_average_at_start']}, at end "
        f"{machine['load_average_at_end']}; q/s are the best "
        f"of up to {args.repeats} passes.\n\n"
        f"Target ({report['target']}): batch {args.batch_size}: "
        f"{', '.join(winners) or 'none'}; batch 1: {', '.join(winners_1) or 'none'}.\n\n"
        f"{table}\n\nTotal time {report['total_seconds']} s.\n"
    )
    (args.out / "results.md").write_text(summary)
    plot(results, args, args.out / "recall_vs_qps.png")
    print(summary)
    return report


if __name__ == "__main__":
    main()
