"""The simulation loop: visits ask a recommender, users react, events flow back.

Each step is one visit: a user (uniform over the simulated users), a device and a local
hour from the user's habits, a request context with a request id, a list from the
recommender, the user's reaction (:meth:`~recsys.sim.world.World.react`), and the
resulting events: a ``click`` per clicked item (carrying the request id and position)
and a ``dwell`` after it. Everything a step draws comes from a generator seeded by
``(seed, step)``, so the same seed and the same lists give the same outcomes in any mode.

Two ways to ask for lists, one interface (:class:`Recommender`):

* :class:`TritonRecommender`: the real server over gRPC (``RecommendClient``); the
  server writes the exposures itself when its repository has an exposure log;
* :class:`EngineRecommender`: the same ``recommend`` computation in this process
  (:mod:`recsys.serving.inprocess`), for sweeps too large for the servers.

Events go to an :class:`EventSink`: :class:`StoreSink` publishes them with the real
producer into a store's stream and runs the real profile consumer (with segment
definitions) every ``consume_every`` steps, so profiles, segments, exposures and
attribution update as they would in production.

Example:
    >>> recommender = TritonRecommender("127.0.0.1:8001")  # doctest: +SKIP
    >>> log = simulate(world, recommender, SimConfig(steps=100))  # doctest: +SKIP
    >>> log.summary()["ctr"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from recsys.runtime.context import RequestContext
from recsys.sim.world import DEVICES, World

DAY_MS = 86_400_000


@dataclass(frozen=True)
class SimConfig:
    """One simulation run.

    Attributes:
        steps: visits.
        k: list length asked for.
        start_ms: the first simulated day's midnight, UTC (epoch ms).
        visits_per_day: visits per simulated day (the clock advances a day after them).
        users: how many users visit (the first of the truth's users in a seeded
            shuffle); None: all.
        surface: the surface the lists are for.
        seed: random seed of the visits and reactions.
        consume_every: run the event consumer every this many steps (StoreSink).
        progress: show a progress bar.
        first_step: the index of the first visit. A run that continues an earlier one on
            the same :class:`World` starts where that one stopped (``first_step`` = its
            steps): the clock, the users' drift and the session days go on instead of
            starting again at day 0 (the world's fatigue memory carries over anyway).
    """

    steps: int = 1_000
    k: int = 10
    start_ms: int = 1_764_979_200_000  # 2025-12-06 00:00 UTC
    visits_per_day: int = 500
    users: int | None = None
    surface: str = "home"
    seed: int = 0
    consume_every: int = 50
    progress: bool = False
    first_step: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "k", "visits_per_day", "consume_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.first_step < 0:
            raise ValueError(f"first_step must be >= 0, got {self.first_step}")
        if self.users is not None and self.users < 1:
            raise ValueError(f"users must be >= 1 or None, got {self.users}")


@dataclass(frozen=True)
class Shown:
    """The list a recommender returned for one visit.

    Attributes:
        items: raw item ids, shown order.
        request_id: the request's id.
        policy: the slate policy's id.
        propensities: per item, its logged propensity (None: 1.0 each).
        rules: the targeting rules that applied.
        experiments: the request's A/B assignments (``{"experiment", "arm"}`` each).
    """

    items: np.ndarray
    request_id: str
    policy: str = "deterministic"
    propensities: np.ndarray | None = None
    rules: tuple[str, ...] = ()
    experiments: tuple[dict[str, str], ...] = ()


class Recommender(Protocol):
    """Anything that answers one visit with a list."""

    def recommend(self, user: int, k: int, context: RequestContext) -> Shown: ...


class EventSink(Protocol):
    """Where a visit's events go."""

    def publish(self, events: Sequence[dict[str, Any]]) -> None: ...

    def flush(self) -> None: ...


class TritonRecommender:
    """The real ``recommend`` model over gRPC.

    Args:
        url: the server's gRPC ``host:port``.
    """

    def __init__(self, url: str) -> None:
        from recsys.serving.recommend_client import RecommendClient

        self.client = RecommendClient(url)

    def recommend(self, user: int, k: int, context: RequestContext) -> Shown:
        rec = self.client.recommend(user, k, context=context)
        return Shown(
            rec.item_ids,
            str(rec.request_id),
            rules=tuple(rec.rules),
            experiments=tuple(dict(e) for e in rec.explanation.get("experiments", [])),
        )

    def close(self) -> None:
        self.client.close()


class EngineRecommender:
    """The ``recommend`` computation of a repository, in this process.

    Args:
        engine: a :class:`~recsys.runtime.engine.RecommendEngine` (see
            :func:`recsys.serving.inprocess.engine_from_repository`).
        exposures: where to write each list's exposure, as the server does (None: not
            written).
        bundle: the bundle id the exposures name.
    """

    def __init__(self, engine: Any, exposures: EventSink | None = None, bundle: str = "") -> None:
        self.engine = engine
        self.exposures = exposures
        self.bundle = bundle

    def recommend(self, user: int, k: int, context: RequestContext) -> Shown:
        from recsys.runtime.exposure import exposure_event

        ctx = context.with_request_id()
        [answer] = self.engine.recommend(np.array([user]), np.array([k]), [ctx])
        if answer.error is not None:
            raise RuntimeError(answer.error)
        if self.exposures is not None:
            props = answer.propensities
            self.exposures.publish(
                [
                    exposure_event(
                        user_id=user,
                        items=answer.item_ids.tolist(),
                        scores=answer.scores.tolist(),
                        context=ctx,
                        k=k,
                        bundle=self.bundle,
                        model=answer.exposure_model("recommend:in-process"),
                        policy=answer.policy,
                        propensities=None if props is None else props.tolist(),
                        slate_propensity=answer.slate_propensity,
                        rules=answer.rules,
                        segments=answer.segments,
                        personalized=answer.personalized,
                        fallback=answer.fallback,
                        experiments=answer.experiments,
                        extra=answer.exposure_extra(),
                    )
                ]
            )
        return Shown(
            answer.item_ids,
            str(ctx.request_id),
            answer.policy,
            answer.propensities,
            answer.rules,
            answer.experiments,
        )


class StoreSink:
    """Publishes events into a store's stream and runs the real consumer over them.

    Args:
        store_url: ``sqlite:///path`` or ``redis://host:port/db[?prefix=P]``.
        schema: the feature schema the profiles follow (``FeatureSchema``).
        segments: segment definition files the consumer evaluates (None: none).
    """

    def __init__(self, store_url: str, schema: Any, segments: str | Path | None = None) -> None:
        from recsys.events.consent import ConsentPolicy
        from recsys.events.producer import EventProducer
        from recsys.profiles.config import ProfileConfig
        from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
        from recsys.profiles.processor import EventProcessor, ProcessorConfig
        from recsys.runtime.user_state import open_store_url
        from recsys.segments import SegmentEngine

        self.store = open_store_url(store_url)
        self.producer = EventProducer(self.store)
        profile = ProfileConfig.from_schema(schema)
        hooks = [SegmentEngine.from_yaml(segments, profile)] if segments is not None else []
        processor = EventProcessor(
            self.store,
            # simulated users consent to everything (no personal data exists)
            ProcessorConfig(profile=profile, consent=ConsentPolicy.grant_all()),
            hooks=hooks,
        )
        self.consumer = StreamConsumer(
            self.store,
            processor,
            ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None),
        )
        self.published = 0
        self.applied = 0

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        self.published += self.producer.publish(events)

    def flush(self) -> None:
        """Runs the consumer until the stream is drained."""
        self.applied += int(self.consumer.run(until_idle=True).applied)

    def close(self) -> None:
        self.store.close()


