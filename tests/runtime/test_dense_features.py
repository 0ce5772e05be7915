"""The ranker's dense features, one implementation: each function against its definition.

The served-equals-offline check on MovieLens-100K (the offline ``RankerContext`` and
the bundle's ``RankerFeatures`` through these functions) is in
``tests/recommend/test_ranker_data.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from recsys.runtime.dense_features import (
    SECONDS_PER_DAY,
    SECONDS_PER_YEAR,
    DenseFeatures,
    add_extra_affinity,
    affinity_pairs,
    affinity_rows,
    dense_feature_names,
    fill_unknown_age,
    list_mean_std,
    list_zscore,
    log_counts,
    retrieval_features,
    scale_dense,
    window_log_counts,
)
from recsys.runtime.windows import WindowCounter, count_in_window

T0 = 880_000_000.0  # whole seconds, as the training logs are


def _csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
    indices = np.array([i for r in rows for i in r], dtype=np.int64)
    return indptr, indices


def _grouped(groups: np.ndarray, times: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((times, groups))
    offsets = np.r_[0, np.cumsum(np.bincount(groups, minlength=n))].astype(np.int64)
    return offsets, times[order]


def test_list_zscore_takes_the_statistics_from_the_masked_rows_only() -> None:
    values = np.array([1.0, 3.0, 100.0, 5.0, 5.0, 7.0, 2.0])
    lists = np.array([0, 0, 0, 1, 1, 2, 3])
    mask = np.array([1, 1, 0, 1, 1, 0, 1], dtype=bool)
    z = list_zscore(values, lists, 5, mask)
    # list 0: mean 2, std 1 from its first two rows, applied to the third one as well
    np.testing.assert_allclose(z[:3], [-1.0, 1.0, 98.0])
    # list 1: constant -> std 1; list 2: no masked row -> mean 0, std 1; list 3: one row
    np.testing.assert_allclose(z[3:], [0.0, 0.0, 7.0, 0.0])
    mean, std = list_mean_std(values, lists, 5, mask)
    np.testing.assert_allclose(mean, [2.0, 5.0, 0.0, 2.0, 0.0])
    np.testing.assert_allclose(std, [1.0, 1.0, 1.0, 1.0, 1.0])
    # no mask: every row counts (population std)
    full = list_zscore(values, lists, 5)
    first = values[:3]
    np.testing.assert_allclose(full[:3], (first - first.mean()) / first.std())


def test_unknown_ages_are_filled_over_the_call_or_over_each_list() -> None:
    age = np.array([1.0, np.nan, 3.0, 10.0, np.nan, 20.0, 30.0, np.nan, np.nan])
    lists = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    known = age[np.isfinite(age)]
    over_call = fill_unknown_age(age, None)
    np.testing.assert_allclose(over_call[[1, 4, 7, 8]], np.median(known))
    per_list = fill_unknown_age(age, lists)
    np.testing.assert_allclose(per_list, [1, 2, 3, 10, 20, 20, 30, 0, 0])
    np.testing.assert_allclose(fill_unknown_age(age, lists, age_fill=7.5)[[1, 4, 7, 8]], 7.5)
    np.testing.assert_array_equal(fill_unknown_age(np.full(3, np.nan), None), 0.0)
    clean = np.array([4.0, 5.0])
    assert fill_unknown_age(clean, None) is clean


def _matrix_and_seen() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(9, 9)).astype(np.float32)
    # user 2 has no training items; user 3's row holds a -1 (an item outside the catalogue)
    indptr, indices = _csr([[0, 4, 5], [8], [], [1, -1, 2], [3, 4, 5, 6, 7]])
    return matrix, indptr, indices


def test_affinity_methods_equal_the_definition() -> None:
    matrix, indptr, indices = _matrix_and_seen()
    onehot = np.zeros((5, 9), dtype=np.float64)
    for u in range(5):
        for j in indices[indptr[u] : indptr[u + 1]]:
            if j >= 0:
                onehot[u, j] = 1.0
    full = onehot @ matrix.astype(np.float64)
    rng = np.random.default_rng(1)
    users = np.r_[rng.integers(0, 5, 40), -1, -1]  # unsorted, with users without a row
    items = rng.integers(0, 9, len(users))
    want = np.where(users >= 0, full[np.maximum(users, 0), items], 0.0)
    which = np.array([4, -1, 2, 0, 1, 3])
    for method in ("gather", "matmul"):
        got = affinity_pairs(matrix, indptr, indices, users, items, method, chunk=2)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=method)
        rows = affinity_rows(matrix, indptr, indices, which, method, chunk=4)
        assert rows.dtype == np.float32
        want_rows = full[np.maximum(which, 0)] * (which >= 0)[:, None]
        np.testing.assert_allclose(rows, want_rows, rtol=1e-5, atol=1e-6, err_msg=method)
    assert affinity_pairs(matrix, indptr, indices, users[:0], items[:0]).shape == (0,)
    with pytest.raises(ValueError, match="affinity method"):
        affinity_pairs(matrix, indptr, indices, users, items, "dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="affinity method"):
        affinity_rows(matrix, indptr, indices, which, "dense")  # type: ignore[arg-type]


def test_extra_items_add_their_rows_per_list() -> None:
    matrix, _, _ = _matrix_and_seen()
    items = np.array([0, 1, 2, 3, 4])
    lists = np.array([0, 0, 1, 1, 2])
    out = add_extra_affinity(
        np.zeros(5, np.float32), matrix, items, lists, [np.array([5, 6]), None, np.array([7])]
    )
    want = [matrix[[5, 6], 0].sum(), matrix[[5, 6], 1].sum(), 0.0, 0.0, matrix[7, 4]]
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_window_counts_and_log_features_equal_a_direct_count() -> None:
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 6, 300)
    times = T0 + rng.integers(0, 90, 300) * SECONDS_PER_DAY / 3
    offsets, sorted_times = _grouped(groups, times, 6)
    counter = WindowCounter(offsets, sorted_times, 30 * SECONDS_PER_DAY)
    q = rng.integers(0, 6, 50)
    req = T0 + rng.integers(0, 40, 50) * SECONDS_PER_DAY
    got = window_log_counts(counter, q, req, (1, 7, 30))
    for d in (1, 7, 30):
        brute = [
            ((groups == g) & (times > t - d * SECONDS_PER_DAY) & (times <= t)).sum()
            for g, t in zip(q, req, strict=True)
        ]
        np.testing.assert_array_equal(got[d], np.log1p(brute))
        assert got[d].dtype == np.float64
    np.testing.assert_allclose(log_counts(np.diff(offsets)), np.log1p(np.bincount(groups)))
    r = retrieval_features(np.array([0.5, -1.0], np.float32), np.array([0, 9]))
    assert r["retrieval_score"].dtype == np.float64
    np.testing.assert_allclose(r["retrieval_log_rank"], [0.0, np.log(10.0)])


def test_windows_outside_the_data_count_nothing() -> None:
    offsets, times = np.array([0, 2, 3]), np.array([T0, T0 + 10.0, T0 + 5.0])
    groups = np.array([0, 0, 1, 1])
    lo = np.array([T0 - 1e9, T0 + 1e9, T0 - 1e9, T0 - 1.0])
    hi = lo + 20.0
    np.testing.assert_array_equal(count_in_window(offsets, times, groups, lo, hi), [0, 0, 0, 1])
    counter = WindowCounter(offsets, times, 20.0)
    np.testing.assert_array_equal(counter.count(groups, lo, hi), [0, 0, 0, 1])


def test_scaling_is_per_column_in_float32() -> None:
    x = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
    out = scale_dense(x, np.array([2.0, 20.0]), np.array([1.0, 10.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-1.0, -1.0], [1.0, 1.0]])


def _dense_features(cache: int) -> DenseFeatures:
    matrix, indptr, indices = _matrix_and_seen()
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(5), np.diff(indptr))
    items = np.where(indices >= 0, indices, 0)
    times = T0 + rng.integers(0, 60, len(users)) * SECONDS_PER_DAY
    request = np.full(5, times.max())
    for u in range(5):
        if (users == u).any():
            request[u] = times[users == u].max()
    u_off, u_times = _grouped(users, times, 5)
    i_off, i_times = _grouped(items, times, 9)
    release = T0 - rng.uniform(0, 20, 9) * SECONDS_PER_YEAR
    release[[2, 6]] = np.nan
    windows, affinity = (1, 30), ("knn",)
    return DenseFeatures(
        names=dense_feature_names(windows, affinity, raw_retrieval_score=True),
        windows_days=windows,
        affinity=affinity,
        request_time=request,
        user_offsets=u_off,
        user_times=u_times,
        item_offsets=i_off,
        item_times=i_times,
        item_count=np.bincount(items, minlength=9).astype(np.float64),
        release_time=release,
        seen_indptr=indptr,
        seen_indices=indices,
        item_item={"knn": matrix},
        affinity_cache_entries=cache,
    )


@pytest.mark.parametrize("cache", [0, 10_000])
def test_dense_features_assemble_the_functions(cache: int) -> None:
    feats = _dense_features(cache)
    assert bool(feats.affinity_cache) == (cache > 0)
    users = np.array([0, 0, 0, 2, 2, -1, 4, 4])
    items = np.array([1, 2, 6, 2, 3, 6, 0, 8])
    lists = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    score, rank = np.linspace(2, -1, 8).astype(np.float32), np.arange(8) % 3
    x = feats.unscaled(users, items, score, rank, lists, 4, age_lists=lists)
    assert x.shape == (8, len(feats.names)) and x.dtype == np.float32
    col = {n: x[:, j] for j, n in enumerate(feats.names)}
    # user -1 and user 2 (no training items) have the values of a cold user
    for name in ("user_count_1d", "user_count_30d", "user_log_count", "affinity_knn"):
        assert col[name][5] == col[name][3] == 0.0, name
    assert feats.request_time[feats.user_rows(np.array([-1]))][0] == feats.request_time[2]
    # unknown ages (items 2 and 6) take the median known age of their list
    age = feats.item_age_years(users, items)
    assert np.isnan(age[[1, 2, 3, 5]]).all()
    np.testing.assert_allclose(col["item_age_years"][[1, 2]], age[0], rtol=1e-6)
    np.testing.assert_allclose(col["item_age_years"][3], age[4], rtol=1e-6)
    assert col["item_age_years"][5] == 0.0  # a list without a known age
    # z-scores over each list, raw score first (raw_retrieval_score)
    np.testing.assert_allclose(
        col["retrieval_score_z"], list_zscore(score.astype(np.float64), lists, 4), atol=1e-6
    )
    np.testing.assert_allclose(col["retrieval_score"], score)
    want = affinity_pairs(
        feats.item_item["knn"], feats.seen_indptr, feats.seen_indices, users, items
    )
    np.testing.assert_allclose(col["affinity_knn"], want, rtol=1e-6, atol=1e-6)
    # the same rows with every method and with a fixed age fill
    for method in ("gather", "matmul"):
        again = feats.unscaled(
            users, items, score, rank, lists, 4, age_lists=lists, affinity_method=method
        )
        np.testing.assert_allclose(again, x, rtol=1e-6, atol=1e-6)
    fixed = feats.raw(users, items, score, rank, age_fill=1.25)["item_age_years"]
    np.testing.assert_array_equal(fixed[[1, 2, 3, 5]], 1.25)
    with pytest.raises(ValueError, match="list_ids"):
        feats.affinity_scores("knn", users, items, extra_seen=[None])


def test_a_request_time_moves_the_windows_and_the_item_age() -> None:
    feats = _dense_features(0)
    users = np.array([0, 0, 1, 3, -1, 4])
    items = np.array([1, 5, 2, 0, 6, 8])
    score, rank = np.zeros(6, np.float32), np.zeros(6, np.int64)
    base = feats.raw(users, items, score, rank)
    when = T0 + np.array([20.0, np.nan, 45.5, 3.0, 30.0, np.nan]) * SECONDS_PER_DAY
    moved = feats.raw(users, items, score, rank, request_time=when)
    at = np.where(np.isfinite(when), when, feats.request_time[feats.user_rows(users)])
    for d in feats.windows_days:
        lo = at - d * SECONDS_PER_DAY
        want_item = np.log1p(feats.item_counter.count(items, lo, at).astype(np.float64))
        np.testing.assert_allclose(moved[f"item_count_{d}d"], want_item)
        known = users >= 0
        want_user = np.zeros(len(users))
        want_user[known] = np.log1p(feats.user_counter.count(users[known], lo[known], at[known]))
        np.testing.assert_allclose(moved[f"user_count_{d}d"], want_user)
    np.testing.assert_allclose(
        moved["item_age_years"][[0, 3]],
        ((at - feats.release_time[items]) / SECONDS_PER_YEAR)[[0, 3]],
    )
    # rows without a time keep the user's request time; the time-free features stay
    for name in base:
        np.testing.assert_array_equal(moved[name][[1, 5]], base[name][[1, 5]], err_msg=name)
    for name in ("retrieval_score", "user_log_count", "item_log_count", "affinity_knn"):
        np.testing.assert_array_equal(moved[name], base[name], err_msg=name)
    assert any(
        not np.allclose(moved[f"user_count_{d}d"], base[f"user_count_{d}d"]) for d in (1, 30)
    )
    with pytest.raises(ValueError, match="request times"):
        feats.raw(users, items, score, rank, request_time=when[:3])
