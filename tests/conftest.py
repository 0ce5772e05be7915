"""Shared pytest set-up: dataset location, GPU skipping, and the real-time test kit.

The kit (``tests/events/rt_testkit.py``: redis-server helpers, event builders and the
``redis_url`` / ``store`` / ``yoochoose_path`` fixtures) is registered here once under the
name ``rt_testkit``, so test modules anywhere import it by name (pytest's importlib
mode puts no test folder on ``sys.path``).
"""

from __future__ import annotations

import os
import sys
from importlib import util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

if "rt_testkit" not in sys.modules:
    _spec = util.spec_from_file_location(
        "rt_testkit", Path(__file__).resolve().parent / "events" / "rt_testkit.py"
    )
    assert _spec is not None and _spec.loader is not None
    _kit = util.module_from_spec(_spec)
    sys.modules["rt_testkit"] = _kit
    _spec.loader.exec_module(_kit)

from rt_testkit import redis_url, store, yoochoose_path  # noqa: E402  (fixtures, shared)

__all__ = ["redis_url", "store", "yoochoose_path"]


def shared_data_dir() -> Path | None:
    """The folder with the real datasets (RECSYS_DATA_DIR), or None."""
    raw = os.environ.get("RECSYS_DATA_DIR")
    candidates = [Path(raw)] if raw else [REPO_ROOT.parent / "shared" / "datasets"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """RECSYS_DATA_DIR; tests that need real data skip with the reason if absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real datasets not found: set RECSYS_DATA_DIR to a folder holding ml-100k/")
    return d


@pytest.fixture(scope="session")
def ml100k_dir(data_dir: Path) -> Path:
    d = data_dir / "ml-100k"
    if not (d / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not found under {data_dir}")
    return d


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
