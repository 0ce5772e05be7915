"""Two-tower retrieval model built from TorchRec modules.

The model is assembled from named parts, TorchRec style:

* ``sparse_arch`` -- one :class:`torchrec.EmbeddingBagCollection` over every sparse
  feature of both towers (one table per feature; a user-side bag of items may
  share the item id table), so sharding applies to a single module.
* ``user_tower`` / ``item_tower`` -- :class:`TowerArch`: the pooled embeddings of
  the tower's features (plus its dense features) through an MLP, L2-normalized.
* a temperature, fixed or learned, that scales the cosine scores.

Which feature feeds which tower comes from the :class:`FeatureSchema` roles:
``user`` and ``context`` features feed the user tower, ``item`` features the item
tower. The same schema drives batches, ONNX export and serving.

Example:
    >>> from recsys.features.schema import FeatureSchema
    >>> schema = FeatureSchema.from_dict({"name": "t", "features": [
    ...     {"name": "user_id", "kind": "categorical", "role": "user"},
    ...     {"name": "item_id", "kind": "categorical", "role": "item"}]})
    >>> model = TwoTower(schema, {"user_id": 10, "item_id": 20}, TwoTowerConfig())
    >>> sorted(model.user_tower.feature_names), sorted(model.item_tower.feature_names)
    (['user_id'], ['item_id'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys.config import build
from recsys.features.schema import FeatureSchema, FeatureSpec, Role
from recsys.models.registry import register_retrieval_model
from recsys.models.retrieval import RetrievalModel


@dataclass
class TowerConfig:
    """One tower's MLP.

    Attributes:
        layer_sizes: widths of the MLP layers; the last is the output dimension
            (both towers must agree on it).
        dropout: dropout before each hidden layer (0 disables).
    """

    layer_sizes: tuple[int, ...] = (128, 64)
    dropout: float = 0.0


@dataclass
class TwoTowerConfig:
    """The two-tower model.

    Attributes:
        embedding_dim: width of every embedding table (a feature's
            ``embedding_dim`` in the schema overrides it).
        user_tower: MLP of the user (query) tower.
        item_tower: MLP of the item (candidate) tower.
        temperature: initial softmax temperature of the cosine scores.
        learn_temperature: learn the temperature (as a log-scale parameter).
        share_item_table: user-side features whose ``vocab_from`` is an item
            feature use that feature's table (the same item has one embedding).
        item_bias: learn a per-item additive score from the item tower's
            inputs (like matrix factorization's item bias). Scores become
            ``<u, v> / temperature + b(item)``, still an inner product:
            :meth:`TwoTower.query_vectors` and :meth:`TwoTower.item_vectors`
            append ``1`` and ``b`` for the index.
        seed: seed of the parameter initialization.
    """

    embedding_dim: int = 64
    user_tower: TowerConfig = field(default_factory=TowerConfig)
    item_tower: TowerConfig = field(default_factory=TowerConfig)
    temperature: float = 0.05
    learn_temperature: bool = False
    share_item_table: bool = True
    item_bias: bool = False
    seed: int = 0


def _mlp(in_dim: int, sizes: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out in enumerate(sizes):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_dim, out))
        if i < len(sizes) - 1:
            layers.append(nn.ReLU())
        in_dim = out
    return nn.Sequential(*layers)


class TowerArch(nn.Module):
    """Concatenated pooled embeddings (+ dense features) -> MLP -> unit vector.

    Args:
        feature_names: sparse features of this tower, in schema order.
        feature_dims: embedding width of each of them.
        num_dense: number of dense inputs of this tower.
        config: the MLP.
        bias: also learn a scalar output (a linear function of the inputs).
    """

    def __init__(
        self,
        feature_names: list[str],
        feature_dims: list[int],
        num_dense: int,
        config: TowerConfig,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.feature_names = feature_names
        self.num_dense = num_dense
        in_dim = sum(feature_dims) + num_dense
        self.mlp = _mlp(in_dim, config.layer_sizes, config.dropout)
        self.bias = nn.Linear(in_dim, 1) if bias else None
        if self.bias is not None:
            nn.init.zeros_(self.bias.weight)
            nn.init.zeros_(self.bias.bias)

    def _inputs(self, pooled: dict[str, torch.Tensor], dense: torch.Tensor | None) -> torch.Tensor:
        parts = [pooled[name] for name in self.feature_names]
        if self.num_dense:
            if dense is None:
                raise ValueError(f"this tower needs {self.num_dense} dense inputs, got none")
            parts.append(dense)
        return torch.cat(parts, dim=1)

    def forward(self, pooled: dict[str, torch.Tensor], dense: torch.Tensor | None) -> torch.Tensor:
        """Returns the tower's L2-normalized output ``[B, D]``."""
        return nn.functional.normalize(self.mlp(self._inputs(pooled, dense)), dim=1)

    def forward_with_bias(
        self, pooled: dict[str, torch.Tensor], dense: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The normalized output and the scalar bias ``[B]`` (None without a bias)."""
        x = self._inputs(pooled, dense)
        out = nn.functional.normalize(self.mlp(x), dim=1)
        return out, (self.bias(x).squeeze(1) if self.bias is not None else None)


class TwoTower(RetrievalModel):
    """User and item towers over one EmbeddingBagCollection.

    Args:
        schema: the feature schema; roles decide the tower of each feature.
        num_embeddings: rows of each sparse feature's table (its vocabulary size).
            Features that share a table (``vocab_from``) may be omitted.
        config: model hyper-parameters.
        device: where to allocate parameters.
    """

    user_tower: TowerArch
    item_tower: TowerArch

    def __init__(
        self,
        schema: FeatureSchema,
        num_embeddings: dict[str, int],
        config: TwoTowerConfig,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if config.user_tower.layer_sizes[-1] != config.item_tower.layer_sizes[-1]:
            raise ValueError("the two towers must end in the same output dimension")
        self.config = config
        self.schema = schema
        torch.manual_seed(config.seed)
        user_specs = schema.sparse(Role.USER, Role.CONTEXT)
        item_specs = schema.sparse(Role.ITEM)
        self.user_dense = [f.name for f in schema.dense(Role.USER, Role.CONTEXT)]
        self.item_dense = [f.name for f in schema.dense(Role.ITEM)]

        tables = self._tables(schema, user_specs + item_specs, num_embeddings, config)
        self.sparse_arch = EmbeddingBagCollection(tables=tables, device=device)
        dims = {name: t.embedding_dim for t in tables for name in t.feature_names}
        self.feature_names: list[str] = [f.name for f in user_specs + item_specs]
        self.user_tower = TowerArch(
            [f.name for f in user_specs],
            [dims[f.name] for f in user_specs],
            len(self.user_dense),
            config.user_tower,
        )
        self.item_tower = TowerArch(
            [f.name for f in item_specs],
            [dims[f.name] for f in item_specs],
            len(self.item_dense),
            config.item_tower,
            bias=config.item_bias,
        )
        log_inv_t = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.log_inv_temperature = nn.Parameter(log_inv_t)
        else:
            self.register_buffer("log_inv_temperature", log_inv_t)
        self.to(device)

    @staticmethod
    def _tables(
        schema: FeatureSchema,
        specs: list[FeatureSpec],
        num_embeddings: dict[str, int],
        config: TwoTowerConfig,
    ) -> list[EmbeddingBagConfig]:
        owner: dict[str, list[str]] = {}
        for f in specs:
            src = f.vocab_from if (f.vocab_from and config.share_item_table) else f.name
            if src != f.name and src not in {s.name for s in specs}:
                src = f.name  # the owning feature is not in this model: own table
            owner.setdefault(src, []).append(f.name)
        tables = []
        for table, feats in owner.items():
            spec = schema[table]
            rows = num_embeddings.get(table)
            if rows is None:
                raise ValueError(f"no table size given for feature {table!r}")
            tables.append(
                EmbeddingBagConfig(
                    name=f"t_{table}",
                    embedding_dim=spec.embedding_dim or config.embedding_dim,
                    num_embeddings=rows,
                    feature_names=feats,
                    pooling=PoolingType.MEAN if spec.pooling == "mean" else PoolingType.SUM,
                )
            )
        return tables

    @property
    def inv_temperature(self) -> torch.Tensor:
        return self.log_inv_temperature.exp()

    @property
    def output_dim(self) -> int:
        return int(self.config.user_tower.layer_sizes[-1])

    @property
    def has_item_bias(self) -> bool:
        return bool(self.config.item_bias)

    def _pooled(self, sparse: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        return self.sparse_arch(sparse).to_dict()

    def encode_users(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor | None = None
    ) -> torch.Tensor:
        """User (query) embeddings ``[B, D]``, unit length.

        Args:
            sparse: a KJT holding every feature of ``feature_names`` (the item
                features may have zero lengths).
            dense: the user tower's dense features ``[B, len(user_dense)]``.
        """
        return self.user_tower(self._pooled(sparse), dense)

    def encode_items_with_bias(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Item embeddings ``[B, D]`` and their biases ``[B]`` (None without bias)."""
        return self.item_tower.forward_with_bias(self._pooled(sparse), dense)

    def forward(
        self,
        sparse: KeyedJaggedTensor,
        user_dense: torch.Tensor | None = None,
        item_dense: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Both towers on one KJT holding user and item features of B pairs.

        Returns:
            ``(user_embeddings, item_embeddings, item_bias)``: ``[B, D]``,
            ``[B, D]`` and ``[B]`` (None when the model has no item bias).
        """
        pooled = self._pooled(sparse)
        item, bias = self.item_tower.forward_with_bias(pooled, item_dense)
        return self.user_tower(pooled, user_dense), item, bias


@register_retrieval_model("two_tower", label="Two-tower")
def build_two_tower(
    config: Mapping[str, Any], schema: FeatureSchema, num_embeddings: Mapping[str, int]
) -> TwoTower:
    """The two-tower model of ``configs/model/two_tower.yaml`` (keys of :class:`TwoTowerConfig`).

    Example:
        >>> from recsys.features.schema import FeatureSchema
        >>> schema = FeatureSchema.from_dict({"name": "t", "features": [
        ...     {"name": "user_id", "kind": "categorical", "role": "user"},
        ...     {"name": "item_id", "kind": "categorical", "role": "item"}]})
        >>> build_two_tower({"embedding_dim": 8, "user_tower": {"layer_sizes": [8]},
        ...                  "item_tower": {"layer_sizes": [8]}}, schema,
        ...                 {"user_id": 3, "item_id": 4}).output_dim
        8
    """
    return TwoTower(schema, dict(num_embeddings), build(TwoTowerConfig, config, "model"))
