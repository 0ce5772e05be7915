"""The HTTP gateway of ``recommend`` (recsys.serving.http_gateway).

First the request checks on their own (no server). Then, against a real tritonserver
serving the repository of ``fresh_two_stage`` (a module fixture, one server) with one
gateway in front of it: every bad request gets a 4xx naming the problem (never a
500), each followed by a good request whose list equals a direct gRPC call; framing,
size and time limits are enforced by the hardened HTTP server; 200 concurrent clients
all get their own list; readiness follows a stage model unloaded and loaded again.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from recsys.serving.client import ClientConfig
from recsys.serving.errors import InferenceError, InvalidRequestError
from recsys.serving.http_gateway import (
    GatewayConfig,
    GatewayError,
    RecommendGateway,
    decode_body,
    error_of,
    parse_batch,
    parse_request,
)
from recsys.serving.recommend_client import RecommendClient
from recsys.serving.repository import RepositoryConfig, build_repository
from recsys.serving.server import LocalTritonServer, TritonServerConfig

triton = pytest.mark.triton
LIMIT = 64 * 1024
BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0
K = 10


# -- the checks, without a server -------------------------------------------------------


def _refused(body: bytes) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse_request(decode_body(body))
    return info.value


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "body is not JSON: Expecting property name"),
        (b"\xff\xfe\x00", "body is not UTF-8 text (invalid start byte at byte 0)"),
        (b"", "body is empty"),
        (b" \n", "body is empty"),
        (b"[1, 2]", "expected a JSON object like"),
        (b"42", "got integer"),
        (b'{"k": 5}', "user_id is missing"),
        (b'{"user_id": 2}', "k is missing"),
        (b'{"user_id": 2, "k": "ten"}', "k must be an integer, not string"),
        (b'{"user_id": 2, "k": 2.5}', "k must be an integer, not number"),
        (b'{"user_id": 2, "k": true}', "k must be an integer, not boolean"),
        (b'{"user_id": 2, "k": -1}', "k must be >= 1, got -1"),
        (b'{"user_id": 2, "k": 0}', "k must be >= 1, got 0"),
        (b'{"user_id": 2, "k": 1180591620717411303424}', "does not fit a 64-bit integer"),
        (b'{"user_id": 9223372036854775808, "k": 5}', "user_id=9223372036854775808 does not"),
        (b'{"user_id": 2, "k": 5, "x": 1}', "unknown fields ['x']"),
        (b'{"user_id": 2, "k": NaN}', "NaN is not a JSON number"),
        (b'{"user_id": 2, "k": 5, "k": 6}', "duplicate field 'k'"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'{"user_id": 2, "k": ' + b"7" * 5000 + b"}", "more than 4300 digits"),
        (b'{"user_id": null, "k": 5}', "user_id must be an integer or a string of digits"),
        (b'{"user_id": 2, "k": 5, "context": []}', "context must be an object, not array"),
        (b'{"user_id": 2, "k": 5, "context": {"country": "Germany"}}', "context: country"),
        (b'{"user_id": 2, "k": 5, "context": {"colour": "red"}}', "unknown context fields"),
    ],
)
def test_bad_bodies_are_refused_with_a_message(body: bytes, needle: str) -> None:
    error = _refused(body)
    assert error.status == 400
    assert needle in error.message


@pytest.mark.parametrize(
    "user",
    [
        "\U0001f600",  # emoji
        "\u202e42",  # right-to-left override
        "4\u00002",  # NUL
        "\ud800",  # a lone surrogate, as the JSON escape sends it
        "\u0664\u0662",  # Arabic-Indic digits: int() would read 42
        "007",
        "+7",
        " 7",
        "",
    ],
)
def test_user_ids_that_are_not_decimal_digits_are_refused(user: str) -> None:
    body = json.dumps({"user_id": user, "k": 5}).encode()  # ensure_ascii: \ud800 escaped
    error = _refused(body)
    assert error.status == 400
    assert "user_id must be an integer or a string of decimal digits" in error.message
    json.dumps({"error": error.message})  # the reply can be written


def test_good_requests_are_read_as_the_model_takes_them() -> None:
    req = parse_request(decode_body(b'\xef\xbb\xbf{"user_id": "-3", "k": 4}'))
    assert (req.user_id, req.k, req.context, req.user_id_as_sent) == (-3, 4, None, "-3")
    req = parse_request({"user_id": 9, "k": 1, "context": {"device_type": "mobile"}})
    assert req.context is not None and req.context.device_type == "mobile"
    assert parse_request({"user_id": 9, "k": 1, "context": None}).context is None
    batch = parse_batch({"requests": [{"user_id": 1, "k": 2}, {"user_id": "2", "k": 3}]}, 2)
    assert [(r.user_id, r.k) for r in batch] == [(1, 2), (2, 3)]


def test_batches_are_checked_by_position_and_size() -> None:
    with pytest.raises(GatewayError, match=r"requests\[1\]\.k must be >= 1") as info:
        parse_batch({"requests": [{"user_id": 1, "k": 2}, {"user_id": 1, "k": 0}]}, 8)
    assert info.value.status == 400
    with pytest.raises(GatewayError) as info:
        parse_batch({"requests": [{"user_id": 1, "k": 2}] * 9}, 8)
    assert info.value.status == 413
    docs: list[object] = [{"requests": []}, {"requests": {}}, {"requests": [], "x": 1}, []]
    for doc in docs:
        with pytest.raises(GatewayError) as info:
            parse_batch(doc, 8)
        assert info.value.status == 400


def test_triton_errors_map_to_client_and_server_statuses() -> None:
    def status(code: grpc.StatusCode | None, message: str = "m") -> int:
        return error_of(InferenceError(message, status=code)).status

    refused = error_of(
        InferenceError("k=9 exceeds max_k=5", status=grpc.StatusCode.INVALID_ARGUMENT)
    )
    assert (refused.status, refused.message) == (400, "k=9 exceeds max_k=5")
    assert error_of(InvalidRequestError("bad", status=None)).status == 400
    assert status(grpc.StatusCode.UNAVAILABLE) == 503
    assert status(grpc.StatusCode.NOT_FOUND) == 503
    assert status(grpc.StatusCode.DEADLINE_EXCEEDED) == 504
    assert status(grpc.StatusCode.INTERNAL) == 502
    assert status(None) == 502  # an answer of the wrong shape
    # a restricted API refused for want of the admin key is not "try again"
    assert status(grpc.StatusCode.UNAVAILABLE, "is restricted, expecting header") == 502
    assert (
        "secret" not in error_of(InferenceError("secret", status=grpc.StatusCode.INTERNAL)).message
    )


def test_config_refuses_limits_that_cannot_work() -> None:
    bad: list[dict[str, Any]] = [
        {"max_body_bytes": 0}, {"channels": 0}, {"request_timeout_s": 0}, {"loop": "x"},
    ]  # fmt: skip
    for kwargs in bad:
        with pytest.raises(ValueError):
            GatewayConfig(**kwargs)


# -- a real server and the gateway in front of it ----------------------------------------


@dataclass
class Live:
    server: LocalTritonServer
    gateway: RecommendGateway
    host: str
    port: int
    users: list[int]
    want: dict[int, list[int]]  # user -> the direct gRPC list of K items


@pytest.fixture(scope="module")
def live(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (it ships the tritonserver binary) is not installed")
    tmp = tmp_path_factory.mktemp("gateway")
    root = tmp / "repository"
    build_repository(fresh_two_stage.bundle(tmp / "bundle"), root, RepositoryConfig())
    config = TritonServerConfig(
        model_repository=root, model_control_mode="explicit", load_models=("*",),
        startup_timeout_s=180,
    )  # fmt: skip
    users = [int(u) for u in fresh_two_stage.recommender.context.user_ids[:200]]
    with LocalTritonServer(config) as server:
        with RecommendClient(server.grpc_url) as client:
            want = {u: client.recommend(u, K).item_ids.tolist() for u in users}
        gateway = RecommendGateway(
            GatewayConfig(
                port=0,
                triton=ClientConfig(url=server.grpc_url, client_timeout_s=60),
                max_body_bytes=LIMIT,
                body_timeout_s=BODY_TIMEOUT_S,
                header_timeout_s=HEADER_TIMEOUT_S,
                request_timeout_s=60,
                max_batch=16,
                linger_s=1.0,
            )
        )
        host, port = gateway.start()
        try:
            yield Live(server, gateway, host, port, users, want)
        finally:
            gateway.stop()


def _request(
    live: Live, method: str, path: str, body: bytes | None = None, port: int | None = None
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    connection = http.client.HTTPConnection(live.host, port or live.port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read()
        doc = json.loads(text) if text else {}
        assert isinstance(doc, dict), text
        return response.status, doc, response
    finally:
        connection.close()


def _post(live: Live, doc: Any, path: str = "/v1/recommend") -> tuple[int, dict[str, Any]]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    status, reply, _ = _request(live, "POST", path, body)
    return status, reply


def _assert_still_serving(live: Live, user: int | None = None) -> None:
    user = live.users[3] if user is None else user
    status, reply = _post(live, {"user_id": user, "k": K})
    assert status == 200, reply
    assert reply["items"] == live.want[user]


def _exchange(live: Live, raw: bytes, wait_s: float = 10.0) -> tuple[int, bytes]:
    """Sends raw bytes on a new connection; the reply's status and body."""
    with socket.create_connection((live.host, live.port), timeout=wait_s) as sock:
        sock.sendall(raw)
        return _read_reply(sock)


