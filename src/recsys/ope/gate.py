"""The promotion gate: a candidate policy goes live only when it provably beats the current one.

:func:`promote` compares the *lower* bound of the candidate's off-policy estimate with
the current policy's value (its estimate's point value, or a number such as its logged
on-policy CTR) plus an optional margin. Using the lower bound, not the point estimate,
means a candidate whose interval is wide because the log barely supports it stays off:
the gate errs towards keeping what is live.

Example:
    >>> from recsys.ope.bootstrap import Estimate
    >>> cand = Estimate("DR", 0.052, 0.047, 0.057, 0.0025, 0.95, 10_000, 1000)
    >>> promote(cand, 0.045).promote
    True
    >>> promote(cand, 0.050).promote
    False
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.ope.bootstrap import Estimate
from recsys.ope.errors import OPEInputError


@dataclass(frozen=True)
class PromotionConfig:
    """What the candidate must show.

    Attributes:
        margin: absolute improvement the lower bound must exceed the current value by
            (0: any improvement).
        relative_margin: improvement as a fraction of the current value, added to
            ``margin`` (e.g. 0.02: 2 % better).
    """

    margin: float = 0.0
    relative_margin: float = 0.0

    def __post_init__(self) -> None:
        for name in ("margin", "relative_margin"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise OPEInputError(f"{name}: must be finite and >= 0, got {v}")


def _label(role: str, name: str) -> str:
    return role if name == role else f"{role}: {name}"


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's decision and the numbers behind it.

    Attributes:
        promote: whether the candidate goes live.
        candidate: the candidate's estimate.
        current_value: the current policy's value compared against.
        current: the current policy's estimate, when one was given.
        threshold: what the lower bound had to exceed.
        candidate_name: the candidate's label.
        current_name: the current policy's label.
        reason: one sentence explaining the decision.
    """

    promote: bool
    candidate: Estimate
    current_value: float
    current: Estimate | None
    threshold: float
    candidate_name: str
    current_name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON-ready dict."""
        return {
            "decision": "promote" if self.promote else "keep current",
            "promote": self.promote,
            "reason": self.reason,
            "candidate_name": self.candidate_name,
            "current_name": self.current_name,
            "candidate": self.candidate.to_dict(),
            "current_value": self.current_value,
            "current": None if self.current is None else self.current.to_dict(),
            "threshold": self.threshold,
        }

    def to_markdown(self) -> str:
        """A short markdown report of the decision."""
        c = self.candidate
        verdict = "**promote**" if self.promote else "**keep current**"
        lines = [
            f"# Promotion gate: {self.candidate_name} vs {self.current_name}",
            "",
            f"Decision: {verdict}. {self.reason}",
            "",
            "| policy | value | lower bound | upper bound | from |",
            "|---|---|---|---|---|",
            f"| {_label('candidate', self.candidate_name)} | {c.value:.6f} | {c.lower:.6f} | "
            f"{c.upper:.6f} | {c.estimator}, {c.level:.0%}, {c.n_resamples} resamples |",
        ]
        cur = self.current
        current = _label("current", self.current_name)
        if cur is None:
            lines.append(f"| {current} | {self.current_value:.6f} | - | - | given |")
        else:
            lines.append(
                f"| {current} | {cur.value:.6f} | {cur.lower:.6f} | {cur.upper:.6f} | "
                f"{cur.estimator} |"
            )
        lines += ["", f"Threshold the candidate's lower bound had to exceed: {self.threshold:.6f}."]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path, stem: str = "promotion") -> tuple[Path, Path]:
        """Writes ``<stem>.md`` and ``<stem>.json`` into ``folder``.

        Returns:
            The markdown and JSON paths.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        md, js = out / f"{stem}.md", out / f"{stem}.json"
        md.write_text(self.to_markdown(), encoding="utf-8")
        js.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return md, js


def promote(
    candidate_estimate: Estimate,
    current_estimate: Estimate | float,
    *,
    config: PromotionConfig | None = None,
    candidate_name: str = "candidate",
    current_name: str = "current",
    report_dir: str | Path | None = None,
) -> PromotionDecision:
    """Decides whether the candidate policy goes live.

    The candidate is promoted only when its estimate's lower confidence bound is above
    ``current + margin + relative_margin * |current|``.

    Args:
        candidate_estimate: the candidate's off-policy estimate with its interval.
        current_estimate: the current policy's estimate (its point value is used) or
            value.
        config: the margins.
        candidate_name: a label for the report.
        current_name: a label for the report.
        report_dir: when given, ``promotion.md`` and ``promotion.json`` are written there.

    Returns:
        The decision.

    Raises:
        OPEInputError: the candidate has no interval (bootstrap with 0 resamples) or a
            value is NaN.
    """
    cfg = config or PromotionConfig()
    if math.isnan(candidate_estimate.lower) or math.isnan(candidate_estimate.value):
        raise OPEInputError(
            "candidate_estimate: has no confidence interval (run the bootstrap with resamples)"
        )
    if isinstance(current_estimate, Estimate):
        current: Estimate | None = current_estimate
        value = current_estimate.value
    else:
        current, value = None, float(current_estimate)
    if math.isnan(value):
        raise OPEInputError("current_estimate: is NaN")
    threshold = value + cfg.margin + cfg.relative_margin * abs(value)
    lower = candidate_estimate.lower
    go = lower > threshold
    level = f"{candidate_estimate.level:.0%}"
    if go:
        reason = (
            f"The candidate's {level} lower bound {lower:.6f} is above {threshold:.6f} "
            f"(the current value {value:.6f} plus the margin)."
        )
    else:
        reason = (
            f"The candidate's {level} lower bound {lower:.6f} is not above {threshold:.6f} "
            f"(the current value {value:.6f} plus the margin): not shown to be better."
        )
    decision = PromotionDecision(
        promote=go,
        candidate=candidate_estimate,
        current_value=value,
        current=current,
        threshold=threshold,
        candidate_name=candidate_name,
        current_name=current_name,
        reason=reason,
    )
    if report_dir is not None:
        decision.write(report_dir)
    return decision
