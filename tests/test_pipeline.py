"""The main job through Hydra's compose API, on real MovieLens-100K."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.bundle import layout
from recsys.bundle.layout import RunBundle
from recsys.pipeline import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(data_dir: Path, artifacts: Path, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="main",
            overrides=[
                f"dataset.dir={data_dir}",
                f"artifacts_dir={artifacts}",
                "tracking=none",
                *overrides,
            ],
        )
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def test_baselines_reproduce_the_published_popularity_numbers(
    data_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    cfg = _config(data_dir, tmp_path / "art", ["stages=[data,baselines]", "baselines.bpr=null"])
    metrics = run(cfg, tmp_path / "run")
    pop = metrics["Popularity"]
    # Microsoft Recommenders' published popularity row on this protocol.
    assert round(pop["ndcg@10"], 4) == 0.2524
    assert round(pop["map@10"], 4) == 0.0560
    assert round(pop["precision@10"], 4) == 0.2287
    assert round(pop["recall@10"], 4) == 0.1132
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["Popularity"]
    assert "| Popularity |" in (tmp_path / "run" / "results.md").read_text()
    lists = pd.read_parquet(tmp_path / "run" / "topk" / "popularity.parquet")
    assert list(lists.columns) == ["user", "item", "rank", "score"]
    assert lists.user.nunique() == 943 and lists["rank"].max() == 10
    # The processed data is cached: a second run reuses it.
    run(cfg, tmp_path / "run2")
    manifest = json.loads((tmp_path / "art" / "processed" / "main" / "manifest.json").read_text())
    assert manifest["rows"] == {"train": 75_066, "test": 24_934, "valid": 0}


@pytest.mark.slow
def test_two_tower_and_its_exact_index_agree(
    data_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    cfg = _config(
        data_dir,
        tmp_path / "art",
        [
            "stages=[data,retrieval,index]",
            "trainer.epochs=2",
            "optimizer.lr_dense=0.01",
            "trainer.progress=false",
            "model.embedding_dim=16",
            "model.user_tower.layer_sizes=[32,16]",
            "model.item_tower.layer_sizes=[32,16]",
        ],
    )
    metrics = run(cfg, tmp_path / "run")
    exact, indexed = metrics["Two-tower"], metrics["Two-tower + FAISS"]
    assert exact["ndcg@10"] > 0.2524  # better than popularity after two epochs
    for key in ("ndcg@10", "precision@10", "recall@10", "map@10"):
        assert indexed[key] == pytest.approx(exact[key], abs=1e-6), key
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 0
    assert (tmp_path / "art" / "index" / "index.faiss").is_file()


@pytest.mark.slow
@pytest.mark.triton
def test_main_job_ends_by_serving_the_two_stage_recommender_over_grpc(
    data_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    cfg = _config(
        data_dir,
        tmp_path / "art",
        [
            "stages=[data,retrieval,two_stage,bundle,serve]",
            "trainer.epochs=1",
            "trainer.progress=false",
            "ranker.trainer.epochs=1",
            "ranker.trainer.progress=false",
            "recommend.tune.retrieval_weight=[0.0,0.5]",
            "recommend.tune.freshness_weight=[0.0]",
            "serve.users=[1,196,999999]",
            "serve.repeats=2",
        ],
    )
    run(cfg, tmp_path / "run")

    tuned = json.loads((tmp_path / "run" / "two_stage.json").read_text())["aggregation"]
    # the bundle (what the server reads) holds the tuned weights, this run's config and
    # metrics, and where its data came from
    bundle = RunBundle.open(tmp_path / "art" / "bundle")
    assert bundle.read_json(layout.AGGREGATION)["aggregation"] == tuned
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert bundle.read_json(layout.METRICS) == metrics
    assert "trainer:" in bundle.read_text(layout.CONFIG)
    data_manifest = json.loads(
        (tmp_path / "art" / "processed" / "main" / "manifest.json").read_text()
    )
    assert bundle.provenance["source_sha256"] == data_manifest["source_sha256"]
    assert bundle.summary["dataset"] == "ml-100k"
    report = json.loads((tmp_path / "run" / "serve.json").read_text())
    assert report["serve/requests"] == 6
    assert 0 < report["serve/latency_p50_ms"] <= report["serve/latency_p99_ms"]
    lists = report["recommendations"]
    assert set(lists) == {"1", "196", "999999"}
    assert all(len(items) == 10 for items in lists.values())
    # Known users: the served list is the offline two-stage (MMR) list of the same run.
    offline = pd.read_parquet(tmp_path / "run" / "topk" / "two_stage_mmr.parquet")
    for user in (1, 196):
        want = offline[offline.user == user].sort_values("rank")["item"].tolist()
        assert [item for item, _ in lists[str(user)]] == want
    # Real-time: user 1's clicks went through the event pipeline into the profile store
    # that the served model reads; the clicked items left the list, which refilled.
    realtime = report["realtime"]
    # the consumer applied the three clicks and the exposures of the served lists
    assert realtime["user"] == 1 and realtime["applied"] > 3
    assert realtime["clicked"] == realtime["before"][:3]
    # the served list went to the exposure log; each click carried its request id and
    # is attributed to that list at the position it was shown
    attributed = realtime["attributed"]
    assert [a["item"] for a in attributed] == realtime["clicked"]
    assert [a["position"] for a in attributed] == [0, 1, 2]
    assert {a["request_id"] for a in attributed} == {realtime["request_id"]}
    assert {a["bundle"] for a in attributed} == {bundle.bundle_id}
    assert not set(realtime["clicked"]) & set(realtime["after"])
    assert len(realtime["after"]) == 10 and realtime["after"] != realtime["before"]
    # the three clicks made user 1 a member of engaged_clickers (configs/segments), and
    # the next list shows that segment's targeting rule (configs/targeting)
    assert realtime["before_explanation"]["segments"] == []
    assert realtime["before_explanation"]["rules"] == []
    assert realtime["after_explanation"]["segments"] == ["engaged_clickers"]
    assert realtime["after_explanation"]["rules"] == ["engaged_get_comedy"]
