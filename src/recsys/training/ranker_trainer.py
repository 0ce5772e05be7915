"""Training loop for the DLRM ranker: fused sparse optimizer, sharding, validation.

The ranker trains the way TorchRec trains DLRM at scale, and the same code runs
in one process on a laptop and under ``torchrun`` on many GPUs:

1. the embedding tables get their optimizer *in backward*
   (:func:`torchrec.optim.apply_optimizer_in_backward`, row-wise Adagrad by
   default): FBGEMM's table-batched kernel updates only the rows a batch touched,
   inside the backward pass, without materializing a gradient for the table;
2. the model is wrapped in :class:`~torchrec.distributed.DistributedModelParallel`
   (``sharding="dmp"``), in the default process group or a one-process gloo
   group created on the fly: tables are sharded table-wise over the ranks, dense
   layers are data-parallel;
3. the dense layers get Adam or Adagrad; both optimizers step as one
   :class:`~torchrec.optim.keyed.CombinedOptimizer`.

``sharding="local"`` skips DistributedModelParallel (unsharded
``EmbeddingBagCollection``, the row-wise Adagrad of :mod:`torchrec.optim` run in
backward on dense table gradients); it is slower on large tables and is kept for
comparison and debugging.

On a CPU machine shared with other jobs, start Python with
``OMP_WAIT_POLICY=PASSIVE`` (or use one thread): OpenMP threads that spin while
waiting for each other made training steps about ten times slower on a busy
2-core machine.

Batches are :class:`torchrec.datasets.utils.Batch` (dense features, a
KeyedJaggedTensor of sparse features, labels); :class:`ArrayBatches` makes them
from in-memory arrays such as :func:`recsys.data.criteo.criteo_transform` output.

Example:
    >>> import numpy as np
    >>> from recsys.models.dlrm import RankerConfig, build_ranker
    >>> rng = np.random.default_rng(0)
    >>> dense = rng.random((64, 3), dtype=np.float32)
    >>> sparse = rng.integers(0, 10, (64, 2))
    >>> labels = (rng.random(64) < 0.3).astype(np.float32)
    >>> names = ["a", "b"]
    >>> model = build_ranker(RankerConfig(), names, [10, 10], num_dense=3)
    >>> train = ArrayBatches(dense, sparse, labels, names, batch_size=16, shuffle=True)
    >>> valid = ArrayBatches(dense, sparse, labels, names, batch_size=32)
    >>> history = train_ranker(model, train, valid, RankerTrainerConfig(progress=False))
    >>> sorted(history.epochs[0])[:3]
    ['epoch', 'samples_per_s', 'seconds']
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DataParallelWrapper
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingEnv, ShardingType
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm.auto import tqdm

from recsys.eval.classification import auc, logloss, normalized_entropy
from recsys.models.dlrm import Ranker, build_ranker, ids_to_kjt

SparseOptimizer = Literal["rowwise_adagrad", "adagrad", "sgd"]
DenseOptimizer = Literal["adam", "adagrad", "sgd"]
Sharding = Literal["dmp", "local"]

_SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    # Each maps to an FBGEMM fused kernel under DMP (EXACT_ROWWISE_ADAGRAD, ...).
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}
_ADAGRAD_EPS = 1e-8


@dataclass
class RankerTrainerConfig:
    """How :func:`train_ranker` trains.

    Attributes:
        epochs: passes over the training batches.
        batch_size: examples per batch and rank (informs the sharding planner;
            the loaders fix the actual batch size).
        lr_dense: learning rate of the dense (MLP) optimizer.
        lr_sparse: learning rate of the fused embedding optimizer.
        dense_optimizer: ``adam``, ``adagrad`` or ``sgd``.
        sparse_optimizer: ``rowwise_adagrad`` (one accumulator per row, TorchRec's
            default for DLRM), ``adagrad`` or ``sgd``.
        weight_decay_dense: L2 penalty of the dense optimizer.
        eval_every: also validate every this many steps (None: once per epoch).
        seed: seeds torch's RNG before training (same seed -> same metrics on CPU).
        max_steps: stop after this many optimizer steps (None: no limit).
        device: ``cpu`` or ``cuda`` (``cuda:<local rank>`` under torchrun).
        sharding: ``dmp`` (DistributedModelParallel, fused FBGEMM kernels) or
            ``local`` (unsharded; for comparison and debugging).
        sharding_types: sharding types the planner may use for the tables (CPU
            supports ``table_wise`` and ``column_wise`` with the fused kernel).
        early_stopping_patience: stop when the validation log loss has not
            improved for this many epochs (None: never stop early).
        restore_best: with early stopping, put back the parameters of the best
            epoch before returning.
        progress: show tqdm progress bars (rank 0 only).
    """

    epochs: int = 1
    batch_size: int = 2048
    lr_dense: float = 1e-3
    lr_sparse: float = 0.05
    dense_optimizer: DenseOptimizer = "adam"
    sparse_optimizer: SparseOptimizer = "rowwise_adagrad"
    weight_decay_dense: float = 0.0
    eval_every: int | None = None
    seed: int = 0
    max_steps: int | None = None
    device: str = "cpu"
    sharding: Sharding = "dmp"
    sharding_types: tuple[str, ...] = (ShardingType.TABLE_WISE.value,)
    early_stopping_patience: int | None = None
    restore_best: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"need epochs >= 1 and batch_size >= 1, got {self.epochs}, {self.batch_size}"
            )
        if self.sparse_optimizer not in _SPARSE_OPTIMIZERS:
            raise ValueError(
                f"sparse_optimizer must be one of {sorted(_SPARSE_OPTIMIZERS)}, "
                f"got {self.sparse_optimizer!r}"
            )
        if self.dense_optimizer not in ("adam", "adagrad", "sgd"):
            raise ValueError(
                f"dense_optimizer must be adam, adagrad or sgd, got {self.dense_optimizer!r}"
            )
        if self.sharding not in ("dmp", "local"):
            raise ValueError(f"sharding must be 'dmp' or 'local', got {self.sharding!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 or None, got {self.eval_every}")


# --------------------------------------------------------------------------- data


class ArrayBatches:
    """Re-iterable batches of :class:`~torchrec.datasets.utils.Batch` from arrays.

    Under several ranks each rank sees its own part of every (global) batch; all
    ranks get the same number of batches (sizes differ by at most one row), which
    the collectives inside DistributedModelParallel need.

    Args:
        dense: float ``[N, num_dense]``.
        sparse: int ``[N, F]`` ids, column ``j`` for ``feature_names[j]``.
        labels: ``[N]`` 0/1.
        feature_names: the ``F`` sparse feature names.
        batch_size: rows per batch and rank.
        shuffle: new row order each pass (seeded by ``seed`` and the pass number).
        seed: shuffling seed.
        drop_last: drop a last (global) batch smaller than the others.
        rank: this process's rank (default: the process group's, else 0).
        world_size: number of ranks (default: the process group's, else 1).
        num_embeddings_per_feature: if given, ids are checked to be in
            ``[0, rows)`` per feature (a clear error instead of an FBGEMM crash).

    Example:
        >>> batches = ArrayBatches(np.zeros((5, 2)), np.zeros((5, 1), dtype=int),
        ...                        np.zeros(5), ["f"], batch_size=2)
        >>> [b.labels.numel() for b in batches]
        [2, 2, 1]
    """

    def __init__(
        self,
        dense: np.ndarray,
        sparse: np.ndarray,
        labels: np.ndarray,
        feature_names: Sequence[str],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        num_embeddings_per_feature: Sequence[int] | None = None,
    ) -> None:
        n = len(labels)
        if dense.ndim != 2 or sparse.ndim != 2 or dense.shape[0] != n or sparse.shape[0] != n:
            raise ValueError(
                f"dense {dense.shape}, sparse {sparse.shape} and labels ({n},) disagree on rows"
            )
        if sparse.shape[1] != len(feature_names):
            raise ValueError(f"sparse has {sparse.shape[1]} columns, {len(feature_names)} names")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if sparse.size and sparse.min() < 0:
            raise ValueError(f"negative sparse ids (min {sparse.min()})")
        if num_embeddings_per_feature is not None:
            limits = np.asarray(num_embeddings_per_feature)
            over = sparse.max(axis=0, initial=0) >= limits
            if over.any():
                bad = {feature_names[int(j)]: int(sparse[:, j].max()) for j in np.flatnonzero(over)}
                raise ValueError(f"ids beyond their table (max id per feature): {bad}")
        if rank is None or world_size is None:
            initialized = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if initialized else 0
            world_size = dist.get_world_size() if initialized else 1
        if n < world_size:
            raise ValueError(f"{n} rows cannot feed {world_size} ranks")
        self.dense = torch.as_tensor(np.ascontiguousarray(dense, dtype=np.float32))
        self.sparse = torch.as_tensor(np.ascontiguousarray(sparse, dtype=np.int64))
        self.labels = torch.as_tensor(np.ascontiguousarray(labels, dtype=np.float32))
        self.feature_names = tuple(feature_names)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self._passes = 0

    def _global_batches(self) -> list[torch.Tensor]:
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._passes)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        step = self.batch_size * self.world_size
        batches = list(torch.split(order, step))
        if batches and self.drop_last and len(batches[-1]) < step:
            batches.pop()
        if batches and len(batches[-1]) < self.world_size:
            batches.pop()  # too few rows to give every rank one
        return batches

    def __len__(self) -> int:
        return len(self._global_batches())

    def __iter__(self) -> Iterator[Batch]:
        batches = self._global_batches()
        self._passes += 1
        for rows in batches:
            mine = torch.tensor_split(rows, self.world_size)[self.rank]
            yield Batch(
                dense_features=self.dense[mine],
                sparse_features=ids_to_kjt(self.sparse[mine], self.feature_names),
                labels=self.labels[mine],
            )


# ------------------------------------------------------------------ distribution


def init_process_group(device: str = "cpu") -> tuple[int, int]:
    """Makes sure a default process group exists; returns ``(rank, world_size)``.

    Under ``torchrun`` (``WORLD_SIZE`` etc. set) joins the launched group; otherwise
    creates a one-process group on an in-memory store (no port, no network).

    Args:
        device: ``cpu`` picks gloo, ``cuda`` picks nccl.

    Returns:
        This process's rank and the group's size.

    Example:
        >>> init_process_group()
        (0, 1)
    """
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    return dist.get_rank(), dist.get_world_size()


@dataclass
class PreparedRanker:
    """A ranker ready to train.

    Attributes:
        module: what to call (``module(dense, kjt)`` -> logits ``[B]``): the
            DistributedModelParallel wrapper, or the ranker itself (``local``).
        optimizer: steps the dense parameters (the sparse ones step in backward);
            its ``zero_grad``/``step`` cover both.
        rank: this process's rank.
        world_size: number of ranks.
        plan: the sharding plan as text (empty for ``local``).
    """

    module: nn.Module
    optimizer: KeyedOptimizer
    rank: int = 0
    world_size: int = 1
    plan: str = ""


def _dense_optimizer(
    params: dict[str, nn.Parameter], config: RankerTrainerConfig
) -> KeyedOptimizerWrapper:
    def make(p: Any) -> torch.optim.Optimizer:
        if config.dense_optimizer == "adam":
            return torch.optim.Adam(p, lr=config.lr_dense, weight_decay=config.weight_decay_dense)
        if config.dense_optimizer == "adagrad":
            return torch.optim.Adagrad(
                p, lr=config.lr_dense, eps=_ADAGRAD_EPS, weight_decay=config.weight_decay_dense
            )
        return torch.optim.SGD(p, lr=config.lr_dense, weight_decay=config.weight_decay_dense)

    return KeyedOptimizerWrapper(params, make)


def _sparse_kwargs(config: RankerTrainerConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"lr": config.lr_sparse}
    if config.sparse_optimizer != "sgd":
        kwargs["eps"] = _ADAGRAD_EPS
    return kwargs


def _copy_tables_into(module: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Writes full (unsharded) tables into a sharded module's local shards, in place."""
    state = module.state_dict()
    for key, table in full.items():
        target = state[key]
        shards = getattr(target, "local_shards", None)
        if shards is None:
            target.copy_(table)
            continue
        for shard in shards():
            (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
            shard.tensor.copy_(table[r0 : r0 + nr, c0 : c0 + nc])


class SingleRankDense(DataParallelWrapper):
    """Leaves the dense layers unwrapped when there is one rank.

    DistributedModelParallel's default wraps them in DistributedDataParallel even
    in a one-process group, which then all-reduces (copies) every dense gradient
    each step for nothing.
    """

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        dmp._dmp_wrapped_module.to(device)


def prepare_ranker(model: Ranker, config: RankerTrainerConfig) -> PreparedRanker:
    """Attaches the optimizers and (for ``dmp``) shards the tables.

    With ``sharding="dmp"`` the embedding tables of ``model`` are replaced in
    place by sharded ones that start from the model's own (seeded) weights; every
    rank must build the same model (same config and seed).

    Args:
        model: from :func:`recsys.models.dlrm.build_ranker` (not on ``meta``).
        config: optimizers, learning rates, device and sharding.

    Returns:
        A :class:`PreparedRanker`.
    """
    device = torch.device(config.device)
    tables = model.dlrm.sparse_arch.embedding_bag_collection
    if type(tables).__name__ != "EmbeddingBagCollection" or any(
        hasattr(p, "_optimizer_classes") for p in tables.parameters()
    ):
        raise ValueError(
            "this ranker was already prepared for training (its tables are sharded or "
            "have an in-backward optimizer); build a new one with build_ranker"
        )
    sparse_params = model.sparse_parameters()
    apply_optimizer_in_backward(
        _SPARSE_OPTIMIZERS[config.sparse_optimizer], sparse_params, _sparse_kwargs(config)
    )
    if config.sharding == "local":
        model.to(device)
        dense = dict(in_backward_optimizer_filter(model.named_parameters()))
        return PreparedRanker(module=model, optimizer=_dense_optimizer(dense, config))

    rank, world_size = init_process_group(config.device)
    full_tables = {
        key: value.detach().clone()
        for key, value in model.state_dict().items()
        if ".sparse_arch." in f".{key}"
    }
    constraints = {
        table.name: ParameterConstraints(
            sharding_types=list(config.sharding_types),
            compute_kernels=[EmbeddingComputeKernel.FUSED.value],
            pooling_factors=[1.0],
        )
        for table in tables.embedding_bag_configs()
    }
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=world_size, local_world_size=local_world),
        kernel_config=KernelConfig(compute_device=device.type),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=config.batch_size,
        constraints=constraints,
        storage_reservation=FixedPercentageStorageReservation(0.05),
    )
    sharders = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(
        model,
        device=device,
        plan=plan,
        sharders=sharders,
        data_parallel_wrapper=SingleRankDense() if world_size == 1 else None,
    )
    # DMP re-initializes sharded tables with its own RNG draws; restore the seeded ones.
    with torch.no_grad():
        _copy_tables_into(dmp, full_tables)
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    optimizer = CombinedOptimizer([dmp.fused_optimizer, _dense_optimizer(dense, config)])
    return PreparedRanker(
        module=dmp, optimizer=optimizer, rank=rank, world_size=world_size, plan=str(plan)
    )


