"""Training throughput of the TorchRec DLRM ranker vs. the same model in plain PyTorch.

Both sides train the same network on the same synthetic Criteo-shaped batches
(:mod:`recsys.data.criteo_synthetic`, power-law ids) in one process, with
repetitions interleaved (A B C A B C ...) so that load from other processes on a
shared machine hits every variant alike. Reported: median samples/s per variant,
the ratio of the medians TorchRec / plain, and the median of the per-repetition
ratios (each pairs runs that saw the same background load); the same again for
samples per CPU-second of this process (``time.process_time``), which a busy
shared machine distorts far less than wall-clock time.

Variants:

* ``torchrec_dmp`` -- the project's training path
  (:func:`recsys.training.ranker_trainer.prepare_ranker`): ``DLRM`` over an
  ``EmbeddingBagCollection``, tables sharded by ``DistributedModelParallel`` in a
  one-process gloo group (table-wise, FBGEMM fused CPU kernel), row-wise Adagrad
  applied inside backward; dense layers Adam.
* ``plain_rowwise`` -- 26 ``nn.EmbeddingBag(sparse=True, mode="sum")``, the same
  MLPs (Linear + ReLU), the same dot-product interaction; tables updated by a
  plain-PyTorch row-wise Adagrad over the sparse gradients (the same update
  rule as FBGEMM's ``EXACT_ROWWISE_ADAGRAD``: one accumulator per row,
  ``sum += mean(g**2)``, ``w -= lr * g / (sqrt(sum) + eps)``); dense layers Adam.
* ``plain_adagrad`` -- as above but ``torch.optim.Adagrad`` on the sparse
  gradients (element-wise accumulators: what stock PyTorch offers).
* ``torchrec_local`` (``--with-local``) -- the unsharded TorchRec model with
  TorchRec's row-wise Adagrad in backward over *dense* table gradients.

Before timing, the plain model gets the TorchRec model's initial weights and the
script checks that both give the same logits on a batch (same network).

Default model (a Criteo-Kaggle-sized DLRM): 26 tables of 4 .. 1,000,000 rows
(2.55 M rows in all, 653 MB in fp32 at dim 64), embedding dim 64, dense arch
13-512-256-64, over arch 415-512-256-1, batch 2048, one id per feature.

Usage:
    python benchmarks/dlrm_throughput.py --out results/dlrm_throughput
"""

from __future__ import annotations

import os

# Threads that spin while waiting (OpenMP's default) steal the two cores of a
# busy shared machine from the threads doing work: measured here, one training
# step took about ten times longer. Must be set before the OpenMP runtime loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from recsys.data.criteo_synthetic import (
    DEFAULT_TABLE_SIZES,
    SyntheticCriteoConfig,
    generate_criteo,
)
from recsys.models.dlrm import Ranker, RankerConfig, build_ranker, ids_to_kjt
from recsys.training.ranker_trainer import RankerTrainerConfig, prepare_ranker

EPS = 1e-8


