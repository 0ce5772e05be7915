"""Persisting a bandit: versioned JSON files written atomically, restored after a restart.

A state file holds the bandit's :meth:`~recsys.bandits.linear.LinearBandit.to_dict`
(format version, kind, parameters, the per-arm statistics and the update count) plus
what it was saved with (arm names, context names, the time). :func:`save_state` writes a
temporary file and renames it, so a crash leaves the previous state, never half a file;
:func:`load_state` refuses a file whose arms or context do not match what the caller
serves.

Example:
    >>> save_state(bandit, "bandit.json", arms=["a", "b"], context=enc.names())  # doctest: +SKIP
    >>> bandit = load_state("bandit.json", arms=["a", "b"], context=enc.names())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from recsys.bandits.linear import LinearBandit


def save_state(
    bandit: LinearBandit, path: str | Path, arms: Sequence[str], context: Sequence[str]
) -> Path:
    """Writes the bandit's state to ``path`` atomically; returns the path."""
    if len(arms) != bandit.n_arms or len(context) != bandit.dim:
        raise ValueError(
            f"{len(arms)} arm names and {len(context)} context names for a bandit of "
            f"{bandit.n_arms} arms and {bandit.dim} dimensions"
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "bandit": bandit.to_dict(),
        "arms": list(arms),
        "context": list(context),
        "saved_at": time.time(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_state(path: str | Path, arms: Sequence[str], context: Sequence[str]) -> LinearBandit:
    """The bandit saved at ``path``.

    Raises:
        ValueError: the file's arms or context names differ from ``arms`` / ``context``,
            or its format is unknown.
    """
    body = json.loads(Path(path).read_text(encoding="utf-8"))
    if list(body.get("arms", [])) != list(arms):
        raise ValueError(f"{path}: saved for arms {body.get('arms')}, not {list(arms)}")
    if list(body.get("context", [])) != list(context):
        raise ValueError(f"{path}: saved for another context encoding")
    return LinearBandit.from_dict(body["bandit"])
