"""Why ``recommend``'s ``context`` input allows ragged batches: the same repository served
twice, side by side, with and without ``allow_ragged_batch`` on ``context``.

Triton's dynamic batcher merges only requests whose inputs have equal shapes unless an
input allows ragged batches; request contexts differ in length (session ids, request
ids), so without the flag most requests with a context run alone. One run trains the
default-sized models for one epoch each, writes their bundle, builds one repository and
a copy whose ``recommend`` config lacks the flag, and asks both in turns: ``--requests``
requests at ``--concurrency``, without and with a context, for ``--rounds`` rounds.
Reported per round and server: requests/s, p99 and the mean batch (requests per
``recommend`` execution, from Triton's statistics).

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/ragged_context.py --rounds 3
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from personalization_overhead import measure
from serving_benchmark import load_average, mean_batch, train_models

RAGGED = "optional: true allow_ragged_batch: true }"
NOT_RAGGED = "optional: true }"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("RECSYS_DATA_DIR", "../shared/datasets")),
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from recsys.bundle.writer import write_bundle
    from recsys.serving.repository import RepositoryConfig, build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    recommender, two_tower, schema, dataset = train_models(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="recsys-ragged-") as tmp:
        bundle = write_bundle(recommender, two_tower, schema, dataset, Path(tmp) / "bundle")
        ragged = Path(tmp) / "ragged"
        build_repository(bundle, ragged, RepositoryConfig())
        plain = Path(tmp) / "not-ragged"
        shutil.copytree(ragged, plain)
        config = plain / "recommend" / "config.pbtxt"
        text = config.read_text()
        if RAGGED not in text:
            raise SystemExit("the recommend config no longer has allow_ragged_batch on context")
        config.write_text(text.replace(RAGGED, NOT_RAGGED))
        users = [int(u) for u in recommender.context.user_ids[:300]]

        def settings(root: Path) -> TritonServerConfig:
            return TritonServerConfig(model_repository=root, model_control_mode="explicit",
                                      load_models=("*",), startup_timeout_s=300)  # fmt: skip

        with LocalTritonServer(settings(ragged)) as a, LocalTritonServer(settings(plain)) as b:
            servers = {"allow_ragged_batch": a, "without": b}
            counts = {name: mean_batch(s, (0, 0))[1] for name, s in servers.items()}
            for round_ in range(args.rounds):
                for name, server in servers.items():
                    for with_context in (False, True):
                        r = measure(server.grpc_url, users, args.k, args.concurrency,
                                    args.requests, with_context)  # fmt: skip
                        batch, counts[name] = mean_batch(server, counts[name])
                        print(f"round {round_} {name:>18} "
                              f"{'context' if with_context else 'no context':>10}: "
                              f"{r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms, mean batch "
                              f"{batch:.2f}, load {load_average()}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
