"""The retrieval-model interface: what training, export and serving ask of a retriever.

A retrieval model scores a (user, item) pair as an inner product, so that a FAISS
index over item vectors answers its top-k. Every retriever of the project is built
the TorchRec way: one :class:`torchrec.EmbeddingBagCollection` (``sparse_arch``)
over the features of both sides, and two *tower* modules that map the pooled
embeddings (and dense inputs) of one side to a vector. That is what the trainer
(:class:`recsys.training.retrieval.RetrievalTrainer`), the ONNX export (the tower
twins of :mod:`recsys.export.twins`) and the bundle writer use, and nothing else.

The rules that turn tower outputs into search vectors live in one place,
:class:`QueryScaling`: a query vector is the user tower's output times ``scale``,
then a constant 1 appended when items carry an additive bias (their vectors then
end in the bias). The served query path (:mod:`recsys.runtime.engine`) applies the
same rule to the exported user tower's output.

New retrievers register a builder under a name (:mod:`recsys.models.registry`);
``configs/model/<name>.yaml`` selects one with its ``name:`` key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from recsys.features.schema import FeatureSchema


@dataclass(frozen=True)
class QueryScaling:
    """How a user tower's output becomes a query vector for inner-product search.

    Attributes:
        embedding_dim: width of the user tower's output.
        scale: factor applied to it (the inverse softmax temperature; 1 for raw dots).
        append_one: a constant 1 is appended (items end in their additive bias).

    Example:
        >>> QueryScaling(embedding_dim=64, scale=20.0, append_one=True).dim
        65
    """

    embedding_dim: int
    scale: float
    append_one: bool

    @property
    def dim(self) -> int:
        """Width of the query and item vectors in the index."""
        return self.embedding_dim + int(self.append_one)


class RetrievalModel(nn.Module):
    """Base of every retrieval model (the two-tower model is the reference).

    Subclasses set the attributes below in ``__init__`` and implement
    :meth:`encode_users`, :meth:`encode_items_with_bias`, :attr:`inv_temperature`,
    :attr:`output_dim` and :attr:`has_item_bias`; scoring and the search vectors
    follow from those here, once for every retriever.

    Attributes:
        schema: the features the model reads (roles: user/context vs item side).
        feature_names: its sparse features, KJT key order.
        sparse_arch: the one EmbeddingBagCollection over all of them.
        user_tower: the query side (exported as ``user_tower``): a module with
            ``feature_names``, ``num_dense`` and ``forward(pooled, dense)``.
        item_tower: the candidate side (exported as ``item_tower``), also with
            ``forward_with_bias(pooled, dense)``.
        user_dense: dense features of the user side, in input order.
        item_dense: dense features of the item side.
    """

    schema: FeatureSchema
    feature_names: list[str]
    sparse_arch: EmbeddingBagCollection
    user_tower: nn.Module
    item_tower: nn.Module
    user_dense: list[str]
    item_dense: list[str]

    @property
    def inv_temperature(self) -> torch.Tensor:
        """Scale of the training logits (and of the served query vectors)."""
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        """Width of both towers' outputs."""
        raise NotImplementedError

    @property
    def has_item_bias(self) -> bool:
        """Items carry an additive score."""
        raise NotImplementedError

    def encode_users(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor | None = None
    ) -> torch.Tensor:
        """User (query) embeddings ``[B, D]`` from a KJT holding ``feature_names``."""
        raise NotImplementedError

    def encode_items_with_bias(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Item embeddings ``[B, D]`` and their biases ``[B]`` (None without bias)."""
        raise NotImplementedError

    def encode_items(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Item (candidate) embeddings ``[B, D]``."""
        return self.encode_items_with_bias(sparse, dense)[0]

    def forward(
        self,
        sparse: KeyedJaggedTensor,
        user_dense: torch.Tensor | None = None,
        item_dense: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Both sides on one KJT of B (user, item) pairs: ``(users, items, item_bias)``.

        Subclasses may override it to pool the KJT once for both towers.
        """
        items, bias = self.encode_items_with_bias(sparse, item_dense)
        return self.encode_users(sparse, user_dense), items, bias

    def score(
        self, users: torch.Tensor, items: torch.Tensor, item_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores ``[U, I]`` of every user against every item."""
        logits = (users @ items.T) * self.inv_temperature
        return logits if item_bias is None else logits + item_bias[None, :]

    def query_scaling(self) -> QueryScaling:
        """The rule that turns user tower outputs into query vectors."""
        return QueryScaling(
            embedding_dim=int(self.output_dim),
            scale=float(self.inv_temperature.detach()),
            append_one=bool(self.has_item_bias),
        )

    def query_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """User embeddings scaled for inner-product search (``[U, D(+1)]``)."""
        return scaled_queries(users, self.inv_temperature, self.has_item_bias)

    def item_vectors(self, items: torch.Tensor, item_bias: torch.Tensor | None) -> torch.Tensor:
        """Item vectors whose inner product with :meth:`query_vectors` is :meth:`score`."""
        return biased_items(items, item_bias)


def scaled_queries(
    users: torch.Tensor, scale: torch.Tensor | float, append_one: bool
) -> torch.Tensor:
    """Query vectors ``[U, D(+1)]`` from user tower outputs ``[U, D]`` (:class:`QueryScaling`)."""
    q = users * scale
    if append_one:
        q = torch.cat([q, torch.ones(len(q), 1, dtype=q.dtype, device=q.device)], dim=1)
    return q


def biased_items(items: torch.Tensor, item_bias: torch.Tensor | None) -> torch.Tensor:
    """Item vectors whose inner product with :func:`scaled_queries` is the model's score."""
    if item_bias is None:
        return items
    return torch.cat([items, item_bias[:, None]], dim=1)
