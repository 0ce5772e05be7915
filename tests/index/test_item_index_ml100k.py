"""ItemIndex on real MovieLens-100K data: item vectors from a truncated SVD of the
user x item rating matrix, the real movie ids and titles, and each user's rated
movies as exclusions (the serving case: never recommend what was seen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from recsys.index import IndexConfig, ItemIndex

CPU: dict[str, Any] = {"device": "cpu", "num_threads": 1}
DIM = 32


def truncated_svd(
    matrix: npt.NDArray[np.float32], rank: int, seed: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Top-``rank`` SVD by a randomized range finder with two power iterations: a
    full LAPACK SVD of the 943 x 1682 matrix takes seconds to minutes on busy
    shared cores, this takes milliseconds."""
    rng = np.random.default_rng(seed)
    basis = matrix @ rng.standard_normal((matrix.shape[1], rank + 10)).astype(np.float32)
    for _ in range(2):
        basis, _ = np.linalg.qr(basis)
        basis = matrix @ (matrix.T @ basis)
    basis, _ = np.linalg.qr(basis)
    left, sing, right = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ left)[:, :rank], sing[:rank], right[:rank]


class SvdFactors:
    """User and item factors of the rating matrix, and who rated what."""

    def __init__(self, ml100k_dir: Path) -> None:
        data = np.loadtxt(ml100k_dir / "u.data", dtype=np.int64)
        users, self.item_ids = np.unique(data[:, 0]), np.unique(data[:, 1])
        u = np.searchsorted(users, data[:, 0])
        i = np.searchsorted(self.item_ids, data[:, 1])
        matrix = np.zeros((len(users), len(self.item_ids)), dtype=np.float32)
        matrix[u, i] = data[:, 2]
        left, sing, right = truncated_svd(matrix, DIM)
        self.user_vecs = (left[:, :DIM] * np.sqrt(sing[:DIM])).astype(np.float32)
        self.item_vecs = (right[:DIM].T * np.sqrt(sing[:DIM])).astype(np.float32)
        self.rated: list[npt.NDArray[np.int64]] = [
            self.item_ids[np.flatnonzero(row)] for row in matrix
        ]
        self.matrix = matrix


@pytest.fixture(scope="module")
def svd(ml100k_dir: Path) -> SvdFactors:
    return SvdFactors(ml100k_dir)


def test_real_catalogue_shape(svd: SvdFactors) -> None:
    assert svd.item_vecs.shape == (1682, DIM)
    assert svd.user_vecs.shape == (943, DIM)
    assert min(len(r) for r in svd.rated) >= 20  # every ML-100K user rated >= 20 movies


def test_top10_unseen_movies_equal_masked_brute_force(svd: SvdFactors) -> None:
    index = ItemIndex(IndexConfig(kind="flat", **CPU)).build(svd.item_vecs, svd.item_ids)
    res = index.search(svd.user_vecs, k=10, exclude=svd.rated)

    scores = svd.user_vecs @ svd.item_vecs.T
    scores[svd.matrix > 0] = -np.inf
    expected = svd.item_ids[np.argsort(-scores, axis=1, kind="stable")[:, :10]]
    assert (res.counts == 10).all()
    agree = (res.item_ids == expected).mean()
    assert agree > 0.995, agree  # only float32 near-ties may swap neighbours
    for user, rated in enumerate(svd.rated):
        assert not np.isin(res.item_ids[user], rated).any(), f"user {user} got a seen movie"


def test_approximate_indexes_keep_recall_on_real_vectors(svd: SvdFactors) -> None:
    exact = ItemIndex(IndexConfig(kind="flat", **CPU)).build(svd.item_vecs, svd.item_ids)
    truth = exact.search(svd.user_vecs, k=10, exclude=svd.rated).item_ids
    for cfg in (
        IndexConfig(kind="ivf_flat", nprobe=16, **CPU),  # auto nlist = 32 for 1,682 items
        IndexConfig(kind="hnsw", ef_search=64, **CPU),
    ):
        index = ItemIndex(cfg).build(svd.item_vecs, svd.item_ids)
        found = index.search(svd.user_vecs, k=10, exclude=svd.rated)
        hits = [len(np.intersect1d(f, t)) / 10 for f, t in zip(found.item_ids, truth, strict=True)]
        assert np.mean(hits) >= 0.95, (cfg.kind, np.mean(hits))
        assert not any(
            np.isin(found.item_ids[u], svd.rated[u]).any() for u in range(len(svd.rated))
        )


def test_duplicate_movie_titles_are_rejected_as_ids(ml100k_dir: Path, svd: SvdFactors) -> None:
    # ML-100K lists some films twice under two movie ids (e.g. "Chasing Amy (1997)"):
    # titles are not usable as item ids, and the index says which ones repeat.
    lines = (ml100k_dir / "u.item").read_text(encoding="latin-1").splitlines()
    titles = np.array([line.split("|")[1] for line in lines], dtype=object)
    assert len(titles) == 1682
    with pytest.raises(ValueError, match=r"item_ids must be unique: 18 id\(s\) repeat"):
        ItemIndex(IndexConfig(**CPU)).build(svd.item_vecs, titles)
    # Movie ids as strings work and round-trip to the same neighbours.
    str_ids = np.array([f"ml100k:{i}" for i in svd.item_ids], dtype=object)
    by_str = ItemIndex(IndexConfig(**CPU)).build(svd.item_vecs, str_ids)
    by_int = ItemIndex(IndexConfig(**CPU)).build(svd.item_vecs, svd.item_ids)
    a = by_str.search(svd.user_vecs[:50], 20).item_ids
    b = by_int.search(svd.user_vecs[:50], 20).item_ids
    np.testing.assert_array_equal(a, np.vectorize(lambda i: f"ml100k:{i}", otypes=[object])(b))
