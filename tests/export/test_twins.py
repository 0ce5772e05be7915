"""Padded-input twins compute exactly what the TorchRec models compute (in PyTorch)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.models.dlrm import DLRM

from recsys.export.twins import (
    ItemTowerTwin,
    PaddedEmbeddingBag,
    PaddedSparseArch,
    RankerTwin,
    UserTowerTwin,
    padded_to_kjt,
    random_padded_ids,
)
from recsys.features.batching import JaggedArray, make_kjt, to_padded_stack
from recsys.features.schema import FeatureSchema, Kind
from recsys.models.dlrm import RankerConfig, build_ranker, ids_to_kjt
from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig

TOL = 1e-5

SCHEMA = FeatureSchema.from_dict(
    {
        "name": "twins-test",
        "features": [
            {"name": "user_id", "kind": "categorical", "role": "user"},
            {"name": "recent", "kind": "sequence", "role": "user", "vocab_from": "item_id",
             "max_len": 6},
            {"name": "liked", "kind": "multi_hot", "role": "user", "vocab_from": "item_id",
             "max_len": 3},
            {"name": "activity", "kind": "dense", "role": "user"},
            {"name": "tenure", "kind": "dense", "role": "user"},
            {"name": "hour", "kind": "categorical", "role": "context",
             "vocab": {"policy": "identity", "size": 24}},
            {"name": "item_id", "kind": "categorical", "role": "item"},
            {"name": "genres", "kind": "multi_hot", "role": "item", "max_len": 4,
             "pooling": "sum", "embedding_dim": 8},
        ],
    }
)  # fmt: skip
SIZES = {"user_id": 30, "hour": 24, "item_id": 50, "genres": 12}


def _two_tower(seed: int = 0) -> TwoTower:
    config = TwoTowerConfig(
        embedding_dim=16,
        user_tower=TowerConfig((32, 16)),
        item_tower=TowerConfig((24, 16)),
        seed=seed,
    )
    return TwoTower(SCHEMA, SIZES, config).eval()


def _raw_bags(batch: int, rows: int, longest: int, rng: np.random.Generator) -> JaggedArray:
    lengths = rng.integers(0, longest + 1, size=batch)
    values = rng.integers(0, rows, size=int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return JaggedArray(values.astype(np.int64), offsets)


def _tower_batch(
    model: TwoTower, twin: UserTowerTwin | ItemTowerTwin, batch: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(KJT-model output, twin output) for the same random bags.

    Bags run up to twice their feature's ``max_len`` and are cut as the feature
    pipeline cuts them (sequences keep their last ids, bags their first); empty
    bags occur for every feature, categorical ones included.
    """
    rng = np.random.default_rng(seed)
    cut: dict[str, JaggedArray] = {}
    for name in twin.feature_names:
        spec = SCHEMA[name]
        rows = model.sparse_arch.embedding_bags[twin.sparse_arch.table_of[name]].num_embeddings
        longest = 1 if spec.kind is Kind.CATEGORICAL else 2 * spec.max_len
        raw = _raw_bags(batch, rows, longest, rng)
        keep: Literal["first", "last"] = "last" if spec.kind is Kind.SEQUENCE else "first"
        cut[name] = raw.truncate(spec.max_len, keep)
    other = [f for f in model.feature_names if f not in cut]
    empty = {f: JaggedArray(np.empty(0, np.int64), np.zeros(batch + 1, np.int64)) for f in other}
    kjt = make_kjt({**cut, **empty}, model.feature_names)
    dense = torch.rand(batch, twin.num_dense) if twin.num_dense else None
    if isinstance(twin, UserTowerTwin):
        expected = model.encode_users(kjt, dense)
    else:
        expected = model.encode_items(kjt, dense)
    ids = to_padded_stack(kjt, twin.feature_names, twin.seq_len)
    return expected, twin(ids, dense)


# -- PaddedEmbeddingBag ------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_padded_bag_equals_embedding_bag_with_empty_bags(pooling: str) -> None:
    torch.manual_seed(0)
    reference = nn.EmbeddingBag(40, 8, mode=pooling)
    bag = PaddedEmbeddingBag.from_weight(reference.weight, pooling)  # type: ignore[arg-type]
    ids = torch.tensor(
        [[3, 7, 7, -1, -1], [-1, -1, -1, -1, -1], [0, 39, 1, 2, 5], [9, -1, -1, -1, -1]]
    )
    values = ids[ids >= 0]
    offsets = torch.tensor([0, 3, 3, 8])
    expected = reference(values, offsets)
    got = bag(ids)
    assert torch.equal(got[1], torch.zeros(8)), "an empty bag must pool to zeros"
    assert (got - expected).abs().max().item() <= TOL
    assert bag.num_embeddings == 40 and bag.embedding_dim == 8


