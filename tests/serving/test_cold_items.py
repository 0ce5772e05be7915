"""Cold items in-process: the spec, the encoding, retrieval, the ranker rows, the updater.

A repository built with ``cold_items`` from ``fresh_two_stage`` (real MovieLens-100K,
small fresh models), its ``recommend`` computation run in this process (onnxruntime,
FAISS, the saved tables) and the real catalogue of a SQLite store: item events are
published to the store's stream, the catalogue consumer writes the records, and the
updater serves them.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_kit import assert_same_ranking, in_process_engine

from recsys.events.catalogue import CatalogueConsumer, CatalogueStore, open_catalogue
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.runtime.cold_items import (
    ITEM_TOWER_FILE,
    ColdItem,
    ColdItemsConfig,
    ColdItemSpec,
    ColdItemUpdater,
    ColdRetrieval,
    FeatureRule,
    encode_items,
    onnx_item_tower,
)
from recsys.serving.repository import RepositoryConfig, build_repository

COLD_BASE = 990_000


@dataclass
class Repo:
    root: Path
    folder: Path
    url: str  # the store whose catalogue the repository serves
    parts: Any
    spec: ColdItemSpec


@pytest.fixture(scope="module")
def repo(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Repo:
    tmp = tmp_path_factory.mktemp("cold-items")
    db = tmp / "rt.db"
    SqliteStore(db).close()
    root = tmp / "repository"
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"), root, RepositoryConfig(cold_items=f"sqlite:///{db}")
    )
    folder = root / "recommend" / "1"
    return Repo(root, folder, f"sqlite:///{db}", fresh_two_stage, ColdItemSpec.load(folder))


def item_attributes(tables: Any, row: int) -> tuple[tuple[str, ...], str | None]:
    """A trained item's categories and release date, as an item event would carry them."""
    genres = tuple(sorted(g for g, rows in tables.categories.items() if row in set(rows.tolist())))
    t = float(tables.release_time[row])
    date = None
    if np.isfinite(t):
        date = datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d")
    return genres, date


def item_event(
    item: int, categories: Sequence[str], date: str | None, year: int | None = None
) -> dict[str, Any]:
    """A raw ``item_published`` event."""
    payload: dict[str, Any] = {"categories": list(categories), "title": f"item {item}"}
    if date:
        payload["release_date"] = date
    if year is not None:
        payload["year"] = year
    return {
        "event_id": f"pub-{uuid.uuid4().hex}",
        "user_id": "editor",
        "session_id": "catalogue",
        "type": "item_published",
        "item_id": item,
        "timestamp": "2024-05-01T10:00:00Z",
        "payload": payload,
    }


def publish(url: str, events: list[dict], categories: Sequence[str]) -> CatalogueConsumer:
    """Producer -> the store's stream -> the catalogue consumer (its own group)."""
    store, _ = open_catalogue(url)
    try:
        EventProducer(store).publish(events)
        consumer = CatalogueConsumer(store, CatalogueStore(store), categories)
        consumer.run(until_idle=True)
        return consumer
    finally:
        store.close()


def updater_for(repo: Repo, engine: Any, **config: Any) -> tuple[ColdItemUpdater, list[str]]:
    _, catalogue = open_catalogue(repo.url, "profiles")  # a reader's view of the store
    warnings: list[str] = []
    updater = ColdItemUpdater(
        engine,
        ColdItemSpec.load(repo.folder),
        onnx_item_tower(repo.folder / ITEM_TOWER_FILE),
        catalogue,
        ColdItemsConfig(**{"poll_s": 0.01, **config}),
        warn=warnings.append,
    )
    return updater, warnings


