"""An A/B test run end to end: served arms, simulated users, the analysis, the truth.

:func:`run_ab` sends simulated visits to a repository whose ``recommend`` has an
experiments file (the arm decides each request's slate policy), turns the log into the
analysis input (:meth:`~recsys.sim.loop.SimLog.exposure_table`) and analyses it with
:func:`recsys.experiments.analysis.analyze`. Because the simulator records every shown
item's true click probability, the result also carries each arm's true expected CTR, so
the analysis's estimate can be compared with the truth.

Example:
    >>> cfg = SimConfig(steps=5000)  # doctest: +SKIP
    >>> result = run_ab(world, recommender, experiments, "explore_pl", cfg)  # doctest: +SKIP
    >>> result.truth, result.analysis.decision  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.sim.loop import Recommender, SimConfig, SimLog, simulate
from recsys.sim.world import World


@dataclass
class AbResult:
    """What one A/B run gave.

    Attributes:
        log: the simulation log.
        table: the analysis input (one row per visit in the experiment).
        analysis: the :class:`~recsys.experiments.analysis.ExperimentAnalysis`.
        truth: per arm, the true expected CTR of the lists it showed (``true_clicks /
            impressions``) and the observed CTR.
    """

    log: SimLog
    table: Any
    analysis: Any
    truth: dict[str, dict[str, float]]


def run_ab(
    world: World,
    recommender: Recommender,
    loaded: Any,
    experiment: str,
    config: SimConfig,
    report_dir: Path | None = None,
) -> AbResult:
    """Simulates visits, then analyses ``experiment``.

    Args:
        world: the simulated users.
        recommender: the served model (or its in-process twin) with the experiments.
        loaded: the experiments file as loaded (``recsys.experiments.load_experiments``).
        experiment: the experiment to analyse.
        config: the simulation.
        report_dir: where to write the report (markdown, plots, JSON); None: not written.
    """
    from recsys.experiments.analysis import analyze
    from recsys.experiments.data import check_table
    from recsys.experiments.report import write_report

    log = simulate(world, recommender, config)
    table = log.exposure_table(experiment)
    if table.empty:
        raise ValueError(f"no visit was assigned to experiment {experiment!r}")
    design = loaded.experiments.experiment(experiment)
    checked = check_table(table.drop(columns=["true_clicks"]), f"simulation of {experiment}")
    analysis = analyze(checked, design, loaded.analysis[experiment])
    truth: dict[str, dict[str, float]] = {}
    for arm, rows in table.groupby("arm"):
        shown = float(rows["impressions"].sum())
        truth[str(arm)] = {
            "visits": float(len(rows)),
            "true_ctr": float(rows["true_clicks"].sum()) / shown,
            "observed_ctr": float(rows["clicks"].sum()) / shown,
        }
    if report_dir is not None:
        write_report(analysis, report_dir)
    return AbResult(log, table, analysis, truth)