def _read_reply(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a reply: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), body[:length]


def _head(path: str, *lines: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n"
    ).encode()


@triton
def test_replies_equal_the_direct_grpc_answer(live: Live) -> None:
    with RecommendClient(live.server.grpc_url) as client:
        for user in live.users[:10]:
            direct = client.recommend(user, K)
            status, reply = _post(live, {"user_id": user, "k": K})
            assert status == 200, reply
            assert reply["user_id"] == user
            assert reply["items"] == direct.item_ids.tolist()
            assert reply["scores"] == pytest.approx(direct.scores.tolist(), abs=1e-6)
            assert reply["explanation"] == direct.explanation
            assert isinstance(reply["request_id"], str) and reply["request_id"]
        # a string id is the same user; the reply echoes it as sent
        status, reply = _post(live, {"user_id": str(live.users[5]), "k": K})
        assert status == 200 and reply["user_id"] == str(live.users[5])
        assert reply["items"] == live.want[live.users[5]]
        # the context reaches the model: the client's request id comes back
        ctx = {"request_id": "gw-ctx-1", "device_type": "mobile", "surface": "home"}
        status, reply = _post(live, {"user_id": live.users[0], "k": 3, "context": ctx})
        direct = client.recommend(live.users[0], 3, context={**ctx, "request_id": "gw-ctx-2"})
    assert status == 200 and reply["request_id"] == "gw-ctx-1"
    assert reply["items"] == direct.item_ids.tolist()


