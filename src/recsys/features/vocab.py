"""Vocabularies: how raw categorical values become embedding row indices.

One :class:`Vocabulary` per sparse feature, following the feature's
:class:`~recsys.features.schema.VocabConfig`:

* ``id_map``: a fitted map. Values seen in training are ordered by descending
  frequency, ties by ascending value (so the same data always gives the same
  map); row 0 is the out-of-vocabulary (OOV) bucket and known values take rows
  ``1..n``. Values seen fewer than ``min_count`` times, and values beyond the
  ``size`` cap (which counts rows, OOV included), map to row 0. Missing
  values (None/NaN) map to row 0.
* ``hash``: ``xxh64(str(value), seed=0) % size``. Stable across processes and
  machines (Python's ``hash()`` is salted per process and is never used).
  Integer ids and their decimal strings hash alike (``5``, ``5.0`` and ``"5"``
  give the same row). Missing values map to row 0. No fitting.
* ``identity``: values already are rows in ``[0, size)``. A value outside
  that range, a non-integral or a missing value is handled by the
  out-of-range policy: ``"error"`` (default) raises :class:`ValueError` naming
  the count and examples; ``"clamp"`` clips numbers into ``[0, size - 1]``
  and sends missing or non-numeric values to row 0.

A :class:`VocabularySet` holds the vocabularies of a whole
:class:`~recsys.features.schema.FeatureSchema`; a feature with ``vocab_from``
shares the vocabulary of the feature it names, so the same raw item id maps to
the same row in ``item_id`` and ``user_recent_items``.

Vocabularies are saved as Parquet (columns ``index``, ``value``, ``count``;
empty for ``hash``/``identity``) with metadata: schema version, feature name,
policy, size, source sha256, creation time and a content hash, the
*vocabulary version*, which depends only on the mapping (policy, sizes and the
ordered values), so rebuilding from the same data gives the same version.

Example:
    >>> from recsys.features.schema import VocabConfig
    >>> v = Vocabulary.fit("genre", VocabConfig(), ["drama", "comedy", "drama"])
    >>> v.encode(["drama", "comedy", "western"]).tolist()
    [1, 2, 0]
    >>> v.decode([2, 1]).tolist()
    ['comedy', 'drama']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from recsys.features.schema import (
    SCHEMA_VERSION,
    FeatureSchema,
    FeatureSpec,
    Kind,
    VocabConfig,
    VocabPolicy,
)
from recsys.features.store import (
    META_CONFIG_HASH,
    META_SOURCE_SHA256,
    config_hash,
    read_table,
    utc_now,
    write_table,
)

OOV_INDEX = 0
"""Row of the out-of-vocabulary bucket of ``id_map`` vocabularies."""

HASH_FUNCTION = "xxh64-seed0-utf8-str"
"""Name of the hash recorded in saved vocabularies; changing it changes every row."""

_MAX_EXAMPLES = 5
_INDEX_FILE = "index.json"

ArrayLike = np.ndarray | pd.Series | pd.Index | Sequence[Any]


class OutOfRange(StrEnum):
    """What ``identity`` vocabularies do with values outside ``[0, size)``."""

    ERROR = "error"
    CLAMP = "clamp"


class ValueKind(StrEnum):
    """Type of the raw values an ``id_map`` vocabulary was fitted on."""

    INT = "int"
    STR = "str"


# -- raw value handling ------------------------------------------------------------


def flatten_lists(column: pd.Series | Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Flattens a list-valued column into ``(values, offsets)``.

    Row ``i`` holds ``values[offsets[i]:offsets[i + 1]]``. Rows may be lists,
    tuples or 1-D numpy arrays; a missing row (None/NaN) counts as empty. The
    conversion runs in Arrow's C++ code, not a Python loop.

    Args:
        column: one list per row.

    Returns:
        ``values`` (numpy; object dtype for strings) and ``offsets`` (int64,
        length ``len(column) + 1``).

    Raises:
        TypeError: the rows are scalars, not lists.
    """
    try:
        arr = pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise TypeError(f"expected one list per row: {e}") from e
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
        raise TypeError(f"expected one list per row, got Arrow type {arr.type}")
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values, offsets


def _as_series(values: ArrayLike) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ValueError(f"expected a 1-D array of values, got shape {values.shape}")
    return pd.Series(values)