def test_spec_encodes_trained_items_like_training(repo: Repo) -> None:
    """With the id and popularity of a trained item put back, the spec's ids from its
    attributes give that item's trained vector and its ranker row exactly: the category
    and year rules are the vocabularies training used."""
    engine = in_process_engine(repo.root)
    tables, features = engine.tables, engine.features
    dataset = repo.parts.dataset
    vocabs = dataset.vocabs
    tower = onnx_item_tower(repo.folder / ITEM_TOWER_FILE)
    rows = np.random.default_rng(0).choice(tables.n_items, 40, replace=False)
    years = dataset.items["year"].to_numpy()
    items = [
        ColdItem(
            int(tables.item_ids[r]),
            *item_attributes(tables, int(r)),
            year_value=None if np.isnan(years[r]) else int(years[r]),
        )
        for r in rows
    ]
    spec = ColdItemSpec.load(repo.folder)
    ids = spec.tower.encode(items)
    f_id = spec.tower.features.index("item_id")
    f_pop = spec.tower.features.index("item_popularity")
    ids[:, f_id, 0] = vocabs.encode("item_id", tables.item_ids[rows])
    ids[:, f_pop, 0] = dataset.items["popularity_bucket"].to_numpy()[rows]
    np.testing.assert_allclose(tower(ids), repo.parts.recommender.item_vectors[rows], atol=1e-5)
    assert spec.tower.unknown == {}

    ranker_ids = spec.ranker.encode(items)
    for name in ("item_id", "item_popularity"):
        f = features.sparse_names.index(name)
        ranker_ids[:, f] = features.item_ids[rows, f]
    # a bag's order does not matter (mean pooling): compare each row's ids sorted
    np.testing.assert_array_equal(
        np.sort(ranker_ids, axis=2), np.sort(features.item_ids[rows], axis=2)
    )


def test_unknown_values_take_the_oov_row_and_are_counted(repo: Repo) -> None:
    spec = ColdItemSpec.load(repo.folder)
    ids = spec.tower.encode([ColdItem(COLD_BASE, ("Comedy", "Space Opera"), "2150-01-01")])
    f_genres = spec.tower.features.index("item_genres")
    f_year = spec.tower.features.index("item_year")
    assert ids[0, f_genres, 0] == spec.tower.rules["item_genres"].map["Comedy"]
    assert ids[0, f_genres, 1] == -1  # the unknown category adds nothing
    assert ids[0, f_year, 0] == 0  # no bucket holds 2150: the OOV row
    assert spec.tower.unknown == {"item_genres: Space Opera": 1, "item_year: 2150": 1}
    assert ids[0, spec.tower.features.index("item_id"), 0] == 0  # never a trained id


