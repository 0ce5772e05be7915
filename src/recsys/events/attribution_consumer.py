"""Attribution over the store: an online consumer of the stream, and the batch job.

The exposures (:mod:`recsys.runtime.exposure`) and the outcomes (clicks, purchases,
dwell ...) arrive on the same event stream. :class:`AttributionConsumer` reads it in
its own consumer group (``attribution`` by default: the profile consumer's group,
``profiles``, is refused, since sharing it would take entries from the profiles), feeds
every event to an :class:`~recsys.events.attribution.Attributor`, and keeps running
counts: the engagement rows per model, bundle, position, rule, policy, surface and
segment (:class:`~recsys.events.attribution.EngagementCounter`) and the per-user tallies
a segment lift needs (:class:`~recsys.events.lift.SegmentTally`). It keeps no list of
exposures, so its memory grows with the users, not with the traffic.

:func:`attribution_batch` is the offline job: every event the store's stream holds, read
without a consumer group (nothing in the store changes), through
:func:`~recsys.events.attribution.attribute`. Over the same events the two give the same
joins and the same counts (``tests/events/test_attribution_consumer.py`` checks it on
the SQLite and the Redis store).

Order: the batch job orders the events by time; the stream holds them in arrival order,
which differs where an exposure is written after an outcome of a later time (client
clocks, buffered writers). The consumer therefore holds events for ``reorder_s`` of
event time and feeds them in time order; an event older than one already fed is fed at
once and counted (``late``). With no event later than ``reorder_s``, online and batch
agree exactly. When nothing arrived for ``reorder_s`` seconds (a quiet stream), and
when the consumer stops, it feeds what it holds.

Entries that are not JSON or not a valid event are counted (``unparseable``, with the
first reasons in ``examples``) and acknowledged, never fatal; so are impressions whose
payload does not hold one propensity per item (``malformed`` in the attributor's counts).
Entries deleted after delivery (an erased user) are only acknowledged.

The counts live in the process: a consumer that restarts continues its group after the
last entry it acknowledged, from zero counts. The batch job recomputes everything the
stream still holds.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> consumer = AttributionConsumer(SqliteStore(group="attribution"))
    >>> consumer.run(until_idle=True).entries
    0
    >>> consumer.engagement("model")
    []
"""

from __future__ import annotations

import heapq
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from recsys.events.attribution import (
    GROUPS,
    AttributionConfig,
    AttributionReport,
    AttributionStats,
    Attributor,
    EngagementCounter,
    attribute,
)
from recsys.events.lift import MIN_USERS, LiftRow, SegmentTally, render_lift_markdown, segment_lift
from recsys.events.redis_codec import expand
from recsys.events.redis_store import RedisStore
from recsys.events.schema import Event, EventType
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import CommitBatch, Delivery, RealtimeStore
from recsys.events.validation import EventValidationError, EventValidator, ValidationConfig

DEFAULT_GROUP = "attribution"
"""The consumer group of the attribution consumer."""

PROFILES_GROUP = "profiles"
"""The profile consumer's group, which the attribution consumer must not share."""

MAX_EXAMPLES = 5


@dataclass
class ReadStats:
    """What was read from the stream.

    Attributes:
        entries: deliveries read (one per event, also for grouped Redis entries).
        events: valid events among them.
        unparseable: deliveries that were not JSON or not a valid event.
        erased: entries deleted after delivery (acknowledged only).
        late: events older than one already fed (fed at once: see the module docstring).
        examples: the first reasons for ``unparseable`` (entry id: reason).
    """

    entries: int = 0
    events: int = 0
    unparseable: int = 0
    erased: int = 0
    late: int = 0
    examples: list[str] = field(default_factory=list)


