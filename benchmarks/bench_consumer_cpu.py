"""CPU per event of the consumer's batch work, in one process, without a store.

Replays the YOOCHOOSE click log (or its first ``--limit`` events) through the
stream consumer's per-batch computation (:class:`EventProcessor`: JSON, validation,
profile update, segment rules, profile documents and the commit's arguments) in
batches of ``--batch`` events, as a consumer computes them at a paced rate, and
times each stage on its own over the same events:

* ``parse``: the payload text to a dict (``decode_json``);
* ``validate``: the dict to a typed event;
* ``apply``: the profile update (``UserProfile.apply``);
* ``segments``: the segment rules after each update (``SegmentEngine.on_event``);
* ``documents``: each batch's written profiles as JSON (one per user and batch);
* ``build``: all of the above as the consumer runs it (``EventProcessor``'s batch
  computation; users start empty, as the stream's version hints tell it);
* ``commit_args``: the Redis commit script's arguments for each batch;
* ``build_after_idle`` (with ``--idle-us N``): ``build`` again, with the process
  asleep for N microseconds before each batch, as a paced consumer waits for its
  next entries; only the computation after each wake-up is timed, so the
  difference from ``build`` is what the wake-ups cost the same work (cold
  caches), the part of a live consumer's CPU that this replay otherwise leaves
  out.

Each stage runs ``--repeat`` times; the report gives the best (the least
disturbed by other work on the machine) and every run. Store calls, the
network and waiting are left out: ``bench_events.py`` measures those. To compare
two versions of the code, run this once with each on ``PYTHONPATH``, alternated.

Example:
    python benchmarks/bench_consumer_cpu.py --out artifacts/consumer_cpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys import python_build
from recsys.events.batch import load_yoochoose_clicks
from recsys.events.redis_store import RedisStore
from recsys.events.sqlite_store import SqliteStore
from recsys.events.store import Delivery
from recsys.events.validation import EventValidator, ValidationConfig
from recsys.privacy.consent import ConsentPolicy
from recsys.profiles import processor
from recsys.profiles.config import ProfileConfig
from recsys.profiles.processor import CachedUser, EventProcessor, ProcessorConfig, encode_doc
from recsys.profiles.state import UserProfile
from recsys.segments.engine import SegmentEngine

# How the consumer reads payloads; versions of the code before decode_json used
# json.loads (this script also measures them, for comparisons).
decode_json: Callable[[str], Any] = getattr(processor, "decode_json", json.loads)
ROOT = Path(__file__).resolve().parents[1]
LOG = "yoochoose-rsc15-100k/yoochoose-clicks-100k_train_full.txt"


def _best_of(repeat: int, run: Callable[[], float]) -> dict[str, Any]:
    """Runs ``run`` (returning seconds) ``repeat`` times with the collector
    paused, as the consumer freezes it; seconds of each run."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            times.append(run())
        finally:
            gc.enable()
    return {"best": min(times), "runs": times}