@dataclass
class Step:
    """One visit of the log."""

    step: int
    user: int
    device: str
    hour: int
    request_id: str
    items: list[int]
    policy: str
    propensities: list[float] | None
    rules: list[str]
    true_ctr: list[float]
    clicked: list[bool]
    dwell_s: list[float]
    request_ms: int = 0
    experiments: list[dict[str, str]] = field(default_factory=list)


@dataclass
class SimLog:
    """Everything a run did, with the ground truth of every shown item."""

    config: SimConfig
    steps: list[Step] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """CTR, clicks and true expected clicks per visit, dwell."""
        shown = sum(len(s.items) for s in self.steps)
        clicks = sum(sum(s.clicked) for s in self.steps)
        true = sum(sum(s.true_ctr) for s in self.steps)
        dwell = sum(sum(s.dwell_s) for s in self.steps)
        visits = max(len(self.steps), 1)
        return {
            "visits": float(len(self.steps)),
            "impressions": float(shown),
            "clicks": float(clicks),
            "ctr": clicks / max(shown, 1),
            "clicks_per_visit": clicks / visits,
            "true_clicks_per_visit": true / visits,
            "dwell_s_per_visit": dwell / visits,
        }

    def exposure_table(self, experiment: str) -> Any:
        """The A/B analysis input of one experiment (``recsys.experiments.data``): one
        row per visit in the experiment, with its arm, time and outcomes; plus the true
        expected clicks (``true_clicks``) the analysis cannot see but a report may."""
        import pandas as pd

        rows = []
        for s in self.steps:
            arm = next((e["arm"] for e in s.experiments if e["experiment"] == experiment), None)
            if arm is None:
                continue
            rows.append({
                "unit": str(s.user), "arm": arm, "experiment": experiment,
                "timestamp": s.request_ms / 1000.0, "impressions": len(s.items),
                "clicks": int(sum(s.clicked)), "conversions": 0,
                "dwell": float(sum(s.dwell_s)), "true_clicks": float(sum(s.true_ctr)),
            })  # fmt: skip
        return pd.DataFrame(rows)

    def outcomes(self) -> list[tuple[int, tuple[int, ...], tuple[bool, ...]]]:
        """``(user, items, clicks)`` per step: what two runs must share to be equal."""
        return [(s.user, tuple(s.items), tuple(s.clicked)) for s in self.steps]


