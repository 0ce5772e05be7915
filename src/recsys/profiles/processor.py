"""Applying a batch of stream entries to profiles, exactly once per event id.

:class:`EventProcessor` turns deliveries into one :class:`CommitBatch`:
entries are parsed and validated (failures become dead letters), event ids
already applied or repeated in the batch are skipped, each remaining event is
applied for the purposes the user consented to (profile and segments for
``personalization``, the event store for ``analytics``), hooks (segment
evaluation) run after each profile update, and changed profiles are written
under the version they were read at. The batch is committed atomically with
the acknowledgements; the commit also refuses event ids already applied. On a
version conflict or such an id the cached users are dropped, reloaded and the
batch recomputed (without the applied ids), so each event's effect lands once.

Users are cached in memory (LRU) between batches; the version check makes the
cache safe when another consumer or an API call changed a user meanwhile.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from recsys.events.consent import ConsentPolicy, Purpose
from recsys.events.deadletter import DeadLetter
from recsys.events.schema import Event, EventType, ItemId
from recsys.events.store import (
    CommitBatch,
    CommitReply,
    Delivery,
    MembershipChange,
    ProfileWrite,
    RealtimeStore,
    UserRecord,
)
from recsys.events.validation import (
    EventValidationError,
    EventValidator,
    ValidationConfig,
    decode_json,
)
from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig
from recsys.profiles.errors import CommitConflictError, PoisonEntryError
from recsys.profiles.state import UserProfile

try:  # optional accelerator of profile writes; see encode_doc
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

_PERSONAL = Purpose.PERSONALIZATION
_ANALYTICS = Purpose.ANALYTICS
# One encoder for every profile document: json.dumps with options builds a new
# encoder per call.
_DOC_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _no_user(ev: Event) -> bool:
    """An event about no user (see :attr:`ProcessorStats.skipped_no_user`)."""
    if ev.type is EventType.ITEM_PUBLISHED:
        return True
    return (
        ev.type is EventType.RECOMMENDATION_IMPRESSION and ev.payload.get("personalized") is False
    )


def encode_doc(doc: dict[str, Any]) -> str:
    """Compact JSON of a profile document.

    With the optional package ``orjson`` installed this is several times
    faster (the same document; non-ASCII text unescaped, floats in their
    shortest form); values orjson refuses (integers beyond 64 bits, lone
    surrogates) fall back to the standard library.
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(doc).decode()
        except TypeError:
            pass
    return _DOC_ENCODER.encode(doc)


@dataclass(frozen=True)
class ReadNext:
    """What a consumer reads after a commit (see :meth:`EventProcessor.handle`).

    Attributes:
        consumer: the consumer's name in the group.
        count: entries per partition.
        partitions: the partitions it owns (None: all).
    """

    consumer: str
    count: int
    partitions: tuple[int, ...] | None = None


@dataclass
class CachedUser:
    """A user as the processor holds it between batches.

    Attributes:
        user_id: the user.
        version: the stored record's version the state was read at.
        profile: the dynamic profile.
        attributes: non-PII static attribute values.
        granted: purposes the user consented to (policy defaults included).
    """

    user_id: str
    version: int
    profile: UserProfile
    attributes: dict[str, Any]
    granted: frozenset[Purpose]


class ProfileHook(Protocol):
    """Runs after profile updates; the segment engine implements it."""

    def on_event(self, user: CachedUser, event: Event) -> list[MembershipChange]:
        """Called after ``event`` was applied to ``user.profile``."""
        ...

    def on_sweep(self, user: CachedUser, now_us: int) -> list[MembershipChange]:
        """Called by the periodic sweep (time-based entries and exits)."""
        ...

    def sweep_candidates(self, store: RealtimeStore, now_us: int) -> set[str]:
        """Users the sweep must look at (members whose membership time can
        end, and users time can let in)."""
        ...


@dataclass(frozen=True)
class ProcessorConfig:
    """Settings of :class:`EventProcessor`.

    Attributes:
        profile: windows, list lengths, decay.
        consent: how missing consent is read.
        max_cached_users: LRU capacity of the user cache.
        max_attempts: commit attempts per batch before giving up.
        record_latency: keep ``(published_us, evaluated_us)`` per event.
        source: label of dead letters from this processor.
    """

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    consent: ConsentPolicy = field(default_factory=ConsentPolicy)
    max_cached_users: int = 200_000
    max_attempts: int = 8
    record_latency: bool = False
    source: str = "stream"


