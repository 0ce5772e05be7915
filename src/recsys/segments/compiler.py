"""Type-checking and compiling rules into Python functions.

Functions:

========================================  =====  ========================================
call                                      type   meaning
========================================  =====  ========================================
``count(type, window)``                   num    events of ``type`` in the window (exact)
``count(type)``                           num    lifetime events of ``type``
``ever(type)`` / ``ever(type, "cat")``    bool   any event of ``type`` (in category)
``ever_purchased("cat")``                 bool   ``ever(purchase, "cat")``
``affinity("cat")``                       num    decayed category affinity now
``exists(feature)``                       bool   the feature has a value
========================================  =====  ========================================

``type`` is an event type name or ``any``; ``window`` one of the configured
windows (``1h``, ``24h``, ``7d``, ``30d``). Errors (unknown feature, unknown
event type or window, wrong argument, type mismatch) raise :class:`RuleError`
at the offending offset.

A checked rule becomes the source of one Python function over an
:class:`~recsys.segments.catalog.Env`, compiled once: rules run on every event,
and one flat expression costs a fraction of a tree of closures. Only names
from the catalog, ``repr`` of literals and objects bound in the function's
namespace reach the generated source, never rule text. A missing value
(None) makes every comparison with it false, exactly as written in
:func:`_between` and the cases below; the compiler tracks which expressions
can be None and leaves the checks out where they cannot.

Example:
    >>> from recsys.profiles.attributes import AttributeSchema
    >>> from recsys.profiles.config import ProfileConfig
    >>> cat = build_catalog(AttributeSchema.default())
    >>> rule = compile_rule("count(click, 24h) >= 3 and age < 30", cat, ProfileConfig())
    >>> sorted(rule.triggers), rule.time_based
    (['click'], True)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsys.events.schema import EventType
from recsys.profiles.config import ProfileConfig
from recsys.segments.catalog import ALL_EVENTS, Env, Variable, build_catalog
from recsys.segments.errors import RuleError
from recsys.segments.parser import parse
from recsys.segments.syntax import (
    Between,
    Binary,
    Call,
    Duration,
    InOp,
    ListLit,
    Literal,
    Name,
    Node,
    RangeLit,
    Unary,
)

_EVENT_TYPES = {t.value for t in EventType}
_FUNCTIONS = ("count", "ever", "ever_purchased", "affinity", "exists")
_ORDER = ("<", "<=", ">", ">=")
_ARITH = ("+", "-", "*")

__all__ = ["CompiledRule", "build_catalog", "compile_rule"]


@dataclass(frozen=True)
class CompiledRule:
    """A checked, executable rule.

    Attributes:
        text: the rule as written.
        fn: ``Env -> bool``.
        triggers: event types whose arrival can change the result.
        time_based: the result can change with time alone (windows, hour ...).
        source: the generated Python source of ``fn`` (for debugging).
    """

    text: str
    fn: Callable[[Env], bool]
    triggers: frozenset[str]
    time_based: bool
    source: str = ""

    def __call__(self, env: Env) -> bool:
        return self.fn(env)


@dataclass(frozen=True, slots=True)
class _Code:
    """A compiled sub-expression: Python source over ``env``, its rule type,
    and whether it can evaluate to None (a missing value)."""

    src: str
    kind: str
    nullable: bool


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _between(v: Any, lo: Any, hi: Any) -> bool:
    return v is not None and lo is not None and hi is not None and lo <= v <= hi


def _div(a: Any, b: Any) -> Any:
    if a is None or b is None or b == 0:
        return None
    return a / b


class _Compiler:
    def __init__(self, catalog: dict[str, Variable], config: ProfileConfig) -> None:
        self.catalog = catalog
        self.config = config
        self.triggers: set[str] = set()
        self.time_based = False
        self.namespace: dict[str, Any] = {"_between": _between, "_div": _div}
        self._names = 0

    # -- source helpers --------------------------------------------------------------
    def _fresh(self, stem: str) -> str:
        self._names += 1
        return f"_{stem}{self._names}"

    def _bind(self, value: Any) -> str:
        """Puts ``value`` in the function's namespace; returns its name."""
        name = self._fresh("k")
        self.namespace[name] = value
        return name

    def _const(self, value: Any) -> str:
        """Source of a literal: its repr where that reads back exactly."""
        if isinstance(value, bool | int | str) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            return repr(value)
        return self._bind(value)

    def _hold(self, code: _Code) -> tuple[str, str]:
        """(first use, later uses) of a value that is tested for None and then
        used: a walrus temporary, so the value is computed once."""
        tmp = self._fresh("t")
        return f"({tmp} := {code.src})", tmp

    # -- nodes ----------------------------------------------------------------------
    def _event_type(self, node: Node) -> str | None:
        if not isinstance(node, Name):
            raise RuleError("expected an event type name such as page_view", node.pos)
        if node.name == "any":
            return None
        if node.name not in _EVENT_TYPES:
            raise RuleError(
                f"unknown event type {node.name!r}{_suggest(node.name, sorted(_EVENT_TYPES))}",
                node.pos,
            )
        return node.name

    def _string_arg(self, node: Node, what: str) -> str:
        if not isinstance(node, Literal) or not isinstance(node.value, str):
            raise RuleError(f"expected {what} as a quoted string", node.pos)
        return node.value

    def _arity(self, node: Call, low: int, high: int) -> None:
        n = len(node.args)
        if not low <= n <= high:
            want = str(low) if low == high else f"{low} or {high}"
            raise RuleError(f"{node.func}() takes {want} arguments, got {n}", node.pos)

    def call(self, node: Call) -> _Code:
        f = node.func
        if f == "count":
            self._arity(node, 1, 2)
            etype = self._event_type(node.args[0])
            self.triggers |= ALL_EVENTS if etype is None else {etype}
            if len(node.args) == 1:
                if etype is None:
                    return _Code("env.profile.n_events", "num", False)
                return _Code(f"env.profile.type_totals.get({etype!r}, 0)", "num", False)
            w = node.args[1]
            if not isinstance(w, Duration):
                raise RuleError("expected a window such as 24h", w.pos)
            try:
                window = self.config.window(w.text)
            except KeyError:
                names = ", ".join(x.name for x in self.config.windows)
                raise RuleError(
                    f"window {w.text!r} is not configured; use one of {names}", w.pos
                ) from None
            self.time_based = True
            # Rules of one evaluation share counts through env.counts.
            key = self._bind((etype, window.name))
            spec = self._bind(window)
            return _Code(f"env.count({etype!r}, {spec}, {key})", "num", False)
        if f in ("ever", "ever_purchased"):
            if f == "ever":
                self._arity(node, 1, 2)
                etype = self._event_type(node.args[0])
                cat_node = node.args[1] if len(node.args) == 2 else None
            else:
                self._arity(node, 1, 1)
                etype, cat_node = EventType.PURCHASE.value, node.args[0]
            if etype is None:
                raise RuleError(f"{f}() needs a specific event type, not 'any'", node.args[0].pos)
            cat = self._string_arg(cat_node, "a category") if cat_node is not None else None
            self.triggers.add(etype)
            return _Code(f"env.profile.ever({etype!r}, {self._const(cat)})", "bool", False)
        if f == "affinity":
            self._arity(node, 1, 1)
            cat = self._string_arg(node.args[0], "a category")
            half_life = self.config.affinity_half_life_s
            self.triggers |= {t.value for t in self.config.affinity_weights}
            self.time_based = True
            args = f"{self._const(cat)}, env.now_us, {self._const(half_life)}"
            return _Code(f"env.profile.affinity_at({args})", "num", False)
        if f == "exists":
            self._arity(node, 1, 1)
            inner = self.expr(node.args[0])
            return _Code(f"({inner.src} is not None)", "bool", False)
        raise RuleError(f"unknown function {f}(){_suggest(f, list(_FUNCTIONS))}", node.pos)

    def expr(self, node: Node) -> _Code:
        if isinstance(node, Literal):
            value = node.value
            kind = "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "num"
            return _Code(self._const(value), kind, False)
        if isinstance(node, Name):
            var = self.catalog.get(node.name)
            if var is None:
                if node.name in _EVENT_TYPES:
                    raise RuleError(
                        f"{node.name!r} is an event type; use it inside count(), e.g. "
                        f"count({node.name}, 24h)",
                        node.pos,
                    )
                raise RuleError(
                    f"unknown feature {node.name!r}{_suggest(node.name, sorted(self.catalog))}",
                    node.pos,
                )
            self.triggers |= var.triggers
            self.time_based |= var.time_based
            if var.expr is not None:
                return _Code(f"({var.expr})", var.type, var.nullable)
            return _Code(f"{self._bind(var.getter)}(env)", var.type, var.nullable)
        if isinstance(node, Duration):
            raise RuleError(f"a window ({node.text}) is only valid inside count()", node.pos)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            inner = self.expr(node.operand)
            if node.op == "not":
                self._want(inner.kind, "bool", node.operand, "'not' needs a condition")
                return _Code(f"(not {inner.src})", "bool", False)
            self._want(inner.kind, "num", node.operand, "'-' needs a number")
            if not inner.nullable:
                return _Code(f"(-{inner.src})", "num", False)
            first, again = self._hold(inner)
            return _Code(f"(None if {first} is None else -{again})", "num", True)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, InOp):
            return self.in_op(node)
        if isinstance(node, Between):
            item = self.expr(node.item)
            lo = self.expr(node.lo)
            hi = self.expr(node.hi)
            for k, n in ((item.kind, node.item), (lo.kind, node.lo), (hi.kind, node.hi)):
                self._want(k, "num", n, "'between' compares numbers")
            return _Code(self._range_test(item.src, item.nullable, lo, hi), "bool", False)
        if isinstance(node, ListLit | RangeLit):
            raise RuleError("a list or range is only valid after 'in'", node.pos)
        raise RuleError("unsupported expression", node.pos)

    def _want(self, kind: str, want: str, node: Node, message: str) -> None:
        if kind != want:
            raise RuleError(f"type mismatch: {message}, got {kind}", node.pos)

    def _guarded(self, parts: list[_Code], test: str) -> str:
        """``test`` (a format string over the parts' values) under "every part
        that can be None is not None"; evaluates each part once."""
        guards: list[str] = []
        values: list[str] = []
        for code in parts:
            if code.nullable:
                first, again = self._hold(code)
                guards.append(f"{first} is not None")
                values.append(again)
            else:
                values.append(code.src)
        body = test.format(*values)
        return f"({' and '.join([*guards, body])})"

    def _range_test(self, item_src: str, item_nullable: bool, lo: _Code, hi: _Code) -> str:
        """``lo <= item <= hi`` with every part present (else False)."""
        return self._guarded([_Code(item_src, "num", item_nullable), lo, hi], "{1} <= {0} <= {2}")

    def binary(self, node: Binary) -> _Code:
        left = self.expr(node.left)
        right = self.expr(node.right)
        lk, rk = left.kind, right.kind
        op = node.op
        if op in ("and", "or"):
            self._want(lk, "bool", node.left, f"'{op}' joins conditions")
            self._want(rk, "bool", node.right, f"'{op}' joins conditions")
            a = f"bool({left.src})" if left.nullable else left.src
            b = f"bool({right.src})" if right.nullable else right.src
            return _Code(f"({a} {op} {b})", "bool", False)
        if op in ("==", "!="):
            if lk != rk:
                raise RuleError(f"type mismatch: cannot compare {lk} with {rk}", node.pos)
            if lk == "list":
                raise RuleError("lists cannot be compared with ==; use 'in'", node.pos)
            return _Code(self._guarded([left, right], f"{{0}} {op} {{1}}"), "bool", False)
        if op in _ORDER:
            if lk != "num" or rk != "num":
                raise RuleError(
                    f"type mismatch: '{op}' compares numbers, got {lk} and {rk}", node.pos
                )
            return _Code(self._guarded([left, right], f"{{0}} {op} {{1}}"), "bool", False)
        if lk != "num" or rk != "num":
            raise RuleError(f"type mismatch: '{op}' needs numbers, got {lk} and {rk}", node.pos)
        if op == "/":
            return _Code(f"_div({left.src}, {right.src})", "num", True)
        assert op in _ARITH, op
        if not (left.nullable or right.nullable):
            return _Code(f"({left.src} {op} {right.src})", "num", False)
        tests: list[str] = []
        values: list[str] = []
        for code in (left, right):
            if code.nullable:
                first, again = self._hold(code)
                tests.append(f"{first} is None")
                values.append(again)
            else:
                values.append(code.src)
        src = f"(None if {' or '.join(tests)} else {values[0]} {op} {values[1]})"
        return _Code(src, "num", True)

    def in_op(self, node: InOp) -> _Code:
        item = self.expr(node.item)
        kind = item.kind
        coll = node.collection
        neg = node.negated
        if isinstance(coll, ListLit):
            values = []
            for x in coll.items:
                if not isinstance(x, Literal):
                    raise RuleError("list items must be literals", x.pos)
                xk = (
                    "bool"
                    if isinstance(x.value, bool)
                    else "str"
                    if isinstance(x.value, str)
                    else "num"
                )
                if xk != kind:
                    raise RuleError(f"type mismatch: list item is {xk}, value is {kind}", x.pos)
                values.append(x.value)
            members = self._bind(frozenset(values))
            test = f"{{0}} {'not in' if neg else 'in'} {members}"
            return _Code(self._guarded([item], test), "bool", False)
        if isinstance(coll, RangeLit):
            lo = self.expr(coll.lo)
            hi = self.expr(coll.hi)
            for k, n in ((kind, node.item), (lo.kind, coll.lo), (hi.kind, coll.hi)):
                self._want(k, "num", n, "a range holds numbers")
            if not neg:
                return _Code(self._range_test(item.src, item.nullable, lo, hi), "bool", False)
            # not in: the value must be present; a missing bound makes the range empty.
            if item.nullable:
                first, again = self._hold(item)
                inside = self._range_test(again, False, lo, hi)
                return _Code(f"({first} is not None and not {inside})", "bool", False)
            return _Code(f"(not {self._range_test(item.src, False, lo, hi)})", "bool", False)
        container = self.expr(coll)
        if container.kind != "list":
            raise RuleError(
                f"type mismatch: 'in' needs a list, a range or a list feature, got "
                f"{container.kind}",
                coll.pos,
            )
        self._want(kind, "str", node.item, "list features hold strings")
        test = f"{{0}} {'not in' if neg else 'in'} {{1}}"
        return _Code(self._guarded([item, container], test), "bool", False)


def compile_rule(text: str, catalog: dict[str, Variable], config: ProfileConfig) -> CompiledRule:
    """Parses, type-checks and compiles one rule.

    Args:
        text: the rule.
        catalog: features it may use (:func:`build_catalog`).
        config: profile settings (which windows exist).

    Returns:
        The compiled rule.

    Raises:
        RuleError: with the offset of the problem.
    """
    tree = parse(text)
    c = _Compiler(catalog, config)
    code = c.expr(tree)
    if code.kind != "bool":
        raise RuleError(f"a rule must be a condition, this is a {code.kind}", tree.pos)
    body = f"bool({code.src})" if code.nullable else code.src
    source = f"def _rule(env):\n    return {body}\n"
    try:
        exec(compile(source, "<segment rule>", "exec"), c.namespace)
    except (SyntaxError, RecursionError, MemoryError):
        raise RuleError("rule is nested too deeply", tree.pos) from None
    # A rule on static attributes only still needs some event to be evaluated.
    triggers = frozenset(c.triggers) or ALL_EVENTS
    return CompiledRule(text, c.namespace["_rule"], triggers, c.time_based, source)
