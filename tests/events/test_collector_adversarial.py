"""The collector against a hostile or broken client, over raw sockets, on SQLite and
on a real redis-server.

Every test ends with a good request that must still get the right answer, and
the fixture's teardown checks the store: the events in the stream are exactly
the events accepted, and the dead letters exactly those the replies announced
(nothing accepted is lost or doubled, nothing refused is dropped silently).
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rt_testkit import raw_event, stream_events

from recsys.events.collector import CollectorConfig, EventCollector
from recsys.events.store import RealtimeStore
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig

KEY = "adversarial-key-42"
LIMIT = 64_000  # max_body_bytes of the collector under test
TIMEOUT = 0.5  # its header and body timeouts, seconds
KEYED = f"POST /v1/events HTTP/1.1\r\nHost: t\r\nX-API-Key: {KEY}\r\n"  # a keyed request's head


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    closed: bool  # the server closed the connection after the reply
    seconds: float  # from the call to the end of the reply


def read_reply(sock: socket.socket, t0: float, wait_close: float = 1.0) -> Reply:
    """One HTTP response from ``sock`` (skipping ``100 Continue``), then
    whether the server closes within ``wait_close`` seconds."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a reply: {buf!r}"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status != 100:
            break
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers["content-length"])
    while len(buf) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a reply"
        buf += chunk
    seconds = time.monotonic() - t0
    body = json.loads(buf[:length])
    closed = False
    if wait_close > 0:
        sock.settimeout(wait_close)
        try:
            closed = sock.recv(65536) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
    return Reply(status, headers, body, closed, seconds)


@dataclass
class Harness:
    """A running collector and the counts its store must end with."""

    collector: EventCollector
    host: str
    port: int
    accepted: int = 0
    dead_letters: int = 0
    _n: int = 0
    seen: list[Reply] = field(default_factory=list)

    @property
    def store(self) -> RealtimeStore:
        return self.collector.store

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=5)

    def request(
        self,
        body: bytes | None,
        head: str | None = None,
        key: str | None = KEY,
        wait_close: float = 0.3,
    ) -> Reply:
        """Sends ``head`` (default: a keyed POST with Content-Length) and
        ``body`` on a new connection; its reply."""
        if head is None:
            head = "POST /v1/events HTTP/1.1\r\nHost: t\r\n"
            if key is not None:
                head += f"X-API-Key: {key}\r\n"
            head += f"Content-Length: {len(body or b'')}\r\n\r\n"
        with self.connect() as sock:
            t0 = time.monotonic()
            sock.sendall(head.encode("latin-1") + (body or b""))
            reply = read_reply(sock, t0, wait_close)
        self.seen.append(reply)
        return reply

    def post(self, events: list[Any], **kw: Any) -> Reply:
        reply = self.request(json.dumps(events).encode(), **kw)
        if reply.status == 200:
            self.accepted += reply.body["accepted"]
            self.dead_letters += len(reply.body["rejected"]) + len(reply.body["conflicts"])
        return reply

    def fresh(self, n: int, **kw: Any) -> list[dict[str, Any]]:
        """``n`` valid events with ids never used before."""
        out = []
        for _ in range(n):
            self._n += 1
            e = raw_event(self._n % 50, **kw)
            e["event_id"] = f"good-{self._n}"
            out.append(e)
        return out

    def good(self) -> None:
        """A good request gets the right answer (after whatever came before)."""
        reply = self.post(self.fresh(3), wait_close=0)
        assert reply.status == 200, reply
        assert reply.body == {"accepted": 3, "duplicates": 0, "rejected": [], "conflicts": []}


@pytest.fixture
def harness(store: RealtimeStore) -> Iterator[Harness]:
    config = CollectorConfig(
        port=0,
        api_keys={"web": KEY},
        max_body_bytes=LIMIT,
        max_header_bytes=4096,
        header_timeout_s=TIMEOUT,
        body_timeout_s=TIMEOUT,
        linger_s=0.3,
    )
    c = EventCollector(store, config)
    host, port = c.start()
    h = Harness(c, host, port)
    try:
        yield h
        # Nothing lost or doubled, nothing refused without a dead letter.
        assert len(stream_events(store)) == h.accepted
        assert store.dead_letter_count() == h.dead_letters
        assert all(r.status < 500 for r in h.seen), [r for r in h.seen if r.status >= 500]
    finally:
        c.stop()


