"""Latency of the exported DLRM ranker on one request's candidates: ONNX Runtime vs PyTorch.

Builds the ranker of the two-stage recommender at the main job's sizes (MovieLens-100K
features and table sizes, ``configs/ranker/dlrm.yaml``: 16-d tables, dense arch 64-16,
over arch 128-64-1, mean-pooled bags, the 50-item history sharing the item table),
exports it with :func:`recsys.export.onnx_export.export_ranker` and times one call on
``--candidates`` rows (default 200, one request) with one intra-op thread:

* ``onnxruntime`` -- the exported graph (CPU provider);
* ``eager`` -- the padded twin in PyTorch eager (what was exported);
* ``torchrec`` -- the TorchRec model on a prebuilt KeyedJaggedTensor;
* ``--compare NAME=PATH`` -- other exports of the same ranker (e.g. an older graph), run
  on the same inputs, timed in the same rounds and checked against the eager twin.

Every engine runs once per round, in turns, so that load from other processes hits all
of them alike. Latency does not depend on the weights' values, so the ranker is not
trained.

With ``--triton N`` the export is also served by the local ``tritonserver`` through the
local onnxruntime stand-in backend (one CPU instance, one intra-op thread, no queue
delay) and gets ``N`` requests of ``--candidates`` rows, one at a time, over gRPC; the
script reports the client's p50 and, from Triton's statistics, the server's mean time
per request (``compute_infer``: the stand-in's ``execute``) against the in-process ONNX
Runtime time: the difference is the stand-in's own cost per request. ``--stand-in
NAME=PATH`` (repeatable) serves with other versions of the stand-in, one server each,
in turns.

Usage:
    RECSYS_DATA_DIR=/path/to/datasets python benchmarks/ranker_onnx_benchmark.py \\
        --repeats 500 --save-onnx /tmp/ranker.onnx --compare before=/tmp/ranker_before.onnx \\
        --triton 500 --stand-in old=/tmp/old_model.py
"""

from __future__ import annotations

import os

# One thread per engine; spinning OpenMP threads steal a shared machine's cores.
# Must be set before numpy and torch load their thread pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]


def build_ranker(data_dir: Path) -> tuple[Any, Any]:
    """An untrained two-stage ranker at the main job's sizes, and the feature schema."""
    import yaml

    from recsys.data.movielens import load_ml100k
    from recsys.data.splits import stratified_split
    from recsys.features.build import build_features
    from recsys.features.schema import FeatureSchema
    from recsys.recommend import RankerContext, RankerDataConfig
    from recsys.recommend.two_stage import build_bag_ranker, ranker_config_from_dict

    data = load_ml100k(data_dir / "ml-100k")
    train, test = stratified_split(data.interactions, 0.75, "item", 42)
    schema = FeatureSchema.from_yaml(REPO / "configs/schema/ml100k.yaml")
    dataset = build_features(data, (train, test), schema)
    context = RankerContext.from_processed(
        dataset, schema, dataset.vocabs, RankerDataConfig(num_candidates=200)
    )
    raw = yaml.safe_load((REPO / "configs/ranker/dlrm.yaml").read_text())["model"]
    config, pooling = ranker_config_from_dict(raw, seed=0)
    model = build_bag_ranker(
        config,
        schema,
        context.sparse_names,
        context.num_embeddings,
        len(context.dense_names),
        pooling,
    )
    return model.eval(), schema


