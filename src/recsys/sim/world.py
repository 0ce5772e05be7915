"""The simulated users: true preferences fitted on real data, and how they react to a list.

:class:`PreferenceModel` is the ground truth: a matrix factorization fitted by
alternating least squares on every interaction of a real dataset (all of MovieLens-100K
by default; no split: the truth should know everything the data says). A user's true
attraction to an item is ``a + b * z(u, i) + c(device, genre)``, where ``z`` is the
factor score standardized over the catalogue, ``c`` a seeded per-device genre taste.

:class:`World` turns the truth into behaviour, each part configurable and seeded:

* **position bias**: a shown item is examined with probability
  ``1 / (1 + position) ** position_power`` (position 0 is the top);
* **fatigue**: each earlier exposure of the item to the user lowers its attraction
  logit by ``fatigue`` (so the same list shown again gets fewer clicks); with
  ``fatigue_half_life_days`` an exposure's weight halves every that many simulated days
  (users recover), without it the penalty never fades;
* **time and device habits**: each user has a preferred device (used with probability
  ``device_loyalty``) and a time-of-day profile per device (the synthetic event
  generator's: commutes and evenings on mobile, office hours on desktop);
* **drift**: each user's factor vector moves along its own random direction at
  ``drift`` per simulated day, so what they like changes over time; with ``trend``,
  every genre's appeal also follows a seeded cycle shared by all users (fashion).

A click happens when the item is examined and attractive; a click leads to a dwell time
(seconds, log-normal, longer for more attractive items). The true click probability of
every shown item is recorded with the outcome, so any policy's true value can be
computed from the log.

Example:
    >>> world = World.fit(load_ml100k(data_dir), WorldConfig(seed=0))  # doctest: +SKIP
    >>> world.click_probability(user=0, items=np.array([0, 1]), device=1, day=0.0)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.synthetic import DEFAULT_HOUR_PROFILES

DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")


@dataclass(frozen=True)
class WorldConfig:
    """How simulated users behave.

    Attributes:
        factors: width of the fitted preference factors.
        als_iterations: alternating least squares sweeps.
        als_reg: L2 regularization of the fit.
        base_ctr: click probability of an examined item of average attraction.
        preference_scale: logit change per standard deviation of the true score.
        position_power: examination ``1 / (1 + position) ** power``.
        fatigue: logit penalty per earlier exposure of the item to the user.
        fatigue_half_life_days: simulated days after which an exposure weighs half as
            much in the fatigue penalty (None: exposures never fade).
        device_taste: standard deviation of the per-device genre logit biases.
        device_mix: share of users preferring each device (mobile, desktop, tablet).
        device_loyalty: probability that a visit uses the preferred device.
        drift: factor-space distance a user's taste moves per simulated day.
        trend: amplitude (logit) of each genre's popularity cycle over time, shared by
            all users (what is in fashion changes; 0: none).
        trend_period_days: length of that cycle.
        utc_offset_minutes: the users' offset from UTC.
        seed: random seed of the world (tastes, devices, drift directions).
    """

    factors: int = 16
    als_iterations: int = 10
    als_reg: float = 5.0
    base_ctr: float = 0.05
    preference_scale: float = 1.2
    position_power: float = 1.0
    fatigue: float = 0.5
    fatigue_half_life_days: float | None = None
    device_taste: float = 0.5
    device_mix: tuple[float, float, float] = (0.6, 0.3, 0.1)
    device_loyalty: float = 0.8
    drift: float = 0.05
    trend: float = 0.0
    trend_period_days: float = 20.0
    utc_offset_minutes: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base_ctr < 1:
            raise ValueError(f"base_ctr must be in (0, 1), got {self.base_ctr}")
        if self.factors < 1 or self.als_iterations < 1:
            raise ValueError("factors and als_iterations must be >= 1")
        if min(self.device_mix) < 0 or not math.isclose(sum(self.device_mix), 1.0):
            raise ValueError(f"device_mix must be shares summing to 1, got {self.device_mix}")
        if self.fatigue_half_life_days is not None and not self.fatigue_half_life_days > 0:
            raise ValueError(
                f"fatigue_half_life_days must be > 0 or None, got {self.fatigue_half_life_days}"
            )
        if not self.trend_period_days > 0:
            raise ValueError(f"trend_period_days must be > 0, got {self.trend_period_days}")
        for name in ("fatigue", "position_power", "drift", "device_taste", "als_reg", "trend"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class PreferenceModel:
    """True preferences: factors fitted on real interactions, in the data's ids.

    Attributes:
        user_ids: raw user ids, row order.
        item_ids: raw item ids, row order.
        users: ``[U, F]`` user factors.
        items: ``[I, F]`` item factors.
        genres: per item, its genres.
        mean: mean of the factor scores over all pairs (for standardizing).
        std: their standard deviation.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    genres: list[list[str]]
    mean: float
    std: float

    @classmethod
    def fit(
        cls, interactions: pd.DataFrame, items: pd.DataFrame, config: WorldConfig
    ) -> PreferenceModel:
        """Alternating least squares on the binary user x item matrix of ``interactions``.

        Args:
            interactions: ``user_id``, ``item_id`` (every row is an interaction).
            items: the item table (``item_id``, optional ``genres``).
            config: factors, iterations, regularization, seed.
        """
        user_ids = np.sort(interactions["user_id"].unique())
        item_ids = np.sort(items["item_id"].unique())
        u = np.searchsorted(user_ids, interactions["user_id"].to_numpy())
        i = np.searchsorted(item_ids, interactions["item_id"].to_numpy())
        known = (i < len(item_ids)) & (
            item_ids[np.minimum(i, len(item_ids) - 1)] == interactions["item_id"].to_numpy()
        )
        r = np.zeros((len(user_ids), len(item_ids)))
        r[u[known], i[known]] = 1.0
        rng = np.random.default_rng(config.seed)
        y: np.ndarray = rng.normal(0, 0.1, (len(item_ids), config.factors))
        eye = config.als_reg * np.eye(config.factors)
        x: np.ndarray = np.zeros((len(user_ids), config.factors))
        for _ in range(config.als_iterations):
            x = np.linalg.solve(y.T @ y + eye, y.T @ r.T).T
            y = np.linalg.solve(x.T @ x + eye, x.T @ r).T
        scores = x @ y.T
        by_id = items.set_index("item_id")
        genres: list[list[str]] = []
        for item in item_ids.tolist():
            value: Any = by_id.at[item, "genres"] if "genres" in by_id.columns else None
            genres.append([str(g) for g in value] if isinstance(value, list | tuple) else [])
        mean, std = float(scores.mean()), float(scores.std()) + 1e-12
        return cls(user_ids, item_ids, x, y, genres, mean, std)


