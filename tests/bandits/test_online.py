"""The bandit learns online from exposures and attributed clicks, read from a real store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from recsys.bandits import LinUCB
from recsys.bandits.online import BanditUpdater
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import CommitBatch
from recsys.events.validation import validate_event
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import exposure_event

T0 = 1_765_000_000_000


def _exposure(n: int, arm: int, bandit: str = "slot@1", x: list[float] | None = None) -> dict:
    ctx = RequestContext(request_time_ms=T0 + n * 60_000, request_id=f"r-{n}")
    return exposure_event(
        user_id=f"u{n % 7}", items=[100 + arm], scores=[1.0], context=ctx, k=1,
        bundle="b", model="recommend:1",
        extra={"bandit": bandit, "bandit_arm": arm, "bandit_context": x or [1.0, 0.0],
               "bandit_propensity": 0.5},
    )  # fmt: skip


def _click(n: int, arm: int) -> dict:
    return {"event_id": f"c-{n}", "user_id": f"u{n % 7}", "session_id": f"u{n % 7}",
            "type": "click", "item_id": 100 + arm, "timestamp": (T0 + n * 60_000) / 1000 + 5,
            "payload": {"request_id": f"r-{n}"}}  # fmt: skip


def _stream(n: int) -> list[dict]:
    """Arm 1 is clicked 80% of the time, arm 0 20%; one exposure a minute."""
    rng = np.random.default_rng(0)
    events: list[dict] = []
    for i in range(n):
        arm = i % 2
        events.append(_exposure(i, arm))
        if rng.random() < (0.8 if arm else 0.2):
            events.append(_click(i, arm))
    return events


def test_exposures_and_clicks_update_the_bandit_once_each_window_closes() -> None:
    bandit = LinUCB(2, 2)
    updater = BanditUpdater(bandit, "slot@1", window_s=600)  # 10 minutes
    events = [validate_event(e) for e in _stream(200)]
    for event in events:
        updater.feed(event)
    # windows of the last ten minutes are still open
    assert updater.stats.exposures == 200 and 185 <= updater.stats.updates <= 191
    open_windows = 200 - updater.stats.updates
    assert updater.flush() == open_windows
    assert bandit.counts.sum() == 200 and updater.stats.updates == 200
    clicks = sum(1 for e in events if e.type.value == "click")
    assert updater.stats.rewarded == clicks
    theta = bandit.theta @ np.array([1.0, 0.0])
    assert theta[1] > 0.6 > 0.35 > theta[0]  # ~0.8 and ~0.2 (shrunk by the prior)


def test_a_click_after_its_window_is_no_reward() -> None:
    bandit = LinUCB(2, 2)
    updater = BanditUpdater(bandit, "slot@1", window_s=60)
    late = _click(0, 1) | {"timestamp": T0 / 1000 + 61}  # names its request, 61 s late
    for raw in (_exposure(0, 1), late):
        updater.feed(validate_event(raw))
    # the late click closed the window first: one update, reward 0
    assert updater.stats.updates == 1 and updater.stats.rewarded == 0
    assert bandit.counts.sum() == 1 and float(bandit.theta[1] @ np.array([1.0, 0.0])) == 0.0
    on_time = BanditUpdater(LinUCB(2, 2), "slot@1", window_s=60)
    for raw in (_exposure(0, 1), _click(0, 1)):  # 5 s after
        on_time.feed(validate_event(raw))
    assert on_time.flush() == 1 and on_time.stats.rewarded == 1


def test_other_bandits_and_malformed_exposures_are_skipped_with_a_reason() -> None:
    bandit = LinUCB(2, 2)
    updater = BanditUpdater(bandit, "slot@1", window_s=60)
    other = validate_event(_exposure(1, 0, bandit="other@1"))
    wrong_dim = validate_event(_exposure(2, 0, x=[1.0, 0.0, 5.0]))
    for event in (other, wrong_dim):
        updater.feed(event)
    assert updater.flush() == 0 and bandit.counts.sum() == 0
    assert updater.stats.reasons == {"arm or context does not fit the bandit": 1}


def test_the_same_learning_from_the_store_stream(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "rt.db")
    try:
        EventProducer(store).publish(_stream(120))
        direct, streamed = LinUCB(2, 2), LinUCB(2, 2)
        a = BanditUpdater(direct, "slot@1", window_s=600)
        for event in _stream(120):
            a.feed(validate_event(event))
        a.flush()
        b = BanditUpdater(streamed, "slot@1", window_s=600)
        reader = f"bandit-{uuid.uuid4().hex[:6]}"
        while deliveries := store.read(reader, 50, 0, False):
            for d in deliveries:
                b.feed(validate_event(json.loads(d.payload)))
            store.commit(CommitBatch(acks=[d.entry_id for d in deliveries]))
        b.flush()
    finally:
        store.close()
    np.testing.assert_allclose(streamed.theta, direct.theta)
    assert streamed.version == direct.version == 120
