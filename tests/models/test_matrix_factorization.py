"""The ``mf`` retriever: registered by its own module, scored as its factors' inner product."""

from __future__ import annotations

import pytest
import torch

from recsys.config import ConfigError
from recsys.features.schema import FeatureSchema
from recsys.models import registry
from recsys.models.matrix_factorization import MatrixFactorization

SCHEMA = FeatureSchema.from_dict(
    {
        "name": "t",
        "features": [
            {"name": "user_id", "kind": "categorical", "role": "user"},
            {"name": "gender", "kind": "categorical", "role": "user"},
            {"name": "item_id", "kind": "categorical", "role": "item"},
        ],
    }
)
SIZES = {"user_id": 5, "gender": 3, "item_id": 7}


def test_mf_is_picked_by_name_and_reads_the_ids_only() -> None:
    assert "mf" in registry.retrieval_models()
    model = registry.build_retrieval_model({"name": "mf", "embedding_dim": 4}, SCHEMA, SIZES)
    assert isinstance(model, MatrixFactorization)
    assert model.feature_names == ["user_id", "item_id"]
    assert [f.name for f in model.schema] == ["user_id", "item_id"]
    with pytest.raises(ConfigError, match=r"unknown key model\.factors"):
        registry.build_retrieval_model({"name": "mf", "factors": 4}, SCHEMA, SIZES)


def test_queries_and_item_vectors_reproduce_the_score() -> None:
    model = registry.build_retrieval_model(
        {"name": "mf", "embedding_dim": 4, "temperature": 0.1}, SCHEMA, SIZES
    )
    scaling = model.query_scaling()
    assert (scaling.embedding_dim, scaling.append_one, scaling.dim) == (4, True, 5)
    assert scaling.scale == pytest.approx(10.0)
    users, items, bias = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)
    q, v = model.query_vectors(users), model.item_vectors(items, bias)
    torch.testing.assert_close(q @ v.T, model.score(users, items, bias))


def test_raw_dot_products_keep_the_factor_norms() -> None:
    model = registry.build_retrieval_model(
        {"name": "mf", "embedding_dim": 4, "normalize": False, "temperature": 1.0}, SCHEMA, SIZES
    )
    pooled = {"user_id": torch.full((2, 4), 3.0)}
    assert torch.allclose(model.user_tower(pooled, None), pooled["user_id"])
    cosine = registry.build_retrieval_model(
        {"name": "mf", "embedding_dim": 4, "normalize": True}, SCHEMA, SIZES
    )
    assert torch.allclose(cosine.user_tower(pooled, None).norm(dim=1), torch.ones(2))


def test_a_schema_without_the_id_feature_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"sparse item feature 'movie'.*model\.item_feature"):
        registry.build_retrieval_model({"name": "mf", "item_feature": "movie"}, SCHEMA, SIZES)
    with pytest.raises(ValueError, match="sparse user feature 'item_id'"):
        registry.build_retrieval_model({"name": "mf", "user_feature": "item_id"}, SCHEMA, SIZES)