class EntryParser:
    """Deliveries to events, counting what is not one (:class:`ReadStats`).

    Events were validated when published; they are validated again here (a stream
    also holds what unvalidated writers put there) without the clock check, so old
    logs replay.
    """

    def __init__(self, stats: ReadStats | None = None) -> None:
        self.stats = stats or ReadStats()
        self._validator = EventValidator(ValidationConfig(max_future_skew_s=None))

    def parse(self, delivery: Delivery) -> Event | None:
        """The delivery's event, or None (counted)."""
        self.stats.entries += 1
        if not delivery.payload and not delivery.published_us:
            self.stats.erased += 1
            return None
        try:
            event = self._validator.validate_json(delivery.payload)
        except EventValidationError as error:
            self.stats.unparseable += 1
            if len(self.stats.examples) < MAX_EXAMPLES:
                self.stats.examples.append(f"{delivery.entry_id}: {str(error)[:200]}")
            return None
        self.stats.events += 1
        return event


# -- the offline job -------------------------------------------------------------------
SCAN_PAGE = 1000


def scan_stream(store: RealtimeStore, page: int = SCAN_PAGE) -> Iterator[Delivery]:
    """Every entry the store's stream holds, in stream order (partition after
    partition), read without a consumer group: no cursor moves, nothing is pending.

    Supports the two back ends (:class:`~recsys.events.sqlite_store.SqliteStore`,
    :class:`~recsys.events.redis_store.RedisStore`), whose stream layout it reads.

    Raises:
        TypeError: another kind of store.
    """
    if isinstance(store, SqliteStore):
        last = 0
        while True:
            rows = store._q(
                "SELECT seq, payload, published_us FROM stream WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, page),
            )
            for seq, payload, published_us in rows:
                yield Delivery(str(seq), payload, int(published_us))
            if len(rows) < page:
                return
            last = int(rows[-1][0])
    elif isinstance(store, RedisStore):
        for k, key in enumerate(store.stream_keys):
            label = "" if store.partitions == 1 else f"{k}:"
            start = "-"
            while True:
                entries = store.r.xrange(key, min=start, max="+", count=page)
                for entry_id, fields in entries:
                    if "e" in fields:
                        body = "e" + fields["e"]
                    elif "g" in fields:
                        body = "g" + fields["g"]
                    else:
                        body = "e"  # no payload: an empty event (unparseable)
                    yield from expand(
                        label + entry_id, fields.get("t", "0"), fields.get("u", ""), "", body
                    )
                if len(entries) < page:
                    break
                start = "(" + entries[-1][0]
    else:
        raise TypeError(f"cannot scan the stream of a {type(store).__name__}")


@dataclass
class AttributionBatch:
    """What the batch job found.

    Attributes:
        report: the joins and exposures (:func:`~recsys.events.attribution.attribute`).
        tally: per-user counts for segment lifts.
        read: what was read from the stream.
    """

    report: AttributionReport
    tally: SegmentTally
    read: ReadStats

    @property
    def read_stats(self) -> ReadStats:
        return self.read

    @property
    def attribution_stats(self) -> AttributionStats:
        return self.report.stats

    def engagement(self, by: str) -> list[dict[str, Any]]:
        """Rates per value of ``by`` (:func:`~recsys.events.attribution.engagement`)."""
        return self.report.engagement(by)


def attribution_batch(
    store: RealtimeStore, config: AttributionConfig | None = None
) -> AttributionBatch:
    """The offline job: every event in the store's stream (:func:`scan_stream`),
    time-ordered through one attributor."""
    parser = EntryParser()
    events = [e for d in scan_stream(store) if (e := parser.parse(d)) is not None]
    report = attribute(events, config)
    return AttributionBatch(report, SegmentTally.from_report(report), parser.stats)


# -- the online consumer ---------------------------------------------------------------
@dataclass(frozen=True)
class AttributionConsumerConfig:
    """Settings of :class:`AttributionConsumer`.

    Attributes:
        name: consumer name in the group (stable over restarts: a restarted consumer
            reads its unacknowledged entries first).
        batch_size: entries per read.
        block_ms: how long a read waits for new entries.
        reorder_s: event time the consumer holds events for to feed them in time order.
        claim_idle_ms: entries another consumer of the group left unacknowledged this
            long are taken over.
        claim_interval_s: how often to look for them.
        partitions: the stream partitions to read (None: all).
        attribution: the join rules.
    """

    name: str = "attribution-1"
    batch_size: int = 500
    block_ms: int = 200
    reorder_s: float = 5.0
    claim_idle_ms: int = 30_000
    claim_interval_s: float = 5.0
    partitions: tuple[int, ...] | None = None
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def __post_init__(self) -> None:
        if self.reorder_s < 0 or self.batch_size < 1:
            raise ValueError("reorder_s must be >= 0 and batch_size >= 1")