def unshard_ranker(trained: nn.Module, reference: Ranker) -> Ranker:
    """A plain, unsharded copy of a trained ranker (for export and serving).

    Args:
        trained: the module that was trained (DistributedModelParallel or Ranker).
        reference: the :class:`Ranker` it was built as (supplies the shapes).

    Returns:
        A new :class:`Ranker` on CPU with the trained weights; under several
        ranks every rank gets the full tables (all-gathered; fits in host memory).

    Example:
        >>> # after training: local = unshard_ranker(history.module, model)
    """
    local = build_ranker(
        reference.config,
        reference.feature_names,
        reference.num_embeddings_per_feature,
        reference.num_dense,
    )
    target = local.state_dict()
    multi = dist.is_initialized() and dist.get_world_size() > 1
    for key, value in trained.state_dict().items():
        name = key.removeprefix("module.")
        if name not in target:
            continue
        shards = getattr(value, "local_shards", None)
        if shards is None:
            target[name].copy_(value.detach().cpu())
            continue
        pieces = [(tuple(s.metadata.shard_offsets), s.tensor.detach().cpu()) for s in shards()]
        if multi:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, pieces)
            pieces = [p for rank_pieces in gathered for p in rank_pieces]
        for (r0, c0), tensor in pieces:
            target[name][r0 : r0 + tensor.shape[0], c0 : c0 + tensor.shape[1]].copy_(tensor)
    return local


