"""The rule language: what it accepts, how it evaluates, and where it reports errors."""

from __future__ import annotations

import pytest
from rt_testkit import BASE_US, MINUTE_US, event

from recsys.events.schema import EventType
from recsys.privacy.consent import Purpose
from recsys.profiles.attributes import AttributeSchema
from recsys.profiles.config import ProfileConfig
from recsys.profiles.processor import CachedUser
from recsys.profiles.state import UserProfile
from recsys.segments.catalog import Env, build_catalog
from recsys.segments.compiler import compile_rule
from recsys.segments.errors import RuleError
from recsys.segments.loader import load_segments_text

CFG = ProfileConfig()
CATALOG = build_catalog(AttributeSchema.default())


def user_with(events: int, attrs: dict[str, object] | None = None) -> CachedUser:
    p = UserProfile("u1")
    for i in range(events):
        p.apply(event(i, etype="page_view", context={"device_type": "mobile"}), CFG)
    p.apply(
        event(
            100,
            etype="purchase",
            ts_us=BASE_US - MINUTE_US,
            payload={"price": 30.0, "category": "sports"},
        ),
        CFG,
    )
    return CachedUser("u1", 0, p, dict(attrs or {}), frozenset(Purpose))


def holds(rule: str, user: CachedUser, ev_n: int = 5, **ev_kw: object) -> bool:
    compiled = compile_rule(rule, CATALOG, CFG)
    ev = event(ev_n, etype="page_view", **ev_kw)  # type: ignore[arg-type]
    return bool(compiled(Env(user, ev, max(ev.ts_us, user.profile.last_us), CFG)))


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("count(page_view, 24h) >= 5", True),
        ("count(page_view, 24h) >= 6", False),
        ("count(page_view, 1h) == 5 and count(any, 24h) == 6", True),
        ("count(page_view) + count(purchase) == 6", True),
        ("age between 25 and 34", True),
        ("age in 25..29", True),
        ("age in 30..34", False),
        ("age in [29, 40] and gender == 'female'", True),
        ("gender not in ['male', 'other']", True),
        ("'running' in interests and not ('chess' in interests)", True),
        ("occupation == 'nurse'", False),  # missing attribute: comparison is false
        ("not (occupation == 'nurse')", True),
        ("exists(occupation) or exists(age)", True),
        ("ever_purchased('sports') and not ever_purchased('books')", True),
        ("ever(purchase, 'sports') and ever(page_view) and not ever(like)", True),
        ("purchase_total / purchase_count == 30", True),
        ("affinity('sports') > 4.9 and affinity('sports') < 5", True),
        ("device == 'mobile' and dominant_device == 'mobile'", True),
        ("hour == 8 and weekday == 2", True),  # 2024-05-01 08:xx UTC, a Wednesday
        ("events_total >= 6 or false", True),
        ("-age < -20 and age * 2 == 58", True),
    ],
)
def test_rules_evaluate(rule: str, expected: bool) -> None:
    user = user_with(5, {"age": 29, "gender": "female", "interests": ["running", "yoga"]})
    assert holds(rule, user, context={"device_type": "mobile"}) is expected


def test_local_time_uses_the_event_offset() -> None:
    user = user_with(1)
    assert holds("hour in 18..22", user, context={"utc_offset_minutes": 600})  # 18:05 local
    assert not holds("hour in 18..22", user)


@pytest.mark.parametrize(
    ("rule", "message", "column"),
    [
        ("count(page_view, 24h) >= ", "expected a value, found end of rule", 26),
        ("agee > 3", "unknown feature 'agee' (did you mean 'age'?)", 1),
        ("age = 3", "unexpected character '=' (use == for equality)", 5),
        (
            "count(pageview, 24h) > 1",
            "unknown event type 'pageview' (did you mean 'page_view'?)",
            7,
        ),
        (
            "count(click, 12h) > 1",
            "window '12h' is not configured; use one of 1h, 24h, 7d, 30d",
            14,
        ),
        ("age == 'old'", "type mismatch: cannot compare num with str", 5),
        ("device > 3", "type mismatch: '>' compares numbers, got str and num", 8),
        ("age and true", "type mismatch: 'and' joins conditions, got num", 1),
        ("count(click, 24h)", "a rule must be a condition, this is a num", 1),
        ("zip == '10115'", "unknown feature 'zip'", 1),  # PII is not a rule feature
        ("click > 3", "'click' is an event type; use it inside count()", 1),
        ("age in ['a', 'b']", "type mismatch: list item is str, value is num", 9),
        ("lifetime(click) > 1", "unknown function lifetime()", 1),
        ("ever(any)", "ever() needs a specific event type, not 'any'", 6),
    ],
)
def test_errors_point_at_the_problem(rule: str, message: str, column: int) -> None:
    with pytest.raises(RuleError) as info:
        compile_rule(rule, CATALOG, CFG)
    assert info.value.message.startswith(message), info.value.message
    assert (info.value.line, info.value.column) == (1, column)


YAML = """\
segments:
  - name: fine
    enter: count(click, 1h) >= 2
  - name: broken
    description: spans lines
    enter: |
      count(page_view, 24h) >= 5
      and devise == "mobile"
"""


def test_yaml_errors_have_file_line_and_column() -> None:
    with pytest.raises(RuleError) as info:
        load_segments_text(YAML, source="rules.yaml")
    err = info.value
    assert (err.line, err.column) == (8, 11)  # the 'devise' on line 8
    assert YAML.splitlines()[7][10:16] == "devise"
    assert str(err).startswith("rules.yaml:8:11: unknown feature 'devise' (did you mean 'device'?)")
    assert err.segment == "broken"


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("segments:\n  - name: a\n    enter: \"age >= 'x'\"\n", 3, 17, "type mismatch"),
        ("segments:\n  - name: a\n    enter: >\n      age >= 1 and\n      hour >\n", 5, 13, "end"),
        ("segments:\n  - name: a\n    entre: age > 1\n", 3, 5, "unknown key 'entre'"),
        ("segments:\n  - name: Bad Name\n    enter: age > 1\n", 2, 11, "must match"),
        ("segments:\n  - name: a\n    enter: age > 1\n  - name: a\n    enter: age > 2\n", 4, 5,
         "defined twice"),
        ("segments:\n  - name: a\n    enter: [age\n", 4, 1, "YAML"),
    ],
)  # fmt: skip
def test_more_located_errors(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(RuleError) as info:
        load_segments_text(text, source="s.yaml")
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert fragment in str(info.value)


def test_triggers_and_time_dependence_are_inferred() -> None:
    (a, b, c) = load_segments_text(
        """
segments:
  - {name: a, enter: "count(click, 24h) >= 3 and purchase_count > 0"}
  - {name: b, enter: "age > 30"}
  - {name: c, enter: "ever(like)", evaluate_on: [like, share]}
"""
    )
    assert a.triggers == {"click", "purchase"} and a.time_based
    assert b.triggers == {t.value for t in EventType} and not b.time_based  # every type
    assert c.triggers == {"like", "share"} and not c.time_based