class AttributionConsumer:
    """Reads the stream in its own consumer group and keeps engagement counts.

    Args:
        store: the store, opened with this consumer's group (e.g.
            ``SqliteStore(path, group="attribution")``); the profiles' group is refused.
        config: see :class:`AttributionConsumerConfig`.
        groups: the engagement dimensions to count (default: all).
    """

    def __init__(
        self,
        store: RealtimeStore,
        config: AttributionConsumerConfig | None = None,
        groups: Sequence[str] = GROUPS,
    ) -> None:
        if getattr(store, "group", None) == PROFILES_GROUP:
            raise ValueError(
                f"the attribution consumer needs its own consumer group, not {PROFILES_GROUP!r} "
                f"(open the store with group={DEFAULT_GROUP!r})"
            )
        self.store = store
        self.config = config or AttributionConsumerConfig()
        self.attributor = Attributor(self.config.attribution, keep_exposures=False)
        self.counter = EngagementCounter(groups)
        self.tally = SegmentTally()
        self.parser = EntryParser()
        self._held: list[tuple[int, int, Event]] = []
        self._arrived = 0
        self._newest_us: int | None = None
        self._fed_us: int | None = None
        self._last_arrival = time.monotonic()
        self._pending_done = False
        self._last_claim = time.monotonic()

    @property
    def read_stats(self) -> ReadStats:
        return self.parser.stats

    @property
    def attribution_stats(self) -> AttributionStats:
        return self.attributor.stats

    @property
    def held(self) -> int:
        """Events read and not yet fed (the reorder window)."""
        return len(self._held)

    def engagement(self, by: str) -> list[dict[str, Any]]:
        """The running rows of :func:`~recsys.events.attribution.engagement`."""
        return self.counter.engagement(by)

    def step(self, block_ms: int | None = None) -> int:
        """One read (own pending entries first, then stale ones of others, then new
        ones), fed and acknowledged; returns the entries read."""
        cfg = self.config
        deliveries: list[Delivery] = []
        if not self._pending_done:
            deliveries = self.store.read(cfg.name, cfg.batch_size, 0, True, cfg.partitions)
            self._pending_done = not deliveries
        if not deliveries and time.monotonic() - self._last_claim >= cfg.claim_interval_s:
            self._last_claim = time.monotonic()
            deliveries = self.store.claim_stale(
                cfg.name, cfg.claim_idle_ms, cfg.batch_size, cfg.partitions
            )
        if not deliveries:
            wait = cfg.block_ms if block_ms is None else block_ms
            deliveries = self.store.read(cfg.name, cfg.batch_size, wait, False, cfg.partitions)
        self.handle(deliveries)
        return len(deliveries)

    def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Parses, holds and feeds what is due, then acknowledges the deliveries."""
        if not deliveries:
            return
        for delivery in deliveries:
            event = self.parser.parse(delivery)
            if event is not None:
                self._hold(event)
        self._feed_due()
        self.store.commit(CommitBatch(acks=list(dict.fromkeys(d.entry_id for d in deliveries))))

    def flush(self) -> None:
        """Feeds every held event (at a stop, or when the stream is idle)."""
        self._feed_due(everything=True)

    def _hold(self, event: Event) -> None:
        if self._fed_us is not None and event.ts_us < self._fed_us:
            self.parser.stats.late += 1
        heapq.heappush(self._held, (event.ts_us, self._arrived, event))
        self._arrived += 1
        self._last_arrival = time.monotonic()
        if self._newest_us is None or event.ts_us > self._newest_us:
            self._newest_us = event.ts_us

    def _feed_due(self, everything: bool = False) -> None:
        if self._newest_us is None:
            return
        due = self._newest_us - int(self.config.reorder_s * 1e6)
        while self._held and (everything or self._held[0][0] <= due):
            ts_us, _, event = heapq.heappop(self._held)
            if self._fed_us is None or ts_us > self._fed_us:
                self._fed_us = ts_us
            self._feed(event)

    def _feed(self, event: Event) -> None:
        if event.type is EventType.RECOMMENDATION_IMPRESSION:
            exposure = self.attributor.expose(event)
            if exposure is not None:
                self.counter.add_exposure(exposure)
                self.tally.add_exposure(exposure)
            return
        joined = self.attributor.join(event)
        if joined is not None:
            self.counter.add_attribution(joined)
            self.tally.add_attribution(joined)

    def run(
        self,
        stop: threading.Event | None = None,
        max_entries: int | None = None,
        until_idle: bool = False,
        on_report: Callable[[AttributionConsumer], object] | None = None,
        report_interval_s: float = 60.0,
    ) -> ReadStats:
        """Consumes until stopped, then feeds what it holds.

        Args:
            stop: set it to end the loop after the current read.
            max_entries: end after reading at least this many entries.
            until_idle: end when a read finds nothing (and nothing is pending).
            on_report: called with the consumer every ``report_interval_s`` seconds
                and at the end (e.g. to rewrite a report file).
            report_interval_s: see ``on_report``.

        Returns:
            The read counters.
        """
        read = 0
        last_report = time.monotonic()
        try:
            while stop is None or not stop.is_set():
                n = self.step()
                read += n
                if n == 0 and time.monotonic() - self._last_arrival >= self.config.reorder_s:
                    # A quiet stream: no later event comes to release the held ones.
                    self.flush()
                if max_entries is not None and read >= max_entries:
                    break
                if until_idle and n == 0 and self._pending_done:
                    break
                if on_report is not None and time.monotonic() - last_report >= report_interval_s:
                    last_report = time.monotonic()
                    on_report(self)
        finally:
            self.flush()
            if on_report is not None:
                on_report(self)
        return self.parser.stats


# -- reports ---------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def render_engagement_markdown(by: str, rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of engagement rows."""
    columns = [by, "impressions", "clicks", "ctr", "conversions", "conversion_rate"]
    columns += ["dwell_events", "mean_dwell_ms"]
    lines = ["| " + " | ".join(columns) + " |", "|---" + "|--:" * (len(columns) - 1) + "|"]
    lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_report(
    engagement: dict[str, list[dict[str, Any]]],
    read: ReadStats,
    stats: AttributionStats,
    lift: Sequence[LiftRow] | None = None,
    confidence: float = 0.95,
    title: str = "Attribution",
) -> str:
    """The markdown report: counts, engagement tables, and the segment lift."""
    out = [f"# {title}", ""]
    out.append(
        f"Read {read.entries:,} entries: {read.events:,} events, {read.unparseable:,} "
        f"unparseable, {read.erased:,} erased, {read.late:,} late. Exposures "
        f"{stats.exposures:,} ({stats.malformed:,} malformed); outcomes {stats.outcomes:,}: "
        f"{stats.by_request_id:,} joined by request id, {stats.by_window:,} by window, "
        f"{stats.unattributed:,} unattributed ({stats.mismatched:,} named a list that "
        "did not fit)."
    )
    for by, rows in engagement.items():
        table = render_engagement_markdown(by, rows) if rows else "No exposures.\n"
        out += ["", f"## Engagement per {by}", "", table.rstrip("\n")]
    if lift is not None:
        table = render_lift_markdown(lift, confidence) if lift else "No segments.\n"
        out += ["", "## Segment lift", "", table.rstrip("\n")]
    return "\n".join(out) + "\n"


