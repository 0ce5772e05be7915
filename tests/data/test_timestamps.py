"""The one timestamp parser: every configured format, offsets, and what becomes NaT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.frame import DataConfigError
from recsys.data.timestamps import TimestampConfig, parse_timestamps, parse_utc_offset, to_iso

T = pd.Timestamp("2024-05-01 08:00:00", tz="UTC")


@pytest.mark.parametrize(
    ("fmt", "values"),
    [
        ("epoch_s", [1714550400, "1714550400", 1714550400.0]),
        ("epoch_ms", [1714550400000, "1714550400000", 1714550400000.0]),
        ("epoch_us", [1714550400000000, "1714550400000000"]),
        ("epoch_ns", [1714550400000000000, "1714550400000000000"]),
        ("iso8601", ["2024-05-01T08:00:00Z", "2024-05-01T10:00:00+02:00", "2024-05-01 08:00"]),
        ("auto", ["1714550400", "2024-05-01T08:00:00Z", "2024-05-01T03:30:00-04:30"]),
        ("%d/%m/%Y %H:%M", ["01/05/2024 08:00"]),
        ("%d/%m/%Y %H:%M %z", ["01/05/2024 10:00 +0200"]),
    ],
)
def test_every_format(fmt: str, values: list[object]) -> None:
    for value in values:
        parsed = parse_timestamps(pd.Series([value]), fmt)
        assert parsed.iloc[0] == T, (fmt, value)
        assert str(parsed.dtype) == "datetime64[ns, UTC]"


def test_fractions_keep_milliseconds() -> None:
    parsed = parse_timestamps(pd.Series(["1396437466.94", "1396437466940"]), "auto")
    assert parsed.iloc[0] == pd.Timestamp("2014-04-02 11:17:46.940", tz="UTC")
    parsed = parse_timestamps(pd.Series([1396437466940.0]), "epoch_ms")
    assert parsed.iloc[0] == pd.Timestamp("2014-04-02 11:17:46.940", tz="UTC")


def test_a_utc_offset_applies_to_times_without_a_zone_only() -> None:
    values = pd.Series(["2024-05-01 10:00", "2024-05-01T08:00:00Z", "2024-05-01T09:00+01:00"])
    assert (parse_timestamps(values, "iso8601", "+02:00") == T).all()
    local = parse_timestamps(pd.Series(["01.05.2024 03:30"]), "%d.%m.%Y %H:%M", "-04:30")
    assert local.iloc[0] == T
    naive = pd.Series(pd.to_datetime(["2024-05-01 10:00"]))
    assert parse_timestamps(naive, "auto", "+02:00").iloc[0] == T
    aware = pd.Series(pd.to_datetime(["2024-05-01 10:00"]).tz_localize("Europe/Berlin"))
    assert parse_timestamps(aware, "auto", "-09:00").iloc[0] == T  # its own zone wins


def test_unparseable_missing_and_out_of_range_values_are_nat() -> None:
    values = pd.Series(["", "NA", "null", "soon", "1e30", "2024-13-45T00:00:00Z", None])
    assert parse_timestamps(values).isna().all()
    assert parse_timestamps(pd.Series([1e30, np.nan]), "epoch_s").isna().all()
    # Numbers are not ISO text, and text is not a number in epoch formats.
    assert parse_timestamps(pd.Series([1714550400]), "iso8601").isna().all()
    assert parse_timestamps(pd.Series(["2024-05-01"]), "epoch_s").isna().all()


def test_bad_settings_are_config_errors_that_say_what_is_accepted() -> None:
    with pytest.raises(DataConfigError, match="epoch_ms"):
        TimestampConfig("milliseconds")
    with pytest.raises(DataConfigError, match=r"\+HH:MM"):
        TimestampConfig("auto", "two hours")
    with pytest.raises(DataConfigError, match="18 hours"):
        parse_utc_offset("+19:00")
    assert [parse_utc_offset(t) for t in ("+05:30", "-0800", "+02", "Z", None)] == [
        330,
        -480,
        120,
        0,
        0,
    ]


def test_iso_text_for_the_event_schema() -> None:
    times = parse_timestamps(pd.Series(["1714550400.25", "x"]))
    assert to_iso(times) == ["2024-05-01T08:00:00.250000Z", None]
