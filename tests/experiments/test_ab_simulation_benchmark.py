"""benchmarks/ab_simulation.py: a small run gives every study and a complete table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ab_simulation.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ab_simulation", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_small_run_writes_json_and_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load()
    assert bench.main(["--quick", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    for study in ("aa", "srm", "plan", "power", "sequential_aa", "sequential_ab"):
        assert study in result
    assert result["plan"]["units_cuped"] < result["plan"]["units_plain"]
    table = capsys.readouterr().out
    assert table.startswith("| check | simulated | result | target |")
    assert table.count("\n|") == 21  # the header's rule and 20 checks
    assert "CPU only" in table