def measure(
    payloads: list[str], segments: str, batch: int, repeat: int, idle_us: int = 0
) -> dict[str, dict[str, Any]]:
    """Seconds per stage over all ``payloads`` (see the module docstring);
    with ``idle_us`` also ``build_after_idle``."""
    config = ProfileConfig()
    validator = EventValidator(ValidationConfig(max_future_skew_s=None))
    raws = [decode_json(p) for p in payloads]
    events = [validator.validate(r) for r in raws]
    clock = time.perf_counter
    out: dict[str, dict[str, Any]] = {}

    def parse() -> float:
        t0 = clock()
        for p in payloads:
            decode_json(p)
        return clock() - t0

    def validate() -> float:
        t0 = clock()
        for r in raws:
            validator.validate(r)
        return clock() - t0

    def profiles_and_rules() -> tuple[float, float]:
        engine = SegmentEngine.from_yaml(segments, config)
        users: dict[str, CachedUser] = {}
        t_apply = t_rules = 0.0
        for e in events:
            user = users.get(e.user_id)
            if user is None:
                user = users[e.user_id] = CachedUser(
                    e.user_id, 0, UserProfile(e.user_id), {}, frozenset()
                )
            t0 = clock()
            user.profile.apply(e, config)
            t1 = clock()
            engine.on_event(user, e)
            t_rules += clock() - t1
            t_apply += t1 - t0
        return t_apply, t_rules

    out["parse"] = _best_of(repeat, parse)
    out["validate"] = _best_of(repeat, validate)
    split = [profiles_and_rules() for _ in range(repeat)]
    out["apply"] = {"best": min(a for a, _ in split), "runs": [a for a, _ in split]}
    out["segments"] = {"best": min(r for _, r in split), "runs": [r for _, r in split]}

    # Profiles as each batch leaves them, written once per user and batch.
    final: dict[str, UserProfile] = {}
    written: list[UserProfile] = []
    for i in range(0, len(events), batch):
        seen: dict[str, None] = {}
        for e in events[i : i + batch]:
            final.setdefault(e.user_id, UserProfile(e.user_id)).apply(e, config)
            seen[e.user_id] = None
        written += [final[u] for u in seen]

    def documents() -> float:
        t0 = clock()
        for p in written:
            encode_doc(p.to_doc())
        return clock() - t0

    out["documents"] = _best_of(repeat, documents)

    deliveries = []
    first: set[str] = set()
    for i, (e, p) in enumerate(zip(events, payloads, strict=True)):
        hint = None if e.user_id in first else 0  # a new user: no record to load
        first.add(e.user_id)
        deliveries.append(Delivery(f"0:{i}-0", p, 1, None, e.user_id, hint))
    redis = RedisStore.__new__(RedisStore)  # its argument packing only; never connects
    redis.prefix, redis.group, redis.stream_keys, redis.partitions = "b", "g", ["b:s:0"], 1
    commit_args: list[float] = []

    def build(idle_s: float = 0.0) -> float:
        engine = SegmentEngine.from_yaml(segments, config)
        proc = EventProcessor(
            SqliteStore(),
            ProcessorConfig(profile=config, consent=ConsentPolicy.grant_all()),
            hooks=[engine],
        )
        spent = packing = 0.0
        for i in range(0, len(deliveries), batch):
            if idle_s:
                time.sleep(idle_s)  # not timed: only what follows the wake-up
            t0 = clock()
            attempt = proc._build(deliveries[i : i + batch], {}, set(), set(), True)
            t1 = clock()
            redis._commit_args(attempt.batch)
            packing += clock() - t1
            spent += t1 - t0
        if not idle_s:
            commit_args.append(packing)
        return spent

    if idle_us:
        # Alternated, so that both see the machine at the same speeds.
        pairs = [
            (_best_of(1, build)["best"], _best_of(1, lambda: build(idle_us / 1e6))["best"])
            for _ in range(repeat)
        ]
        out["build"] = {"best": min(a for a, _ in pairs), "runs": [a for a, _ in pairs]}
        out["build_after_idle"] = {"best": min(b for _, b in pairs), "runs": [b for _, b in pairs]}
    else:
        out["build"] = _best_of(repeat, build)
    out["commit_args"] = {"best": min(commit_args), "runs": commit_args}
    out["documents"]["written_per_event"] = len(written) / len(events)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--data", default=os.path.join(os.environ.get("RECSYS_DATA_DIR", ""), LOG))
    ap.add_argument("--segments", default=str(ROOT / "configs" / "segments" / "yoochoose.yaml"))
    ap.add_argument("--batch", type=int, default=21, help="events per batch (21: paced 20,000/s)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per stage; the best is reported")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N events")
    ap.add_argument(
        "--idle-us",
        type=int,
        default=0,
        help="also time the batch computation after N us asleep before each batch (0: off)",
    )
    args = ap.parse_args()
    if args.batch < 1 or args.repeat < 1:
        ap.error("--batch and --repeat must be at least 1")
    if args.idle_us < 0:
        ap.error("--idle-us must not be negative")
    events = load_yoochoose_clicks(args.data).events
    events = events[: args.limit] if args.limit else events
    payloads = [e.to_json() for e in events]
    stages = measure(payloads, args.segments, args.batch, args.repeat, args.idle_us)
    n = len(payloads)
    per_event = {k: round(v["best"] / n * 1e6, 2) for k, v in stages.items()}
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # the build matters as much as the version (recsys.python_build)
            "python_build": python_build.describe(),
            "load_avg": os.getloadavg(),
        },
        "events": n,
        "batch": args.batch,
        "idle_us": args.idle_us,
        "us_per_event": per_event,
        "us_per_event_runs": {
            k: [round(t / n * 1e6, 2) for t in v["runs"]] for k, v in stages.items()
        },
        "median_us_per_event": {
            k: round(statistics.median(v["runs"]) / n * 1e6, 2) for k, v in stages.items()
        },
        "documents_written_per_event": round(stages["documents"]["written_per_event"], 3),
    }
    if args.idle_us:
        # Each alternated pair's ratio: the two saw the machine at similar speeds.
        runs = zip(stages["build_after_idle"]["runs"], stages["build"]["runs"], strict=True)
        report["build_after_idle_ratios"] = sorted(round(a / b, 3) for a, b in runs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{n:,} events, batches of {args.batch}; us per event (best of {args.repeat}):")
    for k, v in per_event.items():
        print(f"  {k:16s} {v:7.2f}")
    if args.idle_us:
        ratios = report["build_after_idle_ratios"]
        print(
            f"  after {args.idle_us} us asleep per batch: {statistics.median(ratios):.2f}x the"
            f" batch computation (median of {len(ratios)} alternated pairs)"
        )
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
