"""Ranker training loop: batching, learning, determinism, sharding paths, torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.data.criteo_synthetic import SyntheticCriteoConfig, generate_criteo
from recsys.eval.classification import logloss
from recsys.models.dlrm import Ranker, RankerConfig, build_ranker
from recsys.training.ranker_trainer import (
    ArrayBatches,
    RankerHistory,
    RankerTrainerConfig,
    evaluate,
    predict,
    train_ranker,
    unshard_ranker,
)

SIZES = (3, 10, 50, 200, 1000, 5000) * 4 + (20, 20)
NAMES = [f"C{i + 1}" for i in range(26)]
N_TRAIN = 8000


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine, OpenMP threads that spin-wait
    for each other made these small steps about ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return generate_criteo(SyntheticCriteoConfig(rows=10_000, table_sizes=SIZES, seed=0))


def _loaders(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], batch_size: int = 256, seed: int = 0
) -> tuple[ArrayBatches, ArrayBatches]:
    dense, sparse, labels = data
    t = slice(0, N_TRAIN)
    v = slice(N_TRAIN, None)
    train = ArrayBatches(dense[t], sparse[t], labels[t], NAMES, batch_size, shuffle=True, seed=seed)
    valid = ArrayBatches(dense[v], sparse[v], labels[v], NAMES, 1000)
    return train, valid


def _ranker(seed: int = 0) -> Ranker:
    return build_ranker(RankerConfig(seed=seed), NAMES, SIZES, num_dense=13)


def _train(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], **kwargs: object
) -> tuple[Ranker, RankerHistory]:
    seed = int(kwargs.get("seed", 0))  # type: ignore[call-overload]
    cfg = RankerTrainerConfig(**{"epochs": 1, "progress": False, **kwargs})  # type: ignore[arg-type]
    model = _ranker(seed)
    train, valid = _loaders(data, seed=seed)
    return model, train_ranker(model, train, valid, cfg)


# ------------------------------------------------------------------------ batches


def test_batches_cover_rows_in_order_or_shuffled_per_pass() -> None:
    ids = np.arange(10).reshape(10, 1)
    plain = ArrayBatches(np.zeros((10, 2)), ids, np.zeros(10), ["f"], batch_size=4)
    assert [b.labels.numel() for b in plain] == [4, 4, 2]
    assert torch.cat([b.sparse_features.values() for b in plain]).tolist() == list(range(10))
    dropped = ArrayBatches(np.zeros((10, 2)), ids, np.zeros(10), ["f"], 4, drop_last=True)
    assert len(dropped) == 2 and [b.labels.numel() for b in dropped] == [4, 4]

    def passes(seed: int) -> list[list[int]]:
        loader = ArrayBatches(
            np.zeros((10, 2)), ids, np.zeros(10), ["f"], 10, shuffle=True, seed=seed
        )
        return [next(iter(loader)).sparse_features.values().tolist() for _ in range(3)]

    first = passes(0)
    assert all(sorted(p) == list(range(10)) for p in first)
    assert first[0] != first[1]  # a new order each pass
    assert first == passes(0)  # ... the same orders for the same seed
    assert first != passes(1)


def test_batches_split_across_ranks_equally() -> None:
    n = 1001
    ids = np.arange(n).reshape(n, 1)
    parts = [
        ArrayBatches(np.zeros((n, 1)), ids, np.zeros(n), ["f"], 100, rank=r, world_size=3)
        for r in range(3)
    ]
    counts = [len(list(p)) for p in parts]
    assert counts == [4, 4, 4]  # collectives need the same number of steps on each rank
    seen = sorted(v for p in parts for b in p for v in b.sparse_features.values().tolist())
    assert seen == list(range(n))  # every row once (the last global batch is split 34/34/33)


def test_batches_reject_bad_ids_and_shapes() -> None:
    with pytest.raises(ValueError, match="beyond their table"):
        ArrayBatches(
            np.zeros((2, 1)),
            np.array([[0, 5], [1, 1]]),
            np.zeros(2),
            ["a", "b"],
            2,
            num_embeddings_per_feature=[3, 5],
        )
    with pytest.raises(ValueError, match="negative"):
        ArrayBatches(np.zeros((1, 1)), np.array([[-1]]), np.zeros(1), ["a"], 1)
    with pytest.raises(ValueError, match="disagree on rows"):
        ArrayBatches(np.zeros((3, 1)), np.zeros((2, 1), dtype=int), np.zeros(3), ["a"], 1)
    with pytest.raises(ValueError, match="2 columns, 1 names"):
        ArrayBatches(np.zeros((2, 1)), np.zeros((2, 2), dtype=int), np.zeros(2), ["a"], 1)


# ----------------------------------------------------------------------- training


def test_training_learns_the_synthetic_click_model(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    _, history = _train(data, epochs=2)
    labels = data[2]
    prior_loss = logloss(labels[N_TRAIN:], np.full(len(labels) - N_TRAIN, labels[:N_TRAIN].mean()))
    last = history.epochs[-1]
    assert len(history.epochs) == 2 and history.steps == 2 * math.ceil(N_TRAIN / 256)
    assert last["valid_auc"] > 0.78
    assert last["valid_logloss"] < prior_loss - 0.05
    assert last["valid_ne"] < 0.9
    assert history.epochs[1]["train_loss"] < history.epochs[0]["train_loss"]
    assert history.train_positive_rate == pytest.approx(labels[:N_TRAIN].mean(), abs=1e-6)
    assert last["samples_per_s"] > 0


def test_same_seed_gives_identical_metrics_other_seed_does_not(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    def metrics(seed: int) -> list[tuple[float, ...]]:
        _, h = _train(data, seed=seed)
        return [(e["train_loss"], e["valid_logloss"], e["valid_auc"]) for e in h.epochs]

    first = metrics(0)
    assert first == metrics(0)
    assert first != metrics(1)


def test_sharded_and_unsharded_paths_train_identically(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    # DMP (FBGEMM fused row-wise Adagrad, tables copied into shards) vs. the unsharded
    # EmbeddingBagCollection with TorchRec's reference RowWiseAdagrad in backward.
    _, sharded = _train(data, sharding="dmp")
    _, local = _train(data, sharding="local")
    for key in ("train_loss", "valid_logloss", "valid_auc"):
        assert sharded.epochs[0][key] == pytest.approx(local.epochs[0][key], abs=1e-4), key
    assert type(sharded.module).__name__ == "DistributedModelParallel"
    assert isinstance(local.module, Ranker)


def test_early_stopping_restores_the_best_epoch(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    # A large sparse learning rate overfits the small tables within a few epochs.
    _, history = _train(data, epochs=8, lr_sparse=0.5, lr_dense=3e-3, early_stopping_patience=1)
    assert history.stopped_early
    assert len(history.epochs) == history.best_epoch + 2
    assert history.module is not None
    _, valid = _loaders(data)
    again = evaluate(history.module, valid)
    assert again["logloss"] == pytest.approx(history.best["valid_logloss"], abs=1e-9)
    assert again["logloss"] < history.epochs[-1]["valid_logloss"]


def test_max_steps_and_eval_every(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, history = _train(data, epochs=3, max_steps=7, eval_every=3)
    assert history.steps == 7 and len(history.epochs) == 1
    assert [e["step"] for e in history.evals] == [3.0, 6.0]
    assert all(0.5 < e["auc"] <= 1.0 for e in history.evals)


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_other_fused_sparse_optimizers_run(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], optimizer: str
) -> None:
    _, history = _train(data, sparse_optimizer=optimizer, max_steps=10)
    assert math.isfinite(history.epochs[0]["valid_logloss"])


def test_unsharded_copy_scores_like_the_trained_module(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    model, history = _train(data, max_steps=15)
    assert history.module is not None
    local = unshard_ranker(history.module, model)
    assert isinstance(local, Ranker)
    assert (
        type(local.dlrm.sparse_arch.embedding_bag_collection).__name__ == "EmbeddingBagCollection"
    )
    _, valid = _loaders(data)
    trained_probs, _ = predict(history.module, valid)
    local_probs, _ = predict(local, valid)
    np.testing.assert_allclose(local_probs, trained_probs, rtol=1e-5, atol=1e-6)
    untrained, _ = predict(_ranker(), valid)
    assert np.abs(untrained - trained_probs).max() > 1e-3  # the tables did move


@pytest.mark.parametrize("sharding", ["dmp", "local"])
def test_a_ranker_trains_once(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], sharding: str
) -> None:
    model, _ = _train(data, sharding=sharding, max_steps=2)
    train, valid = _loaders(data)
    with pytest.raises(ValueError, match="already prepared"):
        train_ranker(model, train, valid, RankerTrainerConfig(progress=False, sharding=sharding))  # type: ignore[arg-type]


def test_config_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="sparse_optimizer"):
        RankerTrainerConfig(sparse_optimizer="lamb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sharding"):
        RankerTrainerConfig(sharding="fsdp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_every"):
        RankerTrainerConfig(eval_every=0)


# ----------------------------------------------------------------- multi-process

_TORCHRUN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch.distributed as dist
    from recsys.data.criteo_synthetic import SyntheticCriteoConfig, generate_criteo
    from recsys.models.dlrm import RankerConfig, build_ranker
    from recsys.training.ranker_trainer import (
        ArrayBatches, RankerTrainerConfig, init_process_group, train_ranker, unshard_ranker,
    )

    sizes = (3, 10, 50, 200, 1000, 5000) * 4 + (20, 20)
    names = [f"C{i + 1}" for i in range(26)]
    rank, world = init_process_group("cpu")
    dense, sparse, labels = generate_criteo(
        SyntheticCriteoConfig(rows=10_000, table_sizes=sizes, seed=0)
    )
    train = ArrayBatches(dense[:8000], sparse[:8000], labels[:8000], names, 128, shuffle=True)
    valid = ArrayBatches(dense[8000:], sparse[8000:], labels[8000:], names, 500)
    model = build_ranker(RankerConfig(), names, sizes, num_dense=13)
    history = train_ranker(
        model, train, valid, RankerTrainerConfig(epochs=2, batch_size=128, progress=False)
    )
    local = unshard_ranker(history.module, model)
    table_sums = [float(p.detach().double().sum()) for p in local.sparse_parameters()]
    out = {"rank": rank, "world": world, "epochs": history.epochs, "table_sums": table_sums,
           "rows_seen": sum(b.labels.numel() for b in train) * 2}
    with open(sys.argv[1] + f"/rank{rank}.json", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_processes_under_torchrun_share_tables_and_agree(tmp_path: Path) -> None:
    script = tmp_path / "train_two.py"
    script.write_text(_TORCHRUN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*cmd, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    # Validation gathers all ranks' rows, so both report the same metrics.
    assert ranks[0]["epochs"][-1]["valid_logloss"] == ranks[1]["epochs"][-1]["valid_logloss"]
    assert ranks[0]["epochs"][-1]["valid_auc"] > 0.75
    # Tables were sharded table-wise over the two ranks; the gathered copies agree.
    assert ranks[0]["table_sums"] == pytest.approx(ranks[1]["table_sums"], rel=1e-6)
    # Each rank trained on its half of every global batch.
    assert ranks[0]["rows_seen"] + ranks[1]["rows_seen"] == 2 * 8000
