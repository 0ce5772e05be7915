"""Triton's admin APIs behind a key, and TLS for its gRPC endpoint (standard library only).

Anyone who reaches an unrestricted Triton port can load a model repository entry (a
python-backend ``model.py`` then runs with the server's privileges), unload a model,
register shared-memory regions or change logging. Triton restricts API groups to
requests that carry a header with a given value (``--http-restricted-api``,
``--grpc-restricted-protocol``); every server this project starts uses them:

* restricted (:data:`RESTRICTED_APIS`): ``model-repository`` (index, load, unload),
  ``model-config`` (the configs hold the profile store's URL, which may carry a
  password), ``shared-memory``, ``logging``, ``trace`` and ``statistics``;
* open: ``inference``, ``health`` and ``metadata`` (what clients and health checks need).

The key comes from the environment, never from code: ``RECSYS_TRITON_ADMIN_KEY``, or
``RECSYS_TRITON_ADMIN_KEY_FILE`` naming a file that holds it (a Docker or Kubernetes
secret). Tools that load or unload models (``roll-in``) read the same variables and send
the key as the :data:`ADMIN_HEADER` header (HTTP) or :data:`GRPC_ADMIN_HEADER`
metadata (gRPC). A refused call gets HTTP 403, or gRPC UNAVAILABLE with "This protocol
is restricted" (Triton's choice of code; the clients do not retry it).

Triton takes the key on its command line, so other users of the same host who can
read ``/proc/<pid>/cmdline`` can see it: run the server in its own container or user
namespace (or mount ``/proc`` with ``hidepid=2``) where that matters.

This module runs in NVIDIA's container too (the image's entry point,
:mod:`recsys.serving.container`): Python 3.10, no third-party imports.

Example:
    >>> key = generate_admin_key()
    >>> restricted_api_args(key)[0].startswith("--http-restricted-api=model-repository,")
    True
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ADMIN_KEY_ENV = "RECSYS_TRITON_ADMIN_KEY"
ADMIN_KEY_FILE_ENV = "RECSYS_TRITON_ADMIN_KEY_FILE"
ADMIN_HEADER = "recsys-admin-key"
"""The HTTP header that carries the admin key."""
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
"""The gRPC metadata key that carries it (Triton prefixes the flag's header name)."""

RESTRICTED_APIS: tuple[str, ...] = (
    "model-repository",
    "model-config",
    "shared-memory",
    "logging",
    "trace",
    "statistics",
)
TRITON_APIS: tuple[str, ...] = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
"""Every API group Triton's restriction flags know."""
MIN_KEY_LENGTH = 16
# Triton splits the flag's value at ',', ':' and '='; a header value must be printable.
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.~+/-]+")


class AdminKeyError(ValueError):
    """The admin key is missing, unreadable or unusable; the message says which and why."""


