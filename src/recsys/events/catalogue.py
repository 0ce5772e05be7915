"""The item catalogue of the real-time side: ``item_published`` events become records.

An item published after training arrives like any event: a producer or the HTTP
collector validates it (:mod:`recsys.events.validation`: ``item_id``, and a payload of
``title``, ``categories`` and ``release_date``) and appends it to the store's stream.
:class:`CatalogueConsumer` reads the stream in its own consumer group (``catalogue``),
checks each ``item_published`` event against the served vocabularies (its categories
must be ones the model knows, its id an integer), and writes a :class:`CatalogueRecord`
into :class:`CatalogueStore`, the catalogue table of the same store (SQLite: table
``catalogue_items`` in the store's database file; Redis: hash ``<prefix>:catalogue:items``
with the versions in the sorted set ``<prefix>:catalogue:versions``). Every write takes
the next catalogue version, so readers (the running ``recommend`` model,
:mod:`recsys.runtime.cold_items`) ask for what changed since the version they hold.

An event whose categories the vocabularies do not hold, or whose item id is not an
integer, is refused: it becomes a dead letter naming every problem (``source``
``catalogue``), never a record with a guessed category. A re-published item id
replaces the record (new version, same item): readers update the item instead of
adding a second one. Other event types are acknowledged and skipped.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> store = SqliteStore(group="catalogue")
    >>> catalogue = CatalogueStore(store)
    >>> consumer = CatalogueConsumer(store, catalogue, categories=["Comedy", "Drama"])
    >>> consumer.run(until_idle=True).records
    0
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from recsys.events.deadletter import DeadLetter
from recsys.events.schema import Event, EventType
from recsys.events.store import CommitBatch, Delivery, RealtimeStore
from recsys.events.validation import EventValidationError, EventValidator, ValidationConfig

CATALOGUE_GROUP = "catalogue"
"""The consumer group of :class:`CatalogueConsumer` (the profiles' group is refused)."""
PROFILES_GROUP = "profiles"

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS catalogue_items (
    item_id TEXT PRIMARY KEY, version INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS catalogue_version ON catalogue_items(version);
"""


class CatalogueError(ValueError):
    """An ``item_published`` event the catalogue refuses.

    Attributes:
        errors: one ``"field: message"`` per problem.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = tuple(errors)


@dataclass(frozen=True)
class CatalogueRecord:
    """One item of the catalogue, as readers get it.

    Attributes:
        item_id: the raw item id (an integer, like the trained catalogue's ids).
        categories: category (genre) names, each one the vocabularies know.
        release_date: ``YYYY-MM-DD`` or None.
        year: the year the year feature buckets (None: the release date's).
        title: display title.
        event_id: the event that wrote this version.
        published_us: the event's time (epoch microseconds).
        version: the catalogue version of this write (0 before it is stored).
        created: the version of the item's first write (readers order items by it, so
            a reader that starts later gives them the same order).
    """

    item_id: int
    categories: tuple[str, ...] = ()
    release_date: str | None = None
    year: int | None = None
    title: str = ""
    event_id: str = ""
    published_us: int = 0
    version: int = 0
    created: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (what :meth:`CatalogueStore.changes` returns)."""
        out = asdict(self)
        out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> CatalogueRecord:
        return cls(
            item_id=int(value["item_id"]),
            categories=tuple(str(c) for c in value.get("categories", ())),
            release_date=value.get("release_date"),
            year=None if value.get("year") is None else int(value["year"]),
            title=str(value.get("title", "")),
            event_id=str(value.get("event_id", "")),
            published_us=int(value.get("published_us", 0)),
            version=int(value.get("version", 0)),
            created=int(value.get("created", 0)),
        )


def record_from_event(event: Event, categories: Sequence[str] | None) -> CatalogueRecord:
    """The catalogue record of a validated ``item_published`` event.

    Args:
        event: the event.
        categories: the category names the served vocabularies know (None: any).

    Raises:
        CatalogueError: not an ``item_published`` event, an id that is not an integer,
            or categories outside ``categories`` (every problem is listed).

    Example:
        >>> from recsys.events.schema import Event, EventType
        >>> e = Event("e1", "editor", "s", EventType.ITEM_PUBLISHED, 0, item_id=5,
        ...           payload={"categories": ["Comedy"], "release_date": "1998-03-01"})
        >>> record_from_event(e, ["Comedy"]).categories
        ('Comedy',)
    """
    errors: list[str] = []
    if event.type is not EventType.ITEM_PUBLISHED:
        raise CatalogueError([f"type: {event.type.value} is not an item_published event"])
    item = event.item_id
    item_id: int | None = None
    if isinstance(item, int) and not isinstance(item, bool):
        item_id = item
    elif isinstance(item, str) and item.lstrip("-").isdigit():
        item_id = int(item)
    else:
        errors.append(f"item_id: {item!r} is not an integer id (the served catalogue's ids are)")
    payload = event.payload
    names = [str(c) for c in payload.get("categories", ())]
    if categories is not None:
        known = set(categories)
        unknown = [c for c in names if c not in known]
        if unknown:
            errors.append(
                f"payload.categories: {unknown} are not in the served vocabulary "
                f"(known: {sorted(known)})"
            )
    if errors or item_id is None:
        raise CatalogueError(errors)
    return CatalogueRecord(
        item_id=item_id,
        categories=tuple(dict.fromkeys(names)),  # duplicates once, order kept
        release_date=payload.get("release_date"),
        year=payload.get("year"),
        title=str(payload.get("title", "")),
        event_id=event.event_id,
        published_us=event.ts_us,
    )


class CatalogueStore:
    """The catalogue table of a real-time store (SQLite or Redis).

    Args:
        store: an open :class:`~recsys.events.sqlite_store.SqliteStore` or
            :class:`~recsys.events.redis_store.RedisStore` (its database file or its
            Redis server and key prefix hold the catalogue too).

    Example:
        >>> from recsys.events.sqlite_store import SqliteStore
        >>> catalogue = CatalogueStore(SqliteStore())
        >>> catalogue.upsert([CatalogueRecord(7, ("Drama",))])
        [1]
        >>> [r["item_id"] for r in catalogue.changes(0, 10)]
        [7]
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        if hasattr(store, "_db"):
            self.kind = "sqlite"
            with store._lock:
                store._db.executescript(_SQLITE_SCHEMA)
        elif hasattr(store, "r"):
            self.kind = "redis"
            self._items = f"{store.prefix}:catalogue:items"
            self._versions = f"{store.prefix}:catalogue:versions"
            self._seq = f"{store.prefix}:catalogue:seq"
        else:
            raise TypeError(f"the catalogue needs a SqliteStore or a RedisStore, not {store!r}")

    def upsert(self, records: Sequence[CatalogueRecord]) -> list[int]:
        """Writes each record under the next catalogue version (replacing a record of the
        same item id); returns the versions."""
        if self.kind == "sqlite":
            return self._upsert_sqlite(records)
        versions = []
        for record in records:
            version = int(self.store.r.incr(self._seq))
            old = self.store.r.hget(self._items, str(record.item_id))
            created = int(json.loads(old).get("created", version)) if old else version
            body = {**record.to_dict(), "version": version, "created": created}
            text = json.dumps(body, sort_keys=True)
            pipe = self.store.r.pipeline(transaction=True)
            pipe.hset(self._items, str(record.item_id), text)
            pipe.zadd(self._versions, {str(record.item_id): version})
            pipe.execute()
            versions.append(version)
        return versions

    def _upsert_sqlite(self, records: Sequence[CatalogueRecord]) -> list[int]:
        db, versions = self.store._db, []
        with self.store._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                sql = "SELECT COALESCE(MAX(version), 0) FROM catalogue_items"
                (top,) = db.execute(sql).fetchone()
                for record in records:
                    top += 1
                    old = db.execute(
                        "SELECT record FROM catalogue_items WHERE item_id = ?",
                        (str(record.item_id),),
                    ).fetchone()
                    created = int(json.loads(old[0]).get("created", top)) if old else top
                    body = {**record.to_dict(), "version": top, "created": created}
                    text = json.dumps(body, sort_keys=True)
                    db.execute(
                        "INSERT INTO catalogue_items (item_id, version, record) VALUES (?, ?, ?) "
                        "ON CONFLICT(item_id) DO UPDATE SET version = excluded.version, "
                        "record = excluded.record",
                        (str(record.item_id), top, text),
                    )
                    versions.append(int(top))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return versions

    def changes(self, after_version: int, limit: int) -> list[dict[str, Any]]:
        """Records written after ``after_version`` (their latest version only), oldest
        first, at most ``limit``."""
        if self.kind == "sqlite":
            rows = self.store._q(
                "SELECT record FROM catalogue_items WHERE version > ? ORDER BY version LIMIT ?",
                (int(after_version), int(limit)),
            )
            return [json.loads(r[0]) for r in rows]
        ids = self.store.r.zrangebyscore(
            self._versions, f"({int(after_version)}", "+inf", start=0, num=int(limit)
        )
        if not ids:
            return []
        texts = self.store.r.hmget(self._items, ids)
        return [json.loads(t) for t in texts if t is not None]

    def get(self, item_id: int) -> CatalogueRecord | None:
        """The stored record of one item, or None."""
        if self.kind == "sqlite":
            rows = self.store._q(
                "SELECT record FROM catalogue_items WHERE item_id = ?", (str(item_id),)
            )
            return CatalogueRecord.from_dict(json.loads(rows[0][0])) if rows else None
        text = self.store.r.hget(self._items, str(item_id))
        return CatalogueRecord.from_dict(json.loads(text)) if text else None

    def count(self) -> int:
        """Items in the catalogue."""
        if self.kind == "sqlite":
            return int(self.store._q("SELECT COUNT(*) FROM catalogue_items")[0][0])
        return int(self.store.r.hlen(self._items))


@dataclass
class CatalogueStats:
    """What :class:`CatalogueConsumer` read and wrote.

    Attributes:
        entries: stream deliveries read.
        items: ``item_published`` events among them.
        records: catalogue records written.
        refused: item events dead-lettered (unknown categories, non-integer ids).
        unparseable: deliveries that were not a valid event (dead-lettered).
        examples: the first refusal reasons.
    """

    entries: int = 0
    items: int = 0
    records: int = 0
    refused: int = 0
    unparseable: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CatalogueConsumerConfig:
    """Settings of :class:`CatalogueConsumer`.

    Attributes:
        name: consumer name in the group (stable over restarts).
        batch_size: entries per read.
        block_ms: how long a read waits for new entries.

    Example:
        >>> CatalogueConsumerConfig(name="catalogue-2").batch_size
        500
    """

    name: str = "catalogue-1"
    batch_size: int = 500
    block_ms: int = 200

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.block_ms < 0:
            raise ValueError("batch_size must be >= 1 and block_ms >= 0")


class CatalogueConsumer:
    """Reads the stream in its own group and keeps the catalogue table current.

    Args:
        store: the store, opened with the catalogue's group
            (``SqliteStore(path, group="catalogue")``); the profiles' group is refused.
        catalogue: where records go (usually ``CatalogueStore(store)``).
        categories: the category names the served vocabularies know
            (``categories`` of the repository's ``cold_items.json``); None: any.
        config: see :class:`CatalogueConsumerConfig`.
    """

    def __init__(
        self,
        store: RealtimeStore,
        catalogue: CatalogueStore,
        categories: Sequence[str] | None,
        config: CatalogueConsumerConfig | None = None,
    ) -> None:
        if getattr(store, "group", None) == PROFILES_GROUP:
            raise ValueError(
                f"the catalogue consumer needs its own consumer group, not {PROFILES_GROUP!r} "
                f"(open the store with group={CATALOGUE_GROUP!r})"
            )
        self.store = store
        self.catalogue = catalogue
        self.categories = None if categories is None else list(categories)
        self.config = config or CatalogueConsumerConfig()
        self.stats = CatalogueStats()
        self._validator = EventValidator(ValidationConfig(max_future_skew_s=None))
        self._pending_done = False

    def step(self, block_ms: int | None = None) -> int:
        """One read (own unacknowledged entries first, then new ones), handled and
        acknowledged; returns the entries read."""
        cfg = self.config
        deliveries: list[Delivery] = []
        if not self._pending_done:
            deliveries = list(self.store.read(cfg.name, cfg.batch_size, 0, True, None))
            self._pending_done = not deliveries
        if not deliveries:
            wait = cfg.block_ms if block_ms is None else block_ms
            deliveries = list(self.store.read(cfg.name, cfg.batch_size, wait, False, None))
        self.handle(deliveries)
        return len(deliveries)

    def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Writes the records of the item events among ``deliveries``, dead-letters the
        refused ones, and acknowledges all of them."""
        if not deliveries:
            return
        records: list[CatalogueRecord] = []
        letters: list[DeadLetter] = []
        now_us = int(time.time() * 1e6)
        for delivery in deliveries:
            self.stats.entries += 1
            if not delivery.payload:
                continue  # erased after delivery: acknowledge only
            try:
                event = self._validator.validate_json(delivery.payload)
            except EventValidationError:
                # the profile consumer dead-letters what is not a valid event
                self.stats.unparseable += 1
                continue
            if event.type is not EventType.ITEM_PUBLISHED:
                continue
            self.stats.items += 1
            try:
                records.append(record_from_event(event, self.categories))
            except CatalogueError as error:
                self.stats.refused += 1
                if len(self.stats.examples) < 10:
                    self.stats.examples.append(f"{event.event_id}: {error}")
                letters.append(
                    DeadLetter.from_raw(event.to_dict(), list(error.errors), "catalogue", now_us)
                )
        # the last write of an item in the batch wins, as it would one by one
        latest = list({r.item_id: r for r in records}.values())
        if latest:
            self.catalogue.upsert(latest)
            self.stats.records += len(latest)
        if letters:
            self.store.add_dead_letters(letters)
        self.store.commit(CommitBatch(acks=list(dict.fromkeys(d.entry_id for d in deliveries))))

    def run(
        self,
        stop: threading.Event | None = None,
        until_idle: bool = False,
        max_entries: int | None = None,
    ) -> CatalogueStats:
        """Consumes until stopped (or idle, or after ``max_entries``).

        Returns:
            The counters.
        """
        read = 0
        while stop is None or not stop.is_set():
            n = self.step()
            read += n
            if until_idle and n == 0 and self._pending_done:
                break
            if max_entries is not None and read >= max_entries:
                break
        return self.stats


def open_catalogue(
    url: str, group: str = CATALOGUE_GROUP, timeout_s: float = 5.0
) -> tuple[Any, CatalogueStore]:
    """Opens the store a URL names (``sqlite:///path`` or ``redis://host:port/db[?prefix=P]``)
    with ``group`` and its catalogue table.

    ``timeout_s`` is the Redis socket timeout: longer than a consumer's blocking read
    (the request path's readers use a quarter of a second).

    Example::

        store, catalogue = open_catalogue("sqlite:///var/recsys/rt.db")
    """
    from recsys.runtime.user_state import parse_store_url

    loc = parse_store_url(url, timeout_s)
    if loc.kind == "redis":
        from recsys.events.redis_store import RedisStore

        store: Any = RedisStore(loc.target, prefix=loc.prefix, group=group)
    else:
        from recsys.events.sqlite_store import SqliteStore

        store = SqliteStore(loc.target, group=group)
    return store, CatalogueStore(store)


def add_catalogue_command(
    sub: Any, stop_on_signals: Callable[[], AbstractContextManager[threading.Event]]
) -> None:
    """Adds ``catalogue`` to the ``recsys realtime`` subcommands (``sub``: the subparsers
    action); ``stop_on_signals`` gives the event SIGINT/SIGTERM set."""
    p = sub.add_parser(
        "catalogue",
        help="keep the item catalogue: item_published events -> catalogue records (cold items)",
    )
    p.add_argument(
        "--repo-folder",
        help="a recommend version folder with cold_items.json: its categories are the "
        "ones accepted (default: any category)",
    )
    p.add_argument("--group", default=CATALOGUE_GROUP, help="consumer group")
    p.add_argument("--name", default="catalogue-1", help="consumer name")
    p.add_argument("--until-idle", action="store_true", help="stop when nothing is new")
    p.set_defaults(run=partial(run_catalogue_command, stop_on_signals=stop_on_signals),
                   needs_store=False)  # fmt: skip


def run_catalogue_command(
    args: Any,
    store: Any,
    stop_on_signals: Callable[[], AbstractContextManager[threading.Event]],
) -> int:
    """Runs ``recsys realtime catalogue``: consumes, then prints the counters as JSON."""
    from recsys.events.attribution_consumer import _open

    categories = None
    if args.repo_folder:
        spec = json.loads((Path(args.repo_folder) / "cold_items.json").read_text())
        categories = list(spec["categories"])
    own = store is None
    store = _open(args) if store is None else store
    try:
        consumer = CatalogueConsumer(
            store, CatalogueStore(store), categories, CatalogueConsumerConfig(name=args.name)
        )
        with stop_on_signals() as stop:
            consumer.run(stop=stop, until_idle=args.until_idle)
        print(json.dumps(asdict(consumer.stats), indent=2))
    finally:
        if own:
            store.close()
    return 0