def visit_context(
    world: World, user: int, step: int, config: SimConfig, rng: np.random.Generator
) -> tuple[RequestContext, int, int, float]:
    """The request context of a visit, its device, local hour and simulated day."""
    row = world.user_row(user)
    device = world.visit_device(row, rng)
    hour = world.visit_hour(device, rng)
    day = step // config.visits_per_day
    offset = world.config.utc_offset_minutes
    local_ms = day * DAY_MS + hour * 3_600_000 + int(rng.integers(0, 3_600_000))
    request_ms = config.start_ms + local_ms - offset * 60_000
    context = RequestContext(
        request_time_ms=request_ms,
        utc_offset_minutes=offset,
        device_type=DEVICES[device],
        surface=config.surface,
        session_id=f"sim-{user}-{day}",
        request_id=f"sim{config.seed}-{step}",
    )
    return context, device, hour, day + hour / 24


def simulate(
    world: World,
    recommender: Recommender,
    config: SimConfig | None = None,
    sink: EventSink | None = None,
    users: Sequence[int] | None = None,
) -> SimLog:
    """Runs ``config.steps`` visits (see the module docstring).

    Args:
        world: the simulated users (its fatigue memory carries over between calls).
        recommender: answers each visit.
        config: the run.
        sink: where the events go (None: nowhere; the log still has them).
        users: raw user ids that visit (default: the truth's users, see
            :attr:`SimConfig.users`).

    Returns:
        The :class:`SimLog`.
    """
    cfg = config or SimConfig()
    pool = np.asarray(users if users is not None else world.truth.user_ids, dtype=np.int64)
    if users is None and cfg.users is not None:
        pool = np.random.default_rng(cfg.seed).permutation(pool)[: cfg.users]
    log = SimLog(cfg)
    steps = range(cfg.first_step, cfg.first_step + cfg.steps)
    for step in tqdm(steps, desc="simulate", disable=not cfg.progress):
        rng = np.random.default_rng([cfg.seed, step])
        user = int(pool[rng.integers(0, len(pool))])
        context, device, hour, day = visit_context(world, user, step, cfg, rng)
        shown = recommender.recommend(user, cfg.k, context)
        items = np.asarray(shown.items, dtype=np.int64)
        outcome = world.react(world.user_row(user), world.item_rows(items), device, day, rng)
        log.steps.append(
            Step(
                step=step,
                user=user,
                device=DEVICES[device],
                hour=hour,
                request_id=shown.request_id,
                items=items.tolist(),
                policy=shown.policy,
                propensities=None if shown.propensities is None else shown.propensities.tolist(),
                rules=list(shown.rules),
                true_ctr=outcome.true_ctr.tolist(),
                clicked=outcome.clicked.tolist(),
                dwell_s=outcome.dwell_s.tolist(),
                request_ms=int(context.request_time_ms or 0),
                experiments=[dict(e) for e in shown.experiments],
            )
        )
        if sink is not None:
            events = outcome_events(user, items, outcome.clicked, outcome.dwell_s, context)
            if events:
                sink.publish(events)
            if (step + 1) % cfg.consume_every == 0:
                sink.flush()
    if sink is not None:
        sink.flush()
    return log


def outcome_events(
    user: int,
    items: np.ndarray,
    clicked: np.ndarray,
    dwell_s: np.ndarray,
    context: RequestContext,
) -> list[dict[str, Any]]:
    """The click and dwell events of one visit (the event schema's raw form)."""
    assert context.request_time_ms is not None and context.request_id is not None
    base_s = context.request_time_ms / 1000.0
    device = {"device_type": context.device_type, "utc_offset_minutes": context.utc_offset_minutes}
    events: list[dict[str, Any]] = []
    for position in np.flatnonzero(clicked).tolist():
        at = base_s + 2.0 + position
        common = {
            "user_id": str(user),
            "session_id": context.session_id,
            "item_id": int(items[position]),
            "context": device,
        }
        events.append({
            **common,
            "event_id": f"{context.request_id}-c{position}",
            "type": "click",
            "timestamp": at,
            "payload": {"request_id": context.request_id, "position": position},
        })  # fmt: skip
        events.append({
            **common,
            "event_id": f"{context.request_id}-d{position}",
            "type": "dwell",
            "timestamp": at + float(dwell_s[position]),
            "payload": {"request_id": context.request_id,
                        "dwell_ms": int(dwell_s[position] * 1000)},
        })  # fmt: skip
    return events
