"""One experiment's analysis and decision, the report it writes, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.experiments.analysis import analyze
from recsys.experiments.cli import main
from recsys.experiments.config import AnalysisConfig
from recsys.experiments.decision import MetricEvidence, combine, decide_arm
from recsys.experiments.report import write_report
from recsys.experiments.simulate import SimulationConfig, simulate_tables
from recsys.runtime.experiments import Arm, Experiment

REPO = Path(__file__).resolve().parents[2]
DESIGN = Experiment("simulated", "l", 0, 9999, 1.0, (Arm("control", 1), Arm("treatment", 1)),
                    "l/simulated")  # fmt: skip


@pytest.fixture(scope="module")
def lifted() -> tuple[pd.DataFrame, pd.DataFrame]:
    return simulate_tables(SimulationConfig(units=160_000, lift=0.03), seed=71)


def test_a_true_lift_ships(lifted: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    exposures, pre = lifted
    config = AnalysisConfig(guardrails=("dwell",), planned_units=80_000, looks=10)
    a = analyze(exposures, DESIGN, config, pre)
    assert a.decision.verdict == "ship" and a.decision.arm == "treatment"
    ctr = a.result("ctr")
    assert ctr.cuped is not None and ctr.sequential is not None
    assert 0.01 < float(ctr.cuped.rel) < 0.05
    assert float(ctr.cuped.variance_reduction) > 0.2
    assert a.look_counts.shape == (10, 2) and np.all(np.diff(a.look_counts, axis=0) >= 0)
    assert not bool(a.srm.flagged)


def test_a_sample_ratio_mismatch_blocks_shipping(lifted: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    exposures, pre = lifted
    # lose a tenth of the treatment's units: a logging bug
    units = exposures.loc[exposures["arm"] == "treatment", "unit"].unique()
    lost = set(units[: len(units) // 10])
    broken = exposures[~exposures["unit"].isin(lost)]
    a = analyze(broken, DESIGN, AnalysisConfig(looks=3), pre)
    assert bool(a.srm.flagged)
    assert a.decision.verdict == "do not ship" and "sample ratio mismatch" in a.decision.reasons[0]


def test_small_data_keeps_running_and_no_times_waits_for_the_plan() -> None:
    exposures, pre = simulate_tables(SimulationConfig(units=3_000), seed=72)
    config = AnalysisConfig(planned_units=80_000, looks=5)
    assert analyze(exposures, DESIGN, config, pre).decision.verdict == "keep running"
    untimed = analyze(exposures.drop(columns="timestamp"), DESIGN, config, pre)
    assert untimed.decision.verdict == "keep running"
    assert untimed.result("ctr").sequential is None and "no sequential test" in untimed.notes[0]
    done = analyze(exposures.drop(columns="timestamp"), DESIGN, replace(config, planned_units=100))
    assert done.decision.verdict == "do not ship"  # plan reached, nothing significant


def test_decision_rules() -> None:
    good = MetricEvidence("ctr", True, 1, 0.001, 0.03)
    bad = MetricEvidence("dwell", True, -1, 0.001, -0.05)
    flat = MetricEvidence("ctr", False, 1, 0.4, 0.001)
    assert decide_arm("t", good, [bad], 10, None).verdict == "do not ship"  # guardrail
    assert decide_arm("t", replace(good, direction=-1), [], 10, None).verdict == "do not ship"
    assert decide_arm("t", flat, [], 10, 100).verdict == "keep running"
    assert decide_arm("t", flat, [], 100, 100).verdict == "do not ship"
    assert decide_arm("t", good, [], 10, 100, final=False).verdict == "keep running"
    ship_a = decide_arm("a", good, [], 10, None)
    ship_b = decide_arm("b", good, [], 10, None)
    assert combine([ship_a, ship_b], [0.01, 0.05]).arm == "b"  # the larger lift


def test_the_report_writes_markdown_plots_and_json(
    lifted: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    exposures, pre = lifted
    a = analyze(exposures, DESIGN, AnalysisConfig(looks=6), pre)
    report = write_report(a, tmp_path)
    text = report.read_text()
    assert "## Decision: **ship** (`treatment`)" in text
    for image in ("lift.png", "sequential.png", "traffic.png"):
        assert f"]({image})" in text
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert data["decision"]["verdict"] == "ship"
    assert {m["metric"] for m in data["metrics"]} == {"ctr", "conversion", "dwell"}
    assert len(data["metrics"][0]["sequential"]["p_values"]) == 6


def test_the_cli_reports_an_experiment_of_the_example_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["simulate", "--out", str(data), "--units", "20000", "--seed", "3",
                 "--arms", "control", "explore", "--experiment", "explore_eps10"]) == 0  # fmt: skip
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "recsys.experiments", "report",
         "--data", str(data / "exposures.csv"), "--pre", str(data / "pre.csv"),
         "--config", str(REPO / "configs/experiments/example.yaml"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("explore_eps10: ")
    assert "sequential looks" in result.stderr  # the progress bar
    assert (out / "report.md").exists() and (out / "sequential.png").exists()


def test_the_cli_names_bad_input_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ab.yaml"
    bad.write_text("layers:\n  - name: l\n    salt: 'a:b'\n")
    data = tmp_path / "x.csv"
    pd.DataFrame({"unit": ["1"], "arm": ["control"]}).to_csv(data, index=False)
    assert main(["report", "--data", str(data), "--config", str(bad), "--out", str(tmp_path)]) == 2
    assert f"{bad}:3:11: layer 'l': salt" in capsys.readouterr().err
    example = str(REPO / "configs/experiments/example.yaml")
    assert main(["report", "--data", str(data), "--config", example, "--out", str(tmp_path),
                 "--experiment", "explore_eps10"]) == 2  # fmt: skip
    assert "missing columns" in capsys.readouterr().err
