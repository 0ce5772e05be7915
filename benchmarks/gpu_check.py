"""One-shot verification of the recsys stack on a CUDA GPU, on real MovieLens-100K.

Each check runs on its own (a failure is recorded and the next check runs) and
yields one row: name, status (``ok``, ``failed: <first line of the exception>``
or ``unavailable: <reason>``), its key numbers and its wall time. The rows are
printed as they finish and written to ``--out`` (JSON) and ``--out`` with a
``.md`` suffix (markdown table).

Checks (``--device`` picks the device under test; ``cpu`` exercises the same
code paths without a GPU):

* ``environment`` -- GPU, torch/CUDA, TorchRec/FBGEMM, onnxruntime providers,
  FAISS build and GPU count.
* ``ml100k_features`` -- load ML-100K from ``RECSYS_DATA_DIR``, stratified 75/25
  split by item (seed 42), build the schema's features.
* ``two_tower_train`` -- the project's :class:`RetrievalTrainer` with the model
  and its unsharded TorchRec ``EmbeddingBagCollection`` on the device
  (``RetrievalTrainerConfig.device``).
* ``two_tower_eval_device_vs_cpu`` -- full-ranking NDCG@10 etc. on the test
  split from the same retrieval vectors, once on the device and once on the
  CPU; the metrics must agree. Uses the device-trained model, or one trained on
  the CPU when device training failed (the row says which).
* ``ranker_train_local`` / ``ranker_train_dmp`` -- the DLRM ranker
  (:func:`train_ranker`) on ML-100K rating examples (label: rating >= 4), tables
  unsharded or sharded by ``DistributedModelParallel`` (fused FBGEMM kernels).
* ``topk_vs_faiss_ml100k`` -- top-100 of every test user from the trained
  vectors: torch matmul + top-k on the device vs exact FAISS (``IndexFlatIP``
  on the CPU, through :class:`ItemIndex`).
* ``topk_vs_faiss_synthetic`` -- the same comparison and timing on random unit
  vectors: 1,000,000 items (100,000 with ``--quick``), dim 64, 256 queries.
* ``onnx_user_tower`` / ``onnx_ranker`` -- export the twins with the project's
  exporter, run them in onnxruntime on every usable provider and the torch twin
  on the device; max absolute difference.
* ``faiss_gpu`` -- a FAISS GPU flat index vs the CPU one, or ``unavailable``
  with the reason.

Usage:
    RECSYS_DATA_DIR=/path/to/datasets python benchmarks/gpu_check.py \\
        --out results/gpu_check.json [--device cuda|cpu] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

# Metrics computed on the device and on the CPU from the same vectors may differ
# only where float rounding reorders near-tied scores.
METRIC_TOLERANCE = 2e-3
# Scores closer than this (relative to the k-th score, at least absolute) to the k-th
# score count as ties when top-k lists differ: float32 dot products summed in another
# order (cuBLAS vs. CPU BLAS) differ in the last bits.
TIE_TOLERANCE = 1e-5


class Unavailable(RuntimeError):
    """The check cannot run here (missing package, GPU, or an earlier result)."""


@dataclass
class CheckResult:
    """One row of the report.

    Attributes:
        name: check name.
        status: ``ok``, ``failed: ...`` or ``unavailable: ...``.
        numbers: the check's key numbers.
        seconds: wall time of the check.
        traceback: the last lines of the traceback of a failure.
    """

    name: str
    status: str
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    traceback: str = ""


@dataclass
class GpuCheckConfig:
    """What the checks run on and how much work they do.

    Attributes:
        device: device under test (``cuda`` or ``cpu``).
        quick: small settings (CPU smoke run).
        data_dir: folder holding ``ml-100k/``.
        two_tower_epochs: training epochs of the two-tower model.
        batch_size: two-tower training batch size.
        ranker_steps: DLRM training steps.
        synthetic_items: catalogue size of the synthetic top-k comparison.
        queries: queries per batch in that comparison.
        dim: vector width in that comparison.
        k: list length of the top-k comparisons.
        repeats: timed repetitions in that comparison.
        seed: seed of data splits, models and random vectors.
    """

    device: str = "cuda"
    quick: bool = False
    data_dir: Path = Path("../shared/datasets")
    two_tower_epochs: int = 4
    batch_size: int = 1024
    ranker_steps: int = 300
    synthetic_items: int = 1_000_000
    queries: int = 256
    dim: int = 64
    k: int = 100
    repeats: int = 5
    seed: int = 0

    @classmethod
    def make(cls, device: str, quick: bool, data_dir: Path) -> GpuCheckConfig:
        """Full settings, or the small ones of ``quick``."""
        if quick:
            return cls(
                device=device,
                quick=True,
                data_dir=data_dir,
                two_tower_epochs=1,
                batch_size=2048,
                ranker_steps=20,
                synthetic_items=100_000,
                repeats=2,
            )
        return cls(device=device, quick=False, data_dir=data_dir)


@dataclass
class Context:
    """What earlier checks hand to later ones."""

    config: GpuCheckConfig
    schema: Any = None
    dataset: Any = None
    model: Any = None
    model_device: str = ""
    trainer: Any = None
    ranker: Any = None
    ranker_names: list[str] = field(default_factory=list)
    ranker_data: dict[str, np.ndarray] = field(default_factory=dict)
    vectors: tuple[torch.Tensor, torch.Tensor] | None = None


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work so timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------- checks


def check_environment(ctx: Context) -> dict[str, Any]:
    """Versions, the GPU and what onnxruntime and FAISS can use."""
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_under_test": ctx.config.device,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = props.name
        out["gpu_memory_gib"] = round(props.total_memory / 1024**3, 1)
        out["gpu_capability"] = f"{props.major}.{props.minor}"
        out["cudnn"] = torch.backends.cudnn.version()
    for module in ("torchrec", "fbgemm_gpu", "tensordict", "onnx", "onnxruntime", "faiss"):
        try:
            mod = __import__(module)
            out[module] = getattr(mod, "__version__", "?")
        except Exception as err:  # report and go on: each later check says what it lacks
            out[module] = f"import failed: {first_line(err)}"
    try:
        import onnxruntime as ort

        out["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as err:
        out["onnxruntime_providers"] = first_line(err)
    try:
        import faiss

        out["faiss_gpu_build"] = hasattr(faiss, "StandardGpuResources")
        out["faiss_num_gpus"] = int(faiss.get_num_gpus())
    except Exception as err:
        out["faiss_num_gpus"] = first_line(err)
    return out


def check_ml100k_features(ctx: Context) -> dict[str, Any]:
    """Loads ML-100K and builds the features of the benchmark split."""
    from recsys.data.movielens import load_ml100k
    from recsys.data.splits import stratified_split
    from recsys.features.build import build_features
    from recsys.features.schema import FeatureSchema

    folder = ctx.config.data_dir / "ml-100k"
    if not (folder / "u.data").is_file():
        raise Unavailable(f"MovieLens-100K not found under {folder} (set RECSYS_DATA_DIR)")
    schema = FeatureSchema.from_yaml(REPO / "configs" / "schema" / "ml100k.yaml")
    data = load_ml100k(folder)
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    ctx.schema = schema
    ctx.dataset = build_features(data, (train, test), schema)
    return {
        "interactions": len(data.interactions),
        "train": len(ctx.dataset.train),
        "test": len(ctx.dataset.test),
        "users": len(ctx.dataset.users),
        "items": len(ctx.dataset.items),
    }


def _two_tower(ctx: Context, device: torch.device) -> Any:
    """The project's ML-100K two-tower model (configs/model/two_tower.yaml) and data."""
    from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig
    from recsys.training.retrieval import RetrievalData

    # hour/weekday are left out, as the model config does on a random split.
    schema = ctx.schema.select([f.name for f in ctx.schema if f.name not in ("hour", "weekday")])
    model_cfg = TwoTowerConfig(
        embedding_dim=64,
        user_tower=TowerConfig((256, 64), 0.3),
        item_tower=TowerConfig((256, 64), 0.3),
        item_bias=True,
        seed=ctx.config.seed,
    )
    model = TwoTower(schema, ctx.dataset.vocabs.num_embeddings(), model_cfg)
    data = RetrievalData.build(ctx.dataset, schema, model.feature_names)
    return model.to(device), data


