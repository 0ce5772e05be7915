"""Loaders for interaction event logs (clicks, views, purchases) in CSV or Parquet.

An event log has one event per row with ``user_id``, ``item_id``, ``event_type``
and ``timestamp`` columns (other names are mapped with ``column_map``), plus any
context columns (device, page, ...), which are kept unchanged after the
canonical ones. :func:`load_yoochoose` reads the RecSys Challenge 2015 click
stream.

Returned ``interactions`` columns:

============ =================== ==================================================
column       dtype               meaning
============ =================== ==================================================
user_id      int64 or str        int64 when every id is an integer, else str
item_id      int64 or str        same rule
rating       float32             the ``rating`` (or ``value``) column if present
                                 (NaN where empty), else 1.0
timestamp    datetime64[ns, UTC] unix seconds (int or float) or ISO-8601; ISO
                                 times without a zone are taken as UTC
event_type   str                 as written (``default_event_type`` if absent)
...          as read             context columns (CSV: str; Parquet: as stored)
============ =================== ==================================================

Rows with a missing id, a missing or unparseable timestamp or a non-numeric
rating are rejected and reported (row numbers are file line numbers for CSV and
1-based row positions for Parquet).

Example:
    >>> data = load_yoochoose("yoochoose-clicks-100k_train_full.txt")  # doctest: +SKIP
    >>> data.interactions.columns.tolist()  # doctest: +SKIP
    ['user_id', 'item_id', 'rating', 'timestamp', 'event_type']
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data._delimited import (
    apply_checks,
    apply_checks_to,
    finish,
    parse_float,
    parse_int,
    peek_first_line,
    read_lines,
    require_file,
    seconds_to_nanos,
    split_fields,
    utc_from_seconds,
)
from recsys.data.frame import (
    EVENT_TYPE,
    INTERACTION_COLUMNS,
    ITEM,
    RATING,
    TIMESTAMP,
    USER,
    InteractionData,
    LoadReport,
    MalformedDataError,
)

PARQUET_SUFFIXES = (".parquet", ".pq")
RATING_ALIASES = (RATING, "value")
_INT_RE = r"[+-]?[0-9]{1,18}"
_NUMBER_RE = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"


def _missing(values: pd.Series) -> np.ndarray:
    """Null, or a string that is empty after stripping."""
    missing = values.isna().to_numpy(dtype=bool)
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        blank = values.astype("str").str.strip().eq("").to_numpy(dtype=bool)
        missing = missing | blank
    return missing


def _ids(values: pd.Series) -> pd.Series:
    """Ids as int64 when every present value is an integer, else stripped str."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("int64")
    if pd.api.types.is_float_dtype(values.dtype):
        present = values.dropna()
        if (present == np.round(present)).all():
            return values.astype("Int64")
        return values.astype("str")
    text = values.astype("str").str.strip()
    present = text[values.notna() & text.ne("")]
    if len(present) and present.str.fullmatch(_INT_RE).all():
        return pd.to_numeric(text, errors="coerce").astype("Int64")
    return text


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parses event times to datetime64[ns, UTC]; NaT where missing or unparseable.

    Accepted: datetime columns (naive = UTC), unix seconds as numbers or numeric
    strings, and ISO-8601 strings with or without a zone (naive = UTC).

    Args:
        values: the raw timestamp column.

    Returns:
        A series aligned with ``values``.

    Example:
        >>> parse_timestamps(pd.Series(["1396437466.5", "2014-04-02T11:17:46Z"])).dt.second.tolist()
        [46, 46]
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    nanos = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(numbers)
        nanos[ok] = seconds_to_nanos(numbers[ok])
    else:
        text = values.astype("str").str.strip()
        numeric = text.str.fullmatch(_NUMBER_RE).fillna(False).to_numpy(dtype=bool)
        if numeric.any():
            nanos[numeric] = seconds_to_nanos(pd.to_numeric(text[numeric]).to_numpy())
        other = ~numeric & ~_missing(values)
        if other.any():
            parsed = pd.to_datetime(text[other], format="ISO8601", utc=True, errors="coerce")
            naive = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
            nanos[other] = naive.view(np.int64)
    index = pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC")
    return pd.Series(index, index=values.index)


