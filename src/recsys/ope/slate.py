"""Slate-level off-policy evaluation: slate IPS and the pseudo-inverse estimator.

The other estimators of :mod:`recsys.ope` score one item-position at a time. Here one row
is a whole slate of ``L`` slots: the logging policy showed slate ``s = (s_1, ..., s_L)``
with probability ``mu(s | x)`` (the exposure log's ``slate_propensity``) and the user's
reward ``r`` is the slate's (e.g. its clicks). A candidate policy ``pi`` gives the same
slate probability ``pi(s | x)`` and slot marginals ``pi_j(s_j | x)``.

* **Slate IPS** (standard IPS on whole slates): ``mean(r * pi(s|x) / mu(s|x))``.
  Unbiased whenever ``mu`` covers ``pi``, for any reward; its weights are products over
  the slots, so its variance grows exponentially with ``L``.
* **Pseudo-inverse (PI)**, Swaminathan et al. 2017, "Off-policy evaluation for slate
  recommendation" (NeurIPS): assume the reward is additive over the slots,
  ``E[r | x, s] = sum_j phi_j(x, s_j)``. With a logging policy whose slots are drawn
  independently (``mu(s|x) = prod_j mu_j(s_j|x)``), the pseudo-inverse of the
  item-position design matrix reduces to the per-row term
  ``r * (sum_j pi_j(s_j|x) / mu_j(s_j|x) - (L - 1))``, with ``mu_j`` the logging
  policy's item-position marginals (the exposure log's ``position_propensities``).
  Unbiased under additivity (``E[w_j phi_k] = V_k`` for ``k != j`` and the ``L - 1``
  removes the extra copies); biased when the reward has slot interactions; its weights
  are sums, not products, so its variance grows about linearly with ``L``.

Both give per-row :class:`~recsys.ope.estimators.RowTerms`, so the intervals are the
same seeded percentile bootstrap as the other estimators'
(:func:`recsys.ope.bootstrap.resample_counts` and :func:`~recsys.ope.bootstrap.summarize`).

:func:`synthetic_slate_problem` builds a contextual slate problem with factored softmax
policies whose value is computed exactly by enumerating every slate;
:func:`slate_study` measures bias and RMSE of both estimators against it over seeds
(``python -m recsys.ope.slate``).

Example:
    >>> problem = synthetic_slate_problem(SlateProblemConfig(n_contexts=5), seed=0)
    >>> log = problem.sample(2000, seed=1)
    >>> est = slate_estimates(log, BootstrapConfig(n_resamples=100))
    >>> sorted(est)
    ['pseudo_inverse', 'slate_ips']
    >>> abs(est["pseudo_inverse"].value - problem.true_value) < 0.3
    True
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from tqdm.auto import tqdm

from recsys.ope.bootstrap import BootstrapConfig, Estimate, resample_counts, summarize
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import RowTerms
from recsys.ope.logged import FloatArray


@dataclass(frozen=True)
class SlateLog:
    """Logged slates with the logging and the candidate policy's probabilities.

    Attributes:
        reward: ``[n]`` each slate's reward (e.g. its clicks).
        slate_pscore: ``[n]`` the logging policy's probability of the shown slate.
        position_pscore: ``[n, L]`` the logging policy's marginal probability of each
            shown item at its slot (None: unknown; PI then cannot run).
        target_slate: ``[n]`` the candidate policy's probability of the shown slate.
        target_position: ``[n, L]`` the candidate's marginal probability of each shown
            item at its slot (None: PI cannot run).
    """

    reward: FloatArray
    slate_pscore: FloatArray
    target_slate: FloatArray
    position_pscore: FloatArray | None = None
    target_position: FloatArray | None = None

    def __post_init__(self) -> None:
        n = len(self.reward)
        if n == 0:
            raise OPEInputError("slate log: no rows")
        for name in ("reward", "slate_pscore", "target_slate"):
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if values.shape != (n,):
                raise OPEInputError(f"{name}: expected shape ({n},), got {values.shape}")
            if not np.isfinite(values).all():
                raise OPEInputError(f"{name}: holds NaN or infinity")
            object.__setattr__(self, name, values)
        if not ((self.slate_pscore > 0) & (self.slate_pscore <= 1)).all():
            raise OPEInputError("slate_pscore: every logged slate needs a probability in (0, 1]")
        if not ((self.target_slate >= 0) & (self.target_slate <= 1)).all():
            raise OPEInputError("target_slate: probabilities must be in [0, 1]")
        shapes = set()
        for name in ("position_pscore", "target_position"):
            raw = getattr(self, name)
            if raw is None:
                continue
            values = np.asarray(raw, dtype=np.float64)
            if values.ndim != 2 or values.shape[0] != n or not np.isfinite(values).all():
                raise OPEInputError(f"{name}: expected finite [{n}, L] probabilities")
            shapes.add(values.shape)
            object.__setattr__(self, name, values)
        if len(shapes) > 1:
            raise OPEInputError(f"position_pscore and target_position differ in shape {shapes}")
        if (
            self.position_pscore is not None
            and not ((self.position_pscore > 0) & (self.position_pscore <= 1)).all()
        ):
            raise OPEInputError("position_pscore: marginals of shown items must be in (0, 1]")
        if (
            self.target_position is not None
            and not ((self.target_position >= 0) & (self.target_position <= 1)).all()
        ):
            raise OPEInputError("target_position: marginals must be in [0, 1]")

    @property
    def n_rounds(self) -> int:
        """Logged slates."""
        return len(self.reward)

    @classmethod
    def from_exposures(
        cls,
        payloads: Iterable[Mapping[str, Any]],
        reward: Sequence[float],
        target_slate: Sequence[float],
        target_position: Sequence[Sequence[float]] | None = None,
    ) -> SlateLog:
        """A slate log from exposure payloads (:mod:`recsys.runtime.exposure`).

        Args:
            payloads: each exposure's payload: its ``slate_propensity`` and, where the
                logging policy has them, ``position_propensities``.
            reward: each exposure's reward (e.g. its attributed clicks).
            target_slate: the candidate's probability of each logged slate.
            target_position: the candidate's marginals of each shown item at its slot.

        Returns:
            The log (``position_pscore`` only when every exposure has marginals).

        Raises:
            OPEInputError: an exposure lacks the slate propensity, or lengths differ.
        """
        rows = list(payloads)
        slate, positions = [], []
        for i, p in enumerate(rows):
            if "slate_propensity" not in p:
                raise OPEInputError(f"exposure {i}: no slate_propensity")
            slate.append(float(p["slate_propensity"]))
            positions.append(p.get("position_propensities"))
        marg = None
        if positions and all(m is not None for m in positions):
            if len({len(m) for m in positions if m is not None}) != 1:
                raise OPEInputError("position_propensities: slates of different lengths")
            marg = np.asarray(positions, dtype=np.float64)
        if not len(reward) == len(target_slate) == len(rows):
            raise OPEInputError(
                f"{len(rows)} exposures, {len(reward)} rewards, {len(target_slate)} targets"
            )
        return cls(
            reward=np.asarray(reward, dtype=np.float64),
            slate_pscore=np.asarray(slate),
            target_slate=np.asarray(target_slate, dtype=np.float64),
            position_pscore=marg,
            target_position=None if target_position is None else np.asarray(target_position),
        )

    def take(self, rows: np.ndarray) -> SlateLog:
        """The log of the given rows (with repetition)."""

        def pick(a: FloatArray | None) -> FloatArray | None:
            return None if a is None else a[rows]

        return SlateLog(self.reward[rows], self.slate_pscore[rows], self.target_slate[rows],
                        pick(self.position_pscore), pick(self.target_position))  # fmt: skip


class SlateEstimator(ABC):
    """An estimator of a slate policy's value as per-row terms."""

    name: ClassVar[str]

    @abstractmethod
    def terms(self, log: SlateLog) -> RowTerms:
        """The per-row terms whose mean is the estimate.

        Raises:
            OPEInputError: the log lacks what the estimator needs.
        """

    def estimate(self, log: SlateLog) -> float:
        """The point estimate on ``log``."""
        return self.terms(log).value()


