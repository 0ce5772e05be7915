"""The one parser of event times, shared by the loaders, the pipeline and
``recsys realtime publish``.

A :class:`TimestampConfig` says how a log writes its times:

============== =====================================================================
``format``     meaning
============== =====================================================================
``auto``       datetime columns as stored; numbers (or numeric text) are epoch
               seconds; other text is ISO 8601 (the default; what every loader
               accepted before formats were configurable)
``epoch_s``    epoch seconds (int or float, fractions kept to the microsecond)
``epoch_ms``   epoch milliseconds
``epoch_us``   epoch microseconds
``epoch_ns``   epoch nanoseconds
``iso8601``    ISO 8601 text only (``2024-05-01T10:00:00Z``, ``...+02:00``,
               ``2024-05-01 10:00:00``)
``%d/%m/%Y..`` any other value is a ``strftime`` pattern (it must hold a ``%``),
               e.g. ``"%d.%m.%Y %H:%M"``; ``%z`` in it reads the offset per row
============== =====================================================================

``utc_offset`` (``"+02:00"``, ``"-0530"``, ``"Z"``) is the zone of times written
without one (naive ISO text, a pattern without ``%z``, a naive datetime column):
they are local times at that offset and are converted to UTC. None means such
times already are UTC. Times that carry their own zone are never shifted.

Every result is ``datetime64[ns, UTC]``; a value that is missing, does not
parse, or lies outside 1677..2262 (the range of nanosecond datetimes) is NaT, so
the caller can reject and count the row.

Example:
    >>> values = pd.Series(["01.05.2024 12:00", "bad"])
    >>> parse_timestamps(values, "%d.%m.%Y %H:%M", "+02:00").tolist()
    [Timestamp('2024-05-01 10:00:00+0000', tz='UTC'), NaT]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.frame import DataConfigError
from recsys.data.missing import MISSING_TOKENS, missing_mask

EPOCH_UNITS: dict[str, int] = {
    "epoch_s": 1_000_000_000,
    "epoch_ms": 1_000_000,
    "epoch_us": 1_000,
    "epoch_ns": 1,
}
NAMED_FORMATS: tuple[str, ...] = ("auto", "iso8601", *EPOCH_UNITS)
_NAT = np.iinfo(np.int64).min
# The largest epoch second a datetime64[ns] can hold (about 2262-04-11).
_MAX_SECONDS = 9_223_372_035.0
_NUMBER_RE = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
_OFFSET_RE = re.compile(r"^(?P<sign>[+-])(?P<h>\d{2}):?(?P<m>\d{2})?$")
# A time of day followed by a zone: "10:00Z", "10:00:00.5+02:00", "10:00 -0530".
_HAS_ZONE_RE = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"


def parse_utc_offset(text: str | int | None) -> int:
    """Minutes east of UTC of an offset written ``+02:00``, ``-0530``, ``+02``, ``Z``.

    Args:
        text: the offset; an int is taken as minutes; None or ``Z``/``UTC`` is 0.

    Returns:
        Minutes (e.g. 120 for ``+02:00``, -330 for ``-05:30``).

    Raises:
        DataConfigError: the text is not an offset or lies outside +-18 hours.

    Example:
        >>> parse_utc_offset("+02:00"), parse_utc_offset("-0530"), parse_utc_offset("Z")
        (120, -330, 0)
    """
    if text is None:
        return 0
    if isinstance(text, int) and not isinstance(text, bool):
        minutes = text
    else:
        value = str(text).strip()
        if value.upper() in ("Z", "UTC", "GMT", "+00:00", "0"):
            return 0
        match = _OFFSET_RE.match(value)
        if match is None:
            raise DataConfigError(
                f"utc_offset {text!r} is not an offset; write it as +HH:MM or -HH:MM "
                "(e.g. +02:00), or Z for UTC"
            )
        minutes = int(match["h"]) * 60 + int(match["m"] or 0)
        minutes = -minutes if match["sign"] == "-" else minutes
    if abs(minutes) > 18 * 60:
        raise DataConfigError(f"utc_offset {text!r} is more than 18 hours from UTC")
    return minutes


def check_format(fmt: str) -> str:
    """Returns ``fmt`` if it is a named format or a ``strftime`` pattern.

    Raises:
        DataConfigError: anything else (the message lists the named formats).
    """
    if fmt in NAMED_FORMATS or "%" in fmt:
        return fmt
    raise DataConfigError(
        f"timestamp format {fmt!r} is unknown: use one of {', '.join(NAMED_FORMATS)} "
        "or a strftime pattern such as '%Y-%m-%d %H:%M:%S'"
    )


@dataclass(frozen=True)
class TimestampConfig:
    """How a file writes its event times (see the module docstring).

    Attributes:
        format: ``auto``, ``epoch_s``, ``epoch_ms``, ``epoch_us``, ``epoch_ns``,
            ``iso8601``, or a ``strftime`` pattern.
        utc_offset: zone of times written without one (``+02:00``); None: UTC.

    Example:
        >>> TimestampConfig("epoch_ms").format
        'epoch_ms'
    """

    format: str = "auto"
    utc_offset: str | None = None

    def __post_init__(self) -> None:
        check_format(self.format)
        parse_utc_offset(self.utc_offset)

    @property
    def offset_minutes(self) -> int:
        """``utc_offset`` in minutes east of UTC."""
        return parse_utc_offset(self.utc_offset)

    def parse(self, values: pd.Series) -> pd.Series:
        """:func:`parse_timestamps` with this config."""
        return parse_timestamps(values, self.format, self.utc_offset)


def _epoch_nanos(numbers: np.ndarray, unit_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers in a unit -> (int64 nanoseconds, valid mask); floats kept to 1 us."""
    numbers = np.asarray(numbers)
    nanos = np.full(len(numbers), _NAT, dtype=np.int64)
    if np.issubdtype(numbers.dtype, np.integer):
        limit = int(_MAX_SECONDS * 1e9) // unit_ns
        ok = np.abs(numbers) <= limit
        nanos[ok] = numbers[ok].astype(np.int64) * unit_ns
        return nanos, ok
    values = numbers.astype(np.float64)
    seconds = values * (unit_ns / 1e9)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (np.abs(seconds) <= _MAX_SECONDS)
    if unit_ns >= 1_000:
        # Round to whole microseconds: a float64 holds about 16 significant
        # digits, so the nanoseconds of a 2014 time in seconds would be noise.
        micros = np.round(values[ok] * (unit_ns / 1_000))
        nanos[ok] = micros.astype(np.int64) * 1_000
    else:
        nanos[ok] = np.round(values[ok]).astype(np.int64)
    return nanos, ok


