"""gRPC clients for Triton: numpy in, numpy out, typed errors, bounded retries.

:class:`RecsysClient` (blocking, ``tritonclient.grpc``) and
:class:`AsyncRecsysClient` (asyncio, ``tritonclient.grpc.aio``) share one contract:

* ``infer(model_name, inputs, outputs, model_version="")`` takes a dict of named numpy
  arrays and returns a dict of named numpy arrays; the Triton datatype of each input
  follows its numpy dtype (float32 -> FP32, int64 -> INT64, object/bytes -> BYTES);
* every call has a deadline (``client_timeout_s``);
* a call that found the server UNAVAILABLE (down, restarting, connection refused) is
  retried with exponential backoff; nothing else is retried, so a bad request fails
  at once;
* every failure is an :class:`~recsys.serving.errors.InferenceError` carrying the gRPC
  status and the server's own message.

Extension point: typed calls (e.g. ``recommend(user_id, k)``) go in a subclass or a
thin wrapper that builds the input dict, calls :meth:`RecsysClient.infer` and decodes
the output dict (see the class docstring). Keep tensor names next to the model they
belong to, not spread over callers.

Example::

    from recsys.serving.client import ClientConfig, RecsysClient

    with RecsysClient(ClientConfig(url="127.0.0.1:8001")) as client:
        scores = client.infer("ranker", {"dense": dense}, ["score"])["score"]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from recsys.serving.errors import InferenceError, InvalidRequestError, parse_status
from recsys.serving.security import admin_headers


@dataclass
class ClientConfig:
    """How a client reaches the server and how hard it tries.

    Args:
        url: ``host:port`` of Triton's gRPC endpoint (no scheme).
        client_timeout_s: deadline of each call in seconds; None waits forever.
        max_retries: extra attempts after an UNAVAILABLE answer (0 = no retry).
        backoff_initial_s: wait before the first retry.
        backoff_multiplier: factor applied to the wait after each retry.
        backoff_max_s: cap on a single wait.
        verbose: let tritonclient print every request and response.
        ssl: connect with TLS (a server started with Triton's ``--grpc-use-ssl``).
        root_certificates: PEM file of the CA that signed the server's certificate
            (None: the system's roots).
        private_key: PEM key of this client's certificate (mutual TLS).
        certificate_chain: PEM certificate of this client (mutual TLS).
        admin_key: the server's admin key (:mod:`recsys.serving.security`), sent
            with the calls of restricted APIs (model configs, load, unload); None:
            those calls are refused by a restricted server.

    Example::

        >>> ClientConfig(url="127.0.0.1:8001", client_timeout_s=2.0).max_retries
        3
    """

    url: str = "127.0.0.1:8001"
    client_timeout_s: float | None = 10.0
    max_retries: int = 3
    backoff_initial_s: float = 0.05
    backoff_multiplier: float = 2.0
    backoff_max_s: float = 1.0
    verbose: bool = False
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    admin_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if "://" in self.url:
            raise ValueError(f"url takes host:port without a scheme, not {self.url!r}")
        tls_files = (self.root_certificates, self.private_key, self.certificate_chain)
        if not self.ssl and any(f is not None for f in tls_files):
            raise ValueError("root_certificates, private_key and certificate_chain need ssl=True")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("give private_key and certificate_chain together (mutual TLS)")
        for path in tls_files:
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"TLS file {path} does not exist")
        if self.client_timeout_s is not None and self.client_timeout_s <= 0:
            raise ValueError("client_timeout_s must be positive (or None)")
        if self.max_retries < 0 or self.backoff_initial_s < 0 or self.backoff_max_s < 0:
            raise ValueError("max_retries and backoff times must not be negative")
        if self.backoff_multiplier < 1:
            raise ValueError("backoff_multiplier must be >= 1")

    def channel_options(self) -> dict[str, Any]:
        """The keyword arguments of tritonclient's ``InferenceServerClient``."""
        return {
            "url": self.url,
            "verbose": self.verbose,
            "ssl": self.ssl,
            "root_certificates": self.root_certificates,
            "private_key": self.private_key,
            "certificate_chain": self.certificate_chain,
        }

    @property
    def admin_headers(self) -> dict[str, str]:
        """The headers of a restricted call (empty without an admin key)."""
        return admin_headers(self.admin_key)

    def backoff_delays(self) -> Iterator[float]:
        """Yields the wait before each retry: initial, initial*m, ..., capped at max."""
        delay = self.backoff_initial_s
        for _ in range(self.max_retries):
            yield min(delay, self.backoff_max_s)
            delay *= self.backoff_multiplier


@dataclass(frozen=True)
class TensorMetadata:
    """One input or output of a served model (-1 marks a free dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """What the server says about a model: versions, platform and tensors."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]

    @classmethod
    def from_response(cls, response: Any) -> ModelMetadata:
        """Builds it from tritonclient's ``ModelMetadataResponse`` message."""

        def tensors(items: Any) -> tuple[TensorMetadata, ...]:
            return tuple(
                TensorMetadata(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in items
            )

        return cls(
            name=response.name,
            versions=tuple(response.versions),
            platform=response.platform,
            inputs=tensors(response.inputs),
            outputs=tensors(response.outputs),
        )


def to_inference_error(
    error: InferenceServerException, model_name: str = "", model_version: str = ""
) -> InferenceError:
    """Maps tritonclient's exception to an :class:`InferenceError` (status + message)."""
    return InferenceError(
        str(error.message()),
        status=parse_status(error.status()),
        model_name=model_name,
        model_version=model_version,
    )


def retry_delay(
    raw: InferenceServerException,
    delays: Iterator[float],
    model_name: str = "",
    model_version: str = "",
) -> float:
    """The wait before retrying a failed call, or the typed error to raise.

    The retry policy of both clients: only retryable errors (UNAVAILABLE) are retried,
    while ``delays`` (:meth:`ClientConfig.backoff_delays`) lasts.

    Raises:
        InferenceError: the error is not retryable, or the retries are spent.
    """
    error = to_inference_error(raw, model_name, model_version)
    delay = next(delays, None) if error.retryable else None
    if delay is None:
        raise error from None
    return delay


def build_inputs(module: Any, inputs: Mapping[str, np.ndarray], model_name: str = "") -> list[Any]:
    """Wraps named numpy arrays as tritonclient ``InferInput`` objects.

    Args:
        module: ``tritonclient.grpc`` or ``tritonclient.grpc.aio`` (their InferInput).
        inputs: tensor name -> array; the array's dtype decides the Triton datatype.
        model_name: for error messages.

    Returns:
        The InferInput list, in the mapping's order.

    Raises:
        InvalidRequestError: no inputs, a value that is not an ndarray (a list would
            silently become float64/int64), or a dtype Triton cannot carry.
    """
    if not inputs:
        raise InvalidRequestError("no inputs given", status=None, model_name=model_name)
    wrapped = []
    for name, array in inputs.items():
        if not isinstance(array, np.ndarray):
            raise InvalidRequestError(
                f"input '{name}' must be a numpy array, not {type(array).__name__}",
                status=None,
                model_name=model_name,
            )
        datatype = np_to_triton_dtype(array.dtype)
        if datatype is None:
            raise InvalidRequestError(
                f"input '{name}' has dtype {array.dtype}, which Triton cannot carry",
                status=None,
                model_name=model_name,
            )
        infer_input = module.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        wrapped.append(infer_input)
    return wrapped


def build_outputs(module: Any, outputs: Sequence[str], model_name: str = "") -> list[Any]:
    """Wraps output names as ``InferRequestedOutput`` objects (at least one name)."""
    if isinstance(outputs, str) or not outputs:
        raise InvalidRequestError(
            "outputs must be a non-empty list of output names", status=None, model_name=model_name
        )
    return [module.InferRequestedOutput(name) for name in outputs]


def result_arrays(
    result: Any, outputs: Sequence[str], model_name: str, model_version: str
) -> dict[str, np.ndarray]:
    """Reads the requested outputs of an ``InferResult`` as numpy arrays."""
    arrays: dict[str, np.ndarray] = {}
    for name in outputs:
        array = result.as_numpy(name)
        if array is None:
            raise InferenceError(
                f"the response has no output '{name}'",
                status=None,
                model_name=model_name,
                model_version=model_version,
            )
        arrays[name] = array
    return arrays


class RecsysClient:
    """Blocking gRPC client for the recsys Triton models.

    Args:
        config: a :class:`ClientConfig`, or just the ``host:port`` URL.

    Example::

        with RecsysClient("127.0.0.1:8001") as client:
            out = client.infer("mlp", {"x": np.zeros((1, 8), np.float32)}, ["y"])
            out["y"].shape  # (1, 4)

    Extension point: add typed model calls in a subclass, on top of :meth:`infer`::

        class RecommendClient(RecsysClient):
            def recommend(self, user_id: int, k: int) -> list[int]:
                out = self.infer(
                    "retrieval", {"user_id": np.array([[user_id]], np.int64)}, ["item_ids"]
                )
                return out["item_ids"][0, :k].tolist()
    """

    def __init__(self, config: ClientConfig | str) -> None:
        self.config = ClientConfig(url=config) if isinstance(config, str) else config
        self._client = grpcclient.InferenceServerClient(**self.config.channel_options())

    def _call(self, fn: Any, model_name: str = "", model_version: str = "") -> Any:
        delays = self.config.backoff_delays()
        while True:
            try:
                return fn()
            except InferenceServerException as raw:
                time.sleep(retry_delay(raw, delays, model_name, model_version))

    def infer(
        self,
        model_name: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        model_version: str = "",
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        """Runs one inference request.

        Args:
            model_name: the served model.
            inputs: input name -> numpy array (batch dimension included when the model
                batches).
            outputs: the output names to return.
            model_version: a version number as text; "" lets the server's version
                policy choose.
            request_id: an id echoed in the server's logs and traces.

        Returns:
            Output name -> numpy array, for every name in ``outputs``.

        Raises:
            InvalidRequestError: the request could not be built (nothing was sent).
            InferenceError: the server refused or failed the request (e.g.
                INVALID_ARGUMENT for a wrong dtype or shape, NOT_FOUND-like messages
                for an unknown model or version, DEADLINE_EXCEEDED on timeout,
                UNAVAILABLE after the retries).
        """
        wrapped_inputs = build_inputs(grpcclient, inputs, model_name)
        wrapped_outputs = build_outputs(grpcclient, outputs, model_name)
        result = self._call(
            lambda: self._client.infer(
                model_name,
                wrapped_inputs,
                model_version=model_version,
                outputs=wrapped_outputs,
                request_id=request_id,
                client_timeout=self.config.client_timeout_s,
            ),
            model_name,
            model_version,
        )
        return result_arrays(result, outputs, model_name, model_version)

    def is_ready(self) -> bool:
        """True when the server answers and reports ready (never raises)."""
        try:
            return bool(self._client.is_server_ready(client_timeout=self.config.client_timeout_s))
        except InferenceServerException:
            return False

    def is_model_ready(self, model_name: str, model_version: str = "") -> bool:
        """True when ``model_name`` (at ``model_version``) can serve (never raises)."""
        try:
            return bool(
                self._client.is_model_ready(
                    model_name, model_version, client_timeout=self.config.client_timeout_s
                )
            )
        except InferenceServerException:
            return False

    def model_metadata(self, model_name: str, model_version: str = "") -> ModelMetadata:
        """Returns the model's versions, platform, inputs and outputs.

        Raises:
            InferenceError: unknown model or version, or the server is unreachable.
        """
        response = self._call(
            lambda: self._client.get_model_metadata(
                model_name, model_version, client_timeout=self.config.client_timeout_s
            ),
            model_name,
            model_version,
        )
        return ModelMetadata.from_response(response)

    def model_config(self, model_name: str, model_version: str = "") -> dict[str, Any]:
        """Returns the model's configuration as the server completed it (JSON dict)."""
        response = self._call(
            lambda: self._client.get_model_config(
                model_name,
                model_version,
                headers=self.config.admin_headers,
                as_json=True,
                client_timeout=self.config.client_timeout_s,
            ),
            model_name,
            model_version,
        )
        return dict(response["config"])

    def load_model(self, model_name: str, config_json: str | None = None) -> None:
        """Loads (or reloads) a model on a server in explicit model-control mode.

        Sends the admin key (``ClientConfig.admin_key``): model control is a
        restricted API.

        Raises:
            InferenceError: refused (PERMISSION_DENIED-like without the key) or the
                model failed to load; the message is the server's.
        """
        self._call(
            lambda: self._client.load_model(
                model_name,
                headers=self.config.admin_headers,
                config=config_json,
                client_timeout=self.config.client_timeout_s,
            ),
            model_name,
        )

    def unload_model(self, model_name: str) -> None:
        """Unloads a model (explicit model-control mode); sends the admin key.

        Raises:
            InferenceError: refused or failed.
        """
        self._call(
            lambda: self._client.unload_model(
                model_name,
                headers=self.config.admin_headers,
                client_timeout=self.config.client_timeout_s,
            ),
            model_name,
        )

    def close(self) -> None:
        """Closes the gRPC channel."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRecsysClient:
    """asyncio gRPC client with the same contract as :class:`RecsysClient`.

    Many concurrent ``infer`` calls share one channel; Triton's dynamic batcher merges
    them server-side.

    Args:
        config: a :class:`ClientConfig`, or just the ``host:port`` URL.

    Example::

        async with AsyncRecsysClient("127.0.0.1:8001") as client:
            outs = await asyncio.gather(
                *(client.infer("mlp", {"x": row[None]}, ["y"]) for row in rows)
            )
    """

    def __init__(self, config: ClientConfig | str) -> None:
        self.config = ClientConfig(url=config) if isinstance(config, str) else config
        self._client = grpcclient_aio.InferenceServerClient(**self.config.channel_options())

    async def _call(self, fn: Any, model_name: str = "", model_version: str = "") -> Any:
        delays = self.config.backoff_delays()
        while True:
            try:
                return await fn()
            except InferenceServerException as raw:
                await asyncio.sleep(retry_delay(raw, delays, model_name, model_version))

    async def infer(
        self,
        model_name: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        model_version: str = "",
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        """Runs one inference request; see :meth:`RecsysClient.infer`."""
        wrapped_inputs = build_inputs(grpcclient_aio, inputs, model_name)
        wrapped_outputs = build_outputs(grpcclient_aio, outputs, model_name)
        result = await self._call(
            lambda: self._client.infer(
                model_name,
                wrapped_inputs,
                model_version=model_version,
                outputs=wrapped_outputs,
                request_id=request_id,
                client_timeout=self.config.client_timeout_s,
            ),
            model_name,
            model_version,
        )
        return result_arrays(result, outputs, model_name, model_version)

    async def is_ready(self) -> bool:
        """True when the server answers and reports ready (never raises)."""
        try:
            return bool(
                await self._client.is_server_ready(client_timeout=self.config.client_timeout_s)
            )
        except InferenceServerException:
            return False

    async def is_model_ready(self, model_name: str, model_version: str = "") -> bool:
        """True when ``model_name`` (at ``model_version``) can serve (never raises)."""
        try:
            return bool(
                await self._client.is_model_ready(
                    model_name, model_version, client_timeout=self.config.client_timeout_s
                )
            )
        except InferenceServerException:
            return False

    async def model_metadata(self, model_name: str, model_version: str = "") -> ModelMetadata:
        """Returns the model's versions, platform, inputs and outputs."""
        response = await self._call(
            lambda: self._client.get_model_metadata(
                model_name, model_version, client_timeout=self.config.client_timeout_s
            ),
            model_name,
            model_version,
        )
        return ModelMetadata.from_response(response)

    async def close(self) -> None:
        """Closes the gRPC channel."""
        await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@dataclass(frozen=True)
class LatencyStats:
    """Client-side latency of sequential calls, in milliseconds."""

    calls: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


def measure_latency(
    client: RecsysClient,
    model_name: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    calls: int = 500,
    warmup: int = 20,
) -> LatencyStats:
    """Times ``calls`` sequential ``infer`` calls (after ``warmup`` untimed ones).

    Args:
        client: a connected client.
        model_name: the model to call.
        inputs: the same inputs for every call.
        outputs: output names to fetch.
        calls: timed calls.
        warmup: untimed calls first (channel set-up, first-run allocations).

    Returns:
        p50/p99/mean/max of the wall time of one call as the client sees it.

    Example::

        stats = measure_latency(client, "mlp", {"x": np.zeros((1, 8), np.float32)}, ["y"])
    """
    if calls < 1:
        raise ValueError("calls must be >= 1")
    for _ in range(warmup):
        client.infer(model_name, inputs, outputs)
    times = np.empty(calls, dtype=np.float64)
    for i in range(calls):
        start = time.perf_counter()
        client.infer(model_name, inputs, outputs)
        times[i] = time.perf_counter() - start
    times *= 1000.0
    return LatencyStats(
        calls=calls,
        p50_ms=float(np.percentile(times, 50)),
        p99_ms=float(np.percentile(times, 99)),
        mean_ms=float(times.mean()),
        max_ms=float(times.max()),
    )
