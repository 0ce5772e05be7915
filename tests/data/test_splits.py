"""Split invariants: no leakage, determinism, and the benchmark protocol's counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.splits import SplitConfig, leave_last_out, split, stratified_split, temporal_split


def _toy(n_users: int = 30, n_items: int = 40, n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n),
            "item_id": rng.integers(0, n_items, n),
            "rating": rng.integers(1, 6, n).astype("float32"),
            "timestamp": pd.to_datetime(rng.integers(0, 10_000, n), unit="s", utc=True),
        }
    )
    return df


@pytest.fixture(scope="module")
def ml100k_raw(ml100k_dir: Path) -> pd.DataFrame:
    return pd.read_csv(
        ml100k_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"]
    )


def test_stratified_by_item_reproduces_benchmark_counts(ml100k_raw: pd.DataFrame) -> None:
    train, test = stratified_split(ml100k_raw, ratio=0.75, by="item", seed=42, min_rating=1)
    assert (len(train), len(test)) == (75_066, 24_934)
    assert train.user_id.nunique() == 943 and test.user_id.nunique() == 943
    assert train.item_id.nunique() == 1_682 and test.item_id.nunique() == 1_473


@pytest.mark.parametrize("by", ["user", "item"])
def test_stratified_partitions_rows_per_group(by: str) -> None:
    df = _toy()
    train, test = stratified_split(df, ratio=0.75, by=by, seed=7)  # type: ignore[arg-type]
    assert set(train.index).isdisjoint(test.index)
    assert len(train) + len(test) == len(df)
    col = f"{by}_id"
    counts = df[col].value_counts()
    got = train[col].value_counts().reindex(counts.index, fill_value=0)
    np.testing.assert_array_equal(got.to_numpy(), np.round(0.75 * counts.to_numpy()))


def test_stratified_is_deterministic_and_seed_sensitive() -> None:
    df = _toy()
    a, _ = stratified_split(df, seed=1)
    b, _ = stratified_split(df, seed=1)
    c, _ = stratified_split(df, seed=2)
    assert a.index.equals(b.index)
    assert not a.index.equals(c.index)


def test_stratified_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ratio"):
        stratified_split(_toy(), ratio=1.0)
    with pytest.raises(ValueError, match="by"):
        stratified_split(_toy(), by="session")  # type: ignore[arg-type]


def test_leave_last_out_holds_out_each_users_latest() -> None:
    df = _toy()
    s = leave_last_out(df, valid=True)
    assert s.valid is not None
    assert len(s.train) + len(s.test) + len(s.valid) == len(df)
    assert s.test.user_id.is_unique and s.valid.user_id.is_unique
    last_train = s.train.groupby("user_id").timestamp.max()
    for frame in (s.valid, s.test):
        held = frame.set_index("user_id").timestamp
        assert (held >= last_train.reindex(held.index)).all()
    assert (
        s.test.set_index("user_id").timestamp
        >= s.valid.set_index("user_id").timestamp.reindex(s.test.user_id)
    ).all()


def test_leave_last_out_breaks_time_ties_by_file_order() -> None:
    ts = pd.Timestamp("2020-01-01", tz="UTC")
    df = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [10, 11, 12], "timestamp": [ts, ts, ts]})
    s = leave_last_out(df)
    assert s.test.item_id.tolist() == [12]


def test_temporal_split_has_no_future_in_train() -> None:
    df = _toy()
    s = temporal_split(df, 0.8)
    assert s.train.timestamp.max() < s.test.timestamp.min()
    assert len(s.train) + len(s.test) == len(df)
    s2 = temporal_split(df, "1970-01-01T02:00:00")
    assert (s2.test.timestamp >= pd.Timestamp("1970-01-01T02:00:00", tz="UTC")).all()


def test_split_dispatch_matches_direct_call() -> None:
    df = _toy()
    s = split(df, SplitConfig(method="stratified", ratio=0.75, by="user", seed=3))
    train, _ = stratified_split(df, 0.75, "user", 3, min_rating=1.0)
    assert s.train.index.equals(train.index)
