"""The package's layers import downwards only (data -> features -> models -> ...)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "recsys"

# Each layer with the layers it may import (its own included).
ALLOWED: dict[str, set[str]] = {
    # typed config building (standard library only): the base every layer stands on
    "config": {"config"},
    "data": {"data"},
    "features": {"data", "features"},
    "models": {"data", "features", "models"},
    "training": {"data", "features", "models", "training", "eval"},
    "eval": {"data", "features", "models", "eval"},
    "index": {"data", "features", "index"},
    "export": {"data", "features", "models", "export"},
    # what Triton's python backend runs: numpy only at module level; the live profile
    # store (features, events, profiles) is opened lazily (tests/runtime/test_boundary.py)
    "runtime": {"runtime", "features", "events", "profiles"},
    "recommend": {
        "data",
        "features",
        "models",
        "eval",
        "training",
        "index",
        "runtime",
        "recommend",
    },
    "serving": {
        "data",
        "features",
        "models",
        "index",
        "export",
        "serving",
        "profiles",
        "events",  # the profile store the recommend entry point reads
        "recommend",
        "runtime",
        "bundle",  # serving reads run bundles
        "targeting",  # build-repo checks a rules file; recommend loads it
        "experiments",  # build-repo checks an A/B tests file; recommend loads it
        "bandits",  # a policy bandit's state file
        "segments",
        "httpserver",  # the recommend HTTP gateway
    },
    # training's last stage (export + the runtime tables); serving opens bundles
    "bundle": {"data", "features", "models", "index", "export", "recommend", "runtime", "bundle"},
    # events check a context with the request context's rules (recsys.runtime.context)
    "events": {"data", "features", "runtime", "events", "httpserver"},
    "profiles": {"data", "features", "events", "profiles"},
    "segments": {"data", "features", "events", "profiles", "segments"},
    "privacy": {"data", "features", "events", "profiles", "segments", "privacy"},
    # the user simulator: asks the served model (or its in-process twin), sends events
    "sim": {
        "data",
        "features",
        "events",
        "profiles",
        "segments",
        "runtime",
        "serving",
        "bandits",
        "experiments",
        "sim",
    },
    # contextual bandits: numpy models; the online update reads the event stream
    "bandits": {"data", "features", "events", "runtime", "bandits"},
    # targeting rules: conditions in the segment language, compiled for the runtime
    "targeting": {"data", "features", "events", "profiles", "segments", "runtime", "targeting"},
    # A/B tests: YAML loading and analysis over the runtime's assignment
    "experiments": {"runtime", "experiments"},
    # the hardened uvicorn protocol of the HTTP endpoints (collector, gateway)
    "httpserver": {"httpserver"},
    # off-policy evaluation: logged bandit feedback, from the exposure log and attribution;
    # a policy bandit's choices evaluated with its state (bandits), the store opened by URL
    "ope": {"events", "runtime", "bandits", "ope"},
}


# What every layer may import: typed config building.
BASE = {"config"}


def _recsys_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "recsys" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_layers_import_downwards_only() -> None:
    violations = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if len(rel.parts) < 2:
            continue  # top-level modules (cli) may use everything
        layer = rel.parts[0]
        allowed = ALLOWED.get(layer)
        assert allowed is not None, f"package recsys.{layer} has no entry in the layer table"
        for imported in _recsys_imports(path) - allowed - BASE:
            violations.append(f"{rel} imports recsys.{imported}")
    assert not violations, "upward imports:\n" + "\n".join(violations)
