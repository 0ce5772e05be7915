"""Targeting rules: loading with located errors, selection, conflict order, actions, reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from recsys.runtime.context import RequestContext
from recsys.runtime.targeting import (
    ItemCatalog,
    RuleFile,
    RuleSet,
    TargetingEnv,
    fetch_depth,
    place_pins,
    rerank_fallback,
    restrict_rows,
)
from recsys.segments.errors import RuleError
from recsys.targeting import load_rules, load_rules_text

# raw ids 10..60; categories by index
CATALOG = ItemCatalog.from_genres(
    np.array([10, 20, 30, 40, 50, 60]),
    [["Comedy"], ["Horror"], ["Comedy", "Drama"], [], ["Horror"], ["Drama"]],
)
# 2023-11-14 22:13:20 UTC, a Tuesday
T = 1_700_000_000_000


def env(segments: tuple[str, ...] = (), **context: object) -> TargetingEnv:
    return TargetingEnv.of(segments, RequestContext.from_values(**context))


def rules(text: str, segments: tuple[str, ...] | None = None) -> RuleSet:
    return load_rules_text(text, CATALOG, "rules.yaml", segments)


def test_a_rule_applies_to_its_segment_and_context_only() -> None:
    rs = rules(
        """
rules:
  - name: fans_on_mobile
    when: "in_segment('comedy_fans') and device == 'mobile'"
    boost: [{categories: [Comedy], weight: 1.5}]
""",
        ("comedy_fans",),
    )
    plan = rs.plan(env(("comedy_fans",), device_type="mobile"))
    assert plan.rules == ("fans_on_mobile",)
    assert plan.boosts(np.array([0, 1, 2, -1])).tolist() == [1.5, 0.0, 1.5, 0.0]
    assert rs.plan(env(("comedy_fans",), device_type="desktop")).empty
    assert rs.plan(env((), device_type="mobile")).empty
    assert rs.plan(env(("comedy_fans",))).empty  # unknown device: the comparison is false


def test_local_hour_weekday_and_windows_follow_the_request_time_and_offset() -> None:
    rs = rules(
        """
rules:
  - name: evening
    when: "local_hour >= 18"
    exclude: {items: [10]}
  - name: late_tuesdays
    active: {hours: 22..1, weekdays: [tue]}
    exclude: {items: [20]}
  - name: december_2026
    active: {from: 2026-12-01T00:00:00Z, until: 2027-01-01T00:00:00Z}
    exclude: {items: [30]}
"""
    )
    at_utc = rs.plan(env(request_time_ms=T))  # 22:13 Tuesday
    assert set(at_utc.rules) == {"evening", "late_tuesdays"}
    # UTC+3: 01:13 on Wednesday -> the hours window wraps but the weekday is wrong
    east = rs.plan(env(request_time_ms=T, utc_offset_minutes=180))
    assert east.rules == ()
    dec = 1_796_083_200_000  # 2026-12-01 00:00 UTC
    assert "december_2026" in rs.plan(env(request_time_ms=dec)).rules
    assert "december_2026" not in rs.plan(env(request_time_ms=dec - 1)).rules


def test_conflict_order_priority_pools_pins_and_exclusion() -> None:
    rs = rules(
        """
rules:
  - name: low
    priority: 1
    pool: {categories: [Horror]}
    pin: [{item: 60, position: 1}]
    boost: [{items: [10], weight: 1}]
  - name: high
    priority: 9
    pool: {categories: [Comedy]}
    pin: [{item: 40, position: 1}, {item: 20, position: 2}]
    bury: [{items: [10], weight: 3}]
  - name: ban
    exclude: {items: [20]}
