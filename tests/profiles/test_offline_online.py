"""The same features offline (from the log) and online (through the stream)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.events.batch import load_yoochoose_clicks
from recsys.events.producer import EventProducer
from recsys.events.store import RealtimeStore
from recsys.features.schema import FeatureSchema, Kind
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.config import ProfileConfig
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.features import dense_feature_names, profile_features
from recsys.profiles.offline import build_profiles
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.profiles.service import ProfileService
from recsys.profiles.state import UserProfile
from recsys.segments.engine import SegmentEngine

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = FeatureSchema.from_yaml(ROOT / "configs" / "schema" / "ml100k.yaml")
N_EVENTS = 5000


def test_replayed_log_gives_equal_features_online_and_offline(
    store: RealtimeStore, yoochoose_path: Path
) -> None:
    events = load_yoochoose_clicks(yoochoose_path).events[:N_EVENTS]
    config = ProfileConfig.from_schema(SCHEMA)
    assert config.recent_items == SCHEMA["user_recent_items"].max_len == 50
    engine = SegmentEngine.from_yaml(ROOT / "configs" / "segments" / "yoochoose.yaml", config)
    offline_engine = SegmentEngine.from_yaml(
        ROOT / "configs" / "segments" / "yoochoose.yaml", config
    )
    offline = build_profiles(events, config, hooks=[offline_engine])

    EventProducer(store).publish(events)
    proc = EventProcessor(
        store, ProcessorConfig(profile=config, consent=ConsentPolicy.grant_all()), hooks=[engine]
    )
    stats = StreamConsumer(
        store, proc, ConsumerConfig(batch_size=300, block_ms=0, sweep_interval_s=None)
    ).run(until_idle=True)
    assert stats.applied == N_EVENTS

    service = ProfileService(store, SCHEMA, config)
    as_of = max(e.ts_us for e in events)
    for user, prof in offline.items():
        want = profile_features(prof, {}, SCHEMA, as_of, config)
        got = service.features(user, as_of)
        assert got == want, user
        assert len(got.values["user_recent_items"]) <= 50
        assert 0 <= got.values["hour"] < 24 and 0 <= got.values["weekday"] < 7
    # Segment memberships computed offline equal the ones committed online.
    members_online = {s: store.segment_members(s) for s in engine.segments}
    members_offline = {
        s: {u for u, p in offline.items() if s in p.segments} for s in engine.segments
    }
    assert members_online == members_offline
    assert sum(len(m) for m in members_online.values()) > 0


def test_features_follow_the_schema_shapes() -> None:
    from rt_testkit import BASE_US, event

    config = ProfileConfig.from_schema(SCHEMA)
    p = UserProfile("u1")
    for i in range(60):
        p.apply(event(i, item=i, context={"device_type": "mobile"}), config)
    row = profile_features(p, {"age": 29, "gender": "female"}, SCHEMA, BASE_US + 3_600_000_000)
    expected = ["user_id", "user_age", "user_gender", "user_recent_items", "hour", "weekday"]
    assert list(row.values) == expected
    assert row.values["user_recent_items"] == list(range(10, 60))
    assert row.values["user_age"] == "25-34" and row.values["hour"] == 9
    # the schema's alias turns the profile's "female" into the dataset's "F"
    assert row.values["user_gender"] == "F"
    assert row.missing == ("user_occupation",)
    for spec in SCHEMA.by_role():
        if spec.name in row.values and spec.kind is Kind.CATEGORICAL:
            assert not isinstance(row.values[spec.name], list)
    names = dense_feature_names(config)
    assert list(row.dense) == names and len(row.dense_vector()) == len(names)
    # Events at minutes 0..59; the 1 h window ending at minute 60 holds minutes 1..60.
    assert row.dense["count_click_24h"] == 60.0 and row.dense["count_click_1h"] == 59.0
    assert row.dense["count_purchase_30d"] == 0.0


@pytest.mark.slow
def test_full_log_replay_matches(store: RealtimeStore, yoochoose_path: Path) -> None:
    events = load_yoochoose_clicks(yoochoose_path).events
    offline = build_profiles(events)
    EventProducer(store).publish(events)
    proc = EventProcessor(store, ProcessorConfig(consent=ConsentPolicy.grant_all()))
    StreamConsumer(store, proc, ConsumerConfig(block_ms=0, sweep_interval_s=None)).run(
        until_idle=True
    )
    online = store.load_users(sorted(offline))
    for user, prof in offline.items():
        # As JSON: documents hold tuples where the stored text has arrays.
        assert json.loads(online[user].profile or "null") == json.loads(
            json.dumps(prof.to_doc())
        ), user
