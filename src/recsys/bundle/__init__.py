"""The run bundle: what training hands to serving, in one checked folder.

* :mod:`recsys.bundle.layout` -- the file layout (the only module that names the
  bundle's files), :class:`RunBundle` (open and check) and :class:`BundleWriter`.
  Standard library only: serving opens bundles without torch.
* :mod:`recsys.bundle.writer` -- :func:`write_bundle`, training's last stage.
* :mod:`recsys.bundle.runtime_tables` -- the ``recommend`` model's tables.

Submodules load on first use, so ``from recsys.bundle import RunBundle`` does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BUNDLE_FORMAT": "recsys.bundle.layout",
    "BundleError": "recsys.bundle.layout",
    "BundleWriter": "recsys.bundle.layout",
    "RunBundle": "recsys.bundle.layout",
    "write_bundle": "recsys.bundle.writer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.bundle' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
