"""Typed ``recommend(user_id, k)`` calls to the ``recommend`` model over gRPC.

Thin wrappers over :class:`~recsys.serving.client.RecsysClient` and
:class:`~recsys.serving.client.AsyncRecsysClient` that know the tensors of the
``recommend`` entry point of the generated repository
(:mod:`recsys.serving.repository`):

* inputs ``user_id`` INT64 ``[1, 1]`` (the raw user id, as in the dataset) and ``k``
  INT64 ``[1, 1]``: one user per request; Triton's dynamic batcher merges concurrent
  requests on the server;
* optional ``context`` UINT8 ``[1, L]``: the request's live context
  (:class:`~recsys.runtime.context.RequestContext`) as UTF-8 JSON;
* outputs ``item_ids`` INT64 ``[1, n]`` (raw item ids, best first) and ``scores`` FP32
  ``[1, n]``, with ``n <= k`` (fewer when the catalogue minus the user's seen items is
  smaller than ``k``), and ``request_id`` (ASCII bytes): the id the exposure log and
  attributed outcomes carry.

The server checks the values (``k`` in ``1..max_k``, ``user_id >= 0``) and answers a
bad request with INVALID_ARGUMENT; this client only refuses values that cannot be sent
as those tensors (not an integer, outside int64).

Example::

    from recsys.serving.recommend_client import RecommendClient

    with RecommendClient("127.0.0.1:8001") as client:
        rec = client.recommend(user_id=1, k=10)
        rec.item_ids, rec.scores          # int64 [10], float32 [10]
        rec = client.recommend(1, 10, context={"device_type": "mobile", "surface": "home"})
        rec.request_id                    # e.g. "9f1c...": clicks on these items carry it

    async with AsyncRecommendClient("127.0.0.1:8001") as client:
        recs = await client.recommend_many([1, 2, 3], k=10)
"""

from __future__ import annotations

import asyncio
import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import numpy as np

from recsys.runtime.context import ContextError, RequestContext
from recsys.serving.client import AsyncRecsysClient, ClientConfig, RecsysClient
from recsys.serving.errors import InferenceError, InvalidRequestError

MODEL_NAME = "recommend"
"""Name of the entry-point model in the generated repository."""

USER_INPUT = "user_id"
K_INPUT = "k"
ITEMS_OUTPUT = "item_ids"
SCORES_OUTPUT = "scores"
CONTEXT_INPUT = "context"
REQUEST_ID_OUTPUT = "request_id"
EXPLANATION_OUTPUT = "explanation"
OUTPUTS: tuple[str, ...] = (ITEMS_OUTPUT, SCORES_OUTPUT, REQUEST_ID_OUTPUT, EXPLANATION_OUTPUT)

_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class Recommendation:
    """The recommendations for one user.

    Attributes:
        user_id: the raw user id asked for.
        item_ids: int64 ``[n]`` raw item ids, best first.
        scores: float32 ``[n]`` final scores, aligned with ``item_ids``.
        request_id: the request's id (the client's, or the one the server made).
        explanation: how the list was made (``rules`` that applied, the user's
            ``segments`` they saw, ``personalized``, ``fallback``, ``conflicts``).
    """

    user_id: int
    item_ids: np.ndarray
    scores: np.ndarray
    request_id: str | None = None
    explanation: dict[str, Any] = field(default_factory=dict)

    @property
    def rules(self) -> list[str]:
        """The targeting rules that applied to this list."""
        return list(self.explanation.get("rules", []))

    def __len__(self) -> int:
        return len(self.item_ids)

    def pairs(self) -> list[tuple[int, float]]:
        """``[(item_id, score), ...]`` as Python numbers."""
        return [(int(i), float(s)) for i, s in zip(self.item_ids, self.scores, strict=True)]


def _as_int(value: object, name: str, bounds: np.iinfo) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidRequestError(
            f"{name} must be an integer, not {type(value).__name__}",
            status=None,
            model_name=MODEL_NAME,
        )
    number = int(value)
    if not bounds.min <= number <= bounds.max:
        raise InvalidRequestError(
            f"{name}={number} does not fit {bounds.dtype}", status=None, model_name=MODEL_NAME
        )
    return number


ContextLike = RequestContext | Mapping[str, object] | None


def recommend_inputs(user_id: int, k: int, context: ContextLike = None) -> dict[str, np.ndarray]:
    """The input tensors of one ``recommend`` request.

    Args:
        user_id: raw user id (int64).
        k: number of items wanted (int64; the server checks the range).
        context: the request's context (checked here as the server checks it); None
            sends none (every field unknown).

    Returns:
        ``{"user_id": int64 [1, 1], "k": int64 [1, 1]}`` (+ ``context`` uint8 ``[1, L]``).

    Raises:
        InvalidRequestError: a value is not an integer or does not fit its tensor, or
            the context is invalid.

    Example:
        >>> {n: (a.dtype.name, a.shape) for n, a in recommend_inputs(1, 10).items()}
        {'user_id': ('int64', (1, 1)), 'k': ('int64', (1, 1))}
    """
    user = _as_int(user_id, "user_id", _INT64)
    count = _as_int(k, "k", _INT64)
    inputs: dict[str, np.ndarray] = {
        USER_INPUT: np.array([[user]], dtype=np.int64),
        K_INPUT: np.array([[count]], dtype=np.int64),
    }
    if context is not None:
        try:
            ctx = (
                context
                if isinstance(context, RequestContext)
                else RequestContext.from_values(**dict(context))
            )
        except ContextError as error:
            raise InvalidRequestError(
                f"context: {error}", status=None, model_name=MODEL_NAME
            ) from None
        text = json.dumps(ctx.to_dict(), separators=(",", ":")).encode("utf-8")
        inputs[CONTEXT_INPUT] = np.frombuffer(text, dtype=np.uint8).reshape(1, -1)
    return inputs


