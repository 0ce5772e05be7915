"""Synthetic event logs: determinism, schema, funnel order, taste and time structure, speed."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.data.frame import INTERACTION_COLUMNS, InteractionData
from recsys.data.synthetic import EVENT_TYPES, SyntheticConfig, generate

CONFIG = SyntheticConfig(n_users=3_000, n_items=800, n_categories=12, events_per_user=40, seed=11)


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return generate(CONFIG)


def test_same_config_gives_identical_frames_and_seeds_differ(data: InteractionData) -> None:
    again = generate(CONFIG)
    pd.testing.assert_frame_equal(again.interactions, data.interactions)
    assert again.users is not None and data.users is not None
    assert again.items is not None and data.items is not None
    pd.testing.assert_frame_equal(again.users, data.users)
    pd.testing.assert_frame_equal(again.items, data.items)
    other = generate(replace(CONFIG, seed=12))
    assert not other.interactions.head(1000).equals(data.interactions.head(1000))


def test_columns_types_and_ranges(data: InteractionData) -> None:
    df = data.interactions
    assert tuple(df.columns[:4]) == INTERACTION_COLUMNS
    assert list(df.columns[4:]) == ["event_type", "device", "hour", "session_id", "price"]
    assert df["user_id"].dtype == np.int64 and df["item_id"].dtype == np.int64
    assert df["rating"].dtype == np.float32 and (df["rating"] == 1.0).all()
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert df["event_type"].dtype == pd.Series(["x"]).dtype  # pandas' default string dtype
    assert set(df["event_type"]) == set(EVENT_TYPES)
    assert set(df["device"]) <= set(CONFIG.device_mix)
    assert df["timestamp"].is_monotonic_increasing
    start = pd.Timestamp(CONFIG.start, tz="UTC")
    assert df["timestamp"].min() >= start
    assert df["timestamp"].max() < start + pd.Timedelta(days=CONFIG.n_days + 1)
    np.testing.assert_array_equal(df["hour"], df["timestamp"].dt.hour)
    assert df["user_id"].between(1, CONFIG.n_users).all()
    assert df["item_id"].between(1, CONFIG.n_items).all()
    assert data.items is not None
    prices = data.items.set_index("item_id")["price"]
    np.testing.assert_array_equal(df["price"].to_numpy(), prices.loc[df["item_id"]].to_numpy())
    assert data.users is not None
    users = data.users
    assert list(users.columns) == ["user_id", "age", "gender", "country", "device_preference"]
    assert users["age"].between(CONFIG.age_min, CONFIG.age_max).all()
    assert data.reports[0].rows_kept == len(df)


def test_mean_events_per_user_follows_the_config(data: InteractionData) -> None:
    per_user = len(data.interactions) / CONFIG.n_users
    assert abs(per_user - CONFIG.events_per_user) < 0.1 * CONFIG.events_per_user
    busy = generate(replace(CONFIG, n_users=500, events_per_user=120, click_rate=0.6))
    assert abs(len(busy.interactions) / 500 - 120) < 12


def test_funnel_steps_follow_their_parent_event(data: InteractionData) -> None:
    df = data.interactions
    counts = df["event_type"].value_counts()
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    key = ["user_id", "item_id", "session_id"]
    for parent, child in itertools.pairwise(EVENT_TYPES):
        first_parent = df[df["event_type"] == parent].groupby(key)["timestamp"].min()
        children = df[df["event_type"] == child].groupby(key)["timestamp"].min()
        joined = children.to_frame("child").join(first_parent.rename("parent"), how="left")
        assert joined["parent"].notna().all(), f"a {child} without a {parent}"
        assert (joined["parent"] < joined["child"]).all(), f"a {child} before its {parent}"


def test_sessions_belong_to_one_user_and_device(data: InteractionData) -> None:
    df = data.interactions
    per_session = df.groupby("session_id").agg(
        users=("user_id", "nunique"), dev=("device", "nunique")
    )
    assert (per_session["users"] == 1).all() and (per_session["dev"] == 1).all()
    first_seen = df.drop_duplicates("session_id")["session_id"].to_numpy()
    np.testing.assert_array_equal(first_seen, np.arange(len(first_seen)))  # numbered by time
    assert data.users is not None
    pref = df["user_id"].map(data.users.set_index("user_id")["device_preference"])
    session_pref = (df["device"] == pref).groupby(df["session_id"]).first()
    # loyalty plus the chance of drawing the preferred device anyway
    assert session_pref.mean() > CONFIG.device_loyalty


def test_latent_taste_concentrates_users_on_categories(data: InteractionData) -> None:
    assert data.items is not None
    views = data.interactions[data.interactions["event_type"] == "view"]
    cat = views["item_id"].map(data.items.set_index("item_id")["category"])

    def top_share(users: pd.Series) -> float:
        counts = pd.crosstab(users, cat.to_numpy())
        return float((counts.max(axis=1) / counts.sum(axis=1)).mean())

    real = top_share(views["user_id"])
    shuffled = top_share(pd.Series(np.random.default_rng(0).permutation(views["user_id"])))
    assert real > shuffled + 0.15


def test_clicks_rise_with_taste_and_purchases_fall_with_price(data: InteractionData) -> None:
    df = data.interactions
    views = df[df["event_type"] == "view"].drop_duplicates(["user_id", "item_id"])
    clicked = df[df["event_type"] == "click"].drop_duplicates(["user_id", "item_id"])
    repeat = views.merge(clicked[["user_id", "item_id"]], on=["user_id", "item_id"], how="left",
                         indicator=True)  # fmt: skip
    # items a user views often are items that fit their taste: clicked more often
    view_counts = df[df["event_type"] == "view"].groupby(["user_id", "item_id"]).size()
    repeat["views"] = view_counts.loc[
        list(zip(repeat["user_id"], repeat["item_id"], strict=True))
    ].to_numpy()
    rate = repeat.groupby(repeat["views"] > 1)["_merge"].apply(lambda m: (m == "both").mean())
    assert rate[True] > rate[False]
    carts = df[df["event_type"] == "add_to_cart"]
    bought = df[df["event_type"] == "purchase"]
    assert bought["price"].median() < carts["price"].median()


def test_time_of_day_differs_by_device(data: InteractionData) -> None:
    sessions = data.interactions.drop_duplicates("session_id")
    office = sessions["hour"].between(9, 17)
    by_device = office.groupby(sessions["device"]).mean()
    assert by_device["desktop"] > by_device["mobile"] + 0.2
    night = sessions["hour"] < 6
    assert night.mean() < 6 / 24 / 2  # nights are quiet for every profile


def test_invalid_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_users"):
        SyntheticConfig(n_users=0)
    with pytest.raises(ValueError, match="click_rate"):
        SyntheticConfig(click_rate=1.5)
    with pytest.raises(ValueError, match="device_mix"):
        SyntheticConfig(device_mix={"mobile": -1.0})
    with pytest.raises(ValueError, match="24"):
        SyntheticConfig(hour_profiles={"mobile": (1.0,) * 23})


def test_a_million_events_in_seconds() -> None:
    cfg = SyntheticConfig(n_users=20_000, n_items=10_000, n_categories=50, events_per_user=50)
    start = time.perf_counter()
    big = generate(cfg)
    elapsed = time.perf_counter() - start
    assert 900_000 < len(big.interactions) < 1_100_000
    assert elapsed < 10.0, f"{len(big.interactions):,} events took {elapsed:.1f} s"


def test_without_context_taste_the_output_is_the_one_it_always_was() -> None:
    # the digest of this config's frame before context tastes existed: the option is
    # off by default and draws from its own stream, so nothing else moves
    data = generate(SyntheticConfig(n_users=200, n_items=100, seed=5))
    digest = int(pd.util.hash_pandas_object(data.interactions, index=False).sum()) % (2**63)
    assert len(data.interactions) == 9750
    assert digest == 4848444169578817141
    off = generate(SyntheticConfig(n_users=200, n_items=100, seed=5, context_taste=0.0))
    pd.testing.assert_frame_equal(off.interactions, data.interactions)


def _category_by(views: pd.DataFrame, items: pd.DataFrame, key: pd.Series) -> pd.DataFrame:
    cats = views["item_id"].map(items.set_index("item_id")["category"])
    return pd.crosstab(key, cats, normalize="index")


def test_context_taste_makes_item_choice_depend_on_device_and_daypart() -> None:
    base = replace(CONFIG, n_users=1_500, events_per_user=30)

    def spread(taste: float) -> tuple[float, float]:
        data = generate(replace(base, context_taste=taste))
        assert data.items is not None
        views = data.interactions[data.interactions["event_type"] == "view"]
        by_device = _category_by(views, data.items, views["device"])
        by_part = _category_by(views, data.items, views["hour"] // 6)
        # total variation distance between devices' (parts of day's) category mixes
        tv_device = 0.5 * (by_device.loc["mobile"] - by_device.loc["desktop"]).abs().sum()
        tv_part = 0.5 * (by_part.loc[0] - by_part.loc[3]).abs().sum()
        return float(tv_device), float(tv_part)

    plain, tasted = spread(0.0), spread(1.0)
    assert plain[0] < 0.06 and plain[1] < 0.08  # sampling noise only
    assert tasted[0] > plain[0] + 0.1 and tasted[1] > plain[1] + 0.1
    with pytest.raises(ValueError, match="context_taste"):
        SyntheticConfig(context_taste=-1.0)
