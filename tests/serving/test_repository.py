"""Generating the Triton repository, and its numpy serving path, without a server.

The repository is built from a two-stage recommender over the real MovieLens-100K
data (Recommenders' 75/25 item-stratified split; user 1's training interactions are
dropped, so user 1 is a *cold* user: known demographics, no history). The models are
freshly initialized, not trained: layout, configs and the equality of the served
computation with ``TwoStageRecommender.recommend`` do not depend on the weights (the
Triton tests in ``test_recommend_e2e.py`` use trained ones).

The served computation runs here in-process: ``RecommendEngine`` with the exported
ONNX files in onnxruntime and the saved FAISS index, exactly the objects the
``recommend``/``retrieval`` models load inside Triton.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_kit import assert_same_ranking, in_process_engine, small_two_stage

from recsys.features.store import ProcessedDataset
from recsys.index import IndexConfig, ItemIndex
from recsys.recommend.ranker_data import (
    dense_matrix,
)
from recsys.recommend.two_stage import (
    TwoStageRecommender,
)
from recsys.runtime import aggregation as offline_agg
from recsys.runtime import ranking
from recsys.runtime.aggregation import AggregationConfig
from recsys.runtime.engine import RecommendEngine, RequestValueError
from recsys.runtime.faiss_search import MISSING_ID, FaissSearcher
from recsys.runtime.windows import count_in_window
from recsys.serving.repository import (
    GPU_ACCELERATORS,
    MODEL_NAMES,
    TEMPLATES_DIR,
    RepositoryConfig,
    RepositoryInfo,
    add_model_version,
    build_repository,
    describe,
    model_versions,
    render_config,
    tensor_block,
)

REPO = Path(__file__).resolve().parents[2]
COLD_USER = 1
UNKNOWN_USER = 999_999
N_CANDIDATES = 60
AGG = AggregationConfig(
    ranker_weight=1.0, retrieval_weight=0.5, freshness_weight=0.2, mmr_lambda=0.7
)


@dataclass
class Built:
    recommender: TwoStageRecommender
    dataset: ProcessedDataset
    info: RepositoryInfo
    engine: RecommendEngine


@pytest.fixture(scope="module")
def built(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    parts = small_two_stage(
        ml100k_dir,
        cold_user=COLD_USER,
        num_candidates=N_CANDIDATES,
        aggregation=AGG,
        item_bias=True,  # queries get a constant 1 slot, item vectors the bias
        exclude_genres=("Documentary",),
    )
    tmp = tmp_path_factory.mktemp("serving-repo")
    bundle = parts.bundle(tmp / "bundle")
    root = tmp / "repository"
    info = build_repository(bundle.root, root, RepositoryConfig(max_queue_delay_us=150))
    return Built(parts.recommender, parts.dataset, info, in_process_engine(root))


# -- layout and configs ------------------------------------------------------------------


def test_every_model_has_a_config_and_a_version_folder(built: Built) -> None:
    root = built.info.root
    assert sorted(p.name for p in root.iterdir()) == sorted(MODEL_NAMES)
    for name in MODEL_NAMES:
        text = (root / name / "config.pbtxt").read_text()
        config = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
        assert f'name: "{name}"' in config
        assert "dynamic_batching" in config and "max_queue_delay_microseconds: 150" in config
        if name == "recommend":  # its Python is CPU work wherever the stage models run
            assert "instance_group [ { count: 2 kind: KIND_CPU } ]" in config
        else:
            assert "instance_group" not in config  # GPU when present, CPU otherwise
        assert "${" not in config  # every template field was filled
        assert model_versions(root, name) == [1]
    for name in ("user_tower", "ranker"):
        assert 'platform: "onnxruntime_onnx"' in (root / name / "config.pbtxt").read_text()
        assert (root / name / "1" / "model.onnx").is_file()
    for name in ("retrieval", "recommend"):
        assert 'backend: "python"' in (root / name / "config.pbtxt").read_text()
        assert (root / name / "1" / "model.py").read_text() == (
            TEMPLATES_DIR / name / "model.py"
        ).read_text()
    for f in ("index.faiss", "item_ids.npy", "config.json", "metadata.json"):
        assert (root / "retrieval" / "1" / f).is_file()
    summary = describe(root)
    assert summary["recommend"]["num_candidates"] == N_CANDIDATES
    assert summary["recommend"]["settings"]["mmr_lambda"] == pytest.approx(0.7)


def test_onnx_configs_carry_the_manifest_shapes(built: Built) -> None:
    manifest = built.info.manifest
    user = manifest["user_tower"]
    config = (built.info.root / "user_tower" / "config.pbtxt").read_text()
    assert f"dims: [ {len(user.feature_order)}, {user.seq_len} ]" in config
    ranker = manifest["ranker"]
    config = (built.info.root / "ranker" / "config.pbtxt").read_text()
    # one row per candidate list: C candidates of item features, the user's once
    assert ranker.feature_order == ["item_id", "item_genres", "item_year", "item_popularity"]
    assert ranker.list_feature_order[:5] == [
        "user_id", "user_age", "user_gender", "user_occupation", "user_recent_items"
    ]  # fmt: skip
    assert (ranker.seq_len, ranker.list_seq_len) == (6, 50)
    assert f'name: "ids" data_type: TYPE_INT64 dims: [ -1, 4, {ranker.seq_len} ]' in config
    assert (
        f'name: "list_ids" data_type: TYPE_INT64 dims: '
        f"[ {len(ranker.list_feature_order)}, {ranker.list_seq_len} ]"
    ) in config
    assert 'name: "dense" data_type: TYPE_FP32 dims: [ -1, 15 ]' in config
    assert 'name: "logits" data_type: TYPE_FP32 dims: [ -1 ]' in config
    # the batch axis is lists: the rows limit over the candidates per list
    assert f"max_batch_size: {16_384 // N_CANDIDATES}" in config


def test_per_list_ranker_inputs_hold_exactly_the_per_pair_rows(built: Built) -> None:
    features = built.engine.features
    assert features is not None and features.per_list
    rng = np.random.default_rng(0)
    users = np.array([0, 5, features.n_users - 1])
    items = rng.integers(0, features.n_items, size=(3, 7))
    items[1, 4:] = -1  # a shorter list: empty slots
    ids, list_ids = features.list_sparse(users, items)
    assert ids.shape == (3, 7, len(features.item_names), features.item_seq_len)
    assert list_ids.shape == (3, len(features.list_names), features.list_seq_len)
    valid = items >= 0
    lists = np.nonzero(valid)[0]
    flat = features.sparse(users[lists], items[valid])  # one [F, L] row per pair
    item_cols = [features.sparse_names.index(n) for n in features.item_names]
    list_cols = [features.sparse_names.index(n) for n in features.list_names]
    # nothing is cut: the slots past each side's width are padding in every row
    assert (flat[:, item_cols, features.item_seq_len :] == -1).all()
    assert (flat[:, list_cols, features.list_seq_len :] == -1).all()
    np.testing.assert_array_equal(ids[valid], flat[:, item_cols, : features.item_seq_len])
    np.testing.assert_array_equal(list_ids[lists], flat[:, list_cols, : features.list_seq_len])
    assert (ids[~valid] == -1).all()
    assert (list_ids[:, features.list_names.index("user_recent_items")] >= 0).any()


def test_configs_parse_as_triton_model_configs_with_tensorrt_on_gpu(built: Built) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for name in MODEL_NAMES:
        config = text_format.Parse(
            (built.info.root / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        assert config.name == name and config.dynamic_batching is not None
        if name == "recommend":
            [group] = config.instance_group
            assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        else:
            assert len(config.instance_group) == 0
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        if name in ("user_tower", "ranker"):
            [trt] = accelerators
            assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP32"
        else:
            assert len(accelerators) == 0
    cuda = render_config(
        "ranker",
        {
            "name": "ranker",
            "max_batch_size": 8,
            "inputs": "",
            "outputs": "",
            "max_queue_delay_us": 100,
            "intra_op_threads": 1,
            "optimization": GPU_ACCELERATORS["cuda"],
        },
    )
    assert "execution_accelerators" not in cuda
    with pytest.raises(ValueError, match="gpu_accelerator"):
        RepositoryConfig(gpu_accelerator="openvino")
    with pytest.raises(ValueError, match="recommend_instances"):
        RepositoryConfig(recommend_instances=-1)
    default_group = render_config(
        "recommend",
        {
            "name": "recommend",
            "max_batch_size": 8,
            "max_queue_delay_us": 100,
            "max_k": 10,
            "user_tower_model": "user_tower",
            "retrieval_model": "retrieval",
            "ranker_model": "ranker",
            "ranker_max_batch_size": 64,
            "retrieval_mode": "models",
            "intra_op_threads": 1,
            "faiss_threads": 1,
            "profile_store": "",
            "exposure_log": "",
            "exposure_buffer": 10000,
            "targeting_rules": "",
            "rules_check_s": 1.0,
            "policy": "deterministic",
            "policy_depth": 50,
            "experiments": "",
            "bandit_state": "",
            "bandit_name": "policy",
            "instance_group": "# instance_group: Triton's default",
        },
    )
    parsed = text_format.Parse(default_group, model_config_pb2.ModelConfig())
    assert len(parsed.instance_group) == 0


def test_inline_retrieval_copies_the_tower_and_the_index_into_recommend(
    built: Built, tmp_path: Path
) -> None:
    from recsys.runtime.inline_stages import INDEX_DIR, USER_TOWER_FILE, load_inline_stages
    from recsys.serving.inprocess import engine_from_repository

    assert built.info.bundle is not None
    models = built.info.root
    inline = build_repository(
        built.info.bundle, tmp_path / "inline", RepositoryConfig(retrieval_mode="inline")
    ).root
    folder = inline / "recommend" / "1"
    assert (folder / USER_TOWER_FILE).read_bytes() == (
        models / "user_tower" / "1" / "model.onnx"
    ).read_bytes()
    for f in ("index.faiss", "item_ids.npy", "config.json", "metadata.json"):
        copied = (folder / INDEX_DIR / f).read_bytes()
        assert copied == (models / "retrieval" / "1" / f).read_bytes()
    # the stage models stay, for clients that call them directly
    assert sorted(p.name for p in inline.iterdir()) == sorted(MODEL_NAMES)
    config = (inline / "recommend" / "config.pbtxt").read_text()
    assert 'key: "retrieval_mode" value: { string_value: "inline" }' in config
    assert (
        'key: "retrieval_mode" value: { string_value: "models" }'
        in (models / "recommend" / "config.pbtxt").read_text()
    )
    assert not (models / "recommend" / "1" / USER_TOWER_FILE).exists()
    with pytest.raises(FileNotFoundError, match="retrieval_mode='inline'"):
        load_inline_stages(models / "recommend" / "1")
    # the engine the inline instances build serves the offline lists
    engine = engine_from_repository(inline, user_state=False)
    users = [*built.recommender.context.user_ids[:20].tolist(), COLD_USER, UNKNOWN_USER]
    answers = engine.recommend(np.array(users), np.full(len(users), 10))
    for user, answer in zip(users, answers, strict=True):
        items, scores = _offline(built.recommender, user, 10)
        assert_same_ranking(answer.item_ids, answer.scores, items, scores, what=f"user {user}")
    with pytest.raises(ValueError, match="retrieval_mode"):
        RepositoryConfig(retrieval_mode="local")


def test_tensor_block_refuses_a_missing_batch_axis() -> None:
    from recsys.export.manifest import TensorSpec

    with pytest.raises(ValueError, match="batch"):
        tensor_block("input", [TensorSpec("x", "float32", (3, 4))])


def test_a_second_build_into_the_same_folder_needs_overwrite(built: Built) -> None:
    assert built.info.bundle is not None
    with pytest.raises(FileExistsError, match="overwrite"):
        build_repository(built.info.bundle, built.info.root)


def test_overwrite_never_deletes_a_folder_that_is_not_a_repository(
    built: Built, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    assert built.info.bundle is not None
    with pytest.raises(FileExistsError, match="refusing"):
        build_repository(built.info.bundle, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_add_model_version_copies_next_to_the_old_one(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "ranker" / "1").mkdir(parents=True)
    onnx_file = built.info.root / "ranker" / "1" / "model.onnx"
    assert add_model_version(root, "ranker", onnx_file) == 2
    assert (root / "ranker" / "2" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert add_model_version(root, "ranker", root / "ranker" / "2", version=7) == 7
    assert model_versions(root, "ranker") == [1, 2, 7]
    assert not list((root / "ranker").glob(".*partial"))
    with pytest.raises(FileExistsError):
        add_model_version(root, "ranker", onnx_file, version=2)


# -- the served computation equals the offline recommender ------------------------------


def _offline(recommender: TwoStageRecommender, user: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    out = recommender.recommend(np.array([user]), k)
    return out.item_ids[0][out.valid[0]], out.scores[0][out.valid[0]]


@pytest.mark.parametrize("k", [10, 100])
def test_engine_equals_offline_recommend(built: Built, k: int) -> None:
    users = [*built.recommender.context.user_ids[:25].tolist(), COLD_USER, UNKNOWN_USER, -4]
    answers = built.engine.recommend(np.array(users), np.full(len(users), k))
    for user, answer in zip(users, answers, strict=True):
        items, scores = _offline(built.recommender, user, k)
        assert_same_ranking(answer.item_ids, answer.scores, items, scores, what=f"user {user}")
    fallbacks = [a.fallback for a in answers]
    assert fallbacks[-2:] == [True, True] and not any(fallbacks[:-2])


def test_cold_user_is_ranked_from_demographics_and_unknown_user_gets_popular(
    built: Built,
) -> None:
    tables = built.engine.tables
    cold_row = int(tables.user_rows(np.array([COLD_USER]))[0])
    assert cold_row >= 0 and len(tables.seen(cold_row)) == 0
    unknown = built.engine.recommend(np.array([UNKNOWN_USER]), np.array([10]))[0]
    popular = tables.item_ids[tables.popular_order]
    allowed = popular[~np.isin(popular, tables.item_ids[tables.blocked])]
    np.testing.assert_array_equal(unknown.item_ids, allowed[:10])
    assert np.all(np.diff(unknown.scores) <= 0)


def test_k_of_the_whole_catalogue_returns_every_unseen_allowed_item(built: Built) -> None:
    tables = built.engine.tables
    user = int(built.recommender.context.user_ids[3])
    row = int(tables.user_rows(np.array([user]))[0])
    answer = built.engine.recommend(np.array([user]), np.array([tables.n_items]))[0]
    expected = np.setdiff1d(np.arange(tables.n_items), tables.excluded(row))
    assert sorted(answer.item_ids.tolist()) == sorted(tables.item_ids[expected].tolist())
    assert MISSING_ID not in answer.item_ids and -1 not in answer.item_ids
    items, scores = _offline(built.recommender, user, tables.n_items)
    assert_same_ranking(answer.item_ids, answer.scores, items, scores, what=f"user {user}")


def test_a_long_list_is_mmr_for_its_depth_then_relevance_order(built: Built) -> None:
    # the work of a long list is bounded: MMR picks the first mmr_depth positions,
    # the rest follow by relevance (ties to the smaller item id)
    depth = built.engine.tables.settings.mmr_depth
    user = int(built.recommender.context.user_ids[7])
    answer = built.engine.recommend(np.array([user]), np.array([depth + 200]))[0]
    tail = answer.scores[depth:]
    assert len(tail) == 200
    assert (np.diff(tail) <= 0).all()
    head = answer.scores[:depth]
    assert (np.diff(head) > 0).any()  # MMR (lambda 0.7) does not keep relevance order


def test_max_k_is_capped_at_the_catalogue_size(built: Built) -> None:
    engine = built.engine  # asked for max_k=5000 on a smaller catalogue
    assert engine.max_k == engine.tables.n_items < 5000
    with pytest.raises(RequestValueError, match=f"exceeds max_k={engine.tables.n_items}"):
        engine.check_k(engine.tables.n_items + 1)
    text = (built.info.root / "recommend" / "config.pbtxt").read_text()
    # the default: the retrieval depth N, so every request costs the same
    assert f'key: "max_k" value: {{ string_value: "{N_CANDIDATES}" }}' in text
    assert 'name: "k" data_type: TYPE_INT64' in text


def test_non_finite_stage_values_fail_only_their_list(built: Built) -> None:
    root = built.info.root
    users = [int(u) for u in built.recommender.context.user_ids[:4]]
    poisoned = users[2]
    tables = built.engine.tables
    row = int(tables.user_rows(np.array([poisoned]))[0])
    inner = built.engine.user_tower

    def tower(ids: np.ndarray) -> np.ndarray:
        out = np.array(inner(ids), copy=True)
        # the poisoned user's tower input is its row's ids: make its embedding NaN
        match = (ids == tables.user_tower_ids[row][None]).all(axis=(1, 2))
        out[match, 1] = np.nan
        return out

    engine = in_process_engine(root)
    engine.user_tower = tower
    answers = engine.recommend(np.array(users), np.full(len(users), 10))
    assert answers[2].error is not None and "user_tower output" in answers[2].error
    assert f"user {poisoned}" in answers[2].error and len(answers[2].item_ids) == 0
    clean = built.engine.recommend(np.array(users), np.full(len(users), 10))
    for i in (0, 1, 3):
        assert answers[i].error is None
        np.testing.assert_array_equal(answers[i].item_ids, clean[i].item_ids)

    engine.user_tower = inner
    assert engine.features is not None
    features_dense = engine.features.dense
    first_row = int(tables.user_rows(np.array([users[0]]))[0])

    def bad_features(pair_users: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        dense = features_dense(pair_users, *args, **kwargs).copy()
        dense[np.flatnonzero(pair_users == first_row)[:1], 0] = np.inf
        return dense

    engine.features.dense = bad_features  # type: ignore[method-assign]
    answers = engine.recommend(np.array(users), np.full(len(users), 10))
    assert answers[0].error is not None and "ranker dense input" in answers[0].error
    assert engine.features.dense_names[0] in answers[0].error
    assert all(a.error is None and len(a.item_ids) == 10 for a in answers[1:])


def test_blocked_genre_never_appears(built: Built) -> None:
    tables = built.engine.tables
    assert len(tables.blocked) > 0
    users = built.recommender.context.user_ids[:20]
    for answer in built.engine.recommend(users, np.full(len(users), 300)):
        assert not np.isin(answer.item_ids, tables.item_ids[tables.blocked]).any()


@pytest.mark.parametrize("k", [0, -3, 5001])
def test_engine_refuses_k_out_of_range(built: Built, k: int) -> None:
    with pytest.raises(RequestValueError, match="k"):
        built.engine.recommend(np.array([2]), np.array([k]))


def test_ranker_features_equal_the_offline_context(built: Built) -> None:
    ctx = built.recommender.context
    features = built.engine.features
    assert features is not None
    rng = np.random.default_rng(1)
    user = 5
    items = rng.choice(ctx.n_items, 80, replace=False)
    # include the item without a release date: its age is filled from the list
    items[0] = int(np.flatnonzero(np.isnan(ctx.release_time))[0])
    users = np.full(len(items), user)
    score = rng.normal(size=len(items)).astype(np.float32)
    rank = np.arange(len(items))
    offline = built.recommender.ranker.scaler.transform(  # type: ignore[union-attr]
        dense_matrix(ctx, users, items, score, rank)
    )
    served = features.dense(users, items, score, rank, np.zeros(len(items), np.int64), 1)
    # affinities sum float32 weights in another order than the offline matmul: ~1e-7 relative
    np.testing.assert_allclose(served, offline, rtol=1e-5, atol=1e-5)
    kjt = ctx.sparse_batch(users, items)
    ids = features.sparse(users, items)
    for f, name in enumerate(ctx.sparse_names):
        bags = kjt[name].to_padded_dense(desired_length=features.seq_len, padding_value=-1)
        np.testing.assert_array_equal(ids[:, f, :], bags.numpy(), err_msg=name)


def test_window_counter_matches_the_reference_count() -> None:
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 30, 2000)
    times = rng.integers(8.7e8, 8.9e8, 2000).astype(np.float64)
    order = np.lexsort((times, groups))
    offsets = np.r_[0, np.cumsum(np.bincount(groups, minlength=30))]
    times = times[order]
    from recsys.runtime.windows import WindowCounter

    q = rng.integers(0, 30, 500)
    hi = rng.integers(8.6e8, 9.0e8, 500).astype(np.float64)
    for days in (1, 7, 30, 365):
        lo = hi - days * 86_400.0
        expected = count_in_window(offsets, times, q, lo, hi)
        got = WindowCounter(offsets, times, 365 * 86_400.0).count(q, lo, hi)
        np.testing.assert_array_equal(got, expected)
        runs = [times[offsets[g] : offsets[g + 1]] for g in q]
        brute = [int(((r > a) & (r <= b)).sum()) for r, a, b in zip(runs, lo, hi, strict=True)]
        np.testing.assert_array_equal(got, brute)


@pytest.mark.parametrize("lam", [1.0, 0.6, 0.0])
def test_ranking_equals_recommend_aggregation(lam: float) -> None:
    rng = np.random.default_rng(3)
    valid = rng.random((6, 40)) < 0.8
    valid[2] = False  # a row without candidates
    ranker, retrieval = rng.normal(size=(6, 40)), rng.normal(size=(6, 40))
    age = np.where(rng.random((6, 40)) < 0.1, np.nan, rng.uniform(0, 40, (6, 40)))
    cfg = AggregationConfig(
        ranker_weight=1.0, retrieval_weight=0.3, freshness_weight=0.5, mmr_lambda=lam
    )
    settings = ranking.AggregationSettings.from_dict(cfg.__dict__)
    rel = ranking.relevance(valid, settings, ranker, retrieval, age)
    np.testing.assert_array_equal(rel, offline_agg.relevance(valid, cfg, ranker, retrieval, age))
    vectors = rng.normal(size=(6, 40, 5))
    np.testing.assert_array_equal(
        ranking.mmr_rerank(rel, vectors, valid, 12, lam),
        offline_agg.mmr_rerank(rel, vectors, valid, 12, lam),
    )


# -- FAISS search as the retrieval model runs it -----------------------------------------


def test_faiss_searcher_never_returns_padding(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(300, 8)).astype(np.float32)
    ids = np.arange(1000, 1300)
    flat = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(emb, ids)
    flat.save(tmp_path / "flat")
    searcher = FaissSearcher.load(tmp_path / "flat")
    got_ids, got_scores, counts = searcher.search(emb[:3], np.array([5, 10, 400]))
    expected = flat.search(emb[:3], 10)
    np.testing.assert_array_equal(got_ids[:2, :5], expected.item_ids[:2, :5])
    np.testing.assert_allclose(got_scores[1, :10], expected.scores[1], rtol=1e-6)
    assert counts.tolist() == [5, 10, 300]
    assert got_ids.shape == (3, 300) and got_ids[0, 5] == MISSING_ID
    # IVF with one probed list: FAISS pads with -1, which must never become an item
    ivf = ItemIndex(IndexConfig(kind="ivf_flat", nlist=16, nprobe=1, device="cpu"))
    ivf.build(emb, ids).save(tmp_path / "ivf")
    got_ids, got_scores, counts = FaissSearcher.load(tmp_path / "ivf").search(
        emb[:4], np.array([200, 200, 200, 200])
    )
    assert (counts < 200).all()
    for row, count in zip(got_ids, counts, strict=True):
        assert np.isin(row[:count], ids).all() and (row[count:] == MISSING_ID).all()
    assert np.isneginf(got_scores[got_ids == MISSING_ID]).all()


# -- what runs inside Triton's python backend --------------------------------------------