def test_padded_bag_ignores_masked_slots_and_rejects_bad_pooling() -> None:
    bag = PaddedEmbeddingBag(10, 4, "mean")
    ids = torch.tensor([[1, 2, 3]])
    first_only = bag(ids, torch.tensor([True, False, False]))
    torch.testing.assert_close(first_only, bag(torch.tensor([[1, -1, -1]])))
    with pytest.raises(ValueError, match="pooling"):
        PaddedEmbeddingBag(10, 4, "max")  # type: ignore[arg-type]


def test_shared_table_has_one_weight_copy() -> None:
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name="item_table", embedding_dim=4, num_embeddings=9, feature_names=["a", "b"],
                pooling=PoolingType.MEAN,
            ),
            EmbeddingBagConfig(name="c", embedding_dim=4, num_embeddings=5, feature_names=["c"]),
        ]
    )  # fmt: skip
    arch = PaddedSparseArch(ebc, ["c", "b", "a"], {"a": 2, "b": 3, "c": 1})
    assert arch.table_names == ["c", "item_table"] and len(arch.bags) == 2 and arch.seq_len == 3
    assert arch.num_embeddings == {"c": 5, "b": 9, "a": 9}
    ids = torch.tensor([[[4, 2, 1], [1, 2, 3], [5, 6, 7]]])
    kjt = padded_to_kjt(ids, ["c", "b", "a"], arch.max_len, keys=["a", "b", "c"])
    expected = ebc(kjt).to_dict()
    got = arch(ids)
    for name, pooled in zip(["c", "b", "a"], got, strict=True):
        assert (pooled - expected[name]).abs().max().item() <= TOL, name
    with pytest.raises(KeyError, match="no table"):
        PaddedSparseArch(ebc, ["a", "zzz"], {"a": 1, "zzz": 1})


def _mixed_collection() -> EmbeddingBagCollection:
    """Tables of two widths; ``shared`` serves a 1-id, two 3-id and a 4-id feature."""
    torch.manual_seed(1)
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name="shared", embedding_dim=4, num_embeddings=30,
                               feature_names=["one", "bag_a", "bag_b", "seq"],
                               pooling=PoolingType.MEAN),
            EmbeddingBagConfig(name="small", embedding_dim=4, num_embeddings=5,
                               feature_names=["cat"]),
            EmbeddingBagConfig(name="wide", embedding_dim=8, num_embeddings=7,
                               feature_names=["other"]),
        ]
    )  # fmt: skip


def test_sparse_arch_looks_up_each_table_at_each_width_and_matches_torchrec() -> None:
    ebc = _mixed_collection()
    # bag_a and bag_b share table and width but are not neighbours on the F axis;
    # the one-id features are not neighbours either.
    names = ["bag_a", "one", "seq", "cat", "bag_b", "other"]
    lengths = {"one": 1, "bag_a": 3, "bag_b": 3, "seq": 4, "cat": 1, "other": 1}
    arch = PaddedSparseArch(ebc, names, lengths)
    assert sorted(arch.lookups) == [
        ("shared", 1, ["one"]), ("shared", 3, ["bag_a", "bag_b"]), ("shared", 4, ["seq"]),
        ("small", 1, ["cat"]), ("wide", 1, ["other"]),
    ]  # fmt: skip
    sizes = {n: arch.num_embeddings[n] for n in names}
    ids = random_padded_ids(64, names, lengths, sizes, 4, torch.Generator().manual_seed(2))
    ids[0] = -1  # every bag of row 0 is empty
    expected = ebc(padded_to_kjt(ids, names, lengths, keys=ebc_keys(ebc))).to_dict()
    got = arch(ids)
    for name, pooled in zip(names, got, strict=True):
        assert pooled.shape == (64, arch.embedding_dims[name]), name
        assert (pooled - expected[name]).abs().max().item() <= TOL, name
        assert torch.equal(pooled[0], torch.zeros_like(pooled[0])), f"empty bag of {name}"
    with pytest.raises(ValueError, match="one embedding width"):
        arch.stacked(ids)


