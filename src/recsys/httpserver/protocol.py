"""uvicorn's httptools protocol hardened for open endpoints, and how to serve with it.

See :mod:`recsys.httpserver` for what it adds; :class:`HttpServerConfig` holds
the limits, :class:`ServerThread` serves an ASGI 3 application with them, and
:func:`read_body` and :func:`send_json` are the application's side.

Example::

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(scope, receive, send, max_body_bytes=1024, body_timeout_s=5)
        if body is not None:  # None: the error reply is sent already
            await send_json(send, 200, {"bytes": len(body)})

    server = ServerThread(app, HttpServerConfig(port=0, name="echo"))
    host, port = server.start()
    server.stop()
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, cast

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class HttpServerConfig:
    """Listen address and connection limits of a :class:`ServerThread`.

    Attributes:
        host: address to listen on (loopback by default).
        port: TCP port (0 picks a free one).
        max_header_bytes: largest request line plus headers (431 beyond).
        header_timeout_s: time for a request line and headers to arrive (408).
        keep_alive_s: idle time after which a keep-alive connection closes.
        linger_s: how long a connection closed with a body unread keeps
            discarding what the client sends (so it reads the reply).
        backlog: listen backlog (the kernel caps it at ``net.core.somaxconn``).
        max_connections: open connections (and requests) beyond which new
            requests get uvicorn's 503.
        loop: uvicorn's event loop: ``auto`` (uvloop when installed),
            ``uvloop`` or ``asyncio``.
        shutdown_timeout_s: :meth:`ServerThread.stop` waits this long for
            requests in flight.
        lifespan: ``off``, or ``on`` to send the application ASGI lifespan
            events (start-up and shutdown work on the server's loop).
        name: the serving thread's name.

    Example:
        >>> HttpServerConfig(port=0).max_header_bytes
        16384
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_header_bytes: int = 16_384
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    linger_s: float = 2.0
    backlog: int = 2048
    max_connections: int = 1024
    loop: str = "auto"
    shutdown_timeout_s: int = 10
    lifespan: Literal["off", "on"] = "off"
    name: str = "http-server"

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "backlog", "max_connections", "keep_alive_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"HttpServerConfig.{name} must be >= 1")
        if self.shutdown_timeout_s < 1:
            raise ValueError("HttpServerConfig.shutdown_timeout_s must be >= 1")
        if not self.header_timeout_s > 0:
            raise ValueError("HttpServerConfig.header_timeout_s must be > 0")
        if self.linger_s < 0:
            raise ValueError("HttpServerConfig.linger_s must be >= 0")
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError(f"loop: expected auto, uvloop or asyncio, got {self.loop!r}")
        if self.lifespan not in ("off", "on"):
            raise ValueError(f"lifespan: expected off or on, got {self.lifespan!r}")


def reply_bytes(status: int, payload: Mapping[str, Any], close: bool) -> bytes:
    """A complete HTTP/1.1 JSON response, for replies the protocol sends itself.

    Example:
        >>> reply_bytes(400, {"error": "x"}, close=True).split(b"\\r\\n")[0]
        b'HTTP/1.1 400 Bad Request'
    """
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode("ascii") + body


class LingeringTransport(asyncio.Transport):
    """The connection's transport with a lingering close.

    Closing a socket while the peer is still sending makes the kernel answer
    with a reset, which can destroy the reply before the client reads it (a
    401 or 413 sent before the body). So :meth:`close` half-closes instead:
    the reply is flushed and followed by FIN, incoming data is discarded, and
    the socket closes when the client closes its side or after ``linger_s``.
    """

    def __init__(self, inner: asyncio.Transport, linger_s: float) -> None:
        super().__init__()
        self.inner = inner
        self.linger_s = linger_s
        self.lingering = False

    def close(self) -> None:
        if self.lingering or self.inner.is_closing():
            return
        if self.linger_s <= 0 or not self.inner.can_write_eof():
            self.inner.close()
            return
        self.lingering = True
        try:
            self.inner.write_eof()
            # Flow control may have paused reading (a body over 64 KiB in
            # hand); discarding needs it on, or the client blocks in its send.
            if not self.inner.is_reading():
                self.inner.resume_reading()
        except (OSError, RuntimeError):
            self.inner.close()
            return
        asyncio.get_running_loop().call_later(self.linger_s, self.inner.close)

    def close_now(self) -> None:
        self.lingering = True
        self.inner.close()

    def is_closing(self) -> bool:
        return self.lingering or self.inner.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.lingering:
            self.inner.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if not self.lingering:
            self.inner.writelines(list_of_data)

    def write_eof(self) -> None:
        self.inner.write_eof()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def abort(self) -> None:
        self.lingering = True
        self.inner.abort()

    def pause_reading(self) -> None:
        # Lingering reads on, to discard: a paused socket would fill up and
        # stall the client before it reads the reply.
        if not self.lingering:
            self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def is_reading(self) -> bool:
        return self.inner.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.inner.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.inner.set_write_buffer_limits(high, low)


class HardenedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus what it lacks for an open endpoint:
    a deadline for the request line and headers (uvicorn only times out idle
    keep-alive connections), a cap on header bytes (llhttp has none), JSON
    error replies that name the parse error, and the lingering close.

    :class:`ServerThread` subclasses it with the limits as class attributes
    (uvicorn builds protocols from a class).
    """

    header_timeout_s: float = 10.0
    max_header_bytes: int = 16_384
    linger_s: float = 2.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._wrapped = LingeringTransport(cast(asyncio.Transport, transport), self.linger_s)
        self._header_timer: asyncio.TimerHandle | None = None
        # From the end of a message (or the connection's start) to the end of
        # the next request's headers, received bytes count against
        # max_header_bytes.
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_size = 0  # of the parsed request line and headers
        self._too_big = False
        super().connection_made(self._wrapped)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self._wrapped.is_closing():
            if self._header_bytes:
                self._reject(408, "request headers not received in time")
            else:
                self._wrapped.close()  # connected and said nothing

    def _reject(self, status: int, message: str) -> None:
        """Answers ``status`` itself and closes: for problems found below the
        application (parse errors, limits on headers)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self._wrapped.close()
                return
            # The application is waiting for the body: it sees a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
        self._wrapped.write(reply_bytes(status, {"error": message}, close=True))
        self._wrapped.close()

    def data_received(self, data: bytes) -> None:
        if self._wrapped.lingering:
            return  # discarding what follows a final reply
        self._unset_keepalive_if_required()
        if self._awaiting_headers:
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported; send HTTP/1.1")
            return
        except httptools.HttpParserError as e:
            self._reject(400, f"malformed HTTP request: {e}")
            return
        # The parser keeps a header it has not finished in memory: stop a
        # request whose headers grow past the limit before they end, too.
        if self._too_big or (self._awaiting_headers and self._header_bytes > self.max_header_bytes):
            self._reject(431, f"request line and headers over {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_size = 0
        self._arm_header_timer()  # from the request's first byte

    def on_url(self, url: bytes) -> None:
        self._header_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = 0
        self._cancel_header_timer()
        if self._header_size > self.max_header_bytes:
            self._too_big = True  # answered once the parser returns; no application runs
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._too_big:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._awaiting_headers = True  # what follows a message starts with headers
        self._header_bytes = 0
        if not self._too_big:
            super().on_message_complete()

    def shutdown(self) -> None:
        # Server shutdown closes idle connections at once, without lingering.
        if self.cycle is None or self.cycle.response_complete:
            self._wrapped.close_now()
        else:
            self.cycle.keep_alive = False


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case, as ASGI gives them), or None.

    Example:
        >>> header([(b"content-length", b"2")], b"content-length")
        b'2'
    """
    for k, v in headers:
        if k == name:
            return v
    return None


def has_body(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether the request announces a body (chunked, or a non-zero Content-Length):
    a reply that leaves it unread must close the connection.

    Example:
        >>> has_body([(b"content-length", b"0")])
        False
    """
    length = header(headers, b"content-length")
    return header(headers, b"transfer-encoding") is not None or (
        length is not None and length != b"0"
    )


async def send_json(
    send: Send,
    status: int,
    payload: Mapping[str, Any],
    extra: Sequence[tuple[bytes, bytes]] = (),
    close: bool = False,
) -> None:
    """One JSON reply; ``close`` ends the connection after it (a body left
    unread, or a stream that cannot be trusted further).

    Args:
        send: the ASGI send callable.
        status: the HTTP status.
        payload: the JSON body (``json.dumps`` must accept it).
        extra: more headers.
        close: add ``Connection: close``.
    """
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += extra
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(
    scope: Scope, receive: Receive, send: Send, max_body_bytes: int, body_timeout_s: float
) -> bytes | None:
    """The request's body, read within its limits, or None after an error reply.

    Checks the framing from the headers first (411 without ``Content-Length``
    or ``Transfer-Encoding: chunked``; 400 for another transfer coding or a
    length that is not a number; 413 at once for a declared length over the
    limit), then counts the bytes as they arrive and stops at the first one
    past the limit (413, the rest unread), chunked bodies included. The whole
    body must arrive within ``body_timeout_s`` (408). Every error reply closes
    the connection. None without a reply: the client disconnected.

    Args:
        scope: the request's ASGI scope.
        receive: the ASGI receive callable.
        send: the ASGI send callable.
        max_body_bytes: the largest body accepted.
        body_timeout_s: time for the whole body, from the call.

    Returns:
        The body, or None when the request ended here.
    """
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    length_text = header(headers, b"content-length")
    chunked = header(headers, b"transfer-encoding")
    limit = max_body_bytes
    if chunked is not None:
        if chunked.strip().lower() != b"chunked":
            error = f"unsupported Transfer-Encoding {chunked.decode('latin-1')!r}; use chunked"
            await send_json(send, 400, {"error": error}, close=True)
            return None
    elif length_text is None:
        error = "Content-Length required (or Transfer-Encoding: chunked)"
        await send_json(send, 411, {"error": error}, close=True)
        return None
    elif not length_text.strip().isdigit():
        error = f"Content-Length must be a non-negative integer, got {length_text[:40]!r}"
        await send_json(send, 400, {"error": error}, close=True)
        return None
    elif int(length_text) > limit:
        await send_json(send, 413, {"error": f"body larger than {limit} bytes"}, close=True)
        return None

    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(body_timeout_s):
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None  # the client left: nobody to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    # Stop here: what was read is dropped, the rest is not read.
                    parts.clear()
                    error = f"body larger than {limit} bytes"
                    await send_json(send, 413, {"error": error}, close=True)
                    return None
                parts.append(chunk)
                more = bool(message.get("more_body", False))
    except TimeoutError:
        error = f"body not received within {body_timeout_s:g} s"
        await send_json(send, 408, {"error": error}, close=True)
        return None
    return b"".join(parts)


class ServerThread:
    """Serves an ASGI 3 application with :class:`HardenedHttpProtocol` from a
    background thread (uvicorn on its own event loop).

    Args:
        app: the ASGI application.
        config: listen address and limits.

    Example::

        server = ServerThread(app, HttpServerConfig(port=0))
        host, port = server.start()
        server.stop()
    """

    def __init__(self, app: App, config: HttpServerConfig) -> None:
        self.app = app
        self.config = config
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def start(self) -> tuple[str, int]:
        """Binds the address and serves in a background thread.

        Returns:
            The bound ``(host, port)``.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started, or the server did not come up.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.config.name} is already running")
        cfg = self.config
        # Bound here, so a taken port raises in the caller (uvicorn would exit
        # its thread instead).
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.create_server((cfg.host, cfg.port), family=family, backlog=cfg.backlog)
        protocol = type(
            "ServerProtocol",
            (HardenedHttpProtocol,),
            {
                "header_timeout_s": cfg.header_timeout_s,
                "max_header_bytes": cfg.max_header_bytes,
                "linger_s": cfg.linger_s,
            },
        )
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                http=protocol,
                loop=cfg.loop,
                lifespan=cfg.lifespan,
                interface="asgi3",
                log_config=None,  # leave the process's logging alone
                access_log=False,  # access logs would carry client addresses
                server_header=False,
                proxy_headers=False,
                backlog=cfg.backlog,
                timeout_keep_alive=cfg.keep_alive_s,
                limit_concurrency=cfg.max_connections,
                timeout_graceful_shutdown=cfg.shutdown_timeout_s,
            )
        )
        # uvicorn captures SIGINT/SIGTERM only when it runs in the main thread
        # (this uvicorn has no install_signal_handlers switch): from this thread
        # it leaves the process's handlers to the caller.
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=cfg.name, daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"the HTTP server of {cfg.name} did not start")
            time.sleep(0.005)
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stops accepting, lets requests in flight finish (up to
        ``shutdown_timeout_s``), closes; does nothing when not running."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=self.config.shutdown_timeout_s + 5)
