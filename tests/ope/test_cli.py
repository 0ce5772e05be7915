"""``python -m recsys.ope``: simulate a log, evaluate it, gate it; the Open Bandit sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.ope.cli import main


def test_simulate_then_evaluate_with_the_truth_and_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.csv"
    assert main(["simulate", "--out", str(log), "--rows", "4000", "--candidate", "far"]) == 0
    sim = capsys.readouterr().out
    truth = float(sim.split("true value of 'far' ")[1].split(",")[0])
    out = tmp_path / "estimates.json"
    rc = main(["evaluate", "--log", str(log), "--resamples", "100", "--truth", str(truth),
               "--gate", "dr", "--report-dir", str(tmp_path / "gate"), "--json", str(out),
               "--progress"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr()
    assert "| DR |" in printed.out and "rel. error vs truth" in printed.out
    assert "bootstrap" in printed.err  # the progress bar (reward model refitted per resample)
    data = json.loads(out.read_text())
    names = [e["estimator"] for e in data["estimates"]]
    assert names == ["DM", "IPS", "SNIPS", "DR", "switch-DR", "DRos"]
    dr = next(e for e in data["estimates"] if e["estimator"] == "DR")
    assert abs(dr["value"] - truth) / truth < 0.15
    gate = json.loads((tmp_path / "gate" / "promotion.json").read_text())
    assert gate["promote"] == (dr["lower"] > data["logged_mean_reward"])
    assert gate["current_value"] == pytest.approx(data["logged_mean_reward"])


def test_bad_input_exits_with_2_and_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log.csv"
    path.write_text("action,reward,pscore\n0,1,0.5\n1,0,0.5\n")
    assert main(["evaluate", "--log", str(path)]) == 2
    assert "no candidate policy" in capsys.readouterr().err
    path.write_text("action,reward,pscore,target_pscore\n0,1,0.5,0.2\n1,0,0.5,0.9\n")
    assert main(["evaluate", "--log", str(path), "--estimators", "dr"]) == 2
    assert "DR: needs the candidate's full action distribution" in capsys.readouterr().err
    assert main(["evaluate", "--log", str(path), "--estimators", "ips,snips",
                 "--resamples", "20"]) == 0  # fmt: skip
    assert "| SNIPS |" in capsys.readouterr().out


def test_open_bandit_from_the_command_line(open_bandit_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "obd.json"
    cmd = [sys.executable, "-m", "recsys.ope", "evaluate", "--open-bandit", "--behavior", "bts",
           "--data-dir", str(open_bandit_data_dir), "--resamples", "50",
           "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "random's CTR from bts's log" in done.stdout
    assert "on-policy (random's own log)" in done.stdout
    data = json.loads(out.read_text())
    assert data["candidate"] == "random" and data["rows"] == 10_000
