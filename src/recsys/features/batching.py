"""Batches of encoded features: TorchRec ``KeyedJaggedTensor`` s and dense tensors.

The pipeline encodes a feature table once, up front, into flat int64 arrays
(:class:`JaggedArray`: all rows' ids concatenated plus row offsets). A batch is
then a gather of row slices from those arrays, concatenated feature-major into
one :class:`~torchrec.KeyedJaggedTensor`; no per-row Python code runs per batch.

:func:`make_loader` wraps this in a :class:`torch.utils.data.DataLoader` whose
dataset returns whole batches (a batch sampler hands it the row indices of a
batch). By default it runs in the training process (``num_workers=0``): on a
2-core CPU machine, MovieLens-100K train rows with all 11 features, in-process
batching was about 4x faster than 1 or 2 worker processes (267k vs 63k-70k
rows/s at 1,024 rows per batch, 379k vs 152k-167k at 4,096), because moving a
finished batch between processes costs more than assembling it from arrays.
:func:`benchmark_loader` measures a loader.

Padded ids for export (:func:`to_padded`, :func:`to_padded_stack`) are
**left-aligned**: row ``b`` holds its ids in positions ``0..n-1`` in their
stored order and ``-1`` after them. Sequences are stored most recent last, so
the most recent item sits at position ``n - 1``; when a row holds more than
``L`` ids, the last ``L`` are kept (``keep="last"``). ``align="right"`` puts
the ids at the end instead (most recent at ``L - 1``, padding first).

Example:
    >>> loader = make_loader(dataset, schema, [Role.USER, Role.CONTEXT, Role.ITEM],
    ...                      batch_size=1024, shuffle=True, seed=0)  # doctest: +SKIP
    >>> batch = next(iter(loader))  # doctest: +SKIP
    >>> batch.sparse.keys()[:2], batch.dense.shape  # doctest: +SKIP
    (['user_id', 'user_age'], torch.Size([1024, 0]))
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchrec import KeyedJaggedTensor

from recsys.features.build import join_features
from recsys.features.schema import FeatureSchema, FeatureSpec, Kind, Role
from recsys.features.store import ProcessedDataset
from recsys.features.vocab import VocabularySet, flatten_lists

PAD = -1
"""Id of padding positions in padded ``[B, L]`` / ``[B, F, L]`` tensors."""

RowIndex = np.ndarray | slice


# -- jagged arrays -----------------------------------------------------------------


@dataclass(frozen=True)
class JaggedArray:
    """Variable-length int64 rows stored flat: row ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    Attributes:
        values: all ids, int64.
        offsets: int64, ``len(rows) + 1`` entries, starting at 0.
    """

    values: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be 1-D and start at 0")
        if self.offsets[-1] != len(self.values):
            raise ValueError(
                f"offsets end at {self.offsets[-1]} but there are {len(self.values)} values"
            )

    @classmethod
    def from_dense(cls, ids: np.ndarray) -> JaggedArray:
        """One id per row (a categorical feature)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError(f"expected a 1-D id array, got shape {ids.shape}")
        return cls(ids, np.arange(len(ids) + 1, dtype=np.int64))

    @classmethod
    def from_lists(cls, rows: Sequence[Any] | pd.Series) -> JaggedArray:
        """From one list (or 1-D array) of integer ids per row."""
        values, offsets = flatten_lists(rows)
        if len(values) and not np.issubdtype(np.asarray(values).dtype, np.integer):
            raise TypeError(f"expected integer ids, got {np.asarray(values).dtype}")
        return cls(np.asarray(values, dtype=np.int64), offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def is_one_per_row(self) -> bool:
        return len(self.values) == len(self) and bool(np.all(self.lengths == 1))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, index: RowIndex) -> tuple[np.ndarray, np.ndarray]:
        """``(values, lengths)`` of the selected rows, in the given order.

        Args:
            index: a ``slice`` with step 1 (zero-copy) or an int array.
        """
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                index = np.arange(start, stop, step)
            else:
                stop = max(start, stop)
                lo, hi = self.offsets[start], self.offsets[stop]
                return self.values[lo:hi], np.diff(self.offsets[start : stop + 1])
        index = np.asarray(index, dtype=np.int64)
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        return _gather(self.values, starts, lengths), lengths

    def truncate(self, max_len: int, keep: Literal["first", "last"]) -> JaggedArray:
        """Rows cut to at most ``max_len`` ids, keeping the first or the last ones."""
        lengths = self.lengths
        if len(lengths) == 0 or lengths.max(initial=0) <= max_len:
            return self
        kept = np.minimum(lengths, max_len)
        starts = self.offsets[:-1] + (lengths - kept if keep == "last" else 0)
        offsets = np.zeros(len(kept) + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        return JaggedArray(_gather(self.values, starts, kept), offsets)


def _gather(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``values[starts[i]:starts[i] + lengths[i]]`` (vectorized)."""
    total = int(lengths.sum())
    if total == 0:
        return values[:0]
    ends = np.cumsum(lengths)
    return values[np.repeat(starts - (ends - lengths), lengths) + np.arange(total)]


def _as_jagged(data: np.ndarray | Sequence[np.ndarray] | JaggedArray) -> JaggedArray:
    if isinstance(data, JaggedArray):
        return data
    if isinstance(data, np.ndarray) and data.dtype != object:
        return JaggedArray.from_dense(data)
    return JaggedArray.from_lists(list(data))


def kjt_from_parts(
    keys: Sequence[str], parts: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int
) -> KeyedJaggedTensor:
    """A KJT from per-feature ``(values, lengths)`` of the same batch size."""
    if len(keys) != len(parts):
        raise ValueError(f"{len(keys)} keys for {len(parts)} features")
    for key, (_, lengths) in zip(keys, parts, strict=True):
        if len(lengths) != batch_size:
            raise ValueError(f"feature {key!r} has {len(lengths)} rows, expected {batch_size}")
    values = (
        np.concatenate([v for v, _ in parts]) if parts else np.empty(0, dtype=np.int64)
    ).astype(np.int64, copy=False)
    lengths = (
        np.concatenate([ln for _, ln in parts]) if parts else np.empty(0, dtype=np.int64)
    ).astype(np.int32, copy=False)
    return KeyedJaggedTensor(
        keys=list(keys),
        values=torch.from_numpy(np.ascontiguousarray(values)),
        lengths=torch.from_numpy(np.ascontiguousarray(lengths)),
        stride=batch_size,
        length_per_key=[len(v) for v, _ in parts],
    )


def make_kjt(
    encoded: Mapping[str, np.ndarray | Sequence[np.ndarray] | JaggedArray],
    feature_names: Sequence[str],
) -> KeyedJaggedTensor:
    """A ``KeyedJaggedTensor`` from encoded ids of one batch.

    Args:
        encoded: per feature: a 1-D int array (one id per row), a list of
            1-D int arrays (one bag per row), or a :class:`JaggedArray`. All
            features must have the same number of rows.
        feature_names: the KJT keys, in order.

    Returns:
        A KJT with int64 values and int32 lengths, values concatenated
        feature-major (all rows of the first key, then the second, ...).

    Example:
        >>> kjt = make_kjt({"user_id": np.array([3, 1]),
        ...                 "recent": [np.array([5, 6]), np.array([], dtype=np.int64)]},
        ...                ["user_id", "recent"])
        >>> kjt.values().tolist(), kjt.lengths().tolist()
        ([3, 1, 5, 6], [1, 1, 2, 0])
    """
    missing = [n for n in feature_names if n not in encoded]
    if missing:
        raise KeyError(f"make_kjt: no ids for features {missing}")
    jagged = [_as_jagged(encoded[n]) for n in feature_names]
    batch = len(jagged[0]) if jagged else 0
    return kjt_from_parts(feature_names, [(j.values, j.lengths) for j in jagged], batch)


# -- padded dense ids --------------------------------------------------------------


def to_padded(
    source: KeyedJaggedTensor | JaggedArray | tuple[torch.Tensor, torch.Tensor],
    feature: str,
    max_len: int,
    *,
    align: Literal["left", "right"] = "left",
    keep: Literal["last", "first"] = "last",
) -> torch.Tensor:
    """Ids of one feature as a padded ``[B, max_len]`` int64 tensor (-1 = padding).

    Args:
        source: a KJT (``feature`` selects the key), a :class:`JaggedArray`, or
            ``(values, lengths)`` tensors (``feature`` is then only used in errors).
        feature: the feature name.
        max_len: ``L``.
        align: ``"left"``: ids at positions ``0..n-1``, padding after;
            ``"right"``: ids at ``L-n..L-1``, padding before.
        keep: rows longer than ``L`` keep their ``"last"`` ids (sequences: the
            most recent) or their ``"first"`` ones.

    Returns:
        LongTensor ``[B, max_len]``.

    Example:
        >>> kjt = make_kjt({"s": [np.array([1, 2, 3]), np.array([7])]}, ["s"])
        >>> to_padded(kjt, "s", 2).tolist()
        [[2, 3], [7, -1]]
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if isinstance(source, KeyedJaggedTensor):
        keys = source.keys()
        if feature not in keys:
            raise KeyError(f"KJT has no feature {feature!r}; keys: {keys}")
        jt = source[feature]
        values, lengths = jt.values(), jt.lengths()
    elif isinstance(source, JaggedArray):
        values, lengths = torch.tensor(source.values), torch.from_numpy(source.lengths)
    else:
        values, lengths = source
    values = values.long()
    lengths = lengths.long()
    offsets = torch.cumsum(lengths, 0) - lengths
    n = lengths.clamp(max=max_len)
    start = offsets + (lengths - n if keep == "last" else 0)
    pos = torch.arange(max_len, device=values.device).unsqueeze(0)
    if align == "left":
        valid = pos < n.unsqueeze(1)
        idx = start.unsqueeze(1) + pos
    elif align == "right":
        shift = (max_len - n).unsqueeze(1)
        valid = pos >= shift
        idx = start.unsqueeze(1) + pos - shift
    else:
        raise ValueError(f"align must be 'left' or 'right', got {align!r}")
    if values.numel() == 0:
        return torch.full(valid.shape, PAD, dtype=torch.int64, device=values.device)
    gathered = values[torch.where(valid, idx, torch.zeros_like(idx))]
    return torch.where(valid, gathered, torch.full_like(gathered, PAD))


def to_padded_stack(
    kjt: KeyedJaggedTensor,
    features: Sequence[str],
    max_len: int,
    *,
    align: Literal["left", "right"] = "left",
) -> torch.Tensor:
    """The export input ``[B, F, L]``: :func:`to_padded` of each feature, stacked.

    Every feature keeps its last ``max_len`` ids (categorical features have one).
    """
    return torch.stack([to_padded(kjt, f, max_len, align=align) for f in features], dim=1)


# -- batches -----------------------------------------------------------------------


@dataclass
class Batch:
    """One training or evaluation batch.

    Attributes:
        sparse: the sparse features, keys in schema order.
        dense: float32 ``[B, n_dense]`` (``n_dense`` = sum of the dense
            features' ``dim``; 0 columns when there are none).
        labels: float32 ``[B]``, or None.
    """

    sparse: KeyedJaggedTensor
    dense: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.dense.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on ``device`` (``non_blocking`` pays off from pinned memory)."""
        device = torch.device(device)
        return Batch(
            sparse=self.sparse.to(device, non_blocking=non_blocking),
            dense=self.dense.to(device, non_blocking=non_blocking),
            labels=None
            if self.labels is None
            else self.labels.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """A copy in page-locked host memory (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(
            sparse=self.sparse.pin_memory(),
            dense=self.dense.pin_memory(),
            labels=None if self.labels is None else self.labels.pin_memory(),
        )


@dataclass
class EncodedFeatures:
    """A feature table encoded once into flat arrays; batches are row gathers.

    Attributes:
        sparse: per sparse feature, its ids (truncated to ``max_len``), in KJT key order.
        dense: float32 ``[N, n_dense]``.
        dense_names: the dense features, in column order.
        labels: float32 ``[N]`` or None.
        empty_features: KJT keys added with zero ids per row (e.g. the item
            features when only the user tower runs).
    """

    sparse: dict[str, JaggedArray]
    dense: np.ndarray
    dense_names: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    empty_features: list[str] = field(default_factory=list)
    key_order: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.key_order:
            self.key_order = [*self.sparse, *self.empty_features]

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def batch(self, index: RowIndex) -> Batch:
        """The rows ``index`` (a slice or an int array) as a :class:`Batch`."""
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            size = max(stop - start, 0)
        else:
            index = np.asarray(index, dtype=np.int64)
            size = len(index)
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        empty = (np.empty(0, dtype=np.int64), np.zeros(size, dtype=np.int64))
        for key in self.key_order:
            parts.append(self.sparse[key].rows(index) if key in self.sparse else empty)
        dense = torch.from_numpy(np.ascontiguousarray(self.dense[index]))
        labels = (
            torch.from_numpy(np.ascontiguousarray(self.labels[index]))
            if self.labels is not None
            else None
        )
        return Batch(kjt_from_parts(self.key_order, parts, size), dense, labels)


def encode_features(
    frame: pd.DataFrame,
    features: Sequence[FeatureSpec],
    vocabs: VocabularySet,
    *,
    label_column: str | None = None,
    empty_features: Sequence[str] = (),
    key_order: Sequence[str] | None = None,
) -> EncodedFeatures:
    """Encodes the features' source columns of ``frame`` once.

    Categorical columns go through their vocabulary; list columns are flattened
    (Arrow, no Python loop), encoded in one call and cut to ``max_len``
    (sequences keep the most recent ids, multi-hot bags the first ones). Dense
    columns become float32 (``dim > 1``: one array of length ``dim`` per row).

    Args:
        frame: one row per example, with every feature's ``source`` column.
        features: the features to encode (sparse and dense), in output order.
        vocabs: fitted vocabularies.
        label_column: column holding the label, if any.
        empty_features: extra KJT keys with no ids.
        key_order: order of the KJT keys (default: ``features`` then ``empty_features``).

    Returns:
        The encoded table.

    Raises:
        KeyError: a source column is missing.
        ValueError: a dense or label value is missing or not finite.
    """
    missing = sorted({f.source for f in features} - set(frame.columns))
    if missing:
        raise KeyError(f"table lacks source columns {missing}; it has {sorted(frame.columns)}")
    sparse: dict[str, JaggedArray] = {}
    dense_cols: list[np.ndarray] = []
    dense_names: list[str] = []
    for f in features:
        column = frame[f.source]
        if f.kind is Kind.CATEGORICAL:
            sparse[f.name] = JaggedArray.from_dense(vocabs.encode(f.name, column))
        elif f.is_sparse:
            raw, offsets = flatten_lists(column)
            ids = vocabs.encode(f.name, raw)
            keep: Literal["first", "last"] = "last" if f.kind is Kind.SEQUENCE else "first"
            sparse[f.name] = JaggedArray(ids, offsets).truncate(f.max_len, keep)
        else:
            dense_cols.append(_dense_column(f, column))
            dense_names.append(f.name)
    dense = (
        np.concatenate(dense_cols, axis=1)
        if dense_cols
        else np.zeros((len(frame), 0), dtype=np.float32)
    )
    labels = None
    if label_column is not None:
        labels = _finite(frame[label_column].to_numpy(dtype=np.float32), label_column)
    return EncodedFeatures(
        sparse=sparse,
        dense=dense,
        dense_names=dense_names,
        labels=labels,
        empty_features=list(empty_features),
        key_order=list(key_order) if key_order else [],
    )


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[:5].tolist()
        raise ValueError(
            f"column {name!r}: {int(bad.sum())} missing/non-finite values, rows {rows}"
        )
    return values


def _dense_column(f: FeatureSpec, column: pd.Series) -> np.ndarray:
    if f.dim == 1:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        return _finite(values, f.source).reshape(-1, 1)
    raw, offsets = flatten_lists(column)
    lengths = np.diff(offsets)
    if np.any(lengths != f.dim):
        bad = np.flatnonzero(lengths != f.dim)[:5].tolist()
        raise ValueError(
            f"dense feature {f.name!r} needs {f.dim} values per row; rows {bad} differ"
        )
    return _finite(np.asarray(raw, dtype=np.float32).reshape(len(column), f.dim), f.source)


# -- dataset, sampler, loader ------------------------------------------------------


class FeatureDataset(Dataset[Batch]):
    """A map-style dataset whose items are whole batches.

    ``dataset[rows]`` takes a slice or an int array of row numbers and returns
    a :class:`Batch`; ``len(dataset)`` counts rows. Use it with
    :class:`EpochBatchSampler` (as :func:`make_loader` does).
    """

    def __init__(self, encoded: EncodedFeatures) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: RowIndex) -> Batch:
        return self.encoded.batch(index)


class EpochBatchSampler(Sampler[RowIndex]):
    """Yields the row indices of each batch; a fresh seeded permutation per epoch.

    Epoch ``e`` uses ``numpy.random.default_rng([seed, e])``, so runs are
    reproducible and epochs differ. Without shuffling it yields contiguous
    slices (zero-copy batches).

    Args:
        n_rows: dataset rows.
        batch_size: rows per batch.
        shuffle: permute rows each epoch.
        seed: base seed.
        drop_last: drop the last, smaller batch.
    """

    def __init__(
        self, n_rows: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n_rows = n_rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Chooses the permutation of the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_rows // self.batch_size
        return -(-self.n_rows // self.batch_size)

    def __iter__(self) -> Iterator[RowIndex]:
        n_batches = len(self)
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_rows)
            for b in range(n_batches):
                yield perm[b * self.batch_size : (b + 1) * self.batch_size]
        else:
            for b in range(n_batches):
                yield slice(b * self.batch_size, min((b + 1) * self.batch_size, self.n_rows))
        self.epoch += 1


def _no_collate(batch: Any) -> Any:
    """The dataset already returns whole batches: nothing to collate."""
    return batch


def _frame_for(tables: ProcessedDataset, split: str) -> pd.DataFrame:
    if split in ("train", "test", "valid"):
        rows = getattr(tables, split)
        if rows is None:
            raise ValueError(f"the dataset has no {split!r} split")
        return join_features(rows, tables.users, tables.items)
    if split in ("users", "items"):
        frame: pd.DataFrame = getattr(tables, split)
        return frame
    raise ValueError(f"split must be train, valid, test, users or items; got {split!r}")


def make_dataset(
    tables: pd.DataFrame | ProcessedDataset,
    schema: FeatureSchema,
    roles: Sequence[Role | str],
    *,
    vocabs: VocabularySet | None = None,
    split: str = "train",
    label_column: str | None = None,
    empty_features: Sequence[str] = (),
) -> FeatureDataset:
    """Encodes the features of ``roles`` once into a :class:`FeatureDataset`.

    Args:
        tables: a processed dataset (``split`` picks the rows; train/valid/test
            rows are joined with the user and item tables) or one frame holding
            every needed source column.
        schema: the feature schema.
        roles: the roles whose features go into the batches (``user``,
            ``context``, ``item``).
        vocabs: the vocabularies; defaults to ``tables.vocabs``.
        split: ``train``, ``valid``, ``test``, ``users`` or ``items``.
        label_column: column of the labels, if any.
        empty_features: further sparse features added with no ids (so a model
            expecting every key accepts the KJT).

    Returns:
        The dataset; KJT keys are in schema order.
    """
    wanted = [Role(r) for r in roles]
    if isinstance(tables, ProcessedDataset):
        frame = _frame_for(tables, split)
        vocabs = vocabs or tables.vocabs
    else:
        frame = tables
    if vocabs is None:
        raise ValueError("make_loader needs vocabularies: pass vocabs= or a dataset that has them")
    features = schema.by_role(*wanted)
    sparse_names = {f.name for f in features if f.is_sparse}
    empty = [n for n in empty_features if n not in sparse_names]
    for name in empty:
        if not schema[name].is_sparse:
            raise ValueError(f"empty feature {name!r} is not sparse")
    order = [f.name for f in schema if f.name in sparse_names or f.name in empty]
    encoded = encode_features(
        frame,
        features,
        vocabs,
        label_column=label_column,
        empty_features=empty,
        key_order=order,
    )
    return FeatureDataset(encoded)


def make_loader(
    tables: pd.DataFrame | ProcessedDataset,
    schema: FeatureSchema,
    roles: Sequence[Role | str],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    *,
    vocabs: VocabularySet | None = None,
    split: str = "train",
    label_column: str | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    empty_features: Sequence[str] = (),
) -> DataLoader[Batch]:
    """A DataLoader of :class:`Batch` es over encoded features.

    The table is encoded once (:func:`make_dataset`); each batch is a slice or
    gather of flat arrays. ``num_workers=0`` (default) assembles batches in the
    calling process, which measured about 4x faster than 1 or 2 worker processes
    on a 2-core machine (see the module docstring); workers, when asked for, are
    persistent.

    Args:
        tables: see :func:`make_dataset`.
        schema: the feature schema.
        roles: roles whose features are batched.
        batch_size: rows per batch.
        shuffle: reshuffle every epoch (seeded, see :class:`EpochBatchSampler`).
        seed: shuffling seed.
        num_workers: DataLoader worker processes.
        vocabs: vocabularies, if ``tables`` does not carry them.
        split: which rows of a processed dataset.
        label_column: label column, if any.
        drop_last: drop the last, smaller batch.
        pin_memory: pin batches (for fast host-to-GPU copies).
        empty_features: further sparse keys with no ids.

    Returns:
        The loader; ``loader.dataset`` is the :class:`FeatureDataset` and
        ``loader.sampler`` the :class:`EpochBatchSampler`.
    """
    dataset = make_dataset(
        tables,
        schema,
        roles,
        vocabs=vocabs,
        split=split,
        label_column=label_column,
        empty_features=empty_features,
    )
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed, drop_last)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        collate_fn=_no_collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def benchmark_loader(loader: DataLoader[Batch], epochs: int = 1) -> dict[str, float]:
    """Iterates ``loader`` and reports throughput (a quick, honest timing helper).

    Returns:
        ``{"seconds", "batches", "rows", "rows_per_s"}`` over all epochs.
    """
    rows = 0
    batches = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            rows += batch.batch_size
            batches += 1
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "batches": float(batches),
        "rows": float(rows),
        "rows_per_s": rows / seconds if seconds > 0 else float("inf"),
    }
