"""ItemIndex on synthetic vectors: exactness, id mapping, padding, exclusions,
persistence, recall of the approximate kinds, input validation and the GPU path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from recsys.index import (
    GPU_MAX_K,
    MISSING_INT_ID,
    MISSING_STR_ID,
    Device,
    GpuUnavailableError,
    IndexConfig,
    ItemIndex,
    gpu_available,
    gpu_unavailable_reason,
)

# One thread: the test machines share few cores, and results must not depend on it.
CPU: dict[str, Any] = {"device": "cpu", "num_threads": 1}


def clustered(
    n: int, dim: int, clusters: int, spread: float, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Unit vectors around random unit centres, and each vector's cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    x = centres[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def brute_force(
    items: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact top-k rows and scores by inner product, in float64."""
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(scores, rows, axis=1).astype(np.float32)


def recall(found: npt.NDArray[np.int64], exact: npt.NDArray[np.int64]) -> float:
    return float(
        np.mean([len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact, strict=True)])
    )


def assert_scores_match_ids(
    result_ids: npt.NDArray[np.int64] | npt.NDArray[np.object_],
    result_scores: npt.NDArray[np.float32],
    valid: npt.NDArray[np.bool_],
    index: ItemIndex,
    items: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
) -> None:
    """Every valid (id, score) pair is the true inner product of that item."""
    b, j = np.nonzero(valid)
    rows, found = index.rows_of(result_ids[b, j])
    assert found.all()
    true = np.einsum("ij,ij->i", queries[b], items[rows])
    np.testing.assert_allclose(result_scores[b, j], true, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- exactness


def test_flat_equals_numpy_brute_force_top_k() -> None:
    rng = np.random.default_rng(1)
    items = rng.standard_normal((3000, 24)).astype(np.float32)
    queries = rng.standard_normal((64, 24)).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64) * 5 + 11  # non-contiguous
    index = ItemIndex(IndexConfig(kind="flat", **CPU)).build(items, ids)
    res = index.search(queries, k=20)

    rows, scores = brute_force(items, queries, 20)
    assert res.item_ids.shape == (64, 20) and res.valid.all()
    np.testing.assert_allclose(res.scores, scores, rtol=1e-5, atol=1e-5)
    # Ids must match exactly except where two scores tie to float32 precision.
    differ = res.item_ids != ids[rows]
    assert np.all(np.abs(res.scores[differ] - scores[differ]) < 1e-4), "wrong ranking"
    assert differ.mean() < 0.01


def test_string_ids_and_non_contiguous_ints_map_to_the_right_items() -> None:
    items, _ = clustered(1500, 16, 30, 0.6, seed=2)
    rng = np.random.default_rng(3)
    int_ids = rng.choice(10**12, size=1500, replace=False).astype(np.int64)
    str_ids = np.array([f"sku-{i:05d}-{'abc'[i % 3]}" for i in range(1500)], dtype=object)
    queries = items[:40]
    for kind in ("flat", "ivf_flat", "ivf_pq", "hnsw"):
        for ids in (int_ids, str_ids):
            cfg = IndexConfig(kind=kind, nprobe=8, pq_m=4, **CPU)
            index = ItemIndex(cfg).build(items, ids)
            res = index.search(queries, k=10)
            assert res.item_ids.dtype == ids.dtype
            assert res.valid.all()
            if kind == "ivf_pq":
                # PQ scores are approximate; ids must still be catalogue ids.
                assert index.rows_of(res.item_ids.reshape(-1))[1].all()
                continue
            assert_scores_match_ids(res.item_ids, res.scores, res.valid, index, items, queries)
            np.testing.assert_array_equal(res.item_ids[:, 0], ids[:40])


def test_unicode_dtype_ids_are_stored_as_str_objects() -> None:
    items, _ = clustered(50, 8, 4, 0.5, seed=4)
    ids = np.array([f"m{i}" for i in range(50)])  # dtype <U3
    index = ItemIndex(IndexConfig(**CPU)).build(items, ids)
    assert index.id_dtype == "str"
    assert index.search(items[:1], 1).item_ids[0, 0] == "m0"


# ---------------------------------------------------------------------- padding


