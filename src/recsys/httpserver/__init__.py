"""The project's hardened HTTP/1.1 server: uvicorn + httptools for open endpoints.

Used by the event collector (:mod:`recsys.events.collector`) and the recommend
gateway (:mod:`recsys.serving.http_gateway`). It imports nothing else of the
package. What it adds to uvicorn (:mod:`recsys.httpserver.protocol`):

* a deadline for the request line and headers (408) and a cap on their size
  (431), which uvicorn and llhttp lack;
* JSON error replies that name a parse error (400), for problems found below
  the application;
* a lingering close: a reply sent while the client is still writing its body
  reaches the client instead of a connection reset;
* :func:`read_body`: the framing checks (411, 400) and the body limit enforced
  while reading, chunked bodies included (413), within a deadline (408);
* :class:`ServerThread`: serves an ASGI application from a background thread
  on a socket bound by the caller's thread.

Example::

    from recsys.httpserver import HttpServerConfig, ServerThread, send_json

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send_json(send, 200, {"status": "ok"})

    server = ServerThread(app, HttpServerConfig(port=0))
    host, port = server.start()
    ...
    server.stop()
"""

from __future__ import annotations

from recsys.httpserver.protocol import (
    HardenedHttpProtocol,
    HttpServerConfig,
    LingeringTransport,
    Message,
    Receive,
    Scope,
    Send,
    ServerThread,
    has_body,
    header,
    read_body,
    reply_bytes,
    send_json,
)

__all__ = [
    "HardenedHttpProtocol",
    "HttpServerConfig",
    "LingeringTransport",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "ServerThread",
    "has_body",
    "header",
    "read_body",
    "reply_bytes",
    "send_json",
]