def check_admin_key(key: str, source: str = "the admin key") -> str:
    """Returns ``key`` if Triton can use it and it is long enough to be a secret.

    Raises:
        AdminKeyError: shorter than :data:`MIN_KEY_LENGTH`, or characters outside
            letters, digits and ``_.~+/-``.
    """
    if len(key) < MIN_KEY_LENGTH:
        raise AdminKeyError(
            f"{source} has {len(key)} characters; use at least {MIN_KEY_LENGTH} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not _KEY_PATTERN.fullmatch(key):
        raise AdminKeyError(
            f"{source} may hold only letters, digits and _.~+/- (Triton's flag syntax "
            "uses , : and =)"
        )
    return key


def admin_key_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The admin key from ``RECSYS_TRITON_ADMIN_KEY_FILE`` or ``RECSYS_TRITON_ADMIN_KEY``.

    Args:
        env: the environment (default ``os.environ``).

    Returns:
        The key, or None when neither variable is set.

    Raises:
        AdminKeyError: both are set, the file cannot be read or is empty, or the key
            fails :func:`check_admin_key`.
    """
    env = os.environ if env is None else env
    path, value = env.get(ADMIN_KEY_FILE_ENV, ""), env.get(ADMIN_KEY_ENV, "")
    if path and value:
        raise AdminKeyError(f"set {ADMIN_KEY_ENV} or {ADMIN_KEY_FILE_ENV}, not both")
    if path:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise AdminKeyError(f"{ADMIN_KEY_FILE_ENV}={path}: {error.strerror}") from None
        if not key:
            raise AdminKeyError(f"{ADMIN_KEY_FILE_ENV}={path} is empty")
        return check_admin_key(key, f"the key in {path}")
    if value:
        return check_admin_key(value.strip(), ADMIN_KEY_ENV)
    return None


def generate_admin_key() -> str:
    """A fresh random key (256 bits, URL-safe), for a server whose admin APIs only the
    process that started it uses."""
    return secrets.token_urlsafe(32)


def admin_headers(key: str | None, protocol: str = "grpc") -> dict[str, str]:
    """The request headers (``protocol`` "http") or gRPC metadata ("grpc") that carry
    ``key`` ({} without one)."""
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be grpc or http, not {protocol!r}")
    if not key:
        return {}
    return {GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER: key}


def restricted_api_args(
    key: str, apis: tuple[str, ...] = RESTRICTED_APIS, *, http: bool = True
) -> list[str]:
    """The tritonserver flags that put ``apis`` behind ``key`` on gRPC (and HTTP).

    Args:
        key: the admin key (checked with :func:`check_admin_key`).
        apis: the API groups to restrict.
        http: also restrict the HTTP endpoint (False when HTTP is off).

    Returns:
        ``--grpc-restricted-protocol=...`` (and ``--http-restricted-api=...``).
    """
    check_admin_key(key)
    spec = f"{','.join(apis)}:{ADMIN_HEADER}={key}"
    args = [f"--grpc-restricted-protocol={spec}"]
    if http:
        args.insert(0, f"--http-restricted-api={spec}")
    return args


@dataclass(frozen=True)
class TlsConfig:
    """TLS of Triton's gRPC endpoint (Triton's ``--grpc-use-ssl`` options).

    Args:
        server_cert: PEM certificate the server presents.
        server_key: its PEM private key.
        root_cert: PEM CA that client certificates must chain to (mutual TLS); None:
            clients are not asked for one.
        ca_cert: PEM CA that signed ``server_cert``, which the starting process's own
            connection (readiness, model control) verifies the server against; None:
            ``server_cert`` itself (a self-signed certificate).
        client_cert: with mutual TLS, the certificate of that connection.
        client_key: its private key.

    Example:
        >>> TlsConfig("cert.pem", "key.pem").mutual
        False
    """

    server_cert: Path | str
    server_key: Path | str
    root_cert: Path | str | None = None
    ca_cert: Path | str | None = None
    client_cert: Path | str | None = None
    client_key: Path | str | None = None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate."""
        return self.root_cert is not None

    def check(self) -> None:
        """Raises FileNotFoundError naming the first certificate or key that is missing,
        ValueError when mutual TLS lacks the starting process's client certificate."""
        for name in ("server_cert", "server_key", "root_cert", "ca_cert", "client_cert"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"TLS {name.replace('_', ' ')} {path} does not exist")
        if self.mutual and (self.client_cert is None or self.client_key is None):
            raise ValueError("mutual TLS (root_cert) needs client_cert and client_key too")

    def args(self) -> list[str]:
        """The tritonserver flags."""
        self.check()
        out = [
            "--grpc-use-ssl-mutual=true" if self.mutual else "--grpc-use-ssl=true",
            f"--grpc-server-cert={Path(self.server_cert).resolve()}",
            f"--grpc-server-key={Path(self.server_key).resolve()}",
        ]
        if self.root_cert is not None:
            out.append(f"--grpc-root-cert={Path(self.root_cert).resolve()}")
        return out

    def client_files(self) -> dict[str, str | None]:
        """The starting process's own connection: ``root_certificates``,
        ``private_key`` and ``certificate_chain`` file paths (tritonclient's names)."""
        return {
            "root_certificates": str(self.ca_cert or self.server_cert),
            "private_key": None if self.client_key is None else str(self.client_key),
            "certificate_chain": None if self.client_cert is None else str(self.client_cert),
        }
