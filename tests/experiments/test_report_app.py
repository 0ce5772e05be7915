"""The experiment report's Hydra app (``configs/experiments/report.yaml``) and its argparse
CLI build the same config and write the same report; bad overrides exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from recsys.config import ConfigError, build
from recsys.config.hydra_app import CONFIG_DIR
from recsys.experiments.app import run_app
from recsys.experiments.cli import ReportConfig, build_parser, config_from_args, main
from recsys.experiments.simulate import SimulationConfig, simulate_tables

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "configs" / "experiments" / "example.yaml")


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report_app")
    exposures, pre = simulate_tables(replace(SimulationConfig(), units=4000, lift=0.05), 11,
                                     arms=("control", "explore"),
                                     experiment="explore_eps10")  # fmt: skip
    exposures.to_csv(folder / "exposures.csv", index=False)
    pre.to_csv(folder / "pre.csv", index=False)
    return folder


def test_the_config_file_builds_the_clis_config() -> None:
    import yaml

    raw = yaml.safe_load((CONFIG_DIR / "experiments" / "report.yaml").read_text())
    raw.pop("hydra")
    raw.update(data="d.csv", config="e.yaml", out="o")
    from_file = build(ReportConfig, raw, "report")
    args = build_parser().parse_args(["report", "--data", "d.csv", "--config", "e.yaml",
                                      "--out", "o"])  # fmt: skip
    assert from_file == config_from_args(args)
    for line in (CONFIG_DIR / "experiments" / "report.yaml").read_text().splitlines():
        if line and not line.startswith((" ", "#", "hydra")):
            assert "# " in line, line
    with pytest.raises(ConfigError, match=r"unknown key report\.looks"):
        build(ReportConfig, {**raw, "looks": 3}, "report")


def test_the_app_and_the_cli_write_the_same_report(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [f"data={tables / 'exposures.csv'}", f"pre={tables / 'pre.csv'}",
              f"config={EXAMPLE}", "progress=false"]  # fmt: skip
    assert run_app([*common, f"hydra.run.dir={tmp_path / 'hydra'}"]) == 0
    app_out = capsys.readouterr().out
    assert main(["report", "--data", str(tables / "exposures.csv"), "--pre",
                 str(tables / "pre.csv"), "--config", EXAMPLE, "--out", str(tmp_path / "cli"),
                 "--no-progress"]) == 0  # fmt: skip
    cli_out = capsys.readouterr().out
    # the same decision lines (the report paths differ)
    assert app_out.splitlines()[:-1] == cli_out.splitlines()[:-1]
    assert app_out.startswith("explore_eps10: ")
    for name in ("report.md", "lift.png", "sequential.png", "traffic.png"):
        assert (tmp_path / "hydra" / name).is_file()
    app_json = json.loads((tmp_path / "hydra" / "analysis.json").read_text())
    cli_json = json.loads((tmp_path / "cli" / "analysis.json").read_text())
    assert app_json == cli_json
    # an explicit out wins over Hydra's folder
    assert run_app([*common, f"out={tmp_path / 'explicit'}",
                    f"hydra.run.dir={tmp_path / 'hydra2'}"]) == 0  # fmt: skip
    assert (tmp_path / "explicit" / "report.md").is_file()
    assert not (tmp_path / "hydra2" / "report.md").exists()


def _app(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "recsys.experiments.app", f"hydra.run.dir={tmp_path / 'run'}",
         *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data=x.csv", f"config={EXAMPLE}", "alpha=0.1"), "Could not override 'alpha'"),
        (("data=x.csv", f"config={EXAMPLE}", "progress=maybe"), "report.progress"),
        ((f"config={EXAMPLE}",), "Missing mandatory value: data"),
        (("data=/nonexistent.csv", f"config={EXAMPLE}"), "/nonexistent.csv"),
        (("data=x.csv", "config=/nonexistent.yaml"), "/nonexistent.yaml"),
    ],
)
def test_a_bad_override_or_input_exits_2_with_one_message(
    tmp_path: Path, overrides: tuple[str, ...], message: str
) -> None:
    done = _app(tmp_path, *overrides)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
