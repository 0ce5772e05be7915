"""Benchmark of the Redis event path: YOOCHOOSE replay, latency, and a fault test.

Starts its own ``redis-server`` (loopback, persistence off, killed at exit),
then runs on the YOOCHOOSE click log (70,278 clicks; session id = user id):

1. ``throughput``: a producer process publishes the whole log as fast as it
   can (pipelined XADD) while the consumer applies it with segment evaluation
   on; reports events/s from the first read to the last commit.
2. ``latency``: the producer is paced at ``--rate`` events/s; for every event,
   latency = segment evaluation finished - XADD time (also: commit finished -
   XADD time); p50/p99 over all events and the sustained rate.
3. ``fault`` (with ``--fault``): a consumer subprocess is killed with SIGKILL
   mid-stream and restarted; afterwards every user's counts must equal an
   offline recount (each event applied exactly once).

Prints a table and writes the results as JSON to ``--out``.

Example:
    python benchmarks/bench_events.py --out artifacts/bench_events.json --fault
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from recsys.events.batch import load_yoochoose_clicks
from recsys.events.redis_store import RedisStore
from recsys.events.schema import Event
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles.config import ProfileConfig
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.offline import build_profiles
from recsys.profiles.processor import EventProcessor, ProcessorConfig
from recsys.profiles.state import UserProfile
from recsys.segments.engine import SegmentEngine

ROOT = Path(__file__).resolve().parents[1]
LOG = "yoochoose-rsc15-100k/yoochoose-clicks-100k_train_full.txt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
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


def producer(url: str, prefix: str, payloads: list[str], rate: float, batch: int) -> None:
    """Publishes ``payloads``; ``rate`` 0 means as fast as possible. Each
    entry's ``t`` field is the time its pipeline was sent."""
    store = RedisStore(url, prefix=prefix)
    start = time.perf_counter()
    step = batch if rate <= 0 else max(1, int(rate / 1000))  # paced: ~1 ms of events per send
    for i in range(0, len(payloads), step):
        if rate > 0:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        store.publish(payloads[i : i + step])


def make_consumer(url: str, prefix: str, segments: str, record: bool) -> StreamConsumer:
    store = RedisStore(url, prefix=prefix)
    config = ProfileConfig()
    engine = SegmentEngine.from_yaml(segments, config)
    proc = EventProcessor(
        store,
        ProcessorConfig(profile=config, consent=ConsentPolicy.grant_all(), record_latency=record),
        hooks=[engine],
    )
    return StreamConsumer(
        store,
        proc,
        ConsumerConfig(name="bench", batch_size=500, block_ms=100, sweep_interval_s=None),
    )


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def run_phase(
    name: str, url: str, events: list[Event], segments: str, rate: float, timeout: float
) -> dict[str, Any]:
    prefix = f"bench-{name}"
    consumer = make_consumer(url, prefix, segments, record=True)
    payloads = [e.to_json() for e in events]
    ctx = mp.get_context("fork")
    prod = ctx.Process(target=producer, args=(url, prefix, payloads, rate, 500))
    server = redis.Redis.from_url(url)
    redis_cpu0 = _redis_cpu(server)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    prod.start()
    first_read = None
    deadline = time.monotonic() + timeout
    stats = consumer.processor.stats
    while stats.entries < len(events) and time.monotonic() < deadline:
        n = consumer.step()
        if n and first_read is None:
            first_read = time.perf_counter()
    t_end = time.perf_counter()
    consumer_cpu = time.process_time() - cpu0
    prod.join(timeout=30)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    producer_cpu = (children.ru_utime + children.ru_stime) - (
        children0.ru_utime + children0.ru_stime
    )
    redis_cpu = _redis_cpu(server) - redis_cpu0
    elapsed = t_end - (first_read or t0)
    store = consumer.store
    return {
        "phase": name,
        "producer_rate": rate or "max",
        "events": len(events),
        "applied": stats.applied,
        "duplicates": stats.duplicates,
        "dead_letters": store.dead_letter_count(),
        "pending_after": store.stream_stats()["pending"],
        "seconds": round(elapsed, 3),
        "events_per_s": round(stats.entries / elapsed, 1),
        "eval_latency_ms_p50": pct(stats.latencies_us, 0.50),
        "eval_latency_ms_p99": pct(stats.latencies_us, 0.99),
        "commit_latency_ms_p50": pct(stats.commit_latencies_us, 0.50),
        "commit_latency_ms_p99": pct(stats.commit_latencies_us, 0.99),
        # CPU seconds per event, independent of what else shares the cores.
        "cpu_us_per_event": {
            "consumer": round(consumer_cpu / len(events) * 1e6, 1),
            "producer": round(producer_cpu / len(events) * 1e6, 1),
            "redis_server": round(redis_cpu / len(events) * 1e6, 1),
        },
        "batches": stats.batches,
        "mean_batch": round(stats.entries / max(stats.batches, 1), 1),
        "segment_sizes": {s: store.segment_size(s) for s in sorted(consumer_segments(segments))},
        "timed_out": stats.entries < len(events),
    }