def test_faiss_minus_one_padding_never_leaks_from_short_ivf_lists() -> None:
    # 8 tight, far-apart clusters of ~25 vectors; nprobe=1 visits one list, so FAISS
    # returns ~25 real rows and pads the rest of k=60 with -1.
    items, _ = clustered(200, 16, 8, 0.05, seed=5)
    ids = 1_000_000 - 7 * np.arange(200, dtype=np.int64)
    cfg = IndexConfig(kind="ivf_flat", nlist=8, nprobe=1, **CPU)
    index = ItemIndex(cfg).build(items, ids)
    queries = items[::10]
    _, raw_rows = index.faiss_index.search(queries, 60)
    assert (raw_rows == -1).any(), "precondition: FAISS pads these rows with -1"

    res = index.search(queries, k=60)
    assert res.item_ids.shape == (20, 60)
    np.testing.assert_array_equal(res.counts, (raw_rows >= 0).sum(axis=1))
    assert (res.counts < 60).all()
    assert np.all(res.item_ids[~res.valid] == MISSING_INT_ID)
    assert np.all(np.isneginf(res.scores[~res.valid]))
    assert not np.isin(res.item_ids[res.valid], [-1, MISSING_INT_ID]).any()
    for row, count in enumerate(res.counts):
        # Valid slots come first and are exactly FAISS's real rows, mapped to ids.
        assert res.valid[row, :count].all() and not res.valid[row, count:].any()
        real = raw_rows[row][raw_rows[row] >= 0]
        np.testing.assert_array_equal(res.item_ids[row, :count], ids[real])
    # Looking up -1 as a row would return the last item (ids[-1]); it may appear
    # only where FAISS really returned the last row.
    wrongly_last = (res.item_ids == ids[-1]).any(axis=1) & ~(raw_rows == 199).any(axis=1)
    assert not wrongly_last.any()
    assert (~(raw_rows == 199).any(axis=1)).any(), "precondition: some rows lack the last item"
    assert_scores_match_ids(res.item_ids, res.scores, res.valid, index, items, queries)


def test_k_larger_than_the_catalogue_is_clamped_to_n() -> None:
    items, _ = clustered(120, 8, 5, 0.3, seed=6)
    ids = np.array([f"it{i}" for i in range(120)], dtype=object)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("flat", {}),
        ("hnsw", {}),
        ("ivf_flat", {"nlist": 2, "nprobe": 2}),
    ]
    for kind, extra in cases:
        index = ItemIndex(IndexConfig(kind=kind, **extra, **CPU)).build(items, ids)
        res = index.search(items[:3], k=10_000)
        assert res.item_ids.shape == (3, 120)
        if kind != "hnsw":  # exhaustive over all lists: every item comes back once
            assert res.valid.all()
            for row in res.item_ids:
                assert sorted(row) == sorted(ids)
        assert not (res.item_ids[res.valid] == MISSING_STR_ID).any()
        assert (res.item_ids[~res.valid] == MISSING_STR_ID).all()
        for r in range(3):
            ids_r, scores_r = res.row(r)
            assert len(ids_r) == res.counts[r]
            assert np.all(np.diff(scores_r) <= 1e-6), "scores must be sorted best first"


def test_ivf_with_nprobe_1_and_k_above_n_pads_without_minus_one() -> None:
    items, _ = clustered(160, 16, 8, 0.05, seed=7)
    ids = np.arange(160, dtype=np.int64) + 500
    index = ItemIndex(IndexConfig(kind="ivf_flat", nlist=8, nprobe=1, **CPU)).build(items, ids)
    res = index.search(items[:5], k=1000)
    assert res.item_ids.shape == (5, 160)
    assert (res.counts < 160).all() and (res.counts > 0).all()
    assert set(res.item_ids[res.valid].tolist()) <= set(ids.tolist())
    assert (res.item_ids[~res.valid] == MISSING_INT_ID).all()


# ---------------------------------------------------------------------- exclusions


def test_exclusions_remove_seen_items_and_still_fill_k() -> None:
    rng = np.random.default_rng(8)
    items = rng.standard_normal((800, 16)).astype(np.float32)
    ids = np.arange(800, dtype=np.int64) * 3 + 1
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    rows, _ = brute_force(items, queries, 50)
    exclude: list[npt.NDArray[np.int64] | None] = [
        ids[rows[0, :30]],  # the 30 best items of query 0
        ids[rows[1, ::2]],  # every other of the top 50
        None,
        np.array([], dtype=np.int64),
        np.array([999_999_999, ids[rows[4, 0]]]),  # an id not in the catalogue is ignored
        ids,  # everything
    ]
    index = ItemIndex(IndexConfig(kind="flat", **CPU)).build(items, ids)
    res = index.search(queries, k=10, exclude=exclude)

    scores = queries @ items.T
    for b, excl in enumerate(exclude):
        masked = scores[b].copy()
        if excl is not None and len(excl):
            excl_rows, found = index.rows_of(excl)
            masked[excl_rows[found]] = -np.inf
        expected = ids[np.argsort(-masked, kind="stable")[:10]]
        if b == 5:
            assert res.counts[b] == 0
            assert (res.item_ids[b] == MISSING_INT_ID).all()
            continue
        assert res.counts[b] == 10
        np.testing.assert_array_equal(res.item_ids[b], expected)
        if excl is not None:
            assert not np.isin(res.item_ids[b], excl).any()


