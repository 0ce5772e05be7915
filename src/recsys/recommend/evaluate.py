"""Evaluation of the two-stage recommender in the common harness.

The lists come from :meth:`TwoStageRecommender.recommend_indices` and are scored
by :class:`~recsys.eval.harness.EvalHarness` exactly like every other model
(same users, same seen-item exclusion, Recommenders' metric definitions), so a
two-stage row and a two-tower row of one results table are comparable. Next to
accuracy each variant reports intra-list diversity: mean pairwise ``1 - cosine``
of the two-tower item embeddings (centered, see
:attr:`TwoStageRecommender.diversity_vectors`; ``ild@k``) and mean pairwise Jaccard distance
of the genre sets (``genre_ild@k``).

Variants are :class:`~recsys.runtime.aggregation.AggregationConfig` s: the
retrieval order alone (:func:`retrieval_only`), retrieval + ranker, and the same
with MMR; :func:`tune_aggregation` picks score weights on the ranker's
validation users (never on test).

Example:
    >>> results = evaluate_variants(recommender, harness, {
    ...     "retrieval": retrieval_only(cfg), "two-stage": cfg})  # doctest: +SKIP
    >>> results["two-stage"][0].metrics["ndcg@10"]  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pandas as pd
from torch import nn

from recsys.data.frame import USER
from recsys.eval.classification import auc
from recsys.eval.harness import EvalConfig, EvalHarness, EvalResult
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset
from recsys.recommend.ranker_data import (
    RankerContext,
    RankerDataConfig,
    build_ranker_examples,
    per_request_metrics,
    request_lists,
)
from recsys.recommend.two_stage import (
    RankedLists,
    RankerFit,
    RetrievalVectors,
    TrainedRanker,
    TwoStageRecommender,
    TwoStageSettings,
    classification_metrics,
    train_two_stage_ranker,
)
from recsys.runtime.aggregation import (
    AggregationConfig,
    genre_diversity,
    intra_list_diversity,
)


def retrieval_only(config: AggregationConfig) -> AggregationConfig:
    """``config`` ranking by the retrieval score alone (no ranker, freshness or MMR)."""
    return config.with_updates(
        ranker_weight=0.0, retrieval_weight=1.0, freshness_weight=0.0, mmr_lambda=1.0
    )


def _check_same_space(recommender: TwoStageRecommender, harness: EvalHarness) -> None:
    ctx = recommender.context
    if not (
        np.array_equal(ctx.user_ids, harness.user_ids)
        and np.array_equal(ctx.item_ids, harness.item_ids)
    ):
        raise ValueError("the recommender's and the harness's user/item index spaces differ")


def score_lists(harness: EvalHarness, lists: RankedLists) -> EvalResult:
    """Scores precomputed lists of the harness's test users through ``harness.evaluate``.

    Each listed item gets a score that falls with its rank, every other item
    ``-inf``; the harness then recovers the lists unchanged (seen items are never
    listed) and computes its metrics. The returned ``topk_scores`` are the
    lists' own (aggregated) scores.
    """
    users = harness.test_users()
    row_of = pd.Index(lists.users).get_indexer(pd.Index(users))
    if (row_of < 0).any():
        raise ValueError(f"{int((row_of < 0).sum())} test users have no list")
    k = harness.config.k
    if lists.items.shape[1] < k:
        raise ValueError(f"lists hold {lists.items.shape[1]} items, the harness scores {k}")

    def score_fn(batch: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        out = np.full((len(batch), harness.n_items), -np.inf, dtype=np.float32)
        rows = row_of[np.searchsorted(users, batch)]
        items = lists.items[rows, :k]
        r, c = np.nonzero(items >= 0)
        out[r, items[r, c]] = (k - c).astype(np.float32)
        return out

    result = harness.evaluate(score_fn)
    listed = lists.items[row_of[np.searchsorted(users, result.users)], :k]
    if not np.array_equal(np.where(result.topk_items >= 0, result.topk_items, -1), listed):
        raise AssertionError("the harness changed the lists (seen items listed?)")
    result.topk_scores = lists.scores[row_of[np.searchsorted(users, result.users)], :k]
    return result


def evaluate_variants(
    recommender: TwoStageRecommender,
    harness: EvalHarness,
    variants: Mapping[str, AggregationConfig],
    show_progress: bool = False,
) -> dict[str, tuple[EvalResult, float]]:
    """Every variant's lists for the harness's test users, scored by the harness.

    Args:
        recommender: the two-stage recommender (same index space as the harness).
        harness: the evaluation protocol.
        variants: name -> aggregation config.
        show_progress: tqdm bars.

    Returns:
        name -> ``(EvalResult, seconds)``; the metrics include ``ild@k`` and, when
        the catalogue has genres, ``genre_ild@k``.
    """
    _check_same_space(recommender, harness)
    users = harness.test_users()
    k = harness.config.k
    out: dict[str, tuple[EvalResult, float]] = {}
    for name, cfg in variants.items():
        t0 = time.perf_counter()
        lists = recommender.recommend_indices(users, k, cfg, show_progress=show_progress)
        result = score_lists(harness, lists)
        result.metrics[f"ild@{k}"] = intra_list_diversity(
            result.topk_items, recommender.diversity_vectors
        )
        if recommender.item_genres is not None:
            result.metrics[f"genre_ild@{k}"] = genre_diversity(
                result.topk_items, recommender.item_genres
            )
        out[name] = (result, time.perf_counter() - t0)
    return out


def tune_aggregation(
    recommender: TwoStageRecommender,
    harness: EvalHarness,
    base: AggregationConfig,
    grid: Mapping[str, Sequence[float]],
    metric: str = "ndcg@10",
) -> tuple[AggregationConfig, list[dict[str, float]]]:
    """Grid search of aggregation weights on a validation harness.

    Args:
        recommender: a recommender over the *validation* data (never test).
        harness: validation ground truth.
        base: the config whose fields the grid overrides.
        grid: field name -> values tried (every combination).
        metric: what is maximized.

    Returns:
        ``(best config, one row per combination with its metric)``; ties keep
        the first combination in grid order.
    """
    _check_same_space(recommender, harness)
    names = list(grid)
    best_cfg, best_value = base, -np.inf
    rows: list[dict[str, float]] = []
    users = harness.test_users()
    for values in itertools.product(*(grid[n] for n in names)):
        cfg = base.with_updates(**dict(zip(names, values, strict=True)))
        if cfg.ranker_weight == 0 and cfg.retrieval_weight == 0 and cfg.freshness_weight == 0:
            continue
        lists = recommender.recommend_indices(users, harness.config.k, cfg)
        value = score_lists(harness, lists).metrics[metric]
        rows.append({**dict(zip(names, map(float, values), strict=True)), metric: value})
        if value > best_value:
            best_cfg, best_value = cfg, value
    return best_cfg, rows


def ranker_holdout_metrics(
    recommender: TwoStageRecommender,
    held_out: pd.DataFrame,
    config: RankerDataConfig,
) -> dict[str, float]:
    """Ranker AUC, log loss, NE and GAUC on the candidate lists of held-out users.

    Examples are every retrieval candidate of each user with held-out
    interactions, labelled by those interactions: the population the ranker
    scores when serving. Held-out items the retrieval missed are counted in
    ``candidate_recall`` but not scored.

    Args:
        recommender: the recommender (its context: the training split).
        held_out: held-out interactions (e.g. the test split).
        config: label settings (``label``, ``rating_threshold``).

    Returns:
        :func:`~recsys.recommend.two_stage.classification_metrics` plus
        ``candidate_recall``, and per request (:func:`~recsys.recommend.ranker_data.
        request_lists`: one list per held-out request, with its own time, device and
        positives) ``request_ndcg@10``, ``request_auc`` and ``requests``.
    """
    if recommender.ranker is None:
        raise ValueError("the recommender has no ranker")
    ctx = recommender.context
    users = np.unique(pd.Index(ctx.user_ids).get_indexer(held_out["user_id"].to_numpy()))
    users = users[users >= 0]
    cands = recommender.candidates(users, recommender.num_candidates)
    probe = RankerDataConfig(
        **{
            **config.to_dict(),
            "hard_negatives": -1,
            "easy_negatives_per_positive": 0.0,
            "include_missed_positives": False,
        }
    )
    ex = build_ranker_examples(
        held_out, ctx, cands, recommender.query_vectors, recommender.item_vectors, probe
    )
    logits = recommender.ranker.logits(
        ctx, ex.users, ex.items, ex.retrieval_score, ex.retrieval_rank
    )
    metrics = classification_metrics(
        ex.labels, logits, ex.users, prior=recommender.ranker.train_positive_rate
    )
    n_held = len(held_out)
    metrics["candidate_recall"] = float(ex.labels.sum()) / max(n_held, 1)
    lists = request_lists(held_out, ctx, cands, probe)
    if len(lists) and 0 < lists.labels.sum() < len(lists):
        assert lists.request is not None
        scores = recommender.ranker.logits(
            ctx,
            lists.users,
            lists.items,
            lists.retrieval_score,
            lists.retrieval_rank,
            request_ids=lists.request_ids(ctx),
            request_time=lists.request_time(),
        )
        per_request = per_request_metrics(lists.labels, scores, lists.request, k=10)
        metrics["request_ndcg@10"] = per_request["ndcg@10"]
        metrics["request_auc"] = auc(lists.labels, scores)
        metrics["requests"] = per_request["requests"]
    return metrics


# -- the whole stage -----------------------------------------------------------------

RETRIEVAL = "Two-stage retrieval"
RANKED = "Two-stage ranker"
DIVERSIFIED = "Two-stage MMR"


@dataclass
class TwoStageRun:
    """What :func:`run_two_stage_experiment` produced.

    Attributes:
        results: variant name -> ``(EvalResult on test, seconds)``; the seconds
            include the shared set-up (examples, ranker training, tuning).
        recommender: the two-stage recommender over the final (test-time) split.
        fit: the ranker's training record.
        aggregation: the aggregation config after tuning.
        tuning: one row per tried weight combination (validation users).
        examples: counts of the ranker's training examples.
        ranker_metrics: ``{"valid": ..., "test": ...}`` classification metrics.
        setup_seconds: wall time of everything before the test evaluation.
    """

    results: dict[str, tuple[EvalResult, float]]
    recommender: TwoStageRecommender
    fit: RankerFit
    aggregation: AggregationConfig
    tuning: list[dict[str, float]]
    examples: dict[str, float]
    ranker_metrics: dict[str, dict[str, float]]
    setup_seconds: float


def run_two_stage_experiment(
    selection: ProcessedDataset,
    selection_vectors: RetrievalVectors,
    main: ProcessedDataset,
    main_vectors: RetrievalVectors,
    schema: FeatureSchema,
    settings: TwoStageSettings,
    eval_config: EvalConfig | None = None,
    on_epoch_end: Callable[[int, dict[str, float], nn.Module], None] | None = None,
    show_progress: bool = False,
    segments: tuple[Mapping[str, Sequence[str]], Mapping[str, Sequence[str]]] | None = None,
    segment_names: Sequence[str] | None = None,
) -> TwoStageRun:
    """Trains the ranker without the test split, then evaluates every variant on test.

    Protocol:

    1. ``selection`` (train = part of the main training split, test = the rest of
       it) with a two-tower trained on ``selection.train``: its top-N candidates
       of each user and the held-out ``selection.test`` give the ranker's
       examples; a share of the users is held out for early stopping and for
       tuning the aggregation weights.
    2. ``main`` with the two-tower refit on the whole training split: its top-N
       candidates are ranked for the test users, with features from
       ``main.train`` only; the harness scores the lists on ``main.test``.

    Args:
        selection: the model-selection split (its vocabularies become the ranker's).
        selection_vectors: vectors of the two-tower trained on ``selection.train``.
        main: the final split.
        main_vectors: vectors of the final two-tower (trained on ``main.train``).
        schema: the feature schema.
        settings: ranker and recommendation settings.
        eval_config: the test protocol (default :class:`EvalConfig`).
        on_epoch_end: called after each ranker epoch with ``(epoch, metrics, module)``.
        show_progress: progress bars.
        segments: ``(selection, main)``: each user's segments at the end of that split's
            training rows (:func:`recsys.segments.offline.memberships_at`), for a
            ``user_segments`` request feature.
        segment_names: the segment vocabulary (every segment the rules define).

    Returns:
        A :class:`TwoStageRun`.
    """
    t0 = time.perf_counter()
    if selection.vocabs is None:
        raise ValueError("the selection dataset has no vocabularies")
    vocabs = selection.vocabs
    sel_segments, main_segments = segments if segments is not None else (None, None)
    sel_ctx = RankerContext.from_processed(
        selection, schema, vocabs, settings.data, sel_segments, segment_names
    )

    def build(
        ctx: RankerContext,
        vectors: RetrievalVectors,
        ranker: TrainedRanker | None,
        agg: AggregationConfig,
        table: pd.DataFrame,
    ) -> TwoStageRecommender:
        return TwoStageRecommender.build(
            ctx,
            vectors,
            ranker,
            agg,
            index_config=settings.index,
            items=table,
            num_candidates=settings.num_candidates,
            batch_size=settings.batch_size,
            center_diversity=settings.center_diversity,
        )

    sel_rec = build(sel_ctx, selection_vectors, None, settings.aggregation, selection.items)
    # training candidates: only the user's own history is excluded (business
    # filters shape serving, not what the ranker learns)
    plain = settings.aggregation.with_updates(exclude_genres=(), exclude_items=())
    cands = sel_rec.candidates(np.arange(sel_ctx.n_users), settings.num_candidates, plain)
    examples = build_ranker_examples(
        selection.test,
        sel_ctx,
        cands,
        selection_vectors.queries,
        selection_vectors.items,
        settings.data,
    )
    fit = train_two_stage_ranker(
        sel_ctx,
        examples,
        schema,
        settings.model,
        settings.trainer,
        settings.bag_pooling,
        on_epoch_end,
    )

    aggregation = settings.aggregation
    tuning: list[dict[str, float]] = []
    if settings.tune_grid and fit.valid_users.size:
        sel_rec.ranker = fit.ranker
        held = selection.test[selection.test[USER].isin(sel_ctx.user_ids[fit.valid_users])]
        valid_harness = EvalHarness.from_frames(
            selection.train, held, sel_ctx.user_ids, sel_ctx.item_ids, eval_config
        )
        tuned, tuning = tune_aggregation(
            sel_rec,
            valid_harness,
            aggregation.with_updates(mmr_lambda=1.0),
            settings.tune_grid,
            metric=f"ndcg@{valid_harness.config.k}",
        )
        aggregation = tuned.with_updates(mmr_lambda=aggregation.mmr_lambda)

    ranker = fit.ranker
    if settings.refit_all_users and fit.valid_users.size:
        epochs = int(fit.valid_metrics.get("best_epoch", settings.trainer.epochs - 1)) + 1
        refit_trainer = replace(settings.trainer, epochs=epochs, early_stopping_patience=None)
        ranker = train_two_stage_ranker(
            sel_ctx,
            examples,
            schema,
            settings.model,
            refit_trainer,
            settings.bag_pooling,
            on_epoch_end,
            valid_user_fraction=0.0,
        ).ranker

    main_ctx = RankerContext.from_processed(
        main, schema, vocabs, settings.data, main_segments, segment_names
    )
    recommender = build(main_ctx, main_vectors, ranker, aggregation, main.items)
    setup = time.perf_counter() - t0
    harness = EvalHarness.from_processed(main, eval_config)
    variants = {
        RETRIEVAL: retrieval_only(aggregation),
        RANKED: aggregation.with_updates(mmr_lambda=1.0),
    }
    if aggregation.mmr_lambda < 1.0:
        variants[DIVERSIFIED] = aggregation
    results = evaluate_variants(recommender, harness, variants, show_progress)
    results = {name: (r, secs + setup) for name, (r, secs) in results.items()}
    test_metrics = ranker_holdout_metrics(recommender, main.test, settings.data)
    return TwoStageRun(
        results=results,
        recommender=recommender,
        fit=fit,
        aggregation=aggregation,
        tuning=tuning,
        examples=examples.summary(),
        ranker_metrics={"valid": fit.valid_metrics, "test": test_metrics},
        setup_seconds=setup,
    )