def test_cold_retrieval_is_the_exact_top_n_of_the_union(repo: Repo) -> None:
    engine = in_process_engine(repo.root)
    tables = engine.tables
    spec = ColdItemSpec.load(repo.folder)
    tower = onnx_item_tower(repo.folder / ITEM_TOWER_FILE)
    items = [ColdItem(COLD_BASE + j, *item_attributes(tables, j)) for j in range(30)]
    encoded = encode_items(items, spec, tower, tables.query_append_one)
    retrieval = ColdRetrieval(engine.retrieval, tables.n_items, encoded.index_vectors)
    users = tables.user_tower_ids[:5]
    queries = tables.query_vectors(engine.user_tower(users))
    ids, scores, counts = retrieval(queries, np.array([100, 100, 50, 7, 2000]))
    union = np.vstack([repo.parts.recommender.item_vectors, encoded.index_vectors])
    exact = queries @ union.T
    for row, n in enumerate([100, 100, 50, 7, tables.n_items + len(items)]):
        assert counts[row] == n
        want = np.sort(exact[row])[::-1][:n]
        np.testing.assert_allclose(scores[row, :n], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(exact[row, ids[row, :n]], want, rtol=1e-5, atol=1e-5)
    assert (ids[4, : counts[4]] >= tables.n_items).sum() == len(items)


def candidate_attributes(spec: ColdItemSpec) -> list[tuple[tuple[str, ...], str, int]]:
    """Every one- and two-category item with a year from each year bucket (the
    attributes a published item could have)."""
    names = [c for c in spec.categories if c != "unknown"]
    genres = [(a,) for a in names] + [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    years = sorted(
        int(label[:4]) + 2 for label in spec.tower.rules["item_year"].map if label[:4].isdigit()
    )
    return [(g, f"{y}-06-01", y) for g in genres for y in years]


def retrieval_ranks(repo: Repo, users: Sequence[int], combos: Sequence[Any]) -> np.ndarray:
    """``[U, C]`` how many trained items score above each attribute set, per user."""
    engine = in_process_engine(repo.root)
    tables = engine.tables
    spec = ColdItemSpec.load(repo.folder)
    tower = onnx_item_tower(repo.folder / ITEM_TOWER_FILE)
    items = [ColdItem(COLD_BASE, g, d, year_value=y) for g, d, y in combos]
    vectors = encode_items(items, spec, tower, tables.query_append_one).index_vectors
    rows = tables.user_rows(np.array(users))
    queries = tables.query_vectors(engine.user_tower(tables.user_tower_ids[rows]))
    base = repo.parts.recommender.item_vectors
    return ((queries @ base.T)[:, :, None] > (queries @ vectors.T)[:, None, :]).sum(axis=1)


def pick_taste(repo: Repo, users: Sequence[int]) -> tuple[Any, int, int]:
    """Attributes that make a cold item one of the top 10 of one user and not of
    another: the item tower scores every candidate attribute set against the users'
    queries, and the best-scored ones are tried through the whole recommender (the
    'matching taste' of the test). Returns ``(attributes, matching user, other user)``."""
    combos = candidate_attributes(repo.spec)
    items = [ColdItem(COLD_BASE, g, d, year_value=y) for g, d, y in combos]
    above = retrieval_ranks(repo, users, combos)
    tried = 0
    for u in np.argsort(above.min(axis=1)).tolist():
        for c in np.argsort(above[u]).tolist()[:3]:
            probe = in_process_engine(repo.root)
            updater, _ = updater_for(repo, probe)
            item = items[c]
            updater.apply([replace(item, item_id=COLD_BASE + 500 + tried, version=1)])
            lists = probe.recommend(np.array(users), np.full(len(users), 10))
            got = [COLD_BASE + 500 + tried in a.item_ids for a in lists]
            tried += 1
            if got[u] and not all(got):
                return combos[c], users[u], users[got.index(False)]
        if tried >= 15:
            break
    raise AssertionError("no attributes put a cold item into one user's top 10 only")


def test_a_published_item_is_recommended_to_matching_users(repo: Repo) -> None:
    ctx = repo.parts.recommender.context
    users = [int(u) for u in ctx.user_ids[10:40]]
    (genres, date, year), fan, other = pick_taste(repo, users)
    item = COLD_BASE + 1
    engine = in_process_engine(repo.root)
    updater, warnings = updater_for(repo, engine)
    n_base = engine.tables.n_items
    before = engine.recommend(np.array([fan]), np.array([10]))[0]
    assert item not in before.item_ids

    consumer = publish(repo.url, [item_event(item, genres, date, year)], repo.spec.categories)
    assert consumer.stats.records == 1
    assert updater.refresh(force=True) == 1 and updater.count == 1
    assert engine.tables.n_items == n_base + 1 and engine.features.n_items == n_base + 1
    assert engine.tables.item_rows([item])[0] == n_base
    for name in genres:
        assert n_base in engine.tables.categories[name].tolist()  # targeting rules see it

    [mine, theirs] = engine.recommend(np.array([fan, other]), np.array([10, 10]))
    assert item in mine.item_ids and item not in theirs.item_ids

    # the score is the ranker's: the ranker's item row is the item's own ids
    np.testing.assert_array_equal(
        engine.features.item_ids[n_base],
        repo.spec.ranker.encode([ColdItem(item, genres, date, year_value=year)])[0],
    )
    # the ranker's logit of the cold pair enters its score: raise it and the score rises
    assert engine.features.per_list  # ids [lists, candidates, item features, L]
    f_item = engine.features.item_names.index("item_id")
    ranker = engine.ranker

    def boosted(dense: np.ndarray, ids: np.ndarray, list_ids: np.ndarray) -> np.ndarray:
        logits = np.asarray(ranker(dense, ids, list_ids), dtype=np.float32).copy()
        logits[ids[:, :, f_item, 0] == 0] += 3.0  # the OOV id: only the cold item has it
        return logits

    engine.ranker = boosted
    [raised] = engine.recommend(np.array([fan]), np.array([10]))
    engine.ranker = ranker
    score = dict(zip(mine.item_ids.tolist(), mine.scores.tolist(), strict=True))[item]
    assert dict(zip(raised.item_ids.tolist(), raised.scores.tolist(), strict=True))[item] > score
    assert not warnings, warnings


def test_republished_items_update_in_place_and_caps_hold(repo: Repo) -> None:
    engine = in_process_engine(repo.root)
    updater, warnings = updater_for(repo, engine, max_items=3)
    updater.refresh(force=True)
    start = updater.count
    n_base = updater.base_tables.n_items
    new = [COLD_BASE + 100 + j for j in range(5 - start)]
    events = [item_event(i, ["Comedy"], "1997-05-01") for i in new]
    publish(repo.url, events, repo.spec.categories)
    updater.refresh(force=True)
    assert updater.count == 3 and updater.stats.capped == len(new) - (3 - start)
    assert any("cap of 3 items" in w for w in warnings)
    first = new[0]
    row = engine.tables.item_rows([first])[0]
    publish(
        repo.url, [item_event(first, ["Horror", "Thriller"], "1980-01-01")], repo.spec.categories
    )
    assert updater.refresh(force=True) == 1
    assert updater.count == 3 and engine.tables.n_items == n_base + 3  # no duplicate
    assert engine.tables.item_rows([first])[0] == row
    assert row in engine.tables.categories["Horror"].tolist()
    assert row not in engine.tables.categories["Comedy"].tolist()
    trained = int(engine.tables.item_ids[0])
    publish(repo.url, [item_event(trained, ["Comedy"], None)], repo.spec.categories)
    updater.refresh(force=True)
    assert updater.stats.trained == 1 and engine.tables.n_items == n_base + 3
    # a fresh updater (a restarted server) reads every stored record back
    again, _ = updater_for(repo, in_process_engine(repo.root), max_items=3)
    again.load_all()
    assert list(again.items) == list(updater.items)


def test_the_offline_recommender_gives_the_served_lists(repo: Repo) -> None:
    """TwoStageRecommender.recommend() given the same cold items gives the lists the
    served computation gives (same items, scores within float error)."""
    from recsys.recommend.cold_items import with_cold_items

    engine = in_process_engine(repo.root)
    updater, _ = updater_for(repo, engine)
    users = [int(u) for u in repo.parts.recommender.context.user_ids[:40]]
    combos = candidate_attributes(repo.spec)
    # the attribute sets retrieval ranks highest for these users, and a few others
    best = np.argsort(retrieval_ranks(repo, users, combos).min(axis=0))[:8].tolist()
    combos = [combos[c] for c in best] + combos[::301][:4]
    items = [
        ColdItem(COLD_BASE + 300 + j, g, d, version=j + 1, year_value=y)
        for j, (g, d, y) in enumerate(combos)
    ]
    updater.apply(items)
    offline = with_cold_items(
        repo.parts.recommender,
        list(updater.items.values()),
        repo.spec,
        onnx_item_tower(repo.folder / ITEM_TOWER_FILE),
    )
    want = offline.recommend(np.array(users), 30)
    got = engine.recommend(np.array(users), np.full(len(users), 30))
    cold_shown = 0
    for row, (user, answer) in enumerate(zip(users, got, strict=True)):
        valid = want.valid[row]
        assert_same_ranking(
            answer.item_ids, answer.scores, want.item_ids[row][valid], want.scores[row][valid],
            what=f"user {user}",
        )  # fmt: skip
        cold_shown += int((answer.item_ids >= COLD_BASE).sum())
    assert cold_shown > 0  # the comparison covers cold items, not only trained ones


def test_rule_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="feature rule kind"):
        FeatureRule("guess")
    with pytest.raises(ValueError, match="poll_s"):
        ColdItemsConfig(poll_s=0)


# -- the real server ----------------------------------------------------------------

POLL_S = 0.5


@dataclass
class Live:
    repo: Repo
    server: Any
    url: str


@pytest.fixture(
    scope="module",
    params=["sqlite", "sqlite-inline", pytest.param("redis", marks=pytest.mark.redis)],
)
def live(
    request: pytest.FixtureRequest,
    fresh_two_stage: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """A repository built with cold items on a store of its own (the embedded SQLite
    store, or a real redis-server started here), served by the local tritonserver;
    ``sqlite-inline``: with inline retrieval (the cold items' exact search then wraps the
    search inside ``recommend``)."""
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    from rt_testkit import REDIS_BIN, free_port, start_redis  # registered by tests/conftest.py

    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    tmp = tmp_path_factory.mktemp(f"cold-items-{request.param}")
    redis = None
    if request.param.startswith("sqlite"):
        db = tmp / "rt.db"
        SqliteStore(db).close()
        url = f"sqlite:///{db}"
    else:
        if REDIS_BIN is None:
            pytest.skip("redis-server binary not found; install the Debian package redis-server")
        port = free_port()
        redis = start_redis(port)
        url = f"redis://127.0.0.1:{port}/0?prefix=t{uuid.uuid4().hex[:10]}"
    root = tmp / "repository"
    build_repository(
        fresh_two_stage.bundle(tmp / "bundle"),
        root,
        RepositoryConfig(
            cold_items=url,
            cold_items_poll_s=POLL_S,
            retrieval_mode="inline" if request.param.endswith("-inline") else "models",
        ),
    )
    folder = root / "recommend" / "1"
    repo = Repo(root, folder, url, fresh_two_stage, ColdItemSpec.load(folder))
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    try:
        with LocalTritonServer(config) as server:
            yield Live(repo, server, server.grpc_url)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)


def reference(repo: Repo, users: Sequence[int], k: int = 10) -> list[Any]:
    """The lists of the in-process computation with every stored cold item."""
    engine = in_process_engine(repo.root)
    updater, _ = updater_for(repo, engine)
    updater.load_all()
    return engine.recommend(np.array(users), np.full(len(users), k))


def wait_for(client: Any, user: int, item: int, present: bool, timeout_s: float) -> float:
    """Seconds until ``item`` is (or is no longer) in ``user``'s top 10."""
    start = time.monotonic()
    while (item in client.recommend(user, 10).item_ids) != present:
        assert time.monotonic() - start < timeout_s, f"item {item} present={not present}"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.triton
def test_the_running_server_serves_published_items(live: Live) -> None:
    from recsys.serving.recommend_client import RecommendClient

    repo = live.repo
    ctx = repo.parts.recommender.context
    users = [int(u) for u in ctx.user_ids[10:40]]
    (genres, date, year), fan, other = pick_taste(repo, users)
    item = COLD_BASE + 1
    with RecommendClient(live.url) as client:
        assert item not in client.recommend(fan, 10).item_ids

        publish(repo.url, [item_event(item, genres, date, year)], repo.spec.categories)
        stored = time.monotonic()
        # the stated bound: one poll interval after the record is stored, every
        # instance of recommend serves the item (each polls at its next request)
        assert wait_for(client, fan, item, True, POLL_S + 1.0) <= POLL_S + 1.0
        time.sleep(max(0.0, stored + POLL_S + 0.05 - time.monotonic()))
        for _ in range(6):  # the requests reach both instances of recommend
            assert item in client.recommend(fan, 10).item_ids
        want_fan, want_other = reference(repo, [fan, other])
        got_fan, got_other = client.recommend(fan, 10), client.recommend(other, 10)
        assert item in got_fan.item_ids and item not in got_other.item_ids
        for got, want, who in ((got_fan, want_fan, "fan"), (got_other, want_other, "other")):
            assert_same_ranking(got.item_ids, got.scores, want.item_ids, want.scores, what=who)
        # the repository's engine run in-process (the simulator's) serves it too
        from recsys.serving.inprocess import engine_from_repository

        local = engine_from_repository(repo.root)
        assert local.cold_items.count == 1
        [mine] = local.recommend(np.array([fan]), np.array([10]))
        assert_same_ranking(got_fan.item_ids, got_fan.scores, mine.item_ids, mine.scores,
                            what="engine_from_repository")  # fmt: skip

        # an item whose category the model does not know is refused, never served
        consumer = publish(
            repo.url, [item_event(item + 1, ["Space Opera"], date)], repo.spec.categories
        )
        assert consumer.stats.refused == 1 and consumer.stats.records == 0
        store, catalogue = open_catalogue(repo.url, "profiles")
        try:
            assert any("Space Opera" in " ".join(d.reasons) for d in store.dead_letters("editor"))
            assert catalogue.get(item + 1) is None
        finally:
            store.close()

        # re-published with another release date: the same item (one row), updated
        before = dict(zip(got_fan.item_ids.tolist(), got_fan.scores.tolist(), strict=True))
        later = f"{int(date[:4]) - 20}{date[4:]}"
        publish(repo.url, [item_event(item, genres, later, year)], repo.spec.categories)
        time.sleep(POLL_S + 0.1)
        client.recommend(other, 10)  # this request's batch polls
        [want] = reference(repo, [fan])
        got = client.recommend(fan, 10)
        assert_same_ranking(got.item_ids, got.scores, want.item_ids, want.scores, what="updated")
        assert got.item_ids.tolist().count(item) == 1
        now = dict(zip(got.item_ids.tolist(), got.scores.tolist(), strict=True))
        assert abs(now[item] - before[item]) > 1e-4  # older now: freshness and the ranker's age

        # a restart reads the catalogue back: the item is served at once
        live.server.unload_model("recommend")
        live.server.load_model("recommend")
        again = client.recommend(fan, 10)
        assert_same_ranking(again.item_ids, again.scores, want.item_ids, want.scores,
                            what="after a restart")  # fmt: skip
    assert "cold items: 1 added or updated" in live.server.log_tail(400)


def test_an_item_bias_model_gives_cold_items_the_mean_bias(
    ml100k_dir: Path, tmp_path: Path
) -> None:
    """With an item bias, the cold item's index vector ends in the trained items' mean
    bias, and retrieval scores it with the query's constant-1 slot."""
    from serving_kit import small_two_stage

    from recsys.runtime.aggregation import AggregationConfig
    from recsys.serving.cold_items import cold_item_spec

    parts = small_two_stage(
        ml100k_dir, cold_user=1, num_candidates=20, aggregation=AggregationConfig(),
        item_bias=True,
    )  # fmt: skip
    bundle = parts.bundle(tmp_path / "bundle")
    spec = cold_item_spec(bundle)
    vectors = parts.recommender.item_vectors
    assert spec.bias == pytest.approx(float(vectors[:, -1].mean()), abs=1e-6)
    assert spec.bias != 0.0
    tower = onnx_item_tower(bundle.path("models/item_tower/model.onnx"))
    encoded = encode_items([ColdItem(COLD_BASE, ("Comedy",), "1997-01-01")], spec, tower, True)
    assert encoded.index_vectors.shape == (1, vectors.shape[1])
    assert encoded.index_vectors[0, -1] == pytest.approx(spec.bias)
    queries = parts.recommender.query_vectors[:3]
    retrieval = ColdRetrieval(
        lambda q, n: (np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32),
                      np.zeros(len(q), np.int64)),
        len(vectors),
        encoded.index_vectors,
    )  # fmt: skip
    ids, scores, counts = retrieval(queries, np.array([5, 5, 5]))
    np.testing.assert_allclose(scores[:, 0], queries @ encoded.index_vectors[0], rtol=1e-6)
    assert (ids[:, 0] == len(vectors)).all() and (counts == 1).all()


