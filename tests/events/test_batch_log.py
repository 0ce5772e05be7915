"""The batch path: the real YOOCHOOSE log, and CSV/Parquet logs with bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.frame import DatasetNotFoundError
from recsys.events.batch import load_event_log, load_yoochoose_clicks
from recsys.events.schema import EventType


def test_yoochoose_log_becomes_click_events(yoochoose_path: Path) -> None:
    log = load_yoochoose_clicks(yoochoose_path)
    assert log.report.rows_read == 70_278 and log.report.rows_kept == 70_278
    assert log.dead_letters == [] and log.report.rows_rejected == 0
    first = log.events[0]
    assert (first.event_id, first.user_id, first.session_id) == ("yc2", "3", "3")
    assert first.type is EventType.CLICK and first.item_id == 214716935
    assert first.ts_us == 1_396_437_466_940_000
    assert len({e.event_id for e in log.events}) == 70_278
    assert len({e.user_id for e in log.events}) == 17_794
    assert len({e.item_id for e in log.events}) == 2_933


CSV = """event_id,user_id,session_id,type,timestamp,item_id,device_type,country,payload
a1,u1,s1,click,2024-05-01T08:00:00Z,17,mobile,DE,
a2,u1,s1,purchase,1714550460,17,mobile,DE,"{""price"": 9.5, ""category"": ""sports""}"
a3,u2,s9,click,2024-05-01T08:00:00,18,desktop,FR,
a4,u2,s9,search,2024-05-01T08:02:00Z,,desktop,FR,"{""query"": ""tents""}"
a5,u2,s9,scroll,2024-05-01T08:03:00Z,,desktop,FR,{broken
"""


def test_csv_log_keeps_valid_rows_and_dead_letters_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(CSV)
    log = load_event_log(path)
    assert [e.event_id for e in log.events] == ["a1", "a2", "a4"]
    assert log.events[1].payload == {"price": 9.5, "category": "sports"}
    assert log.events[0].context.device_type == "mobile" and log.events[0].item_id == 17
    assert log.report.rows_read == 5 and log.report.rows_kept == 3
    assert log.report.rows_rejected == 2
    sources = [d.source for d in log.dead_letters]
    assert sources == ["file:events.csv:3", "file:events.csv:5"]
    assert any("has no UTC offset" in r for r in log.dead_letters[0].reasons)
    assert any("payload: not valid JSON" in r for r in log.dead_letters[1].reasons)
    assert "rejected" in log.report.summary()


def test_parquet_log_and_columns_outside_the_schema(tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p1", "p2"],
            "user_id": ["u1", "u2"],
            "session_id": ["s1", "s2"],
            "type": ["like", "like"],
            "timestamp": ["2024-05-01T08:00:00Z", "2024-05-01T08:01:00Z"],
            "item_id": [5, 6],
            "email": [None, "x@y.z"],
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    log = load_event_log(path)
    assert [e.event_id for e in log.events] == ["p1"]
    (dl,) = log.dead_letters
    assert dl.reasons == ("email: field is not in the event schema",)
    assert "x@y.z" not in json.dumps(dl.raw)


def test_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_event_log(tmp_path / "nope.csv")
