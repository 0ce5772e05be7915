"""The generic loaders (interactions tables and event logs) on small files written here:
column maps, delimiters, TSV and Parquet, missing ids, anonymous sessions, rating
scales with half stars, type maps, item files with multi-valued attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.cleaning import CleaningConfig, clean
from recsys.data.event_log import EventLogConfig, load_event_log, read_event_table
from recsys.data.frame import DataConfigError, MalformedDataError
from recsys.data.interactions import InteractionsConfig, ItemFileConfig, load_interactions
from recsys.data.missing import missing_mask
from recsys.data.ratings import HALF_STARS, RatingScale
from recsys.data.registry import DatasetConfig, load
from recsys.data.timestamps import TimestampConfig

# Every spelling of "no id" a spreadsheet or a dataframe export writes.
MISSING_IDS = ["NA", "null", "None", "nan", "", "   ", "N/A", "<NA>", "NULL"]


def test_missing_id_tokens() -> None:
    values = pd.Series([*MISSING_IDS, None, "u1", "Nancy", "nano", "0"])
    assert missing_mask(values).tolist() == [True] * 10 + [False] * 4


def _shop_csv(tmp_path: Path) -> Path:
    path = tmp_path / "shop" / "orders.csv"
    path.parent.mkdir(parents=True)
    rows = [
        f"{uid};sku{n};{n * 0.5 if n <= 10 else 3};2024-05-0{1 + n % 9}"
        for n, uid in enumerate(["c1", "c2", "c3", "c1"], start=1)
    ]
    rows += [f"{bad};sku9;4;2024-05-01" for bad in MISSING_IDS]
    path.write_text("customer;product;stars;day\n" + "\n".join(rows) + "\n")
    return path


def test_interactions_table_with_a_column_map_and_delimiter(tmp_path: Path) -> None:
    path = _shop_csv(tmp_path)
    config = InteractionsConfig(
        file="orders.csv",
        delimiter=";",
        columns={
            "customer": "user_id",
            "product": "item_id",
            "stars": "rating",
            "day": "timestamp",
        },
        timestamp=TimestampConfig("%Y-%m-%d", "+02:00"),
        rating_scale=HALF_STARS,
    )
    data = load_interactions(path.parent, config=config, name="shop")
    df = data.interactions
    assert df.columns.tolist() == ["user_id", "item_id", "rating", "timestamp"]
    assert df["user_id"].tolist() == ["c1", "c2", "c3", "c1"]  # no "NA" user, ever
    assert df["rating"].tolist() == [0.5, 1.0, 1.5, 2.0]  # half stars kept
    # A date in a zone two hours east of UTC starts at 22:00 UTC the day before.
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-05-01 22:00", tz="UTC")
    report = data.reports[0]
    assert report.rejected == {"missing user_id": len(MISSING_IDS)}
    assert report.rows_read == 4 + len(MISSING_IDS) and report.rows_kept == 4
    assert data.users is None and data.items is None and data.name == "shop"
    with pytest.raises(MalformedDataError, match="missing user_id"):
        load_interactions(path.parent, strict=True, config=config)


def test_half_stars_survive_cleaning_unless_a_threshold_is_set(tmp_path: Path) -> None:
    path = tmp_path / "r.tsv"
    stars = [0.5, 1.5, 2.5, 3.5, 4.5, 5.0]
    path.write_text(
        "user_id\titem_id\trating\ttimestamp\n"
        + "".join(f"u{i}\ti{i}\t{r}\t{1_700_000_000 + i}\n" for i, r in enumerate(stars))
    )
    data = load_interactions(path, config=InteractionsConfig(rating_scale=HALF_STARS))
    cleaned, report = clean(data)
    assert cleaned.interactions["rating"].tolist() == stars
    assert report.rows_out == len(stars)
    implicit, report = clean(data, CleaningConfig(implicit_threshold=3.5))
    assert implicit.interactions["rating"].tolist() == [1.0, 1.0, 1.0]
    assert report.step("to_implicit").removed == {"rating below 3.5": 3}


def test_rating_scale_rejects_off_scale_values_with_counts(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\n"
        "u1,i1,4.5,1700000000\nu1,i2,4.25,1700000000\nu1,i3,7,1700000000\nu1,i4,,1700000000\n"
    )
    data = load_interactions(path, config=InteractionsConfig(rating_scale=HALF_STARS))
    assert data.interactions["rating"].tolist()[0] == 4.5
    assert np.isnan(data.interactions["rating"].iloc[1])  # an empty rating is kept as NaN
    assert data.reports[0].rejected == {"rating out of range": 2}
    # No scale configured: any number is a rating.
    data = load_interactions(path)
    assert data.interactions["rating"].tolist()[:3] == [4.5, 4.25, 7.0]
    assert RatingScale(1, 10).valid(np.array([0.5, 10.0])).tolist() == [False, True]


def test_parquet_table_and_item_file_with_multi_valued_attributes(tmp_path: Path) -> None:
    folder = tmp_path / "books"
    folder.mkdir()
    pd.DataFrame(
        {
            "reader": [1, 2, 2, 3],
            "isbn": [100, 100, 200, 300],
            "read_at": [1_714_550_400_000, 1_714_550_460_000, 1_714_550_520_000, 1_714_550_580_000],
        }
    ).to_parquet(folder / "reads.parquet")
    (folder / "books.tsv").write_text(
        "isbn\ttitle\tgenres\tyear\n"
        "100\tDune\tSci-Fi|Adventure|Classic|Epic\t1965\n"
        "200\tEmma\tRomance|\t1815\n"
        "NA\tNo id\tDrama\t2000\n"
        "100\tDune again\tSci-Fi\t1965\n"
        "300\tUntitled\t\tsoon\n"
    )
    config = InteractionsConfig(
        file="reads.parquet",
        columns={"reader": "user_id", "isbn": "item_id", "read_at": "timestamp"},
        timestamp=TimestampConfig("epoch_ms"),
        items=ItemFileConfig(
            file="books.tsv",
            columns={"isbn": "item_id"},
            multi_valued={"genres": "|"},
        ),
    )
    data = load_interactions(folder, config=config)
    df = data.interactions
    assert df["user_id"].dtype == np.int64 and df["item_id"].tolist() == [100, 100, 200, 300]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-05-01 08:00", tz="UTC")
    assert (df["rating"] == 1.0).all()
    items = data.items
    assert items is not None and items["item_id"].tolist() == [100, 200, 300]
    assert items["genres"].tolist() == [["Sci-Fi", "Adventure", "Classic", "Epic"], ["Romance"], []]
    assert items["year"].tolist()[:2] == [1965, 1815] and pd.isna(items["year"].iloc[2])
    item_report = data.reports[1]
    assert item_report.rejected == {"missing item_id": 1, "duplicate item_id": 1}
    assert item_report.repaired == {"unparseable year set to missing": 1}
    # A cap keeps the first values and says how many rows it truncated.
    capped = InteractionsConfig(
        **{**config.__dict__, "items": ItemFileConfig(**{**config.items.__dict__, "max_values": 2})}
    )
    data = load_interactions(folder, config=capped)
    assert data.items is not None and data.items["genres"].iloc[0] == ["Sci-Fi", "Adventure"]
    assert (
        data.reports[1].repaired["genres truncated to the first 2 values (read.items.max_values)"]
        == 1
    )


def test_event_log_type_map_timestamp_formats_and_event_type_filter(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "uid|sku|what|when|note\n"
        "u1|a|view|01.05.2024 10:00|x\n"
        "u1|b|buy|01.05.2024 10:05|y\n"
        "u2|a|wishlist|01.05.2024 11:00|z\n"
        "u3|c|view|2024-05-01|w\n"
    )
    config = EventLogConfig(
        delimiter="|",
        columns={
            "uid": "user_id",
            "sku": "item_id",
            "what": "event_type",
            "when": "timestamp",
            "note": "-",
        },
        type_map={"view": "page_view", "buy": "purchase"},
        event_types=("page_view", "purchase"),
        timestamp=TimestampConfig("%d.%m.%Y %H:%M", "+02:00"),
    )
    data = load_event_log(path, config=config)
    df = data.interactions
    assert df.columns.tolist() == ["user_id", "item_id", "rating", "timestamp", "event_type"]
    assert df["event_type"].tolist() == ["page_view", "purchase"]
    assert df["timestamp"].tolist() == [
        pd.Timestamp("2024-05-01 08:00", tz="UTC"),
        pd.Timestamp("2024-05-01 08:05", tz="UTC"),
    ]
    report = data.reports[0]
    assert report.rejected == {"bad timestamp": 1}  # the ISO date does not fit the pattern
    assert report.filtered == {"event_type not in read.event_types ['page_view', 'purchase']": 1}
    assert report.repaired == {"event_type mapped with read.type_map": 2}
    assert "filtered out 1 event_type not in" in report.summary()
    # Filtering is configured, not a rejection: strict mode fails on the bad time only.
    with pytest.raises(MalformedDataError, match="bad timestamp"):
        load_event_log(path, strict=True, config=config)


def test_event_log_epoch_units_and_iso_offsets(tmp_path: Path) -> None:
    base = pd.Timestamp("2024-05-01 08:00:00.250", tz="UTC")
    path = tmp_path / "e.tsv"
    path.write_text("user_id\titem_id\ttimestamp\nu\t1\t1714550400250\n")
    table = read_event_table(path, EventLogConfig(timestamp=TimestampConfig("epoch_ms")))
    assert table.frame["timestamp"].iloc[0] == base
    path.write_text("user_id\titem_id\ttimestamp\nu\t1\t1714550400250000\n")
    table = read_event_table(path, EventLogConfig(timestamp=TimestampConfig("epoch_us")))
    assert table.frame["timestamp"].iloc[0] == base
    path.write_text(
        "user_id\titem_id\ttimestamp\n"
        "u\t1\t2024-05-01T10:00:00.250+02:00\nu\t1\t2024-05-01 09:00:00.250\nu\t1\t1714550400\n"
    )
    table = read_event_table(path, EventLogConfig(timestamp=TimestampConfig("iso8601", "+01:00")))
    # An explicit zone wins; a naive time is at the configured offset; a number is no ISO.
    assert table.frame["timestamp"].tolist() == [base, base]
    assert table.report.rejected == {"bad timestamp": 1}


def test_anonymous_rows_get_a_session_scoped_id(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text(
        "user,session,item,ts\n"
        "u1,s1,7,1714550400\n"
        "NA,s2,8,1714550401\n"
        ",s2,9,1714550402\n"
        "null,,9,1714550403\n"
    )
    columns = {"user": "user_id", "session": "session_id", "item": "item_id", "ts": "timestamp"}
    data = load_event_log(path, config=EventLogConfig(columns=columns, anonymous="session"))
    df = data.interactions
    assert df["user_id"].tolist() == ["u1", "anon:s2", "anon:s2"]
    assert df["session_id"].tolist() == ["s1", "s2", "s2"]
    report = data.reports[0]
    assert report.repaired == {"missing user_id set to anon:<session_id>": 2}
    assert report.rejected == {"missing user_id and session_id": 1}
    # The default rejects every row without a user id, with the count.
    data = load_event_log(path, config=EventLogConfig(columns=columns))
    assert data.interactions["user_id"].tolist() == ["u1"]
    assert data.reports[0].rejected == {"missing user_id": 3}
    # Asking for session ids without a session column is a config error that says so.
    with pytest.raises(DataConfigError, match="no 'session_id' column"):
        load_event_log(path, config=EventLogConfig(anonymous="session"))


def test_a_column_map_naming_an_absent_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user_id,item_id,timestamp\nu,1,1714550400\n")
    with pytest.raises(DataConfigError, match=r"read\.columns maps 'uid'.*user_id, item_id"):
        load_event_log(path, config=EventLogConfig(columns={"uid": "user_id"}))
    with pytest.raises(DataConfigError, match="several columns to 'user_id'"):
        EventLogConfig(columns={"a": "user_id", "b": "user_id"})


def test_generic_loaders_through_the_registry(tmp_path: Path) -> None:
    _shop_csv(tmp_path)
    loaded = load(
        {
            "name": "shop",
            "loader": "interactions",
            "dir": str(tmp_path),
            "read": {
                "file": "orders.csv",
                "delimiter": ";",
                "columns": {
                    "customer": "user_id",
                    "product": "item_id",
                    "stars": "rating",
                    "day": "timestamp",
                },
                "timestamp": {"format": "%Y-%m-%d"},
                "rating_scale": {"min": 0.5, "max": 5, "step": 0.5},
            },
        }
    )
    assert loaded.data is not None and len(loaded.data.interactions) == 4
    assert [f.name for f in loaded.files] == ["orders.csv"]
    with pytest.raises(DataConfigError, match=r"unknown key dataset\.read\.type_map"):
        DatasetConfig.from_dict(
            {"name": "shop", "loader": "interactions", "read": {"type_map": {}}}
        )


def test_a_log_in_the_event_schema_layout_needs_no_column_map(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,user_id,session_id,type,timestamp,item_id\n"
        "e1,u1,s1,click,2024-05-01T08:00:00Z,17\n"
    )
    df = load_event_log(path).interactions
    assert df["event_type"].tolist() == ["click"] and df["event_id"].tolist() == ["e1"]
    assert "type" not in df.columns