def test_exclusions_with_string_ids_and_approximate_index() -> None:
    items, _ = clustered(2000, 16, 40, 0.5, seed=9)
    ids = np.array([f"item/{i}" for i in range(2000)], dtype=object)
    index = ItemIndex(IndexConfig(kind="hnsw", ef_search=64, **CPU)).build(items, ids)
    plain = index.search(items[:8], k=20)
    seen = [plain.item_ids[b, :15] for b in range(8)]
    res = index.search(items[:8], k=20, exclude=seen)
    assert (res.counts == 20).all()
    for b in range(8):
        assert not np.isin(res.item_ids[b], seen[b]).any()
        # The 5 unexcluded items of the plain result lead the filtered one.
        np.testing.assert_array_equal(res.item_ids[b, :5], plain.item_ids[b, 15:])


def test_exclusion_input_errors() -> None:
    items, _ = clustered(100, 8, 4, 0.5, seed=10)
    index = ItemIndex(IndexConfig(**CPU)).build(items, np.arange(100))
    with pytest.raises(ValueError, match="one entry per query"):
        index.search(items[:3], k=5, exclude=[[1], [2]])
    with pytest.raises(ValueError, match="integer item ids"):
        index.search(items[:1], k=5, exclude=[np.array(["1"])])
    str_index = ItemIndex(IndexConfig(**CPU)).build(items, np.array([f"s{i}" for i in range(100)]))
    with pytest.raises(ValueError, match="string item ids"):
        str_index.search(items[:1], k=5, exclude=[np.array([1, 2])])


# ---------------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq", "hnsw"])
def test_save_load_round_trip_gives_identical_results(kind: str, tmp_path: Path) -> None:
    items, _ = clustered(3000, 32, 50, 0.5, seed=11)
    ids = (
        np.array([f"v{i}" for i in range(3000)], dtype=object)
        if kind == "hnsw"
        else (np.arange(3000, dtype=np.int64) * 2 + 3)
    )
    cfg = IndexConfig(kind=kind, nprobe=4, pq_m=8, ef_search=32, **CPU)
    index = ItemIndex(cfg).build(items, ids)
    queries = items[::97] + 0.01
    exclude = [ids[i : i + 3] for i in range(len(queries))]
    before = index.search(queries, k=25, exclude=exclude)

    index.save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx")
    after = loaded.search(queries, k=25, exclude=exclude)

    np.testing.assert_array_equal(after.item_ids, before.item_ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.valid, before.valid)
    assert loaded.config == index.config
    np.testing.assert_array_equal(loaded.item_ids, ids)
    meta = json.loads((tmp_path / "idx" / "metadata.json").read_text())
    assert meta["n"] == 3000 and meta["dim"] == 32 and meta["kind"] == kind
    assert meta["faiss_version"] == faiss.__version__
    assert meta["id_dtype"] == ("str" if kind == "hnsw" else "int64")
    assert json.loads((tmp_path / "idx" / "config.json").read_text())["kind"] == kind


def test_search_params_set_after_build_survive_save_and_load(tmp_path: Path) -> None:
    items, _ = clustered(2000, 16, 30, 0.5, seed=12)
    index = ItemIndex(IndexConfig(kind="ivf_flat", nlist=32, nprobe=1, **CPU))
    index.build(items, np.arange(2000))
    index.set_search_params(nprobe=32)
    assert faiss.extract_index_ivf(index.faiss_index).nprobe == 32
    loaded = ItemIndex.load(index.save(tmp_path / "ivf"))
    assert loaded.config.nprobe == 32
    assert faiss.extract_index_ivf(loaded.faiss_index).nprobe == 32
    # nprobe = nlist visits every list: exact results.
    exact = ItemIndex(IndexConfig(**CPU)).build(items, np.arange(2000)).search(items[:20], 10)
    np.testing.assert_array_equal(loaded.search(items[:20], 10).item_ids, exact.item_ids)


