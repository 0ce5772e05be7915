"""The project's exposure log (exposure_event + attributed clicks) as OPE rows, end to end."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recsys.events.attribution import attribute
from recsys.events.validation import validate_event
from recsys.ope.bootstrap import BootstrapConfig
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import DoublyRobust, InverseProbabilityWeighting, SelfNormalizedIPS
from recsys.ope.evaluate import evaluate
from recsys.ope.exposure_log import logged_from_events, logged_from_exposures
from recsys.ope.reward_model import item_position_refit
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import exposure_event

T0 = 1_700_000_000.0


def _shown(user: int, items: list[int], request_id: str, at: float, **kw: Any) -> dict[str, Any]:
    ctx = RequestContext.from_values(request_id=request_id, request_time_ms=int(at * 1000))
    return exposure_event(
        user_id=user, items=items, scores=[1.0] * len(items), context=ctx, k=len(items),
        bundle="b1", model="recommend:1", **kw,
    )  # fmt: skip


def _click(user: int, item: int, at: float, request_id: str | None) -> dict[str, Any]:
    payload = {} if request_id is None else {"request_id": request_id}
    return {"event_id": f"c-{user}-{item}-{at}", "user_id": str(user), "session_id": "s",
            "type": "click", "item_id": item, "timestamp": at, "payload": payload}  # fmt: skip


def test_each_shown_position_is_a_row_rewarded_by_its_attributed_click() -> None:
    events = [
        _shown(1, [10, 11, 12], "r1", T0, propensities=[0.5, 0.25, 0.2], policy="softmax"),
        _shown(2, [12, 10], "r2", T0 + 1, propensities=[0.4, 0.1], policy="softmax"),
        _click(1, 11, T0 + 5, "r1"),
        _click(2, 10, T0 + 6, None),  # joined by the time window: r2, position 1
        _click(2, 99, T0 + 7, None),  # never shown: unattributed, no row
    ]
    report = attribute([validate_event(e) for e in events])
    log = logged_from_exposures(report.exposures, report.attributions)
    assert log.n_rounds == 5 and log.n_positions == 3
    assert log.action_ids == (10, 11, 12)
    ids = [log.action_ids[a] for a in log.action]
    assert ids == [10, 11, 12, 12, 10]
    assert log.position.tolist() == [0, 1, 2, 0, 1]
    assert log.reward.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert log.pscore.tolist() == [0.5, 0.25, 0.2, 0.4, 0.1]
    # the same from the raw event stream, attribution included
    direct = logged_from_events(events)
    np.testing.assert_array_equal(direct.reward, log.reward)
    np.testing.assert_array_equal(direct.pscore, log.pscore)


def test_policy_filter_catalogue_and_bad_propensities() -> None:
    events = [
        _shown(1, [1, 2], "a", T0, propensities=[0.5, 0.5], policy="p1"),
        _shown(1, [3], "b", T0 + 1, policy="deterministic"),
    ]
    only = logged_from_events(events, policy="p1")
    assert only.n_rounds == 2 and only.action_ids == (1, 2)
    wide = logged_from_events(events, items=[3, 2, 1, 4], n_positions=4)
    assert wide.n_actions == 4 and wide.n_positions == 4
    assert [wide.action_ids[a] for a in wide.action] == [1, 2, 3]  # type: ignore[index]
    assert wide.pscore.tolist() == [0.5, 0.5, 1.0]  # the deterministic policy logs 1.0
    with pytest.raises(OPEInputError, match="not in items"):
        logged_from_events(events, items=[1, 2])
    with pytest.raises(OPEInputError, match="policy 'p9'"):
        logged_from_events(events, policy="p9")
    with pytest.raises(OPEInputError, match="more than 1"):
        logged_from_events(events, n_positions=1)
    zero = [_shown(1, [1, 2], "z", T0, propensities=[0.5, 0.0], policy="p")]
    with pytest.raises(OPEInputError, match="pscore: must be > 0"):
        logged_from_events(zero)


def test_ope_on_a_simulated_exposure_log_recovers_a_candidates_true_ctr() -> None:
    # a uniformly random ranking of 6 items into 3 slots: each item's probability at each
    # position is 1/6, which the exposure log records as its propensity
    rng = np.random.default_rng(0)
    k, slots, lists = 6, 3, 4000
    ctr = rng.uniform(0.05, 0.4, size=(k, slots)) * np.array([1.0, 0.7, 0.5])
    events: list[dict[str, Any]] = []
    for n in range(lists):
        items = rng.permutation(k)[:slots].tolist()
        at = T0 + 10 * n
        rid = f"req-{n}"
        events.append(_shown(n, items, rid, at, propensities=[1 / k] * slots, policy="random"))
        for pos, item in enumerate(items):
            if rng.random() < ctr[item, pos]:
                events.append(_click(n, item, at + 1, rid))
    log = logged_from_events(events, items=list(range(k)))
    assert log.n_rounds == lists * slots
    # the candidate: a fixed distribution over items per position
    pi = rng.dirichlet(np.ones(k), size=slots).T  # [k, slots]
    truth = float(np.mean([pi[:, p] @ ctr[:, p] for p in range(slots)]))
    candidate = log.with_candidate(pi[:, log.position].T)
    estimates = evaluate(
        candidate,
        [InverseProbabilityWeighting(), SelfNormalizedIPS(), DoublyRobust()],
        BootstrapConfig(300, seed=1),
        refit=item_position_refit(5.0),
    )
    for e in estimates:
        assert abs(e.value - truth) < 4 * e.std_error, (e.estimator, e.value, truth)
        assert e.relative_error(truth) < 0.15
