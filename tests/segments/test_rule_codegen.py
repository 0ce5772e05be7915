"""Compiled rules against a direct reading of the language's semantics.

Rules compile to generated Python source (:mod:`recsys.segments.compiler`).
This test interprets the same syntax trees node by node, the way the
language is documented (a missing value makes every comparison false,
``not`` of a missing condition is true, ``/`` by zero is missing ...), and
checks that both agree on thousands of random well-typed rules evaluated
against users with and without attributes, events with and without context.
"""

from __future__ import annotations

import builtins
import operator
import random
from collections.abc import Callable
from typing import Any

from rt_testkit import BASE_US, HOUR_US, MINUTE_US, event

from recsys.privacy.consent import Purpose
from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig
from recsys.profiles.processor import CachedUser
from recsys.profiles.state import UserProfile
from recsys.segments.catalog import Env, build_catalog
from recsys.segments.compiler import compile_rule
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

CFG = ProfileConfig()
CATALOG = build_catalog(AttributeSchema.default())
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _between(v: Any, lo: Any, hi: Any) -> bool:
    return v is not None and lo is not None and hi is not None and lo <= v <= hi


def interpret(node: Node, env: Env) -> Any:
    """The documented meaning of a syntax tree, evaluated directly."""
    ev = lambda n: interpret(n, env)  # noqa: E731
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        return CATALOG[node.name].getter(env)
    if isinstance(node, Call):
        args = node.args
        if node.func == "count":
            assert isinstance(args[0], Name)
            etype = None if args[0].name == "any" else args[0].name
            if len(args) == 1:
                return env.profile.total(etype)
            assert isinstance(args[1], Duration)
            return env.profile.count(etype, CFG.window(args[1].text), env.now_us)
        if node.func == "ever":
            assert isinstance(args[0], Name)
            cat = args[1].value if len(args) == 2 and isinstance(args[1], Literal) else None
            return env.profile.ever(args[0].name, None if cat is None else str(cat))
        if node.func == "ever_purchased":
            assert isinstance(args[0], Literal)
            return env.profile.ever("purchase", str(args[0].value))
        if node.func == "affinity":
            assert isinstance(args[0], Literal)
            return env.profile.affinity_at(str(args[0].value), env.now_us, CFG.affinity_half_life_s)
        if node.func == "exists":
            return ev(args[0]) is not None
        raise AssertionError(node.func)
    if isinstance(node, Unary):
        x = ev(node.operand)
        if node.op == "not":
            return not x
        return None if x is None else -x
    if isinstance(node, Binary):
        a, b = ev(node.left), ev(node.right)
        if node.op == "and":
            return bool(a) and bool(b)
        if node.op == "or":
            return bool(a) or bool(b)
        if node.op in ("==", "!="):
            if a is None or b is None:
                return False
            return a == b if node.op == "==" else a != b
        if node.op in _CMP:
            return a is not None and b is not None and _CMP[node.op](a, b)
        if a is None or b is None:
            return None
        if node.op == "/":
            return None if b == 0 else a / b
        return {"+": operator.add, "-": operator.sub, "*": operator.mul}[node.op](a, b)
    if isinstance(node, Between):
        return _between(ev(node.item), ev(node.lo), ev(node.hi))
    if isinstance(node, InOp):
        v = ev(node.item)
        coll = node.collection
        if isinstance(coll, ListLit):
            result = None if v is None else v in {ev(x) for x in coll.items}
        elif isinstance(coll, RangeLit):
            result = None if v is None else _between(v, ev(coll.lo), ev(coll.hi))
        else:
            c = ev(coll)
            result = None if v is None or c is None else v in c
        if node.negated:
            return result is not None and not result
        return bool(result)
    raise AssertionError(type(node))


# -- random well-typed rules ------------------------------------------------------------
_NUM_LEAVES = [
    "age",
    "household_size",
    "count(click, 1h)",
    "count(page_view, 24h)",
    "count(any, 7d)",
    "count(purchase)",
    "events_total",
    "session_events",
    "avg_session_events",
    "purchase_total",
    "purchase_count",
    "hour",
    "weekday",
    "days_since_last_purchase",
    "hours_since_last_event",
    "affinity('sports')",
]
_STR_LEAVES = ["device", "gender", "country", "event_type", "dominant_device", "occupation"]
_STR_VALUES = ["'mobile'", "'female'", "'DE'", "'click'", "'desktop'", "'nurse'"]
_BOOL_LEAVES = ["ever(click)", "ever_purchased('sports')", "ever(page_view, 'news')", "true"]


def _num(rng: random.Random, depth: int) -> str:
    r = rng.random()
    if depth <= 0 or r < 0.45:
        return rng.choice(_NUM_LEAVES)
    if r < 0.65:
        return str(rng.choice([0, 1, 2, 3, 5, 20, 29, 2.5]))
    if r < 0.75:
        return f"-{_num(rng, depth - 1)}"
    op = rng.choice(["+", "-", "*", "/"])
    return f"({_num(rng, depth - 1)} {op} {_num(rng, depth - 1)})"


