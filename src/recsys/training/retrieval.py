"""Training loop of the two-tower retrieval model.

* Batches pair a user-side row (user features, context, a bag of the user's
  other training items) with the positive item's features, as one
  KeyedJaggedTensor; the loss is the in-batch sampled softmax with logQ
  correction, optionally mixed with uniformly sampled negatives, or BPR.
* Embedding tables train with a TorchRec fused optimizer applied in the
  backward pass (``apply_optimizer_in_backward``: row-wise Adagrad by default);
  dense layers with Adam.
* Validation NDCG@10 decides early stopping; checkpoints hold model, optimizer
  and trainer state, so a run resumes where it stopped.

Example:
    >>> data = RetrievalData.build(dataset, schema, model.feature_names)  # doctest: +SKIP
    >>> trainer = RetrievalTrainer(model, data, RetrievalTrainerConfig(epochs=5))  # doctest: +SKIP
    >>> history = trainer.fit(valid_harness)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torchrec import KeyedJaggedTensor
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from tqdm.auto import tqdm

from recsys.data.frame import ITEM, USER
from recsys.eval.harness import EvalHarness, EvalResult
from recsys.features.batching import EncodedFeatures, JaggedArray, encode_features, kjt_from_parts
from recsys.features.build import join_features
from recsys.features.schema import FeatureSchema, Kind, Role
from recsys.features.store import ProcessedDataset
from recsys.models.losses import bpr_loss, sampled_softmax_loss
from recsys.models.retrieval import RetrievalModel


@dataclass
class RetrievalTrainerConfig:
    """Optimization of the two-tower model (config group ``trainer``).

    Attributes:
        epochs: maximum passes over the training interactions.
        batch_size: positives per batch (also the in-batch negatives per row).
        loss: ``softmax`` (sampled softmax) or ``bpr``.
        num_negatives: extra uniformly sampled negatives per batch, shared by
            all rows (mixed negative sampling); 0 = in-batch only.
        logq_correction: subtract each candidate's log sampling frequency.
        lr_dense: Adam learning rate of the MLPs.
        lr_sparse: learning rate of the fused embedding optimizer.
        sparse_optimizer: ``rowwise_adagrad`` | ``adagrad`` | ``adam``.
        weight_decay: Adam weight decay of the MLPs.
        history: how the user's item bag is built for a training example:
            ``others`` (a random subset of the user's *other* training items,
            matching a random split) or ``prefix`` (the items before it in time,
            matching a temporal split).
        patience: epochs without a better validation NDCG@10 before stopping.
        eval_every: validate every this many epochs.
        monitor: validation metric that drives early stopping.
        seed: seed of shuffling and sampling.
        checkpoint_dir: where checkpoints go (None = no checkpoints).
        resume: continue from ``checkpoint_dir/last.pt`` if it exists.
        num_threads: torch intra-op threads (0 = torch's default).
        progress: show progress bars.
        device: where the model trains: ``cpu``, ``cuda``, ``cuda:<n>`` or ``auto``
            (``cuda`` when torch sees a GPU). Embeddings and evaluation results
            come back on the CPU either way.
    """

    epochs: int = 40
    batch_size: int = 1024
    loss: Literal["softmax", "bpr"] = "softmax"
    num_negatives: int = 0
    logq_correction: bool = True
    lr_dense: float = 3e-3
    lr_sparse: float = 0.05
    sparse_optimizer: Literal["rowwise_adagrad", "adagrad", "adam"] = "rowwise_adagrad"
    weight_decay: float = 0.0
    history: Literal["others", "prefix"] = "others"
    patience: int = 5
    eval_every: int = 1
    monitor: str = "ndcg@10"
    seed: int = 0
    checkpoint_dir: str | None = None
    resume: bool = False
    num_threads: int = 0
    progress: bool = True
    device: str = "auto"


@dataclass
class RetrievalData:
    """Encoded tables of one processed dataset, in the model's KJT key order.

    Attributes:
        users: user-side features of every user (end-of-training state).
        items: item-side features of every item (the catalogue).
        example_users: user-side features of each training example (context
            at the time of the interaction, the ``prefix`` history).
        example_user: user index of each training example.
        example_item: item index of each training example.
        user_items: each user's training items (``history_feature`` ids), the
            pool the ``others`` history is drawn from.
        history_feature: the user-side bag-of-items feature, or None.
        history_len: its ``max_len``.
        item_counts: training interactions per item index.
        item_history_ids: each item's id in the history feature's vocabulary
            (to leave the target out of its own bag).
        key_order: KJT keys (the model's ``feature_names``).
        user_keys: keys of the user tower; the rest belong to the item tower.
    """

    users: EncodedFeatures
    items: EncodedFeatures
    example_users: EncodedFeatures
    example_user: np.ndarray
    example_item: np.ndarray
    user_items: JaggedArray
    history_feature: str | None
    history_len: int
    item_counts: np.ndarray
    item_history_ids: np.ndarray
    key_order: list[str]
    user_keys: list[str]

    @classmethod
    def build(
        cls, dataset: ProcessedDataset, schema: FeatureSchema, key_order: list[str]
    ) -> RetrievalData:
        """Encodes ``dataset`` for a model whose KJT keys are ``key_order``."""
        user_specs = [f for f in schema.by_role(Role.USER, Role.CONTEXT) if f.name in key_order]
        item_specs = [f for f in schema.by_role(Role.ITEM) if f.name in key_order]
        user_keys = [f.name for f in user_specs if f.is_sparse]
        item_keys = [f.name for f in item_specs if f.is_sparse]
        vocabs = dataset.vocabs
        if vocabs is None:
            raise ValueError("the processed dataset has no vocabularies (see build_features)")
        users = encode_features(
            dataset.users, user_specs, vocabs, empty_features=item_keys, key_order=key_order
        )
        items = encode_features(
            dataset.items, item_specs, vocabs, empty_features=user_keys, key_order=key_order
        )
        # Training examples carry their own context and prefix history; static
        # user attributes come from the user table.
        rows = join_features(dataset.train, dataset.users, None)
        example_users = encode_features(
            rows, user_specs, vocabs, empty_features=item_keys, key_order=key_order
        )
        user_index = pd.Index(dataset.users[USER].to_numpy())
        item_index = pd.Index(dataset.items[ITEM].to_numpy())
        ex_user = user_index.get_indexer(dataset.train[USER].to_numpy())
        ex_item = item_index.get_indexer(dataset.train[ITEM].to_numpy())
        if (ex_user < 0).any() or (ex_item < 0).any():
            raise ValueError("training examples reference users or items outside the tables")

        history = next(
            (f for f in user_specs if f.kind in (Kind.SEQUENCE, Kind.MULTI_HOT) and f.vocab_from),
            None,
        )
        if history is not None:
            ids = vocabs.encode(history.name, dataset.train[ITEM].to_numpy())
            item_ids = vocabs.encode(history.name, dataset.items[ITEM].to_numpy())
        else:
            ids = np.zeros(len(ex_user), dtype=np.int64)
            item_ids = np.zeros(len(item_index), dtype=np.int64)
        order = np.argsort(ex_user, kind="stable")
        lengths = np.bincount(ex_user, minlength=len(user_index))
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        counts = np.bincount(ex_item, minlength=len(item_index)).astype(np.float64)
        return cls(
            users=users,
            items=items,
            example_users=example_users,
            example_user=ex_user.astype(np.int64),
            example_item=ex_item.astype(np.int64),
            user_items=JaggedArray(ids[order].astype(np.int64), offsets),
            history_feature=history.name if history is not None else None,
            history_len=history.max_len if history is not None else 0,
            item_counts=counts,
            item_history_ids=np.asarray(item_ids, dtype=np.int64),
            key_order=list(key_order),
            user_keys=user_keys,
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    def sample_others(
        self, users: np.ndarray, target_ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row, up to ``history_len`` random training items of the user other
        than the row's target (encoded ids), as ``(values, lengths)``."""
        values, lengths = self.user_items.rows(users)
        row = np.repeat(np.arange(len(users)), lengths)
        keep = values != target_ids[row]
        # Sort key: row first, then the row's kept entries in random order, then
        # its left-out target; the first ``take`` entries of each row win.
        key = 2.0 * row + (~keep) + rng.random(len(values))
        order = np.argsort(key, kind="stable")
        take = np.minimum(np.bincount(row[keep], minlength=len(users)), self.history_len)
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        rank_in_row = np.arange(len(values)) - np.repeat(starts, lengths)
        chosen = np.sort(order[rank_in_row < np.repeat(take, lengths)])  # stored order
        return values[chosen], take.astype(np.int64)

    def training_batch(
        self, example_rows: np.ndarray, history: str, rng: np.random.Generator
    ) -> tuple[KeyedJaggedTensor, np.ndarray]:
        """The KJT of training examples ``example_rows`` and their item indices."""
        users = self.example_user[example_rows]
        item_rows = self.example_item[example_rows]
        parts = []
        for key in self.key_order:
            if key == self.history_feature and history == "others":
                targets = self.item_history_ids[item_rows]
                parts.append(self.sample_others(users, targets, rng))
            elif key in self.user_keys:
                parts.append(self.example_users.sparse[key].rows(example_rows))
            else:
                parts.append(self.items.sparse[key].rows(item_rows))
        return kjt_from_parts(self.key_order, parts, len(example_rows)), item_rows


_SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
}


@dataclass
class EpochLog:
    """What one epoch did."""

    epoch: int
    loss: float
    seconds: float
    valid: dict[str, float] = field(default_factory=dict)


class RetrievalTrainer:
    """Trains a retrieval model (a :class:`~recsys.models.retrieval.RetrievalModel`).

    Args:
        model: the two-tower model.
        data: encoded training data.
        config: optimization settings.
        log_fn: called with ``(metrics, step)`` after each epoch (e.g.
            :meth:`recsys.training.tracking.Tracker.log`).
    """

    def __init__(
        self,
        model: RetrievalModel,
        data: RetrievalData,
        config: RetrievalTrainerConfig,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
    ) -> None:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device)
        # Before the optimizers exist: they hold (and fuse into) these parameters.
        self.model = model.to(self.device)
        self.data = data
        self.config = config
        self.log_fn = log_fn
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0
        self.history: list[EpochLog] = []
        self.best_metric = -math.inf
        self.best_epoch = 0
        self._best_state: dict[str, torch.Tensor] | None = None

        opt_cls = _SPARSE_OPTIMIZERS.get(config.sparse_optimizer)
        if opt_cls is None:
            raise ValueError(f"unknown sparse_optimizer {config.sparse_optimizer!r}")
        self.sparse_params = list(model.sparse_arch.parameters())
        # Fused: each table is updated inside backward, as TorchRec's sharded
        # tables are (no dense gradient of the whole table is materialized).
        apply_optimizer_in_backward(opt_cls, self.sparse_params, {"lr": config.lr_sparse})
        dense = [p for n, p in model.named_parameters() if not n.startswith("sparse_arch.")]
        self.dense_optimizer = torch.optim.Adam(
            dense, lr=config.lr_dense, weight_decay=config.weight_decay
        )
        # Expected count of each item among one batch's candidates: B in-batch
        # draws from the positives' distribution plus M uniform negatives.
        share = data.item_counts / max(data.item_counts.sum(), 1.0)
        expected = config.batch_size * share + config.num_negatives / max(data.n_items, 1)
        self.log_q = torch.from_numpy(np.log(np.maximum(expected, 1e-12))).float().to(self.device)

    # -- training ----------------------------------------------------------------

    def _loss(self, kjt: KeyedJaggedTensor, item_rows: np.ndarray) -> torch.Tensor:
        cfg = self.config
        user, item, bias = self.model(kjt.to(self.device))
        ids = torch.from_numpy(item_rows).to(self.device)
        inv_t = self.model.inv_temperature
        if cfg.loss == "bpr":
            neg_rows = self.rng.integers(0, self.data.n_items, len(item_rows))
            neg, neg_b = self.model.encode_items_with_bias(self._items(neg_rows))
            return bpr_loss(user, item, neg, inv_t, bias, neg_b)
        neg_emb = neg_ids = neg_log_q = neg_b = None
        if cfg.num_negatives:
            neg_rows = self.rng.integers(0, self.data.n_items, cfg.num_negatives)
            neg_emb, neg_b = self.model.encode_items_with_bias(self._items(neg_rows))
            neg_ids = torch.from_numpy(neg_rows).to(self.device)
            neg_log_q = self.log_q[neg_ids] if cfg.logq_correction else None
        return sampled_softmax_loss(
            user,
            item,
            inv_t,
            item_ids=ids,
            item_log_q=self.log_q[ids] if cfg.logq_correction else None,
            neg_item=neg_emb,
            neg_ids=neg_ids,
            neg_log_q=neg_log_q,
            item_bias=bias,
            neg_bias=neg_b,
        )

    def _items(self, rows: np.ndarray | slice) -> KeyedJaggedTensor:
        return self.data.items.batch(rows).sparse.to(self.device)

    def train_epoch(self) -> float:
        """One pass over the training examples in a seeded random order."""
        self.model.train()
        n = len(self.data.example_user)
        perm = self.rng.permutation(n)
        bs = self.config.batch_size
        total, batches = 0.0, 0
        steps = range(0, n, bs)
        bar = tqdm(
            steps, desc=f"epoch {self.epoch + 1}", leave=False, disable=not self.config.progress
        )
        for start in bar:
            rows = perm[start : start + bs]
            kjt, item_rows = self.data.training_batch(rows, self.config.history, self.rng)
            loss = self._loss(kjt, item_rows)
            self.dense_optimizer.zero_grad(set_to_none=True)
            loss.backward()  # also steps the fused embedding optimizer
            self.dense_optimizer.step()
            total += float(loss.detach())
            batches += 1
        return total / max(batches, 1)

    # -- inference ---------------------------------------------------------------

    @torch.no_grad()
    def item_embeddings(self, batch_size: int = 4096) -> torch.Tensor:
        """Embeddings of the whole catalogue ``[n_items, D]``, in batches."""
        return self.item_embeddings_with_bias(batch_size)[0]

    @torch.no_grad()
    def item_embeddings_with_bias(
        self, batch_size: int = 4096
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Catalogue embeddings ``[n_items, D]`` and item biases (None without)."""
        self.model.eval()
        embs, biases = [], []
        for s in range(0, len(self.data.items), batch_size):
            e, b = self.model.encode_items_with_bias(self._items(slice(s, s + batch_size)))
            embs.append(e.cpu())
            if b is not None:
                biases.append(b.cpu())
        return torch.cat(embs), (torch.cat(biases) if biases else None)

    @torch.no_grad()
    def retrieval_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries [n_users, D'], items [n_items, D'])`` whose inner products are
        the model's scores: what the index stores and searches with."""
        items, bias = self.item_embeddings_with_bias()
        users = self.user_embeddings().to(self.device)
        items, bias = items.to(self.device), None if bias is None else bias.to(self.device)
        return (
            self.model.query_vectors(users).cpu(),
            self.model.item_vectors(items, bias).cpu(),
        )

    @torch.no_grad()
    def user_embeddings(self, batch_size: int = 4096) -> torch.Tensor:
        """Embeddings of every user at the end of training ``[n_users, D]``."""
        self.model.eval()
        out = [
            self.model.encode_users(
                self.data.users.batch(slice(s, s + batch_size)).sparse.to(self.device)
            ).cpu()
            for s in range(0, len(self.data.users), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0)

    def evaluate(self, harness: EvalHarness) -> EvalResult:
        """Full-ranking evaluation of the current model on ``harness``."""
        queries, items = self.retrieval_vectors()
        result = harness.evaluate(lambda u: queries[torch.from_numpy(u)] @ items.T)
        self.model.train()
        return result

    # -- the loop ----------------------------------------------------------------

    def fit(self, valid: EvalHarness | None = None) -> list[EpochLog]:
        """Trains up to ``epochs``; with ``valid``, stops early on ``monitor``
        and restores the best epoch's weights."""
        cfg = self.config
        if cfg.resume and cfg.checkpoint_dir and (Path(cfg.checkpoint_dir) / "last.pt").exists():
            self.load_checkpoint(Path(cfg.checkpoint_dir) / "last.pt")
        bar = tqdm(total=cfg.epochs, initial=self.epoch, desc="two-tower", disable=not cfg.progress)
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            loss = self.train_epoch()
            self.epoch += 1
            log = EpochLog(self.epoch, loss, time.perf_counter() - t0)
            if valid is not None and self.epoch % cfg.eval_every == 0:
                log.valid = self.evaluate(valid).metrics
                score = log.valid[cfg.monitor]
                if score > self.best_metric:
                    self.best_metric, self.best_epoch = score, self.epoch
                    self._best_state = {
                        k: v.detach().clone() for k, v in self.model.state_dict().items()
                    }
            self.history.append(log)
            if self.log_fn is not None:
                metrics = {"train/loss": loss, "train/epoch_seconds": log.seconds}
                metrics.update({f"valid/{k}": v for k, v in log.valid.items()})
                self.log_fn(metrics, self.epoch)
            bar.update(1)
            shown = {"loss": f"{loss:.4f}"}
            if log.valid:
                shown[cfg.monitor] = f"{log.valid[cfg.monitor]:.4f}"
            bar.set_postfix(shown)
            if cfg.checkpoint_dir:
                self.save_checkpoint(Path(cfg.checkpoint_dir) / "last.pt")
            if valid is not None and self.epoch - self.best_epoch >= cfg.patience:
                break
        bar.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.history

    # -- checkpoints -------------------------------------------------------------

    def save_checkpoint(self, path: str | Path) -> None:
        """Model, both optimizers, the sampler's RNG and the loop's progress."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "dense_optimizer": self.dense_optimizer.state_dict(),
            "sparse_optimizers": [
                [opt.state_dict() for opt in getattr(p, "_in_backward_optimizers", [])]
                for p in self.sparse_params
            ],
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_state": self._best_state,
            "history": [asdict(h) for h in self.history],
            "config": asdict(self.config),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # never leave a half-written checkpoint behind

    def load_checkpoint(self, path: str | Path) -> None:
        """Restores what :meth:`save_checkpoint` wrote."""
        state = torch.load(path, weights_only=False, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.dense_optimizer.load_state_dict(state["dense_optimizer"])
        for p, saved in zip(self.sparse_params, state["sparse_optimizers"], strict=True):
            for opt, opt_state in zip(
                getattr(p, "_in_backward_optimizers", []), saved, strict=True
            ):
                opt.load_state_dict(opt_state)
        self.rng.bit_generator.state = state["rng"]
        self.epoch = int(state["epoch"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self._best_state = state["best_state"]
        self.history = [EpochLog(**h) for h in state["history"]]


def resolve_device(name: str) -> torch.device:
    """The torch device of a config value: ``cpu``, ``cuda[:n]`` or ``auto``.

    Raises:
        ValueError: ``cuda`` was asked for and torch sees no GPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    return device


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Writes metrics as pretty JSON."""
    Path(path).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
