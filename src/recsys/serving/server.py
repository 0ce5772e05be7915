"""Runs a real Triton Inference Server locally, without Docker, on CPU or GPU hosts.

PyPI ``nvidia-pytriton`` ships NVIDIA's ``tritonserver`` binary (2.51.0, the NGC
24.10 release) with the python backend only. This module finds that binary, lays
out a backend directory next to it and starts the server on a model repository:

* ``python/``: NVIDIA's python backend (``libtriton_python.so``, its utils module
  and the stub built for this interpreter's Python version).
* ``onnxruntime/model.py``: a *local stand-in* for NVIDIA's C++ onnxruntime backend
  (``recsys/serving/triton_backends/onnxruntime_local/model.py``). Triton runs it as a
  Python-based backend, so a repository whose models say
  ``platform: "onnxruntime_onnx"`` loads unchanged. The stand-in is never deployed:
  the official container brings the real backend (see ``docs/serving.md``).

The stub is linked against ``libpython3.x.so``; ``LD_LIBRARY_PATH`` puts this
interpreter's ``LIBDIR`` first so the stub embeds the same Python build as the venv
(not a system ``libpython`` of another patch release), and the venv's ``bin`` goes
first on ``PATH`` so the embedded interpreter finds the venv's site-packages
(numpy, onnxruntime).

Example::

    from recsys.serving.server import LocalTritonServer, TritonServerConfig

    with LocalTritonServer(TritonServerConfig(model_repository="serving/repo")) as server:
        print(server.grpc_url)  # e.g. "127.0.0.1:40123"

Command line (serves until Ctrl-C)::

    python -m recsys.serving.server --model-repository serving/repo
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from recsys.serving.errors import (
    InferenceError,
    ModelLoadError,
    ServerStartError,
    TritonNotInstalledError,
    parse_status,
)
from recsys.serving.security import (
    RESTRICTED_APIS,
    TRITON_APIS,
    AdminKeyError,
    TlsConfig,
    admin_headers,
    admin_key_from_env,
    check_admin_key,
    generate_admin_key,
    restricted_api_args,
)

LOGGER = logging.getLogger(__name__)

ModelControlMode = Literal["none", "explicit", "poll"]
MODEL_CONTROL_MODES: tuple[str, ...] = ("none", "explicit", "poll")

PYTRITON_PACKAGE = "pytriton"
PYTRITON_REQUIREMENT = "nvidia-pytriton==0.7.0"

# The stand-in ships as package data: a file Triton loads from a backend directory,
# never imported by recsys itself.
DEFAULT_ONNXRUNTIME_STAND_IN = (
    Path(__file__).resolve().parent / "triton_backends" / "onnxruntime_local" / "model.py"
)

_PORT_IN_USE_MARKERS = ("already in use", "Address in use", "address already in use")


@dataclass(frozen=True)
class TritonDistribution:
    """Where the pieces of the tritonserver build inside ``nvidia-pytriton`` lie.

    Attributes:
        root: ``site-packages/pytriton/tritonserver``.
        binary: the ``tritonserver`` executable.
        python_backend_dir: ``libtriton_python.so`` and ``triton_python_backend_utils.py``.
        stubs_dir: ``python_backend_stubs/<major.minor>/triton_python_backend_stub`` folders.
        libs_dir: the wheel's bundled shared libraries (``nvidia_pytriton.libs``).
    """

    root: Path
    binary: Path
    python_backend_dir: Path
    stubs_dir: Path
    libs_dir: Path

    def stub_for(self, python_version: str) -> Path:
        """Returns the python backend stub built for ``python_version`` ("3.11")."""
        stub = self.stubs_dir / python_version / "triton_python_backend_stub"
        if not stub.is_file():
            available = sorted(p.name for p in self.stubs_dir.iterdir() if p.is_dir())
            raise TritonNotInstalledError(
                f"no python backend stub for Python {python_version} in {self.stubs_dir} "
                f"(available: {', '.join(available)})"
            )
        return stub


def find_tritonserver() -> TritonDistribution:
    """Locates the tritonserver build shipped in the installed ``nvidia-pytriton``.

    The package is found without importing it: ``import pytriton`` needs gevent and
    numpy<2, neither of which the server binary needs.

    Returns:
        The paths of the binary, the python backend and the bundled libraries.

    Raises:
        TritonNotInstalledError: the package or one of its files is missing.

    Example::

        >>> find_tritonserver().binary.name
        'tritonserver'
    """
    spec = importlib.util.find_spec(PYTRITON_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(
            f"the tritonserver binary comes from PyPI {PYTRITON_REQUIREMENT}; install it with "
            f"`{sys.executable} -m pip install --no-deps {PYTRITON_REQUIREMENT}`"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    root = package_dir / "tritonserver"
    dist = TritonDistribution(
        root=root,
        binary=root / "bin" / "tritonserver",
        python_backend_dir=root / "backends" / "python",
        stubs_dir=root / "python_backend_stubs",
        libs_dir=package_dir.parent / "nvidia_pytriton.libs",
    )
    for required in (
        dist.binary,
        dist.python_backend_dir / "libtriton_python.so",
        dist.python_backend_dir / "triton_python_backend_utils.py",
        dist.stubs_dir,
        dist.libs_dir,
    ):
        if not required.exists():
            raise TritonNotInstalledError(
                f"{required} is missing: the installed {PYTRITON_PACKAGE} is incomplete; "
                f"reinstall {PYTRITON_REQUIREMENT}"
            )
    return dist


def build_backend_directory(
    dist: TritonDistribution,
    target: Path,
    *,
    python_version: str | None = None,
    onnxruntime_stand_in: Path | None = DEFAULT_ONNXRUNTIME_STAND_IN,
) -> Path:
    """Lays out a Triton backend directory: the python backend plus the ORT stand-in.

    Files are copied (about 3 MB) rather than linked: the python backend looks for
    its stub beside ``libtriton_python.so``.

    Args:
        dist: the tritonserver build, from :func:`find_tritonserver`.
        target: the folder to fill (created; existing files are replaced).
        python_version: the stub's Python version; defaults to this interpreter's.
        onnxruntime_stand_in: the stand-in ``model.py`` installed as the Python-based
            backend named ``onnxruntime``; None leaves it out (``onnxruntime_onnx``
            models then fail to load with "unable to find backend library").

    Returns:
        ``target``, ready for ``--backend-directory``.

    Example::

        >>> build_backend_directory(find_tritonserver(), Path("/tmp/backends"))
        PosixPath('/tmp/backends')
    """
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(dist.python_backend_dir / name, python_dir / name)
    shutil.copy2(dist.stub_for(version), python_dir / "triton_python_backend_stub")
    if onnxruntime_stand_in is not None:
        if not onnxruntime_stand_in.is_file():
            raise TritonNotInstalledError(
                f"the local onnxruntime stand-in backend {onnxruntime_stand_in} is missing"
            )
        ort_dir = target / "onnxruntime"
        ort_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(onnxruntime_stand_in, ort_dir / "model.py")
    return target


def server_environment(
    dist: TritonDistribution, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Returns the environment tritonserver and its python stubs need.

    ``LD_LIBRARY_PATH`` starts with this interpreter's ``LIBDIR`` (so the stub embeds
    the venv's own libpython, not a system one of another patch release: that mix
    fails with ``'_thread.RLock' object has no attribute '_recursion_count'``), then
    the wheel's bundled libraries. ``PATH`` starts with the venv's ``bin`` (else the
    stub's interpreter misses the venv and fails with "No module named '_struct'").

    Args:
        dist: the tritonserver build.
        base: the environment to extend; defaults to ``os.environ``.

    Returns:
        A new environment mapping.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if not libdir or not soname or not (Path(libdir) / soname).exists():
        LOGGER.warning(
            "this Python has no shared libpython in %r; the python backend stub will use the "
            "system's libpython, which must be the same Python release",
            libdir,
        )
    lib_paths = [p for p in (libdir, str(dist.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_paths)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    return env


def find_free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port that was free a moment ago (the OS picks it).

    Another process may take it before the server binds it; :class:`LocalTritonServer`
    retries its start when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class TritonServerConfig:
    """How to start a local tritonserver.

    Args:
        model_repository: the Triton model repository to serve.
        host: the address every endpoint binds (loopback by default).
        grpc_port: gRPC port; 0 picks a free one.
        http_port: HTTP port; 0 picks a free one, None turns HTTP off.
        metrics_port: Prometheus metrics port; 0 picks a free one, None turns metrics off.
        model_control_mode: "none" loads every model at start; "explicit" loads only
            ``load_models`` and then what :meth:`LocalTritonServer.load_model` asks for;
            "poll" also follows changes in the repository every ``repository_poll_s``.
        load_models: models to load at start in "explicit" mode ("*" = all).
        strict_readiness: the server reports ready only when every model loaded.
        exit_on_error: exit at start when a model fails to load ("none"/"poll" modes);
            False keeps serving the models that did load.
        log_verbose: tritonserver ``--log-verbose`` level (0 = off).
        backend_directory: a ready backend directory; None builds one per server in
            its work folder (python backend + onnxruntime stand-in).
        onnxruntime_stand_in: the stand-in ``model.py`` for the Python-based
            ``onnxruntime`` backend; None leaves it out. Only used when
            ``backend_directory`` is None.
        startup_timeout_s: how long to wait for the server to become ready.
        shutdown_timeout_s: how long :meth:`LocalTritonServer.stop` waits after SIGINT
            before it kills the process group.
        repository_poll_s: poll interval for "poll" mode.
        log_file: where the server writes its log; None puts it in the work folder
            (deleted by ``stop``).
        admin_key: the key of the restricted APIs (:mod:`recsys.serving.security`);
            None: a random key made at each start, which only this object (its
            :meth:`LocalTritonServer.load_model` and ``admin_headers``) knows.
        restricted_apis: the API groups behind the key; () leaves every API open
            (never do that on a reachable address).
        tls: serve gRPC over TLS (mutual with ``tls.root_cert``); None: plain gRPC,
            fine on loopback.
        extra_args: more tritonserver arguments, appended as given.

    Example::

        >>> cfg = TritonServerConfig(model_repository="repo", model_control_mode="explicit")
        >>> cfg.model_control_mode
        'explicit'
    """

    model_repository: Path | str
    host: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int | None = 0
    metrics_port: int | None = None
    model_control_mode: ModelControlMode = "none"
    load_models: tuple[str, ...] = ()
    strict_readiness: bool = True
    exit_on_error: bool = True
    log_verbose: int = 0
    backend_directory: Path | None = None
    onnxruntime_stand_in: Path | None = DEFAULT_ONNXRUNTIME_STAND_IN
    startup_timeout_s: float = 60.0
    shutdown_timeout_s: float = 10.0
    repository_poll_s: int = 5
    log_file: Path | None = None
    admin_key: str | None = field(default=None, repr=False)
    restricted_apis: tuple[str, ...] = RESTRICTED_APIS
    tls: TlsConfig | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.model_repository = Path(self.model_repository)
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ValueError(
                f"model_control_mode must be one of {MODEL_CONTROL_MODES}, "
                f"not {self.model_control_mode!r}"
            )
        if self.load_models and self.model_control_mode != "explicit":
            raise ValueError("load_models only applies to model_control_mode='explicit'")
        for name, port in (
            ("grpc_port", self.grpc_port),
            ("http_port", self.http_port),
            ("metrics_port", self.metrics_port),
        ):
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} must be in 0..65535, not {port}")
        if self.startup_timeout_s <= 0 or self.shutdown_timeout_s <= 0:
            raise ValueError("startup_timeout_s and shutdown_timeout_s must be positive")
        if self.admin_key is not None:
            check_admin_key(self.admin_key)
        unknown = sorted(set(self.restricted_apis) - set(TRITON_APIS))
        if unknown:
            raise ValueError(f"restricted_apis: unknown API groups {unknown}")
        if self.tls is not None:
            self.tls.check()

    def command(
        self,
        binary: Path,
        backend_directory: Path,
        ports: dict[str, int | None],
        shm_prefix: str,
        admin_key: str,
    ) -> list[str]:
        """Builds the tritonserver command line.

        Args:
            binary: the tritonserver executable.
            backend_directory: the folder for ``--backend-directory``.
            ports: resolved ports, keys "grpc", "http" and "metrics" (None = off).
            shm_prefix: a shared-memory name prefix unique to this server, so servers
                started side by side on one machine never share python-stub regions.
            admin_key: the key of ``restricted_apis``.

        Returns:
            The argv list.
        """
        repo = Path(self.model_repository).resolve()
        args = [
            str(binary),
            f"--model-repository={repo}",
            f"--backend-directory={backend_directory}",
            f"--model-control-mode={self.model_control_mode}",
            f"--strict-readiness={_flag(self.strict_readiness)}",
            f"--exit-on-error={_flag(self.exit_on_error)}",
            f"--log-verbose={self.log_verbose}",
            f"--exit-timeout-secs={max(1, int(self.shutdown_timeout_s))}",
            f"--grpc-address={self.host}",
            f"--grpc-port={ports['grpc']}",
        ]
        if ports["http"] is None:
            args.append("--allow-http=false")
        else:
            args += [f"--http-address={self.host}", f"--http-port={ports['http']}"]
        if ports["metrics"] is None:
            args.append("--allow-metrics=false")
        else:
            args += [f"--metrics-address={self.host}", f"--metrics-port={ports['metrics']}"]
        if self.model_control_mode == "poll":
            args.append(f"--repository-poll-secs={self.repository_poll_s}")
        args += [f"--load-model={name}" for name in self.load_models]
        if self.restricted_apis:
            args += restricted_api_args(
                admin_key, self.restricted_apis, http=ports["http"] is not None
            )
        if self.tls is not None:
            args += self.tls.args()
        # The stand-in is a second backend built on libtriton_python.so; each backend
        # takes its own --backend-config, so both get the unique prefix.
        for backend in ("python", "onnxruntime"):
            args.append(f"--backend-config={backend},shm-region-prefix-name={shm_prefix}")
        args += list(self.extra_args)
        return args


def _flag(value: bool) -> str:
    return "true" if value else "false"


class LocalTritonServer:
    """A tritonserver process on this machine, started from ``nvidia-pytriton``'s binary.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        config: how to start the server.

    Example::

        config = TritonServerConfig(model_repository=repo, model_control_mode="explicit")
        with LocalTritonServer(config) as server:
            server.load_model("ranker")
            client = RecsysClient(ClientConfig(url=server.grpc_url))
    """

    _START_ATTEMPTS = 3

    def __init__(self, config: TritonServerConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_path: Path | None = None
        self._log_handle: IO[bytes] | None = None
        self._ports: dict[str, int | None] = {}
        self._shm_prefix = ""
        self._control_client: Any = None
        self._admin_key = config.admin_key or generate_admin_key()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Starts the server and waits until its gRPC endpoint reports ready.

        Returns:
            self, so ``server = LocalTritonServer(cfg).start()`` works.

        Raises:
            TritonNotInstalledError: nvidia-pytriton (or a file of it) is missing.
            FileNotFoundError: the model repository does not exist.
            ServerStartError: the process exited, or was not ready within
                ``startup_timeout_s``; the message holds the log's last lines.
        """
        if self.is_running:
            return self
        repo = Path(self.config.model_repository)
        if not repo.is_dir():
            raise FileNotFoundError(f"model repository {repo} is not a directory")
        dist = find_tritonserver()
        for attempt in range(1, self._START_ATTEMPTS + 1):
            try:
                self._launch(dist)
                self._wait_until_ready()
                atexit.register(self.stop)
                return self
            except ServerStartError as error:
                port_clash = any(m in error.log_tail for m in _PORT_IN_USE_MARKERS)
                error.log_path = self._preserve_log()
                self._cleanup(keep_log=self.config.log_file is not None)
                if not port_clash or attempt == self._START_ATTEMPTS:
                    raise
                LOGGER.warning("tritonserver port was taken (attempt %d); retrying", attempt)
            except BaseException:
                # Ctrl-C or any other failure while starting: leave no server behind.
                self._cleanup(keep_log=self.config.log_file is not None)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, dist: TritonDistribution) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="recsys-triton-"))
        backend_dir = self.config.backend_directory
        if backend_dir is None:
            backend_dir = build_backend_directory(
                dist,
                self._workdir / "backends",
                onnxruntime_stand_in=self.config.onnxruntime_stand_in,
            )
        cfg = self.config
        self._ports = {
            "grpc": cfg.grpc_port or find_free_port(cfg.host),
            "http": None if cfg.http_port is None else (cfg.http_port or find_free_port(cfg.host)),
            "metrics": None
            if cfg.metrics_port is None
            else (cfg.metrics_port or find_free_port(cfg.host)),
        }
        self._shm_prefix = f"recsys_triton_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        command = cfg.command(
            dist.binary, backend_dir, self._ports, self._shm_prefix, self._admin_key
        )
        self._log_path = cfg.log_file or self._workdir / "tritonserver.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self._log_path, "ab")  # noqa: SIM115 (closed in _cleanup)
        LOGGER.info("starting %s", " ".join(_redacted(command, self._admin_key)))
        self._process = subprocess.Popen(
            command,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_environment(dist),
            cwd=self._workdir,
            # Own process group: stop() can then end the server and its python stubs
            # together, and a Ctrl-C in the parent's terminal does not reach them twice.
            start_new_session=True,
        )

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.config.startup_timeout_s
        client = self._new_client()
        try:
            while True:
                returncode = self._process.poll()
                if returncode is not None:
                    raise self._start_error("tritonserver exited during start-up", returncode)
                with contextlib.suppress(Exception):
                    if client.is_server_ready(client_timeout=1.0):
                        return
                if time.monotonic() > deadline:
                    raise self._start_error(
                        f"tritonserver was not ready after {self.config.startup_timeout_s:.0f} s",
                        None,
                    )
                time.sleep(0.1)
        finally:
            client.close()

    def _start_error(self, reason: str, returncode: int | None) -> ServerStartError:
        if self._log_handle is not None:
            self._log_handle.flush()
        return ServerStartError(
            reason, log_path=self._log_path, log_tail=self.log_tail(), returncode=returncode
        )

    def _preserve_log(self) -> Path | None:
        """Moves a failed start's log out of the work folder, which cleanup deletes."""
        if self._log_path is None or self.config.log_file is not None:
            return self._log_path
        if self._log_handle is not None:
            self._log_handle.flush()
        kept = Path(tempfile.gettempdir()) / f"recsys-triton-failed-{uuid.uuid4().hex[:8]}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(self._log_path, kept)
            return kept
        return None

    def stop(self) -> int | None:
        """Stops the server: SIGINT, then SIGKILL to its process group after the timeout.

        Safe to call twice. Removes the work folder (backend copies, default log) and
        any python-backend shared-memory regions the server left behind.

        Returns:
            The server's exit status (None if it was never started).
        """
        returncode = self._terminate()
        self._cleanup(keep_log=self.config.log_file is not None)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        return returncode

    def _terminate(self) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=self.config.shutdown_timeout_s)
            except subprocess.TimeoutExpired:
                LOGGER.warning(
                    "tritonserver ignored SIGINT for %.0f s; killing it",
                    self.config.shutdown_timeout_s,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Python stubs exit when their parent goes; a killed parent can leave one behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode

    def _cleanup(self, *, keep_log: bool) -> None:
        if self._control_client is not None:
            with contextlib.suppress(Exception):
                self._control_client.close()
            self._control_client = None
        if self._process is not None and self._process.poll() is None:
            self._terminate()
        self._process = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._shm_prefix:
            for leftover in glob.glob(f"/dev/shm/{glob.escape(self._shm_prefix)}*"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if not keep_log:
            self._log_path = None

    def wait(self, timeout: float | None = None) -> int | None:
        """Blocks until the server process exits (or ``timeout`` seconds pass).

        Returns:
            The exit status, or None if it is still running after ``timeout``.
        """
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id (None when not started)."""
        return self._process.pid if self._process is not None else None

    @property
    def grpc_port(self) -> int:
        """The gRPC port in use."""
        port = self._ports.get("grpc")
        if port is None:
            raise RuntimeError("the server has not been started")
        return port

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as tritonclient expects it."""
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str | None:
        """``host:port`` of the HTTP endpoint, or None when HTTP is off."""
        port = self._ports.get("http")
        return None if port is None else f"{self.config.host}:{port}"

    @property
    def metrics_url(self) -> str | None:
        """URL of the Prometheus metrics page, or None when metrics are off."""
        port = self._ports.get("metrics")
        return None if port is None else f"http://{self.config.host}:{port}/metrics"

    @property
    def log_path(self) -> Path | None:
        """The server's log file while it exists."""
        return self._log_path

    @property
    def shm_prefix(self) -> str:
        """The shared-memory name prefix of this server's python stubs."""
        return self._shm_prefix

    def log_tail(self, lines: int = 40) -> str:
        """Returns the last ``lines`` lines of the server log ("" if there is none)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with open(self._log_path, encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))

    # -- explicit model control ------------------------------------------------------

    def _new_client(self) -> Any:
        tls = self.config.tls
        if tls is None:
            return grpcclient.InferenceServerClient(url=self.grpc_url)
        return grpcclient.InferenceServerClient(url=self.grpc_url, ssl=True, **tls.client_files())

    def _client(self) -> Any:
        if not self.is_running:
            raise RuntimeError("the server is not running")
        if self._control_client is None:
            self._control_client = self._new_client()
        return self._control_client

    @property
    def admin_key(self) -> str:
        """The key of the restricted APIs (the configured one, or this start's random one)."""
        return self._admin_key

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC metadata that opens the restricted APIs (tritonclient's ``headers=``)."""
        return admin_headers(self._admin_key, "grpc")

    @property
    def http_admin_headers(self) -> dict[str, str]:
        """HTTP headers that open the restricted APIs."""
        return admin_headers(self._admin_key, "http")

    def load_model(self, model_name: str, config_json: str | None = None) -> None:
        """Loads (or reloads) a model; needs ``model_control_mode="explicit"``.

        Args:
            model_name: a model folder of the repository.
            config_json: a model configuration in JSON that overrides ``config.pbtxt``.

        Raises:
            ModelLoadError: the server refused; ``message`` is the server's reason
                (e.g. onnxruntime's parse error for a broken ``model.onnx``).
        """
        self._control(model_name, "load", config_json)

    def unload_model(self, model_name: str) -> None:
        """Unloads a model; needs ``model_control_mode="explicit"``.

        Raises:
            ModelLoadError: the server refused.
        """
        self._control(model_name, "unload", None)

    def is_model_ready(self, model_name: str, model_version: str = "") -> bool:
        """True when the server can serve ``model_name`` (at ``model_version``)."""
        return bool(self._client().is_model_ready(model_name, model_version))

    def _control(self, model_name: str, action: str, config_json: str | None) -> None:
        client = self._client()
        try:
            if action == "load":
                client.load_model(model_name, headers=self.admin_headers, config=config_json)
            else:
                client.unload_model(model_name, headers=self.admin_headers)
        except InferenceServerException as error:
            raise ModelLoadError(
                str(error.message()),
                status=parse_status(error.status()),
                model_name=model_name,
            ) from None


def _redacted(command: list[str], key: str) -> list[str]:
    """The command line with the admin key replaced, for logs."""
    return [arg.replace(key, "<admin key>") for arg in command]


def main(argv: list[str] | None = None) -> int:
    """Serves a model repository until Ctrl-C (``python -m recsys.serving.server``)."""
    parser = argparse.ArgumentParser(
        prog="python -m recsys.serving.server",
        description="Serve a Triton model repository with the local tritonserver "
        "(nvidia-pytriton's binary; onnxruntime_onnx models run on the local stand-in).",
    )
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000, help="-1 turns HTTP off")
    parser.add_argument("--metrics-port", type=int, default=8002, help="-1 turns metrics off")
    parser.add_argument("--model-control-mode", choices=MODEL_CONTROL_MODES, default="none")
    parser.add_argument("--load-model", action="append", default=[], dest="load_models")
    parser.add_argument("--no-strict-readiness", action="store_true")
    parser.add_argument("--no-exit-on-error", action="store_true")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--log-file", type=Path, default=None)
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate (gRPC TLS)")
    parser.add_argument("--tls-key", type=Path, default=None, help="its PEM private key")
    parser.add_argument(
        "--tls-client-ca", type=Path, default=None, help="PEM CA of client certificates (mTLS)"
    )
    parser.add_argument("--tls-ca", type=Path, default=None, help="PEM CA of --tls-cert")
    parser.add_argument("--tls-own-cert", type=Path, default=None, help="mTLS: this CLI's cert")
    parser.add_argument("--tls-own-key", type=Path, default=None, help="mTLS: this CLI's key")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        admin_key = admin_key_from_env()
    except AdminKeyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if admin_key is None:
        print(
            "admin APIs (model load/unload, configs, shared memory, logging, trace, "
            "statistics) are locked with a one-off key: set RECSYS_TRITON_ADMIN_KEY or "
            "RECSYS_TRITON_ADMIN_KEY_FILE to use roll-in against this server",
            file=sys.stderr,
        )
    tls = None
    if args.tls_cert is not None or args.tls_key is not None:
        if args.tls_cert is None or args.tls_key is None:
            print("error: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        tls = TlsConfig(
            args.tls_cert,
            args.tls_key,
            root_cert=args.tls_client_ca,
            ca_cert=args.tls_ca,
            client_cert=args.tls_own_cert,
            client_key=args.tls_own_key,
        )
    config = TritonServerConfig(
        model_repository=args.model_repository,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=None if args.http_port < 0 else args.http_port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        model_control_mode=args.model_control_mode,
        load_models=tuple(args.load_models),
        strict_readiness=not args.no_strict_readiness,
        exit_on_error=not args.no_exit_on_error,
        log_verbose=args.log_verbose,
        log_file=args.log_file,
        startup_timeout_s=args.startup_timeout,
        admin_key=admin_key,
        tls=tls,
        extra_args=tuple(extra),
    )
    # A process started in the background by a non-interactive shell inherits
    # SIGINT as ignored, and Python then installs no KeyboardInterrupt handler:
    # install it (and treat SIGTERM alike) so Ctrl-C and `kill` stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = LocalTritonServer(config)
    try:
        server.start()
    except (ServerStartError, InferenceError) as error:
        print(error, file=sys.stderr)
        return 1
    print(
        f"tritonserver ready: grpc {server.grpc_url}{' (TLS)' if tls else ''}, "
        f"http {server.http_url}, metrics {server.metrics_url}, log {server.log_path}. "
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        returncode = server.wait()
        print(f"tritonserver exited with status {returncode}\n{server.log_tail()}", file=sys.stderr)
        server.stop()
        return returncode or 1
    except KeyboardInterrupt:
        print("stopping tritonserver", file=sys.stderr)
        return server.stop() or 0


if __name__ == "__main__":
    sys.exit(main())
