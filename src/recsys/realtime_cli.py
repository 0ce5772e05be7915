"""``recsys realtime``: run and operate the real-time side from a shell.

Every command works on the store that :func:`~recsys.events.open_store` picks:
Redis with ``--redis URL`` (or ``RECSYS_REDIS_URL``), else the embedded SQLite
file given by ``--sqlite`` (default ``realtime.db``), so one machine needs no
server and a deployment points every process at the same Redis.

    recsys realtime collect --port 8088            # HTTP collector (keys: RECSYS_COLLECTOR_KEYS)
    recsys realtime publish events.parquet         # batch path: validate a log, publish it once
    recsys realtime publish shop.csv --delimiter ';' --column uid=user_id --column ts=timestamp \\
        --type-map buy=purchase --timestamp-format epoch_ms   # any log layout, no Python
    recsys realtime publish shop.csv --log-config configs/dataset/shop_events.yaml
    recsys realtime consume --segments configs/segments --own 0   # profiles + segments
    recsys realtime check-segments configs/segments    # rule errors with file:line:column
    recsys realtime segment daily_regulars --since 2024-05-01T00:00:00Z
    recsys realtime stats                           # stream, pending, dead letters
    recsys realtime export u1 --actor dpo:kim       # right of access (JSON)
    recsys realtime erase u1 --actor dpo:kim        # right to erasure

``consume`` and ``collect`` run until SIGINT or SIGTERM, finish the batch in
hand (so nothing read is lost: unacknowledged entries come back at restart)
and print their counters as JSON. The commands that read or change personal
data (``export``, ``erase``) take ``--actor``, which the audit trail records.

``consume`` watches its ``--segments`` files: when they change (checked every
``--reload-check`` seconds, default 1) it recompiles them and evaluates the new
definitions from the next batch, then sweeps, so members of removed segments
leave (trigger ``reload``). A file that fails to load keeps the previous
definitions running; the error is logged with its ``file:line:column`` and
counted (``segment_reload_errors`` in the printed counters). The sweep also
lets users enter time-based segments (``days_since_last_purchase > 30``,
``hour >= 18``) when their latest event is within ``--entry-horizon``.

``publish`` reads a log in the event fields' own layout (columns ``event_id``,
``user_id``, ``session_id``, ``type``, ``timestamp``, ``item_id``, context
fields, ``payload``; :func:`recsys.events.batch.load_event_log`), or any other
layout described by the event-log reading keys of the data layer
(:class:`recsys.data.event_log.EventLogConfig`: delimiter, column map, type map,
timestamp format and UTC offset, missing-value spellings, anonymous rows), given
as a YAML file (``--log-config``: a dataset config with ``loader: event_log``, or
just its ``read:`` keys) and/or flags (``--delimiter``, ``--column SRC=FIELD``,
``--type-map RAW=TYPE``, ``--timestamp-format``, ``--utc-offset``,
``--anonymous session``, ``--format``); flags win over the file. The same
reader and timestamp parser load logs for training (``dataset=event_log``). In
that mapped layout a log without ``event_id`` gets a stable id from the row's
content (so a rerun is recognised as duplicates), a log without ``session_id``
uses the user id as the session, and rows the reader rejects (missing ids,
unparseable times) are dead letters like the ones the validator refuses (their
numbers are file lines for text logs).

``publish`` validates every row, dead-letters the refused ones, and publishes
each event id once (the store remembers published ids): rows already published
with the same content count as ``duplicates`` (so a rerun publishes only what
is new), an id already used with other content or for another user is a
conflict and a dead letter. It prints a JSON summary (``published``,
``duplicates``, ``rejected`` per reason with ``examples``, ``conflicts`` with
their count per reason and examples, ``rejected_share``) and exits 1 when
nothing was published, or when the share of rows refused (invalid or
conflicting) is over ``--max-rejected-share`` (default 0.5): the valid rows are
published either way.

Exit status: 0 done; 1 ``publish`` found too little to publish, or a segment
rule error; 2 bad input (a missing file, a bad time, no collector keys) or an
unreachable store, with a one-line message.

Example:
    >>> import tempfile, os
    >>> db = os.path.join(tempfile.mkdtemp(), "rt.db")
    >>> main(["--sqlite", db, "stats"])
    {"dead_letters": 0, "stream": {"length": 0, "pending": 0}}
    0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from redis.exceptions import ConnectionError as RedisConnectionError

from recsys.data.config import build
from recsys.data.event_log import EVENT_ID, SESSION, EventLogConfig, read_event_table
from recsys.data.frame import EVENT_TYPE, ITEM, RATING, TIMESTAMP, USER, DataConfigError
from recsys.data.timestamps import to_iso
from recsys.events import StoreConfig, open_store
from recsys.events.batch import EventLog, load_event_log, load_yoochoose_clicks, row_to_raw
from recsys.events.collector import CollectorConfig, EventCollector, keys_from_env
from recsys.events.deadletter import DeadLetter
from recsys.events.producer import EventProducer
from recsys.events.store import RealtimeStore
from recsys.events.validation import EventValidationError, EventValidator, ValidationConfig
from recsys.privacy import ConsentPolicy, erase_user, export_user
from recsys.profiles import ConsumerConfig, EventProcessor, ProcessorConfig, StreamConsumer
from recsys.profiles.config import parse_duration
from recsys.segments import RuleError, SegmentEngine, churn, load_segments

DEFAULT_SQLITE = "realtime.db"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _store(args: argparse.Namespace) -> RealtimeStore:
    # open_store falls back to RECSYS_REDIS_URL when --redis is not given.
    return open_store(
        StoreConfig(
            redis_url=args.redis,
            sqlite_path=args.sqlite,
            prefix=args.prefix,
            partitions=args.partitions,
        )
    )


def _print(doc: Any) -> None:
    print(json.dumps(doc, sort_keys=True, default=str))


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs (the loop ends
    after the batch in hand); the previous handlers come back afterwards."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _epoch_us(text: str) -> int:
    """ISO 8601 time (``Z`` or an offset; a bare date or time means UTC) in epoch us."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1_000_000)


