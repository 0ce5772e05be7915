"""The HTTP collector against its predecessor, side by side in one run.

Starts two collector processes on the same kind of store (SQLite by default, a
``redis-server`` of its own with ``--redis``): the current one
(:mod:`recsys.events.collector`, uvicorn) and the one of git commit ``2373fc6``
(``http.server.ThreadingHTTPServer``), loaded at run time from ``git show
2373fc6:src/recsys/events/collector.py`` into a temporary module, so the old
code never returns to the package. Both use today's validator and store.

Then, for each level of ``--clients`` (alternating old and new), that many
clients on keep-alive connections post batches of ``--batch`` valid events (every
event id unique) for ``--duration`` seconds, and a burst of ``--burst`` clients
open their connections at once and post ``--burst-requests`` batches each. Per
run: events/s accepted, request latency p50/p99, errors by kind (connection
resets counted apart). At the end each server reports what its store holds: the
events in the stream must equal the events accepted (nothing lost or doubled).

The clients are asyncio streams in this process (pre-built request templates,
minimal parsing), each server is one process: on a 2-core machine client and
server share the cores, as in the numbers in ``docs/realtime.md``.

Example:
    python benchmarks/bench_collector.py --out artifacts/bench_collector.json
    python benchmarks/bench_collector.py --out artifacts/bench_collector_redis.json --redis
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from recsys.events.collector import CollectorConfig

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "2373fc6"
KEY = "bench-key-0123456789"
IMPLS = ("old", "new")


# -- server side (a subprocess: python bench_collector.py --serve ...) -----------------
def _load_old_collector(workdir: Path) -> Any:
    """The collector module of commit BASELINE, as a temporary module."""
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:src/recsys/events/collector.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = workdir / f"collector_{BASELINE}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"collector_{BASELINE}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _open_store(spec: str) -> Any:
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        from recsys.events.sqlite_store import SqliteStore

        return SqliteStore(where)
    from recsys.events.redis_store import RedisStore

    url, _, prefix = where.rpartition("|")
    return RedisStore(url, prefix=prefix)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _stream_events(store: Any) -> int:
    """Events in the stream (a Redis entry can hold several), read through a
    consumer of a group of its own."""
    total = 0
    name = f"count-{uuid.uuid4().hex[:8]}"
    while True:
        got = store.read(name, 10_000, 0, pending=False)
        if not got:
            return total
        total += len(got)


def serve(args: argparse.Namespace) -> None:
    """Runs one collector until stdin closes, then prints its store's counts."""
    workdir = Path(args.workdir)
    if args.serve == "old":
        module = _load_old_collector(workdir)
    else:
        from recsys.events import collector as module
    store = _open_store(args.store)
    kwargs: dict[str, Any] = {"port": 0, "api_keys": {"bench": KEY}}
    if args.serve == "new":
        kwargs["store_threads"] = args.threads
        kwargs["loop"] = args.loop
    collector = module.EventCollector(store, module.CollectorConfig(**kwargs))
    host, port = collector.start()
    print(json.dumps({"host": host, "port": port, "rss_kb": _rss_kb()}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    rss = _rss_kb()
    cpu = os.times()
    collector.stop()
    print(
        json.dumps(
            {
                "stream_events": _stream_events(store),
                "dead_letters": store.dead_letter_count(),
                "rss_kb_end": rss,
                "cpu_s": round(cpu.user + cpu.system, 2),
            }
        ),
        flush=True,
    )
    store.close()


# -- client side ------------------------------------------------------------------------
def _template(batch: int) -> str:
    """A request body of ``batch`` valid click events; ``%(p)s`` and the event
    index make each id unique, timestamps are now (within the skew allowed)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    events = [
        (
            f'{{"event_id":"%(p)s-{k}","user_id":"u{k * 7 % 1000}","session_id":"s{k}",'
            f'"type":"click","timestamp":"{stamp}","item_id":{1000 + k},'
            '"context":{"device_type":"mobile","country":"DE","browser":"firefox"},'
            f'"payload":{{"position":{k % 10},"category":"sports","url":"https://shop.example/i/{k}"}}}}'
        )
        for k in range(batch)
    ]
    return "[" + ",".join(events) + "]"


class Stats:
    """What one run's clients saw."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.accepted = 0
        self.accepted_in_window = 0  # by replies that came before the deadline
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed_early"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return type(exc).__name__


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, bytes, bool]:
    """One request on an open connection: (status, body, server closes)."""
    writer.write(head + b"%d\r\n\r\n" % len(body) + body)
    await writer.drain()
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    close = False
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            close = True
    return status, await reader.readexactly(length), close


class Gate:
    """Starts the clients together: ``until`` is set when the gate opens."""

    def __init__(self, duration: float | None) -> None:
        self.duration = duration
        self.event = asyncio.Event()
        self.until: float | None = None
        self.ready = 0  # clients waiting at the gate

    def open(self) -> float:
        now = time.perf_counter()
        if self.duration is not None:
            self.until = now + self.duration
        self.event.set()
        return now


async def _client(
    host: str,
    port: int,
    template: str,
    prefix: str,
    stats: Stats,
    gate: Gate,
    requests: int | None,
    timeout: float,
    connect_first: bool,
) -> None:
    """Posts batches on one keep-alive connection (reopened after errors or a
    close) until the gate's deadline or after ``requests`` posts.
    ``connect_first`` opens the connection before the gate (steady runs time
    posting only); otherwise connecting is part of the run (bursts)."""
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    sent = 0
    if connect_first:
        try:
            conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as e:
            stats.error("connect_" + _kind(e))
    gate.ready += 1
    await gate.event.wait()
    while True:
        if gate.until is not None and time.perf_counter() >= gate.until:
            break
        if requests is not None and sent >= requests:
            break
        body = (template % {"p": f"{prefix}-{sent}"}).encode()
        sent += 1
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            status, reply, close = await asyncio.wait_for(_post(*conn, head, body), timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
            stats.error(_kind(e))
            if conn is not None:
                conn[1].close()
            conn = None
            continue
        done = time.perf_counter()
        stats.latencies.append(done - t0)
        if status == 200:
            accepted = int(json.loads(reply)["accepted"])
            stats.accepted += accepted
            if gate.until is None or done <= gate.until:
                stats.accepted_in_window += accepted
        else:
            stats.error(f"http_{status}")
        if close:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()


def _summary(
    stats: Stats, seconds: float, batch: int, window: float | None = None
) -> dict[str, Any]:
    lat = sorted(stats.latencies)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None

    return {
        "seconds": round(seconds, 3),
        "requests": len(lat),
        "events_accepted": stats.accepted,
        "events_per_s": round(stats.accepted / seconds, 1) if seconds > 0 else 0.0,
        # Steady runs: only replies within the run's duration, over that
        # duration (leaves out the time the slowest clients took to finish).
        "events_per_s_in_window": round(stats.accepted_in_window / window, 1) if window else None,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None,
        "errors": dict(sorted(stats.errors.items())),
        "resets": stats.errors.get("reset", 0),
        "batch": batch,
    }


async def _steady(
    host: str, port: int, clients: int, duration: float, template: str, tag: str, batch: int
) -> dict[str, Any]:
    stats = Stats()
    gate = Gate(duration)
    tasks = [
        asyncio.create_task(
            _client(host, port, template, f"{tag}-c{i}", stats, gate, None, 60.0, True)
        )
        for i in range(clients)
    ]
    while gate.ready < clients:  # connections open (the old server's take a while)
        await asyncio.sleep(0.01)
    t0 = gate.open()
    await asyncio.gather(*tasks)
    return {"clients": clients, **_summary(stats, time.perf_counter() - t0, batch, duration)}


async def _burst(
    host: str, port: int, clients: int, requests: int, template: str, tag: str, batch: int
) -> dict[str, Any]:
    """``clients`` connections opened at the same moment, ``requests`` posts each."""
    stats = Stats()
    gate = Gate(None)
    tasks = [
        asyncio.create_task(
            _client(host, port, template, f"{tag}-b{i}", stats, gate, requests, 60.0, False)
        )
        for i in range(clients)
    ]
    await asyncio.sleep(0)  # every client waits at the gate
    t0 = gate.open()
    await asyncio.gather(*tasks)
    out = _summary(stats, time.perf_counter() - t0, batch)
    return {"clients": clients, "requests_per_client": requests, **out}


# -- orchestration -----------------------------------------------------------------------
class Server:
    """A collector process of one implementation."""

    def __init__(self, impl: str, store: str, workdir: Path, args: argparse.Namespace) -> None:
        self.impl = impl
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", impl]
        command += ["--store", store, "--workdir", str(workdir)]
        command += ["--threads", str(args.threads), "--loop", args.loop]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        self.host, self.port = first["host"], int(first["port"])
        self.rss_kb_start = int(first["rss_kb"])

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=120)
        return {"rss_kb_start": self.rss_kb_start, **json.loads(line)}


def _redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "--redis needs redis-server on PATH (Debian: apt-get install redis-server)"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _steal_s() -> float:
    """CPU seconds the hypervisor took from this machine so far (all CPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _measured(server: Server, work: Any) -> dict[str, Any]:
    """Runs the coroutine ``work``; its result with the CPU the server and
    the clients used meanwhile, and the time stolen by the hypervisor."""
    cpu0, own0, steal0 = _proc_cpu_s(server.proc.pid), os.times(), _steal_s()
    result: dict[str, Any] = asyncio.run(work)
    own = os.times()
    result["server_cpu_s"] = round(_proc_cpu_s(server.proc.pid) - cpu0, 2)
    result["client_cpu_s"] = round(own.user + own.system - own0.user - own0.system, 2)
    result["steal_s"] = round(_steal_s() - steal0, 2)
    events = result["events_accepted"]
    result["server_cpu_us_per_event"] = (
        round(result["server_cpu_s"] / events * 1e6, 1) if events else None
    )
    return result


def _machine() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(x) for x in args.clients.split(",")]
    template = _template(args.batch)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        workdir = Path(tmp)
        redis_proc = None
        if args.redis:
            redis_proc, url = _redis(workdir)
        try:
            servers: dict[str, Server] = {}
            for impl in IMPLS:
                if args.redis:
                    store = f"redis:{url}|bc{impl}{uuid.uuid4().hex[:6]}"
                else:
                    store = f"sqlite:{workdir / f'{impl}.db'}"
                servers[impl] = Server(impl, store, workdir, args)
            runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
            bursts: dict[str, dict[str, Any]] = {}
            for clients in levels:
                for impl in IMPLS:  # alternated, so both see the same machine
                    s = servers[impl]
                    work = _steady(s.host, s.port, clients, args.duration, template,
                                   f"{impl}-{clients}", args.batch)  # fmt: skip
                    result = _measured(s, work)
                    runs[impl].append(result)
                    print(f"{impl:>3} {clients:>4} clients: {_line(result)}", flush=True)
            if args.burst > 0:
                for impl in IMPLS:
                    s = servers[impl]
                    work = _burst(s.host, s.port, args.burst, args.burst_requests, template,
                                  f"{impl}-burst", args.batch)  # fmt: skip
                    bursts[impl] = _measured(s, work)
                    print(f"{impl:>3} burst {args.burst}: {_line(bursts[impl])}", flush=True)
            stores = {impl: servers[impl].finish() for impl in IMPLS}
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(timeout=10)
    load_after = os.getloadavg()
    accepted = {
        impl: sum(r["events_accepted"] for r in runs[impl])
        + bursts.get(impl, {}).get("events_accepted", 0)
        for impl in IMPLS
    }
    ratios = [
        {
            "clients": new["clients"],
            "events_per_s": _ratio(new["events_per_s"], old["events_per_s"]),
            "events_per_s_in_window": _ratio(
                new["events_per_s_in_window"], old["events_per_s_in_window"]
            ),
            "p50_ms": _ratio(new["p50_ms"], old["p50_ms"]),
            "p99_ms": _ratio(new["p99_ms"], old["p99_ms"]),
        }
        for old, new in zip(runs["old"], runs["new"], strict=True)
    ]
    at64 = next((r["events_per_s"] for r in ratios if r["clients"] == 64), None)
    return {
        "baseline": BASELINE,
        "store": "redis" if args.redis else "sqlite",
        "batch": args.batch,
        "duration_s": args.duration,
        "new_settings": {"store_threads": args.threads, "loop": args.loop},
        "machine": _machine(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "runs": runs,
        "burst": bursts,
        "ratios_new_over_old": ratios,
        "stores": stores,
        "accepted_total": accepted,
        "nothing_lost_or_doubled": {
            impl: stores[impl]["stream_events"] == accepted[impl] for impl in IMPLS
        },
        "goals": {
            "zero_resets_in_burst": bursts.get("new", {}).get("resets", 0) == 0 if bursts else None,
            "throughput_3x_at_64_clients": at64 >= 3.0 if at64 is not None else None,
        },
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['events_per_s']:>9.0f} ev/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
        f"requests {r['requests']}  errors {r['errors'] or 0}  server cpu "
        f"{r.get('server_cpu_s')} s  client cpu {r.get('client_cpu_s')} s  "
        f"steal {r.get('steal_s')} s"
    )


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nstore {report['store']}, batches of {report['batch']} events; load "
        f"{report['load_before']} -> {report['load_after']}"
    )
    print(
        f"{'clients':>7} | {'old ev/s':>8} {'new ev/s':>8} {'x':>5} | {'window:old':>10} "
        f"{'new':>7} {'x':>5} | {'p50 old':>7} {'new':>6} | {'p99 old':>8} {'new':>6} | "
        "CPU us/event old new | errors old/new"
    )
    for old, new, ratio in zip(
        report["runs"]["old"], report["runs"]["new"], report["ratios_new_over_old"], strict=True
    ):
        print(
            f"{old['clients']:>7} | {old['events_per_s']:>8.0f} {new['events_per_s']:>8.0f} "
            f"{ratio['events_per_s'] or 0:>5.2f} | {old['events_per_s_in_window']:>10.0f} "
            f"{new['events_per_s_in_window']:>7.0f} {ratio['events_per_s_in_window'] or 0:>5.2f} | "
            f"{old['p50_ms']!s:>7} {new['p50_ms']!s:>6} | "
            f"{old['p99_ms']!s:>8} {new['p99_ms']!s:>6} | "
            f"{old['server_cpu_us_per_event']!s:>9} {new['server_cpu_us_per_event']!s:>5} | "
            f"{sum(old['errors'].values())}/{sum(new['errors'].values())}"
        )
    for impl, b in report["burst"].items():
        print(
            f"burst {impl}: {b['clients']} clients x {b['requests_per_client']} posts: "
            f"{b['events_per_s']:.0f} ev/s, resets {b['resets']}, errors {b['errors']}"
        )
    for impl, s in report["stores"].items():
        print(
            f"{impl}: stream holds {s['stream_events']} events, accepted "
            f"{report['accepted_total'][impl]}; RSS {s['rss_kb_start']} -> {s['rss_kb_end']} kB"
        )
    print("goals:", report["goals"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the JSON report here")
    ap.add_argument("--redis", action="store_true", help="a redis-server store (default SQLite)")
    ap.add_argument("--clients", default="1,8,64", help="concurrent clients per run")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    ap.add_argument("--batch", type=int, default=100, help="events per request")
    ap.add_argument("--burst", type=int, default=200, help="clients connecting at once (0: none)")
    ap.add_argument("--burst-requests", type=int, default=3, help="posts per burst client")
    ap.add_argument(
        "--threads",
        type=int,
        default=CollectorConfig().store_threads,
        help="store threads of the new collector (default: its default)",
    )
    ap.add_argument("--loop", default="auto", help="event loop of the new collector")
    ap.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args)
        return
    report = run(args)
    print_table(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