# -- the command line (``recsys realtime attribution``) ----------------------------------
def add_attribution_command(
    sub: Any, stop_on_signals: Callable[[], AbstractContextManager[threading.Event]]
) -> None:
    """Adds ``attribution`` to the ``recsys realtime`` subcommands (``sub``: the
    subparsers action); ``stop_on_signals`` gives the event SIGINT/SIGTERM set."""
    p = sub.add_parser(
        "attribution",
        help="join outcomes to exposures: engagement per model, rule, position, segment",
    )
    p.add_argument(
        "--batch",
        action="store_true",
        help="the offline job over every event in the stream (no consumer group)",
    )
    p.add_argument("--group", default=DEFAULT_GROUP, help="consumer group (online)")
    p.add_argument("--name", default="attribution-1", help="consumer name (online)")
    p.add_argument("--until-idle", action="store_true", help="online: stop when nothing is new")
    p.add_argument("--window", type=float, default=1800.0, help="join window, seconds")
    p.add_argument(
        "--reorder", type=float, default=5.0, help="online: event seconds held to order events"
    )
    p.add_argument("--by", default=",".join(GROUPS), help="engagement dimensions, comma-separated")
    p.add_argument("--segment-lift", action="store_true", help="add each segment's lift")
    p.add_argument("--min-users", type=int, default=MIN_USERS, help="fewest users for a lift")
    p.add_argument("--confidence", type=float, default=0.95, help="of the lift intervals")
    p.add_argument("--out", help="write the markdown report to this file")
    p.add_argument(
        "--report-interval",
        type=float,
        default=60.0,
        help="online with --out: rewrite the report every this many seconds",
    )
    p.set_defaults(
        run=partial(run_attribution_command, stop_on_signals=stop_on_signals), needs_store=False
    )


