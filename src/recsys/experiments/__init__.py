"""A/B tests for the recommender: experiments from YAML, and their analysis.

The request path assigns with :class:`recsys.runtime.experiments.ExperimentSet` (standard
library only, it runs in Triton's python backend); this package loads and checks the
YAML (:func:`load_experiments`) and analyses exposures (:mod:`recsys.experiments.analysis`),
validated by simulation (:mod:`recsys.experiments.validation`).

* :mod:`recsys.experiments.loader` -- YAML -> compiled experiments, located errors.
* :mod:`recsys.experiments.data` -- exposure tables -> per-unit metrics.
* :mod:`recsys.experiments.moments` -- per-arm sufficient statistics.
* :mod:`recsys.experiments.stats` -- delta method, lifts, Welch tests, CUPED.
* :mod:`recsys.experiments.sequential` -- mSPRT always-valid p-values, confidence sequences.
* :mod:`recsys.experiments.srm` -- the sample-ratio-mismatch check.
* :mod:`recsys.experiments.power` -- power and sample size.
* :mod:`recsys.experiments.simulate` -- a seeded simulator of users.
* :mod:`recsys.experiments.validation` -- A/A, SRM, power and sequential studies.
* :mod:`recsys.experiments.analysis` / :mod:`~recsys.experiments.report` -- one experiment's
  analysis, decision, markdown and plots; ``python -m recsys.experiments report``.
"""

from recsys.experiments.config import METRIC_NAMES, AnalysisConfig
from recsys.experiments.errors import ExperimentConfigError
from recsys.experiments.loader import LoadedExperiments, load_experiments, load_experiments_text

__all__ = [
    "METRIC_NAMES",
    "AnalysisConfig",
    "ExperimentConfigError",
    "LoadedExperiments",
    "load_experiments",
    "load_experiments_text",
]
