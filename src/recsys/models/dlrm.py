"""DLRM-style click-through ranker built from TorchRec's ``DLRM`` and ``DLRM_DCN``.

The ranker scores one (user, item, context) example from dense features and one
or more categorical ids per sparse feature:

* ``dlrm.sparse_arch`` -- a :class:`torchrec.EmbeddingBagCollection` with one table
  per sparse feature (or one table shared by several features, see
  :attr:`RankerConfig.shared_tables`); one module, so
  :class:`~torchrec.distributed.DistributedModelParallel` shards every table.
* ``dlrm.dense_arch`` -- MLP that maps the dense features to ``embedding_dim``.
* ``dlrm.inter_arch`` -- pairwise dot products (``arch="dlrm"``) or a low-rank
  DCN-v2 cross network (``arch="dlrm_dcn"``).
* ``dlrm.over_arch`` -- MLP to one logit.

:class:`Ranker` wraps the TorchRec model so that ``forward`` returns logits of
shape ``[B]``. Training (optimizers, sharding) lives in
:mod:`recsys.training.ranker_trainer`.

Example:
    >>> import torch
    >>> config = RankerConfig(embedding_dim=8, dense_arch_layer_sizes=(16, 8),
    ...                       over_arch_layer_sizes=(16, 1))
    >>> model = build_ranker(config, ["C1", "C2"], [10, 20], num_dense=3)
    >>> kjt = ids_to_kjt(torch.tensor([[1, 2], [3, 0]]), ["C1", "C2"])
    >>> model(torch.rand(2, 3), kjt).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.models.dlrm import DLRM, DLRM_DCN

from recsys.models.registry import ranker_arch, ranker_archs, register_ranker_arch

RankerArch = str
"""A registered ranker architecture (:func:`recsys.models.registry.ranker_archs`)."""


@dataclass
class RankerConfig:
    """Hyperparameters of the DLRM ranker.

    Attributes:
        arch: ``"dlrm"`` (dot-product interaction) or ``"dlrm_dcn"`` (DCN-v2 cross
            network interaction, as in MLPerf DLRMv2).
        embedding_dim: width of every embedding table; the dense arch's last layer
            must equal it (the interaction takes dot products between them).
        dense_arch_layer_sizes: widths of the dense (bottom) MLP; last = embedding_dim.
        over_arch_layer_sizes: widths of the over (top) MLP; at least two layers,
            the last one is 1 (the logit).
        dcn_num_layers: cross layers (``dlrm_dcn`` only).
        dcn_low_rank_dim: rank of each cross layer's weight (``dlrm_dcn`` only).
        num_embeddings_per_feature: table rows per sparse feature, in feature order;
            used when :func:`build_ranker` is not given sizes itself.
        shared_tables: table name -> sparse features that look up that one table
            (e.g. a clicked-item feature sharing the item id table). The table has
            as many rows as its largest feature. Other features get a table each.
        seed: seed of the parameter initialization (the global RNG is untouched).
    """

    arch: RankerArch = "dlrm"
    embedding_dim: int = 16
    dense_arch_layer_sizes: tuple[int, ...] = (64, 16)
    over_arch_layer_sizes: tuple[int, ...] = (64, 32, 1)
    dcn_num_layers: int = 3
    dcn_low_rank_dim: int = 16
    num_embeddings_per_feature: tuple[int, ...] | None = None
    shared_tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ranker_archs():
            raise ValueError(f"arch must be one of {ranker_archs()}, got {self.arch!r}")
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if not self.dense_arch_layer_sizes or self.dense_arch_layer_sizes[-1] != self.embedding_dim:
            raise ValueError(
                "the last dense_arch layer must equal embedding_dim "
                f"({self.embedding_dim}), got {tuple(self.dense_arch_layer_sizes)}"
            )
        if len(self.over_arch_layer_sizes) < 2 or self.over_arch_layer_sizes[-1] != 1:
            raise ValueError(
                "over_arch_layer_sizes needs >= 2 layers ending in 1 (the logit), "
                f"got {tuple(self.over_arch_layer_sizes)}"
            )
        if self.arch == "dlrm_dcn" and (self.dcn_num_layers < 1 or self.dcn_low_rank_dim < 1):
            raise ValueError("dlrm_dcn needs dcn_num_layers >= 1 and dcn_low_rank_dim >= 1")


class Ranker(nn.Module):
    """A TorchRec DLRM / DLRM_DCN that returns one logit per example.

    Args:
        dlrm: the TorchRec model (its ``sparse_arch`` holds the embedding tables).
        feature_names: sparse feature names, in the order the ids are given.
        num_embeddings_per_feature: rows each feature's ids range over.
        num_dense: number of dense input features.
        config: the configuration the model was built from.

    Example:
        >>> model = build_ranker(RankerConfig(), ["f"], [5], num_dense=2)
        >>> model.feature_names, model.num_dense
        (('f',), 2)
    """

    def __init__(
        self,
        dlrm: DLRM,
        feature_names: Sequence[str],
        num_embeddings_per_feature: Sequence[int],
        num_dense: int,
        config: RankerConfig,
    ) -> None:
        super().__init__()
        self.dlrm = dlrm
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.num_embeddings_per_feature: tuple[int, ...] = tuple(
            int(n) for n in num_embeddings_per_feature
        )
        self.num_dense = num_dense
        self.config = config
        self._lookup_order: list[str] = list(dlrm.sparse_arch.sparse_feature_names)

    def forward(
        self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor
    ) -> torch.Tensor:
        """Scores a batch.

        Args:
            dense_features: float ``[B, num_dense]``.
            sparse_features: ids of every sparse feature (keys = ``feature_names``).

        Returns:
            Logits ``[B]`` (apply a sigmoid for click probabilities).
        """
        dlrm = self.dlrm
        embedded_dense = dlrm.dense_arch(dense_features)
        # TorchRec's SparseArch, minus a copy: when the pooled KeyedTensor already
        # holds the features in SparseArch's order, its values ARE the [B, F * D]
        # block that SparseArch would rebuild with to_dict() + cat().
        pooled = dlrm.sparse_arch.embedding_bag_collection(sparse_features)
        order = self._lookup_order
        if pooled.keys() == order:
            flat = pooled.values()
        else:
            by_name = pooled.to_dict()
            flat = torch.cat([by_name[name] for name in order], dim=1)
        embedded_sparse = flat.reshape(-1, len(order), dlrm.sparse_arch.D)
        interaction = dlrm.inter_arch(
            dense_features=embedded_dense, sparse_features=embedded_sparse
        )
        return dlrm.over_arch(interaction).squeeze(-1)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The embedding tables (trained by the fused sparse optimizer)."""
        return list(self.dlrm.sparse_arch.parameters())


