"""The ranker's dense features: their one implementation, in numpy (Python 3.10).

Offline, :mod:`recsys.recommend.ranker_data` computes the DLRM ranker's dense
features for its training examples and for offline recommendations; at request time,
:mod:`recsys.runtime.ranker_features` computes them inside Triton's python backend.
Both call the functions of this module, so every feature is written once:

=============================  ==========================================================
feature                        function
=============================  ==========================================================
column order                   :func:`dense_feature_names`
``retrieval_score``,           :func:`retrieval_features`
``retrieval_log_rank``
``user_count_{d}d``,           :func:`window_log_counts` (a :class:`~recsys.runtime.
``item_count_{d}d``            windows.WindowCounter` over the training times)
``user_log_count``,            :func:`log_counts`
``item_log_count``
``item_age_years``             :func:`item_age_years`, then :func:`fill_unknown_age`
``affinity_{knn,ease}``        :func:`affinity_pairs` (:func:`affinity_rows` for whole
                               rows; :func:`add_extra_affinity` for real-time items)
``*_z``                        :func:`list_zscore` (:func:`list_mean_std`) via
                               :func:`add_zscores`
scaling                        :func:`scale_dense`
=============================  ==========================================================

:class:`DenseFeatures` holds the training-split statistics (the arrays the bundle
exports in ``ranker_features.npz``) and assembles the features from those functions.
Where the two paths differ on purpose, the difference is a parameter:

* z-scores: the statistics of each list come from the rows in ``list_mask`` and are
  applied to every row of the list (offline: the candidate rows of each user's list,
  applied to its missed positives and easy negatives too; serving: every row);
* the unknown-age fill: the median known age over the rows of the call when
  ``age_lists`` is None (offline), over each list's rows otherwise (serving), or a
  fixed ``age_fill``;
* the affinity's summation (``affinity_method``): per user over its training items'
  rows (``gather``: serving, and its precomputed ``[U, I]`` table), or as 0/1 user rows
  times the item-item matrix (``matmul``: offline, BLAS over hundreds of thousands of
  training rows); the same sums, added in another order (float32 noise, ~1e-7
  relative).

User index ``-1`` is a user without training interactions (serving: a user known only
from the real-time profile): no activity, no affinities, request time = the end of
training, the values of a cold user of the training split.

Request time. By default every row is taken at its user's request time (the user's last
training interaction). ``request_time`` (per row, seconds; NaN = that default) moves the
time-dependent features of a row to the given time: the user's activity in the last ``d``
days, the item's interactions in the last ``d`` days and the item's age (offline: the
time of the example's request; serving: the request context's time).

Example:
    >>> import numpy as np
    >>> dense_feature_names((1, 7), ("knn",), raw_retrieval_score=False)[:4]
    ['retrieval_score_z', 'retrieval_log_rank', 'user_count_1d', 'user_count_7d']
    >>> list_zscore(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 1]), 2).tolist()
    [-1.0, 1.0, 0.0]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from recsys.runtime.windows import WindowCounter

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_YEAR = 365.25 * SECONDS_PER_DAY
AFFINITIES: tuple[str, ...] = ("knn", "ease")
Z_SOURCES: tuple[str, ...] = ("retrieval_score", *(f"affinity_{a}" for a in AFFINITIES))
"""Raw features that also enter z-scored over each user's candidate list."""

AffinityMethod = Literal["gather", "matmul"]
"""How an affinity sum runs: per user over its training items' rows (``gather``) or as
0/1 user rows times the item-item matrix (``matmul``); see :func:`affinity_pairs`."""
AFFINITY_METHODS: tuple[str, ...] = ("gather", "matmul")


def dense_feature_names(
    windows_days: Sequence[int], affinity: Sequence[str], raw_retrieval_score: bool
) -> list[str]:
    """The ranker's dense features, in column order.

    Args:
        windows_days: windows of the activity and popularity counts.
        affinity: item-item affinity kinds, a subset of ``("knn", "ease")``.
        raw_retrieval_score: also the unstandardized retrieval score (first column).
    """
    names = ["retrieval_score"] if raw_retrieval_score else []
    names += ["retrieval_score_z", "retrieval_log_rank"]
    names += [f"user_count_{d}d" for d in windows_days] + ["user_log_count"]
    names += ["item_log_count"] + [f"item_count_{d}d" for d in windows_days]
    names += ["item_age_years"]
    for name in affinity:
        names += [f"affinity_{name}", f"affinity_{name}_z"]
    return names


