"""Two-tower training on real MovieLens-100K: sampling, determinism, resume, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.data.movielens import load_ml100k
from recsys.data.splits import stratified_split
from recsys.eval.harness import EvalHarness
from recsys.features.build import build_features
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.models.two_tower import TowerConfig, TwoTower, TwoTowerConfig
from recsys.training.retrieval import (
    RetrievalData,
    RetrievalTrainer,
    RetrievalTrainerConfig,
    resolve_device,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(REPO / "configs" / "schema" / "ml100k.yaml")


@pytest.fixture(scope="module")
def dataset(ml100k_dir: Path, schema: FeatureSchema) -> ProcessedDataset:
    data = load_ml100k(ml100k_dir)
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    return build_features(data, (train, test), schema)


def _trainer(
    dataset: ProcessedDataset, schema: FeatureSchema, **overrides: object
) -> RetrievalTrainer:
    sizes = dataset.vocabs.num_embeddings()  # type: ignore[union-attr]
    model = TwoTower(
        schema,
        sizes,
        TwoTowerConfig(
            embedding_dim=16, user_tower=TowerConfig((32, 16)), item_tower=TowerConfig((32, 16))
        ),
    )
    data = RetrievalData.build(dataset, schema, model.feature_names)
    cfg = RetrievalTrainerConfig(
        **{"epochs": 1, "batch_size": 2048, "progress": False, "num_threads": 2, **overrides}
    )
    return RetrievalTrainer(model, data, cfg)


def test_history_sample_leaves_the_target_out(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    trainer = _trainer(dataset, schema)
    data = trainer.data
    rng = np.random.default_rng(0)
    rows = rng.choice(len(data.example_user), 500, replace=False)
    users = data.example_user[rows]
    targets = data.item_history_ids[data.example_item[rows]]
    values, lengths = data.sample_others(users, targets, rng)
    assert lengths.sum() == len(values)
    assert (lengths <= data.history_len).all()
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    for j in range(len(rows)):
        bag = values[starts[j] : starts[j] + lengths[j]]
        pool_v, _ = data.user_items.rows(users[j : j + 1])
        assert targets[j] not in bag
        assert set(bag) <= set(pool_v)
        assert len(bag) == min(int((pool_v != targets[j]).sum()), data.history_len)


def test_same_seed_gives_the_same_metrics(dataset: ProcessedDataset, schema: FeatureSchema) -> None:
    harness = EvalHarness.from_processed(dataset)
    a, b = _trainer(dataset, schema), _trainer(dataset, schema)
    loss_a, loss_b = a.train_epoch(), b.train_epoch()
    ma, mb = a.evaluate(harness).metrics, b.evaluate(harness).metrics
    assert abs(loss_a - loss_b) <= 1e-6
    for k in ma:
        assert abs(ma[k] - mb[k]) <= 1e-6, k


def test_resume_from_checkpoint_continues_the_same_run(
    dataset: ProcessedDataset, schema: FeatureSchema, tmp_path: Path
) -> None:
    straight = _trainer(dataset, schema, epochs=2)
    straight.fit(None)
    first = _trainer(dataset, schema, epochs=1, checkpoint_dir=str(tmp_path))
    first.fit(None)
    resumed = _trainer(dataset, schema, epochs=2, checkpoint_dir=str(tmp_path), resume=True)
    resumed.fit(None)
    assert resumed.epoch == 2
    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


def test_training_beats_popularity_on_the_benchmark_split(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    harness = EvalHarness.from_processed(dataset)
    trainer = _trainer(dataset, schema, epochs=3)
    trainer.fit(None)
    ndcg = trainer.evaluate(harness).metrics["ndcg@10"]
    assert ndcg > 0.2524  # popularity's NDCG@10 on this split


def test_device_names_resolve_and_cuda_without_a_gpu_is_refused() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_training_on_cuda_matches_the_cpu_metrics(
    dataset: ProcessedDataset, schema: FeatureSchema
) -> None:
    harness = EvalHarness.from_processed(dataset)
    torch.manual_seed(0)
    cpu = _trainer(dataset, schema, device="cpu")
    torch.manual_seed(0)
    gpu = _trainer(dataset, schema, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    cpu.train_epoch()
    gpu.train_epoch()
    queries, items = gpu.retrieval_vectors()
    assert queries.device.type == "cpu" and items.device.type == "cpu"
    # same seed, same batches: the two devices differ by float rounding only
    m_cpu, m_gpu = cpu.evaluate(harness).metrics, gpu.evaluate(harness).metrics
    assert abs(m_cpu["ndcg@10"] - m_gpu["ndcg@10"]) < 0.02
