"""An HTTP JSON gateway for ``recommend``: checked requests in, Triton over gRPC behind.

Triton 2.51's own HTTP endpoint answers a malformed body with 500 and has no body
limit. This gateway is the public HTTP face of the recommender instead: it reads each
request within fixed limits, checks it, answers every client mistake with a 4xx and a
message that names it, and forwards valid requests to the ``recommend`` model over
gRPC (:class:`~recsys.serving.recommend_client.AsyncRecommendClient`). It runs on the
event collector's hardened HTTP server (:mod:`recsys.httpserver`: uvicorn + httptools,
header deadline and size cap, body limit enforced while reading, lingering close).

Endpoints:

* ``POST /v1/recommend`` with ``{"user_id": 42, "k": 10, "context": {...}}``:
  ``user_id`` a JSON integer or a string of decimal digits (``"42"``: clients whose
  numbers are doubles, such as JavaScript, cannot hold every int64), ``k`` a JSON
  integer >= 1 (the server checks its ``max_k``), ``context`` optional, the fields of
  :class:`~recsys.runtime.context.RequestContext` with their rules. The reply is what
  the gRPC answer holds: ``{"user_id", "request_id", "items", "scores",
  "explanation"}``.
* ``POST /v1/recommend/batch`` with ``{"requests": [<request>, ...]}`` (1 to
  ``max_batch``): ``{"results": [<reply>, ...]}`` in request order, all or nothing.
* ``GET /v1/health/live``: 200 while the gateway serves.
* ``GET /v1/health/ready``: 200 when every model ``recommend`` needs is ready
  (:mod:`recsys.serving.health`), else 503 naming the models that are not.

Replies are JSON (except uvicorn's plain-text 503 past ``max_connections``); errors
are ``{"error": "..."}``:

===  ==========================================================================
400  body not UTF-8, not JSON (or NaN, a duplicate field, nesting too deep), not an
     object; a missing, unknown or mistyped field; ``k`` < 1 or beyond int64; an
     invalid context; malformed HTTP; an unsupported ``Transfer-Encoding``; or
     Triton refused the request (INVALID_ARGUMENT: its message, e.g. ``k`` above
     ``max_k``)
404  unknown path; 405 another method (``Allow`` header)
408  headers or body too slow
411  a body with neither ``Content-Length`` nor ``Transfer-Encoding: chunked``
413  body over ``max_body_bytes`` (the declared length, or as it arrives), or a
     batch over ``max_batch``
431  request line and headers over ``max_header_bytes``
502  the model failed (INTERNAL and other server-side errors; a stage model that
     is not loaded makes ``recommend`` fail INTERNAL)
503  Triton is unreachable or ``recommend`` is not loaded; too many connections
504  no answer within ``request_timeout_s``
===  ==========================================================================

Example::

    from recsys.serving.client import ClientConfig
    from recsys.serving.http_gateway import GatewayConfig, RecommendGateway

    gateway = RecommendGateway(GatewayConfig(port=8080, triton=ClientConfig("127.0.0.1:8001")))
    host, port = gateway.start()
    # curl -s localhost:8080/v1/recommend -d '{"user_id": 1, "k": 10}'
    gateway.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from recsys.httpserver import (
    HttpServerConfig,
    Receive,
    Scope,
    Send,
    ServerThread,
    has_body,
    read_body,
    send_json,
)
from recsys.runtime.context import ContextError, RequestContext
from recsys.serving.client import AsyncRecsysClient, ClientConfig
from recsys.serving.errors import InferenceError, InvalidRequestError
from recsys.serving.health import SERVED_MODELS, Readiness, check_readiness
from recsys.serving.recommend_client import MODEL_NAME, AsyncRecommendClient, Recommendation

log = logging.getLogger(__name__)

RECOMMEND_PATH = "/v1/recommend"
BATCH_PATH = "/v1/recommend/batch"
LIVE_PATH = "/v1/health/live"
READY_PATH = "/v1/health/ready"

REQUEST_FIELDS: tuple[str, ...] = ("user_id", "k", "context")
"""The fields of one recommend request (``context`` optional)."""

_INT64 = np.iinfo(np.int64)
_USER_DIGITS = re.compile(r"-?[0-9]{1,19}", re.ASCII)


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of :class:`RecommendGateway`.

    Attributes:
        host: address to listen on (loopback by default: publish it deliberately).
        port: TCP port (0 picks a free one).
        triton: how to reach Triton's gRPC endpoint (URL, TLS files, per-call deadline,
            retries of UNAVAILABLE answers).
        model_name: the entry-point model.
        max_body_bytes: largest request body, enforced while it is read (413).
        max_header_bytes: largest request line plus headers (431).
        header_timeout_s: time for the request line and headers to arrive (408).
        body_timeout_s: time for the body to arrive after its headers (408).
        request_timeout_s: time for the answer once the body is read, waiting for a
            free slot and retries included (504 beyond).
        max_in_flight: gRPC calls in flight at once; more requests wait for a slot.
        channels: gRPC channels the calls are spread over (round robin).
        max_batch: most requests in one ``/v1/recommend/batch`` body.
        keep_alive_s: idle time after which a keep-alive connection closes.
        linger_s: how long a connection closed with its body unread keeps
            discarding what the client sends (so it reads the reply).
        backlog: listen backlog.
        max_connections: open connections beyond which requests get 503.
        loop: uvicorn's event loop (``auto``: uvloop when installed).
        shutdown_timeout_s: :meth:`RecommendGateway.stop` waits this long for
            requests in flight.

    Example:
        >>> GatewayConfig(port=0).max_body_bytes
        65536
    """

    host: str = "127.0.0.1"
    port: int = 8080
    triton: ClientConfig = field(default_factory=ClientConfig)
    model_name: str = MODEL_NAME
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 16_384
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    request_timeout_s: float = 10.0
    max_in_flight: int = 256
    channels: int = 2
    max_batch: int = 64
    keep_alive_s: int = 5
    linger_s: float = 2.0
    backlog: int = 2048
    max_connections: int = 1024
    loop: str = "auto"
    shutdown_timeout_s: int = 10

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_in_flight", "channels", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"GatewayConfig.{name} must be >= 1")
        if not self.request_timeout_s > 0 or not self.body_timeout_s > 0:
            raise ValueError("GatewayConfig.request_timeout_s and body_timeout_s must be > 0")
        self.http_config()  # checks the connection limits

    def http_config(self) -> HttpServerConfig:
        """The HTTP server's settings (lifespan on: the gRPC channels live on its loop)."""
        return HttpServerConfig(
            host=self.host,
            port=self.port,
            max_header_bytes=self.max_header_bytes,
            header_timeout_s=self.header_timeout_s,
            keep_alive_s=self.keep_alive_s,
            linger_s=self.linger_s,
            backlog=self.backlog,
            max_connections=self.max_connections,
            loop=self.loop,
            shutdown_timeout_s=self.shutdown_timeout_s,
            lifespan="on",
            name="recommend-gateway",
        )


