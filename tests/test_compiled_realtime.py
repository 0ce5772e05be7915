"""The mypyc-compiled real-time modules (``RECSYS_MYPYC=1``) compile and pass the
real-time tests: compiled code enforces type annotations at run time, so a
change that is fine in Python can break the compiled build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["recsys"]["mypyc"]
# The tests of the layers the compiled modules serve.
SUITES = ["tests/events", "tests/profiles", "tests/segments", "tests/privacy"]


@pytest.mark.slow
def test_compiled_modules_pass_the_realtime_tests(tmp_path: Path) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    build = subprocess.run(
        [sys.executable, "-m", "mypyc", *MODULES],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]

    env = {**os.environ, "PYTHONPATH": str(src)}
    probe = (
        "import importlib, json, sys; from recsys.python_build import describe; "
        "[importlib.import_module(m) for m in sys.argv[1:]]; print(json.dumps(describe()))"
    )
    names = [m.removesuffix(".py").replace("/", ".") for m in MODULES]
    loaded = subprocess.run(
        [sys.executable, "-c", probe, *names],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(loaded)["recsys_compiled"] == sorted(names)

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
