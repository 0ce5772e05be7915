"""The two-stage stage of the main job, end to end on real MovieLens-100K (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.pipeline import run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow
def test_two_stage_beats_retrieval_alone_in_the_same_run(
    data_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="main",
            overrides=[
                f"dataset.dir={data_dir}",
                f"artifacts_dir={tmp_path / 'art'}",
                "tracking=none",
                "stages=[data,retrieval,two_stage]",
                "trainer.epochs=3",
                "trainer.progress=false",
                "ranker=dlrm",
                "recommend=default",
                "ranker.trainer.epochs=3",
                "ranker.trainer.progress=false",
                "recommend.tune.freshness_weight=[0.0]",
            ],
        )
    raw = OmegaConf.to_container(cfg, resolve=True)
    metrics = run(raw, tmp_path / "run")  # type: ignore[arg-type]

    tower, retrieval = metrics["Two-tower"], metrics["Two-stage retrieval"]
    ranked, diverse = metrics["Two-stage ranker"], metrics["Two-stage MMR"]
    # the exact FAISS search over the same vectors is the two-tower's own ranking
    assert retrieval["ndcg@10"] == pytest.approx(tower["ndcg@10"], abs=1e-6)
    assert ranked["ndcg@10"] > retrieval["ndcg@10"] + 0.01
    assert diverse["ild@10"] > ranked["ild@10"]
    report = json.loads((tmp_path / "run" / "two_stage.json").read_text())
    assert report["ranker"]["test"]["auc"] > 0.7
    assert report["ranker"]["valid"]["gauc"] > 0.6
    assert report["examples"]["positives"] > 5000
    lists = pd.read_parquet(tmp_path / "run" / "topk" / "two_stage_ranker.parquet")
    assert lists.user.nunique() == 943 and lists["rank"].max() == 10
    assert (tmp_path / "art" / "ranker" / "ranker.pt").is_file()


@pytest.mark.slow
def test_the_main_job_trains_and_bundles_request_features_and_segments(
    data_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="main",
            overrides=[
                f"dataset.dir={data_dir}",
                f"artifacts_dir={tmp_path / 'art'}",
                "tracking=none",
                "stages=[data,retrieval,two_stage,bundle]",
                "trainer.epochs=1",
                "trainer.progress=false",
                "ranker=dlrm",
                "recommend=default",
                "ranker.trainer.epochs=1",
                "ranker.trainer.progress=false",
                "ranker.data.request_features=[ctx_hour,user_segments]",
                "ranker.segments=configs/ranker/segments/movielens.yaml",
                "recommend.tune.retrieval_weight=[0.5]",
                "recommend.tune.freshness_weight=[0.0]",
            ],
        )
    raw = OmegaConf.to_container(cfg, resolve=True)
    run(raw, tmp_path / "run")  # type: ignore[arg-type]
    report = json.loads((tmp_path / "run" / "two_stage.json").read_text())
    test = report["ranker"]["test"]
    assert test["requests"] > 943 and 0.5 < test["request_auc"] <= 1
    served = json.loads(
        (tmp_path / "art" / "bundle" / "runtime" / "ranker_features.json").read_text()
    )
    assert [f["name"] for f in served["request_features"]] == ["ctx_hour", "user_segments"]
    assert sorted(served["segment_vocab"]) == ["heavy_raters", "light_raters", "recent_raters"]
    assert len(served["user_segments"]) == 943
    assert sum(len(s) > 0 for s in served["user_segments"]) > 500