def test_the_key_is_checked_before_the_body_is_read(harness: Harness) -> None:
    # A huge declared body that never comes: the 401 must not wait for it.
    for key in (None, "wrong-key"):
        head = "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n"
        if key:
            head += f"X-API-Key: {key}\r\n"
        reply = harness.request(None, head=head + "\r\n")
        assert reply.status == 401 and reply.seconds < 1.0, reply
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.closed  # the body was never read, so the connection ends
    # "Expect: 100-continue" from a client without a key: 401, never "100 Continue".
    with harness.connect() as sock:
        head = "POST /v1/events HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        sock.sendall((head + "Content-Length: 50\r\n\r\n").encode())
        first = sock.recv(12)
        assert first == b"HTTP/1.1 401", first
    # With the key, the client is asked to go on and the body is read.
    with harness.connect() as sock:
        body = json.dumps(harness.fresh(2)).encode()
        head = KEYED
        sock.sendall(
            (head + f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        )
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        t0 = time.monotonic()
        sock.sendall(body)
        reply = read_reply(sock, t0, wait_close=0)
    assert reply.status == 200 and reply.body["accepted"] == 2
    harness.accepted += 2
    assert harness.store.dead_letter_count() == 0
    harness.good()


FRAMING = [
    ("", 411, "Content-Length required"),
    ("Content-Length: -5\r\n", 400, "Content-Length"),
    ("Content-Length: 12abc\r\n", 400, "Content-Length"),
    ("Content-Length: 1e3\r\n", 400, "Content-Length"),
    ("Content-Length: 5\r\nContent-Length: 6\r\n", 400, "Content-Length"),
    ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400, "Transfer-Encoding"),
    ("Transfer-Encoding: gzip\r\n", 400, "Transfer-Encoding"),
    (f"Content-Length: {LIMIT + 1}\r\n", 413, f"body larger than {LIMIT} bytes"),
]


@pytest.mark.parametrize(("headers", "status", "message"), FRAMING)
def test_bad_framing_gets_a_clear_4xx_and_a_closed_connection(
    harness: Harness, headers: str, status: int, message: str
) -> None:
    head = f"{KEYED}{headers}\r\n"
    reply = harness.request(b"", head=head)
    assert reply.status == status, reply
    assert message in reply.body["error"]
    assert reply.closed and reply.seconds < 1.0
    harness.good()


def chunked(body: bytes, size: int) -> bytes:
    parts = [b"%x;ext=1\r\n%b\r\n" % (len(body[i : i + size]), body[i : i + size])
             for i in range(0, len(body), size)]  # fmt: skip
    return b"".join(parts) + b"0\r\nX-Trailer: t\r\n\r\n"


def test_chunked_bodies_are_read_in_full(harness: Harness) -> None:
    events = harness.fresh(40)
    data = chunked(json.dumps(events).encode(), 97)
    head = f"{KEYED}Transfer-Encoding: chunked\r\n\r\n"
    with harness.connect() as sock:
        t0 = time.monotonic()
        sock.sendall(head.encode())
        for i in range(0, len(data), 1000):  # in many small writes
            sock.sendall(data[i : i + 1000])
        reply = read_reply(sock, t0, wait_close=0)
    assert reply.status == 200 and reply.body["accepted"] == 40
    harness.accepted += 40
    harness.good()


def test_an_endless_chunked_body_is_cut_off_at_the_limit(harness: Harness) -> None:
    head = f"{KEYED}Transfer-Encoding: chunked\r\n\r\n"
    piece = b"4000\r\n" + b"[" * 0x4000 + b"\r\n"
    sent = 0
    with harness.connect() as sock:
        t0 = time.monotonic()
        sock.sendall(head.encode())
        # Never ends: a server that waited for the whole body would answer 408
        # (or never); this one answers 413 as soon as the limit is passed.
        while not select.select([sock], [], [], 0)[0]:
            sock.sendall(piece)
            sent += len(piece)
            assert sent < 64 * LIMIT, "no reply while the body kept coming"
        reply = read_reply(sock, t0)
    assert reply.status == 413 and reply.body["error"] == f"body larger than {LIMIT} bytes"
    assert reply.closed and reply.seconds < TIMEOUT
    harness.good()


