"""The simulation's Hydra app (``configs/sim/run.yaml``) and its argparse CLI build the
same config and give the same run; bad overrides exit 2 with one message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recsys.config import ConfigError
from recsys.config.hydra_app import CONFIG_DIR
from recsys.serving.repository import build_repository
from recsys.sim.__main__ import _parser, config_from_args
from recsys.sim.__main__ import main as cli_main
from recsys.sim.app import run_app
from recsys.sim.run import SimRunConfig, config_from_mapping

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repository(fresh_two_stage: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sim_app")
    root = tmp / "repository"
    build_repository(fresh_two_stage.bundle(tmp / "bundle"), root)
    return root


def test_the_config_file_builds_the_clis_default_config() -> None:
    import yaml

    raw = yaml.safe_load((CONFIG_DIR / "sim" / "run.yaml").read_text())
    raw.pop("hydra")
    raw["repository"] = "repo"
    raw["data_dir"] = "data"
    from_file = config_from_mapping(raw)
    from_flags = config_from_args(
        _parser().parse_args(["run", "--repository", "repo", "--data-dir", "data"])
    )
    assert from_file == from_flags
    # every key of the file is annotated with its type and meaning
    for line in (CONFIG_DIR / "sim" / "run.yaml").read_text().splitlines():
        if line and not line.startswith((" ", "#", "hydra")):
            assert "# " in line, line
    with pytest.raises(ConfigError, match=r"unknown key sim\.stepz"):
        config_from_mapping({"repository": "r", "stepz": 3})
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        SimRunConfig(repository="r", steps=0)


def test_the_app_and_the_cli_give_the_same_run(
    repository: Path, ml100k_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(ml100k_dir.parent)
    status = run_app([f"repository={repository}", "mode=in-process", "steps=30", "users=12",
                      "seed=3", "progress=false", f"data_dir={data}",
                      f"hydra.run.dir={tmp_path / 'hydra'}"])  # fmt: skip
    assert status == 0
    app_steps = (tmp_path / "hydra" / "steps.jsonl").read_text().splitlines()
    app_summary = json.loads((tmp_path / "hydra" / "summary.json").read_text())
    assert (tmp_path / "hydra" / ".hydra" / "overrides.yaml").is_file()
    assert len(app_steps) == 30 and app_summary["visits"] == 30.0
    assert app_summary["config"]["seed"] == 3 and app_summary["mode"] == "in-process"
    cli_out = tmp_path / "cli"
    assert cli_main(["run", "--repository", str(repository), "--mode", "in-process",
                     "--steps", "30", "--users", "12", "--seed", "3", "--no-progress",
                     "--data-dir", data, "--out", str(cli_out)]) == 0  # fmt: skip
    cli_steps = (cli_out / "steps.jsonl").read_text().splitlines()
    # the same visits, lists and reactions (request ids are random per run)
    drop = ("request_id",)

    def strip(lines: list[str]) -> list[dict[str, Any]]:
        return [{k: v for k, v in json.loads(s).items() if k not in drop} for s in lines]

    assert strip(app_steps) == strip(cli_steps)
    assert json.loads((cli_out / "summary.json").read_text()) == app_summary
    capsys.readouterr()


def _app(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-m", "recsys.sim.app", f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("repository=r", "stepz=3"), "Could not override 'stepz'"),
        (("repository=r", "steps=many"), "sim.steps: expected an integer, got 'many'"),
        (("repository=r", "mode=remote"), "sim.mode"),
        (("steps=3",), "Missing mandatory value: repository"),
        (("repository=r", "data_dir=/nonexistent"), "MovieLens-100K not found"),
    ],
)
def test_a_bad_override_exits_2_with_one_message(
    tmp_path: Path, overrides: tuple[str, ...], message: str
) -> None:
    done = _app(tmp_path, *overrides)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
