"""Triton python-backend model ``recommend``: the two-stage recommender's entry point.

Inputs (one user per request; ``max_batch_size`` > 0, so clients send ``[1, 1]``):

* ``user_id`` INT64 ``[1]``: the raw user id (as in the dataset);
* ``k`` INT64 ``[1]``: list length, ``1..max_k`` (``parameters.max_k``: by default the
  retrieval depth N, at most the catalogue size). INT64, so no value wraps on the way in.

Outputs: ``item_ids`` INT64 ``[n]`` (raw item ids, best first) and ``scores`` FP32
``[n]``, ``n <= k`` (fewer when the catalogue minus the user's seen and blocked items is
smaller than ``k``).

Per dynamic batch of requests, through Business Logic Scripting (BLS):
``user_tower`` (one call for every known user of the batch) -> ``retrieval`` (one call)
-> ``ranker`` (calls of at most ``ranker_max_batch_size`` pairs) -> relevance,
freshness and MMR in numpy (:class:`recsys.runtime.engine.RecommendEngine`, the same
steps as ``TwoStageRecommender.recommend``). Unknown users, and users without a
candidate left, get the most popular allowed items.

Real-time user state: when the config parameter ``profile_store`` names a store
(``redis://host:port/db[?prefix=P]`` with the ``RedisStore`` key layout, or
``sqlite:///path``), ``initialize`` opens a
:class:`~recsys.runtime.user_state.ProfileStoreReader` on it once, and each batch reads
the profiles of its users in one store call. A profile's recent items are removed from
the user's list (consumed in real time) and extend the history feature of the user tower
and the ranker (training history, then the profile's items, last ``max_len`` kept); a
user the training run does not know but whose profile has a history is served through
both stages from the profile instead of the popularity fallback. A store that cannot be
read never fails a request: the batch is answered from the training tables, a warning
is logged, and the failure is counted (reads then skip the store for one second).
Empty ``profile_store`` (the default): the training tables alone.

Errors: a bad request (batch of more than one user, empty batch, ``k`` out of range)
gets INVALID_ARGUMENT and the rest of the batch is still answered; a list whose stage
inputs or outputs hold NaN or infinity fails alone with INTERNAL and a message naming
the stage and the columns; a failing stage model fails the requests of that batch with
its message. The model keeps serving.

The version folder holds the tables ``RecommendTables`` and ``RankerFeatures`` saved
(``tables.*``, ``ranker_features.*``) and the feature schema profiles are read with
(``feature_schema.json``). Imports numpy and pure-numpy recsys modules only (plus, with
a profile store, ``recsys.profiles`` and the ``redis`` client), so the same file runs in
NVIDIA's container (Python 3.10, no torch).
"""

from __future__ import annotations

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from recsys.runtime.engine import (
    RecommendEngine,
    RecommendTables,
    RequestValueError,
)
from recsys.runtime.python_backend import (
    BlsError,
    RequestError,
    bls_infer,
    error_response,
    get_input,
    model_config,
    output_tensor,
    string_parameter,
)
from recsys.runtime.ranker_features import RankerFeatures
from recsys.runtime.user_state import ProfileStoreReader


