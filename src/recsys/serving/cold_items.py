"""``build-repo --cold-items``: what the ``recommend`` model needs to serve cold items.

:func:`cold_item_spec` reads a run bundle and writes down how a published item's
attributes become model ids (:class:`recsys.runtime.cold_items.ColdItemSpec`):

* the item tower's rules come from the bundle's vocabularies, feature by feature, by the
  feature's source column: the item id feature takes its OOV row (row 0 of an ``id_map``
  vocabulary: the id was never trained); ``genres`` map each category to its row;
  ``year_bucket`` maps each bucket label (``1990-1994``, ``unknown``) to its row;
  ``popularity_bucket`` takes the bucket of an item without training interactions
  (bucket 0). A feature with another source is refused, naming it;
* the ranker's vocabularies are not in the bundle (they are the selection split's), so
  its rules are read off the ranker's own item rows (``ranker_features.npz``): a
  category's id is the one id every item of that category holds (resolved by
  elimination over the categories), a year bucket's id the one its items hold most
  often;
* the mean of the trained items' embeddings (the FAISS index's vectors, without the
  bias slot), which MMR subtracts before comparing items; with an item-bias model, the
  mean of the trained items' biases, which a cold item's bias slot takes (the exported
  item tower outputs the embedding only); and the business filters' excluded
  categories.

:func:`write_cold_items` copies the exported item tower next to the tables and saves the
spec there.

Example::

    spec = cold_item_spec(RunBundle.open("artifacts/bundle"))
    spec.tower.rules["item_genres"].map["Comedy"]
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recsys.bundle import layout
from recsys.bundle.layout import RunBundle
from recsys.export.manifest import ExportManifest
from recsys.features.schema import FeatureSchema, VocabPolicy
from recsys.features.vocab import VocabularySet
from recsys.runtime.cold_items import (
    ITEM_TOWER_FILE,
    ColdItemSpec,
    FeatureRule,
    ItemSideEncoding,
    year_label,
)
from recsys.runtime.engine import RecommendTables
from recsys.runtime.ranker_features import RankerFeatures

ITEM_ID_SOURCE = "item_id"
GENRES_SOURCE = "genres"
YEAR_SOURCE = "year_bucket"
POPULARITY_SOURCE = "popularity_bucket"
ITEM_TOWER = "item_tower"


def _tower_rule(
    schema: FeatureSchema, vocabs: VocabularySet, name: str, max_len: int
) -> FeatureRule:
    spec = schema[name]
    vocab = vocabs[name]
    source = spec.source
    if source == ITEM_ID_SOURCE:
        if vocab.policy is not VocabPolicy.ID_MAP:
            raise ValueError(f"cold items: the item id feature {name!r} needs an id_map vocabulary")
        return FeatureRule("oov", id=0)
    if source == GENRES_SOURCE:
        values = [str(v) for v in vocab.values.tolist()]
        rows = vocab.encode(values).tolist()
        return FeatureRule("categories", id=0, map=dict(zip(values, rows, strict=True)),
                           max_len=max_len)  # fmt: skip
    if source == YEAR_SOURCE:
        values = [str(v) for v in vocab.values.tolist()]
        rows = vocab.encode(values).tolist()
        return FeatureRule("year", id=0, map=dict(zip(values, rows, strict=True)))
    if source == POPULARITY_SOURCE:
        return FeatureRule("constant", id=int(vocab.encode([0])[0]))
    raise ValueError(
        f"cold items: item feature {name!r} (source {source!r}) has no rule; cold items can "
        f"be encoded from {ITEM_ID_SOURCE}, {GENRES_SOURCE}, {YEAR_SOURCE} and "
        f"{POPULARITY_SOURCE} features only"
    )


def _item_genres(categories: Mapping[str, np.ndarray], n_items: int) -> list[list[str]]:
    genres: list[list[str]] = [[] for _ in range(n_items)]
    for name, rows in categories.items():
        for row in np.asarray(rows).tolist():
            genres[int(row)].append(name)
    return genres


def ranker_category_map(
    ids: np.ndarray, categories: Mapping[str, np.ndarray], max_len: int
) -> dict[str, int]:
    """Category name -> the ranker's id, from the ranker's item rows.

    Args:
        ids: ``[I, L]`` the category feature's ids of every trained item (``-1`` pad).
        categories: category name -> item indices.
        max_len: ids kept per item (items with more categories are left out: their
            bag was truncated).

    Returns:
        The categories whose id is determined (every item of the category holds it,
        and no other unresolved id), by elimination.

    Example:
        >>> ranker_category_map(np.array([[3, -1], [3, 5], [5, -1]]),
        ...                     {"a": np.array([0, 1]), "b": np.array([1, 2])}, 2)
        {'a': 3, 'b': 5}
    """
    genres = _item_genres(categories, len(ids))
    candidates: dict[str, set[int]] = {}
    for name, rows in categories.items():
        sets = [
            {int(x) for x in ids[r] if x >= 0}
            for r in np.asarray(rows).tolist()
            if len(genres[r]) <= max_len
        ]
        if sets:
            candidates[name] = set.intersection(*sets)
    resolved: dict[str, int] = {}
    changed = True
    while changed:
        changed = False
        taken = set(resolved.values())
        for name, options in candidates.items():
            if name in resolved:
                continue
            left = options - taken
            if len(left) == 1:
                resolved[name] = left.pop()
                changed = True
    return dict(sorted(resolved.items()))


def _ranker_rules(
    features: RankerFeatures,
    tables: RecommendTables,
    schema: FeatureSchema,
    tower_rules: Mapping[str, FeatureRule],
) -> dict[str, FeatureRule]:
    rules: dict[str, FeatureRule] = {}
    for f, name in enumerate(features.sparse_names):
        if name in features.user_keys or not (features.item_ids[:, f] >= 0).any():
            continue  # user-side or request features: not an item row's
        source = schema[name].source if name in schema else name
        if source == ITEM_ID_SOURCE:
            rules[name] = FeatureRule("oov", id=0)
        elif source == GENRES_SOURCE:
            width = int(schema[name].max_len or features.seq_len)
            rules[name] = FeatureRule(
                "categories",
                id=0,
                map=ranker_category_map(features.item_ids[:, f], tables.categories, width),
                max_len=width,
            )
        elif source == YEAR_SOURCE:
            labels = tower_rules.get(name, FeatureRule("year")).map
            votes: dict[str, Counter[int]] = {}
            years = [
                None if not np.isfinite(t) else int(np.datetime64(int(t), "s").astype(object).year)
                for t in tables.release_time.tolist()
            ]
            for row, year in enumerate(years):
                label = year_label(year, labels)
                if label is not None and features.item_ids[row, f, 0] >= 0:
                    votes.setdefault(label, Counter())[int(features.item_ids[row, f, 0])] += 1
            rules[name] = FeatureRule(
                "year", id=0, map={k: c.most_common(1)[0][0] for k, c in sorted(votes.items())}
            )
        elif source == POPULARITY_SOURCE:
            unseen = np.flatnonzero(features.item_count == 0)
            fixed = (
                int(features.item_ids[unseen[0], f, 0])
                if len(unseen)
                else tower_rules.get(name, FeatureRule("constant", id=0)).id
            )
            rules[name] = FeatureRule("constant", id=fixed)
        else:
            raise ValueError(
                f"cold items: ranker item feature {name!r} (source {source!r}) has no rule"
            )
    return rules


def _index_statistics(index_dir: Path, dim: int) -> tuple[np.ndarray | None, float]:
    """The mean of the index's item embeddings (its first ``dim`` columns) and of its
    item-bias column (0 without one), when FAISS can give the vectors back (a Flat
    index); ``(None, 0.0)`` otherwise."""
    try:
        import faiss

        index = faiss.read_index(str(index_dir / "index.faiss"))
        vectors = np.asarray(index.reconstruct_n(0, index.ntotal), dtype=np.float64)
    except Exception:  # an index that cannot reconstruct (IVF-PQ ...): compare raw
        return None, 0.0
    bias = float(vectors[:, dim].mean()) if vectors.shape[1] == dim + 1 else 0.0
    return vectors[:, :dim].mean(axis=0), bias


def cold_item_spec(run: RunBundle) -> ColdItemSpec:
    """The :class:`~recsys.runtime.cold_items.ColdItemSpec` of a run bundle.

    Raises:
        ValueError: an item feature the spec cannot encode from attributes.
    """
    schema = FeatureSchema.from_dict(json.loads(run.path(layout.SCHEMA).read_text()))
    vocabs = VocabularySet.load(run.path(layout.VOCAB_DIR))
    entry = ExportManifest.load(run.path(layout.EXPORT_MANIFEST))[ITEM_TOWER]
    tower_rules = {
        name: _tower_rule(schema, vocabs, name, int(entry.max_len.get(name, 1)))
        for name in entry.feature_order
    }
    runtime = run.path(layout.RUNTIME_DIR)
    tables = RecommendTables.load(runtime)
    features = RankerFeatures.load(runtime)
    aggregation = json.loads(run.path(layout.AGGREGATION).read_text()).get("aggregation", {})
    genres = next((r for r in tower_rules.values() if r.kind == "categories"), None)
    dim = int(entry.outputs[0].shape[-1])
    mean, bias = _index_statistics(run.path(layout.INDEX_DIR), dim)
    return ColdItemSpec(
        tower=ItemSideEncoding(list(entry.feature_order), int(entry.seq_len), tower_rules),
        ranker=ItemSideEncoding(
            list(features.sparse_names),
            int(features.seq_len),
            _ranker_rules(features, tables, schema, tower_rules),
        ),
        categories=sorted(genres.map) if genres is not None else [],
        excluded_categories=[str(g).lower() for g in aggregation.get("exclude_genres", [])],
        embedding_mean=mean,
        bias=bias,
    )


def write_cold_items(run: RunBundle, recommend_dir: str | Path) -> list[Path]:
    """Copies the item tower into ``recommend_dir`` and writes ``cold_items.json``."""
    folder = Path(recommend_dir)
    source = run.path(layout.model_path(ITEM_TOWER))
    target = folder / ITEM_TOWER_FILE
    if source.is_dir():
        raise ValueError(
            "cold items: the item tower is saved with external data; serve it as one file"
        )
    shutil.copy2(source, target)
    return [target, cold_item_spec(run).save(folder)]


def describe_spec(spec: ColdItemSpec) -> dict[str, Any]:
    """A short summary for logs: features and how many values each rule maps."""
    return {
        "tower": {k: (r.kind, len(r.map)) for k, r in spec.tower.rules.items()},
        "ranker": None
        if spec.ranker is None
        else {k: (r.kind, len(r.map)) for k, r in spec.ranker.rules.items()},
        "categories": len(spec.categories),
    }