@triton
@pytest.mark.parametrize("user", [999_999, -5, 2**63 - 1])
def test_unknown_users_get_what_grpc_gives(live: Live, user: int) -> None:
    with RecommendClient(ClientConfig(url=live.server.grpc_url, max_retries=0)) as client:
        try:
            want: tuple[int, Any] = (200, client.recommend(user, K).item_ids.tolist())
        except InferenceError as error:
            assert error.status is grpc.StatusCode.INVALID_ARGUMENT
            want = (400, error.message)
    status, reply = _post(live, {"user_id": user, "k": K})
    assert (status, reply.get("items", reply.get("error"))) == want


FREE_TEXT = ("os", "browser", "region", "surface")
BAD_OVER_HTTP: list[tuple[str, bytes, str]] = [
    ("malformed", b"{not json", "body is not JSON"),
    ("non-utf8", b"\xff\xfe\x00", "not UTF-8"),
    ("array", b"[1, 2, 3]", "expected a JSON object"),
    ("number", b"42", "expected a JSON object"),
    ("no user", b'{"k": 5}', "user_id is missing"),
    ("k text", b'{"user_id": 2, "k": "ten"}', "k must be an integer"),
    ("k float", b'{"user_id": 2, "k": 2.5}', "k must be an integer"),
    ("k negative", b'{"user_id": 2, "k": -1}', "k must be >= 1"),
    ("k wraps int32", b'{"user_id": 2, "k": 4294967301}', "k=4294967301 exceeds max_k"),
    ("k beyond int64", b'{"user_id": 2, "k": 1180591620717411303424}', "64-bit"),
    ("unknown field", b'{"user_id": 2, "k": 5, "debug": true}', "unknown fields ['debug']"),
    ("emoji", '{"user_id": "\U0001f600", "k": 5}'.encode(), "string of decimal digits"),
    ("rtl", '{"user_id": "\u202e42", "k": 5}'.encode(), "string of decimal digits"),
    ("nul", b'{"user_id": "4\\u00002", "k": 5}', "string of decimal digits"),
    ("surrogate", b'{"user_id": "\\ud800", "k": 5}', "string of decimal digits"),
    (
        "bad context",
        b'{"user_id": 2, "k": 5, "context": {"utc_offset_minutes": 9000}}',
        "utc_offset",
    ),
    # every field valid, but sent with \u escapes the context passes the model's 4 KiB:
    # Triton's INVALID_ARGUMENT, passed on
    (
        "context-over-4KiB",
        json.dumps(
            {"user_id": 2, "k": 5, "context": {f: "\U0001f600" * 128 for f in FREE_TEXT}}
        ).encode(),
        "at most 4096",
    ),
]