# ----------------------------------------------------------------------- training


@dataclass
class RankerHistory:
    """What :func:`train_ranker` measured.

    Attributes:
        epochs: one dict per epoch: ``epoch``, ``steps``, ``train_loss``,
            ``valid_logloss``, ``valid_auc``, ``valid_ne`` (normalized entropy
            against the training label rate), ``seconds``, ``samples_per_s``.
        evals: the same validation metrics every ``eval_every`` steps (``step`` key).
        best_epoch: epoch with the lowest validation log loss.
        stopped_early: early stopping ended training.
        steps: optimizer steps taken.
        train_positive_rate: label mean of the training batches (the prior).
        module: the trained module (call it as ``module(dense, kjt)``).
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    steps: int = 0
    train_positive_rate: float = float("nan")
    module: nn.Module | None = None

    @property
    def best(self) -> dict[str, float]:
        """The metrics of :attr:`best_epoch`."""
        return self.epochs[self.best_epoch]


def _module_device(module: nn.Module) -> torch.device:
    """Where a (possibly DMP-wrapped) ranker computes: its own ``device`` or its first
    parameter's."""
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


@torch.no_grad()
def predict(module: nn.Module, batches: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray]:
    """Scores every batch; under several ranks gathers all ranks' rows.

    Args:
        module: a trained ranker (wrapped or not).
        batches: validation or test batches.

    Returns:
        ``(probabilities, labels)`` as float64 numpy arrays, rank 0's rows first.
    """
    was_training = module.training
    module.eval()
    device = _module_device(module)
    probs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for batch in batches:
        batch = batch.to(device)
        probs.append(torch.sigmoid(module(batch.dense_features, batch.sparse_features).float()))
        labels.append(batch.labels)
    module.train(was_training)
    p = torch.cat(probs).cpu().double() if probs else torch.zeros(0, dtype=torch.float64)
    y = torch.cat(labels).cpu().double() if labels else torch.zeros(0, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (p, y))
        p = torch.cat([g[0] for g in gathered])
        y = torch.cat([g[1] for g in gathered])
    return p.numpy(), y.numpy()


