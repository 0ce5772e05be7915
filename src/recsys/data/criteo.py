"""Loader and standard (DLRM) preprocessing for Criteo display-advertising logs.

The Kaggle format has one impression per line: ``label`` (click, 0/1), 13 integer
count features ``I1..I13`` and 26 hashed categorical features ``C1..C26`` (8 hex
digits), tab-separated, no header, empty fields where a value is missing.
:func:`load_criteo` also reads the comma-separated variant with a header row
(DeepCTR's ``criteo_sample.txt``), detected from the first line.

Loaded frame (:func:`load_criteo`):

=========== ========= ==============================================================
column      dtype     meaning
=========== ========= ==============================================================
label       int8      1 = click
I1..I13     float32   counts; NaN where missing; ``"260.0"`` read as 260
C1..C26     str       categorical hex strings unchanged; ``""`` where missing
=========== ========= ==============================================================

Rows that lost trailing empty fields (37-39 fields) are padded to 40 and counted
as repaired (``"padded"``); rows with any other field count, a label other than
0/1 or a non-numeric integer feature are rejected and reported.

Model inputs (:func:`criteo_transform`), as in the DLRM reference preprocessing:
dense ``log(1 + max(x, 0))`` with missing counts filled as 0 (so they map to 0
after the transform, like a zero count; negative counts such as ``I2 = -1`` are
clipped to 0 first); each categorical column hashed with a stable 64-bit hash
(xxh64, not Python's salted ``hash()``) into ``[1, buckets)``, with bucket 0
reserved for a missing value.

Example:
    >>> df, report = load_criteo("criteo-sample/pytorch-fm_train.txt")  # doctest: +SKIP
    >>> dense, sparse, labels = criteo_transform(df, 1000)  # doctest: +SKIP
    >>> dense.shape, sparse.shape  # doctest: +SKIP
    ((1000, 13), (1000, 26))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from recsys.data._delimited import (
    apply_checks,
    finish,
    parse_float,
    peek_first_line,
    read_lines,
    split_fields,
)
from recsys.data.frame import DataConfigError, LoadReport, MalformedDataError

LABEL = "label"
DENSE_COLUMNS: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
SPARSE_COLUMNS: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS: tuple[str, ...] = (LABEL, *DENSE_COLUMNS, *SPARSE_COLUMNS)
N_FIELDS = len(CRITEO_COLUMNS)
# Some copies of the Kaggle file lost up to three trailing (empty) fields.
MIN_PADDED_FIELDS = 37
MISSING_BUCKET = 0


def _sniff(first_line: str) -> tuple[str, bool]:
    """Returns (separator, has_header) from the file's first line."""
    has_header = first_line.strip().lower().startswith(LABEL)
    if "\t" in first_line:
        return "\t", has_header
    if first_line.count(",") >= MIN_PADDED_FIELDS - 1:
        return ",", has_header
    return "\t", has_header


@dataclass(frozen=True)
class CriteoConfig:
    """How to read a Criteo log (the ``read:`` block of ``loader: criteo`` configs).

    Attributes:
        file: the log, relative to the dataset folder (Kaggle: ``train.txt``).
        delimiter: field separator; None: sniffed from the first line (tab for
            the Kaggle files, comma for the CSV-with-header variant).
        max_rows: read at most this many data rows (None: all).

    Example:
        >>> CriteoConfig(file="pytorch-fm_train.txt").required_files()
        ('pytorch-fm_train.txt',)
    """

    file: str = "train.txt"
    delimiter: str | None = None
    max_rows: int | None = None

    def required_files(self) -> tuple[str, ...]:
        """Files the dataset folder must hold."""
        return (self.file,)


