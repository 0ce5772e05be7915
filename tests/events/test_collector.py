"""The HTTP collector over a real socket: auth, validation, dead letters, publishing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from rt_testkit import raw_event

from recsys.events.collector import CollectorConfig, EventCollector
from recsys.events.store import RealtimeStore


@pytest.fixture
def collector(store: RealtimeStore) -> Iterator[tuple[EventCollector, str]]:
    c = EventCollector(store, CollectorConfig(port=0, api_keys={"web": "k-web-123"}, max_batch=3))
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


def test_rejects_missing_and_wrong_keys(collector: tuple[EventCollector, str]) -> None:
    c, url = collector
    body = json.dumps([raw_event(1)]).encode()
    assert post(url, body, {})[0] == 401
    assert post(url, body, {"X-API-Key": "k-web-124"})[0] == 401
    assert c.store.stream_stats()["length"] == 0


def test_batch_is_validated_published_and_dead_lettered(
    collector: tuple[EventCollector, str],
) -> None:
    c, url = collector
    bad = raw_event(2, user="u9")
    bad["payload"] = {"password": "hunter2"}
    body = json.dumps({"events": [raw_event(1), bad, raw_event(3, etype="search")]}).encode()
    status, reply = post(url, body, {"Authorization": "Bearer k-web-123"})
    assert status == 200 and reply["accepted"] == 2
    (rej,) = reply["rejected"]
    assert rej["index"] == 1 and rej["event_id"] == "e2"
    assert rej["errors"][0].startswith("payload.password: field is not in the schema")
    assert c.store.stream_stats()["length"] == 2
    (dl,) = c.store.dead_letters(user_id="u9")
    assert dl.source == "http:web" and "hunter2" not in dl.to_json()


def test_bad_bodies(collector: tuple[EventCollector, str]) -> None:
    c, url = collector
    key = {"X-API-Key": "k-web-123"}
    assert post(url, b"{oops", key)[0] == 400
    assert c.store.dead_letter_count() == 1  # the unreadable body is kept, not dropped
    assert post(url, b'{"events": 5}', key)[0] == 400
    assert post(url, json.dumps([raw_event(i) for i in range(4)]).encode(), key)[0] == 413
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
        assert resp.status == 200


def test_collector_needs_keys(store: RealtimeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSYS_COLLECTOR_KEYS", raising=False)
    with pytest.raises(ValueError, match="at least one API key"):
        EventCollector(store)
    monkeypatch.setenv("RECSYS_COLLECTOR_KEYS", "app:secret1,web:secret2")
    c = EventCollector(store)
    assert c.authenticate("secret2") == "web" and c.authenticate("nope") is None
