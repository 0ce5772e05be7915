"""The ranker's request features served: the same context gives the offline scores.

A small two-stage recommender over the real MovieLens-100K data whose ranker reads the
request features ``ctx_hour``, ``ctx_weekday``, ``ctx_daypart``, ``ctx_device`` and
``ctx_surface`` (fresh random weights: equality does not depend on training) is written
as a run bundle and a Triton repository. The ``recommend`` engine of that repository
runs in-process (the exported ONNX ranker in onnxruntime), and a real ``tritonserver``
serves it over gRPC. The ranker's scores of a served request with a context must equal
``TrainedRanker.logits`` offline for the same request (its features from the training
code's ``RankerContext.request_ids``); two different contexts must give different
scores, and a request without a context the offline unknown-context scores. A second
ranker, ``dense_time: request``, takes its window counts and item age at the request's
time: served at the context's time, they equal the offline features at that time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from serving_kit import RankerCalls, in_process_engine, small_two_stage

from recsys.recommend.ranker_data import Requests, dense_matrix
from recsys.recommend.two_stage import TwoStageRecommender
from recsys.runtime.aggregation import AggregationConfig
from recsys.runtime.context import RequestContext
from recsys.runtime.engine import RecommendEngine
from recsys.serving.repository import RepositoryConfig, build_repository

REQUEST_FEATURES = ("ctx_hour", "ctx_weekday", "ctx_daypart", "ctx_device", "ctx_surface")
N_CANDIDATES = 50
# ranker only: the list order is the ranker's, so different scores reorder the list
AGG = AggregationConfig(ranker_weight=1.0, retrieval_weight=0.0, mmr_lambda=1.0)
EVENING = RequestContext.from_values(
    request_time_ms=1_700_000_000_000, utc_offset_minutes=60, device_type="mobile",
    surface="home",
)  # fmt: skip
MORNING = RequestContext.from_values(
    request_time_ms=1_700_000_000_000 + 10 * 3_600_000, utc_offset_minutes=0,
    device_type="desktop", surface="search",
)  # fmt: skip


@dataclass
class Built:
    recommender: TwoStageRecommender
    engine: RecommendEngine
    root: Path


@pytest.fixture(scope="module")
def built(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    parts = small_two_stage(
        ml100k_dir,
        cold_user=1,
        num_candidates=N_CANDIDATES,
        aggregation=AGG,
        request_features=REQUEST_FEATURES,
    )
    tmp = tmp_path_factory.mktemp("request-features")
    bundle = parts.bundle(tmp / "bundle")
    root = tmp / "repository"
    build_repository(bundle.root, root, RepositoryConfig())
    return Built(parts.recommender, in_process_engine(root), root)


def _served_pairs(
    built: Built, user: int, ctx: RequestContext | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(items, ranker logits, ids)`` the engine scored for one request."""
    rec = RankerCalls(built.engine)
    try:
        contexts = None if ctx is None else [ctx]
        built.engine.recommend(np.array([user]), np.array([10]), contexts=contexts)
    finally:
        built.engine.ranker = rec.inner
    assert len(rec.calls) == 1
    _, ids, logits = rec.calls[0]
    return ids, logits, rec.calls[0][0]


def _offline_logits(built: Built, user: int, ctx: RequestContext | None) -> np.ndarray:
    """The offline ranker's logits of the user's candidate list for that request."""
    rec = built.recommender
    row = int(np.flatnonzero(rec.context.user_ids == user)[0])
    cands = rec.candidates(np.array([row]), N_CANDIDATES)
    users, items, scores, ranks = cands.pairs()
    requests = (
        Requests.unknown(np.array([row]))
        if ctx is None
        else Requests(
            user=np.array([row]),
            time=np.array([ctx.request_time_ms / 1000.0]),  # type: ignore[operator]
            device=np.array([ctx.device_type], dtype=object),
            surface=np.array([ctx.surface], dtype=object),
        )
    )
    ids = rec.context.request_ids(requests)
    if ctx is not None and ctx.utc_offset_minutes:
        # the offline requests are in UTC: shift the time by the offset instead
        shifted = Requests(
            requests.user,
            requests.time + 60.0 * ctx.utc_offset_minutes,
            requests.device,
            requests.surface,
        )
        ids = rec.context.request_ids(shifted)
    assert rec.ranker is not None
    return rec.ranker.logits(
        rec.context,
        users,
        items,
        scores,
        ranks,
        request_ids=ids[np.zeros(len(users), dtype=np.int64)],
    )


@pytest.mark.parametrize("ctx", [EVENING, MORNING, None], ids=["evening", "morning", "none"])
def test_served_ranker_scores_equal_offline_for_the_same_context(
    built: Built, ctx: RequestContext | None
) -> None:
    user = 5
    _, served, _ = _served_pairs(built, user, ctx)
    offline = _offline_logits(built, user, ctx)
    assert len(served) == len(offline) == N_CANDIDATES
    np.testing.assert_allclose(served, offline, rtol=1e-4, atol=1e-4)