def test_stacked_follows_stack_order() -> None:
    ebc = _mixed_collection()
    names = ["seq", "cat", "one", "bag_a"]
    lengths = {"one": 1, "bag_a": 3, "seq": 4, "cat": 1}
    ids = random_padded_ids(
        9, names, lengths, {"one": 30, "bag_a": 30, "seq": 30, "cat": 5}, 4,
        torch.Generator().manual_seed(3),
    )  # fmt: skip
    pooled = dict(zip(names, PaddedSparseArch(ebc, names, lengths)(ids), strict=True))
    for order in (names, ["one", "bag_a", "cat", "seq"]):
        arch = PaddedSparseArch(ebc, names, lengths, stack_order=order)
        assert arch.stack_order == order
        torch.testing.assert_close(
            arch.stacked(ids), torch.stack([pooled[n] for n in order], dim=1), rtol=0, atol=0
        )
    with pytest.raises(ValueError, match="permutation"):
        PaddedSparseArch(ebc, names, lengths, stack_order=["seq", "cat", "one"])


def ebc_keys(ebc: EmbeddingBagCollection) -> list[str]:
    return [f for cfg in ebc.embedding_bag_configs() for f in cfg.feature_names]


# -- two-tower twins ---------------------------------------------------------------


def test_tower_twins_follow_the_schema() -> None:
    model = _two_tower()
    user, item = UserTowerTwin(model), ItemTowerTwin(model)
    assert user.feature_names == ["user_id", "recent", "liked", "hour"]
    assert user.max_len == {"user_id": 1, "recent": 6, "liked": 3, "hour": 1}
    assert user.seq_len == 6 and user.num_dense == 2 and user.input_names == ("ids", "dense")
    assert item.feature_names == ["item_id", "genres"] and item.seq_len == 4
    assert item.input_names == ("ids",)
    # recent and liked borrow the item id table: one bag module in the user twin.
    assert user.sparse_arch.table_of["recent"] == user.sparse_arch.table_of["liked"] == "t_item_id"
    assert len(user.sparse_arch.bags) == 3


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_user_tower_twin_matches_encode_users(batch: int) -> None:
    model = _two_tower()
    expected, got = _tower_batch(model, UserTowerTwin(model), batch, seed=batch)
    assert got.shape == (batch, 16)
    assert (got - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_item_tower_twin_matches_encode_items(batch: int) -> None:
    model = _two_tower()
    expected, got = _tower_batch(model, ItemTowerTwin(model), batch, seed=100 + batch)
    assert (got - expected).abs().max().item() <= TOL


def test_twin_is_a_snapshot_of_the_weights() -> None:
    model = _two_tower()
    twin = ItemTowerTwin(model)
    ids = twin.example_inputs(16, seed=3)[0]
    before = twin(ids)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.testing.assert_close(twin(ids), before, rtol=0, atol=0)


def test_slots_beyond_a_features_max_len_are_ignored() -> None:
    model = _two_tower()
    twin = UserTowerTwin(model)
    ids, dense = twin.example_inputs(5, seed=1)
    noisy = ids.clone()
    noisy[:, 0, 1:] = 7  # user_id reads slot 0 only
    noisy[:, 2, 3:] = 9  # liked reads 3 slots
    torch.testing.assert_close(twin(noisy, dense), twin(ids, dense), rtol=0, atol=0)


def test_random_padded_ids_respect_sizes_lengths_and_include_empty_bags() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = random_padded_ids(400, ["a", "b"], {"a": 1, "b": 3}, {"a": 5, "b": 7}, 4, gen)
    assert ids.shape == (400, 2, 4)
    assert int(ids[:, 0].max()) < 5 and int(ids[:, 1].max()) < 7
    assert bool((ids[:, 0, 1:] == -1).all()) and bool((ids[:, 1, 3] == -1).all())
    assert bool((ids[:, 1] == -1).all(dim=1).any()), "expected some empty bags"


# -- ranker twin -------------------------------------------------------------------

RANKER_FEATURES = ["item", "clicked", "device", "hour"]
RANKER_SIZES = [40, 40, 5, 24]


def _ranker(arch: str) -> torch.nn.Module:
    config = RankerConfig(
        arch=arch,  # type: ignore[arg-type]
        embedding_dim=8,
        dense_arch_layer_sizes=(16, 8),
        over_arch_layer_sizes=(16, 8, 1),
        dcn_num_layers=2,
        dcn_low_rank_dim=4,
        shared_tables={"item_table": ("item", "clicked")},
    )
    return build_ranker(config, RANKER_FEATURES, RANKER_SIZES, num_dense=3).eval()


@pytest.mark.parametrize("arch", ["dlrm", "dlrm_dcn"])
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_ranker_twin_matches_the_torchrec_ranker(arch: str, batch: int) -> None:
    ranker = _ranker(arch)
    # Feature order of the twin's input differs from the table order on purpose.
    order = ["hour", "clicked", "item", "device"]
    twin = RankerTwin(ranker, order, max_len={"clicked": 5})
    assert twin.seq_len == 5 and twin.num_dense == 3
    dense, ids = twin.example_inputs(batch, seed=batch)
    expected = ranker(dense, padded_to_kjt(ids, order, twin.max_len, keys=RANKER_FEATURES))
    logits, probs = twin(dense, ids)
    assert logits.shape == probs.shape == (batch,)
    assert (logits - expected).abs().max().item() <= TOL
    assert (probs - torch.sigmoid(expected)).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ["dlrm", "dlrm_dcn"])