def time_sessions(
    sessions: dict[str, ort.InferenceSession],
    feeds: dict[str, np.ndarray],
    repeats: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Milliseconds per ``run`` of each session, in turns (one call of each per round)."""
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feeds)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in tqdm(range(repeats), desc="onnx graphs", mininterval=2.0):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


RANKER_CONFIG = """
name: "ranker"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [
  {{ name: "dense" data_type: TYPE_FP32 dims: [ {n_dense} ] }},
  {{ name: "ids" data_type: TYPE_INT64 dims: [ {n_features}, {seq_len} ] }}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
"""


def time_triton(
    onnx_path: Path,
    feeds: dict[str, np.ndarray],
    stand_ins: dict[str, Path | None],
    requests: int,
    rounds: int = 3,
) -> dict[str, dict[str, float]]:
    """Serves ``onnx_path`` with each stand-in and times ``requests`` sequential calls.

    Each stand-in gets ``rounds`` turns of ``requests // rounds`` calls (a fresh server
    per turn), so that load from other processes hits them alike.

    Returns:
        Per stand-in: client p50 ms and the server's mean compute_input / compute_infer /
        compute_output ms per request.
    """
    import tritonclient.grpc as grpcclient

    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    with tempfile.TemporaryDirectory(prefix="recsys-ranker-triton-") as tmp:
        root = Path(tmp) / "repository"
        (root / "ranker" / "1").mkdir(parents=True)
        shutil.copyfile(onnx_path, root / "ranker" / "1" / "model.onnx")
        ids = feeds["ids"]
        (root / "ranker" / "config.pbtxt").write_text(
            RANKER_CONFIG.format(
                max_batch=max(1024, len(ids)),
                n_dense=feeds["dense"].shape[1],
                n_features=ids.shape[1],
                seq_len=ids.shape[2],
            )
        )
        client_ms: dict[str, list[float]] = {name: [] for name in stand_ins}
        server_ns: dict[str, dict[str, int]] = {name: {} for name in stand_ins}
        per_round = max(1, requests // rounds)
        for _ in range(rounds):
            for name, stand_in in stand_ins.items():
                cfg = TritonServerConfig(model_repository=root, http_port=None)
                if stand_in is not None:
                    cfg.onnxruntime_stand_in = stand_in
                with LocalTritonServer(cfg) as server:
                    client = grpcclient.InferenceServerClient(server.grpc_url)
                    inputs = []
                    for key, dtype in (("dense", "FP32"), ("ids", "INT64")):
                        tensor = grpcclient.InferInput(key, list(feeds[key].shape), dtype)
                        tensor.set_data_from_numpy(feeds[key])
                        inputs.append(tensor)
                    outputs = [grpcclient.InferRequestedOutput("probabilities")]
                    for _ in range(20):  # warm-up, not in the statistics below
                        client.infer("ranker", inputs, outputs=outputs)
                    before = _stats(client)
                    for _ in tqdm(range(per_round), desc=f"triton {name}", mininterval=2.0):
                        start = time.perf_counter()
                        client.infer("ranker", inputs, outputs=outputs)
                        client_ms[name].append((time.perf_counter() - start) * 1e3)
                    after = _stats(client)
                    for key, value in after.items():
                        server_ns[name][key] = server_ns[name].get(key, 0) + value - before[key]
                    client.close()
    result = {}
    for name in stand_ins:
        ns = server_ns[name]
        count = max(ns["count"], 1)
        result[name] = {"client_p50_ms": statistics.median(client_ms[name])} | {
            f"server_{key}_ms": ns[key] / count / 1e6
            for key in ("compute_input", "compute_infer", "compute_output")
        }
    return result


def _stats(client: Any) -> dict[str, int]:
    stats = client.get_inference_statistics("ranker").model_stats[0].inference_stats
    return {
        "count": int(stats.success.count),
        "compute_input": int(stats.compute_input.ns),
        "compute_infer": int(stats.compute_infer.ns),
        "compute_output": int(stats.compute_output.ns),
    }


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    default_data = os.environ.get("RECSYS_DATA_DIR", str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--save-onnx", type=Path, default=None, help="copy the export here")
    parser.add_argument(
        "--compare", action="append", default=[], metavar="NAME=PATH",
        help="another export of the same ranker to time on the same inputs",
    )  # fmt: skip
    parser.add_argument(
        "--triton", type=int, default=0, metavar="N",
        help="also serve the export on the local tritonserver and send N requests",
    )  # fmt: skip
    parser.add_argument(
        "--stand-in", action="append", default=[], metavar="NAME=PATH",
        help="another onnxruntime stand-in model.py to serve with (with --triton)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()

    from recsys.export.onnx_export import export_ranker, time_ranker
    from recsys.export.twins import RankerTwin

    model, schema = build_ranker(args.data_dir)
    compare = {}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--compare takes NAME=PATH of an existing file, got {item!r}")
        compare[name] = Path(path)

    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="recsys-ranker-bench-") as tmp:
        bundle = export_ranker(model, schema, tmp)
        path = bundle.results["ranker"].path
        ops = bundle.results["ranker"].op_counts
        if args.save_onnx is not None:
            shutil.copyfile(path, args.save_onnx)
        names = list(model.feature_names)
        twin = RankerTwin(model, names, {f: schema[f].max_len for f in names})
        latency = time_ranker(
            twin, path, args.candidates, args.repeats, warmup=args.warmup, threads=1, model=model
        )
        dense, ids = twin.example_inputs(args.candidates, seed=0)
        feeds = {"dense": dense.numpy(), "ids": ids.numpy()}
        with torch.inference_mode():
            eager_probs = twin(dense, ids)[1].numpy()
        sessions = {"current": _session(path)} | {n: _session(p) for n, p in compare.items()}
        diffs = {
            name: float(np.abs(s.run(["probabilities"], feeds)[0] - eager_probs).max())
            for name, s in sessions.items()
        }
        graphs = time_sessions(sessions, feeds, args.repeats, args.warmup)
        triton: dict[str, dict[str, float]] = {}
        if args.triton:
            stand_ins: dict[str, Path | None] = {"current": None}
            for item in args.stand_in:
                name, sep, stand_in = item.partition("=")
                if not sep or not Path(stand_in).is_file():
                    raise SystemExit(f"--stand-in takes NAME=PATH of a file, got {item!r}")
                stand_ins[name] = Path(stand_in)
            triton = time_triton(path, feeds, stand_ins, args.triton)
    load_after = _load()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}")
    print(f"load average before: {load_before}, after: {load_after}")
    print(f"ranker graph ops: {dict(sorted(ops.items()))}")
    print(
        f"one call on {latency.n_candidates} candidates, 1 thread, {latency.repeats} calls; "
        f"p50 (mean) ms:"
    )
    ort_p50 = latency.onnxruntime_p50_ms
    print(f"  onnxruntime  {ort_p50:.3f} ({latency.onnxruntime_mean_ms:.3f})")
    print(f"  eager twin   {latency.eager_p50_ms:.3f} ({latency.eager_mean_ms:.3f})")
    torchrec_p50 = latency.torchrec_p50_ms or float("nan")
    print(f"  torchrec     {torchrec_p50:.3f} ({latency.torchrec_mean_ms or float('nan'):.3f})")
    print(
        f"  speed of onnxruntime: {latency.eager_p50_ms / ort_p50:.2f}x the eager twin, "
        f"{torchrec_p50 / ort_p50:.2f}x TorchRec; max |onnx - eager| {latency.max_abs_diff:.2e}"
    )
    print("ONNX graphs on the same inputs, in turns, p50 (mean) ms, max |probs - eager|:")
    summary = {}
    for name, values in graphs.items():
        p50, mean = statistics.median(values), statistics.fmean(values)
        summary[name] = {"p50_ms": p50, "mean_ms": mean, "max_abs_diff": diffs[name]}
        print(f"  {name:<12} {p50:.3f} ({mean:.3f})  {diffs[name]:.2e}")
    if triton:
        print(
            f"local Triton, onnxruntime stand-in, {args.triton} sequential requests of "
            f"{args.candidates} rows: client p50 ms; server ms per request (input / infer / "
            "output):"
        )
        for name, row in triton.items():
            print(
                f"  {name:<12} {row['client_p50_ms']:.3f}; {row['server_compute_input_ms']:.3f} "
                f"/ {row['server_compute_infer_ms']:.3f} / {row['server_compute_output_ms']:.3f}"
            )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_before": load_before,
            "load_after": load_after,
            "ranker": latency.__dict__,
            "graphs": summary,
            "op_counts": ops,
            "triton": triton,
        }
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