def test_two_contexts_give_different_ranker_scores_and_lists(built: Built) -> None:
    user = 5
    ids_a, evening, _ = _served_pairs(built, user, EVENING)
    ids_b, morning, _ = _served_pairs(built, user, MORNING)
    _, unknown, _ = _served_pairs(built, user, None)
    n_req = len(REQUEST_FEATURES)
    # the request features are the ranker's last inputs; everything else is the same
    np.testing.assert_array_equal(ids_a[:, :-n_req], ids_b[:, :-n_req])
    assert (ids_a[:, -n_req:, 0] != ids_b[:, -n_req:, 0]).all()
    assert np.abs(evening - morning).max() > 1e-3
    assert np.abs(evening - unknown).max() > 1e-3
    # request without a context: the unknown bucket (id 0) of every request feature
    ids_none, _, _ = _served_pairs(built, user, None)
    assert (ids_none[:, -n_req:, 0] == 0).all()


def test_served_request_ids_are_the_training_encoders(built: Built) -> None:
    features = built.engine.features
    assert features is not None
    assert [f.name for f in features.request_features] == list(REQUEST_FEATURES)
    ids_a, _, _ = _served_pairs(built, 5, EVENING)
    # 1_700_000_000 s = 2023-11-14 22:13 UTC, a Tuesday; local (UTC+1) 23 h
    hour, weekday, daypart, device, _surface = ids_a[0, -len(REQUEST_FEATURES) :, 0]
    assert (hour, weekday, daypart, device) == (1 + 23, 1 + 1, 1 + 3, 1 + 1)


# -- through a real tritonserver -----------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(built: Built) -> Iterator[str]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    config = TritonServerConfig(
        model_repository=built.root,
        model_control_mode="explicit",
        load_models=("*",),
        startup_timeout_s=180,
    )
    with LocalTritonServer(config) as server:
        yield server.grpc_url


@pytest.mark.triton
def test_triton_serves_the_context_aware_lists_of_the_engine(built: Built, server_url: str) -> None:
    from recsys.serving.recommend_client import RecommendClient

    with RecommendClient(server_url) as client:
        for ctx in (EVENING, MORNING, None):
            served = client.recommend(5, 10, context=None if ctx is None else ctx.to_dict())
            local = built.engine.recommend(
                np.array([5]), np.array([10]), contexts=None if ctx is None else [ctx]
            )[0]
            np.testing.assert_array_equal(served.item_ids, local.item_ids)
            np.testing.assert_allclose(served.scores, local.scores, rtol=1e-4, atol=1e-4)
        evening = client.recommend(5, 10, context=EVENING.to_dict())
        morning = client.recommend(5, 10, context=MORNING.to_dict())
    assert not np.array_equal(evening.scores, morning.scores)


# -- dense features at the request's time ------------------------------------------------


@pytest.fixture(scope="module")
def timed(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    parts = small_two_stage(
        ml100k_dir,
        cold_user=1,
        num_candidates=N_CANDIDATES,
        aggregation=AGG,
        request_features=("ctx_hour",),
        dense_time="request",
    )
    tmp = tmp_path_factory.mktemp("request-time")
    root = tmp / "repository"
    build_repository(parts.bundle(tmp / "bundle").root, root, RepositoryConfig())
    return Built(parts.recommender, in_process_engine(root), root)


def test_served_dense_features_are_taken_at_the_requests_time(timed: Built) -> None:
    user = 5
    rec = timed.recommender
    ctx = rec.context
    row = int(np.flatnonzero(ctx.user_ids == user)[0])
    users, items, scores, ranks = rec.candidates(np.array([row]), N_CANDIDATES).pairs()
    assert rec.ranker is not None
    names = ctx.dense_names
    # the user's training log ends at ctx.request_time[row]; ask 3 days and 2 years later
    for days in (3.0, 730.0):
        when = ctx.request_time[row] + days * 86_400.0
        # MovieLens-100K is from 1997-98, before the times a served context accepts
        # (2000-2100): the engine is handed the context without the parser's range check
        request = RequestContext(request_time_ms=int(when * 1000))
        _, served, dense = _served_pairs(timed, user, request)
        at = np.full(len(users), float(int(when * 1000)) / 1000.0)
        offline = rec.ranker.scaler.transform(
            dense_matrix(ctx, users, items, scores, ranks, request_time=at)
        )
        np.testing.assert_allclose(dense, offline, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            served,
            rec.ranker.logits(
                ctx,
                users,
                items,
                scores,
                ranks,
                request_ids=ctx.request_ids(
                    Requests(np.array([row]), at[:1], *[np.array([None], dtype=object)] * 2)
                )[np.zeros(len(users), dtype=np.int64)],
                request_time=at,
            ),
            rtol=1e-4,
            atol=1e-4,
        )
    _, _, soon = _served_pairs(timed, user, RequestContext(
        request_time_ms=int((ctx.request_time[row] + 3 * 86_400.0) * 1000)))  # fmt: skip
    _, _, late = _served_pairs(timed, user, RequestContext(
        request_time_ms=int((ctx.request_time[row] + 730 * 86_400.0) * 1000)))  # fmt: skip
    _, _, none = _served_pairs(timed, user, None)
    col = {n: j for j, n in enumerate(names)}
    # two years later the item ages grow and the user's last 30 days are empty
    assert (late[:, col["item_age_years"]] > soon[:, col["item_age_years"]]).all()
    assert (late[:, col["user_count_30d"]] < soon[:, col["user_count_30d"]]).all()
    # without a request time: the user's training time, as the training-time ranker
    offline_none = rec.ranker.scaler.transform(dense_matrix(ctx, users, items, scores, ranks))
    np.testing.assert_allclose(none, offline_none, rtol=1e-5, atol=1e-5)
