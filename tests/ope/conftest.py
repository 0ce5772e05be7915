"""Fixtures of the OPE tests: where the Open Bandit sample is (skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def open_bandit_data_dir() -> Path:
    """The datasets folder holding ``open-bandit-sample`` (``RECSYS_DATA_DIR``)."""
    raw = os.environ.get("RECSYS_DATA_DIR")
    base = Path(raw) if raw else REPO_ROOT.parent / "shared" / "datasets"
    sample = base / "open-bandit-sample"
    needed = [sample / p / "all" / "all.csv" for p in ("random", "bts")]
    needed.append(sample / "prior_bts.yaml")
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(
            f"Open Bandit sample not found ({', '.join(missing)}): set RECSYS_DATA_DIR to the "
            "datasets folder holding open-bandit-sample/"
        )
    return base