@dataclass
class ProcessorStats:
    """Counters since the processor started.

    Attributes:
        entries: stream entries handled (acknowledged).
        applied: events whose effects were committed.
        duplicates: entries skipped because their event id was applied.
        dead_letters: entries refused (invalid, or processing failed).
        skipped_no_consent: valid events stored for no purpose (no consent).
        skipped_no_user: events about no user, which build no profile and no per-user
            events and stay in the stream only: exposures of lists served without
            personalization consent (their user id is a placeholder; attribution and
            off-policy evaluation read them there) and ``item_published`` (catalogue
            records, read by the catalogue consumer; the publisher is not profiled).
        batches: committed batches.
        conflicts: batch attempts redone after a version conflict.
        latencies_us: per event, evaluation finished minus publish (when recorded).
        commit_latencies_us: per event, commit finished minus publish.
        last_commit_us: wall time (epoch us) of the latest committed batch.
    """

    entries: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    skipped_no_consent: int = 0
    skipped_no_user: int = 0
    batches: int = 0
    conflicts: int = 0
    latencies_us: list[int] = field(default_factory=list)
    commit_latencies_us: list[int] = field(default_factory=list)
    last_commit_us: int = 0


@dataclass
class _Attempt:
    batch: CommitBatch
    written: list[str]
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    no_user: int = 0
    published: list[int] = field(default_factory=list)
    evaluated: list[int] = field(default_factory=list)
    max_ts: int = 0


@dataclass
class _Flight:
    """A batch whose commit (and read of the next entries) was sent."""

    attempt: _Attempt
    deliveries: Sequence[Delivery]
    touched: set[str]
    reply: CommitReply


