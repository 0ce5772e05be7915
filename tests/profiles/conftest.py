"""Loads the real-time test kit (tests/events/rt_testkit.py) and its fixtures."""

import sys
from importlib import util
from pathlib import Path

if "rt_testkit" not in sys.modules:
    _spec = util.spec_from_file_location(
        "rt_testkit", Path(__file__).resolve().parents[1] / "events" / "rt_testkit.py"
    )
    assert _spec is not None and _spec.loader is not None
    _kit = util.module_from_spec(_spec)
    sys.modules["rt_testkit"] = _kit
    _spec.loader.exec_module(_kit)

from rt_testkit import redis_url, store, yoochoose_path

__all__ = ["redis_url", "store", "yoochoose_path"]
