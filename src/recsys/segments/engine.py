"""Segment evaluation on every relevant event and in a periodic sweep.

:class:`SegmentEngine` is a :class:`~recsys.profiles.processor.ProfileHook`:
after each profile update the consumer calls :meth:`SegmentEngine.on_event`,
which evaluates only the segments whose rules the event's type can affect.
Membership has hysteresis: a non-member enters when ``enter`` holds; a member
leaves when ``exit`` holds (``not enter`` when no exit rule is given). Every
change is returned as a :class:`MembershipChange` (user, segment, entered or
left, time, triggering event id or ``"sweep"``), committed with the profile.

Time alone can end a membership (a window count falls, the evening ends), so
the sweep (:meth:`on_sweep`, every 5 minutes by default in the consumer)
re-checks members of time-based segments.

Example:
    >>> from recsys.segments.loader import load_segments_text
    >>> engine = SegmentEngine(load_segments_text(
    ...     "segments: [{name: busy, enter: 'count(click, 1h) >= 2'}]"))
    >>> sorted(engine.segments)
    ['busy']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from recsys.events.schema import Event, EventType
from recsys.events.store import MembershipChange, RealtimeStore
from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig
from recsys.profiles.processor import CachedUser
from recsys.segments.catalog import Env
from recsys.segments.loader import SegmentDefinition, load_segments

_Step = tuple[str, Callable[[Env], bool], Callable[[Env], bool] | None]


def _step(seg: SegmentDefinition) -> _Step:
    return (seg.name, seg.enter.fn, seg.exit.fn if seg.exit is not None else None)


class SegmentEngine:
    """Evaluates segments for users; see the module docstring.

    Args:
        segments: compiled definitions.
        config: profile settings (must match the ones the rules were compiled with).
    """

    def __init__(
        self, segments: Sequence[SegmentDefinition], config: ProfileConfig | None = None
    ) -> None:
        self.config = config or ProfileConfig()
        self.segments = {s.name: s for s in segments}
        self._by_type: dict[str, list[SegmentDefinition]] = {t.value: [] for t in EventType}
        for s in segments:
            for t in s.triggers:
                self._by_type[t].append(s)
        self.time_based = [s for s in segments if s.time_based]
        # Per event type, what each evaluation needs, resolved once:
        # (name, enter, exit or None). Keyed by the enum member itself.
        self._plan: dict[EventType, tuple[_Step, ...]] = {
            t: tuple(_step(s) for s in self._by_type[t.value]) for t in EventType
        }

    @classmethod
    def from_yaml(
        cls,
        paths: str | Path | Sequence[str | Path],
        config: ProfileConfig | None = None,
        attributes: AttributeSchema | None = None,
    ) -> SegmentEngine:
        """Loads definitions from YAML files (see :func:`load_segments`)."""
        config = config or ProfileConfig()
        return cls(load_segments(paths, config, attributes), config)

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
        """Re-evaluates the user's time-based memberships at ``now_us``."""
        steps = [_step(s) for s in self.time_based if s.name in user.profile.segments]
        if not steps:
            return []
        return self._evaluate(user, steps, Env(user, None, now_us, self.config), "sweep")

    def sweep_candidates(self, store: RealtimeStore, now_us: int) -> set[str]:
        """Members of time-based segments (the ones time alone can change)."""
        out: set[str] = set()
        for seg in self.time_based:
            out |= store.segment_members(seg.name)
        return out

    def evaluate(self, user: CachedUser, event: Event | None, now_us: int) -> dict[str, bool]:
        """Whether each segment's ``enter`` rule holds now (no state change);
        for tests and debugging."""
        env = Env(user, event, now_us, self.config)
        return {name: bool(s.enter(env)) for name, s in self.segments.items()}
