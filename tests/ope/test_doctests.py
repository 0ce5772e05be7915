"""The examples in the docstrings of recsys.ope run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import recsys.ope

MODULES = sorted(
    m.name
    for m in pkgutil.iter_modules(recsys.ope.__path__, "recsys.ope.")
    if m.name != "recsys.ope.__main__"
)


@pytest.mark.parametrize("name", ["recsys.ope", *MODULES])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
