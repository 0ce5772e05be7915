"""Writing evaluation output: per-user top-k lists in original ids, metric tables.

Example:
    >>> import numpy as np
    >>> frame = topk_frame(
    ...     np.array([[1, 0], [2, -1]]), np.array([[0.9, 0.5], [0.7, -np.inf]]),
    ...     user_ids=np.array([10, 20]), item_ids=np.array([100, 101, 102]),
    ... )
    >>> frame[["user", "item", "rank"]].values.tolist()
    [[10, 101, 1], [10, 100, 2], [20, 102, 1]]
    >>> print(metrics_table({"pop": {"ndcg@10": 0.25236, "map@10": 0.05596}}))
    | model | ndcg@10 | map@10 |
    |---|---:|---:|
    | pop | 0.2524 | 0.0560 |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

TOPK_COLUMNS: tuple[str, ...] = ("user", "item", "rank", "score")


def topk_frame(
    topk: npt.ArrayLike,
    scores: npt.ArrayLike,
    user_ids: npt.ArrayLike,
    item_ids: npt.ArrayLike,
) -> pd.DataFrame:
    """Top-k lists as a long frame in the dataset's original ids.

    Args:
        topk: int ``[U, k]`` item indices, best first, ``-1`` padded.
        scores: float ``[U, k]`` the model's scores of those items.
        user_ids: ``[U]`` original id of the user of each row of ``topk``.
        item_ids: ``[n_items]`` original id of each item index.

    Returns:
        Columns ``user``, ``item`` (original ids), ``rank`` (int32, 1-based),
        ``score`` (float32); one row per listed item, padding left out, ordered
        by row then rank.
    """
    rec = np.asarray(topk)
    val = np.asarray(scores)
    users = np.asarray(user_ids)
    items = np.asarray(item_ids)
    if rec.ndim != 2 or val.shape != rec.shape:
        raise ValueError(f"topk {rec.shape} and scores {val.shape} must be the same 2-D shape")
    if users.shape != (rec.shape[0],):
        raise ValueError(f"user_ids needs one id per topk row ({rec.shape[0]}), got {users.shape}")
    if rec.size and (rec.min() < -1 or rec.max() >= items.size):
        raise ValueError(f"topk entries must be in [-1, {items.size}) for {items.size} item ids")
    rows, ranks = np.nonzero(rec >= 0)
    return pd.DataFrame(
        {
            "user": users[rows],
            "item": items[rec[rows, ranks]],
            "rank": (ranks + 1).astype(np.int32),
            "score": val[rows, ranks].astype(np.float32),
        }
    )


def write_topk(
    path: str | Path,
    topk: npt.ArrayLike,
    scores: npt.ArrayLike,
    user_ids_original: npt.ArrayLike,
    item_ids_original: npt.ArrayLike,
    fmt: Literal["parquet", "csv"] | None = None,
) -> int:
    """Writes per-user top-k lists (:func:`topk_frame`) to Parquet or CSV.

    Args:
        path: output file; parent folders are created.
        topk: int ``[U, k]`` item indices, ``-1`` padded.
        scores: float ``[U, k]``.
        user_ids_original: ``[U]`` original id per row of ``topk``.
        item_ids_original: ``[n_items]`` original id per item index.
        fmt: ``"parquet"`` or ``"csv"``; default from the suffix (``.csv`` or
            ``.csv.gz`` -> CSV, anything else -> Parquet).

    Returns:
        Rows written.
    """
    out = Path(path)
    if fmt is None:
        fmt = "csv" if out.name.endswith((".csv", ".csv.gz")) else "parquet"
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    frame = topk_frame(topk, scores, user_ids_original, item_ids_original)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    return len(frame)


def metrics_table(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] | None = None,
    digits: int = 4,
) -> str:
    """A markdown table: one row per model, one column per metric.

    Args:
        results: ``{model name: {metric name: value}}``.
        metrics: columns in order (default: every metric, in first-seen order).
        digits: decimals shown; missing values print as ``n/a``.

    Returns:
        The table, lines joined by ``\\n`` (no trailing newline).
    """
    if metrics is None:
        metrics = list(dict.fromkeys(name for row in results.values() for name in row))
    header = "| model | " + " | ".join(metrics) + " |"
    rule = "|---|" + "---:|" * len(metrics)
    lines = [header, rule]
    for model, row in results.items():
        cells = []
        for name in metrics:
            value = row.get(name)
            if value is None or math.isnan(value):
                cells.append("n/a")
            else:
                cells.append(f"{value:.{digits}f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
