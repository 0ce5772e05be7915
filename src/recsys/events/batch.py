"""The batch path: events from Parquet or CSV logs, and the YOOCHOOSE click log.

:func:`load_event_log` reads a log whose columns are the event fields
(``event_id``, ``user_id``, ``session_id``, ``type``, ``timestamp``,
``item_id``), the context fields by name (``device_type``, ``browser``, ``os``,
``country``, ``region``, ``referrer``, ``utc_offset_minutes``) and an optional
``payload`` column (a JSON object, or a mapping in Parquet). Any other column
is a field outside the schema: its rows become dead letters. Every row is
either an event or a dead letter, counted in the :class:`LoadReport`.

Example:
    >>> log = load_yoochoose_clicks(path)  # doctest: +SKIP
    >>> log.report.summary()  # doctest: +SKIP
    '...: read 70,278 rows, kept 70,278'
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.data.frame import DatasetNotFoundError, LoadReport
from recsys.events.deadletter import DeadLetter
from recsys.events.schema import CONTEXT_FIELDS, Event
from recsys.events.validation import EventValidationError, EventValidator, ValidationConfig

_CTX = frozenset(CONTEXT_FIELDS)


@dataclass
class EventLog:
    """Events read from a log.

    Attributes:
        events: the valid events, in file order.
        lines: where each event came from, numbered as the dead letters'
            sources are (data rows from 1 in CSV, TSV and Parquet logs; file
            lines in the YOOCHOOSE log), for reports about it later.
        dead_letters: one per refused row, with its reasons.
        report: rows read, kept and rejected per reason.
    """

    events: list[Event] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    report: LoadReport = field(default_factory=lambda: LoadReport(source=""))


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def row_to_raw(row: Mapping[str, Any], from_text: bool) -> dict[str, Any]:
    """Turns one flat log row into a raw nested event.

    Args:
        row: column -> value.
        from_text: values are CSV text (numbers are parsed back).
    """
    raw: dict[str, Any] = {}
    context: dict[str, Any] = {}
    for key, value in row.items():
        if _missing(value):
            continue
        if key in _CTX:
            if key == "utc_offset_minutes" and from_text:
                value = _number(value)
            context[key] = value
        elif key == "payload":
            raw["payload"] = json.loads(value) if isinstance(value, str) else value
        elif from_text and key in ("item_id", "timestamp"):
            raw[key] = _number(value)
        else:
            raw[key] = value
    if context:
        raw["context"] = context
    return raw


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any], bool]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, row, False
    else:
        delimiter = "\t" if path.suffix in (".tsv", ".txt") else ","
        with open(path, encoding="utf-8", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh, delimiter=delimiter), start=1):
                yield i, dict(row), True


def load_event_log(path: str | Path, validator: EventValidator | None = None) -> EventLog:
    """Reads and validates a Parquet, CSV or TSV event log.

    Args:
        path: the log; ``.parquet`` is read with pyarrow, ``.tsv``/``.txt`` as
            tab-separated, anything else as comma-separated (header required).
        validator: defaults to one without the future-time check (logs are history).

    Returns:
        An :class:`EventLog`; nothing is dropped without a dead letter.

    Raises:
        DatasetNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"event log {path} does not exist")
    validator = validator or EventValidator(ValidationConfig(max_future_skew_s=None))
    log = EventLog(report=LoadReport(source=str(path)))
    now_us = time.time_ns() // 1000
    for line, row, from_text in _rows(path):
        log.report.rows_read += 1
        try:
            raw: Any = row_to_raw(row, from_text)
        except ValueError as e:
            raw, errors = row, [f"payload: not valid JSON ({e})"]
        else:
            try:
                log.events.append(validator.validate(raw))
                log.lines.append(line)
                continue
            except EventValidationError as e:
                errors = list(e.errors)
        reason = errors[0].split(":", 1)[0] + ": " + errors[0].split(":", 1)[-1].strip()[:60]
        log.report.reject(reason, line, json.dumps(row, default=str))
        log.dead_letters.append(
            DeadLetter.from_raw(raw, errors, f"file:{path.name}:{line}", now_us)
        )
    log.report.rows_kept = len(log.events)
    return log


def load_yoochoose_clicks(path: str | Path, validator: EventValidator | None = None) -> EventLog:
    """Reads the YOOCHOOSE (RecSys Challenge 2015) click log as click events.

    The file is tab-separated with the header ``SessionId ItemId Time``
    (unix seconds, fractional). The session id is also the user id (the log
    has no user ids), every row is a ``click``, and the event id is
    ``yc<line>`` so a replay of the same file is recognized as a duplicate.

    Args:
        path: e.g. ``$RECSYS_DATA_DIR/yoochoose-rsc15-100k/yoochoose-clicks-100k_train_full.txt``.
        validator: defaults to one without the future-time check.

    Returns:
        An :class:`EventLog` in file order.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"YOOCHOOSE click log {path} does not exist")
    validator = validator or EventValidator(ValidationConfig(max_future_skew_s=None))
    log = EventLog(report=LoadReport(source=str(path)))
    now_us = time.time_ns() // 1000
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().split()
        if header[:3] != ["SessionId", "ItemId", "Time"]:
            raise ValueError(f"{path}: expected header SessionId ItemId Time, got {header}")
        for line, text in enumerate(fh, start=2):
            log.report.rows_read += 1
            parts = text.rstrip("\n").split("\t")
            raw: dict[str, Any] | str = text
            try:
                session, item, ts = parts
                raw = {
                    "event_id": f"yc{line}",
                    "user_id": session,
                    "session_id": session,
                    "type": "click",
                    "timestamp": float(ts),
                    "item_id": int(item),
                }
                log.events.append(validator.validate(raw))
                log.lines.append(line)
                continue
            except ValueError as e:
                errors = list(e.errors) if isinstance(e, EventValidationError) else [f"row: {e}"]
            log.report.reject(errors[0].split(":", 1)[0], line, text)
            log.dead_letters.append(
                DeadLetter.from_raw(raw, errors, f"file:{path.name}:{line}", now_us)
            )
    log.report.rows_kept = len(log.events)
    return log