def _infer_kind(values: pd.Series) -> ValueKind:
    """INT for integer dtypes and floats that are all integral; STR otherwise."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return ValueKind.STR
    if pd.api.types.is_integer_dtype(dtype):
        return ValueKind.INT
    if pd.api.types.is_float_dtype(dtype):
        finite = values.dropna().to_numpy(dtype=np.float64)
        if np.all(np.isfinite(finite)) and np.all(np.floor(finite) == finite):
            return ValueKind.INT
    if pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(values) == "integer":
        return ValueKind.INT
    return ValueKind.STR


def _to_int_keys(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(keys int64, valid)``: integers, integral floats and numeric strings are valid."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    if not pd.api.types.is_numeric_dtype(values.dtype):
        values = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_integer_dtype(values.dtype):
        valid = ~values.isna().to_numpy()
        return values.to_numpy(dtype=np.int64, na_value=0), valid
    numeric = values.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(numeric) & (np.floor(numeric) == numeric) & (np.abs(numeric) < 2**63)
    keys = np.zeros(len(values), dtype=np.int64)
    keys[valid] = numeric[valid].astype(np.int64)
    return keys, valid


def _to_str_keys(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(keys object, valid)``: every non-missing value as its ``str``.

    Integral floats are written as integers (``5.0`` -> ``"5"``), so ids read
    through a column holding NaN keep their id form.
    """
    valid = ~values.isna().to_numpy()
    keys = values.to_numpy(dtype=object, copy=True)
    if pd.api.types.is_float_dtype(values.dtype):
        num = values.to_numpy(dtype=np.float64, na_value=np.nan)
        integral = valid & np.isfinite(num) & (np.floor(num) == num)
        keys[integral] = num[integral].astype(np.int64).astype(str).astype(object)
        rest = valid & ~integral
        keys[rest] = num[rest].astype(str).astype(object)
    elif pd.api.types.infer_dtype(keys[valid], skipna=False) not in ("string", "empty"):
        present = keys[valid]
        keys[valid] = np.fromiter(map(_canonical_str, present), dtype=object, count=len(present))
    keys[~valid] = None
    return keys, valid