class GatewayError(Exception):
    """A request the gateway answers with an error.

    Attributes:
        status: the HTTP status.
        message: the reply's ``error``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RecommendRequest:
    """One checked recommend request.

    Attributes:
        user_id: the raw user id (int64).
        k: items wanted (>= 1, int64).
        context: the request's context, or None.
        user_id_as_sent: the id as the client wrote it (an int or a digit string),
            echoed in the reply.
    """

    user_id: int
    k: int
    context: RequestContext | None = None
    user_id_as_sent: int | str = 0


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _DuplicateField(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys; two values for one field is ambiguous.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateField(f"duplicate field {key[:40]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_body(body: bytes) -> Any:
    """The JSON document of a request body.

    Args:
        body: the raw body (within the size limit).

    Returns:
        The parsed document.

    Raises:
        GatewayError: 400 for a body that is not UTF-8, empty, or not strict JSON
            (NaN and Infinity, a field given twice, nesting too deep, a number of
            more than 4,300 digits).

    Example:
        >>> decode_body(b'{"user_id": 1, "k": 5}')
        {'user_id': 1, 'k': 5}
        >>> decode_body(b'{"k": 1, "k": 2}')
        Traceback (most recent call last):
        ...
        recsys.serving.http_gateway.GatewayError: body is not JSON: duplicate field 'k'
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GatewayError(400, f"body is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if text.startswith("\ufeff"):  # RFC 8259: a parser may ignore a byte order mark
        text = text[1:]
    if not text or text.isspace():
        raise GatewayError(400, "body is empty; expected a JSON object")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise GatewayError(400, "body is not JSON: nested too deeply") from None
    except ValueError as e:
        why = str(e)
        # Python refuses integers past 4,300 digits; say so without its advice
        # about sys.set_int_max_str_digits, which is for the server.
        if "integer string conversion" in why:
            why = "a number has more than 4300 digits"
        raise GatewayError(400, f"body is not JSON: {why}") from None


def _user_id(value: object, where: str) -> int:
    name = f"{where}user_id"
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        # ASCII digits in their shortest form only: int() would also read Arabic-Indic
        # digits, "+7", " 7" and "007", several spellings of one user.
        if not _USER_DIGITS.fullmatch(value) or str(int(value)) != value:
            raise GatewayError(
                400, f"{name} must be an integer or a string of decimal digits, got {value[:40]!r}"
            )
        number = int(value)
    else:
        raise GatewayError(
            400, f"{name} must be an integer or a string of digits, not {_json_type(value)}"
        )
    if not _INT64.min <= number <= _INT64.max:
        raise GatewayError(400, f"{name}={number} does not fit a 64-bit integer")
    return number


def _k(value: object, where: str) -> int:
    name = f"{where}k"
    if isinstance(value, bool) or not isinstance(value, int):
        raise GatewayError(400, f"{name} must be an integer, not {_json_type(value)}")
    if value < 1:
        raise GatewayError(400, f"{name} must be >= 1, got {value}")
    if value > _INT64.max:
        raise GatewayError(400, f"{name}={value} does not fit a 64-bit integer")
    return value


def parse_request(doc: object, where: str = "") -> RecommendRequest:
    """Checks one recommend request.

    Args:
        doc: the parsed JSON of the request.
        where: a prefix for the messages (``requests[3].`` in a batch).

    Returns:
        The checked :class:`RecommendRequest`.

    Raises:
        GatewayError: 400 naming the first problem (not an object, an unknown or
            missing field, a wrong type, ``k`` < 1, a value beyond int64, an invalid
            context).

    Example:
        >>> parse_request({"user_id": "42", "k": 3}).user_id
        42
        >>> parse_request({"user_id": 1, "k": 2.5})
        Traceback (most recent call last):
        ...
        recsys.serving.http_gateway.GatewayError: k must be an integer, not number
    """
    if not isinstance(doc, dict):
        raise GatewayError(
            400,
            f"{where or 'body: '}expected a JSON object like "
            f'{{"user_id": 1, "k": 10}}, got {_json_type(doc)}',
        )
    unknown = sorted(set(doc) - set(REQUEST_FIELDS))
    if unknown:
        shown = [name[:40] for name in unknown[:5]]
        raise GatewayError(
            400, f"{where}unknown fields {shown}; expected user_id, k and optionally context"
        )
    for name in ("user_id", "k"):
        if name not in doc:
            raise GatewayError(400, f"{where}{name} is missing")
    user = _user_id(doc["user_id"], where)
    k = _k(doc["k"], where)
    raw_context = doc.get("context")
    context = None
    if raw_context is not None:
        if not isinstance(raw_context, dict):
            raise GatewayError(
                400, f"{where}context must be an object, not {_json_type(raw_context)}"
            )
        try:
            context = RequestContext.from_values(**raw_context)
        except ContextError as error:
            raise GatewayError(400, f"{where}context: {error}") from None
    sent = doc["user_id"]
    return RecommendRequest(user, k, context, sent)


def parse_batch(doc: object, max_batch: int) -> list[RecommendRequest]:
    """Checks a batch body ``{"requests": [...]}``.

    Args:
        doc: the parsed JSON of the body.
        max_batch: the most requests allowed.

    Returns:
        The checked requests, in order.

    Raises:
        GatewayError: 400 for a malformed batch or request (named by index), 413 for
            more than ``max_batch`` requests.

    Example:
        >>> [r.k for r in parse_batch({"requests": [{"user_id": 1, "k": 2}]}, 8)]
        [2]
    """
    if not isinstance(doc, dict) or set(doc) != {"requests"}:
        raise GatewayError(400, 'expected {"requests": [<request>, ...]} and no other field')
    items = doc["requests"]
    if not isinstance(items, list) or not items:
        raise GatewayError(400, "requests must be a non-empty array of requests")
    if len(items) > max_batch:
        raise GatewayError(413, f"{len(items)} requests in one batch; at most {max_batch}")
    return [parse_request(item, f"requests[{i}].") for i, item in enumerate(items)]


def reply_of(request: RecommendRequest, rec: Recommendation) -> dict[str, Any]:
    """The JSON reply of one answered request: what the gRPC answer holds.

    Example:
        >>> rec = Recommendation(7, np.array([3, 1]), np.array([0.5, 0.25], np.float32), "r1")
        >>> reply_of(RecommendRequest(7, 2, None, "7"), rec)["items"]
        [3, 1]
    """
    return {
        "user_id": request.user_id_as_sent,
        "request_id": rec.request_id,
        "items": [int(i) for i in rec.item_ids],
        "scores": [float(s) for s in rec.scores],
        "explanation": rec.explanation,
    }


_CLIENT_ERRORS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
_UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.NOT_FOUND,  # the model is not loaded
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)


