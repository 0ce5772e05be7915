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
    rc = main(list(argv))
    out = capsys.readouterr().out.strip()
    return rc, json.loads(out.splitlines()[-1]) if out.startswith("{") else out


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
    for _ in range(2):  # a replay: same event ids (yc<line>)
        rc, doc = _run(capsys, "--sqlite", db, "publish", str(log), "--yoochoose")
        assert rc == 0 and doc["published"] == 2 and doc["rows_read"] == 2
    rc, doc = _run(capsys, "--sqlite", db, "consume", "--until-idle", "--grant-all")
    assert (doc["applied"], doc["duplicates"]) == (2, 2)
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
            assert json.loads(reply.read()) == {"accepted": 1, "rejected": []}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stats = {"stream": {"length": 1, "pending": 0}, "dead_letters": 0}
    assert _run(capsys, "--sqlite", db, "stats") == (0, stats)
