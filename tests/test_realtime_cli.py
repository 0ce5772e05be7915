"""``recsys realtime``: the real-time side operated from a shell, on both stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys.events.redis_store import RedisStore
from recsys.realtime_cli import main

REPO = Path(__file__).resolve().parents[1]
SEGMENTS = REPO / "configs" / "segments"

# Six clicks of u1 within the hour (enters active_clickers), one of u2, and a row
# without a UTC offset (refused, dead-lettered).
CSV = (
    "event_id,user_id,session_id,type,timestamp,item_id\n"
    + "".join(f"c{i},u1,s1,click,2024-05-01T08:0{i}:00Z,{100 + i}\n" for i in range(6))
    + "c9,u2,s2,click,2024-05-01T08:00:00Z,7\nbad,u2,s2,click,2024-05-01T08:01:00,7\n"
)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    rc, doc, _err = _run_err(capsys, *argv)
    return rc, doc


def _run_err(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """The exit status, the JSON (or text) printed, and what went to stderr."""
    rc = main(list(argv))
    captured = capsys.readouterr()
    out = captured.out.strip()
    return rc, json.loads(out.splitlines()[-1]) if out.startswith("{") else out, captured.err


def test_check_segments_lists_rules_and_locates_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-segments", str(SEGMENTS)]) == 0
    out = capsys.readouterr().out
    assert "young_mobile_evening_sports_readers" in out and "active_clickers" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments:\n  - name: s\n    enter: count(click, 1h) >=\n")
    assert main(["check-segments", str(bad)]) == 1
    assert f"{bad}:3:" in capsys.readouterr().err
    assert main(["check-segments", str(tmp_path / "missing.yaml")]) == 2


def test_embedded_store_from_publish_to_erasure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    log = tmp_path / "events.csv"
    log.write_text(CSV)
    rc, doc = _run(capsys, "--sqlite", db, "publish", str(log))
    assert rc == 0 and doc["published"] == 7 and doc["dead_letters"] == 1
    assert doc["rejected_share"] == 0.125 and doc["ok"] is True
    assert list(doc["rejected"].values()) == [1] and doc["conflicts"]["count"] == 0
    rc, doc = _run(
        capsys,
        *("--sqlite", db, "consume", "--until-idle", "--grant-all", "--sweep-interval", "0"),
        *("--segments", str(SEGMENTS / "yoochoose.yaml")),
    )
    assert rc == 0 and doc["applied"] == 7 and doc["dead_letters"] == 0
    rc, doc = _run(capsys, "--sqlite", db, "stats")
    assert doc == {"stream": {"length": 7, "pending": 0}, "dead_letters": 1}
    rc, doc = _run(
        capsys,
        *("--sqlite", db, "segment", "active_clickers"),
        *("--since", "2024-05-01T00:00:00Z", "--until", "2024-05-02T00:00:00Z"),
    )
    assert doc["size"] == 1 and doc["entered"] == 1 and doc["size_end"] == 1
    rc, doc = _run(capsys, "--sqlite", db, "export", "u1", "--actor", "dpo:test")
    assert [e["event_id"] for e in doc["events"]] == [f"c{i}" for i in range(6)]
    rc, doc = _run(capsys, "--sqlite", db, "erase", "u1", "--actor", "dpo:test")
    assert rc == 0 and doc["deleted"]["events"] >= 1
    rc, doc = _run(capsys, "--sqlite", db, "export", "u1", "--actor", "dpo:test")
    assert doc["events"] == [] and doc["profile"] is None
    rc, doc = _run(capsys, "--sqlite", db, "segment", "active_clickers")
    assert doc["size"] == 0


def test_publishing_a_click_log_twice_applies_it_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    log = tmp_path / "clicks.txt"
    log.write_text("SessionId\tItemId\tTime\n3\t11\t1396437466.94\n3\t12\t1396438212.3\n")
    rc, doc = _run(capsys, "--sqlite", db, "publish", str(log), "--yoochoose")
    assert rc == 0 and doc["published"] == 2 and doc["rows_read"] == 2
    # A replay (same event ids yc<line>, same content): reported as duplicates,
    # not published again; nothing new was published, so the status says so.
    rc, doc, err = _run_err(capsys, "--sqlite", db, "publish", str(log), "--yoochoose")
    assert rc == 1 and (doc["published"], doc["duplicates"], doc["dead_letters"]) == (0, 2, 0)
    assert "nothing was published (2 already published)" in err
    rc, doc = _run(capsys, "--sqlite", db, "consume", "--until-idle", "--grant-all")
    assert (doc["applied"], doc["duplicates"]) == (2, 0)
    rc, doc = _run(capsys, "--sqlite", db, "export", "3", "--actor", "test")
    assert doc["profile"]["n_events"] == 2


def test_bad_input_gets_a_message_not_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    assert main(["--sqlite", db, "publish", str(tmp_path / "nope.csv")]) == 2
    assert "recsys realtime publish:" in capsys.readouterr().err
    assert main(["--sqlite", db, "segment", "s", "--since", "yesterday"]) == 2
    assert "Invalid isoformat" in capsys.readouterr().err
    assert main(["--sqlite", db, "consume", "--own", "1", "--until-idle"]) == 2
    assert "partitions are 0..0" in capsys.readouterr().err
    assert main(["--sqlite", db, "--partitions", "2", "stats"]) == 2
    assert "needs Redis" in capsys.readouterr().err
    assert main(["--redis", "redis://127.0.0.1:1/0", "stats"]) == 2
    assert "recsys realtime stats:" in capsys.readouterr().err


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "realtime", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.redis
def test_consumer_process_on_redis_stops_cleanly_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    prefix = f"cli{time.monotonic_ns()}"
    common = ("--redis", redis_url, "--prefix", prefix)
    log = tmp_path / "events.csv"
    log.write_text(CSV)
    pub = _cli(*common, "publish", str(log))
    assert pub.wait(timeout=60) == 0, pub.stderr.read() if pub.stderr else ""
    consumer = _cli(*common, "consume", "--grant-all", "--name", "c-test")
    store = RedisStore(redis_url, prefix=prefix)
    try:
        deadline = time.monotonic() + 60
        while store.stream_stats()["pending"] or len(store.user_events("u1")) < 1:
            assert time.monotonic() < deadline, "consumer did not apply the events"
            assert consumer.poll() is None, consumer.stderr.read() if consumer.stderr else ""
            time.sleep(0.05)
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["applied"] == 7
    assert store.stream_stats()["pending"] == 0
    store.close()


def test_collector_process_accepts_keyed_batches_and_stops_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    assert _cli("--sqlite", db, "collect", "--port", "0").wait(timeout=60) == 2  # no keys
    proc = _cli("--sqlite", db, "collect", "--port", "0", env={"RECSYS_COLLECTOR_KEYS": "t:k1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        body = json.dumps(
            [
                {
                    "event_id": "h1",
                    "user_id": "u",
                    "session_id": "s",
                    "type": "click",
                    "timestamp": "2024-05-01T08:00:00Z",
                    "item_id": 3,
                }
            ]
        ).encode()
        req = urllib.request.Request(url, body, {"X-API-Key": "k1"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as reply:
            assert json.loads(reply.read()) == {
                "accepted": 1,
                "duplicates": 0,
                "rejected": [],
                "conflicts": [],
            }
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stats = {"stream": {"length": 1, "pending": 0}, "dead_letters": 0}
    assert _run(capsys, "--sqlite", db, "stats") == (0, stats)


def test_publish_reports_conflicts_and_fails_past_the_rejected_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    first = tmp_path / "first.csv"
    first.write_text(CSV)
    assert _run(capsys, "--sqlite", db, "publish", str(first))[0] == 0
    # Reused ids: c0 again unchanged (a duplicate), c1 with another item, c2 for
    # another user, and inside the file n1 twice with different times.
    header = "event_id,user_id,session_id,type,timestamp,item_id\n"
    second = tmp_path / "second.csv"
    second.write_text(
        header
        + "c0,u1,s1,click,2024-05-01T08:00:00Z,100\n"
        + "c1,u1,s1,click,2024-05-01T08:01:00Z,555\n"
        + "c2,u7,s1,click,2024-05-01T08:02:00Z,102\n"
        + "n1,u3,s3,click,2024-05-01T09:00:00Z,1\n"
        + "n1,u3,s3,click,2024-05-01T09:05:00Z,1\n"
        + "n2,u3,s3,click,2024-05-01T09:06:00,1\n"
    )
    rc, doc, err = _run_err(capsys, "--sqlite", db, "publish", str(second))
    assert (doc["published"], doc["duplicates"], doc["rows_read"]) == (1, 1, 6)
    conflicts = doc["conflicts"]
    assert conflicts["count"] == 3
    assert conflicts["reasons"] == {
        "event_id: already used by an event with different content": 2,
        "event_id: already used by an event of another user": 1,
    }
    assert [(x["line"], x["event_id"]) for x in conflicts["examples"]] == [
        (2, "c1"),
        (3, "c2"),
        (5, "n1"),
    ]
    assert sum(doc["rejected"].values()) == 1 and doc["dead_letters"] == 4
    # 4 of 6 rows refused (3 conflicts, 1 invalid) is over the default 0.5.
    assert rc == 1 and doc["rejected_share"] == 0.6667 and doc["ok"] is False
    assert "4 of 6 rows refused (66.7%), over --max-rejected-share 0.5" in err
    rc, doc = _run(capsys, "--sqlite", db, "stats")
    assert doc == {"stream": {"length": 8, "pending": 0}, "dead_letters": 5}
    rc, doc = _run(capsys, "--sqlite", db, "export", "u7", "--actor", "test")
    (letter,) = doc["dead_letters"]
    assert letter["source"] == "file:second.csv:3" and letter["raw"]["event_id"] == "c2"
    assert letter["reasons"] == ["event_id: already used by an event of another user"]
    # A looser threshold accepts the same share; a bad value is an input error.
    third = tmp_path / "third.csv"
    third.write_text(header + "t3,u1,s1,click,2024-05-01T08:03:00Z,1\n" + "x,u1,s1,click,bad,1\n")
    args = ("--sqlite", db, "publish", str(third), "--max-rejected-share", "0.5")
    assert _run(capsys, *args)[0] == 0  # 1 of 2 is not over 0.5
    assert main(["--sqlite", db, "publish", str(third), "--max-rejected-share", "2"]) == 2


# -- logs in other layouts: the data layer's reader, configured by flags or a YAML file --
SHOP = (
    "uid;sku;ts;action;sid\n"
    "u1;17;1714550400000;view;s1\n"
    "u1;18;1714550460000;cart;s1\n"
    "NA;19;1714550520000;view;s2\n"  # no user: anon:s2 with --anonymous session
    ";20;1714550580000;view;\n"  # no user and no session: refused
    "u2;21;yesterday;view;s3\n"  # bad time: refused
)
SHOP_FLAGS = (
    *("--delimiter", ";", "--timestamp-format", "epoch_ms", "--anonymous", "session"),
    *("--column", "uid=user_id", "--column", "sku=item_id", "--column", "ts=timestamp"),
    *("--column", "action=type", "--column", "sid=session_id"),
    *("--type-map", "view=page_view", "--type-map", "cart=add_to_cart"),
)


def test_publish_reads_any_layout_from_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    log = tmp_path / "shop.csv"
    log.write_text(SHOP)
    rc, doc = _run(capsys, "--sqlite", db, "publish", str(log), *SHOP_FLAGS)
    assert rc == 1  # 3 of 5 published; add_to_cart without a price is refused too
    assert (doc["published"], doc["rows_read"], doc["dead_letters"]) == (2, 5, 3)
    assert doc["rejected"] == {
        "missing user_id and session_id": 1,
        "bad timestamp": 1,
        "payload.price: required for add_to_cart events": 1,
    }
    assert doc["examples"]["bad timestamp"] == [[6, "u2;21;yesterday;view;s3"]]
    # Event ids come from the rows' content: a rerun publishes nothing twice.
    rc, doc = _run(capsys, "--sqlite", db, "publish", str(log), *SHOP_FLAGS)
    assert (doc["published"], doc["duplicates"]) == (0, 2)
    rc, doc = _run(capsys, "--sqlite", db, "consume", "--until-idle", "--grant-all")
    assert doc["applied"] == 2
    rc, doc = _run(capsys, "--sqlite", db, "export", "anon:s2", "--actor", "test")
    (event,) = doc["events"]
    assert event["session_id"] == "s2" and event["type"] == "page_view"
    assert event["timestamp"] == "2024-05-01T08:02:00.000000Z" and event["item_id"] == 19


def test_publish_reads_a_layout_from_a_dataset_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    config = tmp_path / "shop_events.yaml"
    config.write_text(
        "name: shop\nloader: event_log\nread:\n"
        "  file: ignored.tsv\n"
        "  columns: {customer: user_id, product: item_id, when: timestamp, kind: type}\n"
        "  type_map: {like: like, fav: like}\n"
        '  timestamp: {format: "%d.%m.%Y %H:%M", utc_offset: "+02:00"}\n'
    )
    log = tmp_path / "likes.tsv"
    log.write_text(
        "customer\tproduct\twhen\tkind\n"
        "u1\ta1\t01.05.2024 10:00\tfav\n"
        "u1\ta2\t01.05.2024 10:01\tlike\n"
    )
    rc, doc = _run(capsys, "--sqlite", db, "publish", str(log), "--log-config", str(config))
    assert rc == 0 and doc["published"] == 2 and doc["dead_letters"] == 0
    rc, doc = _run(capsys, "--sqlite", db, "consume", "--until-idle", "--grant-all")
    rc, doc = _run(capsys, "--sqlite", db, "export", "u1", "--actor", "test")
    assert [e["timestamp"] for e in doc["events"]] == [
        "2024-05-01T08:00:00.000000Z",
        "2024-05-01T08:01:00.000000Z",
    ]
    assert {e["type"] for e in doc["events"]} == {"like"}
    # The same log as Parquet with epoch seconds; a flag overrides the file's format.
    pq_log = tmp_path / "likes.parquet"
    pd.DataFrame(
        {"customer": ["u3"], "product": ["a9"], "when": [1714550400], "kind": ["like"]}
    ).to_parquet(pq_log)
    argv = ("publish", str(pq_log), "--log-config", str(config), "--timestamp-format", "epoch_s")
    rc, doc = _run(capsys, "--sqlite", db, *argv)
    assert rc == 0 and doc["published"] == 1


def test_publish_layout_errors_get_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "rt.db")
    log = tmp_path / "shop.csv"
    log.write_text(SHOP)
    assert main(["--sqlite", db, "publish", str(log), "--column", "uid"]) == 2
    assert "--column 'uid': write it as SOURCE=TARGET" in capsys.readouterr().err
    assert main(["--sqlite", db, "publish", str(log), "--timestamp-format", "millis"]) == 2
    assert "timestamp format 'millis' is unknown" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("delimter: ';'\n")
    assert main(["--sqlite", db, "publish", str(log), "--log-config", str(bad)]) == 2
    assert "unknown key read.delimter" in capsys.readouterr().err
    argv = ["--sqlite", db, "publish", str(log), "--delimiter", ";", "--column", "nope=user_id"]
    assert main(argv) == 2
    assert "read.columns maps 'nope', which is not a column" in capsys.readouterr().err
