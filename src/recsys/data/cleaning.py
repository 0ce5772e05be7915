"""Cleansing of loaded interaction data: pure functions, each reporting what it did.

Every step takes a frame (or an :class:`~recsys.data.frame.InteractionData`) and
returns a new one plus a :class:`StepReport` counting the rows it removed and
the values it changed, so nothing disappears silently. :func:`clean` runs the
steps in a fixed order from one :class:`CleaningConfig`:

1. :func:`drop_exact_duplicates` - rows identical in every column;
2. :func:`handle_missing` - rows without user, item or timestamp; missing ratings;
3. :func:`normalize` - timestamps to UTC, ids and categorical strings standardized;
4. :func:`to_implicit` - keep ratings at or above a threshold as 1.0;
5. :func:`k_core` - repeatedly drop users and items with too few interactions.

Side tables (``users``, ``items``) are normalized but never filtered: a model
may still need metadata of items that lost their interactions.

Example:
    >>> data = load_ml100k("/data/ml-100k")  # doctest: +SKIP
    >>> config = CleaningConfig(implicit_threshold=4, user_k=5)
    >>> cleaned, report = clean(data, config)  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.frame import EVENT_TYPE, ITEM, RATING, TIMESTAMP, USER, InteractionData
from recsys.data.missing import MISSING_TOKENS, missing_mask
from recsys.data.timestamps import parse_timestamps


@dataclass
class StepReport:
    """What one cleaning step did.

    Attributes:
        step: the step's name.
        rows_in: interaction rows before the step.
        rows_out: interaction rows after the step.
        removed: rows removed per reason (each row counted once).
        changed: values changed or filled per kind (rows are kept).
        details: step-specific facts, e.g. ``{"rounds": 3}`` for :func:`k_core`.
    """

    step: str
    rows_in: int
    rows_out: int
    removed: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_removed(self) -> int:
        return self.rows_in - self.rows_out

    def summary(self) -> str:
        """One line: step, rows in -> out, and every non-zero count."""
        if "off" in self.details:
            return f"{self.step}: off ({self.details['off']}), {self.rows_out:,} rows"
        text = f"{self.step}: {self.rows_in:,} -> {self.rows_out:,} rows"
        removed = {k: v for k, v in self.removed.items() if v}
        changed = {k: v for k, v in self.changed.items() if v}
        if removed:
            text += "; removed " + ", ".join(f"{v:,} {k}" for k, v in removed.items())
        if changed:
            text += "; changed " + ", ".join(f"{v:,} {k}" for k, v in changed.items())
        if self.details:
            text += "; " + ", ".join(f"{k}={v}" for k, v in self.details.items())
        return text


@dataclass
class CleaningReport:
    """The reports of every step :func:`clean` ran, in order.

    Attributes:
        steps: one :class:`StepReport` per step run.
    """

    steps: list[StepReport] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return self.steps[0].rows_in if self.steps else 0

    @property
    def rows_out(self) -> int:
        return self.steps[-1].rows_out if self.steps else 0

    def step(self, name: str) -> StepReport:
        """The report of the step called ``name``."""
        for report in self.steps:
            if report.step == name:
                return report
        raise KeyError(f"no step {name!r}; ran {[s.step for s in self.steps]}")

    def summary(self) -> str:
        """One line per step."""
        return "\n".join(s.summary() for s in self.steps)


@dataclass(frozen=True)
class CleaningConfig:
    """Settings of :func:`clean`; the defaults change nothing that is valid.

    Attributes:
        drop_duplicates (bool): remove interaction rows identical in every column.
        drop_missing (bool): remove rows without ``user_id``, ``item_id`` or
            ``timestamp`` and fill missing ratings.
        default_rating (float | None): value for a missing ``rating``; None
            removes such rows instead.
        normalize (bool): convert timestamps to UTC, strip string ids and
            standardize categorical strings with :func:`standardize_category`.
        category_columns (tuple[str, ...]): string columns (in interactions,
            users and items, wherever present) to standardize.
        list_columns (tuple[str, ...]): columns holding lists of strings (e.g.
            genres) whose elements are standardized.
        implicit_threshold (float | None): keep only ratings ``>=`` this value and
            set them to 1.0; None keeps every row and rating.
        user_k (int): minimum interactions per user in the k-core (0 or 1: off).
        item_k (int): minimum interactions per item in the k-core (0 or 1: off).
        max_k_core_rounds (int): give up iterating the k-core after this many
            rounds (reported as not converged).
    """

    drop_duplicates: bool = True
    drop_missing: bool = True
    default_rating: float | None = 1.0
    normalize: bool = True
    category_columns: tuple[str, ...] = (EVENT_TYPE, "gender", "occupation")
    list_columns: tuple[str, ...] = ("genres",)
    implicit_threshold: float | None = None
    user_k: int = 0
    item_k: int = 0
    max_k_core_rounds: int = 100


def standardize_category(value: str) -> str:
    """The one spelling of a categorical value: NFKC, trimmed, lower-case, single spaces.

    Args:
        value: raw category, e.g. ``" Sci-Fi "`` or ``"ＣＬＩＣＫ"`` (full-width).

    Returns:
        The standardized string.

    Example:
        >>> standardize_category("  Film\\u00a0Noir ")
        'film noir'
        >>> standardize_category("ＣＬＩＣＫ")
        'click'
    """
    return " ".join(unicodedata.normalize("NFKC", value).split()).lower()


def _standardize_series(values: pd.Series) -> tuple[pd.Series, int]:
    """Standardizes string values (others unchanged); returns (series, values changed)."""
    uniques = [u for u in values.dropna().unique() if isinstance(u, str)]
    mapping = {u: standardize_category(u) for u in uniques}
    changed_values = {u for u, v in mapping.items() if u != v}
    if not changed_values:
        return values, 0
    n_changed = int(values.isin(list(changed_values)).sum())
    dtype = values.dtype if pd.api.types.is_string_dtype(values.dtype) else object
    out = values.map(lambda v: mapping.get(v, v) if isinstance(v, str) else v).astype(dtype)
    return out, n_changed


def _standardize_lists(values: pd.Series) -> tuple[pd.Series, int]:
    """Standardizes the elements of list values; returns (series, lists changed)."""
    changed = 0
    out: list[Any] = []
    for value in values:
        if isinstance(value, list | tuple | np.ndarray):
            new = [standardize_category(v) if isinstance(v, str) else v for v in value]
            new = [v for v in new if v != ""]
            changed += int(new != list(value))
            out.append(new)
        else:
            out.append(value)
    return pd.Series(out, index=values.index, dtype=object), changed


def drop_exact_duplicates(df: pd.DataFrame) -> tuple[pd.DataFrame, StepReport]:
    """Removes rows identical in every column (first occurrence kept, order kept).

    Args:
        df: interactions.

    Returns:
        The deduplicated frame (fresh index) and its report.
    """
    duplicated = df.duplicated(keep="first").to_numpy(dtype=bool)
    out = df.loc[~duplicated].reset_index(drop=True)
    report = StepReport("drop_exact_duplicates", len(df), len(out))
    report.removed["exact duplicate"] = int(duplicated.sum())
    return out, report


def _missing_mask(values: pd.Series) -> np.ndarray:
    # The same spellings of "missing" the loaders reject ("", "NA", "null", ...).
    return missing_mask(values, MISSING_TOKENS)


def handle_missing(
    df: pd.DataFrame, default_rating: float | None = 1.0
) -> tuple[pd.DataFrame, StepReport]:
    """Removes rows missing a user, item or timestamp; fills (or drops) missing ratings.

    Args:
        df: interactions.
        default_rating: value for a missing ``rating``; None removes those rows.

    Returns:
        The cleaned frame (fresh index) and its report; a row missing several
        fields is counted once, under the first of user, item, timestamp, rating.
    """
    removed: dict[str, int] = {}
    drop = np.zeros(len(df), dtype=bool)
    for column in (USER, ITEM, TIMESTAMP):
        if column in df.columns:
            missing = _missing_mask(df[column])
            removed[f"missing {column}"] = int((missing & ~drop).sum())
            drop |= missing
    changed: dict[str, int] = {}
    out = df
    if RATING in df.columns:
        missing_rating = df[RATING].isna().to_numpy(dtype=bool)
        if default_rating is None:
            removed[f"missing {RATING}"] = int((missing_rating & ~drop).sum())
            drop |= missing_rating
        elif (missing_rating & ~drop).any():
            changed[f"{RATING} filled with {default_rating}"] = int((missing_rating & ~drop).sum())
            out = df.assign(**{RATING: df[RATING].fillna(default_rating).astype(df[RATING].dtype)})
    out = out.loc[~drop].reset_index(drop=True)
    return out, StepReport("handle_missing", len(df), len(out), removed=removed, changed=changed)


def normalize(
    data: InteractionData,
    category_columns: Sequence[str] = (EVENT_TYPE, "gender", "occupation"),
    list_columns: Sequence[str] = ("genres",),
) -> tuple[InteractionData, StepReport]:
    """Brings values to one representation.

    Timestamps become datetime64[ns, UTC] (naive = UTC; numbers = unix seconds;
    rows whose time cannot be parsed are removed); string ids lose surrounding
    whitespace; ``category_columns`` and the elements of ``list_columns`` go
    through :func:`standardize_category` in every table that has them.

    Args:
        data: the dataset.
        category_columns: string columns to standardize.
        list_columns: list-of-string columns to standardize.

    Returns:
        A new dataset (inputs untouched) and the report of the interactions frame.
    """
    df = data.interactions
    removed: dict[str, int] = {}
    changed: dict[str, int] = {}
    out = df.copy()
    if TIMESTAMP in out.columns and str(out[TIMESTAMP].dtype) != "datetime64[ns, UTC]":
        before = out[TIMESTAMP]
        out[TIMESTAMP] = parse_timestamps(before)
        changed[f"{TIMESTAMP} converted to UTC"] = int(before.notna().sum())
        bad = out[TIMESTAMP].isna().to_numpy(dtype=bool)
        removed[f"unparseable {TIMESTAMP}"] = int(bad.sum())
        out = out.loc[~bad].reset_index(drop=True)
    for column in (USER, ITEM):
        if column in out.columns and pd.api.types.is_string_dtype(out[column].dtype):
            stripped = out[column].str.strip()
            changed[f"{column} stripped"] = int((stripped != out[column]).sum())
            out[column] = stripped

    def standardize(frame: pd.DataFrame, table: str) -> pd.DataFrame:
        frame = frame.copy()
        for column in category_columns:
            if column in frame.columns:
                frame[column], n = _standardize_series(frame[column])
                changed[f"{table}.{column} standardized"] = n
        for column in list_columns:
            if column in frame.columns:
                frame[column], n = _standardize_lists(frame[column])
                changed[f"{table}.{column} standardized"] = n
        return frame

    out = standardize(out, "interactions")
    result = replace(
        data,
        interactions=out,
        users=None if data.users is None else standardize(data.users, "users"),
        items=None if data.items is None else standardize(data.items, "items"),
    )
    return result, StepReport("normalize", len(df), len(out), removed=removed, changed=changed)


def to_implicit(df: pd.DataFrame, threshold: float | None) -> tuple[pd.DataFrame, StepReport]:
    """Turns explicit ratings into implicit feedback.

    Args:
        df: interactions with a ``rating`` column.
        threshold: keep rows with ``rating >= threshold`` and set their rating to
            1.0; None keeps every row and rating unchanged.

    Returns:
        The frame (fresh index) and its report.

    Example:
        >>> frame = pd.DataFrame({"rating": [5.0, 2.0, 4.0]})
        >>> out, report = to_implicit(frame, 4)
        >>> out["rating"].tolist(), report.removed
        ([1.0, 1.0], {'rating below 4': 1})
    """
    if threshold is None:
        return df, StepReport("to_implicit", len(df), len(df), details={"threshold": None})
    keep = (df[RATING] >= threshold).to_numpy(dtype=bool)
    out = df.loc[keep].reset_index(drop=True)
    out[RATING] = pd.Series(1.0, index=out.index, dtype=df[RATING].dtype)
    report = StepReport("to_implicit", len(df), len(out), details={"threshold": threshold})
    report.removed[f"rating below {threshold:g}"] = int((~keep).sum())
    return out, report


def k_core(
    df: pd.DataFrame, user_k: int, item_k: int, max_rounds: int = 100
) -> tuple[pd.DataFrame, StepReport]:
    """Keeps the largest subset where every user has >= ``user_k`` and every item
    >= ``item_k`` interactions, by filtering until nothing changes.

    Args:
        df: interactions.
        user_k: minimum rows per user (<= 1 disables the user side).
        item_k: minimum rows per item (<= 1 disables the item side).
        max_rounds: stop after this many rounds even if not yet stable.

    Returns:
        The filtered frame (order kept, fresh index) and a report whose
        ``details`` hold ``rounds`` (filtering rounds that removed rows) and
        ``converged``.

    Example:
        >>> frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [7, 8, 7]})
        >>> out, report = k_core(frame, user_k=2, item_k=1)
        >>> out["user_id"].tolist(), report.details["rounds"]
        ([1, 1], 1)
    """
    keep = np.ones(len(df), dtype=bool)
    users = df[USER].to_numpy()
    items = df[ITEM].to_numpy()
    user_codes = pd.factorize(users)[0]
    item_codes = pd.factorize(items)[0]
    removed = {f"user with < {user_k} interactions": 0, f"item with < {item_k} interactions": 0}
    rounds = 0
    converged = False
    for _ in range(max_rounds):
        dropped_any = False
        for codes, k, label in (
            (user_codes, user_k, f"user with < {user_k} interactions"),
            (item_codes, item_k, f"item with < {item_k} interactions"),
        ):
            if k <= 1:
                continue
            counts = np.bincount(codes[keep], minlength=int(codes.max()) + 1 if len(codes) else 0)
            low = keep & (counts[codes] < k)
            if low.any():
                removed[label] += int(low.sum())
                keep &= ~low
                dropped_any = True
        if not dropped_any:
            converged = True
            break
        rounds += 1
    out = df.loc[keep].reset_index(drop=True)
    report = StepReport(
        "k_core",
        len(df),
        len(out),
        removed=removed,
        details={"user_k": user_k, "item_k": item_k, "rounds": rounds, "converged": converged},
    )
    return out, report


def clean(
    data: InteractionData, config: CleaningConfig | None = None
) -> tuple[InteractionData, CleaningReport]:
    """Runs the enabled cleaning steps in order (see the module docstring).

    Args:
        data: a loaded dataset.
        config: settings; defaults to :class:`CleaningConfig()`.

    Returns:


    """
    config = config or CleaningConfig()
    report = CleaningReport()
    df = data.interactions

    def off(step: str, why: str) -> None:
        # A step that does not run still reports, so the summary shows every filter.
        report.steps.append(StepReport(step, len(df), len(df), details={"off": why}))

    if config.drop_duplicates:
        df, step = drop_exact_duplicates(df)
        report.steps.append(step)
    else:
        off("drop_exact_duplicates", "cleaning.drop_duplicates=false")
    if config.drop_missing:
        df, step = handle_missing(df, config.default_rating)
        report.steps.append(step)
    else:
        off("handle_missing", "cleaning.drop_missing=false")
    result = replace(data, interactions=df)
    if config.normalize:
        result, step = normalize(result, config.category_columns, config.list_columns)
        report.steps.append(step)
    else:
        off("normalize", "cleaning.normalize=false")
    df = result.interactions
    if config.implicit_threshold is not None:
        df, step = to_implicit(df, config.implicit_threshold)
        report.steps.append(step)
    else:
        off("to_implicit", "implicit_threshold is null: every rating kept")
    if config.user_k > 1 or config.item_k > 1:
        df, step = k_core(df, config.user_k, config.item_k, config.max_k_core_rounds)
        report.steps.append(step)
    else:
        off("k_core", f"user_k={config.user_k}, item_k={config.item_k}")
    return replace(result, interactions=df, reports=list(data.reports)), report
