"""Command line of the serving layer, and :func:`serve_demo` for the main job.

Commands (``python -m recsys.serving.cli <command> --help`` for every option)::

    build-repo --bundle artifacts/ml-100k/bundle --out artifacts/triton_repo
        generate the Triton model repository from a run bundle (training's last stage)
    check-bundle --bundle artifacts/ml-100k/bundle
        check a bundle (format, files, checksums) and print what it holds
    serve --repository artifacts/triton_repo [--grpc-port 8001]
        serve it with the local tritonserver (explicit model control, all models loaded)
    recommend --user-id 1 --k 10 [--url 127.0.0.1:8001] [--ssl --ca-file ca.pem]
        one typed gRPC request to the ``recommend`` model
    roll-in --repository artifacts/triton_repo --model ranker --source new/ranker/1
        copy a new version into the repository and load it on the running server
        (model control is an admin API: the key comes from RECSYS_TRITON_ADMIN_KEY or
        RECSYS_TRITON_ADMIN_KEY_FILE, as for ``serve``)
    health [--url 127.0.0.1:8001]
        exit 0 when every model ``recommend`` needs is ready, else 1 (naming them)
    gateway --url 127.0.0.1:8001 [--host 127.0.0.1 --port 8080 --max-body-bytes 65536]
        serve ``recommend`` over HTTP JSON (:mod:`recsys.serving.http_gateway`): checked
        requests, 4xx for bad ones, a body limit; forwards to Triton over gRPC
    demo --bundle artifacts/ml-100k/bundle --users 1 2 3 --k 10
        build, serve, query and stop: :func:`serve_demo`

Example::

    python -m recsys.serving.cli build-repo --bundle artifacts/ml-100k/bundle --out /tmp/repo
    python -m recsys.serving.cli serve --repository /tmp/repo &
    python -m recsys.serving.cli recommend --user-id 1 --k 10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.serving.client import ClientConfig, RecsysClient
from recsys.serving.errors import InferenceError, ServerStartError, ServingError
from recsys.serving.health import SERVED_MODELS, check_readiness
from recsys.serving.recommend_client import Recommendation, RecommendClient
from recsys.serving.security import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_FILE_ENV,
    AdminKeyError,
    admin_key_from_env,
)

if TYPE_CHECKING:
    from recsys.serving.repository import RepositoryConfig

LOGGER = logging.getLogger(__name__)

DEFAULT_BUNDLE = "artifacts/ml-100k/bundle"
"""Where the main job writes the bundle of its default dataset."""


@dataclass
class DemoResult:
    """What :func:`serve_demo` measured.

    Attributes:
        recommendations: one per requested user, in request order.
        latencies_ms: client-side wall time of each request.
        repository: the repository served.
        build_seconds: time to generate the repository.
        startup_seconds: time from starting the server to ready.
        while_serving: what the ``while_serving`` callback returned (None without one).
    """

    recommendations: list[Recommendation]
    latencies_ms: list[float]
    repository: Path
    build_seconds: float
    startup_seconds: float
    while_serving: Any = None


def serve_demo(
    bundle_dir: str | Path,
    users: Sequence[int],
    k: int,
    *,
    repository_dir: str | Path | None = None,
    repeats: int = 1,
    print_fn: Callable[[str], object] = print,
    repository_config: RepositoryConfig | None = None,
    while_serving: Callable[[RecommendClient], Any] | None = None,
) -> DemoResult:
    """Builds the repository from a run bundle, serves it, queries it over gRPC, stops it.

    Prints each user's recommendations and the request latency.

    Args:
        bundle_dir: the run bundle (training's ``bundle`` stage).
        users: raw user ids to ask for (unknown ids get popular items).
        k: items per user.
        repository_dir: where to write the repository (None: a temporary folder,
            deleted at the end); an existing folder is replaced.
        repeats: requests per user (latency is reported for every one).
        print_fn: where the lines go.
        repository_config: how the repository is generated (None: the defaults), e.g.
            with a real-time ``profile_store``.
        while_serving: called with the connected client after the requests, before
            the server stops (more requests, events for a profile store, ...).

    Returns:
        A :class:`DemoResult`.

    Raises:
        BundleError: the bundle is missing, incomplete or changed.
        ServerStartError: the server did not start (the message holds its log).
        InferenceError: a request failed.

    Example::

        serve_demo("artifacts/ml-100k/bundle", users=[1, 2, 3], k=10)
    """
    from recsys.serving.repository import build_repository
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    with tempfile.TemporaryDirectory(prefix="recsys-repo-") as tmp:
        root = Path(repository_dir) if repository_dir is not None else Path(tmp) / "repository"
        t0 = time.perf_counter()
        build_repository(bundle_dir, root, repository_config, overwrite=True)
        build_s = time.perf_counter() - t0
        print_fn(f"repository: {root} ({build_s:.1f} s)")
        server_cfg = TritonServerConfig(
            model_repository=root,
            model_control_mode="explicit",
            load_models=("*",),
            startup_timeout_s=180.0,
        )
        t1 = time.perf_counter()
        with LocalTritonServer(server_cfg) as server:
            start_s = time.perf_counter() - t1
            print_fn(f"tritonserver ready at {server.grpc_url} ({start_s:.1f} s)")
            recs: list[Recommendation] = []
            latencies: list[float] = []
            with RecommendClient(ClientConfig(url=server.grpc_url)) as client:
                client.recommend(int(users[0]), k)  # warm-up: first calls set up the channel
                for user in users:
                    for _ in range(max(repeats, 1)):
                        start = time.perf_counter()
                        rec = client.recommend(int(user), k)
                        latencies.append((time.perf_counter() - start) * 1e3)
                    recs.append(rec)
                    print_fn(_format(rec, latencies[-1]))
                lat = np.asarray(latencies)
                print_fn(
                    f"latency over {len(lat)} requests: p50 {np.percentile(lat, 50):.2f} ms, "
                    f"p99 {np.percentile(lat, 99):.2f} ms, max {lat.max():.2f} ms"
                )
                extra = while_serving(client) if while_serving is not None else None
        return DemoResult(recs, latencies, root, build_s, start_s, extra)


def _format(rec: Recommendation, latency_ms: float) -> str:
    items = " ".join(f"{i}({s:.3f})" for i, s in rec.pairs())
    return f"user {rec.user_id}: {items}  [{latency_ms:.2f} ms, request {rec.request_id}]"


# -- commands --------------------------------------------------------------------------


def _cmd_build_repo(args: argparse.Namespace) -> int:
    from recsys.serving.repository import RepositoryConfig, build_repository, describe

    repo_cfg = RepositoryConfig(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_k=args.max_k,
        profile_store=args.profile_store,
        exposure_log=args.exposure_log,
        gpu_accelerator=args.gpu_accelerator,
        targeting_rules=args.rules,
        policy=args.policy,
        experiments=args.experiments,
        bandit_state=args.bandit_state,
        ranker_bundles=tuple(args.ranker_bundle),
        cold_items=args.cold_items,
        cold_items_poll_s=args.cold_items_poll_s,
        retrieval_mode=args.retrieval_mode,
    )
    info = build_repository(args.bundle, args.out, repo_cfg, overwrite=args.overwrite)
    if info.bundle is not None:
        print(info.bundle.describe())
    print(json.dumps(describe(info.root), indent=2))
    return 0


def _cmd_check_bundle(args: argparse.Namespace) -> int:
    from recsys.bundle.layout import SERVING_FILES, RunBundle

    bundle = RunBundle.open(args.bundle, verify=True, required=SERVING_FILES)
    print(bundle.describe())
    print(json.dumps({"summary": bundle.summary, "provenance": bundle.provenance}, indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from recsys.serving import server

    argv = [
        "--model-repository",
        str(args.repository),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--grpc-port",
        str(args.grpc_port),
        "--http-port",
        str(args.http_port),
        "--metrics-port",
        str(args.metrics_port),
        "--host",
        args.host,
    ]
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None:
            argv += [flag, str(path)]
    return server.main(argv)


def _client_config(args: argparse.Namespace, *, admin: bool = False) -> ClientConfig:
    """The client of a command: URL, deadline, TLS, and the admin key when it needs one."""
    admin_key = None
    if admin:
        admin_key = admin_key_from_env()
        if admin_key is None:
            raise AdminKeyError(
                f"this command uses an admin API of the server: set {ADMIN_KEY_ENV} or "
                f"{ADMIN_KEY_FILE_ENV} to the key the server was started with"
            )
    return ClientConfig(
        url=args.url,
        client_timeout_s=args.timeout,
        ssl=args.ssl or args.ca_file is not None,
        root_certificates=None if args.ca_file is None else str(args.ca_file),
        private_key=None if args.key is None else str(args.key),
        certificate_chain=None if args.cert is None else str(args.cert),
        admin_key=admin_key,
    )


def _add_client_arguments(parser: argparse.ArgumentParser, timeout: float) -> None:
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port")
    parser.add_argument("--timeout", type=float, default=timeout, help="deadline in seconds")
    parser.add_argument("--ssl", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", type=Path, default=None, help="PEM CA of the server (TLS)")
    parser.add_argument("--cert", type=Path, default=None, help="client PEM certificate (mTLS)")
    parser.add_argument("--key", type=Path, default=None, help="client PEM key (mTLS)")


def _cmd_recommend(args: argparse.Namespace) -> int:
    config = _client_config(args)
    with RecommendClient(config) as client:
        start = time.perf_counter()
        rec = client.recommend(
            args.user_id, args.k, model_version=args.model_version, context=args.context
        )
        latency = (time.perf_counter() - start) * 1e3
    if args.json:
        print(json.dumps({"user_id": rec.user_id, "request_id": rec.request_id,
                          "items": rec.pairs(), "latency_ms": latency}))  # fmt: skip
    else:
        print(_format(rec, latency))
    return 0


def _cmd_roll_in(args: argparse.Namespace) -> int:
    from recsys.serving.repository import add_model_version, model_versions

    config = _client_config(args, admin=True)
    version = add_model_version(args.repository, args.model, args.source, args.version)
    print(f"copied {args.source} to {args.repository}/{args.model}/{version}")
    with RecsysClient(config) as client:
        client.load_model(args.model)
        deadline = time.monotonic() + args.timeout
        while not client.is_model_ready(args.model, str(version)):
            if time.monotonic() > deadline:
                print(f"version {version} not ready after {args.timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.1)
    ready = model_versions(args.repository, args.model)
    print(f"{args.model} version {version} is serving (versions on disk: {ready})")
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    with RecsysClient(_client_config(args)) as client:
        result = check_readiness(client.is_model_ready, args.models)
    print(result.summary(), file=sys.stdout if result.ready else sys.stderr)
    return 0 if result.ready else 1


def _cmd_gateway(args: argparse.Namespace) -> int:
    import signal
    import threading

    from recsys.serving.http_gateway import GatewayConfig, RecommendGateway

    config = GatewayConfig(
        host=args.host,
        port=args.port,
        triton=_client_config(args),
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        request_timeout_s=args.timeout,
        max_in_flight=args.max_in_flight,
        channels=args.channels,
        max_batch=args.max_batch,
    )
    gateway = RecommendGateway(config)
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        try:
            host, port = gateway.start()
        except OSError as error:  # the port is taken or the address is not local
            print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
            return 1
        print(f"recommend gateway on http://{host}:{port}/v1/recommend, Triton gRPC at "
              f"{args.url}; Ctrl-C stops it", flush=True)  # fmt: skip
        stop.wait()
    finally:
        gateway.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    serve_demo(
        args.bundle,
        args.users,
        args.k,
        repository_dir=args.out,
        repeats=args.repeats,
    )
    return 0


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of context fields")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m recsys.serving.cli``."""
    parser = argparse.ArgumentParser(
        prog="python -m recsys.serving.cli",
        description="Build, serve and query the Triton repository of the recommender.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-repo", help="generate the Triton model repository")
    build.add_argument("--bundle", type=Path, default=Path(DEFAULT_BUNDLE), help="a run bundle")
    build.add_argument("--out", type=Path, default=Path("artifacts/triton_repo"))
    build.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    build.add_argument("--max-batch-size", type=int, default=64)
    build.add_argument("--max-queue-delay-us", type=int, default=100)
    build.add_argument(
        "--max-k",
        type=int,
        default=None,
        help="largest k served (default: the retrieval depth N; at most the catalogue)",
    )
    build.add_argument(
        "--profile-store",
        default="",
        help="real-time profile store recommend reads users from: "
        "redis://host:port/db[?prefix=P] or sqlite:///path (default: off)",
    )
    build.add_argument(
        "--exposure-log",
        default="",
        help="event store every served list is logged to as an exposure: "
        "redis://host:port/db[?prefix=P] or sqlite:///path (default: off)",
    )
    build.add_argument(
        "--rules",
        default="",
        help="targeting rules YAML file recommend applies; checked now against the "
        "bundle's catalogue and reloaded by the server when it changes (default: none)",
    )
    build.add_argument(
        "--policy",
        default="deterministic",
        help="slate policy: deterministic, epsilon_greedy:EPS or plackett_luce:T "
        "(exploration over the first 50 ranked candidates; default: deterministic)",
    )
    build.add_argument(
        "--experiments",
        default="",
        help="A/B tests YAML file (docs/experiments.md): arms may set the slate policy, "
        "request parameters and the ranker version; "
        "exposures record the arms (default: none)",
    )
    build.add_argument(
        "--ranker-bundle",
        action="append",
        default=[],
        metavar="BUNDLE",
        help="another run bundle whose ranker becomes the next version of `ranker` "
        "(repeatable); experiment arms route to it with model: ranker:<version>",
    )
    build.add_argument(
        "--bandit-state",
        default="",
        help="a policy bandit's state file (docs/bandits.md): its arms are slate policies; "
        "it picks the policy of requests no experiment arm decides (default: none)",
    )
    build.add_argument(
        "--cold-items",
        default="",
        metavar="STORE_URL",
        help="serve items published after training: the store (sqlite:///path or "
        "redis://host:port/db) whose catalogue `recsys realtime catalogue` fills "
        "(docs/serving.md, Cold items; default: none)",
    )
    build.add_argument(
        "--cold-items-poll-s",
        type=float,
        default=2.0,
        help="seconds between two reads of the catalogue by the running server (default 2)",
    )
    build.add_argument(
        "--gpu-accelerator",
        choices=("tensorrt", "cuda"),
        default="tensorrt",
        help="execution provider of the ONNX models on GPU instances (NVIDIA's container)",
    )
    build.add_argument(
        "--retrieval-mode",
        choices=("models", "inline"),
        default="models",
        help="models: recommend calls the user_tower and retrieval models; inline: it runs "
        "the user tower and the FAISS search on the CPU in its own process (faster on a "
        "CPU server, docs/serving.md; default: models)",
    )
    build.set_defaults(fn=_cmd_build_repo)

    check = sub.add_parser("check-bundle", help="check a run bundle and print what it holds")
    check.add_argument("--bundle", type=Path, default=Path(DEFAULT_BUNDLE))
    check.set_defaults(fn=_cmd_check_bundle)

    serve = sub.add_parser("serve", help="serve a repository with the local tritonserver")
    serve.add_argument("--repository", type=Path, default=Path("artifacts/triton_repo"))
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000, help="-1 turns HTTP off")
    serve.add_argument("--metrics-port", type=int, default=8002, help="-1 turns metrics off")
    serve.add_argument("--host", default="127.0.0.1", help="address every endpoint binds")
    serve.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: gRPC TLS")
    serve.add_argument("--tls-key", type=Path, default=None, help="its PEM private key")
    serve.set_defaults(fn=_cmd_serve)

    rec = sub.add_parser("recommend", help="ask the recommend model for one user")
    rec.add_argument("--user-id", type=int, required=True)
    rec.add_argument("--k", type=int, default=10)
    _add_client_arguments(rec, timeout=10.0)
    rec.add_argument("--model-version", default="", help="'' = the newest version")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.add_argument(
        "--context",
        type=_json_object,
        default=None,
        help="the request's context as a JSON object, e.g. "
        '\'{"device_type": "mobile", "surface": "home"}\'',
    )
    rec.set_defaults(fn=_cmd_recommend)

    roll = sub.add_parser("roll-in", help="add a model version and load it (explicit mode)")
    roll.add_argument("--repository", type=Path, required=True)
    roll.add_argument("--model", required=True, help="e.g. ranker")
    roll.add_argument("--source", type=Path, required=True, help="a version folder or model.onnx")
    roll.add_argument("--version", type=int, default=None, help="default: newest + 1")
    _add_client_arguments(roll, timeout=120.0)
    roll.set_defaults(fn=_cmd_roll_in)

    health = sub.add_parser("health", help="exit 0 when every model recommend needs is ready")
    _add_client_arguments(health, timeout=2.0)
    health.add_argument("--models", nargs="+", default=list(SERVED_MODELS))
    health.set_defaults(fn=_cmd_health)

    # Defaults: GatewayConfig's (tests/serving/test_http_gateway.py checks they agree).
    gateway = sub.add_parser(
        "gateway", help="serve recommend over HTTP JSON (checked requests) in front of Triton"
    )
    _add_client_arguments(gateway, timeout=10.0)
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on")
    gateway.add_argument("--port", type=int, default=8080, help="HTTP port (0: a free one)")
    gateway.add_argument("--max-body-bytes", type=int, default=65536, help="larger bodies: 413")
    gateway.add_argument("--header-timeout", type=float, default=10.0, help="seconds (408)")
    gateway.add_argument("--body-timeout", type=float, default=10.0, help="seconds (408)")
    gateway.add_argument("--max-in-flight", type=int, default=256, help="gRPC calls at once")
    gateway.add_argument("--channels", type=int, default=2, help="gRPC channels")
    gateway.add_argument("--max-batch", type=int, default=64, help="requests per batch body")
    gateway.set_defaults(fn=_cmd_gateway)

    demo = sub.add_parser("demo", help="build, serve, query a few users, stop")
    demo.add_argument("--bundle", type=Path, default=Path(DEFAULT_BUNDLE), help="a run bundle")
    demo.add_argument("--users", type=int, nargs="+", default=[1, 2, 3])
    demo.add_argument("--k", type=int, default=10)
    demo.add_argument("--repeats", type=int, default=1)
    demo.add_argument("--out", type=Path, default=None, help="keep the repository here")
    demo.set_defaults(fn=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (1 on a serving error, with its message)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(args))
    except (ServingError, FileNotFoundError, FileExistsError, ValueError) as error:
        kind = "server error" if isinstance(error, ServerStartError | InferenceError) else "error"
        print(f"{kind}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
