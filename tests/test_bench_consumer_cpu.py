"""The in-process consumer CPU benchmark, on a slice of YOOCHOOSE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_consumer_cpu.py"
STAGES = {"parse", "validate", "apply", "segments", "documents", "build", "commit_args"}


@pytest.mark.slow
def test_reports_every_stage_per_event(yoochoose_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    env = {**os.environ, "RECSYS_DATA_DIR": str(yoochoose_path.parents[1])}
    args = ["--out", str(out), "--limit", "3000", "--batch", "21", "--repeat", "2"]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, env=env, cwd=REPO)
    report = json.loads(out.read_text())
    assert report["events"] == 3000 and report["batch"] == 21
    best = report["us_per_event"]
    assert set(best) == STAGES and all(v > 0 for v in best.values())
    # The batch computation does all the single stages, so it costs more than any one.
    assert best["build"] > max(best[s] for s in ("parse", "validate", "apply", "segments"))
    assert all(len(runs) == 2 for runs in report["us_per_event_runs"].values())
    # Consecutive events of a session share a batch: fewer documents than events.
    assert 0 < report["documents_written_per_event"] < 1


def test_rejects_an_empty_batch(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json"), "--batch", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and "--batch and --repeat must be at least 1" in done.stderr
