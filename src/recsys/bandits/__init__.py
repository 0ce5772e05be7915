"""Contextual bandits: LinUCB, linear Thompson sampling and baselines, with persistence.

:mod:`recsys.bandits.linear` holds the policies, :mod:`recsys.bandits.context` the
context vectors (request context and segments), :mod:`recsys.bandits.state` the saved
state, :mod:`recsys.bandits.online` the update from the attributed click stream,
:mod:`recsys.bandits.vw` Vowpal Wabbit's contextual-bandit reductions behind the same
interface (import it from there: the served ``recommend`` imports this package, and the
serving image has no ``vowpalwabbit``).
"""

from recsys.bandits.context import ContextEncoder
from recsys.bandits.linear import (
    Choice,
    EpsilonGreedy,
    LinearBandit,
    LinearThompson,
    LinUCB,
    Uniform,
    make_bandit,
)
from recsys.bandits.state import load_state, save_state

__all__ = [
    "Choice",
    "ContextEncoder",
    "EpsilonGreedy",
    "LinUCB",
    "LinearBandit",
    "LinearThompson",
    "Uniform",
    "load_state",
    "make_bandit",
    "save_state",
]
