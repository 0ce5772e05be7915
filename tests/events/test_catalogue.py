"""The item catalogue: item_published events -> records, on the SQLite and a real Redis store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.events.catalogue import (
    CatalogueConsumer,
    CatalogueRecord,
    CatalogueStore,
    record_from_event,
)
from recsys.events.producer import EventProducer
from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import RealtimeStore
from recsys.events.validation import EventValidationError, EventValidator, ValidationConfig

GENRES = ["Action", "Comedy", "Drama"]
Opener = Callable[[str], RealtimeStore]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
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
        prefix = f"t{uuid.uuid4().hex[:12]}"

        def open_(group: str) -> RealtimeStore:
            opened.append(RedisStore(url, prefix=prefix, group=group))
            return opened[-1]

    yield open_
    for store in opened:
        store.close()


def item_event(item: Any, categories: list[str], **payload: Any) -> dict[str, Any]:
    return {
        "event_id": f"pub-{uuid.uuid4().hex}",
        "user_id": "editor",
        "session_id": "catalogue",
        "type": "item_published",
        "item_id": item,
        "timestamp": "2024-05-01T10:00:00Z",
        "payload": {"categories": categories, **payload},
    }


def consume(store: RealtimeStore) -> CatalogueConsumer:
    consumer = CatalogueConsumer(store, CatalogueStore(store), GENRES)
    consumer.run(until_idle=True)
    return consumer


def test_item_events_become_records_and_updates_replace_them(opener: Opener) -> None:
    producer_store = opener("profiles")
    events = [
        item_event(5001, ["Comedy"], title="A", release_date="2024-04-30", year=2024),
        item_event(5002, ["Action", "Drama", "Action"], title="B"),
        {**item_event(7, []), "type": "click"},  # not a catalogue event: skipped
    ]
    EventProducer(producer_store).publish(events)
    store = opener("catalogue")
    consumer = consume(store)
    assert (consumer.stats.items, consumer.stats.records, consumer.stats.refused) == (2, 2, 0)
    catalogue = CatalogueStore(store)
    first = catalogue.get(5001)
    assert first is not None
    assert (first.categories, first.release_date, first.year, first.title) == (
        ("Comedy",),
        "2024-04-30",
        2024,
        "A",
    )
    second = catalogue.get(5002)
    assert second is not None and second.categories == ("Action", "Drama")
    changes = catalogue.changes(0, 10)
    assert [c["item_id"] for c in changes] == [5001, 5002]
    seen = max(c["version"] for c in changes)

    EventProducer(producer_store).publish([item_event(5001, ["Drama"], title="A2")])
    consume(store)
    assert catalogue.count() == 2  # the same item, not a second one
    updated = catalogue.changes(seen, 10)
    assert [(c["item_id"], c["categories"], c["title"]) for c in updated] == [
        (5001, ["Drama"], "A2")
    ]
    assert updated[0]["version"] > seen
    assert updated[0]["created"] == changes[0]["created"] < changes[1]["created"]
    assert catalogue.changes(0, 1)[0]["item_id"] == 5002  # oldest version first, limited


def test_unknown_categories_and_ids_are_dead_lettered(opener: Opener) -> None:
    EventProducer(opener("profiles")).publish(
        [
            item_event(6001, ["Comedy", "Space Opera"]),
            item_event("sku-9", ["Drama"]),
            item_event(6002, ["Drama"]),
        ]
    )
    store = opener("catalogue")
    consumer = consume(store)
    assert (consumer.stats.records, consumer.stats.refused) == (1, 2)
    catalogue = CatalogueStore(store)
    assert catalogue.get(6001) is None and catalogue.get(6002) is not None
    letters = store.dead_letters(user_id="editor")
    reasons = sorted(r for letter in letters for r in letter.reasons)
    assert any("'Space Opera'" in r and "not in the served vocabulary" in r for r in reasons)
    assert any("'sku-9' is not an integer id" in r for r in reasons)
    assert all(letter.source == "catalogue" for letter in letters)
    assert store.stream_stats()  # the entries were acknowledged, not left pending
    assert consume(store).stats.entries == 0


def test_the_profiles_group_is_refused() -> None:
    store = SqliteStore()
    with pytest.raises(ValueError, match="own consumer group"):
        CatalogueConsumer(store, CatalogueStore(store), GENRES)


def test_item_event_payloads_are_validated() -> None:
    validator = EventValidator(ValidationConfig(max_future_skew_s=None))
    with pytest.raises(EventValidationError) as info:
        validator.validate(
            {**item_event(None, ["Comedy"], release_date="2024-13-01", rating=3), "item_id": None}
        )
    errors = " ".join(info.value.errors)
    assert "item_id: required for item_published events" in errors
    assert "payload.release_date" in errors and "payload.rating" in errors
    event = validator.validate(item_event(9, ["Comedy"], release_date="1999-02-28", year=1998))
    record = record_from_event(event, None)
    assert record == CatalogueRecord(
        9, ("Comedy",), "1999-02-28", 1998, "", event.event_id, event.ts_us
    )
