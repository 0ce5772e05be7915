"""The two-stage recommender behind a real Triton server, over gRPC.

A module fixture trains a small two-tower model (one epoch, 16-d) and a small DLRM
ranker (one epoch) on the real MovieLens-100K data (Recommenders' 75/25 split by item;
user 1's training interactions are dropped so that user 1 is a cold user), writes the
run bundle (``write_bundle``), builds the Triton repository from it
(``build_repository``) and starts ``LocalTritonServer`` on it in explicit
model-control mode. Every test talks to that server through the project's
clients and compares with ``TwoStageRecommender.recommend`` on the same models.

The version roll-in tests (marked ``slow``) run last: they replace the ranker.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.grpc as grpcclient
from serving_kit import assert_same_ranking

from recsys.bundle.writer import write_bundle
from recsys.data.movielens import load_ml100k
from recsys.data.splits import stratified_split
from recsys.export.onnx_export import export_ranker
from recsys.features.build import build_features
from recsys.features.schema import FeatureSchema
from recsys.index import IndexConfig, ItemIndex
from recsys.models.dlrm import RankerConfig
from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig
from recsys.recommend import (
    AggregationConfig,
    RankerContext,
    RankerDataConfig,
    TrainedRanker,
    TwoStageRecommender,
    build_ranker_examples,
    retrieve_candidates,
    train_two_stage_ranker,
)
from recsys.recommend.two_stage import RetrievalVectors
from recsys.serving.client import AsyncRecsysClient, ClientConfig, RecsysClient
from recsys.serving.errors import InferenceError, InvalidRequestError, ModelLoadError
from recsys.serving.recommend_client import (
    AsyncRecommendClient,
    Recommendation,
    RecommendClient,
    recommend_inputs,
)
from recsys.serving.repository import (
    RepositoryConfig,
    add_model_version,
    build_repository,
    roll_in,
)
from recsys.serving.server import LocalTritonServer, TritonServerConfig
from recsys.training.ranker_trainer import RankerTrainerConfig
from recsys.training.retrieval import RetrievalData, RetrievalTrainer, RetrievalTrainerConfig

pytestmark = pytest.mark.triton

REPO = Path(__file__).resolve().parents[2]
COLD_USER = 1
UNKNOWN_USER = 999_999
N_CANDIDATES = 100
AGG = AggregationConfig(
    ranker_weight=1.0, retrieval_weight=0.5, freshness_weight=0.1, mmr_lambda=0.8
)
ITEMS = ["item_ids", "scores"]


@dataclass
class Served:
    recommender: TwoStageRecommender
    schema: FeatureSchema
    root: Path
    server: LocalTritonServer
    url: str
    workdir: Path


def _train(ml100k_dir: Path) -> tuple[TwoStageRecommender, TwoTower, FeatureSchema, object]:
    torch.manual_seed(0)
    data = load_ml100k(ml100k_dir)
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    train = train[train["user_id"] != COLD_USER]
    schema = FeatureSchema.from_yaml(REPO / "configs/schema/ml100k.yaml")
    dataset = build_features(data, (train, test), schema)
    assert dataset.vocabs is not None
    tower_schema = schema.select([f.name for f in schema if f.name not in ("hour", "weekday")])
    tower_cfg = TowerConfig((32, 16))
    two_tower = TwoTower(
        tower_schema,
        dataset.vocabs.num_embeddings(),
        TwoTowerConfig(embedding_dim=16, user_tower=tower_cfg, item_tower=tower_cfg),
    )
    retrieval_data = RetrievalData.build(dataset, two_tower.schema, two_tower.feature_names)
    trainer = RetrievalTrainer(
        two_tower, retrieval_data, RetrievalTrainerConfig(epochs=1, progress=False)
    )
    trainer.fit(None)
    two_tower.eval()
    queries, items = (t.numpy() for t in trainer.retrieval_vectors())
    vectors = RetrievalVectors(queries, items, trainer.item_embeddings().numpy())

    data_cfg = RankerDataConfig(num_candidates=N_CANDIDATES, hard_negatives=20)
    context = RankerContext.from_processed(dataset, schema, dataset.vocabs, data_cfg)
    index = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(
        items, np.arange(context.n_items)
    )
    # Ranker examples from the held-out interactions of 300 users: a serving test
    # needs a trained ranker, not an honest evaluation protocol.
    held = test[test["user_id"].isin(pd.unique(test["user_id"])[:300])]
    users = pd.Index(context.user_ids).get_indexer(pd.unique(held["user_id"]))
    cands = retrieve_candidates(index, queries, users, N_CANDIDATES, exclude=context.seen)
    examples = build_ranker_examples(held, context, cands, queries, items, data_cfg)
    fit = train_two_stage_ranker(
        context,
        examples,
        schema,
        RankerConfig(
            embedding_dim=8, dense_arch_layer_sizes=(16, 8), over_arch_layer_sizes=(16, 1)
        ),
        RankerTrainerConfig(epochs=1, sharding="local", progress=False),
    )
    recommender = TwoStageRecommender(
        context, index, vectors, fit.ranker, AGG, num_candidates=N_CANDIDATES
    )
    return recommender, two_tower, schema, dataset


def _server_config(root: Path) -> TritonServerConfig:
    """Every model of repository ``root`` loaded, explicit model control."""
    return TritonServerConfig(
        model_repository=root,
        model_control_mode="explicit",
        load_models=("*",),
        startup_timeout_s=180,
    )


@pytest.fixture(scope="module")
def served(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    torch.set_num_threads(1)
    recommender, two_tower, schema, dataset = _train(ml100k_dir)
    workdir = tmp_path_factory.mktemp("e2e")
    root = workdir / "repository"
    # max_k above the catalogue: the repository serves at most the catalogue size
    bundle = write_bundle(recommender, two_tower, schema, dataset, workdir / "bundle")  # type: ignore[arg-type]
    build_repository(bundle, root, RepositoryConfig(max_k=5000))
    with LocalTritonServer(_server_config(root)) as server:
        yield Served(recommender, schema, root, server, server.grpc_url, workdir)


def _offline(recommender: TwoStageRecommender, user: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    out = recommender.recommend(np.array([user]), k)
    return out.item_ids[0][out.valid[0]], out.scores[0][out.valid[0]]


def _assert_same(rec: object, recommender: TwoStageRecommender, user: int, k: int) -> None:
    items, scores = _offline(recommender, user, k)
    assert_same_ranking(rec.item_ids, rec.scores, items, scores, what=f"user {user}")  # type: ignore[attr-defined]


# -- results --------------------------------------------------------------------------------


def test_served_lists_equal_offline_recommend(served: Served) -> None:
    users = [*served.recommender.context.user_ids[1:21].tolist(), COLD_USER, UNKNOWN_USER]
    with RecommendClient(served.url) as client:
        for user in users:
            rec = client.recommend(user, 10)
            assert len(rec) == 10
            _assert_same(rec, served.recommender, user, 10)


def _recommend_stats(served: Served) -> tuple[int, int]:
    """Triton's inference and execution counts of `recommend` so far."""
    control = grpcclient.InferenceServerClient(url=served.url)
    try:
        stats = control.get_inference_statistics("recommend", headers=served.server.admin_headers)
        model = stats.model_stats[0]
    finally:
        control.close()
    return int(model.inference_count), int(model.execution_count)


