"""Score aggregation: relevance weights, freshness, MMR, business filters, diversity."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.runtime.aggregation import (
    AggregationConfig,
    blocked_items,
    freshness_decay,
    genre_diversity,
    intra_list_diversity,
    mmr_rerank,
    relevance,
    top_k_positions,
    zscore_rows,
)


def test_zscore_rows_ignores_invalid_slots() -> None:
    scores = np.array([[1.0, 3.0, 100.0], [5.0, 5.0, 5.0]])
    z = zscore_rows(scores, np.array([[1, 1, 0], [1, 1, 1]], bool))
    np.testing.assert_allclose(z, [[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_relevance_weights_each_score_on_its_own_scale() -> None:
    valid = np.ones((1, 3), dtype=bool)
    ranker = np.array([[10.0, 0.0, 5.0]])
    retrieval = np.array([[0.1, 0.3, 0.2]])  # the opposite order, on another scale
    only_ranker = relevance(valid, AggregationConfig(), ranker, retrieval)
    assert np.argsort(-only_ranker[0]).tolist() == [0, 2, 1]
    only_retrieval = relevance(
        valid, AggregationConfig(ranker_weight=0, retrieval_weight=1), ranker, retrieval
    )
    assert np.argsort(-only_retrieval[0]).tolist() == [1, 2, 0]
    # equal weights: z-scores are opposite, so item 2 (the middle of both) ties the others
    both = relevance(valid, AggregationConfig(retrieval_weight=1.0), ranker, retrieval)
    np.testing.assert_allclose(both, [[0.0, 0.0, 0.0]], atol=1e-12)


def test_relevance_is_minus_inf_on_padding_and_needs_its_inputs() -> None:
    valid = np.array([[True, False]])
    out = relevance(valid, AggregationConfig(), np.array([[1.0, 2.0]]))
    assert out[0, 1] == -np.inf and np.isfinite(out[0, 0])
    with pytest.raises(ValueError, match="no ranker scores"):
        relevance(valid, AggregationConfig())
    with pytest.raises(ValueError, match="ages"):
        relevance(valid, AggregationConfig(freshness_weight=1.0), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="every score weight is 0"):
        relevance(valid, AggregationConfig(ranker_weight=0.0))


def test_freshness_ranks_newer_items_first_and_halves_per_half_life() -> None:
    age = np.array([[30.0, 0.5, 10.0, np.nan]])
    decay = freshness_decay(age, half_life_years=10.0)
    np.testing.assert_allclose(decay[0, [1, 2]], [0.5**0.05, 0.5])
    assert decay[0, 3] == 0.0  # unknown age: no bonus
    cfg = AggregationConfig(ranker_weight=0.0, freshness_weight=1.0)
    rel = relevance(np.ones((1, 4), bool), cfg, age_years=age)
    assert top_k_positions(rel, np.ones((1, 4), bool), 4).tolist() == [[1, 2, 0, 3]]
    # a small freshness weight only breaks near-ties of the ranker
    cfg = AggregationConfig(freshness_weight=0.05)
    rel = relevance(np.ones((1, 3), bool), cfg, np.array([[2.0, 1.0, 1.0]]), age_years=age[:, :3])
    assert top_k_positions(rel, np.ones((1, 3), bool), 3).tolist() == [[0, 1, 2]]


def test_top_k_keeps_list_order_on_ties_and_pads() -> None:
    scores = np.array([[1.0, 2.0, 2.0, 0.0]])
    valid = np.array([[True, True, True, False]])
    assert top_k_positions(scores, valid, 5).tolist() == [[1, 2, 0, -1, -1]]


def test_mmr_picks_a_diverse_item_over_a_near_duplicate() -> None:
    # items 0 and 1 are near-duplicates and the most relevant; item 2 is different
    rel = np.array([[1.0, 0.95, 0.6, 0.1]])
    vecs = np.array([[[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.7, 0.7]]])
    valid = np.ones((1, 4), dtype=bool)
    assert mmr_rerank(rel, vecs, valid, 3, lam=1.0).tolist() == [[0, 1, 2]]
    assert mmr_rerank(rel, vecs, valid, 2, lam=0.5).tolist() == [[0, 2]]
    diverse = mmr_rerank(rel, vecs, valid, 2, lam=0.5)
    plain = mmr_rerank(rel, vecs, valid, 2, lam=1.0)
    emb = vecs[0]
    assert intra_list_diversity(diverse, emb) > intra_list_diversity(plain, emb)


def test_mmr_never_picks_padding_and_pads_short_lists() -> None:
    rel = np.array([[0.2, 9.0, 0.5], [0.1, 0.3, 0.2]])
    valid = np.array([[True, False, True], [False, False, False]])
    vecs = np.random.default_rng(0).standard_normal((2, 3, 4))
    out = mmr_rerank(rel, vecs, valid, 4, lam=0.3)
    assert out[0, :2].tolist() in ([2, 0], [0, 2]) and out[0, 2:].tolist() == [-1, -1]
    assert out[1].tolist() == [-1, -1, -1, -1]
    with pytest.raises(ValueError, match="lam"):
        mmr_rerank(rel, vecs, valid, 2, lam=1.5)


def test_blocked_items_by_genre_and_id() -> None:
    ids = np.array([10, 11, 12, 13])
    genres = [["Drama"], ["comedy", "horror"], [], ["action"]]
    cfg = AggregationConfig(exclude_genres=("horror", "drama"), exclude_items=(13, 99))
    assert blocked_items(ids, genres, cfg).tolist() == [0, 1, 3]
    assert blocked_items(ids, genres, AggregationConfig()).tolist() == []
    with pytest.raises(ValueError, match="no genres"):
        blocked_items(ids, None, AggregationConfig(exclude_genres=("drama",)))


def test_diversity_metrics() -> None:
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert intra_list_diversity(np.array([[0, 1]]), emb) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[0, 2, -1]]), emb) == pytest.approx(1.0)
    assert np.isnan(intra_list_diversity(np.array([[0, -1]]), emb))
    genres = [["a"], ["a", "b"], ["c"]]
    # pairs: (0,1) 1 - 1/2, (0,2) 1, (1,2) 1 -> mean 5/6
    assert genre_diversity(np.array([[0, 1, 2]]), genres) == pytest.approx(5 / 6)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="mmr_lambda"):
        AggregationConfig(mmr_lambda=-0.1)
    with pytest.raises(ValueError, match="weights"):
        AggregationConfig(retrieval_weight=-1.0)
    cfg = AggregationConfig.from_dict({"mmr_lambda": 0.5, "exclude_genres": ["Horror"]})
    assert cfg.mmr_lambda == 0.5 and cfg.with_updates(ranker_weight=2.0).ranker_weight == 2.0
    assert cfg.exclude_genres == ("Horror",)
    # a typo is an error that names the key, never a silent default
    with pytest.raises(ValueError, match=r"unknown key recommend\.aggregation\.mmr_lamda"):
        AggregationConfig.from_dict({"mmr_lamda": 0.5})