class TritonPythonModel:
    """BLS entry point: user id and k -> top-k items and scores."""

    def initialize(self, args: dict[str, str]) -> None:
        """Loads the tables of this version folder and wires the stage models."""
        config = model_config(args)
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.user_tower_model = string_parameter(config, "user_tower_model", "user_tower")
        self.retrieval_model = string_parameter(config, "retrieval_model", "retrieval")
        self.ranker_model = string_parameter(config, "ranker_model", "ranker")
        self.ranker_chunk = int(string_parameter(config, "ranker_max_batch_size", "16384"))
        tables = RecommendTables.load(folder)
        features = RankerFeatures.load(folder)
        store_url = string_parameter(config, "profile_store", "")
        # Opened once; a store that is down now is retried by the reads themselves.
        self.reader = ProfileStoreReader.from_folder(store_url, folder) if store_url else None
        self.engine = RecommendEngine(
            tables,
            features,
            user_tower=self._user_tower,
            retrieval=self._retrieval,
            ranker=self._ranker,
            max_k=int(string_parameter(config, "max_k", str(tables.num_candidates))),
            user_state=self.reader,
            warn=pb_utils.Logger.log_warn,
        )
        pb_utils.Logger.log_info(
            f"recommend: {tables.n_users} users, {tables.n_items} items, "
            f"N={tables.num_candidates}, settings {tables.settings}, "
            f"profile store {store_url or 'off'}, from {folder}"
        )

    def finalize(self) -> None:
        """Logs the profile reads and closes the store."""
        if self.reader is not None:
            pb_utils.Logger.log_info(
                f"recommend: profile store {self.reader.url}: {self.reader.stats}, "
                f"engine {self.engine.user_state_stats}"
            )
            self.reader.close()

    # -- stage models through BLS --------------------------------------------------

    def _user_tower(self, ids: np.ndarray) -> np.ndarray:
        out = bls_infer(pb_utils, self.user_tower_model, {"ids": ids}, ["embeddings"])
        return out["embeddings"]

    def _retrieval(
        self, queries: np.ndarray, top_n: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = bls_infer(
            pb_utils,
            self.retrieval_model,
            {
                "query": np.ascontiguousarray(queries, dtype=np.float32),
                "top_n": np.asarray(top_n, dtype=np.int32).reshape(-1, 1),
            },
            ["item_ids", "scores", "counts"],
        )
        return out["item_ids"], out["scores"], out["counts"].reshape(-1)

    def _ranker(self, dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
        # One request per ranker_max_batch_size pairs. (Measured: splitting a list into
        # parts sent together with async_exec, to use both CPU instances of the ranker,
        # made a request slower here: p50 12-13 ms instead of 7.6 ms.)
        parts = []
        for lo in range(0, len(dense), self.ranker_chunk):
            hi = lo + self.ranker_chunk
            out = bls_infer(
                pb_utils, self.ranker_model, {"dense": dense[lo:hi], "ids": ids[lo:hi]}, ["logits"]
            )
            parts.append(out["logits"].reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    # -- requests --------------------------------------------------------------------

    def _read(self, request: object) -> tuple[int, int]:
        user = get_input(pb_utils, request, "user_id")
        k = get_input(pb_utils, request, "k")
        if user.shape[0] != 1 or k.shape[0] != 1:
            raise RequestError(
                f"send one user per request (user_id [1, 1], k [1, 1]); got user_id "
                f"{list(user.shape)} and k {list(k.shape)}. Concurrent requests are batched "
                "by the server."
            )
        if user.size != 1 or k.size != 1:
            raise RequestError(f"user_id and k hold one value each, got {user.size} and {k.size}")
        value = int(k.reshape(-1)[0])
        try:
            self.engine.check_k(value)
        except RequestValueError as error:
            raise RequestError(str(error)) from None
        return int(user.reshape(-1)[0]), value

    def execute(self, requests: list[object]) -> list[object]:
        """Answers a dynamic batch: one pass of every stage for all valid requests."""
        responses: list[object] = [None] * len(requests)
        valid: list[tuple[int, int, int]] = []
        for index, request in enumerate(requests):
            try:
                user, k = self._read(request)
            except RequestError as error:
                responses[index] = error_response(pb_utils, error)
                continue
            valid.append((index, user, k))
        if not valid:
            return responses
        users = np.array([u for _, u, _ in valid], dtype=np.int64)
        ks = np.array([k for _, _, k in valid], dtype=np.int64)
        try:
            answers = self.engine.recommend(users, ks)
        except (BlsError, RequestValueError, RequestError) as error:
            for index, _, _ in valid:
                responses[index] = error_response(pb_utils, error)
            return responses
        except Exception as error:  # a bug must fail the batch, not the model
            for index, _, _ in valid:
                responses[index] = error_response(pb_utils, error)
            return responses
        for (index, _, _), answer in zip(valid, answers, strict=True):
            if answer.error is not None:
                responses[index] = error_response(pb_utils, RequestError(answer.error, "INTERNAL"))
                continue
            responses[index] = pb_utils.InferenceResponse(
                [
                    output_tensor(pb_utils, "item_ids", answer.item_ids.reshape(1, -1)),
                    output_tensor(pb_utils, "scores", answer.scores.reshape(1, -1)),
                ]
            )
        return responses
