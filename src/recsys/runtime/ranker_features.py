"""The ranker's request-time features in numpy, for Triton's python backend.

:mod:`recsys.recommend.ranker_data` builds the ranker's features offline from a
``RankerContext`` (training-split statistics); it imports torch, torchrec and pandas,
which NVIDIA's serving container does not have. This module makes the same inputs
from plain arrays that :func:`recsys.serving.repository.build_repository` exports next
to the ``recommend`` model (``ranker_features.npz``), with numpy only (Python 3.10
compatible); the dense features come from :mod:`recsys.runtime.dense_features`, the
one implementation that the offline ``RankerContext`` calls as well:

* dense features, in the ranker's column order: retrieval score, its z-score over the
  user's candidate list, ``log(1 + rank)``; the user's training interactions in the
  last ``d`` days before the request time and in total (log scale); the item's
  training interactions in total and in the last ``d`` days before the user's request
  time (log scale); the item's age in years at the request time; item-item affinities
  to the user's training items (raw and z-scored over the list; with a real-time
  profile, also to the items the user consumed since, as if they were training items);
  then standardized with the training examples' mean and standard deviation;
* sparse ids ``[n, F, L]`` (``-1`` = padding) in the ranker's feature order: user-side
  features from the user's row (or from per-pair rows the caller built from a real-time
  profile, :class:`~recsys.runtime.user_state.ProfileEncoding`), item-side features
  from the item's row, and the request features (the last ones; local hour, device, ...)
  from each list's request context by :func:`recsys.runtime.request_features.
  encode_contexts`, the encoder the offline training examples went through.

User index ``-1`` stands for a user without training interactions (a user known only
from the real-time profile): no activity, no affinities, request time = the end of
training, as the offline context treats a cold user.

Tests check both against ``RankerContext`` on MovieLens-100K.

Example::

    features = RankerFeatures.load("repo/recommend/1")
    dense = features.dense(users, items, scores, ranks, list_ids, n_lists)
    ids, list_ids = features.list_sparse(list_users, list_items)  # a per-list ranker
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.runtime.context import RequestContext
from recsys.runtime.dense_features import (
    SECONDS_PER_DAY,
    SECONDS_PER_YEAR,
    Z_SOURCES,
    DenseFeatures,
    list_zscore,
    scale_dense,
    training_items,
)
from recsys.runtime.request_features import RequestEncoding, RequestFeature, encode_contexts
from recsys.runtime.user_state import ProfileEncoding

__all__ = [
    "ARRAYS_FILE",
    "META_FILE",
    "SECONDS_PER_DAY",
    "SECONDS_PER_YEAR",
    "Z_SOURCES",
    "RankerFeatures",
    "list_zscore",
    "pad_rows",
    "stack_padded",
]

ARRAYS_FILE = "ranker_features.npz"
META_FILE = "ranker_features.json"


@dataclass
class RankerFeatures:
    """Arrays and settings that make the ranker's inputs at request time.

    Index space: user ``u`` and item ``i`` are rows of the training run's user and item
    tables (the same as the offline ``RankerContext``).

    Attributes:
        dense_names: the dense features, in the ranker's column order.
        windows_days: windows of the activity and popularity counts.
        affinity: item-item affinity kinds (``knn``, ``ease``) present.
        scaler_mean: per dense column, the training examples' mean.
        scaler_std: per dense column, their standard deviation.
        request_time: ``[U]`` seconds since the epoch (last training interaction).
        user_offsets: ``[U + 1]`` runs of ``user_times``.
        user_times: training interaction times sorted by (user, time).
        item_offsets: ``[I + 1]`` runs of ``item_times``.
        item_times: training interaction times sorted by (item, time).
        item_count: ``[I]`` training interactions per item.
        release_time: ``[I]`` release time in seconds (NaN unknown).
        seen_indptr: ``[U + 1]`` CSR rows of the users' training items.
        seen_indices: item indices of those rows.
        item_item: affinity kind -> ``[I, I]`` float32 matrix.
        sparse_names: the ranker's sparse features (the ``F`` axis of ``ids``).
        user_keys: the user-side ones among them.
        seq_len: ``L`` of the ranker's ``ids`` input.
        user_ids: ``[U, F, L]`` padded ids, user-side features filled, ``-1`` elsewhere.
        item_ids: ``[I, F, L]`` padded ids, item-side features filled, ``-1`` elsewhere.
        age_fill: item age used where the release time is unknown, or None to take the
            median known age of each candidate list (the offline behaviour for a list).
        extra: free-form facts kept in the JSON file.
        affinity_cache_entries: precompute every user's affinity to every item when
            ``n_users * n_items`` is at most this (4 bytes each per affinity kind).
        profile: how real-time profile values become the ranker's user-side ids (None:
            profiles cannot feed the ranker).
        request_features: the request features, the last entries of ``sparse_names``
            (empty: the ranker reads none).
        segment_vocab: segment name -> id of a ``segments`` request feature.
        user_segments: ``[U]`` each user's segments at the training cut-off (the
            offline profile build the ranker was trained with); requests served without
            a profile store read them (empty: none).
        dense_time: ``training`` (the dense features at each user's last training
            interaction) or ``request`` (at the request's time when it has one: the
            ranker was trained with each example's own time).
        list_seq_len: ``L_list`` of a ranker that scores candidate lists (its user,
            context and request features enter once per list, ``list_ids``; its item
            features per candidate, ``ids [U, C, F_item, item_seq_len]``); 0: the
            ranker takes one ``[F, L]`` row per pair.
        item_seq_len: ``L`` of that ranker's per-candidate ``ids``.
    """

    dense_names: list[str]
    windows_days: tuple[int, ...]
    affinity: tuple[str, ...]
    scaler_mean: np.ndarray
    scaler_std: np.ndarray
    request_time: np.ndarray
    user_offsets: np.ndarray
    user_times: np.ndarray
    item_offsets: np.ndarray
    item_times: np.ndarray
    item_count: np.ndarray
    release_time: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    item_item: dict[str, np.ndarray]
    sparse_names: list[str]
    user_keys: list[str]
    seq_len: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    age_fill: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    affinity_cache_entries: int = 20_000_000
    profile: ProfileEncoding | None = None
    request_features: list[RequestFeature] = field(default_factory=list)
    segment_vocab: dict[str, int] = field(default_factory=dict)
    user_segments: list[tuple[str, ...]] = field(default_factory=list)
    dense_time: str = "training"
    list_seq_len: int = 0
    item_seq_len: int = 0

    @property
    def per_list(self) -> bool:
        """Whether the ranker scores candidate lists (see :meth:`list_sparse`)."""
        return self.list_seq_len > 0

    @property
    def list_names(self) -> list[str]:
        """The features that are the same for every candidate of a list (user, context,
        request), in ``sparse_names`` order: ``list_ids``' ``F_list`` axis."""
        request = {f.name for f in self.request_features}
        return [n for n in self.sparse_names if n in self.user_keys or n in request]

    @property
    def item_names(self) -> list[str]:
        """The item features, in ``sparse_names`` order: the per-candidate ``F`` axis."""
        listed = set(self.list_names)
        return [n for n in self.sparse_names if n not in listed]

    def __post_init__(self) -> None:
        if self.dense_time not in ("training", "request"):
            raise ValueError(f"dense_time must be 'training' or 'request', got {self.dense_time!r}")
        if self.user_segments and len(self.user_segments) != len(self.request_time):
            raise ValueError(
                f"{len(self.user_segments)} users' segments for {len(self.request_time)} users"
            )
        tail = self.sparse_names[len(self.sparse_names) - len(self.request_features) :]
        if [f.name for f in self.request_features] != tail:
            raise ValueError(
                f"request features {[f.name for f in self.request_features]} must be the last "
                f"sparse features, got {self.sparse_names}"
            )
        n_users, n_items = len(self.request_time), len(self.item_count)
        checks = {
            "user_offsets": (len(self.user_offsets), n_users + 1),
            "item_offsets": (len(self.item_offsets), n_items + 1),
            "release_time": (len(self.release_time), n_items),
            "seen_indptr": (len(self.seen_indptr), n_users + 1),
            "user_ids": (self.user_ids.shape[0], n_users),
            "item_ids": (self.item_ids.shape[0], n_items),
            "scaler_mean": (len(self.scaler_mean), len(self.dense_names)),
            "scaler_std": (len(self.scaler_std), len(self.dense_names)),
        }
        bad = {name: got for name, (got, want) in checks.items() if got != want}
        if bad:
            raise ValueError(f"ranker feature arrays disagree in length: {bad}")
        shape = (len(self.sparse_names), self.seq_len)
        if self.user_ids.shape[1:] != shape or self.item_ids.shape[1:] != shape:
            raise ValueError(
                f"padded ids must be [*, {shape[0]}, {shape[1]}]; got users "
                f"{self.user_ids.shape}, items {self.item_ids.shape}"
            )
        for name in self.affinity:
            if self.item_item.get(name) is None or self.item_item[name].shape != (
                n_items,
                n_items,
            ):
                raise ValueError(f"affinity '{name}' needs an [{n_items}, {n_items}] matrix")
        self._user_feature = np.array([n in self.user_keys for n in self.sparse_names])
        # slots in use per feature: the rest of each [F, L] row is padding everywhere
        used = np.asarray((self.user_ids >= 0).any(axis=0) | (self.item_ids >= 0).any(axis=0))
        self._widths = [
            int(np.flatnonzero(used[f]).max()) + 1 if used[f].any() else 0
            for f in range(used.shape[0])
        ]
        if self.per_list:
            widths = {"list": (self.list_seq_len, self.list_names),
                      "item": (self.item_seq_len, self.item_names)}  # fmt: skip
            for side, (width, names) in widths.items():
                in_use = max((self._widths[self.sparse_names.index(n)] for n in names), default=0)
                if not 0 < width <= self.seq_len or in_use > width:
                    raise ValueError(
                        f"{side} ids: width {width} must be in 1..{self.seq_len} and hold the "
                        f"{in_use} slots in use"
                    )
        position = {n: i for i, n in enumerate(self.sparse_names)}
        self._list_positions = np.array([position[n] for n in self.list_names], dtype=np.int64)
        # the per-candidate ids of every item, once (a request gathers its candidates')
        self._item_rows: np.ndarray | None = None
        if self.per_list:
            item_positions = [position[n] for n in self.item_names]
            self._item_rows = np.ascontiguousarray(
                self.item_ids[:, item_positions, : self.item_seq_len]
            )
        if self.profile is not None and len(self.profile.item_vocab) != n_items:
            raise ValueError(
                f"the profile item vocabulary covers {len(self.profile.item_vocab)} items, "
                f"the ranker features {n_items}"
            )
        # The features themselves: the implementation the offline RankerContext uses.
        # Every user's affinity to every item is precomputed when [U, I] is small
        # enough: a request then reads its candidates' values.
        self._dense = DenseFeatures(
            names=self.dense_names,
            windows_days=self.windows_days,
            affinity=self.affinity,
            request_time=self.request_time,
            user_offsets=self.user_offsets,
            user_times=self.user_times,
            item_offsets=self.item_offsets,
            item_times=self.item_times,
            item_count=self.item_count,
            release_time=self.release_time,
            seen_indptr=self.seen_indptr,
            seen_indices=self.seen_indices,
            item_item=self.item_item,
            affinity_cache_entries=self.affinity_cache_entries,
        )

    @property
    def n_users(self) -> int:
        return len(self.request_time)

    @property
    def n_items(self) -> int:
        return len(self.item_count)

    # -- features ------------------------------------------------------------------

    def training_items(self, user: int) -> np.ndarray:
        """The item indices user row ``user`` interacted with in training (the
        affinities' sum runs over them); empty for ``-1``."""
        return training_items(self.seen_indptr, self.seen_indices, user)

    def affinity_scores(
        self,
        name: str,
        users: np.ndarray,
        items: np.ndarray,
        extra_seen: Sequence[np.ndarray | None] | None = None,
        list_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """Sum over each user's training items ``j`` of ``item_item[name][j, item]``.

        Args:
            name: ``knn`` or ``ease``.
            users: user index per row (``-1``: no training items, affinity 0).
            items: item index per row.
            extra_seen: per candidate list, items the user consumed since training
                (from a real-time profile; not among its training items), summed
                as if they were training items; None: none.
            list_ids: candidate list of each row (needed with ``extra_seen``).

        Returns:
            float32 ``[n]`` (:meth:`~recsys.runtime.dense_features.DenseFeatures.
            affinity_scores`).
        """
        return self._dense.affinity_scores(name, users, items, extra_seen, list_ids)

    def raw_features(
        self,
        users: np.ndarray,
        items: np.ndarray,
        retrieval_score: np.ndarray,
        retrieval_rank: np.ndarray,
        list_ids: np.ndarray | None = None,
        extra_seen: Sequence[np.ndarray | None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every dense feature except the within-list z-scores, by name (float64).

        Args:
            users: user index per row.
            items: item index per row.
            retrieval_score: retrieval score per row.
            retrieval_rank: 0-based rank in the user's retrieval list.
            list_ids: candidate list of each row. An unknown item age is filled with
                ``age_fill`` if set, else with the median known age of the row's list
                (of all rows when ``list_ids`` is None, as the offline code does for
                the rows of one call).
            extra_seen: per list, items consumed since training that the affinities
                also sum over (see :meth:`affinity_scores`).
        """
        return self._dense.raw(
            users,
            items,
            retrieval_score,
            retrieval_rank,
            age_lists=list_ids,
            age_fill=self.age_fill,
            extra_seen=extra_seen,
            list_ids=list_ids,
        )

    def item_age_years(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Years between each item's release and its user's request time (NaN unknown)."""
        return self._dense.item_age_years(users, items)

    def dense(
        self,
        users: np.ndarray,
        items: np.ndarray,
        retrieval_score: np.ndarray,
        retrieval_rank: np.ndarray,
        list_ids: np.ndarray,
        n_lists: int,
        extra_seen: Sequence[np.ndarray | None] | None = None,
        request_time: np.ndarray | None = None,
    ) -> np.ndarray:
        """The ranker's scaled dense input ``[n, n_dense]`` float32.

        Z-scores and the unknown-age median are taken per list, over every row of
        the list (:meth:`~recsys.runtime.dense_features.DenseFeatures.unscaled`).

        Args:
            users: user index per row.
            items: item index per row.
            retrieval_score: retrieval score per row.
            retrieval_rank: 0-based rank in the user's retrieval list.
            list_ids: candidate list of each row (z-scores are taken per list).
            n_lists: number of lists.
            extra_seen: per list, items consumed since training that the affinities
                also sum over (see :meth:`affinity_scores`).
            request_time: per row, the request's time in seconds (NaN: unknown); read
                only when ``dense_time`` is ``request``.
        """
        moved = request_time if self.dense_time == "request" else None
        unscaled = self._dense.unscaled(
            users,
            items,
            retrieval_score,
            retrieval_rank,
            list_ids,
            n_lists,
            age_lists=list_ids,
            age_fill=self.age_fill,
            extra_seen=extra_seen,
            request_time=moved,
        )
        return scale_dense(unscaled, self.scaler_mean, self.scaler_std)

    def training_segments(self, users: np.ndarray) -> list[tuple[str, ...]]:
        """Each user row's segments at the training cut-off (``()`` for ``-1`` rows)."""
        if not self.user_segments:
            return [() for _ in range(len(users))]
        return [self.user_segments[u] if u >= 0 else () for u in np.asarray(users).tolist()]

    def encode_requests(
        self,
        contexts: Sequence[RequestContext],
        segments: Sequence[Sequence[str]] | None = None,
    ) -> RequestEncoding:
        """The request features' ids ``[R, F_request, L]`` of ``R`` requests
        (:func:`~recsys.runtime.request_features.encode_contexts`)."""
        return encode_contexts(
            self.request_features, contexts, segments, self.segment_vocab, self.seq_len
        )

    def sparse(
        self,
        users: np.ndarray,
        items: np.ndarray,
        user_ids: np.ndarray | None = None,
        request_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """The ranker's ``ids`` input ``[n, F, L]`` int64 (user rows + item rows).

        Args:
            users: user index per row.
            items: item index per row.
            user_ids: ``[n, F, L]`` user-side ids per row to use instead of the user
                table's (rows built from a real-time profile); item-side slots ignored.
            request_ids: ``[n, F_request, L]`` request-feature ids per row (e.g.
                :meth:`encode_requests` of the lists, taken per row); None: requests
                without a context.
        """
        out = np.full((len(users), len(self.sparse_names), self.seq_len), -1, dtype=np.int64)
        if user_ids is None and (np.asarray(users) < 0).any():
            raise ValueError("users without a row (-1) need their user_ids")
        # Only the slots a feature reads can hold ids: copy those, not whole [F, L] rows.
        for f, width in enumerate(self._widths):
            if self._user_feature[f] and user_ids is not None:
                # a profile's history may run past the widest training row
                out[:, f, :] = user_ids[:, f, :]
                continue
            source, rows = (
                (self.user_ids, users) if self._user_feature[f] else (self.item_ids, items)
            )
            out[:, f, :width] = source[rows, f, :width]
        n_request = len(self.request_features)
        if n_request:
            if request_ids is None:
                request_ids = encode_contexts(
                    self.request_features,
                    [RequestContext()],
                    segment_vocab=self.segment_vocab,
                    seq_len=self.seq_len,
                ).ids[np.zeros(len(users), dtype=np.int64)]
            if request_ids.shape != (len(users), n_request, self.seq_len):
                raise ValueError(
                    f"request ids must be [{len(users)}, {n_request}, {self.seq_len}], "
                    f"got {request_ids.shape}"
                )
            out[:, len(self.sparse_names) - n_request :, :] = request_ids
        return out

    def list_sparse(
        self,
        users: np.ndarray,
        items: np.ndarray,
        user_ids: np.ndarray | None = None,
        request_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sparse inputs of a ranker that scores candidate lists (:attr:`per_list`).

        Args:
            users: ``[U]`` user index of each list (``-1``: a user known only from a
                profile, whose ``user_ids`` row is given).
            items: ``[U, C]`` item index of each candidate, ``-1`` for an empty slot
                (its ids are all padding; its score is not used).
            user_ids: ``[U, F, L]`` user-side ids per list (from real-time profiles),
                as in :meth:`sparse`.
            request_ids: ``[U, F_request, L]`` request-feature ids per list.

        Returns:
            ``(ids [U, C, F_item, item_seq_len], list_ids [U, F_list, list_seq_len])``,
            int64.
        """
        if self._item_rows is None:
            raise ValueError("this ranker takes one row per pair (see sparse())")
        users = np.asarray(users, dtype=np.int64)
        rows = self.sparse(users, np.zeros(len(users), dtype=np.int64), user_ids, request_ids)
        list_ids = np.ascontiguousarray(rows[:, self._list_positions, : self.list_seq_len])
        items = np.asarray(items, dtype=np.int64)
        ids = self._item_rows[np.maximum(items, 0)]
        ids[items < 0] = -1
        return ids, list_ids

    # -- files ---------------------------------------------------------------------

    def save(self, folder: str | Path) -> list[Path]:
        """Writes ``ranker_features.npz`` and ``ranker_features.json`` into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {
            name: getattr(self, name)
            for name in (
                "scaler_mean",
                "scaler_std",
                "request_time",
                "user_offsets",
                "user_times",
                "item_offsets",
                "item_times",
                "item_count",
                "release_time",
                "seen_indptr",
                "seen_indices",
                "user_ids",
                "item_ids",
            )
        }
        arrays.update({f"item_item_{k}": v for k, v in self.item_item.items()})
        if self.profile is not None:
            arrays["profile_item_vocab"] = self.profile.item_vocab
        np.savez(out / ARRAYS_FILE, **arrays)
        meta = {
            "profile": None if self.profile is None else self.profile.to_json(),
            "dense_names": list(self.dense_names),
            "windows_days": list(self.windows_days),
            "affinity": list(self.affinity),
            "sparse_names": list(self.sparse_names),
            "user_keys": list(self.user_keys),
            "seq_len": int(self.seq_len),
            "age_fill": self.age_fill,
            "extra": self.extra,
            "request_features": [f.to_json() for f in self.request_features],
            "segment_vocab": dict(self.segment_vocab),
            "user_segments": [list(s) for s in self.user_segments],
            "dense_time": self.dense_time,
            "list_seq_len": int(self.list_seq_len),
            "item_seq_len": int(self.item_seq_len),
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return [out / ARRAYS_FILE, out / META_FILE]

    @classmethod
    def load(cls, folder: str | Path) -> RankerFeatures:
        """Reads what :meth:`save` wrote."""
        path = Path(folder)
        meta = json.loads((path / META_FILE).read_text())
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        item_item = {
            name: arrays.pop(f"item_item_{name}")
            for name in meta["affinity"]
            if f"item_item_{name}" in arrays
        }
        vocab = arrays.pop("profile_item_vocab", None)
        profile = None
        if meta.get("profile") is not None and vocab is not None:
            profile = ProfileEncoding.from_json(meta["profile"], vocab)
        return cls(
            profile=profile,
            dense_names=list(meta["dense_names"]),
            windows_days=tuple(int(d) for d in meta["windows_days"]),
            affinity=tuple(meta["affinity"]),
            sparse_names=list(meta["sparse_names"]),
            user_keys=list(meta["user_keys"]),
            seq_len=int(meta["seq_len"]),
            age_fill=meta.get("age_fill"),
            extra=dict(meta.get("extra", {})),
            request_features=[
                RequestFeature.from_json(f) for f in meta.get("request_features", [])
            ],
            segment_vocab={str(k): int(v) for k, v in meta.get("segment_vocab", {}).items()},
            user_segments=[tuple(s) for s in meta.get("user_segments", [])],
            dense_time=str(meta.get("dense_time", "training")),
            list_seq_len=int(meta.get("list_seq_len", 0)),
            item_seq_len=int(meta.get("item_seq_len", 0)),
            item_item=item_item,
            **arrays,
        )


def pad_rows(values: np.ndarray, offsets: np.ndarray, max_len: int, width: int) -> np.ndarray:
    """Jagged rows as a left-aligned ``[n, width]`` int64 array, ``-1`` padded.

    Each row keeps its LAST ``max_len`` ids (sequences are stored most recent last),
    as :func:`recsys.features.batching.to_padded` does.

    Args:
        values: all ids.
        offsets: ``[n + 1]`` row starts.
        max_len: ids kept per row (``<= width``).
        width: ``L`` of the output.
    """
    lengths = np.diff(offsets)
    kept = np.minimum(lengths, max_len)
    start = offsets[:-1] + (lengths - kept)
    out = np.full((len(lengths), width), -1, dtype=np.int64)
    pos = np.arange(width)[None, :]
    mask = pos < kept[:, None]
    src = (start[:, None] + pos)[mask]
    out[mask] = values[src]
    return out


def stack_padded(
    columns: Mapping[str, tuple[np.ndarray, np.ndarray]],
    feature_order: Sequence[str],
    max_len: Mapping[str, int],
    seq_len: int,
    n_rows: int,
) -> np.ndarray:
    """``[n, F, L]`` padded ids from per-feature jagged ``(values, offsets)``.

    Features missing from ``columns`` stay all ``-1`` (e.g. the other side's features).
    """
    out = np.full((n_rows, len(feature_order), seq_len), -1, dtype=np.int64)
    for f, name in enumerate(feature_order):
        if name in columns:
            values, offsets = columns[name]
            out[:, f, :] = pad_rows(values, offsets, int(max_len[name]), seq_len)
    return out
