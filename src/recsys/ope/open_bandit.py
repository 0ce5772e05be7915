"""The Open Bandit Dataset sample: its logs, and its two policies' action probabilities.

The sample (Saito et al., NeurIPS 2021 Datasets track; ZOZOTOWN, campaign ``all``: 80
items, 3 positions) holds two logs of 10,000 rows each, one per logging policy:
``random`` (uniform random: each item has probability 1/80 at each position) and
``bts`` (Bernoulli Thompson sampling). Each row is one shown (item, position) with its
click and ``propensity_score``, the logging policy's true probability of that item at
that position. ``prior_bts.yaml`` holds the Beta priors ``(alpha, beta)`` of the
production BTS policy per campaign.

The data are read where they lie (``RECSYS_DATA_DIR``/``open-bandit-sample``), never
copied. :func:`bts_position_probabilities` computes the BTS policy's probability of each
item at each position by Monte Carlo, as the Open Bandit Pipeline does: draw a click
rate for every item from its Beta distribution, rank the items by it, and count how often
each item lands at each position.

Example:
    >>> log = load_open_bandit_log("random")  # doctest: +SKIP
    >>> prior = load_bts_prior()  # doctest: +SKIP
    >>> bts = bts_position_probabilities(prior, n_positions=3, n_samples=100_000)  # doctest: +SKIP
    >>> candidate = log.data.with_candidate(bts.action_dist(log.data))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from recsys.ope.errors import OPEInputError
from recsys.ope.logged import FloatArray, LoggedBandit

SAMPLE_FOLDER = "open-bandit-sample"
DEFAULT_DATA_DIR = Path("..") / "shared" / "datasets"
"""Where the datasets are when ``RECSYS_DATA_DIR`` is unset (relative to the working
directory: the repository root, as in ``RECSYS_DATA_DIR=../shared/datasets``)."""

POLICIES: tuple[str, ...] = ("random", "bts")
"""The sample's logging policies."""

N_POSITIONS = 3
COLUMNS: tuple[str, ...] = ("item_id", "position", "click", "propensity_score")
"""The columns of ``all.csv`` the loader reads (the rest are user features)."""


def open_bandit_dir(data_dir: str | Path | None = None) -> Path:
    """The folder of the sample (the one holding ``random/``, ``bts/``, ``prior_bts.yaml``).

    Args:
        data_dir: the datasets folder (``RECSYS_DATA_DIR``-style: the sample is its
            ``open-bandit-sample`` subfolder) or the sample folder itself; default
            ``$RECSYS_DATA_DIR``, else ``../shared/datasets``.

    Returns:
        The sample's folder.

    Raises:
        FileNotFoundError: no sample there (the message says where it looked).
    """
    if data_dir is None:
        env = os.environ.get("RECSYS_DATA_DIR")
        data_dir = Path(env) if env else DEFAULT_DATA_DIR
    base = Path(data_dir)
    for candidate in (base / SAMPLE_FOLDER, base):
        if (candidate / "random").is_dir() or (candidate / "bts").is_dir():
            return candidate
    raise FileNotFoundError(
        f"the Open Bandit sample is not under {base} (looked for {base / SAMPLE_FOLDER}/random "
        "and bts); set RECSYS_DATA_DIR to the datasets folder"
    )


@dataclass(frozen=True)
class OpenBanditLog:
    """One logging policy's log of the sample.

    Attributes:
        policy: ``random`` or ``bts``.
        campaign: the campaign (``all``).
        data: the rows (action = item id, position 0-based, reward = click,
            pscore = the logged propensity).
        path: the CSV read.
    """

    policy: str
    campaign: str
    data: LoggedBandit
    path: Path


