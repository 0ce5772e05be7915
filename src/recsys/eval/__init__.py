"""Offline evaluation: full-catalogue ranking, top-k metrics and reports.

* :mod:`recsys.eval.metrics` -- precision, recall, NDCG, MAP (Recommenders' and
  capped), hit rate, MRR, coverage, novelty on dense top-k matrices.
* :mod:`recsys.eval.ranking` -- batched full ranking with seen-item exclusion and
  deterministic tie-breaking.
* :mod:`recsys.eval.report` -- top-k lists in original ids (Parquet/CSV) and
  markdown metric tables.
"""

from recsys.eval.metrics import (
    METRIC_NAMES,
    RankingMetricsConfig,
    UserItemCSR,
    capped_map_at_k,
    catalogue_coverage,
    evaluate,
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mrr,
    ndcg_at_k,
    novelty,
    per_user_metrics,
    precision_at_k,
    recall_at_k,
)
from recsys.eval.ranking import full_ranking_topk, topk_smallest_index_ties
from recsys.eval.report import metrics_table, topk_frame, write_topk

__all__ = [
    "METRIC_NAMES",
    "RankingMetricsConfig",
    "UserItemCSR",
    "capped_map_at_k",
    "catalogue_coverage",
    "evaluate",
    "full_ranking_topk",
    "hit_matrix",
    "hit_rate_at_k",
    "map_at_k",
    "metrics_table",
    "mrr",
    "ndcg_at_k",
    "novelty",
    "per_user_metrics",
    "precision_at_k",
    "recall_at_k",
    "topk_frame",
    "topk_smallest_index_ties",
    "write_topk",
]
