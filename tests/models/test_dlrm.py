"""DLRM ranker construction: shapes, seeding, shared tables, validation, KJT packing."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchrec.models.dlrm import DLRM, DLRM_DCN

from recsys.models.dlrm import (
    Ranker,
    RankerConfig,
    build_ranker,
    embedding_bag_configs,
    ids_to_kjt,
)

NAMES = ["C1", "C2", "C3"]
SIZES = [10, 20, 30]


def _small(**kwargs: object) -> RankerConfig:
    base: dict[str, object] = {
        "embedding_dim": 4,
        "dense_arch_layer_sizes": (8, 4),
        "over_arch_layer_sizes": (8, 1),
    }
    base.update(kwargs)
    return RankerConfig(**base)  # type: ignore[arg-type]


def _batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, n, (b,), generator=g) for n in SIZES], dim=1)
    return torch.rand(b, 5, generator=g), ids


@pytest.mark.parametrize(("arch", "cls"), [("dlrm", DLRM), ("dlrm_dcn", DLRM_DCN)])
def test_forward_gives_one_logit_per_example(arch: str, cls: type[nn.Module]) -> None:
    model = build_ranker(_small(arch=arch), NAMES, SIZES, num_dense=5)
    assert isinstance(model.dlrm, cls)
    dense, ids = _batch()
    logits = model(dense, ids_to_kjt(ids, NAMES))
    assert logits.shape == (6,) and torch.isfinite(logits).all()
    # Same as TorchRec's own DLRM forward (our forward only skips a copy).
    torch.testing.assert_close(logits, model.dlrm(dense, ids_to_kjt(ids, NAMES)).squeeze(-1))


def test_table_per_feature_with_the_given_sizes() -> None:
    model = build_ranker(_small(), NAMES, SIZES, num_dense=5)
    tables = model.dlrm.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    assert [(t.name, t.num_embeddings, t.embedding_dim) for t in tables] == [
        ("t_C1", 10, 4),
        ("t_C2", 20, 4),
        ("t_C3", 30, 4),
    ]
    assert model.num_embeddings_per_feature == (10, 20, 30)
    assert sum(p.numel() for p in model.sparse_parameters()) == 60 * 4


def test_sizes_can_come_from_the_config() -> None:
    model = build_ranker(_small(num_embeddings_per_feature=(3, 4, 5)), NAMES, num_dense=2)
    assert model.num_embeddings_per_feature == (3, 4, 5)
    with pytest.raises(ValueError, match="table sizes missing"):
        build_ranker(_small(), NAMES, num_dense=2)


def test_seed_fixes_the_initialization_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_ranker(_small(seed=7), NAMES, SIZES, num_dense=5)
    assert torch.equal(torch.rand(3), expected_next)  # building drew nothing from it
    b = build_ranker(_small(seed=7), NAMES, SIZES, num_dense=5)
    c = build_ranker(_small(seed=8), NAMES, SIZES, num_dense=5)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.sparse_parameters()[0].detach(), c.sparse_parameters()[0].detach())


def test_shared_table_gives_features_the_same_embedding_for_the_same_id() -> None:
    cfg = _small(shared_tables={"item_ids": ("C1", "C3")})
    model = build_ranker(cfg, NAMES, SIZES, num_dense=5)
    tables = model.dlrm.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    assert [(t.name, t.num_embeddings, t.feature_names) for t in tables] == [
        ("item_ids", 30, ["C1", "C3"]),  # as large as its largest feature
        ("t_C2", 20, ["C2"]),
    ]
    ids = torch.tensor([[4, 1, 4], [9, 2, 7]])
    pooled = model.dlrm.sparse_arch.embedding_bag_collection(ids_to_kjt(ids, NAMES)).to_dict()
    torch.testing.assert_close(pooled["C1"][0], pooled["C3"][0])
    assert not torch.allclose(pooled["C1"][1], pooled["C3"][1])
    # The model still scores correctly with the features in a different table order.
    logits = model(torch.rand(2, 5), ids_to_kjt(ids, NAMES))
    assert logits.shape == (2,)


def test_gradients_reach_only_the_rows_a_batch_uses() -> None:
    model = build_ranker(_small(), NAMES, SIZES, num_dense=5)
    dense = torch.rand(2, 5)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    model(dense, ids_to_kjt(ids, NAMES)).sum().backward()
    grad = model.sparse_parameters()[0].grad
    assert grad is not None
    touched = grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched == [1, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "wide_deep"}, "arch must be one of"),
        ({"dense_arch_layer_sizes": (8, 5)}, "equal embedding_dim"),
        ({"over_arch_layer_sizes": (8, 2)}, "ending in 1"),
        ({"over_arch_layer_sizes": (1,)}, ">= 2 layers"),
        ({"arch": "dlrm_dcn", "dcn_num_layers": 0}, "dcn_num_layers"),
    ],
)
def test_config_rejects_inconsistent_architectures(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _small(**kwargs)


def test_table_configs_reject_bad_names_and_sizes() -> None:
    with pytest.raises(ValueError, match="3 feature names but 2"):
        embedding_bag_configs(NAMES, [1, 2], 4)
    with pytest.raises(ValueError, match="duplicate"):
        embedding_bag_configs(["a", "a"], [1, 2], 4)
    with pytest.raises(ValueError, match=">= 1 row"):
        embedding_bag_configs(["a"], [0], 4)
    with pytest.raises(ValueError, match="unknown features"):
        embedding_bag_configs(["a", "b"], [3, 3], 4, {"t": ("a", "z")})
    with pytest.raises(ValueError, match="already"):
        embedding_bag_configs(["a", "b"], [3, 3], 4, {"t": ("a", "b"), "u": ("b",)})
    with pytest.raises(ValueError, match="module name"):
        embedding_bag_configs(["a", "b"], [3, 3], 4, {"items": ("a", "b")})
    with pytest.raises(ValueError, match="dense feature"):
        build_ranker(_small(), NAMES, SIZES, num_dense=0)


def test_ids_to_kjt_packs_one_id_per_feature() -> None:
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    kjt = ids_to_kjt(ids, NAMES)
    by_feature = kjt.to_dict()
    for j, name in enumerate(NAMES):
        assert by_feature[name].values().tolist() == ids[:, j].tolist()
        assert by_feature[name].lengths().tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        ids_to_kjt(torch.zeros(2, 2, dtype=torch.int64), NAMES)


def test_ranker_is_an_nn_module_with_its_metadata() -> None:
    model = build_ranker(_small(), NAMES, SIZES, num_dense=5)
    assert isinstance(model, Ranker) and isinstance(model, nn.Module)
    assert model.feature_names == tuple(NAMES) and model.num_dense == 5
    assert model.config.embedding_dim == 4
