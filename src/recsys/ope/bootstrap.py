"""Bootstrap confidence intervals for off-policy estimates.

Rows are resampled with replacement (``n`` of ``n``), the estimator is recomputed on
each resample and the interval is the percentile interval of those replicates at the
configured level. The resamples come from one seeded generator, so every estimator of
one :func:`bootstrap_replicates` call sees the same resamples (their intervals are
comparable) and a rerun gives the same numbers.

Two paths:

* fixed inputs (the usual one): each estimator's per-row terms
  (:class:`~recsys.ope.estimators.RowTerms`) are reweighted by the resample's row
  counts: three matrix-vector products per chunk of resamples, no re-estimation;
* ``refit``: a reward model fitted on the log is refitted on every resample, so the
  interval of DM and the doubly robust family includes the model's own sampling error
  (slower: one fit per resample, hence the progress bar).

Rows are treated as independent: the rows of one slate (its positions) are resampled
separately, which understates the variance when a user's clicks on one slate correlate.

Example:
    >>> from recsys.ope.estimators import InverseProbabilityWeighting
    >>> from recsys.ope.logged import LoggedBandit
    >>> log = LoggedBandit.build(action=[0, 1, 0, 1], reward=[1, 0, 0, 1],
    ...     pscore=[0.5] * 4, n_actions=2, action_dist=[[0.5, 0.5]] * 4)
    >>> est = bootstrap_estimate(log, InverseProbabilityWeighting(), BootstrapConfig(200))
    >>> est.lower <= est.value <= est.upper
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import OffPolicyEstimator, RowTerms
from recsys.ope.logged import FloatArray, LoggedBandit

Refit = Callable[[LoggedBandit], LoggedBandit]
"""Attaches a reward model fitted on the given log (``log.with_reward_model(...)``)."""


@dataclass(frozen=True)
class BootstrapConfig:
    """How intervals are computed.

    Attributes:
        n_resamples: bootstrap resamples (0: no interval, only the point estimate).
        level: the interval's coverage, in ``(0, 1)``.
        seed: the resampling generator's seed.
        chunk_size: resamples drawn and evaluated together (memory:
            ``chunk_size x n`` row counts).
        progress: show a progress bar (tqdm) while resampling.
    """

    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    chunk_size: int = 50
    progress: bool = False

    def __post_init__(self) -> None:
        if self.n_resamples < 0:
            raise OPEInputError(f"n_resamples: must be >= 0, got {self.n_resamples}")
        if not 0.0 < self.level < 1.0:
            raise OPEInputError(f"level: must be in (0, 1), got {self.level}")
        if self.chunk_size < 1:
            raise OPEInputError(f"chunk_size: must be >= 1, got {self.chunk_size}")


@dataclass(frozen=True)
class Estimate:
    """One estimator's estimate of a policy's value, with its bootstrap interval.

    Attributes:
        estimator: the estimator's name.
        value: the point estimate on the whole log.
        lower: the interval's lower bound (NaN without resamples).
        upper: the interval's upper bound (NaN without resamples).
        std_error: the replicates' standard deviation (NaN without resamples).
        level: the interval's coverage.
        n_rounds: rows of the log.
        n_resamples: resamples that gave a value (a self-normalized estimator has none
            on a resample without a row the candidate supports).
    """

    estimator: str
    value: float
    lower: float
    upper: float
    std_error: float
    level: float
    n_rounds: int
    n_resamples: int

    def relative_error(self, truth: float) -> float:
        """``|value - truth| / |truth|``: the Open Bandit protocol's score."""
        return abs(self.value - truth) / abs(truth) if truth != 0 else math.inf

    def covers(self, value: float) -> bool:
        """Whether ``value`` lies in the interval."""
        return bool(self.lower <= value <= self.upper)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (NaN becomes None)."""
        out = asdict(self)
        for key, v in out.items():
            if isinstance(v, float) and math.isnan(v):
                out[key] = None
        return out


def resample_counts(n: int, config: BootstrapConfig) -> Iterator[npt.NDArray[np.int64]]:
    """Row counts of the resamples of ``n`` rows, ``[chunk, n]`` per chunk.

    Args:
        n: rows of the log.
        config: resamples, seed, chunk size, progress bar.

    Returns:
        An iterator of count matrices; each row sums to ``n``. One seeded generator:
        the same config gives the same resamples.
    """
    rng = np.random.default_rng(config.seed)
    left = config.n_resamples
    with tqdm(
        total=config.n_resamples, desc="bootstrap", disable=not config.progress, leave=False
    ) as bar:
        while left > 0:
            b = min(config.chunk_size, left)
            rows = rng.integers(0, n, size=(b, n))
            # one bincount over offset indices counts every resample of the chunk at once
            flat = (rows + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
            yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.int64)
            left -= b
            bar.update(b)


def _rows_of(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)


def bootstrap_replicates(
    log: LoggedBandit,
    estimators: Sequence[OffPolicyEstimator],
    config: BootstrapConfig,
    *,
    refit: Refit | None = None,
) -> dict[str, FloatArray]:
    """Each estimator's value on every resample of ``log``'s rows.

    Args:
        log: logged data with the candidate (and reward model, unless ``refit``).
        estimators: the estimators; all see the same resamples.
        config: resamples, seed, chunking and progress bar.
        refit: refit the reward model on every resample (see the module docstring).

    Returns:
        ``{name: [n_resamples] replicates}`` (NaN where an estimator has no value).
    """
    names = [e.name for e in estimators]
    if len(set(names)) != len(names):
        raise OPEInputError(f"estimators: names must be unique, got {names}")
    out: dict[str, list[FloatArray]] = {name: [] for name in names}
    if refit is None:
        terms: Mapping[str, RowTerms] = {e.name: e.terms(log) for e in estimators}
        for counts in resample_counts(log.n_rounds, config):
            for name, t in terms.items():
                out[name].append(t.resampled(counts))
    else:
        whole = refit(log)
        for e in estimators:
            e.terms(whole)  # input errors surface here, not as NaN replicates
        for counts in resample_counts(log.n_rounds, config):
            for row_counts in counts:
                sample = refit(log.take(_rows_of(row_counts)))
                for e in estimators:
                    value = _value_or_nan(e, sample)
                    out[e.name].append(np.array([value]))
    return {
        name: np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
        for name, parts in out.items()
    }


def on_policy_estimate(log: LoggedBandit, config: BootstrapConfig | None = None) -> Estimate:
    """A log's own mean reward with its bootstrap interval: the logging policy's value.

    Args:
        log: the log.
        config: the bootstrap settings.

    Returns:
        The estimate, named ``on-policy``.

    Example:
        >>> log = LoggedBandit.build(action=[0, 0], reward=[1, 0], pscore=[1, 1], n_actions=1)
        >>> on_policy_estimate(log, BootstrapConfig(0)).value
        0.5
    """
    cfg = config or BootstrapConfig()
    terms = RowTerms(direct=np.zeros(log.n_rounds), weighted=log.reward.copy())
    parts = [terms.resampled(c) for c in resample_counts(log.n_rounds, cfg)]
    reps = np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
    return summarize("on-policy", terms.value(), reps, cfg, log.n_rounds)


def _value_or_nan(estimator: OffPolicyEstimator, log: LoggedBandit) -> float:
    try:
        return estimator.estimate(log)
    except OPEInputError:
        # only self-normalization of an unsupported resample raises here: the inputs
        # were checked on the whole log first
        return math.nan


def summarize(
    name: str, value: float, replicates: FloatArray, config: BootstrapConfig, n_rounds: int
) -> Estimate:
    """The :class:`Estimate` of a point value and its bootstrap replicates.

    Args:
        name: the estimator's name.
        value: the point estimate on the whole log.
        replicates: the estimator's values on the resamples (NaN ignored).
        config: the level.
        n_rounds: rows of the log.

    Returns:
        The estimate with its percentile interval.
    """
    valid = replicates[np.isfinite(replicates)]
    if valid.size == 0:
        lower = upper = std = math.nan
    else:
        tail = (1.0 - config.level) / 2.0
        lower, upper = (float(q) for q in np.quantile(valid, [tail, 1.0 - tail]))
        std = float(valid.std(ddof=1)) if valid.size > 1 else math.nan
    return Estimate(
        estimator=name,
        value=float(value),
        lower=lower,
        upper=upper,
        std_error=std,
        level=config.level,
        n_rounds=n_rounds,
        n_resamples=int(valid.size),
    )


def bootstrap_estimate(
    log: LoggedBandit,
    estimator: OffPolicyEstimator,
    config: BootstrapConfig | None = None,
    *,
    refit: Refit | None = None,
) -> Estimate:
    """One estimator's estimate on ``log`` with its bootstrap interval.

    Args:
        log: logged data with the candidate (and reward model, unless ``refit``).
        estimator: the estimator.
        config: resampling settings (default :class:`BootstrapConfig`).
        refit: refit the reward model on the whole log and on every resample.

    Returns:
        The :class:`Estimate`.
    """
    cfg = config or BootstrapConfig()
    fitted = refit(log) if refit is not None else log
    value = estimator.estimate(fitted)
    reps = bootstrap_replicates(log if refit else fitted, [estimator], cfg, refit=refit)
    return summarize(estimator.name, value, reps[estimator.name], cfg, log.n_rounds)
