"""Runs several estimators on one log with shared bootstrap resamples and tabulates them.

Example:
    >>> from recsys.ope.logged import LoggedBandit
    >>> log = LoggedBandit.build(action=[0, 1, 0, 1], reward=[1, 0, 0, 1],
    ...     pscore=[0.5] * 4, n_actions=2, action_dist=[[0.5, 0.5]] * 4)
    >>> [e.estimator for e in evaluate(log, config=BootstrapConfig(50))]
    ['IPS', 'SNIPS']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from recsys.ope.bootstrap import (
    BootstrapConfig,
    Estimate,
    Refit,
    bootstrap_replicates,
    summarize,
)
from recsys.ope.estimators import OffPolicyEstimator, default_estimators
from recsys.ope.logged import LoggedBandit


def applicable(
    log: LoggedBandit, estimators: Sequence[OffPolicyEstimator]
) -> list[OffPolicyEstimator]:
    """The estimators ``log`` has the inputs for (DM and DR need a distribution and a model)."""
    full = log.action_dist is not None and log.reward_hat is not None
    return [e for e in estimators if full or not e.needs_reward_model]


def evaluate(
    log: LoggedBandit,
    estimators: Sequence[OffPolicyEstimator] | None = None,
    config: BootstrapConfig | None = None,
    *,
    refit: Refit | None = None,
) -> list[Estimate]:
    """Every estimator's estimate on ``log`` with bootstrap intervals on shared resamples.

    Args:
        log: logged data with a candidate attached.
        estimators: which to run (default: those of :func:`default_estimators` that
            ``log``'s inputs allow; named ones that cannot run raise).
        config: bootstrap settings.
        refit: fits the reward model on a log (the whole one and every resample).

    Returns:
        One :class:`Estimate` per estimator, in order.
    """
    cfg = config or BootstrapConfig()
    fitted = refit(log) if refit is not None else log
    chosen = (
        list(estimators) if estimators is not None else applicable(fitted, default_estimators())
    )
    values = {e.name: e.estimate(fitted) for e in chosen}
    reps = bootstrap_replicates(log if refit else fitted, chosen, cfg, refit=refit)
    return [summarize(e.name, values[e.name], reps[e.name], cfg, log.n_rounds) for e in chosen]


def _num(x: float, digits: int) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def estimates_table(
    estimates: Sequence[Estimate],
    *,
    truth: float | None = None,
    truth_label: str = "truth",
    digits: int = 5,
) -> str:
    """A markdown table of estimates, with relative errors against ``truth`` if given.

    Args:
        estimates: the estimates (one row each).
        truth: the value to compare with (the true value, or an on-policy CTR).
        truth_label: what ``truth`` is, for the header.
        digits: decimals of the numbers.

    Returns:
        The table, one line per row.

    Example:
        >>> e = Estimate("IPS", 0.5, 0.4, 0.6, 0.05, 0.95, 100, 1000)
        >>> print(estimates_table([e], truth=0.5).splitlines()[2])
        | IPS | 0.50000 | [0.40000, 0.60000] | 0.05000 | 0.000 | yes |
    """
    level = f"{estimates[0].level:.0%}" if estimates else "95%"
    head = ["estimator", "estimate", f"{level} interval", "bootstrap std"]
    if truth is not None:
        head += [f"rel. error vs {truth_label}", f"interval covers {truth_label}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in estimates:
        cells = [
            e.estimator,
            _num(e.value, digits),
            f"[{_num(e.lower, digits)}, {_num(e.upper, digits)}]",
            _num(e.std_error, digits),
        ]
        if truth is not None:
            cells += [f"{e.relative_error(truth):.3f}", "yes" if e.covers(truth) else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
