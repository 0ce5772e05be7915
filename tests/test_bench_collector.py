"""The collector benchmark (new against the collector of commit 2373fc6), on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_collector.py"
RUN_FIELDS = {"clients", "requests", "events_accepted", "events_per_s", "events_per_s_in_window",
              "p50_ms", "p99_ms", "mean_ms", "errors", "resets", "seconds", "batch",
              "server_cpu_s", "client_cpu_s", "steal_s", "server_cpu_us_per_event"}  # fmt: skip


def test_reports_both_collectors_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--clients", "1,3"]
    command += ["--duration", "0.3", "--batch", "5", "--burst", "12", "--burst-requests", "2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["baseline"] == "2373fc6" and report["store"] == "sqlite"
    assert report["machine"]["cpus"] >= 1 and len(report["load_before"]) == 3
    for impl in ("old", "new"):
        runs = report["runs"][impl]
        assert [r["clients"] for r in runs] == [1, 3]
        assert all(set(r) == RUN_FIELDS for r in runs)
        assert all(r["events_accepted"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in runs)
        # the window's rate is rounded to 0.1 event/s (0.05 at most above the exact one)
        assert all(r["events_per_s_in_window"] <= r["events_accepted"] / 0.3 + 0.05 for r in runs)
        assert all(r["server_cpu_s"] >= 0 for r in runs)  # 0.3 s runs: clock ticks
        burst = report["burst"][impl]
        assert burst["clients"] == 12 and burst["requests_per_client"] == 2
        # Every event accepted is in the stream once (nothing lost or doubled).
        assert report["stores"][impl]["stream_events"] == report["accepted_total"][impl]
        assert report["nothing_lost_or_doubled"][impl] is True
    # The new collector served every request of the burst, without a reset.
    new_burst = report["burst"]["new"]
    assert new_burst["errors"] == {} and new_burst["events_accepted"] == 12 * 2 * 5
    assert report["goals"]["zero_resets_in_burst"] is True
    ratios = report["ratios_new_over_old"]
    assert [r["clients"] for r in ratios] == [1, 3] and all(r["events_per_s"] > 0 for r in ratios)
    assert report["goals"]["throughput_3x_at_64_clients"] is None  # no 64-client run here
    assert "old ev/s" in done.stdout and "burst new" in done.stdout