def _read_csv_columns(
    path: Path, report: LoadReport
) -> tuple[dict[str, pd.Series], np.ndarray, pa.Array]:
    """CSV/TSV with a header -> string columns, line numbers and raw lines."""
    first = peek_first_line(path)
    sep = "\t" if "\t" in first else ","
    header = [h.strip() for h in next(csv.reader([first], delimiter=sep))]
    if len(set(header)) != len(header):
        raise MalformedDataError(f"{path}: duplicate column names in header {header}")
    lines = read_lines(path, report, skip_lines=_header_line_number(path))
    table = split_fields(lines, sep, len(header), report, quoted=True)
    columns = {
        name: pd.Series(table.columns[j].to_numpy(zero_copy_only=False), dtype="str")
        for j, name in enumerate(header)
    }
    return columns, table.numbers, table.raw


def _header_line_number(path: Path) -> int:
    """Physical line number of the header (the first non-blank line)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                return number
    return 0


def load_event_log(
    path: str | os.PathLike[str],
    strict: bool = False,
    column_map: Mapping[str, str] | None = None,
    *,
    default_event_type: str = "interaction",
) -> InteractionData:
    """Loads an event log from Parquet (``.parquet``/``.pq``) or CSV/TSV with a header.

    Args:
        path: the file.
        strict: raise :class:`MalformedDataError` if any row is rejected.
        column_map: source column name -> canonical name, e.g.
            ``{"SessionId": "user_id", "ts": "timestamp"}``.
        default_event_type: ``event_type`` for logs without that column.

    Returns:
        Interactions (columns in the module docstring), no side tables, one report.

    Raises:
        DatasetNotFoundError: the file does not exist.
        MalformedDataError: a required column is absent, or ``strict`` and rows
            were rejected.
    """
    path = require_file(Path(path))
    report = LoadReport(source=str(path))
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame = pd.read_parquet(path)
        columns = {str(c): frame[c].reset_index(drop=True) for c in frame.columns}
        numbers = np.arange(1, len(frame) + 1, dtype=np.int64)
        report.rows_read = len(frame)

        def raw_of(idx: np.ndarray) -> list[str]:
            return [repr(frame.iloc[int(i)].to_dict()) for i in idx]
    else:
        columns, numbers, raw = _read_csv_columns(path, report)

        def raw_of(idx: np.ndarray) -> list[str]:
            return [str(v) for v in raw.take(pa.array(idx)).to_pylist()]

    mapping = dict(column_map or {})
    columns = {mapping.get(name, name): values for name, values in columns.items()}
    absent = [c for c in (USER, ITEM, TIMESTAMP) if c not in columns]
    if absent:
        raise MalformedDataError(
            f"{path}: missing column(s) {absent}; found {list(columns)}. Map other names "
            "with column_map, e.g. {'SessionId': 'user_id'}."
        )
    timestamps = parse_timestamps(columns[TIMESTAMP])
    rating_name = next((c for c in RATING_ALIASES if c in columns), None)
    checks = [
        ("missing user_id", ~_missing(columns[USER])),
        ("missing item_id", ~_missing(columns[ITEM])),
        ("missing timestamp", ~_missing(columns[TIMESTAMP])),
        ("bad timestamp", timestamps.notna().to_numpy()),
    ]
    ratings = np.ones(len(numbers), dtype=np.float64)
    if rating_name is not None:
        rating_values = columns[rating_name]
        if pd.api.types.is_numeric_dtype(rating_values.dtype):
            ratings = rating_values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            ratings, ok = parse_float(pa.array(rating_values.astype("str")), empty_is_nan=True)
            checks.append(("non-numeric rating", ok))
    keep = apply_checks_to(report, numbers, raw_of, checks)
    event_type = columns.get(EVENT_TYPE)
    if event_type is None:
        event_type = pd.Series(default_event_type, index=range(len(numbers)), dtype="str")
    else:
        event_type = event_type.astype("str").str.strip()
        empty = event_type.eq("") | columns[EVENT_TYPE].isna()
        if bool(empty[keep].any()):
            report.repair(
                f"missing event_type set to {default_event_type!r}", int(empty[keep].sum())
            )
        event_type = event_type.mask(empty, default_event_type)
    out = pd.DataFrame(
        {
            USER: _ids(columns[USER][keep].reset_index(drop=True)),
            ITEM: _ids(columns[ITEM][keep].reset_index(drop=True)),
            RATING: ratings[keep].astype(np.float32),
            TIMESTAMP: timestamps[keep].reset_index(drop=True),
            EVENT_TYPE: event_type[keep].reset_index(drop=True).astype("str"),
        }
    )
    for id_column in (USER, ITEM):
        if isinstance(out[id_column].dtype, pd.Int64Dtype):
            out[id_column] = out[id_column].astype("int64")
    canonical = {*INTERACTION_COLUMNS, EVENT_TYPE, rating_name}
    for name, values in columns.items():
        if name not in canonical:
            out[name] = values[keep].reset_index(drop=True)
    finish(report, len(out), strict)
    return InteractionData(name=path.stem, interactions=out, reports=[report])


def load_yoochoose(path: str | os.PathLike[str], strict: bool = False) -> InteractionData:
    """Loads a YOOCHOOSE (RecSys Challenge 2015) click file.

    Two layouts are recognised from the first line: the prepared one
    (``SessionId<TAB>ItemId<TAB>Time`` header, unix seconds with milliseconds)
    and the challenge's raw ``yoochoose-clicks.dat`` (no header;
    ``SessionId,Timestamp,ItemId,Category`` with ISO-8601 UTC times; the category
    is kept as a ``category`` str column).

    Args:
        path: the file.
        strict: raise :class:`MalformedDataError` if any row is rejected.

    Returns:
        Interactions with ``user_id`` = session id (int64), ``item_id`` int64,
        ``rating`` 1.0, ``timestamp`` UTC and ``event_type`` ``"click"``.

    Raises:
        DatasetNotFoundError: the file does not exist.
        MalformedDataError: ``strict`` and rows were rejected.
    """
    path = require_file(Path(path))
    report = LoadReport(source=str(path))
    first = peek_first_line(path)
    header = [h.strip() for h in first.split("\t")]
    if "SessionId" in header:
        positions = [
            header.index(n) if n in header else -1 for n in ("SessionId", "ItemId", "Time")
        ]
        if -1 in positions:
            raise MalformedDataError(f"{path}: header {header} lacks SessionId, ItemId or Time")
        lines = read_lines(path, report, skip_lines=_header_line_number(path))
        table = split_fields(lines, "\t", len(header), report)
        sessions, sessions_ok = parse_int(table.columns[positions[0]])
        items, items_ok = parse_int(table.columns[positions[1]])
        seconds, seconds_ok = parse_float(table.columns[positions[2]])
        extra: dict[str, pd.Series] = {}
        timestamps: pd.Series | None = None
    else:
        lines = read_lines(path, report)
        table = split_fields(lines, ",", 4, report)
        sessions, sessions_ok = parse_int(table.columns[0])
        items, items_ok = parse_int(table.columns[2])
        timestamps = parse_timestamps(
            pd.Series(table.columns[1].to_numpy(zero_copy_only=False), dtype="str")
        )
        seconds_ok = timestamps.notna().to_numpy()
        seconds = np.zeros(len(table))
        extra = {
            "category": pd.Series(
                pc.utf8_trim_whitespace(table.columns[3]).to_numpy(zero_copy_only=False),
                dtype="str",
            )
        }
    keep = apply_checks(
        report,
        table,
        [
            ("non-numeric session id", sessions_ok),
            ("non-numeric item_id", items_ok),
            ("bad timestamp", seconds_ok & (np.nan_to_num(seconds) >= 0)),
        ],
    )
    times = (
        utc_from_seconds(seconds[keep])
        if timestamps is None
        else timestamps[keep].reset_index(drop=True)
    )
    out = pd.DataFrame(
        {
            USER: sessions[keep],
            ITEM: items[keep],
            RATING: np.ones(int(keep.sum()), dtype=np.float32),
            TIMESTAMP: times,
            EVENT_TYPE: pd.Series("click", index=range(int(keep.sum())), dtype="str"),
        }
    )
    for name, values in extra.items():
        out[name] = values[keep].reset_index(drop=True)
    finish(report, len(out), strict)
    return InteractionData(name=path.stem, interactions=out, reports=[report])
