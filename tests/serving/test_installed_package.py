"""An installed wheel builds a repository from a bundle and serves it, outside the checkout.

The package is built as a wheel, installed into a fresh virtual environment whose
other packages (numpy, FAISS, onnxruntime, tritonclient, pytriton, ...) come from this
environment's site-packages through a ``.pth`` line (no download; the checkout's
editable install is not visible there). From a folder outside the checkout, the
installed ``recsys`` builds the Triton repository from a run bundle (its templates
and the local onnxruntime stand-in come from the installed package data), serves it
with ``tritonserver`` and answers the bundle's expected lists over gRPC.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.triton]

SERVE_AND_ASK = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import recsys
    from recsys.bundle import layout
    from recsys.bundle.layout import RunBundle
    from recsys.serving.recommend_client import RecommendClient
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    bundle, repo = RunBundle.open(sys.argv[1]), Path(sys.argv[2])
    expected = bundle.read_json(layout.EXPECTED)
    config = TritonServerConfig(model_repository=repo, model_control_mode="explicit",
                                load_models=("*",), startup_timeout_s=240)
    served = {}
    with LocalTritonServer(config) as server, RecommendClient(server.grpc_url) as client:
        for user in expected["lists"]:
            rec = client.recommend(int(user), expected["k"])
            served[user] = [[int(i), float(s)] for i, s in rec.pairs()]
    print(json.dumps({"recsys": recsys.__file__, "served": served}))
    """
)


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_an_installed_wheel_builds_and_serves_a_bundle(
    fresh_two_stage: Any, tmp_path: Path
) -> None:
    from serving_kit import assert_same_ranking

    bundle = fresh_two_stage.bundle(tmp_path / "bundle")
    # a copy of the sources: building in the checkout would leave build/ behind
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(dist), str(source)], tmp_path)  # fmt: skip
    (wheel,) = dist.glob("recsys-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     tmp_path).strip())  # fmt: skip
    # the other packages from this environment; its .pth files (the editable
    # install of the checkout among them) are not processed from a .pth line
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)], tmp_path)  # fmt: skip

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    repo = outside / "repository"
    _run([str(python), "-m", "recsys.serving.cli", "build-repo", "--bundle", str(bundle.root),
          "--out", str(repo)], outside)  # fmt: skip
    assert (repo / "recommend" / "1" / "model.py").is_file()
    (outside / "ask.py").write_text(SERVE_AND_ASK)
    report = json.loads(
        _run([str(python), "ask.py", str(bundle.root), str(repo)], outside).splitlines()[-1]
    )
    assert report["recsys"].startswith(str(site)), report["recsys"]  # the installed package
    expected = bundle.read_json("checks/expected.json")
    assert set(report["served"]) == set(expected["lists"])
    for user, pairs in expected["lists"].items():
        got = report["served"][user]
        assert_same_ranking([i for i, _ in got], [s for _, s in got],
                            [int(i) for i, _ in pairs], [s for _, s in pairs],
                            what=f"user {user}")  # fmt: skip
