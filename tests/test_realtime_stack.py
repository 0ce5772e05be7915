"""The real-time service installs and runs without the training stack
(``RECSYS_STACK=realtime``, ``requirements/realtime.txt``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
REQS = ROOT / "requirements"
# The layers a real-time deployment runs, and its command.
REALTIME = ("recsys.events", "recsys.profiles", "recsys.segments", "recsys.privacy")
# Never in the real-time stack.
TRAINING_STACK = ("torch", "torchrec", "fbgemm_gpu", "faiss", "onnxruntime", "hydra", "wandb")

# Imports every module of the real-time layers and runs one command with only
# the allowed third-party modules importable (as in a venv that holds nothing
# else: optional imports fall back, required ones fail).
_PROBE = """
import importlib, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not part of the real-time stack")
        return None

sys.meta_path.insert(0, Block())
for pkg in sys.argv[2].split(","):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        importlib.import_module(info.name)
from recsys.cli import main
sys.exit(main(["realtime", "--sqlite", sys.argv[3], "stats"]))
"""


def _names(path: Path) -> dict[str, Requirement]:
    """Requirements of a file, by canonical name (options and comments left out)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def _closure(names: set[str]) -> set[str]:
    """``names`` and what they require on this interpreter, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_realtime_layers_run_with_only_the_realtime_requirements(tmp_path: Path) -> None:
    allowed = _closure(set(_names(REQS / "realtime.txt")))
    assert not allowed & {canonicalize_name(m) for m in TRAINING_STACK}
    blocked = sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if module != "recsys" and not {canonicalize_name(d) for d in dists} & allowed
    )
    assert set(TRAINING_STACK) <= set(blocked)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(blocked), ",".join(REALTIME), str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["stream"]["length"] == 0


def test_realtime_requirements_take_their_versions_from_common() -> None:
    text = (REQS / "realtime.txt").read_text()
    assert re.search(r"^-c common\.txt$", text, re.M)
    common = _names(REQS / "common.txt")
    for name, req in _names(REQS / "realtime.txt").items():
        if req.marker is not None:  # interpreter-specific extras carry their own pin
            assert str(req.specifier).startswith("=="), req
            continue
        assert not req.specifier, f"{name}: versions belong in common.txt"
        assert name in common, f"{name} is not pinned in requirements/common.txt"