# -- one feature each ---------------------------------------------------------------


def retrieval_features(
    retrieval_score: np.ndarray, retrieval_rank: np.ndarray
) -> dict[str, np.ndarray]:
    """``retrieval_score`` (float64) and ``retrieval_log_rank = log(1 + rank)``.

    Args:
        retrieval_score: the retrieval model's score per row.
        retrieval_rank: 0-based rank in the row's retrieval list (N when the item was
            not retrieved).
    """
    return {
        "retrieval_score": np.asarray(retrieval_score).astype(np.float64),
        "retrieval_log_rank": np.log1p(np.asarray(retrieval_rank).astype(np.float64)),
    }


def log_counts(counts: np.ndarray) -> np.ndarray:
    """``log(1 + count)`` in float64 (``user_log_count``, ``item_log_count``)."""
    return np.log1p(np.asarray(counts).astype(np.float64))


def window_log_counts(
    counter: WindowCounter,
    groups: np.ndarray,
    request_time: np.ndarray,
    windows_days: Sequence[int],
) -> dict[int, np.ndarray]:
    """Per window ``d``: ``log(1 + events of the group in (t - d days, t])``.

    Args:
        counter: the training interaction times of each user (or item).
        groups: user (or item) per row.
        request_time: the request time ``t`` per row (seconds).
        windows_days: the windows, in days.

    Returns:
        window -> float64 ``[n]``.
    """
    req = np.asarray(request_time, dtype=np.float64)
    return {
        d: np.log1p(counter.count(groups, req - d * SECONDS_PER_DAY, req).astype(np.float64))
        for d in windows_days
    }


def item_age_years(request_time: np.ndarray, release_time: np.ndarray) -> np.ndarray:
    """Years between an item's release and the request time, elementwise (NaN unknown)."""
    return (np.asarray(request_time) - np.asarray(release_time)) / SECONDS_PER_YEAR


def fill_unknown_age(
    age: np.ndarray, age_lists: np.ndarray | None = None, age_fill: float | None = None
) -> np.ndarray:
    """Ages with the unknown (non-finite) ones filled with a neutral value.

    Args:
        age: ``[n]`` item ages in years, NaN where the release is unknown.
        age_lists: list of each row: an unknown age takes the median known age of its
            list (0 when the list has none). None: the median known age over all ``n``
            rows (the offline rule: the rows of one ``dense_matrix`` call).
        age_fill: a fixed fill; overrides both medians when set.
    """
    known = np.isfinite(age)
    if known.all():
        return age
    if age_fill is not None:
        return np.where(known, age, float(age_fill))
    if age_lists is None:
        fill = float(np.median(age[known])) if known.any() else 0.0
        return np.where(known, age, fill)
    out = age.copy()
    for group in np.unique(age_lists[~known]):
        mine = age_lists == group
        have = mine & known
        out[mine & ~known] = float(np.median(age[have])) if have.any() else 0.0
    return out


def training_items(seen_indptr: np.ndarray, seen_indices: np.ndarray, user: int) -> np.ndarray:
    """The item indices of CSR row ``user`` (``-1`` entries dropped); empty for ``-1``."""
    if user < 0:
        return np.zeros(0, dtype=np.int64)
    seen = seen_indices[seen_indptr[user] : seen_indptr[user + 1]]
    return seen[seen >= 0]


def _check_method(method: str) -> None:
    if method not in AFFINITY_METHODS:
        raise ValueError(f"unknown affinity method {method!r}; known: {list(AFFINITY_METHODS)}")


