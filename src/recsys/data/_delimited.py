"""Lossless, vectorized reading of delimited text files (shared by the loaders).

Every physical line of a file ends up in exactly one place: a returned row, a
rejected row counted in a :class:`~recsys.data.frame.LoadReport` (with its line
number and text as an example), or a blank line that carries no data. Splitting
and number parsing run in pyarrow compute kernels (1M MovieLens ratings load in
about 2 s on 2 CPU cores); only lines that fail to decode or hold quotes are handled one
by one in Python.

This module is private to :mod:`recsys.data`; the loaders are the public API.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.frame import DatasetNotFoundError, LoadReport, MalformedDataError
from recsys.data.paths import ENV_VAR

Encoding = Literal["utf-8", "latin-1"]

# Files above this size get a progress bar while they are read.
PROGRESS_MIN_BYTES = 32 << 20
DEFAULT_CHUNK_BYTES = 64 << 20
# Separators a misformatted file is most often written with; a rejected line that
# splits into the expected field count with one of these is reported as
# "wrong separator" rather than "wrong field count".
_ALTERNATIVE_SEPARATORS = ("\t", ",", ";", "|", "::", " ")
_INT_PATTERN = r"^[+-]?[0-9]{1,18}$"
_FLOAT_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_LIST_TYPE = pa.list_(pa.large_string())


def require_file(path: Path) -> Path:
    """Returns ``path`` if it is a file, else raises a clear :class:`DatasetNotFoundError`.

    Args:
        path: file a loader needs.

    Returns:
        The same path.
    """
    if not path.is_file():
        raise DatasetNotFoundError(
            f"required data file not found: {path}. Point {ENV_VAR} (or the loader's "
            "path argument) at a folder holding the dataset's files, or download the "
            "dataset with `recsys download <name>` / config `dataset.download=true`."
        )
    return path


@dataclass
class Lines:
    """Decoded, non-blank lines of a file.

    Attributes:
        text: one ``large_string`` per line, without the line terminator.
        numbers: 1-based physical line number of each line (int64).
    """

    text: pa.Array
    numbers: np.ndarray

    def __len__(self) -> int:
        return len(self.text)


@dataclass
class Table:
    """Rows split into string fields, still tied to their source lines.

    Attributes:
        columns: one ``large_string`` array per field, all of equal length.
        numbers: 1-based physical line number of each row.
        raw: the row's original line, for rejection examples.
    """

    columns: list[pa.Array]
    numbers: np.ndarray
    raw: pa.Array

    def __len__(self) -> int:
        return len(self.raw)

    def take(self, keep: np.ndarray) -> Table:
        """Returns the rows where the boolean mask ``keep`` is true."""
        mask = pa.array(keep, type=pa.bool_())
        return Table(
            columns=[c.filter(mask) for c in self.columns],
            numbers=self.numbers[keep],
            raw=self.raw.filter(mask),
        )


class _NoBar:
    """Stands in for a progress bar on small files."""

    def update(self, n: int) -> None:
        pass


def _iter_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    """Yields the file in blocks that end on a line boundary (or at end of file)."""
    # imported here: the real-time stack reads event logs with these readers and does
    # not install tqdm (requirements/realtime.txt); files that small show no bar anyway
    size = path.stat().st_size
    if size < PROGRESS_MIN_BYTES:
        from contextlib import nullcontext

        bar_context: Any = nullcontext(_NoBar())
    else:
        from tqdm.auto import tqdm

        bar_context = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}")
    with (
        path.open("rb") as handle,
        bar_context as bar,
    ):
        carry = b""
        while True:
            block = handle.read(chunk_bytes)
            bar.update(len(block))
            if not block:
                if carry:
                    yield carry
                return
            block = carry + block
            cut = block.rfind(b"\n")
            if cut < 0:
                carry = block
                continue
            carry = block[cut + 1 :]
            yield block[: cut + 1]


def _decode_lines_slowly(
    chunk: bytes, encoding: Encoding, first_number: int, skip_lines: int, report: LoadReport
) -> tuple[list[str], list[int]]:
    """Decodes one line at a time; used only when the chunk as a whole does not decode."""
    texts: list[str] = []
    numbers: list[int] = []
    for offset, raw in enumerate(chunk.split(b"\n")):
        number = first_number + offset
        if encoding == "latin-1":
            if raw.isascii():
                texts.append(raw.decode("ascii"))
            else:
                # A line that is valid UTF-8 with non-ASCII bytes is almost surely
                # UTF-8 (latin-1 text rarely forms valid multi-byte sequences), so
                # decoding it as UTF-8 keeps titles such as "Café" intact.
                try:
                    texts.append(raw.decode("utf-8"))
                    report.repair("utf-8 line in latin-1 file")
                except UnicodeDecodeError:
                    texts.append(raw.decode("latin-1"))
            numbers.append(number)
            continue
        try:
            texts.append(raw.decode("utf-8"))
            numbers.append(number)
        except UnicodeDecodeError:
            if raw.strip() and number > skip_lines:
                report.rows_read += 1
                report.reject(
                    "undecodable bytes (not utf-8)",
                    number,
                    raw.decode("utf-8", errors="backslashreplace"),
                )
    return texts, numbers


def read_lines(
    path: str | os.PathLike[str],
    report: LoadReport,
    *,
    encoding: Encoding = "utf-8",
    skip_lines: int = 0,
    max_rows: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Lines:
    """Reads and decodes the non-blank lines of a text file.

    ``utf-8`` files: a line that is not valid UTF-8 is rejected (reason
    ``"undecodable bytes (not utf-8)"``) and the rest of the file still loads.
    ``latin-1`` files: every byte decodes; a line that is valid UTF-8 with
    non-ASCII characters is decoded as UTF-8 and counted as repaired.
    ``report.rows_read`` is increased by the number of data lines seen.

    Args:
        path: the file.
        report: receives counts and rejected examples.
        encoding: the publisher's encoding of the file.
        skip_lines: leading physical lines to skip (a header).
        max_rows: stop after this many data lines (None reads all).
        chunk_bytes: bytes decoded at a time (bounds peak memory on big files).

    Returns:
        The decoded lines with their physical line numbers.
    """
    path = require_file(Path(path))
    parts: list[pa.Array] = []
    number_parts: list[np.ndarray] = []
    next_number = 1
    n_rows = 0
    for chunk in _iter_chunks(path, chunk_bytes):
        n_physical = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        if chunk.endswith(b"\n"):
            chunk = chunk[:-1]
        if next_number == 1 and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]  # UTF-8 byte-order mark
        text: str | None = None
        # Fast path: the whole chunk decodes at once (always true for ASCII). A
        # non-ASCII latin-1 chunk is decoded per line so UTF-8 lines are noticed.
        if encoding == "utf-8" or chunk.isascii():
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None:
            lines = pc.split_pattern(pa.array([text], type=pa.large_string()), "\n").flatten()
            numbers = np.arange(next_number, next_number + len(lines), dtype=np.int64)
        else:
            texts, number_list = _decode_lines_slowly(
                chunk, encoding, next_number, skip_lines, report
            )
            lines = pa.array(texts, type=pa.large_string())
            numbers = np.asarray(number_list, dtype=np.int64)
        next_number += n_physical
        lines = pc.utf8_rtrim(lines, characters="\r")
        keep = np.asarray(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0))
        keep &= numbers > skip_lines
        lines = lines.filter(pa.array(keep))
        numbers = numbers[keep]
        if max_rows is not None and n_rows + len(lines) > max_rows:
            lines = lines.slice(0, max_rows - n_rows)
            numbers = numbers[: max_rows - n_rows]
        parts.append(lines)
        number_parts.append(numbers)
        n_rows += len(lines)
        if max_rows is not None and n_rows >= max_rows:
            break
    report.rows_read += n_rows
    text_all = pa.concat_arrays(parts) if parts else pa.array([], type=pa.large_string())
    numbers_all = np.concatenate(number_parts) if number_parts else np.zeros(0, np.int64)
    return Lines(text=text_all, numbers=numbers_all)


def peek_first_line(path: str | os.PathLike[str], encoding: Encoding = "utf-8") -> str:
    """Returns the first non-blank line of a file (for sniffing headers/separators)."""
    path = require_file(Path(path))
    with path.open("rb") as handle:
        for raw in handle:
            text = raw.decode(encoding, errors="replace").strip("\r\n\ufeff")
            if text.strip():
                return text
    return ""


def _wrong_count_reason(line: str, sep: str, n_fields: int) -> str:
    for alternative in _ALTERNATIVE_SEPARATORS:
        if alternative != sep and len(line.split(alternative)) == n_fields:
            return "wrong separator"
    return f"wrong field count (expected {n_fields})"


def reject_rows(report: LoadReport, reason: str, mask: np.ndarray, table: Table) -> None:
    """Counts the rows of ``table`` where ``mask`` is true as rejected for ``reason``."""
    reject_masked(
        report, reason, mask, table.numbers, lambda idx: table.raw.take(pa.array(idx)).to_pylist()
    )


def reject_masked(
    report: LoadReport,
    reason: str,
    mask: np.ndarray,
    numbers: np.ndarray,
    raw_of: Callable[[np.ndarray], list[Any]],
) -> None:
    """Counts rows where ``mask`` is true as rejected; fetches raw text only for examples.

    Args:
        report: receives the count and up to ``report.max_examples`` examples.
        reason: rejection reason.
        mask: rows to reject.
        numbers: line (or row) number of every row.
        raw_of: returns the raw text of the rows at the given indices.
    """
    count = int(mask.sum())
    if count == 0:
        return
    report.rejected[reason] = report.rejected.get(reason, 0) + count
    kept = report.examples.setdefault(reason, [])
    room = report.max_examples - len(kept)
    if report.record_rejected:
        idx = np.flatnonzero(mask)
        raws = raw_of(idx)
        report.rejected_rows.extend(
            (int(numbers[i]), reason, str(r)) for i, r in zip(idx, raws, strict=True)
        )
        if room > 0:
            kept.extend(
                (int(numbers[i]), str(r)[:200]) for i, r in zip(idx[:room], raws, strict=False)
            )
    elif room > 0:
        idx = np.flatnonzero(mask)[:room]
        raws = raw_of(idx)
        kept.extend((int(numbers[i]), str(r)[:200]) for i, r in zip(idx, raws, strict=True))


def split_fields(
    lines: Lines,
    sep: str,
    n_fields: int,
    report: LoadReport,
    *,
    pad_from: int | None = None,
    quoted: bool = False,
) -> Table:
    """Splits lines into exactly ``n_fields`` string fields, rejecting the rest.

    Args:
        lines: output of :func:`read_lines`.
        sep: field separator (may be several characters, e.g. ``"::"``).
        n_fields: required number of fields.
        report: receives rejections (``"wrong separator"`` when the line splits
            correctly with a common other separator, else ``"wrong field count"``)
            and repairs.
        pad_from: if set, lines with ``pad_from <= fields < n_fields`` are padded
            with empty trailing fields and counted as repaired (``"padded"``).
        quoted: honour CSV double quotes (only lines containing ``"`` go through
            Python's csv module; ``sep`` must then be one character).

    Returns:
        The accepted rows.
    """
    text = lines.text
    split = _split(text, sep, quoted)
    counts = np.asarray(pc.list_value_length(split), dtype=np.int64)
    ok = counts == n_fields
    if pad_from is not None:
        short = (counts >= pad_from) & (counts < n_fields)
        if short.any():
            missing = np.where(short, n_fields - counts, 0)
            suffixes = np.array([sep * k for k in range(n_fields + 1)], dtype=object)
            suffix = pa.array(suffixes[missing], type=pa.large_string())
            text_padded = pc.binary_join_element_wise(
                text, suffix, pa.scalar("", pa.large_string())
            )
            split = _split(text_padded, sep, quoted)
            report.repair("padded", int(short.sum()))
            ok |= short
    for i in np.flatnonzero(~ok):
        line = text[int(i)].as_py()
        report.reject(_wrong_count_reason(line, sep, n_fields), int(lines.numbers[i]), line)
    keep_mask = pa.array(ok)
    split = split.filter(keep_mask)
    return Table(
        columns=[pc.list_element(split, j) for j in range(n_fields)],
        numbers=lines.numbers[ok],
        raw=text.filter(keep_mask),
    )


def _split(text: pa.Array, sep: str, quoted: bool) -> pa.Array:
    """Splits every line on ``sep``; with ``quoted``, lines holding ``"`` follow CSV rules."""
    split = pc.split_pattern(text, sep)
    if not quoted or len(text) == 0:
        return split
    has_quote = np.asarray(pc.match_substring(text, '"'), dtype=bool)
    if not has_quote.any():
        return split
    quoted_idx = np.flatnonzero(has_quote)
    plain_idx = np.flatnonzero(~has_quote)
    rows = text.take(pa.array(quoted_idx)).to_pylist()
    parsed = [next(csv.reader([row], delimiter=sep)) for row in rows]
    merged = pa.concat_arrays([split.take(pa.array(plain_idx)), pa.array(parsed, type=_LIST_TYPE)])
    order = np.empty(len(text), dtype=np.int64)
    order[np.concatenate([plain_idx, quoted_idx])] = np.arange(len(text))
    return merged.take(pa.array(order))


def trimmed(column: pa.Array) -> pa.Array:
    """Strips surrounding whitespace from a string column."""
    return pc.utf8_trim_whitespace(column)


def is_empty(column: pa.Array) -> np.ndarray:
    """Boolean mask of empty (or whitespace-only) fields."""
    return np.asarray(pc.equal(pc.utf8_length(trimmed(column)), 0), dtype=bool)


def parse_int(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parses decimal integers; returns ``(int64 values, valid mask)`` (0 where invalid)."""
    text = trimmed(column)
    valid = np.asarray(pc.match_substring_regex(text, _INT_PATTERN), dtype=bool)
    values = np.zeros(len(text), dtype=np.int64)
    if valid.any():
        values[valid] = np.asarray(pc.cast(text.filter(pa.array(valid)), pa.int64()))
    return values, valid


def parse_float(column: pa.Array, *, empty_is_nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Parses decimal numbers; returns ``(float64 values, valid mask)``.

    Args:
        column: string field.
        empty_is_nan: treat an empty field as a valid missing value (NaN).

    Returns:
        Values (NaN where invalid or empty) and the mask of valid fields.
    """
    text = trimmed(column)
    valid = np.asarray(pc.match_substring_regex(text, _FLOAT_PATTERN), dtype=bool)
    values = np.full(len(text), np.nan, dtype=np.float64)
    if valid.any():
        values[valid] = np.asarray(pc.cast(text.filter(pa.array(valid)), pa.float64()))
    if empty_is_nan:
        valid |= is_empty(column)
    return values, valid


def apply_checks(
    report: LoadReport,
    table: Table,
    checks: Sequence[tuple[str, np.ndarray]],
) -> np.ndarray:
    """Rejects each row for the first check it fails; returns the mask of rows kept.

    Args:
        report: receives the rejections.
        table: the rows being validated.
        checks: ``(reason, valid_mask)`` pairs, in priority order.

    Returns:
        Boolean mask of rows that passed every check.
    """
    return apply_checks_to(
        report, table.numbers, lambda idx: table.raw.take(pa.array(idx)).to_pylist(), checks
    )


def apply_checks_to(
    report: LoadReport,
    numbers: np.ndarray,
    raw_of: Callable[[np.ndarray], list[Any]],
    checks: Sequence[tuple[str, np.ndarray]],
) -> np.ndarray:
    """:func:`apply_checks` for rows that are not a :class:`Table` (e.g. Parquet rows)."""
    failed = np.zeros(len(numbers), dtype=bool)
    for reason, valid in checks:
        reject_masked(report, reason, ~valid & ~failed, numbers, raw_of)
        failed |= ~valid
    return ~failed


def seconds_to_nanos(seconds: np.ndarray) -> np.ndarray:
    """Unix seconds (int, or float with sub-second digits) -> int64 nanoseconds.

    Floats are rounded to whole microseconds first: a float64 holds about 16
    significant digits, so nanoseconds of a 2014 timestamp would be noise.
    """
    seconds = np.asarray(seconds)
    if np.issubdtype(seconds.dtype, np.integer):
        return seconds.astype(np.int64) * 1_000_000_000
    return np.round(seconds.astype(np.float64) * 1e6).astype(np.int64) * 1_000


def utc_from_seconds(seconds: np.ndarray) -> pd.Series:
    """Unix seconds -> datetime64[ns, UTC] series (see :func:`seconds_to_nanos`)."""
    nanos = seconds_to_nanos(seconds)
    return pd.Series(pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC"))


def finish(report: LoadReport, n_kept: int, strict: bool) -> None:
    """Records the kept count; in strict mode raises if anything was rejected.

    Args:
        report: the file's report.
        n_kept: rows in the returned frame.
        strict: raise :class:`MalformedDataError` when any row was rejected
            (config ``dataset.strict``); rows left out by a configured filter
            (``report.filtered``) are not rejections.
    """
    report.rows_kept = n_kept
    if strict and report.rows_rejected:
        raise MalformedDataError(
            "strict loading (dataset.strict=true) refuses rejected rows: "
            + report.summary()
            + ". Fix the file, or set dataset.strict=false to load the valid rows and "
            "report the rest."
        )
