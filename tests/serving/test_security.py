"""Triton's admin APIs behind the key, over HTTP and gRPC, and gRPC over TLS, on a real
tritonserver (the session's shared server, and one started here with a certificate
made in the test)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from tritonclient.utils import shared_memory as shm

from recsys.serving.client import ClientConfig, RecsysClient
from recsys.serving.errors import InferenceError
from recsys.serving.health import check_readiness, http_probe
from recsys.serving.security import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_FILE_ENV,
    AdminKeyError,
    TlsConfig,
    admin_headers,
    admin_key_from_env,
    restricted_api_args,
)

GOOD_KEY = "k" * 24


# -- the key: where it comes from -----------------------------------------------------------


def test_the_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert admin_key_from_env({}) is None
    assert admin_key_from_env({ADMIN_KEY_ENV: GOOD_KEY}) == GOOD_KEY
    secret = tmp_path / "key"
    secret.write_text(GOOD_KEY + "\n")
    assert admin_key_from_env({ADMIN_KEY_FILE_ENV: str(secret)}) == GOOD_KEY
    with pytest.raises(AdminKeyError, match="not both"):
        admin_key_from_env({ADMIN_KEY_ENV: GOOD_KEY, ADMIN_KEY_FILE_ENV: str(secret)})
    with pytest.raises(AdminKeyError, match="No such file"):
        admin_key_from_env({ADMIN_KEY_FILE_ENV: str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AdminKeyError, match="is empty"):
        admin_key_from_env({ADMIN_KEY_FILE_ENV: str(tmp_path / "empty")})
    with pytest.raises(AdminKeyError, match="at least 16"):
        admin_key_from_env({ADMIN_KEY_ENV: "short"})
    with pytest.raises(AdminKeyError, match="only letters"):
        admin_key_from_env({ADMIN_KEY_ENV: "a" * 20 + ",model-repository"})


def test_flags_restrict_every_admin_group_and_leave_inference_open() -> None:
    http_flag, grpc_flag = restricted_api_args(GOOD_KEY)
    for flag in (http_flag, grpc_flag):
        groups = flag.split("=", 1)[1].split(":")[0].split(",")
        assert set(groups) == {
            "model-repository",
            "model-config",
            "shared-memory",
            "logging",
            "trace",
            "statistics",
        }
        assert not {"inference", "health", "metadata"} & set(groups)
    assert restricted_api_args(GOOD_KEY, http=False) == [grpc_flag]


def test_the_server_command_line_never_logs_the_key(triton_server: Any) -> None:
    assert triton_server.admin_key not in triton_server.log_tail(400)


# -- over HTTP --------------------------------------------------------------------------------


def _http(server: Any, method: str, path: str, body: Any = None, key: str | None = "") -> int:
    host, port = server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers.update(admin_headers(key or server.admin_key, "http"))
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        if response.status == 403:
            assert "restricted" in text
        return response.status
    finally:
        connection.close()


@pytest.mark.triton
def test_http_admin_apis_need_the_key(triton_server: Any) -> None:
    wrong = "w" * 24
    cases = [
        ("POST", "/v2/repository/index", {}),
        ("POST", "/v2/repository/models/mlp_external/load", {}),
        ("POST", "/v2/repository/models/mlp_external/unload", {}),
        ("GET", "/v2/logging", None),
        ("POST", "/v2/logging", {"log_verbose_level": 1}),
        ("GET", "/v2/systemsharedmemory/status", None),
        ("GET", "/v2/models/mlp/stats", None),
        ("GET", "/v2/models/mlp/config", None),
        ("GET", "/v2/trace/setting", None),
    ]
    for method, path, body in cases:
        assert _http(triton_server, method, path, body, key=None) == 403, path
        assert _http(triton_server, method, path, body, key=wrong) == 403, path
    for method, path, body in cases:
        assert _http(triton_server, method, path, body) == 200, path
    assert _http(triton_server, "POST", "/v2/logging", {"log_verbose_level": 0}) == 200
    # open: health, metadata and inference
    assert _http(triton_server, "GET", "/v2/health/live", key=None) == 200
    assert _http(triton_server, "GET", "/v2/models/mlp/ready", key=None) == 200
    assert _http(triton_server, "GET", "/v2/models/mlp", key=None) == 200
    infer = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [0.0] * 8}]}
    assert _http(triton_server, "POST", "/v2/models/mlp/infer", infer, key=None) == 200


# -- over gRPC --------------------------------------------------------------------------------


@pytest.fixture
def region() -> Iterator[tuple[str, Any]]:
    name = f"/recsys_test_{np.random.default_rng().integers(1 << 30)}"
    handle = shm.create_shared_memory_region("recsys_test", name, 64)
    try:
        yield name, handle
    finally:
        shm.destroy_shared_memory_region(handle)


def _refused(call: Any) -> None:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert "restricted" in str(info.value.message())


@pytest.mark.triton
def test_grpc_admin_apis_need_the_key(triton_server: Any, region: tuple[str, Any]) -> None:
    key_name, _ = region
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    wrong = admin_headers("w" * 24)
    good = triton_server.admin_headers
    try:
        for headers in (None, wrong):
            _refused(lambda h=headers: client.load_model("mlp_external", headers=h))
            _refused(lambda h=headers: client.unload_model("mlp", headers=h))
            _refused(lambda h=headers: client.get_model_repository_index(headers=h))
            _refused(
                lambda h=headers: client.register_system_shared_memory("r", key_name, 64, headers=h)
            )
            _refused(
                lambda h=headers: client.update_log_settings({"log_verbose_level": 1}, headers=h)
            )
            _refused(lambda h=headers: client.get_inference_statistics("mlp", headers=h))
            _refused(lambda h=headers: client.get_model_config("mlp", headers=h))
        assert client.is_model_ready("mlp")  # nothing was unloaded
        client.register_system_shared_memory("r", key_name, 64, headers=good)
        assert client.get_system_shared_memory_status(headers=good).regions["r"].byte_size == 64
        client.unregister_system_shared_memory("r", headers=good)
        client.update_log_settings({"log_verbose_level": 0}, headers=good)
        client.load_model("mlp_external", headers=good)
        assert client.is_model_ready("mlp_external")
        client.unload_model("mlp_external", headers=good)
        # open without the key: health, metadata, inference
        assert client.is_server_live() and client.get_model_metadata("mlp").name == "mlp"
    finally:
        client.close()


@pytest.mark.triton
def test_the_recsys_client_does_not_retry_a_refusal(triton_server: Any) -> None:
    with RecsysClient(ClientConfig(triton_server.grpc_url, max_retries=3)) as client:
        with pytest.raises(InferenceError) as info:
            client.unload_model("mlp")
        assert info.value.refused and not info.value.retryable
        assert client.is_model_ready("mlp")
    keyed = ClientConfig(triton_server.grpc_url, admin_key=triton_server.admin_key)
    with RecsysClient(keyed) as client:
        client.load_model("mlp_external")
        assert client.is_model_ready("mlp_external")
        client.unload_model("mlp_external")


# -- readiness ------------------------------------------------------------------------------


@pytest.mark.triton
def test_readiness_names_the_models_that_are_not_ready(triton_server: Any) -> None:
    probe = http_probe(triton_server.http_url)
    assert check_readiness(probe, ["mlp", "embed_sum"]).ready
    result = check_readiness(probe, ["mlp", "mlp_external", "broken"])
    assert not result.ready and result.not_ready == ("mlp_external", "broken")
    down = check_readiness(http_probe("127.0.0.1:1", timeout_s=0.5), ["mlp"])
    assert not down.ready and "Connection refused" in down.summary()


# -- TLS ------------------------------------------------------------------------------------


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.triton
def test_grpc_over_tls(triton_repo: Any, tmp_path: Path) -> None:
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    cert, key = _self_signed(tmp_path, "server")
    config = TritonServerConfig(
        model_repository=triton_repo.root,
        model_control_mode="explicit",
        load_models=("mlp",),
        http_port=None,
        tls=TlsConfig(cert, key),
        startup_timeout_s=120,
    )
    x = np.ones((1, 8), np.float32)
    with LocalTritonServer(config) as server:
        tls = ClientConfig(server.grpc_url, ssl=True, root_certificates=str(cert), max_retries=0)
        with RecsysClient(tls) as client:
            assert client.infer("mlp", {"x": x}, ["y"])["y"].shape == (1, 4)
        plain = ClientConfig(server.grpc_url, max_retries=0, client_timeout_s=3)
        with RecsysClient(plain) as client, pytest.raises(InferenceError) as info:
            client.infer("mlp", {"x": x}, ["y"])
        assert info.value.status is grpc.StatusCode.UNAVAILABLE
        other, _ = _self_signed(tmp_path, "other")  # a CA that did not sign the server
        untrusted = ClientConfig(
            server.grpc_url, ssl=True, root_certificates=str(other), max_retries=0
        )
        with RecsysClient(untrusted) as client, pytest.raises(InferenceError):
            client.infer("mlp", {"x": x}, ["y"])
        server.unload_model("mlp")  # the server's own control connection speaks TLS
        assert not server.is_model_ready("mlp")


@pytest.mark.triton
def test_grpc_over_mutual_tls(triton_repo: Any, tmp_path: Path) -> None:
    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    cert, key = _self_signed(tmp_path, "server")
    client_cert, client_key = _self_signed(tmp_path, "client")  # its own CA
    config = TritonServerConfig(
        model_repository=triton_repo.root,
        model_control_mode="explicit",
        load_models=("mlp",),
        http_port=None,
        tls=TlsConfig(
            cert, key, root_cert=client_cert, client_cert=client_cert, client_key=client_key
        ),
        startup_timeout_s=120,
    )
    x = np.ones((1, 8), np.float32)
    with LocalTritonServer(config) as server:
        mutual = ClientConfig(
            server.grpc_url,
            ssl=True,
            root_certificates=str(cert),
            private_key=str(client_key),
            certificate_chain=str(client_cert),
            max_retries=0,
        )
        with RecsysClient(mutual) as client:
            assert client.infer("mlp", {"x": x}, ["y"])["y"].shape == (1, 4)
        no_cert = ClientConfig(
            server.grpc_url, ssl=True, root_certificates=str(cert), max_retries=0
        )
        with RecsysClient(no_cert) as client, pytest.raises(InferenceError):
            client.infer("mlp", {"x": x}, ["y"])


def test_roll_in_without_a_key_says_where_the_key_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from recsys.serving.cli import main

    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    monkeypatch.delenv(ADMIN_KEY_FILE_ENV, raising=False)
    source = tmp_path / "model.onnx"
    source.write_bytes(b"x")
    args = ["roll-in", "--repository", str(tmp_path), "--model", "m", "--source", str(source)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert ADMIN_KEY_ENV in err and ADMIN_KEY_FILE_ENV in err
    assert not (tmp_path / "m").exists()  # nothing was copied before the refusal


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="server cert"):
        TlsConfig(tmp_path / "missing.crt", tmp_path / "missing.key").check()
    cert, key = _self_signed(tmp_path, "server")
    with pytest.raises(ValueError, match="client_cert"):
        TlsConfig(cert, key, root_cert=cert).check()
    assert TlsConfig(cert, key, root_cert=cert, client_cert=cert, client_key=key).args()[0] == (
        "--grpc-use-ssl-mutual=true"
    )
    with pytest.raises(ValueError, match="need ssl=True"):
        ClientConfig(root_certificates=str(cert))


# -- the serving image's entry point --------------------------------------------------------


def test_the_image_refuses_to_start_without_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    from recsys.serving import container

    with pytest.raises(AdminKeyError, match="needs an admin key"):
        container.command({})
    args = container.command({ADMIN_KEY_ENV: GOOD_KEY})
    assert args[0] == "tritonserver" and "--model-control-mode=explicit" in args
    assert [a for a in args if a.startswith("--grpc-restricted-protocol=")] == [
        restricted_api_args(GOOD_KEY)[1]
    ]
    assert not any(a.startswith("--grpc-use-ssl") for a in args)


def test_the_image_serves_tls_when_given_a_certificate(tmp_path: Path) -> None:
    from recsys.serving import container

    cert, key = _self_signed(tmp_path, "server")
    env = {ADMIN_KEY_ENV: GOOD_KEY, container.TLS_CERT_ENV: str(cert)}
    with pytest.raises(ValueError, match="together"):
        container.command(env)
    args = container.command({**env, container.TLS_KEY_ENV: str(key)})
    assert "--grpc-use-ssl=true" in args and f"--grpc-server-cert={cert}" in args
    mutual = container.command(
        {**env, container.TLS_KEY_ENV: str(key), container.TLS_CLIENT_CA_ENV: str(cert)}
    )
    assert "--grpc-use-ssl-mutual=true" in mutual and f"--grpc-root-cert={cert}" in mutual


@pytest.mark.triton
def test_the_image_command_line_starts_a_locked_server(
    triton_repo: Any, triton_dist: Any, tmp_path: Path
) -> None:
    """The image's flags run as they are on the real binary (addresses on loopback here)."""
    import subprocess
    import time

    from recsys.serving import container
    from recsys.serving.server import build_backend_directory, find_free_port, server_environment

    grpc_port, http_port = find_free_port(), find_free_port()
    args = container.command(
        {ADMIN_KEY_ENV: GOOD_KEY, container.MODELS_ENV: str(triton_repo.root)},
        binary=str(triton_dist.binary),
    )
    args = [a.replace("0.0.0.0", "127.0.0.1") for a in args if a != "--load-model=*"]
    args += [
        "--load-model=mlp",
        f"--backend-directory={build_backend_directory(triton_dist, tmp_path / 'backends')}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        "--allow-metrics=false",
    ]
    process = subprocess.Popen(
        args,
        env=server_environment(triton_dist),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("mlp"):
                    break
            except InferenceServerException:
                pass
            time.sleep(0.2)
        assert client.is_model_ready("mlp")
        _refused(lambda: client.unload_model("mlp"))
        client.get_inference_statistics("mlp", headers=admin_headers(GOOD_KEY))
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)


def test_the_dockerfile_uses_the_locked_entry_point_and_the_truthful_health_check() -> None:
    text = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert 'ENTRYPOINT ["python3", "-m", "recsys.serving.container"]' in lines
    health = [ln for ln in lines if ln.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "recsys.serving.health" in health[0]
    assert "/v2/health/ready" not in health[0]
    assert "-p 127.0.0.1:8001:8001" in text  # the documented run publishes on loopback
