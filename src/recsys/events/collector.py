"""HTTP collector: batches of JSON events in, authenticated by API key.

``POST /v1/events`` with header ``X-API-Key: <key>`` (or ``Authorization:
Bearer <key>``) and a body that is a JSON array of events or
``{"events": [...]}``, sent with ``Content-Length`` or ``Transfer-Encoding:
chunked``. Every event is validated: valid ones are published to the stream
(canonical JSON) before the reply, once per event id
(:meth:`~recsys.events.store.RealtimeStore.publish_new`); invalid ones and id
conflicts are stored as dead letters and reported back by index. ``GET
/healthz`` answers 200.

How it runs: an ASGI application (:meth:`EventCollector.asgi`) served by
uvicorn on one event loop (uvloop when installed) with the httptools parser
hardened by :mod:`recsys.httpserver`, keep-alive, and a listen backlog of
``CollectorConfig.backlog``. A batch is parsed and validated on the loop (CPU
work, which threads could not run in parallel anyway); its store calls, which
block on I/O, run in a bounded thread pool (``store_threads``), so a slow store
never stops the loop from reading other requests, answering 401s and enforcing
timeouts.
:meth:`EventCollector.start` serves from a background thread (tests,
``recsys realtime collect``); :meth:`EventCollector.handle` is the same
processing without HTTP.

Limits, in the order a request meets them:

* the request line and headers: at most ``max_header_bytes`` (431), within
  ``header_timeout_s`` of the connection or of the request's first byte
  (408; a connection that sends nothing is closed); idle keep-alive
  connections close after ``keep_alive_s``; past ``max_connections`` open
  connections, 503;
* the key, from the headers alone: nothing of the body is read without one;
* the declared ``Content-Length`` (413 at once when over ``max_body_bytes``),
  then the body as it arrives (413 as soon as it passes the limit, chunked
  bodies included), so no more than the limit is ever held per request; the
  whole body within ``body_timeout_s`` of the headers (408);
* at most ``max_batch`` events per request (413).

Replies (JSON, except uvicorn's own 503 past ``max_connections``):

===  ==========================================================================
200  ``{"accepted": n, "duplicates": n, "rejected": [{"index", "event_id",
     "errors"}], "conflicts": [{"index", "event_id", "reason"}]}``; accepted
     events are in the stream; duplicates (exact resends of published
     events) were not published again; rejected events and conflicts (an id
     already used with other content or by another user) are dead letters
400  malformed HTTP (a bad or doubled ``Content-Length``, both framings, an
     unsupported ``Transfer-Encoding``); or a body that is not UTF-8, empty,
     not JSON (nesting too deep, a number past 4,300 digits) or not a batch,
     which becomes a dead letter
401  missing or unknown key (``WWW-Authenticate: Bearer``)
404  unknown path; 405 other methods (``Allow`` header)
408  headers or body too slow
411  a body with neither ``Content-Length`` nor ``Transfer-Encoding: chunked``
413  body over ``max_body_bytes`` or more than ``max_batch`` events (nothing
     of the request is kept: the client must split it)
431  headers over ``max_header_bytes``
503  the store failed (send the batch again: what was published comes back
     as duplicates) or too many connections
===  ==========================================================================

Replies that leave a request body unread close the connection; they half
close it first and discard what the client still sends for up to
``linger_s``, so a client writing its body reads the reply instead of a
connection reset.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> c = EventCollector(SqliteStore(), CollectorConfig(api_keys={"web": "s3cret"}))
    >>> c.handle(b'[]', "s3cret")
    (200, {'accepted': 0, 'duplicates': 0, 'rejected': [], 'conflicts': []})
    >>> c.handle(b'[]', "wrong")[0]
    401
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from recsys.events.deadletter import DeadLetter
from recsys.events.store import (
    CONFLICT_REASONS,
    DUPLICATE,
    PUBLISHED,
    EventKey,
    RealtimeStore,
    canonical_event,
)
from recsys.events.validation import EventValidationError, EventValidator, decode_json
from recsys.httpserver import (
    HttpServerConfig,
    Receive,
    Scope,
    Send,
    ServerThread,
    has_body,
    header,
    read_body,
    send_json,
)

KEYS_ENV = "RECSYS_COLLECTOR_KEYS"
log = logging.getLogger(__name__)


def keys_from_env(var: str = KEYS_ENV) -> dict[str, str]:
    """API keys from ``name:key,name2:key2`` in an environment variable."""
    out: dict[str, str] = {}
    for part in os.environ.get(var, "").split(","):
        if part.strip():
            name, sep, key = part.strip().partition(":")
            if not sep or not key:
                raise ValueError(f"{var}: expected name:key pairs, got {part!r}")
            out[name] = key
    return out


@dataclass(frozen=True)
class CollectorConfig:
    """Settings of :class:`EventCollector`.

    Attributes:
        host: address to listen on (loopback by default).
        port: TCP port (0 picks a free one).
        api_keys: key name -> secret key; the name labels dead letters and logs.
        max_batch: most events per request.
        max_body_bytes: largest request body, enforced while it is read.
        max_header_bytes: largest request line plus headers.
        header_timeout_s: time for a request line and headers to arrive.
        body_timeout_s: time for a body to arrive after its headers.
        keep_alive_s: idle time after which a keep-alive connection closes.
        linger_s: how long a connection closed with a body unread keeps
            discarding what the client sends (so it reads the reply).
        backlog: listen backlog (the kernel caps it at ``net.core.somaxconn``).
        max_connections: open connections (and requests) beyond which new
            requests get 503; also bounds memory to about this many bodies.
        store_threads: threads making the store calls (validation runs on
            the event loop): calls in flight at once, which a network store
            (Redis) needs while it waits for replies.
        loop: uvicorn's event loop: ``auto`` (uvloop when installed),
            ``uvloop`` or ``asyncio``.
        shutdown_timeout_s: :meth:`EventCollector.stop` waits this long for
            requests in flight.
    """

    host: str = "127.0.0.1"
    port: int = 8088
    api_keys: Mapping[str, str] = field(default_factory=dict)
    max_batch: int = 1000
    max_body_bytes: int = 2_000_000
    max_header_bytes: int = 16_384
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    linger_s: float = 2.0
    backlog: int = 2048
    max_connections: int = 1024
    store_threads: int = 8
    loop: str = "auto"
    shutdown_timeout_s: int = 10

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_header_bytes", "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"CollectorConfig.{name} must be >= 1")
        for name in ("max_connections", "store_threads", "keep_alive_s", "shutdown_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"CollectorConfig.{name} must be >= 1")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CollectorConfig.{name} must be > 0")
        if self.linger_s < 0:
            raise ValueError("CollectorConfig.linger_s must be >= 0")
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError(
                f"CollectorConfig.loop: expected auto, uvloop or asyncio, got {self.loop!r}"
            )


@dataclass
class Prepared:
    """A request body checked and ready for the store (:meth:`EventCollector.prepare`).

    Attributes:
        source: the dead letters' source, ``http:<key name>``.
        received_us: when it was received (dead letters' time).
        status: 200, or the status of a body refused as a whole.
        error: why the body was refused as a whole ("" when it was not).
        payloads: the valid events' canonical JSON, to publish.
        keys: their :class:`~recsys.events.store.EventKey`.
        positions: their index in the batch.
        rejected: the reply's entries for invalid events.
        letters: dead letters so far (invalid events, or the refused body).
    """

    source: str
    received_us: int
    status: int = 200
    error: str = ""
    payloads: list[str] = field(default_factory=list)
    keys: list[EventKey] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)

    def store_in(self, store: RealtimeStore) -> tuple[int, dict[str, Any]]:
        """Publishes the valid events once per id and stores the dead letters
        (those of conflicts too); the reply.

        Raises:
            Exception: whatever the store raised.
        """
        if self.status != 200:
            if self.letters:
                store.add_dead_letters(self.letters)
            return self.status, {"error": self.error}
        accepted = duplicates = 0
        conflicts: list[dict[str, Any]] = []
        letters = list(self.letters)
        if self.payloads:
            result = store.publish_new(self.payloads, self.keys)
            for j, outcome in enumerate(result.outcomes):
                if outcome == PUBLISHED:
                    accepted += 1
                elif outcome == DUPLICATE:
                    duplicates += 1
                else:
                    reason = CONFLICT_REASONS[outcome]
                    # From the canonical text: the parsed request is not kept
                    # while batches wait for a store thread (memory per request).
                    raw = json.loads(self.payloads[j])
                    letter = DeadLetter.from_raw(raw, [reason], self.source, self.received_us)
                    letters.append(letter)
                    event_id = self.keys[j].event_id
                    conflicts.append(
                        {"index": self.positions[j], "event_id": event_id, "reason": reason}
                    )
        if letters:
            store.add_dead_letters(letters)
        return 200, {
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": self.rejected,
            "conflicts": conflicts,
        }


class EventCollector:
    """Validates and publishes batches of events; see the module docstring.

    Args:
        store: the stream and dead-letter store (thread-safe: several store
            threads call it).
        config: listen address, keys, limits; default: keys from
            ``RECSYS_COLLECTOR_KEYS``.
        validator: event validator (checks timestamps against this clock).

    Raises:
        ValueError: no API key is configured.
    """

    def __init__(
        self,
        store: RealtimeStore,
        config: CollectorConfig | None = None,
        validator: EventValidator | None = None,
    ) -> None:
        self.store = store
        self.config = config or CollectorConfig(api_keys=keys_from_env())
        if not self.config.api_keys:
            raise ValueError(f"the collector needs at least one API key (set {KEYS_ENV})")
        self.validator = validator or EventValidator()
        self._digests = {
            name: hashlib.sha256(key.encode()).digest()
            for name, key in self.config.api_keys.items()
        }
        self._server: ServerThread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def authenticate(self, key: str | None) -> str | None:
        """The key's name, or None when the key is missing or unknown (constant time)."""
        if not key:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found = None
        for name, d in self._digests.items():
            if hmac.compare_digest(digest, d):
                found = name
        return found

    def handle(self, body: bytes, api_key: str | None) -> tuple[int, dict[str, Any]]:
        """Processes one request body, as ``POST /v1/events`` does.

        Args:
            body: the request body.
            api_key: the key the client sent, or None.

        Returns:
            ``(HTTP status, JSON reply)``.
        """
        name = self.authenticate(api_key)
        if name is None:
            return 401, {"error": "missing or unknown API key"}
        if len(body) > self.config.max_body_bytes:
            return 413, {"error": f"body larger than {self.config.max_body_bytes} bytes"}
        return self.process(body, name)

    def process(self, body: bytes, key_name: str) -> tuple[int, dict[str, Any]]:
        """Validates, publishes and dead-letters one authenticated body.

        Args:
            body: the request body (within the size limit).
            key_name: the name of the client's key (dead letters' source
                ``http:<name>``).

        Returns:
            ``(HTTP status, JSON reply)``; see the module docstring.

        Raises:
            Exception: whatever the store raised (the server answers 503).
        """
        return self.prepare(body, key_name).store_in(self.store)

    def prepare(self, body: bytes, key_name: str) -> Prepared:
        """The part of :meth:`process` that needs no store: the body parsed,
        every event validated and in its canonical form, the refused ones as
        dead letters.

        Pure CPU work: the server runs it on the event loop, and only
        :meth:`Prepared.store_in` in a store thread, which may block on I/O
        (Python work in threads would only contend for the interpreter lock).

        Args:
            body: the request body (within the size limit).
            key_name: the name of the client's key.

        Returns:
            What :meth:`Prepared.store_in` needs.
        """
        now_us = time.time_ns() // 1000
        source = f"http:{key_name}"
        out = Prepared(source=source, received_us=now_us)
        events, problem = _batch_of(body)
        if events is None:
            # Kept, not dropped: the raw body (clipped) as a dead letter.
            out.letters.append(DeadLetter.from_raw(body[:2000], [problem], source, now_us))
            out.status, out.error = 400, problem
            return out
        if len(events) > self.config.max_batch:
            out.status, out.error = 413, f"more than {self.config.max_batch} events in one batch"
            return out
        validate = self.validator.validate
        for i, raw in enumerate(events):
            try:
                event = validate(raw)
            except EventValidationError as e:
                letter = DeadLetter.from_raw(raw, list(e.errors), source, now_us)
                out.letters.append(letter)
                reasons = list(letter.reasons)  # surrogates escaped, as stored
                out.rejected.append({"index": i, "event_id": e.event_id, "errors": reasons})
                continue
            text, key = canonical_event(event)
            out.payloads.append(text)
            out.keys.append(key)
            out.positions.append(i)
        return out

    # -- ASGI application -------------------------------------------------------------
    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The collector as an ASGI 3 application (see the module docstring)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            if method in ("GET", "HEAD"):
                await send_json(send, 200, {"status": "ok"})
            else:
                await send_json(send, 405, {"error": "use GET"}, [(b"allow", b"GET, HEAD")])
            return
        if path != "/v1/events":
            await send_json(send, 404, {"error": "not found"})
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        body_follows = has_body(headers)
        if method != "POST":
            await send_json(send, 405, {"error": "use POST"}, [(b"allow", b"POST")], body_follows)
            return
        # The key comes from the headers only: nothing of the body is read
        # (nor "100 Continue" sent) for a client without one.
        name = self.authenticate(_key_of(headers))
        if name is None:
            await send_json(
                send,
                401,
                {"error": "missing or unknown API key"},
                [(b"www-authenticate", b'Bearer realm="recsys-events"')],
                body_follows,
            )
            return
        body = await read_body(
            scope, receive, send, self.config.max_body_bytes, self.config.body_timeout_s
        )
        if body is None:
            return  # answered (411, 400, 413, 408) or the client left
        loop = asyncio.get_running_loop()
        try:
            prepared = self.prepare(body, name)
            del body
            status, reply = await loop.run_in_executor(self._pool, prepared.store_in, self.store)
        except Exception:
            log.exception("event collector: the store failed")
            status, reply = (
                503,
                {
                    "error": "the event store failed; send the batch again "
                    "(events already published come back as duplicates)"
                },
            )
        await send_json(send, status, reply)

    # -- HTTP server --------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Serves in a background thread; returns the bound ``(host, port)``.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started, or the server did not come up.
        """
        if self._server is not None:
            raise RuntimeError("the collector is already running")
        cfg = self.config
        server = ServerThread(
            self.asgi,
            HttpServerConfig(
                host=cfg.host,
                port=cfg.port,
                max_header_bytes=cfg.max_header_bytes,
                header_timeout_s=cfg.header_timeout_s,
                keep_alive_s=cfg.keep_alive_s,
                linger_s=cfg.linger_s,
                backlog=cfg.backlog,
                max_connections=cfg.max_connections,
                loop=cfg.loop,
                shutdown_timeout_s=cfg.shutdown_timeout_s,
                name="event-collector",
            ),
        )
        self._pool = ThreadPoolExecutor(cfg.store_threads, thread_name_prefix="collector-store")
        self._server = server
        try:
            return server.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the server started by :meth:`start`: stops accepting, lets
        requests in flight finish (up to ``shutdown_timeout_s``), closes."""
        server, pool = self._server, self._pool
        self._server = self._pool = None
        if server is not None:
            server.stop()
        if pool is not None:
            pool.shutdown(wait=True)


def _batch_of(body: bytes) -> tuple[list[Any] | None, str]:
    """The events of a request body, or None and why the body is not a batch."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"body is not UTF-8 text ({e.reason} at byte {e.start})"
    if text.startswith("\ufeff"):  # RFC 8259: a parser may ignore a byte order mark
        text = text[1:]
    if not text or text.isspace():
        return None, "body is empty; expected a JSON array of events"
    try:
        doc = decode_json(text)
    except RecursionError:
        return None, "body is not JSON: nested too deeply"
    except ValueError as e:
        # Python refuses integers past 4,300 digits; say so without its advice
        # about sys.set_int_max_str_digits, which is for the server.
        why = str(e)
        if "integer string conversion" in why:
            why = "a number has more than 4300 digits"
        return None, f"body is not JSON: {why}"
    events = doc.get("events") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        return None, 'expected a JSON array of events or {"events": [...]}'
    return events, ""


def _key_of(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    key = header(headers, b"x-api-key")
    if not key:
        auth = header(headers, b"authorization") or b""
        if auth[:7].lower() == b"bearer ":
            key = auth[7:].strip()
    # Header bytes are Latin-1 by HTTP's rules; a key is ASCII.
    return key.decode("latin-1") if key else None
