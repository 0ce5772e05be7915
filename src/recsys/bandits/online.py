"""Updating a bandit online from the exposure log and the attributed outcomes.

An exposure that a bandit chose carries, in its payload, the bandit's id (``bandit``),
the arm (``bandit_arm``), the context vector it chose with (``bandit_context``) and the
arm's propensity (``bandit_propensity``). :class:`BanditUpdater` reads the event stream
in order: it remembers each such exposure, joins clicks (and, if asked, other outcomes)
to it through the :class:`~recsys.events.attribution.Attributor` (by request id, else the
attribution window), and once the window has passed (the stream's clock: event time)
updates the bandit with reward 1 when the list got a rewarded outcome, else 0, and the
logged propensity (a learner that weights by it, such as Vowpal Wabbit's, learns with
the probability the arm was actually shown with, not its own current one). Every
exposure is used exactly once; events of other bandits are ignored; :meth:`flush`
closes the windows still open (at shutdown, before saving the state).

Example:
    >>> updater = BanditUpdater(bandit, "slot@1", window_s=1800)  # doctest: +SKIP
    >>> for event in events:  # stream order  # doctest: +SKIP
    ...     updater.feed(event)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from recsys.bandits.linear import LinearBandit
from recsys.bandits.vw import VowpalWabbitBandit
from recsys.events.attribution import CLICKS, AttributionConfig, Attributor
from recsys.events.schema import Event, EventType


@dataclass
class _Pending:
    arm: int
    x: np.ndarray
    deadline_us: int
    propensity: float | None
    reward: float = 0.0


@dataclass
class UpdaterStats:
    """What the updater did: exposures seen, rewards joined, updates, events skipped."""

    exposures: int = 0
    rewarded: int = 0
    updates: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class BanditUpdater:
    """See the module docstring.

    Args:
        bandit: the bandit to update.
        bandit_id: the bandit's name (``<name>`` or ``<name>@<version>``): exposures
            whose ``bandit`` has the same name, at any version, teach it.
        window_s: how long after an exposure its outcomes count.
        reward_types: outcome types that give reward 1 (default: clicks).
    """

    def __init__(
        self,
        bandit: LinearBandit | VowpalWabbitBandit,
        bandit_id: str,
        window_s: float = 1800.0,
        reward_types: Iterable[EventType] = CLICKS,
    ) -> None:
        self.bandit = bandit
        self.bandit_id = bandit_id
        self.window_us = int(window_s * 1e6)
        self.reward_types = {t.value for t in reward_types}
        self.attributor = Attributor(AttributionConfig(window_s=window_s), keep_exposures=False)
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.stats = UpdaterStats()

    def feed(self, event: Event) -> int:
        """Processes one event; returns the number of bandit updates it caused."""
        # windows that closed before this event first: a click past its exposure's window
        # (joined by request id however late) is no reward
        done = self._expire(event.ts_us)
        if event.type is EventType.RECOMMENDATION_IMPRESSION:
            self._remember(event)
        joined = self.attributor.feed(event)
        if joined is not None and joined.type in self.reward_types:
            pending = self.pending.get(joined.request_id)
            if pending is not None and pending.reward == 0.0:
                pending.reward = 1.0
                self.stats.rewarded += 1
        return done

    def _remember(self, event: Event) -> None:
        payload = event.payload
        # "<name>@<version>": every version of this bandit's choices teaches it
        if str(payload.get("bandit", "")).split("@", 1)[0] != self.bandit_id.split("@", 1)[0]:
            return
        try:
            arm = int(payload["bandit_arm"])
            x = np.asarray(payload["bandit_context"], dtype=np.float64)
            request_id = str(payload["request_id"])
        except (KeyError, TypeError, ValueError):
            self.stats.skip("exposure without bandit_arm, bandit_context or request_id")
            return
        if x.shape != (self.bandit.dim,) or not 0 <= arm < self.bandit.n_arms:
            self.stats.skip("arm or context does not fit the bandit")
            return
        # validated events hold a number in [0, 1] here, or nothing (older logs)
        logged = payload.get("bandit_propensity")
        propensity = None if logged is None else float(logged)
        if propensity == 0.0:
            self.stats.skip("bandit_propensity 0: the logged policy never shows this arm")
            return
        self.pending[request_id] = _Pending(arm, x, event.ts_us + self.window_us, propensity)
        self.stats.exposures += 1

    def _expire(self, now_us: int) -> int:
        done = 0
        # exposures arrive in time order, so the oldest window closes first
        while self.pending:
            request_id, first = next(iter(self.pending.items()))
            if first.deadline_us > now_us:
                break
            del self.pending[request_id]
            self.bandit.update(first.arm, first.x, first.reward, propensity=first.propensity)
            done += 1
        self.stats.updates += done
        return done

    def flush(self) -> int:
        """Closes every open window (rewards as joined so far); returns the updates."""
        return self._expire(np.iinfo(np.int64).max)
