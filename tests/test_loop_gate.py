"""The whole-loop benchmark (log -> learn -> OPE gate -> A/B), on tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "loop_gate.py"


@pytest.mark.slow
def test_the_gate_decides_from_its_numbers_and_the_ab_follows_a_promotion(
    tmp_path: Path, ml100k_dir: Path
) -> None:
    out = tmp_path / "out"
    # 60 users, about 17 visits each: the static list's fatigue shows in the log
    command = [sys.executable, str(SCRIPT), "--seeds", "0", "--log-visits", "1000",
               "--users", "60", "--resamples", "100", "--min-ab-visits", "600",
               "--max-ab-visits", "600", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "RECSYS_DATA_DIR": str(ml100k_dir.parent)}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    payload: dict[str, Any] = json.loads((out / "loop_gate.json").read_text())
    [result] = payload["results"]
    phase1 = result["phase1"]
    # every visit's exposure reached the store with the bandit's choice
    assert phase1["visits"] == phase1["logged_exposures"] == 1000
    assert sum(a["visits"] for a in phase1["arms"].values()) == 1000
    assert result["candidate_updates"] == 1000
    ope = result["ope"]
    gate = ope["gate_estimate"]
    assert gate["lower"] <= gate["value"] <= gate["upper"]
    # the decision is the rule: promote exactly when the lower bound beats the current value
    assert ope["promote"] == (gate["lower"] > ope["current_value"])
    bad = result["bad_candidate"]
    assert bad["promote"] == (bad["estimate"]["lower"] > ope["current_value"])
    report = json.loads((out / "seed0" / "gate_candidate" / "promotion.json").read_text())
    assert bool(report["promote"]) == ope["promote"]
    assert ope["promote"], ope["reason"]  # the random slates beat the repeated static list
    ab = result["ab"]
    assert ab["visits"] == 600
    assert sum(a["visits"] for a in ab["arms"].values()) == 600
    assert set(ab["arms"]) == {"control", "candidate"}
    assert ab["lift_low"] <= ab["lift"] <= ab["lift_high"] and 0 <= ab["srm_p"] <= 1
    # the simulator's truth agrees with the direction the A/B measured
    assert ab["true_lift"] > 0 and ab["lift"] > 0
    assert (out / "seed0" / "ab" / "report.md").is_file()
