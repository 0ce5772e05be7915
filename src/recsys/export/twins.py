"""Padded-input inference twins of the TorchRec models, for ONNX export.

TorchRec models take a :class:`~torchrec.KeyedJaggedTensor`, which the ONNX
exporters either refuse or freeze into the graph, and ``nn.EmbeddingBag``
exports as a per-bag ONNX ``Loop``. A *twin* computes the same function from a
fixed-shape input instead:

* ``ids`` -- int64 ``[B, F, L]``: for each of the ``F`` sparse features (in the
  twin's ``feature_names`` order) up to ``L`` ids, left-aligned, ``-1`` = padding
  (exactly what :func:`recsys.features.batching.to_padded_stack` builds);
* ``dense`` -- float32 ``[B, n_dense]`` where the model has dense inputs.

Each embedding table becomes a :class:`PaddedEmbeddingBag`: an ``nn.Embedding``
lookup (padding looks up row 0), multiplied by the validity mask and summed
(divided by the id count for mean pooling). That exports to plain Gather / Mul / ReduceSum,
equals TorchRec's pooled embeddings (an empty bag gives zeros, as TorchRec's
does), and keeps ``L`` fixed so Triton's dynamic batcher can merge requests.

One ``L`` per twin: the largest ``max_len`` of its features. Position ``j`` of
feature ``f`` counts only when ``j < max_len[f]``: each feature's ids are sliced
to its own ``max_len`` before the lookup (a categorical feature reads slot 0 only
and gathers ``[B, 1, D]``), so a twin never pools more ids than the model was
trained with. :func:`recsys.export.manifest.validate_request` refuses requests
holding ids in those ignored slots.

Twins hold COPIES of the trained weights (a snapshot): training the source model
further does not change an already built twin.

Example:
    >>> from recsys.features.schema import FeatureSchema
    >>> from recsys.models.two_tower import TwoTower, TwoTowerConfig
    >>> schema = FeatureSchema.from_dict({"name": "t", "features": [
    ...     {"name": "user_id", "kind": "categorical", "role": "user"},
    ...     {"name": "item_id", "kind": "categorical", "role": "item"}]})
    >>> model = TwoTower(schema, {"user_id": 10, "item_id": 20}, TwoTowerConfig())
    >>> twin = UserTowerTwin(model)
    >>> twin(torch.tensor([[[3]], [[-1]]])).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, cast

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor, PoolingType
from torchrec.models.dlrm import DLRM

from recsys.features.batching import PAD
from recsys.models.dlrm import Ranker
from recsys.models.retrieval import RetrievalModel

Pooling = Literal["sum", "mean"]


class PaddedEmbeddingBag(nn.Module):
    """A pooled embedding lookup over padded ids (``-1`` = no id).

    Args:
        num_embeddings: table rows.
        embedding_dim: table width.
        pooling: ``"sum"`` or ``"mean"`` (mean of the valid ids; an empty bag
            gives zeros, as TorchRec's ``EmbeddingBagCollection`` does).

    Example:
        >>> bag = PaddedEmbeddingBag(10, 4, "mean")
        >>> bag(torch.tensor([[1, 2, -1], [-1, -1, -1]])).shape
        torch.Size([2, 4])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, pooling: Pooling = "mean") -> None:
        super().__init__()
        if pooling not in ("sum", "mean"):
            raise ValueError(f"pooling must be 'sum' or 'mean', got {pooling!r}")
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        self.pooling: Pooling = pooling

    @classmethod
    def from_weight(cls, weight: torch.Tensor, pooling: Pooling = "mean") -> PaddedEmbeddingBag:
        """A bag holding a copy of ``weight`` (``[num_embeddings, embedding_dim]``)."""
        if weight.dim() != 2:
            raise ValueError(f"an embedding weight is 2-D, got shape {tuple(weight.shape)}")
        bag = cls(int(weight.shape[0]), int(weight.shape[1]), pooling)
        with torch.no_grad():
            bag.embedding.weight.copy_(weight.detach().to(torch.float32))
        return bag

    @property
    def num_embeddings(self) -> int:
        return int(self.embedding.num_embeddings)

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding.embedding_dim)

    def forward(self, ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Pools the last axis of ``ids``.

        Args:
            ids: int64 ``[..., L]``; negative entries are padding.
            valid: optional bool mask broadcastable to ``ids``; positions where it
                is False are ignored as well.

        Returns:
            float32 ``[..., D]``.
        """
        mask = ids >= 0
        if valid is None:
            # Padding looks up row 0 and is then weighted 0: a Gather with no
            # out-of-range index, from one Clip (no Shape/ConstantOfShape/Where).
            safe = ids.clamp(min=0)
        else:
            mask = mask & valid
            # A slot masked by ``valid`` may hold any id: it must not reach the Gather.
            safe = torch.where(mask, ids, torch.zeros_like(ids))
        rows = self.embedding(safe)  # [..., L, D]
        weights = mask.to(rows.dtype)  # [..., L]
        if self.pooling == "mean":
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)
        # [..., 1, L] @ [..., L, D]: one batched MatMul, instead of a Mul that writes
        # [..., L, D] and a ReduceSum that reads it back (measured 0.15 ms instead of
        # 0.36 ms for 200 bags of 50 ids, 16-d).
        return (weights.unsqueeze(-2) @ rows).squeeze(-2)


@dataclass(frozen=True)
class _LookupGroup:
    """Features pooled by one lookup: same table, same width.

    Attributes:
        table: index of the table's bag in ``PaddedSparseArch.bags``.
        width: slots read per feature (their ``max_len``).
        positions: the features' positions on the input's ``F`` axis, ascending.
        start: for a one-slot group, its first column in the one-slot block (the
            one-slot features side by side, group after group); 0 otherwise.
    """

    table: int
    width: int
    positions: tuple[int, ...]
    start: int = 0

    @property
    def contiguous(self) -> bool:
        return self.positions == tuple(range(self.positions[0], self.positions[-1] + 1))


class PaddedSparseArch(nn.Module):
    """The padded twin of an ``EmbeddingBagCollection`` for a list of features.

    Features that share a table in the collection share one
    :class:`PaddedEmbeddingBag` (one weight copy, one ONNX initializer) and are
    looked up together when they also share a width (``max_len``): a one-id
    feature on the table of a 50-id history gathers one row per example, not 50.
    One-id features are masked all at once (one Clip, one comparison and one Mul
    for all of them instead of one each): most ranker features are one id.

    Args:
        ebc: the trained collection (its weights are copied).
        feature_names: the features, in the order of the ``F`` axis of the input.
        max_len: ids read per feature (``L_f``); the input ``L`` is their maximum.
        stack_order: the features in the order of :meth:`stacked`'s ``F`` axis
            (default ``feature_names``).
        bags: bags to use for tables by name instead of copies of the collection's
            (two archs over one collection share their weights: one ONNX initializer).

    Example:
        >>> from torchrec import EmbeddingBagConfig
        >>> ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
        ...     name="t", embedding_dim=4, num_embeddings=9, feature_names=["a", "b"])])
        >>> arch = PaddedSparseArch(ebc, ["b", "a"], {"a": 1, "b": 3})
        >>> [p.shape for p in arch(torch.zeros(2, 2, 3, dtype=torch.long))]
        [torch.Size([2, 4]), torch.Size([2, 4])]
        >>> arch.stacked(torch.zeros(2, 2, 3, dtype=torch.long)).shape
        torch.Size([2, 2, 4])
    """

    def __init__(
        self,
        ebc: EmbeddingBagCollection,
        feature_names: Sequence[str],
        max_len: Mapping[str, int],
        stack_order: Sequence[str] | None = None,
        bags: Mapping[str, PaddedEmbeddingBag] | None = None,
    ) -> None:
        super().__init__()
        if not feature_names:
            raise ValueError("a padded sparse arch needs at least one feature")
        if len(set(feature_names)) != len(feature_names):
            raise ValueError(f"duplicate feature names in {list(feature_names)}")
        configs = {f: cfg for cfg in ebc.embedding_bag_configs() for f in cfg.feature_names}
        missing = [f for f in feature_names if f not in configs]
        if missing:
            raise KeyError(
                f"features {missing} have no table in the collection; it has {sorted(configs)}"
            )
        bad_len = {f: max_len.get(f) for f in feature_names if int(max_len.get(f, 0)) < 1}
        if bad_len:
            raise ValueError(f"every feature needs max_len >= 1, got {bad_len}")
        self.feature_names: list[str] = list(feature_names)
        self.max_len: dict[str, int] = {f: int(max_len[f]) for f in feature_names}
        self.seq_len: int = max(self.max_len.values())

        shared = dict(bags or {})
        own: dict[str, PaddedEmbeddingBag] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        for pos, name in enumerate(self.feature_names):
            cfg = configs[name]
            if cfg.name not in own and cfg.name in shared:
                own[cfg.name] = shared[cfg.name]
            elif cfg.name not in own:
                weight = ebc.embedding_bags[cfg.name].weight
                pooling: Pooling = "mean" if cfg.pooling == PoolingType.MEAN else "sum"
                own[cfg.name] = PaddedEmbeddingBag.from_weight(weight, pooling)
            groups.setdefault((cfg.name, self.max_len[name]), []).append(pos)
        # A list, not a ModuleDict: names such as "keys" clash with ModuleDict's methods.
        self.table_names: list[str] = list(own)
        self.bags = nn.ModuleList(own.values())
        self.table_of: dict[str, str] = {f: configs[f].name for f in self.feature_names}
        self.num_embeddings: dict[str, int] = {
            f: own[self.table_of[f]].num_embeddings for f in self.feature_names
        }
        self.embedding_dims: dict[str, int] = {
            f: own[self.table_of[f]].embedding_dim for f in self.feature_names
        }

        self._one_slot: list[_LookupGroup] = []
        self._multi_slot: list[_LookupGroup] = []
        for (table, width), positions in groups.items():
            group = _LookupGroup(self.table_names.index(table), width, tuple(positions))
            if width == 1:
                start = sum(len(g.positions) for g in self._one_slot)
                self._one_slot.append(replace(group, start=start))
            else:
                self._multi_slot.append(group)
        one_slot_positions = [p for g in self._one_slot for p in g.positions]
        dims = {own[self.table_names[g.table]].embedding_dim for g in self._one_slot}
        # One Mul masks the one-slot block when its tables have one width.
        self._one_slot_block: bool = len(dims) == 1
        # Features come out one-slot block first, then the multi-slot groups.
        self._pooled_order: list[int] = one_slot_positions + [
            p for g in self._multi_slot for p in g.positions
        ]
        self._one_slot_index: torch.Tensor | None
        gather_one_slot = one_slot_positions != list(range(len(one_slot_positions)))
        index = torch.tensor(one_slot_positions, dtype=torch.long) if gather_one_slot else None
        self.register_buffer("_one_slot_index", index, persistent=False)
        for i, group in enumerate(self._multi_slot):
            if not group.contiguous:
                index = torch.tensor(group.positions, dtype=torch.long)
                self.register_buffer(f"_index_{i}", index, persistent=False)
        stack = list(self.feature_names if stack_order is None else stack_order)
        if sorted(stack) != sorted(self.feature_names):
            raise ValueError(
                f"stack_order {stack} must be a permutation of feature_names {self.feature_names}"
            )
        self.stack_order: list[str] = stack
        where = {pos: i for i, pos in enumerate(self._pooled_order)}
        wanted = [where[self.feature_names.index(f)] for f in stack]
        self._stack_index: torch.Tensor | None
        reorder = wanted != list(range(len(wanted)))
        index = torch.tensor(wanted, dtype=torch.long) if reorder else None
        self.register_buffer("_stack_index", index, persistent=False)

    def bag(self, table: str) -> PaddedEmbeddingBag:
        """The bag of the collection's table ``table``."""
        return self._bag(self.table_names.index(table))

    @property
    def table_bags(self) -> dict[str, PaddedEmbeddingBag]:
        """Table name -> its bag (what another arch's ``bags`` can share)."""
        return {name: self._bag(i) for i, name in enumerate(self.table_names)}

    @property
    def lookups(self) -> list[tuple[str, int, list[str]]]:
        """``(table, width, features)`` of each lookup (one ONNX Gather each)."""
        return [
            (self.table_names[g.table], g.width, [self.feature_names[p] for p in g.positions])
            for g in self._one_slot + self._multi_slot
        ]

    def _bag(self, index: int) -> PaddedEmbeddingBag:
        module = self.bags[index]
        assert isinstance(module, PaddedEmbeddingBag)
        return module

    def _pooled_blocks(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Pooled features as ``[B, k, D]`` blocks, in ``_pooled_order``.

        The one-slot features come first: one block when their tables share a
        width, else one block per group; then one block per multi-slot group.
        """
        blocks: list[torch.Tensor] = []
        if self._one_slot:
            # Slot 0 of the one-slot features, side by side: [B, F1].
            first = ids[:, :, 0]
            if self._one_slot_index is not None:
                first = first.index_select(1, self._one_slot_index)
            else:
                first = first[:, : sum(len(g.positions) for g in self._one_slot)]
            # Padding looks up row 0 and is then zeroed: no out-of-range index.
            safe = first.clamp(min=0)
            mask = (first >= 0).unsqueeze(-1)  # [B, F1, 1]
            rows = [
                self._bag(g.table).embedding(safe[:, g.start : g.start + len(g.positions)])
                for g in self._one_slot
            ]  # [B, k, D] each
            if self._one_slot_block:
                block = rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)
                blocks.append(block * mask.to(block.dtype))
            else:
                for g, r in zip(self._one_slot, rows, strict=True):
                    m = mask[:, g.start : g.start + len(g.positions)]
                    blocks.append(r * m.to(r.dtype))
        for i, group in enumerate(self._multi_slot):
            if group.contiguous:
                # Static Slices: this group's features, then its own width.
                first_pos = group.positions[0]
                sub = ids[:, first_pos : first_pos + len(group.positions), : group.width]
            else:
                index: torch.Tensor = getattr(self, f"_index_{i}")
                sub = ids.index_select(1, index)[:, :, : group.width]
            blocks.append(self._bag(group.table)(sub))
        return blocks

    def forward(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Pooled embeddings of each feature, in ``feature_names`` order.

        Args:
            ids: int64 ``[B, F, L]``, ``-1`` = padding. Slot ``j`` of feature
                ``f`` is read only when ``j < max_len[f]``.

        Returns:
            One float32 ``[B, D_f]`` per feature.
        """
        out: list[torch.Tensor | None] = [None] * len(self.feature_names)
        order = iter(self._pooled_order)
        for block in self._pooled_blocks(ids):
            for k in range(block.shape[1]):
                out[next(order)] = block[:, k]
        return [p for p in out if p is not None]

    def stacked(self, ids: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings as one ``[B, F, D]`` tensor, in ``stack_order``.

        Needs every table at one width. Cheaper in ONNX than stacking
        :meth:`forward`'s list: one Concat of the blocks and at most one Gather to
        reorder them, instead of a slice and an Unsqueeze per feature.

        Args:
            ids: int64 ``[B, F, L]`` in ``feature_names`` order, ``-1`` = padding.

        Returns:
            float32 ``[B, F, D]``, features in ``stack_order``.

        Raises:
            ValueError: the tables have different widths.

        Example:
            >>> arch.stacked(ids).shape  # doctest: +SKIP
            torch.Size([2, 2, 4])
        """
        if len(set(self.embedding_dims.values())) != 1:
            raise ValueError(f"stacked() needs one embedding width, got {self.embedding_dims}")
        blocks = self._pooled_blocks(ids)
        pooled = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        if self._stack_index is None:
            return pooled
        return pooled.index_select(1, self._stack_index)


class _PaddedIdsModule(nn.Module):
    """A twin whose ``ids`` input goes through one :class:`PaddedSparseArch`."""

    sparse_arch: PaddedSparseArch

    @property
    def max_len(self) -> dict[str, int]:
        return dict(self.sparse_arch.max_len)

    @property
    def seq_len(self) -> int:
        return self.sparse_arch.seq_len

    @property
    def num_embeddings(self) -> dict[str, int]:
        return dict(self.sparse_arch.num_embeddings)


class _TowerTwin(_PaddedIdsModule):
    """One tower of a retrieval model on padded ids (shared by the user and item twins)."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...] = ("embeddings",)

    def __init__(
        self,
        model: RetrievalModel,
        tower: nn.Module,
        dense_names: Sequence[str],
        max_len: Mapping[str, int] | None,
    ) -> None:
        super().__init__()
        names = list(cast(list[str], tower.feature_names))
        lengths = {f: int(model.schema[f].max_len) for f in names}
        lengths.update({f: int(n) for f, n in (max_len or {}).items() if f in lengths})
        self.sparse_arch = PaddedSparseArch(model.sparse_arch, names, lengths)
        self.tower = copy.deepcopy(tower)
        self.feature_names: list[str] = names
        self.dense_names: list[str] = list(dense_names)
        self.num_dense: int = int(cast(int, tower.num_dense))
        self.input_names = ("ids", "dense") if self.num_dense else ("ids",)
        self.eval()

    def forward(self, ids: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """Tower embeddings ``[B, D]`` (unit length).

        Args:
            ids: int64 ``[B, F, L]`` in ``feature_names`` order, ``-1`` = padding.
            dense: float32 ``[B, num_dense]`` when the tower has dense inputs.
        """
        pooled = dict(zip(self.feature_names, self.sparse_arch(ids), strict=True))
        return self.tower(pooled, dense)

    def example_inputs(self, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random valid inputs (bags of random length, empty ones included)."""
        gen = torch.Generator().manual_seed(seed)
        ids = random_padded_ids(
            batch_size, self.feature_names, self.max_len, self.num_embeddings, self.seq_len, gen
        )
        if self.num_dense:
            return ids, torch.rand(batch_size, self.num_dense, generator=gen)
        return (ids,)


class UserTowerTwin(_TowerTwin):
    """The user (query) tower of a :class:`TwoTower` on padded ids.

    Args:
        model: the trained two-tower model (weights are copied).
        max_len: optional per-feature override of the schema's ``max_len``.

    Inputs ``ids`` ``[B, F, L]`` (features = ``model.user_tower.feature_names``)
    and, when the tower has dense features, ``dense`` ``[B, n_dense]``; output
    ``[B, D]`` equal to ``model.encode_users`` on the same ids.

    Example:
        >>> twin = UserTowerTwin(model)  # doctest: +SKIP
        >>> twin(to_padded_stack(kjt, twin.feature_names, twin.seq_len))  # doctest: +SKIP
    """

    def __init__(self, model: RetrievalModel, max_len: Mapping[str, int] | None = None) -> None:
        super().__init__(model, model.user_tower, model.user_dense, max_len)


class ItemTowerTwin(_TowerTwin):
    """The item (candidate) tower of a :class:`TwoTower` on padded ids.

    Args:
        model: the trained two-tower model (weights are copied).
        max_len: optional per-feature override of the schema's ``max_len``.

    Example:
        >>> twin = ItemTowerTwin(model)  # doctest: +SKIP
        >>> twin(*twin.example_inputs(4)).shape  # doctest: +SKIP
        torch.Size([4, 64])
    """

    def __init__(self, model: RetrievalModel, max_len: Mapping[str, int] | None = None) -> None:
        super().__init__(model, model.item_tower, model.item_dense, max_len)


class RankerTwin(_PaddedIdsModule):
    """A TorchRec ``DLRM`` / ``DLRM_DCN`` on padded ids.

    ``dense_arch``, ``inter_arch`` and ``over_arch`` are copies of the trained
    modules, unchanged; only the ``EmbeddingBagCollection`` is replaced by
    :class:`PaddedEmbeddingBag` s. The forward returns both the logits and
    ``sigmoid(logits)`` (click probabilities): two ONNX outputs for the price of
    one Sigmoid node, so serving can pick either.

    Two input layouts:

    * per pair (default): ``dense [B, n_dense]`` and ``ids [B, F, L]``, one row per
      (user, candidate) pair; outputs ``[B]``;
    * per candidate list (``list_features``): the features that are the same for
      every candidate of a request (user, context, request features) enter once per
      list, ``list_ids [U, F_list, L_list]``; the others per candidate, ``dense
      [U, C, n_dense]`` and ``ids [U, C, F, L]``; outputs ``[U, C]``. A request
      then sends its user's 50-id history once instead of once per candidate (on
      MovieLens-100K, 880 KB of ids for 200 candidates become about 41 KB), and the
      history is pooled once per list. The lists are the batch axis, so Triton's
      dynamic batcher still merges requests (with the same ``C``).

    Args:
        model: a :class:`recsys.models.dlrm.Ranker` or a bare TorchRec ``DLRM``
            (``DLRM_DCN`` is a subclass).
        feature_names: the model's features in input order (defaults to the
            ranker's ``feature_names``; bare DLRM: its sparse-arch order); with
            ``list_features``, ``ids`` holds the others in this order.
        max_len: ids per feature, one int for all or a mapping (default 1:
            one-hot features).
        list_features: the features that enter once per list, in ``list_ids``
            order (empty: the per-pair layout).

    Example:
        >>> from recsys.models.dlrm import RankerConfig, build_ranker
        >>> ranker = build_ranker(RankerConfig(), ["a", "b"], [5, 7], num_dense=3)
        >>> twin = RankerTwin(ranker)
        >>> logits, probs = twin(torch.rand(2, 3), torch.tensor([[[1], [2]], [[0], [-1]]]))
        >>> logits.shape, probs.shape
        (torch.Size([2]), torch.Size([2]))
        >>> lists = RankerTwin(ranker, list_features=["a"])
        >>> lists(torch.rand(2, 4, 3), torch.zeros(2, 4, 1, 1, dtype=torch.long),
        ...       torch.zeros(2, 1, 1, dtype=torch.long))[0].shape
        torch.Size([2, 4])
    """

    input_names: tuple[str, ...] = ("dense", "ids")
    output_names: tuple[str, ...] = ("logits", "probabilities")
    _lookup_index: torch.Tensor

    def __init__(
        self,
        model: Ranker | DLRM,
        feature_names: Sequence[str] | None = None,
        max_len: int | Mapping[str, int] = 1,
        list_features: Sequence[str] = (),
    ) -> None:
        super().__init__()
        dlrm = model.dlrm if isinstance(model, Ranker) else model
        if not isinstance(dlrm, DLRM):
            raise TypeError(f"expected a Ranker or a TorchRec DLRM, got {type(model).__name__}")
        lookup_order = list(dlrm.sparse_arch.sparse_feature_names)
        if feature_names is None:
            feature_names = model.feature_names if isinstance(model, Ranker) else lookup_order
        names = list(feature_names)
        if sorted(names) != sorted(lookup_order):
            raise ValueError(
                f"feature_names {names} must be a permutation of the model's sparse "
                f"features {lookup_order}"
            )
        if isinstance(max_len, int):
            lengths = dict.fromkeys(names, max_len)
        else:
            lengths = {f: int(max_len.get(f, 1)) for f in names}
        listed = list(list_features)
        unknown = [f for f in listed if f not in names]
        if unknown or len(set(listed)) != len(listed):
            raise ValueError(f"list_features {listed} must be distinct features of {names}")
        pair = [f for f in names if f not in listed]
        if listed and not pair:
            raise ValueError("a per-list ranker needs at least one per-candidate feature")
        self.feature_names: list[str] = pair
        self.list_feature_names: list[str] = listed
        ebc = dlrm.sparse_arch.embedding_bag_collection
        self.list_arch: PaddedSparseArch | None = None
        if listed:
            self.list_arch = PaddedSparseArch(ebc, listed, lengths)
            self.sparse_arch = PaddedSparseArch(ebc, pair, lengths, bags=self.list_arch.table_bags)
            self.input_names = ("dense", "ids", "list_ids")
            # pooled [pair..., list...] -> the collection's order (the interaction's)
            where = {f: i for i, f in enumerate(pair + listed)}
            order = torch.tensor([where[f] for f in lookup_order], dtype=torch.long)
            self.register_buffer("_lookup_index", order, persistent=False)
        else:
            # The interaction arch expects the sparse features in the collection's order.
            self.sparse_arch = PaddedSparseArch(ebc, names, lengths, stack_order=lookup_order)
        dims = set(self.sparse_arch.embedding_dims.values())
        if self.list_arch is not None:
            dims |= set(self.list_arch.embedding_dims.values())
        if len(dims) != 1:
            raise ValueError(f"DLRM needs one embedding width, tables have {sorted(dims)}")
        self.embedding_dim: int = dims.pop()
        self.dense_arch = copy.deepcopy(dlrm.dense_arch)
        self.inter_arch = copy.deepcopy(dlrm.inter_arch)
        self.over_arch = copy.deepcopy(dlrm.over_arch)
        first = next(m for m in self.dense_arch.modules() if isinstance(m, nn.Linear))
        self.num_dense: int = int(first.in_features)
        self.eval()

    @property
    def per_list(self) -> bool:
        """Whether the list features enter once per candidate list (``list_ids``)."""
        return self.list_arch is not None

    @property
    def max_len(self) -> dict[str, int]:
        out = dict(self.sparse_arch.max_len)
        if self.list_arch is not None:
            out.update(self.list_arch.max_len)
        return out

    @property
    def num_embeddings(self) -> dict[str, int]:
        out = dict(self.sparse_arch.num_embeddings)
        if self.list_arch is not None:
            out.update(self.list_arch.num_embeddings)
        return out

    @property
    def list_seq_len(self) -> int:
        """``L_list`` of ``list_ids`` (0 in the per-pair layout)."""
        return self.list_arch.seq_len if self.list_arch is not None else 0

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The ONNX graph's free axes per input and output name."""
        if self.list_arch is None:
            return {n: {0: "batch"} for n in (*self.input_names, *self.output_names)}
        lists = {0: "batch", 1: "candidates"}
        return {"dense": lists, "ids": lists, "list_ids": {0: "batch"},
                "logits": lists, "probabilities": lists}  # fmt: skip

    def forward(
        self, dense: torch.Tensor, ids: torch.Tensor, list_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores a batch.

        Args:
            dense: float32 ``[B, num_dense]`` (per list: ``[U, C, num_dense]``).
            ids: int64 ``[B, F, L]`` in ``feature_names`` order, ``-1`` = padding
                (per list: ``[U, C, F, L]``).
            list_ids: per list only, int64 ``[U, F_list, L_list]`` in
                ``list_feature_names`` order.

        Returns:
            ``(logits, probabilities)``, ``[B]`` each (per list: ``[U, C]``).
        """
        if self.list_arch is None:
            return self._score(dense, self.sparse_arch.stacked(ids))
        if list_ids is None:
            raise ValueError("this ranker takes list_ids (its per-list features)")
        rows = ids.shape[0] * ids.shape[1]
        pair = self.sparse_arch.stacked(ids.reshape(rows, ids.shape[2], ids.shape[3]))
        pooled = self.list_arch.stacked(list_ids)  # [U, F_list, D]: once per list
        spread = pooled.unsqueeze(1).expand(-1, ids.shape[1], -1, -1)
        spread = spread.reshape(rows, pooled.shape[1], pooled.shape[2])
        sparse = torch.cat([pair, spread], dim=1).index_select(1, self._lookup_index)
        logits, probs = self._score(dense.reshape(rows, dense.shape[2]), sparse)
        shape = (ids.shape[0], ids.shape[1])
        return logits.reshape(shape), probs.reshape(shape)

    def _score(
        self, dense: torch.Tensor, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embedded_dense = self.dense_arch(dense)
        interaction = self.inter_arch(dense_features=embedded_dense, sparse_features=sparse)
        logits = self.over_arch(interaction).squeeze(-1)
        return logits, torch.sigmoid(logits)

    def example_inputs(
        self, batch_size: int, seed: int = 0, candidates: int = 3
    ) -> tuple[torch.Tensor, ...]:
        """Random valid inputs (bags of random length, empty ones included):
        ``(dense, ids)`` of ``batch_size`` pairs, or per list ``(dense, ids,
        list_ids)`` of ``batch_size`` lists of ``candidates`` candidates."""
        gen = torch.Generator().manual_seed(seed)
        rows = batch_size * candidates if self.list_arch is not None else batch_size
        dense = torch.rand(rows, self.num_dense, generator=gen)
        arch = self.sparse_arch
        ids = random_padded_ids(
            rows, arch.feature_names, arch.max_len, arch.num_embeddings, arch.seq_len, gen
        )
        if self.list_arch is None:
            return dense, ids
        lists = self.list_arch
        list_ids = random_padded_ids(
            batch_size, lists.feature_names, lists.max_len, lists.num_embeddings,
            lists.seq_len, gen,
        )  # fmt: skip
        return (
            dense.reshape(batch_size, candidates, -1),
            ids.reshape(batch_size, candidates, *ids.shape[1:]),
            list_ids,
        )

    def pair_inputs(
        self, dense: torch.Tensor, ids: torch.Tensor, list_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[str], dict[str, int]]:
        """Per-list inputs as per-pair ones, to feed the TorchRec model
        (:func:`padded_to_kjt`): ``(dense [U*C, n_dense], ids [U*C, F_all, L],
        feature names, max_len)``."""
        rows = ids.shape[0] * ids.shape[1]
        width = max(ids.shape[3], list_ids.shape[2])
        pad = torch.nn.functional.pad
        pair = pad(
            ids.reshape(rows, ids.shape[2], ids.shape[3]), (0, width - ids.shape[3]), value=PAD
        )
        spread = list_ids.repeat_interleave(ids.shape[1], dim=0)
        spread = pad(spread, (0, width - list_ids.shape[2]), value=PAD)
        names = self.feature_names + self.list_feature_names
        return dense.reshape(rows, -1), torch.cat([pair, spread], dim=1), names, self.max_len


def random_padded_ids(
    batch_size: int,
    feature_names: Sequence[str],
    max_len: Mapping[str, int],
    num_embeddings: Mapping[str, int],
    seq_len: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random left-aligned padded ids ``[B, F, L]`` within each feature's table.

    Each bag holds ``0..max_len[f]`` ids (about one bag in ``max_len + 1`` is
    empty); slots at and beyond a feature's ``max_len`` are padding.

    Example:
        >>> random_padded_ids(2, ["a"], {"a": 3}, {"a": 5}, 4).shape
        torch.Size([2, 1, 4])
    """
    cols = []
    for f in feature_names:
        n = int(max_len[f])
        ids = torch.randint(0, int(num_embeddings[f]), (batch_size, seq_len), generator=generator)
        count = torch.randint(0, n + 1, (batch_size, 1), generator=generator)
        slots = torch.arange(seq_len).unsqueeze(0)
        cols.append(torch.where(slots < count, ids, torch.full_like(ids, PAD)))
    return torch.stack(cols, dim=1)


def padded_to_kjt(
    ids: torch.Tensor,
    feature_names: Sequence[str],
    max_len: Mapping[str, int] | None = None,
    keys: Sequence[str] | None = None,
) -> KeyedJaggedTensor:
    """The :class:`~torchrec.KeyedJaggedTensor` holding the same bags as padded ids.

    The bag of feature ``f`` in row ``b`` is ``ids[b, f, :max_len[f]]`` without
    its ``-1`` s, in slot order; a twin and the TorchRec model given these two
    inputs compute the same function.

    Args:
        ids: int64 ``[B, F, L]``, ``-1`` = padding.
        feature_names: the ``F`` features.
        max_len: slots read per feature (default: all ``L``).
        keys: the KJT keys (default ``feature_names``); keys that are not in
            ``feature_names`` get empty bags (e.g. the other tower's features).

    Returns:
        A KJT with int64 values and int32 lengths.

    Example:
        >>> kjt = padded_to_kjt(torch.tensor([[[4, -1]], [[-1, -1]]]), ["a"], keys=["a", "b"])
        >>> kjt.values().tolist(), kjt.lengths().tolist()
        ([4], [1, 0, 0, 0])
    """
    if ids.dim() != 3 or ids.shape[1] != len(feature_names):
        raise ValueError(f"ids must be [B, {len(feature_names)}, L], got shape {tuple(ids.shape)}")
    batch = int(ids.shape[0])
    position = {name: i for i, name in enumerate(feature_names)}
    values: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    for key in keys if keys is not None else feature_names:
        if key not in position:
            lengths.append(torch.zeros(batch, dtype=torch.int32))
            continue
        cut = ids.shape[2] if max_len is None else int(max_len[key])
        bag = ids[:, position[key], :cut]
        valid = bag >= 0
        values.append(bag[valid])
        lengths.append(valid.sum(dim=1).to(torch.int32))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys if keys is not None else feature_names),
        values=torch.cat(values) if values else torch.empty(0, dtype=torch.int64),
        lengths=torch.cat(lengths),
    )
