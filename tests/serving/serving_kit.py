"""Shared helpers of the serving tests (loaded by tests/serving/conftest.py).

* :func:`small_two_stage` -- a two-stage recommender with freshly initialized small
  models on real MovieLens-100K (Recommenders' 75/25 item split; one user's training
  rows dropped, a cold user). About 5 s. ``.bundle(folder)`` writes its run bundle.
* :func:`in_process_engine` -- the ``recommend`` model's computation from a built
  repository, in this process: onnxruntime on the exported towers and ranker, the
  saved FAISS index, the saved tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SmallTwoStage:
    """A two-stage recommender and the parts a repository is built from."""

    recommender: Any
    two_tower: Any
    schema: Any
    dataset: Any

    def bundle(self, out: Path, **kwargs: Any) -> Any:
        """The run bundle of these models at ``out`` (what training's last stage writes)."""
        from recsys.bundle.writer import write_bundle

        return write_bundle(self.recommender, self.two_tower, self.schema, self.dataset, out,
                            **kwargs)  # fmt: skip


def small_two_stage(
    ml100k_dir: Path,
    *,
    cold_user: int,
    num_candidates: int,
    aggregation: Any,
    item_bias: bool = False,
    exclude_genres: Sequence[str] = (),
    request_features: Sequence[str] = (),
    segment_rules: Path | None = None,
    dense_time: str = "training",
) -> SmallTwoStage:
    """8-d two-tower and a small DLRM, seeded, on MovieLens-100K.

    Args:
        ml100k_dir: the dataset folder.
        cold_user: this user's training rows are dropped.
        num_candidates: retrieval candidates per user.
        aggregation: the recommender's ``AggregationConfig``.
        item_bias: give the two-tower an item bias (random, not zero), so query
            vectors carry the constant-1 slot.
        exclude_genres: genres blocked for every user.
        request_features: request features the ranker reads (``ctx_hour``, ...).
        segment_rules: segment YAML whose memberships at the training cut-off feed a
            ``user_segments`` request feature (ratings are ``rating`` events).
        dense_time: the ranker's ``dense_time`` (``request``: window counts and item age
            at the request's time).
    """
    import torch

    from recsys.data.movielens import load_ml100k
    from recsys.data.splits import stratified_split
    from recsys.features.batching import encode_features
    from recsys.features.build import build_features
    from recsys.features.schema import FeatureSchema, Role
    from recsys.index import IndexConfig
    from recsys.models.dlrm import RankerConfig
    from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig
    from recsys.recommend.ranker_data import DenseScaler, RankerContext, RankerDataConfig
    from recsys.recommend.two_stage import (
        RetrievalVectors,
        TrainedRanker,
        TwoStageRecommender,
        build_bag_ranker,
    )

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_ml100k(ml100k_dir)
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    train = train[train["user_id"] != cold_user]
    schema = FeatureSchema.from_yaml(REPO / "configs/schema/ml100k.yaml")
    dataset = build_features(data, (train, test), schema)
    assert dataset.vocabs is not None
    tower_schema = schema.select([f.name for f in schema if f.name not in ("hour", "weekday")])
    two_tower = TwoTower(
        tower_schema,
        dataset.vocabs.num_embeddings(),
        TwoTowerConfig(
            embedding_dim=8,
            user_tower=TowerConfig((16, 8)),
            item_tower=TowerConfig((16, 8)),
            item_bias=item_bias,
        ),
    ).eval()
    if item_bias:
        assert two_tower.item_tower.bias is not None
        torch.nn.init.normal_(two_tower.item_tower.bias.weight)
    keys = two_tower.feature_names
    user_specs = [f for f in tower_schema.by_role(Role.USER) if f.name in keys]
    item_specs = [f for f in tower_schema.by_role(Role.ITEM) if f.name in keys]
    users = encode_features(dataset.users, user_specs, dataset.vocabs, key_order=keys,
                            empty_features=[f.name for f in item_specs])  # fmt: skip
    items = encode_features(dataset.items, item_specs, dataset.vocabs, key_order=keys,
                            empty_features=[f.name for f in user_specs])  # fmt: skip
    with torch.no_grad():
        user_emb = two_tower.encode_users(users.batch(slice(None)).sparse)
        item_emb, bias = two_tower.encode_items_with_bias(items.batch(slice(None)).sparse)
        vectors = RetrievalVectors(
            two_tower.query_vectors(user_emb).numpy(),
            two_tower.item_vectors(item_emb, bias).numpy(),
            item_emb.numpy(),
        )
    data_cfg = RankerDataConfig(
        num_candidates=num_candidates,
        request_features=tuple(request_features),
        dense_time=dense_time,  # type: ignore[arg-type]
    )
    segments, names = None, None
    if segment_rules is not None:
        from recsys.segments.engine import SegmentEngine
        from recsys.segments.offline import memberships_at

        segments = memberships_at(
            dataset.train, SegmentEngine.from_yaml(segment_rules), default_type="rating"
        )
        names = sorted(SegmentEngine.from_yaml(segment_rules).segments)
    context = RankerContext.from_processed(
        dataset, schema, dataset.vocabs, data_cfg, segments, names
    )
    model = build_bag_ranker(
        RankerConfig(embedding_dim=8, dense_arch_layer_sizes=(16, 8), over_arch_layer_sizes=(8, 1)),
        schema.for_ranker(context.request_names),
        context.sparse_names,
        context.num_embeddings,
        len(context.dense_names),
    ).eval()
    rng = np.random.default_rng(0)
    names = context.dense_names
    scaler = DenseScaler(names, rng.normal(size=len(names)), rng.uniform(0.5, 2, len(names)))
    recommender = TwoStageRecommender.build(
        context,
        vectors,
        TrainedRanker(model, scaler, data_cfg),
        aggregation.with_updates(exclude_genres=tuple(exclude_genres)),
        index_config=IndexConfig(kind="flat", device="cpu"),
        items=dataset.items,
        num_candidates=num_candidates,
    )
    return SmallTwoStage(recommender, two_tower, schema, dataset)


class RankerCalls:
    """Wraps the engine's ranker (it scores candidate lists): keeps each call's
    ``(dense, list ids, logits)`` per pair: the list's dense rows, its user, context
    and request ids (the request features last) repeated for each candidate."""

    def __init__(self, engine: Any) -> None:
        self.inner = engine.ranker
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        engine.ranker = self

    def __call__(self, dense: np.ndarray, ids: np.ndarray, list_ids: np.ndarray) -> Any:
        assert self.inner is not None
        out = np.asarray(self.inner(dense, ids, list_ids), dtype=np.float32)
        lists, candidates = out.shape
        per_pair = list_ids[np.repeat(np.arange(lists), candidates)]
        self.calls.append((dense.reshape(lists * candidates, -1), per_pair, out.reshape(-1)))
        return out


def in_process_engine(root: Path, reader: Any = None, **kwargs: Any) -> Any:
    """The ``recommend`` engine of repository ``root`` (version 1), run in-process.

    Args:
        root: the repository.
        reader: a ``ProfileStoreReader`` (None: no real-time profiles).
        **kwargs: more ``RecommendEngine`` arguments.
    """
    import onnxruntime as ort

    from recsys.runtime.engine import RecommendEngine, RecommendTables
    from recsys.runtime.faiss_search import FaissSearcher
    from recsys.runtime.ranker_features import RankerFeatures
    from recsys.serving.inprocess import onnx_ranker

    folder = root / "recommend" / "1"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    tower = ort.InferenceSession(str(root / "user_tower/1/model.onnx"), options)
    ranker = ort.InferenceSession(str(root / "ranker/1/model.onnx"), options)
    searcher = FaissSearcher.load(root / "retrieval" / "1")
    return RecommendEngine(
        RecommendTables.load(folder),
        RankerFeatures.load(folder),
        user_tower=lambda ids: tower.run(["embeddings"], {"ids": ids})[0],
        retrieval=searcher.search,
        ranker=onnx_ranker(ranker),
        max_k=5000,
        user_state=reader,
        **kwargs,
    )


#: Served and offline scores come from two computations of the same models
#: (onnxruntime and FAISS in the server, torch offline): they agree to this much.
SCORE_ATOL = 1e-4


def assert_same_ranking(
    got_items: np.ndarray,
    got_scores: np.ndarray,
    want_items: np.ndarray,
    want_scores: np.ndarray,
    *,
    atol: float = SCORE_ATOL,
    what: str = "",
) -> None:
    """A served list equals the offline list of the same request, up to float near-ties.

    Exact ties are ordered the same way on both paths (relevance, then item id); two
    items whose objectives differ by less than the two computations' float error may
    still come out swapped. So: the same items; each item's score within ``atol`` of
    its offline score; and where the order differs, only as swaps of neighbours, at
    most one position in a hundred (at least one swap allowed).
    """
    got, want = np.asarray(got_items), np.asarray(want_items)
    assert len(got) == len(want), f"{what}: {len(got)} items served, {len(want)} offline"
    assert sorted(got.tolist()) == sorted(want.tolist()), f"{what}: different items"
    offline_score = dict(zip(want.tolist(), np.asarray(want_scores).tolist(), strict=True))
    for item, score in zip(got.tolist(), np.asarray(got_scores).tolist(), strict=True):
        assert abs(score - offline_score[item]) <= atol, (
            f"{what}: item {item} scored {score} served, {offline_score[item]} offline"
        )
    differ = np.flatnonzero(got != want).tolist()
    assert len(differ) <= max(2, len(got) // 100), f"{what}: positions {differ} differ"
    for p in differ:
        swapped = (p + 1 < len(got) and got[p] == want[p + 1] and got[p + 1] == want[p]) or (
            p > 0 and got[p] == want[p - 1] and got[p - 1] == want[p]
        )
        assert swapped, f"{what}: position {p} holds {got[p]} served, {want[p]} offline"


def read_exposures(db: Path, ids: set[str], timeout_s: float = 20.0) -> dict[str, dict[str, Any]]:
    """The exposure events of the SQLite store ``db`` by request id, once all ``ids`` are
    there (the server writes them asynchronously)."""
    import json
    import time
    import uuid

    from recsys.events.sqlite_store import SqliteStore

    deadline = time.monotonic() + timeout_s
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        store = SqliteStore(db)
        try:
            for delivery in store.read(f"t-{uuid.uuid4().hex[:6]}", 10_000, 0, False):
                event = json.loads(delivery.payload)
                rid = event.get("payload", {}).get("request_id")
                if rid in ids:
                    found[rid] = event
        finally:
            store.close()
        if ids <= set(found):
            return found
        time.sleep(0.1)
    raise AssertionError(f"exposures missing after {timeout_s} s: {sorted(ids - set(found))}")
