"""One experiment's analysis: SRM check, per-metric lifts, CUPED, sequential test, decision.

:func:`analyze` reads a checked exposure table (:mod:`recsys.experiments.data`) of one
experiment, the experiment's design (:class:`~recsys.runtime.experiments.Experiment`:
arms, weights, control) and its :class:`~recsys.experiments.config.AnalysisConfig`, and
returns an :class:`ExperimentAnalysis`:

* the units per arm against the design (:mod:`recsys.experiments.srm`);
* for each treatment arm and metric, the fixed-horizon comparison with control
  (:func:`recsys.experiments.stats.compare`), without and with CUPED when a pre-period
  is given;
* with exposure times, the mSPRT at ``config.looks`` equally spaced times over the
  data's range (each look sums every unit's exposures up to then), giving always-valid
  p-values and confidence sequences, and the units per arm at each look;
* for the primary metric and each guardrail, per treatment arm, the fixed-horizon test's
  power (:func:`recsys.experiments.power.assess_power`) from the per-unit variance of
  the linearized metric pooled over the control and the arm (CUPED-adjusted when CUPED
  applies) with the absolute lift ``config.mde`` times the control's mean: the power at
  the units so far, the units (all arms) needed for power ``config.power``, and the
  smallest relative lift detectable at the units so far;
* the decision (:mod:`recsys.experiments.decision`).

Example:
    >>> from recsys.experiments.simulate import SimulationConfig, simulate_tables
    >>> from recsys.runtime.experiments import Arm, Experiment
    >>> exposures, pre = simulate_tables(SimulationConfig(units=4000), seed=1)
    >>> design = Experiment("simulated", "l", 0, 9999, 1.0,
    ...                     (Arm("control", 1), Arm("treatment", 1)), "l/simulated")
    >>> result = analyze(exposures, design, AnalysisConfig(looks=5), pre)
    >>> result.decision.verdict in ("ship", "do not ship", "keep running")
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.experiments.config import METRIC_NAMES, AnalysisConfig
from recsys.experiments.data import UnitTable, unit_table
from recsys.experiments.decision import Decision, MetricEvidence, combine, decide_arm
from recsys.experiments.moments import Moments
from recsys.experiments.power import PowerAssessment, assess_power
from recsys.experiments.sequential import SequentialResult, sequential_compare
from recsys.experiments.srm import SrmResult, srm_check
from recsys.experiments.stats import Comparison, compare, pooled_unit_variance
from recsys.runtime.experiments import Experiment


@dataclass(frozen=True)
class MetricResult:
    """One treatment arm against control on one metric.

    Attributes:
        metric: the metric's name.
        arm: the treatment arm.
        plain: the fixed-horizon comparison without adjustment.
        cuped: with CUPED (None without a pre-period or with ``cuped: false``).
        sequential: the mSPRT over looks (None without exposure times).
        evidence: what the decision reads.
    """

    metric: str
    arm: str
    plain: Comparison
    cuped: Comparison | None
    sequential: SequentialResult | None
    evidence: MetricEvidence

    @property
    def best(self) -> Comparison:
        """The comparison the decision uses: CUPED's where there is one."""
        return self.cuped if self.cuped is not None else self.plain


@dataclass(frozen=True)
class ExperimentAnalysis:
    """Everything the report shows about one experiment.

    Attributes:
        experiment: the experiment's name.
        control: the control arm.
        arms: all arms, in design order.
        weights: their designed shares.
        counts: units per arm.
        srm: the sample-ratio-mismatch check.
        results: one entry per treatment arm and metric.
        config: the analysis settings.
        has_pre: a pre-period was given.
        mixed_units: units dropped for being in two arms.
        unknown_rows: rows dropped for naming an unknown arm.
        look_times: the sequential looks' times (epoch s), or empty.
        look_counts: units per arm at each look, shape ``(looks, arms)``.
        decision: the verdict.
        notes: what the report should say about missing inputs and dropped rows.
        power: the power of the primary metric's and the guardrails' tests, per
            treatment arm (primary first).
    """

    experiment: str
    control: str
    arms: tuple[str, ...]
    weights: tuple[float, ...]
    counts: np.ndarray
    srm: SrmResult
    results: tuple[MetricResult, ...]
    config: AnalysisConfig
    has_pre: bool
    mixed_units: int
    unknown_rows: int
    look_times: np.ndarray
    look_counts: np.ndarray
    decision: Decision
    notes: tuple[str, ...] = field(default=())
    power: tuple[PowerAssessment, ...] = field(default=())

    @property
    def units(self) -> int:
        """Units analysed (all arms)."""
        return int(self.counts.sum())

    def result(self, metric: str, arm: str | None = None) -> MetricResult:
        """The result of ``metric`` for ``arm`` (default: the first treatment arm)."""
        for r in self.results:
            if r.metric == metric and (arm is None or r.arm == arm):
                return r
        raise KeyError(f"no result for metric {metric!r} and arm {arm!r}")

    def power_of(self, metric: str, arm: str | None = None) -> PowerAssessment:
        """The power of ``metric``'s test for ``arm`` (default: the first treatment arm)."""
        for p in self.power:
            if p.metric == metric and (arm is None or p.arm == arm):
                return p
        raise KeyError(f"no power for metric {metric!r} and arm {arm!r}")


