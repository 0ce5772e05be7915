"""Exposure tables: reading, checks with the file and column named, per-unit sums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.experiments.data import ExposureDataError, check_table, read_table, unit_table


def table(**overrides: list[object]) -> pd.DataFrame:
    data: dict[str, list[object]] = {
        "unit": ["a", "a", "b", "c", "c", "d"],
        "arm": ["control", "control", "t", "t", "control", "ghost"],
        "timestamp": [1.0, 5.0, 2.0, 3.0, 4.0, 1.0],
        "impressions": [10, 10, 5, 8, 2, 4],
        "clicks": [1, 2, 0, 1, 0, 1],
        "conversions": [0, 1, 0, 0, 0, 0],
        "dwell": [4.0, 8.0, 0.0, 3.0, 0.0, 2.0],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_units_are_summed_and_mixed_or_unknown_arms_dropped() -> None:
    pre = pd.DataFrame({"unit": ["a", "z"], "impressions": [7, 1], "clicks": [1, 0],
                        "conversions": [0, 0], "dwell": [1.0, 0.0]})  # fmt: skip
    t = unit_table(check_table(table(), "x.csv"), ("control", "t"), check_table(pre, "p", True))
    assert t.arm.tolist() == [0, 1]  # a (control), b (t); c is in two arms, d's arm unknown
    assert t.columns["impressions"].tolist() == [20.0, 5.0]
    assert t.pre["impressions"].tolist() == [7.0, 0.0]  # b has no pre-period: zeros
    assert (t.mixed_units, t.unknown_rows) == (1, 1)
    assert t.counts().tolist() == [1, 1]
    early = unit_table(check_table(table(), "x.csv"), ("control", "t"), until=2.5)
    assert early.columns["clicks"].tolist() == [1.0, 0.0]  # a's second row is later


def test_moments_per_arm() -> None:
    t = unit_table(check_table(table(), "x.csv"), ("control", "t"))
    control, _ = t.moments("ctr")
    assert float(control.n) == 1 and float(control.sums[0]) == 3.0 and float(control.sums[1]) == 20
    conv = t.moments("conversion")[0]
    assert float(conv.sums[0]) == 1.0 and float(conv.sums[1]) == 1.0  # binary, per unit


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"clicks": [1, -2, 0, 1, 0, 1]}, "column 'clicks' has 1 missing, non-numeric or negative"),
        ({"dwell": [4.0, "x", 0.0, 3.0, 0.0, 2.0]}, "first at row 1: 'x'"),
        ({"unit": ["a", None, "b", "c", "c", "d"]}, "column 'unit' is empty at row 1"),
    ],
)
def test_bad_values_are_named(overrides: dict[str, list[object]], message: str) -> None:
    with pytest.raises(ExposureDataError, match=r"x\.csv: ") as info:
        check_table(table(**overrides), "x.csv")
    assert message in str(info.value)


def test_missing_columns_are_named() -> None:
    with pytest.raises(ExposureDataError, match=r"missing columns \['dwell'\]"):
        check_table(table().drop(columns="dwell"), "x.csv")
    check_table(table().drop(columns="arm"), "pre.csv", pre=True)  # a pre-period needs no arm


def test_csv_parquet_and_jsonl_read_alike(tmp_path: Path) -> None:
    df = table(unit=["1", "1", "2", "3", "3", "4"])
    df.to_csv(tmp_path / "x.csv", index=False)
    df.to_parquet(tmp_path / "x.parquet")
    df.to_json(tmp_path / "x.jsonl", orient="records", lines=True)
    frames = [check_table(read_table(tmp_path / f"x.{s}"), s) for s in ("csv", "parquet", "jsonl")]
    for other in frames[1:]:
        assert other["unit"].tolist() == frames[0]["unit"].tolist() == df["unit"].tolist()
        np.testing.assert_allclose(other["dwell"], frames[0]["dwell"])
    with pytest.raises(ExposureDataError, match=r"expected a \.csv"):
        read_table(tmp_path / "x.txt")
