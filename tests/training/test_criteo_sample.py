"""The ranker on the real 1,000-row Criteo sample, judged against the label prior."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.training.criteo_sample import (
    CriteoSampleConfig,
    frequency_vocab,
    split_rows,
    train_criteo_sample,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/training/test_ranker_trainer.py
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def criteo_file(data_dir: Path) -> Path:
    path = data_dir / "criteo-sample" / "pytorch-fm_train.txt"
    if not path.is_file():
        pytest.skip(f"criteo-sample/pytorch-fm_train.txt not found under {data_dir}")
    return path


def test_frequency_vocab_keeps_frequent_training_values_only() -> None:
    train = np.array([0, 7, 7, 7, 9, 9, 4])
    rows, size = frequency_vocab(train, np.array([7, 9, 4, 0, 123, 7]), min_count=2)
    # 7 and 9 are frequent (rows 2, 3 in sorted order); 4 is rare, 123 unseen -> 1.
    assert rows.tolist() == [2, 3, 1, 0, 1, 2]
    assert size == 4
    rows, size = frequency_vocab(np.array([0, 0]), np.array([5, 0]), min_count=1)
    assert rows.tolist() == [1, 0] and size == 2


def test_split_is_seeded_disjoint_and_complete() -> None:
    a = split_rows(1000, 0.2, 0.2, seed=3)
    b = split_rows(1000, 0.2, 0.2, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert [len(x) for x in a] == [640, 160, 200]
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(1000))
    assert not np.array_equal(a[2], split_rows(1000, 0.2, 0.2, seed=4)[2])
    with pytest.raises(ValueError, match="too few"):
        split_rows(3, 0.2, 0.2, seed=0)


def test_one_run_on_the_real_sample_beats_the_prior(criteo_file: Path) -> None:
    result = train_criteo_sample(criteo_file, CriteoSampleConfig())
    assert result["rows"] == 1000
    assert (result["train_rows"], result["valid_rows"], result["test_rows"]) == (640, 160, 200)
    assert "498 padded" in result["load_report"]
    assert len(result["table_sizes"]) == 26
    # Most hashed values occur once in 640 rows and share the rare row.
    assert max(result["table_sizes"]) < 100
    for key in ("test_logloss", "prior_logloss", "test_auc", "test_ne"):
        assert math.isfinite(result[key]), key
    assert 0.15 < result["train_positive_rate"] < 0.25
    assert result["test_logloss"] < result["prior_logloss"]
    assert result["test_auc"] > 0.6
    assert result["epochs_run"] == result["best_epoch"] + 1 + 4  # patience 4


@pytest.mark.slow
def test_beats_the_prior_on_every_one_of_five_splits(criteo_file: Path) -> None:
    deltas, aucs = [], []
    for seed in range(5):
        cfg = CriteoSampleConfig(split_seed=seed)
        cfg.ranker.seed = seed
        cfg.trainer.seed = seed
        result = train_criteo_sample(criteo_file, cfg)
        deltas.append(result["test_logloss"] - result["prior_logloss"])
        aucs.append(result["test_auc"])
    assert max(deltas) < 0, deltas
    assert float(np.mean(aucs)) > 0.62, aucs
