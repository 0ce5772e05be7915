"""Segment evaluation on every relevant event and in a periodic sweep.

:class:`SegmentEngine` is a :class:`~recsys.profiles.processor.ProfileHook`:
after each profile update the consumer calls :meth:`SegmentEngine.on_event`,
which evaluates only the segments whose rules the event's type can affect.
Membership has hysteresis: a non-member enters when ``enter`` holds; a member
leaves when ``exit`` holds (``not enter`` when no exit rule is given). Every
change is returned as a :class:`MembershipChange` (user, segment, entered or
left, time, triggering event id or ``"sweep"``), committed with the profile.

Time alone can change a membership: a window count falls, the evening ends or
begins, the days since the last purchase pass a threshold. So the sweep
(:meth:`on_sweep`, every 5 minutes by default in the consumer) re-checks
members of time-based segments (exits), and lets users enter the segments
whose ``enter`` rule is time-based (entries). Candidates for entry are the
users whose latest event is at most :attr:`SegmentEngine.entry_horizon_us`
before the sweep's clock (the store's activity index,
:meth:`~recsys.events.store.RealtimeStore.active_users`) and who consented to
``personalization``; by default the horizon is twice the longest configured
count window (60 days with the default windows), so a rule such as
``days_since_last_purchase > 30`` or ``hours_since_last_event > 48`` finds its
users. A rule waiting longer than the horizon for time alone needs a longer
one (``entry_horizon_s``); 0 turns entries by the sweep off. Each sweep
evaluates every candidate, so the horizon bounds its cost. Changes of the
sweep have the trigger ``"sweep"``.

Definitions can be replaced while the consumer runs (:meth:`replace`, or
:meth:`reload_if_changed` for an engine made by :meth:`from_yaml`, which the
consumer calls when its files change): a new segment is evaluated from the
next event and by the next sweep; a changed one keeps its members, who leave
or stay by the new rules; the members of a removed segment leave it at the
next sweep with the trigger ``"reload"`` (the consumer sweeps right after a
reload).

Example:
    >>> from recsys.segments.loader import load_segments_text
    >>> engine = SegmentEngine(load_segments_text(
    ...     "segments: [{name: busy, enter: 'count(click, 1h) >= 2'}]"))
    >>> sorted(engine.segments), engine.entry_horizon_us // 86_400_000_000
    (['busy'], 60)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.events.consent import Purpose
from recsys.events.schema import Event, EventType
from recsys.events.store import MembershipChange, RealtimeStore
from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig
from recsys.profiles.processor import CachedUser
from recsys.segments.catalog import Env
from recsys.segments.loader import SegmentDefinition
from recsys.segments.reload import ReloadStats, SegmentSource

_Step = tuple[str, Callable[[Env], bool], Callable[[Env], bool] | None]
log = logging.getLogger(__name__)

#: Trigger of the exits that end the memberships of a removed segment.
RELOAD_TRIGGER = "reload"
_PERSONAL = Purpose.PERSONALIZATION


def _step(seg: SegmentDefinition) -> _Step:
    return (seg.name, seg.enter.fn, seg.exit.fn if seg.exit is not None else None)


def _rules(seg: SegmentDefinition) -> tuple[str, str | None, frozenset[str]]:
    return (seg.enter.text, seg.exit.text if seg.exit is not None else None, seg.triggers)


@dataclass(frozen=True)
class Replaced:
    """What :meth:`SegmentEngine.replace` changed (names, sorted).

    Attributes:
        added: segments new in the definitions.
        removed: segments no longer defined (their members leave at the next sweep).
        changed: segments defined before and now, with other rules or triggers.
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]


