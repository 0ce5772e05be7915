"""Benchmark of the Redis event path: YOOCHOOSE replay, latency, and a fault test.

Starts its own ``redis-server`` (loopback, persistence off, killed at exit),
then runs on the YOOCHOOSE click log (70,278 clicks; session id = user id)
with the stream split into ``--partitions`` partitions and one consumer
process per partition (each a fresh interpreter, as deployed):

1. ``throughput``: a producer process publishes the whole log as fast as it
   can while the consumers apply it with segment evaluation on; events/s from
   the producer's first publish to the last commit.
2. ``latency``: the producer is paced at ``--rate`` events/s (sends every
   millisecond); for every event, latency = segment evaluation finished -
   XADD time (also: commit finished - XADD time); p50/p99 over all events.
3. ``fault`` (with ``--fault``): consumer processes are killed with SIGKILL
   mid-stream (one after a third of the log, another after two thirds) and
   restarted; afterwards every user's profile document must equal an offline
   recount (each event applied exactly once) and the event store must hold
   every event once.

``--compare`` runs each phase with overlapped and with sequential commits
(the baseline), alternated for ``--rounds`` rounds on the same server (emptied
between runs), and reports per-round ratios; without it, ``--sequential``
picks the mode. ``--cpus`` pins redis-server and the consumers, ``--producer-cpus`` the producer
(the load generator), to CPU lists (``taskset``), to measure the path on a
given number of cores; ``--server-cpus`` and ``--consumer-cpus`` place
redis-server and the consumers apart (for example the consumer on one core,
redis-server and the producer on the other).

CPU time per event is measured per process (consumers and producer report
their own ``time.process_time``, redis-server its ``INFO cpu``), so it does
not depend on what else shares the cores; wall-clock rates and latencies do,
and the report records the load average before and after each phase.

Prints a table and writes the results as JSON to ``--out``.

Example:
    python benchmarks/bench_events.py --out artifacts/bench_events.json --fault
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from recsys import python_build
from recsys.events.batch import load_yoochoose_clicks
from recsys.events.redis_store import RedisStore
from recsys.events.schema import Event
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.config import ProfileConfig
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.offline import build_profiles
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.segments.engine import SegmentEngine

ROOT = Path(__file__).resolve().parents[1]
LOG = "yoochoose-rsc15-100k/yoochoose-clicks-100k_train_full.txt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpus: str) -> list[str]:
    """The command prefix that runs a process on the CPUs ``cpus`` ('' = anywhere)."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        sys.exit("--cpus and the other placement options need taskset (util-linux)")
    return [taskset, "-c", cpus]


def start_redis(cpus: str = "") -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            *pinned(cpus),
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


# -- child processes ------------------------------------------------------------------
def make_consumer(
    url: str,
    prefix: str,
    segments: str,
    partitions: int,
    owned: tuple[int, ...] | None,
    record: bool,
    batch_size: int = 500,
    block_ms: int = 100,
    overlap: bool = True,
) -> StreamConsumer:
    store = RedisStore(url, prefix=prefix, partitions=partitions)
    config = ProfileConfig()
    engine = SegmentEngine.from_yaml(segments, config)
    proc = EventProcessor(
        store,
        ProcessorConfig(profile=config, consent=ConsentPolicy.grant_all(), record_latency=record),
        hooks=[engine],
    )
    name = "bench" if owned is None else "bench-" + "-".join(map(str, owned))
    return StreamConsumer(
        store,
        proc,
        ConsumerConfig(
            name=name,
            batch_size=batch_size,
            block_ms=block_ms,
            sweep_interval_s=None,
            partitions=owned,
            overlap_commits=overlap,
        ),
    )


