"""The bandit learns online from exposures and attributed clicks, read from a real store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from recsys.bandits import LinUCB
from recsys.bandits.online import BanditUpdater
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import CommitBatch
from recsys.events.validation import validate_event
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import exposure_event

T0 = 1_765_000_000_000


def _exposure(
    n: int, arm: int, bandit: str = "slot@1", x: list[float] | None = None,
    propensity: float | None = 0.5,
) -> dict:  # fmt: skip
    ctx = RequestContext(request_time_ms=T0 + n * 60_000, request_id=f"r-{n}")
    extra = {"bandit": bandit, "bandit_arm": arm, "bandit_context": x or [1.0, 0.0]}
    if propensity is not None:
        extra["bandit_propensity"] = propensity
    return exposure_event(
        user_id=f"u{n % 7}", items=[100 + arm], scores=[1.0], context=ctx, k=1,
        bundle="b", model="recommend:1", extra=extra,
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


def test_a_vowpal_wabbit_bandit_learns_with_the_logged_propensities() -> None:
    pytest.importorskip("vowpalwabbit", reason="vowpalwabbit is not installed")
    from recsys.bandits.vw import VowpalWabbitBandit

    class Recorded(VowpalWabbitBandit):
        """Records the propensity each update gets (VW's own state cannot be read)."""

        seen: list[float | None]

        def update(
            self, arm: int, x: np.ndarray, reward: float, propensity: float | None = None
        ) -> None:
            self.seen.append(propensity)
            super().update(arm, x, reward, propensity)

    # a skewed logging policy: arm 0 shown 90% of the time though arm 1 is clicked more
    rng = np.random.default_rng(4)
    raws, logged = [], []
    for n in range(400):
        arm = int(rng.random() < 0.1)
        p = 0.1 if arm else 0.9
        raws.append(_exposure(n, arm, propensity=p))
        logged.append(p)
        if rng.random() < (0.8 if arm else 0.2):
            raws.append(_click(n, arm))
    raws.append(_exposure(400, 1, propensity=None))  # an older log: none recorded
    raws.append(_exposure(401, 0, propensity=0.0))  # never shown by the logged policy
    bandit = Recorded(2, 2, exploration="epsilon", cb_type="ips", seed=0)
    bandit.seen = []
    updater = BanditUpdater(bandit, "slot@1", window_s=600)
    try:
        for raw in raws:
            updater.feed(validate_event(raw))
        updater.flush()
        assert bandit.seen == [*logged, None]  # the logged ones, in the log's order
        assert updater.stats.reasons == {
            "bandit_propensity 0: the logged policy never shows this arm": 1
        }
        # weighted by them, the rarely shown better arm wins
        choice = bandit.select(np.array([1.0, 0.0]), np.random.default_rng(0))
        assert int(np.argmax(choice.scores)) == 1
    finally:
        bandit.close()
