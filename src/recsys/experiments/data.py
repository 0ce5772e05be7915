"""Exposure tables in, per-unit metrics out.

The analysis reads one row per exposure (a served list and the outcomes attributed to
it), the table the exposure log (``recommendation_impression`` events,
:mod:`recsys.runtime.exposure`) and the click attribution give, with the assignment's
``experiment`` and ``arm`` taken from the exposure payload:

=============== ======== ===========================================================
column          type     meaning
=============== ======== ===========================================================
``unit``        str      the randomization unit (user or session id)
``arm``         str      the arm the unit was served (payload ``arm``)
``experiment``  str      optional: the experiment (payload ``experiment``)
``timestamp``   float    optional: exposure time, epoch seconds (for the sequential test)
``impressions`` int      items shown
``clicks``      int      clicks attributed to the exposure
``conversions`` int      conversions attributed to it
``dwell``       float    dwell seconds attributed to it
=============== ======== ===========================================================

A pre-period table has ``unit`` and the four outcome columns (one row per unit or per
exposure, before the experiment started); units missing from it have zeros.

Rows are summed per unit. A unit seen in two arms is dropped and counted: the analysis
assumes each unit saw one arm, and such units (a changed config, a logging bug) would
blur the comparison. Rows of arms the design does not name are dropped and counted too.

Example:
    >>> df = pd.DataFrame({"unit": ["a", "a", "b"], "arm": ["c", "c", "t"],
    ...                    "impressions": [10, 5, 8], "clicks": [1, 0, 2],
    ...                    "conversions": [0, 0, 1], "dwell": [3.0, 0.0, 9.0]})
    >>> table = unit_table(df, ("c", "t"))
    >>> table.columns["impressions"].tolist(), table.arm.tolist()
    ([15.0, 8.0], [0, 1])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.experiments.metrics import COUNT_COLUMNS, METRICS
from recsys.experiments.moments import Moments

REQUIRED_COLUMNS: tuple[str, ...] = ("unit", "arm", *COUNT_COLUMNS)
"""The columns every exposure table has."""


class ExposureDataError(ValueError):
    """An exposure or pre-period table is unusable; the message names file and column."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Reads a CSV, Parquet or JSON-lines table (by the file's suffix).

    Args:
        path: ``.csv``, ``.parquet`` or ``.jsonl``/``.ndjson``.

    Returns:
        The table; ``unit`` and ``arm`` as strings.

    Raises:
        ExposureDataError: an unknown suffix or an unreadable file.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(p, dtype={"unit": str, "arm": str, "experiment": str})
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True, dtype={"unit": str, "arm": str})
        else:
            raise ExposureDataError(f"{p}: expected a .csv, .parquet or .jsonl table")
    except (OSError, ValueError) as e:
        if isinstance(e, ExposureDataError):
            raise
        raise ExposureDataError(f"{p}: cannot read: {e}") from None
    return df


def check_table(df: pd.DataFrame, source: str, pre: bool = False) -> pd.DataFrame:
    """Checks columns and values of an exposure (or pre-period) table.

    Args:
        df: the table.
        source: its file name, for messages.
        pre: a pre-period table (no ``arm`` needed).

    Returns:
        The table with ``unit`` (and ``arm``) as strings and outcomes as floats.

    Raises:
        ExposureDataError: a missing column, a missing or negative or non-numeric value.
    """
    needed = [c for c in REQUIRED_COLUMNS if not (pre and c == "arm")]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ExposureDataError(
            f"{source}: missing columns {missing}; an exposure table has {list(needed)}"
        )
    out = df.copy()
    for c in ("unit", "arm", "experiment"):
        if c in out.columns:
            if out[c].isna().any():
                row = int(np.flatnonzero(out[c].isna().to_numpy())[0])
                raise ExposureDataError(f"{source}: column {c!r} is empty at row {row}")
            out[c] = out[c].astype(str)
    for c in (*COUNT_COLUMNS, *(["timestamp"] if "timestamp" in out.columns else [])):
        values = pd.to_numeric(out[c], errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        if c != "timestamp":
            bad |= values.to_numpy() < 0
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ExposureDataError(
                f"{source}: column {c!r} has {len(rows)} missing, non-numeric or negative "
                f"values (first at row {int(rows[0])}: {df[c].iloc[int(rows[0])]!r})"
            )
        out[c] = values
    return out


@dataclass(frozen=True)
class UnitTable:
    """Per-unit sums of one experiment, with the pre-period joined.

    Attributes:
        arms: the design's arm names, in order.
        arm: each unit's arm index into ``arms``.
        columns: outcome column -> per-unit sums.
        pre: outcome column -> per-unit pre-period sums (zeros without a pre-period).
        has_pre: a pre-period table was given.
        mixed_units: units dropped for appearing in two or more arms.
        unknown_rows: rows dropped for naming an arm the design does not have.
    """

    arms: tuple[str, ...]
    arm: np.ndarray
    columns: Mapping[str, np.ndarray]
    pre: Mapping[str, np.ndarray]
    has_pre: bool
    mixed_units: int
    unknown_rows: int

    def counts(self) -> np.ndarray:
        """Units per arm, in arm order."""
        return np.bincount(self.arm, minlength=len(self.arms))

    def moments(self, metric: str) -> list[Moments]:
        """Per-arm moments of one metric (arm order).

        Args:
            metric: a name of :data:`~recsys.experiments.metrics.METRICS`.

        Returns:
            One :class:`Moments` per arm.
        """
        y, x = METRICS[metric].unit_values(self.columns)
        yp, xp = METRICS[metric].unit_values(self.pre)
        return [Moments.of(y, x, yp, xp, self.arm == k) for k in range(len(self.arms))]


def unit_table(
    exposures: pd.DataFrame,
    arms: tuple[str, ...],
    pre: pd.DataFrame | None = None,
    until: float | None = None,
) -> UnitTable:
    """Sums a checked exposure table per unit and joins the pre-period.

    Args:
        exposures: rows of one experiment (see :func:`check_table`).
        arms: the design's arm names.
        pre: the pre-period table, or None.
        until: keep exposures with ``timestamp <= until`` only (a look of the
            sequential test), or None for all.

    Returns:
        The :class:`UnitTable`.
    """
    rows = exposures
    if until is not None:
        rows = rows[rows["timestamp"].to_numpy() <= until]
    known = rows["arm"].isin(arms).to_numpy()
    unknown = int((~known).sum())
    rows = rows[known]
    grouped = rows.groupby("unit", sort=True)
    arm_count = grouped["arm"].nunique()
    single = arm_count[arm_count == 1].index
    sums = grouped[list(COUNT_COLUMNS)].sum().loc[single]
    first_arm = grouped["arm"].first().loc[single]
    index = {a: i for i, a in enumerate(arms)}
    arm = first_arm.map(index).to_numpy(dtype=np.int64)
    columns = {c: sums[c].to_numpy(dtype=np.float64) for c in COUNT_COLUMNS}
    if pre is not None:
        pre_sums = pre.groupby("unit")[list(COUNT_COLUMNS)].sum()
        joined = pre_sums.reindex(sums.index, fill_value=0.0)
        pre_cols = {c: joined[c].to_numpy(dtype=np.float64) for c in COUNT_COLUMNS}
    else:
        pre_cols = {c: np.zeros(len(sums)) for c in COUNT_COLUMNS}
    return UnitTable(
        arms=arms,
        arm=arm,
        columns=columns,
        pre=pre_cols,
        has_pre=pre is not None,
        mixed_units=int((arm_count > 1).sum()),
        unknown_rows=unknown,
    )