def load_open_bandit_log(
    policy: str,
    *,
    campaign: str = "all",
    data_dir: str | Path | None = None,
    n_actions: int | None = None,
) -> OpenBanditLog:
    """Reads ``<policy>/<campaign>/<campaign>.csv`` of the sample.

    Args:
        policy: ``random`` or ``bts``.
        campaign: the campaign folder (the sample has ``all``).
        data_dir: see :func:`open_bandit_dir`.
        n_actions: the number of items (default: the largest item id + 1).

    Returns:
        The log; positions become 0-based (the file's are 1-3).

    Raises:
        FileNotFoundError: the sample or the file is missing.
        OPEInputError: a column is missing or a value is invalid.
    """
    if policy not in POLICIES:
        raise OPEInputError(f"policy: expected one of {POLICIES}, got {policy!r}")
    path = open_bandit_dir(data_dir) / policy / campaign / f"{campaign}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no Open Bandit log at {path}")
    frame = pd.read_csv(path, usecols=lambda c: c in COLUMNS)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise OPEInputError(f"{path}: missing columns {missing}")
    items = frame["item_id"].to_numpy()
    data = LoggedBandit.build(
        action=items,
        reward=frame["click"].to_numpy(dtype=np.float64),
        pscore=frame["propensity_score"].to_numpy(dtype=np.float64),
        position=frame["position"].to_numpy() - 1,
        n_positions=N_POSITIONS,
        n_actions=int(items.max()) + 1 if n_actions is None else n_actions,
    )
    return OpenBanditLog(policy=policy, campaign=campaign, data=data, path=path)


@dataclass(frozen=True)
class BetaPrior:
    """The BTS policy's Beta prior of each item's click rate.

    Attributes:
        alpha: ``[n_items]`` first shape parameters.
        beta: ``[n_items]`` second shape parameters.
        campaign: the campaign they belong to.
    """

    alpha: FloatArray
    beta: FloatArray
    campaign: str

    def __post_init__(self) -> None:
        if self.alpha.shape != self.beta.shape or self.alpha.ndim != 1:
            raise OPEInputError(
                f"prior: alpha and beta must be 1-d of one length, got {self.alpha.shape} "
                f"and {self.beta.shape}"
            )
        if not (np.isfinite(self.alpha).all() and np.isfinite(self.beta).all()):
            raise OPEInputError("prior: alpha and beta must be finite")
        if (self.alpha <= 0).any() or (self.beta <= 0).any():
            raise OPEInputError("prior: alpha and beta must be > 0")


def load_bts_prior(campaign: str = "all", data_dir: str | Path | None = None) -> BetaPrior:
    """Reads the campaign's Beta priors from the sample's ``prior_bts.yaml``.

    Args:
        campaign: ``all``, ``men`` or ``women``.
        data_dir: see :func:`open_bandit_dir`.

    Returns:
        The priors.
    """
    path = open_bandit_dir(data_dir) / "prior_bts.yaml"
    with path.open(encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict) or campaign not in raw:
        raise OPEInputError(f"{path}: no campaign {campaign!r}")
    entry = raw[campaign]
    return BetaPrior(
        alpha=np.asarray(entry["alpha"], dtype=np.float64),
        beta=np.asarray(entry["beta"], dtype=np.float64),
        campaign=campaign,
    )


@dataclass(frozen=True)
class PositionPolicy:
    """A context-free slate policy: each item's probability at each position.

    Attributes:
        name: the policy.
        probabilities: ``[n_items, n_positions]``; each column sums to 1.
        n_samples: Monte Carlo draws behind it (0: exact).
        group_probabilities: ``[groups, n_items, n_positions]``: the same computed on
            independent equal parts of the draws (their mean is ``probabilities``),
            to measure the Monte Carlo error of anything computed from them.
    """

    name: str
    probabilities: FloatArray
    n_samples: int = 0
    group_probabilities: FloatArray | None = None

    @property
    def standard_error(self) -> FloatArray:
        """The Monte Carlo standard error of each probability, ``sqrt(p (1 - p) / S)``."""
        if self.n_samples == 0:
            return np.zeros_like(self.probabilities)
        p = self.probabilities
        return np.asarray(np.sqrt(p * (1.0 - p) / self.n_samples), dtype=np.float64)

    def action_dist(self, log: LoggedBandit) -> FloatArray:
        """``[n, n_items]``: the distribution over items at each row's position."""
        return self.probabilities_at(self.probabilities, log)

    @staticmethod
    def probabilities_at(probabilities: FloatArray, log: LoggedBandit) -> FloatArray:
        """``[n, n_items]`` rows of ``probabilities`` (``[n_items, n_positions]``) per position."""
        if probabilities.shape != (log.n_actions, log.n_positions):
            raise OPEInputError(
                f"policy: has shape {probabilities.shape} (items, positions), the log "
                f"({log.n_actions}, {log.n_positions})"
            )
        return np.ascontiguousarray(probabilities[:, log.position].T)


