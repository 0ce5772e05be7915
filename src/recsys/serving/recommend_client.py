"""Typed ``recommend(user_id, k)`` calls to the ``recommend`` model over gRPC.

Thin wrappers over :class:`~recsys.serving.client.RecsysClient` and
:class:`~recsys.serving.client.AsyncRecsysClient` that know the tensors of the
``recommend`` entry point of the generated repository
(:mod:`recsys.serving.repository`):

* inputs ``user_id`` INT64 ``[1, 1]`` (the raw user id, as in the dataset) and ``k``
  INT64 ``[1, 1]``: one user per request; Triton's dynamic batcher merges concurrent
  requests on the server;
* outputs ``item_ids`` INT64 ``[1, n]`` (raw item ids, best first) and ``scores`` FP32
  ``[1, n]``, with ``n <= k`` (fewer when the catalogue minus the user's seen items is
  smaller than ``k``).

The server checks the values (``k`` in ``1..max_k``, ``user_id >= 0``) and answers a
bad request with INVALID_ARGUMENT; this client only refuses values that cannot be sent
as those tensors (not an integer, outside int64).

Example::

    from recsys.serving.recommend_client import RecommendClient

    with RecommendClient("127.0.0.1:8001") as client:
        rec = client.recommend(user_id=1, k=10)
        rec.item_ids, rec.scores          # int64 [10], float32 [10]

    async with AsyncRecommendClient("127.0.0.1:8001") as client:
        recs = await client.recommend_many([1, 2, 3], k=10)
"""

from __future__ import annotations

import asyncio
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import numpy as np

from recsys.serving.client import AsyncRecsysClient, ClientConfig, RecsysClient
from recsys.serving.errors import InferenceError, InvalidRequestError

MODEL_NAME = "recommend"
"""Name of the entry-point model in the generated repository."""

USER_INPUT = "user_id"
K_INPUT = "k"
ITEMS_OUTPUT = "item_ids"
SCORES_OUTPUT = "scores"
OUTPUTS: tuple[str, str] = (ITEMS_OUTPUT, SCORES_OUTPUT)

_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class Recommendation:
    """The recommendations for one user.

    Attributes:
        user_id: the raw user id asked for.
        item_ids: int64 ``[n]`` raw item ids, best first.
        scores: float32 ``[n]`` final scores, aligned with ``item_ids``.
    """

    user_id: int
    item_ids: np.ndarray
    scores: np.ndarray

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


def recommend_inputs(user_id: int, k: int) -> dict[str, np.ndarray]:
    """The input tensors of one ``recommend`` request.

    Args:
        user_id: raw user id (int64).
        k: number of items wanted (int64; the server checks the range).

    Returns:
        ``{"user_id": int64 [1, 1], "k": int64 [1, 1]}``.

    Raises:
        InvalidRequestError: a value is not an integer or does not fit its tensor.

    Example:
        >>> {n: (a.dtype.name, a.shape) for n, a in recommend_inputs(1, 10).items()}
        {'user_id': ('int64', (1, 1)), 'k': ('int64', (1, 1))}
    """
    user = _as_int(user_id, "user_id", _INT64)
    count = _as_int(k, "k", _INT64)
    return {
        USER_INPUT: np.array([[user]], dtype=np.int64),
        K_INPUT: np.array([[count]], dtype=np.int64),
    }


def _decode(user_id: int, out: dict[str, np.ndarray]) -> Recommendation:
    items, scores = out[ITEMS_OUTPUT], out[SCORES_OUTPUT]
    if items.ndim != 2 or items.shape[0] != 1 or items.shape != scores.shape:
        raise InferenceError(
            f"unexpected output shapes item_ids {items.shape}, scores {scores.shape}",
            status=None,
            model_name=MODEL_NAME,
        )
    return Recommendation(int(user_id), items[0].astype(np.int64), scores[0].astype(np.float32))


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

    def recommend(self, user_id: int, k: int, model_version: str = "") -> Recommendation:
        """The top ``k`` items for ``user_id``.

        Args:
            user_id: raw user id; unknown and cold users get popular items.
            k: items wanted (``1..max_k`` of the server; max_k is at most the
                catalogue size).
            model_version: a version of the ``recommend`` model; "" = the newest.

        Returns:
            A :class:`Recommendation` with at most ``k`` items.

        Raises:
            InvalidRequestError: ``user_id`` or ``k`` cannot be sent.
            InferenceError: the server refused (INVALID_ARGUMENT for a bad ``k`` or
                ``user_id``, NOT_FOUND for an unknown version) or failed.
        """
        inputs = recommend_inputs(user_id, k)
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

    async def recommend(self, user_id: int, k: int, model_version: str = "") -> Recommendation:
        """The top ``k`` items for ``user_id``; see :meth:`RecommendClient.recommend`."""
        inputs = recommend_inputs(user_id, k)
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
