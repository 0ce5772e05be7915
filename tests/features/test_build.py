"""Feature tables from the real MovieLens-100K: histories, buckets, user state, no test leakage."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.frame import InteractionData
from recsys.data.movielens import load_ml100k
from recsys.data.splits import stratified_split, temporal_split
from recsys.features.build import (
    AGE_BUCKETS,
    BuildConfig,
    age_bucket,
    build_examples,
    build_features,
    build_item_table,
    build_user_table,
    join_features,
    popularity_bucket,
    user_features_at,
    year_bucket,
)
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.features.vocab import flatten_lists

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs" / "schema" / "ml100k.yaml"
MAX_LEN = 50


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.from_yaml(SCHEMA_FILE)


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path) -> InteractionData:
    return load_ml100k(ml100k_dir)


@pytest.fixture(scope="module")
def split(ml100k: InteractionData) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = stratified_split(ml100k.interactions, 0.75, "item", 42)
    return train, test


@pytest.fixture(scope="module")
def dataset(
    ml100k: InteractionData, split: tuple[pd.DataFrame, pd.DataFrame], schema: FeatureSchema
) -> ProcessedDataset:
    return build_features(ml100k, split, schema)


def _sorted_history(train: pd.DataFrame) -> pd.DataFrame:
    """Train rows with their file position, in (user, time, file order) order."""
    frame = train[["user_id", "item_id", "timestamp"]].reset_index(drop=True)
    frame["pos"] = np.arange(len(frame))
    return frame.sort_values(["user_id", "timestamp", "pos"], kind="stable")


# -- example rows -------------------------------------------------------------------


def test_recent_items_match_a_slow_reference(
    dataset: ProcessedDataset, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train = split[0]
    ordered = _sorted_history(train)
    users = ordered["user_id"].drop_duplicates().sample(40, random_state=0)
    checked = 0
    for user in users:
        rows = ordered[ordered["user_id"] == user]
        items = rows["item_id"].tolist()
        for k, pos in enumerate(rows["pos"]):
            expected = items[max(0, k - MAX_LEN) : k]
            assert dataset.train["recent_items"][pos].tolist() == expected
            checked += 1
    assert checked > 1000


def test_recent_items_hold_only_earlier_train_items_of_the_same_user(
    dataset: ProcessedDataset, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train = split[0]
    ex = dataset.train
    assert len(ex) == len(train) == 75_066
    np.testing.assert_array_equal(ex["item_id"].to_numpy(), train["item_id"].to_numpy())
    values, offsets = flatten_lists(ex["recent_items"])
    lengths = np.diff(offsets)
    assert lengths.max() == MAX_LEN
    # each row's history length is min(#earlier train rows of the user, max_len)
    ordered = _sorted_history(train)
    rank = ordered.groupby("user_id").cumcount().to_numpy()
    expected_len = np.empty(len(train), dtype=np.int64)
    expected_len[ordered["pos"].to_numpy()] = np.minimum(rank, MAX_LEN)
    np.testing.assert_array_equal(lengths, expected_len)

    keyed = train[["user_id", "item_id", "timestamp"]].reset_index(drop=True)
    keyed["pos"] = np.arange(len(keyed))
    assert not keyed.duplicated(["user_id", "item_id"]).any()  # ML-100K rates each pair once
    row = np.repeat(np.arange(len(ex)), lengths)
    hist = pd.DataFrame({"user_id": ex["user_id"].to_numpy()[row], "item_id": values})
    found = hist.merge(keyed, on=["user_id", "item_id"], how="left", validate="many_to_one")
    assert found["pos"].notna().all(), "a history item is not one of the user's train items"
    row_ts = ex["timestamp"].to_numpy(dtype="datetime64[ns]")[row]
    hist_ts = found["timestamp"].to_numpy(dtype="datetime64[ns]")
    earlier = (hist_ts < row_ts) | ((hist_ts == row_ts) & (found["pos"].to_numpy() < row))
    assert earlier.all(), "a history holds the row's own item or a later one"


def test_hour_and_weekday_are_utc(dataset: ProcessedDataset) -> None:
    ts = dataset.train["timestamp"].dt.tz_convert("UTC")
    np.testing.assert_array_equal(dataset.train["hour"], ts.dt.hour.to_numpy())
    np.testing.assert_array_equal(dataset.train["weekday"], ts.dt.day_of_week.to_numpy())
    assert dataset.train["hour"].between(0, 23).all()
    assert dataset.train["weekday"].between(0, 6).all()


def test_equal_timestamps_are_ordered_by_row_order() -> None:
    t = pd.Timestamp("2020-01-01 10:00", tz="UTC")
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1, 1],
            "item_id": [10, 11, 10, 12, 13],
            "timestamp": [t, t, t, t - pd.Timedelta(hours=1), t + pd.Timedelta(hours=1)],
        }
    )
    ex = build_examples(frame, max_len=2)
    assert [r.tolist() for r in ex["recent_items"]] == [[12], [12, 10], [], [], [10, 11]]
    naive = frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None))
    assert [r.tolist() for r in build_examples(naive, 2)["recent_items"]] == [
        r.tolist() for r in ex["recent_items"]
    ]
    with pytest.raises(TypeError, match="datetime64"):
        build_examples(frame.assign(timestamp=1), 2)


def test_examples_of_all_100k_ratings_build_in_seconds(ml100k: InteractionData) -> None:
    start = time.perf_counter()
    ex = build_examples(ml100k.interactions, max_len=MAX_LEN)
    elapsed = time.perf_counter() - start
    assert len(ex) == 100_000
    assert elapsed < 3.0, f"build_examples took {elapsed:.2f} s for 100k rows"


# -- user and item tables -----------------------------------------------------------


def test_age_and_year_buckets() -> None:
    ages = pd.Series([7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73, None, -1])
    expected = ["<18", "<18", "18-24", "18-24", "25-34", "25-34", "35-44", "35-44", "45-49"]
    expected += ["45-49", "50-55", "50-55", "56+", "56+", "unknown", "unknown"]
    assert age_bucket(ages).tolist() == expected
    assert set(expected) - {"unknown"} == set(AGE_BUCKETS)
    years = pd.Series([1919, 1920, 1994, 1995, 1999, None], dtype="Int64")
    assert year_bucket(years).tolist() == [
        "1915-1919", "1920-1924", "1990-1994", "1995-1999", "1995-1999", "unknown",
    ]  # fmt: skip
    assert year_bucket(pd.Series([2003]), width=10).tolist() == ["2000-2009"]


def test_user_and_item_tables_of_ml100k(dataset: ProcessedDataset, ml100k: InteractionData) -> None:
    users, items = dataset.users, dataset.items
    assert len(users) == 943 and users["user_id"].is_unique
    assert set(users["age_bucket"]) <= set(AGE_BUCKETS)
    assert len(items) == 1682 and items["item_id"].is_unique
    assert items.loc[items["year"].isna(), "year_bucket"].eq("unknown").all()
    known = items["year"].notna()
    starts = items.loc[known, "year_bucket"].str.slice(0, 4).astype(int)
    assert (starts <= items.loc[known, "year"]).all()
    assert (items.loc[known, "year"] <= starts + 4).all()
    assert items["genres"].map(len).between(1, 6).all()
    assert ml100k.users is not None
    with pytest.raises(ValueError, match="duplicate user ids"):
        build_user_table(pd.concat([ml100k.users, ml100k.users.head(1)]))


def test_popularity_deciles_use_train_counts_only(ml100k: InteractionData) -> None:
    # a time split: train counts differ clearly from counts over all ratings
    cut = temporal_split(ml100k.interactions, 0.8)
    items = build_item_table(ml100k.items, cut.train)
    train_counts = items["item_id"].map(cut.train["item_id"].value_counts()).fillna(0)
    all_counts = items["item_id"].map(ml100k.interactions["item_id"].value_counts()).fillna(0)
    # reference: share of catalogue items with a strictly smaller TRAIN count, in tenths
    smaller = train_counts.rank(method="min").to_numpy() - 1
    expected = np.floor(10 * smaller / len(items)).astype(np.int64)
    np.testing.assert_array_equal(items["popularity_bucket"].to_numpy(), expected)
    assert items["popularity_bucket"].between(0, 9).all()
    assert (items.loc[train_counts == 0, "popularity_bucket"] == 0).all()
    assert items.loc[train_counts.idxmax(), "popularity_bucket"] == 9
    by_count = items.assign(c=train_counts).sort_values("c")
    assert by_count["popularity_bucket"].is_monotonic_increasing
    with_test = popularity_bucket(items["item_id"], ml100k.interactions["item_id"])
    assert (with_test != items["popularity_bucket"].to_numpy()).sum() > 50
    assert (train_counts != all_counts).any()


def test_user_state_is_the_last_train_items(
    dataset: ProcessedDataset, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train = split[0]
    ordered = _sorted_history(train)
    last = ordered.groupby("user_id").tail(1).set_index("user_id")
    history = ordered.groupby("user_id")["item_id"].apply(lambda s: s.tolist()[-MAX_LEN:])
    state = dataset.users.set_index("user_id")
    for user, items in history.items():
        assert state.at[user, "recent_items"].tolist() == items
    ts = last["timestamp"].reindex(state.index)
    np.testing.assert_array_equal(state["hour"], ts.dt.hour.to_numpy())
    np.testing.assert_array_equal(state["weekday"], ts.dt.day_of_week.to_numpy())
    # the state is what one more example row of the user would see
    ex = dataset.train.assign(pos=np.arange(len(dataset.train)))
    last_rows = ex.loc[ordered.groupby("user_id").tail(1)["pos"].to_numpy()]
    for _, row in last_rows.head(100).iterrows():
        nxt = [*row["recent_items"].tolist(), row["item_id"]][-MAX_LEN:]
        assert state.at[row["user_id"], "recent_items"].tolist() == nxt


def test_user_state_as_of_a_time_only_sees_the_past(
    split: tuple[pd.DataFrame, pd.DataFrame], ml100k: InteractionData
) -> None:
    train = split[0]
    as_of = train["timestamp"].quantile(0.3)
    assert ml100k.users is not None
    state = user_features_at(train, build_user_table(ml100k.users), max_len=5, as_of=as_of)
    assert len(state) == 943
    before = _sorted_history(train[train["timestamp"] < as_of])
    expected = before.groupby("user_id")["item_id"].apply(lambda s: s.tolist()[-5:])
    got = state.set_index("user_id")["recent_items"]
    for user in got.index:
        assert got[user].tolist() == expected.get(user, [])
    no_history = ~state["user_id"].isin(before["user_id"])
    assert no_history.sum() > 0
    assert (state.loc[no_history, "hour"] == as_of.hour).all()
    assert (state.loc[no_history, "weekday"] == as_of.weekday()).all()


def test_join_features_keeps_row_columns_and_order(dataset: ProcessedDataset) -> None:
    test_rows = join_features(dataset.test, dataset.users, dataset.items)
    assert len(test_rows) == len(dataset.test) == 24_934
    np.testing.assert_array_equal(test_rows["item_id"], dataset.test["item_id"])
    # test rows take the user's end-of-training state
    state = dataset.users.set_index("user_id")["recent_items"]
    for user, recent in test_rows[["user_id", "recent_items"]].head(200).itertuples(index=False):
        assert recent is state[user]
    train_rows = join_features(dataset.train, dataset.users, dataset.items)
    for a, b in zip(
        train_rows["recent_items"][:200], dataset.train["recent_items"][:200], strict=True
    ):
        assert a is b  # example rows keep their own history
    assert {"age_bucket", "genres", "popularity_bucket"} <= set(train_rows.columns)


# -- leakage --------------------------------------------------------------------------


def test_no_test_information_reaches_any_feature(
    ml100k: InteractionData,
    split: tuple[pd.DataFrame, pd.DataFrame],
    schema: FeatureSchema,
    dataset: ProcessedDataset,
) -> None:
    train, test = split
    rng = np.random.default_rng(0)
    scrambled = test.assign(
        item_id=rng.permutation(test["item_id"].to_numpy()),
        timestamp=train["timestamp"].min() - pd.Timedelta(days=1),
    )
    scrambled = pd.concat([scrambled, scrambled])
    other = build_features(ml100k, (train, scrambled), schema)
    for name in ("train", "users", "items"):
        a, b = getattr(dataset, name), getattr(other, name)
        for col in a.columns:
            if a[col].dtype == object:
                for x, y in zip(flatten_lists(a[col]), flatten_lists(b[col]), strict=True):
                    np.testing.assert_array_equal(x, y)
            else:
                pd.testing.assert_series_equal(a[col], b[col])
    assert dataset.vocabs is not None and other.vocabs is not None
    assert other.vocabs.versions() == dataset.vocabs.versions()


def test_build_config_comes_from_the_schema(schema: FeatureSchema) -> None:
    assert BuildConfig.from_schema(schema) == BuildConfig(max_len=50, popularity_buckets=10)
    short = FeatureSchema.from_dict(
        {
            "features": [
                {"name": "r", "kind": "sequence", "role": "user", "source": "recent_items",
                 "max_len": 7},
            ]
        }
    )  # fmt: skip
    assert BuildConfig.from_schema(short).max_len == 7
    with pytest.raises(ValueError, match="positive"):
        BuildConfig(max_len=0)
