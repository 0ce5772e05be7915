"""Attribution over a real store: the online consumer and the batch job agree.

Exposures built by ``exposure_event`` and clicks, purchases and dwell events are
published to the SQLite store and to a real redis-server (one and two partitions); the
consumer reads them in its own group, the batch job scans the stream, and both give the
same engagement per segment, rule, model and position, and the same segment lifts.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.events.attribution import GROUPS, NONE
from recsys.events.attribution_consumer import (
    AttributionConsumer,
    AttributionConsumerConfig,
    attribution_batch,
    scan_stream,
)
from recsys.events.lift import segment_lift
from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import RealtimeStore, canonical_event
from recsys.events.validation import validate_event
from recsys.realtime_cli import main
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import EXPOSURE_TYPE, exposure_event

T0 = 1_714_550_400.0
SEGMENTS = ["vip", "new", "churn_risk"]

Opener = Callable[[str], RealtimeStore]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-2", marks=pytest.mark.redis),
    ]
)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens one store (the same data) under a given consumer group."""
    opened: list[RealtimeStore] = []
    if request.param == "sqlite":
        path = tmp_path / "rt.db"

        def open_(group: str) -> RealtimeStore:
            opened.append(SqliteStore(path, group=group))
            return opened[-1]
    else:
        url = request.getfixturevalue("redis_url")
        prefix, parts = f"t{uuid.uuid4().hex[:12]}", 2 if request.param == "redis-2" else 1

        def open_(group: str) -> RealtimeStore:
            opened.append(RedisStore(url, prefix=prefix, group=group, partitions=parts))
            return opened[-1]

    yield open_
    for store in opened:
        store.close()


def _exposure(user: int, items: list[int], rid: str, at: float, **kw: Any) -> dict[str, Any]:
    ctx = RequestContext.from_values(
        request_id=rid, request_time_ms=int(at * 1000), surface=kw.pop("surface", "home")
    )
    return exposure_event(
        user_id=user,
        items=items,
        scores=[1.0] * len(items),
        context=ctx,
        k=len(items),
        bundle="b1",
        model=kw.pop("model", "recommend:1"),
        **kw,
    )


def _outcome(user: int, item: int, at: float, kind: str, n: int, **payload: Any) -> dict[str, Any]:
    if kind == "purchase":
        payload["price"] = 12.0
    if kind == "dwell":
        payload.setdefault("dwell_ms", 20_000)
    return {
        "event_id": f"{kind}-{n}",
        "user_id": str(user),
        "session_id": f"s{user}",
        "type": kind,
        "item_id": item,
        "timestamp": at,
        "payload": payload,
    }


