"""The ranker's ``user_segments`` feature served: the offline profile build's memberships
at the training cut-off and the ones the live consumer commits give the same scores.

A small two-stage recommender over the real MovieLens-100K data (fresh random weights)
whose ranker reads ``user_segments`` (count rules over ratings, which are ``rating``
events) is written as a bundle and a Triton repository; its ``recommend`` engine runs
in-process (ONNX ranker in onnxruntime). Profiles come from a real embedded store filled
by the real stream consumer with the users' training ratings, moved by a whole number of
days into the years the event schema accepts (ML-100K is from 1997-98; counts do not
move).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_kit import RankerCalls, in_process_engine, small_two_stage

from recsys.data.frame import USER
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.config import ProfileConfig
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.recommend.two_stage import TwoStageRecommender
from recsys.runtime.aggregation import AggregationConfig
from recsys.runtime.engine import RecommendEngine
from recsys.runtime.user_state import ProfileStoreReader
from recsys.segments.engine import SegmentEngine
from recsys.segments.loader import load_segments_text
from recsys.segments.offline import interaction_events
from recsys.serving.repository import RepositoryConfig, build_repository

REPO = Path(__file__).resolve().parents[2]
RULES = """
segments:
  - {name: heavy_raters, enter: "count(rating) >= 150"}
  - {name: light_raters, enter: "count(rating) < 30"}
  - {name: regular_raters, enter: "count(rating) >= 30 and count(rating) < 150"}
"""
SHIFT = pd.Timedelta(days=27 * 365)
N_CANDIDATES = 40
AGG = AggregationConfig(ranker_weight=1.0, retrieval_weight=0.0, mmr_lambda=1.0)


@dataclass
class Built:
    recommender: TwoStageRecommender
    dataset: ProcessedDataset
    schema: FeatureSchema
    root: Path


@pytest.fixture(scope="module")
def built(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("segment-feature")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    parts = small_two_stage(
        ml100k_dir,
        cold_user=1,
        num_candidates=N_CANDIDATES,
        aggregation=AGG,
        request_features=("ctx_hour", "user_segments"),
        segment_rules=rules,
    )
    root = tmp / "repository"
    build_repository(parts.bundle(tmp / "bundle").root, root, RepositoryConfig())
    return Built(parts.recommender, parts.dataset, parts.schema, root)


def _scored(engine: RecommendEngine, user: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, logits)`` of the ranker call of one request of ``user``: the list's
    user and request ids (``user_segments`` last) per candidate."""
    rec = RankerCalls(engine)
    try:
        engine.recommend(np.array([user]), np.array([10]))
    finally:
        engine.ranker = rec.inner
    assert len(rec.calls) == 1
    _, ids, logits = rec.calls[0]
    return ids, logits


def _offline(built: Built, user: int) -> np.ndarray:
    rec = built.recommender
    row = int(np.flatnonzero(rec.context.user_ids == user)[0])
    users, items, scores, ranks = rec.candidates(np.array([row]), N_CANDIDATES).pairs()
    assert rec.ranker is not None
    # no request ids: an unknown context and the user's segments at the training cut-off
    return rec.ranker.logits(rec.context, users, items, scores, ranks)


def _segment_ids(built: Built, user: int) -> list[int]:
    ctx = built.recommender.context
    row = int(np.flatnonzero(ctx.user_ids == user)[0])
    return sorted(ctx.segment_vocab[s] for s in ctx.user_segments[row])


def _replay(path: Path, built: Built, users: list[int], rules: str) -> None:
    """The users' training ratings through the real consumer with segment rules."""
    rows = built.dataset.train[built.dataset.train[USER].isin(users)]
    rows = rows.assign(timestamp=rows["timestamp"] + SHIFT)
    store = SqliteStore(path)
    try:
        assert EventProducer(store).publish(interaction_events(rows, "rating")) == len(rows)
        config = ProfileConfig.from_schema(built.schema)
        engine = SegmentEngine(load_segments_text(rules), config)
        processor = EventProcessor(
            store,
            ProcessorConfig(profile=config, consent=ConsentPolicy.grant_all()),
            hooks=[engine],
        )
        StreamConsumer(store, processor, ConsumerConfig(block_ms=0, sweep_interval_s=None)).run(
            until_idle=True
        )
    finally:
        store.close()


def _users_with_segments(built: Built) -> list[int]:
    ctx = built.recommender.context
    rows = [r for r, segs in enumerate(ctx.user_segments) if len(segs) >= 1][:3]
    return [int(ctx.user_ids[r]) for r in rows]


def test_without_a_store_the_training_segments_are_served(built: Built) -> None:
    engine = in_process_engine(built.root)
    for user in _users_with_segments(built):
        ids, served = _scored(engine, user)
        assert sorted(ids[0, -1][ids[0, -1] >= 0].tolist()) == _segment_ids(built, user)
        assert (ids[:, -2, 0] == 0).all()  # no request time: the unknown hour
        np.testing.assert_allclose(served, _offline(built, user), rtol=1e-4, atol=1e-4)


def _store_engine(built: Built, tmp_path: Path, name: str, users: list[int], rules: str) -> Any:
    path = tmp_path / f"{name}.db"
    _replay(path, built, users, rules)
    reader = ProfileStoreReader(f"sqlite://{path}", built.schema.to_dict())
    return in_process_engine(built.root, reader)


def test_the_consumers_memberships_are_the_offline_builds(built: Built, tmp_path: Path) -> None:
    users = _users_with_segments(built)
    engine = _store_engine(built, tmp_path, "same", users, RULES)
    for user in users:
        ids, _ = _scored(engine, user)
        # the segments the live consumer committed are the offline build's, same ids
        assert sorted(ids[0, -1][ids[0, -1] >= 0].tolist()) == _segment_ids(built, user)
    assert engine.unknown_segments == 0


def test_unknown_segment_names_are_dropped_and_counted(built: Built, tmp_path: Path) -> None:
    users = _users_with_segments(built)[:1]
    known = _store_engine(built, tmp_path, "known", users, RULES)
    # the same events, online rules with a segment the ranker's vocabulary does not know
    other = _store_engine(
        built, tmp_path, "other", users, "segments: [{name: mystery, enter: 'count(rating) >= 1'}]"
    )
    ids_known, scores_known = _scored(known, users[0])
    ids_other, scores_other = _scored(other, users[0])
    assert (ids_other[:, -1, :] == -1).all()  # nothing mapped to a known segment's id
    assert other.unknown_segments == 1
    # everything but the segments is the same request; the segments move the scores
    np.testing.assert_array_equal(ids_known[:, :-1], ids_other[:, :-1])
    assert np.abs(scores_known - scores_other).max() > 1e-4
