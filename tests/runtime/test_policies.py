"""Slate policies: exact propensities against empirical frequencies, determinism, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recsys.runtime.policies import SlatePolicy, parse_policy, request_rng

SCORES = np.array([2.0, 1.5, 1.2, 0.4, 0.0, -0.3])
DRAWS = 30_000


def _draw(
    policy: SlatePolicy, k: int
) -> tuple[Counter[tuple[int, ...]], dict[tuple[int, ...], object]]:
    counts: Counter[tuple[int, ...]] = Counter()
    slates: dict[tuple[int, ...], object] = {}
    for i in range(DRAWS):
        slate = policy.choose(SCORES, k, request_rng(f"req-{i}"))
        key = tuple(slate.order.tolist())
        counts[key] += 1
        slates[key] = slate
    return counts, slates


@pytest.mark.parametrize("text", ["epsilon_greedy:0.3", "plackett_luce:0.7"])
def test_logged_propensities_match_empirical_frequencies(text: str) -> None:
    policy = parse_policy(text, depth=5)
    k = 3
    counts, slates = _draw(policy, k)
    total = 0.0
    for key, slate in slates.items():
        p = slate.slate_propensity  # type: ignore[attr-defined]
        total += p
        # the slate's probability equals the product of its sequential choices
        assert p == pytest.approx(float(np.prod(slate.propensities)), rel=1e-12)  # type: ignore[attr-defined]
        # binomial standard error of the frequency; 5 sigma
        se = np.sqrt(p * (1 - p) / DRAWS)
        assert abs(counts[key] / DRAWS - p) <= 5 * se + 1e-4, (key, counts[key] / DRAWS, p)
    # every slate that was drawn is one the policy can make, and most of the mass was seen
    assert total <= 1.0 + 1e-9 and total > 0.99
    # first position: sequential and marginal agree, against the frequency per item
    first = Counter(key[0] for key in counts.elements())
    for key, slate in slates.items():
        expected = float(slate.propensities[0])  # type: ignore[attr-defined]
        se = np.sqrt(expected * (1 - expected) / DRAWS)
        assert abs(first[key[0]] / DRAWS - expected) <= 5 * se + 1e-4


def test_epsilon_greedy_marginals_match_frequencies_per_position() -> None:
    policy = parse_policy("epsilon_greedy:0.4", depth=6)
    counts, slates = _draw(policy, 3)
    for position in range(3):
        at = Counter(key[position] for key in counts.elements())
        for key, slate in slates.items():
            expected = float(slate.position_propensities[position])  # type: ignore[attr-defined]
            se = np.sqrt(expected * (1 - expected) / DRAWS)
            assert abs(at[key[position]] / DRAWS - expected) <= 5 * se + 1e-4


def test_the_same_request_id_draws_the_same_slate_and_ids_differ() -> None:
    policy = parse_policy("plackett_luce:1.0", depth=6)
    a = policy.choose(SCORES, 4, request_rng("r-1"))
    b = policy.choose(SCORES, 4, request_rng("r-1"))
    assert a.order.tolist() == b.order.tolist()
    orders = {tuple(policy.choose(SCORES, 4, request_rng(f"r-{i}")).order) for i in range(50)}
    assert len(orders) > 5


def test_low_temperature_follows_the_ranking_and_deterministic_is_its_top() -> None:
    cold = parse_policy("plackett_luce:0.01", depth=6).choose(SCORES, 3, request_rng("x"))
    assert cold.order.tolist() == [0, 1, 2] and cold.slate_propensity > 0.99
    top = parse_policy("deterministic").choose(SCORES, 3, request_rng("x"))
    assert top.order.tolist() == [0, 1, 2] and top.slate_propensity == 1.0
    assert top.propensities.tolist() == [1.0, 1.0, 1.0]
    # epsilon 0 is the ranking, a short list gives what there is
    assert parse_policy("epsilon_greedy:0").choose(SCORES, 9, request_rng("x")).order.tolist() == [
        0, 1, 2, 3, 4, 5]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("softmax:1", "unknown policy"),
        ("epsilon_greedy", "needs a parameter"),
        ("epsilon_greedy:1.5", "epsilon must be in"),
        ("plackett_luce:0", "temperature must be > 0"),
        ("plackett_luce:nan", "temperature must be > 0"),
        ("plackett_luce:hot", "is not a number"),
        ("deterministic:1", "takes no parameter"),
    ],
)
def test_bad_policies_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policy(text)