def evaluate(
    module: nn.Module, batches: Iterable[Batch], prior: float | None = None
) -> dict[str, float]:
    """Validation log loss, AUC (NaN with one class) and normalized entropy.

    Args:
        module: the ranker.
        batches: what to score.
        prior: label rate for the normalized entropy (default: these labels' mean).

    Returns:
        ``{"logloss", "auc", "ne", "rows"}``.
    """
    probs, labels = predict(module, batches)
    both_classes = 0 < labels.sum() < len(labels)
    return {
        "logloss": logloss(labels, probs),
        "auc": auc(labels, probs) if both_classes else float("nan"),
        "ne": normalized_entropy(labels, probs, prior=prior)
        if prior is not None or both_classes
        else float("nan"),
        "rows": float(len(labels)),
    }


def _snapshot(module: nn.Module) -> dict[str, list[torch.Tensor]]:
    out: dict[str, list[torch.Tensor]] = {}
    for key, value in module.state_dict().items():
        shards = getattr(value, "local_shards", None)
        tensors = [s.tensor for s in shards()] if shards is not None else [value]
        out[key] = [t.detach().clone() for t in tensors]
    return out


@torch.no_grad()
def _restore(module: nn.Module, snapshot: dict[str, list[torch.Tensor]]) -> None:
    for key, value in module.state_dict().items():
        shards = getattr(value, "local_shards", None)
        tensors = [s.tensor for s in shards()] if shards is not None else [value]
        for target, saved in zip(tensors, snapshot[key], strict=True):
            target.copy_(saved)