class SlateIPS(SlateEstimator):
    """Standard IPS over whole slates: ``mean(r * pi(s|x) / mu(s|x))``.

    Example:
        >>> log = SlateLog(np.array([1.0, 0.0]), np.array([0.25, 0.25]), np.array([0.5, 0.0]))
        >>> SlateIPS().estimate(log)
        1.0
    """

    name = "slate_ips"

    def terms(self, log: SlateLog) -> RowTerms:
        weights = log.target_slate / log.slate_pscore
        return RowTerms(np.zeros(log.n_rounds), log.reward * weights)


class PseudoInverse(SlateEstimator):
    """The pseudo-inverse estimator (Swaminathan et al. 2017) for additive rewards and
    slot-independent logging: ``mean(r * (sum_j pi_j / mu_j - (L - 1)))``.

    Example:
        >>> log = SlateLog(np.array([2.0]), np.array([0.25]), np.array([0.25]),
        ...                np.array([[0.5, 0.5]]), np.array([[0.5, 1.0]]))
        >>> PseudoInverse().estimate(log)
        4.0
    """

    name = "pseudo_inverse"

    def terms(self, log: SlateLog) -> RowTerms:
        if log.position_pscore is None or log.target_position is None:
            raise OPEInputError(
                "pseudo-inverse: needs the logging and candidate item-position marginals "
                "(position_propensities; a policy without closed-form marginals has none)"
            )
        slots = log.position_pscore.shape[1]
        weights = (log.target_position / log.position_pscore).sum(axis=1) - (slots - 1)
        return RowTerms(np.zeros(log.n_rounds), log.reward * weights)


