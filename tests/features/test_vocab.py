"""Vocabularies: fitting order, OOV rows, stable hashing, identity ranges, Parquet round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xxhash

from recsys.data.frame import InteractionData
from recsys.data.movielens import load_ml100k
from recsys.features.schema import FeatureSchema, VocabConfig, VocabPolicy
from recsys.features.store import read_metadata
from recsys.features.vocab import (
    OOV_INDEX,
    Vocabulary,
    VocabularySet,
    flatten_lists,
    stable_hash,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs" / "schema" / "ml100k.yaml"
ID_MAP = VocabConfig()


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(SCHEMA_FILE)


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path) -> InteractionData:
    return load_ml100k(ml100k_dir)


@pytest.fixture(scope="module")
def side_tables(ml100k: InteractionData) -> list[pd.DataFrame]:
    """Frames holding every source column of the schema, from the real data."""
    from recsys.features.build import build_item_table, build_user_table, user_features_at

    inter = ml100k.interactions
    assert ml100k.users is not None
    users = user_features_at(inter, build_user_table(ml100k.users))
    items = build_item_table(ml100k.items, inter)
    return [inter, users, items]


# -- id_map -------------------------------------------------------------------------


def test_id_map_orders_by_frequency_then_value() -> None:
    values = ["b", "a", "c", "b", "a", "d", "b", "c"]  # b:3, a:2, c:2, d:1
    v = Vocabulary.fit("f", ID_MAP, values)
    assert v.values.tolist() == ["b", "a", "c", "d"]
    assert v.counts.tolist() == [3, 2, 2, 1]
    assert v.encode(["b", "a", "c", "d"]).tolist() == [1, 2, 3, 4]
    assert v.num_embeddings == 5
    # the same data in another order gives the same map and version
    again = Vocabulary.fit("f", ID_MAP, list(reversed(values)))
    assert again.values.tolist() == v.values.tolist()
    assert again.version == v.version


def test_id_map_min_count_and_size_cap_send_rare_values_to_oov() -> None:
    values = np.array([7, 7, 7, 5, 5, 9, 9, 3])
    v = Vocabulary.fit("f", VocabConfig(min_count=2), values)
    assert v.values.tolist() == [7, 5, 9]
    assert v.encode(np.array([3, 7])).tolist() == [OOV_INDEX, 1]
    capped = Vocabulary.fit("f", VocabConfig(size=3), values)  # 3 rows: OOV + 2 values
    assert capped.num_embeddings == 3
    assert capped.values.tolist() == [7, 5]
    assert capped.encode(np.array([9, 5])).tolist() == [OOV_INDEX, 2]


def test_id_map_unknown_and_missing_values_encode_to_oov() -> None:
    v = Vocabulary.fit("f", ID_MAP, pd.Series(["x", "y", None, "x"]))
    assert v.values.tolist() == ["x", "y"]  # missing values are not fitted
    assert v.encode(pd.Series(["y", "zzz", None, float("nan")])).tolist() == [2, 0, 0, 0]


def test_id_map_coerces_between_int_and_string_inputs() -> None:
    ints = Vocabulary.fit("item", ID_MAP, np.array([10, 20, 20]))
    # serving may send ids as strings or floats; non-numeric strings are unknown
    assert ints.encode(["20", "10", 10.0, "abc", 10.5]).tolist() == [1, 2, 2, 0, 0]
    strs = Vocabulary.fit("zip", ID_MAP, ["10", "20", "20"])
    assert strs.encode(np.array([20, 10, 30])).tolist() == [1, 2, 0]


def test_decode_inverts_encode_and_guards_oov() -> None:
    v = Vocabulary.fit("f", ID_MAP, np.array([4, 4, 8, 15]))
    rows = v.encode(np.array([15, 8, 4]))
    assert v.decode(rows).tolist() == [15, 8, 4]
    with pytest.raises(ValueError, match="out-of-vocabulary"):
        v.decode([0, 1])
    assert v.decode([0, 1], oov_value=-1).tolist() == [-1, 4]
    with pytest.raises(ValueError, match="outside"):
        v.decode([v.num_embeddings])
    with pytest.raises(ValueError, match="outside"):
        v.decode([-1])


# -- hash -----------------------------------------------------------------------------


def test_hash_matches_xxh64_of_the_decimal_string_and_ignores_type() -> None:
    size = 1000
    v = Vocabulary("h", VocabConfig(VocabPolicy.HASH, size=size))
    got = v.encode(pd.Series([12345, "12345", 12345.0, "zip-90210", None], dtype=object))
    ref = xxhash.xxh64_intdigest(b"12345", seed=0) % size
    assert got[:3].tolist() == [ref, ref, ref]
    assert got[3] == xxhash.xxh64_intdigest(b"zip-90210", seed=0) % size
    assert got[4] == 0
    rows = v.encode(np.arange(50_000))
    assert rows.min() >= 0 and rows.max() < size
    assert len(np.unique(rows)) > 0.95 * size  # spreads over the table
    with pytest.raises(TypeError, match="cannot be decoded"):
        v.decode([1])


def test_hash_is_the_same_in_a_process_with_another_hash_seed() -> None:
    values = ["a", "b", "user-77", "12"]
    here = stable_hash(values, 97).tolist()
    code = (
        f"from recsys.features.vocab import stable_hash;print(stable_hash({values!r}, 97).tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == str(here)


# -- identity -------------------------------------------------------------------------


def test_identity_validates_range_or_clamps() -> None:
    strict = Vocabulary("hour", VocabConfig(VocabPolicy.IDENTITY, size=24))
    assert strict.encode(np.array([0, 5, 23])).tolist() == [0, 5, 23]
    assert strict.decode([3]).tolist() == [3]
    with pytest.raises(ValueError, match=r"2 of 4 values are not integers in \[0, 24\)"):
        strict.encode(np.array([0, 24, -1, 3]))
    with pytest.raises(ValueError, match="not integers"):
        strict.encode(pd.Series([1.5]))
    clamp = Vocabulary("hour", VocabConfig(VocabPolicy.IDENTITY, size=24), out_of_range="clamp")
    assert clamp.encode(pd.Series([24, -3, None, 7])).tolist() == [23, 0, 0, 7]


# -- lists ----------------------------------------------------------------------------


def test_flatten_lists_gives_values_and_offsets() -> None:
    col = pd.Series([["a", "b"], [], None, np.array(["c"], dtype=object)])
    values, offsets = flatten_lists(col)
    assert values.tolist() == ["a", "b", "c"]
    assert offsets.tolist() == [0, 2, 2, 2, 3]
    with pytest.raises(TypeError, match="one list per row"):
        flatten_lists(pd.Series([1, 2]))


# -- vocabulary sets on the real data -------------------------------------------------


def test_item_vocabulary_of_ml100k_has_every_item_plus_oov(
    schema: FeatureSchema, side_tables: list[pd.DataFrame], ml100k: InteractionData
) -> None:
    vocabs = VocabularySet.fit(schema, side_tables)
    assert ml100k.items is not None
    n_items = ml100k.items["item_id"].nunique()
    assert n_items == 1682
    assert vocabs["item_id"].num_embeddings == n_items + 1
    # the sequence feature borrows the item vocabulary: same object, same rows
    assert vocabs["user_recent_items"] is vocabs["item_id"]
    assert vocabs.owner("user_recent_items") == "item_id"
    rows = vocabs.encode("item_id", ml100k.items["item_id"])
    assert sorted(rows.tolist()) == list(range(1, n_items + 1))
    # row 1 is the item with the most interactions (+1 for its catalogue row)
    top = ml100k.interactions["item_id"].value_counts()
    assert vocabs["item_id"].decode([1])[0] == top.index[0]
    assert vocabs["user_id"].num_embeddings == 943 + 1
    assert vocabs["item_genres"].num_embeddings == 19 + 1  # u.genre lists 19 genres
    sizes = vocabs.num_embeddings()
    assert sizes["hour"] == 24 and sizes["item_popularity"] == 10
    assert sizes["user_recent_items"] == sizes["item_id"]


def test_vocabulary_set_round_trip_encodes_identically(
    schema: FeatureSchema, side_tables: list[pd.DataFrame], tmp_path: Path
) -> None:
    vocabs = VocabularySet.fit(schema, side_tables, source_sha256="abc123")
    vocabs.save(tmp_path / "vocab")
    loaded = VocabularySet.load(tmp_path / "vocab")
    assert loaded.versions() == vocabs.versions()
    assert loaded.schema == schema
    for feature in schema.sparse():
        for frame in side_tables:
            if feature.source not in frame.columns:
                continue
            col = frame[feature.source]
            raw = flatten_lists(col)[0] if feature.max_len > 1 else col
            np.testing.assert_array_equal(
                loaded.encode(feature.name, raw), vocabs.encode(feature.name, raw)
            )
    unknown = {"user_id": [10_000, -5], "item_id": [99_999], "user_occupation": ["astronaut"]}
    for name, values in unknown.items():
        assert loaded.encode(name, values).tolist() == [0] * len(values)
    meta = read_metadata(tmp_path / "vocab" / "item_id.parquet")
    assert meta["recsys.vocab.feature"] == "item_id"
    assert meta["recsys.vocab.policy"] == "id_map"
    assert meta["recsys.vocab.size"] == 1683
    assert meta["recsys.source_sha256"] == "abc123"
    assert meta["recsys.vocab.version"] == vocabs["item_id"].version
    assert meta["recsys.schema_version"] == schema.version
    assert "recsys.created" in meta
    # borrowing features get no file of their own
    assert not (tmp_path / "vocab" / "user_recent_items.parquet").exists()


def test_version_tracks_content_and_tampering_is_detected(tmp_path: Path) -> None:
    v = Vocabulary.fit("f", ID_MAP, np.array([1, 2, 2, 3]))
    assert Vocabulary.fit("f", ID_MAP, np.array([1, 2, 2, 3, 3, 3])).version != v.version
    assert Vocabulary.fit("g", ID_MAP, np.array([2, 2, 1, 3])).version == v.version
    path = v.save(tmp_path / "f.parquet")
    assert Vocabulary.load(path).encode(np.array([2, 1, 3, 4])).tolist() == [1, 2, 3, 0]
    table = pq.read_table(path)
    swapped = table.set_column(1, "value", table.column("value").take([1, 0, 2]))
    pq.write_table(swapped, path)
    with pytest.raises(ValueError, match="differs from the stored version"):
        Vocabulary.load(path)