def train_ranker(
    model: Ranker,
    train_loader: Iterable[Batch],
    valid_loader: Iterable[Batch],
    config: RankerTrainerConfig,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> RankerHistory:
    """Trains a ranker with binary cross-entropy and validates after each epoch.

    Args:
        model: from :func:`recsys.models.dlrm.build_ranker`; trained in place.
        train_loader: re-iterable training batches (e.g. :class:`ArrayBatches`
            with ``shuffle=True``), each rank its own part.
        valid_loader: re-iterable validation batches.
        config: optimizers, epochs, early stopping, sharding.
        on_epoch_end: called with ``(epoch, metrics)`` after each epoch (e.g. to
            log to an experiment tracker).

    Returns:
        A :class:`RankerHistory` (per-epoch metrics, the trained ``module``).

    Raises:
        ValueError: the training loader yields no batches.
    """
    torch.manual_seed(config.seed)
    prepared = prepare_ranker(model, config)
    module, optimizer = prepared.module, prepared.optimizer
    show = config.progress and prepared.rank == 0
    device = torch.device(config.device)
    loss_fn = nn.BCEWithLogitsLoss()
    history = RankerHistory(module=module)
    best_loss, since_best = math.inf, 0
    best_state: dict[str, list[torch.Tensor]] | None = None
    positives = rows = 0.0

    for epoch in range(config.epochs):
        module.train()
        start, epoch_rows, loss_sum, epoch_steps = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}", disable=not show, leave=False)
        for batch in bar:
            batch = batch.to(device)
            optimizer.zero_grad()
            logits = module(batch.dense_features, batch.sparse_features)
            loss = loss_fn(logits, batch.labels)
            loss.backward()
            optimizer.step()
            n = batch.labels.numel()
            history.steps += 1
            epoch_steps += 1
            epoch_rows += n
            loss_sum += float(loss.detach()) * n
            if epoch == 0:
                positives += float(batch.labels.sum())
                rows += n
            if config.eval_every and history.steps % config.eval_every == 0:
                step_metrics = evaluate(module, valid_loader, prior=positives / rows)
                history.evals.append({"step": float(history.steps), **step_metrics})
                module.train()
            if show:
                bar.set_postfix(loss=f"{loss_sum / epoch_rows:.4f}")
            if config.max_steps is not None and history.steps >= config.max_steps:
                break
        if epoch_steps == 0:
            raise ValueError("the training loader yielded no batches")
        seconds = time.perf_counter() - start
        history.train_positive_rate = positives / rows
        valid = evaluate(module, valid_loader, prior=history.train_positive_rate)
        metrics = {
            "epoch": float(epoch),
            "steps": float(history.steps),
            "train_loss": loss_sum / epoch_rows,
            "valid_logloss": valid["logloss"],
            "valid_auc": valid["auc"],
            "valid_ne": valid["ne"],
            "seconds": seconds,
            "samples_per_s": epoch_rows * prepared.world_size / seconds,
        }
        history.epochs.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        if valid["logloss"] < best_loss:
            best_loss, since_best, history.best_epoch = valid["logloss"], 0, epoch
            if config.early_stopping_patience is not None and config.restore_best:
                best_state = _snapshot(module)
        else:
            since_best += 1
        if config.max_steps is not None and history.steps >= config.max_steps:
            break
        if (
            config.early_stopping_patience is not None
            and since_best >= config.early_stopping_patience
        ):
            history.stopped_early = True
            break
    if best_state is not None and history.best_epoch != len(history.epochs) - 1:
        _restore(module, best_state)
    return history
