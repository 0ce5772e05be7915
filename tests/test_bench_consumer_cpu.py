"""The in-process consumer CPU benchmark, on a slice of YOOCHOOSE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_consumer_cpu.py"
STAGES = {"parse", "validate", "apply", "segments", "documents", "build", "commit_args"}


def _report(data: Path, out: Path, *args: str) -> dict[str, Any]:
    """Runs the benchmark on the YOOCHOOSE log at ``data``; its JSON report."""
    env = {**os.environ, "RECSYS_DATA_DIR": str(data.parents[1])}
    command = [sys.executable, str(SCRIPT), "--out", str(out), *args]
    subprocess.run(command, check=True, env=env, cwd=REPO)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.slow
def test_reports_every_stage_per_event(yoochoose_path: Path, tmp_path: Path) -> None:
    args = ("--limit", "3000", "--batch", "21", "--repeat", "2")
    report = _report(yoochoose_path, tmp_path / "cpu.json", *args)
    assert report["events"] == 3000 and report["batch"] == 21
    best = report["us_per_event"]
    assert set(best) == STAGES and all(v > 0 for v in best.values())
    # The batch computation does all the single stages, so it costs more than any one.
    assert best["build"] > max(best[s] for s in ("parse", "validate", "apply", "segments"))
    assert all(len(runs) == 2 for runs in report["us_per_event_runs"].values())
    # Consecutive events of a session share a batch: fewer documents than events.
    assert 0 < report["documents_written_per_event"] < 1
    # The interpreter that ran it, as the numbers depend on its build.
    assert report["machine"]["python_build"]["executable"] == os.path.realpath(sys.executable)


@pytest.mark.slow
def test_times_the_batch_work_after_idle_waits(yoochoose_path: Path, tmp_path: Path) -> None:
    args = ("--limit", "1000", "--repeat", "3", "--idle-us", "2000")
    report = _report(yoochoose_path, tmp_path / "cpu.json", *args)
    assert report["idle_us"] == 2000
    best, runs = report["us_per_event"], report["us_per_event_runs"]
    assert set(best) == STAGES | {"build_after_idle"}
    assert len(runs["build"]) == len(runs["build_after_idle"]) == 3
    # The sleep itself is not timed: a run of 48 batches sleeps 96 ms, which
    # would add 96 us to every one of the 1,000 events (wake-ups cost the work
    # after them up to about 1.8x, some 20 us per event here).
    assert best["build_after_idle"] < best["build"] + 50
    # One ratio per alternated pair, sorted.
    ratios = report["build_after_idle_ratios"]
    assert len(ratios) == 3 and ratios == sorted(ratios) and all(r > 0 for r in ratios)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch", "0", "--batch and --repeat must be at least 1"),
        ("--idle-us", "-1", "--idle-us must not be negative"),
    ],
)
def test_rejects_bad_options(tmp_path: Path, option: str, value: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json"), option, value],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and message in done.stderr
