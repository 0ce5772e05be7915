"""Models are picked by name from their config; unknown names and keys are errors."""

from __future__ import annotations

import pytest
import torch

from recsys.config import ConfigError
from recsys.features.schema import FeatureSchema
from recsys.models import registry
from recsys.models.two_tower import TwoTower

SCHEMA = FeatureSchema.from_dict(
    {
        "name": "t",
        "features": [
            {"name": "user_id", "kind": "categorical", "role": "user"},
            {"name": "gender", "kind": "categorical", "role": "user"},
            {"name": "hour", "kind": "categorical", "role": "context"},
            {"name": "item_id", "kind": "categorical", "role": "item"},
        ],
    }
)
SIZES = {"user_id": 5, "gender": 3, "hour": 24, "item_id": 7}
TOWER = {"layer_sizes": [8]}


def test_the_registered_models_are_listed() -> None:
    assert "two_tower" in registry.retrieval_models()
    assert {"dlrm", "dlrm_dcn"} <= set(registry.ranker_archs())


def test_the_name_key_picks_the_model_and_exclude_features_applies_to_any() -> None:
    tt = registry.build_retrieval_model(
        {"name": "two_tower", "embedding_dim": 8, "user_tower": TOWER, "item_tower": TOWER,
         "exclude_features": ["hour"]}, SCHEMA, SIZES,
    )  # fmt: skip
    assert isinstance(tt, TwoTower) and "hour" not in tt.feature_names


def test_unknown_names_and_keys_are_errors_that_name_them() -> None:
    with pytest.raises(
        registry.UnknownModelError, match=r"unknown retrieval model 'svd'.*two_tower"
    ):
        registry.build_retrieval_model({"name": "svd"}, SCHEMA, SIZES)
    with pytest.raises(registry.UnknownModelError, match="no `name:` key"):
        registry.build_retrieval_model({"embedding_dim": 4}, SCHEMA, SIZES)
    with pytest.raises(ConfigError, match=r"unknown key model\.embeding_dim"):
        registry.build_retrieval_model({"name": "two_tower", "embeding_dim": 4}, SCHEMA, SIZES)
    with pytest.raises(registry.UnknownModelError, match="unknown features"):
        registry.build_retrieval_model(
            {"name": "two_tower", "exclude_features": ["genres"]}, SCHEMA, SIZES
        )
    with pytest.raises(registry.UnknownModelError, match="unknown ranker arch 'wide'"):
        registry.ranker_arch("wide")


def test_the_two_tower_scales_its_queries_by_the_shared_rule() -> None:
    model = registry.build_retrieval_model(
        {"name": "two_tower", "embedding_dim": 8, "user_tower": {"layer_sizes": [4]},
         "item_tower": {"layer_sizes": [4]}, "item_bias": True, "temperature": 0.1},
        SCHEMA, SIZES,
    )  # fmt: skip
    scaling = model.query_scaling()
    assert (scaling.embedding_dim, scaling.append_one, scaling.dim) == (4, True, 5)
    assert scaling.scale == pytest.approx(10.0)
    users, items, bias = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)
    q, v = model.query_vectors(users), model.item_vectors(items, bias)
    torch.testing.assert_close(q @ v.T, model.score(users, items, bias))
