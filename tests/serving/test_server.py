"""LocalTritonServer: configuration, backend layout, start/stop, model control, CLI."""

from __future__ import annotations

import glob
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from recsys.serving.client import RecsysClient
from recsys.serving.errors import ModelLoadError, ServerStartError, TritonNotInstalledError
from recsys.serving.server import (
    DEFAULT_ONNXRUNTIME_STAND_IN,
    LocalTritonServer,
    TritonServerConfig,
    build_backend_directory,
    find_free_port,
    server_environment,
)

# -- configuration (no server) --------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"model_control_mode": "lazy"}, "model_control_mode"),
        ({"load_models": ("mlp",)}, "load_models only applies"),
        ({"grpc_port": 70000}, "grpc_port"),
        ({"metrics_port": -2}, "metrics_port"),
        ({"startup_timeout_s": 0}, "positive"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TritonServerConfig(model_repository="repo", **kwargs)  # type: ignore[arg-type]


def test_command_line_has_ports_modes_and_a_private_shm_prefix(tmp_path: Path) -> None:
    config = TritonServerConfig(
        model_repository=tmp_path,
        http_port=None,
        model_control_mode="explicit",
        load_models=("a", "b"),
        strict_readiness=False,
        log_verbose=1,
        extra_args=("--model-load-thread-count=1",),
    )
    key = "a" * 32
    args = config.command(
        Path("/bin/tritonserver"),
        Path("/b"),
        {"grpc": 9001, "http": None, "metrics": 9002},
        "P_",
        key,
    )
    assert args[0] == "/bin/tritonserver"
    for expected in (
        f"--model-repository={tmp_path.resolve()}",
        "--backend-directory=/b",
        "--model-control-mode=explicit",
        "--strict-readiness=false",
        "--log-verbose=1",
        "--grpc-address=127.0.0.1",
        "--grpc-port=9001",
        "--allow-http=false",
        "--metrics-port=9002",
        "--load-model=a",
        "--load-model=b",
        "--backend-config=python,shm-region-prefix-name=P_",
        "--backend-config=onnxruntime,shm-region-prefix-name=P_",
        # admin APIs behind the key; HTTP is off, so only the gRPC flag
        "--grpc-restricted-protocol=model-repository,model-config,shared-memory,logging,"
        f"trace,statistics:recsys-admin-key={key}",
    ):
        assert expected in args, expected
    assert not any(a.startswith("--http-restricted-api") for a in args)
    assert args[-1] == "--model-load-thread-count=1"
    assert not any(a.startswith("--http-port") for a in args)
    assert not any(a.startswith("--repository-poll-secs") for a in args)


def test_missing_repository_is_reported_before_starting(tmp_path: Path) -> None:
    server = LocalTritonServer(TritonServerConfig(model_repository=tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        server.start()
    assert server.pid is None


def test_find_free_port_returns_a_bindable_port() -> None:
    import socket

    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- the installed tritonserver build -------------------------------------------------


def test_distribution_has_the_binary_and_a_stub_for_this_python(triton_dist) -> None:
    assert os.access(triton_dist.binary, os.X_OK)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert triton_dist.stub_for(version).is_file()
    with pytest.raises(TritonNotInstalledError, match=r"available: .*3\.11"):
        triton_dist.stub_for("2.7")


def test_backend_directory_holds_python_backend_and_the_stand_in(
    triton_dist, tmp_path: Path
) -> None:
    target = build_backend_directory(triton_dist, tmp_path / "backends")
    names = sorted(p.name for p in (target / "python").iterdir())
    assert names == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    assert os.access(target / "python" / "triton_python_backend_stub", os.X_OK)
    stand_in = (target / "onnxruntime" / "model.py").read_text()
    assert stand_in == DEFAULT_ONNXRUNTIME_STAND_IN.read_text()
    assert "NEVER DEPLOYED" in stand_in

    bare = build_backend_directory(triton_dist, tmp_path / "bare", onnxruntime_stand_in=None)
    assert not (bare / "onnxruntime").exists()
    with pytest.raises(TritonNotInstalledError, match="stand-in"):
        build_backend_directory(
            triton_dist, tmp_path / "x", onnxruntime_stand_in=tmp_path / "no.py"
        )


def test_environment_puts_this_libpython_and_venv_first(triton_dist) -> None:
    env = server_environment(triton_dist, base={"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/x"})
    lib_paths = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert lib_paths == [sysconfig.get_config_var("LIBDIR"), str(triton_dist.libs_dir), "/opt/x"]
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]


# -- explicit model control on the shared server --------------------------------------


@pytest.mark.triton
def test_broken_onnx_fails_to_load_with_the_servers_reason(triton_server) -> None:
    with pytest.raises(ModelLoadError) as info:
        triton_server.load_model("broken")
    error = info.value
    assert error.model_name == "broken"
    assert error.status is grpc.StatusCode.INVALID_ARGUMENT
    assert "load failed for model 'broken'" in error.message
    assert "onnxruntime could not load" in error.message
    assert "Protobuf parsing failed" in error.message
    assert not triton_server.is_model_ready("broken")
    with RecsysClient(triton_server.grpc_url) as client:
        assert client.infer("mlp", {"x": np.ones((1, 8), np.float32)}, ["y"])["y"].shape == (1, 4)


@pytest.mark.triton
def test_config_that_does_not_match_the_graph_fails_to_load(triton_server) -> None:
    with pytest.raises(ModelLoadError) as info:
        triton_server.load_model("mismatched")
    assert "inputs differ: config has ['features'], the ONNX graph has ['x']" in info.value.message


@pytest.mark.triton
def test_unload_and_reload_a_model(triton_server) -> None:
    x = np.zeros((1, 4), np.float32)
    try:
        triton_server.unload_model("py_affine")
        assert not triton_server.is_model_ready("py_affine")
    finally:
        triton_server.load_model("py_affine")
    assert triton_server.is_model_ready("py_affine")
    with RecsysClient(triton_server.grpc_url) as client:
        np.testing.assert_allclose(client.infer("py_affine", {"X": x}, ["Y"])["Y"], 1.0)


# -- separate servers ------------------------------------------------------------------


def _small_repo(source: Path, target: Path, models: tuple[str, ...]) -> Path:
    for name in models:
        shutil.copytree(source / name, target / name)
    return target


@pytest.mark.triton
@pytest.mark.slow
def test_start_failure_raises_with_the_log_tail(triton_dist, triton_repo, tmp_path: Path) -> None:
    repo = _small_repo(triton_repo.root, tmp_path / "repo", ("broken",))
    server = LocalTritonServer(TritonServerConfig(model_repository=repo, startup_timeout_s=60))
    with pytest.raises(ServerStartError) as info:
        server.start()
    error = info.value
    assert error.returncode not in (None, 0)
    assert "Protobuf parsing failed" in error.log_tail
    assert "Protobuf parsing failed" in str(error)
    assert error.log_path is not None and error.log_path.is_file()  # kept for reading
    error.log_path.unlink()
    assert not server.is_running


@pytest.mark.triton
@pytest.mark.slow
def test_serves_what_loaded_exposes_metrics_and_stops_cleanly(
    triton_dist, triton_repo, tmp_path: Path
) -> None:
    repo = _small_repo(triton_repo.root, tmp_path / "repo", ("py_affine", "broken"))
    config = TritonServerConfig(
        model_repository=repo, strict_readiness=False, exit_on_error=False, metrics_port=0
    )
    server = LocalTritonServer(config).start()
    try:
        pid, workdir_log = server.pid, server.log_path
        assert pid is not None and workdir_log is not None and workdir_log.is_file()
        assert server.is_model_ready("py_affine")
        assert not server.is_model_ready("broken")
        assert "Protobuf parsing failed" in server.log_tail(200)
        with RecsysClient(server.grpc_url) as client:
            x = np.ones((2, 4), np.float32)
            np.testing.assert_allclose(client.infer("py_affine", {"X": x}, ["Y"])["Y"], 3.0)
        assert server.metrics_url is not None
        wanted = 'nv_inference_request_success{model="py_affine",version="1"} 1'
        deadline = time.monotonic() + 10
        metrics = ""
        while wanted not in metrics and time.monotonic() < deadline:
            # Counters are published a moment after the response is sent.
            with urllib.request.urlopen(server.metrics_url, timeout=5) as page:
                metrics = page.read().decode()
            time.sleep(0.2)
        assert wanted in metrics, [m for m in metrics.splitlines() if "py_affine" in m]
        shm = glob.glob(f"/dev/shm/{glob.escape(server.shm_prefix)}*")
        assert shm, "the python stub's shared memory should carry the private prefix"
    finally:
        returncode = server.stop()
    assert returncode == 0
    assert not server.is_running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir_log.exists()
    assert not any(os.path.exists(path) for path in shm)
    assert server.stop() is None  # a second stop is harmless


@pytest.mark.triton
@pytest.mark.slow
def test_cli_serves_until_interrupted(triton_dist, triton_repo, tmp_path: Path) -> None:
    repo = _small_repo(triton_repo.root, tmp_path / "repo", ("py_affine",))
    port = find_free_port()
    # stderr to a file: an unread pipe fills up with the server's log and blocks it.
    stderr = (tmp_path / "stderr.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys.serving.server",
            "--model-repository",
            str(repo),
            "--grpc-port",
            str(port),
            "--http-port",
            "-1",
            "--metrics-port",
            "-1",
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 90)
        line = process.stdout.readline() if ready else ""
        assert "tritonserver ready" in line, line or "no output within 90 s"
        assert f"127.0.0.1:{port}" in line
        with RecsysClient(f"127.0.0.1:{port}") as client:
            out = client.infer("py_affine", {"X": np.zeros((1, 4), np.float32)}, ["Y"])
        np.testing.assert_allclose(out["Y"], 1.0)
        start = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, (tmp_path / "stderr.log").read_text()[-2000:]
        assert time.monotonic() - start < 60
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr.close()
    with RecsysClient(f"127.0.0.1:{port}") as client:
        client.config.max_retries = 0
        assert not client.is_ready()