def _train_two_tower(ctx: Context, device: torch.device) -> tuple[Any, dict[str, Any]]:
    from recsys.training.retrieval import RetrievalTrainer, RetrievalTrainerConfig

    cfg = ctx.config
    model, data = _two_tower(ctx, device)
    trainer_cfg = RetrievalTrainerConfig(
        epochs=cfg.two_tower_epochs,
        batch_size=cfg.batch_size,
        lr_dense=1e-3,
        lr_sparse=0.05,
        seed=cfg.seed,
        progress=False,
        device=str(device),
    )
    trainer = RetrievalTrainer(model, data, trainer_cfg)
    start = time.perf_counter()
    trainer.fit(None)
    synchronize(device)
    seconds = time.perf_counter() - start
    steps = cfg.two_tower_epochs * math.ceil(len(data.example_user) / cfg.batch_size)
    losses = [round(h.loss, 4) for h in trainer.history]
    finite = all(math.isfinite(v) for v in losses)
    if not finite:
        raise RuntimeError(f"non-finite training loss {losses}")
    numbers = {
        "device": str(device),
        "steps": steps,
        "epoch_losses": losses,
        "train_seconds": round(seconds, 2),
        "examples_per_s": round(steps * cfg.batch_size / seconds),
        "param_device": str(next(model.parameters()).device),
    }
    return trainer, numbers


