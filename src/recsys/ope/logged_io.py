"""Logged bandit feedback as a CSV or Parquet file, one row per shown (action, position).

Columns (the CLI's ``evaluate --log`` input):

========================  ===========================================================
``action``                the shown action, an integer in ``0 .. n_actions - 1``
``reward``                the observed reward (a click: 0/1)
``pscore``                the logging policy's probability of the action at its
                          position, in ``(0, 1]``
``position``              optional: the slot, 0-based (default 0)
``pi_0 .. pi_{K-1}``      optional: the candidate's probability of each action at the
                          row's context and position (each row sums to 1); DM and DR
                          need them
``target_pscore``         optional: the candidate's probability of the logged action,
                          when the full distribution is not known (IPS, SNIPS)
``q_0 .. q_{K-1}``        optional: a reward model's prediction for each action
``x_0 .. x_{d-1}``        optional: context features
========================  ===========================================================

``n_actions`` is the number of ``pi_``/``q_`` columns, else ``max(action) + 1``.

Example:
    >>> write_logged(log, "log.parquet")  # doctest: +SKIP
    >>> read_logged("log.parquet").n_rounds  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.ope.errors import OPEInputError
from recsys.ope.logged import FloatArray, LoggedBandit

REQUIRED: tuple[str, ...] = ("action", "reward", "pscore")


def _indexed(frame: pd.DataFrame, prefix: str) -> list[str]:
    pattern = re.compile(rf"^{prefix}_(\d+)$")
    found = {int(m.group(1)): c for c in frame.columns if (m := pattern.match(str(c)))}
    if not found:
        return []
    if sorted(found) != list(range(len(found))):
        raise OPEInputError(
            f"columns {prefix}_*: expected {prefix}_0 .. {prefix}_{len(found) - 1} without gaps"
        )
    return [found[i] for i in range(len(found))]


def _matrix(frame: pd.DataFrame, columns: list[str]) -> FloatArray | None:
    return frame[columns].to_numpy(dtype=np.float64) if columns else None


def read_logged(path: str | Path, *, n_actions: int | None = None) -> LoggedBandit:
    """Reads a logged-data file (``.csv`` or ``.parquet``) with the documented columns.

    Args:
        path: the file.
        n_actions: the number of actions when no ``pi_``/``q_`` columns say it.

    Returns:
        The checked :class:`LoggedBandit`.

    Raises:
        OPEInputError: a required column is missing or a value is invalid.
    """
    p = Path(path)
    parquet = p.suffix.lower() in (".parquet", ".pq")
    frame = pd.read_parquet(p) if parquet else pd.read_csv(p)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise OPEInputError(f"{p}: missing columns {missing} (needs {list(REQUIRED)})")
    pi_cols, q_cols, x_cols = (_indexed(frame, k) for k in ("pi", "q", "x"))
    if pi_cols and q_cols and len(pi_cols) != len(q_cols):
        raise OPEInputError(f"{p}: {len(pi_cols)} pi_ columns but {len(q_cols)} q_ columns")
    if frame[list(REQUIRED)].isna().to_numpy().any():
        raise OPEInputError(f"{p}: empty cells in {list(REQUIRED)}")
    width = len(pi_cols) or len(q_cols)
    if width:
        k = width
    elif n_actions is not None:
        k = n_actions
    else:
        k = int(frame["action"].max()) + 1
    return LoggedBandit.build(
        action=frame["action"].to_numpy(),
        reward=frame["reward"].to_numpy(dtype=np.float64),
        pscore=frame["pscore"].to_numpy(dtype=np.float64),
        n_actions=k,
        position=frame["position"].to_numpy() if "position" in frame.columns else None,
        context=_matrix(frame, x_cols),
        action_dist=_matrix(frame, pi_cols),
        target_pscore=(
            frame["target_pscore"].to_numpy(dtype=np.float64)
            if "target_pscore" in frame.columns
            else None
        ),
        reward_hat=_matrix(frame, q_cols),
    )


def logged_frame(log: LoggedBandit) -> pd.DataFrame:
    """``log`` as a frame with the documented columns."""
    cols: dict[str, np.ndarray] = {
        "action": log.action,
        "position": log.position,
        "reward": log.reward,
        "pscore": log.pscore,
    }
    if log.target_pscore is not None and log.action_dist is None:
        cols["target_pscore"] = log.target_pscore
    for prefix, matrix in (("pi", log.action_dist), ("q", log.reward_hat), ("x", log.context)):
        if matrix is not None:
            for j in range(matrix.shape[1]):
                cols[f"{prefix}_{j}"] = matrix[:, j]
    return pd.DataFrame(cols)


def write_logged(log: LoggedBandit, path: str | Path) -> Path:
    """Writes ``log`` as ``.csv`` or ``.parquet`` (by the suffix) with the documented columns.

    Returns:
        The path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    frame = logged_frame(log)
    if p.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(p, index=False)
    else:
        frame.to_csv(p, index=False)
    return p
