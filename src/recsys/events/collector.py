"""HTTP collector: batches of JSON events in, authenticated by API key.

``POST /v1/events`` with header ``X-API-Key: <key>`` (or ``Authorization:
Bearer <key>``) and a body that is a JSON array of events or
``{"events": [...]}``. Every event is validated: valid ones are published to
the stream (canonical JSON) before the reply, invalid ones are stored as dead
letters and reported back by index with their errors. ``GET /healthz``
answers 200.

Replies: 200 ``{"accepted": n, "rejected": [{"index", "event_id", "errors"}]}``;
400 body not JSON or not a batch; 401 missing or unknown key; 413 body or
batch too large; 404/405 otherwise.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> c = EventCollector(SqliteStore(), CollectorConfig(api_keys={"web": "s3cret"}))
    >>> c.handle(b'[]', "s3cret")
    (200, {'accepted': 0, 'rejected': []})
    >>> c.handle(b'[]', "wrong")[0]
    401
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from recsys.events.deadletter import DeadLetter
from recsys.events.store import RealtimeStore
from recsys.events.validation import EventValidationError, EventValidator

KEYS_ENV = "RECSYS_COLLECTOR_KEYS"


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
        host: address to listen on.
        port: TCP port (0 picks a free one).
        api_keys: key name -> secret key; the name labels dead letters and logs.
        max_batch: most events per request.
        max_body_bytes: largest request body.
    """

    host: str = "127.0.0.1"
    port: int = 8088
    api_keys: Mapping[str, str] = field(default_factory=dict)
    max_batch: int = 1000
    max_body_bytes: int = 2_000_000


class EventCollector:
    """Validates and publishes batches of events; see the module docstring.

    Args:
        store: the stream and dead-letter store.
        config: listen address, keys, limits.
        validator: event validator (checks timestamps against this clock).
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
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def authenticate(self, key: str | None) -> str | None:
        """The key's name, or None when the key is missing or unknown (constant time)."""
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for name, d in self._digests.items():
            if hmac.compare_digest(digest, d):
                found = name
        return found

    def handle(self, body: bytes, api_key: str | None) -> tuple[int, dict[str, Any]]:
        """Processes one request body.

        Returns:
            ``(HTTP status, JSON reply)``.
        """
        name = self.authenticate(api_key)
        if name is None:
            return 401, {"error": "missing or unknown API key"}
        if len(body) > self.config.max_body_bytes:
            return 413, {"error": f"body larger than {self.config.max_body_bytes} bytes"}
        now_us = time.time_ns() // 1000
        source = f"http:{name}"
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            self.store.add_dead_letters(
                [DeadLetter.from_raw(body[:2000], [f"$: body is not JSON ({e})"], source, now_us)]
            )
            return 400, {"error": f"body is not JSON: {e}"}
        events = doc.get("events") if isinstance(doc, dict) else doc
        if not isinstance(events, list):
            return 400, {"error": 'expected a JSON array of events or {"events": [...]}'}
        if len(events) > self.config.max_batch:
            return 413, {"error": f"more than {self.config.max_batch} events in one batch"}
        accepted: list[str] = []
        rejected: list[dict[str, Any]] = []
        letters: list[DeadLetter] = []
        for i, raw in enumerate(events):
            try:
                accepted.append(self.validator.validate(raw).to_json())
            except EventValidationError as e:
                letters.append(DeadLetter.from_raw(raw, list(e.errors), source, now_us))
                rejected.append({"index": i, "event_id": e.event_id, "errors": list(e.errors)})
        if letters:
            self.store.add_dead_letters(letters)
        if accepted:
            self.store.publish(accepted)
        return 200, {"accepted": len(accepted), "rejected": rejected}

    # -- HTTP server --------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Serves in a background thread; returns the bound ``(host, port)``."""
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="recsys-events"')
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._reply(200, {"status": "ok"})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                if self.path != "/v1/events":
                    self._reply(404, {"error": "not found"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > collector.config.max_body_bytes:
                    self._reply(413, {"error": "body too large"})
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                key = self.headers.get("X-API-Key")
                auth = self.headers.get("Authorization", "")
                if not key and auth.startswith("Bearer "):
                    key = auth[len("Bearer ") :]
                status, payload = collector.handle(body, key)
                self._reply(status, payload)

            def log_message(self, format: str, *args: Any) -> None:
                return  # access logs would carry client addresses; keep them out

        self._server = ThreadingHTTPServer((self.config.host, self.config.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stops the server started by :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