def consume(args: list[str]) -> None:
    """Child: consumes one partition until SIGTERM, then writes its stats."""
    url, prefix, segments, partitions, part, record, out, overlap = args
    owned = None if part == "all" else (int(part),)
    consumer = make_consumer(
        url, prefix, segments, int(partitions), owned, record == "1", overlap=overlap == "1"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stages = _time_stages(consumer) if os.environ.get("BENCH_EVENTS_STAGES") else None
    steps = _trace_steps(consumer) if os.environ.get("BENCH_EVENTS_TRACE") else None
    redis.Redis.from_url(url).set(f"{prefix}:ready:{part}", "1")
    profile_dir = os.environ.get("BENCH_EVENTS_PROFILE")
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        stats = profiler.runcall(consumer.run, stop=stop)
        profiler.dump_stats(os.path.join(profile_dir, f"consumer-{part}.prof"))
    else:
        stats = consumer.run(stop=stop)
    if out != "-":
        Path(out).write_text(
            json.dumps(
                {
                    "entries": stats.entries,
                    "applied": stats.applied,
                    "duplicates": stats.duplicates,
                    "batches": stats.batches,
                    "conflicts": stats.conflicts,
                    "last_commit_us": stats.last_commit_us,
                    "latencies_us": stats.latencies_us,
                    "commit_latencies_us": stats.commit_latencies_us,
                    "stage_cpu_s": stages,
                    "steps": steps,
                }
            )
        )


def _time_stages(consumer: StreamConsumer) -> dict[str, float]:
    """Wraps the consumer's store calls and batch handling to add up the CPU
    seconds (``time.process_time``) spent in each; the dict fills as it runs."""
    totals: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                totals[name] = totals.get(name, 0.0) + time.process_time() - t0

        return wrapper

    store, proc = consumer.store, consumer.processor
    for name in ("read", "commit_and_read", "commit", "load_users"):
        setattr(store, name, timed(name, getattr(store, name)))
    proc.handle = timed("handle", proc.handle)  # type: ignore[method-assign]
    return totals


def _trace_steps(consumer: StreamConsumer) -> list[tuple[int, int, int, int, int]]:
    """Records every step of the consumer's loop as ``(start, wall, cpu,
    events, reply_wait)``: its start (``perf_counter_ns``), its wall and
    thread CPU nanoseconds, the events it took up (deliveries: a grouped
    stream entry holds several), and the nanoseconds it
    waited for store replies (commit-and-read replies and reads, blocking
    reads included). The list fills as it runs."""
    rows: list[tuple[int, int, int, int, int]] = []
    waited = [0]
    store, step = consumer.store, consumer.step
    begin, read = store.begin_commit_and_read, store.read

    def timed_begin(*a: Any, **kw: Any) -> Any:
        reply = begin(*a, **kw)

        def timed_reply() -> Any:
            t0 = time.perf_counter_ns()
            try:
                return reply()
            finally:
                waited[0] += time.perf_counter_ns() - t0

        return timed_reply

    def timed_read(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return read(*a, **kw)
        finally:
            waited[0] += time.perf_counter_ns() - t0

    def traced_step(*a: Any, **kw: Any) -> int:
        waited[0] = 0
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        n = step(*a, **kw)
        rows.append((t0, time.perf_counter_ns() - t0, time.thread_time_ns() - c0, n, waited[0]))
        return n

    store.begin_commit_and_read = timed_begin  # type: ignore[method-assign]
    store.read = timed_read  # type: ignore[method-assign]
    consumer.step = traced_step  # type: ignore[method-assign]
    return rows


def summarize_steps(rows: list[list[int]], window_ms: float = 50.0) -> dict[str, Any]:
    """What a consumer's step trace (:func:`_trace_steps`) says about its tail:
    its utilization (CPU over the wall time from its first step that took
    events to its last), step wall times, the events per step, the reply
    waits, and the CPU per event in windows of ``window_ms`` (a window whose
    CPU per event stands out is the machine running slower, not a backlog:
    backlogs make steps larger and cheaper per event)."""
    # The first step that took events also waited for the producer to start.
    busy = [r for r in rows if r[3] > 0][1:]
    if not busy:
        return {"steps": 0}
    start, end = busy[0][0], busy[-1][0] + busy[-1][1]
    windows: dict[int, list[int]] = {}
    for t0, _, cpu, n, _ in busy:
        w = windows.setdefault(int((t0 - start) // (window_ms * 1e6)), [0, 0])
        w[0] += cpu
        w[1] += n
    mean_n = sum(w[1] for w in windows.values()) / len(windows)
    # Windows with too few events (the first and last) say little.
    per_event = sorted(w[0] / w[1] / 1e3 for w in windows.values() if w[1] >= mean_n / 2)
    walls = [r[1] / 1e6 for r in busy]
    waits = [r[4] / 1e6 for r in busy]
    events = [r[3] for r in busy]
    return {
        "steps": len(busy),
        "utilization": round(sum(r[2] for r in busy) / (end - start), 3),
        "step_ms": {"p50": pct_of(walls, 0.5), "p99": pct_of(walls, 0.99), "max": pct_of(walls, 1)},
        "events_per_step": {"p50": pct_of(events, 0.5), "max": max(events)},
        "reply_wait_ms": {"p50": pct_of(waits, 0.5), "p99": pct_of(waits, 0.99)},
        f"cpu_us_per_event_{window_ms:g}ms_windows": {
            "p10": pct_of(per_event, 0.1),
            "p50": pct_of(per_event, 0.5),
            "p90": pct_of(per_event, 0.9),
            "max": pct_of(per_event, 1.0),
        },
    }


def produce(args: list[str]) -> None:
    """Child: publishes the log (paced when rate > 0) and writes its stats.

    The events are serialized before the clock starts, as an upstream service
    would hand over JSON; the measured CPU is the publishing itself.
    """
    url, prefix, partitions, data, limit, rate_s, out = args
    events = load_yoochoose_clicks(data).events
    events = events[: int(limit)] if int(limit) else events
    payloads = [e.to_json() for e in events]
    users = [e.user_id for e in events]
    store = RedisStore(url, prefix=prefix, partitions=int(partitions))
    rate = float(rate_s)
    step = 500 if rate <= 0 else max(1, int(rate / 1000))  # paced: ~1 ms of events per send
    store.r.set(f"{prefix}:ready:producer", "1")
    while not store.r.exists(f"{prefix}:go"):
        time.sleep(0.001)
    cpu0 = time.process_time()
    start = time.perf_counter()
    first_us = time.time_ns() // 1000
    for i in range(0, len(payloads), step):
        if rate > 0:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        store.publish(payloads[i : i + step], users=users[i : i + step])
    Path(out).write_text(
        json.dumps(
            {
                "cpu_s": time.process_time() - cpu0,
                "first_publish_us": first_us,
                "seconds": time.perf_counter() - start,
            }
        )
    )


def _child(*args: str, cpus: str = "") -> subprocess.Popen[bytes]:
    return subprocess.Popen([*pinned(cpus), sys.executable, __file__, *args])


# -- phases ------------------------------------------------------------------------------
def _nearest_rank(values: list[float] | list[int], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def pct(values: list[int], q: float) -> float:
    """The ``q`` quantile of latencies in microseconds, in milliseconds."""
    return _nearest_rank(values, q) / 1000.0


def pct_of(values: list[float] | list[int], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank), rounded to 3 decimals."""
    return round(_nearest_rank(values, q), 3)


def over_per_chunk(values: list[int], limit: int, chunks: int) -> list[int]:
    """Splits ``values`` (in order) into ``chunks`` runs of equal length and
    counts the values over ``limit`` in each."""
    bounds = [k * len(values) // chunks for k in range(chunks + 1)]
    return [sum(v > limit for v in values[a:b]) for a, b in itertools.pairwise(bounds)]


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cpu(server: redis.Redis) -> float:
    info = server.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _redis_commands(server: redis.Redis, n_events: int) -> dict[str, dict[str, float]]:
    """Calls and server time per event of each command since the last reset."""
    out = {}
    for name, st in server.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = {
            "calls": int(st["calls"]),
            "us_per_event": round(float(st["usec"]) / n_events, 2),
        }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us_per_event"]))


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_phase(
    name: str, url: str, args: argparse.Namespace, n_events: int, rate: float
) -> dict[str, Any]:
    prefix = f"bench-{name}"
    parts = args.partitions
    store = RedisStore(url, prefix=prefix, partitions=parts)  # creates the consumer groups
    server = redis.Redis.from_url(url)
    tmp = Path(tempfile.mkdtemp(prefix="bench_events_"))
    labels = [str(k) for k in range(parts)] if args.consumers > 1 else ["all"]
    consumers = [
        _child(
            "--_consume",
            *(url, prefix, args.segments, str(parts), p, "1", str(tmp / f"c{p}"), args.overlap),
            cpus=args.consumer_cpus,
        )
        for p in labels
    ]
    producer = _child(
        "--_produce",
        *(url, prefix, str(parts), args.data, str(args.limit), str(rate), str(tmp / "p")),
        cpus=args.producer_cpus,
    )
    try:
        _wait(
            lambda: all(store.r.exists(f"{prefix}:ready:{p}") for p in [*labels, "producer"]),
            120,
            "consumers and producer to start",
        )
        # Where the processes may run, as the kernel reports it.
        affinity = {
            "consumers": [sorted(os.sched_getaffinity(c.pid)) for c in consumers],
            "producer": sorted(os.sched_getaffinity(producer.pid)),
        }
        load_before = os.getloadavg()
        server.config_resetstat()  # command counts of this phase only
        redis_cpu0 = _redis_cpu(server)
        consumer_cpu0 = [_proc_cpu(c.pid) for c in consumers]
        store.r.set(f"{prefix}:go", "1")
        _wait(
            lambda: (
                store.r.scard(f"{prefix}:applied") >= n_events
                and store.stream_stats()["pending"] == 0
            ),
            args.timeout,
            f"{name}: all events applied",
        )
        redis_cpu = _redis_cpu(server) - redis_cpu0
        commands = _redis_commands(server, n_events)
        consumer_cpu = [_proc_cpu(c.pid) - t for c, t in zip(consumers, consumer_cpu0, strict=True)]
        load_after = os.getloadavg()
        producer.wait(timeout=60)
    finally:
        for c in consumers:
            c.send_signal(signal.SIGTERM)
        for c in consumers:
            c.wait(timeout=60)
        if producer.poll() is None:
            producer.kill()
    stats = [json.loads((tmp / f"c{p}").read_text()) for p in labels]
    prod = json.loads((tmp / "p").read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    latencies = [x for s in stats for x in s["latencies_us"]]
    commit_latencies = [x for s in stats for x in s["commit_latencies_us"]]
    entries = sum(s["entries"] for s in stats)
    batches = sum(s["batches"] for s in stats)
    elapsed = (max(s["last_commit_us"] for s in stats) - prod["first_publish_us"]) / 1e6
    return {
        "phase": name,
        "producer_rate": rate or "max",
        "partitions": parts,
        "consumers": len(labels),
        "overlap_commits": args.overlap == "1",
        "cpu_affinity": affinity,
        "events": n_events,
        "applied": sum(s["applied"] for s in stats),
        "duplicates": sum(s["duplicates"] for s in stats),
        "conflicts": sum(s["conflicts"] for s in stats),
        "dead_letters": store.dead_letter_count(),
        "pending_after": store.stream_stats()["pending"],
        "seconds": round(elapsed, 3),
        "events_per_s": round(entries / elapsed, 1),
        "producer_seconds": round(prod["seconds"], 3),
        # What the producer achieved: below the asked rate when it got too little CPU.
        "offered_events_per_s": round(n_events / prod["seconds"], 1),
        "eval_latency_ms_p50": pct(latencies, 0.50),
        "eval_latency_ms_p90": pct(latencies, 0.90),
        "eval_latency_ms_p99": pct(latencies, 0.99),
        "eval_latency_ms_p999": pct(latencies, 0.999),
        "eval_latency_ms_max": max(latencies) / 1000.0 if latencies else float("nan"),
        # Where the tail sits: each consumer's events in the order applied,
        # in 20 chunks, and how many of each chunk took over 5 ms (bursts in
        # a few chunks are slow stretches, not a steady cost).
        "events_over_5ms_per_chunk": {
            p: over_per_chunk(s["latencies_us"], 5000, 20)
            for p, s in zip(labels, stats, strict=True)
        },
        "commit_latency_ms_p50": pct(commit_latencies, 0.50),
        "commit_latency_ms_p99": pct(commit_latencies, 0.99),
        # CPU seconds per event, independent of what else shares the cores.
        "cpu_us_per_event": {
            **{
                f"consumer_{p}": round(cpu / n_events * 1e6, 1)
                for p, cpu in zip(labels, consumer_cpu, strict=True)
            },
            "consumers_total": round(sum(consumer_cpu) / n_events * 1e6, 1),
            "producer": round(prod["cpu_s"] / n_events * 1e6, 1),
            "redis_server": round(redis_cpu / n_events * 1e6, 1),
        },
        # With BENCH_EVENTS_STAGES=1: each consumer's CPU per event in its
        # store calls and batch handling (handle includes its commit calls).
        "consumer_stage_cpu_us_per_event": {
            p: {k: round(v / n_events * 1e6, 1) for k, v in s["stage_cpu_s"].items()}
            for p, s in zip(labels, stats, strict=True)
            if s.get("stage_cpu_s")
        },
        # With BENCH_EVENTS_TRACE=1: each consumer's loop, step by step (see
        # summarize_steps).
        "consumer_steps": {
            p: summarize_steps(s["steps"])
            for p, s in zip(labels, stats, strict=True)
            if s.get("steps") is not None
        },
        # Per Redis command (scripts and the commands they run): calls, and
        # server microseconds per event.
        "redis_commands": commands,
        "batches": batches,
        "mean_batch": round(entries / max(batches, 1), 1),
        "segment_sizes": {s: store.segment_size(s) for s in consumer_segments(args.segments)},
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per phase and commit mode, each round's p99 and events/s and their medians.

    With both modes (``--compare``), also the median over rounds of each
    round's ratios (the two runs of a round ran back to back, so their ratio
    is steadier on a shared machine than a ratio of medians):
    ``sequential_over_overlapped_p99`` (> 1: overlapped has the lower p99) and
    ``overlapped_over_sequential_events_per_s`` (> 1: overlapped is faster).

    Example:
        >>> r = [{"phase": "latency", "overlap_commits": o, "round": 1,
        ...       "eval_latency_ms_p99": p, "events_per_s": 20000.0}
        ...      for o, p in ((True, 4.0), (False, 12.0))]
        >>> summarize(r)["latency"]["sequential_over_overlapped_p99"]
        3.0
    """
    runs = [r for r in results if r["phase"] != "fault"]
    out: dict[str, dict[str, Any]] = {}
    for phase in dict.fromkeys(r["phase"] for r in runs):
        entry: dict[str, Any] = {}
        by_mode: dict[bool, dict[int, dict[str, Any]]] = {}
        for flag, key in ((True, "overlapped"), (False, "sequential")):
            mine = [r for r in runs if r["phase"] == phase and r["overlap_commits"] is flag]
            if not mine:
                continue
            by_mode[flag] = {r["round"]: r for r in mine}
            p99 = [r["eval_latency_ms_p99"] for r in mine]
            rate = [r["events_per_s"] for r in mine]
            entry[key] = {
                "p99_ms": p99,
                "events_per_s": rate,
                "median_p99_ms": round(statistics.median(p99), 3),
                "median_events_per_s": round(statistics.median(rate), 1),
            }
        if len(by_mode) == 2:
            rounds = sorted(set(by_mode[True]) & set(by_mode[False]))
            ovl, seq = by_mode[True], by_mode[False]
            entry["sequential_over_overlapped_p99"] = round(
                statistics.median(
                    seq[k]["eval_latency_ms_p99"] / ovl[k]["eval_latency_ms_p99"] for k in rounds
                ),
                2,
            )
            entry["overlapped_over_sequential_events_per_s"] = round(
                statistics.median(ovl[k]["events_per_s"] / seq[k]["events_per_s"] for k in rounds),
                2,
            )
        out[phase] = entry
    return out


def consumer_segments(path: str) -> list[str]:
    return sorted(SegmentEngine.from_yaml(path).segments)


def fault_test(
    url: str, events: list[Event], args: argparse.Namespace, timeout: float
) -> dict[str, Any]:
    prefix = "bench-fault"
    parts = args.partitions
    store = RedisStore(url, prefix=prefix, partitions=parts)
    payloads = [e.to_json() for e in events]
    users = [e.user_id for e in events]
    for i in range(0, len(payloads), 1000):
        store.publish(payloads[i : i + 1000], users=users[i : i + 1000])
    labels = [str(k) for k in range(parts)] if args.consumers > 1 else ["all"]

    def start(p: str) -> subprocess.Popen[bytes]:
        return _child(
            "--_consume",
            *(url, prefix, args.segments, str(parts), p, "0", "-", args.overlap),
            cpus=args.consumer_cpus,
        )

    procs = {p: start(p) for p in labels}
    applied_key = f"{prefix}:applied"
    kills = []
    try:
        # Kill consumer k after (k+1)/(n+1) of the log, each time mid-stream.
        for k, p in enumerate(labels):
            mark = len(events) * (k + 1) // (len(labels) + 1)
            _wait(lambda m=mark: store.r.scard(applied_key) >= m, timeout, "progress")
            procs[p].send_signal(signal.SIGKILL)
            procs[p].wait()
            kills.append(
                {
                    "consumer": p,
                    "applied_when_killed": int(store.r.scard(applied_key)),
                    "pending_when_killed": store.stream_stats()["pending"],
                }
            )
            procs[p] = start(p)
        _wait(
            lambda: (
                store.r.scard(applied_key) >= len(events) and store.stream_stats()["pending"] == 0
            ),
            timeout,
            "all events after the restarts",
        )
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    # The offline recount runs the same segment rules, so whole documents
    # (counts, buckets, lists, affinities, memberships) must be equal.
    engine = SegmentEngine.from_yaml(args.segments, ProfileConfig())
    offline = build_profiles(events, ProfileConfig(), hooks=[engine])
    online = store.load_users(sorted(offline))
    mismatched = [
        u
        for u, p in offline.items()
        if online[u].profile is None
        or json.loads(online[u].profile or "") != json.loads(json.dumps(p.to_doc()))
    ]
    stored_events = sum(len(store.user_events(u)) for u in offline)
    return {
        "phase": "fault",
        "events": len(events),
        "partitions": parts,
        "consumers": len(labels),
        "overlap_commits": args.overlap == "1",
        "kills": kills,
        "applied_after_restart": int(store.r.scard(applied_key)),
        "stored_events": stored_events,
        "users": len(offline),
        "users_not_matching_offline_recount": len(mismatched),
        "exactly_once": not mismatched and stored_events == len(events),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=False, help="JSON results file")
    ap.add_argument("--data", default=os.path.join(os.environ.get("RECSYS_DATA_DIR", ""), LOG))
    ap.add_argument("--segments", default=str(ROOT / "configs" / "segments" / "yoochoose.yaml"))
    ap.add_argument("--rate", type=float, default=20_000.0, help="paced producer rate, events/s")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N events")
    ap.add_argument("--partitions", type=int, default=2, help="stream partitions")
    ap.add_argument(
        "--consumers",
        type=int,
        default=0,
        help="consumer processes: one per partition (default), or 1 for one reading all",
    )
    ap.add_argument("--phases", default="throughput,latency")
    ap.add_argument("--fault", action="store_true", help="also run the kill-and-restart test")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per phase")
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="consumers wait for each commit before computing the next batch "
        "(ConsumerConfig.overlap_commits=False), the baseline of the overlapped default",
    )
    ap.add_argument(
        "--cpus",
        default="",
        help="CPU list (taskset -c syntax) for redis-server and the consumers; default: any",
    )
    ap.add_argument(
        "--producer-cpus",
        default=None,
        help="CPU list for the producer (the load generator); default: the same as --cpus",
    )
    ap.add_argument(
        "--server-cpus",
        default=None,
        help="CPU list for redis-server; default: the same as --cpus",
    )
    ap.add_argument(
        "--consumer-cpus",
        default=None,
        help="CPU list for the consumers; default: the same as --cpus",
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="run every phase with overlapped and with sequential commits, alternated, "
        "and report their ratios (median over rounds)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the phases (with --compare: each pair) this many times",
    )
    ap.add_argument("--_consume", nargs=8, help=argparse.SUPPRESS)
    ap.add_argument("--_produce", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._consume:
        consume(args._consume)
        return
    if args._produce:
        produce(args._produce)
        return
    if not args.out:
        ap.error("--out is required")
    if args.consumers not in (0, 1, args.partitions):
        ap.error("--consumers must be 1 or the number of partitions")
    args.consumers = args.consumers or args.partitions
    if args.compare and args.sequential:
        ap.error("--compare runs both modes; leave out --sequential")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.overlap = "0" if args.sequential else "1"
    for placed in ("producer_cpus", "server_cpus", "consumer_cpus"):
        if getattr(args, placed) is None:
            setattr(args, placed, args.cpus)
    log = load_yoochoose_clicks(args.data)
    events = log.events[: args.limit] if args.limit else log.events
    redis_proc, url = start_redis(args.server_cpus)
    server_affinity = sorted(os.sched_getaffinity(redis_proc.pid))
    results: list[dict[str, Any]] = []
    modes = ["1", "0"] if args.compare else [args.overlap]
    phases = [p for p in args.phases.split(",") if p]
    try:
        server = redis.Redis.from_url(url)
        for rnd in range(1, args.rounds + 1):
            for mode in modes:
                args.overlap = mode
                for phase in phases:
                    rate = 0.0 if phase == "throughput" else args.rate
                    results.append({**run_phase(phase, url, args, len(events), rate), "round": rnd})
                    server.flushall()  # every run starts from an empty server
        for mode in modes if args.fault else []:
            args.overlap = mode
            results.append(fault_test(url, events, args, args.timeout))
            server.flushall()
        version = server.info("server")["redis_version"]
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            # Where the processes ran ('' = anywhere in cpus_usable); under an
            # outer taskset every process shares cpus_usable.
            "cpus_usable": sorted(os.sched_getaffinity(0)),
            "server_cpus": args.server_cpus,
            "consumer_cpus": args.consumer_cpus,
            "producer_cpus": args.producer_cpus,
            "server_affinity": server_affinity,
            "python": platform.python_version(),
            # the build matters as much as the version (recsys.python_build)
            "python_build": python_build.describe(),
            "redis_server": version,
        },
        "data": {"path": args.data, "events": len(events), "load_report": log.report.summary()},
        "segments": args.segments,
        "results": results,
        "summary": summarize(results),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"machine: {report['machine']}")
    print(
        f"{'phase':<11}{'asked':>8}{'offered':>9}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'commit p99':>12}{'applied':>9}{'dead':>6}{'  load avg (1 min) before/after':>30}"
        f"{'commits':>12}{'round':>6}"
    )
    for r in results:
        if r["phase"] == "fault":
            continue
        commits = "overlapped" if r["overlap_commits"] else "sequential"
        print(
            f"{r['phase']:<11}{r['producer_rate']!s:>8}{r['offered_events_per_s']:>9,.0f}"
            f"{r['events_per_s']:>10,.0f}"
            f"{r['eval_latency_ms_p50']:>9.2f}{r['eval_latency_ms_p99']:>9.2f}"
            f"{r['commit_latency_ms_p99']:>12.2f}{r['applied']:>9,}{r['dead_letters']:>6}"
            f"{r['load_avg_before'][0]:>20.2f} / {r['load_avg_after'][0]:.2f}"
            f"{commits:>12}{r['round']:>6}"
        )
    for r in results:
        if r["phase"] != "fault":
            print(
                f"{r['phase']}: CPU us/event {r['cpu_us_per_event']}, mean batch {r['mean_batch']}"
            )
    for r in results:
        if r["phase"] == "fault":
            print(
                f"fault test: kills {r['kills']}; after restarts {r['applied_after_restart']:,}/"
                f"{r['events']:,} applied; users not matching the offline recount: "
                f"{r['users_not_matching_offline_recount']}; stored events {r['stored_events']:,}; "
                f"exactly once: {r['exactly_once']}"
            )
    for phase, entry in report["summary"].items():
        for key in ("overlapped", "sequential"):
            if key in entry:
                m = entry[key]
                print(
                    f"{phase} {key}: p99 ms {m['p99_ms']} (median {m['median_p99_ms']}), "
                    f"events/s median {m['median_events_per_s']:,.0f}"
                )
        if "sequential_over_overlapped_p99" in entry:
            print(
                f"{phase}: per round, sequential p99 / overlapped p99 median "
                f"{entry['sequential_over_overlapped_p99']}x; overlapped events/s / sequential "
                f"median {entry['overlapped_over_sequential_events_per_s']}x"
            )
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
