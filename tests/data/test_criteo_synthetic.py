"""Synthetic Criteo generator: shapes, ranges, skew, seeding and a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.criteo_synthetic import (
    DEFAULT_TABLE_SIZES,
    SyntheticCriteoConfig,
    generate_criteo,
    generate_criteo_with_probs,
    informative_features,
)
from recsys.eval.classification import auc

SMALL = (3, 10, 50, 200, 1000, 5000) * 4 + (20, 20)


def test_default_tables_span_criteo_sizes() -> None:
    assert len(DEFAULT_TABLE_SIZES) == 26
    assert DEFAULT_TABLE_SIZES[0] == 4 and DEFAULT_TABLE_SIZES[-1] == 1_000_000
    assert list(DEFAULT_TABLE_SIZES) == sorted(DEFAULT_TABLE_SIZES)


def test_shapes_dtypes_and_ranges_match_criteo_transform_output() -> None:
    cfg = SyntheticCriteoConfig(rows=20_000, table_sizes=SMALL, seed=1)
    dense, sparse, labels = generate_criteo(cfg)
    assert dense.shape == (20_000, 13) and dense.dtype == np.float32
    assert sparse.shape == (20_000, 26) and sparse.dtype == np.int64
    assert labels.shape == (20_000,) and labels.dtype == np.float32
    assert set(np.unique(labels)) == {0.0, 1.0}
    assert (sparse >= 0).all() and (sparse < np.array(SMALL)).all()
    assert (dense >= 0).all()  # log1p of non-negative counts
    # Missing cells: id 0 at about sparse_missing_rate, dense 0 at least dense_missing_rate.
    assert abs((sparse == 0).mean() - cfg.sparse_missing_rate) < 0.01
    assert (dense == 0).mean() >= cfg.dense_missing_rate - 0.01
    assert abs(labels.mean() - cfg.positive_rate) < 0.015


def test_same_seed_same_data_other_seed_other_data() -> None:
    cfg = SyntheticCriteoConfig(rows=3000, table_sizes=SMALL, seed=5)
    a, b = generate_criteo(cfg), generate_criteo(cfg)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    other = generate_criteo(SyntheticCriteoConfig(rows=3000, table_sizes=SMALL, seed=6))
    assert not np.array_equal(a[1], other[1])


def test_ids_follow_a_power_law_that_the_exponent_controls() -> None:
    def top10_share(exponent: float) -> float:
        cfg = SyntheticCriteoConfig(
            rows=50_000,
            table_sizes=(10_000,) * 26,
            zipf_exponent=exponent,
            sparse_missing_rate=0.0,
            seed=2,
        )
        _, sparse, _ = generate_criteo(cfg)
        _, counts = np.unique(sparse[:, 0], return_counts=True)
        return float(np.sort(counts)[::-1][:10].sum() / counts.sum())

    uniform, skewed = top10_share(0.0), top10_share(1.2)
    assert uniform < 0.01  # 10 of 9,999 ids
    assert skewed > 0.3
    # The most frequent ids are not simply the smallest ones (identities are shuffled).
    _, sparse, _ = generate_criteo(SyntheticCriteoConfig(rows=20_000, table_sizes=SMALL, seed=0))
    values, counts = np.unique(sparse[:, 5], return_counts=True)
    assert values[np.argmax(counts)] != 1


def test_labels_carry_signal_in_the_informative_features_only() -> None:
    cfg = SyntheticCriteoConfig(rows=40_000, table_sizes=(100,) * 26, informative_sparse=4, seed=3)
    dense, sparse, labels, probs = generate_criteo_with_probs(cfg)
    assert informative_features(cfg) == [0, 8, 17, 25]
    assert abs(probs.mean() - cfg.positive_rate) < 1e-6
    assert auc(labels, probs) > 0.75  # the Bayes-optimal score separates clicks

    def id_click_rate_auc(j: int) -> float:
        # Score each row by its id's click rate on the first half, judge on the second.
        half = len(labels) // 2
        sums = np.bincount(sparse[:half, j], weights=labels[:half], minlength=100)
        counts = np.bincount(sparse[:half, j], minlength=100)
        rate = (sums + labels.mean()) / (counts + 1)
        return auc(labels[half:], rate[sparse[half:, j]])

    informative = [id_click_rate_auc(j) for j in informative_features(cfg)]
    other = [id_click_rate_auc(j) for j in (1, 2, 3)]
    assert min(informative) > 0.55
    assert max(other) < 0.53
    # Dense columns: the first informative_dense carry weights, the rest none.
    dense_skill = [abs(auc(labels, dense[:, j]) - 0.5) for j in range(13)]
    assert max(dense_skill[:6]) > 0.1
    assert max(dense_skill[6:]) < 0.01


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 0}, "rows"),
        ({"table_sizes": (1, 5)}, ">= 2 rows"),
        ({"zipf_exponent": -1.0}, "zipf"),
        ({"positive_rate": 1.0}, "positive_rate"),
        ({"sparse_missing_rate": 1.0}, "sparse_missing_rate"),
        ({"table_sizes": (5, 5), "informative_sparse": 3}, "informative_sparse"),
        ({"informative_dense": 14}, "informative_dense"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticCriteoConfig(**kwargs)