def test_targeting_rules_see_cold_items_in_their_categories(repo: Repo, tmp_path: Path) -> None:
    """A rule boosting a category boosts a cold item of that category once it is
    served: the rules compile again against the grown catalogue."""
    from recsys.runtime.cold_items import rules_follow
    from recsys.runtime.targeting import RuleFile, TargetingEnv
    from recsys.targeting.loader import load_rules

    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: more_westerns\n    boost: [{categories: [Western], weight: 2.5}]\n"
    )
    engine = in_process_engine(repo.root)
    rules = RuleFile(str(path), lambda p: load_rules(p, engine.tables.catalog()))
    engine.rules = rules
    updater, _ = updater_for(repo, engine)
    updater.on_change = rules_follow(engine)
    item = ColdItem(COLD_BASE + 700, ("Western",), "1995-01-01", version=10**6)
    updater.apply([item])
    row = engine.tables.item_rows([item.item_id])[0]
    plan = engine.rules.current().plan(TargetingEnv.of(()))
    assert plan.rules == ("more_westerns",)
    assert plan.boosts(np.array([row])).tolist() == [2.5]
    assert rules.loads == 2  # compiled at start and once more for the new item


def test_a_missing_store_is_logged_and_read_once_it_exists(repo: Repo, tmp_path: Path) -> None:
    """The catalogue store not there yet: the engine serves the trained catalogue and
    warns; once the store holds records, the next poll serves them."""
    from recsys.runtime.cold_items import StoreCatalogue

    db = tmp_path / "later.db"
    engine = in_process_engine(repo.root)
    warnings: list[str] = []
    updater = ColdItemUpdater(
        engine,
        ColdItemSpec.load(repo.folder),
        onnx_item_tower(repo.folder / ITEM_TOWER_FILE),
        StoreCatalogue(f"sqlite:///{db}"),
        ColdItemsConfig(poll_s=0.01),
        warn=warnings.append,
    )
    assert updater.load_all() == 0 and updater.stats.failures == 1
    assert "catalogue unavailable" in warnings[0] and str(db) in warnings[0]
    n_base = engine.tables.n_items
    SqliteStore(db).close()
    publish(f"sqlite:///{db}", [item_event(COLD_BASE + 800, ["Drama"], None)], repo.spec.categories)
    assert updater.refresh(force=True) == 1
    assert engine.tables.n_items == n_base + 1
    with pytest.raises(ValueError, match="expected redis"):
        StoreCatalogue("postgres://db/recsys")
