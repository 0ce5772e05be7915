"""The main job (``scripts/run.sh``): a Hydra app over ``configs/main.yaml``.

    python training/main.py                          # data, baselines, two-tower
    python training/main.py 'stages=[data,baselines]' trainer.epochs=5
    python training/main.py --multirun model.temperature=0.05,0.1

Outputs (metrics.json, results.md, topk/*.parquet, checkpoints, the resolved
config and the W&B offline run) land in Hydra's run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recsys.pipeline import run


@hydra.main(config_path="../configs", config_name="main", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Runs the configured stages; returns the two-tower NDCG@10 (for sweepers)."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    metrics = run(resolved, Path(HydraConfig.get().runtime.output_dir))
    best = metrics.get("Two-tower") or next(iter(metrics.values()), {})
    return float(best.get("ndcg@10", 0.0))


if __name__ == "__main__":
    main()
