"""Ranker examples and features on real MovieLens-100K: no test leakage, honest negatives."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys.bundle.runtime_tables import ranker_features
from recsys.data.frame import ITEM, TIMESTAMP, USER
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.index import IndexConfig, ItemIndex
from recsys.recommend.ranker_data import (
    CANDIDATE,
    EASY_NEGATIVE,
    MISSED_POSITIVE,
    SECONDS_PER_DAY,
    Candidates,
    DenseScaler,
    RankerBatches,
    RankerContext,
    RankerDataConfig,
    build_ranker_examples,
    dense_matrix,
    retrieve_candidates,
)
from recsys.recommend.two_stage import RetrievalVectors
from recsys.runtime.ranker_features import RankerFeatures

Splits = tuple[ProcessedDataset, ProcessedDataset]
N = 50


@pytest.fixture(scope="module")
def selection_context(splits: Splits, schema: FeatureSchema) -> RankerContext:
    _, sel = splits
    assert sel.vocabs is not None
    return RankerContext.from_processed(sel, schema, sel.vocabs, RankerDataConfig(num_candidates=N))


def _candidates(ctx: RankerContext, vectors: RetrievalVectors, n: int = N):  # type: ignore[no-untyped-def]
    index = ItemIndex(IndexConfig(kind="flat", device="cpu", num_threads=1)).build(
        vectors.items, np.arange(ctx.n_items)
    )
    return retrieve_candidates(index, vectors.queries, np.arange(ctx.n_users), n, exclude=ctx.seen)


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame[USER].tolist(), frame[ITEM].tolist(), strict=True))


def test_examples_never_touch_the_test_split(
    splits: Splits, selection_context: RankerContext, selection_vectors: RetrievalVectors
) -> None:
    main, sel = splits
    ctx = selection_context
    cands = _candidates(ctx, selection_vectors)
    ex = build_ranker_examples(
        sel.test, ctx, cands, selection_vectors.queries, selection_vectors.items, ctx.config
    )
    labelled = set(
        zip(
            ctx.user_ids[ex.users[ex.labels > 0]].tolist(),
            ctx.item_ids[ex.items[ex.labels > 0]].tolist(),
            strict=True,
        )
    )
    # every positive is a held-out *training* interaction, none is a test one
    assert labelled <= _pairs(sel.test)
    assert labelled <= _pairs(main.train)
    assert not labelled & _pairs(main.test)
    assert len(labelled) == len(sel.test)  # every held-out interaction is used once
    # the context's statistics come from the selection train part only
    assert ctx.item_count.sum() == len(sel.train)
    assert ctx.request_time.max() <= sel.train[TIMESTAMP].max().timestamp()


def test_features_do_not_change_when_the_held_out_rows_do(
    splits: Splits, schema: FeatureSchema, main_vectors: RetrievalVectors
) -> None:
    main, sel = splits
    assert sel.vocabs is not None
    cfg = RankerDataConfig(num_candidates=N)
    ctx = RankerContext.from_processed(main, schema, sel.vocabs, cfg)
    # a copy of the main split whose test rows are scrambled: other items, later times
    scrambled = main.test.copy()
    scrambled[ITEM] = np.random.default_rng(0).permutation(scrambled[ITEM].to_numpy())
    scrambled[TIMESTAMP] = scrambled[TIMESTAMP] + pd.Timedelta(days=3)
    ctx2 = RankerContext.from_processed(replace(main, test=scrambled), schema, sel.vocabs, cfg)
    cands = _candidates(ctx, main_vectors)
    users, items, scores, ranks = cands.pairs()
    x1 = dense_matrix(ctx, users, items, scores, ranks)
    x2 = dense_matrix(ctx2, users, items, scores, ranks)
    np.testing.assert_array_equal(x1, x2)
    kjt1 = ctx.sparse_batch(users[:500], items[:500])
    kjt2 = ctx2.sparse_batch(users[:500], items[:500])
    assert kjt1.values().tolist() == kjt2.values().tolist()


def test_negatives_are_never_positives_of_their_user(
    selection_context: RankerContext, splits: Splits, selection_vectors: RetrievalVectors
) -> None:
    _, sel = splits
    ctx = selection_context
    cands = _candidates(ctx, selection_vectors)
    cfg = replace(ctx.config, hard_negatives=10, easy_negatives_per_positive=2.0)
    ex = build_ranker_examples(
        sel.test, ctx, cands, selection_vectors.queries, selection_vectors.items, cfg
    )
    n_items = ctx.n_items
    keys = ex.users * n_items + ex.items
    u = pd.Index(ctx.user_ids).get_indexer(sel.test[USER])
    i = pd.Index(ctx.item_ids).get_indexer(sel.test[ITEM])
    held = u * n_items + i
    neg = ex.labels == 0
    assert not np.isin(keys[neg], held).any()
    assert not np.isin(keys[neg], ctx.seen.keys()).any()
    assert len(np.unique(keys)) == len(keys)  # no pair twice
    assert (ex.items >= 0).all()
    # ratios: at most 10 hard negatives per user, about 2 easy negatives per positive
    hard = neg & (ex.kind == CANDIDATE)
    assert np.bincount(ex.users[hard]).max() == 10
    easy = (ex.kind == EASY_NEGATIVE).sum()
    assert abs(easy - 2 * len(sel.test)) < 0.02 * len(sel.test)
    cand_keys = (cands.users[:, None] * n_items + cands.items)[cands.valid]
    assert not np.isin(keys[ex.kind == EASY_NEGATIVE], cand_keys).any()
    # missed positives are exactly the held-out items outside the candidate lists
    missed = keys[ex.kind == MISSED_POSITIVE]
    assert not np.isin(missed, cand_keys).any()
    assert (ex.labels[ex.kind == MISSED_POSITIVE] == 1).all()
    assert np.isin(held, np.r_[missed, keys[(ex.kind == CANDIDATE) & (ex.labels == 1)]]).all()


def test_rating_labels_mark_low_ratings_negative(
    selection_context: RankerContext, splits: Splits, selection_vectors: RetrievalVectors
) -> None:
    _, sel = splits
    ctx = selection_context
    cfg = replace(ctx.config, label="rating", rating_threshold=4.0)
    ex = build_ranker_examples(
        sel.test,
        ctx,
        _candidates(ctx, selection_vectors),
        selection_vectors.queries,
        selection_vectors.items,
        cfg,
    )
    rating = sel.test.set_index([USER, ITEM])["rating"]
    held = ex.kind != EASY_NEGATIVE
    keys = pd.MultiIndex.from_arrays([ctx.user_ids[ex.users], ctx.item_ids[ex.items]])
    in_test = keys.isin(rating.index) & held
    expected = rating.reindex(keys[in_test]).to_numpy() >= 4.0
    np.testing.assert_array_equal(ex.labels[in_test] == 1, expected)
    assert ex.labels.sum() == (sel.test["rating"] >= 4).sum()


def test_window_counts_match_a_direct_count(
    selection_context: RankerContext, splits: Splits
) -> None:
    _, sel = splits
    ctx = selection_context
    rng = np.random.default_rng(1)
    users = rng.integers(0, ctx.n_users, 40)
    items = rng.integers(0, ctx.n_items, 40)
    raw = ctx.raw_features(users, items, np.zeros(40, np.float32), np.zeros(40, np.int64))
    t = sel.train[TIMESTAMP].map(pd.Timestamp.timestamp).to_numpy()
    u = pd.Index(ctx.user_ids).get_indexer(sel.train[USER])
    i = pd.Index(ctx.item_ids).get_indexer(sel.train[ITEM])
    for j in range(40):
        req = ctx.request_time[users[j]]
        for d in (1, 7, 30):
            window = (t > req - d * SECONDS_PER_DAY) & (t <= req)
            assert raw[f"user_count_{d}d"][j] == pytest.approx(
                np.log1p(((u == users[j]) & window).sum())
            )
            assert raw[f"item_count_{d}d"][j] == pytest.approx(
                np.log1p(((i == items[j]) & window).sum())
            )
        assert raw["item_log_count"][j] == pytest.approx(np.log1p((i == items[j]).sum()))
    # a user's last training interaction is the request time
    last = pd.Series(t).groupby(u).max()
    np.testing.assert_allclose(ctx.request_time[last.index], last.to_numpy())


def test_affinities_equal_their_definition(selection_context: RankerContext) -> None:
    ctx = selection_context
    users, items = np.array([0, 5, 5, 900]), np.array([10, 0, 200, 1500])
    seen = ctx.seen.to_dense().astype(np.float64)
    for name in ("knn", "ease"):
        expected = (seen[users] * ctx.item_item[name][:, items].T).sum(axis=1)
        np.testing.assert_allclose(ctx.affinity(name, users, items), expected, rtol=1e-4)
    # EASE: an item never explains itself
    assert np.all(np.diag(ctx.item_item["ease"]) == 0)


def test_dense_features_scaler_and_batches(
    selection_context: RankerContext, selection_vectors: RetrievalVectors
) -> None:
    ctx = selection_context
    cands = _candidates(ctx, selection_vectors, n=20)
    users, items, scores, ranks = cands.pairs()
    x = dense_matrix(ctx, users, items, scores, ranks)
    assert x.shape == (len(users), len(ctx.dense_names)) and np.isfinite(x).all()
    z = x[:, ctx.dense_names.index("retrieval_score_z")]
    per_user = pd.Series(z).groupby(users)
    np.testing.assert_allclose(per_user.mean().to_numpy(), 0.0, atol=1e-5)
    scaler = DenseScaler.fit(x, ctx.dense_names)
    scaled = scaler.transform(x)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-4)
    again = DenseScaler.from_dict(scaler.to_dict()).transform(x)
    np.testing.assert_allclose(again, scaled)
    batches = RankerBatches(ctx, users, items, scaled, None, batch_size=256, shuffle=True)
    first = next(iter(batches))
    assert first.dense_features.shape == (256, len(ctx.dense_names))
    assert first.sparse_features.keys() == ctx.sparse_names
    assert len(batches) == -(-len(users) // 256)


# -- served equals offline: one implementation of the dense features --------------------


@pytest.fixture(scope="module")
def parity_context(splits: Splits, schema: FeatureSchema) -> RankerContext:
    """The selection split's context with three users stripped of their training rows
    and four more items without a release date (ML-100K has one)."""
    _, sel = splits
    assert sel.vocabs is not None
    cold = sel.users[USER].to_numpy()[[3, 100, 500]]
    stripped = replace(sel, train=sel.train[~sel.train[USER].isin(cold)])
    ctx = RankerContext.from_processed(
        stripped, schema, sel.vocabs, RankerDataConfig(num_candidates=N)
    )
    release = ctx.release_time.copy()
    release[[0, 49, 99, 180]] = np.nan  # popular items: in many candidate lists
    return replace(ctx, release_time=release)


def _served(ctx: RankerContext, scaler: DenseScaler, cache: bool) -> RankerFeatures:
    """``RankerFeatures`` as the bundle builder makes them (``ranker_features``)."""
    encoded = {
        k: (ctx.users_encoded if k in ctx.user_keys else ctx.items_encoded).sparse[k]
        for k in ctx.sparse_names
    }
    max_len = {k: max(int(np.diff(j.offsets).max(initial=0)), 1) for k, j in encoded.items()}
    entry = SimpleNamespace(  # a per-pair ranker's manifest entry
        feature_order=list(ctx.sparse_names),
        max_len=max_len,
        seq_len=max(max_len.values()),
        list_ids_input=None,
        list_seq_len=0,
    )
    recommender = SimpleNamespace(ranker=SimpleNamespace(scaler=scaler), context=ctx)
    features = ranker_features(recommender, entry)  # type: ignore[arg-type]
    return features if cache else replace(features, affinity_cache_entries=0)


@pytest.mark.parametrize("cache", [True, False], ids=["affinity-table", "affinity-gather"])
def test_served_dense_features_equal_the_offline_ones(
    parity_context: RankerContext, selection_vectors: RetrievalVectors, cache: bool
) -> None:
    ctx = parity_context
    cold = np.flatnonzero(np.diff(ctx.seen.indptr) == 0)
    assert len(cold) == 3
    unknown = np.flatnonzero(np.isnan(ctx.release_time))
    assert len(unknown) >= 5
    rng = np.random.default_rng(4)
    chosen = np.r_[cold, rng.choice(np.setdiff1d(np.arange(ctx.n_users), cold), 17, False)]
    cands = _candidates(ctx, selection_vectors)
    keep = np.isin(cands.users, chosen)
    users, items, scores, ranks = Candidates(
        cands.users[keep], cands.items[keep], cands.scores[keep]
    ).pairs()
    # each list also holds un-retrieved rows (rank N), among them an unknown-age item
    extra_u = np.repeat(chosen, 3)
    extra_i = np.stack(
        [rng.integers(0, ctx.n_items, len(chosen)) for _ in range(2)]
        + [rng.choice(unknown, len(chosen))],
        axis=1,
    ).reshape(-1)
    users, items = np.r_[users, extra_u], np.r_[items, extra_i]
    scores = np.r_[scores, rng.normal(size=len(extra_u)).astype(np.float32)]
    ranks = np.r_[ranks, np.full(len(extra_u), N)]
    lists = np.searchsorted(np.sort(chosen), users)
    assert np.isnan(ctx.release_time[items]).sum() > len(chosen)

    # offline: one call per user (its unknown ages take the median of its own rows)
    offline = np.zeros((len(users), len(ctx.dense_names)), dtype=np.float32)
    raw_offline: dict[str, np.ndarray] = {}
    for user in chosen:
        rows = np.flatnonzero(users == user)
        offline[rows] = dense_matrix(ctx, users[rows], items[rows], scores[rows], ranks[rows])
        for name, v in ctx.raw_features(
            users[rows], items[rows], scores[rows], ranks[rows]
        ).items():
            raw_offline.setdefault(name, np.zeros(len(users)))[rows] = v
    scaler = DenseScaler.fit(offline, ctx.dense_names)
    features = _served(ctx, scaler, cache)
    assert bool(features._dense.affinity_cache) == cache
    served = features.dense(users, items, scores, ranks, lists, len(chosen))
    # float32 sums of the affinities in another order: ~1e-7 relative, 1e-5 after z-scores
    np.testing.assert_allclose(served, scaler.transform(offline), rtol=1e-5, atol=1e-5)
    raw_served = features.raw_features(users, items, scores, ranks, lists)
    assert set(raw_served) == set(raw_offline)
    for name, v in raw_served.items():
        np.testing.assert_allclose(v, raw_offline[name], rtol=1e-5, atol=1e-5, err_msg=name)
    # the cold users: zero activity and affinity, request time = the end of training;
    # served as -1 (a profile-only user) they get the very same features
    is_cold = np.isin(users, cold)
    for name in ("user_count_1d", "user_log_count", "affinity_knn", "affinity_ease"):
        assert (raw_served[name][is_cold] == 0).all(), name
    as_new = features.dense(np.where(is_cold, -1, users), items, scores, ranks, lists, len(chosen))
    np.testing.assert_array_equal(as_new, served)

    # offline in one call: the only difference is the unknown-age fill (the median over
    # every row of the call instead of over the user's list)
    batch = dense_matrix(ctx, users, items, scores, ranks)
    age_col = ctx.dense_names.index("item_age_years")
    nan_rows = np.isnan(ctx.release_time[items])
    other = np.ones(batch.shape, dtype=bool)
    other[nan_rows, age_col] = False
    np.testing.assert_allclose(scaler.transform(batch)[other], served[other], rtol=1e-5, atol=1e-5)
    known_age = ctx.item_age_years(items, users)[~nan_rows]
    np.testing.assert_allclose(batch[nan_rows, age_col], np.median(known_age), rtol=1e-6)


def test_offline_zscores_use_the_list_rows_only(
    parity_context: RankerContext, selection_vectors: RetrievalVectors
) -> None:
    """``list_mask``: each user's z-score statistics come from its candidate rows and
    apply to its other rows too; every other column ignores the mask."""
    ctx = parity_context
    cands = _candidates(ctx, selection_vectors, n=20)
    users, items, scores, ranks = cands.pairs()
    rng = np.random.default_rng(5)
    users = np.r_[users, np.arange(ctx.n_users)]
    items = np.r_[items, rng.integers(0, ctx.n_items, ctx.n_users)]
    scores = np.r_[scores, rng.normal(size=ctx.n_users).astype(np.float32)]
    ranks = np.r_[ranks, np.full(ctx.n_users, 20)]
    mask = np.arange(len(users)) < len(users) - ctx.n_users
    x = dense_matrix(ctx, users, items, scores, ranks, list_mask=mask)
    plain = dense_matrix(ctx, users, items, scores, ranks)
    raw = ctx.raw_features(users, items, scores, ranks)
    sources = ("retrieval_score", "affinity_knn", "affinity_ease")
    for name in sources:
        candidates = pd.Series(raw[name][mask]).groupby(users[mask])
        mean = candidates.mean().reindex(users).to_numpy()
        std = candidates.std(ddof=0).reindex(users).to_numpy()
        want = (raw[name] - mean) / np.where(std > 1e-9, std, 1.0)
        col = ctx.dense_names.index(f"{name}_z")
        np.testing.assert_allclose(x[:, col], want, rtol=1e-5, atol=1e-5, err_msg=name)
    z_cols = [ctx.dense_names.index(f"{n}_z") for n in sources]
    same = np.setdiff1d(np.arange(x.shape[1]), z_cols)
    np.testing.assert_array_equal(x[:, same], plain[:, same])
    assert not np.allclose(x[~mask][:, z_cols], plain[~mask][:, z_cols])