"""
    )
    plan = rs.plan(env())
    assert plan.rules == ("high", "low", "ban")  # priority, then name
    assert plan.pool is not None and plan.pool.tolist() == [0, 2]  # the higher pool only
    assert plan.boosts(np.array([0])).tolist() == [-2.0]  # boosts add up
    assert any(c.startswith("low: pool overridden") for c in plan.conflicts)
    assert any(c.startswith("low: pin at position 1") for c in plan.conflicts)
    banned = set(plan.exclude.tolist())
    items, scores, skipped = place_pins(
        plan, np.array([2, 0]), np.array([3.0, 2.0], np.float32), 3, lambda i: i not in banned
    )
    # 40 (index 3) at 1; 20 (index 1) is excluded, so its pin is skipped; 60's lost to 40
    assert items.tolist() == [3, 2, 0]
    assert scores.tolist() == [3.0, 3.0, 2.0]
    assert skipped and "excluded" in skipped[0]


def test_restrict_rows_keeps_the_first_allowed_candidates_in_order() -> None:
    rs = rules("rules: [{name: r, exclude: {items: [30]}, pool: {categories: [Comedy, Drama]}}]")
    plan = rs.plan(env())
    items = np.array([[5, 2, 0, 1, 4, 3, -1]])
    scores = np.arange(7, dtype=np.float32)[::-1][None, :].copy()
    kept, kept_scores = restrict_rows(items, scores, [plan], 2)
    assert kept.tolist() == [[5, 0]] and kept_scores.tolist() == [[6.0, 4.0]]
    assert fetch_depth(plan, 2, 6) == 6  # a pool searches the whole catalogue
    only_exclude = rules("rules: [{name: r, exclude: {items: [30, 40]}}]").plan(env())
    assert fetch_depth(only_exclude, 3, 100) == 5


def test_categories_match_without_regard_to_case() -> None:
    plan = rules("rules: [{name: r, exclude: {categories: [comedy, HORROR]}}]").plan(env())
    assert plan.exclude.tolist() == [0, 1, 2, 4]


def test_the_popularity_fallback_follows_the_plan() -> None:
    plan = rules(
        "rules: [{name: r, exclude: {items: [10]}, boost: [{items: [60], weight: 5}]}]"
    ).plan(env())
    items, scores = rerank_fallback(plan, np.array([0, 1, 2, 5]), np.array([4.0, 3.0, 2.0, 1.0]), 3)
    assert items.tolist() == [5, 1, 2] and scores.tolist() == [6.0, 3.0, 2.0]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("rules:\n  - name: x\n    when: \"in_segment('fanz')\"\n    exclude: {items: [10]}\n",
         "rules.yaml:3:23", "unknown segment 'fanz'; did you mean 'fans'"),
        ("rules:\n  - name: x\n    when: \"devic == 'mobile'\"\n    exclude: {items: [10]}\n",
         "rules.yaml:3:12", "unknown name 'devic'; did you mean 'device'"),
        ("rules:\n  - name: x\n    when: \"device == 3\"\n    exclude: {items: [10]}\n",
         "rules.yaml:3:19", "cannot compare a str with a num"),
        ("rules:\n  - name: x\n    when: \"local_hour\"\n    exclude: {items: [10]}\n",
         "rules.yaml:", "must be true or false"),
        ("rules:\n  - name: x\n    exclude: {items: [11]}\n",
         "rules.yaml:3:22", "item(s) [11] are not in the catalogue"),
        ("rules:\n  - name: x\n    boost: [{categories: [Comedi], weight: 1}]\n",
         "rules.yaml:3:27", "unknown category 'Comedi'"),
        ("rules:\n  - name: x\n    pin: [{item: 10, position: 0}]\n",
         "rules.yaml:3:32", "position must be in 1..1000"),
        ("rules:\n  - name: x\n    active: {hours: 20..25}\n    exclude: {items: [10]}\n",
         "rules.yaml:3:21", "hours must be in 0..23"),
        ("rules:\n  - name: x\n", "rules.yaml:2:5", "a rule needs an action"),
        ("rules:\n  - name: x\n    exclude: {items: [10]}\n"
         "  - name: x\n    exclude: {items: [10]}\n",
         "rules.yaml:4:5", "also defined at line 2"),
        ("rules:\n  - name: x\n    boots: [{items: [10], weight: 1}]\n",
         "rules.yaml:3:5", "unknown key 'boots'"),
        ("rules:\n  - name: x\n    exclude: {items: [10]\n", "rules.yaml:4:1", "YAML"),
    ],
)  # fmt: skip
def test_load_errors_name_the_file_line_and_column(text: str, where: str, message: str) -> None:
    with pytest.raises(RuleError) as info:
        rules(text, ("fans",))
    assert str(info.value).startswith(where), str(info.value)
    assert message in str(info.value)


def test_a_rules_file_reloads_and_a_broken_edit_keeps_the_rules_in_force(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [{name: first, exclude: {items: [10]}}]\n")
    warnings: list[str] = []
    source = RuleFile(str(path), lambda p: load_rules(p, CATALOG), 0.01, warnings.append)
    assert [r.name for r in source.current().rules] == ["first"]

    def edit(text: str) -> None:
        path.write_text(text)
        stamp = time.time() + 2  # a new modification time even on coarse clocks
        os.utime(path, (stamp, stamp))
        time.sleep(0.02)

    edit("rules: [{name: second, exclude: {items: [20]}}]\n")
    assert [r.name for r in source.current().rules] == ["second"]
    edit('rules:\n  - name: third\n    when: "nope > 1"\n    exclude: {items: [20]}\n')
    assert [r.name for r in source.current().rules] == ["second"]  # kept
    assert source.failures == 1 and warnings and "rules.yaml:3:12" in warnings[-1]
    assert source.last_error is not None
    edit("rules: [{name: fourth, exclude: {items: [20]}}]\n")
    assert [r.name for r in source.current().rules] == ["fourth"] and source.last_error is None


def test_a_rules_file_that_does_not_load_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [{name: x}]\n")
    with pytest.raises(ValueError, match="a rule needs an action"):
        RuleFile(str(path), lambda p: load_rules(p, CATALOG))
    with pytest.raises(ValueError, match="No such file"):
        RuleFile(str(tmp_path / "missing.yaml"), lambda p: load_rules(p, CATALOG))
