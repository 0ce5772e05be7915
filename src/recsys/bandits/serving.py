"""A bandit that picks each request's slate policy inside the served ``recommend``.

The arms are slate policy ids (``deterministic``, ``epsilon_greedy:0.1``,
``plackett_luce:0.3``, ...: :mod:`recsys.runtime.policies`). :class:`PolicyBandit` reads
a state file written by :func:`recsys.bandits.state.save_state` (its arm names are the
policy ids, its context names those of a :class:`~recsys.bandits.context.ContextEncoder`)
and, per request, encodes the request context and the user's segments, lets the bandit
choose with the request id's generator, and returns the chosen policy with the payload
fields the exposure log records (``bandit``: ``<name>@<version>``, ``bandit_arm``,
``bandit_context``, ``bandit_propensity``), which :class:`~recsys.bandits.online.
BanditUpdater` reads back to learn. A new state file (the updater saves one) is picked up
without a restart: the file is checked every ``check_s`` seconds.

Example:
    >>> chooser = PolicyBandit("bandit.json", name="ranking")  # doctest: +SKIP
    >>> policy, payload = chooser.choose(context, segments=("engaged_clickers",))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.bandits.context import ContextEncoder
from recsys.bandits.linear import LinearBandit
from recsys.runtime.context import RequestContext
from recsys.runtime.policies import SlatePolicy, parse_policy, request_rng
from recsys.runtime.reloading import ReloadingFile


def encoder_for(names: Sequence[str]) -> ContextEncoder:
    """The encoder whose :meth:`~ContextEncoder.names` are ``names``.

    Raises:
        ValueError: the names are not an encoder's.
    """
    segments = tuple(n.split("=", 1)[1] for n in names if n.startswith("segment="))
    devices = tuple(n.split("=", 1)[1] for n in names if n.startswith("device="))
    encoder = ContextEncoder(segments=segments, devices=devices)
    if encoder.names() != list(names):
        raise ValueError("the state's context names are not a ContextEncoder's")
    return encoder


@dataclass(frozen=True)
class _Served:
    """What one state file gives: the bandit, its arms' policies, its context encoder."""

    bandit: LinearBandit
    policies: list[SlatePolicy]
    encoder: ContextEncoder


class PolicyBandit:
    """See the module docstring.

    Args:
        path: the state file.
        name: the bandit's name in the exposure log.
        depth: the stochastic policies' candidate depth.
        check_s: seconds between checks of the state file.
        warn: called with a message when a new state file cannot be read (the previous
            state keeps serving).

    Raises:
        ValueError: the state file cannot be read now.
    """

    def __init__(
        self,
        path: str | Path,
        name: str = "policy",
        depth: int = 50,
        check_s: float = 1.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.depth = depth
        self.state = ReloadingFile(str(path), self._read, "bandit state", check_s, warn)

    def _read(self, path: str) -> _Served:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
        bandit = LinearBandit.from_dict(body["bandit"])
        policies = [parse_policy(str(a), self.depth) for a in body["arms"]]
        encoder = encoder_for(body["context"])
        if len(policies) != bandit.n_arms or encoder.dim != bandit.dim:
            raise ValueError("arms or context do not match the bandit")
        return _Served(bandit, policies, encoder)

    def choose(
        self, context: RequestContext, segments: Sequence[str] = ()
    ) -> tuple[SlatePolicy, dict[str, Any]]:
        """The request's policy and the exposure payload fields of the choice."""
        served = self.state.current()
        x = served.encoder.encode(context, segments)
        rid = context.request_id or "unknown"
        choice = served.bandit.select(x, request_rng(f"bandit:{rid}"))
        payload = {
            "bandit": f"{self.name}@{served.bandit.version}",
            "bandit_arm": int(choice.arm),
            "bandit_context": [float(v) for v in x],
            "bandit_propensity": float(choice.propensity),
        }
        return served.policies[choice.arm], payload
