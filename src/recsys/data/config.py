"""Dataset configs through :func:`recsys.config.build`, with the data layer's error.

The same typed building as every other config group; a mistake in a dataset config
is a :class:`~recsys.data.frame.DataConfigError` (a :class:`recsys.config.ConfigError`
and a :class:`~recsys.data.frame.DataError`), so the main job reports it as a data
error.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Files:
    ...     ratings: str = "u.data"
    >>> build(Files, {"ratngs": "x"}, "dataset.read")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recsys.data.frame.DataConfigError: unknown key dataset.read.ratngs (known keys: ratings)
"""

from __future__ import annotations

from typing import Any, TypeVar

import recsys.config as typed
from recsys.config import ConfigError, coerce, to_dict
from recsys.data.frame import DataConfigError

T = TypeVar("T")


def build(cls: type[T], raw: Any, where: str) -> T:
    """:func:`recsys.config.build`, raising :class:`DataConfigError`."""
    try:
        return typed.build(cls, raw, where)
    except DataConfigError:
        raise
    except ConfigError as err:
        raise DataConfigError(str(err)) from err


__all__ = ["build", "coerce", "to_dict"]