def affinity_rows(
    matrix: np.ndarray,
    seen_indptr: np.ndarray,
    seen_indices: np.ndarray,
    users: np.ndarray,
    method: AffinityMethod = "gather",
    chunk: int = 256,
) -> np.ndarray:
    """Each user's affinity to every item ``[len(users), I]`` float32.

    Row ``u`` is the sum of the rows ``matrix[j]`` over the user's training items
    ``j``; ``-1`` users get zeros.

    Args:
        matrix: ``[I, I]`` item-item weights.
        seen_indptr: ``[U + 1]`` CSR rows of the users' training items.
        seen_indices: their item indices (``-1`` entries are ignored).
        users: which users.
        method: ``gather``: per user, the sum of its training items' rows (the work
            is the user's item count times ``I``); ``matmul``: the users' 0/1 item rows
            times ``matrix``, ``chunk`` users per product (BLAS: more arithmetic, but
            fast where threads are free). The same sums, added in another order.
        chunk: users per product of ``matmul``.
    """
    _check_method(method)
    users = np.asarray(users, dtype=np.int64)
    out = np.zeros((len(users), matrix.shape[1]), dtype=np.float32)
    if method == "gather":
        for row, user in enumerate(users.tolist()):
            seen = training_items(seen_indptr, seen_indices, user)
            if len(seen):
                out[row] = matrix[seen].sum(axis=0, dtype=np.float32)
        return out
    for lo in range(0, len(users), chunk):
        block = users[lo : lo + chunk]
        real = np.flatnonzero(block >= 0)
        if not len(real):
            continue
        b = block[real]
        starts, lengths = seen_indptr[b], seen_indptr[b + 1] - seen_indptr[b]
        row_of = np.repeat(np.arange(len(b)), lengths)
        first = np.cumsum(lengths) - lengths
        col = seen_indices[np.arange(lengths.sum()) - np.repeat(first - starts, lengths)]
        keep = col >= 0
        onehot = np.zeros((len(b), matrix.shape[0]), dtype=np.float32)
        onehot[row_of[keep], col[keep]] = 1.0
        out[lo + real] = onehot @ matrix
    return out


def affinity_pairs(
    matrix: np.ndarray,
    seen_indptr: np.ndarray,
    seen_indices: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    method: AffinityMethod = "gather",
    chunk: int = 256,
) -> np.ndarray:
    """Sum over each row's user's training items ``j`` of ``matrix[j, item]`` (float32).

    Args:
        matrix: ``[I, I]`` item-item weights.
        seen_indptr: ``[U + 1]`` CSR rows of the users' training items.
        seen_indices: their item indices (``-1`` entries are ignored).
        users: user per row (``-1``: no training items, affinity 0).
        items: item per row.
        method: ``gather``: per user, its training items' rows at its rows' columns
            (serving's path without a precomputed table); ``matmul``: whole user rows
            by :func:`affinity_rows` (``chunk`` users per matrix product), then the
            rows' entries (the offline path). The same sums, added in another order
            (float32: ~1e-7 relative).
        chunk: users per matrix product of ``matmul``.
    """
    _check_method(method)
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    out = np.zeros(len(users), dtype=np.float32)
    if len(users) == 0:
        return out
    if method == "matmul":
        uniq, inverse = np.unique(users, return_inverse=True)
        inverse = inverse.reshape(-1)
        for lo in range(0, len(uniq), chunk):
            block = uniq[lo : lo + chunk]
            scores = affinity_rows(matrix, seen_indptr, seen_indices, block, "matmul", chunk)
            mine = (inverse >= lo) & (inverse < lo + len(block))
            out[mine] = scores[inverse[mine] - lo, items[mine]]
        return out
    # Rows grouped by user: gather the user's training rows once at the rows' columns.
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    bounds = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1], True])
    for start, stop in itertools.pairwise(bounds):
        user = int(sorted_users[start])
        seen = training_items(seen_indptr, seen_indices, user)
        if len(seen):
            rows = order[start:stop]
            out[rows] = matrix[np.ix_(seen, items[rows])].sum(axis=0, dtype=np.float32)
    return out