def test_concurrent_requests_are_batched_and_equal_offline(served: Served) -> None:
    users = served.recommender.context.user_ids[100:164].tolist()

    async def ask() -> list[object]:
        async with AsyncRecommendClient(served.url) as client:
            return await client.recommend_many(users, 20)

    recs = asyncio.run(ask())
    for user, rec in zip(users, recs, strict=True):
        _assert_same(rec, served.recommender, user, 20)
    inferences, executions = _recommend_stats(served)
    # the dynamic batcher merged requests: fewer executions than requests
    assert executions < inferences


def test_requests_with_contexts_of_different_lengths_share_a_batch(served: Served) -> None:
    users = served.recommender.context.user_ids[200:264].tolist()
    # every context a different length (session ids of 1-64 characters)
    contexts = [
        {"device_type": "mobile", "session_id": "s" * (n + 1), "request_id": f"ctx-{n}"}
        for n in range(len(users))
    ]

    async def ask() -> list[object]:
        async with AsyncRecommendClient(served.url) as client:
            calls = [
                client.recommend(u, 10, context=c) for u, c in zip(users, contexts, strict=True)
            ]
            return list(await asyncio.gather(*calls))

    before = _recommend_stats(served)
    recs = asyncio.run(ask())
    # Triton counts an execution after its responses are sent: wait for the counts
    deadline = time.monotonic() + 10
    after = _recommend_stats(served)
    while after[0] - before[0] < len(users) and time.monotonic() < deadline:
        time.sleep(0.05)
        after = _recommend_stats(served)
    for n, (user, rec) in enumerate(zip(users, recs, strict=True)):
        assert rec.request_id == f"ctx-{n}"  # each answer is its own request's
        _assert_same(rec, served.recommender, user, 10)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(users)
    # ragged contexts are merged by the dynamic batcher (one execution each without
    # allow_ragged_batch, as their shapes differ)
    assert executions < inferences


