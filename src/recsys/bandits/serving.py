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
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recsys.bandits.context import ContextEncoder
from recsys.bandits.linear import LinearBandit
from recsys.runtime.context import RequestContext
from recsys.runtime.policies import SlatePolicy, parse_policy, request_rng


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


class PolicyBandit:
    """See the module docstring.

    Args:
        path: the state file.
        name: the bandit's name in the exposure log.
        depth: the stochastic policies' candidate depth.
        check_s: seconds between checks of the state file.
        warn: called with a message when a new state file cannot be read (the previous
            state keeps serving).
    """

    def __init__(
        self,
        path: str | Path,
        name: str = "policy",
        depth: int = 50,
        check_s: float = 1.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.depth = depth
        self.check_s = check_s
        self.warn = warn or (lambda message: None)
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._stamp: tuple[int, int] | None = None
        self.reloads = 0
        self.failures = 0
        self._load(first=True)

    def _load(self, first: bool = False) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            bandit = LinearBandit.from_dict(body["bandit"])
            arms = [str(a) for a in body["arms"]]
            policies = [parse_policy(a, self.depth) for a in arms]
            encoder = encoder_for(body["context"])
            if len(arms) != bandit.n_arms or encoder.dim != bandit.dim:
                raise ValueError("arms or context do not match the bandit")
        except Exception as error:
            if first:
                raise ValueError(f"bandit state {self.path}: {error}") from error
            self.failures += 1
            self.warn(f"bandit state {self.path} not reloaded, keeping the previous: {error}")
            self._stamp = stamp
            return
        self.bandit, self.arms, self.policies, self.encoder = bandit, arms, policies, encoder
        self._stamp = stamp
        self.reloads += 1

    def _current(self) -> None:
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._next_check = now + self.check_s
                    try:
                        self._load()
                    except OSError as error:
                        self.warn(f"bandit state {self.path}: {error}")

    def choose(
        self, context: RequestContext, segments: Sequence[str] = ()
    ) -> tuple[SlatePolicy, dict[str, Any]]:
        """The request's policy and the exposure payload fields of the choice."""
        self._current()
        bandit, encoder = self.bandit, self.encoder
        x = encoder.encode(context, segments)
        rid = context.request_id or "unknown"
        choice = bandit.select(x, request_rng(f"bandit:{rid}"))
        payload = {
            "bandit": f"{self.name}@{bandit.version}",
            "bandit_arm": int(choice.arm),
            "bandit_context": [float(v) for v in x],
            "bandit_propensity": float(choice.propensity),
        }
        return self.policies[choice.arm], payload

    @property
    def bandit_id_prefix(self) -> str:
        return f"{self.name}@"