class PlainDLRM(nn.Module):
    """DLRM with one ``nn.EmbeddingBag`` per feature and nothing from TorchRec."""

    def __init__(
        self, sizes: list[int], dim: int, num_dense: int, bottom: list[int], top: list[int]
    ):
        super().__init__()
        self.tables = nn.ModuleList(nn.EmbeddingBag(n, dim, mode="sum", sparse=True) for n in sizes)
        self.bottom = self._mlp(num_dense, bottom, relu_last=True)
        f = len(sizes)
        self.top = self._mlp(dim + f * (f + 1) // 2, top, relu_last=False)
        self.register_buffer("triu", torch.triu_indices(f + 1, f + 1, offset=1), persistent=False)

    @staticmethod
    def _mlp(width: int, sizes: list[int], relu_last: bool) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, out in enumerate(sizes):
            layers.append(nn.Linear(width, out))
            if relu_last or i < len(sizes) - 1:
                layers.append(nn.ReLU())
            width = out
        return nn.Sequential(*layers)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        pooled = [table(ids[:, j : j + 1]) for j, table in enumerate(self.tables)]
        stacked = torch.stack([x, *pooled], dim=1)
        triu: torch.Tensor = self.triu  # type: ignore[assignment]
        pairs = torch.bmm(stacked, stacked.transpose(1, 2))[:, triu[0], triu[1]]
        return self.top(torch.cat([x, pairs], dim=1)).squeeze(-1)


class SparseRowWiseAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad for sparse gradients (FBGEMM EXACT_ROWWISE_ADAGRAD's rule)."""

    def __init__(self, params: Any, lr: float, eps: float = EPS):
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype)
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                state["sum"].index_add_(0, rows, values.pow(2).mean(dim=1))
                scale = state["sum"][rows].sqrt_().add_(group["eps"]).reciprocal_()
                p.index_add_(0, rows, values * scale.unsqueeze(1), alpha=-group["lr"])


def copy_weights(ranker: Ranker, plain: PlainDLRM) -> None:
    """Gives the plain model the TorchRec model's parameters (before sharding)."""
    ebc: nn.Module = ranker.dlrm.sparse_arch.embedding_bag_collection
    with torch.no_grad():
        tables = ebc.state_dict()
        for j, table in enumerate(plain.tables):
            assert isinstance(table, nn.EmbeddingBag)
            table.weight.copy_(tables[f"embedding_bags.t_C{j + 1}.weight"])
        for src_arch, dst in (
            (ranker.dlrm.dense_arch, plain.bottom),
            (ranker.dlrm.over_arch, plain.top),
        ):
            src = [m for m in src_arch.modules() if isinstance(m, nn.Linear)]
            ours = [m for m in dst.modules() if isinstance(m, nn.Linear)]
            assert len(src) == len(ours), (len(src), len(ours))
            for a, b in zip(src, ours, strict=True):
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import fbgemm_gpu
    import torchrec

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "?"),
        "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "?"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and markdown")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--max-table-rows", type=int, default=1_000_000, help="cap on table sizes")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per variant")
    parser.add_argument("--steps", type=int, default=8, help="training steps per repetition")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--num-batches", type=int, default=8, help="distinct batches cycled")
    parser.add_argument("--with-local", action="store_true", help="also time torchrec_local")
    parser.add_argument("--lr-sparse", type=float, default=0.01)
    parser.add_argument("--lr-dense", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    sizes = [min(n, args.max_table_rows) for n in DEFAULT_TABLE_SIZES]
    names = [f"C{j + 1}" for j in range(len(sizes))]
    dim, batch = args.embedding_dim, args.batch_size
    bottom, top = [512, 256, dim], [512, 256, 1]
    ranker_config = RankerConfig(
        embedding_dim=dim,
        dense_arch_layer_sizes=tuple(bottom),
        over_arch_layer_sizes=tuple(top),
        seed=args.seed,
    )

    # Batch construction stays outside the timed loop (both formats built up front).
    data_cfg = SyntheticCriteoConfig(
        rows=batch * args.num_batches, table_sizes=tuple(sizes), seed=args.seed
    )
    dense_np, sparse_np, labels_np = generate_criteo(data_cfg)
    dense_all = torch.from_numpy(dense_np)
    ids_all = torch.from_numpy(sparse_np)
    labels_all = torch.from_numpy(labels_np)
    batches = []
    for b in range(args.num_batches):
        rows = slice(b * batch, (b + 1) * batch)
        batches.append(
            (dense_all[rows], ids_all[rows], ids_to_kjt(ids_all[rows], names), labels_all[rows])
        )

    print("building models ...", flush=True)
    ranker = build_ranker(ranker_config, names, sizes, num_dense=dense_np.shape[1])
    plain = PlainDLRM(sizes, dim, dense_np.shape[1], bottom, top)
    copy_weights(ranker, plain)
    with torch.no_grad():
        d, ids, kjt, _ = batches[0]
        max_diff = float((ranker(d, kjt) - plain(d, ids)).abs().max())
    if max_diff > 1e-4:
        raise SystemExit(
            f"plain and TorchRec models disagree before training (max |diff| {max_diff})"
        )

    trainer_cfg = RankerTrainerConfig(
        batch_size=batch,
        lr_dense=args.lr_dense,
        lr_sparse=args.lr_sparse,
        dense_optimizer="adam",
        sparse_optimizer="rowwise_adagrad",
    )
    loss_fn = nn.BCEWithLogitsLoss()
    variants: dict[str, Callable[[int], float]] = {}

    local: Ranker | None = None
    if args.with_local:
        local = build_ranker(ranker_config, names, sizes, num_dense=dense_np.shape[1])
    prepared = prepare_ranker(ranker, trainer_cfg)

    def torchrec_step(module: nn.Module, opt: torch.optim.Optimizer) -> Callable[[int], float]:
        def step(i: int) -> float:
            d, _, kjt, y = batches[i % len(batches)]
            opt.zero_grad()
            loss = loss_fn(module(d, kjt), y)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return step

    variants["torchrec_dmp"] = torchrec_step(prepared.module, prepared.optimizer)

    def plain_variant(rowwise: bool, init: dict[str, torch.Tensor]) -> Callable[[int], float]:
        model = PlainDLRM(sizes, dim, dense_np.shape[1], bottom, top)
        model.load_state_dict(init)
        sparse = list(model.tables.parameters())
        dense = [p for n, p in model.named_parameters() if not n.startswith("tables.")]
        sparse_opt: torch.optim.Optimizer = (
            SparseRowWiseAdagrad(sparse, lr=args.lr_sparse)
            if rowwise
            else torch.optim.Adagrad(sparse, lr=args.lr_sparse, eps=EPS)
        )
        dense_opt = torch.optim.Adam(dense, lr=args.lr_dense)

        def step(i: int) -> float:
            d, ids, _, y = batches[i % len(batches)]
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            loss = loss_fn(model(d, ids), y)
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
            return float(loss.detach())

        return step

    variants["plain_rowwise"] = plain_variant(True, plain.state_dict())
    variants["plain_adagrad"] = plain_variant(False, plain.state_dict())
    del plain
    if local is not None:
        local_cfg = dataclasses.replace(trainer_cfg, sharding="local")
        local_prepared = prepare_ranker(local, local_cfg)
        variants["torchrec_local"] = torchrec_step(local_prepared.module, local_prepared.optimizer)

    counters = dict.fromkeys(variants, 0)
    losses: dict[str, list[float]] = {k: [] for k in variants}
    for name, step in variants.items():
        for _ in range(args.warmup):
            losses[name].append(step(counters[name]))
            counters[name] += 1

    load_before = os.getloadavg()
    samples_per_s: dict[str, list[float]] = {k: [] for k in variants}
    samples_per_cpu_s: dict[str, list[float]] = {k: [] for k in variants}
    bar = tqdm(total=args.reps * len(variants), desc="timed repetitions")
    for _ in range(args.reps):
        for name, step in variants.items():  # interleaved: A B C A B C ...
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                losses[name].append(step(counters[name]))
                counters[name] += 1
            samples_per_s[name].append(args.steps * batch / (time.perf_counter() - start))
            samples_per_cpu_s[name].append(args.steps * batch / (time.process_time() - cpu_start))
            bar.update()
    bar.close()
    load_after = os.getloadavg()

    def summarize(runs: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
        medians = {k: statistics.median(v) for k, v in runs.items()}
        # Same-repetition ratios pair runs that saw the same background load.
        ours = runs["torchrec_dmp"]
        paired = {
            k: statistics.median(a / b for a, b in zip(ours, v, strict=True))
            for k, v in runs.items()
        }
        return medians, paired

    medians, paired = summarize(samples_per_s)
    cpu_medians, cpu_paired = summarize(samples_per_cpu_s)
    result = {
        "command": "python benchmarks/dlrm_throughput.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("with_local",)
        )
        + (" --with-local" if args.with_local else ""),
        "machine": machine(),
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "model": {
            "arch": "dlrm",
            "table_sizes": sizes,
            "total_rows": sum(sizes),
            "embedding_dim": dim,
            "dense_arch": bottom,
            "over_arch": top,
            "batch_size": batch,
            "ids_per_feature": 1,
            "zipf_exponent": data_cfg.zipf_exponent,
            "max_abs_logit_diff_before_training": max_diff,
        },
        "sharding_plan": prepared.plan,
        "samples_per_s": samples_per_s,
        "median_samples_per_s": medians,
        "ratio_torchrec_dmp_over_plain_rowwise": medians["torchrec_dmp"] / medians["plain_rowwise"],
        "ratio_torchrec_dmp_over_plain_adagrad": medians["torchrec_dmp"] / medians["plain_adagrad"],
        "median_paired_ratio_torchrec_dmp_over": paired,
        "samples_per_cpu_s": samples_per_cpu_s,
        "median_samples_per_cpu_s": cpu_medians,
        "median_paired_cpu_ratio_torchrec_dmp_over": cpu_paired,
        "final_loss": {k: float(np.mean(v[-args.steps :])) for k, v in losses.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dlrm_throughput.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| variant | median samples/s (wall) | min | max | torchrec_dmp / variant, wall "
        "(ratio of medians; median of paired ratios) | median samples per CPU-second "
        "| torchrec_dmp / variant, CPU (ratio of medians; median of paired ratios) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in samples_per_s.items():
        lines.append(
            f"| {name} | {medians[name]:,.0f} | {min(values):,.0f} | {max(values):,.0f} "
            f"| {medians['torchrec_dmp'] / medians[name]:.2f}; {paired[name]:.2f} "
            f"| {cpu_medians[name]:,.0f} "
            f"| {cpu_medians['torchrec_dmp'] / cpu_medians[name]:.2f}; {cpu_paired[name]:.2f} |"
        )
    header = (
        f"DLRM training throughput, batch {batch}, dim {dim}, {len(sizes)} tables "
        f"({sum(sizes):,} rows), {args.threads} threads, {args.reps} interleaved reps x "
        f"{args.steps} steps; {result['machine']['cpu']} ({result['machine']['logical_cpus']} "
        f"logical CPUs); load average {load_before[0]:.1f} -> {load_after[0]:.1f}\n\n"
    )
    (args.out / "dlrm_throughput.md").write_text(header + "\n".join(lines) + "\n")
    print(header + "\n".join(lines))


if __name__ == "__main__":
    main()