def load_criteo(
    path: str | os.PathLike[str],
    strict: bool = False,
    max_rows: int | None = None,
    *,
    delimiter: str | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    """Reads a Criteo log in the Kaggle TSV format (or the CSV-with-header variant).

    Args:
        path: the file.
        strict: raise :class:`~recsys.data.frame.MalformedDataError` if any row is
            rejected (padding short rows is a repair, not a rejection).
        max_rows: read at most this many data rows (None reads all).
        delimiter: field separator; None sniffs it from the first line.

    Returns:
        The frame (columns :data:`CRITEO_COLUMNS`, dtypes in the module
        docstring), in file order, and its load report.

    Raises:
        DatasetNotFoundError: the file does not exist.
        MalformedDataError: ``strict`` and rows were rejected, or the header row
            is not ``label, I1..I13, C1..C26``.
    """
    path = Path(path)
    report = LoadReport(source=str(path))
    sep, has_header = _sniff(peek_first_line(path))
    if delimiter is not None:
        if delimiter == "":
            raise DataConfigError("read.delimiter must not be empty (null sniffs it)")
        sep = delimiter
    if has_header:
        header = tuple(f.strip() for f in peek_first_line(path).split(sep))
        if header != CRITEO_COLUMNS:
            raise MalformedDataError(f"{path}: header {header[:5]}... is not {CRITEO_COLUMNS}")
    lines = read_lines(path, report, skip_lines=int(has_header), max_rows=max_rows)
    table = split_fields(lines, sep, N_FIELDS, report, pad_from=MIN_PADDED_FIELDS)
    labels, labels_ok = parse_float(table.columns[0])
    labels_ok &= np.isin(labels, (0.0, 1.0))
    dense = np.empty((len(table), len(DENSE_COLUMNS)), dtype=np.float64)
    dense_ok = np.ones(len(table), dtype=bool)
    for j in range(len(DENSE_COLUMNS)):
        dense[:, j], ok = parse_float(table.columns[1 + j], empty_is_nan=True)
        dense_ok &= ok
    keep = apply_checks(
        report,
        table,
        [("bad label (not 0/1)", labels_ok), ("non-numeric integer feature", dense_ok)],
    )
    mask = pa.array(keep)
    data: dict[str, object] = {LABEL: labels[keep].astype(np.int8)}
    for j, name in enumerate(DENSE_COLUMNS):
        data[name] = dense[keep, j].astype(np.float32)
    for j, name in enumerate(SPARSE_COLUMNS):
        column = pc.utf8_trim_whitespace(table.columns[1 + len(DENSE_COLUMNS) + j].filter(mask))
        data[name] = pd.Series(column.to_numpy(zero_copy_only=False), dtype="str")
    frame = pd.DataFrame(data)
    finish(report, len(frame), strict)
    return frame, report


def stable_hash(values: Iterable[str], num_buckets: int, seed: int = 0) -> np.ndarray:
    """Hashes strings into ``[1, num_buckets)`` with xxh64; identical on every run and host.

    Args:
        values: strings to hash (UTF-8 encoded).
        num_buckets: table rows; bucket 0 is never returned (kept for missing).
        seed: xxh64 seed (change it to get an independent hash family).

    Returns:
        int64 bucket per value.

    Example:
        >>> a, b = stable_hash(["68fd1e64", "68fd1e64"], 100)
        >>> bool(a == b and 1 <= a < 100)
        True
    """
    if num_buckets < 2:
        raise ValueError(f"num_buckets must be >= 2 (bucket 0 is reserved), got {num_buckets}")
    digests = np.fromiter(
        (xxhash.xxh64_intdigest(v.encode("utf-8"), seed=seed) for v in values), dtype=np.uint64
    )
    return (digests % np.uint64(num_buckets - 1)).astype(np.int64) + 1


def criteo_transform(
    df: pd.DataFrame, num_hash_buckets: int | Sequence[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turns a loaded Criteo frame into DLRM model inputs.

    Args:
        df: output of :func:`load_criteo` (needs :data:`CRITEO_COLUMNS`).
        num_hash_buckets: rows per categorical table: one int for all 26
            columns, or one per column.
        seed: xxh64 seed for :func:`stable_hash`.

    Returns:
        ``dense`` float32 ``[N, 13]`` = ``log(1 + max(x, 0))`` with missing -> 0;
        ``sparse`` int64 ``[N, 26]`` bucket ids in ``[0, buckets)``, 0 = missing;
        ``labels`` float32 ``[N]`` (0.0 / 1.0, ready for a BCE loss).

    Example:
        >>> df = pd.DataFrame({c: [1] if c == "label" else [0.0] for c in CRITEO_COLUMNS})
        >>> for c in SPARSE_COLUMNS: df[c] = ""
        >>> dense, sparse, labels = criteo_transform(df, 10)
        >>> int(sparse.max()), float(dense.max()), labels.tolist()
        (0, 0.0, [1.0])
    """
    buckets = (
        [int(num_hash_buckets)] * len(SPARSE_COLUMNS)
        if isinstance(num_hash_buckets, int | np.integer)
        else [int(b) for b in num_hash_buckets]
    )
    if len(buckets) != len(SPARSE_COLUMNS):
        raise ValueError(f"need {len(SPARSE_COLUMNS)} bucket counts, got {len(buckets)}")
    counts = df[list(DENSE_COLUMNS)].to_numpy(dtype=np.float64, na_value=0.0)
    dense = np.log1p(np.maximum(np.nan_to_num(counts, nan=0.0), 0.0)).astype(np.float32)
    sparse = np.zeros((len(df), len(SPARSE_COLUMNS)), dtype=np.int64)
    for j, (name, n_buckets) in enumerate(zip(SPARSE_COLUMNS, buckets, strict=True)):
        values = df[name].fillna("").astype("str").str.strip()
        # Hash each distinct value once: columns have far fewer values than rows.
        codes, uniques = pd.factorize(values)
        table = stable_hash((str(u) for u in uniques), n_buckets, seed=seed)
        table[np.asarray(uniques == "", dtype=bool)] = MISSING_BUCKET
        sparse[:, j] = table[codes]
    labels = df[LABEL].to_numpy(dtype=np.float32)
    return dense, sparse, labels
