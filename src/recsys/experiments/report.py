"""The experiment report: markdown with PNG plots, and the analysis as JSON.

:func:`write_report` writes into a folder:

* ``report.md``: the decision and why, the units per arm against the design (SRM), a
  table per treatment arm of every metric (control and treatment values, absolute and
  relative lift with intervals, p-values fixed-horizon and always-valid, CUPED's
  variance reduction), the power of the primary metric's and the guardrails' tests (at
  the traffic so far against ``mde``, the traffic needed, the smallest detectable lift)
  with one sentence on whether the traffic so far reaches what the plan needs, and notes
  (dropped units, missing inputs);
* ``lift.png``: relative lift with its interval per metric, without and with CUPED;
* ``sequential.png``: the primary metric's always-valid p-value and confidence sequence
  over time (only with exposure times);
* ``traffic.png``: units per arm against the designed shares, and over time;
* ``analysis.json``: every number of the report.

Plots use matplotlib's Agg backend (no display needed).

Example::

    analysis = analyze(exposures, design, config, pre)
    write_report(analysis, Path("reports/explore_eps10"))
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np

from recsys.experiments.analysis import ExperimentAnalysis, MetricResult, summary
from recsys.experiments.metrics import METRICS
from recsys.experiments.power import PowerAssessment


def _fmt(value: float, digits: int = 4) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2%}"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "< 1e-4" if value < 1e-4 else f"{value:.4f}"


def _days(analysis: ExperimentAnalysis) -> np.ndarray:
    """Look times as days since the first exposure (the looks split the range evenly)."""
    t = analysis.look_times
    step = t[1] - t[0] if len(t) > 1 else 0.0
    return (t - (t[0] - step)) / 86_400.0


def plot_lift(analysis: ExperimentAnalysis, path: Path) -> None:
    """Relative lift with its interval per metric and treatment arm (plain and CUPED).

    Args:
        analysis: the analysis.
        path: the PNG to write.
    """
    rows = list(analysis.results)
    fig, ax = plt.subplots(figsize=(7, 0.7 * len(rows) + 1.5))
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows, strict=True):
        comps = [("fixed horizon", r.plain, "tab:blue", 0.12)]
        if r.cuped is not None:
            comps.append(("CUPED", r.cuped, "tab:orange", -0.12))
        for label, c, color, dy in comps:
            low, high, mid = float(c.rel_low), float(c.rel_high), float(c.rel)
            ax.errorbar(
                mid * 100, y + dy, xerr=[[(mid - low) * 100], [(high - mid) * 100]],
                fmt="o", color=color, capsize=4, label=label if y == ys[0] else None,
            )  # fmt: skip
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{METRICS[r.metric].label}\n{r.arm}" for r in rows], fontsize=8)
    level = 1 - analysis.config.alpha
    ax.set_xlabel(f"relative lift vs {analysis.control} (%), {level:.0%} interval")
    ax.set_title(f"{analysis.experiment}: lift per metric")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sequential(analysis: ExperimentAnalysis, result: MetricResult, path: Path) -> None:
    """The always-valid p-value and the confidence sequence of one metric over time.

    Args:
        analysis: the analysis (look times).
        result: the metric's result (with a sequential test).
        path: the PNG to write.
    """
    seq = result.sequential
    assert seq is not None, "plot_sequential needs a sequential result"
    days = _days(analysis)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(days, seq.p_values, marker=".", label="always-valid p-value")
    top.axhline(seq.alpha, color="tab:red", ls="--", label=f"alpha = {seq.alpha:g}")
    top.set_yscale("log")
    top.set_ylim(max(1e-6, float(np.nanmin(seq.p_values)) / 3), 1.5)
    top.set_ylabel("p-value (log)")
    top.legend(fontsize=8)
    top.set_title(f"{analysis.experiment}: {METRICS[result.metric].label}, {result.arm}")
    finite = np.isfinite(seq.lower) & np.isfinite(seq.upper)
    bottom.fill_between(
        days[finite], seq.lower[finite], seq.upper[finite], alpha=0.3,
        label=f"{1 - seq.alpha:.0%} confidence sequence",
    )  # fmt: skip
    bottom.plot(days, seq.diff, color="tab:blue", label="lift estimate")
    bottom.axhline(0, color="black", lw=0.8)
    # the first looks' sequences are very wide: scale to the last three quarters
    late = finite & (np.arange(len(days)) >= len(days) // 4)
    if late.any():
        low, high = float(seq.lower[late].min()), float(seq.upper[late].max())
        pad = 0.1 * (high - low)
        bottom.set_ylim(min(low, 0.0) - pad, max(high, 0.0) + pad)
    bottom.set_xlabel("days since the first exposure")
    bottom.set_ylabel(f"absolute lift vs {analysis.control}")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_traffic(analysis: ExperimentAnalysis, path: Path) -> None:
    """Units per arm against the designed shares, and units per arm over time.

    Args:
        analysis: the analysis.
        path: the PNG to write.
    """
    timed = len(analysis.look_times) > 0
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(10 if timed else 5.5, 4))
    ax = axes[0] if timed else axes
    x = np.arange(len(analysis.arms))
    observed = analysis.counts / max(1, analysis.units)
    ax.bar(x - 0.2, np.asarray(analysis.weights) * 100, 0.4, label="design", color="tab:gray")
    ax.bar(x + 0.2, observed * 100, 0.4, label="observed", color="tab:blue")
    ax.set_xticks(x)
    ax.set_xticklabels(analysis.arms)
    ax.set_ylabel("share of units (%)")
    srm = analysis.srm
    verdict = "mismatch" if bool(srm.flagged) else "ok"
    ax.set_title(f"arm traffic vs design (SRM p = {float(srm.p_value):.3g}: {verdict})")
    ax.legend(fontsize=8)
    if timed:
        days = _days(analysis)
        for k, arm in enumerate(analysis.arms):
            axes[1].plot(days, analysis.look_counts[:, k], marker=".", label=arm)
        axes[1].set_xlabel("days since the first exposure")
        axes[1].set_ylabel("units (cumulative)")
        axes[1].set_title("units per arm over time")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def power_sentence(analysis: ExperimentAnalysis) -> str:
    """Whether the traffic so far reaches what the primary metric's plan needs.

    Args:
        analysis: the analysis.

    Returns:
        One sentence (the largest need over the treatment arms, the smallest power).
    """
    cfg = analysis.config
    primary = [p for p in analysis.power if p.metric == cfg.primary]
    name = f"`{cfg.primary}`"
    if cfg.mde is None:
        detectable = max((p.detectable for p in primary), default=math.nan)
        return (
            f"No `mde` is set: at the {analysis.units:,} units so far the smallest relative "
            f"lift of {name} detected with power {cfg.power:.0%} is "
            f"{'n/a' if not math.isfinite(detectable) else f'{detectable:.2%}'}; set `mde` "
            "in the `analysis:` block for the traffic a lift of that size needs."
        )
    needs = [p.required_units for p in primary]
    powers = [p.power for p in primary]
    if not primary or any(n is None for n in needs) or any(x is None for x in powers):
        return (
            f"The variance of {name} cannot be estimated from the {analysis.units:,} units "
            "so far: no power and no traffic needed."
        )
    needed = max(n for n in needs if n is not None)
    now = min(x for x in powers if x is not None)
    lift = f"a {cfg.mde:+.2%} lift of {name}"
    head = (
        f"The {analysis.units:,} units so far **reach** the {needed:,} units (all arms) needed "
        f"for power {cfg.power:.0%} at {lift}: power so far {now:.3f}"
        if analysis.units >= needed
        else f"The {analysis.units:,} units so far **do not reach** the {needed:,} units (all "
        f"arms) needed for power {cfg.power:.0%} at {lift}, {analysis.units / needed:.0%} of "
        f"them: power so far {now:.3f}"
    )
    planned = [p.planned_power for p in primary if p.planned_power is not None]
    if cfg.planned_units is not None and planned:
        head += f"; the configured `planned_units` ({cfg.planned_units:,}) give power " + (
            f"{min(planned):.3f}"
        )
    return head + "."


def _power_rows(power: tuple[PowerAssessment, ...], mde: float | None) -> list[str]:
    rows = [
        "| metric | arm | variance | per-unit variance | control | detectable lift now "
        f"| power now at {_pct(mde) if mde is not None else 'mde'} | units needed (all arms) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for p in power:
        rows.append(
            f"| {METRICS[p.metric].label} | {p.arm} | {'CUPED-adjusted' if p.cuped else 'plain'} | "
            f"{_fmt(p.unit_variance)} | {_fmt(p.control_mean)} | "
            f"{'n/a' if not math.isfinite(p.detectable) else f'{p.detectable:.2%}'} | "
            f"{'n/a' if p.power is None else f'{p.power:.3f}'} | "
            f"{'n/a' if p.required_units is None else f'{p.required_units:,}'} |"
        )
    return rows


def render_markdown(analysis: ExperimentAnalysis, images: dict[str, str]) -> str:
    """The report's markdown.

    Args:
        analysis: the analysis.
        images: plot name (``lift``, ``sequential``, ``traffic``) -> file name.

    Returns:
        The markdown text.
    """
    cfg = analysis.config
    d = analysis.decision
    lines = [
        f"# Experiment report: {analysis.experiment}",
        "",
        f"## Decision: **{d.verdict}**" + (f" (`{d.arm}`)" if d.arm else ""),
        "",
        *[f"- {reason}" for reason in d.reasons],
        "",
        f"Primary metric: `{cfg.primary}`; guardrails: "
        + (", ".join(f"`{g}`" for g in cfg.guardrails) or "none")
        + f"; alpha {cfg.alpha:g}"
        + (
            f" (Bonferroni over {len(analysis.arms) - 1} treatment arms)"
            if len(analysis.arms) > 2
            else ""
        )
        + f"; planned units {cfg.planned_units if cfg.planned_units is not None else 'none'}; "
        f"units analysed {analysis.units}.",
        "",
        "## Traffic and sample-ratio check",
        "",
        "| arm | designed share | units | observed share |",
        "|---|---:|---:|---:|",
    ]
    for arm, w, n in zip(analysis.arms, analysis.weights, analysis.counts, strict=True):
        share = n / max(1, analysis.units)
        lines.append(f"| {arm} | {w:.2%} | {int(n)} | {share:.2%} |")
    srm = analysis.srm
    lines += [
        "",
        f"Chi-square goodness of fit: X^2 = {float(srm.statistic):.3f}, df = {srm.df}, "
        f"p = {float(srm.p_value):.3g} "
        + (
            f"< {cfg.srm_alpha:g}: **sample ratio mismatch**."
            if bool(srm.flagged)
            else f">= {cfg.srm_alpha:g}: no mismatch."
        ),
        "",
        f"![traffic]({images['traffic']})",
        "",
        "## Metrics",
        "",
    ]
    for arm in analysis.arms:
        rows = [r for r in analysis.results if r.arm == arm]
        if not rows:
            continue
        lines += [
            f"### {arm} vs {analysis.control}",
            "",
            "| metric | control | treatment | abs. lift [CI] | rel. lift [CI] | p (fixed) "
            "| p (always valid) | CUPED rel. lift [CI] | CUPED var. reduction |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            c = r.plain
            seq_p = _p(float(r.sequential.p_values[-1])) if r.sequential is not None else "n/a"
            if r.cuped is not None:
                cu = r.cuped
                cuped_cell = (
                    f"{_pct(float(cu.rel))} [{_pct(float(cu.rel_low))}, {_pct(float(cu.rel_high))}]"
                )
                vr = f"{float(cu.variance_reduction):.1%}"
            else:
                cuped_cell, vr = "n/a", "n/a"
            lines.append(
                f"| {METRICS[r.metric].label} | {_fmt(float(c.control))} | "
                f"{_fmt(float(c.treatment))} | {_fmt(float(c.diff), 3)} "
                f"[{_fmt(float(c.ci_low), 3)}, {_fmt(float(c.ci_high), 3)}] | "
                f"{_pct(float(c.rel))} [{_pct(float(c.rel_low))}, {_pct(float(c.rel_high))}] | "
                f"{_p(float(c.p_value))} | {seq_p} | {cuped_cell} | {vr} |"
            )
        lines.append("")
    lines += [f"![lift]({images['lift']})", ""]
    if analysis.power:
        variance = "CUPED-adjusted " if any(p.cuped for p in analysis.power) else ""
        lines += [
            "## Power",
            "",
            power_sentence(analysis),
            "",
            *_power_rows(analysis.power, cfg.mde),
            "",
            f"The fixed-horizon two-sided test at level {analysis.power[0].alpha:g} (normal "
            f"approximation) with target power {cfg.power:.0%}, from the {variance}per-unit "
            "variance of the linearized metric pooled over the control and the arm; the "
            "absolute lift is `mde` times the control's mean, and the detectable lift is the "
            "smallest relative lift detected with the target power at the units so far."
            + (" Guardrails use the same `mde`." if len(cfg.guardrails) else "")
            + " The always-valid sequential test needs more traffic than this for the same "
            "power.",
            "",
        ]
    if "sequential" in images:
        primary = analysis.result(cfg.primary)
        seq = primary.sequential
        assert seq is not None
        first = int(np.asarray(seq.first_rejection))
        when = (
            f"first below alpha at look {first + 1} of {len(seq.p_values)}"
            if first >= 0
            else f"not below alpha in {len(seq.p_values)} looks"
        )
        lines += [
            "## Sequential test (always valid)",
            "",
            f"mSPRT with a normal mixture (sd {cfg.mixture_sd:g} x control mean) on "
            f"`{cfg.primary}`"
            + (" (CUPED-adjusted)" if primary.cuped is not None else "")
            + f", {len(seq.p_values)} looks: final always-valid p = "
            f"{_p(float(seq.p_values[-1]))}, {when}. The p-value and the confidence "
            "sequence stay valid however often the experiment is looked at.",
            "",
            f"![sequential]({images['sequential']})",
            "",
        ]
    if analysis.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in analysis.notes], ""]
    lines += [
        "## Method",
        "",
        "Ratio metrics use the delta method over units (linearized values); the "
        "fixed-horizon tests are Welch t-tests; relative-lift intervals use the delta "
        "method; CUPED uses the pre-period value of the same metric with theta pooled "
        "over arms; the sequential test is the mSPRT of Johari et al. "
        "(docs/experiments.md).",
        "",
    ]
    return "\n".join(lines)


def write_report(analysis: ExperimentAnalysis, out: Path) -> Path:
    """Writes the report, its plots and its JSON into ``out``.

    Args:
        analysis: from :func:`recsys.experiments.analysis.analyze`.
        out: the folder (created when missing).

    Returns:
        The path of ``report.md``.
    """
    out.mkdir(parents=True, exist_ok=True)
    images = {"lift": "lift.png", "traffic": "traffic.png"}
    plot_lift(analysis, out / images["lift"])
    plot_traffic(analysis, out / images["traffic"])
    primary = analysis.result(analysis.config.primary)
    if primary.sequential is not None and len(analysis.look_times) > 0:
        images["sequential"] = "sequential.png"
        plot_sequential(analysis, primary, out / images["sequential"])
    report = out / "report.md"
    report.write_text(render_markdown(analysis, images), encoding="utf-8")
    (out / "analysis.json").write_text(
        json.dumps(summary(analysis), indent=2, allow_nan=True) + "\n", encoding="utf-8"
    )
    return report