def test_load_reports_missing_and_inconsistent_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        ItemIndex.load(tmp_path / "nothing")
    items, _ = clustered(100, 8, 4, 0.5, seed=13)
    folder = ItemIndex(IndexConfig(**CPU)).build(items, np.arange(100)).save(tmp_path / "x")
    np.save(folder / "item_ids.npy", np.arange(99))
    with pytest.raises(ValueError, match="inconsistent files"):
        ItemIndex.load(folder)


def test_training_is_seeded_so_builds_repeat() -> None:
    items, _ = clustered(5000, 32, 60, 0.5, seed=14)
    cfg = IndexConfig(kind="ivf_pq", nlist=64, nprobe=4, pq_m=4, train_size=3000, seed=3, **CPU)
    a = ItemIndex(cfg).build(items, np.arange(5000)).search(items[:30], 10)
    b = ItemIndex(cfg).build(items, np.arange(5000)).search(items[:30], 10)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.scores, b.scores)


# ---------------------------------------------------------------------- recall


def test_ivf_and_hnsw_reach_high_recall_on_clustered_data() -> None:
    items, _ = clustered(20_000, 32, 200, 0.5, seed=15)
    rng = np.random.default_rng(16)
    queries = items[rng.integers(0, 20_000, 200)] + 0.05 * rng.standard_normal((200, 32)).astype(
        np.float32
    ) / np.sqrt(32)
    ids = np.arange(20_000, dtype=np.int64)
    exact = ItemIndex(IndexConfig(kind="flat", **CPU)).build(items, ids).search(queries, 100)

    ivf = ItemIndex(IndexConfig(kind="ivf_flat", nprobe=32, **CPU)).build(items, ids)
    assert faiss.extract_index_ivf(ivf.faiss_index).nlist == 512  # auto_nlist(20_000)
    r_ivf = recall(ivf.search(queries, 100).item_ids, exact.item_ids)
    hnsw = ItemIndex(IndexConfig(kind="hnsw", hnsw_m=32, ef_search=128, **CPU)).build(items, ids)
    r_hnsw = recall(hnsw.search(queries, 100).item_ids, exact.item_ids)
    ivf.set_search_params(nprobe=1)
    r_ivf_1 = recall(ivf.search(queries, 100).item_ids, exact.item_ids)
    assert r_ivf >= 0.95, r_ivf
    assert r_hnsw >= 0.95, r_hnsw
    assert r_ivf_1 < r_ivf  # nprobe really changes the search


# ---------------------------------------------------------------------- validation


def test_invalid_inputs_raise_clear_errors() -> None:
    items, _ = clustered(300, 16, 6, 0.5, seed=17)
    ids = np.arange(300)
    index = ItemIndex(IndexConfig(**CPU))
    with pytest.raises(RuntimeError, match="call build"):
        index.search(items[:1], 5)
    index.build(items, ids)
    with pytest.raises(ValueError, match="dimension 8 but the index holds 16-d"):
        index.search(items[:2, :8], 5)
    with pytest.raises(ValueError, match="must be a float array"):
        index.search(np.ones((2, 16), dtype=np.int64), 5)
    with pytest.raises(ValueError, match="2-d array"):
        index.search(items[0], 5)
    bad = items[:3].copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"1 row\(s\) with NaN or inf.*rows \[1\]"):
        index.search(bad, 5)
    bad_k: tuple[Any, ...] = (0, -3, 2.5, True)
    for k in bad_k:
        with pytest.raises(ValueError, match="k must be a positive int"):
            index.search(items[:1], k)
    assert index.search(items[:0], 5).item_ids.shape == (0, 5)

    with pytest.raises(ValueError, match="1-d array of 300 ids"):
        ItemIndex(IndexConfig(**CPU)).build(items, ids[:-1])
    with pytest.raises(ValueError, match=r"unique: 1 id\(s\) repeat, e.g. \[7\]"):
        ItemIndex(IndexConfig(**CPU)).build(items, np.r_[ids[:-1], 7])
    with pytest.raises(ValueError, match="reserved"):
        ItemIndex(IndexConfig(**CPU)).build(items, np.r_[ids[:-1], MISSING_INT_ID])
    with pytest.raises(ValueError, match="empty string is reserved"):
        ItemIndex(IndexConfig(**CPU)).build(items[:2], np.array(["a", ""], dtype=object))
    with pytest.raises(ValueError, match="must all be str"):
        ItemIndex(IndexConfig(**CPU)).build(items[:2], np.array(["a", 2], dtype=object))
    with pytest.raises(ValueError, match="integers or strings"):
        ItemIndex(IndexConfig(**CPU)).build(items[:2], np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="is empty"):
        ItemIndex(IndexConfig(**CPU)).build(np.empty((0, 16), np.float32), np.array([], int))
    nan_items = items.copy()
    nan_items[[3, 50], 0] = np.inf
    with pytest.raises(ValueError, match=r"2 row\(s\).*rows \[3, 50\]"):
        ItemIndex(IndexConfig(**CPU)).build(nan_items, ids)


