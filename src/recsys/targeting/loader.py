"""Targeting rules from YAML, checked against the catalogue, with line:column errors.

A rules file::

    rules:
      - name: evening_comedy_on_mobile     # unique; [a-z][a-z0-9_]*
        priority: 10                       # int, higher applies first (default 0)
        when: "in_segment('comedy_fans') and device == 'mobile'"   # optional condition
        active:                            # optional time window
          from: 2026-12-01T00:00:00Z       # inclusive (ISO 8601; no zone = UTC)
          until: 2027-01-01T00:00:00Z      # exclusive
          hours: 18..23                    # local hours: a range or a list
          weekdays: [fri, sat]             # local weekdays: names or 0-6 (Monday = 0)
        boost: [{categories: [Comedy], weight: 1.0}, {items: [50], weight: 0.5}]
        bury: [{categories: [Horror], weight: 2.0}]      # a boost by -weight
        exclude: {items: [99], categories: [Documentary]}
        pool: {categories: [Comedy, Romance]}            # show only these
        pin: [{item: 50, position: 1}]                    # 1-based positions

Conditions are described in :mod:`recsys.targeting.conditions`; what the actions do and
how they combine in :mod:`recsys.runtime.targeting`. Every error, in the YAML or in a
condition, is a :class:`~recsys.segments.errors.RuleError` naming the file, line and
column; a rules file is loaded whole or not at all.

Example:
    >>> import numpy as np
    >>> from recsys.runtime.targeting import ItemCatalog
    >>> catalog = ItemCatalog.from_genres(np.array([10, 20]), [["Comedy"], ["Horror"]])
    >>> rules = load_rules_text("rules: [{name: fun, boost: [{categories: [Comedy], weight: 1}]}]",
    ...                         catalog)
    >>> [r.name for r in rules.rules]
    ['fun']
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recsys.runtime.targeting import ActiveWindow, ItemCatalog, Rule, RuleSet
from recsys.segments.errors import RuleError
from recsys.segments.loader import _locate
from recsys.targeting.conditions import compile_condition

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_KEYS = {
    "name",
    "description",
    "priority",
    "when",
    "active",
    "boost",
    "bury",
    "exclude",
    "pool",
    "pin",
}
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
MAX_PIN_POSITION = 1000


class _Doc:
    """The YAML text and its nodes, for located errors."""

    def __init__(self, text: str, source: str, catalog: ItemCatalog) -> None:
        self.text = text
        self.source = source
        self.catalog = catalog
        self.rule: str | None = None

    def error(self, node: yaml.Node, message: str) -> RuleError:
        mark = node.start_mark
        where = f"rule {self.rule!r}: " if self.rule else ""
        return RuleError(where + message, 0, mark.line + 1, mark.column + 1, self.source)

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, "expected a single value here")
        return yaml.SafeLoader("").construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, keys: Collection[str], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            if k.value not in keys:
                raise self.error(k, f"unknown key {k.value!r} in {what}; expected {sorted(keys)}")
            out[k.value] = v
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [node]  # one entry without the list brackets
        raise self.error(node, f"{what} must be a list")

    def number(self, node: yaml.Node, what: str, integer: bool = False) -> float:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(node, f"{what} must be a number, got {value!r}")
        if integer and not float(value).is_integer():
            raise self.error(node, f"{what} must be an integer, got {value!r}")
        if not np.isfinite(value):
            raise self.error(node, f"{what} must be finite")
        return float(value)

    def items(self, node: yaml.Node, what: str) -> np.ndarray:
        nodes = [node] if isinstance(node, yaml.ScalarNode) else self.sequence(node, what)
        raw = [self.scalar(n) for n in nodes]
        bad = [v for v in raw if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise self.error(node, f"{what}: item ids are integers, got {bad[:3]}")
        rows = self.catalog.rows(raw)
        missing = [v for v, r in zip(raw, rows.tolist(), strict=True) if r < 0]
        if missing:
            raise self.error(node, f"{what}: item(s) {missing[:5]} are not in the catalogue")
        return rows

    def categories(self, node: yaml.Node, what: str) -> np.ndarray:
        names = [str(self.scalar(n)) for n in self.sequence(node, what)]
        # case-insensitive: a rule says "Comedy" where a cleaned catalogue says "comedy"
        known: dict[str, list[np.ndarray]] = {}
        for category, members in self.catalog.categories.items():
            known.setdefault(category.casefold(), []).append(members)
        for name, n in zip(names, self.sequence(node, what), strict=True):
            if name.casefold() not in known:
                hint = ", ".join(sorted(self.catalog.categories)) or "the catalogue has none"
                raise self.error(n, f"{what}: unknown category {name!r}; known: {hint}")
        parts = [m for name in names for m in known[name.casefold()]]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def selection(self, node: yaml.Node, what: str) -> np.ndarray:
        fields = self.mapping(node, {"items", "categories"}, what)
        if not fields:
            raise self.error(node, f"{what} names no items or categories")
        parts = []
        if "items" in fields:
            parts.append(self.items(fields["items"], what))
        if "categories" in fields:
            parts.append(self.categories(fields["categories"], what))
        return np.unique(np.concatenate(parts))


def load_rules_text(
    text: str,
    catalog: ItemCatalog,
    source: str = "<rules>",
    segments: Collection[str] | None = None,
) -> RuleSet:
    """Parses, checks and compiles a rules document.

    Args:
        text: the YAML.
        catalog: the items and categories rules may name.
        source: file name for error messages.
        segments: the segment names conditions may use (None: any).

    Raises:
        RuleError: located at ``source:line:column``.
    """
    doc = _Doc(text, source, catalog)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RuleError(f"YAML: {e.problem or e}", 0, line, col, source) from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    if root is None:
        return RuleSet([], f"{source}@{digest}")
    top = doc.mapping(root, {"rules"}, "the rules file")
    if "rules" not in top:
        raise doc.error(root, "expected a 'rules:' list")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for node in doc.sequence(top["rules"], "'rules'"):
        doc.rule = None
        rule = _rule(doc, node, segments)
        if rule.name in seen:
            raise doc.error(node, f"rule {rule.name!r} is also defined at line {seen[rule.name]}")
        seen[rule.name] = node.start_mark.line + 1
        rules.append(rule)
    return RuleSet(rules, f"{source}@{digest}")


def load_rules(
    path: str | Path, catalog: ItemCatalog, segments: Collection[str] | None = None
) -> RuleSet:
    """Loads a rules file (see :func:`load_rules_text`)."""
    p = Path(path)
    return load_rules_text(p.read_text(encoding="utf-8"), catalog, str(p), segments)


def _rule(doc: _Doc, node: yaml.Node, segments: Collection[str] | None) -> Rule:
    fields = doc.mapping(node, _KEYS, "a rule")
    if "name" not in fields:
        raise doc.error(node, "rule without a name")
    name = str(doc.scalar(fields["name"]))
    if not _NAME_RE.match(name):
        raise doc.error(fields["name"], f"rule name {name!r} must match [a-z][a-z0-9_]*")
    doc.rule = name
    priority = int(doc.number(fields["priority"], "priority", True)) if "priority" in fields else 0
    condition, condition_text, uses = None, "", False
    if "when" in fields:
        when = fields["when"]
        text = doc.scalar(when)
        if not isinstance(text, str):
            raise doc.error(when, "'when' must be a condition in quotes")
        try:
            compiled = compile_condition(text, segments)
        except RuleError as e:
            line, col = _locate(doc.text, when, e.offset)
            message = f"rule {name!r}: {e.message}"
            raise RuleError(message, e.offset, line, col, doc.source) from None
        condition, condition_text, uses = compiled.fn, text, bool(compiled.segments)
    boosts: list[tuple[np.ndarray, float]] = []
    for key, sign in (("boost", 1.0), ("bury", -1.0)):
        for entry in doc.sequence(fields[key], key) if key in fields else []:
            parts = doc.mapping(entry, {"items", "categories", "weight"}, f"a {key}")
            if "weight" not in parts:
                raise doc.error(entry, f"a {key} needs a weight")
            weight = doc.number(parts["weight"], "weight")
            if weight < 0:
                raise doc.error(parts["weight"], f"a {key} weight is >= 0 (bury lowers items)")
            selected = {k: v for k, v in parts.items() if k != "weight"}
            if not selected:
                raise doc.error(entry, f"a {key} names no items or categories")
            chosen = [
                doc.items(v, key) if k == "items" else doc.categories(v, key)
                for k, v in selected.items()
            ]
            boosts.append((np.unique(np.concatenate(chosen)), sign * weight))
    exclude = doc.selection(fields["exclude"], "exclude") if "exclude" in fields else None
    pool = doc.selection(fields["pool"], "pool") if "pool" in fields else None
    if pool is not None and len(pool) == 0:
        raise doc.error(fields["pool"], "the pool is empty")
    pins: list[tuple[int, int]] = []
    for entry in doc.sequence(fields["pin"], "pin") if "pin" in fields else []:
        parts = doc.mapping(entry, {"item", "position"}, "a pin")
        if set(parts) != {"item", "position"}:
            raise doc.error(entry, "a pin needs an item and a position")
        [row] = doc.items(parts["item"], "pin").tolist()
        position = int(doc.number(parts["position"], "position", True))
        if not 1 <= position <= MAX_PIN_POSITION:
            raise doc.error(parts["position"], f"position must be in 1..{MAX_PIN_POSITION}")
        if any(p == position for _, p in pins):
            raise doc.error(parts["position"], f"two pins at position {position}")
        pins.append((int(row), position))
    if not (boosts or exclude is not None or pool is not None or pins):
        raise doc.error(node, "a rule needs an action: boost, bury, exclude, pool or pin")
    return Rule(
        name=name,
        priority=priority,
        condition=condition,
        condition_text=condition_text,
        window=_window(doc, fields["active"]) if "active" in fields else ActiveWindow(),
        boosts=tuple(boosts),
        exclude=exclude if exclude is not None else np.zeros(0, np.int64),
        pool=pool,
        pins=tuple(pins),
        uses_segments=uses,
    )


def _instant(doc: _Doc, node: yaml.Node, what: str) -> int:
    value = doc.scalar(node)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise doc.error(node, f"{what}: not an ISO 8601 time: {value!r}") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise doc.error(node, f"{what}: expected a time like 2026-12-01T00:00:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)  # noqa: UP017 (runs on Python 3.10)
    return int(value.timestamp() * 1000)


def _window(doc: _Doc, node: yaml.Node) -> ActiveWindow:
    fields = doc.mapping(node, {"from", "until", "hours", "weekdays"}, "active")
    start = _instant(doc, fields["from"], "from") if "from" in fields else None
    end = _instant(doc, fields["until"], "until") if "until" in fields else None
    if start is not None and end is not None and end <= start:
        raise doc.error(fields["until"], "'until' must be later than 'from'")
    hours = _numbers(doc, fields["hours"], "hours", 0, 23) if "hours" in fields else set()
    days = _numbers(doc, fields["weekdays"], "weekdays", 0, 6) if "weekdays" in fields else set()
    return ActiveWindow(start, end, frozenset(hours), frozenset(days))


def _numbers(doc: _Doc, node: yaml.Node, what: str, low: int, high: int) -> set[int]:
    """A list of values, or a range ``a..b`` (inclusive; it may wrap, e.g. ``22..2``)."""
    if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) and ".." in node.value:
        lo_text, hi_text = node.value.split("..", 1)
        lo, hi = (_day_or_int(doc, node, t.strip(), what) for t in (lo_text, hi_text))
        values = range(lo, hi + 1) if lo <= hi else [*range(lo, high + 1), *range(low, hi + 1)]
        out = set(values)
    else:
        out = {_day_or_int(doc, n, doc.scalar(n), what) for n in doc.sequence(node, what)}
    bad = sorted(v for v in out if not low <= v <= high)
    if bad:
        raise doc.error(node, f"{what} must be in {low}..{high}, got {bad}")
    return out


def _day_or_int(doc: _Doc, node: yaml.Node, value: Any, what: str) -> int:
    if what == "weekdays" and isinstance(value, str) and value.lower()[:3] in _WEEKDAYS:
        return _WEEKDAYS[value.lower()[:3]]
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise doc.error(node, f"{what}: expected numbers, got {value!r}") from None
    return number
