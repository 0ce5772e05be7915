"""A featured slot chosen by a contextual bandit, against the simulated users.

Each round a simulated user visits (device and local hour from their habits, the day
advancing every ``rounds_per_day`` rounds, so tastes drift), the bandit picks one arm
for the top slot from the request context, and the user clicks the arm's item with its
true probability (the slot is always examined). Arms are genres: each shows the genre's
most interacted-with item of the data. The true click probability of every arm is known,
so each round's expected regret against the oracle (the best arm for that user, device
and day) is exact.

The bandit's context is the request context (device, time of day, weekend) and the
user's segments, what segment definitions over the profile would give
(:func:`genre_segments`, all computed from the data's interactions): ``likes_<genre>``
for the user's ``top`` most interacted-with genres, optionally ``loves_<genre>`` for a
genre whose share of the user's interactions is more than ``loves_lift`` times its share
of all interactions, and ``avoids_<genre>`` for a genre the user never touched in at
least ``avoids_min`` interactions. The oracle also knows the user's own tastes (their
factors), which no context here carries, so part of every policy's regret against it
cannot be learned away; :func:`linear_limit` gives the expected regret of per-arm linear
CTR models of the context fitted on the truth, what the linear policies could at best
learn.

Example:
    >>> arms = genre_arms(world, data)  # doctest: +SKIP
    >>> bandit = LinUCB(len(arms.items), ContextEncoder().dim)  # doctest: +SKIP
    >>> run = run_slot(world, arms, bandit, SlotConfig())  # doctest: +SKIP
    >>> run.cumulative_regret[-1]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recsys.bandits.context import ContextEncoder
from recsys.bandits.linear import LinearBandit
from recsys.runtime.context import RequestContext
from recsys.sim.world import DEVICES, World

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Arms:
    """The slot's arms: names and the truth's item rows they show."""

    names: tuple[str, ...]
    items: np.ndarray


@dataclass(frozen=True)
class SlotConfig:
    """One bandit run.

    Attributes:
        rounds: visits.
        rounds_per_day: visits per simulated day (the drift clock).
        start_ms: midnight UTC of the first day.
        seed: random seed of the visits, clicks and the policy's draws.
        logit_shift: added to every arm's attraction logit (a featured slot draws
            fewer clicks than the item's appeal in a list the user chose to browse).
        progress: show a progress bar.
    """

    rounds: int = 100_000
    rounds_per_day: int = 2_000
    start_ms: int = 1_764_979_200_000
    seed: int = 0
    logit_shift: float = -2.5
    progress: bool = False


@dataclass
class SlotRun:
    """Per round: the arm, the reward, the chosen arm's and the best arm's true CTR."""

    arms: np.ndarray
    rewards: np.ndarray
    chosen_ctr: np.ndarray
    best_ctr: np.ndarray

    @property
    def cumulative_regret(self) -> np.ndarray:
        return np.cumsum(self.best_ctr - self.chosen_ctr)

    @property
    def cumulative_reward(self) -> np.ndarray:
        return np.cumsum(self.rewards)


def genre_arms(world: World, data: Any) -> Arms:
    """One arm per genre: the genre's item with the most interactions in ``data``."""
    counts = data.interactions["item_id"].value_counts()
    names, items = [], []
    for genre in world.genre_names:
        rows = [r for r, gs in enumerate(world.truth.genres) if genre in gs]
        if not rows:
            continue
        raw = world.truth.item_ids[rows]
        best = int(np.argmax([counts.get(int(i), 0) for i in raw]))
        names.append(genre)
        items.append(rows[best])
    return Arms(tuple(names), np.asarray(items, dtype=np.int64))


SEGMENT_KINDS: tuple[str, ...] = ("likes", "loves", "avoids")


