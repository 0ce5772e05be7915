"""The stream consumer loop: read, process, commit-and-acknowledge, sweep.

On start a consumer first re-reads its own unacknowledged entries (those it
held when it stopped or crashed), then new ones; every few seconds it claims
entries another consumer left unacknowledged too long. Profile updates,
idempotency keys and acknowledgements commit together, so killing the
process at any point loses nothing and applies nothing twice. Past its
pending entries, each commit also reads the next batch in the same store call
(:meth:`~recsys.events.store.RealtimeStore.commit_and_read`); a consumer
stopped between the two keeps that batch pending under its name, and reads it
again first when it starts. By default the consumer computes the next batch
while that call is in flight (:attr:`ConsumerConfig.overlap_commits`), so its
work and the store's overlap instead of alternating.

Segment definitions reload while it runs: every
:attr:`ConsumerConfig.reload_check_s` it asks each hook that can reload
(:class:`Reloadable`; a :class:`~recsys.segments.engine.SegmentEngine` made
from YAML files) whether its files changed. A hook that reloaded is used from
the next batch on, and the consumer sweeps at once, so the members of removed
segments leave (and time-based new segments get their first members) without
waiting for the next periodic sweep. A file that fails to load keeps the
previous definitions; the hook logs and counts the error, and the consumer
goes on.

Scaling out: with a partitioned stream (``StoreConfig(partitions=N)``) each
consumer process owns some partitions (:attr:`ConsumerConfig.partitions`);
a user's events all live in one partition, so they are applied in order by
one consumer, and consumers never contend for a user.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> store = SqliteStore()
    >>> consumer = StreamConsumer(store, EventProcessor(store), ConsumerConfig(block_ms=0))
    >>> consumer.run(until_idle=True).entries
    0
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from recsys.events.store import RealtimeStore, partition_of
from recsys.profiles.processor import EventProcessor, ProcessorStats, ReadNext

log = logging.getLogger(__name__)


@runtime_checkable
class Reloadable(Protocol):
    """A hook whose definitions can change while the consumer runs."""

    def reload_if_changed(self) -> bool:
        """Reloads when its sources changed; True when new definitions are in
        use. Must not raise for bad definitions (keep the old ones, report)."""
        ...


@dataclass(frozen=True)
class ConsumerConfig:
    """Settings of :class:`StreamConsumer`.

    Attributes:
        name: consumer name inside the group (stable across restarts, so the
            restarted process finds its pending entries).
        batch_size: entries per read (``XREADGROUP COUNT``).
        block_ms: how long a read waits for new entries.
        claim_idle_ms: entries unacknowledged this long by another consumer
            are taken over.
        claim_interval_s: how often to look for such entries.
        sweep_interval_s: how often to run the time-based segment sweep (wall
            seconds; 300 = every 5 minutes; None disables it).
        clock: ``"wall"`` evaluates the sweep at the current time; ``"event"``
            at the latest event time seen (for replaying historical logs).
        partitions: the stream partitions this consumer reads and claims from
            (None: all). Give each consumer process its own partitions.
        gc_freeze_interval_s: while :meth:`StreamConsumer.run` runs, collect
            the young generations and then freeze every surviving object
            (``gc.freeze``) at most this often, between batches; automatic
            full collections are off meanwhile (None: leave the collector
            alone). The cached profiles and the import graph are hundreds of
            thousands of long-lived objects without reference cycles; Python's
            full collections rescanned all of them several times a minute,
            about a quarter of the consumer's CPU. Frozen objects are still
            freed by reference counting (an evicted profile goes at once);
            only a reference cycle among objects that outlived a freeze waits
            until ``run`` returns, which unfreezes everything and restores the
            collector's thresholds. The collector is process-wide: give this
            to one consumer loop per process.
        overlap_commits: compute each batch while the previous batch's commit
            (with the read of the next entries) is in flight
            (:meth:`~recsys.profiles.processor.EventProcessor.advance`), so the
            consumer does not sit idle during each store call; False waits for
            every commit before computing the next batch. Either way each event
            is applied once: a batch computed on a commit that then conflicts
            is discarded and both are redone.
        reload_check_s: how often (wall seconds, at most) to ask the hooks
            that can reload (:class:`Reloadable`) whether their definitions
            changed; after a reload the consumer sweeps at once, also when
            periodic sweeps are off (None: never reload).
    """

    name: str = "consumer-1"
    batch_size: int = 500
    block_ms: int = 200
    claim_idle_ms: int = 30_000
    claim_interval_s: float = 5.0
    sweep_interval_s: float | None = 300.0
    clock: str = "wall"
    partitions: tuple[int, ...] | None = None
    gc_freeze_interval_s: float | None = 1.0
    overlap_commits: bool = True
    reload_check_s: float | None = 1.0

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "event"):
            raise ValueError(f"clock must be 'wall' or 'event', got {self.clock!r}")


class StreamConsumer:
    """Consumes the store's stream into profiles.

    Args:
        store: stream and state.
        processor: applies batches (with segment hooks).
        config: see :class:`ConsumerConfig`.
    """

    def __init__(
        self, store: RealtimeStore, processor: EventProcessor, config: ConsumerConfig | None = None
    ) -> None:
        self.store = store
        self.processor = processor
        self.config = config or ConsumerConfig()
        self._pending_done = False
        self._read_next = ReadNext(self.config.name, self.config.batch_size, self.config.partitions)
        self._last_claim = time.monotonic()
        self._last_sweep = time.monotonic()
        self._last_reload = time.monotonic()
        self._reloadable = [h for h in processor.hooks if isinstance(h, Reloadable)]
        #: Successful reloads (a hook's new definitions taken up).
        self.reloads = 0
        #: Reload checks that raised (the hook's own failure; the old definitions stay).
        self.reload_failures = 0

    def now_us(self) -> int:
        """The sweep's clock (see :attr:`ConsumerConfig.clock`)."""
        if self.config.clock == "event":
            return self.processor.watermark_us
        return time.time_ns() // 1000

    def step(self, block_ms: int | None = None) -> int:
        """One read-process-commit round (plus a due claim or sweep).

        With :attr:`ConsumerConfig.overlap_commits` the round's commit may
        still be in flight when it returns; :meth:`settle` waits for it.

        Returns:
            The number of entries taken up (computed) in this round; 0 only
            when nothing arrived within the wait (then nothing is in flight).
        """
        cfg = self.config
        owned = cfg.partitions
        processor = self.processor
        if (
            cfg.reload_check_s is not None
            and self._reloadable
            and time.monotonic() - self._last_reload >= cfg.reload_check_s
        ):
            self.reload()
        if not self._pending_done:
            deliveries = self.store.read(cfg.name, cfg.batch_size, 0, True, owned)
            self._pending_done = not deliveries
            if deliveries:
                processor.handle(deliveries)
                return len(deliveries)
        if time.monotonic() - self._last_claim >= cfg.claim_interval_s:
            self._last_claim = time.monotonic()
            processor.prefetched += self.store.claim_stale(
                cfg.name, cfg.claim_idle_ms, cfg.batch_size, owned
            )
        if not processor.prefetched and processor.in_flight:
            processor.settle(self._read_next)  # what it read, if anything
        if not processor.prefetched:
            wait = cfg.block_ms if block_ms is None else block_ms
            processor.prefetched = self.store.read(cfg.name, cfg.batch_size, wait, False, owned)
        if cfg.overlap_commits:
            n = len(processor.prefetched)
            processor.advance(self._read_next)
        else:
            # What the last commit read (already delivered to this consumer).
            deliveries, processor.prefetched = processor.prefetched, []
            n = len(deliveries)
            if deliveries:
                processor.handle(deliveries, self._read_next)
        if (
            cfg.sweep_interval_s is not None
            and time.monotonic() - self._last_sweep >= cfg.sweep_interval_s
        ):
            self.sweep()
        return n

    @property
    def idle(self) -> bool:
        """Nothing read and not yet computed, and no commit in flight."""
        return self._pending_done and not self.processor.prefetched and not self.processor.in_flight

    def settle(self) -> None:
        """Waits for the commit in flight, if any (see :meth:`step`)."""
        self.processor.settle(self._read_next)

    def reload(self) -> bool:
        """Asks the reloadable hooks now whether their definitions changed;
        after a change, sweeps at once (see the module docstring). Returns
        whether any hook took up new definitions."""
        self._last_reload = time.monotonic()
        changed = False
        for hook in self._reloadable:
            try:
                changed = hook.reload_if_changed() or changed
            except Exception:  # the hook's bug: keep consuming with what it has
                self.reload_failures += 1
                log.exception("reloading %r failed; its definitions stay as they were", hook)
        if changed:
            self.reloads += 1
            self.sweep()
        return changed

    def sweep(self) -> int:
        """Runs the segment sweep now (over the users of this consumer's
        partitions); returns the number of membership changes."""
        self._last_sweep = time.monotonic()
        self.settle()  # the sweep reads the cached profiles as committed
        owned = self.config.partitions
        n = self.store.partitions
        owns = None if owned is None else (lambda u: partition_of(u, n) in owned)
        return len(self.processor.sweep(self.now_us(), owns=owns))

    def run(
        self,
        stop: threading.Event | None = None,
        max_entries: int | None = None,
        until_idle: bool = False,
    ) -> ProcessorStats:
        """Consumes until stopped.

        Args:
            stop: set it to end the loop after the current batch.
            max_entries: end after handling at least this many entries.
            until_idle: end when a read finds nothing new (and nothing pending).

        Returns:
            The processor's counters.
        """
        interval = self.config.gc_freeze_interval_s
        last_freeze = -float("inf")
        thresholds = gc.get_threshold()
        if interval is not None:
            # Young generations stay automatic; no full collection while running.
            gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
            gc.collect()  # once: what start-up left behind
            gc.freeze()
            last_freeze = time.monotonic()
        handled = 0
        try:
            while stop is None or not stop.is_set():
                if interval is not None and time.monotonic() - last_freeze >= interval:
                    gc.collect(1)  # the young generations: cycles made since the last freeze
                    gc.freeze()
                    last_freeze = time.monotonic()
                n = self.step()
                handled += n
                if max_entries is not None and handled >= max_entries:
                    break
                if until_idle and n == 0 and self.idle:
                    break
        except BaseException:
            # What was read and not acknowledged (with a lost reply, perhaps
            # committed after all) is pending under this consumer's name: the
            # next run reads it back from the store, where the commit's event
            # ids and versions decide what is still to apply.
            self._pending_done = False
            self.processor.prefetched = []
            raise
        finally:
            try:
                self.settle()
            finally:
                if interval is not None:
                    gc.set_threshold(*thresholds)
                    gc.unfreeze()
        return self.processor.stats
