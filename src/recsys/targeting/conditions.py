"""Conditions of targeting rules: the segment rule language over segments and context.

A condition is written in the segment language's syntax
(:mod:`recsys.segments.parser`) and sees the request, not the event history:

=====================================  =====  =========================================
name / call                            type   meaning
=====================================  =====  =========================================
``in_segment("name")``                 bool   the user is a member of the segment now
``device``                             str    the request's device type (``mobile`` ...)
``os``, ``browser``                    str    operating system and browser families
``country``, ``region``                str    ISO 3166-1 alpha-2 country; region
``surface``                            str    the surface or placement of the list
``local_hour``                         num    hour of day at the user (0-23)
``weekday``                            num    day of week at the user (Monday = 0)
``utc_offset_minutes``                 num    the user's offset from UTC
=====================================  =====  =========================================

An unknown context value (the request did not send it) makes every comparison with it
false, as in segment rules. Errors (unknown name or segment, wrong argument, type
mismatch) raise :class:`~recsys.segments.errors.RuleError` at the offending offset.

Example:
    >>> cond = compile_condition("in_segment('night_owls') and device == 'mobile'")
    >>> from recsys.runtime.context import RequestContext
    >>> from recsys.runtime.targeting import TargetingEnv
    >>> env = TargetingEnv.of(["night_owls"], RequestContext(device_type="mobile"))
    >>> cond.fn(env), cond.segments
    (True, frozenset({'night_owls'}))
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from recsys.runtime.targeting import TargetingEnv
from recsys.segments.errors import RuleError
from recsys.segments.parser import parse
from recsys.segments.syntax import (
    Between,
    Binary,
    Call,
    InOp,
    ListLit,
    Literal,
    Name,
    Node,
    RangeLit,
    Unary,
)

Getter = Callable[[TargetingEnv], Any]

_TEXT: dict[str, Getter] = {
    "device": lambda env: env.context.device_type,
    "os": lambda env: env.context.os,
    "browser": lambda env: env.context.browser,
    "country": lambda env: env.context.country,
    "region": lambda env: env.context.region,
    "surface": lambda env: env.context.surface,
}
_NUMBER: dict[str, Getter] = {
    "local_hour": lambda env: env.context.local_hour,
    "weekday": lambda env: env.context.weekday,
    "utc_offset_minutes": lambda env: env.context.utc_offset_minutes,
}
NAMES = sorted([*_TEXT, *_NUMBER, "in_segment"])
"""Every name a condition may use."""


@dataclass(frozen=True)
class Condition:
    """A compiled condition.

    Attributes:
        text: as written.
        fn: ``TargetingEnv -> bool``.
        segments: the segments it names.
    """

    text: str
    fn: Callable[[TargetingEnv], bool]
    segments: frozenset[str]


@dataclass(frozen=True)
class _Expr:
    kind: str  # "bool", "num", "str"
    fn: Getter


def compile_condition(text: str, known_segments: Collection[str] | None = None) -> Condition:
    """Checks and compiles one condition.

    Args:
        text: the condition.
        known_segments: the segments that exist (None: any name is accepted).

    Raises:
        RuleError: at the offending offset of ``text``.
    """
    named: set[str] = set()
    expr = _compile(parse(text), known_segments, named)
    if expr.kind != "bool":
        raise RuleError(f"a condition must be true or false, this is a {expr.kind}", 0)
    fn = expr.fn
    return Condition(text, lambda env: bool(fn(env)), frozenset(named))


def _suggest(name: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(options))}"


def _compile(node: Node, segments: Collection[str] | None, named: set[str]) -> _Expr:
    if isinstance(node, Literal):
        value = node.value
        kind = "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "num"
        return _Expr(kind, lambda env: value)
    if isinstance(node, Name):
        if node.name in _TEXT:
            return _Expr("str", _TEXT[node.name])
        if node.name in _NUMBER:
            return _Expr("num", _NUMBER[node.name])
        raise RuleError(f"unknown name {node.name!r}{_suggest(node.name, NAMES)}", node.pos)
    if isinstance(node, Call):
        if node.func != "in_segment":
            raise RuleError(
                f"unknown function {node.func!r}; conditions have in_segment(name)", node.pos
            )
        if len(node.args) != 1 or not isinstance(node.args[0], Literal | Name):
            raise RuleError("in_segment takes one segment name", node.pos)
        arg = node.args[0]
        name = str(arg.value if isinstance(arg, Literal) else arg.name)
        if segments is not None and name not in segments:
            raise RuleError(f"unknown segment {name!r}{_suggest(name, segments)}", arg.pos)
        named.add(name)
        return _Expr("bool", lambda env: name in env.segments)
    if isinstance(node, Unary):
        inner = _compile(node.operand, segments, named)
        if node.op == "not":
            _expect(inner, "bool", node)
            return _Expr("bool", lambda env: not inner.fn(env))
        _expect(inner, "num", node)
        return _Expr("num", lambda env: _neg(inner.fn(env)))
    if isinstance(node, Binary):
        return _binary(node, segments, named)
    if isinstance(node, InOp):
        item = _compile(node.item, segments, named)
        values = _collection(node.collection, item.kind, segments, named)
        negated = node.negated

        def member(env: TargetingEnv) -> bool:
            v = item.fn(env)
            if v is None:
                return False
            return (v in values) != negated if isinstance(values, frozenset) else values(v, negated)

        return _Expr("bool", member)
    if isinstance(node, Between):
        item, lo, hi = (_compile(n, segments, named) for n in (node.item, node.lo, node.hi))
        for part, where in ((item, node.item), (lo, node.lo), (hi, node.hi)):
            _expect(part, "num", where)
        return _Expr("bool", lambda env: _between(item.fn(env), lo.fn(env), hi.fn(env)))
    raise RuleError(f"unexpected {type(node).__name__} in a condition", node.pos)


def _neg(value: Any) -> Any:
    return None if value is None else -value


def _between(value: Any, lo: Any, hi: Any) -> bool:
    return value is not None and lo is not None and hi is not None and lo <= value <= hi


def _expect(expr: _Expr, kind: str, node: Node) -> None:
    if expr.kind != kind:
        raise RuleError(f"expected a {kind} here, got a {expr.kind}", node.pos)


def _collection(
    node: Node, kind: str, segments: Collection[str] | None, named: set[str]
) -> frozenset[Any] | Callable[[Any, bool], bool]:
    if isinstance(node, ListLit):
        values = []
        for part in node.items:
            if not isinstance(part, Literal):
                raise RuleError("a list in a condition holds literal values", part.pos)
            expr = _compile(part, segments, named)
            _expect(expr, kind, part)
            values.append(part.value)
        return frozenset(values)
    if isinstance(node, RangeLit):
        lo, hi = _compile(node.lo, segments, named), _compile(node.hi, segments, named)
        _expect(lo, "num", node.lo)
        _expect(hi, "num", node.hi)
        low, high = lo.fn(TargetingEnv()), hi.fn(TargetingEnv())
        return lambda v, negated: (low <= v <= high) != negated
    raise RuleError("expected a list [a, b] or a range lo..hi after 'in'", node.pos)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
}


def _binary(node: Binary, segments: Collection[str] | None, named: set[str]) -> _Expr:
    left = _compile(node.left, segments, named)
    right = _compile(node.right, segments, named)
    op = node.op
    if op in ("and", "or"):
        _expect(left, "bool", node.left)
        _expect(right, "bool", node.right)
        lf, rf = left.fn, right.fn
        if op == "and":
            return _Expr("bool", lambda env: bool(lf(env)) and bool(rf(env)))
        return _Expr("bool", lambda env: bool(lf(env)) or bool(rf(env)))
    if op in _COMPARE:
        if left.kind != right.kind:
            raise RuleError(f"cannot compare a {left.kind} with a {right.kind}", node.pos)
        if left.kind != "num" and op not in ("==", "!="):
            raise RuleError(f"'{op}' compares numbers; a {left.kind} takes == or !=", node.pos)
        compare, lf, rf = _COMPARE[op], left.fn, right.fn

        def cmp(env: TargetingEnv) -> bool:
            a, b = lf(env), rf(env)
            return a is not None and b is not None and compare(a, b)

        return _Expr("bool", cmp)
    if op in _ARITH:
        _expect(left, "num", node.left)
        _expect(right, "num", node.right)
        arith, lf, rf = _ARITH[op], left.fn, right.fn

        def calc(env: TargetingEnv) -> Any:
            a, b = lf(env), rf(env)
            return None if a is None or b is None else arith(a, b)

        return _Expr("num", calc)
    raise RuleError(f"unknown operator {op!r}", node.pos)
