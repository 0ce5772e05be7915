"""Loaders for interaction event logs (clicks, views, purchases) in CSV, TSV or Parquet.

An event log has one event per row. :class:`EventLogConfig` says how to read
one without writing Python: the delimiter, a column map (the file's column ->
the canonical name), a type map (the file's event type values -> the project's
event types), the timestamp format (:mod:`recsys.data.timestamps`: epoch
seconds or milliseconds, ISO 8601, a date pattern plus a UTC offset), which
spellings mean "missing", and what to do with rows that have no user id.
:func:`read_event_table` is the one reader; :func:`load_event_log` (the
``event_log`` dataset loader) and ``recsys realtime publish`` both use it.
:func:`load_yoochoose` reads the RecSys Challenge 2015 click stream.

Canonical columns (others are kept unchanged after them):

============ =================== ==================================================
column       dtype               meaning
============ =================== ==================================================
user_id      int64 or str        int64 when every id is an integer, else str;
                                 ``anon:<session_id>`` for rows without a user
                                 when ``anonymous: session``
item_id      int64 or str        same rule
rating       float32             the ``rating`` (or ``value``) column if present
                                 (NaN where empty), else 1.0
timestamp    datetime64[ns, UTC] parsed with the configured format
event_type   str                 after the type map (``default_event_type`` where
                                 the log has none)
session_id   as read             when the log has one (mapped or by name)
event_id     as read             when the log has one
...          as read             context columns (CSV: str; Parquet: as stored)
============ =================== ==================================================

Nothing is dropped silently: rows with a missing id (empty, ``NA``, ``null``,
``None``, ``nan``, whitespace: :mod:`recsys.data.missing`), a missing or
unparseable timestamp or a bad rating are rejected and counted per reason in the
:class:`~recsys.data.frame.LoadReport` (row numbers are file line numbers for
CSV and 1-based row positions for Parquet); rows left out by ``event_types``
are counted as filtered; ``strict`` turns any rejection into an error.

Example:
    >>> config = EventLogConfig(
    ...     delimiter=";",
    ...     columns={"uid": "user_id", "sku": "item_id", "ts": "timestamp", "action": "event_type"},
    ...     type_map={"view": "page_view", "buy": "purchase"},
    ...     timestamp=TimestampConfig("epoch_ms"),
    ... )
    >>> data = load_event_log("events.csv", config=config)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data._delimited import (
    Encoding,
    apply_checks,
    apply_checks_to,
    finish,
    parse_float,
    parse_int,
    peek_first_line,
    read_lines,
    require_file,
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
    DataConfigError,
    InteractionData,
    LoadReport,
    MalformedDataError,
)
from recsys.data.missing import MISSING_TOKENS, missing_mask
from recsys.data.ratings import RatingScale
from recsys.data.timestamps import TimestampConfig, parse_timestamps

SESSION = "session_id"
EVENT_ID = "event_id"
PARQUET_SUFFIXES = (".parquet", ".pq")
RATING_ALIASES = (RATING, "value")
# The event schema (recsys.events) calls the event type "type": a log written in
# that layout needs no column map.
EVENT_TYPE_ALIASES = (EVENT_TYPE, "type")
#: A ``read.columns`` target that drops the column (e.g. ``{internal_note: "-"}``).
DROP = "-"
ANONYMOUS_PREFIX = "anon:"
_INT_RE = r"[+-]?[0-9]{1,18}"

FileFormat = Literal["auto", "csv", "tsv", "parquet"]

__all__ = [
    "ANONYMOUS_PREFIX",
    "EventLogConfig",
    "EventTable",
    "TimestampConfig",
    "YoochooseConfig",
    "load_event_log",
    "load_yoochoose",
    "parse_timestamps",
    "read_event_table",
]


@dataclass(frozen=True)
class EventLogConfig:
    """How to read an event log (the ``read:`` block of ``loader: event_log`` configs).

    Attributes:
        file: the log, relative to the dataset folder (or absolute).
        format: ``auto`` (``.parquet``/``.pq`` is Parquet, anything else
            delimited text with a header row), ``csv``, ``tsv`` or ``parquet``.
        delimiter: field separator of a text log; None: tab for ``tsv``, comma
            for ``csv``, and for ``auto`` tab if the header holds one, else comma.
        encoding: ``utf-8`` or ``latin-1``.
        columns: the file's column name -> canonical name (``user_id``,
            ``item_id``, ``timestamp``, ``event_type``, ``rating``,
            ``session_id``, ``event_id`` or any context name), or ``-`` to drop
            the column; unmapped columns keep their names (a ``type`` column is
            the event type, as in the event schema).
        type_map: event type as written -> the project's event type (e.g.
            ``{view: page_view, buy: purchase}``); values not in the map are
            kept as written.
        event_types: keep only these event types (after the type map); the
            others are counted as filtered. None keeps every type.
        default_event_type: ``event_type`` of rows (or logs) without one.
        timestamp: the timestamp format and the UTC offset of times without a zone.
        missing_values: spellings of a missing value (case-insensitive) that
            are never an id.
        anonymous: ``reject`` rows without a user id, or ``session``: give them
            the user id ``anon:<session_id>`` (needs a session column).
        rating_scale: valid ratings of a rating column (others are rejected).

    Example:
        >>> EventLogConfig(columns={"SessionId": "session_id"}, anonymous="session").anonymous
        'session'
    """

    file: str = "events.csv"
    format: FileFormat = "auto"
    delimiter: str | None = None
    encoding: Encoding = "utf-8"
    columns: dict[str, str] = field(default_factory=dict)
    type_map: dict[str, str] = field(default_factory=dict)
    event_types: tuple[str, ...] | None = None
    default_event_type: str = "interaction"
    timestamp: TimestampConfig = field(default_factory=TimestampConfig)
    missing_values: tuple[str, ...] = MISSING_TOKENS
    anonymous: Literal["reject", "session"] = "reject"
    rating_scale: RatingScale = field(default_factory=RatingScale)

    def __post_init__(self) -> None:
        if self.delimiter == "":
            raise DataConfigError("read.delimiter must not be empty (null picks one)")
        targets = list(self.columns.values())
        doubled = sorted({t for t in targets if targets.count(t) > 1})
        if doubled:
            raise DataConfigError(f"read.columns maps several columns to {doubled[0]!r}")

    def required_files(self) -> tuple[str, ...]:
        """Files the dataset folder must hold."""
        return (self.file,)


@dataclass
class EventTable:
    """What :func:`read_event_table` read.

    Attributes:
        frame: the kept rows, canonical columns first (see the module docstring).
        numbers: file line (CSV/TSV) or 1-based row (Parquet) number of each kept row.
        report: counts of rows read, kept, rejected, repaired and filtered.
        rating_column: the file's rating column after mapping (``rating`` or
            ``value``), or None when the log has none (every rating is 1.0).
    """

    frame: pd.DataFrame
    numbers: np.ndarray
    report: LoadReport
    rating_column: str | None = None


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


def _text_ids(values: pd.Series) -> pd.Series:
    """Ids as stripped text (integers from Parquet written without a fraction)."""
    if pd.api.types.is_float_dtype(values.dtype):
        present = values.dropna()
        if (present == np.round(present)).all():
            values = values.astype("Int64")
    return values.astype("str").str.strip()


def _file_format(path: Path, fmt: FileFormat) -> str:
    if fmt != "auto":
        return fmt
    return "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "text"


def _read_csv_columns(
    path: Path, report: LoadReport, delimiter: str | None, encoding: Encoding, fmt: str
) -> tuple[dict[str, pd.Series], np.ndarray, pa.Array]:
    """Delimited text with a header -> string columns, line numbers and raw lines."""
    first = peek_first_line(path, encoding)
    if delimiter is not None:
        sep = delimiter
    elif fmt == "tsv":
        sep = "\t"
    elif fmt == "csv":
        sep = ","
    else:
        sep = "\t" if "\t" in first else ","
    quoted = len(sep) == 1
    if quoted:
        header = [h.strip() for h in next(csv.reader([first], delimiter=sep))]
    else:
        header = [h.strip() for h in first.split(sep)]
    if len(set(header)) != len(header):
        raise MalformedDataError(f"{path}: duplicate column names in header {header}")
    lines = read_lines(path, report, encoding=encoding, skip_lines=_header_line_number(path))
    table = split_fields(lines, sep, len(header), report, quoted=quoted)
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


def _map_columns(
    path: Path, columns: dict[str, pd.Series], mapping: Mapping[str, str]
) -> dict[str, pd.Series]:
    absent = [source for source in mapping if source not in columns]
    if absent:
        raise DataConfigError(
            f"{path}: read.columns maps {absent[0]!r}, which is not a column of the file "
            f"(columns: {', '.join(columns)}); fix the key or remove it"
        )
    out: dict[str, pd.Series] = {}
    for name, values in columns.items():
        target = mapping.get(name, name)
        if target == DROP:
            continue
        if target in out:
            raise DataConfigError(
                f"{path}: two columns end up as {target!r}; map only one of them with read.columns"
            )
        out[target] = values
    if EVENT_TYPE not in out and "type" in out:
        out = {(EVENT_TYPE if k == "type" else k): v for k, v in out.items()}
    return out


def read_event_table(
    path: str | os.PathLike[str],
    config: EventLogConfig | None = None,
    *,
    strict: bool = False,
    column_map: Mapping[str, str] | None = None,
    with_event_type: bool = True,
    record_rejected: bool = False,
    text_ids: bool = False,
) -> EventTable:
    """Reads an event log (or an interactions table) into canonical columns.

    Args:
        path: the file.
        config: how to read it; defaults to :class:`EventLogConfig()`.
        strict: raise :class:`MalformedDataError` if any row is rejected.
        column_map: extra ``source -> canonical`` names (win over ``config.columns``).
        with_event_type: add the ``event_type`` column (and apply the type map and
            ``event_types``); off for interaction tables without event types.
        record_rejected: keep every rejected row in ``report.rejected_rows``.
        text_ids: keep ``user_id`` and ``item_id`` as stripped text (``"007"``
            stays ``"007"``) instead of int64 when every id is an integer.

    Returns:
        The kept rows, their line numbers and the report.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DataConfigError: a mapped column is not in the file, or ``anonymous:
            session`` without a session column.
        MalformedDataError: a required column is absent, or ``strict`` and rows
            were rejected.

    Example:
        >>> config = EventLogConfig(anonymous="session")
        >>> table = read_event_table("clicks.tsv", config)  # doctest: +SKIP
        >>> table.report.repaired  # doctest: +SKIP
        {'missing user_id set to anon:<session_id>': 3}
    """
    config = config or EventLogConfig()
    path = require_file(Path(path))
    report = LoadReport(source=str(path), record_rejected=record_rejected)
    fmt = _file_format(path, config.format)
    raw_of: Callable[[np.ndarray], list[str]]
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        columns = {str(c): frame[c].reset_index(drop=True) for c in frame.columns}
        numbers = np.arange(1, len(frame) + 1, dtype=np.int64)
        report.rows_read = len(frame)

        def raw_of(idx: np.ndarray) -> list[str]:
            return [repr(frame.iloc[int(i)].to_dict()) for i in idx]
    else:
        columns, numbers, raw = _read_csv_columns(
            path, report, config.delimiter, config.encoding, fmt
        )

        def raw_of(idx: np.ndarray) -> list[str]:
            return [str(v) for v in raw.take(pa.array(idx)).to_pylist()]

    columns = _map_columns(path, columns, {**config.columns, **(column_map or {})})
    anonymous = config.anonymous == "session"
    if anonymous and SESSION not in columns:
        raise DataConfigError(
            f"{path}: read.anonymous=session gives rows without a user id the id "
            f"anon:<session_id>, but the file has no {SESSION!r} column (columns: "
            f"{', '.join(columns)}); map one with read.columns, e.g. {{SessionId: session_id}}"
        )
    required = [ITEM, TIMESTAMP] if anonymous and USER not in columns else [USER, ITEM, TIMESTAMP]
    absent = [c for c in required if c not in columns]
    if absent:
        raise MalformedDataError(
            f"{path}: missing column(s) {absent}; found {list(columns)}. Map other names "
            "with column_map / read.columns, e.g. {'SessionId': 'user_id'}."
        )
    n = len(numbers)
    tokens = config.missing_values
    no_user = missing_mask(columns[USER], tokens) if USER in columns else np.ones(n, dtype=bool)
    checks: list[tuple[str, np.ndarray]] = []
    anon_rows = np.zeros(n, dtype=bool)
    if anonymous:
        no_session = missing_mask(columns[SESSION], tokens)
        checks.append(("missing user_id and session_id", ~(no_user & no_session)))
        anon_rows = no_user & ~no_session
    else:
        checks.append(("missing user_id", ~no_user))
    timestamps = config.timestamp.parse(columns[TIMESTAMP])
    checks += [
        ("missing item_id", ~missing_mask(columns[ITEM], tokens)),
        ("missing timestamp", ~missing_mask(columns[TIMESTAMP], tokens)),
        ("bad timestamp", timestamps.notna().to_numpy()),
    ]
    rating_name = next((c for c in RATING_ALIASES if c in columns), None)
    ratings = np.ones(n, dtype=np.float64)
    if rating_name is not None:
        rating_values = columns[rating_name]
        if pd.api.types.is_numeric_dtype(rating_values.dtype):
            ratings = rating_values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            text = rating_values.astype("str")
            empty = missing_mask(rating_values, tokens)
            ratings, ok = parse_float(pa.array(text.where(~empty, "")), empty_is_nan=True)
            checks.append(("non-numeric rating", ok))
        scale = config.rating_scale
        if scale.min is not None or scale.max is not None:
            present = ~np.isnan(ratings)
            checks.append(("rating out of range", ~present | scale.valid(ratings)))
    keep = apply_checks_to(report, numbers, raw_of, checks)

    event_type: pd.Series | None = None
    if with_event_type:
        default = config.default_event_type
        if EVENT_TYPE not in columns:
            event_type = pd.Series(default, index=range(n), dtype="str")
        else:
            event_type = columns[EVENT_TYPE].astype("str").str.strip()
            no_type = pd.Series(missing_mask(columns[EVENT_TYPE], tokens))
            if bool(no_type[keep].any()):
                report.repair(f"missing event_type set to {default!r}", int(no_type[keep].sum()))
            event_type = event_type.mask(no_type, default)
        if config.type_map:
            mapped = event_type.map(config.type_map)
            changed = mapped.notna() & keep
            if bool(changed.any()):
                report.repair("event_type mapped with read.type_map", int(changed.sum()))
            event_type = mapped.fillna(event_type).astype("str")
        if config.event_types is not None:
            wanted = event_type.isin(config.event_types).to_numpy(dtype=bool)
            left_out = keep & ~wanted
            report.filter(
                f"event_type not in read.event_types {list(config.event_types)}",
                int(left_out.sum()),
            )
            keep = keep & wanted

    users = columns[USER].copy() if USER in columns else pd.Series(pd.NA, index=range(n))
    if anonymous:
        if bool((anon_rows & keep).any()):
            report.repair(
                f"missing user_id set to {ANONYMOUS_PREFIX}<session_id>",
                int((anon_rows & keep).sum()),
            )
        session_text = columns[SESSION].astype("str").str.strip()
        users = users.astype("object").where(~anon_rows, ANONYMOUS_PREFIX + session_text)
        users = users.astype("str") if anon_rows.any() else users
    as_ids = _text_ids if text_ids else _ids
    out = pd.DataFrame(
        {
            USER: as_ids(users[keep].reset_index(drop=True)),
            ITEM: as_ids(columns[ITEM][keep].reset_index(drop=True)),
            RATING: ratings[keep].astype(np.float32),
            TIMESTAMP: timestamps[keep].reset_index(drop=True),
        }
    )
    if event_type is not None:
        out[EVENT_TYPE] = event_type[keep].reset_index(drop=True).astype("str")
    for id_column in (USER, ITEM):
        if isinstance(out[id_column].dtype, pd.Int64Dtype):
            out[id_column] = out[id_column].astype("int64")
    canonical = {*INTERACTION_COLUMNS, EVENT_TYPE, rating_name}
    for name, values in columns.items():
        if name not in canonical:
            out[name] = values[keep].reset_index(drop=True)
    finish(report, len(out), strict)
    return EventTable(frame=out, numbers=numbers[keep], report=report, rating_column=rating_name)


def load_event_log(
    path: str | os.PathLike[str],
    strict: bool = False,
    column_map: Mapping[str, str] | None = None,
    *,
    default_event_type: str | None = None,
    config: EventLogConfig | None = None,
    name: str | None = None,
) -> InteractionData:
    """Loads an event log from Parquet (``.parquet``/``.pq``) or CSV/TSV with a header.

    Args:
        path: the file.
        strict: raise :class:`MalformedDataError` if any row is rejected.
        column_map: source column name -> canonical name, e.g.
            ``{"SessionId": "user_id", "ts": "timestamp"}`` (added to ``config.columns``).
        default_event_type: ``event_type`` for rows without one (overrides
            ``config.default_event_type``).
        config: delimiter, column and type maps, timestamp format, missing
            values, anonymous rows (see :class:`EventLogConfig`).
        name: dataset name to record (defaults to the file's stem).

    Returns:
        Interactions (columns in the module docstring), no side tables, one report.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DataConfigError: the config does not fit the file (a mapped column is absent).
        MalformedDataError: a required column is absent, or ``strict`` and rows
            were rejected.

    Example:
        >>> data = load_event_log("events.csv", column_map={"uid": "user_id"})  # doctest: +SKIP
        >>> data.interactions.columns[:5].tolist()  # doctest: +SKIP
        ['user_id', 'item_id', 'rating', 'timestamp', 'event_type']
    """
    config = config or EventLogConfig()
    if default_event_type is not None:
        config = replace(config, default_event_type=default_event_type)
    table = read_event_table(path, config, strict=strict, column_map=column_map)
    return InteractionData(
        name=name or Path(path).stem, interactions=table.frame, reports=[table.report]
    )


@dataclass(frozen=True)
class YoochooseConfig:
    """The YOOCHOOSE click file (the ``read:`` block of ``loader: yoochoose`` configs).

    Attributes:
        file: the click file, relative to the dataset folder: the prepared
            layout (``SessionId<TAB>ItemId<TAB>Time``) or the challenge's raw
            ``yoochoose-clicks.dat``; the layout is recognised from its first line.

    Example:
        >>> YoochooseConfig().required_files()
        ('yoochoose-clicks.dat',)
    """

    file: str = "yoochoose-clicks.dat"

    def required_files(self) -> tuple[str, ...]:
        """Files the dataset folder must hold."""
        return (self.file,)


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

    Example:
        >>> data = load_yoochoose("yoochoose-clicks-100k_train_full.txt")  # doctest: +SKIP
        >>> data.interactions.columns.tolist()  # doctest: +SKIP
        ['user_id', 'item_id', 'rating', 'timestamp', 'event_type']
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
    for column, values in extra.items():
        out[column] = values[keep].reset_index(drop=True)
    finish(report, len(out), strict)
    return InteractionData(name=path.stem, interactions=out, reports=[report])
