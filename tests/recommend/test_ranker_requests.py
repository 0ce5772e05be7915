"""Ranker examples grouped into requests, request features and per-request metrics,
on real MovieLens-100K (timestamps, no device) and a small synthetic log (devices)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.frame import ITEM, TIMESTAMP, USER
from recsys.data.splits import stratified_split
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.features.build import build_features
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.index import IndexConfig, ItemIndex
from recsys.recommend.ranker_data import (
    CANDIDATE,
    MISSED_POSITIVE,
    RankerBatches,
    RankerContext,
    RankerDataConfig,
    build_ranker_examples,
    held_out_requests,
    per_request_metrics,
    request_lists,
    retrieve_candidates,
)
from recsys.recommend.two_stage import RetrievalVectors
from recsys.runtime.request_features import encode_requests

Splits = tuple[ProcessedDataset, ProcessedDataset]
N = 40
CTX = ("ctx_hour", "ctx_weekday", "ctx_daypart", "ctx_device")


def _context(splits: Splits, schema: FeatureSchema, **kw: object) -> RankerContext:
    _, sel = splits
    assert sel.vocabs is not None
    return RankerContext.from_processed(
        sel,
        schema,
        sel.vocabs,
        RankerDataConfig(num_candidates=N, **kw),  # type: ignore[arg-type]
    )


def _candidates(ctx: RankerContext, vectors: RetrievalVectors):  # type: ignore[no-untyped-def]
    index = ItemIndex(IndexConfig(kind="flat", device="cpu", num_threads=1)).build(
        vectors.items, np.arange(ctx.n_items)
    )
    return retrieve_candidates(index, vectors.queries, np.arange(ctx.n_users), N, exclude=ctx.seen)


def test_requests_are_runs_of_a_users_held_out_interactions(
    splits: Splits, schema: FeatureSchema
) -> None:
    _, sel = splits
    ctx = _context(splits, schema)
    hu, hi, _, hr, requests = held_out_requests(sel.test, ctx, ctx.config)
    assert len(requests) > len(np.unique(hu))  # users come back in several sessions
    np.testing.assert_array_equal(requests.user[hr], hu)
    # each request's time is its first interaction's; its rows lie within gaps of 30 min
    times = pd.Series(
        sel.test[TIMESTAMP].astype("int64").to_numpy() / 1e9,
        index=pd.MultiIndex.from_arrays(
            [pd.Index(ctx.user_ids).get_indexer(sel.test[USER]),
             pd.Index(ctx.item_ids).get_indexer(sel.test[ITEM])]
        ),
    )  # fmt: skip
    t = times.groupby(level=[0, 1]).last().reindex(pd.MultiIndex.from_arrays([hu, hi])).to_numpy()
    assert (t >= requests.time[hr]).all()
    frame = pd.DataFrame({"r": hr, "t": t}).sort_values(["r", "t"])
    gaps = frame.groupby("r")["t"].diff().dropna()
    assert (gaps <= 30 * 60).all()
    # requests of a user are ordered in time and more than 30 min apart
    same_user = requests.user[1:] == requests.user[:-1]
    assert (np.diff(requests.time)[same_user] > 0).all()
    assert all(d is None for d in requests.device)


def test_examples_do_not_change_with_requests_and_carry_their_own(
    splits: Splits, schema: FeatureSchema, selection_vectors: RetrievalVectors
) -> None:
    _, sel = splits
    plain = _context(splits, schema)
    ctx = _context(splits, schema, request_features=CTX)
    cands = _candidates(plain, selection_vectors)
    q, i = selection_vectors.queries, selection_vectors.items
    a = build_ranker_examples(sel.test, plain, cands, q, i, plain.config)
    b = build_ranker_examples(sel.test, ctx, cands, q, i, ctx.config)
    for name in ("users", "items", "labels", "kind", "request"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert b.request is not None and b.requests is not None
    np.testing.assert_array_equal(b.requests.user[b.request], b.users)
    # a held-out positive is in its own interaction's request
    hu, hi, _, hr, _ = held_out_requests(sel.test, ctx, ctx.config)
    own = pd.Series(hr, index=hu * ctx.n_items + hi)
    pos = (b.labels > 0) & np.isin(b.kind, [CANDIDATE, MISSED_POSITIVE])
    key = b.users[pos] * ctx.n_items + b.items[pos]
    np.testing.assert_array_equal(b.request[pos], own.reindex(key).to_numpy())
    # the request features come from the request's time; the KJT carries them
    ids = b.request_ids(ctx)
    assert ids is not None and ids.shape == (len(b), len(CTX), 1)
    direct = encode_requests(ctx.request_specs, request_time_s=b.requests.time).ids
    np.testing.assert_array_equal(ids, direct[b.request])
    assert (ids[:, 3, 0] == 0).all()  # ML-100K has no device: the unknown bucket
    assert (ids[:, 0, 0] > 0).all()  # every request has a time
    kjt = ctx.sparse_batch(b.users[:64], b.items[:64], ids[:64])
    assert kjt.keys()[-len(CTX) :] == list(CTX)
    np.testing.assert_array_equal(kjt["ctx_hour"].values().numpy(), ids[:64, 0, 0])
    # dropout encodes a seeded share of the requests as unknown
    dropped = b.request_ids(ctx, dropout=0.5, seed=3)
    assert dropped is not None
    unknown = dropped[:, 0, 0] == 0
    assert 0.3 < unknown.mean() < 0.7
    np.testing.assert_array_equal(dropped[~unknown], ids[~unknown])
    batch = next(iter(RankerBatches(ctx, b.users, b.items, np.zeros((len(b), 3), np.float32),
                                    b.labels, 128, request_ids=ids)))  # fmt: skip
    assert "ctx_weekday" in batch.sparse_features.keys()  # noqa: SIM118 (a KJT)
    with pytest.raises(ValueError, match="request ids must be"):
        ctx.sparse_batch(b.users[:4], b.items[:4], ids[:3])


def test_request_lists_hold_each_requests_own_positives(
    splits: Splits, schema: FeatureSchema, selection_vectors: RetrievalVectors
) -> None:
    _, sel = splits
    ctx = _context(splits, schema, request_features=CTX)
    cands = _candidates(ctx, selection_vectors)
    lists = request_lists(sel.test, ctx, cands, ctx.config)
    assert lists.request is not None and lists.requests is not None
    hu, hi, _, hr, requests = held_out_requests(sel.test, ctx, ctx.config)
    held = pd.Series(hr, index=hu * ctx.n_items + hi)
    key = lists.users * ctx.n_items + lists.items
    owner = held.reindex(key).fillna(-1).to_numpy(np.int64)
    # a row holding a held-out item is in that item's request only, and is its positive
    assert ((owner < 0) | (owner == lists.request)).all()
    np.testing.assert_array_equal(lists.labels > 0, owner >= 0)
    # every request gets every non-held-out candidate of its user
    for r in np.unique(lists.request)[:20]:
        user = requests.user[r]
        mine = lists.items[lists.request == r]
        row = cands.items[np.flatnonzero(cands.users == user)[0]]
        others = set(hi[(hu == user) & (hr != r)].tolist())
        assert set(mine.tolist()) == set(row[row >= 0].tolist()) - others


def test_per_request_ndcg_equals_a_direct_computation() -> None:
    rng = np.random.default_rng(4)
    request = rng.integers(0, 30, 900)
    labels = (rng.random(900) < 0.1).astype(np.float32)
    scores = rng.normal(size=900).astype(np.float32)
    got = per_request_metrics(labels, scores, request, k=10)
    values, hits = [], []
    for r in np.unique(request):
        mine = np.flatnonzero(request == r)
        lab = labels[mine][np.argsort(-scores[mine], kind="stable")]
        if lab.sum() == 0:
            continue
        dcg = float((lab[:10] / np.log2(np.arange(2, 2 + len(lab[:10])))).sum())
        ideal = float((1 / np.log2(np.arange(2, 2 + min(int(lab.sum()), 10)))).sum())
        values.append(dcg / ideal)
        hits.append(lab[:10].sum() > 0)
    assert got["requests"] == len(values)
    assert got["ndcg@10"] == pytest.approx(np.mean(values))
    assert got["hit@10"] == pytest.approx(np.mean(hits))


def test_synthetic_sessions_become_requests_with_their_device() -> None:
    data = generate(SyntheticConfig(n_users=150, n_items=80, seed=2, context_taste=1.0))
    views = data.interactions[data.interactions["event_type"] == "view"]
    views = views.drop_duplicates([USER, ITEM]).reset_index(drop=True)
    schema = FeatureSchema.from_yaml(
        __import__("pathlib").Path(__file__).resolve().parents[2]
        / "configs/schema/interactions.yaml"
    )
    train, test = stratified_split(views, 0.75, "item", 0)
    ds = build_features(data, (train, test), schema)
    assert ds.vocabs is not None
    cfg = RankerDataConfig(num_candidates=20, request_features=CTX)
    ctx = RankerContext.from_processed(ds, schema, ds.vocabs, cfg)
    *_, requests = held_out_requests(ds.test, ctx, cfg)
    # one request per (user, session), with the session's device
    sessions = ds.test.drop_duplicates([USER, "session_id"])
    assert len(requests) == len(sessions)
    assert set(requests.device.tolist()) <= {"mobile", "desktop", "tablet"}
    ids = ctx.request_ids(requests)
    assert (ids[:, 3, 0] > 0).all()  # every synthetic request knows its device


def test_segments_at_the_cut_off_are_a_multi_hot_request_feature(
    splits: Splits, schema: FeatureSchema
) -> None:
    from pathlib import Path

    from recsys.segments.engine import SegmentEngine
    from recsys.segments.offline import memberships_at

    _, sel = splits
    assert sel.vocabs is not None
    rules = Path(__file__).resolve().parents[2] / "configs/ranker/segments/movielens.yaml"
    segments = memberships_at(sel.train, SegmentEngine.from_yaml(rules), default_type="rating")
    names = sorted(SegmentEngine.from_yaml(rules).segments)
    cfg = RankerDataConfig(num_candidates=N, request_features=("ctx_hour", "user_segments"))
    ctx = RankerContext.from_processed(sel, schema, sel.vocabs, cfg, segments, names)
    assert ctx.segment_vocab == {n: k + 1 for k, n in enumerate(names)}
    assert ctx.num_embeddings["user_segments"] == 1 + len(names)
    users = np.arange(ctx.n_users)
    ids = ctx.unknown_request_ids(users)
    for u in users[:200]:
        want = sorted(ctx.segment_vocab[s] for s in segments[str(ctx.user_ids[u])])
        assert sorted(ids[u, 1][ids[u, 1] >= 0].tolist()) == want
    assert (ids[:, 0, 0] == 0).all()  # no request: the unknown hour
    assert (ids[:, 1] >= 0).any(axis=1).mean() > 0.5  # most users are in a segment
    kjt = ctx.sparse_batch(users[:50], np.zeros(50, dtype=np.int64))
    assert kjt["user_segments"].lengths().sum() == (ids[:50, 1] >= 0).sum()
    with pytest.raises(ValueError, match="memberships_at"):
        RankerContext.from_processed(sel, schema, sel.vocabs, cfg)


def test_dense_time_request_takes_the_examples_request_times(
    splits: Splits, schema: FeatureSchema, selection_vectors: RetrievalVectors
) -> None:
    from recsys.recommend.ranker_data import dense_matrix

    _, sel = splits
    plain = _context(splits, schema)
    timed = _context(splits, schema, dense_time="request")
    cands = _candidates(plain, selection_vectors)
    q, i = selection_vectors.queries, selection_vectors.items
    ex = build_ranker_examples(sel.test, timed, cands, q, i, timed.config)
    when = ex.request_time()
    assert when is not None and np.isfinite(when).all()
    args = (ex.users, ex.items, ex.retrieval_score, ex.retrieval_rank)
    at_training = dense_matrix(plain, *args, request_time=when)  # ignored: dense_time training
    np.testing.assert_array_equal(at_training, dense_matrix(plain, *args))
    at_request = dense_matrix(timed, *args, request_time=when)
    want = timed.dense_features().unscaled(
        *args,
        list_ids=ex.users,
        n_lists=timed.n_users,
        request_time=when,
        affinity_method="matmul",
    )
    np.testing.assert_array_equal(at_request, want)
    col = {n: j for j, n in enumerate(timed.dense_names)}
    # an item's age moves by the time between the request and the user's training time
    known = np.isfinite(timed.release_time[ex.items])
    shift = (when - timed.request_time[ex.users]) / (365.25 * 86_400.0)
    age = col["item_age_years"]
    np.testing.assert_allclose(
        (at_request[:, age] - at_training[:, age])[known], shift[known], atol=1e-4
    )
    assert not np.allclose(
        at_request[:, col["user_count_7d"]], at_training[:, col["user_count_7d"]]
    )