# -- reading event logs (publish) ------------------------------------------------------
_LAYOUT_FLAGS = (
    "log_config",
    "delimiter",
    "column",
    "type_map",
    "timestamp_format",
    "utc_offset",
    "anonymous",
    "log_format",
)


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}``; a value without ``=`` is a usage error."""
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, target = value.partition("=")
        if not sep or not key.strip() or not target.strip():
            raise ValueError(f"{flag} {value!r}: write it as SOURCE=TARGET")
        out[key.strip()] = target.strip()
    return out


def log_config(args: argparse.Namespace) -> EventLogConfig | None:
    """The event-log layout given by ``--log-config`` and the layout flags, or None.

    ``--log-config`` names a YAML file: a dataset config (``loader: event_log``;
    its ``read:`` block is used) or just the reading keys. Flags override it;
    ``--column`` and ``--type-map`` add to its maps. ``type`` is accepted as a
    column target for ``event_type``.

    Args:
        args: the parsed ``publish`` arguments.

    Returns:
        The config, or None when no layout option was given (the log is in the
        event fields' own layout).

    Raises:
        DataConfigError: the file or a flag holds an unknown key or bad value.
        ValueError: a ``--column`` / ``--type-map`` value without ``=``.

    Example:
        >>> ns = argparse.Namespace(log_config=None, delimiter=";", column=["uid=user_id"],
        ...     type_map=None, timestamp_format="epoch_ms", utc_offset=None,
        ...     anonymous=None, log_format=None)
        >>> cfg = log_config(ns)
        >>> cfg.delimiter, cfg.columns, cfg.timestamp.format
        (';', {'uid': 'user_id'}, 'epoch_ms')
    """
    if all(getattr(args, name, None) in (None, []) for name in _LAYOUT_FLAGS):
        return None
    raw: dict[str, Any] = {}
    if args.log_config:
        with open(args.log_config, encoding="utf-8") as fh:
            try:
                doc = yaml.safe_load(fh) or {}
            except yaml.YAMLError as err:
                raise DataConfigError(f"{args.log_config}: not valid YAML ({err})") from err
        if not isinstance(doc, dict):
            raise DataConfigError(f"{args.log_config}: expected a mapping of event-log keys")
        if "loader" in doc:
            if doc["loader"] != "event_log":
                raise DataConfigError(
                    f"{args.log_config}: loader {doc['loader']!r} is not an event log; "
                    "publish reads `loader: event_log` configs (or their read: keys)"
                )
            doc = doc.get("read") or {}
        raw = dict(doc)
    raw.pop("file", None)  # the log is the command's path argument
    columns = {**dict(raw.get("columns") or {}), **_pairs(args.column, "--column")}
    raw["columns"] = {k: (EVENT_TYPE if v == "type" else v) for k, v in columns.items()}
    raw["type_map"] = {**dict(raw.get("type_map") or {}), **_pairs(args.type_map, "--type-map")}
    timestamp = dict(raw.get("timestamp") or {})
    if args.timestamp_format is not None:
        timestamp["format"] = args.timestamp_format
    if args.utc_offset is not None:
        timestamp["utc_offset"] = args.utc_offset
    raw["timestamp"] = timestamp
    for flag, key in (("delimiter", "delimiter"), ("anonymous", "anonymous")):
        if getattr(args, flag) is not None:
            raw[key] = getattr(args, flag)
    if args.log_format is not None:
        raw["format"] = args.log_format
    if raw.get("delimiter") == "\\t":
        raw["delimiter"] = "\t"  # the shell passes backslash-t as two characters
    config: EventLogConfig = build(EventLogConfig, raw, "read")
    return config


def _plain(value: Any) -> Any:
    """numpy scalars -> Python values; NaN/NA -> None (row_to_raw skips them)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _item(value: str) -> int | str:
    # As the event-field layout does: an integer item id is an int.
    try:
        return int(value)
    except ValueError:
        return value


def read_mapped_log(path: str, config: EventLogConfig) -> EventLog:
    """Reads a log of any layout with the data layer's reader, then validates events.

    Every row ends as an event or a dead letter: the reader's rejections
    (missing ids, unparseable times, wrong field counts) and the validator's.

    Args:
        path: the log (CSV, TSV or Parquet).
        config: its layout.

    Returns:
        The events (with their line numbers), dead letters and report.

    Example:
        >>> log = read_mapped_log("clicks.csv", EventLogConfig(delimiter=";"))  # doctest: +SKIP
    """
    table = read_event_table(path, config, record_rejected=True, text_ids=True)
    report = table.report
    name = Path(path).name
    now_us = time.time_ns() // 1000
    log = EventLog(report=report)
    for line, reason, raw_text in list(report.rejected_rows):
        source = f"file:{name}:{line}"
        log.dead_letters.append(DeadLetter.from_raw(raw_text, [reason], source, now_us))
    validator = EventValidator(ValidationConfig(max_future_skew_s=None))
    frame = table.frame
    times = to_iso(frame[TIMESTAMP])
    for i, (line, row) in enumerate(zip(table.numbers, frame.to_dict("records"), strict=True)):
        flat: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        for key, value in row.items():
            value = _plain(value)
            if key == TIMESTAMP:
                flat["timestamp"] = times[i]
            elif key == EVENT_TYPE:
                flat["type"] = value
            elif key == RATING:
                # A log's rating column is the payload of `rating` events.
                if table.rating_column is not None and value is not None:
                    payload["rating"] = value
            elif key == ITEM:
                flat["item_id"] = _item(str(value))
            elif key in (USER, SESSION, EVENT_ID) and value is not None:
                flat[str(key)] = str(value)
            else:
                flat[str(key)] = value
        flat.setdefault(SESSION, flat[USER])
        if EVENT_ID not in flat:
            # Stable over reruns of the same log, so a replay counts as duplicates.
            content = "\x1f".join(
                str(flat.get(k)) for k in (USER, SESSION, "type", "timestamp", "item_id")
            )
            flat[EVENT_ID] = "h" + hashlib.blake2b(content.encode(), digest_size=12).hexdigest()
        raw = row_to_raw(flat, from_text=False)
        if payload:
            raw["payload"] = {**(raw.get("payload") or {}), **payload}
        try:
            log.events.append(validator.validate(raw))
            log.lines.append(int(line))
        except EventValidationError as err:
            errors = list(err.errors)
            reason = errors[0].split(":", 1)[0] + ": " + errors[0].split(":", 1)[-1].strip()[:60]
            report.reject(reason, int(line), json.dumps(raw, default=str))
            source = f"file:{name}:{line}"
            log.dead_letters.append(DeadLetter.from_raw(raw, errors, source, now_us))
    report.rows_kept = len(log.events)
    return log


# -- commands --------------------------------------------------------------------------
def cmd_collect(args: argparse.Namespace, store: RealtimeStore) -> int:
    config = CollectorConfig(
        host=args.host,
        port=args.port,
        api_keys=keys_from_env(),
        max_batch=args.max_batch,
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        backlog=args.backlog,
        max_connections=args.max_connections,
        store_threads=args.store_threads,
    )
    collector = EventCollector(store, config)  # refuses to start without keys
    with _stop_on_signals() as stop:
        host, port = collector.start()
        print(f"collector listening on http://{host}:{port}/v1/events", flush=True)
        try:
            stop.wait()
        finally:
            collector.stop()
    return 0


def cmd_publish(args: argparse.Namespace, store: RealtimeStore) -> int:
    if not 0.0 <= args.max_rejected_share <= 1.0:
        raise ValueError(f"--max-rejected-share must be in [0, 1], got {args.max_rejected_share}")
    layout = log_config(args)
    if args.yoochoose and layout is not None:
        raise ValueError("--yoochoose reads the YOOCHOOSE layout; it takes no layout options")
    if args.yoochoose:
        log = load_yoochoose_clicks(args.path)
    elif layout is not None:
        log = read_mapped_log(args.path, layout)
    else:
        log = load_event_log(args.path)
    result = EventProducer(store).publish_unique(log.events)
    now_us = time.time_ns() // 1000
    name = Path(args.path).name
    conflicts: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    letters = list(log.dead_letters)
    for c in result.conflicts:
        line = log.lines[c.index]
        source = f"file:{name}:{line}"
        letters.append(DeadLetter.from_raw(c.event.to_dict(), [c.reason], source, now_us))
        conflicts[c.reason] = conflicts.get(c.reason, 0) + 1
        if len(examples) < 5:
            examples.append({"line": line, "event_id": c.event.event_id, "reason": c.reason})
    store.add_dead_letters(letters)
    r = log.report
    refused = r.rows_rejected + len(result.conflicts)
    share = refused / r.rows_read if r.rows_read else 0.0
    problem = ""
    if result.published == 0:
        already = f" ({result.duplicates} already published)" if result.duplicates else ""
        problem = f"nothing was published{already}"
    elif share > args.max_rejected_share:
        problem = (
            f"{refused} of {r.rows_read} rows refused ({share:.1%}), "
            f"over --max-rejected-share {args.max_rejected_share:g}"
        )
    _print(
        {
            "published": result.published,
            "duplicates": result.duplicates,
            "rows_read": r.rows_read,
            "dead_letters": len(letters),
            "rejected": r.rejected,
            "examples": r.examples,
            "conflicts": {
                "count": len(result.conflicts),
                "reasons": conflicts,
                "examples": examples,
            },
            "rejected_share": round(share, 4),
            "max_rejected_share": args.max_rejected_share,
            "ok": not problem,
        }
    )
    if problem:
        print(f"recsys realtime publish: {args.path}: {problem}", file=sys.stderr)
        return 1
    return 0


def cmd_consume(args: argparse.Namespace, store: RealtimeStore) -> int:
    horizon = None
    if args.entry_horizon is not None:
        horizon = 0 if args.entry_horizon == "0" else parse_duration(args.entry_horizon)
    engine = (
        SegmentEngine.from_yaml(args.segments, entry_horizon_s=horizon) if args.segments else None
    )
    hooks = [engine] if engine is not None else []
    consent = ConsentPolicy.grant_all() if args.grant_all else ConsentPolicy()
    processor = EventProcessor(store, ProcessorConfig(consent=consent), hooks=hooks)
    owned = tuple(int(p) for p in args.own.split(",")) if args.own else None
    count = store.partitions
    if owned is not None and not all(0 <= p < count for p in owned):
        raise ValueError(f"--own {args.own}: partitions are 0..{count - 1}")
    config = ConsumerConfig(
        name=args.name,
        batch_size=args.batch_size,
        partitions=owned,
        sweep_interval_s=args.sweep_interval if args.sweep_interval > 0 else None,
        reload_check_s=args.reload_check if args.reload_check > 0 else None,
    )
    consumer = StreamConsumer(store, processor, config)
    with _stop_on_signals() as stop:
        stats = consumer.run(stop=stop, until_idle=args.until_idle)
    counters: dict[str, Any] = {k: v for k, v in asdict(stats).items() if not isinstance(v, list)}
    reload_stats = engine.reload_stats if engine is not None else None
    if reload_stats is not None:
        counters["segment_reloads"] = reload_stats.reloads
        counters["segment_reload_errors"] = reload_stats.errors
        counters["segment_reload_error"] = reload_stats.last_error
    _print(counters)
    return 0


def cmd_check_segments(args: argparse.Namespace, store: RealtimeStore | None) -> int:
    try:
        segments = load_segments(args.paths)
    except RuleError as e:
        print(str(e), file=sys.stderr)
        return 1
    for seg in segments:
        exit_rule = f"; exit: {seg.exit.text}" if seg.exit is not None else ""
        print(" ".join(f"{seg.name} ({seg.source}): enter: {seg.enter.text}{exit_rule}".split()))
    return 0


def cmd_segment(args: argparse.Namespace, store: RealtimeStore) -> int:
    now_us = _epoch_us(args.until) if args.until else time.time_ns() // 1000
    since_us = _epoch_us(args.since) if args.since else now_us - 86_400_000_000
    report = churn(store, args.name, since_us, now_us)
    _print({"size": store.segment_size(args.name), **asdict(report)})
    return 0


def cmd_stats(args: argparse.Namespace, store: RealtimeStore) -> int:
    _print({"stream": store.stream_stats(), "dead_letters": store.dead_letter_count()})
    return 0


def cmd_export(args: argparse.Namespace, store: RealtimeStore) -> int:
    _print(export_user(store, args.user, actor=args.actor))
    return 0


def cmd_erase(args: argparse.Namespace, store: RealtimeStore) -> int:
    _print({"user": args.user, "deleted": erase_user(store, args.user, actor=args.actor)})
    return 0


# -- parsing ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``recsys realtime``."""
    ap = argparse.ArgumentParser(
        prog="recsys realtime",
        description="Run and operate the real-time side (events, profiles, segments, privacy).",
    )
    ap.add_argument("--redis", help="redis://host:port/db (default: RECSYS_REDIS_URL)")
    ap.add_argument(
        "--sqlite",
        default=DEFAULT_SQLITE,
        help=f"embedded store file when no Redis is set (default: {DEFAULT_SQLITE})",
    )
    ap.add_argument("--prefix", default="rt", help="Redis key prefix (default: rt)")
    ap.add_argument(
        "--partitions",
        type=int,
        help="Redis stream partitions (default: the prefix's, recorded at its first use; "
        "1 on a new prefix)",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="serve the HTTP collector until stopped")
    d = CollectorConfig()
    p.add_argument("--host", default=d.host, help=f"listen address (default {d.host})")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="events per request")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument(
        "--header-timeout", type=float, default=d.header_timeout_s, help="seconds for headers"
    )
    p.add_argument(
        "--body-timeout", type=float, default=d.body_timeout_s, help="seconds for a body"
    )
    p.add_argument("--backlog", type=int, default=d.backlog, help="listen backlog")
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="open connections beyond which requests get 503",
    )
    p.add_argument(
        "--store-threads", type=int, default=d.store_threads, help="threads publishing batches"
    )
    p.set_defaults(run=cmd_collect)

    p = sub.add_parser("publish", help="validate an event log and publish it to the stream")
    p.add_argument("path", help="Parquet, CSV or TSV log (columns: event fields, or --column)")
    p.add_argument("--yoochoose", action="store_true", help="the file is a YOOCHOOSE click log")
    p.add_argument(
        "--log-config",
        help="YAML describing the log's layout: a dataset config (loader: event_log) or its "
        "read: keys (delimiter, columns, type_map, timestamp, missing_values, anonymous)",
    )
    p.add_argument("--format", dest="log_format", choices=["auto", "csv", "tsv", "parquet"])
    p.add_argument("--delimiter", help="field separator of a text log (\\t for tab)")
    p.add_argument(
        "--column",
        action="append",
        metavar="SOURCE=FIELD",
        help="a file column and the event field it holds (user_id, item_id, timestamp, type, "
        "session_id, event_id, a context field, or - to drop it); repeatable",
    )
    p.add_argument(
        "--type-map",
        action="append",
        metavar="RAW=TYPE",
        help="an event type as written and the event type it is (e.g. buy=purchase); repeatable",
    )
    p.add_argument(
        "--timestamp-format",
        help="epoch_s | epoch_ms | epoch_us | epoch_ns | iso8601 | auto | a strftime pattern",
    )
    p.add_argument(
        "--utc-offset", help="zone of times written without one, e.g. +02:00 (default: UTC)"
    )
    p.add_argument(
        "--anonymous",
        choices=["reject", "session"],
        help="rows without a user id: reject (default) or give them the id anon:<session_id>",
    )
    p.add_argument(
        "--max-rejected-share",
        type=float,
        default=0.5,
        help="exit 1 when more than this share of the rows is refused (default 0.5)",
    )
    p.set_defaults(run=cmd_publish)

    p = sub.add_parser("consume", help="apply the stream to profiles and segments")
    p.add_argument("--segments", nargs="*", default=[], help="segment YAML files or folders")
    p.add_argument("--name", default="consumer-1", help="consumer name (stable over restarts)")
    p.add_argument("--own", help="partitions this consumer owns, e.g. 0 or 0,1 (default: all)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--sweep-interval",
        type=float,
        default=300.0,
        help="seconds between segment sweeps (0: none)",
    )
    p.add_argument(
        "--entry-horizon",
        help="the sweep lets users whose latest event is at most this old enter time-based "
        "segments, e.g. 60d or 36h (default: twice the longest count window; 0: no entries)",
    )
    p.add_argument(
        "--reload-check",
        type=float,
        default=1.0,
        help="seconds between checks of the segment files for changes (0: never reload)",
    )
    p.add_argument(
        "--grant-all",
        action="store_true",
        help="treat missing consent as granted (pseudonymous logs only)",
    )
    p.add_argument("--until-idle", action="store_true", help="stop when nothing is left to read")
    p.set_defaults(run=cmd_consume)

    p = sub.add_parser("check-segments", help="load segment rules and report errors")
    p.add_argument("paths", nargs="+", help="segment YAML files or folders")
    p.set_defaults(run=cmd_check_segments, needs_store=False)

    p = sub.add_parser("segment", help="size and churn of a segment")
    p.add_argument("name")
    p.add_argument("--since", help="start of the churn period (ISO 8601; default: a day ago)")
    p.add_argument("--until", help="end of the period (ISO 8601; default: now)")
    p.set_defaults(run=cmd_segment)

    sub.add_parser("stats", help="stream length, pending entries, dead letters").set_defaults(
        run=cmd_stats
    )

    for name, fn, text in (
        ("export", cmd_export, "everything stored about a user, as JSON (audited)"),
        ("erase", cmd_erase, "delete a user from every store (audited)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("user")
        p.add_argument("--actor", required=True, help="who asks (recorded in the audit trail)")
        p.set_defaults(run=fn)

    # attribution: outcomes joined to exposures, online in its own consumer group or as
    # the batch job (recsys.events.attribution_consumer; it opens the store itself)
    from recsys.events.attribution_consumer import add_attribution_command

    add_attribution_command(sub, _stop_on_signals)
    # catalogue: item_published events -> the catalogue cold items are served from
    from recsys.events.catalogue import add_catalogue_command

    add_catalogue_command(sub, _stop_on_signals)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``recsys realtime <command> [args]``; returns the exit status."""
    args = build_parser().parse_args(argv)
    store: RealtimeStore | None = None
    try:
        if getattr(args, "needs_store", True):
            store = _store(args)
        return int(args.run(args, store))
    except (ValueError, OSError, RedisConnectionError) as e:
        # Bad input (a file, a key, a time) or an unreachable server: say what, no trace.
        print(f"recsys realtime {args.command}: {e}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()