def genre_counts(world: World, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per truth user row: interactions with each genre (``[U, G]``, an item counts for
    each of its genres) and interactions in all (``[U]``)."""
    rows = np.searchsorted(world.truth.user_ids, data.interactions["user_id"].to_numpy())
    items = world.item_rows(data.interactions["item_id"].to_numpy())
    counts = np.zeros((len(world.truth.user_ids), len(world.genre_names)))
    col = {g: n for n, g in enumerate(world.genre_names)}
    for u, i in zip(rows.tolist(), items.tolist(), strict=True):
        for g in world.truth.genres[i]:
            counts[u, col[g]] += 1
    return counts, np.bincount(rows, minlength=len(world.truth.user_ids)).astype(np.float64)


def genre_segments(
    world: World,
    data: Any,
    top: int = 2,
    loves_lift: float | None = None,
    avoids_min: int | None = None,
) -> list[tuple[str, ...]]:
    """Per truth user row, the user's genre segments (rules over their interactions).

    Args:
        world: the simulated users (genre names, item rows).
        data: the interactions the profiles are computed from.
        top: ``likes_<genre>`` for the user's ``top`` most frequent genres (ties: the
            genre listed first; a genre the user never touched is not liked).
        loves_lift: ``loves_<genre>`` where the genre's share of the user's
            interactions is more than ``loves_lift`` times its share of all interactions
            (None: no ``loves_`` segments).
        avoids_min: ``avoids_<genre>`` where the user has no interaction with the genre
            among at least ``avoids_min`` interactions (None: no ``avoids_`` segments).
    """
    if top < 0:
        raise ValueError("top must be >= 0")
    counts, n = genre_counts(world, data)
    names = world.genre_names
    order = np.argsort(-counts, axis=1, kind="stable")[:, :top]
    out = []
    overall = counts.sum(axis=0) / max(n.sum(), 1.0)
    for u, row in enumerate(order):
        segs = [f"likes_{names[c]}" for c in row if counts[u, c] > 0]
        if loves_lift is not None and n[u] > 0:
            share = counts[u] / n[u]
            segs += [f"loves_{names[c]}" for c in np.flatnonzero(share > loves_lift * overall)]
        if avoids_min is not None and n[u] >= avoids_min:
            segs += [f"avoids_{names[c]}" for c in np.flatnonzero(counts[u] == 0)]
        out.append(tuple(segs))
    return out


def segment_encoder(world: World, kinds: tuple[str, ...] = ("likes",)) -> ContextEncoder:
    """The context encoder with one slot per genre for each of ``kinds`` (``likes``,
    ``loves``, ``avoids``: ``<kind>_<genre>``)."""
    unknown = set(kinds) - set(SEGMENT_KINDS)
    if unknown:
        raise ValueError(f"unknown segment kinds {sorted(unknown)}; known {SEGMENT_KINDS}")
    return ContextEncoder(segments=tuple(f"{k}_{g}" for k in kinds for g in world.genre_names))


def run_slot(
    world: World,
    arms: Arms,
    bandit: LinearBandit | None,
    config: SlotConfig,
    encoder: ContextEncoder | None = None,
    segments: list[tuple[str, ...]] | None = None,
) -> SlotRun:
    """Runs the slot for ``config.rounds`` visits.

    Args:
        world: the simulated users.
        arms: the slot's arms.
        bandit: the policy (None: the oracle, which knows every arm's true CTR).
        config: rounds, drift clock, seed.
        encoder: the bandit's context vectors (default: device, time of day, weekend).
        segments: per truth user row, the user's segments (see :func:`genre_segments`).
    """
    enc = encoder or ContextEncoder()
    if bandit is not None and (bandit.n_arms != len(arms.items) or bandit.dim != enc.dim):
        raise ValueError("the bandit's arms or dimension do not match the slot")
    rng = np.random.default_rng(config.seed)
    n_users = len(world.truth.user_ids)
    out = SlotRun(
        arms=np.zeros(config.rounds, dtype=np.int64),
        rewards=np.zeros(config.rounds),
        chosen_ctr=np.zeros(config.rounds),
        best_ctr=np.zeros(config.rounds),
    )
    offset = world.config.utc_offset_minutes
    for t in tqdm(range(config.rounds), desc="slot", disable=not config.progress):
        user = int(rng.integers(n_users))
        device = world.visit_device(user, rng)
        hour = world.visit_hour(device, rng)
        day_index = t // config.rounds_per_day
        day = day_index + hour / 24
        ctx = RequestContext(
            request_time_ms=config.start_ms
            + day_index * DAY_MS
            + hour * 3_600_000
            - offset * 60_000,
            utc_offset_minutes=offset,
            device_type=DEVICES[device],
        )
        logit = world.attraction_logit(user, arms.items, device, day) + config.logit_shift
        ctr = 1.0 / (1.0 + np.exp(-logit))
        if bandit is None:
            arm = int(np.argmax(ctr))
        else:
            x = enc.encode(ctx, segments[user] if segments is not None else ())
            arm = bandit.select(x, rng).arm
        reward = float(rng.random() < ctr[arm])
        if bandit is not None:
            bandit.update(arm, x, reward)
        out.arms[t], out.rewards[t] = arm, reward
        out.chosen_ctr[t], out.best_ctr[t] = ctr[arm], ctr.max()
    return out


def linear_limit(
    world: World,
    arms: Arms,
    config: SlotConfig,
    encoder: ContextEncoder | None = None,
    segments: list[tuple[str, ...]] | None = None,
    reg: float = 1e-6,
) -> dict[str, float]:
    """Expected regret of per-arm linear CTR models of the context fitted on the truth.

    A reference for what a per-arm linear model of this context (the model of LinUCB,
    linear TS and greedy) could reach with full information: for each simulated day,
    every user's true CTR of every arm on each device (at mid-day) is regressed on the
    context vector (device and segments; time of day and weekend do not change the
    truth), weighted by how often that user and device visit, and the arm with the
    highest fitted CTR is chosen. ``daily_fit`` refits every day (it follows the drift
    and the fashion cycle perfectly), ``single_fit`` fits once on all days (no
    forgetting). Also ``uniform``. Values: expected cumulative regret over
    ``config.rounds`` visits (users uniform, devices by the world's habits).
    """
    enc = encoder or ContextEncoder()
    n_users = len(world.truth.user_ids)
    mix = np.asarray(world.config.device_mix, dtype=np.float64)
    loyal = world.config.device_loyalty
    p = np.tile((1 - loyal) * mix, (n_users, 1))
    p[np.arange(n_users), np.asarray(world.device)] += loyal
    w = (p / n_users).ravel()  # [U * V], rows (user, device)
    x = np.stack(
        [
            enc.encode(RequestContext(device_type=DEVICES[v]), segments[u] if segments else ())
            for u in range(n_users)
            for v in range(len(DEVICES))
        ]
    )
    gram = x.T @ (x * w[:, None]) + reg * np.eye(enc.dim)
    days = -(-config.rounds // config.rounds_per_day)
    weights = np.minimum(
        config.rounds_per_day, config.rounds - np.arange(days) * config.rounds_per_day
    ).astype(np.float64)
    ctrs, out = [], {"uniform": 0.0, "daily_fit": 0.0, "single_fit": 0.0}
    rhs = np.zeros((enc.dim, len(arms.items)))
    for d in range(days):
        logit = np.stack(
            [
                world.attraction_logit(u, arms.items, v, d + 0.5)
                for u in range(n_users)
                for v in range(len(DEVICES))
            ]
        )
        ctr = 1.0 / (1.0 + np.exp(-(logit + config.logit_shift)))
        ctrs.append(ctr)
        best = ctr.max(axis=1)
        day_rhs = x.T @ (ctr * w[:, None])
        rhs += weights[d] * day_rhs
        chosen = np.argmax(x @ np.linalg.solve(gram, day_rhs), axis=1)
        out["uniform"] += weights[d] * float(w @ (best - ctr.mean(axis=1)))
        out["daily_fit"] += weights[d] * float(w @ (best - ctr[np.arange(len(ctr)), chosen]))
    chosen = np.argmax(x @ np.linalg.solve(gram * weights.sum(), rhs), axis=1)
    for d, ctr in enumerate(ctrs):
        regret = ctr.max(axis=1) - ctr[np.arange(len(ctr)), chosen]
        out["single_fit"] += weights[d] * float(w @ regret)
    return out