def embedding_bag_configs(
    feature_names: Sequence[str],
    num_embeddings_per_feature: Sequence[int],
    embedding_dim: int,
    shared_tables: Mapping[str, Sequence[str]] | None = None,
) -> list[EmbeddingBagConfig]:
    """One :class:`EmbeddingBagConfig` per table: shared groups first, then one per feature.

    Args:
        feature_names: every sparse feature.
        num_embeddings_per_feature: rows each feature needs, same order.
        embedding_dim: table width.
        shared_tables: table name -> features sharing it (each feature at most once).

    Returns:
        Table configs; unshared features get a table named ``t_<feature>``.

    Example:
        >>> [(c.name, c.num_embeddings, c.feature_names) for c in embedding_bag_configs(
        ...     ["a", "b", "c"], [10, 20, 5], 4, {"ab": ("a", "b")})]
        [('ab', 20, ['a', 'b']), ('t_c', 5, ['c'])]
    """
    if len(feature_names) != len(num_embeddings_per_feature):
        raise ValueError(
            f"{len(feature_names)} feature names but {len(num_embeddings_per_feature)} table sizes"
        )
    if len(set(feature_names)) != len(feature_names):
        raise ValueError(f"duplicate sparse feature names in {list(feature_names)}")
    sizes = dict(zip(feature_names, (int(n) for n in num_embeddings_per_feature), strict=True))
    bad = {f: n for f, n in sizes.items() if n < 1}
    if bad:
        raise ValueError(f"tables need >= 1 row, got {bad}")
    configs: list[EmbeddingBagConfig] = []
    claimed: set[str] = set()
    for table, members in (shared_tables or {}).items():
        # TorchRec keeps tables in an nn.ModuleDict: a name like "items" or "a.b"
        # would clash with its attributes or its state_dict keys.
        if not table or "." in table or hasattr(nn.ModuleDict, table):
            raise ValueError(f"shared table name {table!r} is not usable as a module name")
        unknown = [f for f in members if f not in sizes]
        twice = [f for f in members if f in claimed]
        if unknown or twice or not members:
            raise ValueError(
                f"shared table {table!r}: unknown features {unknown}, features already "
                f"in another table {twice}, or no features ({list(members)})"
            )
        claimed.update(members)
        configs.append(
            EmbeddingBagConfig(
                name=table,
                embedding_dim=embedding_dim,
                num_embeddings=max(sizes[f] for f in members),
                feature_names=list(members),
            )
        )
    for name in feature_names:
        if name not in claimed:
            configs.append(
                EmbeddingBagConfig(
                    name=f"t_{name}",
                    embedding_dim=embedding_dim,
                    num_embeddings=sizes[name],
                    feature_names=[name],
                )
            )
    return configs


