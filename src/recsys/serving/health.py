"""A truthful readiness check of the served recommender (standard library only).

Triton's ``/v2/health/ready`` is server-wide: it stays 200 when a model that the
``recommend`` entry point calls through BLS has been unloaded, and every request then
fails. This check asks each model ``recommend`` needs (:data:`SERVED_MODELS`) for its
own readiness (``/v2/models/<name>/ready``, open without the admin key) and reports
ready only when all of them are.

The container's ``HEALTHCHECK`` runs it (``python3 -m recsys.serving.health``), so it
imports nothing outside the standard library and runs on NVIDIA's Python 3.10; the
gRPC form (``recsys-serving health``, TLS included) probes through
:class:`~recsys.serving.client.RecsysClient`.

Example::

    python -m recsys.serving.health --http 127.0.0.1:8000      # exit 0 ready, 1 not
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SERVED_MODELS: tuple[str, ...] = ("recommend", "user_tower", "retrieval", "ranker")
"""The models of the generated repository: ``recommend`` and the stages it calls."""


@dataclass(frozen=True)
class Readiness:
    """The answer of :func:`check_readiness`.

    Attributes:
        ready: every model is ready.
        not_ready: the models that are not (or could not be asked).
        detail: one line per model that is not ready, saying why.
    """

    ready: bool
    not_ready: tuple[str, ...]
    detail: tuple[str, ...]

    def summary(self) -> str:
        """One line for logs and the health check's output."""
        if self.ready:
            return "ready"
        return "not ready: " + "; ".join(self.detail)


def check_readiness(
    probe: Callable[[str], bool], models: Sequence[str] = SERVED_MODELS
) -> Readiness:
    """Asks ``probe`` whether each model is ready.

    Args:
        probe: model name -> ready; an exception counts as not ready.
        models: the models that must all be ready.

    Returns:
        A :class:`Readiness`.

    Example:
        >>> check_readiness(lambda name: name != "ranker").summary()
        'not ready: ranker: not ready'
    """
    missing: list[str] = []
    detail: list[str] = []
    for name in models:
        try:
            ok = bool(probe(name))
            reason = "not ready"
        except Exception as error:  # an unreachable server is simply not ready
            ok, reason = False, f"{type(error).__name__}: {error}"
        if not ok:
            missing.append(name)
            detail.append(f"{name}: {reason}")
    return Readiness(not missing, tuple(missing), tuple(detail))


def http_probe(url: str, timeout_s: float = 2.0) -> Callable[[str], bool]:
    """A probe over Triton's HTTP endpoint ``host:port``: ``GET /v2/models/<m>/ready``."""

    def probe(model: str) -> bool:
        request = urllib.request.Request(f"http://{url}/v2/models/{model}/ready")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False  # 400: the model is not loaded

    return probe


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recsys.serving.health --http HOST:PORT [--models ...]``; 0 when ready."""
    parser = argparse.ArgumentParser(
        prog="python -m recsys.serving.health",
        description="Exit 0 when every model recommend needs is ready, else 1.",
    )
    parser.add_argument("--http", default="127.0.0.1:8000", help="Triton's HTTP host:port")
    parser.add_argument("--models", nargs="+", default=list(SERVED_MODELS))
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per model")
    args = parser.parse_args(argv)
    result = check_readiness(http_probe(args.http, args.timeout), args.models)
    print(result.summary(), file=sys.stdout if result.ready else sys.stderr)
    return 0 if result.ready else 1


if __name__ == "__main__":
    sys.exit(main())
