"""Top-k metrics against hand computations and torchmetrics' retrieval metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_average_precision
from torchmetrics.retrieval import (
    RetrievalHitRate,
    RetrievalMAP,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalPrecision,
    RetrievalRecall,
)

from recsys.eval.metrics import (
    RankingMetricsConfig,
    UserItemCSR,
    capped_map_at_k,
    catalogue_coverage,
    evaluate,
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mrr,
    ndcg_at_k,
    novelty,
    per_user_metrics,
    precision_at_k,
    recall_at_k,
)

# --------------------------------------------------------------------------
# A hand-checked case. 8 items; five users:
#   u0 recommends [2, 0, 5, 1], relevant {0, 1, 3} -> hits [0, 1, 0, 1]
#   u1 recommends [4, 6, -, -], relevant {4}       -> hits [1, 0, 0, 0]
#   u2 recommends nothing,      relevant {2, 5}     (a test user without recs)
#   u3 recommends [0, 1, 2, 3], relevant {}         (not a test user)
#   u4 recommends [1, 5, 0, 3], relevant {2, <outside the catalogue>} -> no hit, |R| = 2
# --------------------------------------------------------------------------
TOPK = np.array(
    [
        [2, 0, 5, 1],
        [4, 6, -1, -1],
        [-1, -1, -1, -1],
        [0, 1, 2, 3],
        [1, 5, 0, 3],
    ]
)
TRUTH = UserItemCSR.from_pairs(
    users=[0, 0, 0, 1, 2, 2, 4, 4],
    items=[3, 1, 0, 4, 5, 2, 2, -1],
    n_users=5,
    n_items=8,
)
# Train counts for novelty: p(i) = max(c, 1) / 16, self-information -log2 p:
#   item 0: 8 -> 1 bit, item 1: 4 -> 2, item 2: 2 -> 3, items 3..7: 1 or 0 (-> 1) -> 4.
POPULARITY = np.array([8, 4, 2, 1, 1, 0, 0, 0])


def test_csr_from_pairs_sorts_dedupes_and_keeps_outside_items() -> None:
    csr = UserItemCSR.from_pairs([1, 0, 1, 1, 1, 1], [2, 0, 1, 2, -1, -1], n_users=3, n_items=4)
    assert csr.indptr.tolist() == [0, 1, 5, 5]
    # duplicate (1, 2) collapses; each -1 stands for a distinct unknown item and stays
    assert csr.indices.tolist() == [0, -1, -1, 1, 2]
    assert csr.lengths().tolist() == [1, 4, 0]
    assert csr.keys().tolist() == [0 * 4 + 0, 1 * 4 + 1, 1 * 4 + 2]
    assert csr.to_dense().tolist() == [
        [True, False, False, False],
        [False, True, True, False],
        [False, False, False, False],
    ]
    sub = csr.rows(np.array([2, 1, 1]))
    assert sub.indptr.tolist() == [0, 0, 4, 8]
    assert sub.indices.tolist() == [-1, -1, 1, 2] * 2
    rows, items = csr.gather(np.array([1, 0]))
    assert rows.tolist() == [0, 0, 0, 0, 1]
    assert items.tolist() == [-1, -1, 1, 2, 0]


def test_csr_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="item indices"):
        UserItemCSR.from_pairs([0], [4], n_users=1, n_items=4)
    with pytest.raises(ValueError, match="user indices"):
        UserItemCSR.from_pairs([3], [0], n_users=2, n_items=4)
    with pytest.raises(ValueError, match="non-decreasing"):
        UserItemCSR(indptr=np.array([0, 2, 1]), indices=np.array([0]), n_items=3)
    with pytest.raises(TypeError, match="integers"):
        UserItemCSR.from_pairs([0.5], [1], n_users=1, n_items=3)


def test_hit_matrix_hand_case() -> None:
    hits = hit_matrix(TOPK, TRUTH)
    assert hits.astype(int).tolist() == [
        [0, 1, 0, 1],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    # the dense form of the truth gives the same hits (the -1 item only changes |R|)
    assert (hit_matrix(TOPK, TRUTH.to_dense()) == hits).all()


def test_per_user_values_hand_case_k4() -> None:
    values = per_user_metrics(hit_matrix(TOPK, TRUTH), TRUTH.lengths(), k=4)
    ln = np.log
    # u0: P = 2/4; R = 2/3; DCG = 1/ln3 + 1/ln5 = 0.910239 + 0.621335 = 1.531574,
    #     IDCG over min(4, 3) = 3 ranks = 1/ln2 + 1/ln3 + 1/ln4 = 3.074282 -> 0.498189;
    #     AP sum = 1/2 (rank 2) + 2/4 (rank 4) = 1 -> map 1/3, capped 1/min(4, 3) = 1/3;
    #     first hit at rank 2 -> mrr 1/2.
    assert values["precision"][0] == 0.5
    assert values["recall"][0] == pytest.approx(2 / 3)
    assert values["ndcg"][0] == pytest.approx(0.498189, abs=1e-6)
    assert values["ndcg"][0] == pytest.approx(
        (1 / ln(3) + 1 / ln(5)) / (1 / ln(2) + 1 / ln(3) + 1 / ln(4))
    )
    assert values["map"][0] == pytest.approx(1 / 3)
    assert values["capped_map"][0] == pytest.approx(1 / 3)
    assert values["mrr"][0] == 0.5
    # u1: one hit at rank 1 of a single relevant item: P = 1/4 (divided by k even
    #     though only 2 items are listed), everything else 1.
    assert [values[m][1] for m in ("precision", "recall", "ndcg", "map", "mrr")] == [
        0.25,
        1.0,
        1.0,
        1.0,
        1.0,
    ]
    # u3 has no relevant item: undefined
    assert all(np.isnan(v[3]) for v in values.values())
    # u4: |R| = 2 (one outside the catalogue), no hit
    assert values["recall"][4] == 0.0


def test_averages_hand_case_recommenders_rule() -> None:
    # P/R/MAP/HR/MRR average over u0, u1, u4 (test users with recs); NDCG over
    # u0, u1, u2, u4 (all test users; u2 scores 0).
    m = evaluate(TOPK, TRUTH, k_values=[4, 2], item_popularity=POPULARITY)
    assert m["precision@4"] == pytest.approx((0.5 + 0.25 + 0) / 3)  # 0.25
    assert m["recall@4"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # 5/9
    assert m["ndcg@4"] == pytest.approx((0.498189 + 1 + 0 + 0) / 4, abs=1e-6)  # 0.374547
    assert m["map@4"] == pytest.approx((1 / 3 + 1 + 0) / 3)  # 4/9
    assert m["capped_map@4"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["hit_rate@4"] == pytest.approx(2 / 3)
    assert m["mrr@4"] == pytest.approx((0.5 + 1 + 0) / 3)
    # coverage@4: rows list {0, 1, 2, 3, 4, 5, 6} of 8 items
    assert m["coverage@4"] == 7 / 8
    # k = 2. u0 hits [0, 1]: P 1/2, R 1/3, NDCG (1/ln3)/(1/ln2 + 1/ln3) = 0.386852,
    # AP sum 1/2 -> map (1/2)/3 = 1/6, capped (1/2)/min(2, 3) = 1/4.
    assert m["precision@2"] == pytest.approx((0.5 + 0.5 + 0) / 3)  # 1/3
    assert m["recall@2"] == pytest.approx((1 / 3 + 1 + 0) / 3)  # 4/9
    assert m["ndcg@2"] == pytest.approx((0.386852 + 1 + 0 + 0) / 4, abs=1e-6)  # 0.346713
    assert m["map@2"] == pytest.approx((1 / 6 + 1 + 0) / 3)  # 7/18
    assert m["capped_map@2"] == pytest.approx((1 / 4 + 1 + 0) / 3)  # 5/12
    # coverage@2: {2, 0} | {4, 6} | {0, 1} | {1, 5} = {0, 1, 2, 4, 5, 6} -> 6/8
    assert m["coverage@2"] == 6 / 8
    # novelty@2: items 2,0 | 4,6 | 0,1 | 5,1 -> bits 3+1 + 4+4 + 1+2 + 4+2 = 21 over 8
    assert m["novelty@2"] == pytest.approx(21 / 8)


def test_single_metric_functions_match_evaluate() -> None:
    m = evaluate(TOPK, TRUTH, k_values=[4])
    assert precision_at_k(TOPK, TRUTH, 4) == m["precision@4"]
    assert recall_at_k(TOPK, TRUTH, 4) == m["recall@4"]
    assert ndcg_at_k(TOPK, TRUTH, 4) == m["ndcg@4"]
    assert map_at_k(TOPK, TRUTH, 4) == m["map@4"]
    assert capped_map_at_k(TOPK, TRUTH, 4) == m["capped_map@4"]
    assert hit_rate_at_k(TOPK, TRUTH, 4) == m["hit_rate@4"]
    assert mrr(TOPK, TRUTH, 4) == m["mrr@4"]
    assert catalogue_coverage(TOPK, 8, 4) == m["coverage@4"]
    assert "novelty@4" not in m  # no popularity given


def test_test_users_averaging_counts_users_without_recommendations() -> None:
    # u2 (no recs) now counts as 0 in P: (0.5 + 0.25 + 0 + 0) / 4
    cfg = RankingMetricsConfig(k_values=(4,), averaging="test_users")
    m = evaluate(TOPK, TRUTH, config=cfg)
    assert m["precision@4"] == pytest.approx(0.1875)
    assert m["ndcg@4"] == pytest.approx((0.498189 + 1) / 4, abs=1e-6)


def test_capped_map_differs_from_recommenders_map_when_many_relevant() -> None:
    # 12 relevant items, a perfect top 3: map = 3/12, capped map = 3/3.
    topk = np.array([[0, 1, 2]])
    truth = UserItemCSR.from_pairs([0] * 12, list(range(12)), n_users=1, n_items=20)
    assert map_at_k(topk, truth, 3) == pytest.approx(0.25)
    assert capped_map_at_k(topk, truth, 3) == 1.0


def test_novelty_denominator_option() -> None:
    # p(i) = count / n_users with n_users = 16: same as the default here (sum 16)
    assert novelty(TOPK, POPULARITY, k=2, denominator=16) == pytest.approx(21 / 8)
    # with denominator 32 every item gains exactly one bit
    assert novelty(TOPK, POPULARITY, k=2, denominator=32) == pytest.approx(21 / 8 + 1)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="twice"):
        evaluate(np.array([[1, 1]]), np.array([[False, True]]), k_values=[2])
    with pytest.raises(ValueError, match="width of topk"):
        evaluate(TOPK, TRUTH, k_values=[5])
    with pytest.raises(ValueError, match="rows"):
        evaluate(TOPK[:3], TRUTH, k_values=[2])
    with pytest.raises(ValueError, match=r"\[-1, 8\)"):
        evaluate(np.array([[8]] * 5), TRUTH, k_values=[1])
    with pytest.raises(ValueError, match="novelty needs"):
        evaluate(TOPK, TRUTH, config=RankingMetricsConfig(k_values=(2,), metrics=("novelty",)))
    with pytest.raises(ValueError, match="unknown metrics"):
        RankingMetricsConfig(metrics=("ndgc",))
    with pytest.raises(ValueError, match="no user qualifies"):
        evaluate(TOPK, UserItemCSR.from_pairs([], [], n_users=5, n_items=8), k_values=[2])


def test_metric_subset_and_torch_inputs() -> None:
    cfg = RankingMetricsConfig(k_values=(2,), metrics=("ndcg", "recall"))
    m = evaluate(torch.from_numpy(TOPK), torch.from_numpy(TRUTH.to_dense()), config=cfg)
    assert sorted(m) == ["ndcg@2", "recall@2"]
    # the dense truth drops the outside-catalogue item of u4: its recall is still 0
    assert m["recall@2"] == pytest.approx((1 / 3 + 1 + 0) / 3)


# --------------------------------------------------------------------------
# torchmetrics, on random data where the definitions coincide: every user has a
# relevant item and a full list, scores are distinct and positive (torchmetrics
# treats non-positive scores as non-relevant in MAP and MRR).
# --------------------------------------------------------------------------
N_USERS, N_ITEMS, K = 60, 40, 10


@pytest.fixture(scope="module")
def random_case() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(3)
    preds = torch.rand(N_USERS, N_ITEMS, generator=gen) + 0.01
    target = torch.rand(N_USERS, N_ITEMS, generator=gen) < 0.15
    target[torch.arange(N_USERS), torch.randint(N_ITEMS, (N_USERS,), generator=gen)] = True
    order = torch.argsort(preds, dim=1, descending=True).numpy()
    return preds, target, order, target.numpy()


def _torchmetrics(metric: object, preds: torch.Tensor, target: torch.Tensor) -> float:
    indexes = torch.arange(N_USERS)[:, None].expand(-1, N_ITEMS)
    return float(metric(preds.ravel(), target.ravel(), indexes=indexes.ravel()))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("precision", RetrievalPrecision(top_k=K)),
        ("recall", RetrievalRecall(top_k=K)),
        ("ndcg", RetrievalNormalizedDCG(top_k=K)),
        ("hit_rate", RetrievalHitRate(top_k=K)),
        ("mrr", RetrievalMRR(top_k=K)),
    ],
)
def test_matches_torchmetrics(
    random_case: tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray],
    name: str,
    metric: object,
) -> None:
    preds, target, order, truth = random_case
    ours = evaluate(order[:, :K], truth, k_values=[K])[f"{name}@{K}"]
    assert ours == pytest.approx(_torchmetrics(metric, preds, target), abs=1e-6)


def test_map_relations_to_torchmetrics(
    random_case: tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray],
) -> None:
    preds, target, order, truth = random_case
    # Over the full ranking all three AP variants are the textbook AP.
    full = evaluate(order, truth, k_values=[N_ITEMS])
    tm_full = _torchmetrics(RetrievalMAP(), preds, target)
    assert full[f"map@{N_ITEMS}"] == pytest.approx(tm_full, abs=1e-6)
    assert full[f"capped_map@{N_ITEMS}"] == pytest.approx(tm_full, abs=1e-6)
    # At k, torchmetrics divides the AP sum by the hits in the top k; ours by
    # |R| (map) and min(k, |R|) (capped). Per user: tm * hits = map * |R|.
    hits = hit_matrix(order[:, :K], truth)
    n_rel = truth.sum(axis=1)
    values = per_user_metrics(hits, n_rel, K)
    n_hit = hits.sum(axis=1)
    tm_user = np.array(
        [float(retrieval_average_precision(preds[u], target[u], top_k=K)) for u in range(N_USERS)]
    )
    np.testing.assert_allclose(tm_user * n_hit, values["map"] * n_rel, atol=1e-6)
    np.testing.assert_allclose(
        tm_user * n_hit, values["capped_map"] * np.minimum(n_rel, K), atol=1e-6
    )
    assert (n_hit < np.minimum(n_rel, K)).any()  # the case where the variants differ occurs
