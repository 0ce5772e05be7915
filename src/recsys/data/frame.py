"""The canonical in-memory form of a dataset, shared by every loader.

Interactions are a pandas DataFrame with these columns (extra context columns
allowed after them):

========== =================== ==========================================
column     dtype               meaning
========== =================== ==========================================
user_id    int64 or string     the publisher's user id, unchanged
item_id    int64 or string     the publisher's item id, unchanged
rating     float32             explicit rating, or 1.0 for implicit events
timestamp  datetime64[ns, UTC] when the interaction happened
========== =================== ==========================================

Event logs add ``event_type`` (string) and optional context columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from recsys.config import ConfigError

USER = "user_id"
ITEM = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
EVENT_TYPE = "event_type"
INTERACTION_COLUMNS: tuple[str, ...] = (USER, ITEM, RATING, TIMESTAMP)


class DataError(Exception):
    """Base class of the data layer's errors."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset is neither at the local path nor downloadable."""


class MalformedDataError(DataError, ValueError):
    """Input rows could not be parsed and the caller asked for strict loading."""


class DataConfigError(DataError, ConfigError):
    """A dataset config is wrong: an unknown key or loader, a value of the wrong
    type, or a setting that does not fit the data (the message names the key)."""


class SchemaMismatchError(DataConfigError):
    """A feature schema reads columns the dataset does not have (the message
    names the columns and which schema file to use or which features to drop)."""


@dataclass
class LoadReport:
    """What a loader read, kept and rejected, so nothing is lost silently.

    Attributes:
        source: path or URL the rows came from.
        rows_read: physical data rows seen (header excluded).
        rows_kept: rows in the returned frame.
        rejected: count of rejected rows per reason (malformed or missing
            values; ``strict`` loading turns any of these into an error).
        examples: up to ``max_examples`` rejected rows per reason, as
            ``(line_number, raw_text)``.
        repaired: count of rows accepted after a documented repair per kind
            (e.g. Criteo rows padded to 40 fields, anonymous ids given).
        filtered: count of valid rows left out on purpose by a configured
            filter, per reason (e.g. event types not asked for); not an error
            in strict mode.
        max_examples: examples kept per reason.
        record_rejected: keep every rejected row in ``rejected_rows`` (for
            callers that dead-letter each one, e.g. ``recsys realtime publish``).
        rejected_rows: ``(line_number, reason, raw_text)`` of every rejected row
            when ``record_rejected`` is set.
    """

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    max_examples: int = 5
    record_rejected: bool = False
    rejected_rows: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def rows_filtered(self) -> int:
        return sum(self.filtered.values())

    def reject(self, reason: str, line_number: int, raw: str) -> None:
        """Counts one rejected row and keeps it as an example if there is room."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < self.max_examples:
            kept.append((line_number, raw[:200]))
        if self.record_rejected:
            self.rejected_rows.append((line_number, reason, raw))

    def repair(self, kind: str, count: int = 1) -> None:
        """Counts ``count`` rows kept after the documented repair ``kind``."""
        self.repaired[kind] = self.repaired.get(kind, 0) + count

    def filter(self, reason: str, count: int) -> None:
        """Counts ``count`` valid rows a configured filter left out for ``reason``."""
        if count:
            self.filtered[reason] = self.filtered.get(reason, 0) + count

    def summary(self) -> str:
        """One human-readable paragraph; lists every rejection reason."""
        text = f"{self.source}: read {self.rows_read:,} rows, kept {self.rows_kept:,}"
        if self.repaired:
            text += ", repaired " + ", ".join(f"{n:,} {k}" for k, n in self.repaired.items())
        if self.filtered:
            text += ", filtered out " + ", ".join(f"{n:,} {k}" for k, n in self.filtered.items())
        if self.rejected:
            parts = []
            for reason, n in self.rejected.items():
                shown = self.examples.get(reason, [])[:2]
                ex = "; ".join(f"line {ln}: {raw!r}" for ln, raw in shown)
                parts.append(f"{n:,} {reason} (e.g. {ex})")
            text += ", rejected " + ", ".join(parts)
        return text


@dataclass
class InteractionData:
    """A loaded dataset: interactions plus optional user and item side tables.

    Attributes:
        name: dataset name, e.g. ``"ml-100k"``.
        interactions: frame with :data:`INTERACTION_COLUMNS` first.
        users: one row per user keyed by ``user_id`` (demographics), or None.
        items: one row per item keyed by ``item_id`` (title, genres, year), or None.
        reports: one :class:`LoadReport` per file read.
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    reports: list[LoadReport] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return int(self.interactions[USER].nunique())

    @property
    def n_items(self) -> int:
        return int(self.interactions[ITEM].nunique())
