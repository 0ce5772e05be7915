"""Segment memberships at a training cut-off equal what the stream consumer commits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsys.data.frame import ITEM, USER
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.events.producer import EventProducer
from recsys.events.schema import EventType
from recsys.events.store import RealtimeStore
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.segments.engine import SegmentEngine
from recsys.segments.loader import load_segments_text
from recsys.segments.offline import interaction_events, memberships_at

RULES = Path(__file__).resolve().parents[2] / "configs" / "ranker" / "segments" / "synthetic.yaml"


def _log() -> pd.DataFrame:
    data = generate(SyntheticConfig(n_users=120, n_items=60, seed=4, events_per_user=40))
    return data.interactions


def test_offline_memberships_equal_the_online_consumers(store: RealtimeStore) -> None:
    log = _log()
    offline = memberships_at(log, SegmentEngine.from_yaml(RULES))
    engine = SegmentEngine.from_yaml(RULES)
    EventProducer(store).publish(interaction_events(log))
    processor = EventProcessor(
        store, ProcessorConfig(consent=ConsentPolicy.grant_all()), hooks=[engine]
    )
    stats = StreamConsumer(store, processor, ConsumerConfig(block_ms=0, sweep_interval_s=None)).run(
        until_idle=True
    )
    assert stats.applied == len(log)
    for name in engine.segments:
        online = store.segment_members(name)
        assert online == {u for u, segs in offline.items() if name in segs}, name
    assert sum(len(s) for s in offline.values()) > 0
    assert set(offline) == {str(u) for u in log[USER].unique()}


def test_events_keep_types_devices_and_payloads() -> None:
    log = _log().head(400)
    events = interaction_events(log)
    assert [e.ts_us for e in events] == sorted(e.ts_us for e in events)
    kinds = {e.type for e in events}
    assert EventType.PAGE_VIEW in kinds and "view" not in {k.value for k in kinds}
    by_id = {e.event_id: e for e in events}
    first = by_id["offline-0"]
    assert first.user_id == str(log[USER].iloc[0]) and first.item_id == int(log[ITEM].iloc[0])
    assert first.context.device_type == log["device"].iloc[0]
    buys = [e for e in events if e.type is EventType.PURCHASE]
    assert all(e.payload["price"] > 0 for e in buys)
    with pytest.raises(ValueError, match="not one of"):
        interaction_events(log.assign(event_type="teleport"))


def test_the_cut_off_sweep_ends_time_based_memberships() -> None:
    rules = "segments: [{name: recent, enter: 'count(rating, 30d) >= 1'}]"
    day = 86_400
    frame = pd.DataFrame(
        {
            USER: [1, 2],
            ITEM: [10, 11],
            "rating": [4.0, 5.0],
            "timestamp": pd.to_datetime([0, 40 * day], unit="s", utc=True),
        }
    )
    engine = SegmentEngine(load_segments_text(rules))
    got = memberships_at(frame, engine, default_type="rating")
    # user 1 rated 40 days before the cut-off (the latest rating): no longer recent
    assert got == {"1": (), "2": ("recent",)}
