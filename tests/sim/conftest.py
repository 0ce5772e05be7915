"""Fixtures of the simulator tests: the serving tests' small two-stage recommender."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

if "serving_kit" not in sys.modules:  # shared with tests/serving (pytest's importlib mode)
    _spec = importlib.util.spec_from_file_location(
        "serving_kit", Path(__file__).resolve().parents[1] / "serving" / "serving_kit.py"
    )
    assert _spec is not None and _spec.loader is not None
    _kit = importlib.util.module_from_spec(_spec)
    sys.modules["serving_kit"] = _kit
    _spec.loader.exec_module(_kit)

from serving_kit import small_two_stage


@pytest.fixture(scope="module")
def fresh_two_stage(ml100k_dir: Path) -> Any:
    """The serving tests' small seeded two-stage recommender on MovieLens-100K."""
    from recsys.runtime.aggregation import AggregationConfig

    return small_two_stage(
        ml100k_dir,
        cold_user=1,
        num_candidates=60,
        aggregation=AggregationConfig(
            ranker_weight=1.0, retrieval_weight=0.5, freshness_weight=0.2, mmr_lambda=0.7
        ),
    )
