"""The ranker with and without request features, trained and evaluated in one run.

For each seed: one data set, one split, one retrieval (a truncated SVD of the
training matrix: deterministic, milliseconds), one set of ranker examples
(:func:`recsys.recommend.ranker_data.build_ranker_examples`); then one DLRM ranker per
variant, differing only in ``request_features`` (every other setting is
``configs/ranker/dlrm.yaml``'s, with fewer epochs). Each variant is scored on the
validation users of the model-selection split (early stopping's users) and on the
test split, per request (:func:`~recsys.recommend.ranker_data.request_lists`: a list =
one held-out request with the user's retrieval candidates): AUC over the lists' rows
and NDCG@10 per request.

Data sets:

* ``synthetic``: :func:`recsys.data.synthetic.generate` with ``context_taste`` (item
  choice depends on the session's device and part of the day); the views, one per
  (user, item), are the interactions; sessions are the requests.
Every variant's data also carries each user's segments at the end of its training rows
(``configs/ranker/segments/``, computed by
:func:`recsys.segments.offline.memberships_at`); the ``user_segments`` variants feed them.

* ``ml100k``: MovieLens-100K (``RECSYS_DATA_DIR``); no device, so only the
  timestamp's features (hour, weekday, part of the day, UTC); requests are runs of a
  user's held-out ratings at most 30 minutes apart.

Usage::

    .venv/bin/python benchmarks/ranker_context_ablation.py --dataset synthetic --seeds 0 1 2
    .venv/bin/python benchmarks/ranker_context_ablation.py --dataset ml100k --seeds 0 1 2

Prints a markdown table (mean and spread over seeds per variant) and writes JSON to
``results/ranker_context_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from recsys.data.frame import ITEM, USER, InteractionData
from recsys.data.splits import stratified_split
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.eval.classification import auc
from recsys.eval.metrics import UserItemCSR
from recsys.features.build import build_features
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.recommend.ranker_data import (
    Candidates,
    RankerContext,
    RankerDataConfig,
    build_ranker_examples,
    per_request_metrics,
    request_lists,
)
from recsys.recommend.two_stage import (
    TrainedRanker,
    ranker_config_from_dict,
    train_two_stage_ranker,
)
from recsys.segments.engine import SegmentEngine
from recsys.segments.offline import memberships_at
from recsys.training.ranker_trainer import RankerTrainerConfig

REPO = Path(__file__).resolve().parents[1]

CTX = ("ctx_hour", "ctx_daypart", "ctx_device")
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "synthetic": {
        "no context": {},
        "context (hour, daypart, device)": {"request_features": CTX},
        "+ segments": {"request_features": ("user_segments",)},
        "context + segments": {"request_features": (*CTX, "user_segments")},
        "context + request-time windows": {"request_features": CTX, "dense_time": "request"},
    },
    "ml100k": {
        "no context": {},
        "+ ctx_hour": {"request_features": ("ctx_hour",)},
        "+ ctx_weekday": {"request_features": ("ctx_weekday",)},
        "+ ctx_daypart": {"request_features": ("ctx_daypart",)},
        "+ hour, weekday, daypart": {
            "request_features": ("ctx_hour", "ctx_weekday", "ctx_daypart")
        },
        "+ user_segments": {"request_features": ("user_segments",)},
        "+ request-time windows": {"dense_time": "request"},
    },
}
"""Per data set: variant -> the ``ranker.data`` settings it changes."""
SEGMENTS = {"synthetic": "synthetic.yaml", "ml100k": "movielens.yaml"}
"""Segment rules of each data set (``configs/ranker/segments/``)."""
EVENT_TYPE = {"synthetic": "page_view", "ml100k": "rating"}


def svd_vectors(dataset: ProcessedDataset, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Query and item vectors from a randomized truncated SVD of the training matrix."""
    u = pd.Index(dataset.users[USER]).get_indexer(dataset.train[USER])
    i = pd.Index(dataset.items[ITEM]).get_indexer(dataset.train[ITEM])
    matrix = np.zeros((len(dataset.users), len(dataset.items)), dtype=np.float32)
    matrix[u, i] = 1.0
    rng = np.random.default_rng(seed)
    basis = matrix @ rng.standard_normal((matrix.shape[1], rank + 10)).astype(np.float32)
    for _ in range(2):
        basis, _ = np.linalg.qr(basis)
        basis = matrix @ (matrix.T @ basis)
    basis, _ = np.linalg.qr(basis)
    left, sing, right = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    users = (basis @ left)[:, :rank] * sing[:rank]
    return users.astype(np.float32), np.ascontiguousarray(right[:rank].T, np.float32)


