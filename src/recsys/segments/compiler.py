"""Type-checking and compiling rules into Python closures.

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
import operator
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

Fn = Callable[[Env], Any]
_EVENT_TYPES = {t.value for t in EventType}
_FUNCTIONS = ("count", "ever", "ever_purchased", "affinity", "exists")
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}

__all__ = ["CompiledRule", "build_catalog", "compile_rule"]


@dataclass(frozen=True)
class CompiledRule:
    """A checked, executable rule.

    Attributes:
        text: the rule as written.
        fn: ``Env -> bool``.
        triggers: event types whose arrival can change the result.
        time_based: the result can change with time alone (windows, hour ...).
    """

    text: str
    fn: Callable[[Env], bool]
    triggers: frozenset[str]
    time_based: bool

    def __call__(self, env: Env) -> bool:
        return self.fn(env)


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Compiler:
    def __init__(self, catalog: dict[str, Variable], config: ProfileConfig) -> None:
        self.catalog = catalog
        self.config = config
        self.triggers: set[str] = set()
        self.time_based = False

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

    def call(self, node: Call) -> tuple[Fn, str]:
        f = node.func
        if f == "count":
            self._arity(node, 1, 2)
            etype = self._event_type(node.args[0])
            self.triggers |= ALL_EVENTS if etype is None else {etype}
            if len(node.args) == 1:
                return (lambda env: env.profile.total(etype)), "num"
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
            key = (etype, window.name)

            def windowed(env: Env) -> int:
                n = env.counts.get(key)
                if n is None:
                    n = env.counts[key] = env.profile.count(etype, window, env.now_us)
                return n

            return windowed, "num"
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
            et: str = etype
            return (lambda env: env.profile.ever(et, cat)), "bool"
        if f == "affinity":
            self._arity(node, 1, 1)
            cat = self._string_arg(node.args[0], "a category")
            half_life = self.config.affinity_half_life_s
            self.triggers |= {t.value for t in self.config.affinity_weights}
            self.time_based = True
            return (lambda env: env.profile.affinity_at(cat, env.now_us, half_life)), "num"
        if f == "exists":
            self._arity(node, 1, 1)
            inner, _ = self.expr(node.args[0])
            return (lambda env: inner(env) is not None), "bool"
        raise RuleError(f"unknown function {f}(){_suggest(f, list(_FUNCTIONS))}", node.pos)

    def expr(self, node: Node) -> tuple[Fn, str]:
        if isinstance(node, Literal):
            value = node.value
            kind = "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "num"
            return (lambda env: value), kind
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
            return var.getter, var.type
        if isinstance(node, Duration):
            raise RuleError(f"a window ({node.text}) is only valid inside count()", node.pos)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            inner, kind = self.expr(node.operand)
            if node.op == "not":
                self._want(kind, "bool", node.operand, "'not' needs a condition")
                return (lambda env: not inner(env)), "bool"
            self._want(kind, "num", node.operand, "'-' needs a number")
            return (lambda env: None if (x := inner(env)) is None else -x), "num"
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, InOp):
            return self.in_op(node)
        if isinstance(node, Between):
            item, kind = self.expr(node.item)
            lo, lo_kind = self.expr(node.lo)
            hi, hi_kind = self.expr(node.hi)
            for k, n in ((kind, node.item), (lo_kind, node.lo), (hi_kind, node.hi)):
                self._want(k, "num", n, "'between' compares numbers")
            return (lambda env: _between(item(env), lo(env), hi(env))), "bool"
        if isinstance(node, ListLit | RangeLit):
            raise RuleError("a list or range is only valid after 'in'", node.pos)
        raise RuleError("unsupported expression", node.pos)

    def _want(self, kind: str, want: str, node: Node, message: str) -> None:
        if kind != want:
            raise RuleError(f"type mismatch: {message}, got {kind}", node.pos)

    def binary(self, node: Binary) -> tuple[Fn, str]:
        left, lk = self.expr(node.left)
        right, rk = self.expr(node.right)
        op = node.op
        if op in ("and", "or"):
            self._want(lk, "bool", node.left, f"'{op}' joins conditions")
            self._want(rk, "bool", node.right, f"'{op}' joins conditions")
            if op == "and":
                return (lambda env: bool(left(env)) and bool(right(env))), "bool"
            return (lambda env: bool(left(env)) or bool(right(env))), "bool"
        if op in ("==", "!="):
            if lk != rk:
                raise RuleError(f"type mismatch: cannot compare {lk} with {rk}", node.pos)
            if lk == "list":
                raise RuleError("lists cannot be compared with ==; use 'in'", node.pos)
            neg = op == "!="

            def eq(env: Env) -> bool:
                a, b = left(env), right(env)
                if a is None or b is None:
                    return False
                return (a != b) if neg else (a == b)

            return eq, "bool"
        if op in _ORDER:
            if lk != "num" or rk != "num":
                raise RuleError(
                    f"type mismatch: '{op}' compares numbers, got {lk} and {rk}", node.pos
                )
            cmp = _ORDER[op]

            def order(env: Env) -> bool:
                a, b = left(env), right(env)
                return a is not None and b is not None and cmp(a, b)

            return order, "bool"
        if lk != "num" or rk != "num":
            raise RuleError(f"type mismatch: '{op}' needs numbers, got {lk} and {rk}", node.pos)
        if op == "/":
            return (lambda env: _div(left(env), right(env))), "num"
        arith = _ARITH[op]

        def calc(env: Env) -> Any:
            a, b = left(env), right(env)
            return None if a is None or b is None else arith(a, b)

        return calc, "num"

    def in_op(self, node: InOp) -> tuple[Fn, str]:
        item, kind = self.expr(node.item)
        coll = node.collection
        neg = node.negated
        test: Fn
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
            members = frozenset(values)

            def test(env: Env) -> Any:
                v = item(env)
                return None if v is None else v in members

        elif isinstance(coll, RangeLit):
            lo, lo_k = self.expr(coll.lo)
            hi, hi_k = self.expr(coll.hi)
            for k, n in ((kind, node.item), (lo_k, coll.lo), (hi_k, coll.hi)):
                self._want(k, "num", n, "a range holds numbers")

            def test(env: Env) -> Any:
                v = item(env)
                return None if v is None else _between(v, lo(env), hi(env))

        else:
            container, ck = self.expr(coll)
            if ck != "list":
                raise RuleError(
                    f"type mismatch: 'in' needs a list, a range or a list feature, got {ck}",
                    coll.pos,
                )
            self._want(kind, "str", node.item, "list features hold strings")

            def test(env: Env) -> Any:
                v, c = item(env), container(env)
                return None if v is None or c is None else v in c

        if neg:
            return (lambda env: (r := test(env)) is not None and not r), "bool"
        return (lambda env: bool(test(env))), "bool"


def _between(v: Any, lo: Any, hi: Any) -> bool:
    return v is not None and lo is not None and hi is not None and lo <= v <= hi


def _div(a: Any, b: Any) -> Any:
    if a is None or b is None or b == 0:
        return None
    return a / b


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
    fn, kind = c.expr(tree)
    if kind != "bool":
        raise RuleError(f"a rule must be a condition, this is a {kind}", tree.pos)
    # A rule on static attributes only still needs some event to be evaluated.
    triggers = frozenset(c.triggers) or ALL_EVENTS
    return CompiledRule(text, fn, triggers, c.time_based)
