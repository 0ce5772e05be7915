"""Shared pytest set-up: dataset location and GPU skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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