def _decode(user_id: int, out: dict[str, np.ndarray]) -> Recommendation:
    items, scores = out[ITEMS_OUTPUT], out[SCORES_OUTPUT]
    if items.ndim != 2 or items.shape[0] != 1 or items.shape != scores.shape:
        raise InferenceError(
            f"unexpected output shapes item_ids {items.shape}, scores {scores.shape}",
            status=None,
            model_name=MODEL_NAME,
        )
    request_id = None
    if REQUEST_ID_OUTPUT in out:
        request_id = np.asarray(out[REQUEST_ID_OUTPUT], dtype=np.uint8).tobytes().decode("ascii")
    why: dict[str, Any] = {}
    if EXPLANATION_OUTPUT in out:
        text = np.asarray(out[EXPLANATION_OUTPUT], dtype=np.uint8).tobytes().decode("utf-8")
        why = json.loads(text) if text else {}
    return Recommendation(
        int(user_id), items[0].astype(np.int64), scores[0].astype(np.float32), request_id, why
    )


class RecommendClient:
    """Blocking typed client of the ``recommend`` model.

    Args:
        client: a :class:`RecsysClient`, a :class:`ClientConfig`, or a ``host:port``
            URL (a client is then created and closed by this object).
        model_name: the entry-point model's name.

    Example::

        with RecommendClient("127.0.0.1:8001") as client:
            client.recommend(1, 10).item_ids
    """

    def __init__(
        self, client: RecsysClient | ClientConfig | str, model_name: str = MODEL_NAME
    ) -> None:
        self._owned = not isinstance(client, RecsysClient)
        self.client = client if isinstance(client, RecsysClient) else RecsysClient(client)
        self.model_name = model_name

    def recommend(
        self, user_id: int, k: int, model_version: str = "", context: ContextLike = None
    ) -> Recommendation:
        """The top ``k`` items for ``user_id``.

        Args:
            user_id: raw user id; unknown and cold users get popular items.
            k: items wanted (``1..max_k`` of the server; max_k is at most the
                catalogue size).
            model_version: a version of the ``recommend`` model; "" = the newest.
            context: the request's live context (a
                :class:`~recsys.runtime.context.RequestContext` or its fields).

        Returns:
            A :class:`Recommendation` with at most ``k`` items.

        Raises:
            InvalidRequestError: ``user_id`` or ``k`` cannot be sent.
            InferenceError: the server refused (INVALID_ARGUMENT for a bad ``k`` or
                ``user_id``, NOT_FOUND for an unknown version) or failed.
        """
        inputs = recommend_inputs(user_id, k, context)
        out = self.client.infer(self.model_name, inputs, list(OUTPUTS), model_version)
        return _decode(user_id, out)

    def recommend_many(self, user_ids: Iterable[int], k: int) -> list[Recommendation]:
        """:meth:`recommend` for several users, one request each, in order."""
        return [self.recommend(user, k) for user in user_ids]

    def close(self) -> None:
        """Closes the underlying client if this object created it."""
        if self._owned:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRecommendClient:
    """asyncio typed client of the ``recommend`` model (same contract as
    :class:`RecommendClient`); concurrent calls share one gRPC channel.

    Example::

        async with AsyncRecommendClient("127.0.0.1:8001") as client:
            recs = await client.recommend_many(range(1, 33), k=10, concurrency=8)
    """

    def __init__(
        self, client: AsyncRecsysClient | ClientConfig | str, model_name: str = MODEL_NAME
    ) -> None:
        self._owned = not isinstance(client, AsyncRecsysClient)
        self.client = client if isinstance(client, AsyncRecsysClient) else AsyncRecsysClient(client)
        self.model_name = model_name

    async def recommend(
        self, user_id: int, k: int, model_version: str = "", context: ContextLike = None
    ) -> Recommendation:
        """The top ``k`` items for ``user_id``; see :meth:`RecommendClient.recommend`."""
        inputs = recommend_inputs(user_id, k, context)
        out = await self.client.infer(self.model_name, inputs, list(OUTPUTS), model_version)
        return _decode(user_id, out)

    async def recommend_many(
        self, user_ids: Sequence[int], k: int, concurrency: int | None = None
    ) -> list[Recommendation]:
        """:meth:`recommend` for several users, concurrently, results in input order.

        Args:
            user_ids: the users.
            k: items per user.
            concurrency: most requests in flight at once (None = all at once).

        Returns:
            One :class:`Recommendation` per user, in the order of ``user_ids``.

        Raises:
            ValueError: ``concurrency`` is below 1.
            InvalidRequestError, InferenceError: as :meth:`recommend`; the first
                failure stops the other workers, so no request is sent after it.
        """
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        users = list(user_ids)
        out: list[Recommendation | None] = [None] * len(users)
        todo = iter(range(len(users)))

        # A fixed set of workers pulling positions: no coroutine per user parked behind
        # a semaphore (cheaper per request); results land at their input position.
        async def worker() -> None:
            for position in todo:
                out[position] = await self.recommend(users[position], k)

        workers = min(concurrency or len(users), len(users))
        tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # gather leaves the other workers running: without this they would keep
            # pulling users and sending requests whose answers nobody reads.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [r for r in out if r is not None]

    async def close(self) -> None:
        """Closes the underlying client if this object created it."""
        if self._owned:
            await self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
