"""A second retrieval model through the same commands: ``model=mf`` trains, is evaluated,
written into the run bundle, served by Triton and asked over gRPC, like the two-tower."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.bundle.layout import RunBundle
from recsys.pipeline import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.slow
@pytest.mark.triton
def test_matrix_factorization_trains_evaluates_bundles_and_serves(
    data_dir: Path, ml100k_dir: Path, tmp_path: Path
) -> None:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            config_name="main",
            overrides=[
                f"dataset.dir={data_dir}",
                f"artifacts_dir={tmp_path / 'art'}",
                "tracking=none",
                "model=mf",
                "stages=[data,retrieval,two_stage,index,bundle,serve]",
                "trainer.epochs=3",
                "trainer.progress=false",
                "ranker.trainer.epochs=1",
                "ranker.trainer.progress=false",
                "recommend.tune={}",
                "serve.users=[1,196,999999]",
                "serve.repeats=1",
                "serve.realtime_demo=false",
            ],
        )
    metrics = run(OmegaConf.to_container(cfg, resolve=True), tmp_path / "run")  # type: ignore[arg-type]
    assert metrics["MF"]["ndcg@10"] > 0.2524  # the popularity baseline
    assert "Two-tower" not in metrics
    exact, indexed = metrics["MF"], metrics["MF + FAISS"]
    # the exact Flat index ranks as the model does, up to float32 near-ties: raw dot
    # products are computed in another order by FAISS than by torch
    assert indexed["ndcg@10"] == pytest.approx(exact["ndcg@10"], abs=1e-3)

    bundle = RunBundle.open(tmp_path / "art" / "bundle")
    assert "name: mf" in bundle.read_text("config.yaml")
    assert bundle.summary["query_dim"] == 65  # 64 factors + the item-bias slot
    served = json.loads((tmp_path / "run" / "serve.json").read_text())["recommendations"]
    offline = pd.read_parquet(tmp_path / "run" / "topk" / "two_stage_mmr.parquet")
    for user in (1, 196):
        want = offline[offline.user == user].sort_values("rank")["item"].tolist()
        assert [item for item, _ in served[str(user)]] == want