def _stack(looks: list[Moments]) -> Moments:
    return Moments(
        np.stack([m.n for m in looks]),
        np.stack([m.sums for m in looks]),
        np.stack([m.cross for m in looks]),
    )


def analyze(
    exposures: pd.DataFrame,
    design: Experiment,
    config: AnalysisConfig,
    pre: pd.DataFrame | None = None,
    progress: Callable[[list[float]], Iterable[float]] | None = None,
) -> ExperimentAnalysis:
    """Analyses one experiment.

    Args:
        exposures: its checked exposure rows (``experiment`` already filtered).
        design: the experiment's design (arms, weights, control).
        config: the analysis settings.
        pre: the checked pre-period table, or None.
        progress: wraps the looks' iterable, e.g. ``tqdm`` (None: no progress shown).

    Returns:
        The :class:`ExperimentAnalysis`.
    """
    arms = tuple(a.name for a in design.arms)
    control = arms.index(design.control)
    treatments = [i for i in range(len(arms)) if i != control]
    table = unit_table(exposures, arms, pre)
    counts = table.counts()
    srm = srm_check(counts, design.weights, config.srm_alpha)
    use_cuped = config.cuped and table.has_pre
    # Bonferroni over the treatment arms: each arm's test at alpha / (arms - 1)
    level = config.alpha / len(treatments)

    timed = "timestamp" in exposures.columns and len(exposures) > 0
    looks_m: dict[str, list[list[Moments]]] = {m: [] for m in METRIC_NAMES}
    look_times = np.zeros(0)
    look_counts = np.zeros((0, len(arms)), dtype=np.int64)
    if timed:
        ts = exposures["timestamp"].to_numpy()
        look_times = np.linspace(ts.min(), ts.max(), config.looks + 1)[1:]
        cuts = [float(t) for t in look_times]
        per_look: list[np.ndarray] = []
        for cut in progress(cuts) if progress is not None else cuts:
            at: UnitTable = unit_table(exposures, arms, pre, until=cut)
            per_look.append(at.counts())
            for m in METRIC_NAMES:
                looks_m[m].append(at.moments(m))
        look_counts = np.stack(per_look)

    results: list[MetricResult] = []
    power: list[PowerAssessment] = []
    shares = np.asarray(design.weights, dtype=np.float64) / float(np.sum(design.weights))
    units_so_far = int(counts.sum())
    powered = list(dict.fromkeys((config.primary, *config.guardrails)))
    for t in treatments:
        for m in METRIC_NAMES:
            arm_moments = table.moments(m)
            plain = compare(arm_moments[control], arm_moments[t], level)
            cuped = (
                compare(arm_moments[control], arm_moments[t], level, True) if use_cuped else None
            )
            seq: SequentialResult | None = None
            if timed:
                c_looks = _stack([look[control] for look in looks_m[m]])
                t_looks = _stack([look[t] for look in looks_m[m]])
                seq, _ = sequential_compare(c_looks, t_looks, config.mixture_sd, level, use_cuped)
            best = cuped if cuped is not None else plain
            if seq is not None:
                p = float(seq.p_values[-1])
                diff = float(seq.diff[-1])
            else:
                p, diff = float(best.p_value), float(best.diff)
            evidence = MetricEvidence(
                metric=m,
                significant=bool(p < level),
                direction=int(np.sign(np.nan_to_num(diff))),
                p_value=p,
                rel=float(best.rel),
            )
            results.append(MetricResult(m, arms[t], plain, cuped, seq, evidence))
            if m in powered:
                variance = pooled_unit_variance(arm_moments[control], arm_moments[t], use_cuped)
                power.append(
                    assess_power(
                        m,
                        arms[t],
                        float(variance),
                        float(plain.control),
                        int(counts[control]),
                        int(counts[t]),
                        (float(shares[control]), float(shares[t])),
                        units_so_far,
                        level,
                        config.power,
                        config.mde,
                        use_cuped,
                        config.planned_units,
                    )
                )

    notes: list[str] = []
    if not timed:
        notes.append(
            "the table has no timestamp column: no sequential test; the fixed-horizon "
            "test is read only at the planned traffic"
        )
    if table.mixed_units:
        notes.append(f"{table.mixed_units} units appeared in two or more arms and were dropped")
    if table.unknown_rows:
        notes.append(f"{table.unknown_rows} rows named arms the design lacks and were dropped")
    if config.cuped and not table.has_pre:
        notes.append("no pre-period table: no CUPED adjustment")

    units = units_so_far
    if bool(srm.flagged):
        observed = dict(zip(arms, counts.tolist(), strict=True))
        designed = dict(zip(arms, np.round(design.weights, 4).tolist(), strict=True))
        decision = Decision(
            "do not ship",
            None,
            (
                f"sample ratio mismatch: units per arm {observed} "
                f"against designed shares {designed} "
                f"(chi-square p = {float(srm.p_value):.2g} < {config.srm_alpha}); the arms "
                "are not comparable: find the cause in assignment, logging or attribution "
                "before reading any metric",
            ),
        )
    else:
        arm_decisions = []
        rels = []
        for t in treatments:
            by_metric = {r.metric: r for r in results if r.arm == arms[t]}
            primary = by_metric[config.primary].evidence
            guards = [by_metric[g].evidence for g in config.guardrails if g != config.primary]
            reached = config.planned_units is None or units >= config.planned_units
            arm_decisions.append(
                decide_arm(arms[t], primary, guards, units, config.planned_units, timed or reached)
            )
            rels.append(primary.rel)
        decision = combine(arm_decisions, rels)
    return ExperimentAnalysis(
        experiment=design.name,
        control=design.control,
        arms=arms,
        weights=design.weights,
        counts=counts,
        srm=srm,
        results=tuple(results),
        config=config,
        has_pre=table.has_pre,
        mixed_units=table.mixed_units,
        unknown_rows=table.unknown_rows,
        look_times=look_times,
        look_counts=look_counts,
        decision=decision,
        notes=tuple(notes),
        power=tuple(sorted(power, key=lambda p: powered.index(p.metric))),
    )


