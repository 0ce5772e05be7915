"""Typed config dataclasses built from YAML mappings, with errors that name the key.

The one way the project turns config into typed objects: every config group
(``configs/<group>/<name>.yaml``: datasets, models, trainers, the index, the
aggregation) ends up in dataclasses through :func:`build`, which checks each key
against the dataclass's fields (an unknown key is an error that names it and lists
the known ones, so a typo never silently falls back to a default) and each value
against the field's type hint. Standard library only: every layer may use it, the
Triton runtime included.

Supported hints: ``bool``, ``int``, ``float``, ``str``, ``Any``, ``X | None``,
``Literal[...]``, ``tuple[X, ...]``, ``list[X]``, ``dict[str, X]`` /
``Mapping[str, X]`` and nested dataclasses. Booleans also accept the strings
``true/false/1/0/yes/no`` (values that come from environment variables, e.g.
``offline: ${oc.env:RECSYS_OFFLINE,false}``).

A ``null`` value for a field that cannot be None stands for its default (so a
YAML file can write an empty map as ``null`` and a Hydra override can replace it
whole: ``dataset.read.columns={uid: user_id}``).

Example:
    >>> @dataclass(frozen=True)
    ... class Scale:
    ...     min: float | None = None
    ...     max: float | None = None
    >>> build(Scale, {"min": 1, "max": 5}, "dataset.read.rating_scale")
    Scale(min=1.0, max=5.0)
    >>> build(Scale, {"mn": 1}, "dataset.read.rating_scale")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recsys.config.ConfigError: unknown key dataset.read.rating_scale.mn (known keys: ...)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar, Union


class ConfigError(ValueError):
    """A config is wrong: an unknown or missing key, or a value of the wrong type
    (the message names the key by its dotted path)."""


T = TypeVar("T")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def build(cls: type[T], raw: Any, where: str) -> T:
    """Builds dataclass ``cls`` from a mapping, checking keys and value types.

    Args:
        cls: a dataclass type; fields without a default are required keys.
        raw: a mapping (or None for all defaults, or an instance of ``cls``).
        where: the dotted config path of ``raw``, used in error messages
            (e.g. ``"dataset.read"``).

    Returns:
        The instance.

    Raises:
        ConfigError: ``raw`` is not a mapping, holds a key ``cls`` does not
            declare, lacks a required key, or a value has the wrong type.

    Example:
        >>> @dataclass(frozen=True)
        ... class Files:
        ...     ratings: str = "u.data"
        >>> build(Files, None, "dataset.read").ratings
        'u.data'
    """
    if isinstance(raw, cls):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    declared = {f.name: f for f in fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [str(k) for k in raw if k not in declared]
    if unknown:
        known = ", ".join(sorted(declared))
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known keys: {known})")
    hints = typing.get_type_hints(cls)
    kwargs = {
        str(k): coerce(hints[str(k)], v, f"{where}.{k}")
        for k, v in raw.items()
        # `key: null` for a field that cannot be None means "the default": YAML
        # configs write empty maps as null so Hydra can override them whole.
        if not (v is None and not _admits_none(hints[str(k)]) and _has_default(declared[str(k)]))
    }
    missing = [
        name
        for name, f in declared.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: required key {where}.{missing[0]} is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def coerce(hint: Any, value: Any, where: str) -> Any:
    """Checks ``value`` against a type hint and converts it where that is lossless.

    Args:
        hint: the field's resolved type hint.
        value: the YAML value.
        where: dotted config path for error messages.

    Returns:
        The value in the hinted type (ints for floats, tuples for lists, nested
        dataclasses built with :func:`build`).

    Raises:
        ConfigError: the value does not fit the hint.

    Example:
        >>> coerce(tuple[str, ...], ["a", "b"], "x")
        ('a', 'b')
        >>> coerce(bool, "false", "dataset.offline")
        False
    """
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(option, value, where)
            except ConfigError as err:
                errors.append(err)
        if len(options) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        choices = " | ".join(str(a) for a in args)
        raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
    if is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, where)
    if origin in (tuple, list):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_hint, value_hint = args if args else (Any, Any)
        return {
            coerce(key_hint, k, f"{where}"): coerce(value_hint, v, f"{where}.{k}")
            for k, v in value.items()
        }
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        # YAML reads `delimiter: 1` or `NA` unquoted fine, but `null`/`123` are
        # not strings; a number is accepted as its text (ids such as 2024).
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")


def _admits_none(hint: Any) -> bool:
    return hint is Any or (
        typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(hint)
    )


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict (tuples as lists), for reports and caches.

    Example:
        >>> @dataclass(frozen=True)
        ... class C:
        ...     cols: tuple[str, ...] = ("a",)
        >>> to_dict(C())
        {'cols': ['a']}
    """

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    result: dict[str, Any] = plain(config)
    return result


__all__ = ["ConfigError", "build", "coerce", "to_dict"]
