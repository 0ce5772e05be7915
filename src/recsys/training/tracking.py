"""Experiment tracking with Weights & Biases: offline by default, online on request.

Offline runs need no account and no network; they land in ``<dir>/wandb/offline-run-*``
and can be uploaded later with ``wandb sync``. ``mode="online"`` logs live (set
``WANDB_API_KEY`` or run ``wandb login``); ``enabled=False`` turns tracking off.

Example:
    >>> tracker = Tracker(TrackingConfig(enabled=False))
    >>> tracker.log({"loss": 0.5}, step=1)
    >>> tracker.finish()
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class TrackingConfig:
    """Where experiment metrics go (config group ``tracking``).

    Attributes:
        enabled: log to W&B at all.
        mode: ``offline`` (default: local files, no account), ``online`` or
            ``disabled``; the ``WANDB_MODE`` environment variable overrides it.
        project: W&B project name.
        entity: W&B team or user; None uses the account's default.
        dir: folder that receives the ``wandb/`` run folder (the Hydra run
            directory by default).
        tags: free tags attached to the run.
        name: run name; None lets W&B pick one.
    """

    enabled: bool = True
    mode: str = "offline"
    project: str = "recsys"
    entity: str | None = None
    dir: str | None = None
    tags: list[str] = field(default_factory=list)
    name: str | None = None


class Tracker:
    """A thin wrapper over one W&B run; every call is a no-op when disabled.

    Args:
        config: the tracking configuration.
        run_config: the resolved experiment configuration stored with the run.
    """

    def __init__(self, config: TrackingConfig, run_config: dict[str, Any] | None = None) -> None:
        self.config = config
        self._run: Any = None
        self._phases: set[str] = set()
        mode = os.environ.get("WANDB_MODE", config.mode)
        if not config.enabled or mode == "disabled":
            return
        import wandb  # imported lazily: it is slow to import and optional at run time

        if config.dir:
            Path(config.dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=config.project,
            entity=config.entity,
            dir=config.dir,
            mode=mode,  # type: ignore[arg-type]
            config=run_config or {},
            tags=config.tags,
            name=config.name,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def run_dir(self) -> str | None:
        """The run's local folder (offline runs: the files to sync later)."""
        return None if self._run is None else str(self._run.dir)

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Logs scalar metrics at ``step``."""
        if self._run is not None:
            self._run.log(metrics, step=step)

    def log_phase(self, phase: str, metrics: dict[str, float], epoch: int) -> None:
        """Logs one epoch of a training phase, charted against ``<phase>/epoch``.

        A run holds several phases that each count epochs from 1 (model selection,
        then the refit). W&B drops points whose step is below the run's current step,
        so phases do not pass their epoch as the step: the run's step advances by
        itself and ``<phase>/epoch`` is declared the x-axis of the phase's metrics.

        Args:
            phase: metric prefix, e.g. ``"select"``.
            metrics: the epoch's scalars (unprefixed).
            epoch: the phase's own epoch number.
        """
        if self._run is None:
            return
        if phase not in self._phases:
            self._run.define_metric(f"{phase}/epoch")
            self._run.define_metric(f"{phase}/*", step_metric=f"{phase}/epoch")
            self._phases.add(phase)
        values = {f"{phase}/{key}": value for key, value in metrics.items()}
        self._run.log({**values, f"{phase}/epoch": epoch})

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        """Logs a results table (e.g. the final metrics per model)."""
        if self._run is not None:
            import wandb

            self._run.log({name: wandb.Table(dataframe=frame)})

    def summary(self, values: dict[str, Any]) -> None:
        """Sets the run's summary values (final metrics)."""
        if self._run is not None:
            self._run.summary.update(values)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