def error_of(error: InferenceError) -> GatewayError:
    """The HTTP answer to a failed gRPC call.

    Triton's INVALID_ARGUMENT (a request it refused) is the client's: 400 with
    Triton's message. An unreachable server or a model that is not loaded is 503, a
    deadline 504, anything else the server's failure, 502; those messages name the
    gRPC status only (the server's own text is logged, not sent).

    Example:
        >>> error_of(InferenceError("k=9 exceeds max_k=5", status=grpc.StatusCode.INVALID_ARGUMENT))
        GatewayError('k=9 exceeds max_k=5')
    """
    status = error.status
    if isinstance(error, InvalidRequestError) or status in _CLIENT_ERRORS:
        return GatewayError(400, error.message)
    name = status.name if status is not None else "BAD_RESPONSE"
    log.warning("recommend gateway: %s", error)
    if status is grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayError(504, f"the recommender did not answer in time ({name})")
    if status in _UNAVAILABLE and not error.refused:
        return GatewayError(503, f"the recommender is not available ({name}); try again")
    return GatewayError(502, f"the recommender failed ({name})")


class RecommendGateway:
    """The HTTP gateway in front of ``recommend``; see the module docstring.

    Args:
        config: listen address, limits and the Triton client's settings.

    Example::

        gateway = RecommendGateway(GatewayConfig(port=0, triton=ClientConfig(url)))
        host, port = gateway.start()
        gateway.stop()
    """

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self._clients: list[AsyncRecommendClient] = []
        self._turn = itertools.count()
        self._slots: asyncio.Semaphore | None = None
        self._server: ServerThread | None = None

    # -- gRPC side --------------------------------------------------------------------
    def _client(self) -> AsyncRecommendClient:
        # Made on the serving loop at first use: grpc.aio channels belong to a loop.
        if not self._clients:
            self._clients = [
                AsyncRecommendClient(AsyncRecsysClient(self.config.triton), self.config.model_name)
                for _ in range(self.config.channels)
            ]
        return self._clients[next(self._turn) % len(self._clients)]

    async def _close_clients(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.client.close()

    async def recommend(self, request: RecommendRequest) -> dict[str, Any]:
        """Answers one checked request through Triton.

        Args:
            request: a request from :func:`parse_request`.

        Returns:
            The reply (:func:`reply_of`).

        Raises:
            GatewayError: Triton refused or failed the request (:func:`error_of`).
            TimeoutError: only when the caller set a deadline that passed.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_in_flight)
        async with self._slots:
            try:
                rec = await self._client().recommend(
                    request.user_id, request.k, context=request.context
                )
            except InferenceError as error:
                raise error_of(error) from None
        return reply_of(request, rec)

    async def readiness(self) -> Readiness:
        """Whether every model ``recommend`` needs is ready (asked concurrently)."""
        client = self._client().client
        answers = await asyncio.gather(*(client.is_model_ready(m) for m in SERVED_MODELS))
        ready = dict(zip(SERVED_MODELS, answers, strict=True))
        return check_readiness(ready.__getitem__, SERVED_MODELS)

    # -- HTTP side --------------------------------------------------------------------
    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway as an ASGI 3 application (see the module docstring)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self._close_clients()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body_follows = has_body(scope["headers"])
        if path in (LIVE_PATH, READY_PATH):
            if method not in ("GET", "HEAD"):
                await send_json(
                    send, 405, {"error": "use GET"}, [(b"allow", b"GET, HEAD")], body_follows
                )
            elif path == LIVE_PATH:
                await send_json(send, 200, {"status": "live"}, close=body_follows)
            else:
                await self._ready(send, body_follows)
            return
        if path not in (RECOMMEND_PATH, BATCH_PATH):
            await send_json(send, 404, {"error": f"not found: {path[:80]}"}, close=body_follows)
            return
        if method != "POST":
            await send_json(send, 405, {"error": "use POST"}, [(b"allow", b"POST")], body_follows)
            return
        cfg = self.config
        body = await read_body(scope, receive, send, cfg.max_body_bytes, cfg.body_timeout_s)
        if body is None:
            return  # answered (411, 400, 413, 408) or the client left
        try:
            doc = decode_body(body)
            del body
            async with asyncio.timeout(cfg.request_timeout_s):
                if path == RECOMMEND_PATH:
                    reply: dict[str, Any] = await self.recommend(parse_request(doc))
                else:
                    reply = {"results": await self._batch(parse_batch(doc, cfg.max_batch))}
        except GatewayError as error:
            await send_json(send, error.status, {"error": error.message})
            return
        except TimeoutError:
            error_text = f"no answer from the recommender within {cfg.request_timeout_s:g} s"
            await send_json(send, 504, {"error": error_text})
            return
        await send_json(send, 200, reply)

    async def _batch(self, requests: Sequence[RecommendRequest]) -> list[dict[str, Any]]:
        tasks = [asyncio.ensure_future(self.recommend(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except GatewayError as error:
            position = next(
                i
                for i, t in enumerate(tasks)
                if t.done() and not t.cancelled() and t.exception() is error
            )
            raise GatewayError(error.status, f"requests[{position}]: {error.message}") from None
        finally:
            # gather leaves the others running after the first failure: stop them.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _ready(self, send: Send, close: bool) -> None:
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                result = await self.readiness()
        except TimeoutError:
            result = Readiness(False, SERVED_MODELS, ("no answer from Triton in time",))
        payload: Mapping[str, Any] = {
            "ready": result.ready,
            "not_ready": list(result.not_ready),
            "detail": list(result.detail),
        }
        await send_json(send, 200 if result.ready else 503, payload, close=close)

    # -- serving ----------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Serves in a background thread; returns the bound ``(host, port)``.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started, or the server did not come up.
        """
        if self._server is not None:
            raise RuntimeError("the gateway is already running")
        server = ServerThread(self.asgi, self.config.http_config())
        self._server = server
        try:
            return server.start()
        except BaseException:
            self._server = None
            raise

    def stop(self) -> None:
        """Stops serving: requests in flight finish (up to ``shutdown_timeout_s``),
        the gRPC channels close."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