SLATE_ESTIMATORS: Mapping[str, type[SlateEstimator]] = {
    SlateIPS.name: SlateIPS,
    PseudoInverse.name: PseudoInverse,
}
"""The slate estimators by name."""


def slate_estimates(
    log: SlateLog,
    config: BootstrapConfig | None = None,
    estimators: Sequence[SlateEstimator] | None = None,
) -> dict[str, Estimate]:
    """Each estimator's value with its bootstrap interval (all see the same resamples).

    Args:
        log: the slate log.
        config: the bootstrap (resamples, level, seed), as for the other estimators.
        estimators: default: slate IPS, and PI when the log has marginals.

    Returns:
        ``{name: Estimate}``.

    Example:
        >>> log = SlateLog(np.ones(4), np.full(4, 0.5), np.full(4, 0.5))
        >>> slate_estimates(log, BootstrapConfig(50))["slate_ips"].value
        1.0
    """
    cfg = config or BootstrapConfig()
    if estimators is None:
        estimators = [SlateIPS()]
        if log.position_pscore is not None and log.target_position is not None:
            estimators.append(PseudoInverse())
    terms = {e.name: e.terms(log) for e in estimators}
    reps: dict[str, list[FloatArray]] = {name: [] for name in terms}
    for counts in resample_counts(log.n_rounds, cfg):
        for name, t in terms.items():
            reps[name].append(t.resampled(counts))
    return {
        name: summarize(
            name,
            t.value(),
            np.concatenate(reps[name]) if reps[name] else np.empty(0),
            cfg,
            log.n_rounds,
        )
        for name, t in terms.items()
    }


# -- a synthetic slate problem with an exact value ---------------------------------------


