"""A seeded generator of e-commerce event logs with known structure.

:func:`generate` draws users (age, gender, country, preferred device), items
(category, price) and latent taste vectors for both, then simulates sessions:

* **Which items are viewed**: for every view, ``candidates`` items are drawn
  by popularity (a Zipf law over a random item order) and the one with the
  best taste match ``<user, item> / taste_temperature + Gumbel noise`` wins, so
  users return to items (and categories) that fit their latent taste.
* **Funnel**: each view may lead to a click, a click to an add-to-cart, a cart
  to a purchase. Each step's probability rises with the user-item affinity;
  carts and purchases fall with the item's price; device shifts clicks and
  purchases (mobile clicks more, buys less).
* **Time and context**: sessions start on a uniformly drawn day at an hour
  drawn from the session device's time-of-day profile (mobile: commutes and
  evenings, desktop: office hours, tablet: evenings); a session uses the
  user's preferred device with probability ``device_loyalty``. Views follow
  each other by exponential gaps; funnel steps follow their parent event.
* **Context-dependent tastes** (``context_taste`` > 0; off by default, and then
  the output is what it always was): the session's device and its part of the UTC
  day (0-6, 6-12, 12-18, 18-24 h) each shift the taste match of every item category
  by ``context_taste`` times a standard normal draw (per device and category, per
  part of the day and category; their own seeded stream), so which items a session
  views depends on its device and hour as well as on the user.

The output is an :class:`~recsys.data.frame.InteractionData` whose
``interactions`` are sorted by time and have the columns ``user_id``,
``item_id``, ``rating`` (1.0), ``timestamp`` (UTC), ``event_type`` (``view``,
``click``, ``add_to_cart``, ``purchase``), ``device``, ``hour`` (UTC),
``session_id`` and ``price``. Everything is vectorized numpy: about a million
events take a few seconds on two CPU cores. The same config always gives
the identical frame.

Example:
    >>> data = generate(SyntheticConfig(n_users=50, n_items=40, seed=1))
    >>> sorted(data.interactions["event_type"].unique())[:2]
    ['add_to_cart', 'click']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.frame import (
    EVENT_TYPE,
    ITEM,
    RATING,
    TIMESTAMP,
    USER,
    InteractionData,
    LoadReport,
)

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
"""Funnel steps, in order; the event_type column holds these names."""

_NS = 1_000_000_000
_CELLS = 1 << 20  # resolution of the popularity sampler
_CHUNK = 1 << 16  # views scored per step; bounds memory at ~chunk * candidates * dim floats


def _hours(*spans: tuple[int, int, float], base: float = 1.0) -> tuple[float, ...]:
    """A 24-hour weight profile: ``base`` everywhere, ``w`` on hours ``[a, b)`` of each span."""
    w = [base] * 24
    for a, b, weight in spans:
        for h in range(a, b):
            w[h] = weight
    return tuple(w)


DEFAULT_HOUR_PROFILES: dict[str, tuple[float, ...]] = {
    "mobile": _hours((0, 6, 0.3), (7, 9, 2.0), (12, 14, 2.0), (18, 23, 4.0)),
    "desktop": _hours((0, 7, 0.2), (9, 18, 4.0), (18, 22, 1.5)),
    "tablet": _hours((0, 7, 0.2), (6, 9, 1.5), (19, 23, 4.0)),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape and behaviour of a synthetic event log.

    Attributes:
        n_users: number of users.
        n_items: number of items.
        n_categories: number of item categories.
        n_days: days covered, starting at ``start``.
        events_per_user: mean number of events (all types) per user.
        seed: random seed; the same config gives the identical output.
        latent_dim: width of the user and item taste vectors.
        start: first day (UTC), ISO date.
        device_mix: share of users preferring each device.
        device_loyalty: probability that a session uses the preferred device.
        gender_mix: share of each gender label.
        country_mix: share of each country code.
        age_mean: mean age (normal, clipped to ``[age_min, age_max]``).
        age_std: standard deviation of age.
        age_min: youngest age.
        age_max: oldest age.
        views_per_session: mean views per session.
        candidates: items drawn by popularity per view; the best taste match wins.
        taste_temperature: lower = choices follow taste more closely.
        popularity_exponent: Zipf exponent of item popularity.
        taste_strength: weight of the favourite category in a user's taste.
        click_rate: base probability that a view is clicked.
        cart_rate: base probability that a click is added to the cart.
        purchase_rate: base probability that a cart item is bought.
        affinity_weight: logit slope of the funnel in the (standardized) affinity.
        price_weight: logit slope of carts and purchases in log relative price.
        hour_profiles: relative session-start weight of each UTC hour per device.
        context_taste: scale of the per-device and per-part-of-day category shifts of
            the taste match (0: item choice does not depend on the context).
    """

    n_users: int = 1_000
    n_items: int = 500
    n_categories: int = 20
    n_days: int = 30
    events_per_user: float = 50.0
    seed: int = 0
    latent_dim: int = 16
    start: str = "2024-01-01"
    device_mix: Mapping[str, float] = field(
        default_factory=lambda: {"mobile": 0.6, "desktop": 0.3, "tablet": 0.1}
    )
    device_loyalty: float = 0.8
    gender_mix: Mapping[str, float] = field(
        default_factory=lambda: {"F": 0.49, "M": 0.49, "X": 0.02}
    )
    country_mix: Mapping[str, float] = field(
        default_factory=lambda: {"US": 0.4, "GB": 0.15, "DE": 0.15, "FR": 0.1, "IN": 0.1, "BR": 0.1}
    )
    age_mean: float = 35.0
    age_std: float = 12.0
    age_min: int = 13
    age_max: int = 80
    views_per_session: float = 6.0
    candidates: int = 8
    taste_temperature: float = 0.3
    popularity_exponent: float = 0.8
    taste_strength: float = 1.5
    click_rate: float = 0.25
    cart_rate: float = 0.3
    purchase_rate: float = 0.5
    affinity_weight: float = 1.0
    price_weight: float = 0.5
    hour_profiles: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: dict(DEFAULT_HOUR_PROFILES)
    )
    context_taste: float = 0.0

    def __post_init__(self) -> None:
        if self.context_taste < 0:
            raise ValueError(
                f"SyntheticConfig.context_taste must be >= 0, got {self.context_taste}"
            )
        for name in ("n_users", "n_items", "n_categories", "n_days", "latent_dim", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.events_per_user <= 0 or self.views_per_session <= 0:
            raise ValueError("events_per_user and views_per_session must be positive")
        for name in ("device_loyalty", "click_rate", "cart_rate", "purchase_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SyntheticConfig.{name} must be in [0, 1]")
        for name in ("device_mix", "gender_mix", "country_mix"):
            mix = getattr(self, name)
            if not mix or any(p < 0 for p in mix.values()) or sum(mix.values()) <= 0:
                raise ValueError(f"SyntheticConfig.{name} needs non-negative shares summing > 0")
        for device, profile in self.hour_profiles.items():
            if len(profile) != 24 or min(profile) < 0 or sum(profile) <= 0:
                raise ValueError(f"hour profile of {device!r} needs 24 non-negative weights")
        if self.age_min > self.age_max:
            raise ValueError("age_min must not exceed age_max")


def _mix(mix: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    names = np.asarray(list(mix), dtype=object)
    p = np.asarray(list(mix.values()), dtype=np.float64)
    return names, p / p.sum()


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _str_column(names: np.ndarray, codes: np.ndarray) -> pd.Series:
    """A pandas ``str`` column from small-vocabulary codes, built by an Arrow take."""
    taken = pc.take(pa.array([str(n) for n in names], type=pa.string()), pa.array(codes))
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype
    return pd.Series(taken.to_pandas(types_mapper={pa.string(): dtype}.get))


def _users(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    n = cfg.n_users
    age = np.clip(np.rint(rng.normal(cfg.age_mean, cfg.age_std, n)), cfg.age_min, cfg.age_max)
    genders, pg = _mix(cfg.gender_mix)
    countries, pc = _mix(cfg.country_mix)
    devices, pd_ = _mix(cfg.device_mix)
    device_code = rng.choice(len(devices), size=n, p=pd_)
    users = pd.DataFrame(
        {
            USER: np.arange(1, n + 1, dtype=np.int64),
            "age": age.astype(np.int64),
            "gender": _str_column(genders, rng.choice(len(genders), size=n, p=pg)),
            "country": _str_column(countries, rng.choice(len(countries), size=n, p=pc)),
            "device_preference": _str_column(devices, device_code),
        }
    )
    return users, device_code


_PILOT_VIEWS = 20_000
DAYPARTS = 4
"""Parts of the UTC day with their own context tastes (0-6, 6-12, 12-18, 18-24 h)."""


@dataclass
class _World:
    """Everything drawn before the sessions: tastes, items, the popularity sampler."""

    pref_device: np.ndarray  # per user: device code
    devices: np.ndarray  # device names
    device_p: np.ndarray  # device shares
    category: np.ndarray  # per item
    price: np.ndarray  # per item, float64
    median_price: float
    user_vec: np.ndarray  # float32 [n_users, dim]
    item_vec: np.ndarray  # float32 [n_items, dim]
    cells: np.ndarray  # inverse-CDF table of item popularity
    # [n_devices, DAYPARTS, n_categories] shifts of the taste match, the device's plus the
    # part of the day's (None: no context taste)
    context_shift: np.ndarray | None = None


def _draw_world(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, _World]:
    users, pref_device = _users(cfg, rng)
    devices, device_p = _mix(cfg.device_mix)
    n_items, dim = cfg.n_items, cfg.latent_dim
    category = rng.integers(0, cfg.n_categories, n_items)
    centroids = rng.normal(size=(cfg.n_categories, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    item_vec = centroids[category] + 0.5 * rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    item_vec /= np.linalg.norm(item_vec, axis=1, keepdims=True)
    price_mu = rng.normal(3.0, 0.7, cfg.n_categories)
    price = np.round(np.exp(price_mu[category] + 0.3 * rng.normal(size=n_items)), 2)
    popularity = 1.0 / np.arange(1, n_items + 1) ** cfg.popularity_exponent
    popularity = popularity[rng.permutation(n_items)]
    # Inverse-CDF lookup table: one int draw per candidate instead of a binary search.
    # Each of the 2^20 cells is one quantile, so probabilities are exact to 2^-20.
    cdf = np.cumsum(popularity / popularity.sum())
    cells = np.minimum(
        np.searchsorted(cdf, (np.arange(_CELLS) + 0.5) / _CELLS, side="right"), n_items - 1
    )
    favourite = rng.integers(0, cfg.n_categories, cfg.n_users)
    noise = rng.normal(size=(cfg.n_users, dim)) / np.sqrt(dim)
    user_vec = cfg.taste_strength * centroids[favourite] + noise
    world = _World(
        pref_device=pref_device,
        devices=devices,
        device_p=device_p,
        category=category,
        price=price,
        median_price=float(np.median(price)),
        user_vec=user_vec.astype(np.float32),
        item_vec=item_vec.astype(np.float32),
        cells=cells,
    )
    if cfg.context_taste > 0:
        # its own stream, so that the main one (and every other draw) is unchanged
        ctx_rng = np.random.default_rng([cfg.seed, 0xC0])
        by_device = ctx_rng.normal(size=(len(devices), 1, cfg.n_categories))
        by_daypart = ctx_rng.normal(size=(1, DAYPARTS, cfg.n_categories))
        world.context_shift = cfg.context_taste * (by_device + by_daypart)
    return users, world


def _choose_items(
    world: _World,
    cfg: SyntheticConfig,
    view_user: np.ndarray,
    rng: np.random.Generator,
    view_context: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(item, affinity)`` of each view: popularity candidates, best taste match wins.

    ``view_context`` (``device * DAYPARTS + daypart`` per view) adds the world's
    context shift of each candidate's category to the match; the affinity returned
    stays the user-item match (the funnel's input).
    """
    n_v = len(view_user)
    view_item = np.empty(n_v, dtype=np.int64)
    affinity = np.empty(n_v, dtype=np.float32)
    for lo in range(0, n_v, _CHUNK):
        hi = min(lo + _CHUNK, n_v)
        cands = world.cells[rng.integers(0, _CELLS, (hi - lo, cfg.candidates))]
        score = np.einsum("vd,vkd->vk", world.user_vec[view_user[lo:hi]], world.item_vec[cands])
        match = score
        if view_context is not None and world.context_shift is not None:
            shift = world.context_shift.reshape(-1, world.context_shift.shape[-1])
            match = score + shift[view_context[lo:hi, None], world.category[cands]]
        noisy = match / cfg.taste_temperature + rng.gumbel(size=score.shape)
        pick = np.argmax(noisy, axis=1)
        view_item[lo:hi] = cands[np.arange(hi - lo), pick]
        affinity[lo:hi] = score[np.arange(hi - lo), pick]
    return view_item, affinity


def _session_devices(
    world: _World, cfg: SyntheticConfig, session_user: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    loyal = rng.random(len(session_user)) < cfg.device_loyalty
    other = rng.choice(len(world.devices), size=len(session_user), p=world.device_p)
    return np.where(loyal, world.pref_device[session_user], other)


def _funnel_probabilities(
    world: _World,
    cfg: SyntheticConfig,
    item: np.ndarray,
    affinity: np.ndarray,
    device: np.ndarray,
    affinity_stats: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(click | view), P(cart | click), P(purchase | cart) of each view."""
    z = (affinity - affinity_stats[0]) / affinity_stats[1]
    log_rel_price = np.log(world.price[item] / world.median_price)
    is_mobile = world.devices[device] == "mobile"
    w = cfg.affinity_weight
    p_click = _sigmoid(_logit(cfg.click_rate) + w * z + 0.2 * is_mobile)
    p_cart = _sigmoid(_logit(cfg.cart_rate) + w * z - cfg.price_weight * log_rel_price)
    p_buy = _sigmoid(
        _logit(cfg.purchase_rate) + 0.5 * w * z - cfg.price_weight * log_rel_price - 0.3 * is_mobile
    )
    return p_click, p_cart, p_buy


def _pilot(
    world: _World, cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[float, tuple[float, float]]:
    """Expected events per view and the affinity's mean/std, from a pilot sample.

    The funnel's yield depends on the tastes drawn, so the number of views per
    user is set from this estimate to land near ``events_per_user``.
    """
    users = rng.integers(0, cfg.n_users, _PILOT_VIEWS)
    item, affinity = _choose_items(world, cfg, users, rng)
    stats = (float(affinity.mean()), float(affinity.std()) + 1e-9)
    device = _session_devices(world, cfg, users, rng)
    pc, pa, pb = _funnel_probabilities(world, cfg, item, affinity, device, stats)
    return float(np.mean(1.0 + pc + pc * pa + pc * pa * pb)), stats


def generate(config: SyntheticConfig) -> InteractionData:
    """Generates users, items and a time-ordered event log.

    Args:
        config: sizes, distributions and the seed.

    Returns:
        ``InteractionData`` named ``"synthetic"`` with ``interactions`` (see the
        module docstring), ``users`` [user_id, age, gender, country,
        device_preference] and ``items`` [item_id, category, price].

    Example:
        >>> data = generate(SyntheticConfig(n_users=20_000, events_per_user=50))  # doctest: +SKIP
        >>> len(data.interactions)  # about 1,000,000  # doctest: +SKIP
    """
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    users, world = _draw_world(cfg, rng)
    events_per_view, affinity_stats = _pilot(world, cfg, rng)

    # -- views per user and sessions -------------------------------------------------
    n_views = np.maximum(rng.poisson(cfg.events_per_user / events_per_view, cfg.n_users), 1)
    n_sessions = np.minimum(1 + rng.poisson((n_views - 1) / cfg.views_per_session), n_views)
    view_user = np.repeat(np.arange(cfg.n_users), n_views)
    n_v = len(view_user)
    session_base = np.r_[0, np.cumsum(n_sessions)[:-1]]
    in_session = (rng.random(n_v) * n_sessions[view_user]).astype(np.int64)
    view_session = session_base[view_user] + in_session
    total_sessions = int(n_sessions.sum())
    session_user = np.repeat(np.arange(cfg.n_users), n_sessions)
    session_device = _session_devices(world, cfg, session_user, rng)
    session_hour = np.empty(total_sessions, dtype=np.int64)
    for code, name in enumerate(world.devices):  # one draw per device, not per session
        mask = session_device == code
        profile = np.asarray(cfg.hour_profiles.get(name, (1.0,) * 24), dtype=np.float64)
        session_hour[mask] = rng.choice(24, size=int(mask.sum()), p=profile / profile.sum())
    day = rng.integers(0, cfg.n_days, total_sessions)
    start_ns = pd.Timestamp(cfg.start, tz="UTC").as_unit("ns").value
    session_start = (
        start_ns
        + day * 86_400 * _NS
        + session_hour * 3_600 * _NS
        + (rng.random(total_sessions) * 3_600 * _NS).astype(np.int64)
    )

    # views inside a session follow each other by exponential gaps (mean 45 s)
    order = np.argsort(view_session, kind="stable")
    view_user, view_session = view_user[order], view_session[order]
    gaps = (rng.exponential(45.0, n_v) * _NS).astype(np.int64)
    first = np.r_[True, view_session[1:] != view_session[:-1]]
    gaps[first] = 0
    csum = np.cumsum(gaps)
    offset = csum - np.maximum.accumulate(np.where(first, csum, 0))
    view_ts = session_start[view_session] + offset

    # -- items and funnel -------------------------------------------------------------
    view_context = None
    if world.context_shift is not None:
        view_hour = (view_ts // (3_600 * _NS)) % 24
        view_context = session_device[view_session] * DAYPARTS + view_hour // (24 // DAYPARTS)
    view_item, affinity = _choose_items(world, cfg, view_user, rng, view_context)
    p_click, p_cart, p_buy = _funnel_probabilities(
        world, cfg, view_item, affinity, session_device[view_session], affinity_stats
    )
    click = rng.random(n_v) < p_click
    cart = click & (rng.random(n_v) < p_cart)
    buy = cart & (rng.random(n_v) < p_buy)
    click_ts = view_ts + ((1.0 + rng.exponential(8.0, n_v)) * _NS).astype(np.int64)
    cart_ts = click_ts + ((1.0 + rng.exponential(40.0, n_v)) * _NS).astype(np.int64)
    buy_ts = cart_ts + ((1.0 + rng.exponential(90.0, n_v)) * _NS).astype(np.int64)

    steps = (np.ones(n_v, dtype=bool), click, cart, buy)
    times = (view_ts, click_ts, cart_ts, buy_ts)
    ev_user = np.concatenate([view_user[m] for m in steps])
    ev_item = np.concatenate([view_item[m] for m in steps])
    ev_session = np.concatenate([view_session[m] for m in steps])
    ev_ts = np.concatenate([t[m] for t, m in zip(times, steps, strict=True)])
    ev_type = np.concatenate(
        [np.full(int(m.sum()), k, dtype=np.int64) for k, m in enumerate(steps)]
    )
    ev_order = np.lexsort((ev_type, ev_session, ev_ts))
    ev_user, ev_item, ev_session = ev_user[ev_order], ev_item[ev_order], ev_session[ev_order]
    ev_ts, ev_type = ev_ts[ev_order], ev_type[ev_order]
    # number sessions by their first event, so session ids increase with time
    _, first_pos = np.unique(ev_session, return_index=True)
    session_rank = np.full(total_sessions, -1, dtype=np.int64)
    session_rank[ev_session[np.sort(first_pos)]] = np.arange(len(first_pos))

    timestamp = pd.to_datetime(ev_ts, unit="ns", utc=True)
    interactions = pd.DataFrame(
        {
            USER: ev_user + 1,
            ITEM: ev_item + 1,
            RATING: np.ones(len(ev_user), dtype=np.float32),
            TIMESTAMP: timestamp,
            EVENT_TYPE: _str_column(np.asarray(EVENT_TYPES, dtype=object), ev_type),
            "device": _str_column(world.devices, session_device[ev_session]),
            "hour": ((ev_ts // (3_600 * _NS)) % 24).astype(np.int64),
            "session_id": session_rank[ev_session],
            "price": world.price[ev_item].astype(np.float32),
        }
    )
    items = pd.DataFrame(
        {
            ITEM: np.arange(1, cfg.n_items + 1, dtype=np.int64),
            "category": _str_column(
                np.asarray([f"cat_{c:03d}" for c in range(cfg.n_categories)], dtype=object),
                world.category,
            ),
            "price": world.price.astype(np.float32),
        }
    )
    report = LoadReport(
        source=f"synthetic(seed={cfg.seed})",
        rows_read=len(interactions),
        rows_kept=len(interactions),
    )
    return InteractionData("synthetic", interactions, users, items, [report])
