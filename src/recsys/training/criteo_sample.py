"""Train and evaluate the DLRM ranker on a small Criteo log, against the label prior.

The protocol, end to end:

1. :func:`recsys.data.criteo.load_criteo` reads the file (short rows padded and
   reported), :func:`~recsys.data.criteo.criteo_transform` hashes the 26
   categorical columns (bucket 0 = missing) and log-transforms the 13 counts.
2. A seeded random split: ``test_fraction`` of the rows is held out; of the rest,
   ``valid_fraction`` is the early-stopping set and the remainder trains.
3. Per categorical column, hashed values seen at least ``min_count`` times in the
   *training* rows get their own embedding row; rarer or unseen values share one
   "rare" row (1) and missing values keep row 0. On a few hundred rows most values
   occur once, and a row per singleton would only memorize noise.
4. :func:`~recsys.training.ranker_trainer.train_ranker` with early stopping on the
   validation log loss (best epoch restored), then one evaluation on the test rows.

The baseline is the label prior: predicting the training positive rate for every
test row. Its log loss equals the entropy of that rate; the ranker is useful only
if its test log loss is lower (normalized entropy below 1).

Example:
    >>> result = train_criteo_sample("criteo-sample/pytorch-fm_train.txt")  # doctest: +SKIP
    >>> result["test_logloss"] < result["prior_logloss"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recsys.data.criteo import SPARSE_COLUMNS, criteo_transform, load_criteo
from recsys.eval.classification import auc, logloss, normalized_entropy
from recsys.models.dlrm import RankerConfig, build_ranker
from recsys.training.ranker_trainer import (
    ArrayBatches,
    RankerTrainerConfig,
    predict,
    train_ranker,
)

MISSING_ROW = 0
RARE_ROW = 1


def _small_ranker() -> RankerConfig:
    return RankerConfig(
        arch="dlrm",
        embedding_dim=4,
        dense_arch_layer_sizes=(16, 4),
        over_arch_layer_sizes=(16, 1),
    )


def _small_trainer() -> RankerTrainerConfig:
    return RankerTrainerConfig(
        epochs=40,
        batch_size=64,
        lr_dense=3e-3,
        lr_sparse=0.02,
        dense_optimizer="adam",
        weight_decay_dense=1e-4,
        early_stopping_patience=4,
        restore_best=True,
        progress=False,
    )


@dataclass
class CriteoSampleConfig:
    """Protocol and model of :func:`train_criteo_sample`.

    Attributes:
        test_fraction: share of all rows held out for the final evaluation.
        valid_fraction: share of the remaining rows used for early stopping.
        split_seed: seed of the row split (the model seed is ``ranker.seed``).
        min_count: training occurrences a categorical value needs to get its own
            embedding row.
        num_hash_buckets: buckets of the stable hash applied to raw categories
            before the vocabulary (large: collisions are negligible).
        ranker: the model (small by default: 4-d embeddings, 16-unit MLPs).
        trainer: optimizers, epochs and early stopping.
        max_rows: read at most this many rows of the file (None: all).
    """

    test_fraction: float = 0.2
    valid_fraction: float = 0.2
    split_seed: int = 0
    min_count: int = 3
    num_hash_buckets: int = 1 << 24
    ranker: RankerConfig = field(default_factory=_small_ranker)
    trainer: RankerTrainerConfig = field(default_factory=_small_trainer)
    max_rows: int | None = None

    def __post_init__(self) -> None:
        for name in ("test_fraction", "valid_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")


def frequency_vocab(
    train_ids: np.ndarray, ids: np.ndarray, min_count: int
) -> tuple[np.ndarray, int]:
    """Maps one column's ids to compact rows: 0 missing, 1 rare/unseen, 2.. frequent.

    Args:
        train_ids: the column's ids on the training rows (0 = missing).
        ids: ids to map (any rows, e.g. all of them).
        min_count: training occurrences needed for an own row.

    Returns:
        ``(rows, table_size)``: int64 row per id and the rows the table needs.

    Example:
        >>> rows, size = frequency_vocab(np.array([5, 5, 7, 0]), np.array([5, 7, 9, 0]), 2)
        >>> rows.tolist(), size
        ([2, 1, 1, 0], 3)
    """
    values, counts = np.unique(train_ids[train_ids != MISSING_ROW], return_counts=True)
    frequent = values[counts >= min_count]
    pos = np.searchsorted(frequent, ids)
    if frequent.size:
        found = (pos < frequent.size) & (frequent[np.minimum(pos, frequent.size - 1)] == ids)
    else:
        found = np.zeros(ids.shape, dtype=bool)
    rows = np.where(found, pos + 2, RARE_ROW).astype(np.int64)
    rows[ids == MISSING_ROW] = MISSING_ROW
    return rows, int(frequent.size) + 2


def split_rows(
    n: int, test_fraction: float, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random (train, valid, test) row indices.

    Example:
        >>> tr, va, te = split_rows(100, 0.2, 0.25, seed=0)
        >>> len(tr), len(va), len(te), len(set(tr) | set(va) | set(te))
        (60, 20, 20, 100)
    """
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_valid = round((n - n_test) * valid_fraction)
    if n - n_test - n_valid < 1 or n_test < 1 or n_valid < 1:
        raise ValueError(f"{n} rows are too few for the split {test_fraction}/{valid_fraction}")
    test, valid, train = np.split(order, [n_test, n_test + n_valid])
    return np.sort(train), np.sort(valid), np.sort(test)