@dataclass
class Outcome:
    """What one simulated user did with one shown list.

    Attributes:
        examined: per position, whether the item was examined.
        clicked: per position, whether it was clicked.
        dwell_s: per position, seconds spent (0 without a click).
        true_ctr: per position, the true click probability (examination x attraction).
    """

    examined: np.ndarray
    clicked: np.ndarray
    dwell_s: np.ndarray
    true_ctr: np.ndarray


@dataclass
class World:
    """Simulated users over a fitted :class:`PreferenceModel` (see the module docstring).

    Attributes:
        truth: the fitted preferences.
        config: behaviour settings.
        device: per user, the preferred device (index into :data:`DEVICES`).
        drift_direction: ``[U, F]`` unit directions of preference drift.
        device_bias: ``[devices, genres]`` logit biases.
        genre_names: genre names (columns of ``device_bias``).
        trend_phase: ``[genres]`` phase of each genre's popularity cycle.
    """

    truth: PreferenceModel
    config: WorldConfig
    device: np.ndarray
    drift_direction: np.ndarray
    device_bias: np.ndarray
    genre_names: list[str]
    trend_phase: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _item_genre: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    # (user, item) -> (exposure weight, simulated day it was last updated)
    _shown: dict[tuple[int, int], tuple[float, float]] = field(repr=False, default_factory=dict)

    @classmethod
    def fit(cls, data: Any, config: WorldConfig | None = None) -> World:
        """A world fitted on ``data`` (an ``InteractionData``: ``interactions``, ``items``)."""
        cfg = config or WorldConfig()
        truth = PreferenceModel.fit(data.interactions, data.items, cfg)
        rng = np.random.default_rng(cfg.seed + 1)
        n_users = len(truth.user_ids)
        device = rng.choice(len(DEVICES), size=n_users, p=np.asarray(cfg.device_mix))
        direction = rng.normal(size=truth.users.shape)
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        names = sorted({g for gs in truth.genres for g in gs})
        bias = rng.normal(0, cfg.device_taste, (len(DEVICES), len(names)))
        item_genre = np.zeros((len(truth.item_ids), len(names)))
        col = {g: n for n, g in enumerate(names)}
        for row, gs in enumerate(truth.genres):
            for g in gs:
                item_genre[row, col[g]] = 1.0 / len(gs)
        phase = rng.uniform(0, 2 * np.pi, len(names))
        return cls(truth, cfg, device, direction, bias, names, phase, item_genre)

    def reset(self) -> None:
        """Forgets every exposure (fatigue starts again from zero)."""
        self._shown.clear()

    # -- visits ----------------------------------------------------------------------

    def visit_device(self, user: int, rng: np.random.Generator) -> int:
        """The device of a visit: the preferred one, else any by the device mix."""
        if rng.random() < self.config.device_loyalty:
            return int(self.device[user])
        return int(rng.choice(len(DEVICES), p=np.asarray(self.config.device_mix)))

    def visit_hour(self, device: int, rng: np.random.Generator) -> int:
        """A local hour of a visit from the device's time-of-day profile."""
        profile = np.asarray(DEFAULT_HOUR_PROFILES[DEVICES[device]], dtype=np.float64)
        return int(rng.choice(24, p=profile / profile.sum()))

    # -- reactions -------------------------------------------------------------------

    def attraction_logit(self, user: int, items: np.ndarray, device: int, day: float) -> np.ndarray:
        """The true attraction logit of ``items`` (rows of the truth) for ``user``."""
        cfg, truth = self.config, self.truth
        factors = truth.users[user] + cfg.drift * day * self.drift_direction[user]
        z = (truth.items[items] @ factors - truth.mean) / truth.std
        logit = math.log(cfg.base_ctr / (1 - cfg.base_ctr)) + cfg.preference_scale * z
        logit = logit + self._item_genre[items] @ self.device_bias[device]
        if cfg.trend:
            cycle = cfg.trend * np.sin(2 * np.pi * day / cfg.trend_period_days + self.trend_phase)
            logit = logit + self._item_genre[items] @ cycle
        if cfg.fatigue:
            seen = np.array([self._seen(user, int(i), day) for i in items], dtype=np.float64)
            logit = logit - cfg.fatigue * seen
        return np.asarray(logit, dtype=np.float64)

    def _seen(self, user: int, item: int, day: float) -> float:
        """The weight of the earlier exposures of ``item`` to ``user`` at ``day``."""
        weight, last = self._shown.get((user, item), (0.0, day))
        half_life = self.config.fatigue_half_life_days
        if half_life is None or weight == 0.0:
            return weight
        return weight * 0.5 ** (max(day - last, 0.0) / half_life)

    def examination(self, n: int) -> np.ndarray:
        """Probability that each of ``n`` positions is examined."""
        return 1.0 / (1.0 + np.arange(n, dtype=np.float64)) ** self.config.position_power

    def click_probability(
        self, user: int, items: np.ndarray, device: int, day: float
    ) -> np.ndarray:
        """The true click probability of each item shown at its position (list order)."""
        attraction = 1.0 / (1.0 + np.exp(-self.attraction_logit(user, items, device, day)))
        return self.examination(len(items)) * attraction

    def react(
        self, user: int, items: np.ndarray, device: int, day: float, rng: np.random.Generator
    ) -> Outcome:
        """Examinations, clicks and dwell for ``items`` shown in this order; remembers
        the exposure (fatigue)."""
        logit = self.attraction_logit(user, items, device, day)
        attraction = 1.0 / (1.0 + np.exp(-logit))
        exam_p = self.examination(len(items))
        examined = rng.random(len(items)) < exam_p
        clicked = examined & (rng.random(len(items)) < attraction)
        dwell = np.where(clicked, rng.lognormal(np.log(30.0) + attraction, 0.5), 0.0)
        for item in items.tolist():
            self._shown[(user, int(item))] = (self._seen(user, int(item), day) + 1.0, day)
        return Outcome(examined, clicked, dwell, exam_p * attraction)

    def user_row(self, raw_user: int) -> int:
        """The truth's row of a raw user id (KeyError for a user the data lacks)."""
        row = int(np.searchsorted(self.truth.user_ids, raw_user))
        if row >= len(self.truth.user_ids) or self.truth.user_ids[row] != raw_user:
            raise KeyError(f"user {raw_user} is not in the data the world was fitted on")
        return row

    def item_rows(self, raw_items: np.ndarray) -> np.ndarray:
        """The truth's rows of raw item ids (KeyError for items the data lacks)."""
        rows = np.searchsorted(self.truth.item_ids, raw_items)
        ok = (rows < len(self.truth.item_ids)) & (
            self.truth.item_ids[np.minimum(rows, len(self.truth.item_ids) - 1)] == raw_items
        )
        if not ok.all():
            raise KeyError(f"items {np.asarray(raw_items)[~ok][:5].tolist()} are not in the data")
        return rows.astype(np.int64)
