"""Event-log loaders: the real YOOCHOOSE sample, and CSV / Parquet logs written here."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.event_log import load_event_log, load_yoochoose, parse_timestamps
from recsys.data.frame import DatasetNotFoundError, MalformedDataError


def test_yoochoose_sample(yoochoose_dir: Path) -> None:
    path = yoochoose_dir / "yoochoose-clicks-100k_train_full.txt"
    with path.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    data = load_yoochoose(path)
    df = data.interactions
    assert len(df) == len(rows) == 70_278
    assert data.n_users == len({r["SessionId"] for r in rows}) == 17_794
    assert data.n_items == len({r["ItemId"] for r in rows}) == 2_933
    assert df.columns.tolist() == ["user_id", "item_id", "rating", "timestamp", "event_type"]
    assert [str(t) for t in df.dtypes[:4]] == ["int64", "int64", "float32", "datetime64[ns, UTC]"]
    assert (df["event_type"] == "click").all() and (df["rating"] == 1.0).all()
    # Millisecond times survive: compare with the raw strings.
    millis = df["timestamp"].to_numpy("datetime64[ns]").astype(np.int64) // 1_000_000
    expected = [round(float(r["Time"]) * 1000) for r in rows]
    np.testing.assert_array_equal(millis, expected)
    assert df["timestamp"].min().date().isoformat() == "2014-04-01"
    assert df["timestamp"].max().date().isoformat() == "2014-04-07"
    assert data.reports[0].rows_rejected == 0


def test_yoochoose_raw_challenge_format(tmp_path: Path) -> None:
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(
        "1,2014-04-07T10:51:09.277Z,214536502,0\n"
        "1,2014-04-07T10:54:09.868Z,214536500,S\n"
        "2,not-a-time,214662742,0\n"
        "3,2014-04-07T10:57:09.868Z,214536500\n"
    )
    data = load_yoochoose(path)
    df = data.interactions
    assert df["user_id"].tolist() == [1, 1]
    assert df["category"].tolist() == ["0", "S"]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2014-04-07 10:51:09.277", tz="UTC")
    assert data.reports[0].rejected == {"bad timestamp": 1, "wrong field count (expected 4)": 1}


def test_parse_timestamps_all_forms() -> None:
    values = pd.Series(
        [
            "1396437466",
            "1396437466.25",
            "2014-04-02T11:17:46Z",
            "2014-04-02T13:17:46+02:00",
            "2014-04-02 11:17:46",  # naive: UTC
            "",
            "soon",
        ]
    )
    parsed = parse_timestamps(values)
    assert str(parsed.dtype) == "datetime64[ns, UTC]"
    base = pd.Timestamp("2014-04-02 11:17:46", tz="UTC")
    assert parsed.iloc[0] == base and parsed.iloc[1] == base + pd.Timedelta("250ms")
    assert (parsed.iloc[2:5] == base).all()
    assert parsed.iloc[5:].isna().all()
    numeric = parse_timestamps(pd.Series([1396437466.5, np.nan]))
    assert numeric.iloc[0] == base + pd.Timedelta("500ms") and pd.isna(numeric.iloc[1])
    naive = parse_timestamps(pd.Series(pd.to_datetime(["2014-04-02 11:17:46"])))
    assert naive.iloc[0] == base
    aware = parse_timestamps(
        pd.Series(pd.to_datetime(["2014-04-02 13:17:46"]).tz_localize("Europe/Berlin"))
    )
    assert aware.iloc[0] == base


def test_csv_event_log_with_context_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "uid,item_id,event_type,ts,device,value\n"
        "u1,i9,view,1396437466,mobile,\n"
        'u2,i9,purchase,2014-04-02T11:17:46Z,"desktop, wide",3.5\n'
        ",i9,view,1396437466,mobile,\n"  # missing user
        "u3,i9,view,later,mobile,\n"  # bad timestamp
        "u4,i9,view,1396437466,mobile,lots\n"  # non-numeric value
        "u5,i9,,2014-04-02 11:17:46,tv,1\n"  # missing event type: default
        "u6,i9,view,1396437466\n"  # truncated
    )
    data = load_event_log(path, column_map={"uid": "user_id", "ts": "timestamp"})
    df = data.interactions
    assert df.columns.tolist() == [
        "user_id",
        "item_id",
        "rating",
        "timestamp",
        "event_type",
        "device",
    ]
    assert df["user_id"].tolist() == ["u1", "u2", "u5"]
    assert pd.api.types.is_string_dtype(df["user_id"].dtype)
    assert df["device"].tolist() == ["mobile", "desktop, wide", "tv"]
    assert df["event_type"].tolist() == ["view", "purchase", "interaction"]
    np.testing.assert_array_equal(df["rating"].to_numpy(), np.array([np.nan, 3.5, 1.0], np.float32))
    assert (df["timestamp"] == pd.Timestamp("2014-04-02 11:17:46", tz="UTC")).all()
    report = data.reports[0]
    assert report.rows_read == 7
    assert report.rejected == {
        "missing user_id": 1,
        "bad timestamp": 1,
        "non-numeric rating": 1,
        "wrong field count (expected 6)": 1,
    }
    assert report.examples["missing user_id"] == [(4, ",i9,view,1396437466,mobile,")]
    assert report.repaired == {"missing event_type set to 'interaction'": 1}
    with pytest.raises(MalformedDataError, match="missing user_id"):
        load_event_log(path, strict=True, column_map={"uid": "user_id", "ts": "timestamp"})


def test_parquet_event_log(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": [7, 8, 9],
            "item_id": ["a", "b", None],
            "event_type": ["click", "view", "click"],
            "timestamp": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-01 11:00", "2024-01-02 09:00"]
            ),
            "page": [1, 2, 3],
        }
    ).to_parquet(path)
    data = load_event_log(path)
    df = data.interactions
    assert df["user_id"].dtype == np.int64 and df["user_id"].tolist() == [7, 8]
    assert df["item_id"].tolist() == ["a", "b"]
    assert (df["rating"] == 1.0).all() and df["rating"].dtype == np.float32
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 10:00", tz="UTC")
    assert df["page"].tolist() == [1, 2] and df["page"].dtype == np.int64
    assert data.reports[0].rejected == {"missing item_id": 1}
    assert data.reports[0].examples["missing item_id"][0][0] == 3


def test_missing_columns_and_files(tmp_path: Path) -> None:
    path = tmp_path / "events.tsv"
    path.write_text("SessionId\tItemId\tTime\n1\t2\t1396437466\n")
    with pytest.raises(MalformedDataError, match="column_map"):
        load_event_log(path)
    data = load_event_log(
        path, column_map={"SessionId": "user_id", "ItemId": "item_id", "Time": "timestamp"}
    )
    assert data.interactions["user_id"].tolist() == [1]
    assert data.interactions["event_type"].tolist() == ["interaction"]
    with pytest.raises(DatasetNotFoundError, match="RECSYS_DATA_DIR"):
        load_event_log(tmp_path / "absent.csv")
