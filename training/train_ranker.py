"""Ranker training of the two-stage recommender: a Hydra app over ``configs/main.yaml``.

    python training/train_ranker.py                                   # DLRM ranker
    python training/train_ranker.py ranker=dlrm_dcn recommend=default
    python training/train_ranker.py ranker=dlrm ranker.data.label=rating
    python training/train_ranker.py +reuse_retrieval=true ranker=dlrm \\
        ranker.data.affinity=[]                                       # ranker only

By default it runs the main job's ``data``, ``retrieval`` and ``two_stage``
stages (:func:`recsys.pipeline.run_two_stage`): the two-tower is selected and
refit as in the main job, a second two-tower trained on the model-selection
split supplies the ranker's training candidates, the DLRM ranker trains on them
(never on test) and the two-stage variants are scored on test. An explicit
``stages=[...]`` override is respected. ``ranker=...`` / ``recommend=...``
choose the config groups (defaults ``configs/ranker/dlrm.yaml`` and
``configs/recommend/default.yaml``, listed in ``configs/main.yaml``).

``+reuse_retrieval=true`` trains the ranker only: the final two-tower comes
from ``<artifacts_dir>/retrieval/two_tower.pt`` and the selection two-tower's
vectors from ``<artifacts_dir>/two_stage/selection_vectors.npz``, both written
by an earlier full run with the same retrieval configs (the weights file is
not checked against the configs: rerun without the flag after changing them).

Outputs in Hydra's run directory: ``metrics.json`` and ``results.md`` (every
variant next to the two-tower), ``topk/*.parquet`` (per-user lists in original
ids), ``two_stage.json`` (ranker AUC / log loss / NE / GAUC on the validation
users and on test, tuned weights, example counts), ``checkpoints/ranker/last.pt``
(after every ranker epoch) and the W&B offline run (``tracking=wandb_offline``,
the default); the trained ranker goes to ``<artifacts_dir>/ranker``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recsys.eval.harness import EvalConfig, EvalHarness, EvalResult
from recsys.eval.report import metrics_table
from recsys.pipeline import (
    build_retrieval,
    dataclass_from,
    prepare,
    repo_path,
    run,
    run_two_stage,
    slug,
)
from recsys.training.retrieval import RetrievalData, RetrievalTrainer, RetrievalTrainerConfig
from recsys.training.tracking import Tracker, TrackingConfig

STAGES = ["data", "retrieval", "two_stage"]


def ranker_only(cfg: dict[str, Any], run_dir: Path) -> dict[str, dict[str, float]]:
    """The two-stage stage over the retrieval models of an earlier run.

    Args:
        cfg: the resolved config.
        run_dir: where outputs go.

    Returns:
        Metrics per model (the reloaded two-tower and the two-stage variants).

    Raises:
        FileNotFoundError: the earlier run's two-tower or selection vectors are missing.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts = repo_path(cfg["artifacts_dir"])
    weights = artifacts / "retrieval" / "two_tower.pt"
    cache = artifacts / "two_stage" / "selection_vectors.npz"
    missing = [str(p) for p in (weights, cache) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"reuse_retrieval needs an earlier full run's files, missing: {missing}; "
            "run `python training/train_ranker.py` once without +reuse_retrieval"
        )
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    torch.manual_seed(int(cfg["seed"]))
    prep = prepare(cfg, artifacts)
    t0 = time.perf_counter()
    model = build_retrieval(cfg, prep, prep.main)
    model.load_state_dict(torch.load(weights, weights_only=True))
    trainer_raw = {**dict(cfg["trainer"]), **dict(cfg.get("optimizer") or {})}
    trainer_raw.pop("refit_full", None)
    trainer = RetrievalTrainer(
        model,
        RetrievalData.build(prep.main, model.schema, model.feature_names),
        dataclass_from(
            RetrievalTrainerConfig,
            trainer_raw,
            "trainer",
            epochs=int(np.load(cache)["epochs"]),
            checkpoint_dir=None,
        ),
    )
    eval_cfg = dataclass_from(
        EvalConfig, cfg["eval"], "eval", k_values=tuple(cfg["eval"]["k_values"])
    )
    harness = EvalHarness.from_processed(prep.main, eval_cfg)
    results: dict[str, tuple[EvalResult, float]] = {
        "Two-tower": (trainer.evaluate(harness), time.perf_counter() - t0)
    }
    track_cfg = dataclass_from(TrackingConfig, cfg.get("tracking"), "tracking")
    if track_cfg.dir is None:
        track_cfg.dir = str(run_dir)
    tracker = Tracker(track_cfg, run_config=cfg)
    results.update(run_two_stage(cfg, prep, trainer, run_dir, tracker))

    metrics = {name: {**r.metrics, "seconds": secs} for name, (r, secs) in results.items()}
    (run_dir / "topk").mkdir(exist_ok=True)
    for name, (r, _) in results.items():
        harness.topk_frame(r).to_parquet(run_dir / "topk" / f"{slug(name)}.parquet")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    table = metrics_table(metrics)
    (run_dir / cfg.get("results_file", "results.md")).write_text(table + "\n", encoding="utf-8")
    print(table)
    tracker.log_table("results", pd.DataFrame(metrics).T.reset_index(names="model"))
    tracker.summary({f"{m}/{k}": v for m, d in metrics.items() for k, v in d.items()})
    tracker.finish()
    return metrics


@hydra.main(config_path="../configs", config_name="main", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Trains the ranker and evaluates the two-stage recommender; returns its NDCG@10."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if resolved.get("reuse_retrieval"):
        metrics = ranker_only(resolved, run_dir)
    else:
        overrides = HydraConfig.get().overrides.task
        if not any(o.lstrip("+~").startswith("stages=") for o in overrides):
            resolved["stages"] = STAGES
        metrics = run(resolved, run_dir)
    return float(metrics.get("Two-stage ranker", {}).get("ndcg@10", 0.0))


if __name__ == "__main__":
    main()
