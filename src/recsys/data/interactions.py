"""A generic interactions table (CSV, TSV or Parquet) with an optional item attribute file.

The ``interactions`` dataset loader reads any table with one interaction per row:
a column map names the user, item, optional rating and timestamp columns (and,
for anonymous rows, a session column); the timestamp format, the rating scale
and the spellings of a missing value come from the config too (see
:class:`InteractionsConfig`). An optional item file adds attributes (title,
genres, brand, ...); multi-valued fields (``Comedy|Drama``) become lists that
keep every value unless a cap is configured, and a cap's truncation is reported.

The reader is :func:`recsys.data.event_log.read_event_table` (one reader for
every delimited log), so rejections are counted the same way: missing ids
(``NA``, ``null``, empty ...), missing or unparseable times, ratings off the
scale. The table has no user side table, so its feature schema must not ask
for demographics: ``configs/schema/interactions.yaml``.

Example:
    >>> config = InteractionsConfig(
    ...     file="ratings.tsv",
    ...     columns={"customer": "user_id", "product": "item_id", "stars": "rating",
    ...              "ts": "timestamp"},
    ...     items=ItemFileConfig(file="products.csv", columns={"product": "item_id"},
    ...                          multi_valued={"genres": "|"}),
    ... )
    >>> data = load_interactions("/data/shop", config=config)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.data._delimited import Encoding, apply_checks_to, finish, require_file
from recsys.data.event_log import (
    EventLogConfig,
    FileFormat,
    _file_format,
    _ids,
    _map_columns,
    _read_csv_columns,
    read_event_table,
)
from recsys.data.frame import ITEM, DataConfigError, InteractionData, LoadReport
from recsys.data.missing import MISSING_TOKENS, missing_mask
from recsys.data.ratings import RatingScale
from recsys.data.timestamps import TimestampConfig


@dataclass(frozen=True)
class ItemFileConfig:
    """An item attribute file (``read.items`` of ``loader: interactions``).

    Attributes:
        file: the file, relative to the dataset folder; None: no item file.
        format: ``auto`` (by suffix), ``csv``, ``tsv`` or ``parquet``.
        delimiter: field separator of a text file (None: sniffed from the header).
        encoding: ``utf-8`` or ``latin-1``.
        columns: the file's column -> attribute name; one must end up as ``item_id``.
        multi_valued: attribute -> separator of its values inside one field
            (e.g. ``{genres: "|"}``); Parquet list columns are lists already.
        max_values: keep at most this many values per multi-valued field (the
            truncation is reported); None keeps every value.
        missing_values: spellings of a missing value (never an item id).

    Example:
        >>> ItemFileConfig(file="items.csv", multi_valued={"genres": "|"}).max_values is None
        True
    """

    file: str | None = None
    format: FileFormat = "auto"
    delimiter: str | None = None
    encoding: Encoding = "utf-8"
    columns: dict[str, str] = field(default_factory=dict)
    multi_valued: dict[str, str] = field(default_factory=dict)
    max_values: int | None = None
    missing_values: tuple[str, ...] = MISSING_TOKENS

    def __post_init__(self) -> None:
        if self.max_values is not None and self.max_values < 1:
            raise DataConfigError(
                f"read.items.max_values must be >= 1 or null, got {self.max_values}"
            )


@dataclass(frozen=True)
class InteractionsConfig:
    """How to read an interactions table (the ``read:`` block of ``loader: interactions``).

    Attributes:
        file: the table, relative to the dataset folder (or absolute).
        format: ``auto`` (``.parquet``/``.pq`` is Parquet, else text with a
            header row), ``csv``, ``tsv`` or ``parquet``.
        delimiter: field separator of a text table (None: by format, or sniffed).
        encoding: ``utf-8`` or ``latin-1``.
        columns: the file's column -> canonical name: ``user_id``, ``item_id``,
            ``timestamp`` (required), ``rating`` (optional; 1.0 when absent),
            ``session_id`` (for ``anonymous: session``); others are kept.
        timestamp: the timestamp format and the UTC offset of times without one.
        rating_scale: valid ratings (others rejected); empty bounds accept any number.
        missing_values: spellings of a missing value that are never an id.
        anonymous: ``reject`` rows without a user id, or ``session``: give them
            the id ``anon:<session_id>``.
        items: the optional item attribute file.

    Example:
        >>> InteractionsConfig(items=ItemFileConfig(file="items.csv")).required_files()
        ('interactions.csv', 'items.csv')
    """

    file: str = "interactions.csv"
    format: FileFormat = "auto"
    delimiter: str | None = None
    encoding: Encoding = "utf-8"
    columns: dict[str, str] = field(default_factory=dict)
    timestamp: TimestampConfig = field(default_factory=TimestampConfig)
    rating_scale: RatingScale = field(default_factory=RatingScale)
    missing_values: tuple[str, ...] = MISSING_TOKENS
    anonymous: Literal["reject", "session"] = "reject"
    items: ItemFileConfig = field(default_factory=ItemFileConfig)

    def required_files(self) -> tuple[str, ...]:
        """Files the dataset folder must hold."""
        return (self.file,) if self.items.file is None else (self.file, self.items.file)

    def event_log(self) -> EventLogConfig:
        """The same reading settings as an :class:`EventLogConfig`."""
        return EventLogConfig(
            file=self.file,
            format=self.format,
            delimiter=self.delimiter,
            encoding=self.encoding,
            columns=self.columns,
            timestamp=self.timestamp,
            missing_values=self.missing_values,
            anonymous=self.anonymous,
            rating_scale=self.rating_scale,
        )


def _split_values(values: pd.Series, sep: str) -> list[list[str]]:
    """``"a|b|"`` -> ``["a", "b"]`` (every value, blanks dropped); lists stay lists."""
    out: list[list[str]] = []
    for value in values.tolist():
        if isinstance(value, list | tuple | np.ndarray):
            out.append([str(v).strip() for v in value if str(v).strip()])
        elif value is None or (isinstance(value, float) and np.isnan(value)):
            out.append([])
        else:
            out.append([v.strip() for v in str(value).split(sep) if v.strip()])
    return out


def read_item_file(
    path: Path, config: ItemFileConfig, *, strict: bool = False
) -> tuple[pd.DataFrame, LoadReport]:
    """Reads an item attribute file into one row per item.

    Args:
        path: the file.
        config: columns, multi-valued attributes and their cap.
        strict: raise if any row is rejected (missing or duplicate item id).

    Returns:
        ``item_id`` (int64 when every id is an integer, else str) and the
        attributes (text columns as str, multi-valued ones as lists, ``year``
        as Int64 when present), and the file's report.

    Raises:
        DataConfigError: no column ends up as ``item_id``, or a mapped column is absent.
        MalformedDataError: ``strict`` and rows were rejected.

    Example:
        >>> items, report = read_item_file(Path("items.csv"), ItemFileConfig())  # doctest: +SKIP
    """
    path = require_file(path)
    report = LoadReport(source=str(path))
    if _file_format(path, config.format) == "parquet":
        frame = pd.read_parquet(path)
        columns = {str(c): frame[c].reset_index(drop=True) for c in frame.columns}
        numbers = np.arange(1, len(frame) + 1, dtype=np.int64)
        report.rows_read = len(frame)

        def raw_of(idx: np.ndarray) -> list[str]:
            return [repr(frame.iloc[int(i)].to_dict()) for i in idx]
    else:
        fmt = _file_format(path, config.format)
        columns, numbers, raw = _read_csv_columns(
            path, report, config.delimiter, config.encoding, fmt
        )

        def raw_of(idx: np.ndarray) -> list[str]:
            return [str(v) for v in raw.take(pa.array(idx)).to_pylist()]

    columns = _map_columns(path, columns, config.columns)
    if ITEM not in columns:
        raise DataConfigError(
            f"{path}: no item id column; map one with read.items.columns, e.g. "
            f"{{{next(iter(columns), 'id')}: item_id}} (columns: {', '.join(columns)})"
        )
    absent = [c for c in config.multi_valued if c not in columns]
    if absent:
        raise DataConfigError(
            f"{path}: read.items.multi_valued names {absent[0]!r}, which is not a column "
            f"(columns: {', '.join(columns)})"
        )
    raw_ids = columns[ITEM]
    present = ~missing_mask(raw_ids, config.missing_values)
    key = raw_ids.astype("str").str.strip().where(present)
    repeat = key.duplicated(keep="first").to_numpy(dtype=bool) & present
    keep = apply_checks_to(
        report, numbers, raw_of, [("missing item_id", present), ("duplicate item_id", ~repeat)]
    )
    out = pd.DataFrame({ITEM: _ids(raw_ids[keep].reset_index(drop=True))})
    if isinstance(out[ITEM].dtype, pd.Int64Dtype):
        out[ITEM] = out[ITEM].astype("int64")
    for name, values in columns.items():
        if name == ITEM:
            continue
        kept = values[keep].reset_index(drop=True)
        if name in config.multi_valued:
            lists = _split_values(kept, config.multi_valued[name])
            cap = config.max_values
            if cap is not None:
                longer = sum(len(v) > cap for v in lists)
                if longer:
                    report.repair(
                        f"{name} truncated to the first {cap} values (read.items.max_values)",
                        longer,
                    )
                lists = [v[:cap] for v in lists]
            out[name] = pd.Series(lists, dtype=object)
        elif name == "year":
            years = pd.to_numeric(kept, errors="coerce")
            bad = int((years.isna() & ~pd.Series(missing_mask(kept))).sum())
            if bad:
                report.repair("unparseable year set to missing", bad)
            out[name] = years.round().astype("Int64")
        else:
            out[name] = kept
    finish(report, len(out), strict)
    return out, report


def _align_item_ids(
    interactions: pd.DataFrame, items: pd.DataFrame, report: LoadReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gives both tables' item ids one dtype (text if either has a non-integer id)."""
    left, right = interactions[ITEM], items[ITEM]
    if pd.api.types.is_integer_dtype(left.dtype) == pd.api.types.is_integer_dtype(right.dtype):
        return interactions, items
    report.repair("item ids read as text in both files (one file has non-integer ids)", len(items))
    return (
        interactions.assign(**{ITEM: left.astype("str")}),
        items.assign(**{ITEM: right.astype("str")}),
    )


