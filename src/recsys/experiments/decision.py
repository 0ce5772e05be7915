"""The decision an analysis states: ship, do not ship, or keep running, and why.

In order:

1. a sample-ratio mismatch -> **do not ship**: the arms are not comparable, whatever the
   metrics say (find the cause in assignment, logging or attribution first);
2. per treatment arm, each metric is *significant* when its test rejects at
   ``alpha / (arms - 1)`` (Bonferroni over the treatment arms): the always-valid
   sequential p-value when the data has times (so looking early is allowed), else the
   fixed-horizon test, which is read only once the planned traffic is reached;
   - the primary metric significantly worse, or a guardrail significantly worse ->
     **do not ship** that arm;
   - the primary significantly better and no guardrail significantly worse -> **ship**;
   - otherwise, before the planned traffic -> **keep running**; at or past it (or with
     no plan and no sequential test) -> **do not ship**: no effect as large as the plan
     was sized for;
3. the experiment: **ship** the arm with the largest primary lift among those to ship;
   **keep running** if any arm keeps running; else **do not ship**.

Every metric here is better when higher (CTR, conversion, dwell).

Example:
    >>> e = MetricEvidence("ctr", significant=True, direction=1, p_value=0.001, rel=0.03)
    >>> decide_arm("treatment", e, [], units=1000, planned_units=None).verdict
    'ship'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SHIP = "ship"
DO_NOT_SHIP = "do not ship"
KEEP_RUNNING = "keep running"


@dataclass(frozen=True)
class MetricEvidence:
    """What one metric's test says for one treatment arm.

    Attributes:
        metric: the metric's name.
        significant: the test rejected "no difference".
        direction: the sign of the lift estimate (1, -1 or 0).
        p_value: the p-value read (sequential or fixed-horizon).
        rel: the relative lift estimate.
    """

    metric: str
    significant: bool
    direction: int
    p_value: float
    rel: float


@dataclass(frozen=True)
class Decision:
    """A verdict with its reasons.

    Attributes:
        verdict: ``ship``, ``do not ship`` or ``keep running``.
        arm: the arm to ship (None otherwise).
        reasons: sentences saying why.
    """

    verdict: str
    arm: str | None
    reasons: tuple[str, ...]


def decide_arm(
    arm: str,
    primary: MetricEvidence,
    guardrails: Sequence[MetricEvidence],
    units: int,
    planned_units: int | None,
    final: bool = True,
) -> Decision:
    """The verdict for one treatment arm.

    Args:
        arm: the treatment arm's name.
        primary: the primary metric's evidence.
        guardrails: each guardrail's evidence.
        units: exposed units so far (all arms).
        planned_units: the plan's units, or None.
        final: the test may be read now (always for the sequential test; for the
            fixed-horizon one only at or past the plan).

    Returns:
        The arm's :class:`Decision`.
    """
    harmed = [g for g in guardrails if g.significant and g.direction < 0]
    if primary.significant and primary.direction < 0:
        return Decision(
            DO_NOT_SHIP,
            None,
            (
                f"{arm}: {primary.metric} is significantly worse ({primary.rel:+.2%}, "
                f"p = {primary.p_value:.3g})",
            ),
        )
    if harmed:
        worst = ", ".join(f"{g.metric} {g.rel:+.2%} (p = {g.p_value:.3g})" for g in harmed)
        return Decision(DO_NOT_SHIP, None, (f"{arm}: guardrail significantly worse: {worst}",))
    if primary.significant and primary.direction > 0 and final:
        return Decision(
            SHIP,
            arm,
            (
                f"{arm}: {primary.metric} is significantly better ({primary.rel:+.2%}, "
                f"p = {primary.p_value:.3g}) and no guardrail is significantly worse",
            ),
        )
    reached = planned_units is not None and units >= planned_units
    if not final or (planned_units is not None and not reached):
        plan = f" of the planned {planned_units}" if planned_units is not None else ""
        return Decision(
            KEEP_RUNNING,
            None,
            (
                f"{arm}: {primary.metric} not significant yet ({primary.rel:+.2%}, p = "
                f"{primary.p_value:.3g}) at {units} units{plan}",
            ),
        )
    return Decision(
        DO_NOT_SHIP,
        None,
        (
            f"{arm}: no significant change in {primary.metric} ({primary.rel:+.2%}, p = "
            f"{primary.p_value:.3g}) at {units} units"
            + (" (the planned traffic)" if reached else ""),
        ),
    )


def combine(decisions: Sequence[Decision], primary_rel: Sequence[float]) -> Decision:
    """The experiment's verdict from its treatment arms' verdicts.

    Args:
        decisions: one per treatment arm.
        primary_rel: each arm's relative primary lift (to pick among arms to ship).

    Returns:
        The experiment's :class:`Decision`, with every arm's reasons.
    """
    reasons = tuple(r for d in decisions for r in d.reasons)
    ship = [(rel, d) for d, rel in zip(decisions, primary_rel, strict=True) if d.verdict == SHIP]
    if ship:
        best = max(ship, key=lambda pair: pair[0])[1]
        return Decision(SHIP, best.arm, reasons)
    if any(d.verdict == KEEP_RUNNING for d in decisions):
        return Decision(KEEP_RUNNING, None, reasons)
    return Decision(DO_NOT_SHIP, None, reasons)