@dataclass(frozen=True)
class SlateProblemConfig:
    """A contextual slate problem with factored softmax policies.

    Attributes:
        n_contexts: contexts, drawn uniformly per slate.
        slots: slots ``L`` of a slate.
        actions: candidate items per slot (each slot has its own set).
        logging_temperature: softmax temperature of the logging policy over a
            per-context random score (higher: closer to uniform, better coverage).
        target_temperature: the candidate's temperature over another score.
        interaction: weight of a non-additive term (reward bonus when every slot shows
            its best item); 0: the reward is additive over the slots.
        base_rate: mean click probability of a slot.
    """

    n_contexts: int = 20
    slots: int = 3
    actions: int = 5
    logging_temperature: float = 1.0
    target_temperature: float = 0.5
    interaction: float = 0.0
    base_rate: float = 0.2

    def __post_init__(self) -> None:
        if min(self.n_contexts, self.slots, self.actions) < 1:
            raise OPEInputError("n_contexts, slots and actions must be >= 1")
        if self.actions**self.slots > 200_000:
            raise OPEInputError("actions ** slots above 200,000: the exact value enumerates them")
        if not (self.logging_temperature > 0 and self.target_temperature > 0):
            raise OPEInputError("temperatures must be > 0")
        if not 0 <= self.base_rate <= 0.5 or not 0 <= self.interaction <= 0.5:
            raise OPEInputError("base_rate and interaction must be in [0, 0.5]")


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = x / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(z / z.sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class SlateProblem:
    """Policies and click probabilities of a synthetic slate problem, with its truth.

    Attributes:
        config: the settings.
        click: ``[C, L, A]`` click probability of action ``a`` in slot ``j`` (context ``c``).
        best: ``[C, L]`` each slot's highest-click action (the interaction term's).
        logging: ``[C, L, A]`` the logging policy's per-slot probabilities.
        target: ``[C, L, A]`` the candidate's per-slot probabilities.
        true_value: the candidate's exact expected slate reward (all slates enumerated).
    """

    config: SlateProblemConfig
    click: np.ndarray
    best: np.ndarray
    logging: np.ndarray
    target: np.ndarray
    true_value: float

    def mean_reward(self, context: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """Expected reward of each ``(context, slate)``: the slots' click probabilities,
        plus ``interaction`` when every slot shows its best action."""
        slots = np.arange(self.config.slots)
        additive = self.click[context[:, None], slots[None, :], slates].sum(axis=1)
        all_best = (slates == self.best[context]).all(axis=1)
        return np.asarray(additive + self.config.interaction * all_best, dtype=np.float64)

    def sample(self, n: int, seed: int) -> SlateLog:
        """``n`` slates logged by the logging policy with the candidate's probabilities.

        Each slot's reward is a Bernoulli click; the interaction bonus is a further
        Bernoulli draw when it applies. Seeded: the same seed gives the same log.
        """
        cfg = self.config
        rng = np.random.default_rng(seed)
        context = rng.integers(0, cfg.n_contexts, n)
        cum = np.cumsum(self.logging[context], axis=2)  # [n, L, A]
        draws = rng.random((n, cfg.slots, 1))
        slates = np.minimum((draws > cum).sum(axis=2), cfg.actions - 1)
        slots = np.arange(cfg.slots)
        clicks = rng.random((n, cfg.slots)) < self.click[context[:, None], slots, slates]
        bonus = (slates == self.best[context]).all(axis=1) & (rng.random(n) < cfg.interaction)
        reward = clicks.sum(axis=1) + bonus
        mu = self.logging[context[:, None], slots, slates]
        pi = self.target[context[:, None], slots, slates]
        return SlateLog(reward.astype(np.float64), mu.prod(axis=1), pi.prod(axis=1), mu, pi)


def synthetic_slate_problem(config: SlateProblemConfig, seed: int) -> SlateProblem:
    """A random slate problem and the candidate's exact value.

    Click probabilities are ``base_rate * 2 * U(0, 1)`` per (context, slot, action); the
    logging and candidate policies are per-slot softmaxes over independent random scores
    (the candidate's correlated with the clicks, so it is better than logging). The true
    value enumerates every one of the ``actions ** slots`` slates per context.

    Args:
        config: the problem's size and shape.
        seed: the generator's seed.

    Returns:
        The :class:`SlateProblem`.
    """
    cfg = config
    rng = np.random.default_rng(seed)
    shape = (cfg.n_contexts, cfg.slots, cfg.actions)
    click = cfg.base_rate * 2.0 * rng.random(shape)
    logging = _softmax(rng.normal(size=shape), cfg.logging_temperature)
    target = _softmax(click / cfg.base_rate + rng.normal(scale=0.5, size=shape),
                      cfg.target_temperature)  # fmt: skip
    best = click.argmax(axis=2)
    slates = np.array(list(itertools.product(range(cfg.actions), repeat=cfg.slots)))
    slots = np.arange(cfg.slots)
    total = 0.0
    for c in range(cfg.n_contexts):
        probs = target[c, slots[None, :], slates].prod(axis=1)
        additive = click[c, slots[None, :], slates].sum(axis=1)
        bonus = cfg.interaction * (slates == best[c]).all(axis=1)
        total += float((probs * (additive + bonus)).sum())
    return SlateProblem(cfg, click, best, logging, target, total / cfg.n_contexts)


@dataclass(frozen=True)
class SlateStudyRow:
    """One estimator's accuracy over seeds on one problem setting.

    Attributes:
        setting: the problem's label.
        estimator: the estimator's name.
        seeds: problem + log draws.
        n_slates: logged slates per draw.
        bias: mean of (estimate - truth).
        bias_se: standard error of that mean.
        std: standard deviation of the estimates' errors.
        rmse: root mean squared error.
        relative_rmse: RMSE over the mean true value.
        coverage: share of draws whose 95% bootstrap interval holds the truth.
    """

    setting: str
    estimator: str
    seeds: int
    n_slates: int
    bias: float
    bias_se: float
    std: float
    rmse: float
    relative_rmse: float
    coverage: float


def slate_study(
    config: SlateProblemConfig,
    *,
    seeds: Sequence[int],
    n_slates: int,
    setting: str = "",
    bootstrap: BootstrapConfig | None = None,
    progress: bool = False,
) -> list[SlateStudyRow]:
    """Bias, spread and RMSE of slate IPS and PI against the exact value.

    Every seed draws a new problem (:func:`synthetic_slate_problem`) and a new log of
    ``n_slates``; errors are estimate minus that problem's exact value.

    Args:
        config: the problem setting.
        seeds: one draw per seed.
        n_slates: slates per log.
        setting: label for the rows.
        bootstrap: interval settings (coverage); default 200 resamples.
        progress: show a progress bar.

    Returns:
        One row per estimator.
    """
    boot = bootstrap or BootstrapConfig(n_resamples=200)
    errors: dict[str, list[float]] = {n: [] for n in SLATE_ESTIMATORS}
    covered: dict[str, list[bool]] = {n: [] for n in SLATE_ESTIMATORS}
    truths = []
    for seed in tqdm(list(seeds), desc=f"slate study {setting}", disable=not progress):
        problem = synthetic_slate_problem(config, seed)
        log = problem.sample(n_slates, seed=10_000 + seed)
        truths.append(problem.true_value)
        estimates = slate_estimates(log, BootstrapConfig(boot.n_resamples, boot.level, seed))
        for name, est in estimates.items():
            errors[name].append(est.value - problem.true_value)
            covered[name].append(est.covers(problem.true_value))
    rows = []
    mean_truth = float(np.mean(truths))
    for name, errs in errors.items():
        e = np.asarray(errs)
        rmse = float(np.sqrt((e**2).mean()))
        rows.append(
            SlateStudyRow(
                setting=setting,
                estimator=name,
                seeds=len(e),
                n_slates=n_slates,
                bias=float(e.mean()),
                bias_se=float(e.std(ddof=1) / math.sqrt(len(e))) if len(e) > 1 else math.nan,
                std=float(e.std(ddof=1)) if len(e) > 1 else math.nan,
                rmse=rmse,
                relative_rmse=rmse / mean_truth if mean_truth else math.nan,
                coverage=float(np.mean(covered[name])),
            )
        )
    return rows


STUDY_SETTINGS: Mapping[str, SlateProblemConfig] = {
    "additive, L=3": SlateProblemConfig(slots=3, actions=5),
    "additive, L=5": SlateProblemConfig(slots=5, actions=5),
    "interaction 0.5, L=3": SlateProblemConfig(slots=3, actions=5, interaction=0.5),
}
"""The settings of ``python -m recsys.ope.slate`` (docs/ope.md's table)."""


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.ope.slate``: the slate estimators' bias and RMSE study.

    Args:
        argv: ``--seeds N --slates N --resamples N --json FILE``.

    Returns:
        0; 2 on bad arguments.
    """
    parser = argparse.ArgumentParser(prog="python -m recsys.ope.slate", description=main.__doc__)
    parser.add_argument("--seeds", type=int, default=50, help="problems and logs per setting")
    parser.add_argument("--slates", type=int, default=5000, help="logged slates per log")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.slates < 1 or args.resamples < 0:
        print("error: --seeds >= 2, --slates >= 1, --resamples >= 0", file=sys.stderr)
        return 2
    rows: list[SlateStudyRow] = []
    for label, cfg in STUDY_SETTINGS.items():
        rows += slate_study(cfg, seeds=range(args.seeds), n_slates=args.slates, setting=label,
                            bootstrap=BootstrapConfig(args.resamples), progress=True)  # fmt: skip
    print("| setting | estimator | bias ± se | std | RMSE | relative RMSE | 95% coverage |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.setting} | {r.estimator} | {r.bias:+.4f} ± {r.bias_se:.4f} | {r.std:.4f} "
              f"| {r.rmse:.4f} | {r.relative_rmse:.3f} | {r.coverage:.2f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([asdict(r) for r in rows], fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
