"""RecsysClient / AsyncRecsysClient against a real local tritonserver."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from recsys.serving.client import (
    AsyncRecsysClient,
    ClientConfig,
    RecsysClient,
    measure_latency,
)
from recsys.serving.errors import InferenceError, InvalidRequestError
from recsys.serving.server import find_free_port

ATOL = 1e-5


def _rows(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 8)).astype(np.float32)


def _executions(server: Any, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) from the server's statistics (an admin API)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics(model, headers=server.admin_headers).model_stats[0]
        return int(stats.inference_count), int(stats.execution_count)
    finally:
        client.close()


# -- no server needed ------------------------------------------------------------------


def test_backoff_delays_grow_and_are_capped() -> None:
    config = ClientConfig(
        max_retries=4, backoff_initial_s=0.1, backoff_multiplier=2.0, backoff_max_s=0.3
    )
    assert list(config.backoff_delays()) == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert list(ClientConfig(max_retries=0).backoff_delays()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "grpc://localhost:8001"},
        {"client_timeout_s": 0},
        {"max_retries": -1},
        {"backoff_multiplier": 0.5},
    ],
)
def test_client_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("inputs", "outputs", "needle"),
    [
        ({"x": [[1.0] * 8]}, ["y"], "must be a numpy array"),
        ({"x": np.ones((1, 8), np.complex64)}, ["y"], "complex64"),
        ({}, ["y"], "no inputs"),
        ({"x": np.ones((1, 8), np.float32)}, [], "non-empty list"),
        ({"x": np.ones((1, 8), np.float32)}, "y", "non-empty list"),
    ],
)
def test_invalid_requests_are_refused_before_sending(
    inputs: dict[str, object], outputs: object, needle: str
) -> None:
    # Nothing listens on this port: a request that got sent would fail UNAVAILABLE.
    client = RecsysClient(ClientConfig(url=f"127.0.0.1:{find_free_port()}", max_retries=0))
    with pytest.raises(InvalidRequestError, match=needle) as info:
        client.infer("mlp", inputs, outputs)  # type: ignore[arg-type]
    assert info.value.status is None
    client.close()


def test_unavailable_server_is_retried_with_backoff_then_reported() -> None:
    url = f"127.0.0.1:{find_free_port()}"
    client = RecsysClient(
        ClientConfig(
            url=url,
            max_retries=3,
            backoff_initial_s=0.05,
            backoff_multiplier=2.0,
            client_timeout_s=2.0,
        )
    )
    assert client.is_ready() is False
    start = time.perf_counter()
    with pytest.raises(InferenceError) as info:
        client.infer("mlp", {"x": _rows(1)}, ["y"])
    waited = time.perf_counter() - start
    assert info.value.status is grpc.StatusCode.UNAVAILABLE
    assert info.value.retryable
    assert waited >= 0.05 + 0.1 + 0.2  # three backoffs were slept
    client.close()

    no_retry = RecsysClient(ClientConfig(url=url, max_retries=0, backoff_initial_s=0.5))
    start = time.perf_counter()
    with pytest.raises(InferenceError):
        no_retry.infer("mlp", {"x": _rows(1)}, ["y"])
    assert time.perf_counter() - start < 0.5
    no_retry.close()


def test_async_client_unavailable_is_retried() -> None:
    async def run() -> tuple[InferenceError, float, bool]:
        config = ClientConfig(
            url=f"127.0.0.1:{find_free_port()}",
            max_retries=2,
            backoff_initial_s=0.1,
            client_timeout_s=2.0,
        )
        async with AsyncRecsysClient(config) as client:
            ready = await client.is_ready()
            start = time.perf_counter()
            try:
                await client.infer("mlp", {"x": _rows(1)}, ["y"])
            except InferenceError as error:
                return error, time.perf_counter() - start, ready
        raise AssertionError("infer against a dead port succeeded")

    error, waited, ready = asyncio.run(run())
    assert not ready
    assert error.status is grpc.StatusCode.UNAVAILABLE
    assert waited >= 0.1 + 0.2


# -- real server -----------------------------------------------------------------------


@pytest.mark.triton
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_infer_matches_onnxruntime_and_torch(
    triton_server, triton_repo, ort_forward, batch: int
) -> None:
    x = _rows(batch, seed=batch)
    with RecsysClient(triton_server.grpc_url) as client:
        out = client.infer("mlp", {"x": x}, ["y"])
    assert set(out) == {"y"}
    assert out["y"].shape == (batch, 4)
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], ort_forward(x), atol=ATOL)
    np.testing.assert_allclose(out["y"], triton_repo.torch_forward(x), atol=ATOL)


@pytest.mark.triton
def test_metadata_readiness_and_config(triton_server) -> None:
    config_ = ClientConfig(triton_server.grpc_url, admin_key=triton_server.admin_key)
    with RecsysClient(config_) as client:
        assert client.is_ready()
        assert client.is_model_ready("mlp")
        assert not client.is_model_ready("broken")  # in the repository, never loaded
        meta = client.model_metadata("mlp")
        config = client.model_config("mlp")  # a restricted API: needs the admin key
    assert meta.name == "mlp"
    assert meta.platform == "onnxruntime_onnx"
    assert meta.versions == ("1",)
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("x", "FP32", (-1, 8))]
    assert [(t.name, t.datatype, t.shape) for t in meta.outputs] == [("y", "FP32", (-1, 4))]
    # The unchanged onnxruntime_onnx config is served by the Python-based stand-in.
    assert config["backend"] == "onnxruntime"
    assert config["runtime"] == "model.py"
    assert int(config["max_batch_size"]) == 64


@pytest.mark.triton
def test_python_backend_model_runs_with_the_venv_numpy(triton_server) -> None:
    x = _rows(3)[:, :4].copy()
    with RecsysClient(triton_server.grpc_url) as client:
        out = client.infer("py_affine", {"X": x}, ["Y", "NUMPY_MAJOR"])
    np.testing.assert_allclose(out["Y"], 2.0 * x + 1.0, atol=ATOL)
    assert out["NUMPY_MAJOR"].ravel().tolist() == [int(np.__version__.split(".")[0])] * 3


@pytest.mark.triton
def test_64_concurrent_async_requests_succeed_and_are_batched(triton_server, ort_forward) -> None:
    rows = [_rows(1, seed=100 + i) for i in range(64)]
    before = _executions(triton_server, "mlp")

    async def run() -> list[dict[str, np.ndarray]]:
        async with AsyncRecsysClient(triton_server.grpc_url) as client:
            return await asyncio.gather(*(client.infer("mlp", {"x": r}, ["y"]) for r in rows))

    results = asyncio.run(run())
    after = _executions(triton_server, "mlp")
    for row, out in zip(rows, results, strict=True):
        np.testing.assert_allclose(out["y"], ort_forward(row), atol=ATOL)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 64
    assert executions < 64, "the dynamic batcher merged no requests"


@pytest.mark.triton
@pytest.mark.parametrize(
    ("case", "model", "version", "inputs", "outputs", "status", "needle"),
    [
        (
            "wrong dtype",
            "mlp",
            "",
            {"x": np.ones((2, 8), np.float64)},
            ["y"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "data-type is 'FP64', but model 'mlp' expects 'FP32'",
        ),
        (
            "wrong shape",
            "mlp",
            "",
            {"x": np.ones((2, 9), np.float32)},
            ["y"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "unexpected shape for input 'x'",
        ),
        (
            "batch too large",
            "mlp",
            "",
            {"x": np.ones((65, 8), np.float32)},
            ["y"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "batch-size must be <= 64",
        ),
        (
            "unknown input",
            "mlp",
            "",
            {"z": np.ones((2, 8), np.float32)},
            ["y"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "unexpected inference input 'z'",
        ),
        (
            "unknown output",
            "mlp",
            "",
            {"x": np.ones((2, 8), np.float32)},
            ["q"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "unexpected inference output 'q'",
        ),
        (
            "unknown model",
            "no_such_model",
            "",
            {"x": np.ones((2, 8), np.float32)},
            ["y"],
            grpc.StatusCode.NOT_FOUND,
            "unknown model: 'no_such_model'",
        ),
        (
            "unknown version",
            "mlp",
            "7",
            {"x": np.ones((2, 8), np.float32)},
            ["y"],
            grpc.StatusCode.NOT_FOUND,
            "'mlp' version 7 is not found",
        ),
    ],
)
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    triton_server, ort_forward, case, model, version, inputs, outputs, status, needle
) -> None:
    # A large backoff proves that bad requests are not retried.
    config = ClientConfig(url=triton_server.grpc_url, backoff_initial_s=2.0)
    with RecsysClient(config) as client:
        start = time.perf_counter()
        with pytest.raises(InferenceError) as info:
            client.infer(model, inputs, outputs, model_version=version)
        assert time.perf_counter() - start < 1.0, f"{case}: the error was retried"
        assert info.value.status is status, case
        assert needle in info.value.message, case
        assert info.value.model_name == model
        assert needle in str(info.value)
        x = _rows(2)
        np.testing.assert_allclose(
            client.infer("mlp", {"x": x}, ["y"])["y"], ort_forward(x), atol=ATOL
        )


@pytest.mark.triton
def test_stand_in_isolates_bad_requests_inside_a_batch(triton_server, triton_repo) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(triton_repo.embed_onnx_path))
    rng = np.random.default_rng(3)
    good = [rng.integers(0, 10, size=(1, 3), dtype=np.int64) for _ in range(24)]
    # embed_sum's config allows any id count, so 5 ids reach the stand-in's own check;
    # id 99 passes every shape check and makes onnxruntime's Gather fail mid-batch.
    wrong_shape = [np.zeros((1, 5), np.int64) for _ in range(4)]
    out_of_range = [np.array([[1, 99, 2]], np.int64) for _ in range(4)]
    requests = good + wrong_shape + out_of_range
    before = _executions(triton_server, "embed_sum")

    async def run() -> list[object]:
        async with AsyncRecsysClient(triton_server.grpc_url) as client:
            calls = [client.infer("embed_sum", {"ids": ids}, ["vec"]) for ids in requests]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    after = _executions(triton_server, "embed_sum")
    for ids, out in zip(good, results[:24], strict=True):
        assert isinstance(out, dict), out
        np.testing.assert_allclose(out["vec"], session.run(["vec"], {"ids": ids})[0], atol=ATOL)
    for error in results[24:28]:
        assert isinstance(error, InferenceError), error
        assert error.status is grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'ids' has shape [1, 5]; the model expects [-1, 3]" in error.message
    for error in results[28:]:
        assert isinstance(error, InferenceError), error
        assert error.status is grpc.StatusCode.INVALID_ARGUMENT
        assert "onnxruntime failed: InvalidArgument" in error.message
        assert "idx=99 must be within the inclusive range [-10,9]" in error.message
    assert after[1] - before[1] < len(requests), "no requests were merged into one batch"
    with RecsysClient(triton_server.grpc_url) as client:
        assert client.is_model_ready("embed_sum")


@pytest.mark.triton
def test_deadline_exceeded_is_reported_and_not_retried(triton_server) -> None:
    config = ClientConfig(url=triton_server.grpc_url, client_timeout_s=0.2, backoff_initial_s=2.0)
    x = np.ones((1, 4), np.float32)
    with RecsysClient(config) as client:
        start = time.perf_counter()
        with pytest.raises(InferenceError) as info:
            client.infer("py_affine", {"X": x, "DELAY_MS": np.array([[800]], np.int32)}, ["Y"])
        assert time.perf_counter() - start < 1.5
        assert info.value.status is grpc.StatusCode.DEADLINE_EXCEEDED
        assert not info.value.retryable
    # The server still finishes the abandoned request; the next one waits behind it.
    with RecsysClient(triton_server.grpc_url) as client:
        np.testing.assert_allclose(client.infer("py_affine", {"X": x}, ["Y"])["Y"], 3.0)


@pytest.mark.triton
def test_external_data_model_loads_from_a_model_onnx_folder(triton_server, ort_forward) -> None:
    triton_server.load_model("mlp_external")
    try:
        x = _rows(4, seed=7)
        with RecsysClient(triton_server.grpc_url) as client:
            out = client.infer("mlp_external", {"x": x}, ["y"])
        np.testing.assert_allclose(out["y"], ort_forward(x), atol=ATOL)
    finally:
        triton_server.unload_model("mlp_external")


@pytest.mark.triton
def test_latency_of_500_sequential_calls(triton_server) -> None:
    with RecsysClient(triton_server.grpc_url) as client:
        stats = measure_latency(client, "mlp", {"x": _rows(1)}, ["y"], calls=500)
    print(
        f"\nmlp [1, 8] fp32 -> [1, 4], 500 sequential gRPC calls: p50 {stats.p50_ms:.2f} ms, "
        f"p99 {stats.p99_ms:.2f} ms, mean {stats.mean_ms:.2f} ms, max {stats.max_ms:.2f} ms"
    )
    assert stats.calls == 500
    assert 0 < stats.p50_ms <= stats.p99_ms <= stats.max_ms
    # Generous bound for a shared 2-core machine; a regression to ~100 ms calls fails.
    assert stats.p50_ms < 25.0