def build_ranker(
    config: RankerConfig,
    feature_names: Sequence[str],
    num_embeddings_per_feature: Sequence[int] | None = None,
    num_dense: int = 13,
    device: torch.device | str | None = None,
) -> Ranker:
    """Builds an (unsharded) DLRM ranker with seeded initialization.

    Args:
        config: hyperparameters.
        feature_names: sparse features, in the order of the id columns.
        num_embeddings_per_feature: rows per feature's table (defaults to
            ``config.num_embeddings_per_feature``).
        num_dense: number of dense features.
        device: where the parameters live; ``"meta"`` allocates nothing (then
            ``DistributedModelParallel`` initializes the tables itself, unseeded
            by ``config.seed``).

    Returns:
        A :class:`Ranker`; ``model(dense [B, num_dense], kjt)`` -> logits ``[B]``.

    Raises:
        ValueError: inconsistent sizes or names.

    Example:
        >>> cfg = RankerConfig(arch="dlrm_dcn", embedding_dim=4,
        ...                    dense_arch_layer_sizes=(8, 4), over_arch_layer_sizes=(8, 1))
        >>> type(build_ranker(cfg, ["a", "b"], [3, 3], num_dense=2).dlrm).__name__
        'DLRM_DCN'
    """
    sizes = num_embeddings_per_feature
    if sizes is None:
        sizes = config.num_embeddings_per_feature
    if sizes is None:
        raise ValueError("table sizes missing: pass num_embeddings_per_feature or set it in config")
    if num_dense < 1:
        raise ValueError(f"DLRM needs >= 1 dense feature, got num_dense={num_dense}")
    tables = embedding_bag_configs(feature_names, sizes, config.embedding_dim, config.shared_tables)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    # A private RNG stream: building a model must not shift the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        ebc = EmbeddingBagCollection(tables=tables, device=dev)
        dense_device = None if dev.type == "meta" else dev
        dlrm = ranker_arch(config.arch)(ebc, num_dense, config, dense_device)
    return Ranker(dlrm, feature_names, sizes, num_dense, config)


@register_ranker_arch("dlrm")
def build_dlrm(
    ebc: EmbeddingBagCollection,
    num_dense: int,
    config: RankerConfig,
    dense_device: torch.device | None = None,
) -> DLRM:
    """TorchRec's DLRM: pairwise dot products of the pooled embeddings and the dense arch."""
    return DLRM(
        embedding_bag_collection=ebc,
        dense_in_features=num_dense,
        dense_arch_layer_sizes=list(config.dense_arch_layer_sizes),
        over_arch_layer_sizes=list(config.over_arch_layer_sizes),
        dense_device=dense_device,
    )


@register_ranker_arch("dlrm_dcn")
def build_dlrm_dcn(
    ebc: EmbeddingBagCollection,
    num_dense: int,
    config: RankerConfig,
    dense_device: torch.device | None = None,
) -> DLRM:
    """TorchRec's DLRM_DCN: a low-rank DCN-v2 cross network as the interaction."""
    return DLRM_DCN(
        embedding_bag_collection=ebc,
        dense_in_features=num_dense,
        dense_arch_layer_sizes=list(config.dense_arch_layer_sizes),
        over_arch_layer_sizes=list(config.over_arch_layer_sizes),
        dcn_num_layers=config.dcn_num_layers,
        dcn_low_rank_dim=config.dcn_low_rank_dim,
        dense_device=dense_device,
    )


def ids_to_kjt(ids: torch.Tensor, feature_names: Sequence[str]) -> KeyedJaggedTensor:
    """Packs one id per (example, feature) into a :class:`KeyedJaggedTensor`.

    Args:
        ids: int64 ``[B, F]``, column ``j`` holding feature ``feature_names[j]``.
        feature_names: the ``F`` keys.

    Returns:
        A KJT with every bag of length 1 (feature-major values, as TorchRec expects).

    Example:
        >>> kjt = ids_to_kjt(torch.tensor([[1, 7], [2, 8]]), ["a", "b"])
        >>> kjt.keys(), kjt.values().tolist()
        (['a', 'b'], [1, 2, 7, 8])
    """
    if ids.dim() != 2 or ids.shape[1] != len(feature_names):
        raise ValueError(
            f"ids must be [B, {len(feature_names)}] for features {list(feature_names)}, "
            f"got shape {tuple(ids.shape)}"
        )
    batch, n_features = ids.shape
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(feature_names),
        values=ids.t().reshape(-1).to(torch.int64),
        lengths=torch.ones(batch * n_features, dtype=torch.int32, device=ids.device),
    )