def summary(analysis: ExperimentAnalysis) -> dict[str, Any]:
    """The analysis as JSON-ready plain values.

    Args:
        analysis: from :func:`analyze`.

    Returns:
        A nested mapping of floats, strings and lists.
    """
    out: dict[str, Any] = {
        "experiment": analysis.experiment,
        "control": analysis.control,
        "arms": list(analysis.arms),
        "designed_shares": list(analysis.weights),
        "units": {a: int(c) for a, c in zip(analysis.arms, analysis.counts, strict=True)},
        "srm": {
            "statistic": float(analysis.srm.statistic),
            "p_value": float(analysis.srm.p_value),
            "flagged": bool(analysis.srm.flagged),
        },
        "decision": {
            "verdict": analysis.decision.verdict,
            "arm": analysis.decision.arm,
            "reasons": list(analysis.decision.reasons),
        },
        "notes": list(analysis.notes),
        "power": [p.row() for p in analysis.power],
        "metrics": [],
    }
    for r in analysis.results:
        entry: dict[str, Any] = {"metric": r.metric, "arm": r.arm, "plain": r.plain.row()}
        if r.cuped is not None:
            entry["cuped"] = r.cuped.row()
        if r.sequential is not None:
            entry["sequential"] = {
                "p_values": r.sequential.p_values.tolist(),
                "lower": r.sequential.lower.tolist(),
                "upper": r.sequential.upper.tolist(),
                "diff": r.sequential.diff.tolist(),
                "first_rejection": int(np.asarray(r.sequential.first_rejection)),
            }
        out["metrics"].append(entry)
    return out
