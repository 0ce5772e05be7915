"""The ``recommend`` model's tables, computed from a trained two-stage recommender.

The bundle writer calls these once, at the end of training; the Triton runtime
(:mod:`recsys.runtime`) reads what they produce. They turn the offline recommender's
context (encoded users and items, activity, popularity, affinities, the ranker's
scaler) into numpy tables, and the feature vocabularies into the maps that turn a
live profile's raw values into the exported models' ids.

Example::

    tables = recommend_tables(recommender, two_tower, dataset, manifest["user_tower"])
    tables.save(folder)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from recsys.export.manifest import ModelManifest, TensorSpec
from recsys.features.batching import encode_features
from recsys.features.schema import FeatureSchema, FeatureSpec, Kind, Role, VocabPolicy
from recsys.features.store import ProcessedDataset
from recsys.models.retrieval import RetrievalModel
from recsys.recommend.two_stage import TwoStageRecommender
from recsys.runtime.aggregation import blocked_items
from recsys.runtime.engine import RecommendTables
from recsys.runtime.ranker_features import RankerFeatures, stack_padded
from recsys.runtime.ranking import AggregationSettings
from recsys.runtime.targeting import ItemCatalog
from recsys.runtime.user_state import RECENT_ITEMS_SOURCE, ProfileEncoding, value_key

LOGGER = logging.getLogger(__name__)


def _as_int_ids(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"the serving entry point takes INT64 {what} ids; this run has {arr.dtype} ids "
            "(string ids need a mapping to integers first)"
        )
    return arr.astype(np.int64)


def user_tower_ids(
    two_tower: RetrievalModel, dataset: ProcessedDataset, entry: ModelManifest
) -> np.ndarray:
    """Each user's padded user-tower input ``[U, F, L]`` (rows of ``dataset.users``).

    The ids are encoded exactly as the retrieval trainer encodes its user table
    (same features, vocabularies and truncation), then padded per the manifest.
    """
    if dataset.vocabs is None:
        raise ValueError("the processed dataset has no vocabularies")
    schema = two_tower.schema
    specs = [
        f
        for f in schema.by_role(Role.USER, Role.CONTEXT)
        if f.is_sparse and f.name in entry.feature_order
    ]
    encoded = encode_features(dataset.users, specs, dataset.vocabs)
    columns = {name: (jagged.values, jagged.offsets) for name, jagged in encoded.sparse.items()}
    missing = [f for f in entry.feature_order if f not in columns]
    if missing:
        raise ValueError(f"user tower features {missing} are not in the user table")
    return stack_padded(
        columns, entry.feature_order, entry.max_len, entry.seq_len, len(dataset.users)
    )


# -- real-time profiles -> model ids --------------------------------------------------


def _vocab_owner(schema: FeatureSchema, name: str) -> FeatureSpec:
    spec = schema[name]
    seen = {name}
    while spec.vocab_from:
        spec = schema[spec.vocab_from]
        if spec.name in seen:
            raise ValueError(f"vocab_from cycle at {spec.name}")
        seen.add(spec.name)
    return spec


def _policy(schema: FeatureSchema, name: str) -> VocabPolicy:
    owner = _vocab_owner(schema, name)
    return owner.vocab.policy if owner.vocab is not None else VocabPolicy.ID_MAP


def _value_map(raw: Sequence[Any], values: np.ndarray, offsets: np.ndarray) -> dict[str, int]:
    """Raw value text -> id, from the rows of a table encoded with one id each."""
    lengths = np.diff(offsets)
    out: dict[str, int] = {}
    for row in np.flatnonzero(lengths == 1).tolist():
        value = raw[row]
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        out.setdefault(value_key(value), int(values[offsets[row]]))
    return out


def profile_encoding(
    schema: FeatureSchema,
    entry: ModelManifest,
    user_features: Sequence[str],
    users: Any,
    encoded: Mapping[str, tuple[np.ndarray, np.ndarray]],
    item_vocab: np.ndarray | None,
    n_items: int,
) -> ProfileEncoding:
    """How profile values become the ids of one exported model (tower or ranker).

    Args:
        schema: the full feature schema (sources, kinds, vocabulary policies).
        entry: the model's manifest entry (features, ``max_len``, table sizes).
        user_features: the model's user-side features.
        users: the user table the training features were encoded from.
        encoded: per user-side feature, that table's ids as jagged ``(values, offsets)``.
        item_vocab: ``[I]`` id of each catalogue item in the history feature's
            vocabulary, or None when the model cannot map items (or has no history
            feature).
        n_items: ``I``, the catalogue size (the runtime's tables are indexed by it).

    Returns:
        A :class:`~recsys.runtime.user_state.ProfileEncoding`; categorical maps come
        from the pairs (raw value, training id) of the user table.
    """
    history = next(
        (
            n
            for n in user_features
            if schema[n].source == RECENT_ITEMS_SOURCE and schema[n].kind is Kind.SEQUENCE
        ),
        None,
    )
    if history is not None and (
        item_vocab is None or _policy(schema, history) is not VocabPolicy.ID_MAP
    ):
        LOGGER.warning("%s: history feature %s cannot be mapped; profiles leave it", entry.name,
                       history)  # fmt: skip
        history = None
    value_maps: dict[str, dict[str, int]] = {}
    identity: dict[str, int] = {}
    missing: dict[str, int] = {}
    for name in user_features:
        spec = schema[name]
        if name == history:
            continue
        policy = _policy(schema, name)
        if spec.kind is Kind.CATEGORICAL and policy is VocabPolicy.ID_MAP:
            missing[name] = 0  # training encodes a missing categorical as the OOV row
        if policy is VocabPolicy.IDENTITY:
            identity[name] = int(entry.num_embeddings[name])
        elif (
            spec.kind is Kind.CATEGORICAL
            and spec.source != "user_id"
            and name in encoded
            and spec.source in users.columns
        ):
            values, offsets = encoded[name]
            value_maps[name] = _value_map(users[spec.source].tolist(), values, offsets)
    if item_vocab is not None and len(item_vocab) != n_items:
        raise ValueError(f"item_vocab covers {len(item_vocab)} items, the catalogue {n_items}")
    return ProfileEncoding(
        features=list(entry.feature_order),
        seq_len=int(entry.seq_len),
        max_len={k: int(v) for k, v in entry.max_len.items()},
        user_features=list(user_features),
        recent_items=history,
        item_vocab=np.zeros(n_items, np.int64) if item_vocab is None else item_vocab,
        oov_id=0,
        value_maps=value_maps,
        identity_sizes=identity,
        missing_ids=missing,
    )


def tower_profile_encoding(
    schema: FeatureSchema,
    dataset: ProcessedDataset,
    entry: ModelManifest,
    item_ids: np.ndarray,
) -> ProfileEncoding:
    """The user tower's :class:`ProfileEncoding` (the main split's vocabularies)."""
    if dataset.vocabs is None:
        raise ValueError("the processed dataset has no vocabularies")
    specs = [schema[n] for n in entry.feature_order]
    encoded = encode_features(dataset.users, specs, dataset.vocabs)
    columns = {n: (j.values, j.offsets) for n, j in encoded.sparse.items()}
    history = [n for n in entry.feature_order if schema[n].source == RECENT_ITEMS_SOURCE]
    item_vocab = dataset.vocabs.encode(history[0], item_ids) if history else None
    return profile_encoding(
        schema, entry, entry.feature_order, dataset.users, columns, item_vocab, len(item_ids)
    )


def ranker_profile_encoding(
    recommender: TwoStageRecommender,
    schema: FeatureSchema,
    dataset: ProcessedDataset,
    entry: ModelManifest,
) -> ProfileEncoding:
    """The ranker's :class:`ProfileEncoding` (the ranker's own vocabularies).

    The ranker's vocabularies are not kept with the context, so the maps come from the
    context's encoded tables: the history feature shares the item id's vocabulary
    (``vocab_from``), whose ids the item table holds.
    """
    ctx = recommender.context
    entry = flat_ranker_entry(entry, ctx.sparse_names)
    columns = {
        k: (ctx.users_encoded.sparse[k].values, ctx.users_encoded.sparse[k].offsets)
        for k in ctx.user_keys
    }
    item_vocab = None
    history = [k for k in ctx.user_keys if schema[k].source == RECENT_ITEMS_SOURCE]
    if history:
        owner = _vocab_owner(schema, history[0]).name
        if owner in ctx.sparse_names and owner not in ctx.user_keys:
            jagged = ctx.items_encoded.sparse[owner]
            if np.array_equal(np.diff(jagged.offsets), np.ones(ctx.n_items)):
                item_vocab = np.asarray(jagged.values, dtype=np.int64)
    return profile_encoding(
        schema, entry, ctx.user_keys, dataset.users, columns, item_vocab, ctx.n_items
    )


def flat_ranker_entry(entry: ModelManifest, order: Sequence[str]) -> ModelManifest:
    """A ranker entry with every sparse feature along one ``F`` axis, in ``order``.

    The request-time tables keep one ``[F, L]`` row per user and per item (``L``
    the widest feature); a ranker that scores candidate lists reads its ``ids`` and
    ``list_ids`` out of them. Per-pair entries come back unchanged.

    Raises:
        ValueError: ``order`` is not the entry's features.
    """
    if entry.list_ids_input is None:
        return entry
    if sorted(order) != sorted(entry.all_features):
        raise ValueError(f"the exported ranker reads {entry.all_features}, not {list(order)}")
    width = max(entry.seq_len, entry.list_seq_len)
    ids = TensorSpec(entry.ids_input, "int64", (-1, len(order), width))
    return replace(
        entry,
        inputs=[ids],
        feature_order=list(order),
        seq_len=width,
        dense_input=None,
        list_ids_input=None,
        list_feature_order=[],
        list_seq_len=0,
    )


def ranker_features(recommender: TwoStageRecommender, entry: ModelManifest) -> RankerFeatures:
    """The ranker's request-time feature tables from the recommender's context."""
    ranker = recommender.ranker
    if ranker is None:
        raise ValueError("the recommender has no ranker")
    ctx = recommender.context
    exported = entry
    entry = flat_ranker_entry(entry, ctx.sparse_names)
    if list(ranker.scaler.names) != list(ctx.dense_names):
        raise ValueError(
            f"the ranker was trained on dense features {ranker.scaler.names}, the context "
            f"computes {ctx.dense_names}"
        )
    if list(entry.feature_order) != list(ctx.sparse_names):
        raise ValueError(
            f"the exported ranker reads {entry.feature_order}, the context encodes "
            f"{ctx.sparse_names}"
        )
    user_cols = {
        k: (ctx.users_encoded.sparse[k].values, ctx.users_encoded.sparse[k].offsets)
        for k in ctx.user_keys
    }
    item_cols = {
        k: (ctx.items_encoded.sparse[k].values, ctx.items_encoded.sparse[k].offsets)
        for k in ctx.sparse_names
        if k not in ctx.user_keys and k not in ctx.request_names
    }
    served = RankerFeatures(
        dense_names=list(ctx.dense_names),
        windows_days=tuple(ctx.config.windows_days),
        affinity=tuple(ctx.config.affinity),
        scaler_mean=np.asarray(ranker.scaler.mean, dtype=np.float64),
        scaler_std=np.asarray(ranker.scaler.std, dtype=np.float64),
        request_time=np.asarray(ctx.request_time, dtype=np.float64),
        user_offsets=np.asarray(ctx.user_offsets, dtype=np.int64),
        user_times=np.asarray(ctx.user_times, dtype=np.float64),
        item_offsets=np.asarray(ctx.item_offsets, dtype=np.int64),
        item_times=np.asarray(ctx.item_times, dtype=np.float64),
        item_count=np.asarray(ctx.item_count, dtype=np.float64),
        release_time=np.asarray(ctx.release_time, dtype=np.float64),
        seen_indptr=np.asarray(ctx.seen.indptr, dtype=np.int64),
        seen_indices=np.asarray(ctx.seen.indices, dtype=np.int64),
        item_item={k: np.asarray(v, dtype=np.float32) for k, v in ctx.item_item.items()},
        sparse_names=list(ctx.sparse_names),
        user_keys=list(ctx.user_keys),
        seq_len=entry.seq_len,
        user_ids=stack_padded(
            user_cols, entry.feature_order, entry.max_len, entry.seq_len, ctx.n_users
        ),
        item_ids=stack_padded(
            item_cols, entry.feature_order, entry.max_len, entry.seq_len, ctx.n_items
        ),
        request_features=list(ctx.request_specs),
        segment_vocab=dict(ctx.segment_vocab),
        user_segments=list(ctx.user_segments),
        dense_time=ctx.config.dense_time,
        list_seq_len=exported.list_seq_len,
        item_seq_len=exported.seq_len if exported.list_ids_input is not None else 0,
    )
    if served.per_list and (
        served.list_names != exported.list_feature_order
        or served.item_names != exported.feature_order
    ):
        raise ValueError(
            f"the exported ranker reads {exported.list_feature_order} once per list and "
            f"{exported.feature_order} per candidate; the context's split is "
            f"{served.list_names} / {served.item_names}"
        )
    return served


def recommend_tables(
    recommender: TwoStageRecommender,
    two_tower: RetrievalModel,
    dataset: ProcessedDataset,
    entry: ModelManifest,
    extra: Mapping[str, Any] | None = None,
) -> RecommendTables:
    """The ``recommend`` model's tables: users, seen items, popularity, filters, settings.

    Args:
        recommender: the offline recommender (context, embeddings, config).
        two_tower: the retrieval model (its user tower's inputs are tabulated).
        dataset: the processed split whose users the context holds (the run's main split).
        entry: the user tower's manifest entry.
        extra: provenance stored in ``tables.json``.
    """
    ctx = recommender.context
    user_raw = _as_int_ids(ctx.user_ids, "user")
    queries = recommender.query_vectors
    scaling = two_tower.query_scaling()
    embedding_dim = int(entry.outputs[0].shape[-1])
    if embedding_dim != scaling.embedding_dim or queries.shape[1] != scaling.dim:
        raise ValueError(
            f"the recommender's query vectors are {queries.shape[1]}-d; the user tower gives "
            f"{embedding_dim}-d (+1 with an item bias: {scaling.append_one})"
        )
    item_raw = _as_int_ids(ctx.item_ids, "item")
    table_users = _as_int_ids(dataset.users["user_id"].to_numpy(), "user")
    if not np.array_equal(table_users, user_raw):
        raise ValueError("the dataset's user table is not in the recommender's user order")
    cfg = recommender.config
    return RecommendTables(
        user_ids=user_raw,
        item_ids=item_raw,
        user_tower_ids=user_tower_ids(two_tower, dataset, entry),
        user_tower_features=list(entry.feature_order),
        user_tower_num_embeddings=dict(entry.num_embeddings),
        seen_indptr=np.asarray(ctx.seen.indptr, dtype=np.int64),
        seen_indices=np.asarray(ctx.seen.indices, dtype=np.int64),
        item_count=np.asarray(ctx.item_count, dtype=np.float64),
        request_time=np.asarray(ctx.request_time, dtype=np.float64),
        release_time=np.asarray(ctx.release_time, dtype=np.float64),
        item_embeddings=np.asarray(recommender.diversity_vectors, dtype=np.float32),
        blocked=blocked_items(ctx.item_ids, recommender.item_genres, cfg),
        settings=AggregationSettings.from_dict(asdict(cfg)),
        num_candidates=int(recommender.num_candidates),
        query_scale=scaling.scale,
        query_append_one=scaling.append_one,
        extra=dict(extra or {}),
        profile=tower_profile_encoding(two_tower.schema, dataset, entry, item_raw),
        categories=ItemCatalog.from_genres(item_raw, recommender.item_genres).categories,
    )


def check_query_vectors(
    tables: RecommendTables,
    onnx_path: Path,
    recommender: TwoStageRecommender,
    users: int = 64,
    atol: float = 1e-3,
) -> float:
    """Checks that the served query path reproduces the recommender's query vectors.

    The exported user tower runs in onnxruntime on the tabulated ids of the first
    ``users`` users; scaled (and extended) as the engine does, the result must equal
    ``recommender.query_vectors`` (same features, vocabularies and weights).

    Returns:
        The largest absolute difference.

    Raises:
        ValueError: the difference exceeds ``atol``.
    """
    import onnxruntime as ort

    path = onnx_path / "model.onnx" if onnx_path.is_dir() else onnx_path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = np.arange(min(users, tables.n_users))
    if len(rows) == 0:
        return 0.0
    (embeddings,) = session.run(["embeddings"], {"ids": tables.user_tower_ids[rows]})
    served = tables.query_vectors(embeddings)
    diff = float(np.max(np.abs(served - recommender.query_vectors[rows])))
    if not diff <= atol:
        raise ValueError(
            f"the exported user tower on the tabulated user features differs from the "
            f"recommender's query vectors by {diff:.3g} (> {atol:g}): were they made by "
            "another model, or from other vocabularies?"
        )
    return diff
