"""Experiments YAML: the example file, defaults, and errors located at file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.experiments import ExperimentConfigError, load_experiments, load_experiments_text
from recsys.runtime.context import RequestContext

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "example.yaml"


def error(text: str) -> ExperimentConfigError:
    with pytest.raises(ExperimentConfigError) as info:
        load_experiments_text(text, "ab.yaml")
    return info.value


def test_the_example_file_loads_and_assigns() -> None:
    loaded = load_experiments(EXAMPLE)
    s = loaded.experiments
    assert [layer.name for layer in s.layers] == ["ranking_policy", "ranking_model"]
    explore = s.experiment("explore_eps10")
    assert (explore.first_bucket, explore.last_bucket, explore.traffic) == (0, 4999, 0.1)
    assert explore.targeting.context["device_type"] == {"mobile", "tablet"}
    assert loaded.analysis["explore_eps10"].guardrails == ("dwell",)
    assert loaded.analysis["explore_eps10"].planned_units == 80_000
    assert loaded.analysis["ranker_v2"].guardrails == ("conversion", "dwell")
    assert s.experiment("ranker_v2").weights == (0.9, 0.1)
    assert dict(s.experiment("ranker_v2").arms[1].params) == {"mmr_lambda": 0.3}
    assert loaded.source.startswith(f"{EXAMPLE}@")
    ctx = RequestContext(device_type="mobile", surface="home")
    got = {a.experiment for u in range(3000) for a in s.assign(u, ["engaged_clickers"], ctx)}
    assert got == {"explore_eps10", "plackett_luce_t05", "ranker_v2"}


def test_defaults() -> None:
    loaded = load_experiments_text(
        "layers: [{name: l, experiments: [{name: e, arms: [{name: a, weight: 1}, "
        "{name: b, weight: 3}]}]}]"
    )
    [layer] = loaded.experiments.layers
    e = layer.experiments[0]
    assert (layer.salt, layer.unit, layer.buckets) == ("l", "user", 10_000)
    assert (e.first_bucket, e.last_bucket, e.traffic, e.salt, e.control) == (
        0,
        9999,
        1.0,
        "l/e",
        "a",
    )
    assert e.weights == (0.25, 0.75) and e.targeting.is_everyone
    assert loaded.analysis["e"].primary == "ctr"
    assert load_experiments_text("").experiments.layers == ()


TWO_ARMS = "arms: [{name: c, weight: 1}, {name: t, weight: 1}]"


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("layers:\n  - name: l\n    experiment: []\n", 3, 5, "unknown key 'experiment'"),
        ("layers:\n  - name: L\n", 2, 11, "must match"),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n        buckets: 0..5000\n"
            f"        {TWO_ARMS}\n      - name: b\n        buckets: 5000..9999\n"
            f"        {TWO_ARMS}\n",
            7,
            9,
            "overlap experiment 'a'",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n        buckets: 0..10000\n"
            f"        {TWO_ARMS}\n",
            5,
            18,
            "end past the layer's last bucket 9999",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n        traffic: 1.5\n"
            f"        {TWO_ARMS}\n",
            5,
            18,
            "traffic must be in [0, 1]",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        arms: [{name: c, weight: 1}, {name: t, weight: 0}]\n",
            5,
            56,
            "weight must be > 0",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        arms: [{name: c, weight: 1}]\n",
            5,
            15,
            "two or more arms",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        arms: [{name: c, weight: 1}, {name: c, weight: 1}]\n",
            5,
            38,
            "arm 'c' appears twice",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n        control: x\n"
            f"        {TWO_ARMS}\n",
            5,
            18,
            "control 'x' is not one of the arms",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        targeting: {context: {device_type: [phone]}}\n"
            f"        {TWO_ARMS}\n",
            5,
            45,
            "unknown device type 'phone'",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        targeting: {context: {country: [Germany]}}\n"
            f"        {TWO_ARMS}\n",
            5,
            41,
            "ISO 3166-1",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        targeting: {context: {hour: [1]}}\n"
            f"        {TWO_ARMS}\n",
            5,
            31,
            "unknown key 'hour'",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        targeting: {segments: {any: [x], none: [x]}}\n"
            f"        {TWO_ARMS}\n",
            5,
            31,
            "both required and excluded",
        ),
        (
            "layers:\n  - name: x\n    salt: s\n  - name: y\n    salt: s\n",
            5,
            11,
            "salt 's' is also layer 'x'",
        ),
        (
            "layers:\n  - name: l\n    unit: device\n",
            3,
            11,
            "unit must be one of",
        ),
        (
            "layers:\n  - {name: l, experiments: [{name: a, " + TWO_ARMS + "}]}\n"
            "  - {name: m, experiments: [{name: a, " + TWO_ARMS + "}]}\n",
            3,
            29,
            "the name is also an experiment at ab.yaml:2",
        ),
        (
            "layers:\n  - {name: l, experiments: [{name: a, arms: [{name: c, weight: 1}, "
            "{name: t, weight: 1, policy: p}]}]}\n"
            "  - {name: m, experiments: [{name: b, arms: [{name: c, weight: 1}, "
            "{name: t, weight: 1, policy: q}]}]}\n",
            3,
            29,
            "changes 'policy', which layer 'l' changes too",
        ),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n"
            "        analysis: {primary: revenue}\n"
            f"        {TWO_ARMS}\n",
            5,
            29,
            "unknown metric 'revenue'",
        ),
        (
            "layers:\n  - name: l\n    name: m\n",
            3,
            5,
            "key 'name' appears twice",
        ),
        ("layers: [\n", 2, 1, "YAML"),
        (
            "layers:\n  - name: l\n    experiments:\n      - name: a\n        " + TWO_ARMS + "\n"
            "      - name: b\n        " + TWO_ARMS + "\n",
            4,
            9,
            "needs 'buckets'",
        ),
    ],
)
def test_errors_name_file_line_and_column(text: str, line: int, column: int, message: str) -> None:
    e = error(text)
    assert message in e.message, e
    assert (e.source, e.line, e.column) == ("ab.yaml", line, column), e
    assert str(e).startswith(f"ab.yaml:{line}:{column}: ")


def test_errors_name_the_layer_and_experiment() -> None:
    e = error(
        "layers:\n  - name: ranking\n    experiments:\n      - name: explore\n"
        "        traffic: -1\n        " + TWO_ARMS + "\n"
    )
    assert e.message.startswith("layer 'ranking': experiment 'explore': traffic")
