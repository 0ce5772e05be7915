"""The HTTP collector over a real socket: auth, validation, dead letters, publishing
once per event id, keep-alive, start/stop, and a store failure (a real
redis-server stopped under it)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rt_testkit import free_port, raw_event, start_redis, stream_events

from recsys.events.collector import CollectorConfig, EventCollector
from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import RealtimeStore

KEY = "k-web-123"


@pytest.fixture
def collector(store: RealtimeStore) -> Iterator[tuple[EventCollector, str]]:
    c = EventCollector(store, CollectorConfig(port=0, api_keys={"web": KEY}, max_batch=3))
    host, port = c.start()
    try:
        yield c, f"http://{host}:{port}"
    finally:
        c.stop()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + "/v1/events", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def send(url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    status, reply = post(url, json.dumps(events).encode(), {"X-API-Key": KEY})
    assert status == 200, reply
    return reply


def test_rejects_missing_and_wrong_keys(collector: tuple[EventCollector, str]) -> None:
    c, url = collector
    body = json.dumps([raw_event(1)]).encode()
    status, reply = post(url, body, {})
    assert status == 401 and reply == {"error": "missing or unknown API key"}
    assert post(url, body, {"X-API-Key": "k-web-124"})[0] == 401
    assert post(url, body, {"Authorization": "Basic k-web-123"})[0] == 401
    assert c.store.stream_stats()["length"] == 0 and c.store.dead_letter_count() == 0
    # The key also works as a bearer token, case-insensitively named.
    assert post(url, body, {"Authorization": f"bearer {KEY}"})[1]["accepted"] == 1


def test_batch_is_validated_published_and_dead_lettered(
    collector: tuple[EventCollector, str],
) -> None:
    c, url = collector
    bad = raw_event(2, user="u9")
    bad["payload"] = {"password": "hunter2"}
    body = json.dumps({"events": [raw_event(1), bad, raw_event(3, etype="search")]}).encode()
    status, reply = post(url, body, {"Authorization": f"Bearer {KEY}"})
    assert status == 200 and reply["accepted"] == 2
    assert reply["duplicates"] == 0 and reply["conflicts"] == []
    (rej,) = reply["rejected"]
    assert rej["index"] == 1 and rej["event_id"] == "e2"
    assert rej["errors"][0].startswith("payload.password: field is not in the schema")
    assert [e["event_id"] for e in stream_events(c.store)] == ["e1", "e3"]
    (dl,) = c.store.dead_letters(user_id="u9")
    assert dl.source == "http:web" and "hunter2" not in dl.to_json()


def test_bad_bodies(collector: tuple[EventCollector, str]) -> None:
    c, url = collector
    key = {"X-API-Key": KEY}
    status, reply = post(url, b"{oops", key)
    assert status == 400 and reply["error"].startswith("body is not JSON: Expecting")
    assert c.store.dead_letter_count() == 1  # the unreadable body is kept, not dropped
    status, reply = post(url, b'{"events": 5}', key)
    assert status == 400 and "JSON array of events" in reply["error"]
    assert c.store.dead_letter_count() == 2
    status, reply = post(url, json.dumps([raw_event(i) for i in range(4)]).encode(), key)
    assert status == 413 and reply["error"] == "more than 3 events in one batch"
    assert c.store.dead_letter_count() == 2 and c.store.stream_stats()["length"] == 0
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}
    for path, method, code in (("/v2/events", "POST", 404), ("/v1/events", "GET", 405)):
        req = urllib.request.Request(url + path, method=method, headers=key)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == code
    assert err.value.headers["Allow"] == "POST"


def test_collector_needs_keys(store: RealtimeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSYS_COLLECTOR_KEYS", raising=False)
    with pytest.raises(ValueError, match="at least one API key"):
        EventCollector(store)
    monkeypatch.setenv("RECSYS_COLLECTOR_KEYS", "app:secret1,web:secret2")
    c = EventCollector(store)
    assert c.authenticate("secret2") == "web" and c.authenticate("nope") is None
    with pytest.raises(ValueError, match="body_timeout_s must be > 0"):
        CollectorConfig(body_timeout_s=0)


def test_a_resent_batch_is_idempotent_and_reused_ids_are_conflicts(
    collector: tuple[EventCollector, str],
) -> None:
    c, url = collector
    first = [raw_event(1), raw_event(2, etype="search")]
    assert send(url, first) == {"accepted": 2, "duplicates": 0, "rejected": [], "conflicts": []}
    # An exact resend, even with its fields in another order and its time in
    # another UTC offset, is a duplicate: reported, not published again.
    again = [dict(reversed(list(e.items()))) for e in first]
    again[0]["timestamp"] = "2024-05-01T10:01:00+02:00"  # = raw_event(1)'s 08:01Z
    assert send(url, again) == {"accepted": 0, "duplicates": 2, "rejected": [], "conflicts": []}
    # The same ids with other content, or for another user: conflicts, dead-lettered.
    other_item = raw_event(1, item=999)
    other_user = raw_event(2, etype="search", user="u2")
    reply = send(url, [other_item, raw_event(3), other_user])
    assert reply["accepted"] == 1 and reply["duplicates"] == 0
    assert reply["conflicts"] == [
        {
            "index": 0,
            "event_id": "e1",
            "reason": "event_id: already used by an event with different content",
        },
        {
            "index": 2,
            "event_id": "e2",
            "reason": "event_id: already used by an event of another user",
        },
    ]
    letters = {d.event_id: d for d in c.store.dead_letters()}
    assert set(letters) == {"e1", "e2"} and letters["e2"].user_id == "u2"
    assert letters["e1"].raw["item_id"] == 999  # the refused event (its canonical form)
    # Within one batch the second use of an id compares with the first.
    reply = send(url, [raw_event(4), raw_event(4), raw_event(4, item=5)])
    assert (reply["accepted"], reply["duplicates"]) == (1, 1)
    assert [(x["index"], x["event_id"]) for x in reply["conflicts"]] == [(2, "e4")]
    published = stream_events(c.store)
    assert sorted(e["event_id"] for e in published) == ["e1", "e2", "e3", "e4"]
    assert next(e for e in published if e["event_id"] == "e1")["item_id"] == 101  # the first
    assert c.store.dead_letter_count() == 3


def test_requests_share_a_keep_alive_connection(collector: tuple[EventCollector, str]) -> None:
    c, url = collector
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    sockets = []
    for n in range(5):
        body = json.dumps([raw_event(n)])
        conn.request("POST", "/v1/events", body, {"X-API-Key": KEY})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["accepted"] == 1
        assert resp.getheader("Connection") is None  # kept open
        sockets.append(conn.sock)
    assert len({id(s) for s in sockets}) == 1 and sockets[0] is not None
    conn.close()
    assert len(stream_events(c.store)) == 5


def test_start_binds_loopback_and_stop_releases_the_port() -> None:
    store = SqliteStore()
    c = EventCollector(store, CollectorConfig(port=0, api_keys={"web": KEY}))
    host, port = c.start()
    assert host == "127.0.0.1"
    with pytest.raises(RuntimeError, match="already running"):
        c.start()
    taken = EventCollector(store, CollectorConfig(port=port, api_keys={"web": KEY}))
    with pytest.raises(OSError):
        taken.start()
    c.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), 2):
        pass
    c.stop()  # a second stop is a no-op


@pytest.mark.redis
def test_a_store_failure_is_a_503_and_the_resend_publishes_once(tmp_path: Any) -> None:
    # A real fault: the collector's own redis-server stops under it, then comes back.
    port = free_port()
    server = start_redis(port)
    store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix=f"t{uuid.uuid4().hex[:8]}")
    c = EventCollector(store, CollectorConfig(port=0, api_keys={"web": KEY}))
    host, cport = c.start()
    url = f"http://{host}:{cport}"
    try:
        assert send(url, [raw_event(1)])["accepted"] == 1
        server.terminate()
        server.wait(timeout=10)
        status, reply = post(url, json.dumps([raw_event(2)]).encode(), {"X-API-Key": KEY})
        assert status == 503 and "send the batch again" in reply["error"]
        assert "Traceback" not in json.dumps(reply)
        server = start_redis(port)  # empty: no persistence in tests
        store.r.xgroup_create(store.stream_key, store.group, id="0", mkstream=True)
        reply = send(url, [raw_event(2), raw_event(2)])
        assert (reply["accepted"], reply["duplicates"]) == (1, 1)
        assert [e["event_id"] for e in stream_events(store)] == ["e2"]
    finally:
        c.stop()
        store.close()
        server.terminate()
        server.wait(timeout=10)
