"""Writes the run bundle from a trained two-stage recommender (training's last stage).

:func:`write_bundle` exports the user tower, the item tower and the ranker to ONNX
(checked against PyTorch), computes the ``recommend`` model's tables, saves the
FAISS index, the feature schema and vocabularies, the served aggregation weights,
the run's config and metrics, offline lists of sample users (what serving must
return for them) and provenance, all through :mod:`recsys.bundle.layout`.

Example::

    bundle = write_bundle(recommender, two_tower, schema, main, "artifacts/ml-100k/bundle",
                          config=cfg, metrics=metrics)
    bundle.bundle_id
"""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recsys.bundle import layout
from recsys.bundle.layout import BundleWriter, RunBundle
from recsys.bundle.runtime_tables import (
    check_query_vectors,
    ranker_features,
    ranker_profile_encoding,
    recommend_tables,
)
from recsys.export.manifest import MANIFEST_FILE, ExportManifest
from recsys.export.onnx_export import export_ranker, export_two_tower
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.models.retrieval import RetrievalModel
from recsys.recommend.two_stage import TwoStageRecommender

LOGGER = logging.getLogger(__name__)

EXPECTED_USERS = 20
"""Known users whose offline lists the bundle records (plus one unknown user)."""


def expected_lists(
    recommender: TwoStageRecommender, users: Sequence[Any], k: int
) -> dict[str, Any]:
    """The offline ``recommend()`` lists of ``users``: what the served model must return.

    Returns:
        ``{"k": k, "lists": {user: [[item, score], ...]}}`` (valid slots only).
    """
    recs = recommender.recommend(np.asarray(users), k)
    lists: dict[str, list[list[float]]] = {}
    for row, user in enumerate(recs.user_ids.tolist()):
        valid = recs.valid[row]
        lists[str(user)] = [
            [int(item), float(score)]
            for item, score in zip(
                recs.item_ids[row][valid].tolist(), recs.scores[row][valid].tolist(), strict=True
            )
        ]
    return {"k": int(k), "lists": lists}


