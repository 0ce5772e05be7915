"""KJT batches: layout vs slow references, loader epochs, padding, an EmbeddingBagCollection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys.data.movielens import load_ml100k
from recsys.data.splits import stratified_split
from recsys.features.batching import (
    PAD,
    Batch,
    EpochBatchSampler,
    JaggedArray,
    encode_features,
    make_dataset,
    make_kjt,
    make_loader,
    to_padded,
    to_padded_stack,
)
from recsys.features.build import build_features, join_features
from recsys.features.schema import FeatureSchema, Role
from recsys.features.store import ProcessedDataset

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs" / "schema" / "ml100k.yaml"
ALL_ROLES = (Role.USER, Role.CONTEXT, Role.ITEM)


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(SCHEMA_FILE)


@pytest.fixture(scope="module")
def dataset(ml100k_dir: Path, schema: FeatureSchema) -> ProcessedDataset:
    data = load_ml100k(ml100k_dir)
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    return build_features(data, (train, test), schema)


def _random_rows(rng: np.random.Generator, n: int, max_len: int) -> list[np.ndarray]:
    return [rng.integers(0, 100, rng.integers(0, max_len + 1)) for _ in range(n)]


# -- make_kjt -------------------------------------------------------------------------


def test_make_kjt_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(0)
    n = 37
    encoded = {
        "a": rng.integers(0, 50, n),
        "b": _random_rows(rng, n, 6),
        "c": JaggedArray.from_lists(_random_rows(rng, n, 3)),
    }
    names = ["b", "a", "c"]
    kjt = make_kjt(encoded, names)
    rows: dict[str, list[list[int]]] = {
        "a": [[int(x)] for x in encoded["a"]],
        "b": [r.tolist() for r in encoded["b"]],
        "c": [
            encoded["c"].values[encoded["c"].offsets[i] : encoded["c"].offsets[i + 1]].tolist()
            for i in range(n)
        ],
    }
    ref_values = [x for name in names for row in rows[name] for x in row]
    ref_lengths = [len(row) for name in names for row in rows[name]]
    assert kjt.keys() == names
    assert kjt.values().dtype == torch.int64
    assert kjt.values().tolist() == ref_values
    assert kjt.lengths().tolist() == ref_lengths
    assert kjt.offsets().tolist() == np.r_[0, np.cumsum(ref_lengths)].tolist()
    assert kjt.stride() == n
    assert kjt.length_per_key() == [sum(map(len, rows[k])) for k in names]
    for name in names:
        assert [t.tolist() for t in kjt[name].to_dense()] == rows[name]
    with pytest.raises(ValueError, match="rows, expected"):
        make_kjt({"a": np.arange(3), "b": np.arange(4)}, ["a", "b"])
    with pytest.raises(KeyError, match="'z'"):
        make_kjt(encoded, ["a", "z"])


def test_jagged_rows_gather_and_truncate() -> None:
    rng = np.random.default_rng(1)
    rows = _random_rows(rng, 50, 8)
    jagged = JaggedArray.from_lists(rows)
    pick = rng.permutation(50)[:20]
    values, lengths = jagged.rows(pick)
    assert values.tolist() == [x for i in pick for x in rows[i].tolist()]
    assert lengths.tolist() == [len(rows[i]) for i in pick]
    values, lengths = jagged.rows(slice(10, 15))
    assert values.tolist() == [x for r in rows[10:15] for x in r.tolist()]
    last = jagged.truncate(3, "last")
    first = jagged.truncate(3, "first")
    for i, r in enumerate(rows):
        assert last.values[last.offsets[i] : last.offsets[i + 1]].tolist() == r.tolist()[-3:]
        assert first.values[first.offsets[i] : first.offsets[i + 1]].tolist() == r.tolist()[:3]


# -- encoded batches on the real data -------------------------------------------------


def test_batches_equal_per_row_encoding(dataset: ProcessedDataset, schema: FeatureSchema) -> None:
    assert dataset.vocabs is not None
    vocabs = dataset.vocabs
    frame = join_features(dataset.train, dataset.users, dataset.items)
    features = schema.by_role(*ALL_ROLES)
    encoded = encode_features(frame, features, vocabs, label_column="rating")
    rows = np.random.default_rng(3).choice(len(frame), 64, replace=False)
    batch = encoded.batch(rows)
    assert batch.sparse.keys() == [f.name for f in features]
    assert batch.dense.shape == (64, 0) and batch.dense.dtype == torch.float32
    assert batch.labels is not None
    np.testing.assert_array_equal(batch.labels.numpy(), frame["rating"].to_numpy()[rows])
    for f in features:  # slow reference: one row at a time
        expected: list[list[int]] = []
        for r in rows:
            raw = frame[f.source].iloc[r]
            ids = vocabs.encode(f.name, np.asarray(raw) if f.max_len > 1 else [raw]).tolist()
            expected.append(ids[-f.max_len :] if f.kind == "sequence" else ids[: f.max_len])
        got = [t.tolist() for t in batch.sparse[f.name].to_dense()]
        assert got == expected, f.name
    # recent items: most recent last, never more than max_len
    lengths = batch.sparse["user_recent_items"].lengths()
    assert int(lengths.max()) <= 50


def test_loader_epochs_cover_every_row_once_and_are_seeded(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    table = join_features(dataset.train, dataset.users, dataset.items)
    table["row"] = np.arange(len(table), dtype=np.float32)
    loader = make_loader(
        table, schema, ALL_ROLES, 4096, True, seed=7, vocabs=dataset.vocabs, label_column="row"
    )
    seen = [b.labels.numpy().astype(np.int64) for b in loader if b.labels is not None]
    assert len(seen) == len(loader) == -(-len(table) // 4096)
    first = np.concatenate(seen)
    assert sorted(first.tolist()) == list(range(len(table)))
    assert not np.array_equal(first, np.arange(len(table)))  # shuffled
    second = np.concatenate([b.labels.numpy() for b in loader if b.labels is not None])
    assert not np.array_equal(first, second)  # a new permutation each epoch
    again = make_loader(
        table, schema, ALL_ROLES, 4096, True, seed=7, vocabs=dataset.vocabs, label_column="row"
    )
    np.testing.assert_array_equal(
        np.concatenate([b.labels.numpy() for b in again if b.labels is not None]), first
    )
    ordered = make_loader(table, schema, [Role.ITEM], 1000, False, vocabs=dataset.vocabs)
    sizes = [b.batch_size for b in ordered]
    assert sizes[:-1] == [1000] * (len(sizes) - 1) and sum(sizes) == len(table)


def test_worker_process_gives_the_same_batches(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    kwargs = {"split": "test", "label_column": "rating"}
    here = make_loader(dataset, schema, ALL_ROLES, 8192, True, seed=3, **kwargs)
    there = make_loader(dataset, schema, ALL_ROLES, 8192, True, seed=3, num_workers=1, **kwargs)
    for a, b in zip(here, there, strict=True):
        assert a.sparse.keys() == b.sparse.keys()
        assert torch.equal(a.sparse.values(), b.sparse.values())
        assert torch.equal(a.sparse.lengths(), b.sparse.lengths())
        assert a.labels is not None and b.labels is not None
        assert torch.equal(a.labels, b.labels)


def test_test_split_uses_end_of_training_user_state(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    ds = make_dataset(dataset, schema, [Role.USER], split="test")
    batch = ds[slice(0, 50)]
    assert dataset.vocabs is not None
    state = dataset.users.set_index("user_id")["recent_items"]
    for i, user in enumerate(dataset.test["user_id"][:50]):
        expected = dataset.vocabs.encode("item_id", state[user]).tolist()
        assert batch.sparse["user_recent_items"].to_dense()[i].tolist() == expected


def test_embedding_bag_collection_runs_on_a_batch(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    assert dataset.vocabs is not None
    sizes = dataset.vocabs.num_embeddings()
    tables = []
    for f in schema.sparse():
        if f.vocab_from:
            continue
        users = [g.name for g in schema.sparse() if g.name == f.name or g.vocab_from == f.name]
        tables.append(
            EmbeddingBagConfig(
                name=f"t_{f.name}",
                embedding_dim=8,
                num_embeddings=sizes[f.name],
                feature_names=users,
                pooling=PoolingType.MEAN if f.pooling == "mean" else PoolingType.SUM,
            )
        )
    ebc = EmbeddingBagCollection(tables=tables)
    loader = make_loader(dataset, schema, ALL_ROLES, 512, True, seed=0)
    batch = next(iter(loader))
    pooled = ebc(batch.sparse)
    assert pooled.values().shape == (512, 8 * len(schema.sparse()))
    assert torch.isfinite(pooled.values()).all()
    pooled.values().sum().backward()
    grad = ebc.embedding_bags["t_item_id"].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_empty_features_and_missing_columns(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    items = [f.name for f in schema.by_role(Role.ITEM)]
    ds = make_dataset(dataset, schema, [Role.USER, Role.CONTEXT], empty_features=items)
    batch = ds[np.arange(10)]
    assert batch.sparse.keys() == [f.name for f in schema]  # schema order, empties included
    for name in items:
        assert batch.sparse[name].lengths().tolist() == [0] * 10
    with pytest.raises(KeyError, match="genres"):
        make_dataset(dataset.train, schema, [Role.ITEM], vocabs=dataset.vocabs)
    with pytest.raises(ValueError, match="vocabularies"):
        make_dataset(dataset.items, schema, [Role.ITEM])


def test_batch_to_device_keeps_contents(dataset: ProcessedDataset, schema: FeatureSchema) -> None:
    batch = make_dataset(dataset, schema, ALL_ROLES, label_column="rating")[np.arange(32)]
    moved = batch.to("cpu")
    assert isinstance(moved, Batch)
    assert torch.equal(moved.sparse.values(), batch.sparse.values())
    assert moved.labels is not None and batch.labels is not None
    assert torch.equal(moved.labels, batch.labels)


@pytest.mark.gpu
def test_pinned_batch_moves_to_gpu(dataset: ProcessedDataset, schema: FeatureSchema) -> None:
    batch = make_dataset(dataset, schema, ALL_ROLES, label_column="rating")[np.arange(256)]
    pinned = batch.pin_memory()
    assert pinned.sparse.values().is_pinned() and pinned.dense.is_pinned()
    on_gpu = pinned.to("cuda", non_blocking=True)
    assert on_gpu.sparse.values().is_cuda
    assert torch.equal(on_gpu.sparse.values().cpu(), batch.sparse.values())
    loader = make_loader(dataset, schema, ALL_ROLES, 256, False, pin_memory=True)
    assert next(iter(loader)).sparse.values().is_pinned()


# -- padding --------------------------------------------------------------------------


def _reference_padded(rows: list[list[int]], length: int, align: str, keep: str) -> list[list[int]]:
    out = []
    for r in rows:
        kept = r[-length:] if keep == "last" else r[:length]
        kept = kept if len(kept) <= length else kept[:length]
        pad = [PAD] * (length - len(kept))
        out.append(kept + pad if align == "left" else pad + kept)
    return out


@pytest.mark.parametrize("align", ["left", "right"])
@pytest.mark.parametrize("keep", ["last", "first"])
def test_to_padded_matches_a_slow_reference(align: str, keep: str) -> None:
    rng = np.random.default_rng(5)
    rows = [r.tolist() for r in _random_rows(rng, 40, 9)]
    rows[0] = []
    kjt = make_kjt({"s": [np.asarray(r, dtype=np.int64) for r in rows]}, ["s"])
    got = to_padded(kjt, "s", 5, align=align, keep=keep)
    assert got.dtype == torch.int64 and got.shape == (40, 5)
    assert got.tolist() == _reference_padded(rows, 5, align, keep)
    same = to_padded(JaggedArray.from_lists(rows), "s", 5, align=align, keep=keep)
    assert torch.equal(same, got)


def test_to_padded_edge_cases_and_stack() -> None:
    empty = make_kjt({"s": [np.array([], dtype=np.int64)] * 3}, ["s"])
    assert to_padded(empty, "s", 4).tolist() == [[PAD] * 4] * 3
    kjt = make_kjt({"u": np.array([4, 0]), "s": [np.array([1, 2, 3]), np.array([9])]}, ["u", "s"])
    # the most recent id (stored last) ends the left-aligned ids of a row
    assert to_padded(kjt, "s", 4).tolist() == [[1, 2, 3, PAD], [9, PAD, PAD, PAD]]
    assert to_padded(kjt, "s", 4, align="right").tolist() == [[PAD, 1, 2, 3], [PAD, PAD, PAD, 9]]
    stacked = to_padded_stack(kjt, ["u", "s"], 3)
    assert stacked.shape == (2, 2, 3)
    assert stacked[:, 0].tolist() == [[4, PAD, PAD], [0, PAD, PAD]]  # id 0 (OOV) is not padding
    assert stacked[:, 1].tolist() == [[1, 2, 3], [9, PAD, PAD]]
    with pytest.raises(KeyError, match="no feature"):
        to_padded(kjt, "x", 3)
    assert isinstance(kjt, KeyedJaggedTensor)


def test_sampler_lengths_and_drop_last() -> None:
    s = EpochBatchSampler(10, 4, shuffle=False)
    assert [(b.start, b.stop) for b in s if isinstance(b, slice)] == [(0, 4), (4, 8), (8, 10)]
    d = EpochBatchSampler(10, 4, shuffle=True, seed=1, drop_last=True)
    batches = list(d)
    assert len(batches) == len(d) == 2 and all(len(b) == 4 for b in batches)
    with pytest.raises(ValueError, match="batch_size"):
        EpochBatchSampler(10, 0, shuffle=False)


def test_dense_features_fill_the_dense_tensor() -> None:
    schema = FeatureSchema.from_dict(
        {
            "features": [
                {"name": "user_id", "kind": "categorical", "role": "user"},
                {"name": "price", "kind": "dense", "role": "item"},
                {"name": "emb", "kind": "dense", "role": "user", "dim": 2},
            ]
        }
    )
    from recsys.features.vocab import VocabularySet

    frame = pd.DataFrame(
        {"user_id": [5, 6, 5], "price": [1.5, 2.0, 3.0], "emb": [[1, 2], [3, 4], [5, 6]]}
    )
    vocabs = VocabularySet.fit(schema, [frame])
    ds = make_dataset(frame, schema, ALL_ROLES, vocabs=vocabs)
    batch = ds[np.array([2, 0])]
    assert ds.encoded.dense_names == ["price", "emb"]
    assert batch.dense.dtype == torch.float32
    assert batch.dense.tolist() == [[3.0, 5.0, 6.0], [1.5, 1.0, 2.0]]
    assert batch.sparse.keys() == ["user_id"]
    with pytest.raises(ValueError, match="non-finite"):
        make_dataset(frame.assign(price=[1.0, None, 2.0]), schema, ALL_ROLES, vocabs=vocabs)
    with pytest.raises(ValueError, match="needs 2 values per row"):
        make_dataset(frame.assign(emb=[[1], [2, 3], [4, 5]]), schema, ALL_ROLES, vocabs=vocabs)
