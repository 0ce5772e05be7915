"""Off-policy evaluation of a policy bandit at the level of its choice: the arm is the action.

A policy bandit (:class:`~recsys.bandits.serving.PolicyBandit`) picks each request's
slate policy (its *arm*: ``deterministic``, ``epsilon_greedy:0.1``, ...); its exposures
record the arm (``bandit_arm``), the context vector it chose with (``bandit_context``)
and the arm's exact probability (``bandit_propensity``). Those three fields are what an
arm-level log needs: one row per exposure, action = the arm, pscore = its logged
probability, context = the bandit's own context vector, reward = the list's CTR (clicks
attributed to the list over the items shown) or whether it got any click.

Why the arm and not the item at each position: a candidate's probability of an item at
a position is ``sum_arm P(arm | x) P(item at position | arm's policy, candidate scores)``,
and the second factor needs the scores of every candidate the policy could have drawn
from (``depth`` of them); the exposure records only the shown items' scores. The arm
level needs nothing more than is logged, and a candidate that is any distribution over
the same arms (another bandit's state, one fixed arm, uniform) is evaluated exactly.

Example:
    >>> from recsys.bandits import LinUCB
    >>> x = np.array([[1.0, 0.0], [1.0, 1.0]])
    >>> arm_distribution(LinUCB(2, 2, alpha=0.0), x).tolist()
    [[1.0, 0.0], [1.0, 0.0]]
    >>> fixed_arm_distribution(1, 2, 3).tolist()
    [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from recsys.bandits.linear import EpsilonGreedy, LinearBandit, LinearThompson, LinUCB, Uniform
from recsys.events.attribution import CLICKS, AttributionConfig, attribute
from recsys.events.schema import Event, EventType
from recsys.events.validation import validate_event
from recsys.ope.errors import OPEInputError
from recsys.ope.logged import LoggedBandit

RewardKind = Literal["ctr", "any_click"]
REWARD_KINDS: tuple[str, ...] = ("ctr", "any_click")


@dataclass(frozen=True)
class PolicyChoiceLog:
    """An arm-level log and what its rows came from.

    Attributes:
        log: one row per exposure, in time order (action = arm index, position 0,
            context = the logged ``bandit_context``, pscore = ``bandit_propensity``).
        arms: the arms' names, in arm order.
        request_ids: each row's request id.
        ts_us: each row's exposure time (microseconds).
        skipped: exposures of the bandit left out, by reason (missing bandit fields,
            an empty list, a duplicate of an exposure already logged).
    """

    log: LoggedBandit
    arms: tuple[str, ...]
    request_ids: tuple[str, ...]
    ts_us: np.ndarray
    skipped: dict[str, int]


def policy_choice_log(
    events: Iterable[Event | Mapping[str, Any]],
    *,
    bandit: str,
    arms: Sequence[str] | None = None,
    reward: RewardKind = "ctr",
    since_us: int | None = None,
    until_us: int | None = None,
    attribution: AttributionConfig | None = None,
) -> PolicyChoiceLog:
    """The arm-level log of one policy bandit's exposures, joined with attributed clicks.

    Args:
        events: exposures and outcomes, any order (raw dicts are validated).
        bandit: the bandit's name: exposures whose ``bandit`` is ``<name>@<any version>``.
        arms: the arms' names (default ``arm0 .. armK-1``, K = the largest logged arm + 1).
        reward: ``ctr`` (attributed clicks / items shown) or ``any_click`` (1 when the
            list got a click, what :class:`~recsys.bandits.online.BanditUpdater` learns).
        since_us: keep exposures at or after this time (microseconds; None: no bound).
        until_us: keep exposures before this time.
        attribution: the join rules (default :class:`AttributionConfig`); a click counts
            only within ``window_s`` of its exposure, also when it names the request.

    Returns:
        The log and its provenance.

    Raises:
        OPEInputError: no exposure of the bandit is left, an arm is out of range, or
            the contexts' lengths differ.
    """
    if reward not in REWARD_KINDS:
        raise OPEInputError(f"reward: expected one of {list(REWARD_KINDS)}, got {reward!r}")
    typed = [e if isinstance(e, Event) else validate_event(e) for e in events]
    config = attribution or AttributionConfig()
    report = attribute(typed, config)
    kinds = {t.value for t in CLICKS}
    clicks: dict[str, set[int]] = {}
    for a in report.attributions:
        # a click that names its request joins it however late; the window bounds it
        # too (what the online updater, which closes each window, learns from)
        if a.type in kinds and a.delay_s <= config.window_s:
            clicks.setdefault(a.request_id, set()).add(a.position)
    name = bandit.split("@", 1)[0]
    skipped: dict[str, int] = {}
    seen_bandits: set[str] = set()
    in_any_range = 0
    rows: list[tuple[str, int, int, float, list[float], float]] = []
    seen: set[str] = set()
    for e in typed:
        if e.type is not EventType.RECOMMENDATION_IMPRESSION:
            continue
        p = e.payload
        logged_by = str(p.get("bandit", "")).split("@", 1)[0]
        if logged_by:
            seen_bandits.add(logged_by)
        if logged_by != name:
            continue
        in_any_range += 1
        if (since_us is not None and e.ts_us < since_us) or (
            until_us is not None and e.ts_us >= until_us
        ):
            continue
        try:
            arm = int(p["bandit_arm"])
            x = [float(v) for v in p["bandit_context"]]
            prop = float(p["bandit_propensity"])
            items = list(p.get("items") or ())
            request_id = str(p["request_id"])
        except (KeyError, TypeError, ValueError):
            reason = "no bandit_arm, bandit_context, bandit_propensity or request_id"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        if not items:
            skipped["empty list"] = skipped.get("empty list", 0) + 1
            continue
        got = clicks.get(request_id, set())
        r = len(got) / len(items) if reward == "ctr" else float(bool(got))
        rows.append((request_id, e.ts_us, arm, prop, x, r))
    # time order (ties by request id), whatever order the store's stream holds them in
    # (a Redis stream groups each user's events of one publish call into one entry):
    # the same events give the same log, hence the same bootstrap resamples
    rows.sort(key=lambda row: (row[1], row[0]))
    unique: list[tuple[str, int, int, float, list[float], float]] = []
    for row in rows:
        if row[0] in seen:  # the same exposure published again (a producer's retry)
            reason = "duplicate exposure (request id seen before)"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        seen.add(row[0])
        unique.append(row)
    rows = unique
    if not rows:
        if not in_any_range:
            known = ", ".join(sorted(seen_bandits)) or "none"
            raise OPEInputError(f"exposures: none of bandit {name!r} (bandits logged: {known})")
        left = f", {sum(skipped.values())} left out ({skipped})" if skipped else ""
        ranged = since_us is not None or until_us is not None
        raise OPEInputError(
            f"exposures: none of bandit {name!r} {'in the range given' if ranged else 'usable'} "
            f"({in_any_range} exposures of it in all{left})"
        )
    dims = {len(r[4]) for r in rows}
    if len(dims) != 1:
        raise OPEInputError(f"bandit_context: lengths differ between exposures ({sorted(dims)})")
    top = max(r[2] for r in rows)
    names = tuple(arms) if arms is not None else tuple(f"arm{a}" for a in range(top + 1))
    if min(r[2] for r in rows) < 0 or top >= len(names):
        raise OPEInputError(f"bandit_arm: a logged arm is outside 0..{len(names) - 1}")
    log = LoggedBandit.build(
        action=np.array([r[2] for r in rows], dtype=np.int64),
        reward=np.array([r[5] for r in rows]),
        pscore=np.array([r[3] for r in rows]),
        n_actions=len(names),
        context=np.array([r[4] for r in rows]),
        action_ids=list(names),
    )
    return PolicyChoiceLog(
        log=log,
        arms=names,
        request_ids=tuple(r[0] for r in rows),
        ts_us=np.array([r[1] for r in rows], dtype=np.int64),
        skipped=skipped,
    )


def arm_distribution(
    bandit: LinearBandit, contexts: np.ndarray, *, draws: int = 1000, seed: int = 0
) -> np.ndarray:
    """The probability that ``bandit`` chooses each arm at each context, ``[n, K]``.

    Exact for LinUCB and greedy (one-hot on the best score, ties to the first arm as
    :func:`numpy.argmax` breaks them), epsilon-greedy and uniform; linear Thompson
    sampling's is estimated from ``draws`` posterior draws per context.

    Args:
        bandit: the candidate (e.g. trained by the online updater on the log).
        contexts: ``[n, d]`` context vectors (the log's ``context``).
        draws: Thompson sampling's draws per context.
        seed: Thompson sampling's generator seed.

    Returns:
        ``[n, K]`` rows summing to 1.

    Raises:
        OPEInputError: the contexts do not fit the bandit, or an unknown kind.
    """
    x = np.asarray(contexts, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != bandit.dim:
        raise OPEInputError(f"contexts: expected [n, {bandit.dim}], got {list(x.shape)}")
    n, k = len(x), bandit.n_arms
    mean = x @ bandit.theta.T  # [n, K]
    if isinstance(bandit, Uniform):
        return np.full((n, k), 1.0 / k)
    if isinstance(bandit, LinUCB):
        width = np.sqrt(np.maximum(np.einsum("ni,kij,nj->nk", x, bandit.a_inv, x), 0.0))
        return np.eye(k)[np.argmax(mean + bandit.alpha * width, axis=1)]
    if isinstance(bandit, EpsilonGreedy):
        best = np.eye(k)[np.argmax(mean, axis=1)]
        return bandit.epsilon / k + (1.0 - bandit.epsilon) * best
    if isinstance(bandit, LinearThompson):
        rng = np.random.default_rng(seed)
        sd = bandit.noise * np.sqrt(np.maximum(np.einsum("ni,kij,nj->nk", x, bandit.a_inv, x), 0))
        counts = np.zeros((n, k))
        for _ in range(draws):
            pick = np.argmax(mean + sd * rng.standard_normal((n, k)), axis=1)
            counts[np.arange(n), pick] += 1
        return counts / draws
    raise OPEInputError(f"bandit: no arm distribution for kind {bandit.kind!r}")


def fixed_arm_distribution(arm: int, n: int, n_arms: int) -> np.ndarray:
    """The policy that always chooses ``arm``: ``[n, n_arms]`` one-hot rows.

    Raises:
        OPEInputError: ``arm`` is out of range.
    """
    if not 0 <= arm < n_arms:
        raise OPEInputError(f"arm: {arm} is not in 0..{n_arms - 1}")
    return np.tile(np.eye(n_arms)[arm], (n, 1))


def uniform_arm_distribution(n: int, n_arms: int) -> np.ndarray:
    """Every arm with probability ``1 / n_arms`` at every row."""
    return np.full((n, n_arms), 1.0 / n_arms)
