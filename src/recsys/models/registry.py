"""Registries of model builders: a model is picked by name from its config.

* retrieval models: ``configs/model/<name>.yaml`` holds ``name: <registered name>``
  and the model's keys; :func:`build_retrieval_model` builds it. The two-tower model
  is ``two_tower``; ``mf`` is matrix factorization on TorchRec embeddings.
* ranker architectures: ``configs/ranker/<name>.yaml``'s ``model.arch`` picks the
  interaction of the DLRM-family ranker (``dlrm``, ``dlrm_dcn``).

A builder registers itself with a decorator in its own module, and every module of
the :mod:`recsys.models` package is imported on the first lookup, so a new model is
new files only: its module and its config.

Example:
    >>> import recsys.models.registry as registry
    >>> "two_tower" in registry.retrieval_models()
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from recsys.features.schema import FeatureSchema
    from recsys.models.retrieval import RetrievalModel

RetrievalBuilder = Callable[["Mapping[str, Any]", "FeatureSchema", "Mapping[str, int]"],
                            "RetrievalModel"]  # fmt: skip
"""``(model config, schema, table rows per feature) -> model``."""

RankerArchBuilder = Callable[..., "nn.Module"]
"""``(embedding bag collection, number of dense inputs, RankerConfig, dense_device=None)
-> a DLRM-family module`` (TorchRec's DLRM interface: dense and sparse archs, over arch)."""

_RETRIEVAL: dict[str, RetrievalBuilder] = {}
_LABELS: dict[str, str] = {}
_RANKER_ARCHS: dict[str, RankerArchBuilder] = {}
_discovered = False
F = TypeVar("F", bound=Callable[..., Any])


class UnknownModelError(ValueError):
    """A config names a model that nothing registered."""


def _discover() -> None:
    """Imports every module of :mod:`recsys.models` once (their builders register)."""
    global _discovered
    if _discovered:
        return
    import recsys.models as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _discovered = True


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[F], F]:
    def decorate(builder: F) -> F:
        if name in table and table[name] is not builder:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = builder
        return builder

    return decorate


def register_retrieval_model(name: str, label: str | None = None) -> Callable[[F], F]:
    """Registers a retrieval-model builder under ``name`` (a decorator).

    Args:
        name: the config's ``model.name``.
        label: the model's name in results tables (default: ``name``).
    """
    _LABELS[name] = label or name
    return _register(_RETRIEVAL, "retrieval model", name)


def retrieval_label(name: str) -> str:
    """The results-table name of retrieval model ``name`` (e.g. ``Two-tower``)."""
    _discover()
    return _LABELS.get(name, name)


def register_ranker_arch(name: str) -> Callable[[F], F]:
    """Registers a ranker-architecture builder under ``name`` (a decorator)."""
    return _register(_RANKER_ARCHS, "ranker architecture", name)


def retrieval_models() -> list[str]:
    """The registered retrieval-model names."""
    _discover()
    return sorted(_RETRIEVAL)


def ranker_archs() -> list[str]:
    """The registered ranker-architecture names."""
    _discover()
    return sorted(_RANKER_ARCHS)


def build_retrieval_model(
    config: Mapping[str, Any], schema: FeatureSchema, num_embeddings: Mapping[str, int]
) -> RetrievalModel:
    """Builds the retrieval model that ``config["name"]`` names.

    Args:
        config: the ``model`` config group (``name`` plus the model's own keys).
        schema: the features the model may read.
        num_embeddings: table rows per sparse feature (vocabulary sizes).

    Raises:
        UnknownModelError: no ``name``, or a name nothing registered (the known ones
            are listed).
    """
    name = config.get("name")
    if not name:
        raise UnknownModelError(f"the model config has no `name:` key; one of {retrieval_models()}")
    _discover()
    builder = _RETRIEVAL.get(str(name))
    if builder is None:
        raise UnknownModelError(f"unknown retrieval model {name!r}; known: {retrieval_models()}")
    rest = {k: v for k, v in config.items() if k not in ("name", "exclude_features")}
    return builder(rest, model_schema(schema, config.get("exclude_features")), num_embeddings)


def model_schema(schema: FeatureSchema, exclude: Any) -> FeatureSchema:
    """The schema minus the features a model config leaves out (``exclude_features``).

    Raises:
        UnknownModelError: ``exclude`` names a feature the schema lacks.
    """
    names = list(exclude or [])
    unknown = [name for name in names if name not in schema]
    if unknown:
        raise UnknownModelError(f"exclude_features names unknown features {unknown}")
    return schema.select([f.name for f in schema if f.name not in names])


def ranker_arch(name: str) -> RankerArchBuilder:
    """The ranker-architecture builder registered as ``name``."""
    _discover()
    builder = _RANKER_ARCHS.get(name)
    if builder is None:
        raise UnknownModelError(f"unknown ranker arch {name!r}; known: {ranker_archs()}")
    return builder