def check_two_tower_train(ctx: Context) -> dict[str, Any]:
    """The two-tower model trained on the device under test."""
    if ctx.dataset is None:
        raise Unavailable("no ML-100K features (ml100k_features failed)")
    device = torch.device(ctx.config.device)
    trainer, numbers = _train_two_tower(ctx, device)
    if len(trainer.history) >= 2 and not trainer.history[-1].loss < trainer.history[0].loss:
        raise RuntimeError(f"training loss did not fall: {numbers['epoch_losses']}")
    ctx.trainer, ctx.model, ctx.model_device = trainer, trainer.model, str(device)
    return numbers


def check_two_tower_eval(ctx: Context) -> dict[str, Any]:
    """Full-ranking metrics of one model's vectors on the device and on the CPU."""
    from recsys.eval.harness import EvalConfig, EvalHarness

    if ctx.dataset is None:
        raise Unavailable("no ML-100K features (ml100k_features failed)")
    device = torch.device(ctx.config.device)
    numbers: dict[str, Any] = {}
    if ctx.trainer is None:
        # Device training failed: a CPU-trained model still tests device evaluation.
        ctx.trainer, train_numbers = _train_two_tower(ctx, torch.device("cpu"))
        ctx.model, ctx.model_device = ctx.trainer.model, "cpu"
        numbers["model_trained_on"] = "cpu (device training failed)"
        numbers["cpu_train_seconds"] = train_numbers["train_seconds"]
    else:
        numbers["model_trained_on"] = ctx.model_device
    queries, items = ctx.trainer.retrieval_vectors()
    ctx.vectors = (queries.detach().cpu(), items.detach().cpu())
    harness = EvalHarness.from_processed(
        ctx.dataset, EvalConfig(k=10, k_values=(5, 10), batch_size=1024)
    )

    def evaluate_on(dev: torch.device) -> tuple[Any, float]:
        q, v = ctx.vectors[0].to(dev), ctx.vectors[1].to(dev)  # type: ignore[index]
        synchronize(dev)
        start = time.perf_counter()
        result = harness.evaluate(lambda u: q[torch.from_numpy(u).to(dev)] @ v.T)
        synchronize(dev)
        return result, time.perf_counter() - start

    # float32 dot products as on the CPU (no TF32 rounding on Ampere and newer)
    torch.backends.cuda.matmul.allow_tf32 = False
    on_device, device_s = evaluate_on(device)
    on_cpu, cpu_s = evaluate_on(torch.device("cpu"))
    diffs = {k: abs(on_device.metrics[k] - on_cpu.metrics[k]) for k in on_cpu.metrics}
    same_lists = float((on_device.topk_items == on_cpu.topk_items).all(axis=1).mean())
    numbers.update(
        {
            "eval_device": str(device),
            "ndcg@10_device": round(on_device.metrics["ndcg@10"], 6),
            "ndcg@10_cpu": round(on_cpu.metrics["ndcg@10"], 6),
            "recall@10_device": round(on_device.metrics.get("recall@10", float("nan")), 6),
            "recall@10_cpu": round(on_cpu.metrics.get("recall@10", float("nan")), 6),
            "max_metric_abs_diff": float(max(diffs.values())),
            "users_with_identical_top10": same_lists,
            "eval_seconds_device": round(device_s, 3),
            "eval_seconds_cpu": round(cpu_s, 3),
        }
    )
    if max(diffs.values()) > METRIC_TOLERANCE:
        worst = max(diffs, key=lambda k: diffs[k])
        raise RuntimeError(
            f"device and CPU metrics disagree: {worst} {on_device.metrics[worst]:.6f} vs "
            f"{on_cpu.metrics[worst]:.6f}; numbers: {numbers}"
        )
    return numbers


