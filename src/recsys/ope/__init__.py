"""Off-policy evaluation (OPE): a candidate policy's value from logged bandit feedback.

* :mod:`recsys.ope.logged` -- :class:`LoggedBandit`, one row per shown (context,
  action, position) with reward, logging propensity, and the candidate's distribution
  and a reward model's predictions when attached; :mod:`recsys.ope.logged_io` reads and
  writes it as CSV/Parquet.
* :mod:`recsys.ope.exposure_log` -- the project's exposure log (``recommendation_impression``
  events joined with attributed clicks) as a :class:`LoggedBandit`.
* :mod:`recsys.ope.estimators` -- DM, IPS, SNIPS, DR, switch-DR and DRos behind one
  interface; :mod:`recsys.ope.bootstrap` -- seeded bootstrap intervals;
  :mod:`recsys.ope.evaluate` -- all of them on one log, as a table.
* :mod:`recsys.ope.reward_model` -- the simple reward models DM and DR use.
* :mod:`recsys.ope.synthetic` -- synthetic bandits with exactly known policy values.
* :mod:`recsys.ope.open_bandit`, :mod:`recsys.ope.open_bandit_protocol` -- the Open
  Bandit sample and its protocol.
* :mod:`recsys.ope.gate` -- the promotion gate.

Example:
    >>> from recsys.ope import SyntheticBandit, evaluate, BootstrapConfig
    >>> problem = SyntheticBandit()
    >>> pi = problem.candidates()["near"]
    >>> log = problem.sample(5000, seed=0, candidate=pi).log
    >>> [e.estimator for e in evaluate(log, config=BootstrapConfig(100))]
    ['IPS', 'SNIPS']
"""

from recsys.ope.bootstrap import (
    BootstrapConfig,
    Estimate,
    bootstrap_estimate,
    bootstrap_replicates,
    on_policy_estimate,
)
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import (
    ESTIMATOR_NAMES,
    DirectMethod,
    DoublyRobust,
    DoublyRobustOptimisticShrinkage,
    InverseProbabilityWeighting,
    OffPolicyEstimator,
    RowTerms,
    SelfNormalizedIPS,
    SwitchDoublyRobust,
    default_estimators,
    estimator_by_name,
)
from recsys.ope.evaluate import estimates_table, evaluate
from recsys.ope.exposure_log import logged_from_events, logged_from_exposures
from recsys.ope.gate import PromotionConfig, PromotionDecision, promote
from recsys.ope.logged import LoggedBandit
from recsys.ope.logged_io import read_logged, write_logged
from recsys.ope.open_bandit import (
    BetaPrior,
    PositionPolicy,
    bts_position_probabilities,
    load_bts_prior,
    load_open_bandit_log,
    open_bandit_dir,
    uniform_position_policy,
)
from recsys.ope.open_bandit_protocol import OpenBanditConfig, OpenBanditResult, run_open_bandit
from recsys.ope.reward_model import (
    ItemPositionClickRate,
    RidgeRewardModel,
    item_position_refit,
    ridge_refit,
)
from recsys.ope.synthetic import SyntheticBandit, SyntheticBanditConfig, SyntheticSample

__all__ = [
    "ESTIMATOR_NAMES",
    "BetaPrior",
    "BootstrapConfig",
    "DirectMethod",
    "DoublyRobust",
    "DoublyRobustOptimisticShrinkage",
    "Estimate",
    "InverseProbabilityWeighting",
    "ItemPositionClickRate",
    "LoggedBandit",
    "OPEInputError",
    "OffPolicyEstimator",
    "OpenBanditConfig",
    "OpenBanditResult",
    "PositionPolicy",
    "PromotionConfig",
    "PromotionDecision",
    "RidgeRewardModel",
    "RowTerms",
    "SelfNormalizedIPS",
    "SwitchDoublyRobust",
    "SyntheticBandit",
    "SyntheticBanditConfig",
    "SyntheticSample",
    "bootstrap_estimate",
    "bootstrap_replicates",
    "bts_position_probabilities",
    "default_estimators",
    "estimates_table",
    "estimator_by_name",
    "evaluate",
    "item_position_refit",
    "load_bts_prior",
    "load_open_bandit_log",
    "logged_from_events",
    "logged_from_exposures",
    "on_policy_estimate",
    "open_bandit_dir",
    "promote",
    "read_logged",
    "ridge_refit",
    "run_open_bandit",
    "uniform_position_policy",
    "write_logged",
]