def add_extra_affinity(
    out: np.ndarray,
    matrix: np.ndarray,
    items: np.ndarray,
    list_ids: np.ndarray,
    extra_seen: Sequence[np.ndarray | None],
) -> np.ndarray:
    """Adds, in place, each list's ``extra_seen`` items to the affinities ``out``.

    ``extra_seen[g]`` are items list ``g``'s user consumed since training (from a
    real-time profile, not among the training items), summed as if they were training
    items. Returns ``out``.
    """
    for group, extra in enumerate(extra_seen):
        if extra is not None and len(extra):
            rows = np.flatnonzero(list_ids == group)
            out[rows] += matrix[np.ix_(extra, items[rows])].sum(axis=0, dtype=np.float32)
    return out


def list_mean_std(
    values: np.ndarray,
    list_ids: np.ndarray,
    n_lists: int,
    list_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per list: mean and population standard deviation of ``values``.

    Args:
        values: float64 ``[n]``.
        list_ids: ``[n]`` list of each value, in ``0..n_lists-1``.
        n_lists: number of lists.
        list_mask: rows that enter the statistics (default: all).

    Returns:
        ``(mean, std)`` ``[n_lists]``: mean 0 for a list without rows, std 1 where it
        is ~0 (or undefined).
    """
    ids, v = list_ids, values
    if list_mask is not None:
        ids, v = list_ids[list_mask], values[list_mask]
    count = np.bincount(ids, minlength=n_lists).astype(np.float64)
    safe = np.maximum(count, 1.0)
    mean = np.bincount(ids, weights=v, minlength=n_lists) / safe
    var = np.bincount(ids, weights=(v - mean[ids]) ** 2, minlength=n_lists) / safe
    std = np.sqrt(var)
    return mean, np.where(std > 1e-9, std, 1.0)


def list_zscore(
    values: np.ndarray,
    list_ids: np.ndarray,
    n_lists: int,
    list_mask: np.ndarray | None = None,
) -> np.ndarray:
    """``values`` standardized within each list (population std; 1 where it is ~0).

    The statistics come from the rows in ``list_mask`` (default: all) and apply to
    every row of the list (offline, a user's missed positives and easy negatives are
    standardized with the statistics of the user's retrieval candidates).

    Args:
        values: float64 ``[n]``.
        list_ids: ``[n]`` list of each value, in ``0..n_lists-1``.
        n_lists: number of lists.
        list_mask: rows that enter the statistics.
    """
    mean, std = list_mean_std(values, list_ids, n_lists, list_mask)
    return (values - mean[list_ids]) / std[list_ids]


def add_zscores(
    raw: dict[str, np.ndarray],
    list_ids: np.ndarray,
    n_lists: int,
    list_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Adds ``{name}_z`` (:func:`list_zscore`) for every :data:`Z_SOURCES` in ``raw``."""
    for name in Z_SOURCES:
        if name in raw:
            raw[f"{name}_z"] = list_zscore(raw[name], list_ids, n_lists, list_mask)
    return raw


def stack_dense(raw: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The unscaled dense matrix ``[n, len(names)]`` float32, columns in ``names`` order."""
    return np.stack([raw[n] for n in names], axis=1).astype(np.float32)


def scale_dense(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per column (the training examples' statistics), float32."""
    return ((x - mean) / std).astype(np.float32)


# -- the features of (user, item) rows -----------------------------------------------


class DenseFeatures:
    """The ranker's dense features from one training split's statistics.

    Index space: user ``u`` and item ``i`` are rows of the training run's user and item
    tables; user ``-1`` has no training interactions (see the module docstring).

    Args:
        names: the dense features, in the ranker's column order
            (:func:`dense_feature_names`).
        windows_days: windows of the activity and popularity counts.
        affinity: item-item affinity kinds present.
        request_time: ``[U]`` seconds since the epoch (the user's last training
            interaction; the end of training for a user without one).
        user_offsets: ``[U + 1]`` runs of ``user_times``.
        user_times: training interaction times sorted by (user, time).
        item_offsets: ``[I + 1]`` runs of ``item_times``.
        item_times: training interaction times sorted by (item, time).
        item_count: ``[I]`` training interactions per item.
        release_time: ``[I]`` release time in seconds (NaN unknown).
        seen_indptr: ``[U + 1]`` CSR rows of the users' training items.
        seen_indices: item indices of those rows (``-1`` entries ignored).
        item_item: affinity kind -> ``[I, I]`` float32 matrix.
        affinity_cache_entries: precompute every user's affinity to every item
            (:func:`affinity_rows`, ``gather``) when ``U * I`` is at most this (0:
            never).
    """

    def __init__(
        self,
        names: Sequence[str],
        windows_days: Sequence[int],
        affinity: Sequence[str],
        request_time: np.ndarray,
        user_offsets: np.ndarray,
        user_times: np.ndarray,
        item_offsets: np.ndarray,
        item_times: np.ndarray,
        item_count: np.ndarray,
        release_time: np.ndarray,
        seen_indptr: np.ndarray,
        seen_indices: np.ndarray,
        item_item: Mapping[str, np.ndarray],
        affinity_cache_entries: int = 0,
    ) -> None:
        self.names = list(names)
        self.windows_days = tuple(int(d) for d in windows_days)
        self.affinity = tuple(affinity)
        self.release_time = np.asarray(release_time, dtype=np.float64)
        self.seen_indptr = np.asarray(seen_indptr, dtype=np.int64)
        self.seen_indices = np.asarray(seen_indices, dtype=np.int64)
        self.item_item = dict(item_item)
        request_time = np.asarray(request_time, dtype=np.float64)
        self.n_users, self.n_items = len(request_time), len(item_count)
        longest = max(self.windows_days, default=0) * SECONDS_PER_DAY
        self.item_counter = WindowCounter(item_offsets, item_times, longest)
        # A user's window counts depend on the user only (the request time is the
        # user's last training interaction): computed once for every user, plus one
        # more row at index n_users for a user without training interactions (-1).
        users = np.arange(self.n_users)
        user_counter = WindowCounter(user_offsets, user_times, longest)
        self.user_counter = user_counter
        user_windows = window_log_counts(user_counter, users, request_time, self.windows_days)
        cold_time = float(request_time.max()) if self.n_users else 0.0
        self.request_time = np.r_[request_time, cold_time]
        self.user_window_log = {d: np.r_[v, 0.0] for d, v in user_windows.items()}
        self.user_log_count = np.r_[log_counts(np.diff(np.asarray(user_offsets))), 0.0]
        self.item_log_count = log_counts(item_count)
        self.affinity_cache: dict[str, np.ndarray] = {}
        if self.affinity and self.n_users * self.n_items <= affinity_cache_entries:
            for name in self.affinity:
                self.affinity_cache[name] = affinity_rows(
                    self.item_item[name], self.seen_indptr, self.seen_indices, users
                )

    def user_rows(self, users: np.ndarray) -> np.ndarray:
        """Row of each user in the per-user tables (``-1`` -> the cold row ``U``)."""
        users = np.asarray(users, dtype=np.int64)
        return np.where(users < 0, self.n_users, users)

    def item_age_years(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Years between each item's release and its user's request time (NaN unknown);
        any shape (``users`` and ``items`` broadcast)."""
        return item_age_years(
            self.request_time[self.user_rows(users)], self.release_time[np.asarray(items)]
        )

    def affinity_scores(
        self,
        name: str,
        users: np.ndarray,
        items: np.ndarray,
        extra_seen: Sequence[np.ndarray | None] | None = None,
        list_ids: np.ndarray | None = None,
        method: AffinityMethod | None = None,
    ) -> np.ndarray:
        """Affinity ``name`` of each row (float32): :func:`affinity_pairs`, plus
        :func:`add_extra_affinity` with ``extra_seen`` (per list; needs ``list_ids``).

        ``method`` None reads the precomputed table when there is one, else gathers.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        cached = self.affinity_cache.get(name) if method is None else None
        if cached is not None:
            known = users >= 0
            out = np.zeros(len(users), dtype=np.float32)
            out[known] = cached[users[known], items[known]]
        else:
            out = affinity_pairs(
                self.item_item[name],
                self.seen_indptr,
                self.seen_indices,
                users,
                items,
                method or "gather",
            )
        if extra_seen is not None:
            if list_ids is None:
                raise ValueError("extra_seen needs list_ids")
            add_extra_affinity(out, self.item_item[name], items, list_ids, extra_seen)
        return out

    def raw(
        self,
        users: np.ndarray,
        items: np.ndarray,
        retrieval_score: np.ndarray,
        retrieval_rank: np.ndarray,
        age_lists: np.ndarray | None = None,
        age_fill: float | None = None,
        extra_seen: Sequence[np.ndarray | None] | None = None,
        list_ids: np.ndarray | None = None,
        affinity_method: AffinityMethod | None = None,
        request_time: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Every dense feature except the within-list z-scores, by name (float64).

        Args:
            users: user index per row (``-1``: no training interactions).
            items: item index per row.
            retrieval_score: retrieval score per row.
            retrieval_rank: 0-based rank in the user's retrieval list.
            age_lists, age_fill: the unknown-age rule (:func:`fill_unknown_age`).
            extra_seen: per list, items consumed since training that the affinities
                also sum over (needs ``list_ids``).
            list_ids: candidate list of each row (for ``extra_seen``).
            affinity_method: see :meth:`affinity_scores`.
            request_time: per row, the time the window counts and the item age are
                taken at (seconds; NaN: the user's request time); None: every row at
                its user's.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        ext = self.user_rows(users)
        req = self.request_time[ext]
        moved = np.zeros(len(users), dtype=bool)
        if request_time is not None:
            given = np.asarray(request_time, dtype=np.float64).reshape(-1)
            if len(given) != len(users):
                raise ValueError(f"{len(given)} request times for {len(users)} rows")
            moved = np.isfinite(given)
            req = np.where(moved, given, req)
        # a cold user (-1) has no training activity at any time
        recount = moved & (users >= 0)
        out = retrieval_features(retrieval_score, retrieval_rank)
        if recount.any():
            counts = window_log_counts(
                self.user_counter, users[recount], req[recount], self.windows_days
            )
        for d in self.windows_days:
            out[f"user_count_{d}d"] = self.user_window_log[d][ext]
            if recount.any():
                out[f"user_count_{d}d"] = out[f"user_count_{d}d"].copy()
                out[f"user_count_{d}d"][recount] = counts[d]
        out["user_log_count"] = self.user_log_count[ext]
        out["item_log_count"] = self.item_log_count[items]
        windows = window_log_counts(self.item_counter, items, req, self.windows_days)
        for d in self.windows_days:
            out[f"item_count_{d}d"] = windows[d]
        age = item_age_years(req, self.release_time[items])
        out["item_age_years"] = fill_unknown_age(age, age_lists, age_fill)
        for name in self.affinity:
            out[f"affinity_{name}"] = self.affinity_scores(
                name, users, items, extra_seen, list_ids, affinity_method
            ).astype(np.float64)
        return out

    def unscaled(
        self,
        users: np.ndarray,
        items: np.ndarray,
        retrieval_score: np.ndarray,
        retrieval_rank: np.ndarray,
        list_ids: np.ndarray,
        n_lists: int,
        list_mask: np.ndarray | None = None,
        age_lists: np.ndarray | None = None,
        age_fill: float | None = None,
        extra_seen: Sequence[np.ndarray | None] | None = None,
        affinity_method: AffinityMethod | None = None,
        request_time: np.ndarray | None = None,
    ) -> np.ndarray:
        """The dense features ``[n, len(names)]`` float32 before scaling.

        Args:
            users, items, retrieval_score, retrieval_rank: as in :meth:`raw`.
            list_ids: list of each row for the z-scores (offline: the user; serving:
                the request's candidate list), in ``0..n_lists-1``.
            n_lists: number of lists.
            list_mask: rows whose values make each list's z-score statistics
                (default: all); the z-scores apply to every row.
            age_lists, age_fill: the unknown-age rule (:func:`fill_unknown_age`).
            extra_seen: per list, items consumed since training (affinities).
            affinity_method: see :meth:`affinity_scores`.
            request_time: per row, the time of the time-dependent features (see
                :meth:`raw`).
        """
        raw = self.raw(
            users,
            items,
            retrieval_score,
            retrieval_rank,
            age_lists,
            age_fill,
            extra_seen,
            list_ids,
            affinity_method,
            request_time,
        )
        add_zscores(raw, np.asarray(list_ids, dtype=np.int64), n_lists, list_mask)
        return stack_dense(raw, self.names)