def write_bundle(
    recommender: TwoStageRecommender,
    two_tower: RetrievalModel,
    schema: FeatureSchema,
    dataset: ProcessedDataset,
    out_dir: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    tuning: Any = None,
    expected_users: int = EXPECTED_USERS,
    expected_k: int = 10,
    overwrite: bool = True,
) -> RunBundle:
    """Writes everything serving needs into one checked bundle folder.

    Args:
        recommender: the offline two-stage recommender (context, FAISS index, item
            embeddings, trained ranker, the aggregation it serves).
        two_tower: the retrieval model whose towers are exported (any registered
            :class:`~recsys.models.retrieval.RetrievalModel`).
        schema: the full feature schema.
        dataset: the processed split the recommender's context was built from (the
            run's main split: the users and items served).
        out_dir: the bundle folder (replaced when it holds a bundle already).
        config: the run's resolved configuration (``config.yaml``).
        metrics: the run's test metrics per model (``metrics.json``).
        tuning: the aggregation tuning record, stored beside the weights.
        expected_users: known users whose offline lists are recorded.
        expected_k: the length of those lists.
        overwrite: replace an existing bundle at ``out_dir``.

    Returns:
        The written bundle, opened and checked.

    Raises:
        ValueError: the parts disagree (vector widths, user order, features).
    """
    if recommender.ranker is None:
        raise ValueError("a bundle serves a ranker: the recommender has none")
    if dataset.vocabs is None:
        raise ValueError("the processed dataset has no vocabularies")
    with (
        BundleWriter(out_dir, overwrite=overwrite) as writer,
        tempfile.TemporaryDirectory(prefix="recsys-export-") as tmp,
    ):
        staging = Path(tmp)
        towers = export_two_tower(
            two_tower, None, staging, vocabs=dataset.vocabs, triton_layout=True
        )
        # the ranker's schema: the dataset's features and the request features it reads
        ranker_schema = schema.for_ranker(recommender.ranker.data_config.request_features)
        # user, context and request features enter once per candidate list
        ranked = export_ranker(
            recommender.ranker.model, ranker_schema, staging, triton_layout=True, per_list=True
        )
        manifest = ExportManifest.load(staging / MANIFEST_FILE)
        exported = {**towers.results, **ranked.results}
        for name in (layout.USER_TOWER, "item_tower", layout.RANKER):
            writer.copy(exported[name].path, layout.model_path(name))
        writer.copy(staging / MANIFEST_FILE, layout.EXPORT_MANIFEST)

        user_entry, ranker_entry = manifest[layout.USER_TOWER], manifest[layout.RANKER]
        if user_entry.dense_input is not None:
            raise ValueError("serving a user tower with dense inputs is not supported")
        query_dim = two_tower.query_scaling().dim
        if recommender.index.dim != query_dim:
            raise ValueError(
                f"the index holds {recommender.index.dim}-d vectors, the queries {query_dim}-d"
            )
        tables = recommend_tables(
            recommender,
            two_tower,
            dataset,
            user_entry,
            {"schema": schema.name, "schema_version": schema.version},
        )
        check_query_vectors(tables, writer.path(layout.model_path(layout.USER_TOWER)), recommender)
        runtime_dir = writer.path(layout.RUNTIME_DIR)
        tables.save(runtime_dir)
        served = ranker_features(recommender, ranker_entry)
        served.profile = ranker_profile_encoding(recommender, schema, dataset, ranker_entry)
        served.save(runtime_dir)
        recommender.index.save(writer.path(layout.INDEX_DIR))
        writer.write_json(layout.SCHEMA, schema.to_dict())
        dataset.vocabs.save(writer.path(layout.VOCAB_DIR))
        writer.write_json(
            layout.AGGREGATION,
            {"aggregation": asdict(recommender.config), "tuning": tuning},
        )
        if config is not None:
            writer.write_text(layout.CONFIG, yaml.safe_dump(dict(config), sort_keys=False))
        writer.write_json(layout.METRICS, dict(metrics or {}))
        known = recommender.context.user_ids[: max(expected_users, 0)].tolist()
        unknown = _unknown_user(recommender.context.user_ids)
        writer.write_json(
            layout.EXPECTED,
            expected_lists(
                recommender, [*known, *([unknown] if unknown is not None else [])], expected_k
            ),
        )
        summary = {
            "dataset": (config or {}).get("dataset", {}).get("name", schema.name),
            "schema": schema.name,
            "schema_version": schema.version,
            "n_users": int(tables.n_users),
            "n_items": int(tables.n_items),
            "num_candidates": int(tables.num_candidates),
            "query_dim": query_dim,
            "models": [layout.USER_TOWER, "item_tower", layout.RANKER],
        }
        provenance = {
            "source_sha256": dataset.manifest.get("source_sha256"),
            "data_config_hash": dataset.manifest.get("config_hash"),
            "python": platform.python_version(),
            "torch": _version("torch"),
            "faiss": _version("faiss"),
            "onnxruntime": _version("onnxruntime"),
        }
        required = (*layout.SERVING_FILES, layout.METRICS, layout.VOCAB_DIR, layout.EXPECTED)
        bundle = writer.finish(summary=summary, required=required, provenance=provenance)
    LOGGER.info("wrote %s", bundle.describe())
    return bundle


def _unknown_user(user_ids: np.ndarray) -> int | None:
    """An integer id that no known user has (its list is the popularity fallback)."""
    if user_ids.dtype.kind not in "iu":
        return None
    return int(user_ids.max(initial=0)) + 1_000_000


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        for name in {"faiss": ("faiss-cpu", "faiss-gpu", "faiss")}.get(module, (module,)):
            try:
                return version(name)
            except Exception:  # not installed under that name
                continue
    except ImportError:
        pass
    return None
