"""One simulation run from a typed config: what ``python -m recsys.sim run`` (argparse)
and the Hydra app ``python -m recsys.sim.app`` (``configs/sim/run.yaml``) both call.

Both build the same :class:`SimRunConfig` (``recsys.config.build`` checks keys and
types) and call :func:`run`, which fits the simulated users on MovieLens-100K, asks the
repository's ``recommend`` for every visit (the real server, or in-process), optionally
sends the events through a store, and writes ``steps.jsonl`` and ``summary.json``.

Example::

    config = SimRunConfig(repository="artifacts/triton_repo", mode="in-process", steps=200)
    summary = run(config)        # also written to config.out when set
    summary["ctr"]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from recsys.config import ConfigError, build
from recsys.sim.loop import EngineRecommender, SimConfig, StoreSink, TritonRecommender, simulate
from recsys.sim.world import World, WorldConfig


def _default_data_dir() -> str:
    return os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")


@dataclass(frozen=True)
class SimRunConfig:
    """A simulation run (``configs/sim/run.yaml`` annotates each key).

    Attributes:
        repository: the Triton model repository whose ``recommend`` answers.
        mode: ``triton`` (the real server: started here on ``repository``, or ``url``)
            or ``in-process`` (the same computation in this process, for sweeps).
        url: gRPC ``host:port`` of a running server (triton mode); None: start one.
        store: event store the events go to and the consumer reads
            (``sqlite:///path`` or ``redis://host:port/db[?prefix=P]``); None: no events.
        segments: segment definitions for the consumer (with ``store``).
        data_dir: the folder holding ``ml-100k/`` (the truth is fitted on all of it).
        steps: visits.
        k: list length asked for.
        users: visiting users (the first of a seeded shuffle); None: all.
        seed: seed of the visits and reactions.
        world_seed: seed of the simulated users.
        out: folder for ``steps.jsonl`` and ``summary.json``; None: not written.
        progress: show a progress bar over the visits.

    Example:
        >>> build(SimRunConfig, {"repository": "repo", "steps": 5}, "sim").steps
        5
    """

    repository: str
    mode: Literal["triton", "in-process"] = "triton"
    url: str | None = None
    store: str | None = None
    segments: str | None = None
    data_dir: str = field(default_factory=_default_data_dir)
    steps: int = 1000
    k: int = 10
    users: int | None = None
    seed: int = 0
    world_seed: int = 0
    out: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.repository:
            raise ConfigError("repository: the Triton model repository is required")
        if self.mode not in ("triton", "in-process"):
            raise ConfigError(f"mode: expected triton or in-process, got {self.mode!r}")
        # the loop's own checks (steps, k, users >= 1) now, not after the world is fitted
        try:
            self.sim_config()
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def sim_config(self) -> SimConfig:
        """The loop's settings."""
        return SimConfig(steps=self.steps, k=self.k, users=self.users, seed=self.seed,
                         progress=self.progress)  # fmt: skip


def config_from_mapping(values: Mapping[str, Any], where: str = "sim") -> SimRunConfig:
    """A :class:`SimRunConfig` from a mapping (a Hydra config), keys and types checked.

    Raises:
        ConfigError: an unknown key, a wrong type or a bad value (named by its key).
    """
    return build(SimRunConfig, dict(values), where)


class SimInputError(ValueError):
    """Input the run cannot start from (e.g. MovieLens-100K is not where it should be)."""


def run(config: SimRunConfig) -> dict[str, Any]:
    """Runs the simulation and returns (and writes, with ``out``) its summary.

    Args:
        config: the run.

    Returns:
        The summary: visits, clicks, CTR and the rest of ``SimLog.summary()``, plus the
        mode and the loop's config.

    Raises:
        SimInputError: MovieLens-100K is missing under ``data_dir``.
    """
    from recsys.data.movielens import load_ml100k
    from recsys.features.schema import FeatureSchema
    from recsys.runtime.user_state import SCHEMA_FILE
    from recsys.serving.repository import model_versions

    data_dir = Path(config.data_dir) / "ml-100k"
    if not (data_dir / "u.data").is_file():
        raise SimInputError(f"MovieLens-100K not found under {config.data_dir} (data_dir)")
    repository = Path(config.repository)
    world = World.fit(load_ml100k(data_dir), WorldConfig(seed=config.world_seed))
    cfg = config.sim_config()
    sink = None
    if config.store:
        version = str(model_versions(repository, "recommend")[-1])
        folder = repository / "recommend" / version
        schema = FeatureSchema.from_dict(json.loads((folder / SCHEMA_FILE).read_text()))
        sink = StoreSink(config.store, schema, Path(config.segments) if config.segments else None)
    server: Any = None
    try:
        if config.mode == "in-process":
            from recsys.serving.inprocess import engine_from_repository

            recommender: Any = EngineRecommender(engine_from_repository(repository))
        else:
            url = config.url
            if url is None:
                from recsys.serving.server import LocalTritonServer, TritonServerConfig

                server = LocalTritonServer(TritonServerConfig(
                    model_repository=repository, model_control_mode="explicit",
                    load_models=("*",), startup_timeout_s=300))  # fmt: skip
                server.start()
                url = server.grpc_url
            recommender = TritonRecommender(url)
        log = simulate(world, recommender, cfg, sink=sink)
    finally:
        if sink is not None:
            sink.close()
        if server is not None:
            server.stop()
    summary = {**log.summary(), "mode": config.mode, "config": asdict(cfg)}
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "steps.jsonl").open("w", encoding="utf-8") as fh:
            for step in log.steps:
                fh.write(json.dumps(asdict(step)) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