def _traffic(seed: int = 0, lists: int = 400) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Exposures and their outcomes in arrival order, and what the joins must give.

    Every shown item is unique, so each outcome has exactly one list it can join (by its
    request id, or in the window); arrival order is time order with neighbours up to
    2 s apart swapped (an exposure may arrive after an outcome of a later time).
    """
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    truth: dict[str, Any] = {"clicks": {}, "purchases": 0, "dwell": 0}
    n = 0
    for i in range(lists):
        user, at = rng.randrange(80), T0 + i * 3.0
        items = [i * 10 + j for j in range(rng.randint(2, 6))]
        member = [s for s in SEGMENTS if rng.random() < (0.6 if user < 30 else 0.15)]
        events.append(
            _exposure(
                user,
                items,
                f"r{i}",
                at,
                segments=member,
                rules=["pin"] if rng.random() < 0.3 else [],
                model=rng.choice(["recommend:1", "recommend:2"]),
            )
        )
        ctr = 0.35 if "vip" in member else 0.2
        for position, item in enumerate(items):
            if rng.random() < ctr / (1 + position):
                n += 1
                rid = {"request_id": f"r{i}"} if rng.random() < 0.6 else {}
                events.append(_outcome(user, item, at + rng.uniform(0.5, 600), "click", n, **rid))
                for s in member or [NONE]:
                    truth["clicks"][s] = truth["clicks"].get(s, 0) + 1
                if rng.random() < 0.2:
                    n += 1
                    events.append(_outcome(user, item, at + 700, "purchase", n))
                    truth["purchases"] += 1
                if rng.random() < 0.3:
                    n += 1
                    events.append(_outcome(user, item, at + 30, "dwell", n))
                    truth["dwell"] += 1
    events.sort(key=lambda e: e["timestamp"])
    for k in range(len(events) - 1):
        a, b = events[k], events[k + 1]
        if b["timestamp"] - a["timestamp"] < 2 and rng.random() < 0.3:
            events[k], events[k + 1] = b, a
    return events, truth


def _publish(store: RealtimeStore, events: list[dict[str, Any]]) -> None:
    """In the given order: runs of exposures as the exposure writer publishes them
    (``publish``), runs of outcomes as the collector does (``publish_new``)."""
    for shown, run in itertools.groupby(events, lambda e: e["type"] == EXPOSURE_TYPE):
        group = list(run)
        if shown:
            store.publish([json.dumps(e) for e in group], users=[e["user_id"] for e in group])
        else:
            pairs = [canonical_event(validate_event(e)) for e in group]
            store.publish_new([text for text, _ in pairs], [key for _, key in pairs])


BROKEN = [
    "not json {",
    json.dumps({"event_id": "x1", "user_id": "u", "type": "click"}),  # no session, no time
]


def _lift(rows: list[Any]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in rows]


def test_the_online_consumer_and_the_batch_job_give_the_same_engagement(opener: Opener) -> None:
    events, truth = _traffic()
    publisher = opener("profiles")
    half = len(events) // 2
    _publish(publisher, events[:half])
    publisher.publish(BROKEN, users=["u", "u"])
    consumer = AttributionConsumer(opener("attribution"), AttributionConsumerConfig(block_ms=0))
    consumer.run(until_idle=True)
    _publish(publisher, events[half:])  # more arrives: the consumer goes on from its group
    consumer.run(until_idle=True)
    batch = attribution_batch(opener("other"))

    assert consumer.read_stats.unparseable == batch.read.unparseable == 2
    assert consumer.read_stats.events == batch.read.events == len(events)
    assert consumer.read_stats.late == 0 and consumer.held == 0
    assert vars(consumer.attribution_stats) == vars(batch.attribution_stats)
    stats = batch.attribution_stats
    assert stats.by_request_id > 50 and stats.by_window > 50 and stats.unattributed == 0
    for by in GROUPS:
        assert consumer.engagement(by) == batch.engagement(by), by
    by_segment = {r["segment"]: r for r in batch.engagement("segment")}
    assert {s: by_segment[s]["clicks"] for s in truth["clicks"]} == truth["clicks"]
    assert sum(r["conversions"] for r in batch.engagement("position")) == truth["purchases"]
    assert sum(r["dwell_events"] for r in batch.engagement("model")) == truth["dwell"]
    assert {r["rule"] for r in batch.engagement("rule")} == {"pin", NONE}
    online = _lift(segment_lift(consumer.tally, min_users=10))
    offline = _lift(segment_lift(batch.tally, min_users=10))
    assert len(online) == len(offline) > 0
    for a, b in zip(online, offline, strict=True):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == {
            k: v for k, v in b.items() if not isinstance(v, float)
        }
        assert [a[k] for k in a if isinstance(a[k], float)] == pytest.approx(
            [b[k] for k in b if isinstance(b[k], float)], rel=1e-9
        )
    vip = next(r for r in offline if r["segment"] == "vip" and r["metric"] == "ctr")
    assert vip["lift"] is not None and vip["ci_low"] < vip["lift"] < vip["ci_high"]
    # the attribution group acknowledged everything; the profiles' group is untouched
    assert consumer.store.stream_stats()["pending"] == 0
    assert len(list(scan_stream(publisher))) == len(events) + 2
    assert len(publisher.read("c1", 10_000, 0, False)) == len(events) + 2


def test_an_exposure_arriving_after_a_later_click_still_joins(opener: Opener) -> None:
    publisher = opener("profiles")
    click = _outcome(1, 10, T0 + 1, "click", 1)  # no request id: the window joins it
    publisher.publish([json.dumps(click)])
    publisher.publish([json.dumps(_exposure(1, [10, 11], "r1", T0))])
    held = AttributionConsumer(opener("attribution"), AttributionConsumerConfig(block_ms=0))
    held.run(until_idle=True)
    assert held.attribution_stats.by_window == 1 and held.read_stats.late == 0
    assert held.engagement("position")[0]["clicks"] == 1
    assert attribution_batch(publisher).engagement("position") == held.engagement("position")
    # without a reorder window (and one entry per read) the click is fed first:
    # unattributed, and the exposure is late
    at_once = AttributionConsumer(
        opener("attribution-b"), AttributionConsumerConfig(block_ms=0, reorder_s=0, batch_size=1)
    )
    at_once.run(until_idle=True)
    assert at_once.attribution_stats.unattributed == 1 and at_once.read_stats.late == 1


def test_a_restarted_consumer_reads_its_unacknowledged_entries_first(opener: Opener) -> None:
    publisher = opener("profiles")
    events, _ = _traffic(seed=1, lists=40)
    _publish(publisher, events)
    store = opener("attribution")
    taken = store.read("attribution-1", 5, 0, False)  # read, then the process died
    assert taken
    consumer = AttributionConsumer(store, AttributionConsumerConfig(block_ms=0))
    consumer.run(until_idle=True)
    assert consumer.read_stats.events == len(events)
    assert store.stream_stats()["pending"] == 0


def test_the_profiles_group_is_refused(opener: Opener) -> None:
    with pytest.raises(ValueError, match="its own consumer group"):
        AttributionConsumer(opener("profiles"))


def test_the_cli_runs_online_and_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "rt.db"
    events, _ = _traffic(seed=2, lists=300)
    store = SqliteStore(db)
    _publish(store, events)
    store.publish(BROKEN)
    store.close()
    report = tmp_path / "report.md"
    common = ["--sqlite", str(db), "attribution", "--segment-lift", "--min-users", "10"]
    assert main([*common, "--until-idle", "--out", str(report)]) == 0
    online = json.loads(capsys.readouterr().out)
    assert main([*common, "--batch", "--by", "segment,position"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert (online["mode"], batch["mode"]) == ("online", "batch")
    assert online["read"]["unparseable"] == batch["read"]["unparseable"] == 2
    assert set(batch["engagement"]) == {"segment", "position"}
    for by in ("segment", "position"):
        assert online["engagement"][by] == batch["engagement"][by]
    assert [r["segment"] for r in batch["segment_lift"]] == sorted(SEGMENTS * 2)
    text = report.read_text()
    assert "# Attribution (online)" in text and "## Engagement per segment" in text
    assert "## Segment lift" in text and "| vip | ctr |" in text and "2 unparseable" in text
    # a second online run continues its group: nothing new
    assert main([*common, "--until-idle"]) == 0
    assert json.loads(capsys.readouterr().out)["read"]["entries"] == 0
    assert main(["--sqlite", str(tmp_path / "missing.db"), "attribution", "--batch"]) == 2
    assert main(["--sqlite", str(db), "attribution", "--batch", "--by", "colour"]) == 2
