"""Two-tower model: schema-driven towers, shared tables, unit outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.features.batching import make_kjt
from recsys.features.schema import FeatureSchema
from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig

SCHEMA = FeatureSchema.from_dict(
    {
        "name": "toy",
        "features": [
            {"name": "user_id", "kind": "categorical", "role": "user"},
            {
                "name": "hist",
                "kind": "multi_hot",
                "role": "user",
                "max_len": 4,
                "vocab_from": "item_id",
            },
            {
                "name": "hour",
                "kind": "categorical",
                "role": "context",
                "vocab": {"policy": "identity", "size": 24},
            },
            {"name": "item_id", "kind": "categorical", "role": "item"},
            {"name": "genre", "kind": "multi_hot", "role": "item", "max_len": 3},
        ],
    }
)
SIZES = {"user_id": 5, "item_id": 7, "hour": 24, "genre": 4}


def _kjt(model: TwoTower) -> object:
    ids = {
        "user_id": np.array([1, 2, 3]),
        "hist": [np.array([1, 2]), np.array([], dtype=np.int64), np.array([6])],
        "hour": np.array([0, 5, 23]),
        "item_id": np.array([4, 5, 6]),
        "genre": [np.array([1]), np.array([2, 3]), np.array([], dtype=np.int64)],
    }
    return make_kjt(ids, model.feature_names)


def test_towers_follow_schema_roles_and_share_the_item_table() -> None:
    model = TwoTower(
        SCHEMA,
        SIZES,
        TwoTowerConfig(
            embedding_dim=8, user_tower=TowerConfig((16, 8)), item_tower=TowerConfig((16, 8))
        ),
    )
    assert model.user_tower.feature_names == ["user_id", "hist", "hour"]
    assert model.item_tower.feature_names == ["item_id", "genre"]
    tables = {c.name: c.feature_names for c in model.sparse_arch.embedding_bag_configs()}
    assert tables["t_item_id"] == ["hist", "item_id"]
    assert "t_hist" not in tables


def test_outputs_are_unit_vectors_and_towers_agree_with_forward() -> None:
    model = TwoTower(
        SCHEMA,
        SIZES,
        TwoTowerConfig(
            embedding_dim=8, user_tower=TowerConfig((16, 8)), item_tower=TowerConfig((16, 8))
        ),
    )
    model.eval()
    kjt = _kjt(model)
    u, v, bias = model(kjt)
    assert bias is None
    assert u.shape == v.shape == (3, 8)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(model.encode_users(kjt), u)
    torch.testing.assert_close(model.encode_items(kjt), v)


def test_unshared_tables_when_disabled() -> None:
    cfg = TwoTowerConfig(
        embedding_dim=8,
        share_item_table=False,
        user_tower=TowerConfig((8,)),
        item_tower=TowerConfig((8,)),
    )
    with pytest.raises(ValueError, match="hist"):
        TwoTower(SCHEMA, SIZES, cfg)  # hist then needs a table size of its own
    model = TwoTower(SCHEMA, {**SIZES, "hist": 7}, cfg)
    names = {c.name for c in model.sparse_arch.embedding_bag_configs()}
    assert {"t_hist", "t_item_id"} <= names


def test_mismatched_output_dims_are_rejected() -> None:
    cfg = TwoTowerConfig(user_tower=TowerConfig((16, 8)), item_tower=TowerConfig((16, 4)))
    with pytest.raises(ValueError, match="same output dimension"):
        TwoTower(SCHEMA, SIZES, cfg)


def test_learned_temperature_is_a_parameter() -> None:
    fixed = TwoTower(SCHEMA, SIZES, TwoTowerConfig(temperature=0.1))
    learned = TwoTower(SCHEMA, SIZES, TwoTowerConfig(temperature=0.1, learn_temperature=True))
    assert "log_inv_temperature" not in dict(fixed.named_parameters())
    assert "log_inv_temperature" in dict(learned.named_parameters())
    torch.testing.assert_close(fixed.inv_temperature, torch.tensor(10.0))


def test_item_bias_is_folded_into_inner_product_vectors() -> None:
    cfg = TwoTowerConfig(
        embedding_dim=8,
        item_bias=True,
        user_tower=TowerConfig((16, 8)),
        item_tower=TowerConfig((16, 8)),
    )
    model = TwoTower(SCHEMA, SIZES, cfg)
    with torch.no_grad():
        model.item_tower.bias.weight.normal_()  # type: ignore[union-attr]
    model.eval()
    kjt = _kjt(model)
    u, v, bias = model(kjt)
    assert bias is not None and bias.shape == (3,)
    scores = model.score(u, v, bias)
    inner = model.query_vectors(u) @ model.item_vectors(v, bias).T
    torch.testing.assert_close(inner, scores)
    torch.testing.assert_close(model.encode_items_with_bias(kjt)[1], bias)