def test_a_per_list_ranker_twin_scores_every_candidate_as_the_per_pair_twin(arch: str) -> None:
    ranker = _ranker(arch)
    order = ["hour", "clicked", "item", "device"]
    lists = RankerTwin(ranker, order, {"clicked": 5}, list_features=["clicked", "hour"])
    pairs = RankerTwin(ranker, order, {"clicked": 5})
    assert lists.per_list and not pairs.per_list
    assert (lists.feature_names, lists.list_feature_names) == (["item", "device"],
                                                                ["clicked", "hour"])  # fmt: skip
    assert (lists.seq_len, lists.list_seq_len) == (1, 5) and lists.max_len == pairs.max_len
    # item and clicked share a table: the two archs share its one bag
    assert lists.sparse_arch.bag("item_table") is lists.list_arch.bag("item_table")  # type: ignore[union-attr]
    dense, ids, list_ids = lists.example_inputs(4, candidates=6)
    flat_dense, flat_ids, names, lengths = lists.pair_inputs(dense, ids, list_ids)
    logits, probs = lists(dense, ids, list_ids)
    assert logits.shape == probs.shape == (4, 6)
    per_pair = flat_ids[:, [names.index(f) for f in order]]
    expected = pairs(flat_dense, per_pair)[0]
    assert (logits.reshape(-1) - expected).abs().max().item() <= TOL
    torchrec = ranker(flat_dense, padded_to_kjt(flat_ids, names, lengths, keys=RANKER_FEATURES))
    assert (logits.reshape(-1) - torchrec).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="takes list_ids"):
        lists(dense, ids)
    with pytest.raises(ValueError, match="distinct features"):
        RankerTwin(ranker, order, list_features=["clicked", "nope"])
    with pytest.raises(ValueError, match="per-candidate feature"):
        RankerTwin(ranker, order, list_features=order)


def test_ranker_twin_of_a_bare_torchrec_dlrm() -> None:
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name=f"t{i}", embedding_dim=4, num_embeddings=n,
                               feature_names=[f"f{i}"])
            for i, n in enumerate([6, 9])
        ]
    )  # fmt: skip
    dlrm = DLRM(ebc, dense_in_features=2, dense_arch_layer_sizes=[8, 4],
                over_arch_layer_sizes=[4, 1])  # fmt: skip
    twin = RankerTwin(dlrm)
    assert twin.feature_names == ["f0", "f1"] and twin.seq_len == 1
    dense, ids = twin.example_inputs(9)
    logits, _ = twin(dense, ids)
    expected = dlrm(dense, padded_to_kjt(ids, ["f0", "f1"])).squeeze(-1)
    assert (logits - expected).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="permutation"):
        RankerTwin(dlrm, ["f0", "f2"])


def test_one_hot_ranker_ids_match_ids_to_kjt() -> None:
    ranker = _ranker("dlrm")
    twin = RankerTwin(ranker)
    gen = torch.Generator().manual_seed(0)
    flat = torch.stack([torch.randint(0, n, (11,), generator=gen) for n in RANKER_SIZES], dim=1)
    dense = torch.rand(11, 3, generator=gen)
    expected = ranker(dense, ids_to_kjt(flat, RANKER_FEATURES))
    logits, _ = twin(dense, flat.unsqueeze(-1))
    assert (logits - expected).abs().max().item() <= TOL