def load_interactions(
    path_or_dir: str | os.PathLike[str],
    strict: bool = False,
    *,
    config: InteractionsConfig | None = None,
    name: str | None = None,
) -> InteractionData:
    """Loads an interactions table and its optional item attribute file.

    Args:
        path_or_dir: the dataset folder (holding ``config.file``), or the table itself.
        strict: raise :class:`~recsys.data.frame.MalformedDataError` if any row
            of either file is rejected.
        config: columns, formats and the item file (see :class:`InteractionsConfig`).
        name: dataset name to record (defaults to the folder name).

    Returns:
        ``interactions`` (``user_id``, ``item_id``, ``rating``, ``timestamp``,
        then other columns), ``items`` (or None) and no ``users``; one report
        per file.

    Raises:
        DatasetNotFoundError: a file is missing.
        DataConfigError: the config does not fit the files.
        MalformedDataError: a required column is absent, or ``strict`` and rows
            were rejected.

    Example:
        >>> data = load_interactions("/data/shop/interactions.parquet")  # doctest: +SKIP
        >>> data.users is None  # doctest: +SKIP
        True
    """
    config = config or InteractionsConfig()
    path = Path(path_or_dir)
    folder, table_path = (path, path / config.file) if path.is_dir() else (path.parent, path)
    table = read_event_table(table_path, config.event_log(), strict=strict, with_event_type=False)
    interactions = table.frame
    reports = [table.report]
    items: pd.DataFrame | None = None
    if config.items.file is not None:
        items, items_report = read_item_file(
            folder / config.items.file, config.items, strict=strict
        )
        interactions, items = _align_item_ids(interactions, items, items_report)
        reports.append(items_report)
    return InteractionData(
        name=name or folder.name,
        interactions=interactions,
        users=None,
        items=items,
        reports=reports,
    )


__all__ = ["InteractionsConfig", "ItemFileConfig", "load_interactions", "read_item_file"]
