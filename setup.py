"""Build hook: with RECSYS_MYPYC=1 the modules listed under ``[tool.recsys] mypyc``
in pyproject.toml are compiled to C extensions with mypyc (a faster real-time
consumer; docs/realtime.md). Otherwise the package is pure Python.

    RECSYS_MYPYC=1 pip install --no-build-isolation --no-deps .   # needs mypy, a C compiler
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent

ext_modules = []
if os.environ.get("RECSYS_MYPYC") == "1":
    from mypyc.build import mypycify

    modules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["recsys"]["mypyc"]
    ext_modules = mypycify([f"src/{m}" for m in modules], opt_level="3")

setup(ext_modules=ext_modules)
