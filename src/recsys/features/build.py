"""Turns interactions and a train/test split into feature tables.

The tables' columns are the ``source`` names of the feature schema
(``configs/schema/ml100k.yaml``):

* **users** (:func:`build_user_table` + :func:`user_features_at`): the user
  side table with ``age_bucket`` (MovieLens-1M's groups ``<18``, ``18-24``,
  ``25-34``, ``35-44``, ``45-49``, ``50-55``, ``56+``), plus each user's state
  at the end of training: ``recent_items`` (last ``max_len`` training items,
  most recent last) and the ``hour`` / ``weekday`` (UTC) of the last training
  interaction. This is the query-side input for evaluation and serving.
* **items** (:func:`build_item_table`): the item side table with
  ``year_bucket`` (5-year buckets such as ``1990-1994``, or ``unknown``) and
  ``popularity_bucket`` (decile 0..9 of *training* interaction counts).
* **examples** (:func:`build_examples`): one row per training interaction,
  with ``recent_items`` (the user's training items strictly before this one,
  most recent last, at most ``max_len``), ``hour`` and ``weekday`` (UTC).

Only the training split feeds any feature or vocabulary: test interactions are
stored untouched for evaluation and never read by the feature code.

Example:
    >>> from recsys.data.splits import stratified_split
    >>> train, test = stratified_split(data.interactions, 0.75, "item", 42)  # doctest: +SKIP
    >>> ds = build_features(data, (train, test), schema)  # doctest: +SKIP
    >>> ds.train.columns.tolist()[-3:]  # doctest: +SKIP
    ['recent_items', 'hour', 'weekday']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.frame import ITEM, TIMESTAMP, USER, InteractionData
from recsys.data.splits import Split
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.features.vocab import VocabularySet

AGE_BUCKETS: tuple[str, ...] = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
"""MovieLens-1M's age groups, by their ranges."""
_AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])  # lower bound of buckets 1..6
UNKNOWN = "unknown"

AGE_BUCKET = "age_bucket"
YEAR_BUCKET = "year_bucket"
POPULARITY_BUCKET = "popularity_bucket"
RECENT_ITEMS = "recent_items"
HOUR = "hour"
WEEKDAY = "weekday"


@dataclass(frozen=True)
class BuildConfig:
    """Settings of the feature build.

    Attributes:
        max_len: most recent training items kept in ``recent_items``.
        popularity_buckets: number of popularity buckets (10 = deciles).
        year_bucket_width: years per ``year_bucket``.
    """

    max_len: int = 50
    popularity_buckets: int = 10
    year_bucket_width: int = 5

    def __post_init__(self) -> None:
        if self.max_len < 1 or self.popularity_buckets < 1 or self.year_bucket_width < 1:
            raise ValueError(f"BuildConfig values must be positive: {self}")

    @classmethod
    def from_schema(cls, schema: FeatureSchema) -> BuildConfig:
        """Takes ``max_len`` and the bucket count from the schema's features.

        ``max_len`` is the largest ``max_len`` of the features whose source is
        ``recent_items``; the bucket count is the ``size`` of the feature whose
        source is ``popularity_bucket``. Defaults apply to what is absent.
        """
        lens = [f.max_len for f in schema if f.source == RECENT_ITEMS]
        sizes = [
            f.vocab.size
            for f in schema
            if f.source == POPULARITY_BUCKET and f.vocab and f.vocab.size
        ]
        default = cls()
        return cls(
            max_len=max(lens) if lens else default.max_len,
            popularity_buckets=sizes[0] if sizes else default.popularity_buckets,
        )


# -- column transforms -------------------------------------------------------------


