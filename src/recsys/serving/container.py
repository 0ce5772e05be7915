"""The serving image's entry point: tritonserver with the admin APIs locked and TLS.

NVIDIA's Triton image runs this with its own Python 3.10 (standard library only):
``python3 -m recsys.serving.container``. It reads its settings from the environment,
refuses to start without an admin key, and replaces itself with ``tritonserver``:

* ``RECSYS_TRITON_ADMIN_KEY_FILE`` (a mounted secret, e.g. ``/run/secrets/...``) or
  ``RECSYS_TRITON_ADMIN_KEY``: the key of the restricted APIs
  (:mod:`recsys.serving.security`); required.
* ``RECSYS_TRITON_TLS_CERT`` and ``RECSYS_TRITON_TLS_KEY``: serve gRPC over TLS;
  ``RECSYS_TRITON_TLS_CLIENT_CA`` also asks clients for a certificate (mutual TLS).
* ``RECSYS_TRITON_MODELS`` (default ``/models``): the model repository.

Inside the container the endpoints bind 0.0.0.0: the container has its own network
namespace, and a published port is how the host reaches it. Publish them on the
host's loopback (``-p 127.0.0.1:8001:8001``) or behind a proxy that terminates TLS
and limits request sizes, never on every interface of the host. HTTP clients use the
gateway (``python -m recsys.serving.cli gateway``, :mod:`recsys.serving.http_gateway`)
beside the container: it needs Python 3.11 and packages this image's Python lacks.

Example::

    docker run --gpus all -p 127.0.0.1:8001:8001 \\
        -v $PWD/secrets/admin_key:/run/secrets/triton_admin_key:ro \\
        -e RECSYS_TRITON_ADMIN_KEY_FILE=/run/secrets/triton_admin_key \\
        -v $PWD/artifacts/triton_repo:/models recsys-triton
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from recsys.serving.security import AdminKeyError, TlsConfig, admin_key_from_env
from recsys.serving.security import restricted_api_args as _restricted

MODELS_ENV = "RECSYS_TRITON_MODELS"
TLS_CERT_ENV = "RECSYS_TRITON_TLS_CERT"
TLS_KEY_ENV = "RECSYS_TRITON_TLS_KEY"
TLS_CLIENT_CA_ENV = "RECSYS_TRITON_TLS_CLIENT_CA"


def command(env: Mapping[str, str], binary: str = "tritonserver") -> list[str]:
    """The tritonserver command line of the image.

    Args:
        env: the container's environment.
        binary: the executable.

    Returns:
        argv, starting with ``binary``.

    Raises:
        AdminKeyError: no admin key, or an unusable one.
        ValueError: only one of the TLS certificate and key is set.
        FileNotFoundError: a TLS file is missing.
    """
    key = admin_key_from_env(env)
    if key is None:
        raise AdminKeyError(
            "the serving image needs an admin key: mount one and set "
            "RECSYS_TRITON_ADMIN_KEY_FILE (or set RECSYS_TRITON_ADMIN_KEY)"
        )
    args = [
        binary,
        f"--model-repository={env.get(MODELS_ENV, '/models')}",
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--http-address=0.0.0.0",
        "--grpc-address=0.0.0.0",
        "--metrics-address=0.0.0.0",
        *_restricted(key),
    ]
    cert, private = env.get(TLS_CERT_ENV, ""), env.get(TLS_KEY_ENV, "")
    if bool(cert) != bool(private):
        raise ValueError(f"set {TLS_CERT_ENV} and {TLS_KEY_ENV} together")
    if cert:
        client_ca = env.get(TLS_CLIENT_CA_ENV) or None
        # the process's own client files are not needed: it only execs the server
        args += TlsConfig(
            cert, private, root_cert=client_ca, client_cert=cert, client_key=private
        ).args()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Replaces this process with tritonserver (extra arguments are appended)."""
    try:
        args = command(os.environ) + list(sys.argv[1:] if argv is None else argv)
    except (AdminKeyError, ValueError, FileNotFoundError) as error:
        print(f"recsys-triton: {error}", file=sys.stderr)
        return 2
    os.execvp(args[0], args)
    return 1  # pragma: no cover (execvp does not return)


if __name__ == "__main__":
    sys.exit(main())