def _open(args: Any) -> RealtimeStore:
    from recsys.events.backend import REDIS_URL_ENV, StoreConfig, open_store

    redis_url = args.redis or os.environ.get(REDIS_URL_ENV) or None
    if redis_url is None and args.sqlite != ":memory:" and not Path(args.sqlite).is_file():
        raise FileNotFoundError(f"store {args.sqlite} does not exist")
    return open_store(
        StoreConfig(
            redis_url=redis_url,
            sqlite_path=args.sqlite,
            prefix=args.prefix,
            group=args.group,
            partitions=args.partitions,
        )
    )


def _write(path: str, text: str) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run_attribution_command(
    args: Any,
    store: RealtimeStore | None,
    stop_on_signals: Callable[[], AbstractContextManager[threading.Event]],
) -> int:
    """Runs ``recsys realtime attribution``: prints a JSON summary, writes ``--out``."""
    groups = [g.strip() for g in args.by.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"--by {','.join(bad)}: dimensions are {','.join(GROUPS)}")
    if args.segment_lift and args.min_users < 2:
        raise ValueError("--min-users must be >= 2")
    config = AttributionConfig(window_s=args.window)
    own = store is None
    store = _open(args) if store is None else store
    try:
        result: AttributionBatch | AttributionConsumer
        if args.batch:
            result = attribution_batch(store, config)
        else:
            consumer = AttributionConsumer(
                store,
                AttributionConsumerConfig(
                    name=args.name, reorder_s=args.reorder, attribution=config
                ),
                groups,
            )

            def report(c: AttributionConsumer) -> None:
                if args.out:
                    _write(args.out, _report_text(c, groups, args))

            with stop_on_signals() as stop:
                consumer.run(
                    stop=stop,
                    until_idle=args.until_idle,
                    on_report=report,
                    report_interval_s=args.report_interval,
                )
            result = consumer
        if args.batch and args.out:
            _write(args.out, _report_text(result, groups, args))
        summary: dict[str, Any] = {
            "mode": "batch" if args.batch else "online",
            "read": asdict(result.read_stats),
            "attribution": asdict(result.attribution_stats),
            "engagement": {by: result.engagement(by) for by in groups},
        }
        if args.segment_lift:
            rows = segment_lift(result.tally, confidence=args.confidence, min_users=args.min_users)
            summary["segment_lift"] = [r.to_dict() for r in rows]
        if args.out:
            summary["report"] = args.out
        print(json.dumps(summary, sort_keys=True, default=str))
        return 0
    finally:
        if own:
            store.close()


def _report_text(
    result: AttributionBatch | AttributionConsumer, groups: Sequence[str], args: Any
) -> str:
    read = result.read_stats
    lift = None
    if args.segment_lift:
        lift = segment_lift(result.tally, confidence=args.confidence, min_users=args.min_users)
    return render_report(
        {by: result.engagement(by) for by in groups},
        read,
        result.attribution_stats,
        lift,
        args.confidence,
        title="Attribution (batch)" if args.batch else "Attribution (online)",
    )