def test_a_stalled_upload_is_cut_off_while_others_are_served(harness: Harness) -> None:
    body = json.dumps(harness.fresh(20)).encode()
    half = f"{KEYED}Content-Length: {len(body)}\r\n\r\n"
    stalled = harness.connect()
    trickle = harness.connect()
    try:
        t0 = time.monotonic()
        stalled.sendall(half.encode() + body[: len(body) // 2])
        trickle.sendall(half.encode())
        stop = threading.Event()

        def drip() -> None:  # a byte every 50 ms: each read is quick, the whole is not
            for b in body:
                if stop.wait(0.05):
                    return
                try:
                    trickle.send(bytes([b]))
                except OSError:
                    return

        dripper = threading.Thread(target=drip)
        dripper.start()
        harness.good()  # served while the two uploads hang
        assert time.monotonic() - t0 < TIMEOUT
        for sock in (stalled, trickle):
            reply = read_reply(sock, t0)
            assert reply.status == 408 and "body not received within" in reply.body["error"]
            assert TIMEOUT * 0.9 < reply.seconds < TIMEOUT + 1.0 and reply.closed
        stop.set()
        dripper.join()
    finally:
        stalled.close()
        trickle.close()
    assert harness.store.dead_letter_count() == 0  # nothing of a cut-off body is kept
    harness.good()


def test_slow_or_huge_headers_and_silent_connections_are_closed(harness: Harness) -> None:
    with harness.connect() as silent, harness.connect() as partial:
        t0 = time.monotonic()
        partial.sendall(b"POST /v1/events HTTP/1.1\r\nHost: t\r\nX-API-")
        reply = read_reply(partial, t0)
        assert reply.status == 408 and "headers not received" in reply.body["error"]
        assert TIMEOUT * 0.9 < reply.seconds < TIMEOUT + 1.0 and reply.closed
        silent.settimeout(TIMEOUT + 1.0)
        assert silent.recv(100) == b""  # said nothing: closed without a reply
        assert time.monotonic() - t0 < TIMEOUT + 1.0
    big = f"{KEYED}X-Pad: {'a' * 5000}\r\n"
    reply = harness.request(b"", head=big + "Content-Length: 0\r\n\r\n")
    assert reply.status == 431 and reply.closed
    with harness.connect() as sock:  # headers that never end, sent in pieces
        t0 = time.monotonic()
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nX-Pad: ")
        for _ in range(10):
            sock.sendall(b"b" * 1000)
        reply = read_reply(sock, t0)
        assert reply.status == 431 and reply.seconds < TIMEOUT
    reply = harness.request(b"", head="BREW /v1/events HTCPCP/1.0\r\n\r\n")
    assert reply.status == 400 and reply.body["error"].startswith("malformed HTTP request")
    harness.good()


NOT_A_BATCH = [
    ("[\xe9]".encode("latin-1"), "body is not UTF-8 text (invalid continuation byte at byte 1)"),
    ("[]".encode("utf-16"), "body is not UTF-8 text"),
    (b"", "body is empty"),
    (b" \n ", "body is empty"),
    (b"[1,]", "body is not JSON: Expecting value"),
    (b"[" * 30_000 + b"]" * 30_000, "body is not JSON: nested too deeply"),
    (b"[" + b"7" * 5000 + b"]", "body is not JSON: a number has more than 4300 digits"),
    (b'{"events": {"e1": {}}}', 'expected a JSON array of events or {"events": [...]}'),
    (b'"hello"', "expected a JSON array"),
]


@pytest.mark.parametrize(("body", "message"), NOT_A_BATCH)
def test_a_body_that_is_not_a_batch_is_a_400_and_a_dead_letter(
    harness: Harness, body: bytes, message: str
) -> None:
    reply = harness.request(body, wait_close=0.2)
    assert reply.status == 400 and reply.body["error"].startswith(message), reply.body
    harness.dead_letters += 1
    (letter,) = harness.store.dead_letters()
    assert letter.source == "http:web" and letter.reasons == (reply.body["error"],)
    assert isinstance(letter.raw, str) and len(letter.raw) <= 2000
    assert not reply.closed  # the body was read: the connection can go on
    harness.good()


def test_a_byte_order_mark_is_ignored(harness: Harness) -> None:
    reply = harness.request(b"\xef\xbb\xbf" + json.dumps(harness.fresh(1)).encode())
    assert reply.status == 200 and reply.body["accepted"] == 1
    harness.accepted += 1
    harness.good()


VALID_TEXT = {
    "emoji": "tents \U0001f3d5\ufe0f and \U0001f600",
    "rtl": "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",  # Arabic, Hebrew
    "nul": "before\x00after",
    "controls": "tab\tnewline\nrecord\x1eunit\x1fdel\x7f",
    "combining": "e\u0301 \u2028 \u202e",  # combining accent, line separator, RTL override
}


def test_unicode_round_trips_and_lone_surrogates_are_refused(harness: Harness) -> None:
    user = "u-unicode"
    valid = []
    for n, (name, text) in enumerate(VALID_TEXT.items()):
        e = raw_event(n, user=user, etype="search", payload={"query": text})
        e["event_id"] = f"uni-{name}"
        e["payload"]["category"] = text[:100]
        valid.append(e)
    pair = raw_event(9, user=user, etype="page_view", payload={"title": "x"})
    pair["event_id"] = "uni-pair"
    bad: list[dict[str, Any]] = []
    for n, where in enumerate(("query", "category", "filter-key", "top-key", "browser")):
        e = raw_event(20 + n, user=user, etype="search", payload={"query": "ok"})
        e["event_id"] = f"lone-{where}"
        if where == "query":
            e["payload"]["query"] = "bad \ud800 text"
        elif where == "category":
            e["payload"]["category"] = "\udfff"
        elif where == "filter-key":
            e["type"] = "filter"
            e["payload"] = {"filters": {"col\udc00r": "red"}}
        elif where == "top-key":
            e["k\ud83d"] = 1
        else:
            e["context"] = {"browser": "fire\udbffx"}
        bad.append(e)
    # json.dumps writes lone surrogates as \\udxxx escapes (valid JSON), and
    # the title as an escaped surrogate pair, which is a valid emoji.
    body = json.dumps([*valid, *bad[:2], pair, *bad[2:]]).replace('"x"', '"\\ud83d\\ude00"')
    reply = harness.request(body.encode())
    assert reply.status == 200, reply
    assert reply.body["accepted"] == len(valid) + 1 and reply.body["conflicts"] == []
    rejected = {r["event_id"]: r for r in reply.body["rejected"]}
    assert set(rejected) == {e["event_id"] for e in bad}
    assert [r["index"] for r in reply.body["rejected"]] == [5, 6, 8, 9, 10]
    for r in rejected.values():
        assert any("lone surrogate" in x or "not in the event schema" in x for x in r["errors"])
    assert "payload.query: holds a lone surrogate (U+D800 at character 4)" in str(rejected)
    assert "k\\ud83d: field is not in the event schema" in rejected["lone-top-key"]["errors"]
    harness.accepted += reply.body["accepted"]
    harness.dead_letters += len(bad)

    # The dead letters are stored, with the surrogates written as escapes.
    letters = {d.event_id: d for d in harness.store.dead_letters(user_id=user)}
    assert set(letters) == set(rejected)
    assert letters["lone-query"].raw["payload"]["query"] == "bad \\ud800 text"
    assert "k\\ud83d" in letters["lone-top-key"].raw
    for d in letters.values():
        d.to_json().encode("utf-8")  # storable text

    # The valid ones come back unchanged from the stream and, through a
    # consumer, from the event store.
    published = {e["event_id"]: e for e in stream_events(harness.store)}
    processor = EventProcessor(harness.store, ProcessorConfig(consent=ConsentPolicy.grant_all()))
    config = ConsumerConfig(block_ms=0, sweep_interval_s=None)
    stats = StreamConsumer(harness.store, processor, config).run(until_idle=True)
    assert stats.applied == len(valid) + 1 and stats.dead_letters == 0
    stored = {e["event_id"]: e for e in map(json.loads, harness.store.user_events(user))}
    for e in valid:
        for copy in (published[e["event_id"]], stored[e["event_id"]]):
            assert copy["payload"] == e["payload"]
    assert stored["uni-pair"]["payload"]["title"] == "\U0001f600"
    harness.good()


def test_far_future_times_and_huge_numbers_are_refused_per_event(harness: Harness) -> None:
    cases: list[tuple[str, Any, str]] = [
        ("timestamp", "9999-12-31T23:59:59Z", "is in the future"),
        ("timestamp", 1_714_550_400_000, "epoch milliseconds? send seconds"),
        ("timestamp", 1e300, "is after 9999-12-31"),
        ("timestamp", -1e300, "is before 2000-01-01"),
        ("timestamp", 10**30, "is after 9999-12-31"),
        ("timestamp", "+10000-01-01T00:00:00Z", "is not an ISO 8601 date-time"),
        ("item_id", 2**64, "integer item ids must be < 2**63"),
    ]
    events = []
    for n, (name, value, _msg) in enumerate(cases):
        e = raw_event(n)
        e["event_id"] = f"num-{n}"
        e[name] = value
        events.append(e)
    price = raw_event(50, etype="purchase", payload={"price": 1.0})
    price["event_id"] = "num-price"
    filters = raw_event(51, etype="filter", payload={"filters": {"max": 1.0}})
    filters["event_id"] = "num-filter"
    good = harness.fresh(1)
    body = json.dumps([*events, price, filters, *good])
    # JSON with the numbers Python reads as inf and NaN.
    body = body.replace('"price": 1.0', '"price": 1e999').replace('"max": 1.0', '"max": NaN')
    reply = harness.request(body.encode())
    assert reply.status == 200 and reply.body["accepted"] == 1, reply.body
    errors = {r["event_id"]: " ".join(r["errors"]) for r in reply.body["rejected"]}
    for n, (_name, _value, message) in enumerate(cases):
        assert message in errors[f"num-{n}"], errors[f"num-{n}"]
    assert "must be finite" in errors["num-price"]
    assert "numbers must be finite" in errors["num-filter"]
    harness.accepted += 1
    harness.dead_letters += len(errors)
    harness.good()


async def _client(host: str, port: int, events: list[list[dict[str, Any]]]) -> list[Any]:
    """Posts each batch on one keep-alive connection; each reply or error."""
    out: list[Any] = []
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        return [e]
    for batch in events:
        body = json.dumps(batch).encode()
        head = f"{KEYED}Content-Length: {len(body)}\r\n\r\n"
        try:
            writer.write(head.encode() + body)
            await writer.drain()
            status = int((await reader.readuntil(b"\r\n")).split()[1])
            length = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            out.append((status, json.loads(await reader.readexactly(length))))
        except (OSError, asyncio.IncompleteReadError) as e:
            out.append(e)
    writer.close()
    return out


def test_200_concurrent_clients_see_no_resets(harness: Harness) -> None:
    batches = [[harness.fresh(5), harness.fresh(5)] for _ in range(200)]

    async def burst() -> list[list[Any]]:
        return await asyncio.gather(*[_client(harness.host, harness.port, b) for b in batches])

    t0 = time.monotonic()
    results = [r for client in asyncio.run(burst()) for r in client]
    errors = [r for r in results if not isinstance(r, tuple)]
    assert errors == [], errors[:5]  # no reset, no refused connection, no early close
    assert [status for status, _ in results] == [200] * 400
    assert sum(reply["accepted"] for _, reply in results) == 2000
    harness.accepted += 2000
    assert time.monotonic() - t0 < 30
    harness.good()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_stays_bounded_under_oversize_bodies(harness: Harness) -> None:
    # 48 uploads of 4 MB each at once (192 MB): a server that buffered bodies
    # before checking their size would hold them; this one holds one limit each.
    piece = b"[" * 65_536
    reply_ok = threading.Barrier(49)
    statuses: list[int] = []

    def upload(declared: bool) -> None:
        with harness.connect() as sock:
            sock.settimeout(5)
            if declared:
                head = f"Content-Length: {64 * len(piece)}\r\n"
            else:
                head = "Transfer-Encoding: chunked\r\n"
            sock.sendall(f"POST /v1/events HTTP/1.1\r\nX-API-Key: {KEY}\r\n{head}\r\n".encode())
            reply_ok.wait()
            try:
                for _ in range(64):
                    sock.sendall(piece if declared else b"10000\r\n" + piece + b"\r\n")
                    if select.select([sock], [], [], 0)[0]:
                        break
                statuses.append(read_reply(sock, time.monotonic(), wait_close=0).status)
            except OSError as e:  # after the linger the server may close for good
                statuses.append(-1 if isinstance(e, ConnectionResetError) else -2)

    before = _rss_mb()
    threads = [threading.Thread(target=upload, args=(i % 2 == 0,)) for i in range(48)]
    for t in threads:
        t.start()
    reply_ok.wait()
    for t in threads:
        t.join()
    grown = _rss_mb() - before
    assert statuses.count(413) == 48, statuses
    assert grown < 64, f"resident memory grew {grown:.0f} MB"
    harness.good()