def _ranker_examples(ctx: Context) -> None:
    """ML-100K rating examples: one id per categorical feature, two dense inputs."""
    ds, vocabs = ctx.dataset, ctx.dataset.vocabs
    # schema feature -> column of the joined frame
    user_cols = {
        "user_id": "user_id",
        "user_age": "age_bucket",
        "user_gender": "gender",
        "user_occupation": "occupation",
    }
    item_cols = {
        "item_id": "item_id",
        "item_year": "year_bucket",
        "item_popularity": "popularity_bucket",
    }
    names = [*user_cols, "hour", "weekday", *item_cols]

    def frame(part: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Held-out rows carry no request context: they take the user's state at the
        # end of training (last hour, weekday and recent items), as serving would.
        state = [c for c in ("recent_items", "hour", "weekday") if c not in part.columns]
        user_part = ["user_id", "age", "age_bucket", "gender", "occupation", *state]
        item_part = ["item_id", "year_bucket", "popularity_bucket"]
        rows = part.merge(ds.users[user_part], on="user_id", how="left")
        rows = rows.merge(ds.items[item_part], on="item_id", how="left")
        cols = [vocabs.encode(n, rows[c].to_numpy()) for n, c in user_cols.items()]
        cols += [vocabs.encode(n, rows[n].to_numpy()) for n in ("hour", "weekday")]
        cols += [vocabs.encode(n, rows[c].to_numpy()) for n, c in item_cols.items()]
        sparse = np.stack(cols, axis=1).astype(np.int64)
        history = rows["recent_items"].map(len).to_numpy(dtype=np.float32)
        dense = np.stack([rows["age"].to_numpy(dtype=np.float32) / 100.0, np.log1p(history)], 1)
        labels = (rows["rating"].to_numpy() >= 4).astype(np.float32)
        return dense.astype(np.float32), sparse, labels

    d_tr, s_tr, y_tr = frame(ds.train)
    d_te, s_te, y_te = frame(ds.test)
    ctx.ranker_names = names
    ctx.ranker_data = {
        "dense_train": d_tr,
        "sparse_train": s_tr,
        "labels_train": y_tr,
        "dense_test": d_te,
        "sparse_test": s_te,
        "labels_test": y_te,
        "sizes": np.array([vocabs.num_embeddings()[n] for n in names]),
    }


def _check_ranker(ctx: Context, sharding: str) -> dict[str, Any]:
    import torch.distributed as dist

    from recsys.models.dlrm import RankerConfig, build_ranker
    from recsys.training.ranker_trainer import ArrayBatches, RankerTrainerConfig, train_ranker

    if ctx.dataset is None:
        raise Unavailable("no ML-100K features (ml100k_features failed)")
    if not ctx.ranker_data:
        _ranker_examples(ctx)
    cfg, r = ctx.config, ctx.ranker_data
    names, sizes = ctx.ranker_names, [int(n) for n in r["sizes"]]
    model = build_ranker(
        RankerConfig(
            embedding_dim=16,
            dense_arch_layer_sizes=(64, 16),
            over_arch_layer_sizes=(64, 32, 1),
            seed=cfg.seed,
        ),
        names,
        sizes,
        num_dense=r["dense_train"].shape[1],
    )
    batch = 1024
    train = ArrayBatches(
        r["dense_train"],
        r["sparse_train"],
        r["labels_train"],
        names,
        batch,
        shuffle=True,
        num_embeddings_per_feature=sizes,
    )
    valid = ArrayBatches(r["dense_test"], r["sparse_test"], r["labels_test"], names, 8192)
    epochs = max(1, math.ceil(cfg.ranker_steps / len(train)))
    trainer_cfg = RankerTrainerConfig(
        epochs=epochs,
        batch_size=batch,
        lr_dense=3e-3,
        lr_sparse=0.05,
        max_steps=cfg.ranker_steps,
        device=cfg.device,
        sharding=sharding,  # type: ignore[arg-type]
        seed=cfg.seed,
        progress=False,
    )
    try:
        history = train_ranker(model, train, valid, trainer_cfg)
        synchronize(torch.device(cfg.device))
    finally:
        if sharding == "dmp" and dist.is_initialized():
            dist.destroy_process_group()
    last = history.epochs[-1]
    rate = float(r["labels_train"].mean())
    prior_logloss = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    numbers = {
        "device": cfg.device,
        "sharding": sharding,
        "steps": history.steps,
        "train_loss": round(last["train_loss"], 4),
        "test_logloss": round(last["valid_logloss"], 4),
        "test_auc": round(last["valid_auc"], 4),
        "prior_logloss": round(prior_logloss, 4),
        "samples_per_s_last_epoch": round(last["samples_per_s"]),
        "train_rows": len(r["labels_train"]),
    }
    if not math.isfinite(last["train_loss"]):
        raise RuntimeError(f"non-finite ranker loss: {numbers}")
    if sharding == "local":
        ctx.ranker = model
    return numbers


def check_ranker_local(ctx: Context) -> dict[str, Any]:
    """DLRM ranker training with unsharded TorchRec tables on the device."""
    return _check_ranker(ctx, "local")


def check_ranker_dmp(ctx: Context) -> dict[str, Any]:
    """DLRM ranker training with DistributedModelParallel tables on the device."""
    return _check_ranker(ctx, "dmp")


def _faiss_flat(items: np.ndarray) -> tuple[Any, float]:
    """An exact CPU FAISS index (``IndexFlatIP``) through the project's ItemIndex, and
    its build time."""
    from recsys.index.config import IndexConfig
    from recsys.index.faiss_index import ItemIndex

    start = time.perf_counter()
    index = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(items, np.arange(len(items)))
    return index, time.perf_counter() - start


def _compare_lists(
    torch_ids: np.ndarray, faiss_ids: np.ndarray, items: np.ndarray, queries: np.ndarray
) -> dict[str, Any]:
    """Agreement of two top-k id lists; differences must be float ties at the k-th place."""
    same_order = (torch_ids == faiss_ids).all(axis=1)
    unexplained = 0
    differing = np.flatnonzero(~same_order)
    for row in differing:
        a, b = set(torch_ids[row].tolist()), set(faiss_ids[row].tolist())
        if a == b:
            # same items, order differs: allowed only among equal scores
            s = items[torch_ids[row]].astype(np.float64) @ queries[row].astype(np.float64)
            if np.any(np.diff(s) > TIE_TOLERANCE * max(1.0, float(np.abs(s).max()))):
                unexplained += 1
            continue
        union = np.array(sorted(a | b))
        exact = items[union].astype(np.float64) @ queries[row].astype(np.float64)
        kth = np.sort(exact)[::-1][len(a) - 1]
        only = np.array(sorted(a ^ b))
        only_scores = items[only].astype(np.float64) @ queries[row].astype(np.float64)
        if np.any(np.abs(only_scores - kth) > TIE_TOLERANCE * max(1.0, abs(float(kth)))):
            unexplained += 1
    return {
        "rows": len(torch_ids),
        "rows_identical_order": int(same_order.sum()),
        "rows_same_set": int(
            sum(
                set(t.tolist()) == set(f.tolist())
                for t, f in zip(torch_ids, faiss_ids, strict=True)
            )
        ),
        "rows_unexplained_difference": unexplained,
    }


def _device_topk(
    items: torch.Tensor, queries: torch.Tensor, k: int
) -> tuple[np.ndarray, torch.Tensor]:
    from recsys.eval.ranking import topk_smallest_index_ties

    _, idx = topk_smallest_index_ties(queries @ items.T, k)
    return idx.cpu().numpy(), idx


def check_topk_ml100k(ctx: Context) -> dict[str, Any]:
    """Top-k of every user from the trained vectors: device torch vs CPU FAISS."""
    if ctx.vectors is None:
        raise Unavailable("no trained vectors (two_tower_eval_device_vs_cpu failed)")
    device = torch.device(ctx.config.device)
    queries, items = (v.numpy().astype(np.float32) for v in ctx.vectors)
    k = min(ctx.config.k, len(items))
    torch.backends.cuda.matmul.allow_tf32 = False
    ids, _ = _device_topk(
        torch.from_numpy(items).to(device), torch.from_numpy(queries).to(device), k
    )
    index, _ = _faiss_flat(items)
    start = time.perf_counter()
    result = index.search(queries, k)
    search_s = time.perf_counter() - start
    numbers: dict[str, Any] = {"users": len(queries), "items": len(items), "k": k}
    numbers.update(_compare_lists(ids, result.item_ids, items, queries))
    numbers["faiss_cpu_search_s"] = round(search_s, 4)
    if numbers["rows_unexplained_difference"]:
        raise RuntimeError(f"top-{k} lists differ beyond float ties: {numbers}")
    return numbers


def check_topk_synthetic(ctx: Context) -> dict[str, Any]:
    """Exact top-k over random unit vectors: identity and speed, device vs CPU FAISS."""
    cfg = ctx.config
    device = torch.device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    items = rng.standard_normal((cfg.synthetic_items, cfg.dim), dtype=np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    queries = rng.standard_normal((cfg.queries, cfg.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    torch.backends.cuda.matmul.allow_tf32 = False

    start = time.perf_counter()
    items_dev = torch.from_numpy(items).to(device)
    synchronize(device)
    upload_s = time.perf_counter() - start
    q_dev = torch.from_numpy(queries).to(device)
    ids, _ = _device_topk(items_dev, q_dev, cfg.k)  # warm-up (kernels, allocator)
    synchronize(device)

    def timed(fn: Callable[[], Any]) -> float:
        runs = []
        for _ in range(cfg.repeats):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            runs.append(time.perf_counter() - t0)
        return float(np.median(runs))

    project_s = timed(lambda: _device_topk(items_dev, q_dev, cfg.k)[1])
    plain_s = timed(lambda: torch.topk(q_dev @ items_dev.T, cfg.k, dim=1))
    index, build_s = _faiss_flat(items)
    result = index.search(queries, cfg.k)  # also the warm-up
    faiss_s = timed(lambda: index.search(queries, cfg.k))
    numbers: dict[str, Any] = {
        "items": cfg.synthetic_items,
        "dim": cfg.dim,
        "queries": cfg.queries,
        "k": cfg.k,
        "device": str(device),
        "device_topk_ms (project tie rule)": round(project_s * 1e3, 3),
        "device_topk_ms (plain torch.topk)": round(plain_s * 1e3, 3),
        "faiss_cpu_flat_ms": round(faiss_s * 1e3, 2),
        "faiss_cpu_threads": _faiss_threads(),
        "speedup_faiss_cpu_over_device": round(faiss_s / project_s, 1),
        "catalogue_upload_ms": round(upload_s * 1e3, 1),
        "faiss_build_s": round(build_s, 2),
    }
    numbers.update(_compare_lists(ids, result.item_ids, items, queries))
    if numbers["rows_unexplained_difference"]:
        raise RuntimeError(f"top-{cfg.k} lists differ beyond float ties: {numbers}")
    return numbers


def _faiss_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


def _ort_providers() -> list[str]:
    import onnxruntime as ort

    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    return [p for p in wanted if p in ort.get_available_providers()]


def _onnx_parity(
    twin: torch.nn.Module, model_file: Path, inputs: tuple[torch.Tensor, ...], ctx: Context
) -> dict[str, Any]:
    """onnxruntime on every usable provider vs the torch twin on the device."""
    import onnxruntime as ort

    device = torch.device(ctx.config.device)
    twin = copy.deepcopy(twin).to(device).eval()
    with torch.no_grad():
        expected = twin(*(t.to(device) for t in inputs))
    expected_t = expected if isinstance(expected, tuple) else (expected,)
    ref = [e.detach().cpu().numpy() for e in expected_t]
    names = list(twin.input_names)  # type: ignore[arg-type]
    feeds = {n: t.numpy() for n, t in zip(names, inputs, strict=True)}
    numbers: dict[str, Any] = {"torch_twin_device": str(device), "batch": int(inputs[0].shape[0])}
    for provider in _ort_providers():
        session = ort.InferenceSession(str(model_file), providers=[provider])
        used = session.get_providers()[0]
        got = session.run(None, feeds)
        diff = max(float(np.max(np.abs(g - e))) for g, e in zip(got, ref, strict=True))
        numbers[f"max_abs_diff[{used}]"] = diff
        if diff > 1e-4:
            raise RuntimeError(f"{used} differs from the torch twin by {diff:.3g}: {numbers}")
    return numbers


def check_onnx_user_tower(ctx: Context) -> dict[str, Any]:
    """User tower twin: ONNX export, onnxruntime vs torch on the device."""
    from recsys.export.onnx_export import export_two_tower
    from recsys.export.twins import UserTowerTwin

    if ctx.model is None:
        raise Unavailable("no trained two-tower model")
    model = ctx.model.cpu()  # the exporter traces on CPU example inputs
    with tempfile.TemporaryDirectory(prefix="gpu-check-onnx-") as tmp:
        start = time.perf_counter()
        bundle = export_two_tower(model, None, tmp)
        export_s = time.perf_counter() - start
        twin = UserTowerTwin(model)
        inputs = twin.example_inputs(256, seed=1)
        numbers: dict[str, Any] = {"export_s": round(export_s, 2)}
        numbers.update(_onnx_parity(twin, bundle.results["user_tower"].model_file, inputs, ctx))
        numbers["export_max_abs_diff_cpu"] = bundle.results["user_tower"].max_abs_diff
    return numbers


def check_onnx_ranker(ctx: Context) -> dict[str, Any]:
    """Ranker twin: ONNX export, onnxruntime vs torch on the device."""
    from recsys.export.onnx_export import export_ranker
    from recsys.export.twins import RankerTwin

    if ctx.ranker is None:
        raise Unavailable("no trained ranker (ranker_train_local failed)")
    ranker = ctx.ranker.cpu()
    with tempfile.TemporaryDirectory(prefix="gpu-check-onnx-") as tmp:
        start = time.perf_counter()
        bundle = export_ranker(ranker, ctx.ranker_names, tmp)
        export_s = time.perf_counter() - start
        twin = RankerTwin(ranker, ctx.ranker_names, 1)
        inputs = twin.example_inputs(256, seed=1)
        numbers: dict[str, Any] = {"export_s": round(export_s, 2)}
        numbers.update(_onnx_parity(twin, bundle.results["ranker"].model_file, inputs, ctx))
        numbers["export_max_abs_diff_cpu"] = bundle.results["ranker"].max_abs_diff
    return numbers


def check_faiss_gpu(ctx: Context) -> dict[str, Any]:
    """A FAISS GPU flat index against the CPU one, where FAISS can use a GPU."""
    from recsys.index.config import IndexConfig
    from recsys.index.device import gpu_available, gpu_unavailable_reason
    from recsys.index.faiss_index import ItemIndex

    if not gpu_available():
        raise Unavailable(gpu_unavailable_reason())
    rng = np.random.default_rng(ctx.config.seed)
    items = rng.standard_normal((100_000, 64), dtype=np.float32)
    queries = rng.standard_normal((256, 64), dtype=np.float32)
    ids = np.arange(len(items))
    gpu = ItemIndex(IndexConfig(kind="flat", device="gpu")).build(items, ids)
    cpu = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(items, ids)
    start = time.perf_counter()
    res_gpu = gpu.search(queries, 100)
    gpu_s = time.perf_counter() - start
    res_cpu = cpu.search(queries, 100)
    numbers: dict[str, Any] = {"gpu_search_ms": round(gpu_s * 1e3, 2)}
    numbers.update(_compare_lists(res_gpu.item_ids, res_cpu.item_ids, items, queries))
    return numbers


CHECKS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("environment", check_environment),
    ("ml100k_features", check_ml100k_features),
    ("two_tower_train", check_two_tower_train),
    ("two_tower_eval_device_vs_cpu", check_two_tower_eval),
    ("ranker_train_local", check_ranker_local),
    ("topk_vs_faiss_ml100k", check_topk_ml100k),
    ("topk_vs_faiss_synthetic", check_topk_synthetic),
    ("onnx_user_tower", check_onnx_user_tower),
    ("onnx_ranker", check_onnx_ranker),
    ("faiss_gpu", check_faiss_gpu),
    # last: a CUDA process group or a CPU-only FBGEMM kernel build is the likeliest to hang
    ("ranker_train_dmp", check_ranker_dmp),
]


class CheckTimeout(RuntimeError):
    """A check ran past its time limit."""


def _raise_timeout(signum: int, frame: Any) -> None:
    raise CheckTimeout("the check ran past its time limit")


def run_check(
    name: str,
    fn: Callable[[Context], dict[str, Any]],
    ctx: Context,
    time_limit_s: int = 0,
) -> CheckResult:
    """Runs one check; any exception becomes a ``failed`` or ``unavailable`` row.

    Args:
        name: the row's name.
        fn: the check; returns its numbers.
        ctx: shared state of the run.
        time_limit_s: raise :class:`CheckTimeout` inside the check after this many
            seconds (0: no limit). A SIGALRM: it interrupts Python code, not a
            blocked native call, and works in the main thread only.

    Returns:
        The row.

    Example:
        >>> ctx = Context(GpuCheckConfig(device="cpu"))
        >>> run_check("env", check_environment, ctx).status
        'ok'
    """
    start = time.perf_counter()
    use_alarm = time_limit_s > 0 and hasattr(signal, "SIGALRM")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.alarm(time_limit_s)
    try:
        numbers = fn(ctx)
        status, tb = "ok", ""
    except Unavailable as err:
        numbers, status, tb = {}, f"unavailable: {err}", ""
    except Exception as err:  # every failure is a finding; the run goes on
        numbers, status = {}, f"failed: {first_line(err)}"
        tb = "".join(traceback.format_exception(err)[-6:])
        if isinstance(err, ImportError):
            status = f"unavailable: {first_line(err)}"
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return CheckResult(name, status, numbers, round(time.perf_counter() - start, 2), tb)


def markdown(results: list[CheckResult], header: str) -> str:
    """The rows as a markdown table."""
    lines = [header, "", "| check | status | key numbers | seconds |", "|---|---|---|---:|"]
    for r in results:
        nums = "; ".join(f"{k}={v}" for k, v in r.numbers.items()).replace("|", "/")
        lines.append(f"| {r.name} | {r.status.replace('|', '/')} | {nums} | {r.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(
    results: list[CheckResult], config: GpuCheckConfig, out: Path, seconds: float
) -> None:
    """Writes the JSON report to ``out`` and the markdown table beside it (``.md``)."""
    header = (
        f"recsys GPU check: device={config.device} quick={config.quick} "
        f"host={platform.node()} cpus={os.cpu_count()} total {seconds:.0f} s"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": {k: str(v) for k, v in asdict(config).items()},
        "total_seconds": round(seconds, 1),
        "results": [asdict(r) for r in results],
    }
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(results, header), encoding="utf-8")


def run_all(
    config: GpuCheckConfig,
    only: list[str] | None = None,
    out: Path | None = None,
    time_limit_s: int = 0,
) -> list[CheckResult]:
    """Runs the checks (all, or those named in ``only``) in order, printing each row.

    Args:
        config: the settings.
        only: names of the checks to run (None: all).
        out: JSON report, rewritten after every check so that a run killed
            part-way still leaves the rows it finished.
        time_limit_s: per-check limit (see :func:`run_check`).

    Returns:
        One :class:`CheckResult` per check run.
    """
    unknown = sorted(set(only or []) - {name for name, _ in CHECKS})
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {[n for n, _ in CHECKS]}")
    ctx = Context(config)
    torch.manual_seed(config.seed)
    results: list[CheckResult] = []
    start = time.perf_counter()
    for name, fn in CHECKS:
        if only and name not in only:
            continue
        print(f"[gpu_check] {name} ...", flush=True)
        result = run_check(name, fn, ctx, time_limit_s)
        print(
            f"[gpu_check] {name}: {result.status} ({result.seconds:.1f} s) "
            f"{json.dumps(result.numbers, default=str)}",
            flush=True,
        )
        if result.traceback:
            print(result.traceback, flush=True)
        results.append(result)
        if out is not None:
            write_report(results, config, out, time.perf_counter() - start)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cuda", "cpu"), default=default_device)
    parser.add_argument("--quick", action="store_true", help="small settings (CPU smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (and .md beside)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these checks")
    parser.add_argument("--time-limit", type=int, default=150, help="seconds per check (0: none)")
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("RECSYS_DATA_DIR", REPO.parent / "shared" / "datasets"))
    config = GpuCheckConfig.make(args.device, args.quick, data_dir)
    start = time.perf_counter()
    results = run_all(config, args.only, args.out, args.time_limit)
    header = (
        f"recsys GPU check: device={config.device} quick={config.quick} "
        f"host={platform.node()} cpus={os.cpu_count()} total {time.perf_counter() - start:.0f} s"
    )
    print(markdown(results, header), flush=True)
    return 0 if all(not r.status.startswith("failed") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