def top_candidates(queries: np.ndarray, items: np.ndarray, seen: UserItemCSR, n: int) -> Candidates:
    """Exact top-``n`` by inner product per user, training items excluded."""
    scores = queries @ items.T
    for u in range(len(queries)):
        own = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
        scores[u, own[own >= 0]] = -np.inf
    n = min(n, items.shape[0])
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    part = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    best = np.take_along_axis(scores, top, axis=1).astype(np.float32)
    top = np.where(np.isfinite(best), top, -1)
    return Candidates(np.arange(len(queries), dtype=np.int64), top.astype(np.int64), best)


def load_data(dataset: str, seed: int, n_users: int, taste: float) -> tuple[InteractionData, str]:
    if dataset == "synthetic":
        data = generate(
            SyntheticConfig(n_users=n_users, n_items=400, seed=seed, context_taste=taste)
        )
        views = data.interactions[data.interactions["event_type"] == "view"]
        views = views.drop_duplicates([USER, ITEM], keep="first").reset_index(drop=True)
        return replace(data, interactions=views), "interactions"
    from recsys.data.movielens import load_ml100k

    root = Path(os.environ.get("RECSYS_DATA_DIR", "/work/shared/datasets")) / "ml-100k"
    return load_ml100k(root), "ml100k"


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    data, schema_name = load_data(args.dataset, seed, args.users, args.context_taste)
    raw_schema = yaml.safe_load((REPO / "configs" / "schema" / f"{schema_name}.yaml").read_text())
    if args.dataset == "synthetic":
        # the generator's items have a category, which its context tastes shift
        raw_schema["features"].append(
            {
                "name": "item_category",
                "kind": "categorical",
                "role": "item",
                "source": "category",
                "vocab": {"policy": "id_map"},
            }
        )
    schema = FeatureSchema.from_dict(raw_schema)
    split_seed = 42 if args.dataset == "ml100k" else seed
    train, test = stratified_split(data.interactions, 0.75, "item", split_seed)
    fit_rows, held = stratified_split(train, args.selection_ratio, "item", split_seed + 7)
    main = build_features(data, (train, test), schema)
    selection = build_features(data, (fit_rows, held), schema)
    assert selection.vocabs is not None
    ranker_yaml = yaml.safe_load((REPO / "configs" / "ranker" / "dlrm.yaml").read_text())
    trainer_raw = {**ranker_yaml["trainer"], "epochs": args.epochs, "progress": False}
    trainer_raw["seed"] = seed
    trainer = RankerTrainerConfig(**trainer_raw)
    model_cfg, pooling = ranker_config_from_dict(ranker_yaml["model"], seed)
    base = {
        **ranker_yaml["data"],
        "num_candidates": args.candidates,
        "hard_negatives": args.hard_negatives,
        "seed": seed,
    }
    # each user's segments at the end of each split's training rows, by the online rules
    rules = REPO / "configs" / "ranker" / "segments" / SEGMENTS[args.dataset]
    sel_segments = memberships_at(
        selection.train, SegmentEngine.from_yaml(rules), default_type=EVENT_TYPE[args.dataset]
    )
    main_segments = memberships_at(
        main.train, SegmentEngine.from_yaml(rules), default_type=EVENT_TYPE[args.dataset]
    )
    names = sorted(SegmentEngine.from_yaml(rules).segments)
    sel_q, sel_i = svd_vectors(selection, args.rank, seed)
    main_q, main_i = svd_vectors(main, args.rank, seed)
    rows = []
    for name, changes in VARIANTS[args.dataset].items():
        torch.manual_seed(seed)
        features = list(changes.get("request_features", ()))
        cfg = RankerDataConfig.from_dict({**base, **changes, "request_features": features})
        t0 = time.perf_counter()
        sel_ctx = RankerContext.from_processed(
            selection, schema, selection.vocabs, cfg, sel_segments, names
        )
        cands = top_candidates(sel_q, sel_i, sel_ctx.seen, args.candidates)
        examples = build_ranker_examples(selection.test, sel_ctx, cands, sel_q, sel_i, cfg)
        fit = train_two_stage_ranker(sel_ctx, examples, schema, model_cfg, trainer, pooling)
        valid_users = sel_ctx.user_ids[fit.valid_users]
        valid_held = selection.test[selection.test[USER].isin(valid_users)]
        valid = score(fit.ranker, sel_ctx, valid_held, cands, cfg)
        main_ctx = RankerContext.from_processed(
            main, schema, selection.vocabs, cfg, main_segments, names
        )
        main_cands = top_candidates(main_q, main_i, main_ctx.seen, args.candidates)
        tested = score(fit.ranker, main_ctx, main.test, main_cands, cfg)
        rows.append(
            {
                "seed": seed,
                "variant": name,
                "request_features": features,
                "dense_time": cfg.dense_time,
                "valid": valid,
                "test": tested,
                "best_epoch": fit.valid_metrics.get("best_epoch"),
                "examples": examples.summary(),
                "requests": None if examples.requests is None else examples.requests.summary(),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"seed {seed} {name:34s} valid AUC {valid['auc']:.4f} NDCG@10 {valid['ndcg@10']:.4f}"
            f" | test AUC {tested['auc']:.4f} NDCG@10 {tested['ndcg@10']:.4f}",
            flush=True,
        )
    return rows


def score(
    ranker: TrainedRanker,
    ctx: RankerContext,
    held_out: pd.DataFrame,
    cands: Candidates,
    cfg: RankerDataConfig,
) -> dict[str, float]:
    """AUC and per-request NDCG@10 of the ranker over the held-out requests' lists."""
    lists = request_lists(held_out, ctx, cands, cfg)
    logits = ranker.logits(
        ctx,
        lists.users,
        lists.items,
        lists.retrieval_score,
        lists.retrieval_rank,
        request_ids=lists.request_ids(ctx),
        request_time=lists.request_time(),
    )
    assert lists.request is not None
    out = per_request_metrics(lists.labels, logits, lists.request, k=10)
    out["auc"] = auc(lists.labels, logits)
    out["rows"] = float(len(lists))
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | valid AUC | valid NDCG@10 | test AUC | test NDCG@10 | seeds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]

        def cell(split: str, key: str, mine: list[dict[str, Any]] = mine) -> str:
            v = np.array([r[split][key] for r in mine])
            return f"{v.mean():.4f} ({v.min():.4f}-{v.max():.4f})"

        lines.append(
            f"| {name} | {cell('valid', 'auc')} | {cell('valid', 'ndcg@10')} | "
            f"{cell('test', 'auc')} | {cell('test', 'ndcg@10')} | {len(mine)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(VARIANTS), default="synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=2000, help="synthetic users")
    parser.add_argument("--context-taste", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--selection-ratio",
        type=float,
        default=0.7,
        help="share of train the ranker's features come from (the rest: its examples)",
    )
    parser.add_argument("--hard-negatives", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rank", type=int, default=32, help="SVD retrieval rank")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        rows += run_seed(args, seed)
    command = " ".join(["benchmarks/ranker_context_ablation.py", *sys.argv[1:]])
    print()
    print(f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs)")
    print()
    print(table(rows))
    out = args.out or REPO / "results" / f"ranker_context_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args) | {"out": str(out)}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
