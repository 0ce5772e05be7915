"""Off-policy evaluation straight from the event store: ``python -m recsys.ope evaluate
--store URL`` (argparse) and ``python -m recsys.ope.app`` (Hydra, ``configs/ope/evaluate.yaml``).

Both build one :class:`StoreEvaluateConfig` and call :func:`evaluate_store`, which reads
every event the store's stream holds without a consumer group
(:func:`recsys.events.attribution_consumer.scan_stream`: no cursor moves, nothing becomes
pending), joins clicks to exposures through attribution, keeps one policy bandit's
exposures in the time range asked for, and builds the arm-level log of
:mod:`recsys.ope.policy_choice` (action = the slate policy the bandit chose, with its
logged probability). The candidate is a distribution over the same arms: a bandit state
file (:func:`recsys.bandits.state.save_state`; e.g. one the online updater trained on
this log), one fixed arm (``arm:<name>``), or ``uniform``. Every estimator runs with
shared bootstrap resamples; with ``gate`` the promotion gate compares the candidate's
lower bound with the current policy's value (the ``current`` policy's estimate by the
same estimator, ``current_value``, or the log's own mean reward) and writes its report.

Example::

    config = StoreEvaluateConfig(store="sqlite:///var/rt.db", bandit="ranking",
                                 candidate="artifacts/bandit.json",
                                 current="arm:deterministic", gate="snips")
    result = evaluate_store(config)
    result["promotion"]["promote"]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config import ConfigError, build
from recsys.ope.bootstrap import BootstrapConfig, Estimate, on_policy_estimate
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import ESTIMATOR_NAMES, OffPolicyEstimator, estimator_by_name
from recsys.ope.evaluate import estimates_table, evaluate
from recsys.ope.gate import PromotionConfig, PromotionDecision, promote
from recsys.ope.logged import LoggedBandit
from recsys.ope.policy_choice import (
    REWARD_KINDS,
    PolicyChoiceLog,
    arm_distribution,
    fixed_arm_distribution,
    policy_choice_log,
    uniform_arm_distribution,
)
from recsys.ope.reward_model import ridge_refit


@dataclass(frozen=True)
class StoreEvaluateConfig:
    """One evaluation from the event store (``configs/ope/evaluate.yaml`` annotates each key).

    Attributes:
        store: the event store (``sqlite:///path``, a SQLite file path, or
            ``redis://host:port/db[?prefix=P]``).
        bandit: the policy bandit whose exposures form the log (its name, any version).
        candidate: the policy to estimate: a bandit state file, ``arm:<name>`` (always
            that arm) or ``uniform``.
        current: the live policy for the gate in the same form (estimated from the same
            log by the gate's estimator; its point value is compared); None: see
            ``current_value``.
        current_value: the live policy's value as a number; with neither, the log's
            own mean reward (the logging policy's on-policy value).
        arms: the arms' names in arm order (default: the candidate state file's, else
            ``arm0 ..``); ``arm:<name>`` needs them.
        since: keep exposures at or after this time (ISO 8601, UTC when no offset, or
            epoch seconds); None: from the start.
        until: keep exposures before this time; None: to the end.
        reward: ``ctr`` (clicks / items shown per list) or ``any_click``.
        estimators: comma-separated names (default: every estimator).
        resamples: bootstrap resamples.
        level: interval coverage.
        seed: bootstrap seed.
        switch_tau: switch-DR's weight cap.
        dros_lambda: DRos's shrinkage scale.
        refit: refit the reward model (ridge on the bandit context) on every resample.
        window_s: attribution window (seconds).
        gate: the estimator whose interval the promotion gate uses; None: no gate.
        margin: the gate's absolute margin.
        relative_margin: the gate's relative margin.
        truth: a known true value of the candidate to compare with.
        report_dir: where the gate writes ``promotion.md`` and ``promotion.json``.
        json_out: write the result as JSON here.
        progress: show the bootstrap's progress bar.

    Example:
        >>> build(StoreEvaluateConfig, {"store": "rt.db", "bandit": "b", "candidate": "uniform"},
        ...       "ope").reward
        'ctr'
    """

    store: str
    bandit: str
    candidate: str
    current: str | None = None
    current_value: float | None = None
    arms: list[str] | None = None
    since: str | None = None
    until: str | None = None
    reward: str = "ctr"
    estimators: str | None = None
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    switch_tau: float = 10.0
    dros_lambda: float = 100.0
    refit: bool = True
    window_s: float = 1800.0
    gate: str | None = None
    margin: float = 0.0
    relative_margin: float = 0.0
    truth: float | None = None
    report_dir: str | None = None
    json_out: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("store", "bandit", "candidate"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required")
        if self.reward not in REWARD_KINDS:
            raise ConfigError(f"reward: expected one of {list(REWARD_KINDS)}, got {self.reward!r}")
        if self.resamples < 0:
            raise ConfigError(f"resamples: must be >= 0, got {self.resamples}")
        if not 0 < self.level < 1:
            raise ConfigError(f"level: must be in (0, 1), got {self.level}")
        if self.current is not None and self.current_value is not None:
            raise ConfigError("current and current_value: give one of them")
        if self.gate is not None and self.resamples == 0:
            raise ConfigError("gate: needs intervals (resamples > 0)")
        if self.window_s <= 0:
            raise ConfigError(f"window_s: must be > 0, got {self.window_s}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_time_us(value)
                except ValueError as error:
                    raise ConfigError(f"{name}: {error}") from None
        names = self.estimator_names()
        for n in names:
            try:
                estimator_by_name(n)
            except (OPEInputError, ValueError, KeyError) as error:
                raise ConfigError(f"estimators: {error}") from None
        if self.gate is not None:
            try:
                estimator_by_name(self.gate)
            except (OPEInputError, ValueError, KeyError) as error:
                raise ConfigError(f"gate: {error}") from None

    def estimator_names(self) -> list[str]:
        """The estimators to run, by name."""
        if self.estimators is None:
            return list(ESTIMATOR_NAMES)
        return [n.strip() for n in self.estimators.split(",") if n.strip()]


def config_from_mapping(values: Mapping[str, Any], where: str = "ope") -> StoreEvaluateConfig:
    """A :class:`StoreEvaluateConfig` from a mapping (a Hydra config), keys and types checked.

    Raises:
        ConfigError: an unknown key, a wrong type or a bad value (named by its key).
    """
    return build(StoreEvaluateConfig, dict(values), where)


def parse_time_us(text: str) -> int:
    """Microseconds since the epoch of ``text``: epoch seconds or ISO 8601 (UTC if naive).

    Example:
        >>> parse_time_us("2025-12-06T00:00:00")
        1764979200000000
        >>> parse_time_us("1764979200.5")
        1764979200500000

    Raises:
        ValueError: neither form.
    """
    try:
        seconds = float(text)
    except ValueError:
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither epoch seconds nor ISO 8601") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        seconds = at.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a finite time")
    return round(seconds * 1_000_000)


def store_url(store: str) -> str:
    """``store`` as a store URL: a bare path is a SQLite file."""
    return store if "://" in store else f"sqlite://{Path(store).resolve()}"


def read_store_events(store: str) -> list[Any]:
    """Every event the store's stream holds, read without a consumer group.

    Args:
        store: ``sqlite:///path``, a SQLite file path, or a Redis URL.

    Returns:
        The validated events, stream order (entries that are not events are skipped).

    Raises:
        FileNotFoundError: a SQLite file that does not exist.
    """
    from recsys.events.attribution_consumer import EntryParser, scan_stream
    from recsys.runtime.user_state import open_store_url

    try:
        opened = open_store_url(store_url(store))
    except FileNotFoundError:
        raise FileNotFoundError(f"event store {store}: no such SQLite file") from None
    try:
        parser = EntryParser()
        return [e for d in scan_stream(opened) if (e := parser.parse(d)) is not None]
    finally:
        opened.close()


def _arms_of_state(path: str) -> list[str] | None:
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OPEInputError(f"candidate: {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise OPEInputError(f"candidate: {path} is not a bandit state file ({error})") from None
    arms = body.get("arms") if isinstance(body, dict) else None
    return [str(a) for a in arms] if isinstance(arms, list) else None


def policy_distribution(spec: str, log: PolicyChoiceLog, *, seed: int = 0) -> np.ndarray:
    """The ``[n, K]`` arm distribution of a policy given as ``uniform``, ``arm:<name>``
    or a bandit state file, at every row of ``log``.

    Raises:
        OPEInputError: an unknown arm, or a state file for other arms or contexts.
    """
    n, k = log.log.n_rounds, len(log.arms)
    if spec == "uniform":
        return uniform_arm_distribution(n, k)
    if spec.startswith("arm:"):
        name = spec[len("arm:") :]
        if name not in log.arms:
            raise OPEInputError(
                f"{spec}: no such arm (arms: {', '.join(log.arms)}; name them with arms / --arms)"
            )
        return fixed_arm_distribution(log.arms.index(name), n, k)
    from recsys.bandits.linear import LinearBandit

    try:
        body = json.loads(Path(spec).read_text(encoding="utf-8"))
        bandit = LinearBandit.from_dict(body["bandit"])
    except FileNotFoundError:
        raise OPEInputError(f"{spec}: no such file (expected uniform, arm:<name> or a "
                            "bandit state file)") from None  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OPEInputError(f"{spec}: not a bandit state file ({error})") from None
    arms = [str(a) for a in body.get("arms", [])]
    if arms and arms != list(log.arms):
        raise OPEInputError(f"{spec}: its arms {arms} are not the log's {list(log.arms)}")
    context = log.log.context
    assert context is not None  # policy_choice_log always attaches the bandit context
    if bandit.dim != context.shape[1] or bandit.n_arms != k:
        raise OPEInputError(
            f"{spec}: a bandit of {bandit.n_arms} arms over {bandit.dim} context values, "
            f"the log has {k} arms and {context.shape[1]} values"
        )
    return arm_distribution(bandit, context, seed=seed)


def _estimators(config: StoreEvaluateConfig) -> list[OffPolicyEstimator]:
    return [
        estimator_by_name(n, switch_tau=config.switch_tau, dros_lambda=config.dros_lambda)
        for n in config.estimator_names()
    ]


def estimate_policy(
    log: PolicyChoiceLog, spec: str, config: StoreEvaluateConfig, names: Sequence[str] | None = None
) -> tuple[LoggedBandit, list[Estimate]]:
    """One policy's estimates on the arm-level log (shared resamples, ridge reward model).

    Returns:
        The log with the policy attached, and one estimate per estimator.
    """
    with_policy = log.log.with_candidate(policy_distribution(spec, log, seed=config.seed))
    chosen = (
        _estimators(config)
        if names is None
        else [
            estimator_by_name(n, switch_tau=config.switch_tau, dros_lambda=config.dros_lambda)
            for n in names
        ]
    )
    boot = BootstrapConfig(
        n_resamples=config.resamples, level=config.level, seed=config.seed, progress=config.progress
    )
    if not config.refit:
        # one fit on the whole log; the intervals then leave out the model's own error
        with_policy = ridge_refit()(with_policy)
        return with_policy, evaluate(with_policy, chosen, boot)
    return with_policy, evaluate(with_policy, chosen, boot, refit=ridge_refit())


def evaluate_store(config: StoreEvaluateConfig, *, echo: bool = True) -> dict[str, Any]:
    """Reads the store, estimates the candidate, optionally runs the gate (module docstring).

    Args:
        config: the evaluation.
        echo: print the summary line, the estimates table and the gate's report.

    Returns:
        A JSON-ready result: rows, arms and their logged counts, the logged mean reward,
        the estimates, and ``promotion`` (the gate's decision) when ``gate`` is set.

    Raises:
        OPEInputError: no exposure of the bandit in the range, a bad candidate, ...
        FileNotFoundError: a SQLite store that does not exist.
    """
    arms = config.arms
    spec_is_file = config.candidate != "uniform" and not config.candidate.startswith("arm:")
    if arms is None and spec_is_file:
        arms = _arms_of_state(config.candidate)
    events = read_store_events(config.store)
    log = policy_choice_log(
        events,
        bandit=config.bandit,
        arms=arms,
        reward=config.reward,  # type: ignore[arg-type]  # checked in __post_init__
        since_us=None if config.since is None else parse_time_us(config.since),
        until_us=None if config.until is None else parse_time_us(config.until),
        attribution=_attribution(config.window_s),
    )
    rows = log.log
    boot = BootstrapConfig(
        n_resamples=config.resamples, level=config.level, seed=config.seed, progress=config.progress
    )
    _, estimates = estimate_policy(log, config.candidate, config)
    counts = np.bincount(rows.action, minlength=len(log.arms))
    result: dict[str, Any] = {
        "store": config.store,
        "bandit": config.bandit,
        "candidate": config.candidate,
        "rows": rows.n_rounds,
        "arms": {a: int(c) for a, c in zip(log.arms, counts, strict=True)},
        "skipped": log.skipped,
        "logged_mean_reward": rows.on_policy_value(),
        "reward": config.reward,
        "truth": config.truth,
        "estimates": [e.to_dict() for e in estimates],
    }
    if echo:
        arm_text = ", ".join(f"{a} {c}" for a, c in result["arms"].items())
        mean = rows.on_policy_value()
        print(f"{config.store}: {rows.n_rounds} exposures of bandit {config.bandit!r} "
              f"(arms: {arm_text}), logged mean {config.reward} {mean:.6f}")  # fmt: skip
        print()
        print(estimates_table(estimates, truth=config.truth))
    if config.gate is not None:
        decision = _gate(log, estimates, config, boot)
        result["promotion"] = decision.to_dict()
        if echo:
            print()
            print(decision.to_markdown())
    if config.json_out is not None:
        path = Path(config.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _attribution(window_s: float) -> Any:
    from recsys.events.attribution import AttributionConfig

    return AttributionConfig(window_s=window_s)


def _gate(
    log: PolicyChoiceLog,
    estimates: list[Estimate],
    config: StoreEvaluateConfig,
    boot: BootstrapConfig,
) -> PromotionDecision:
    assert config.gate is not None
    wanted = estimator_by_name(config.gate).name
    match = [e for e in estimates if e.estimator == wanted]
    if not match:
        raise OPEInputError(f"gate {config.gate}: that estimator was not run")
    current: Estimate | float
    if config.current is not None:
        _, [current] = estimate_policy(log, config.current, config, [config.gate])
        current_name = config.current
    elif config.current_value is not None:
        current, current_name = config.current_value, "current"
    else:
        current, current_name = on_policy_estimate(log.log, boot), "logging policy"
    return promote(
        match[0],
        current,
        config=PromotionConfig(margin=config.margin, relative_margin=config.relative_margin),
        candidate_name=config.candidate,
        current_name=current_name,
        report_dir=config.report_dir,
    )