@triton
@pytest.mark.parametrize(
    ("name", "body", "needle"), BAD_OVER_HTTP, ids=[c[0] for c in BAD_OVER_HTTP]
)
def test_bad_requests_get_a_400_and_the_gateway_keeps_serving(
    live: Live, name: str, body: bytes, needle: str
) -> None:
    status, reply = _post(live, body)
    assert status == 400, (name, reply)
    assert needle in reply["error"], (name, reply)
    _assert_still_serving(live)


@triton
def test_batches_answer_in_order_or_name_the_failing_request(live: Live) -> None:
    users = live.users[20:28]
    status, reply = _post(
        live, {"requests": [{"user_id": u, "k": K} for u in users]}, "/v1/recommend/batch"
    )
    assert status == 200, reply
    assert [r["items"] for r in reply["results"]] == [live.want[u] for u in users]
    bad = [{"user_id": users[0], "k": K}, {"user_id": users[1], "k": 10**12}]
    status, reply = _post(live, {"requests": bad}, "/v1/recommend/batch")
    assert status == 400 and reply["error"].startswith("requests[1]: k=1000000000000 exceeds max_k")
    status, reply = _post(live, {"requests": [{"user_id": 1, "k": 1}] * 17}, "/v1/recommend/batch")
    assert status == 413, reply
    _assert_still_serving(live)


@triton
def test_paths_and_methods(live: Live) -> None:
    status, reply, _ = _request(live, "GET", "/v2/models/recommend/infer")
    assert status == 404 and "error" in reply
    status, reply, response = _request(live, "GET", "/v1/recommend")
    assert status == 405 and response.getheader("allow") == "POST"
    status, reply, response = _request(live, "POST", "/v1/health/live", b"{}")
    assert status == 405 and response.getheader("allow") == "GET, HEAD"
    status, reply, _ = _request(live, "GET", "/v1/health/live")
    assert (status, reply) == (200, {"status": "live"})
    status, reply, _ = _request(live, "HEAD", "/v1/health/live")
    assert (status, reply) == (200, {})
    _assert_still_serving(live)


@triton
def test_a_declared_oversize_body_gets_413_before_it_is_sent(live: Live) -> None:
    raw = _head("/v1/recommend", "Content-Type: application/json", "Content-Length: 10000000")
    status, body = _exchange(live, raw)  # not one byte of the body was sent
    assert status == 413 and f"larger than {LIMIT} bytes".encode() in body
    _assert_still_serving(live)


