"""Real MovieLens-100K splits and retrieval vectors shared by the two-stage tests.

The retrieval vectors are a truncated SVD of each split's training matrix: a
real, deterministic retrieval model that takes milliseconds (two-tower training
is exercised by the end-to-end test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.frame import ITEM, USER
from recsys.data.movielens import load_ml100k
from recsys.data.splits import stratified_split
from recsys.features.build import build_features
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.recommend.two_stage import RetrievalVectors

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(REPO / "configs" / "schema" / "ml100k.yaml")


@pytest.fixture(scope="session")
def splits(ml100k_dir: Path, schema: FeatureSchema) -> tuple[ProcessedDataset, ProcessedDataset]:
    """``(main, selection)``: the benchmark split and train split again 90/10."""
    data = load_ml100k(ml100k_dir)
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    fit, held = stratified_split(train, 0.9, "item", 7)
    return build_features(data, (train, test), schema), build_features(data, (fit, held), schema)


def svd_vectors(dataset: ProcessedDataset, rank: int = 32, seed: int = 0) -> RetrievalVectors:
    """Query and item vectors from a randomized truncated SVD of the training matrix."""
    u = pd.Index(dataset.users[USER]).get_indexer(dataset.train[USER])
    i = pd.Index(dataset.items[ITEM]).get_indexer(dataset.train[ITEM])
    matrix = np.zeros((len(dataset.users), len(dataset.items)), dtype=np.float32)
    matrix[u, i] = 1.0
    rng = np.random.default_rng(seed)
    basis = matrix @ rng.standard_normal((matrix.shape[1], rank + 10)).astype(np.float32)
    for _ in range(2):
        basis, _ = np.linalg.qr(basis)
        basis = matrix @ (matrix.T @ basis)
    basis, _ = np.linalg.qr(basis)
    left, sing, right = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    users = (basis @ left)[:, :rank] * sing[:rank]
    items = right[:rank].T
    return RetrievalVectors(users.astype(np.float32), np.ascontiguousarray(items, np.float32))


@pytest.fixture(scope="session")
def main_vectors(splits: tuple[ProcessedDataset, ProcessedDataset]) -> RetrievalVectors:
    return svd_vectors(splits[0])


@pytest.fixture(scope="session")
def selection_vectors(splits: tuple[ProcessedDataset, ProcessedDataset]) -> RetrievalVectors:
    return svd_vectors(splits[1])
