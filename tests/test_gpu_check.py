"""The GPU verification script in its CPU mode, on real MovieLens-100K."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


@pytest.fixture(scope="module")
def config(data_dir: Path) -> Any:
    cfg = gpu_check.GpuCheckConfig.make("cpu", quick=True, data_dir=data_dir)
    cfg.ranker_steps = 10
    cfg.synthetic_items = 20_000
    return cfg


def test_cpu_checks_pass_on_ml100k(config: Any, ml100k_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    only = [
        "environment",
        "ml100k_features",
        "ranker_train_local",
        "topk_vs_faiss_synthetic",
        "onnx_ranker",
        "faiss_gpu",
    ]
    # rows come in the script's order, which `only` follows
    results = {r.name: r for r in gpu_check.run_all(config, only, out)}
    assert list(results) == only
    for name in only[:-1]:
        assert results[name].status == "ok", (name, results[name].status, results[name].traceback)
    features = results["ml100k_features"].numbers
    assert features["interactions"] == 100_000
    assert features["train"] + features["test"] == 100_000
    ranker = results["ranker_train_local"].numbers
    assert ranker["steps"] == 10
    assert 0.5 < ranker["test_auc"] <= 1.0
    onnx_diffs = [v for k, v in results["onnx_ranker"].numbers.items() if k.startswith("max_abs")]
    assert onnx_diffs and max(onnx_diffs) < 1e-4
    topk = results["topk_vs_faiss_synthetic"].numbers
    assert topk["rows_unexplained_difference"] == 0
    assert topk["rows_same_set"] >= topk["rows"] - 2  # exact search on both sides
    # CPU FAISS has no GPU: reported, never an error
    assert not results["faiss_gpu"].status.startswith("failed")

    report = json.loads(out.read_text())
    assert [r["name"] for r in report["results"]] == only
    table = out.with_suffix(".md").read_text()
    assert "| ranker_train_local | ok |" in table


def test_a_failing_check_becomes_a_row(config: Any) -> None:
    def broken(ctx: Any) -> dict[str, Any]:
        raise ValueError("bad shape\nsecond line")

    def missing(ctx: Any) -> dict[str, Any]:
        raise gpu_check.Unavailable("no GPU here")

    ctx = gpu_check.Context(config)
    failed = gpu_check.run_check("broken", broken, ctx)
    assert failed.status == "failed: ValueError: bad shape"
    assert "ValueError" in failed.traceback
    assert gpu_check.run_check("missing", missing, ctx).status == "unavailable: no GPU here"


def test_checks_needing_earlier_results_say_so(config: Any) -> None:
    ctx = gpu_check.Context(config)  # nothing trained or loaded yet
    status = gpu_check.run_check("onnx_ranker", gpu_check.check_onnx_ranker, ctx).status
    assert status.startswith("unavailable: no trained ranker")


def test_unknown_check_names_are_refused(config: Any) -> None:
    with pytest.raises(ValueError, match="unknown checks"):
        gpu_check.run_all(config, ["no_such_check"])