@triton
def test_a_body_is_cut_at_the_limit_while_it_arrives(live: Live) -> None:
    # an endless chunked body, and a body larger than its Content-Length says
    for framing in ("Transfer-Encoding: chunked", f"Content-Length: {LIMIT - 10}"):
        sent = 0
        with socket.create_connection((live.host, live.port), timeout=10) as sock:
            sock.sendall(_head("/v1/recommend", framing))
            piece = b"x" * 8192
            chunk = b"%x\r\n%s\r\n" % (len(piece), piece) if "chunked" in framing else piece
            deadline = time.monotonic() + 20
            while not select.select([sock], [], [], 0.005)[0] and time.monotonic() < deadline:
                try:
                    sock.sendall(chunk)
                except OSError:
                    break  # the gateway closed: its reply is in the socket buffer
                sent += len(chunk)
            status, body = _read_reply(sock)
        if "chunked" in framing:
            assert status == 413 and b"larger than" in body, body
            assert LIMIT < sent < 8 * 1024 * 1024  # cut soon after the limit, not read to the end
        else:
            # a Content-Length body ends at its length: the rest is a malformed next request
            assert status == 400, body
    _assert_still_serving(live)


@triton
def test_chunked_bodies_are_read(live: Live) -> None:
    user = live.users[7]
    doc = json.dumps({"user_id": user, "k": K}).encode()
    parts = [doc[:5], doc[5:17], doc[17:]]
    raw = (
        _head("/v1/recommend", "Transfer-Encoding: chunked")
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
        + b"0\r\n\r\n"
    )
    status, body = _exchange(live, raw)
    assert status == 200, body
    assert json.loads(body)["items"] == live.want[user]


@triton
@pytest.mark.parametrize(
    ("lines", "body", "want", "needle"),
    [
        # headers alone: body bytes without a length would parse as the next request
        ((), b"", 411, "Content-Length required"),
        (("Transfer-Encoding: gzip",), b"", 400, "Transfer-Encoding"),
        (("Transfer-Encoding: chunked, gzip",), b"", 400, "Transfer-Encoding"),
        (("Transfer-Encoding: chunked", "Content-Length: 4"), b"", 400, "malformed HTTP"),
        (("Content-Length: 12", "Content-Length: 13"), b"", 400, "malformed HTTP request"),
        (("Content-Length: x",), b"", 400, "malformed HTTP request"),
        (("Upgrade: h2c", "Connection: Upgrade", "Content-Length: 0"), b"", 400, "upgrades"),
        ((f"X-Pad: {'a' * 20_000}", "Content-Length: 2"), b"{}", 431, "headers over"),
    ],
    ids=[
        "no-length",
        "gzip",
        "chunked-gzip",
        "both-framings",
        "two-lengths",
        "length-text",
        "upgrade",
        "huge-header",
    ],
)
def test_framing_errors_are_4xx(
    live: Live, lines: tuple[str, ...], body: bytes, want: int, needle: str
) -> None:
    status, reply = _exchange(live, _head("/v1/recommend", *lines) + body)
    assert status == want, reply
    assert needle in json.loads(reply)["error"]
    _assert_still_serving(live)


