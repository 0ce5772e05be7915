"""The Redis event-path benchmark: its summary, and one real run on a slice of YOOCHOOSE."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_events.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_events", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_events = _load()


def _run(overlap: bool, rnd: int, p99: float, rate: float) -> dict[str, Any]:
    return {
        "phase": "latency",
        "overlap_commits": overlap,
        "round": rnd,
        "eval_latency_ms_p99": p99,
        "events_per_s": rate,
    }


def test_summary_takes_ratios_within_each_round() -> None:
    results = [
        _run(True, 1, 4.0, 20_000.0),
        _run(False, 1, 12.0, 19_000.0),
        _run(True, 2, 10.0, 20_000.0),
        _run(False, 2, 10.0, 20_000.0),
        _run(True, 3, 2.0, 20_000.0),
        _run(False, 3, 5.0, 10_000.0),
        {"phase": "fault", "overlap_commits": True},
    ]
    entry = bench_events.summarize(results)["latency"]
    assert entry["overlapped"]["p99_ms"] == [4.0, 10.0, 2.0]
    assert entry["overlapped"]["median_p99_ms"] == 4.0
    assert entry["sequential"]["median_p99_ms"] == 10.0
    # Per-round ratios 3.0, 1.0, 2.5: their median, not the ratio of the medians (2.5).
    assert entry["sequential_over_overlapped_p99"] == 2.5
    assert entry["overlapped_over_sequential_events_per_s"] == round(20_000 / 19_000, 2)


def test_summary_of_one_mode_has_no_ratio() -> None:
    entry = bench_events.summarize([_run(True, 1, 3.0, 20_000.0)])["latency"]
    assert "sequential" not in entry
    assert "sequential_over_overlapped_p99" not in entry


def _step(t_ms: float, wall_ms: float, cpu_ms: float, events: int) -> list[int]:
    ms = 1_000_000
    return [int(t_ms * ms), int(wall_ms * ms), int(cpu_ms * ms), events, int(0.1 * ms)]


def test_step_summary_finds_a_slow_window_and_the_utilization() -> None:
    # The first step waited for the producer; then 1 ms steps of 20 events at
    # 0.8 ms of CPU (40 us per event), except 50-100 ms, where each step costs
    # twice the CPU per event; idle steps (no entries) are left out.
    rows = [_step(0.0, 90.0, 1.0, 20)]
    for i in range(200):
        cpu = 1.6 if 50 <= i < 100 else 0.8
        rows.append(_step(100.0 + i, 1.0, cpu, 20))
        rows.append(_step(100.5 + i, 0.1, 0.01, 0))
    summary = bench_events.summarize_steps(rows)
    assert summary["steps"] == 200
    windows = summary["cpu_us_per_event_50ms_windows"]
    assert windows["p10"] == windows["p50"] == 40.0 and windows["max"] == 80.0
    # CPU 0.8 * 150 + 1.6 * 50 = 200 ms over 200 ms of steps.
    assert summary["utilization"] == 1.0
    assert summary["step_ms"]["max"] == 1.0 and summary["events_per_step"]["max"] == 20
    assert summary["reply_wait_ms"]["p50"] == 0.1


def test_step_summary_of_an_idle_consumer() -> None:
    assert bench_events.summarize_steps([_step(0.0, 5.0, 0.1, 0)]) == {"steps": 0}


@pytest.mark.redis
@pytest.mark.slow
def test_compare_run_applies_every_event_once(yoochoose_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(yoochoose_path.parents[1]),
        "BENCH_EVENTS_TRACE": "1",
    }
    usable = sorted(os.sched_getaffinity(0))
    consumer_cpu, server_cpu = str(usable[0]), str(usable[-1])
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *("--out", str(out), "--phases", "latency", "--rate", "4000", "--limit", "2000"),
            *("--compare", "--fault", "--timeout", "120"),
            # The consumers on one CPU, redis-server and the producer on another.
            *("--consumer-cpus", consumer_cpu, "--server-cpus", server_cpu),
            *("--producer-cpus", server_cpu),
        ],
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    runs = [r for r in report["results"] if r["phase"] == "latency"]
    faults = [r for r in report["results"] if r["phase"] == "fault"]
    assert [r["overlap_commits"] for r in runs] == [True, False]
    for r in runs:
        # Placed as asked, as the kernel reports it.
        assert r["cpu_affinity"] == {"consumers": [[usable[0]]] * 2, "producer": [usable[-1]]}
        assert r["applied"] == 2000 and r["dead_letters"] == 0 and r["pending_after"] == 0
        assert 0 < r["eval_latency_ms_p50"] <= r["eval_latency_ms_p99"]
        # Both consumers traced their loops.
        steps = r["consumer_steps"]
        assert set(steps) == {"0", "1"}
        assert all(s["steps"] > 0 and 0 < s["utilization"] <= 1.0 for s in steps.values())
    assert [f["overlap_commits"] for f in faults] == [True, False]
    assert all(f["exactly_once"] and f["applied_after_restart"] == 2000 for f in faults)
    summary = report["summary"]["latency"]
    assert summary["sequential_over_overlapped_p99"] > 0
    machine = report["machine"]
    assert machine["cpus_usable"] == usable
    assert machine["python_build"]["executable"] == os.path.realpath(sys.executable)
    assert machine["server_affinity"] == [usable[-1]]
    assert (machine["consumer_cpus"], machine["server_cpus"], machine["producer_cpus"]) == (
        consumer_cpu,
        server_cpu,
        server_cpu,
    )
