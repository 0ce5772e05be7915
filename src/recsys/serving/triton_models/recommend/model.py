"""Triton python-backend model ``recommend``: the two-stage recommender's entry point.

Inputs (one user per request; ``max_batch_size`` > 0, so clients send ``[1, 1]``):

* ``user_id`` INT64 ``[1]``: the raw user id (as in the dataset);
* ``k`` INT64 ``[1]``: list length, ``1..max_k`` (``parameters.max_k``: by default the
  retrieval depth N, at most the catalogue size). INT64, so no value wraps on the way in.
* ``context`` UINT8 ``[L]`` (optional): the request's live context as UTF-8 JSON
  (:class:`recsys.runtime.context.RequestContext`: request time, UTC offset, device,
  OS, browser, country, region, surface, session, request id), at most 4 KiB;
  omitted fields are unknown.

Outputs: ``item_ids`` INT64 ``[n]`` (raw item ids, best first) and ``scores`` FP32
``[n]``, ``n <= k`` (fewer when the catalogue minus the user's seen and blocked items is
smaller than ``k``), ``request_id`` UINT8 ``[m]`` (ASCII): the client's request id,
or one the server made, and ``explanation`` UINT8 ``[e]``: UTF-8 JSON of the targeting
rules that applied, the user's segments they saw, whether the list is personalized, and
any rule action that was overridden.

Targeting rules: when the config parameter ``targeting_rules`` names a YAML file
(:mod:`recsys.targeting`), each request's rules are chosen by the user's current
segments (read with the profile) and the request context
(:mod:`recsys.runtime.targeting`). The file is checked for changes every
``rules_check_s`` seconds and reloaded without a restart; a file that fails to load keeps
the previous rules and logs the error with its line and column.

Consent: a user whose stored ``personalization`` consent is refused gets the
non-personalized list (popular items), and the exposure holds no personal data.

Exposure log: when the config parameter ``exposure_log`` names a store, every answered
request is written to its event stream as one ``recommendation_impression`` event
(:mod:`recsys.runtime.exposure`: the slate with positions, scores and propensities,
the context, the bundle and model version, the policy), from a background thread that
never delays a request; a full buffer drops and counts, and the counts are logged.

Per dynamic batch of requests, through Business Logic Scripting (BLS):
``user_tower`` (one call for every known user of the batch) -> ``retrieval`` (one call)
-> ``ranker`` (calls of at most ``ranker_max_batch_size`` rows) -> relevance,
freshness and MMR in numpy (:class:`recsys.runtime.engine.RecommendEngine`, the same
steps as ``TwoStageRecommender.recommend``). Unknown users, and users without a
candidate left, get the most popular allowed items. With the config parameter
``retrieval_mode`` set to ``inline``, the user tower and the FAISS search run in this
process instead (:mod:`recsys.runtime.inline_stages`: ``user_tower.onnx`` and ``index/``
in the version folder, onnxruntime and FAISS on the CPU); only the ranker is a BLS call.

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

Cold items: when the config parameter ``cold_items_store`` names a store, items published
after training (``item_published`` events, written into the store's catalogue by
``recsys.events.catalogue``) are encoded by the item tower (``item_tower.onnx`` beside the
tables, through onnxruntime) and served: read at start and every ``cold_items_poll_s``
seconds, at most ``cold_items_max`` items (:mod:`recsys.runtime.cold_items`).

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

import json
import os
from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from recsys.runtime.context import ContextError, RequestContext
from recsys.runtime.engine import (
    RankedList,
    RecommendEngine,
    RecommendTables,
    RequestValueError,
)
from recsys.runtime.exposure import ExposureWriter, exposure_event
from recsys.runtime.policies import parse_policy
from recsys.runtime.python_backend import (
    BlsError,
    RequestError,
    bls_infer,
    error_response,
    get_input,
    input_array,
    model_config,
    output_tensor,
    string_parameter,
)
from recsys.runtime.ranker_features import RankerFeatures
from recsys.runtime.targeting import ItemCatalog, RuleFile
from recsys.runtime.user_state import ProfileStoreReader

MAX_CONTEXT_BYTES = 4096
"""Largest ``context`` input accepted (UTF-8 JSON bytes)."""


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
        self.retrieval_mode = string_parameter(config, "retrieval_mode", "models")
        user_tower: Callable[[np.ndarray], np.ndarray] = self._user_tower
        retrieval: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] = self._retrieval
        if self.retrieval_mode == "inline":
            from recsys.runtime.inline_stages import load_inline_stages

            inline = load_inline_stages(
                folder,
                threads=int(string_parameter(config, "intra_op_threads", "1")),
                faiss_threads=int(string_parameter(config, "faiss_threads", "1")),
            )
            user_tower, retrieval = inline.user_tower, inline.retrieval
        elif self.retrieval_mode != "models":
            raise ValueError(
                f"retrieval_mode must be 'models' or 'inline', got {self.retrieval_mode!r}"
            )
        # Other ranker versions A/B arms route to (``model: ranker:2``); with them the
        # default is named explicitly, since -1 would pick the newest version loaded.
        extra_versions = [
            int(v) for v in string_parameter(config, "ranker_versions", "").split(",") if v
        ]
        self.ranker_version = (
            int(string_parameter(config, "ranker_version", "-1")) if extra_versions else -1
        )
        rankers = {f"ranker:{v}": self._ranker_at(v) for v in extra_versions}
        tables = RecommendTables.load(folder)
        features = RankerFeatures.load(folder)
        store_url = string_parameter(config, "profile_store", "")
        # Opened once; a store that is down now is retried by the reads themselves.
        self.reader = ProfileStoreReader.from_folder(store_url, folder) if store_url else None
        experiments_path = string_parameter(config, "experiments", "")
        experiments = None
        if experiments_path:
            from recsys.experiments.loader import load_experiments

            experiments = load_experiments(experiments_path).experiments
        bandit_state = string_parameter(config, "bandit_state", "")
        chooser = None
        if bandit_state:
            from recsys.bandits.serving import PolicyBandit

            chooser = PolicyBandit(
                bandit_state,
                name=string_parameter(config, "bandit_name", "policy"),
                depth=int(string_parameter(config, "policy_depth", "50")),
                warn=pb_utils.Logger.log_warn,
            )
        rules_path = string_parameter(config, "targeting_rules", "")
        self.rules = None
        if rules_path:
            from recsys.targeting.loader import load_rules

            def catalog() -> ItemCatalog:
                # the engine's current tables: cold items join the categories
                engine = getattr(self, "engine", None)
                return (engine.tables if engine is not None else tables).catalog()

            self.rules = RuleFile(
                rules_path,
                lambda path: load_rules(path, catalog()),
                check_s=float(string_parameter(config, "rules_check_s", "1.0")),
                warn=pb_utils.Logger.log_warn,
            )
        self.engine = RecommendEngine(
            tables,
            features,
            user_tower=user_tower,
            retrieval=retrieval,
            ranker=self._ranker,
            max_k=int(string_parameter(config, "max_k", str(tables.num_candidates))),
            user_state=self.reader,
            warn=pb_utils.Logger.log_warn,
            rules=self.rules,
            policy=parse_policy(
                string_parameter(config, "policy", "deterministic"),
                depth=int(string_parameter(config, "policy_depth", "50")),
            ),
            experiments=experiments,
            chooser=chooser,
            rankers=rankers,
        )
        # Cold items: items published after training (recsys.runtime.cold_items), read
        # from the store's catalogue at start and every cold_items_poll_s seconds.
        cold_url = string_parameter(config, "cold_items_store", "")
        self.cold = None
        if cold_url:
            from recsys.runtime.cold_items import ColdItemsConfig, open_cold_items, rules_follow

            self.cold = open_cold_items(
                self.engine,
                folder,
                cold_url,
                ColdItemsConfig(
                    poll_s=float(string_parameter(config, "cold_items_poll_s", "2.0")),
                    max_items=int(string_parameter(config, "cold_items_max", "1000")),
                    per_poll=int(string_parameter(config, "cold_items_per_poll", "200")),
                ),
                warn=pb_utils.Logger.log_warn,
                info=pb_utils.Logger.log_info,
                on_change=rules_follow(self.engine),
            )
        bundle_file = os.path.join(folder, "bundle.json")
        self.bundle_id = "unknown"
        if os.path.isfile(bundle_file):
            with open(bundle_file, encoding="utf-8") as fh:
                self.bundle_id = str(json.load(fh).get("bundle_id") or "unknown")
        self.model_label = f"{args.get('model_name', 'recommend')}:{args['model_version']}"
        exposure_url = string_parameter(config, "exposure_log", "")
        self.exposures = (
            ExposureWriter(
                exposure_url,
                capacity=int(string_parameter(config, "exposure_buffer", "10000")),
                warn=pb_utils.Logger.log_warn,
            )
            if exposure_url
            else None
        )
        pb_utils.Logger.log_info(
            f"recommend: {tables.n_users} users, {tables.n_items} items, "
            f"N={tables.num_candidates}, settings {tables.settings}, "
            f"profile store {store_url or 'off'}, exposure log {exposure_url or 'off'}, "
            f"targeting rules {rules_path or 'off'}, policy {self.engine.policy.id}, "
            f"retrieval {self.retrieval_mode}, "
            f"experiments {experiments.version if experiments else 'off'}, "
            f"bundle {self.bundle_id}, from {folder}"
        )

    def finalize(self) -> None:
        """Logs the profile reads and the exposure counts, and closes the stores."""
        cold = getattr(self, "cold", None)
        if cold is not None:
            pb_utils.Logger.log_info(f"recommend: cold items {cold.stats}")
        if self.exposures is not None:
            stats = self.exposures.close()
            pb_utils.Logger.log_info(f"recommend: exposure log {self.exposures.url}: {stats}")
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

    def _ranker_at(self, version: int) -> Callable[..., np.ndarray]:
        """The ranker call of one version (an A/B arm's ``model: ranker:<version>``)."""

        def call(*inputs: np.ndarray) -> np.ndarray:
            return self._ranker(*inputs, version=version)

        return call

    def _ranker(self, *inputs: np.ndarray, version: int | None = None) -> np.ndarray:
        """Logits of the ranker's inputs (in its input order: ``dense, ids`` per pair,
        ``dense, ids, list_ids`` per candidate list), one BLS request per
        ``ranker_max_batch_size`` rows of the batch axis (pairs, or lists)."""
        # (Measured: splitting a list into parts sent together with async_exec, to use
        # both CPU instances of the ranker, made a request slower here: p50 12-13 ms
        # instead of 7.6 ms.)
        names = ("dense", "ids", "list_ids")[: len(inputs)]
        parts = []
        for lo in range(0, len(inputs[0]), self.ranker_chunk):
            hi = lo + self.ranker_chunk
            out = bls_infer(
                pb_utils,
                self.ranker_model,
                {name: array[lo:hi] for name, array in zip(names, inputs, strict=True)},
                ["logits"],
                model_version=self.ranker_version if version is None else version,
            )
            parts.append(out["logits"].reshape(len(inputs[0][lo:hi]), -1))
        if not parts:
            return np.zeros(inputs[0].shape[:-1], dtype=np.float32)
        logits = np.concatenate(parts)
        return logits.reshape(-1) if len(inputs) == 2 else logits

    # -- requests --------------------------------------------------------------------

    def _context(self, request: object) -> RequestContext:
        tensor = pb_utils.get_input_tensor_by_name(request, "context")
        if tensor is None:
            return RequestContext().with_request_id()
        raw = np.array(input_array(tensor), copy=True)
        if raw.ndim != 2 or raw.shape[0] != 1:
            raise RequestError(f"context: expected [1, L] UTF-8 bytes, got {list(raw.shape)}")
        if raw.shape[1] > MAX_CONTEXT_BYTES:
            raise RequestError(f"context: {raw.shape[1]} bytes, at most {MAX_CONTEXT_BYTES}")
        try:
            values = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(f"context: not UTF-8 JSON ({error})") from None
        if not isinstance(values, dict):
            raise RequestError("context: expected a JSON object of context fields")
        try:
            return RequestContext.from_values(**values).with_request_id()
        except ContextError as error:
            raise RequestError(f"context: {error}") from None

    def _read(self, request: object) -> tuple[int, int, RequestContext]:
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
        return int(user.reshape(-1)[0]), value, self._context(request)

    def execute(self, requests: list[object]) -> list[object]:
        """Answers a dynamic batch: one pass of every stage for all valid requests."""
        responses: list[object] = [None] * len(requests)
        valid: list[tuple[int, int, int, RequestContext]] = []
        for index, request in enumerate(requests):
            try:
                user, k, context = self._read(request)
            except RequestError as error:
                responses[index] = error_response(pb_utils, error)
                continue
            valid.append((index, user, k, context))
        if not valid:
            return responses
        if self.cold is not None:
            self.cold.refresh()  # a due poll: new items join this batch's candidates
        users = np.array([u for _, u, _, _ in valid], dtype=np.int64)
        ks = np.array([k for _, _, k, _ in valid], dtype=np.int64)
        try:
            answers = self.engine.recommend(users, ks, [c for _, _, _, c in valid])
        except (BlsError, RequestValueError, RequestError) as error:
            for index, _, _, _ in valid:
                responses[index] = error_response(pb_utils, error)
            return responses
        except Exception as error:  # a bug must fail the batch, not the model
            for index, _, _, _ in valid:
                responses[index] = error_response(pb_utils, error)
            return responses
        for (index, user, k, context), answer in zip(valid, answers, strict=True):
            if answer.error is not None:
                responses[index] = error_response(pb_utils, RequestError(answer.error, "INTERNAL"))
                continue
            # a writable copy: DLPack cannot export a read-only buffer
            request_id = np.frombuffer(str(context.request_id).encode("ascii"), np.uint8).copy()
            why = json.dumps(answer.explanation(), separators=(",", ":"))
            why_bytes = np.frombuffer(why.encode("utf-8"), np.uint8).copy()
            responses[index] = pb_utils.InferenceResponse(
                [
                    output_tensor(pb_utils, "item_ids", answer.item_ids.reshape(1, -1)),
                    output_tensor(pb_utils, "scores", answer.scores.reshape(1, -1)),
                    output_tensor(pb_utils, "request_id", request_id.reshape(1, -1)),
                    output_tensor(pb_utils, "explanation", why_bytes.reshape(1, -1)),
                ]
            )
            if self.exposures is not None:
                self._log_exposure(user, k, context, answer)
        return responses

    def _log_exposure(self, user: int, k: int, context: RequestContext, answer: RankedList) -> None:
        try:
            event = exposure_event(
                user_id=user,
                items=answer.item_ids.tolist(),
                scores=answer.scores.tolist(),
                context=context,
                k=k,
                bundle=self.bundle_id,
                model=answer.exposure_model(self.model_label),
                fallback=bool(answer.fallback),
                rules=answer.rules,
                policy=answer.policy,
                propensities=None if answer.propensities is None else answer.propensities.tolist(),
                slate_propensity=answer.slate_propensity,
                position_propensities=None
                if answer.position_propensities is None
                else answer.position_propensities.tolist(),
                segments=answer.segments,
                personalized=bool(answer.personalized),
                experiments=answer.experiments,
                extra=answer.exposure_extra(),
            )
        except Exception as error:  # never fail an answered request over its log entry
            pb_utils.Logger.log_warn(f"recommend: exposure of {context.request_id}: {error}")
            return
        assert self.exposures is not None
        self.exposures.submit(event)