@triton
def test_stalled_uploads_and_headers_are_cut_by_their_timeouts(live: Live) -> None:
    with socket.create_connection((live.host, live.port), timeout=30) as sock:
        sock.sendall(_head("/v1/recommend", "Content-Length: 100") + b'{"user_id": ')
        start = time.monotonic()
        status, body = _read_reply(sock)
        took = time.monotonic() - start
    assert status == 408 and b"body not received within" in body
    assert BODY_TIMEOUT_S * 0.9 < took < BODY_TIMEOUT_S + 10
    with socket.create_connection((live.host, live.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: gw\r\n")  # headers never end
        start = time.monotonic()
        status, body = _read_reply(sock)
        took = time.monotonic() - start
    assert status == 408 and b"headers not received in time" in body
    assert HEADER_TIMEOUT_S * 0.9 < took < HEADER_TIMEOUT_S + 10
    _assert_still_serving(live)


@triton
def test_two_hundred_concurrent_clients_all_get_their_list(live: Live) -> None:
    async def one(user: int) -> tuple[int, list[int]]:
        reader, writer = await asyncio.open_connection(live.host, live.port)
        body = json.dumps({"user_id": user, "k": K}).encode()
        writer.write(_head("/v1/recommend", f"Content-Length: {len(body)}") + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
        reply = json.loads(await reader.readexactly(length))
        writer.close()
        await writer.wait_closed()
        return int(lines[0].split()[1]), reply["items"]

    async def everyone() -> list[tuple[int, list[int]]]:
        return list(await asyncio.gather(*(one(u) for u in live.users)))

    got = asyncio.run(asyncio.wait_for(everyone(), 120))
    assert len(got) == 200
    assert all(status == 200 for status, _ in got)
    assert {u: items for u, (_, items) in zip(live.users, got, strict=True)} == live.want


@triton
def test_an_unreachable_triton_is_503_and_a_deadline_504(live: Live) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    down = RecommendGateway(
        GatewayConfig(port=0, triton=ClientConfig(url=f"127.0.0.1:{dead_port}", max_retries=0))
    )
    slow = RecommendGateway(
        GatewayConfig(port=0, triton=ClientConfig(url=live.server.grpc_url), request_timeout_s=1e-4)
    )
    _, down_port = down.start()
    _, slow_port = slow.start()
    try:
        body = json.dumps({"user_id": live.users[0], "k": K}).encode()
        status, reply, _ = _request(live, "POST", "/v1/recommend", body, port=down_port)
        assert status == 503 and "UNAVAILABLE" in reply["error"], reply
        status, reply, _ = _request(live, "GET", "/v1/health/ready", port=down_port)
        assert status == 503 and reply["ready"] is False and "user_tower" in reply["not_ready"]
        status, reply, _ = _request(live, "POST", "/v1/recommend", body, port=slow_port)
        assert status == 504 and "within" in reply["error"], reply
    finally:
        down.stop()
        slow.stop()
    _assert_still_serving(live)


@triton
def test_readiness_follows_a_stage_model_unloaded_and_loaded_again(live: Live) -> None:
    status, reply, _ = _request(live, "GET", "/v1/health/ready")
    assert (status, reply["ready"]) == (200, True)
    live.server.unload_model("user_tower")  # an admin call: the server's own key
    try:
        deadline = time.monotonic() + 30
        while live.server.is_model_ready("user_tower") and time.monotonic() < deadline:
            time.sleep(0.1)
        status, reply, _ = _request(live, "GET", "/v1/health/ready")
        assert status == 503 and reply["not_ready"] == ["user_tower"], reply
        assert "user_tower: not ready" in reply["detail"]
        status, reply = _post(live, {"user_id": live.users[0], "k": K})
        # recommend's call to the missing stage fails INTERNAL: the server's failure
        assert (status, reply) == (502, {"error": "the recommender failed (INTERNAL)"})
        assert "Traceback" not in reply["error"]
    finally:
        live.server.load_model("user_tower")
    status, reply, _ = _request(live, "GET", "/v1/health/ready")
    assert (status, reply["ready"]) == (200, True)
    _assert_still_serving(live)


def test_the_command_line_defaults_are_the_config_defaults() -> None:
    from recsys.serving.cli import build_parser

    args = build_parser().parse_args(["gateway"])
    config = GatewayConfig()
    assert (args.host, args.port, args.max_body_bytes, args.timeout) == (
        config.host, config.port, config.max_body_bytes, config.request_timeout_s,
    )  # fmt: skip
    assert (args.header_timeout, args.body_timeout) == (
        config.header_timeout_s, config.body_timeout_s,
    )  # fmt: skip
    assert (args.max_in_flight, args.channels, args.max_batch) == (
        config.max_in_flight, config.channels, config.max_batch,
    )  # fmt: skip


@triton
def test_the_gateway_command_serves_until_sigterm(live: Live) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "recsys.serving.cli", "gateway", "--url",
               live.server.grpc_url, "--port", "0"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("recommend gateway on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        user = live.users[9]
        body = json.dumps({"user_id": user, "k": K}).encode()
        status, reply, _ = _request(live, "POST", "/v1/recommend", body, port=port)
        assert status == 200 and reply["items"] == live.want[user]
        status, reply, _ = _request(live, "POST", "/v1/recommend", b"{", port=port)
        assert status == 400
        process.terminate()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
