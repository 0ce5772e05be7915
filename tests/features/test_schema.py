"""FeatureSchema: parsing the project's schema file, validation and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.features.schema import (
    FeatureSchema,
    FeatureSpec,
    Kind,
    Role,
    VocabConfig,
    VocabPolicy,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs" / "schema" / "ml100k.yaml"


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(SCHEMA_FILE)


def test_ml100k_schema_parses_with_roles_in_file_order(schema: FeatureSchema) -> None:
    assert schema.name == "ml-100k"
    user = [f.name for f in schema.by_role(Role.USER)]
    assert user == ["user_id", "user_age", "user_gender", "user_occupation", "user_recent_items"]
    assert [f.name for f in schema.by_role(Role.CONTEXT)] == ["hour", "weekday"]
    item = [f.name for f in schema.by_role(Role.ITEM)]
    assert item == ["item_id", "item_genres", "item_year", "item_popularity"]
    # every feature of the file is sparse; sparse() keeps schema order across roles
    assert [f.name for f in schema.sparse()] == [f.name for f in schema]
    assert schema.dense() == []
    assert [f.name for f in schema.sparse(Role.ITEM, Role.CONTEXT)] == ["hour", "weekday", *item]


def test_ml100k_schema_sources_kinds_and_vocabularies(schema: FeatureSchema) -> None:
    recent = schema["user_recent_items"]
    assert recent.kind is Kind.SEQUENCE
    assert recent.source == "recent_items"
    assert recent.vocab_from == "item_id"
    assert recent.max_len == 50
    assert schema["user_id"].source == "user_id"  # source defaults to the name
    assert schema["user_age"].source == "age_bucket"
    assert schema["item_genres"].kind is Kind.MULTI_HOT
    assert schema["item_genres"].max_len == 6
    assert schema["hour"].vocab == VocabConfig(VocabPolicy.IDENTITY, size=24)
    assert schema["item_popularity"].vocab == VocabConfig(VocabPolicy.IDENTITY, size=10)
    # sparse features without a vocab block get the default id_map policy
    assert schema["user_id"].vocab == VocabConfig()


def test_round_trip_through_dict(schema: FeatureSchema) -> None:
    again = FeatureSchema.from_dict(schema.to_dict())
    assert again == schema
    assert again.to_dict() == schema.to_dict()


def test_select_keeps_requested_order(schema: FeatureSchema) -> None:
    sub = schema.select(["item_id", "user_id"])
    assert [f.name for f in sub] == ["item_id", "user_id"]
    assert len(sub) == 2
    assert "user_id" in sub
    assert "hour" not in sub


def test_unknown_feature_error_lists_names(schema: FeatureSchema) -> None:
    with pytest.raises(KeyError, match="user_id"):
        schema["no_such_feature"]


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (
            {"name": "h", "kind": "categorical", "role": "context", "vocab": {"policy": "hash"}},
            "needs a positive size",
        ),
        (
            {"name": "d", "kind": "dense", "role": "user", "vocab": {"policy": "id_map"}},
            "cannot have a vocabulary",
        ),
        ({"name": "c", "kind": "categorical", "role": "user", "max_len": 3}, "max_len 1"),
        ({"name": "c", "kind": "categorical", "role": "user", "pooling": "max"}, "pooling"),
        ({"name": "c", "kind": "categorical", "role": "nobody"}, "nobody"),
        ({"name": "c", "kind": "sparse-ish", "role": "user"}, "sparse-ish"),
    ],
)
def test_invalid_features_are_rejected_with_their_name(
    feature: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        FeatureSchema.from_dict({"name": "bad", "features": [feature]})
    assert f"({feature['name']})" in str(err.value)


def test_duplicate_and_dangling_vocab_from_are_rejected() -> None:
    cat = {"kind": "categorical", "role": "user"}
    with pytest.raises(ValueError, match="declared twice"):
        FeatureSchema.from_dict({"features": [{"name": "a", **cat}, {"name": "a", **cat}]})
    with pytest.raises(ValueError, match="takes its vocabulary from 'missing'"):
        FeatureSchema.from_dict({"features": [{"name": "a", **cat, "vocab_from": "missing"}]})
    with pytest.raises(ValueError, match="not a sparse feature"):
        FeatureSchema(
            "s",
            (
                FeatureSpec("price", Kind.DENSE, Role.ITEM),
                FeatureSpec("a", Kind.CATEGORICAL, Role.USER, vocab_from="price"),
            ),
        )


def test_ml100k_gender_aliases_reach_the_dataset_spelling(schema: FeatureSchema) -> None:
    gender = schema["user_gender"]
    assert dict(gender.aliases) == {"female": "F", "male": "M"}
    assert [gender.canonical(v) for v in ("female", "male", "F", "M")] == ["F", "M", "F", "M"]
    # values without an alias pass through: the vocabulary sends them to its OOV row
    assert gender.canonical("nonbinary") == "nonbinary"
    assert gender.canonical(None) is None
    assert schema["user_occupation"].aliases == ()
    saved = schema.to_dict()
    assert next(f for f in saved["features"] if f["name"] == "user_gender")["aliases"] == {
        "female": "F",
        "male": "M",
    }


def test_aliases_from_pairs_equal_aliases_from_a_mapping() -> None:
    pairs = FeatureSpec("g", Kind.CATEGORICAL, Role.USER, aliases=(("female", "F"),))
    mapping = FeatureSpec("g", Kind.CATEGORICAL, Role.USER, aliases={"female": "F"})  # type: ignore[arg-type]
    assert pairs == mapping and pairs.aliases == (("female", "F"),)


@pytest.mark.parametrize(
    ("aliases", "kind", "message"),
    [
        ({"x": "1"}, "dense", "cannot have aliases"),
        (["female", "F"], "categorical", "must map each alias"),
        ("female=F", "categorical", "must map each alias"),
        ([["f", "F"], ["f", "M"]], "categorical", "stands for both 'F' and 'M'"),
    ],
    ids=["dense", "flat-list", "text", "conflict"],
)
def test_bad_aliases_are_rejected_with_the_feature_name(
    aliases: object, kind: str, message: str
) -> None:
    feature = {"name": "g", "kind": kind, "role": "user", "aliases": aliases}
    with pytest.raises(ValueError, match=message) as err:
        FeatureSchema.from_dict({"name": "bad", "features": [feature]})
    assert "(g)" in str(err.value)
