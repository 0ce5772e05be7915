"""The offline recommender with items published after training (cold items).

:func:`with_cold_items` gives a :class:`~recsys.recommend.two_stage.TwoStageRecommender`
the same cold items the served ``recommend`` model holds
(:mod:`recsys.runtime.cold_items`), encoded the same way: the exported item tower on the
spec's attribute ids, the item rows appended after the trained ones (indices
``n .. n + m - 1``), no training interactions, the release time, no co-occurrence
affinity, the ranker's item-side ids from the spec, the MMR vectors centered by the
trained items' mean. Its ``recommend()`` then gives the served lists (the tests compare
them): the index is an exact Flat index over the trained and the cold vectors, which is
what the server's FAISS results merged with its exact cold search give for a Flat
retrieval index.

Example::

    offline = with_cold_items(recommender, items, ColdItemSpec.load(folder), tower)
    offline.recommend([196], k=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from recsys.features.batching import JaggedArray
from recsys.index import IndexConfig, ItemIndex
from recsys.recommend.two_stage import RetrievalVectors, TwoStageRecommender
from recsys.runtime.cold_items import ColdItem, ColdItemSpec, ItemTowerFn, encode_items


def _jagged_rows(ids: np.ndarray) -> JaggedArray:
    """``[m, L]`` padded ids (``-1`` pad) as a jagged array."""
    keep = ids >= 0
    lengths = keep.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return JaggedArray(ids[keep].astype(np.int64), offsets)


def _append(column: JaggedArray, rows: JaggedArray) -> JaggedArray:
    values = np.concatenate([column.values, rows.values]).astype(np.int64)
    offsets = np.concatenate([column.offsets, column.offsets[-1] + rows.offsets[1:]])
    return JaggedArray(values, offsets.astype(np.int64))


def with_cold_items(
    recommender: TwoStageRecommender,
    items: Sequence[ColdItem],
    spec: ColdItemSpec,
    item_tower: ItemTowerFn,
) -> TwoStageRecommender:
    """A recommender over the trained catalogue followed by ``items``.

    Args:
        recommender: the offline recommender of the run (left unchanged).
        items: the cold items, in the served row order (the order they were first
            published: :attr:`recsys.runtime.cold_items.ColdItemUpdater.items`).
        spec: the repository's ``cold_items.json``.
        item_tower: the exported item tower.

    Returns:
        A new recommender; with no items, ``recommender`` itself.

    Raises:
        ValueError: the spec has no ranker rows while the recommender ranks.
    """
    if not items:
        return recommender
    ctx = recommender.context
    n, m = ctx.n_items, len(items)
    dim = recommender.diversity_vectors.shape[1]
    append_bias = recommender.item_vectors.shape[1] == dim + 1
    encoded = encode_items(items, spec, item_tower, append_bias)
    if encoded.ranker_ids is None:
        raise ValueError("the cold-item spec has no ranker rows")
    sparse = dict(ctx.items_encoded.sparse)
    for f, name in enumerate(spec.ranker.features if spec.ranker is not None else []):
        if name in sparse:
            sparse[name] = _append(sparse[name], _jagged_rows(encoded.ranker_ids[:, f]))
    dense = ctx.items_encoded.dense
    items_encoded = replace(
        ctx.items_encoded,
        sparse=sparse,
        dense=np.vstack([dense, np.zeros((m, dense.shape[1]), dtype=dense.dtype)]),
        labels=None,
    )
    item_item = {}
    for name, matrix in ctx.item_item.items():
        grown = np.zeros((n + m, n + m), dtype=np.float32)
        grown[:n, :n] = matrix
        item_item[name] = grown
    context = replace(
        ctx,
        item_ids=np.concatenate([ctx.item_ids, [i.item_id for i in items]]).astype(
            ctx.item_ids.dtype
        ),
        seen=replace(ctx.seen, n_items=n + m),
        item_offsets=np.concatenate([ctx.item_offsets, np.full(m, ctx.item_offsets[-1])]),
        item_count=np.concatenate([ctx.item_count, np.zeros(m)]),
        release_time=np.concatenate([ctx.release_time, [i.release_time for i in items]]),
        item_item=item_item,
        items_encoded=items_encoded,
    )
    vectors = np.vstack([recommender.item_vectors, encoded.index_vectors]).astype(np.float32)
    index = ItemIndex(IndexConfig(kind="flat", device="cpu")).build(
        vectors, np.arange(n + m, dtype=np.int64)
    )
    genres = None
    if recommender.item_genres is not None:
        genres = [list(g) for g in recommender.item_genres] + [list(i.categories) for i in items]
    out = TwoStageRecommender(
        context,
        index,
        RetrievalVectors(
            recommender.query_vectors,
            vectors,
            np.vstack([recommender.diversity_vectors, encoded.diversity]),
        ),
        recommender.ranker,
        recommender.config,
        recommender.num_candidates,
        genres,
        recommender.batch_size,
        center_diversity=False,
    )
    # MMR compares the cold items as the server does: centered by the trained mean
    out.diversity_vectors = np.vstack([recommender.diversity_vectors, encoded.diversity])
    return out