def _canonical_str(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def stable_hash(values: ArrayLike, size: int) -> np.ndarray:
    """Rows ``xxh64(str(value)) % size`` for each value; missing values give 0.

    Each distinct value is converted and hashed once, so the Python-level cost
    is per unique value, not per row.

    Args:
        values: raw values (ints, strings, integral floats).
        size: number of rows.

    Returns:
        int64 rows in ``[0, size)``.
    """
    series = _as_series(values)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    keys, valid = _to_str_keys(pd.Series(uniques))
    hashed = np.zeros(len(keys) + 1, dtype=np.int64)  # last slot: missing values -> row 0
    hashed[:-1][valid] = np.fromiter(
        (xxhash.xxh64_intdigest(k.encode("utf-8"), seed=0) % size for k in keys[valid]),
        dtype=np.int64,
        count=int(valid.sum()),
    )
    return hashed[codes]


def _examples(values: pd.Series, mask: np.ndarray) -> list[Any]:
    return values[mask].head(_MAX_EXAMPLES).tolist()


# -- one vocabulary ----------------------------------------------------------------


class Vocabulary:
    """The value -> row map of one sparse feature.

    Build ``id_map`` vocabularies with :meth:`fit`; ``hash`` and ``identity``
    ones need no data (``fit`` ignores the values, or use the constructor).

    Args:
        name: the feature name.
        config: the feature's vocabulary policy.
        values: ``id_map`` only: the known values, in row order (row ``i + 1``
            holds ``values[i]``); int64 or strings.
        counts: training counts of ``values`` (kept for inspection).
        value_kind: ``id_map`` only: ``"int"`` or ``"str"``; inferred from
            ``values`` when None. Decides how inputs are compared: an int
            vocabulary parses numeric strings, a str vocabulary compares
            ``str(value)``.
        out_of_range: ``identity`` only: ``"error"`` or ``"clamp"``.
        source_sha256: sha256 of the raw data it was fitted on (provenance).
        created: ISO time of fitting; now when None.

    Example:
        >>> v = Vocabulary("hour", VocabConfig(VocabPolicy.IDENTITY, size=24))
        >>> v.encode([0, 23]).tolist(), v.num_embeddings
        ([0, 23], 24)
    """

    def __init__(
        self,
        name: str,
        config: VocabConfig,
        values: ArrayLike | None = None,
        counts: ArrayLike | None = None,
        *,
        value_kind: ValueKind | str | None = None,
        out_of_range: OutOfRange | str = OutOfRange.ERROR,
        source_sha256: str = "",
        created: str | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.out_of_range = OutOfRange(out_of_range)
        self.source_sha256 = source_sha256
        self.created = created or utc_now()
        self.value_kind: ValueKind | None = None
        self._values: np.ndarray = np.empty(0, dtype=np.int64)
        self._counts: np.ndarray = np.empty(0, dtype=np.int64)
        self._index: pd.Index = pd.Index(self._values)
        if config.policy is VocabPolicy.ID_MAP:
            raw = _as_series(values if values is not None else np.empty(0, dtype=np.int64))
            kind = ValueKind(value_kind) if value_kind is not None else _infer_kind(raw)
            keys, valid = _to_int_keys(raw) if kind is ValueKind.INT else _to_str_keys(raw)
            if not valid.all():
                raise ValueError(
                    f"vocabulary {name!r}: {int((~valid).sum())} values are missing or not "
                    f"{kind.value}, e.g. {_examples(raw, ~valid)}"
                )
            if config.size is not None and len(keys) + 1 > config.size:
                raise ValueError(
                    f"vocabulary {name!r}: {len(keys)} values + OOV exceed size {config.size}"
                )
            self.value_kind = kind
            self._values = keys
            self._index = pd.Index(keys, dtype=np.int64 if kind is ValueKind.INT else object)
            if not self._index.is_unique:
                dup = self._index[self._index.duplicated()].tolist()[:_MAX_EXAMPLES]
                raise ValueError(f"vocabulary {name!r}: duplicate values {dup}")
            self._counts = (
                np.asarray(counts, dtype=np.int64)
                if counts is not None
                else np.zeros(len(keys), dtype=np.int64)
            )
            if len(self._counts) != len(keys):
                raise ValueError(
                    f"vocabulary {name!r}: {len(self._counts)} counts for {len(keys)} values"
                )
        elif values is not None and len(values) > 0:
            raise ValueError(f"vocabulary {name!r}: policy {config.policy.value} holds no values")

    # -- construction ----------------------------------------------------------

    @classmethod
    def fit(
        cls,
        name: str,
        config: VocabConfig,
        values: ArrayLike,
        *,
        out_of_range: OutOfRange | str = OutOfRange.ERROR,
        source_sha256: str = "",
    ) -> Vocabulary:
        """Fits a vocabulary on training values (one entry per occurrence).

        ``id_map``: counts values (missing ones ignored), drops those seen fewer
        than ``config.min_count`` times, orders by descending count then
        ascending value, and keeps at most ``config.size - 1`` of them.
        ``hash`` and ``identity`` ignore ``values``.

        Args:
            name: the feature name.
            config: the vocabulary policy.
            values: every training occurrence (flatten list columns first).
            out_of_range: ``identity`` only, see the class.
            source_sha256: provenance of ``values``.

        Returns:
            The vocabulary.
        """
        if config.policy is not VocabPolicy.ID_MAP:
            return cls(name, config, out_of_range=out_of_range, source_sha256=source_sha256)
        raw = _as_series(values)
        kind = _infer_kind(raw)
        keys, valid = _to_int_keys(raw) if kind is ValueKind.INT else _to_str_keys(raw)
        counted = pd.Series(keys[valid]).value_counts(sort=False)
        table = pd.DataFrame({"value": counted.index.to_numpy(), "count": counted.to_numpy()})
        table = table[table["count"] >= config.min_count]
        table = table.sort_values(["count", "value"], ascending=[False, True], kind="stable")
        if config.size is not None:
            table = table.head(config.size - 1)
        return cls(
            name,
            config,
            table["value"].to_numpy(),
            table["count"].to_numpy(),
            value_kind=kind,
            out_of_range=out_of_range,
            source_sha256=source_sha256,
        )

    # -- properties ------------------------------------------------------------

    @property
    def policy(self) -> VocabPolicy:
        return self.config.policy

    @property
    def num_embeddings(self) -> int:
        """Rows of the embedding table: known values + 1 (OOV) for ``id_map``, else ``size``."""
        if self.policy is VocabPolicy.ID_MAP:
            return len(self._values) + 1
        assert self.config.size is not None  # VocabConfig enforces it
        return self.config.size

    def __len__(self) -> int:
        return self.num_embeddings

    @property
    def values(self) -> np.ndarray:
        """``id_map``: the known values in row order (row ``i + 1`` = ``values[i]``)."""
        return self._values

    @property
    def counts(self) -> np.ndarray:
        """``id_map``: the training count of each known value."""
        return self._counts

    @property
    def version(self) -> str:
        """Content hash of the mapping (hex sha256): the vocabulary version.

        Depends on the policy, sizes, value kind, out-of-range policy, hash
        function and the ordered values; not on the name, counts or time.
        """
        header = {
            "policy": self.policy.value,
            "size": self.config.size,
            "min_count": self.config.min_count,
            "value_kind": self.value_kind.value if self.value_kind else None,
            "out_of_range": self.out_of_range.value,
            "hash": HASH_FUNCTION if self.policy is VocabPolicy.HASH else None,
        }
        digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        if self.value_kind is ValueKind.INT:
            digest.update(self._values.astype("<i8").tobytes())
        elif self.value_kind is ValueKind.STR:
            digest.update(json.dumps(self._values.tolist()).encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"Vocabulary({self.name!r}, policy={self.policy.value}, "
            f"rows={self.num_embeddings}, version={self.version[:12]})"
        )

    # -- encoding --------------------------------------------------------------

    def encode(self, values: ArrayLike) -> np.ndarray:
        """Maps raw values to rows.

        Args:
            values: 1-D raw values.

        Returns:
            int64 rows, same length as ``values``.

        Raises:
            ValueError: ``identity`` with ``out_of_range="error"`` and a value
                outside ``[0, size)``, non-integral or missing.
        """
        series = _as_series(values)
        if self.policy is VocabPolicy.ID_MAP:
            if self.value_kind is ValueKind.INT:
                keys, valid = _to_int_keys(series)
            else:
                keys, valid = _to_str_keys(series)
            rows = np.zeros(len(series), dtype=np.int64)
            if len(self._values):
                found = self._index.get_indexer(keys[valid])
                rows[valid] = found + 1  # -1 (unknown) becomes 0, the OOV row
            return rows
        size = self.num_embeddings
        if self.policy is VocabPolicy.HASH:
            return stable_hash(series, size)
        keys, valid = _to_int_keys(series)
        bad = ~valid | (keys < 0) | (keys >= size)
        if bad.any():
            if self.out_of_range is OutOfRange.ERROR:
                raise ValueError(
                    f"feature {self.name!r}: {int(bad.sum())} of {len(series)} values are not "
                    f"integers in [0, {size}), e.g. {_examples(series, bad)}; fix the input or "
                    f"use out_of_range='clamp'"
                )
            keys = np.where(valid, np.clip(keys, 0, size - 1), 0)
        return keys

    def decode(self, indices: ArrayLike, oov_value: Any = None) -> np.ndarray:
        """Maps rows back to raw values (``id_map`` and ``identity`` only).

        Args:
            indices: rows in ``[0, num_embeddings)``.
            oov_value: what row 0 of an ``id_map`` vocabulary decodes to; when
                None, row 0 raises, since the OOV bucket has no single value.

        Returns:
            Raw values: int64 for an int vocabulary (``oov_value`` must then be an
            int), object (str) otherwise.

        Raises:
            ValueError: a row is out of range, or row 0 without ``oov_value``.
            TypeError: the vocabulary is a hash (not invertible).
        """
        rows = np.asarray(indices)
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"feature {self.name!r}: rows must be integers, got {rows.dtype}")
        rows = rows.astype(np.int64)
        if self.policy is VocabPolicy.HASH:
            raise TypeError(f"feature {self.name!r}: a hash vocabulary cannot be decoded")
        bad = (rows < 0) | (rows >= self.num_embeddings)
        if bad.any():
            raise ValueError(
                f"feature {self.name!r}: rows {rows[bad][:_MAX_EXAMPLES].tolist()} are outside "
                f"[0, {self.num_embeddings})"
            )
        if self.policy is VocabPolicy.IDENTITY:
            return rows
        oov = rows == OOV_INDEX
        if oov.any() and oov_value is None:
            raise ValueError(
                f"feature {self.name!r}: row 0 is the out-of-vocabulary bucket; pass oov_value"
            )
        out = self._values[np.maximum(rows - 1, 0)] if len(self._values) else rows.astype(object)
        if oov.any():
            out = out.copy()
            out[oov] = oov_value
        return out

    # -- persistence -----------------------------------------------------------

    def _config_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "size": self.config.size,
            "min_count": self.config.min_count,
            "out_of_range": self.out_of_range.value,
        }

    def save(self, path: str | Path) -> Path:
        """Writes the vocabulary to one Parquet file (see the module docstring)."""
        if self.value_kind is ValueKind.STR:
            value_col = pd.array(self._values.tolist(), dtype="str")
        else:
            value_col = self._values.astype(np.int64)
        frame = pd.DataFrame(
            {
                "index": np.arange(1, len(self._values) + 1, dtype=np.int64),
                "value": value_col,
                "count": self._counts.astype(np.int64),
            }
        )
        meta = {
            META_SOURCE_SHA256: self.source_sha256,
            META_CONFIG_HASH: config_hash(self._config_dict()),
            "recsys.created": self.created,
            "recsys.vocab.feature": self.name,
            "recsys.vocab.policy": self.policy.value,
            "recsys.vocab.size": self.num_embeddings,
            "recsys.vocab.config": self._config_dict(),
            "recsys.vocab.value_kind": self.value_kind.value if self.value_kind else None,
            "recsys.vocab.hash_function": HASH_FUNCTION,
            "recsys.vocab.version": self.version,
        }
        return write_table(frame, path, meta)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Reads a vocabulary written by :meth:`save` and checks its version.

        Raises:
            ValueError: the content no longer matches the stored version, or the
                file was written with another hash function.
        """
        frame, meta = read_table(path)
        cfg = meta["recsys.vocab.config"]
        config = VocabConfig(
            policy=VocabPolicy(cfg["policy"]), size=cfg["size"], min_count=cfg["min_count"]
        )
        if meta.get("recsys.vocab.hash_function") != HASH_FUNCTION:
            raise ValueError(
                f"{path}: written with hash {meta.get('recsys.vocab.hash_function')!r}, this "
                f"code uses {HASH_FUNCTION!r}"
            )
        if not np.array_equal(frame["index"].to_numpy(), np.arange(1, len(frame) + 1)):
            raise ValueError(f"{path}: rows are not numbered 1..{len(frame)}")
        kind = meta.get("recsys.vocab.value_kind")
        vocab = cls(
            meta["recsys.vocab.feature"],
            config,
            frame["value"].to_numpy() if config.policy is VocabPolicy.ID_MAP else None,
            frame["count"].to_numpy() if config.policy is VocabPolicy.ID_MAP else None,
            value_kind=kind,
            out_of_range=cfg["out_of_range"],
            source_sha256=meta[META_SOURCE_SHA256],
            created=meta["recsys.created"],
        )
        if vocab.version != meta["recsys.vocab.version"]:
            raise ValueError(
                f"{path}: content hash {vocab.version} differs from the stored version "
                f"{meta['recsys.vocab.version']} (file modified?)"
            )
        return vocab


# -- all vocabularies of a schema --------------------------------------------------


class VocabularySet(Mapping[str, Vocabulary]):
    """One vocabulary per sparse feature of a schema; ``vocab_from`` features share.

    Indexing by any sparse feature name returns its vocabulary; features with
    ``vocab_from`` return the owner's object.

    Args:
        schema: the feature schema.
        vocabs: a vocabulary for every sparse feature without ``vocab_from``.

    Example:
        >>> vocabs = VocabularySet.fit(schema, [examples, users, items])  # doctest: +SKIP
        >>> vocabs.encode("item_id", [50, 181]), vocabs.num_embeddings()  # doctest: +SKIP
    """

    def __init__(self, schema: FeatureSchema, vocabs: Mapping[str, Vocabulary]) -> None:
        self.schema = schema
        self._own: dict[str, Vocabulary] = {}
        for f in schema.sparse():
            if f.vocab_from:
                continue
            if f.name not in vocabs:
                raise ValueError(f"no vocabulary given for feature {f.name!r}")
            self._own[f.name] = vocabs[f.name]
        extra = set(vocabs) - set(self._own)
        if extra:
            raise ValueError(f"vocabularies for unknown or borrowing features: {sorted(extra)}")

    def owner(self, feature: str) -> str:
        """The feature whose vocabulary ``feature`` uses (itself if none)."""
        seen = [feature]
        spec = self.schema[feature]
        while spec.vocab_from:
            spec = self.schema[spec.vocab_from]
            if spec.name in seen:
                raise ValueError(f"vocab_from cycle: {' -> '.join([*seen, spec.name])}")
            seen.append(spec.name)
        return spec.name

    def __getitem__(self, feature: str) -> Vocabulary:
        if feature not in self.schema or not self.schema[feature].is_sparse:
            raise KeyError(f"no vocabulary for {feature!r}; sparse features: {list(self)}")
        return self._own[self.owner(feature)]

    def __iter__(self) -> Iterator[str]:
        return iter(f.name for f in self.schema.sparse())

    def __len__(self) -> int:
        return len(self.schema.sparse())

    def encode(self, feature: str, values: ArrayLike) -> np.ndarray:
        """Rows of ``values`` under ``feature``'s vocabulary (int64)."""
        return self[feature].encode(values)

    def num_embeddings(self) -> dict[str, int]:
        """Table rows of every sparse feature (borrowing features included)."""
        return {name: self[name].num_embeddings for name in self}

    def versions(self) -> dict[str, str]:
        """Content hash of each owned vocabulary, by feature name."""
        return {name: v.version for name, v in self._own.items()}

    @classmethod
    def fit(
        cls,
        schema: FeatureSchema,
        frames: Sequence[pd.DataFrame],
        *,
        source_sha256: str = "",
        out_of_range: Mapping[str, OutOfRange | str] | OutOfRange | str = OutOfRange.ERROR,
    ) -> VocabularySet:
        """Fits every vocabulary of ``schema`` on training tables.

        Each ``id_map`` feature is fitted on its ``source`` column taken from
        every frame that has it (one count per occurrence; list columns of
        multi-hot and sequence features are flattened). Only pass training
        data: e.g. the training examples and the user and item side tables.

        Args:
            schema: the feature schema.
            frames: training tables.
            source_sha256: provenance recorded in each vocabulary.
            out_of_range: ``identity`` policy, one for all or per feature name.

        Returns:
            The set.

        Raises:
            ValueError: an ``id_map`` feature's source column is in no frame.
        """
        vocabs: dict[str, Vocabulary] = {}
        for f in schema.sparse():
            if f.vocab_from:
                continue
            assert f.vocab is not None  # sparse features always have one
            oor = (
                out_of_range.get(f.name, OutOfRange.ERROR)
                if isinstance(out_of_range, Mapping)
                else out_of_range
            )
            values: ArrayLike = (
                _training_values(f, frames) if f.vocab.policy is VocabPolicy.ID_MAP else []
            )
            vocabs[f.name] = Vocabulary.fit(
                f.name, f.vocab, values, out_of_range=oor, source_sha256=source_sha256
            )
        return cls(schema, vocabs)

    def save(self, directory: str | Path) -> Path:
        """Writes ``<feature>.parquet`` per owned vocabulary and ``index.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        index: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "features": {}}
        for name in self:
            own = self.owner(name)
            if own == name:
                self._own[name].save(directory / f"{name}.parquet")
                index["features"][name] = {
                    "file": f"{name}.parquet",
                    "version": self._own[name].version,
                }
            else:
                index["features"][name] = {"vocab_from": own}
        index["schema"] = self.schema.to_dict()
        (directory / _INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path, schema: FeatureSchema | None = None) -> VocabularySet:
        """Reads a directory written by :meth:`save`.

        Args:
            directory: the folder.
            schema: the schema to use; defaults to the one stored with the set.
                Its features must have the stored vocabularies.
        """
        directory = Path(directory)
        index = json.loads((directory / _INDEX_FILE).read_text())
        if schema is None:
            schema = FeatureSchema.from_dict(index["schema"])
        vocabs: dict[str, Vocabulary] = {}
        for name, entry in index["features"].items():
            if "file" not in entry or name not in schema or schema[name].vocab_from:
                continue
            vocab = Vocabulary.load(directory / entry["file"])
            if vocab.version != entry["version"]:
                raise ValueError(f"{directory / entry['file']}: version differs from index.json")
            vocabs[name] = vocab
        return cls(schema, vocabs)


def _training_values(feature: FeatureSpec, frames: Sequence[pd.DataFrame]) -> pd.Series:
    parts: list[pd.Series] = []
    for frame in frames:
        if feature.source not in frame.columns:
            continue
        column = frame[feature.source]
        if feature.kind in (Kind.MULTI_HOT, Kind.SEQUENCE):
            flat, _ = flatten_lists(column)
            parts.append(pd.Series(flat))
        else:
            parts.append(column.reset_index(drop=True))
    if not parts:
        raise ValueError(
            f"feature {feature.name!r}: no training table has its source column "
            f"{feature.source!r}; columns seen: {sorted({c for f in frames for c in f.columns})}"
        )
    non_empty = [p for p in parts if len(p)]
    if not non_empty:
        return parts[0]
    return pd.concat(non_empty, ignore_index=True) if len(non_empty) > 1 else non_empty[0]