class SegmentEngine:
    """Evaluates segments for users; see the module docstring.

    Args:
        segments: compiled definitions.
        config: profile settings (must match the ones the rules were compiled with).
        entry_horizon_s: the sweep lets users whose latest event is at most
            this many seconds old enter time-based segments; None: twice the
            longest configured count window; 0: the sweep never lets users enter.
        source: where the definitions came from (:meth:`from_yaml` sets it),
            for :meth:`reload_if_changed`.
    """

    def __init__(
        self,
        segments: Sequence[SegmentDefinition],
        config: ProfileConfig | None = None,
        entry_horizon_s: float | None = None,
        source: SegmentSource | None = None,
    ) -> None:
        self.config = config or ProfileConfig()
        if entry_horizon_s is None:
            longest = max((w.seconds for w in self.config.windows), default=0)
            entry_horizon_s = 2.0 * longest
        if entry_horizon_s < 0:
            raise ValueError(f"entry_horizon_s must be >= 0, got {entry_horizon_s}")
        #: How old a user's latest event may be for the sweep to let them enter.
        self.entry_horizon_us = int(entry_horizon_s * 1_000_000)
        self.source = source
        #: Removed segments whose members may not all have left yet.
        self.retired: set[str] = set()
        self.segments: dict[str, SegmentDefinition] = {}
        self._by_type: dict[str, list[SegmentDefinition]] = {}
        self.time_based: list[SegmentDefinition] = []
        self.entry_timed: list[SegmentDefinition] = []
        self._plan: dict[EventType, tuple[_Step, ...]] = {}
        self._install(segments)

    def _install(self, segments: Sequence[SegmentDefinition]) -> None:
        self.segments = {s.name: s for s in segments}
        by_type: dict[str, list[SegmentDefinition]] = {t.value: [] for t in EventType}
        for s in segments:
            for t in s.triggers:
                by_type[t].append(s)
        self._by_type = by_type
        self.time_based = [s for s in segments if s.time_based]
        # Segments time alone can let a user enter (the sweep's entries).
        self.entry_timed = [s for s in segments if s.enter.time_based]
        # Per event type, what each evaluation needs, resolved once:
        # (name, enter, exit or None). Keyed by the enum member itself.
        self._plan = {t: tuple(_step(s) for s in by_type[t.value]) for t in EventType}

    @classmethod
    def from_yaml(
        cls,
        paths: str | Path | Sequence[str | Path],
        config: ProfileConfig | None = None,
        attributes: AttributeSchema | None = None,
        entry_horizon_s: float | None = None,
    ) -> SegmentEngine:
        """Loads definitions from YAML files (see :func:`load_segments`); the
        engine remembers them for :meth:`reload_if_changed`."""
        config = config or ProfileConfig()
        source = SegmentSource(paths, config, attributes)
        return cls(source.load(), config, entry_horizon_s, source)

    def replace(self, segments: Sequence[SegmentDefinition]) -> Replaced:
        """Evaluates ``segments`` from now on instead of the current definitions.

        Call it between batches (the consumer does). The members of removed
        segments leave at the next sweep (trigger ``"reload"``).
        """
        old = self.segments
        new = {s.name: s for s in segments}
        removed = sorted(set(old) - set(new))
        changed = sorted(n for n in set(old) & set(new) if _rules(old[n]) != _rules(new[n]))
        self._install(segments)
        self.retired = (self.retired | set(removed)) - set(new)
        return Replaced(tuple(sorted(set(new) - set(old))), tuple(removed), tuple(changed))

    def reload_if_changed(self) -> bool:
        """Recompiles the YAML files when they changed (see
        :class:`~recsys.segments.reload.SegmentSource`); True when new
        definitions are in use. A file that fails to load keeps the current
        definitions (the error is logged and counted in :attr:`reload_stats`)."""
        if self.source is None:
            return False
        segments = self.source.poll()
        if segments is None:
            return False
        done = self.replace(segments)
        log.info(
            "segment definitions reloaded from %s: added %s, removed %s, changed %s",
            ", ".join(str(p) for p in self.source.paths),
            list(done.added),
            list(done.removed),
            list(done.changed),
        )
        return True

    @property
    def reload_stats(self) -> ReloadStats | None:
        """The source's counters (None for an engine not made from files)."""
        return self.source.stats if self.source is not None else None

    def _evaluate(
        self, user: CachedUser, steps: Sequence[_Step], env: Env, trigger: str
    ) -> list[MembershipChange]:
        changes: list[MembershipChange] = []
        members = user.profile.segments
        now = env.now_us
        for name, enter, leave in steps:
            if name in members:
                if leave(env) if leave is not None else not enter(env):
                    del members[name]
                    changes.append(MembershipChange(user.user_id, name, False, now, trigger))
            elif enter(env):
                members[name] = now
                changes.append(MembershipChange(user.user_id, name, True, now, trigger))
        return changes

    def on_event(self, user: CachedUser, event: Event) -> list[MembershipChange]:
        """Evaluates the segments ``event``'s type can affect, at the later of
        the event time and the user's latest event (late events do not move
        windows back)."""
        steps = self._plan[event.type]
        if not steps:
            return []
        ts, last = event.ts_us, user.profile.last_us
        env = Env(user, event, ts if ts > last else last, self.config)
        return self._evaluate(user, steps, env, event.event_id)

    def on_sweep(self, user: CachedUser, now_us: int) -> list[MembershipChange]:
        """Re-evaluates the user's time-based memberships at ``now_us``, lets
        the user enter time-based segments when their latest event is within
        the entry horizon (and they consented to ``personalization``), and
        ends memberships of removed segments."""
        members = user.profile.segments
        changes: list[MembershipChange] = []
        if self.retired and members:
            for name in sorted(n for n in members if n in self.retired):
                del members[name]
                changes.append(MembershipChange(user.user_id, name, False, now_us, RELOAD_TRIGGER))
        steps = [_step(s) for s in self.time_based if s.name in members]
        if (
            self.entry_horizon_us > 0
            and user.profile.n_events > 0
            and now_us - user.profile.last_us <= self.entry_horizon_us
            and _PERSONAL in user.granted
        ):
            steps += [_step(s) for s in self.entry_timed if s.name not in members]
        if steps:
            env = Env(user, None, now_us, self.config)
            changes += self._evaluate(user, steps, env, "sweep")
        return changes

    def sweep_candidates(self, store: RealtimeStore, now_us: int) -> set[str]:
        """Members of time-based segments (time alone can end them), users
        active within the entry horizon when a segment's ``enter`` rule is
        time-based (time alone can let them in), and members of removed
        segments."""
        out: set[str] = set()
        for seg in self.time_based:
            out |= store.segment_members(seg.name)
        if self.entry_timed and self.entry_horizon_us > 0:
            out.update(store.active_users(now_us - self.entry_horizon_us))
        for name in sorted(self.retired):
            members = store.segment_members(name)
            if members:
                out |= members
            else:
                self.retired.discard(name)  # everyone has left
        return out

    def evaluate(self, user: CachedUser, event: Event | None, now_us: int) -> dict[str, bool]:
        """Whether each segment's ``enter`` rule holds now (no state change);
        for tests and debugging."""
        env = Env(user, event, now_us, self.config)
        return {name: bool(s.enter(env)) for name, s in self.segments.items()}
