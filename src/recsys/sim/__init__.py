"""A user simulator that closes the loop: lists in, clicks and dwell out, truth recorded.

:mod:`recsys.sim.world` holds the simulated users (true preferences fitted on real data,
position bias, fatigue, device and time-of-day habits, drift); :mod:`recsys.sim.loop`
runs visits against the real server or the same computation in-process and sends the
events through the real pipeline.
"""

from recsys.sim.loop import (
    EngineRecommender,
    SimConfig,
    SimLog,
    StoreSink,
    TritonRecommender,
    simulate,
)
from recsys.sim.world import PreferenceModel, World, WorldConfig

__all__ = [
    "EngineRecommender",
    "PreferenceModel",
    "SimConfig",
    "SimLog",
    "StoreSink",
    "TritonRecommender",
    "World",
    "WorldConfig",
    "simulate",
]