def test_ivf_training_errors_name_the_cause() -> None:
    items, _ = clustered(300, 16, 6, 0.5, seed=18)
    ids = np.arange(300)
    with pytest.raises(
        ValueError, match="nlist=1024 needs at least 1024 training vectors, got 300"
    ):
        ItemIndex(IndexConfig(kind="ivf_flat", nlist=1024, **CPU)).build(items, ids)
    with pytest.raises(ValueError, match="got 50"):
        ItemIndex(IndexConfig(kind="ivf_flat", nlist=64, train_size=50, **CPU)).build(items, ids)
    with pytest.raises(ValueError, match="needs at least 256 training vectors"):
        ItemIndex(IndexConfig(kind="ivf_pq", nlist=4, pq_m=4, **CPU)).build(items[:200], ids[:200])
    with pytest.raises(ValueError, match="divisible by pq_m"):
        ItemIndex(IndexConfig(kind="ivf_pq", pq_m=5, **CPU)).build(items, ids)


def test_float64_input_is_accepted_as_float32() -> None:
    items, _ = clustered(100, 8, 4, 0.5, seed=19)
    index = ItemIndex(IndexConfig(**CPU)).build(items.astype(np.float64), np.arange(100))
    res = index.search(items[:2].astype(np.float64), 3)
    assert res.scores.dtype == np.float32 and res.item_ids[0, 0] == 0


def test_num_threads_is_applied_to_faiss() -> None:
    before = faiss.omp_get_max_threads()
    try:
        items, _ = clustered(100, 8, 4, 0.5, seed=20)
        ItemIndex(IndexConfig(device="cpu", num_threads=1)).build(items, np.arange(100))
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)


def test_gpu_request_without_gpu_fails_at_build() -> None:
    if gpu_available():
        pytest.skip("a FAISS GPU is usable here")
    items, _ = clustered(100, 8, 4, 0.5, seed=21)
    with pytest.raises(GpuUnavailableError, match=r"device='gpu'"):
        ItemIndex(IndexConfig(device="gpu")).build(items, np.arange(100))


# ---------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_indexes_match_the_cpu_and_save_through_the_cpu(tmp_path: Path) -> None:
    if not gpu_available():
        pytest.skip(f"FAISS GPU path unavailable: {gpu_unavailable_reason()}")
    items, _ = clustered(20_000, 64, 200, 0.5, seed=22)
    ids = np.arange(20_000, dtype=np.int64) * 2 + 1
    queries = items[:256] + 0.01
    exact_cpu = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(items, ids)
    truth = exact_cpu.search(queries, 100)

    flat = ItemIndex(IndexConfig(kind="flat", device="gpu")).build(items, ids)
    assert flat.device is Device.GPU
    res = flat.search(queries, 100, exclude=[ids[:5]] * 256)
    assert not np.isin(res.item_ids, ids[:5]).any()
    res = flat.search(queries, 100)
    np.testing.assert_allclose(res.scores, truth.scores, rtol=1e-4, atol=1e-4)
    assert recall(res.item_ids, truth.item_ids) > 0.999

    for kind in ("ivf_flat", "ivf_pq"):
        cfg = IndexConfig(kind=kind, nprobe=32, pq_m=16, device="gpu")
        index = ItemIndex(cfg).build(items, ids)
        assert index.device is Device.GPU
        found = index.search(queries, 100)
        assert (found.item_ids[found.valid] >= 0).all()
        assert recall(found.item_ids, truth.item_ids) > (0.95 if kind == "ivf_flat" else 0.5)
        loaded = ItemIndex.load(index.save(tmp_path / kind), device="cpu")
        assert loaded.device is Device.CPU
        np.testing.assert_array_equal(loaded.item_ids, ids)
        assert recall(loaded.search(queries, 100).item_ids, found.item_ids) > 0.95

    with pytest.warns(UserWarning, match=f"at most {GPU_MAX_K}"):
        big = flat.search(queries[:2], GPU_MAX_K + 500)
    assert big.item_ids.shape == (2, GPU_MAX_K) and big.valid.all()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hnsw = ItemIndex(IndexConfig(kind="hnsw", device="gpu")).build(items[:2000], ids[:2000])
    assert hnsw.device is Device.CPU
    assert any("no GPU HNSW" in str(w.message) for w in caught)