def _numbers_from_text(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numeric strings -> (values, mask); integers stay exact (int64)."""
    numeric = text.str.fullmatch(_NUMBER_RE).fillna(False).to_numpy(dtype=bool, copy=True)
    if not numeric.any():
        return np.zeros(len(text)), numeric
    picked = text[numeric]
    integral = picked.str.fullmatch(r"[+-]?[0-9]{1,18}").fillna(False).to_numpy(dtype=bool)
    if integral.all():
        values: np.ndarray = np.zeros(len(text), dtype=np.int64)
        values[numeric] = picked.astype("int64").to_numpy()
        return values, numeric
    floats = np.zeros(len(text), dtype=np.float64)
    floats[numeric] = pd.to_numeric(picked, errors="coerce").to_numpy(dtype=np.float64)
    return floats, numeric


def _text_nanos(text: pd.Series, pattern: str | None, offset_ns: int) -> np.ndarray:
    """ISO 8601 (``pattern`` None) or strftime text -> UTC nanoseconds (NaT as min int64)."""
    nanos = np.full(len(text), _NAT, dtype=np.int64)
    if not len(text):
        return nanos
    parsed = pd.to_datetime(text, format=pattern or "ISO8601", utc=True, errors="coerce").astype(
        "datetime64[ns, UTC]"
    )
    values = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
    ok = parsed.notna().to_numpy(dtype=bool)
    if offset_ns:
        if pattern is None:
            zoned = text.str.contains(_HAS_ZONE_RE, regex=True).fillna(False).to_numpy(dtype=bool)
        else:
            zoned = np.full(len(text), "%z" in pattern or "%Z" in pattern)
        # Times without a zone are local times at the configured offset.
        shift = ok & ~zoned
        values = values.copy()
        values[shift] -= offset_ns
    nanos[ok] = values[ok]
    return nanos


def parse_timestamps(
    values: pd.Series, format: str = "auto", utc_offset: str | int | None = None
) -> pd.Series:
    """Parses event times to ``datetime64[ns, UTC]``; NaT where missing or unparseable.

    Args:
        values: the raw column (text, numbers or datetimes).
        format: ``auto``, ``epoch_s``, ``epoch_ms``, ``epoch_us``, ``epoch_ns``,
            ``iso8601`` or a ``strftime`` pattern (see the module docstring).
        utc_offset: zone of times written without one (``"+02:00"`` or minutes);
            None: such times are UTC.

    Returns:
        A series aligned with ``values`` (same index).

    Raises:
        DataConfigError: ``format`` or ``utc_offset`` is not valid.

    Example:
        >>> parse_timestamps(pd.Series(["1396437466.5", "2014-04-02T11:17:46Z"])).dt.second.tolist()
        [46, 46]
        >>> parse_timestamps(pd.Series([1396437466500]), "epoch_ms").iloc[0]
        Timestamp('2014-04-02 11:17:46.500000+0000', tz='UTC')
    """
    check_format(format)
    offset_ns = parse_utc_offset(utc_offset) * 60 * 1_000_000_000
    nanos = np.full(len(values), _NAT, dtype=np.int64)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        naive = values.astype("datetime64[ns]").to_numpy().view(np.int64).copy()
        present = naive != _NAT
        naive[present] -= offset_ns
        nanos = naive
    elif format in EPOCH_UNITS or (format == "auto" and _numeric(values)):
        unit = EPOCH_UNITS.get(format, EPOCH_UNITS["epoch_s"])
        if _numeric(values):
            if pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
                numbers: np.ndarray = values.to_numpy(dtype=np.int64)
            else:
                numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            nanos, _ = _epoch_nanos(numbers, unit)
        else:
            text = values.astype("str").str.strip()
            numbers, numeric = _numbers_from_text(text)
            parsed, ok = _epoch_nanos(numbers[numeric], unit)
            nanos[np.flatnonzero(numeric)[ok]] = parsed[ok]
    elif not _numeric(values):
        text = values.astype("str").str.strip()
        present = ~missing_mask(values, MISSING_TOKENS)
        if format == "auto":
            numbers, numeric = _numbers_from_text(text)
            numeric = numeric & present
            if numeric.any():
                parsed, ok = _epoch_nanos(numbers[numeric], EPOCH_UNITS["epoch_s"])
                nanos[np.flatnonzero(numeric)[ok]] = parsed[ok]
            other = present & ~numeric
        else:
            other = present
        if other.any():
            pattern = None if format in ("auto", "iso8601") else format
            nanos[other] = _text_nanos(text[other], pattern, offset_ns)
    # else: numbers with a text format (iso8601 or a pattern): nothing parses.
    index = pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC")
    return pd.Series(index, index=values.index)


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    )


def to_iso(timestamps: pd.Series) -> list[str | None]:
    """UTC times as ISO 8601 text with microseconds and ``Z`` (None for NaT).

    Example:
        >>> to_iso(pd.Series(pd.to_datetime(["2024-05-01 10:00:00.25"], utc=True)))
        ['2024-05-01T10:00:00.250000Z']
    """
    text = timestamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [None if pd.isna(t) else str(t) for t in text]


__all__ = [
    "EPOCH_UNITS",
    "NAMED_FORMATS",
    "TimestampConfig",
    "check_format",
    "parse_timestamps",
    "parse_utc_offset",
    "to_iso",
]
