"""The exposure log: one ``recommendation_impression`` event per served list.

Every answered ``recommend`` request yields an exposure: user, session, request id,
request context, the slate (items, positions, scores), the bundle and model it came
from, the rules applied, the policy id and each shown item's propensity (1.0 for the
deterministic policy; the slate's too). :func:`exposure_event` builds it; an
:class:`ExposureWriter` appends it to the event stream (Redis Streams or the embedded
SQLite store, the same stream the clicks arrive on, so attribution reads both in order).

Writing never delays or fails a request: :meth:`ExposureWriter.submit` puts the event
into a bounded in-memory buffer and returns at once; a background thread writes the
buffer in batches. A full buffer drops the event and counts it (``dropped_full``); a
store that fails drops the batch and counts it (``failed``) and is retried with the
next batch. The counters (:attr:`ExposureWriter.stats`) are logged when anything was
dropped, at most every ``report_interval_s``, and at close: a drop is never silent.

Standard library and numpy only at module level (the store clients load in the writer
thread), so this runs in Triton's python backend.

Example::

    writer = ExposureWriter("sqlite:///var/recsys/rt.db")
    writer.submit(exposure_event(user_id=1, items=[5, 7], scores=[0.9, 0.4], ...))
    writer.close()
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recsys.runtime.context import RequestContext

LOGGER = logging.getLogger(__name__)

DETERMINISTIC_POLICY = "deterministic"
"""The policy id of lists ranked without randomness (propensity 1 for every shown item)."""

EXPOSURE_TYPE = "recommendation_impression"


ANONYMOUS_USER = "anonymous"
"""The user and session of an exposure served without personalization consent."""


def exposure_event_id(request_id: str) -> str:
    """The event id of the exposure that logs the list served for ``request_id``.

    Example::

        store.applied([exposure_event_id(rec.request_id)])  # is the list in the log yet?
    """
    return f"exp-{request_id}"


def exposure_event(
    *,
    user_id: int | str,
    items: Sequence[int],
    scores: Sequence[float],
    context: RequestContext,
    k: int,
    bundle: str,
    model: str,
    policy: str = DETERMINISTIC_POLICY,
    propensities: Sequence[float] | None = None,
    rules: Sequence[str] = (),
    fallback: bool = False,
    now_ms: int | None = None,
    segments: Sequence[str] = (),
    personalized: bool = True,
    position_propensities: Sequence[float] | None = None,
    slate_propensity: float | None = None,
    extra: Mapping[str, Any] | None = None,
    experiments: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """The exposure event of one served list (an event of the project's schema).

    Args:
        user_id: the requested user.
        items: the shown items, best first (position = index).
        scores: their scores.
        context: the request's validated context, with its request id.
        k: the requested list length.
        bundle: the id of the run bundle that served the list.
        model: the served model's name and version, e.g. ``recommend:1``.
        policy: the ranking policy's id.
        propensities: each shown item's probability of being shown at its position
            under ``policy`` (default 1.0 each: a deterministic policy).
        rules: ids of the targeting rules that changed the list.
        fallback: the popularity fallback answered.
        now_ms: the event time when the request has none (default: now).
        segments: the user's segments the targeting rules saw.
        position_propensities: each shown item's marginal probability at its position,
            where the policy has one (:mod:`recsys.runtime.policies`).
        experiments: the request's A/B assignments (``{"experiment", "arm"}`` each): the
            payload's ``experiments`` lists ``experiment:arm``, and with one assignment
            ``experiment`` and ``arm`` name it.
        extra: more payload fields of the event schema (e.g. a bandit's ``bandit``,
            ``bandit_arm``, ``bandit_context``, ``bandit_propensity``).
        slate_propensity: the slate's probability (default: the product of
            ``propensities``, which is what sequential choice probabilities give).
        personalized: False for a user who refused personalization: the event then
            holds no personal data (user and session are :data:`ANONYMOUS_USER`, no
            device or place, no segments), only the list, its policy and the request id.

    Returns:
        A raw event (``type`` ``recommendation_impression``), ready to publish.
    """
    if context.request_id is None:
        raise ValueError("an exposure needs the request id (RequestContext.with_request_id)")
    props = [1.0] * len(items) if propensities is None else [float(p) for p in propensities]
    if len(props) != len(items) or len(scores) != len(items):
        raise ValueError("items, scores and propensities must have the same length")
    slate = 1.0
    for p in props:
        slate *= p
    if slate_propensity is not None:
        slate = float(slate_propensity)
    at_ms = context.request_time_ms
    if at_ms is None:
        at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    payload: dict[str, Any] = {
        "request_id": context.request_id,
        "items": [int(i) for i in items],
        "scores": [float(s) for s in scores],
        "propensities": props,
        "slate_propensity": slate,
        **(
            {"position_propensities": [float(p) for p in position_propensities]}
            if position_propensities is not None
            else {}
        ),
        "policy": policy,
        "model": model,
        "bundle": bundle,
        "rules": list(rules),
        "segments": list(segments) if personalized else [],
        "personalized": bool(personalized),
        "fallback": bool(fallback),
        "k": int(k),
    }
    if context.surface is not None:
        payload["surface"] = context.surface
    if experiments:
        payload["experiments"] = [f"{e['experiment']}:{e['arm']}" for e in experiments]
        if len(experiments) == 1:
            payload["experiment"] = experiments[0]["experiment"]
            payload["arm"] = experiments[0]["arm"]
    if extra:
        clash = sorted(set(extra) & set(payload))
        if clash:
            raise ValueError(f"extra payload fields {clash} would replace the exposure's own")
        payload.update(extra)
    user = str(user_id) if personalized else ANONYMOUS_USER
    session = context.session_id if context.session_id is not None else user
    event: dict[str, Any] = {
        "event_id": exposure_event_id(context.request_id),
        "user_id": user,
        # the event schema requires a session; without one the user is its own, as
        # `recsys realtime publish` does for logs without sessions
        "session_id": session if personalized else ANONYMOUS_USER,
        "type": EXPOSURE_TYPE,
        "timestamp": at_ms / 1000.0,
        "payload": payload,
    }
    ctx = context.event_context()
    if ctx and personalized:
        event["context"] = ctx
    return event


@dataclass
class ExposureStats:
    """What the writer did with the events it was given.

    Attributes:
        submitted: events handed to :meth:`ExposureWriter.submit`.
        written: events the store appended.
        dropped_full: events dropped because the buffer was full.
        failed: events dropped because the store failed to write their batch.
    """

    submitted: int = 0
    written: int = 0
    dropped_full: int = 0
    failed: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.failed


class ExposureWriter:
    """Appends exposure events to the event stream from a background thread.

    Args:
        url: the store (``redis://host:port/db[?prefix=P]`` or ``sqlite:///path``), or
            a callable returning an open store (tests, embedding).
        capacity: events the buffer holds; more are dropped and counted.
        batch_size: events per store call.
        linger_s: how long the writer sleeps after the first event of a batch before
            it takes every queued event (up to ``batch_size`` per store call): fewer,
            larger store writes, and one wake-up of the writer per batch.
        report_interval_s: at most one log line about drops per this many seconds.
        warn: where drop reports go (default: this module's logger).
    """

    def __init__(
        self,
        url: str | Callable[[], Any],
        *,
        capacity: int = 10_000,
        batch_size: int = 256,
        linger_s: float = 0.05,
        report_interval_s: float = 10.0,
        warn: Callable[[str], object] | None = None,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be >= 1")
        self.url = url if isinstance(url, str) else "<store>"
        self._opener = url if callable(url) else None
        self._buffer: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=capacity)
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.report_interval_s = report_interval_s
        self._warn = warn or LOGGER.warning
        self._lock = threading.Lock()
        self.stats = ExposureStats()
        self._reported = 0.0
        self._reported_drops = 0
        self._store: Any = None
        self._closed = False
        self._wake = threading.Event()  # set by close: no more lingering
        self._thread = threading.Thread(target=self._run, name="exposure-writer", daemon=True)
        self._thread.start()

    # -- the request path ----------------------------------------------------------

    def submit(self, event: dict[str, Any]) -> bool:
        """Queues one event without blocking; False (and counted) when the buffer is full."""
        with self._lock:
            self.stats.submitted += 1
        try:
            self._buffer.put_nowait(event)
            return True
        except queue.Full:
            with self._lock:
                self.stats.dropped_full += 1
            self._maybe_report()
            return False

    # -- the writer thread ---------------------------------------------------------

    def _open(self) -> Any:
        if self._store is None:
            if self._opener is not None:
                self._store = self._opener()
            else:
                from recsys.runtime.user_state import open_store_url

                self._store = open_store_url(str(self.url))
        return self._store

    def _run(self) -> None:
        while True:
            first = self._buffer.get()  # asleep until there is something to write
            if first is None:
                return
            # The batch gathers while the writer sleeps through linger_s: the request
            # threads' puts wake nobody, and the writer takes the GIL once per batch
            # instead of once per event (woken per event, the log cost a request at
            # concurrency 1 about 1 ms of p50 on a 2-core server; docs/serving.md).
            if self.linger_s > 0:
                self._wake.wait(self.linger_s)
            batch = [first]
            while True:
                try:
                    more = self._buffer.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(batch)
                    return
                batch.append(more)
                if len(batch) >= self.batch_size:
                    self._write(batch)
                    batch = []
            if batch:
                self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        payloads = [json.dumps(e, separators=(",", ":")) for e in batch]
        users = [str(e.get("user_id")) for e in batch]
        try:
            self._open().publish(payloads, users=users)
        except Exception as error:  # the store is down: count, report, go on
            self._store = None
            with self._lock:
                self.stats.failed += len(batch)
            self._maybe_report(error)
            return
        with self._lock:
            self.stats.written += len(batch)

    def _maybe_report(self, error: BaseException | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            due = now - self._reported >= self.report_interval_s
            drops = self.stats.dropped
            if not due or drops == self._reported_drops:
                return
            self._reported, self._reported_drops = now, drops
            stats = ExposureStats(**vars(self.stats))
        reason = f" (last store error: {error})" if error is not None else ""
        self._warn(f"exposure log {self.url}: {drops} exposures dropped so far, {stats}{reason}")

    # -- lifecycle -----------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Waits until every queued event is written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                done = self.stats.written + self.stats.dropped >= self.stats.submitted
            if done and self._buffer.empty():
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout_s: float = 10.0) -> ExposureStats:
        """Writes what is queued, stops the thread, closes the store; returns the counters."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self.flush(timeout_s)
            with contextlib.suppress(queue.Full):
                self._buffer.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
            if self._store is not None and hasattr(self._store, "close"):
                self._store.close()
            if self.stats.dropped:
                self._warn(f"exposure log {self.url}: closed with {self.stats}")
        return self.stats