def _redis_cpu(server: redis.Redis) -> float:
    info = server.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def consumer_segments(path: str) -> list[str]:
    return list(SegmentEngine.from_yaml(path).segments)


def fault_test(url: str, events: list[Event], segments: str, timeout: float) -> dict[str, Any]:
    prefix = "bench-fault"
    store = RedisStore(url, prefix=prefix)
    payloads = [e.to_json() for e in events]
    for i in range(0, len(payloads), 1000):
        store.publish(payloads[i : i + 1000])
    cmd = [sys.executable, __file__, "--_consume", url, prefix, segments]
    applied_key = f"{prefix}:applied"
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + timeout
    while store.r.scard(applied_key) < len(events) // 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(store.r.scard(applied_key))
    pending_at_kill = store.stream_stats()["pending"]
    proc = subprocess.Popen(cmd)
    while (
        store.r.scard(applied_key) < len(events) or store.stream_stats()["pending"]
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    # The offline recount runs the same segment rules, so whole documents
    # (counts, buckets, lists, affinities, memberships) must be equal.
    engine = SegmentEngine.from_yaml(segments, ProfileConfig())
    offline = build_profiles(events, ProfileConfig(), hooks=[engine])
    online = store.load_users(sorted(offline))
    mismatched = [
        u
        for u, p in offline.items()
        if online[u].profile is None
        or UserProfile.from_doc(json.loads(online[u].profile or "")).to_doc() != p.to_doc()
    ]
    stored_events = sum(int(store.r.llen(f"{prefix}:ev:{u}")) for u in offline)
    return {
        "phase": "fault",
        "events": len(events),
        "applied_when_killed": killed_at,
        "pending_when_killed": pending_at_kill,
        "applied_after_restart": int(store.r.scard(applied_key)),
        "stored_events": stored_events,
        "users": len(offline),
        "users_not_matching_offline_recount": len(mismatched),
        "exactly_once": not mismatched and stored_events == len(events),
    }


def consume_forever(url: str, prefix: str, segments: str) -> None:
    make_consumer(url, prefix, segments, record=False).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=False, help="JSON results file")
    ap.add_argument("--data", default=os.path.join(os.environ.get("RECSYS_DATA_DIR", ""), LOG))
    ap.add_argument("--segments", default=str(ROOT / "configs" / "segments" / "yoochoose.yaml"))
    ap.add_argument("--rate", type=float, default=20_000.0, help="paced producer rate, events/s")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N events")
    ap.add_argument("--phases", default="throughput,latency")
    ap.add_argument("--fault", action="store_true", help="also run the kill-and-restart test")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per phase")
    ap.add_argument("--_consume", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._consume:
        consume_forever(*args._consume)
        return
    if not args.out:
        ap.error("--out is required")
    log = load_yoochoose_clicks(args.data)
    events = log.events[: args.limit] if args.limit else log.events
    redis_proc, url = start_redis()
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    try:
        for phase in args.phases.split(","):
            rate = 0.0 if phase == "throughput" else args.rate
            results.append(run_phase(phase, url, events, args.segments, rate, args.timeout))
        if args.fault:
            results.append(fault_test(url, events, args.segments, args.timeout))
        server = redis.Redis.from_url(url).info("server")["redis_version"]
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "redis_server": server,
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "data": {"path": args.data, "events": len(events), "load_report": log.report.summary()},
        "segments": args.segments,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"machine: {report['machine']}")
    print(
        f"{'phase':<11}{'producer':>10}{'events/s':>10}{'p50 ms':>11}{'p99 ms':>11}"
        f"{'commit p99':>12}{'applied':>9}{'dead':>6}"
    )
    for r in results:
        if r["phase"] == "fault":
            continue
        print(
            f"{r['phase']:<11}{r['producer_rate']!s:>10}{r['events_per_s']:>10,.0f}"
            f"{r['eval_latency_ms_p50']:>11.2f}{r['eval_latency_ms_p99']:>11.2f}"
            f"{r['commit_latency_ms_p99']:>12.2f}{r['applied']:>9,}{r['dead_letters']:>6}"
        )
    for r in results:
        if r["phase"] != "fault":
            print(f"{r['phase']}: CPU us/event {r['cpu_us_per_event']}")
    for r in results:
        if r["phase"] == "fault":
            print(
                f"fault test: killed at {r['applied_when_killed']:,} applied "
                f"({r['pending_when_killed']} pending), after restart "
                f"{r['applied_after_restart']:,}/{r['events']:,}; users not matching the "
                f"offline recount: {r['users_not_matching_offline_recount']}; "
                f"exactly once: {r['exactly_once']}"
            )
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