class EventProcessor:
    """Applies stream deliveries to profiles; see the module docstring.

    Args:
        store: where users, events and acknowledgements are committed.
        config: see :class:`ProcessorConfig`.
        hooks: run after each profile update (segment evaluation).
        validator: defaults to one that does not check future times.
        attributes: schema used to read static attributes.
        category_of: item id -> category, for events without a payload category.
    """

    def __init__(
        self,
        store: RealtimeStore,
        config: ProcessorConfig | None = None,
        hooks: Iterable[ProfileHook] = (),
        validator: EventValidator | None = None,
        attributes: AttributeSchema | None = None,
        category_of: Callable[[ItemId], str | None] | None = None,
    ) -> None:
        self.store = store
        self.config = config or ProcessorConfig()
        self.hooks = list(hooks)
        self.validator = validator or EventValidator(ValidationConfig(max_future_skew_s=None))
        self.attributes = attributes or AttributeSchema.default()
        self.category_of = category_of
        self.cache: OrderedDict[str, CachedUser] = OrderedDict()
        self._grant_sets: dict[frozenset[Purpose], frozenset[Purpose]] = {}
        self.stats = ProcessorStats()
        self.watermark_us = 0
        #: Entries read with a commit (``read_next``), not yet handled.
        self.prefetched: list[Delivery] = []
        self._flight: _Flight | None = None

    # -- cache ---------------------------------------------------------------------
    def _decode(self, rec: Any) -> CachedUser:
        profile = (
            UserProfile.from_doc(decode_json(rec.profile))
            if rec.profile
            else UserProfile(rec.user_id)
        )
        granted = self.config.consent.granted(rec.consent)
        # Few distinct sets exist: share them instead of keeping one per user.
        granted = self._grant_sets.setdefault(granted, granted)
        return CachedUser(
            rec.user_id,
            rec.version,
            profile,
            self.attributes.plain_values(rec.attributes) if rec.attributes else {},
            granted,
        )

    def ensure_cached(
        self, user_ids: Iterable[str], versions: Mapping[str, int] | None = None
    ) -> None:
        """Loads the users not in the cache (one store round trip, or none).

        Args:
            user_ids: the users needed.
            versions: record versions the store reported with the entries
                (:attr:`~recsys.events.store.Delivery.user_version`): a user
                not cached whose version is 0 has no record, so it starts
                empty without a load. A hint only: the commit checks every
                version, as it does for cached users another writer changed.
        """
        needed = list(dict.fromkeys(user_ids))
        missing = []
        cache = self.cache
        hints = versions or {}
        for uid in needed:
            if uid in cache:
                cache.move_to_end(uid)
            elif hints.get(uid) == 0:
                cache[uid] = self._decode(UserRecord(uid))
            else:
                missing.append(uid)
        if missing:
            for uid, rec in self.store.load_users(missing).items():
                self.cache[uid] = self._decode(rec)
        excess = len(self.cache) - max(self.config.max_cached_users, len(needed))
        for _ in range(excess):
            self.cache.popitem(last=False)

    def invalidate(self, user_ids: Iterable[str]) -> None:
        """Drops users from the cache (their next use reloads them)."""
        for uid in user_ids:
            self.cache.pop(uid, None)

    # -- batches -------------------------------------------------------------------
    def handle(self, deliveries: Sequence[Delivery], read_next: ReadNext | None = None) -> int:
        """Processes and commits one batch of deliveries (acknowledging them).

        Args:
            deliveries: the batch.
            read_next: when given, the commit also reads the consumer's next
                entries (:meth:`~recsys.events.store.RealtimeStore.commit_and_read`,
                one round trip); they wait in :attr:`prefetched`.

        Returns:
            The number of events applied.

        Raises:
            CommitConflictError: conflicts persisted for ``max_attempts``.
        """
        return self._handle(deliveries, read_next, True)

    def _handle(
        self, deliveries: Sequence[Delivery], read_next: ReadNext | None, hints: bool
    ) -> int:
        poison: dict[str, str] = {}
        # Event ids the store reported as applied. Nothing is asked before the
        # first attempt: the commit checks every id atomically and names the
        # applied ones, so duplicates (rare: replays, client retries) cost one
        # recomputation instead of a lookup on every batch.
        applied: set[str] = set()
        for n in range(self.config.max_attempts):
            touched: set[str] = set()
            try:
                # Version hints only on the first attempt: after a conflict the
                # users are loaded, whatever the entries said.
                attempt = self._build(deliveries, poison, touched, applied, hints and n == 0)
                if read_next is None:
                    conflicts = self.store.commit(attempt.batch)
                else:
                    conflicts, found = self.store.commit_and_read(
                        attempt.batch, read_next.consumer, read_next.count, read_next.partitions
                    )
                    if not conflicts:
                        self.prefetched = self.prefetched + found
            except PoisonEntryError as p:
                self.invalidate(touched)
                poison[p.entry_id] = p.reason
                continue
            except BaseException:
                self.invalidate(touched)
                raise
            if conflicts:
                self.invalidate(touched)
                self.stats.conflicts += 1
                applied.update(c[4:] for c in conflicts if c.startswith("dup:"))
                continue
            self._accepted(attempt, len(deliveries))
            return attempt.applied
        raise CommitConflictError(
            f"batch of {len(deliveries)} entries conflicted {self.config.max_attempts} times"
        )

    # -- overlapped batches ----------------------------------------------------------
    @property
    def in_flight(self) -> bool:
        """True while a commit sent by :meth:`advance` awaits its reply."""
        return self._flight is not None

    def advance(self, read_next: ReadNext) -> int:
        """One step of the overlapped loop: computes the :attr:`prefetched`
        entries while the previous batch's commit is in flight, settles that
        commit, then sends this batch's commit (which also reads the next
        entries into :attr:`prefetched`) and returns without its reply.

        The batch is computed on the cached state the commit in flight will
        write, with the versions it will write. If that commit conflicts,
        nothing of it was applied: both batches' users are dropped from the
        cache and the two batches run again through :meth:`handle` (with its
        retries); the speculative one was never sent. A computation that fails
        (a poison entry) also waits for the commit in flight and then goes
        through :meth:`handle`, which dead-letters the entry. With nothing in
        flight, the step first sends an empty commit that only reads, so the
        next entries arrive while these are computed.

        Args:
            read_next: the consumer's reads (each commit reads its next entries).

        Returns:
            The number of entries whose commit was settled in this step.

        Example:
            >>> from recsys.events.sqlite_store import SqliteStore
            >>> proc = EventProcessor(SqliteStore())
            >>> proc.advance(ReadNext("c", 100)), proc.in_flight
            (0, False)
        """
        hand, self.prefetched = self.prefetched, []
        flight, self._flight = self._flight, None
        if flight is None:
            if not hand:
                return 0
            flight = self._send(_Attempt(CommitBatch(), []), [], set(), read_next)
        touched: set[str] = set()
        attempt: _Attempt | None = None
        if hand:
            try:
                attempt = self._build(hand, {}, touched, set(), True)
            except Exception:
                self.invalidate(touched)  # redone by handle() below
            except BaseException:
                self.invalidate(touched)
                self._land(flight, read_next)  # the reply must not stay unread
                raise
        else:
            attempt = _Attempt(CommitBatch(), [])
        settled = len(flight.deliveries)
        if not self._land(flight, read_next, hand, touched):
            return settled + len(hand)
        if attempt is None:
            self.handle(hand, read_next)
            return settled + len(hand)
        if hand or self.prefetched:
            self._flight = self._send(attempt, hand, touched, read_next)
        return settled

    def settle(self, read_next: ReadNext) -> int:
        """Waits for the commit in flight (if any) and accepts it, or redoes
        its batch through :meth:`handle` after a conflict; its read lands in
        :attr:`prefetched`. Returns the number of entries settled."""
        flight, self._flight = self._flight, None
        if flight is None:
            return 0
        self._land(flight, read_next)
        return len(flight.deliveries)

    def _land(
        self,
        flight: _Flight,
        read_next: ReadNext,
        after: Sequence[Delivery] = (),
        after_touched: set[str] | frozenset[str] = frozenset(),
    ) -> bool:
        """Reads ``flight``'s reply. Committed: accepts it, adds what it read
        to :attr:`prefetched` and returns True. Conflict: nothing of it was
        written, so the batch computed on it (``after``, its users
        ``after_touched``) is void too; both are redone through the retrying
        path, with the users loaded (the entries' version hints may be what
        conflicted), and it returns False."""
        try:
            conflicts, found = flight.reply()
        except BaseException:
            self.invalidate(flight.touched | after_touched)
            raise
        if conflicts:
            self.invalidate(flight.touched | after_touched)
            self.stats.conflicts += 1
            self._handle([*flight.deliveries, *after], read_next, False)
            return False
        if flight.deliveries:  # else it only read
            self._accepted(flight.attempt, len(flight.deliveries))
        self.prefetched = self.prefetched + found
        return True

    def _send(
        self,
        attempt: _Attempt,
        deliveries: Sequence[Delivery],
        touched: set[str],
        read_next: ReadNext,
    ) -> _Flight:
        try:
            reply = self.store.begin_commit_and_read(
                attempt.batch, read_next.consumer, read_next.count, read_next.partitions
            )
        except BaseException:
            self.invalidate(touched)
            raise
        return _Flight(attempt, deliveries, touched, reply)

    def _accepted(self, attempt: _Attempt, n_entries: int) -> None:
        s = self.stats
        s.entries += n_entries
        s.applied += attempt.applied
        s.duplicates += attempt.duplicates
        s.dead_letters += len(attempt.batch.dead_letters)
        s.skipped_no_consent += attempt.skipped
        s.skipped_no_user += attempt.no_user
        s.batches += 1
        self.watermark_us = max(self.watermark_us, attempt.max_ts)
        done = s.last_commit_us = time.time_ns() // 1000
        if self.config.record_latency and attempt.published:
            s.latencies_us += [
                e - p for p, e in zip(attempt.published, attempt.evaluated, strict=True)
            ]
            s.commit_latencies_us += [done - p for p in attempt.published]

    def _dead(self, batch: CommitBatch, raw: Any, reasons: list[str], entry_id: str) -> None:
        batch.dead_letters.append(
            DeadLetter.from_raw(
                raw, reasons, f"{self.config.source}:{entry_id}", time.time_ns() // 1000
            )
        )

    def _build(
        self,
        deliveries: Sequence[Delivery],
        poison: dict[str, str],
        touched: set[str],
        applied: set[str],
        use_hints: bool = False,
    ) -> _Attempt:
        batch = CommitBatch(acks=[d.entry_id for d in deliveries])
        attempt = _Attempt(batch, [])
        loads = decode_json
        validate = self.validator.validate
        done = set(applied)  # applied before, or earlier in this batch
        fresh: list[tuple[Delivery, Event]] = []
        no_user: list[str] = []  # ids of events about no user (see ProcessorStats)
        hints: dict[str, int] = {}
        for d in deliveries:
            payload = d.payload
            if not payload and not d.published_us:
                continue  # entry deleted after delivery (erasure): acknowledge only
            try:
                raw = loads(payload)
            except (ValueError, RecursionError) as e:  # nested past the parser's depth
                self._dead(batch, payload, [f"$: not valid JSON ({e})"], d.entry_id)
                continue
            if poison and d.entry_id in poison:
                self._dead(batch, raw, [poison[d.entry_id]], d.entry_id)
                continue
            try:
                ev = validate(raw)
            except EventValidationError as e:
                self._dead(batch, raw, list(e.errors), d.entry_id)
                continue
            if d.applied or ev.event_id in done:
                attempt.duplicates += 1
            elif _no_user(ev):
                done.add(ev.event_id)
                no_user.append(ev.event_id)
            else:
                done.add(ev.event_id)
                fresh.append((d, ev))
                # The hint is about the entry's routing user: use it only
                # when that is the event's user.
                if use_hints and d.user_version is not None and d.user_id == ev.user_id:
                    hints[ev.user_id] = d.user_version
        self.ensure_cached((ev.user_id for _, ev in fresh), hints)
        cache = self.cache
        cfg = self.config.profile
        category_of = self.category_of
        hooks = self.hooks
        record = self.config.record_latency
        written: dict[str, None] = {}
        last_seen = batch.last_seen
        memberships = batch.memberships
        events = batch.events
        applied_ids = batch.applied_ids
        max_ts = 0
        for d, ev in fresh:
            uid = ev.user_id
            user = cache[uid]
            touched.add(uid)
            granted = user.granted
            ts = ev.ts_us
            if _PERSONAL in granted:
                try:
                    category = (
                        category_of(ev.item_id)
                        if category_of is not None and ev.item_id is not None
                        else None
                    )
                    user.profile.apply(ev, cfg, category)
                    for hook in hooks:
                        changes = hook.on_event(user, ev)
                        if changes:
                            memberships += changes
                except Exception as e:  # a bug or a bad catalogue: dead-letter, not loop
                    raise PoisonEntryError(
                        d.entry_id, f"processing failed: {type(e).__name__}: {e}"
                    ) from e
                written[uid] = None
                if ts > last_seen.get(uid, 0):
                    last_seen[uid] = ts
            if _ANALYTICS in granted:
                # The text as received: it passed validation, so it holds
                # schema fields only; re-serializing would cost a third of the
                # per-event time.
                events.append((uid, d.payload))
            elif _PERSONAL not in granted:
                attempt.skipped += 1
            applied_ids.append(ev.event_id)
            if ts > max_ts:
                max_ts = ts
            if record:
                attempt.published.append(d.published_us)
                attempt.evaluated.append(time.time_ns() // 1000)
        applied_ids += no_user
        attempt.no_user = len(no_user)
        attempt.applied = len(applied_ids)
        attempt.max_ts = max_ts
        encode = encode_doc
        profiles = batch.profiles
        for uid in written:
            user = cache[uid]
            profiles.append(ProfileWrite(uid, user.version, encode(user.profile.to_doc())))
            # The version the commit will write. Bumped now so that a batch
            # computed while this one's commit is in flight expects it; every
            # path where the commit does not happen drops the user instead.
            user.version += 1
        attempt.written = list(written)
        return attempt

    # -- sweep -----------------------------------------------------------------------
    def sweep(
        self,
        now_us: int,
        chunk: int = 500,
        owns: Callable[[str], bool] | None = None,
    ) -> list[MembershipChange]:
        """Re-evaluates hooks for time-based changes at ``now_us``: the users
        each hook names (:meth:`ProfileHook.sweep_candidates`) are loaded and
        their changes (segment entries and exits) committed with their
        profiles, under the versions they were read at.

        Args:
            now_us: the sweep's clock.
            chunk: users per commit.
            owns: keeps the users this processor is responsible for (a
                consumer of some stream partitions sweeps their users only).

        Returns:
            The committed membership changes.
        """
        candidates: set[str] = set()
        for hook in self.hooks:
            candidates |= hook.sweep_candidates(self.store, now_us)
        ordered = sorted(u for u in candidates if owns is None or owns(u))
        committed: list[MembershipChange] = []
        for i in range(0, len(ordered), chunk):
            part = ordered[i : i + chunk]
            for _ in range(self.config.max_attempts):
                touched = set(part)
                try:
                    self.ensure_cached(part)
                    batch = CommitBatch()
                    written = []
                    for uid in part:
                        user = self.cache[uid]
                        changes = [c for h in self.hooks for c in h.on_sweep(user, now_us)]
                        if changes:
                            batch.memberships += changes
                            written.append(uid)
                            batch.profiles.append(
                                ProfileWrite(
                                    uid,
                                    user.version,
                                    encode_doc(user.profile.to_doc()),
                                )
                            )
                    conflicts = self.store.commit(batch) if not batch.is_empty() else []
                except BaseException:
                    self.invalidate(touched)
                    raise
                if not conflicts:
                    for uid in written:
                        self.cache[uid].version += 1
                    committed += batch.memberships
                    break
                self.invalidate(touched)
                self.stats.conflicts += 1
            else:
                raise CommitConflictError(f"sweep of {len(part)} users kept conflicting")
        return committed