def uniform_position_policy(n_items: int, n_positions: int = N_POSITIONS) -> PositionPolicy:
    """The uniform random policy: ``1 / n_items`` for every item at every position.

    Example:
        >>> uniform_position_policy(80).probabilities[0, 0]
        np.float64(0.0125)
    """
    if n_items < n_positions:
        raise OPEInputError(f"n_items: need at least {n_positions} items, got {n_items}")
    return PositionPolicy("random", np.full((n_items, n_positions), 1.0 / n_items))


def bts_position_probabilities(
    prior: BetaPrior,
    *,
    n_positions: int = N_POSITIONS,
    n_samples: int = 1_000_000,
    seed: int = 0,
    groups: int = 10,
) -> PositionPolicy:
    """The BTS policy's probability of each item at each position, by Monte Carlo.

    Each draw samples a click rate for every item from its ``Beta(alpha, beta)``, ranks
    the items by it (highest first) and puts the top ``n_positions`` at positions
    ``0 .. n_positions - 1``; the probabilities are the fractions of draws.

    Args:
        prior: the items' Beta parameters.
        n_positions: the slate's length.
        n_samples: draws (the standard error of a probability ``p`` is
            ``sqrt(p (1 - p) / n_samples)``).
        seed: the generator's seed.
        groups: independent equal parts of the draws kept apart (``n_samples`` must
            divide by it) to measure the Monte Carlo error of downstream estimates.

    Returns:
        The policy, with its group probabilities.

    Example:
        >>> prior = BetaPrior(np.array([5.0, 1.0, 1.0]), np.array([1.0, 5.0, 5.0]), "x")
        >>> bts = bts_position_probabilities(prior, n_positions=1, n_samples=10_000)
        >>> bool(bts.probabilities[0, 0] > 0.9)
        True
    """
    k = prior.alpha.shape[0]
    if not 1 <= n_positions <= k:
        raise OPEInputError(f"n_positions: must be in [1, {k}], got {n_positions}")
    if groups < 1 or n_samples < groups or n_samples % groups:
        raise OPEInputError(
            f"n_samples ({n_samples}) must be a positive multiple of groups ({groups})"
        )
    rng = np.random.default_rng(seed)
    per_group = n_samples // groups
    chunk = max(1, min(per_group, 50_000))  # draws in memory at once: chunk x items
    counts = np.zeros((groups, k, n_positions), dtype=np.int64)
    for g in range(groups):
        left = per_group
        while left > 0:
            b = min(chunk, left)
            theta = rng.beta(prior.alpha, prior.beta, size=(b, k))
            top = np.argpartition(-theta, n_positions - 1, axis=1)[:, :n_positions]
            order = np.argsort(-np.take_along_axis(theta, top, axis=1), axis=1)
            ranked = np.take_along_axis(top, order, axis=1)
            for p in range(n_positions):
                counts[g, :, p] += np.bincount(ranked[:, p], minlength=k)
            left -= b
    group_probs = counts / float(per_group)
    return PositionPolicy(
        name="bts",
        probabilities=np.asarray(counts.sum(axis=0) / float(n_samples), dtype=np.float64),
        n_samples=n_samples,
        group_probabilities=np.asarray(group_probs, dtype=np.float64),
    )


def monte_carlo_error(values: FloatArray) -> float:
    """The standard error of the mean of per-group values (``std / sqrt(groups)``).

    Example:
        >>> round(monte_carlo_error(np.array([1.0, 2.0, 3.0, 4.0])), 4)
        0.6455
    """
    if values.size < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.size))
