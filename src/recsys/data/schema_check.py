"""Does a feature schema fit a dataset? Checked before any feature is built.

The feature schema follows the dataset: ML-100K has demographics, the
``ratings.csv`` layout of ML-20M+ and a plain interactions table do not. A
schema feature whose column the data lacks would otherwise fail deep inside
the feature build (or, worse, become an all-missing feature); here it is one
:class:`~recsys.data.frame.SchemaMismatchError` that names each such feature
and column and says how to fix it: which schema files fit this dataset, or
which features to drop from the one configured.

The data layer does not know how the feature layer derives columns (e.g.
``age_bucket`` from ``users.age``); the caller passes that knowledge in
(``derived`` and ``generated``), so this module stays below the features layer.

Example:
    >>> needs = [FeatureNeed("user_age", "user", "age_bucket")]
    >>> check_schema(data, needs, schema_file="configs/schema/ml100k.yaml",
    ...              derived={"age_bucket": ("users", "age")})  # doctest: +SKIP
    Traceback (most recent call last):
    SchemaMismatchError: feature schema configs/schema/ml100k.yaml does not fit ...
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recsys.data.frame import ITEM, USER, InteractionData, SchemaMismatchError

#: Where each role's features are read from.
ROLE_TABLE = {"user": "users", "item": "items", "context": "interactions"}


@dataclass(frozen=True)
class FeatureNeed:
    """What one schema feature reads.

    Attributes:
        name: the feature name.
        role: ``user``, ``item`` or ``context``.
        source: the column it is built from.
        kind: ``categorical``, ``multi_hot``, ``sequence`` or ``dense``.
        max_len: values kept per example (multi-valued features).
    """

    name: str
    role: str
    source: str
    kind: str = "categorical"
    max_len: int = 1


def available_columns(
    data: InteractionData,
    derived: Mapping[str, tuple[str, str]],
    generated: Mapping[str, Collection[str]],
) -> dict[str, set[str]]:
    """The columns each role's features can read from ``data``.

    Args:
        data: the loaded dataset.
        derived: column -> (table, column it is made from), e.g.
            ``{"age_bucket": ("users", "age")}``; available when the base is.
        generated: role -> columns the feature build always makes (ids,
            recent items, hour, weekday, popularity).

    Returns:
        ``{"user": {...}, "item": {...}, "context": {...}}``.
    """
    tables = {
        "users": set() if data.users is None else {str(c) for c in data.users.columns},
        "items": set() if data.items is None else {str(c) for c in data.items.columns},
        "interactions": {str(c) for c in data.interactions.columns},
    }
    out: dict[str, set[str]] = {}
    for role, table in ROLE_TABLE.items():
        columns = set(tables[table]) | set(generated.get(role, ()))
        columns |= {USER} if role == "user" else {ITEM} if role == "item" else set()
        for column, (base_table, base) in derived.items():
            if base_table == table and base in tables[table]:
                columns.add(column)
        out[role] = columns
    return out


def _why(need: FeatureNeed, data: InteractionData, derived: Mapping[str, tuple[str, str]]) -> str:
    table = ROLE_TABLE.get(need.role, "interactions")
    source_table, column = derived.get(need.source, (table, need.source))
    made = f" (made from {source_table}.{column})" if need.source in derived else ""
    present = getattr(data, source_table, None) if source_table != "interactions" else True
    if present is None:
        return (
            f"feature {need.name} ({need.role}) reads column {need.source!r}{made}, but "
            f"{data.name} has no {source_table} table"
        )
    return (
        f"feature {need.name} ({need.role}) reads column {need.source!r}{made}, but "
        f"{data.name}'s {source_table} table has no column {column!r}"
    )


def unmet(
    needs: Sequence[FeatureNeed],
    available: Mapping[str, Collection[str]],
) -> list[FeatureNeed]:
    """The features whose source column is not available for their role."""
    return [n for n in needs if n.source not in available.get(n.role, ())]


def check_schema(
    data: InteractionData,
    needs: Sequence[FeatureNeed],
    *,
    schema_file: str,
    derived: Mapping[str, tuple[str, str]] | None = None,
    generated: Mapping[str, Collection[str]] | None = None,
    alternatives: Mapping[str, Sequence[FeatureNeed]] | None = None,
) -> list[str]:
    """Checks that every feature's column exists; reports multi-valued truncation.

    Args:
        data: the loaded (cleaned) dataset.
        needs: the schema's features.
        schema_file: the configured schema file (named in the message).
        derived: columns the feature build derives, with their base columns.
        generated: role -> columns the feature build always makes.
        alternatives: other schema files and their features; those that fit
            are suggested in the error.

    Returns:
        Notes to show the user (e.g. an item feature keeps fewer values than
        some items have); empty when there is nothing to say.

    Raises:
        SchemaMismatchError: a feature reads a column the data lacks; the
            message names every such feature and column and the fix.

    Example:
        >>> notes = check_schema(data, needs, schema_file="configs/schema/x.yaml")  # doctest: +SKIP
    """
    derived = dict(derived or {})
    generated = dict(generated or {})
    available = available_columns(data, derived, generated)
    missing = unmet(needs, available)
    if missing:
        lines = [f"  - {_why(n, data, derived)}" for n in missing]
        # The schemas that fit, the one using the most of the data first.
        fitting = [
            path
            for path, other in sorted(
                (alternatives or {}).items(), key=lambda kv: (-len(kv[1]), kv[0])
            )
            if path != schema_file and not unmet(other, available)
        ]
        fixes = []
        if fitting:
            fixes.append(
                "use a schema written for this data: "
                + " or ".join(f"dataset.schema={path}" for path in fitting)
            )
        names = ", ".join(n.name for n in missing)
        fixes.append(f"drop the feature(s) {names} from {schema_file}")
        raise SchemaMismatchError(
            f"feature schema {schema_file} does not fit dataset {data.name}:\n"
            + "\n".join(lines)
            + "\nTo fix: "
            + "; or ".join(fixes)
            + "."
        )
    return truncation_notes(data, needs)


def truncation_notes(data: InteractionData, needs: Sequence[FeatureNeed]) -> list[str]:
    """Multi-valued item/user attributes with more values than the feature keeps."""
    notes: list[str] = []
    for need in needs:
        if need.kind != "multi_hot":
            continue
        table = data.items if need.role == "item" else data.users
        if table is None or need.source not in table.columns:
            continue
        lengths = table[need.source].map(
            lambda v: len(v) if isinstance(v, list | tuple | np.ndarray) else 0
        )
        longer = int((lengths > need.max_len).sum())
        if longer:
            notes.append(
                f"feature {need.name} keeps {need.max_len} values per example: "
                f"{longer:,} of {len(table):,} rows have more (up to {int(lengths.max())}); "
                "raise its max_len in the schema to keep them all"
            )
    return notes


__all__ = ["FeatureNeed", "available_columns", "check_schema", "truncation_notes", "unmet"]