def train_criteo_sample(
    path: str | os.PathLike[str], config: CriteoSampleConfig | None = None
) -> dict[str, Any]:
    """Trains the ranker on a Criteo file and compares it with the label prior.

    Args:
        path: a Criteo log in the Kaggle format (e.g. the 1,000-row sample).
        config: protocol and model; defaults to :class:`CriteoSampleConfig`.

    Returns:
        ``rows``, ``train_rows``, ``valid_rows``, ``test_rows``, ``load_report``
        (summary text), ``train_positive_rate``, ``test_logloss``,
        ``prior_logloss`` (the training rate predicted for every test row),
        ``test_ne`` (test log loss / entropy of the training rate), ``test_auc`` (NaN if the
        test rows hold one class), ``best_epoch``, ``epochs_run``, ``history``
        (per-epoch metrics), ``table_sizes`` and ``config``.

    Raises:
        DatasetNotFoundError: the file does not exist.
    """
    cfg = config or CriteoSampleConfig()
    frame, report = load_criteo(path, max_rows=cfg.max_rows)
    dense, hashed, labels = criteo_transform(frame, cfg.num_hash_buckets)
    train, valid, test = split_rows(
        len(labels), cfg.test_fraction, cfg.valid_fraction, cfg.split_seed
    )

    sparse = np.empty_like(hashed)
    sizes: list[int] = []
    for j in range(hashed.shape[1]):
        sparse[:, j], size = frequency_vocab(hashed[train, j], hashed[:, j], cfg.min_count)
        sizes.append(size)

    names = list(SPARSE_COLUMNS)
    model = build_ranker(cfg.ranker, names, sizes, num_dense=dense.shape[1])
    bs = cfg.trainer.batch_size

    def batches(rows: np.ndarray, shuffle: bool) -> ArrayBatches:
        return ArrayBatches(
            dense[rows],
            sparse[rows],
            labels[rows],
            names,
            bs,
            shuffle=shuffle,
            seed=cfg.trainer.seed,
            num_embeddings_per_feature=sizes,
        )

    history = train_ranker(model, batches(train, True), batches(valid, False), cfg.trainer)
    assert history.module is not None
    probs, test_labels = predict(history.module, batches(test, False))
    prior = float(labels[train].mean())
    both = 0 < test_labels.sum() < len(test_labels)
    return {
        "rows": len(labels),
        "train_rows": len(train),
        "valid_rows": len(valid),
        "test_rows": len(test),
        "load_report": report.summary(),
        "train_positive_rate": prior,
        "test_logloss": logloss(test_labels, probs),
        "prior_logloss": logloss(test_labels, np.full(len(test_labels), prior)),
        "test_ne": normalized_entropy(test_labels, probs, prior=prior),
        "test_auc": auc(test_labels, probs) if both else float("nan"),
        "best_epoch": history.best_epoch,
        "epochs_run": len(history.epochs),
        "history": history.epochs,
        "table_sizes": sizes,
        "config": asdict(cfg),
    }
