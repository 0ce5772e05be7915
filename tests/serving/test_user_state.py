"""The recommend engine reads users' real-time profiles (in-process, SQLite store).

The repository is built from ``fresh_two_stage`` (conftest: real MovieLens-100K,
Recommenders' 75/25 item split, user 1's training rows dropped, freshly initialized
models) with ``profile_store`` set, and the
served computation runs in-process: onnxruntime on the exported towers and ranker, the
saved FAISS index. Events go through the real pipeline (``EventProducer`` -> SQLite
stream -> ``EventProcessor`` + ``StreamConsumer``) into a store file; the engine reads it
through ``ProfileStoreReader("sqlite:///...")``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_kit import in_process_engine

from recsys.events.consent import ConsentPolicy
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.features.batching import encode_features
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.profiles import ProfileService
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.recommend.two_stage import (
    TwoStageRecommender,
)
from recsys.runtime.aggregation import AggregationConfig
from recsys.runtime.engine import RecommendTables
from recsys.runtime.ranker_features import RankerFeatures, stack_padded
from recsys.runtime.user_state import (
    SCHEMA_FILE,
    ProfileStoreReader,
    UserStateUnavailable,
    parse_store_url,
)
from recsys.serving.repository import RepositoryConfig, build_repository

REPO = Path(__file__).resolve().parents[2]
COLD_USER = 1
NEW_USER = 999_001
N_CANDIDATES = 60
AGG = AggregationConfig(
    ranker_weight=1.0, retrieval_weight=0.5, freshness_weight=0.2, mmr_lambda=0.7
)


@dataclass
class Setup:
    root: Path
    dataset: ProcessedDataset
    schema: FeatureSchema
    recommender: TwoStageRecommender


@pytest.fixture(scope="module")
def setup(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    parts = fresh_two_stage
    tmp = tmp_path_factory.mktemp("profile-repo")
    root = tmp / "repository"
    build_repository(
        parts.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(profile_store="sqlite:///var/recsys/rt.db"),
    )
    return Setup(root, parts.dataset, parts.schema, parts.recommender)


def _publish_and_consume(path: Path, user: int, items: list[int], schema: FeatureSchema) -> None:
    """Clicks of ``user`` on ``items`` (oldest first) through the real event pipeline."""
    store = SqliteStore(path)
    try:
        now = time.time()
        events = [
            {
                "event_id": f"e-{uuid.uuid4().hex}",
                "user_id": str(user),
                "session_id": f"s-{user}",
                "type": "click",
                "item_id": item,
                "timestamp": now - 60 + n,  # epoch seconds, one second apart
            }
            for n, item in enumerate(items)
        ]
        assert EventProducer(store).publish(events) == len(events)
        from recsys.profiles.config import ProfileConfig

        processor = EventProcessor(
            store,
            ProcessorConfig(
                profile=ProfileConfig.from_schema(schema), consent=ConsentPolicy.grant_all()
            ),
        )
        stats = StreamConsumer(
            store,
            processor,
            ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None),
        ).run(until_idle=True)
        assert stats.applied >= len(events)
    finally:
        store.close()


def _known_user(setup: Setup, n: int = 7) -> int:
    return int(setup.recommender.context.user_ids[n])


# -- the repository carries what profiles need -------------------------------------------


def test_repository_config_and_files_for_profiles(setup: Setup) -> None:
    config = (setup.root / "recommend" / "config.pbtxt").read_text()
    assert 'key: "profile_store" value: { string_value: "sqlite:///var/recsys/rt.db" }' in config
    folder = setup.root / "recommend" / "1"
    saved = FeatureSchema.from_dict(json.loads((folder / SCHEMA_FILE).read_text()))
    assert saved.to_dict() == setup.schema.to_dict()
    tables = RecommendTables.load(folder)
    assert tables.profile is not None and tables.profile.recent_items == "user_recent_items"
    features = RankerFeatures.load(folder)
    assert features.profile is not None and features.profile.recent_items == "user_recent_items"
    with pytest.raises(ValueError, match="expected redis"):
        RepositoryConfig(profile_store="http://example.org/profiles")


def test_history_ids_equal_the_training_encoding_of_the_longer_history(setup: Setup) -> None:
    """A profile's items extend the tower and ranker history exactly as the training
    features encode a user whose history ends with those items."""
    folder = setup.root / "recommend" / "1"
    tables, features = RecommendTables.load(folder), RankerFeatures.load(folder)
    assert tables.profile is not None and features.profile is not None
    vocabs = setup.dataset.vocabs
    assert vocabs is not None
    row = 11
    users = setup.dataset.users.iloc[[row]].copy()
    new = [int(tables.item_ids[5]), 424242, int(tables.item_ids[9])]  # 424242: no such item
    users["recent_items"] = [list(users["recent_items"].iloc[0]) + new]
    spec = setup.schema["user_recent_items"]
    encoded = encode_features(users, [spec], vocabs).sparse["user_recent_items"]
    want = stack_padded(
        {"user_recent_items": (encoded.values, encoded.offsets)},
        ["user_recent_items"],
        {"user_recent_items": spec.max_len},
        tables.user_tower_ids.shape[2],
        1,
    )[0, 0]
    got = tables.profile.with_history(tables.user_tower_ids[row], tables.item_rows(new))
    f = tables.user_tower_features.index("user_recent_items")
    np.testing.assert_array_equal(got[f], want)
    assert got[f][(got[f] >= 0).sum() - 2] == 0  # the unknown item: the OOV row
    # the ranker's vocabularies are the same ones here: same ids in its slot
    r = features.sparse_names.index("user_recent_items")
    ranker = features.profile.with_history(features.user_ids[row], tables.item_rows(new))
    np.testing.assert_array_equal(ranker[r, : len(want)], want)


def test_a_user_without_training_rows_gets_the_cold_ranker_features(setup: Setup) -> None:
    """Index -1 (a profile-only user) has the dense features of a known cold user."""
    features = RankerFeatures.load(setup.root / "recommend" / "1")
    ctx = setup.recommender.context
    cold = int(np.flatnonzero(ctx.user_ids == COLD_USER)[0])
    items = np.arange(40)
    score, rank, lists = np.linspace(1, 0, 40), np.arange(40), np.zeros(40, np.int64)
    want = features.dense(np.full(40, cold), items, score, rank, lists, 1)
    got = features.dense(np.full(40, -1), items, score, rank, lists, 1)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="user_ids"):
        features.sparse(np.full(3, -1), items[:3])


def test_items_consumed_since_training_count_in_the_affinities(setup: Setup) -> None:
    """The ranker's item-item affinities sum over the training items and the profile's
    newer items alike, for known and profile-only users."""
    features = RankerFeatures.load(setup.root / "recommend" / "1")
    assert features.affinity
    items = np.arange(30)
    lists = np.repeat([0, 1], 15)
    users = np.where(lists == 0, 11, -1)  # a known user's list, then a new user's
    training = features.training_items(11)
    assert len(training)
    extra = [np.setdiff1d([40, 41, 42], training), np.array([5, 77])]
    for name in features.affinity:
        got = features.affinity_scores(name, users, items, extra, lists)
        matrix = features.item_item[name]
        known = np.union1d(training, extra[0])
        want = np.r_[
            matrix[np.ix_(known, items[:15])].sum(axis=0, dtype=np.float32),
            matrix[np.ix_(extra[1], items[15:])].sum(axis=0, dtype=np.float32),
        ]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        plain = features.affinity_scores(name, users, items)
        assert not np.allclose(got, plain)  # the extra items changed them
        np.testing.assert_array_equal(plain[15:], 0.0)  # no training items
    score, rank = np.linspace(1, 0, 30), np.arange(30) % 15
    dense = features.dense(users, items, score, rank, lists, 2, extra)
    col = features.dense_names.index(f"affinity_{features.affinity[0]}")
    unscaled = dense[:, col] * features.scaler_std[col] + features.scaler_mean[col]
    want0 = features.affinity_scores(features.affinity[0], users, items, extra, lists)
    np.testing.assert_allclose(unscaled, want0, rtol=1e-4, atol=1e-4)


# -- the engine with a SQLite profile store ----------------------------------------------


def test_reader_returns_what_profile_service_returns(setup: Setup, tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    user = _known_user(setup)
    items = [int(i) for i in setup.recommender.context.item_ids[[3, 50, 7]]]
    _publish_and_consume(path, user, items, setup.schema)
    store = SqliteStore(path)
    service = ProfileService(store, setup.schema)
    service.set_attributes(str(NEW_USER), {"gender": "female", "age": 31}, actor=str(NEW_USER))
    reader = ProfileStoreReader(f"sqlite://{path}", setup.schema.to_dict())
    as_of = time.time_ns() // 1000
    rows = reader.read([user, NEW_USER, 424_242], as_of)
    assert rows[0] == service.features(str(user), as_of)
    assert rows[0].values["user_recent_items"] == items  # most recent last
    assert rows[1] == service.features(str(NEW_USER), as_of)
    # the schema's alias: profiles write "female", MovieLens' column holds "F"
    assert rows[1].values["user_gender"] == "F" and rows[1].values["user_age"] == "25-34"
    assert rows[2] is None  # nothing stored for that user
    assert reader.stats.reads == 1 and reader.stats.profiles == 2
    store.close()
    reader.close()


def test_clicked_items_leave_the_list_and_the_list_changes(setup: Setup, tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    SqliteStore(path).close()
    plain = in_process_engine(setup.root)
    live = in_process_engine(
        setup.root, ProfileStoreReader(f"sqlite://{path}", setup.schema.to_dict())
    )
    user = _known_user(setup)
    before = plain.recommend(np.array([user]), np.array([20]))[0]
    # a store without this user: exactly today's answer
    same = live.recommend(np.array([user]), np.array([20]))[0]
    np.testing.assert_array_equal(same.item_ids, before.item_ids)
    np.testing.assert_array_equal(same.scores, before.scores)
    clicked = [int(i) for i in before.item_ids[:3]]
    _publish_and_consume(path, user, clicked, setup.schema)
    after = live.recommend(np.array([user]), np.array([20]))[0]
    assert not after.fallback and after.profile
    assert not np.isin(clicked, after.item_ids).any()
    # the clicks reach the ranker's affinity features too (items consumed since training)
    features = live.features
    assert features is not None
    passed: list[Any] = []
    dense = features.dense

    def spy(*args: Any, **kwargs: Any) -> Any:
        passed.append(kwargs.get("extra_seen"))
        return dense(*args, **kwargs)

    features.dense = spy  # type: ignore[method-assign]
    live.recommend(np.array([user]), np.array([20]))
    features.dense = dense  # type: ignore[method-assign]
    row = int(live.tables.user_rows(np.array([user]))[0])
    want = np.setdiff1d(live.tables.item_rows(clicked), features.training_items(row))
    assert len(want) == len(clicked) and len(passed) == 1 and len(passed[0]) == 1
    np.testing.assert_array_equal(passed[0][0], want)
    assert after.item_ids.tolist() != [i for i in before.item_ids.tolist() if i not in clicked]
    # the tower saw the longer history: the remaining items are scored differently
    common = np.intersect1d(after.item_ids, before.item_ids)
    old = dict(zip(before.item_ids.tolist(), before.scores.tolist(), strict=True))
    new = dict(zip(after.item_ids.tolist(), after.scores.tolist(), strict=True))
    assert any(abs(old[i] - new[i]) > 1e-6 for i in common.tolist())
    # the store is still read per request: the plain engine is unchanged
    again = plain.recommend(np.array([user]), np.array([20]))[0]
    np.testing.assert_array_equal(again.item_ids, before.item_ids)


def test_unknown_user_with_a_history_is_served_through_the_towers(
    setup: Setup, tmp_path: Path
) -> None:
    path = tmp_path / "rt.db"
    ctx = setup.recommender.context
    first = [int(i) for i in ctx.item_ids[[0, 1, 2, 3]]]
    second = [int(i) for i in ctx.item_ids[[400, 401, 402, 403]]]
    _publish_and_consume(path, NEW_USER, first, setup.schema)
    _publish_and_consume(path, NEW_USER + 1, second, setup.schema)
    store = SqliteStore(path)
    ProfileService(store, setup.schema).set_attributes(
        str(NEW_USER + 2), {"occupation": "writer"}, actor="test"
    )
    store.close()
    engine = in_process_engine(
        setup.root, ProfileStoreReader(f"sqlite://{path}", setup.schema.to_dict())
    )
    users = np.array([NEW_USER, NEW_USER + 1, NEW_USER + 2, NEW_USER + 3])
    a, b, attrs_only, nothing = engine.recommend(users, np.full(4, 10))
    tables = engine.tables
    popular = tables.item_ids[tables.popular_order[:10]]
    for answer, seen in ((a, first), (b, second)):
        assert not answer.fallback and answer.profile and len(answer.item_ids) == 10
        assert not np.isin(seen, answer.item_ids).any()
    assert a.item_ids.tolist() != b.item_ids.tolist()  # the history drives the list
    assert a.item_ids.tolist() != popular.tolist()
    # without a history (attributes only, or nothing): popularity, as before
    for answer in (attrs_only, nothing):
        assert answer.fallback
        np.testing.assert_array_equal(answer.item_ids, popular)
    assert engine.user_state_stats.new_users == 2
    # the tower input of the new user: its history in the item vocabulary, OOV user id
    assert tables.profile is not None
    # the profile's attribute values, as profile_features gives them
    values = {"user_id": str(NEW_USER), "user_age": "25-34", "user_occupation": "writer",
              "user_gender": "F", "user_recent_items": first}  # fmt: skip
    ids = tables.profile.new_user(values, tables.item_rows(first))
    vocabs = setup.dataset.vocabs
    assert vocabs is not None
    f = tables.user_tower_features.index
    np.testing.assert_array_equal(
        ids[f("user_recent_items"), :4], vocabs.encode("user_recent_items", first)
    )
    for name in ("user_age", "user_occupation", "user_gender"):
        assert ids[f(name), 0] == vocabs.encode(name, [values[name]])[0] > 0, name
    assert ids[f("user_id"), 0] == 0  # an unknown user id: the OOV row
    missing = tables.profile.new_user({"user_recent_items": first}, tables.item_rows(first))
    assert missing[f("user_age"), 0] == 0  # a missing categorical: the OOV row


def test_a_profiles_gender_gets_the_vocabulary_row_of_the_dataset_spelling(
    setup: Setup, tmp_path: Path
) -> None:
    """Profiles write ``female``/``male``, MovieLens' column holds ``F``/``M``: the
    schema's aliases make a new user's gender id the training row of ``F``/``M``."""
    path = tmp_path / "rt.db"
    store = SqliteStore(path)
    service = ProfileService(store, setup.schema)
    genders = {NEW_USER: "female", NEW_USER + 1: "male", NEW_USER + 2: "nonbinary"}
    for user, gender in genders.items():
        service.set_attributes(str(user), {"gender": gender}, actor="test")
    store.close()
    reader = ProfileStoreReader(f"sqlite://{path}", setup.schema.to_dict())
    rows = reader.read(list(genders))
    reader.close()
    vocabs = setup.dataset.vocabs
    assert vocabs is not None
    female, male = vocabs.encode("user_gender", ["F", "M"]).tolist()
    assert female > 0 and male > 0 and female != male  # both real rows, not OOV
    folder = setup.root / "recommend" / "1"
    tables, features = RecommendTables.load(folder), RankerFeatures.load(folder)
    assert tables.profile is not None and features.profile is not None
    no_items = tables.item_rows([])
    tower = tables.user_tower_features.index("user_gender")
    ranker = features.sparse_names.index("user_gender")
    # "nonbinary" has no row in MovieLens' vocabulary: the OOV row, as training encodes it
    for row, want in zip(rows, (female, male, 0), strict=True):
        assert row is not None
        assert tables.profile.new_user(row.values, no_items)[tower, 0] == want, row.values
        assert features.profile.new_user(row.values, no_items)[ranker, 0] == want, row.values


def test_no_profile_gives_exactly_todays_answers(setup: Setup, tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    _publish_and_consume(path, NEW_USER, [int(setup.recommender.context.item_ids[0])], setup.schema)
    plain = in_process_engine(setup.root)
    live = in_process_engine(
        setup.root, ProfileStoreReader(f"sqlite://{path}", setup.schema.to_dict())
    )
    users = np.array([*setup.recommender.context.user_ids[:25].tolist(), COLD_USER, 777_777])
    for k in (10, 100):
        want = plain.recommend(users, np.full(len(users), k))
        got = live.recommend(users, np.full(len(users), k))
        for user, w, g in zip(users.tolist(), want, got, strict=True):
            np.testing.assert_array_equal(g.item_ids, w.item_ids, err_msg=f"user {user}")
            np.testing.assert_array_equal(g.scores, w.scores, err_msg=f"user {user}")
            assert g.fallback == w.fallback and not g.profile


def test_a_store_that_cannot_be_read_never_fails_a_request(setup: Setup) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = ProfileStoreReader(
        f"redis://127.0.0.1:{port}/0", setup.schema.to_dict(), retry_after_s=60
    )
    warnings: list[str] = []
    live = in_process_engine(setup.root, reader, warn=warnings.append)
    plain = in_process_engine(setup.root)
    users = np.array([_known_user(setup), COLD_USER, 777_777])
    for _ in range(2):
        got = live.recommend(users, np.full(3, 10))
        want = plain.recommend(users, np.full(3, 10))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g.item_ids, w.item_ids)
    assert live.user_state_stats.failures == 2 and len(warnings) == 2
    assert "served" not in warnings[0] and "training tables" in warnings[0]
    assert reader.stats.failures == 1 and reader.stats.skipped == 1  # one real try a minute
    with pytest.raises(UserStateUnavailable, match="skipped"):
        reader.read([1])


def test_store_urls() -> None:
    loc = parse_store_url("redis://10.0.0.5:6380/2?prefix=live")
    assert (loc.kind, loc.prefix) == ("redis", "live")
    assert loc.target.startswith("redis://10.0.0.5:6380/2?")
    assert "socket_timeout=0.25" in loc.target and "prefix" not in loc.target
    assert parse_store_url("redis://h:1/0?socket_timeout=2").target.count("socket_timeout=2") == 1
    assert parse_store_url("sqlite:///tmp/rt.db") == parse_store_url("sqlite:///tmp/rt.db")
    assert parse_store_url("sqlite:///tmp/rt.db").target == "/tmp/rt.db"
    for bad in ("sqlite://", "postgres://x/y", "rt.db"):
        with pytest.raises(ValueError):
            parse_store_url(bad)
