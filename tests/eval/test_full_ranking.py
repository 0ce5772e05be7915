"""Full-catalogue top-k: exclusion, padding, and exact tie-breaking toward smaller indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.eval.metrics import UserItemCSR
from recsys.eval.ranking import full_ranking_topk, topk_smallest_index_ties


def _reference_topk(scores: np.ndarray, seen: UserItemCSR, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user brute force: drop seen items, sort by (-score, index), pad with -1."""
    items = np.full((scores.shape[0], k), -1, dtype=np.int64)
    vals = np.full((scores.shape[0], k), -np.inf, dtype=np.float64)
    for u in range(scores.shape[0]):
        banned = set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
        cand = [i for i in range(scores.shape[1]) if i not in banned]
        cand.sort(key=lambda i: (-scores[u, i], i))
        top = cand[:k]
        items[u, : len(top)] = top
        vals[u, : len(top)] = scores[u, top]
    return items, vals


@pytest.fixture(scope="module")
def tied_case() -> tuple[np.ndarray, UserItemCSR]:
    rng = np.random.default_rng(11)
    n_users, n_items = 37, 120
    # few distinct values: most rows have ties at the k-th place
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    users = rng.integers(0, n_users, size=900)
    items = rng.integers(0, n_items, size=900)
    seen_users = np.r_[users, np.full(n_items, 5)]  # user 5 has seen everything
    seen_items = np.r_[items, np.arange(n_items)]
    seen = UserItemCSR.from_pairs(seen_users, seen_items, n_users=n_users, n_items=n_items)
    return scores, seen


@pytest.mark.parametrize("k", [1, 10, 50, 119, 130])
@pytest.mark.parametrize("batch_size", [1, 8, 1000])
def test_matches_brute_force_with_ties(
    tied_case: tuple[np.ndarray, UserItemCSR], k: int, batch_size: int
) -> None:
    scores, seen = tied_case
    users = np.arange(scores.shape[0])
    items, vals = full_ranking_topk(scores, users, k, exclude=seen, batch_size=batch_size)
    ref_items, ref_vals = _reference_topk(scores, seen, k)
    assert items.shape == (scores.shape[0], k)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_array_equal(vals, ref_vals.astype(vals.dtype))
    assert (items[5] == -1).all()  # every item seen: nothing to recommend


def test_tie_group_longer_than_candidate_margin() -> None:
    # 500 items share the top score; the smallest unseen indices must win.
    scores = torch.zeros(2, 1000)
    scores[:, 400:900] = 1.0
    scores[1, 950] = 2.0
    vals, idx = topk_smallest_index_ties(scores, 5)
    assert idx.tolist() == [[400, 401, 402, 403, 404], [950, 400, 401, 402, 403]]
    assert vals.tolist() == [[1.0] * 5, [2.0, 1.0, 1.0, 1.0, 1.0]]
    # the same through the batched path, with exclusions inside the tie group
    seen = UserItemCSR.from_pairs([0, 0, 1], [401, 403, 400], n_users=2, n_items=1000)
    items, _ = full_ranking_topk(scores, np.array([0, 1]), 4, exclude=seen)
    assert items.tolist() == [[400, 402, 404, 405], [950, 401, 402, 403]]


def test_callable_matrix_and_tensor_agree_and_inputs_stay_intact(
    tied_case: tuple[np.ndarray, UserItemCSR],
) -> None:
    scores, seen = tied_case
    before = scores.copy()
    users = np.array([3, 0, 3, 20])  # any order, repeats allowed
    a, sa = full_ranking_topk(scores, users, 7, exclude=seen, batch_size=3)
    b, sb = full_ranking_topk(lambda u: scores[u], users, 7, exclude=seen, batch_size=2)
    c, _ = full_ranking_topk(torch.from_numpy(scores), users, 7, exclude=seen)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(a[0], a[2])
    np.testing.assert_array_equal(scores, before)  # masking is out of place


def test_model_minus_inf_scores_are_never_returned() -> None:
    scores = np.array([[0.5, -np.inf, 0.2, -np.inf]], dtype=np.float32)
    items, vals = full_ranking_topk(scores, np.array([0]), 3)
    assert items.tolist() == [[0, 2, -1]]
    assert vals[0, 2] == -np.inf


def test_errors() -> None:
    scores = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="NaN score for user index 1"):
        bad = scores.copy()
        bad[1, 2] = np.nan
        full_ranking_topk(bad, np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="score rows"):
        full_ranking_topk(scores, np.array([2]), 2)
    with pytest.raises(ValueError, match="exclude has 4 items"):
        seen = UserItemCSR.from_pairs([0], [3], n_users=2, n_items=4)
        full_ranking_topk(scores, np.array([0]), 2, exclude=seen)
    with pytest.raises(ValueError, match="shape"):
        full_ranking_topk(lambda u: np.zeros((1, 3)), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="k must be"):
        full_ranking_topk(scores, np.array([0]), 0)


def test_empty_user_list() -> None:
    items, vals = full_ranking_topk(np.zeros((2, 3)), np.array([], dtype=np.int64), 4)
    assert items.shape == (0, 4) and vals.shape == (0, 4)