class CountingClient(AsyncRecsysClient):
    """The real asyncio client, counting the requests it sends and the most in flight."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent = 0
        self.in_flight = 0
        self.peak = 0

    async def infer(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        self.sent += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().infer(*args, **kwargs)
        finally:
            self.in_flight -= 1


def test_recommend_many_keeps_at_most_concurrency_requests_in_flight(served: Served) -> None:
    users = served.recommender.context.user_ids[200:230].tolist()

    async def ask() -> tuple[list[Recommendation], CountingClient]:
        counting = CountingClient(served.url)
        async with AsyncRecommendClient(counting) as client:
            recs = await client.recommend_many(users, 10, concurrency=3)
            assert await client.recommend_many([], 10, concurrency=3) == []
            with pytest.raises(ValueError, match="concurrency"):
                await client.recommend_many(users, 10, concurrency=0)
        await counting.close()
        return recs, counting

    recs, counting = asyncio.run(ask())
    assert counting.sent == len(users)
    assert counting.peak == 3
    assert [r.user_id for r in recs] == users  # input order, whatever finished first
    for user, rec in zip(users, recs, strict=True):
        _assert_same(rec, served.recommender, user, 10)


def test_recommend_many_sends_nothing_after_the_first_failure(served: Served) -> None:
    good = served.recommender.context.user_ids[300:340].tolist()
    users = [good[0], 2**63, *good[1:]]  # the second user does not fit int64

    async def ask() -> tuple[int, int]:
        counting = CountingClient(served.url)
        async with AsyncRecommendClient(counting) as client:
            with pytest.raises(InvalidRequestError, match="int64"):
                await client.recommend_many(users, 10, concurrency=2)
            at_failure = counting.sent
            await asyncio.sleep(0.5)  # a worker left running would go on sending here
        await counting.close()
        return at_failure, counting.sent

    at_failure, later = asyncio.run(ask())
    assert at_failure <= 2
    assert later == at_failure


def test_unknown_user_gets_popular_items_and_cold_user_is_served(served: Served) -> None:
    ctx = served.recommender.context
    popular = ctx.item_ids[np.lexsort((np.arange(ctx.n_items), -ctx.item_count))]
    with RecommendClient(served.url) as client:
        unknown = client.recommend(UNKNOWN_USER, 15)
        cold = client.recommend(COLD_USER, 15)
    np.testing.assert_array_equal(unknown.item_ids, popular[:15])
    np.testing.assert_allclose(unknown.scores, np.log1p(np.sort(ctx.item_count)[::-1][:15]))
    assert len(cold) == 15 and not np.array_equal(cold.item_ids, unknown.item_ids)


def test_k_of_the_whole_catalogue_returns_every_unseen_item(served: Served) -> None:
    ctx = served.recommender.context
    user = int(ctx.user_ids[7])
    with RecommendClient(served.url) as client:
        rec = client.recommend(user, ctx.n_items)
        with pytest.raises(InferenceError, match=f"exceeds max_k={ctx.n_items}") as info:
            client.recommend(user, ctx.n_items + 1)
        assert info.value.status is grpc.StatusCode.INVALID_ARGUMENT
    seen = ctx.item_ids[ctx.seen.rows(np.array([7])).indices]
    assert len(rec) == ctx.n_items - len(seen)
    assert sorted(rec.item_ids.tolist()) == sorted(np.setdiff1d(ctx.item_ids, seen).tolist())
    assert np.isfinite(rec.scores).all() and -1 not in rec.item_ids
    _assert_same(rec, served.recommender, user, ctx.n_items)


# -- bad requests ---------------------------------------------------------------------------


def _bad(client: RecsysClient, inputs: dict[str, np.ndarray], version: str = "") -> InferenceError:
    with pytest.raises(InferenceError) as info:
        client.infer("recommend", inputs, ITEMS, model_version=version)
    # the server keeps serving: the next good request succeeds
    good = client.infer("recommend", recommend_inputs(2, 3), ITEMS)
    assert good["item_ids"].shape == (1, 3)
    return info.value


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        (recommend_inputs(2, 0), "k must be >= 1"),
        (recommend_inputs(2, -7), "k must be >= 1"),
        (recommend_inputs(2, 2**31 - 1), "exceeds max_k"),
        (recommend_inputs(2, 2**32 + 5), "k=4294967301 exceeds max_k"),  # no int32 wrap
        (recommend_inputs(2, 2**63 - 1), "exceeds max_k"),
        ({"user_id": np.array([[2]]), "k": np.array([[5]], np.int32)}, "data-type"),
        ({"user_id": np.array([[2.0]]), "k": np.array([[5]], np.int64)}, "data-type"),
        ({"user_id": np.array([[2, 3]]), "k": np.array([[5]], np.int64)}, "shape"),
        ({"user_id": np.array([[2], [3]]), "k": np.array([[5], [5]], np.int64)}, "one user"),
        ({"user_id": np.zeros((0, 1), np.int64), "k": np.zeros((0, 1), np.int64)}, "byte size"),
        ({"user_id": np.array([[2]])}, "k"),
    ],
    ids=[
        "k0",
        "k-neg",
        "k-huge",
        "k-wraps-int32",
        "k-int64-max",
        "k-int32",
        "user-float",
        "shape",
        "two-users",
        "empty",
        "no-k",
    ],
)
def test_bad_requests_get_a_clear_error(
    served: Served, inputs: dict[str, np.ndarray], needle: str
) -> None:
    with RecsysClient(ClientConfig(url=served.url, max_retries=0)) as client:
        error = _bad(client, inputs)
    assert error.status is grpc.StatusCode.INVALID_ARGUMENT, error
    assert needle in error.message


def test_unknown_version_and_out_of_vocabulary_ids(served: Served) -> None:
    with RecsysClient(ClientConfig(url=served.url, max_retries=0)) as client:
        error = _bad(client, recommend_inputs(2, 5), version="7")
        assert error.status is grpc.StatusCode.NOT_FOUND and "version 7" in error.message
        ids = np.full((1, 5, 50), -1, dtype=np.int64)
        ids[0, 0, 0] = 10**6  # a user id row far outside the user_id table
        with pytest.raises(InferenceError) as info:
            client.infer("user_tower", {"ids": ids}, ["embeddings"])
        assert info.value.status is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InferenceError) as info:
            client.infer(
                "retrieval",
                {"query": np.zeros((1, 16), np.float32), "top_n": np.array([[0]], np.int32)},
                ["item_ids"],
            )
        assert info.value.status is grpc.StatusCode.INVALID_ARGUMENT
        assert "top_n" in info.value.message
        assert client.infer("recommend", recommend_inputs(2, 3), ITEMS)["item_ids"].shape == (1, 3)


# -- inline retrieval: the user tower and FAISS inside recommend ----------------------------


@pytest.fixture(scope="module")
def served_inline(served: Served) -> Iterator[Served]:
    """A second server on a repository of the same bundle, built with inline retrieval."""
    root = served.workdir / "repository_inline"
    build_repository(
        served.workdir / "bundle", root, RepositoryConfig(max_k=5000, retrieval_mode="inline")
    )
    with LocalTritonServer(_server_config(root)) as server:
        yield Served(served.recommender, served.schema, root, server, server.grpc_url, root)


def _inference_counts(served: Served) -> dict[str, int]:
    control = grpcclient.InferenceServerClient(url=served.url)
    try:
        stats = control.get_inference_statistics("", headers=served.server.admin_headers)
    finally:
        control.close()
    return {m.name: int(m.inference_count) for m in stats.model_stats}


def test_inline_retrieval_serves_the_offline_lists_without_stage_calls(
    served_inline: Served,
) -> None:
    served = served_inline
    before = _inference_counts(served)
    users = [*served.recommender.context.user_ids[1:21].tolist(), COLD_USER, UNKNOWN_USER]
    with RecommendClient(served.url) as client:
        for user in users:
            _assert_same(client.recommend(user, 10), served.recommender, user, 10)
    many = served.recommender.context.user_ids[100:164].tolist()

    async def ask() -> list[Recommendation]:
        async with AsyncRecommendClient(served.url) as client:
            return await client.recommend_many(many, 20)

    for user, rec in zip(many, asyncio.run(ask()), strict=True):
        _assert_same(rec, served.recommender, user, 20)
    after = _inference_counts(served)
    assert after["recommend"] - before["recommend"] == len(users) + len(many)
    # the user tower and the search ran inside recommend; the ranker is still a BLS call
    assert after["user_tower"] == before["user_tower"]
    assert after["retrieval"] == before["retrieval"]
    assert after["ranker"] > before["ranker"]


def test_inline_retrieval_answers_bad_requests_and_keeps_serving(served_inline: Served) -> None:
    with RecsysClient(ClientConfig(url=served_inline.url, max_retries=0)) as client:
        error = _bad(client, recommend_inputs(2, 0))
        assert error.status is grpc.StatusCode.INVALID_ARGUMENT and "k" in error.message
        assert client.infer("recommend", recommend_inputs(2, 3), ITEMS)["item_ids"].shape == (1, 3)
    # the stage models serve direct callers as in a repository without inline retrieval
    with RecsysClient(served_inline.url) as client:
        ids = np.full((1, 5, 50), -1, dtype=np.int64)
        ids[0, 0, 0] = 3
        assert client.infer("user_tower", {"ids": ids}, ["embeddings"])["embeddings"].shape == (
            1,
            16,
        )


# -- rolling in a new version (last: these replace the ranker) -----------------------------


class RequestLoop(threading.Thread):
    """Sends recommend requests back to back until stopped; records every outcome."""

    def __init__(self, url: str, user: int) -> None:
        super().__init__(daemon=True)
        self.url, self.user = url, user
        self.ok = 0
        self.errors: list[str] = []
        self.answers: list[tuple[float, tuple[int, ...]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        with RecommendClient(ClientConfig(url=self.url, max_retries=0)) as client:
            while not self._stop_event.is_set():
                try:
                    rec = client.recommend(self.user, 10)
                except InferenceError as error:
                    self.errors.append(str(error))
                    continue
                self.ok += 1
                self.answers.append((time.monotonic(), tuple(rec.item_ids.tolist())))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def _negated_ranker(ranker: TrainedRanker) -> TrainedRanker:
    """The same ranker with its logits negated (the last layer's weights times -1)."""
    model = copy.deepcopy(ranker.model)
    last = [m for m in model.dlrm.over_arch.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    return TrainedRanker(model.eval(), ranker.scaler, ranker.data_config)


@pytest.mark.slow
def test_roll_in_a_new_ranker_version_while_serving(served: Served) -> None:
    user = int(served.recommender.context.user_ids[11])
    new = _negated_ranker(served.recommender.ranker)  # type: ignore[arg-type]
    staging = served.workdir / "staging"
    export_ranker(
        new.model, served.schema, staging, model_version=2, triton_layout=True, per_list=True
    )
    offline_new = copy.copy(served.recommender)
    offline_new.ranker = new
    before, _ = _offline(served.recommender, user, 10)
    after, _ = _offline(offline_new, user, 10)
    assert not np.array_equal(before, after)

    loop = RequestLoop(served.url, user)
    loop.start()
    time.sleep(1.0)
    assert add_model_version(served.root, "ranker", staging / "ranker" / "2") == 2
    ready = roll_in(served.server, "ranker")
    switched = time.monotonic()
    time.sleep(1.5)
    loop.stop()

    assert ready == [2]  # version 1 was unloaded once version 2 served
    assert not loop.errors, loop.errors[:3]
    assert loop.ok > 10
    answers = {items for _, items in loop.answers}
    assert answers <= {tuple(before), tuple(after)}
    assert tuple(before) in {a for t, a in loop.answers if t < switched}
    assert {a for t, a in loop.answers if t > switched + 0.5} == {tuple(after)}
    with RecommendClient(served.url) as client:
        _assert_same(client.recommend(user, 10), offline_new, user, 10)
    # rolling back: remove the new folder and load again
    shutil.rmtree(served.root / "ranker" / "2")
    assert roll_in(served.server, "ranker") == [1]
    with RecommendClient(served.url) as client:
        _assert_same(client.recommend(user, 10), served.recommender, user, 10)


@pytest.mark.slow
def test_a_version_that_fails_to_load_is_reported_and_the_old_one_keeps_serving(
    served: Served,
) -> None:
    broken = served.workdir / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    version = add_model_version(served.root, "ranker", broken)
    loop = RequestLoop(served.url, int(served.recommender.context.user_ids[3]))
    loop.start()
    try:
        with pytest.raises(ModelLoadError) as info:
            roll_in(served.server, "ranker")
        assert f"version {version}" in info.value.message or "model.onnx" in info.value.message
        time.sleep(0.5)
    finally:
        loop.stop()
        shutil.rmtree(served.root / "ranker" / str(version))
    assert not loop.errors, loop.errors[:3]
    assert loop.ok > 0
    assert served.server.is_model_ready("ranker", str(version - 1))


# -- adversarial requests, over HTTP JSON and gRPC ----------------------------------------------


def _post(server: LocalTritonServer, path: str, body: bytes) -> tuple[int, str]:
    import http.client

    assert server.http_url is not None
    host, port = server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def _infer_body(user: Any = 2, k: Any = 5, **extra: Any) -> dict[str, Any]:
    inputs = [
        {"name": "user_id", "shape": [1, 1], "datatype": "INT64", "data": [user]},
        {"name": "k", "shape": [1, 1], "datatype": "INT64", "data": [k]},
    ]
    return {"inputs": inputs, **extra}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_bad_http_bodies_get_an_error_and_the_server_keeps_serving(served: Served) -> None:
    server = served.server
    path = "/v2/models/recommend/infer"
    with RecommendClient(served.url) as client:
        want = client.recommend(2, 5).item_ids.tolist()
    good = json.dumps(_infer_body()).encode()
    oversize = _infer_body()
    for tensor in oversize["inputs"]:
        tensor["shape"], tensor["data"] = [65, 1], tensor["data"] * 65  # max_batch_size 64
    huge = b'{"inputs": [' + b"1," * 4_000_000 + b"1]}"  # 8 MB, not a valid request
    cases: list[tuple[str, bytes, str]] = [
        ("malformed", b"{not json", "failed to parse the request JSON"),
        ("non-utf8", b"\xff\xfe\x00", "failed to parse the request JSON"),
        ("huge", huge, ""),
        ("k wraps int32", json.dumps(_infer_body(k=4294967301)).encode(), "exceeds max_k"),
        ("k beyond int64", json.dumps(_infer_body(k=2**70)).encode(), ""),
        ("k negative", json.dumps(_infer_body(k=-1)).encode(), "k must be >= 1"),
        ("k text", json.dumps(_infer_body(k="ten")).encode(), ""),
        ("k float", json.dumps(_infer_body(k=2.5)).encode(), ""),
        ("emoji user", json.dumps(_infer_body(user="\U0001f600\u202e")).encode(), ""),
        ("far-future user id", json.dumps(_infer_body(user=2**63 - 1)).encode(), ""),
        ("oversize batch", json.dumps(oversize).encode(), "batch-size"),
        (
            "missing k",
            json.dumps({"inputs": _infer_body()["inputs"][:1]}).encode(),
            "missing required input(s) ['k']",
        ),
        (
            "extra input",
            json.dumps(
                {"inputs": [*_infer_body()["inputs"], {**_infer_body()["inputs"][1], "name": "x"}]}
            ).encode(),
            "unexpected inference input 'x'",
        ),
    ]
    before = _rss_kb(int(server.pid or 0))
    for name, body, needle in cases:
        status, text = _post(server, path, body)
        if name == "far-future user id":  # a valid request: an unknown user, popular items
            assert status == 200, text
            continue
        assert 400 <= status < 600 and status != 200, (name, status)
        assert "error" in json.loads(text), (name, text)
        assert needle in text, (name, text)
        status, text = _post(server, path, good)  # the next good request is answered right
        assert status == 200, (name, text)
        got = next(o for o in json.loads(text)["outputs"] if o["name"] == "item_ids")["data"]
        assert got == want, name
    for _ in range(10):  # memory stays bounded under repeated oversize bodies
        _post(server, path, huge)
    assert _rss_kb(int(server.pid or 0)) - before < 300_000
    status, _ = _post(server, "/v2/models/nope/infer", good)
    assert status in (400, 404)
    status, _ = _post(server, "/v2/models/recommend/versions/9/infer", good)
    assert status in (400, 404)


def test_two_hundred_concurrent_clients_all_get_their_answer(served: Served) -> None:
    users = served.recommender.context.user_ids[200:400].tolist()
    with RecommendClient(served.url) as client:
        want = {u: client.recommend(u, 10).item_ids.tolist() for u in users}

    async def one(user: int) -> list[int]:
        async with AsyncRecommendClient(ClientConfig(served.url, client_timeout_s=120)) as c:
            return (await c.recommend(user, 10)).item_ids.tolist()

    async def everyone() -> list[list[int]]:
        return list(await asyncio.gather(*(one(u) for u in users)))

    got = asyncio.run(everyone())
    assert len(got) == 200
    assert {u: g for u, g in zip(users, got, strict=True)} == want


# -- readiness ------------------------------------------------------------------------------


def test_readiness_turns_red_when_a_stage_model_is_unloaded(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    from recsys.serving.cli import main as serving_cli

    health = ["health", "--url", served.url]
    assert serving_cli(health) == 0
    served.server.unload_model("user_tower")  # an admin call: the server's own key
    try:
        deadline = time.monotonic() + 30
        while served.server.is_model_ready("user_tower") and time.monotonic() < deadline:
            time.sleep(0.1)
        capsys.readouterr()
        assert serving_cli(health) == 1
        assert "user_tower: not ready" in capsys.readouterr().err
        with RecommendClient(served.url) as client, pytest.raises(InferenceError):
            client.recommend(2, 5)  # the server-wide readiness would still say ready
    finally:
        served.server.load_model("user_tower")
    assert serving_cli(health) == 0
    with RecommendClient(served.url) as client:
        assert len(client.recommend(2, 5)) == 5
