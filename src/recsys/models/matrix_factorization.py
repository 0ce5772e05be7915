"""Matrix factorization on TorchRec embeddings, as a registered retrieval model (``mf``).

A user and an item are one embedding each, looked up in one
:class:`torchrec.EmbeddingBagCollection`; the score is their inner product (cosine
over a temperature with ``normalize``, the raw dot product without), plus an
optional additive item bias. No side features, no MLP: the classic latent-factor
retriever, trained by the same trainer (sampled softmax with logQ correction),
exported as the same two ONNX towers and served by the same repository as the
two-tower model. Select it with ``model=mf`` (``configs/model/mf.yaml``).

Example:
    >>> from recsys.features.schema import FeatureSchema
    >>> schema = FeatureSchema.from_dict({"name": "t", "features": [
    ...     {"name": "user_id", "kind": "categorical", "role": "user"},
    ...     {"name": "gender", "kind": "categorical", "role": "user"},
    ...     {"name": "item_id", "kind": "categorical", "role": "item"}]})
    >>> model = MatrixFactorization(schema, {"user_id": 5, "item_id": 7, "gender": 3},
    ...                             MFConfig(embedding_dim=4))
    >>> model.feature_names, model.query_scaling().dim
    (['user_id', 'item_id'], 5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys.config import build
from recsys.features.schema import FeatureSchema, Role
from recsys.models.registry import register_retrieval_model
from recsys.models.retrieval import RetrievalModel


@dataclass
class MFConfig:
    """Matrix factorization.

    Attributes:
        embedding_dim: the number of latent factors.
        user_feature: the schema's user id feature (role ``user``).
        item_feature: the schema's item id feature (role ``item``).
        normalize: score by cosine (unit-length factors) over ``temperature``;
            False scores by the raw dot product (``temperature`` still divides it).
        temperature: softmax temperature of the scores.
        learn_temperature: learn it instead.
        item_bias: learn an additive per-item score (folded into the index vectors).
        seed: seed of the parameter initialization.
    """

    embedding_dim: int = 64
    user_feature: str = "user_id"
    item_feature: str = "item_id"
    normalize: bool = False
    temperature: float = 1.0
    learn_temperature: bool = False
    item_bias: bool = True
    seed: int = 0


class FactorTower(nn.Module):
    """One side's factors: the pooled id embedding, optionally unit length.

    Args:
        feature: the id feature this side reads.
        dim: its embedding width.
        normalize: return unit vectors.
        bias: also learn a scalar (a linear function of the factors, zero at init).
    """

    def __init__(self, feature: str, dim: int, normalize: bool, bias: bool = False) -> None:
        super().__init__()
        self.feature_names = [feature]
        self.num_dense = 0
        self.normalize = normalize
        self.bias = nn.Linear(dim, 1) if bias else None
        if self.bias is not None:
            nn.init.zeros_(self.bias.weight)
            nn.init.zeros_(self.bias.bias)

    def _factors(self, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        x = pooled[self.feature_names[0]]
        return nn.functional.normalize(x, dim=1) if self.normalize else x

    def forward(self, pooled: dict[str, torch.Tensor], dense: torch.Tensor | None) -> torch.Tensor:
        """The factors ``[B, D]`` (``dense`` is unused: this side has none)."""
        return self._factors(pooled)

    def forward_with_bias(
        self, pooled: dict[str, torch.Tensor], dense: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = pooled[self.feature_names[0]]
        bias = self.bias(x).squeeze(1) if self.bias is not None else None
        return self._factors(pooled), bias


class MatrixFactorization(RetrievalModel):
    """User and item factors in one EmbeddingBagCollection; score = their inner product.

    Args:
        schema: the feature schema; only the two id features are read.
        num_embeddings: rows of each id feature's table.
        config: :class:`MFConfig`.
        device: where to allocate parameters.
    """

    user_tower: FactorTower
    item_tower: FactorTower

    def __init__(
        self,
        schema: FeatureSchema,
        num_embeddings: Mapping[str, int],
        config: MFConfig,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        for name, role in ((config.user_feature, Role.USER), (config.item_feature, Role.ITEM)):
            if name not in schema or schema[name].role is not role or not schema[name].is_sparse:
                raise ValueError(
                    f"matrix factorization needs a sparse {role.value} feature {name!r} in "
                    f"schema {schema.name!r} (set model.user_feature / model.item_feature)"
                )
            if name not in num_embeddings:
                raise ValueError(f"no table size given for feature {name!r}")
        self.config = config
        self.schema = schema.select([config.user_feature, config.item_feature])
        self.feature_names = [config.user_feature, config.item_feature]
        self.user_dense, self.item_dense = [], []
        torch.manual_seed(config.seed)
        self.sparse_arch = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=f"t_{name}",
                    embedding_dim=config.embedding_dim,
                    num_embeddings=int(num_embeddings[name]),
                    feature_names=[name],
                    pooling=PoolingType.SUM,
                )
                for name in self.feature_names
            ],
            device=device,
        )
        dim = config.embedding_dim
        self.user_tower = FactorTower(config.user_feature, dim, config.normalize)
        self.item_tower = FactorTower(config.item_feature, dim, config.normalize, config.item_bias)
        log_inv_t = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.log_inv_temperature = nn.Parameter(log_inv_t)
        else:
            self.register_buffer("log_inv_temperature", log_inv_t)
        self.to(device)

    @property
    def inv_temperature(self) -> torch.Tensor:
        return self.log_inv_temperature.exp()

    @property
    def output_dim(self) -> int:
        return int(self.config.embedding_dim)

    @property
    def has_item_bias(self) -> bool:
        return bool(self.config.item_bias)

    def _pooled(self, sparse: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        return self.sparse_arch(sparse).to_dict()

    def encode_users(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.user_tower(self._pooled(sparse), dense)

    def encode_items_with_bias(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.item_tower.forward_with_bias(self._pooled(sparse), dense)

    def forward(
        self,
        sparse: KeyedJaggedTensor,
        user_dense: torch.Tensor | None = None,
        item_dense: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        pooled = self._pooled(sparse)  # one lookup for both sides
        item, bias = self.item_tower.forward_with_bias(pooled, item_dense)
        return self.user_tower(pooled, user_dense), item, bias


@register_retrieval_model("mf", label="MF")
def build_matrix_factorization(
    config: Mapping[str, Any], schema: FeatureSchema, num_embeddings: Mapping[str, int]
) -> MatrixFactorization:
    """The ``mf`` retriever of ``configs/model/mf.yaml`` (keys of :class:`MFConfig`)."""
    return MatrixFactorization(schema, num_embeddings, build(MFConfig, config, "model"))
