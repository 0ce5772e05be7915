"""The main job (``scripts/run.sh``): a Hydra app over ``configs/main.yaml``.

    python training/main.py                          # data, baselines, two-tower
    python training/main.py 'stages=[data,baselines]' trainer.epochs=5
    python training/main.py dataset=ml25m            # downloads ML-25M when missing
    python training/main.py --multirun model.temperature=0.05,0.1

Outputs (metrics.json, results.md, topk/*.parquet, checkpoints, the resolved
config and the W&B offline run) land in Hydra's run directory.

A user error (data that is missing and cannot be downloaded, a bad override
such as an unknown loader or key, a schema that does not fit the dataset,
rejected rows under ``dataset.strict=true``) prints one message on stderr and
exits with status 2, not a traceback; ``HYDRA_FULL_ERROR=1`` shows the
traceback as well.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recsys.data.frame import DataError
from recsys.pipeline import retrieval_name, run

#: Exit status of a user error (bad data or config), as ``recsys realtime`` uses.
USER_ERROR = 2


def user_error(err: BaseException) -> int:
    """Prints ``err`` as one message (no traceback) and returns the exit status.

    Args:
        err: a data error, a config value error or an interpolation error.

    Returns:
        :data:`USER_ERROR`.

    Example:
        >>> user_error(ValueError("dataset.loader: unknown loader 'x'"))  # doctest: +SKIP
        2
    """
    kind = "data" if isinstance(err, DataError) else "config"
    print(f"recsys: {kind} error: {err}", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
    return USER_ERROR


@hydra.main(config_path="../configs", config_name="main", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Runs the configured stages; returns the retrieval model's NDCG@10 (for sweepers)."""
    try:
        resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        metrics = run(resolved, Path(HydraConfig.get().runtime.output_dir))
    except (DataError, ValueError, OmegaConfBaseException) as err:
        # Bad data or a bad override is the user's to fix: one message, no trace.
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(user_error(err))
    best = metrics.get(retrieval_name(resolved)) or next(iter(metrics.values()), {})
    return float(best.get("ndcg@10", 0.0))


if __name__ == "__main__":
    main()