def age_bucket(age: pd.Series) -> pd.Series:
    """MovieLens-1M age group of each age; missing or negative ages give ``unknown``.

    Example:
        >>> age_bucket(pd.Series([7, 18, 24, 25, 49, 50, 56, 73])).tolist()
        ['<18', '18-24', '18-24', '25-34', '45-49', '50-55', '56+', '56+']
    """
    years = pd.to_numeric(age, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    labels = np.asarray(AGE_BUCKETS, dtype=object)[np.searchsorted(_AGE_EDGES, years, "right")]
    with np.errstate(invalid="ignore"):
        labels[~(years >= 0)] = UNKNOWN
    return pd.Series(labels, index=age.index, dtype="str", name=AGE_BUCKET)


def year_bucket(year: pd.Series, width: int = 5) -> pd.Series:
    """``width``-year bucket of each year, e.g. 1993 -> ``1990-1994``; missing -> ``unknown``.

    Example:
        >>> year_bucket(pd.Series([1990, 1994, 1995, None], dtype="Int64")).tolist()
        ['1990-1994', '1990-1994', '1995-1999', 'unknown']
    """
    years = pd.to_numeric(year, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    start = np.floor(years / width) * width
    labels = np.full(len(years), UNKNOWN, dtype=object)
    known = np.isfinite(start)
    uniq, inverse = np.unique(start[known], return_inverse=True)
    names = np.asarray([f"{int(s)}-{int(s) + width - 1}" for s in uniq], dtype=object)
    labels[known] = names[inverse] if len(uniq) else labels[known]
    return pd.Series(labels, index=year.index, dtype="str", name=YEAR_BUCKET)


def popularity_bucket(items: pd.Series, train_items: pd.Series, n_buckets: int = 10) -> np.ndarray:
    """Popularity bucket of each catalogue item from its TRAINING interaction count.

    The bucket is ``floor(n_buckets * share of catalogue items with a strictly
    smaller count)``: items with equal counts share a bucket, items never seen
    in training are in bucket 0, and higher means more popular.

    Args:
        items: the catalogue's item ids (one per item).
        train_items: the item id of every training interaction.
        n_buckets: number of buckets (10 = deciles).

    Returns:
        int64 buckets in ``[0, n_buckets)``, aligned with ``items``.
    """
    counts = (
        items.map(train_items.value_counts()).fillna(0).to_numpy(dtype=np.int64)
        if len(items)
        else np.empty(0, dtype=np.int64)
    )
    smaller = np.searchsorted(np.sort(counts), counts, side="left")
    return (smaller * n_buckets) // max(len(counts), 1)


def _time_order(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(order, user_codes)``: rows sorted by user, then time, then row order."""
    codes, _ = pd.factorize(frame[USER], sort=False)
    order = np.lexsort((np.arange(len(frame)), _ns(frame[TIMESTAMP]), codes))
    return order, codes


def _utc(ts: pd.Series) -> pd.Series:
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(ts.dtype):
            return ts.dt.tz_localize("UTC")  # naive times are taken as UTC
        raise TypeError(f"column {TIMESTAMP!r} must be datetime64 (UTC), got {ts.dtype}")
    return ts.dt.tz_convert("UTC")


def _ns(ts: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) as int64."""
    return _utc(ts).dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)


def _hour_weekday(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC hour (0-23) and weekday (0 = Monday) of epoch nanoseconds."""
    seconds = ns // 1_000_000_000
    days = seconds // 86_400
    hour = (seconds % 86_400) // 3_600
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (3)
    return hour.astype(np.int64), weekday.astype(np.int64)


def _object_column(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding one array per row (never a 2-D array)."""
    return np.fromiter(arrays, dtype=object, count=len(arrays))


def _jagged_rows(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Rows ``values[starts[i]:starts[i] + lengths[i]]`` as copies in one gather."""
    ends = np.cumsum(lengths)
    flat = np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
    return np.split(values[flat], ends[:-1])


# -- tables ------------------------------------------------------------------------


def build_examples(train: pd.DataFrame, max_len: int = 50) -> pd.DataFrame:
    """One example row per training interaction, with sequence and time context.

    ``recent_items`` of a row holds the same user's training items that come
    strictly before it in (timestamp, row order), most recent last, at most
    ``max_len``: never the row's own interaction, never a later one. Rows with
    equal timestamps are ordered by their position in ``train`` (loaders keep
    file order, splits keep it too). ``hour`` (0-23) and ``weekday`` (0 =
    Monday) are read from the UTC timestamp.

    Args:
        train: training interactions (``user_id``, ``item_id``, ``timestamp``,
            any other columns are kept).
        max_len: longest history kept.

    Returns:
        ``train``'s columns (index reset, same row order) plus
        ``recent_items`` (object column of 1-D arrays of raw item ids),
        ``hour`` and ``weekday`` (int64).

    Example:
        >>> ex = build_examples(train, max_len=50)  # doctest: +SKIP
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    n = len(train)
    order, codes = _time_order(train)
    sorted_users = codes[order]
    pos = np.arange(n)
    first = np.r_[True, sorted_users[1:] != sorted_users[:-1]] if n else np.empty(0, dtype=bool)
    group_start = np.maximum.accumulate(np.where(first, pos, 0)) if n else pos
    lengths = np.minimum(pos - group_start, max_len)
    items_sorted = train[ITEM].to_numpy()[order]
    rows = _jagged_rows(items_sorted, pos - lengths, lengths) if n else []
    recent = np.empty(n, dtype=object)
    recent[order] = _object_column(rows)
    out = train.reset_index(drop=True).copy()
    out[RECENT_ITEMS] = recent
    out[HOUR], out[WEEKDAY] = _hour_weekday(_ns(out[TIMESTAMP]))
    return out


def build_user_table(users: pd.DataFrame) -> pd.DataFrame:
    """The user side table plus ``age_bucket`` (when it has an ``age`` column).

    Raises:
        ValueError: a user id appears twice.
    """
    if users[USER].duplicated().any():
        dup = users.loc[users[USER].duplicated(), USER].head(5).tolist()
        raise ValueError(f"user table has duplicate user ids, e.g. {dup}")
    out = users.reset_index(drop=True).copy()
    if "age" in out.columns:
        out[AGE_BUCKET] = age_bucket(out["age"])
    return out


def build_item_table(
    items: pd.DataFrame | None, train: pd.DataFrame, config: BuildConfig | None = None
) -> pd.DataFrame:
    """The item side table plus ``year_bucket`` and ``popularity_bucket``.

    The catalogue is ``items`` (every listed item, trained on or not) plus any
    training item it lacks; without ``items`` it is the training items. The
    popularity buckets use training interactions only.

    Args:
        items: the item side table (``item_id``, optional ``year``, ``genres``).
        train: training interactions.
        config: bucket settings.

    Returns:
        One row per catalogue item.

    Raises:
        ValueError: an item id appears twice in ``items``.
    """
    config = config or BuildConfig()
    if items is None:
        out = pd.DataFrame({ITEM: pd.unique(train[ITEM])})
    else:
        if items[ITEM].duplicated().any():
            dup = items.loc[items[ITEM].duplicated(), ITEM].head(5).tolist()
            raise ValueError(f"item table has duplicate item ids, e.g. {dup}")
        out = items.reset_index(drop=True).copy()
        missing = pd.unique(train.loc[~train[ITEM].isin(out[ITEM]), ITEM])
        if len(missing):
            out = pd.concat([out, pd.DataFrame({ITEM: missing})], ignore_index=True)
    if "year" in out.columns:
        out[YEAR_BUCKET] = year_bucket(out["year"], config.year_bucket_width)
    out[POPULARITY_BUCKET] = popularity_bucket(out[ITEM], train[ITEM], config.popularity_buckets)
    return out


def user_features_at(
    train: pd.DataFrame,
    users: pd.DataFrame | None = None,
    *,
    max_len: int = 50,
    as_of: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """Each user's state from training interactions: the query side for evaluation.

    ``recent_items`` holds the user's last ``max_len`` training items (most
    recent last; ties in time by row order), ``hour`` / ``weekday`` (UTC) come
    from the user's last training interaction. With ``as_of`` only training
    interactions strictly before it count. A user with no such interaction gets
    empty ``recent_items`` and the hour/weekday of ``as_of`` (or, without
    ``as_of``, of the last training interaction overall).

    Args:
        train: training interactions.
        users: the user table (one row per user); its columns are kept, and
            training users missing from it are appended. None: the training users.
        max_len: longest history kept.
        as_of: cut-off time (UTC if naive); None = the end of training.

    Returns:
        One row per user: ``users``' columns plus ``recent_items``, ``hour``,
        ``weekday``.

    Example:
        >>> state = user_features_at(train, users, max_len=50)  # doctest: +SKIP
    """
    cut: pd.Timestamp | None = None
    if as_of is not None:
        cut = pd.Timestamp(as_of)
        cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
        train = train[_ns(train[TIMESTAMP]) < cut.as_unit("ns").value]
    if users is None:
        out = pd.DataFrame({USER: pd.unique(train[USER])})
    else:
        out = users.reset_index(drop=True).copy()
        if out[USER].duplicated().any():
            raise ValueError("user table has duplicate user ids")
        extra = pd.unique(train.loc[~train[USER].isin(out[USER]), USER])
        if len(extra):
            out = pd.concat([out, pd.DataFrame({USER: extra})], ignore_index=True)
    n = len(train)
    if cut is not None:
        fallback_ns = cut.as_unit("ns").value
    elif n:
        fallback_ns = int(_ns(train[TIMESTAMP]).max())
    else:
        raise ValueError("user_features_at: no training interactions and no as_of time")

    order, codes = _time_order(train)
    sorted_codes = codes[order]
    last = np.r_[sorted_codes[1:] != sorted_codes[:-1], True] if n else np.empty(0, dtype=bool)
    ends = np.flatnonzero(last) + 1  # exclusive end of each user's run in sorted order
    starts = np.r_[0, ends[:-1]]
    lengths = np.minimum(ends - starts, max_len)
    items_sorted = train[ITEM].to_numpy()[order]
    histories = [*_jagged_rows(items_sorted, ends - lengths, lengths)] if len(ends) else []
    run_users = train[USER].to_numpy()[order][ends - 1]
    run_last_ns = _ns(train[TIMESTAMP])[order][ends - 1]

    # One shared empty array for users without history; the last slot of the lookup.
    histories.append(train[ITEM].to_numpy()[:0])
    row_of = pd.Index(run_users).get_indexer(out[USER].to_numpy())
    row_of[row_of < 0] = len(ends)
    out[RECENT_ITEMS] = _object_column(histories)[row_of]
    out[HOUR], out[WEEKDAY] = _hour_weekday(np.r_[run_last_ns, fallback_ns][row_of])
    return out


def join_features(
    rows: pd.DataFrame, users: pd.DataFrame | None, items: pd.DataFrame | None
) -> pd.DataFrame:
    """Adds user and item table columns to interaction rows (left joins).

    Columns already in ``rows`` win: training examples keep their own
    ``recent_items`` / ``hour`` / ``weekday`` rather than the end-of-training
    state in the user table, while test rows take that state.

    Args:
        rows: rows with ``user_id`` and/or ``item_id``.
        users: the user table, or None.
        items: the item table, or None.

    Returns:
        ``rows`` (same order, index reset) with the extra columns; unknown users
        or items get missing values (which encode to the OOV row).
    """
    out = rows.reset_index(drop=True)
    for table, key in ((users, USER), (items, ITEM)):
        if table is None or key not in out.columns:
            continue
        cols = [c for c in table.columns if c != key and c not in out.columns]
        if not cols:
            continue
        out = out.merge(table[[key, *cols]], on=key, how="left", validate="many_to_one")
    return out


def build_features(
    data: InteractionData,
    split: Split | tuple[pd.DataFrame, pd.DataFrame],
    schema: FeatureSchema,
    *,
    config: BuildConfig | None = None,
    source_sha256: str = "",
) -> ProcessedDataset:
    """Builds every feature table and fits the vocabularies on training data only.

    Args:
        data: the loaded dataset (its ``users`` and ``items`` side tables are
            used; its interactions are not: the split decides what is train).
        split: a :class:`~recsys.data.splits.Split` or ``(train, test)``.
        schema: the feature schema (vocabulary policies, ``max_len``).
        config: build settings; default :meth:`BuildConfig.from_schema`.
        source_sha256: provenance recorded in the vocabularies and manifest.

    Returns:
        A :class:`~recsys.features.store.ProcessedDataset` whose ``train`` is
        :func:`build_examples`, ``users`` the user table with the
        end-of-training state, ``items`` the item table, ``test`` / ``valid``
        the held-out interactions unchanged (index reset).
    """
    config = config or BuildConfig.from_schema(schema)
    if isinstance(split, tuple):
        train, test = split
        valid = None
    else:
        train, test, valid = split.train, split.test, split.valid
    examples = build_examples(train, config.max_len)
    user_table = build_user_table(data.users) if data.users is not None else None
    users = user_features_at(train, user_table, max_len=config.max_len)
    items = build_item_table(data.items, train, config)
    vocabs = VocabularySet.fit(schema, [examples, users, items], source_sha256=source_sha256)
    manifest: dict[str, Any] = {
        "dataset": data.name,
        "schema": schema.name,
        "build_config": asdict(config),
        "source_sha256": source_sha256,
        "rows": {
            "train": len(train),
            "test": len(test),
            "valid": len(valid) if valid is not None else 0,
        },
    }
    return ProcessedDataset(
        train=examples,
        test=test.reset_index(drop=True),
        users=users,
        items=items,
        vocabs=vocabs,
        valid=valid.reset_index(drop=True) if valid is not None else None,
        manifest=manifest,
    )
