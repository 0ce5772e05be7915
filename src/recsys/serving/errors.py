"""Errors raised by the serving layer (local Triton server and gRPC clients).

Every error keeps what the server said (its message and gRPC status) so a caller
can tell a bad request from an unavailable server without parsing strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc


class ServingError(Exception):
    """Base class of the serving layer's errors."""


class TritonNotInstalledError(ServingError, FileNotFoundError):
    """The ``tritonserver`` binary (shipped in PyPI ``nvidia-pytriton``) is missing."""


class ServerStartError(ServingError, RuntimeError):
    """A local Triton server exited or did not become ready in time.

    Attributes:
        log_path: the server's log file (may be deleted once the server is cleaned up).
        log_tail: the last lines of that log, also included in the message.
        returncode: the process's exit status, or None if it was still running.
    """

    def __init__(
        self, reason: str, *, log_path: Path | None, log_tail: str, returncode: int | None
    ) -> None:
        self.reason = reason
        self.log_path = log_path
        self.log_tail = log_tail
        self.returncode = returncode
        super().__init__(reason)

    def __str__(self) -> str:
        # Built on demand: the log may be moved after the error is raised.
        return (
            f"{self.reason} (exit status: {self.returncode}, log: {self.log_path})\n"
            f"--- last lines of the tritonserver log ---\n{self.log_tail}"
        )


def parse_status(status: str | None) -> grpc.StatusCode | None:
    """Turns tritonclient's status text (``"StatusCode.UNAVAILABLE"``) into a StatusCode.

    Args:
        status: the text from ``InferenceServerException.status()``, or None.

    Returns:
        The matching ``grpc.StatusCode``, or None when the text names none (client-side
        errors carry no status).

    Example::

        >>> parse_status("StatusCode.INVALID_ARGUMENT")
        <StatusCode.INVALID_ARGUMENT: (3, 'invalid argument')>
    """
    if not status:
        return None
    name = status.rsplit(".", 1)[-1]
    code: Any = getattr(grpc.StatusCode, name, None)
    return code if isinstance(code, grpc.StatusCode) else None


class InferenceError(ServingError):
    """A request to the server failed; carries the gRPC status and the server's message.

    Attributes:
        status: the gRPC status code, or None for errors raised before any RPC
            (e.g. an input array whose dtype Triton cannot carry).
        message: the server's (or client's) own message, unchanged.
        model_name: the model the request was for ("" for server-level calls).
        model_version: the version asked for ("" = the server's policy).
    """

    def __init__(
        self,
        message: str,
        *,
        status: grpc.StatusCode | None,
        model_name: str = "",
        model_version: str = "",
    ) -> None:
        self.message = message
        self.status = status
        self.model_name = model_name
        self.model_version = model_version
        status_name = status.name if status is not None else "CLIENT"
        target = f" model '{model_name}'" if model_name else ""
        if model_name and model_version:
            target += f" version {model_version}"
        super().__init__(f"[{status_name}]{target}: {message}")

    @property
    def retryable(self) -> bool:
        """True when the server was unreachable (the request never ran).

        Triton refuses a restricted API called without its key with UNAVAILABLE too;
        that refusal is final, not retried.
        """
        return self.status is grpc.StatusCode.UNAVAILABLE and not self.refused

    @property
    def refused(self) -> bool:
        """True when the server refused a restricted API: the admin key was missing
        or wrong (:mod:`recsys.serving.security`)."""
        return "is restricted, expecting header" in self.message


class InvalidRequestError(InferenceError, ValueError):
    """The client refused to send a request (e.g. an unsupported input dtype)."""


class ModelLoadError(InferenceError):
    """The server refused to load (or unload) a model; ``message`` says why."""