def _cond(rng: random.Random, depth: int) -> str:
    r = rng.random()
    if depth <= 0 or r < 0.15:
        return rng.choice(_BOOL_LEAVES)
    if r < 0.35:
        op = rng.choice(["<", "<=", ">", ">=", "==", "!="])
        return f"{_num(rng, depth - 1)} {op} {_num(rng, depth - 1)}"
    if r < 0.45:
        return f"{rng.choice(_STR_LEAVES)} {rng.choice(['==', '!='])} {rng.choice(_STR_VALUES)}"
    if r < 0.55:
        neg = rng.choice(["", "not "])
        items = ", ".join(rng.sample(_STR_VALUES, 2))
        return f"{rng.choice(_STR_LEAVES)} {neg}in [{items}]"
    if r < 0.65:
        neg = rng.choice(["", "not "])
        return f"{_num(rng, depth - 1)} {neg}in {_num(rng, 0)}..{_num(rng, 0)}"
    if r < 0.7:
        return f"{_num(rng, depth - 1)} between {_num(rng, 0)} and {_num(rng, 0)}"
    if r < 0.75:
        return f"{rng.choice(['', 'not '])}('running' in interests)"
    if r < 0.8:
        return f"exists({rng.choice(_STR_LEAVES + _NUM_LEAVES)})"
    if r < 0.87:
        return f"not ({_cond(rng, depth - 1)})"
    op = rng.choice(["and", "or"])
    return f"({_cond(rng, depth - 1)}) {op} ({_cond(rng, depth - 1)})"


def _user(rng: random.Random, n: int) -> CachedUser:
    p = UserProfile(f"u{n}")
    for i in range(rng.randrange(0, 12)):
        etype = rng.choice(["click", "page_view", "purchase", "like"])
        payload = {"price": 10.0, "category": "sports"} if etype == "purchase" else {}
        if etype == "page_view" and rng.random() < 0.5:
            payload = {"category": "news"}
        context = {"device_type": rng.choice(["mobile", "desktop"])} if rng.random() < 0.6 else {}
        ts = BASE_US + rng.randrange(0, 48) * HOUR_US + i * MINUTE_US
        p.apply(event(i, etype=etype, ts_us=ts, payload=payload, context=context), CFG)
    attrs: dict[str, Any] = {}
    if rng.random() < 0.6:
        attrs["age"] = rng.choice([17, 29, 40])
    if rng.random() < 0.5:
        attrs["gender"] = rng.choice(["female", "male"])
    if rng.random() < 0.4:
        attrs["interests"] = rng.choice([["running"], ["chess", "yoga"]])
    if rng.random() < 0.3:
        attrs["household_size"] = 0 if rng.random() < 0.3 else 3  # 0: a division by zero
    return CachedUser(p.user_id, 0, p, attrs, frozenset(Purpose))


def _env(rng: random.Random, user: CachedUser) -> Env:
    if rng.random() < 0.2:  # the sweep: no triggering event
        return Env(user, None, BASE_US + 50 * HOUR_US, CFG)
    context: dict[str, Any] = {}
    if rng.random() < 0.7:
        context = {"device_type": rng.choice(["mobile", "desktop"]), "country": "DE"}
    if rng.random() < 0.3:
        context["utc_offset_minutes"] = rng.choice([-300, 120, 600])
    ev = event(999, etype=rng.choice(["click", "page_view"]), ts_us=BASE_US + 49 * HOUR_US,
               context=context)  # fmt: skip
    return Env(user, ev, max(ev.ts_us, user.profile.last_us), CFG)


def test_compiled_rules_agree_with_the_interpreter_on_random_rules() -> None:
    rng = random.Random(1234)
    users = [_user(rng, n) for n in range(25)]
    checked = holds = 0
    for _ in range(600):
        text = _cond(rng, 3)
        rule = compile_rule(text, CATALOG, CFG)
        tree = parse(text)
        for user in rng.sample(users, 6):
            env = _env(rng, user)
            want = bool(interpret(tree, env))
            got = rule(Env(user, env.event, env.now_us, CFG))  # fresh memo
            assert got is want, (text, rule.source, user.attributes)
            checked += 1
            holds += want
    # Both outcomes occur often enough for the comparison to mean something.
    assert checked == 3600 and 0.15 * checked < holds < 0.85 * checked


def test_generated_source_reads_only_the_environment() -> None:
    rule = compile_rule("age between 25 and 34 and device in ['mobile', 'tablet']", CATALOG, CFG)
    assert rule.source.startswith("def _rule(env):")
    # Literals appear as literals, the list as a bound constant: no rule text is code.
    assert "25 <=" in rule.source and "'mobile'" not in rule.source
    # A string that would be code if pasted into the source unquoted.
    payload = "x') or setattr(__import__('builtins'), 'RULE_RAN', 1) or ('"
    evil = compile_rule(f'gender == "{payload}" or gender != "{payload}"', CATALOG, CFG)
    user = _user(random.Random(0), 0)
    user.attributes["gender"] = "female"
    assert evil(Env(user, None, BASE_US, CFG)) is True
    assert not hasattr(builtins, "RULE_RAN")
