"""Generates the Triton model repository of the two-stage recommender from a training run.

One call (:func:`build_repository`, or :func:`build_repository_from_run` on a run's
artifacts; CLI ``python -m recsys.serving.cli build-repo``) writes::

    <repository>/
      user_tower/config.pbtxt   1/model.onnx        platform onnxruntime_onnx
      ranker/config.pbtxt       1/model.onnx        platform onnxruntime_onnx
      retrieval/config.pbtxt    1/model.py          python backend + FAISS
                                1/index.faiss, item_ids.npy, config.json, metadata.json
      recommend/config.pbtxt    1/model.py          python backend (BLS entry point)
                                1/tables.npz, tables.json          users, items, settings
                                1/ranker_features.npz, .json       ranker inputs
                                1/export_manifest.json             ONNX export manifest
                                1/feature_schema.json              schema profiles are read with

``recommend`` reads the users' real-time profiles when its config parameter
``profile_store`` names a store (``RepositoryConfig.profile_store``); the tables carry the
mappings from a profile's raw values to the models' ids (``ProfileEncoding``).

Every model has dynamic batching (a short ``max_queue_delay_microseconds``), a version
folder and ``version_policy: latest 1``. The stage models have NO ``instance_group``:
Triton then puts one instance on each GPU when there is one and CPU instances
otherwise, so the same repository serves on this CPU machine (``LocalTritonServer``)
and in NVIDIA's container. ``recommend`` asks for ``KIND_CPU`` instances
(``RepositoryConfig.recommend_instances``, default 2): its Python is CPU work on
either machine, and a second instance computes while the first waits on its stage
calls. The configs come from the templates in ``serving/models/<name>/``.

New versions roll in with the model-control API (:func:`add_model_version` +
:func:`roll_in`): copy the new version folder next to the old one, then
``load_model``; Triton loads the new version, moves traffic to it and unloads the old
one, while requests keep being served.

Example::

    info = build_repository(recommender, two_tower, schema, main, "artifacts/triton_repo")
    info.root / "recommend" / "1" / "tables.npz"
"""

from __future__ import annotations

import json
import logging
import shutil
import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from recsys.export.manifest import MANIFEST_FILE, ExportManifest, ModelManifest, TensorSpec
from recsys.export.onnx_export import export_ranker, export_two_tower
from recsys.features.batching import encode_features
from recsys.features.schema import FeatureSchema, FeatureSpec, Kind, Role, VocabPolicy
from recsys.features.store import ProcessedDataset
from recsys.models.two_tower import TwoTower
from recsys.recommend.aggregation import blocked_items
from recsys.recommend.two_stage import TwoStageRecommender
from recsys.serving.engine import RecommendTables, served_max_k
from recsys.serving.ranker_features import RankerFeatures, stack_padded
from recsys.serving.ranking import AggregationSettings
from recsys.serving.user_state import (
    RECENT_ITEMS_SOURCE,
    SCHEMA_FILE,
    ProfileEncoding,
    parse_store_url,
    value_key,
)

LOGGER = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[3]
TEMPLATES_DIR = _REPO_ROOT / "serving" / "models"
"""Config templates and python-backend ``model.py`` files (``serving/models/<name>/``)."""

MODEL_NAMES: tuple[str, ...] = ("user_tower", "retrieval", "ranker", "recommend")
"""The models of the generated repository, in the order they depend on each other."""

EXPORT_MANIFEST_FILE = "export_manifest.json"


GPU_ACCELERATORS = {
    "cuda": "",
    "tensorrt": """optimization {
  execution_accelerators {
    gpu_execution_accelerator: [ {
      name: "tensorrt"
      parameters { key: "precision_mode" value: "FP32" }
      parameters { key: "max_workspace_size_bytes" value: "1073741824" }
    } ]
  }
}""",
}
"""The ``optimization`` block of the ONNX models per ``RepositoryConfig.gpu_accelerator``."""


@dataclass(frozen=True)
class RepositoryConfig:
    """How the repository is generated.

    Args:
        max_batch_size: ``max_batch_size`` of ``recommend``, ``user_tower`` and
            ``retrieval`` (requests the dynamic batcher may merge).
        ranker_max_batch_size: rows of one ranker call; ``recommend`` splits its
            (user, candidate) pairs into calls of at most this many.
        max_queue_delay_us: ``max_queue_delay_microseconds`` of every model's dynamic
            batcher: how long a request may wait for others to join its batch.
        intra_op_threads: onnxruntime ``intra_op_thread_count`` of the ONNX models.
        faiss_threads: OpenMP threads of FAISS in each retrieval instance.
        max_k: the largest ``k`` a ``recommend`` request may ask for; None: the
            retrieval depth N (every request then costs the same); never more than
            the catalogue size.
        version: the version folder to write (1 for a new repository).
        profile_store: the real-time profile store ``recommend`` reads users from
            (``redis://host:port/db[?prefix=P]`` or ``sqlite:///path``); empty: off,
            the training tables alone answer.
        gpu_accelerator: execution provider of the ONNX models on GPU instances in
            NVIDIA's onnxruntime backend: ``tensorrt`` (TensorRT EP, FP32, CUDA EP for
            what TensorRT does not take) or ``cuda`` (CUDA EP alone, the backend's
            default on GPU instances). CPU instances ignore it.
        recommend_instances: CPU instances of the ``recommend`` entry point. Its
            Python runs the request logic and waits on the stage models, so a second
            instance works while the first waits (each holds its own copy of the
            tables); 0 leaves ``instance_group`` out (Triton's default, one).

    Example:
        >>> RepositoryConfig(max_queue_delay_us=300).max_batch_size
        64
    """

    max_batch_size: int = 64
    ranker_max_batch_size: int = 16_384
    max_queue_delay_us: int = 100
    intra_op_threads: int = 1
    faiss_threads: int = 1
    max_k: int | None = None
    version: int = 1
    profile_store: str = ""
    gpu_accelerator: str = "tensorrt"
    recommend_instances: int = 2

    def __post_init__(self) -> None:
        if self.gpu_accelerator not in GPU_ACCELERATORS:
            raise ValueError(
                f"gpu_accelerator must be one of {sorted(GPU_ACCELERATORS)}, "
                f"got {self.gpu_accelerator!r}"
            )
        for name in ("max_batch_size", "ranker_max_batch_size", "intra_op_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.recommend_instances < 0:
            raise ValueError(f"recommend_instances must be >= 0, got {self.recommend_instances}")
        if self.max_k is not None and self.max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {self.max_k}")
        for name in ("faiss_threads", "version"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ValueError("max_queue_delay_us must be >= 0")
        if self.profile_store:
            parse_store_url(self.profile_store)  # refuses other schemes now, not at load
        if '"' in self.profile_store or "\\" in self.profile_store:
            raise ValueError("profile_store must not hold quotes or backslashes")


@dataclass
class RepositoryInfo:
    """What :func:`build_repository` wrote.

    Attributes:
        root: the repository folder.
        version: the version folder written for every model.
        manifest: the ONNX export manifest (user tower and ranker).
        files: per model, the files of its version folder.
        config: the generation settings.
    """

    root: Path
    version: int
    manifest: ExportManifest
    files: dict[str, list[Path]] = field(default_factory=dict)
    config: RepositoryConfig = field(default_factory=RepositoryConfig)

    def model_dir(self, name: str) -> Path:
        return self.root / name


# -- config templates ----------------------------------------------------------------


def _triton_type(spec: TensorSpec) -> str:
    return spec.triton_dtype


def tensor_block(kind: str, specs: Sequence[TensorSpec]) -> str:
    """A config.pbtxt ``input [...]`` / ``output [...]`` block for batched tensors.

    Args:
        kind: ``"input"`` or ``"output"``.
        specs: tensors with the batch axis first (``-1``), as the manifest records them.

    Example:
        >>> print(tensor_block("input", [TensorSpec("ids", "int64", (-1, 2, 3))]))
        input [
          { name: "ids" data_type: TYPE_INT64 dims: [ 2, 3 ] }
        ]
    """
    entries = []
    for spec in specs:
        if not spec.shape or spec.shape[0] != -1:
            raise ValueError(f"{kind} {spec.name!r}: the first axis must be the batch (-1)")
        dims = ", ".join(str(d) for d in spec.shape[1:])
        # A graph tensor of shape [B] is [B, 1] to Triton: dims [1], reshaped to [].
        shape = f"dims: [ {dims} ]" if dims else "dims: [ 1 ] reshape: { shape: [ ] }"
        entries.append(f'  {{ name: "{spec.name}" data_type: {_triton_type(spec)} {shape} }}')
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"


def render_config(name: str, values: Mapping[str, Any], templates: Path = TEMPLATES_DIR) -> str:
    """The ``config.pbtxt`` of model template ``name`` with ``${...}`` fields filled.

    Raises:
        KeyError: the template uses a field ``values`` lacks.
    """
    template = string.Template((templates / name / "config.pbtxt").read_text())
    return template.substitute({k: str(v) for k, v in values.items()})


# -- building blocks -----------------------------------------------------------------


def _as_int_ids(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"the serving entry point takes INT64 {what} ids; this run has {arr.dtype} ids "
            "(string ids need a mapping to integers first)"
        )
    return arr.astype(np.int64)


def user_tower_ids(
    two_tower: TwoTower, dataset: ProcessedDataset, entry: ModelManifest
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
) -> ProfileEncoding:
    """How profile values become the ids of one exported model (tower or ranker).

    Args:
        schema: the full feature schema (sources, kinds, vocabulary policies).
        entry: the model's manifest entry (features, ``max_len``, table sizes).
        user_features: the model's user-side features.
        users: the user table the training features were encoded from.
        encoded: per user-side feature, that table's ids as jagged ``(values, offsets)``.
        item_vocab: ``[I]`` id of each catalogue item in the history feature's
            vocabulary, or None when the model cannot map items.

    Returns:
        A :class:`~recsys.serving.user_state.ProfileEncoding`; categorical maps come
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
    n_items = 0 if item_vocab is None else len(item_vocab)
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
    return profile_encoding(schema, entry, entry.feature_order, dataset.users, columns, item_vocab)


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
    return profile_encoding(schema, entry, ctx.user_keys, dataset.users, columns, item_vocab)


def ranker_features(recommender: TwoStageRecommender, entry: ModelManifest) -> RankerFeatures:
    """The ranker's request-time feature tables from the recommender's context."""
    ranker = recommender.ranker
    if ranker is None:
        raise ValueError("the recommender has no ranker")
    ctx = recommender.context
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
        if k not in ctx.user_keys
    }
    return RankerFeatures(
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
    )


def recommend_tables(
    recommender: TwoStageRecommender,
    two_tower: TwoTower,
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
    embedding_dim = int(entry.outputs[0].shape[-1])
    append_one = bool(two_tower.config.item_bias)
    if queries.shape[1] != embedding_dim + int(append_one):
        raise ValueError(
            f"the recommender's query vectors are {queries.shape[1]}-d; the user tower gives "
            f"{embedding_dim}-d (+1 with an item bias: {append_one})"
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
        query_scale=float(two_tower.inv_temperature.detach()),
        query_append_one=append_one,
        extra=dict(extra or {}),
        profile=tower_profile_encoding(two_tower.schema, dataset, entry, item_raw),
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


def _copy_model_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():  # external data: a folder named model.onnx
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def _write_config(root: Path, name: str, values: Mapping[str, Any]) -> Path:
    path = root / name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config(name, {"name": name, **values}))
    return path


def _copy_python_model(root: Path, name: str, version: int) -> Path:
    dst = root / name / str(version) / "model.py"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(TEMPLATES_DIR / name / "model.py", dst)
    return dst


# -- the repository ------------------------------------------------------------------


def build_repository(
    recommender: TwoStageRecommender,
    two_tower: TwoTower,
    schema: FeatureSchema,
    dataset: ProcessedDataset,
    out_dir: str | Path,
    config: RepositoryConfig | None = None,
    *,
    overwrite: bool = False,
) -> RepositoryInfo:
    """Writes the whole repository (every model at ``config.version``).

    Args:
        recommender: the offline two-stage recommender (context, FAISS index, item
            embeddings, trained ranker, aggregation config).
        two_tower: the retrieval model whose user tower is exported.
        schema: the full feature schema (the ranker reads ``max_len`` from it).
        dataset: the processed split the recommender's context was built from.
        out_dir: the repository folder.
        config: generation settings.
        overwrite: replace an existing repository folder.

    Returns:
        A :class:`RepositoryInfo`.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty, without ``overwrite``.
        ValueError: the parts disagree (user order, features, ids that are not ints).
    """
    cfg = config or RepositoryConfig()
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty (pass overwrite=True)")
        foreign = sorted(p.name for p in root.iterdir() if p.name not in MODEL_NAMES)
        if foreign:
            # overwrite replaces a repository, never an arbitrary folder
            raise FileExistsError(
                f"{root} holds {foreign[:5]}, which are not models of this repository; "
                "refusing to delete it"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    if recommender.ranker is None:
        raise ValueError("the repository serves a ranker: the recommender has none")
    v = cfg.version
    files: dict[str, list[Path]] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-export-") as tmp:
        staging = Path(tmp)
        towers = export_two_tower(two_tower, None, staging, model_version=v, triton_layout=True)
        ranked = export_ranker(
            recommender.ranker.model, schema, staging, model_version=v, triton_layout=True
        )
        manifest = ExportManifest.load(staging / MANIFEST_FILE)
        for name, result in (("user_tower", towers.results["user_tower"]),
                             ("ranker", ranked.results["ranker"])):  # fmt: skip
            target = root / name / str(v) / "model.onnx"
            _copy_model_file(result.path, target)
            files[name] = [target]
    user_entry, ranker_entry = manifest["user_tower"], manifest["ranker"]
    if user_entry.dense_input is not None:
        raise ValueError("serving a user tower with dense inputs is not supported")
    # the index's query vectors: the user tower's output, plus a bias slot if any
    dim = int(user_entry.outputs[0].shape[-1]) + int(bool(two_tower.config.item_bias))

    common = {"max_queue_delay_us": cfg.max_queue_delay_us}
    onnx_common = {
        **common,
        "intra_op_threads": cfg.intra_op_threads,
        "optimization": GPU_ACCELERATORS[cfg.gpu_accelerator],
    }
    _write_config(
        root,
        "user_tower",
        {
            **onnx_common,
            "max_batch_size": cfg.max_batch_size,
            "inputs": tensor_block("input", user_entry.inputs),
            "outputs": tensor_block("output", user_entry.outputs),
        },
    )
    _write_config(
        root,
        "ranker",
        {
            **onnx_common,
            "max_batch_size": cfg.ranker_max_batch_size,
            "inputs": tensor_block("input", ranker_entry.inputs),
            "outputs": tensor_block("output", ranker_entry.outputs),
        },
    )

    retrieval_dir = root / "retrieval" / str(v)
    recommender.index.save(retrieval_dir)
    if recommender.index.dim != dim:
        raise ValueError(f"the index holds {recommender.index.dim}-d vectors, the queries {dim}-d")
    _copy_python_model(root, "retrieval", v)
    _write_config(
        root,
        "retrieval",
        {
            **common,
            "max_batch_size": cfg.max_batch_size,
            "dim": dim,
            "faiss_threads": cfg.faiss_threads,
        },
    )
    files["retrieval"] = sorted(retrieval_dir.iterdir())

    recommend_dir = root / "recommend" / str(v)
    provenance = {
        "schema": schema.name,
        "schema_version": schema.version,
        "user_tower_version": v,
        "ranker_version": v,
        "retrieval_version": v,
    }
    tables = recommend_tables(recommender, two_tower, dataset, user_entry, provenance)
    check_query_vectors(tables, root / "user_tower" / str(v) / "model.onnx", recommender)
    tables.save(recommend_dir)
    served_features = ranker_features(recommender, ranker_entry)
    served_features.profile = ranker_profile_encoding(recommender, schema, dataset, ranker_entry)
    served_features.save(recommend_dir)
    (recommend_dir / SCHEMA_FILE).write_text(json.dumps(schema.to_dict(), indent=2) + "\n")
    manifest.save(recommend_dir)
    (recommend_dir / MANIFEST_FILE).rename(recommend_dir / EXPORT_MANIFEST_FILE)
    _copy_python_model(root, "recommend", v)
    _write_config(
        root,
        "recommend",
        {
            **common,
            "max_batch_size": cfg.max_batch_size,
            "max_k": served_max_k(cfg.max_k, tables.num_candidates, tables.n_items),
            "user_tower_model": "user_tower",
            "retrieval_model": "retrieval",
            "ranker_model": "ranker",
            "ranker_max_batch_size": cfg.ranker_max_batch_size,
            "profile_store": cfg.profile_store,
            "instance_group": (
                f"instance_group [ {{ count: {cfg.recommend_instances} kind: KIND_CPU }} ]"
                if cfg.recommend_instances
                else "# instance_group: Triton's default"
            ),
        },
    )
    files["recommend"] = sorted(recommend_dir.iterdir())
    LOGGER.info("wrote Triton repository %s (version %d)", root, v)
    return RepositoryInfo(root=root, version=v, manifest=manifest, files=files, config=cfg)


# -- versions and roll-in ------------------------------------------------------------


def model_versions(root: str | Path, model: str) -> list[int]:
    """The numbered version folders of ``model`` in repository ``root``, ascending."""
    folder = Path(root) / model
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder {folder}")
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def add_model_version(
    root: str | Path,
    model: str,
    source: str | Path,
    version: int | None = None,
) -> int:
    """Copies a new version of ``model`` into the repository (without loading it).

    Args:
        root: the repository.
        model: the model name (its ``config.pbtxt`` stays as it is: a new version must
            keep the inputs and outputs).
        source: a version folder to copy (e.g. ``<staging>/ranker/1``), or a single
            file that becomes the version's ``model.onnx``.
        version: the new version number; default one above the newest.

    Returns:
        The version number written.

    Raises:
        FileExistsError: that version folder exists already.
    """
    existing = model_versions(root, model)
    number = version if version is not None else (max(existing, default=0) + 1)
    target = Path(root) / model / str(number)
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    src = Path(source)
    # Written under a temporary name first: Triton (poll mode) or a concurrent
    # load_model must never see a half-copied version folder.
    partial = Path(root) / model / f".{number}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if src.is_dir():
        shutil.copytree(src, partial)
    else:
        partial.mkdir(parents=True)
        shutil.copy2(src, partial / "model.onnx")
    partial.rename(target)
    return number


def roll_in(server: Any, model: str, *, timeout_s: float = 120.0) -> list[int]:
    """Loads the newest version of ``model`` (explicit model control) and waits for it.

    Triton loads the new version, serves it as soon as it is ready and unloads the
    versions the policy (``latest 1``) no longer keeps; requests in flight finish on
    the version they started on.

    Args:
        server: a :class:`~recsys.serving.server.LocalTritonServer`, or anything with
            ``load_model(name)`` and ``is_model_ready(name, version)``.
        model: the model to reload.
        timeout_s: how long to wait for the newest version to report ready.

    Returns:
        The versions ready after the switch.

    Raises:
        ModelLoadError: Triton refused the new version (its message says why); the
            previous version keeps serving.
    """
    import time

    server.load_model(model)
    root = Path(server.config.model_repository)
    newest = str(max(model_versions(root, model)))
    deadline = time.monotonic() + timeout_s
    while not server.is_model_ready(model, newest):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} version {newest} not ready after {timeout_s:.0f} s")
        time.sleep(0.05)
    return [v for v in model_versions(root, model) if server.is_model_ready(model, str(v))]


def describe(root: str | Path) -> dict[str, Any]:
    """A summary of a repository: per model, its versions and config file (for the CLI)."""
    out: dict[str, Any] = {}
    for name in MODEL_NAMES:
        folder = Path(root) / name
        if folder.is_dir():
            out[name] = {
                "versions": model_versions(root, name),
                "config": str(folder / "config.pbtxt"),
            }
    tables = Path(root) / "recommend"
    if tables.is_dir():
        versions = model_versions(root, "recommend")
        if versions:
            meta = json.loads((tables / str(versions[-1]) / "tables.json").read_text())
            out["recommend"]["settings"] = meta["settings"]
            out["recommend"]["num_candidates"] = meta["num_candidates"]
    return out


# -- from a training run ---------------------------------------------------------------


@dataclass
class TrainingRun:
    """The parts of a training run that the repository is built from.

    Attributes:
        recommender: the offline two-stage recommender, rebuilt from the artifacts.
        two_tower: the retrieval model with its trained weights.
        schema: the full feature schema.
        dataset: the main processed split (the users and items served).
        config: the resolved run configuration used to rebuild them.
    """

    recommender: TwoStageRecommender
    two_tower: TwoTower
    schema: FeatureSchema
    dataset: ProcessedDataset
    config: dict[str, Any]


def compose_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The main job's configuration (``configs/main.yaml``) with Hydra overrides, resolved.

    Example:
        >>> compose_config(["model.embedding_dim=32"])["model"]["embedding_dim"]  # doctest: +SKIP
        32
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(_REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="main", overrides=list(overrides))
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    return resolved


def _config_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else _REPO_ROOT / p


def two_tower_from_config(
    cfg: Mapping[str, Any], schema: FeatureSchema, dataset: ProcessedDataset
) -> TwoTower:
    """The two-tower model the main job builds for ``cfg`` (tables sized by ``dataset``)."""
    from recsys.models.two_tower import TowerConfig, TwoTowerConfig

    m = dict(cfg["model"])
    exclude = list(m.get("exclude_features") or [])
    unknown = [name for name in exclude if name not in schema]
    if unknown:
        raise ValueError(f"exclude_features names unknown features {unknown}")
    model_schema = schema.select([f.name for f in schema if f.name not in exclude])
    names = {f.name for f in fields(TwoTowerConfig)} - {"user_tower", "item_tower"}
    model_cfg = TwoTowerConfig(
        **{k: v for k, v in m.items() if k in names},
        user_tower=TowerConfig(tuple(m["user_tower"]["layer_sizes"]), m["user_tower"]["dropout"]),
        item_tower=TowerConfig(tuple(m["item_tower"]["layer_sizes"]), m["item_tower"]["dropout"]),
    )
    if dataset.vocabs is None:
        raise ValueError("the processed dataset has no vocabularies")
    return TwoTower(model_schema, dataset.vocabs.num_embeddings(), model_cfg)


def _config_group(cfg: Mapping[str, Any], name: str, default: str) -> dict[str, Any]:
    """A config group of the run, or ``configs/<name>/<default>.yaml`` when it has none."""
    if cfg.get(name) is not None:
        return dict(cfg[name])
    from omegaconf import OmegaConf

    loaded: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
        OmegaConf.load(_REPO_ROOT / "configs" / name / f"{default}.yaml"), resolve=True
    )
    return loaded


def load_training_run(
    artifacts_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    ranker_dir: str | Path | None = None,
    ranker_vocabs: str | Path = "auto",
    aggregation: Mapping[str, Any] | None = None,
) -> TrainingRun:
    """Rebuilds the offline two-stage recommender from a run's artifacts.

    Expected layout (what the main job's ``retrieval`` and ``two_stage`` stages write
    under ``artifacts_dir``)::

        processed/main/, processed/selection/      feature tables and vocabularies
        retrieval/two_tower.pt                     two-tower weights (state dict)
        retrieval/query_vectors.npy, item_vectors.npy, item_embeddings.npy
        ranker/ranker.pt, ranker/ranker.json       TrainedRanker.save
        ranker/two_stage.json                      (optional) {"aggregation": {...}}
        ranker/vocab/                              (optional) the ranker's vocabularies

    Args:
        artifacts_dir: the run's artifacts folder (e.g. ``artifacts/ml-100k``).
        config: the run's resolved configuration; None composes ``configs/main.yaml``
            (pass the run's own config when it used overrides that change the models).
        ranker_dir: the ranker folder (default ``<artifacts_dir>/ranker``).
        ranker_vocabs: the vocabularies the ranker's ids come from: ``"auto"``
            (``<ranker_dir>/vocab`` if present, else the model-selection split's, which
            the main job trains the ranker on), ``"main"``, ``"selection"``, or a folder.
        aggregation: the aggregation to serve (e.g. the weights the run tuned); default
            ``<ranker_dir>/two_stage.json``'s ``aggregation``, else the run config's
            ``recommend.aggregation``.

    Returns:
        A :class:`TrainingRun`.

    Raises:
        FileNotFoundError: an artifact is missing (the message says which stage makes it).
        ValueError: the parts disagree (table sizes, vocabularies).
    """
    import torch

    from recsys.features.vocab import VocabularySet
    from recsys.recommend import AggregationConfig, RankerContext, TrainedRanker
    from recsys.recommend.two_stage import RetrievalVectors, TwoStageSettings

    cfg = dict(config) if config is not None else compose_config()
    art = Path(artifacts_dir)
    rdir = Path(ranker_dir) if ranker_dir is not None else art / "ranker"
    needed = {
        art / "processed" / "main": "the data stage",
        art / "retrieval" / "two_tower.pt": "the retrieval stage",
        art / "retrieval" / "query_vectors.npy": "the retrieval stage",
        art / "retrieval" / "item_vectors.npy": "the retrieval stage",
        art / "retrieval" / "item_embeddings.npy": "the retrieval stage",
        rdir / "ranker.json": "the two_stage stage (TrainedRanker.save)",
    }
    missing = [f"{path} ({stage})" for path, stage in needed.items() if not path.exists()]
    if missing:
        raise FileNotFoundError("training run artifacts missing: " + "; ".join(missing))
    schema = FeatureSchema.from_yaml(_config_path(cfg["dataset"]["schema"]))
    main = ProcessedDataset.load(art / "processed" / "main")
    two_tower = two_tower_from_config(cfg, schema, main)
    two_tower.load_state_dict(torch.load(art / "retrieval" / "two_tower.pt", weights_only=True))
    two_tower.eval()
    ranker = TrainedRanker.load(rdir, schema)

    if ranker_vocabs == "auto":
        ranker_vocabs = rdir / "vocab" if (rdir / "vocab").is_dir() else "selection"
    if ranker_vocabs == "main":
        vocabs = main.vocabs
    elif ranker_vocabs == "selection":
        vocabs = ProcessedDataset.load(art / "processed" / "selection").vocabs
    else:
        vocabs = VocabularySet.load(Path(ranker_vocabs), schema)
    if vocabs is None:
        raise ValueError("the ranker's processed split has no vocabularies")
    sizes = vocabs.num_embeddings()
    pairs = zip(ranker.model.feature_names, ranker.model.num_embeddings_per_feature, strict=True)
    wrong = {f: (n, sizes.get(f)) for f, n in pairs if sizes.get(f) != n}
    if wrong:
        raise ValueError(
            f"the ranker's tables do not match the vocabularies {ranker_vocabs} "
            f"(feature: (ranker rows, vocabulary rows)) {wrong}"
        )

    recommend_raw = _config_group(cfg, "recommend", "default")
    if recommend_raw.get("index") is None and cfg.get("index") is not None:
        recommend_raw["index"] = dict(cfg["index"])
    settings = TwoStageSettings.from_config(
        _config_group(cfg, "ranker", "dlrm"), recommend_raw, int(cfg.get("seed", 0))
    )
    if aggregation is None and (rdir / "two_stage.json").is_file():
        aggregation = json.loads((rdir / "two_stage.json").read_text()).get("aggregation")
    agg = AggregationConfig.from_dict(dict(aggregation)) if aggregation else settings.aggregation
    context = RankerContext.from_processed(main, schema, vocabs, ranker.data_config)
    vectors = RetrievalVectors(
        np.load(art / "retrieval" / "query_vectors.npy"),
        np.load(art / "retrieval" / "item_vectors.npy"),
        np.load(art / "retrieval" / "item_embeddings.npy"),
    )
    recommender = TwoStageRecommender.build(
        context,
        vectors,
        ranker,
        agg,
        index_config=settings.index,
        items=main.items,
        num_candidates=settings.num_candidates,
        batch_size=settings.batch_size,
        center_diversity=settings.center_diversity,
    )
    return TrainingRun(recommender, two_tower, schema, main, cfg)


def build_repository_from_run(
    artifacts_dir: str | Path,
    out_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    repository_config: RepositoryConfig | None = None,
    *,
    overwrite: bool = False,
) -> RepositoryInfo:
    """:func:`load_training_run` then :func:`build_repository` (the ``build-repo`` command)."""
    run = load_training_run(artifacts_dir, config)
    return build_repository(
        run.recommender,
        run.two_tower,
        run.schema,
        run.dataset,
        out_dir,
        repository_config,
        overwrite=overwrite,
    )
