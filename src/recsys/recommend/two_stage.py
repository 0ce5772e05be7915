"""The two-stage recommender: FAISS retrieval, a DLRM ranker, score aggregation.

``TwoStageRecommender.recommend(users, k)`` answers a request in five steps:

1. **retrieve** the top-N items per user from an :class:`~recsys.index.ItemIndex`
   over the two-tower item embeddings (exact Flat search by default), the user's
   seen items and the business filters excluded in the search itself;
2. **featurize** each (user, candidate) pair from the :class:`RankerContext`
   (training-split statistics only) and **rank** it with the TorchRec DLRM /
   DLRM_DCN ranker;
3. **aggregate** ranker score, retrieval score and freshness
   (:mod:`recsys.runtime.aggregation`);
4. **diversify** with MMR over the item embeddings;
5. cut to ``k``. Unknown users get the most popular allowed items; ``k`` larger
   than what is left of the catalogue gives shorter lists padded with invalid
   slots; FAISS's ``-1`` padding never becomes an item.

The ranker is trained by :func:`train_two_stage_ranker` on examples from the
model-selection split (see :mod:`recsys.recommend.ranker_data`), so neither it
nor its early stopping ever sees the test split.

Example:
    >>> rec = TwoStageRecommender.build(context, RetrievalVectors(queries, items), ranker,
    ...                                 AggregationConfig(mmr_lambda=0.8))  # doctest: +SKIP
    >>> out = rec.recommend([196, 186, 999_999], k=10)  # doctest: +SKIP
    >>> out.fallback.tolist()  # doctest: +SKIP
    [False, False, True]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, PoolingType
from tqdm.auto import tqdm

from recsys.config import build
from recsys.data.frame import ITEM
from recsys.eval.classification import auc, gauc, logloss, normalized_entropy
from recsys.features.schema import FeatureSchema, Kind
from recsys.index import MISSING_INT_ID, MISSING_STR_ID, IndexConfig, ItemIndex
from recsys.models.dlrm import Ranker, RankerConfig, embedding_bag_configs
from recsys.models.registry import ranker_arch
from recsys.recommend.ranker_data import (
    CANDIDATE,
    Candidates,
    DenseScaler,
    RankerBatches,
    RankerContext,
    RankerDataConfig,
    RankerExamples,
    dense_matrix,
    retrieve_candidates,
    split_users,
)
from recsys.runtime.aggregation import (
    AggregationConfig,
    blocked_items,
    id_order,
    mmr_rerank,
    relevance,
)
from recsys.runtime.targeting import (
    NO_PLAN,
    RuleSet,
    SlatePlan,
    TargetingEnv,
    fetch_depth,
    place_pins,
    rerank_fallback,
    restrict_rows,
)
from recsys.training.ranker_trainer import (
    RankerHistory,
    RankerTrainerConfig,
    train_ranker,
    unshard_ranker,
)

BagPooling = Literal["mean", "sum"]


# -- the ranker model ----------------------------------------------------------------


def shared_item_tables(schema: FeatureSchema, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Tables shared by features whose vocabulary comes from another ranker feature.

    The recent-items bag borrows the item id vocabulary, so it looks up the item
    id table: a pair's interaction then compares the candidate with the user's
    history in one embedding space.

    Example:
        >>> from recsys.features.schema import FeatureSchema
        >>> s = FeatureSchema.from_dict({"features": [
        ...     {"name": "item_id", "kind": "categorical", "role": "item"},
        ...     {"name": "recent", "kind": "sequence", "role": "user", "vocab_from": "item_id"}]})
        >>> shared_item_tables(s, ["item_id", "recent"])
        {'shared_item_id': ('item_id', 'recent')}
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        owner = schema[name].vocab_from
        if owner and owner in names:
            groups.setdefault(owner, [owner]).append(name)
    return {f"shared_{owner}": tuple(members) for owner, members in groups.items()}


def build_bag_ranker(
    config: RankerConfig,
    schema: FeatureSchema,
    feature_names: Sequence[str],
    num_embeddings: dict[str, int],
    num_dense: int,
    bag_pooling: BagPooling = "mean",
) -> Ranker:
    """A TorchRec DLRM / DLRM_DCN whose multi-id features (bags) pool by mean or sum.

    :func:`recsys.models.dlrm.build_ranker` gives every table sum pooling; a bag of
    up to 50 recent items summed would dwarf the one-id features in the
    interaction layer, so bags pool by ``bag_pooling`` here. Tables shared through
    ``vocab_from`` are added to ``config.shared_tables``.

    Args:
        config: architecture (``arch`` picks DLRM or DLRM_DCN) and seed.
        schema: the feature schema (kinds and shared vocabularies).
        feature_names: sparse features, KJT key order.
        num_embeddings: table rows per feature.
        num_dense: number of dense features.
        bag_pooling: pooling of ``multi_hot`` and ``sequence`` features.

    Returns:
        The :class:`~recsys.models.dlrm.Ranker`.
    """
    if bag_pooling not in ("mean", "sum"):
        raise ValueError(f"bag_pooling must be 'mean' or 'sum', got {bag_pooling!r}")
    shared = dict(config.shared_tables) or shared_item_tables(schema, feature_names)
    config = replace(config, shared_tables=shared)
    sizes = [int(num_embeddings[n]) for n in feature_names]
    tables = embedding_bag_configs(feature_names, sizes, config.embedding_dim, shared)
    bags = {f.name for f in schema if f.kind in (Kind.MULTI_HOT, Kind.SEQUENCE)}
    pool = PoolingType.MEAN if bag_pooling == "mean" else PoolingType.SUM
    for table in tables:
        if bags.intersection(table.feature_names):
            table.pooling = pool
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        ebc = EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
        dlrm = ranker_arch(config.arch)(ebc, num_dense, config)
    return Ranker(dlrm, feature_names, sizes, num_dense, config)


def ranker_config_from_dict(raw: dict[str, Any], seed: int) -> tuple[RankerConfig, BagPooling]:
    """``(RankerConfig, bag_pooling)`` from the ``ranker.model`` config mapping."""
    raw = dict(raw)
    pooling = raw.pop("bag_pooling", "mean")
    raw.setdefault("seed", seed)
    return build(RankerConfig, raw, "ranker.model"), pooling


# -- the trained ranker --------------------------------------------------------------


@dataclass
class TrainedRanker:
    """A trained ranker with what it needs to score new pairs.

    Attributes:
        model: the unsharded :class:`Ranker` (evaluation mode).
        scaler: dense-feature standardization fitted on its training examples.
        data_config: the feature settings it was trained with.
        bag_pooling: pooling of its bag features.
        train_positive_rate: label mean of its training examples (the NE prior).
        history: per-epoch metrics of training.
    """

    model: Ranker
    scaler: DenseScaler
    data_config: RankerDataConfig
    bag_pooling: BagPooling = "mean"
    train_positive_rate: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)

    @torch.no_grad()
    def logits(
        self,
        context: RankerContext,
        users: npt.NDArray[np.int64],
        items: npt.NDArray[np.int64],
        retrieval_score: npt.NDArray[np.float32],
        retrieval_rank: npt.NDArray[np.int64],
        list_mask: npt.NDArray[np.bool_] | None = None,
        batch_size: int = 8192,
        request_ids: npt.NDArray[np.int64] | None = None,
        request_time: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Ranker logits of (user, item) pairs of ``context``.

        Args:
            context: the training split the features come from.
            users: user index per pair.
            items: item index per pair.
            retrieval_score: retrieval score per pair.
            retrieval_rank: 0-based rank in the user's candidate list.
            list_mask: pairs forming the users' candidate lists (z-scores).
            batch_size: pairs per forward pass.
            request_ids: ``[n, F_request, L]`` request-feature ids per pair (None:
                requests without a context).
            request_time: per pair, its request's time (seconds, NaN unknown; the
                dense features' time with ``dense_time: request``).

        Returns:
            float32 logits.
        """
        if context.dense_names != self.scaler.names:
            raise ValueError(
                "the context computes other dense features than the ranker was trained on: "
                f"{context.dense_names} vs {self.scaler.names}"
            )
        if len(users) == 0:
            return np.zeros(0, dtype=np.float32)
        x = dense_matrix(
            context,
            users,
            items,
            retrieval_score,
            retrieval_rank,
            list_mask,
            request_time=request_time,
        )
        batches = RankerBatches(
            context,
            users,
            items,
            self.scaler.transform(x),
            None,
            batch_size,
            shuffle=False,
            request_ids=request_ids,
        )
        self.model.eval()
        device = next(self.model.parameters()).device
        out = [
            self.model(b.dense_features.to(device), b.sparse_features.to(device))
            .float()
            .cpu()
            .numpy()
            for b in batches
        ]
        return np.concatenate(out).astype(np.float32)

    def save(self, directory: str | Path) -> Path:
        """Writes ``ranker.pt`` (weights) and ``ranker.json`` (everything else)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out / "ranker.pt")
        cfg = self.model.config
        meta = {
            "model": {
                **{k: v for k, v in asdict(cfg).items() if k != "shared_tables"},
                "shared_tables": {k: list(v) for k, v in cfg.shared_tables.items()},
                "bag_pooling": self.bag_pooling,
            },
            "feature_names": list(self.model.feature_names),
            "num_embeddings": dict(
                zip(self.model.feature_names, self.model.num_embeddings_per_feature, strict=True)
            ),
            "scaler": self.scaler.to_dict(),
            "data": self.data_config.to_dict(),
            "train_positive_rate": self.train_positive_rate,
            "history": self.history,
        }
        (out / "ranker.json").write_text(json.dumps(meta, indent=2, default=float) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, schema: FeatureSchema) -> TrainedRanker:
        """Reads what :meth:`save` wrote."""
        folder = Path(directory)
        meta = json.loads((folder / "ranker.json").read_text())
        model_raw = dict(meta["model"])
        model_raw["shared_tables"] = {k: tuple(v) for k, v in model_raw["shared_tables"].items()}
        model_raw.pop("num_embeddings_per_feature", None)
        config, pooling = ranker_config_from_dict(model_raw, seed=int(model_raw.get("seed", 0)))
        scaler = DenseScaler.from_dict(meta["scaler"])
        data_config = RankerDataConfig.from_dict(meta["data"])
        model = build_bag_ranker(
            config,
            schema.for_ranker(data_config.request_features),
            meta["feature_names"],
            meta["num_embeddings"],
            len(scaler.names),
            pooling,
        )
        model.load_state_dict(torch.load(folder / "ranker.pt", weights_only=True))
        model.eval()
        return cls(
            model=model,
            scaler=scaler,
            data_config=data_config,
            bag_pooling=pooling,
            train_positive_rate=float(meta["train_positive_rate"]),
            history=list(meta.get("history", [])),
        )


def classification_metrics(
    labels: npt.NDArray[np.float32],
    logits: npt.NDArray[np.float32],
    groups: npt.NDArray[np.int64],
    prior: float | None = None,
) -> dict[str, float]:
    """AUC, log loss, normalized entropy and per-user GAUC of ranker scores.

    Args:
        labels: 0/1 per example.
        logits: ranker logits.
        groups: user per example (for GAUC).
        prior: the training label rate; when given, ``ne_train_prior`` divides
            the log loss by its entropy (He et al.'s definition), which exceeds
            1 when the evaluated data has another label rate.

    Returns:
        ``auc``, ``logloss``, ``ne`` (against these labels' own rate),
        ``ne_train_prior`` (with ``prior``), ``gauc``, ``gauc_users``, ``rows``,
        ``positive_rate``.
    """
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    g = gauc(labels, logits, groups)
    out = {
        "auc": auc(labels, logits),
        "logloss": logloss(labels, probs),
        "ne": normalized_entropy(labels, probs),
        "gauc": g.value,
        "gauc_users": float(g.groups_used),
        "rows": float(len(labels)),
        "positive_rate": float(np.mean(labels)),
    }
    if prior is not None and 0.0 < prior < 1.0:
        out["ne_train_prior"] = normalized_entropy(labels, probs, prior=prior)
    return out


@dataclass
class RankerFit:
    """The result of :func:`train_two_stage_ranker`.

    Attributes:
        ranker: the trained ranker.
        train_users: users whose examples trained it.
        valid_users: users held out for early stopping and weight tuning.
        valid_metrics: :func:`classification_metrics` on the valid users'
            candidate examples.
        seconds: training wall time.
    """

    ranker: TrainedRanker
    train_users: npt.NDArray[np.int64]
    valid_users: npt.NDArray[np.int64]
    valid_metrics: dict[str, float]
    seconds: float


def train_two_stage_ranker(
    context: RankerContext,
    examples: RankerExamples,
    schema: FeatureSchema,
    model_config: RankerConfig,
    trainer_config: RankerTrainerConfig,
    bag_pooling: BagPooling = "mean",
    on_epoch_end: Callable[[int, dict[str, float], nn.Module], None] | None = None,
    valid_user_fraction: float | None = None,
) -> RankerFit:
    """Trains the ranker on ``examples``, early-stopping on a held-out share of users.

    Dense features are standardized with statistics of the training users'
    examples only; the valid users' examples decide the best epoch (log loss).

    Args:
        context: the training split the examples' features come from.
        examples: from :func:`~recsys.recommend.ranker_data.build_ranker_examples`.
        schema: the feature schema.
        model_config: the DLRM architecture.
        trainer_config: optimizers, epochs, early stopping (``sharding="local"``
            or ``"dmp"``).
        bag_pooling: pooling of bag features.
        on_epoch_end: called with ``(epoch, metrics, module)`` after each epoch.
        valid_user_fraction: overrides ``context.config.valid_user_fraction``
            (0: train on every user; the validation batches are then the
            training ones, which only makes sense without early stopping).

    Returns:
        A :class:`RankerFit`.
    """
    t0 = time.perf_counter()
    cfg = context.config
    fraction = cfg.valid_user_fraction if valid_user_fraction is None else valid_user_fraction
    if fraction > 0:
        train_users, valid_users = split_users(examples.users, fraction, cfg.seed)
    else:
        train_users, valid_users = np.unique(examples.users), np.empty(0, dtype=np.int64)
    in_train = np.isin(examples.users, train_users)
    if not in_train.any() or examples.labels[in_train].sum() == 0:
        raise ValueError("no positive training examples: nothing to learn from")
    x = dense_matrix(
        context,
        examples.users,
        examples.items,
        examples.retrieval_score,
        examples.retrieval_rank,
        list_mask=examples.kind == CANDIDATE,
        request_time=examples.request_time(),
    )
    scaler = DenseScaler.fit(x[in_train], context.dense_names)
    x = scaler.transform(x)
    schema = schema.for_ranker(context.request_names)
    # the training rows' requests lose their context at the rate context_dropout, the
    # validation rows keep theirs
    train_ids = examples.request_ids(context, cfg.context_dropout, cfg.seed)
    full_ids = examples.request_ids(context)
    tr = np.flatnonzero(in_train)
    va = np.flatnonzero(~in_train) if valid_users.size else tr
    bs = trainer_config.batch_size
    train_batches = RankerBatches(
        context,
        examples.users[tr],
        examples.items[tr],
        x[tr],
        examples.labels[tr],
        bs,
        shuffle=True,
        seed=trainer_config.seed,
        request_ids=None if train_ids is None else train_ids[tr],
    )
    valid_batches = RankerBatches(
        context,
        examples.users[va],
        examples.items[va],
        x[va],
        examples.labels[va],
        8192,
        request_ids=None if full_ids is None else full_ids[va],
    )

    def new_model() -> Ranker:
        return build_bag_ranker(
            model_config,
            schema,
            context.sparse_names,
            context.num_embeddings,
            len(context.dense_names),
            bag_pooling,
        )

    model = new_model()

    def epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        # the ranker object is trained in place (DMP shards its tables in place too)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, model)

    history: RankerHistory = train_ranker(
        model, train_batches, valid_batches, trainer_config, on_epoch_end=epoch_end
    )
    trained = history.module
    assert trained is not None
    if trained is not model:
        # DMP: gather the shards into a plain model of the same layout
        plain = unshard_ranker(trained, model)
        fresh = new_model()
        fresh.load_state_dict(plain.state_dict())
        model = fresh
    model.eval()
    ranker = TrainedRanker(
        model=model,
        scaler=scaler,
        data_config=cfg,
        bag_pooling=bag_pooling,
        train_positive_rate=float(history.train_positive_rate),
        history=history.epochs,
    )
    # validation metrics on the candidate lists, the population ranked at serving time
    vmask = ~in_train & (examples.kind == CANDIDATE) if valid_users.size else in_train
    valid_metrics: dict[str, float] = {}
    vex = examples.subset(vmask)
    if len(vex) and 0 < vex.labels.sum() < len(vex):
        logits = ranker.logits(
            context,
            vex.users,
            vex.items,
            vex.retrieval_score,
            vex.retrieval_rank,
            list_mask=np.ones(len(vex), dtype=bool),
            request_ids=vex.request_ids(context),
            request_time=vex.request_time(),
        )
        valid_metrics = classification_metrics(
            vex.labels, logits, vex.users, prior=ranker.train_positive_rate
        )
    valid_metrics["best_epoch"] = float(history.best_epoch)
    valid_metrics["epochs_run"] = float(len(history.epochs))
    return RankerFit(
        ranker=ranker,
        train_users=train_users,
        valid_users=valid_users,
        valid_metrics=valid_metrics,
        seconds=time.perf_counter() - t0,
    )


# -- the recommender -----------------------------------------------------------------


@dataclass
class RankedLists:
    """Final lists in the index space.

    Attributes:
        users: ``[U]`` user indices (``-1`` for unknown users).
        items: ``[U, k]`` item indices, ``-1`` padded.
        scores: ``[U, k]`` aggregated scores, ``-inf`` in padding.
        fallback: ``[U]`` True where the popularity fallback answered.
    """

    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    fallback: npt.NDArray[np.bool_]


@dataclass
class Recommendations:
    """Final lists in original ids.

    Attributes:
        user_ids: ``[U]`` the requested user ids.
        item_ids: ``[U, k]`` item ids; padding holds :data:`~recsys.index.MISSING_INT_ID`
            (or :data:`~recsys.index.MISSING_STR_ID` for string ids).
        scores: ``[U, k]`` float32, ``-inf`` in padding.
        valid: ``[U, k]`` True where a slot holds an item (valid slots come first).
        fallback: ``[U]`` True where the user was unknown (or had no candidate)
            and the popularity fallback answered.
        rules: per user, the targeting rules that applied (None: no rules given).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    scores: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    fallback: npt.NDArray[np.bool_]
    rules: list[tuple[str, ...]] | None = None

    def to_frame(self) -> pd.DataFrame:
        """Valid slots as rows ``user, item, rank (1-based), score, fallback``."""
        rows, ranks = np.nonzero(self.valid)
        return pd.DataFrame(
            {
                "user": self.user_ids[rows],
                "item": self.item_ids[rows, ranks],
                "rank": (ranks + 1).astype(np.int32),
                "score": self.scores[rows, ranks],
                "fallback": self.fallback[rows],
            }
        )


@dataclass
class RetrievalVectors:
    """What a trained retrieval model gives the two-stage recommender, in one
    split's index space.

    Attributes:
        queries: ``[n_users, D']`` query vectors.
        items: ``[n_items, D']`` item vectors; ``queries @ items.T`` is the
            retrieval score (what the index searches by).
        embeddings: ``[n_items, D]`` item embeddings that MMR and the diversity
            metric compare (None: ``items``).

    Example:
        >>> queries, items = trainer.retrieval_vectors()  # doctest: +SKIP
        >>> vecs = RetrievalVectors(queries.numpy(), items.numpy(),
        ...                         trainer.item_embeddings().numpy())  # doctest: +SKIP
    """

    queries: npt.NDArray[np.float32]
    items: npt.NDArray[np.float32]
    embeddings: npt.NDArray[np.float32] | None = None


class TwoStageRecommender:
    """Retrieval -> ranker -> aggregation -> diversity -> top-k.

    Args:
        context: training-split statistics (index space of users and items).
        index: :class:`ItemIndex` over ``vectors.items`` with item *indices* as
            ids (see :meth:`build`).
        vectors: the retrieval model's query and item vectors.
        ranker: the trained ranker (None: retrieval order only).
        config: aggregation, filters and diversity.
        num_candidates: N, candidates retrieved per user (at least ``k`` are).
        item_genres: genres per item (genre filters); None if unknown.
        batch_size: users per retrieval / ranking batch.
        center_diversity: MMR (and :attr:`diversity_vectors`) compare items by
            the cosine of their embeddings *minus the catalogue mean*: two-tower
            item vectors share a common direction (mean pairwise cosine about 0.5
            on ML-100K, above 0.9 inside a top-10 list), which would make every
            pair look alike.
    """

    def __init__(
        self,
        context: RankerContext,
        index: ItemIndex,
        vectors: RetrievalVectors,
        ranker: TrainedRanker | None,
        config: AggregationConfig,
        num_candidates: int = 200,
        item_genres: Sequence[Sequence[str]] | None = None,
        batch_size: int = 256,
        center_diversity: bool = True,
    ) -> None:
        embeddings = vectors.embeddings if vectors.embeddings is not None else vectors.items
        if vectors.queries.shape[0] != context.n_users:
            raise ValueError(
                f"{vectors.queries.shape[0]} query vectors for {context.n_users} users"
            )
        sizes = {len(vectors.items), len(embeddings), len(index)}
        if sizes != {context.n_items}:
            raise ValueError(
                f"{len(vectors.items)} item vectors, {len(embeddings)} item embeddings and an "
                f"index of {len(index)} for {context.n_items} items"
            )
        if vectors.queries.shape[1] != vectors.items.shape[1]:
            raise ValueError("query and item vectors differ in dimension")
        if index.id_dtype != "int64" or not np.array_equal(
            index.item_ids, np.arange(context.n_items)
        ):
            raise ValueError("the index must hold item indices 0..n_items-1 as its ids")
        if num_candidates < 1 or batch_size < 1:
            raise ValueError("num_candidates and batch_size must be >= 1")
        self.context = context
        self.index = index
        self.query_vectors = np.ascontiguousarray(vectors.queries, dtype=np.float32)
        self.item_vectors = np.ascontiguousarray(vectors.items, dtype=np.float32)
        self.ranker = ranker
        self.config = config
        self.num_candidates = num_candidates
        self.item_genres = item_genres
        self.batch_size = batch_size
        centered = np.asarray(embeddings, dtype=np.float64)
        if center_diversity:
            centered = centered - centered.mean(axis=0, keepdims=True)
        norms = np.maximum(np.linalg.norm(centered, axis=1, keepdims=True), 1e-12)
        self.diversity_vectors = (centered / norms).astype(np.float32)
        self._user_pos = pd.Index(context.user_ids)
        # popularity fallback order: training count, ties to the smaller item index
        self._popular = np.lexsort((np.arange(context.n_items), -context.item_count))
        self._id_order = id_order(context.item_ids)

    @classmethod
    def build(
        cls,
        context: RankerContext,
        vectors: RetrievalVectors,
        ranker: TrainedRanker | None,
        config: AggregationConfig,
        index_config: IndexConfig | None = None,
        items: pd.DataFrame | None = None,
        num_candidates: int = 200,
        batch_size: int = 256,
        center_diversity: bool = True,
    ) -> TwoStageRecommender:
        """Builds the FAISS index over ``vectors.items`` and the recommender.

        Args:
            context: training-split statistics.
            vectors: retrieval query and item vectors (and item embeddings).
            ranker: trained ranker or None.
            config: aggregation.
            index_config: FAISS index settings (default exact Flat).
            items: the item table in index order (its ``genres`` column feeds
                genre filters and genre diversity).
            num_candidates: N.
            batch_size: users per batch.
            center_diversity: see the class docstring.

        Returns:
            The recommender.
        """
        index = ItemIndex(index_config or IndexConfig(kind="flat")).build(
            vectors.items, np.arange(context.n_items, dtype=np.int64)
        )
        genres = None
        if items is not None and "genres" in items.columns:
            if not np.array_equal(items[ITEM].to_numpy(), context.item_ids):
                raise ValueError("the item table is not in the context's item order")
            genres = [list(g) if g is not None else [] for g in items["genres"]]
        return cls(
            context,
            index,
            vectors,
            ranker,
            config,
            num_candidates,
            genres,
            batch_size,
            center_diversity,
        )

    # -- public API ---------------------------------------------------------------

    def recommend(
        self,
        user_ids: npt.ArrayLike,
        k: int,
        config: AggregationConfig | None = None,
        rules: RuleSet | None = None,
        targeting: Sequence[TargetingEnv] | None = None,
    ) -> Recommendations:
        """Top-``k`` items for each requested user, in original ids.

        Args:
            user_ids: original user ids; unknown ids get the popularity fallback.
            k: list length (>= 1). Lists are shorter (padded, ``valid`` False)
                when fewer allowed items remain.
            config: aggregation override for this call.
            rules: targeting rules (the served ``recommend`` applies the same ones
                with the same result, :mod:`recsys.runtime.targeting`).
            targeting: per user, the segments and request context the rules see
                (default: no segments, unknown context).

        Returns:
            :class:`Recommendations`.
        """
        ids = np.asarray(user_ids)
        if ids.ndim != 1:
            raise ValueError(f"user_ids must be 1-D, got shape {ids.shape}")
        plans = None
        if rules is not None and len(rules):
            envs = list(targeting) if targeting is not None else [TargetingEnv.of()] * len(ids)
            if len(envs) != len(ids):
                raise ValueError(f"{len(ids)} users but {len(envs)} targeting environments")
            plans = [rules.plan(env) for env in envs]
        pos = self._user_pos.get_indexer(ids) if ids.size else np.empty(0, dtype=np.int64)
        lists = self.recommend_indices(np.asarray(pos, dtype=np.int64), k, config, plans=plans)
        valid = lists.items >= 0
        item_ids = self.context.item_ids
        missing: Any = MISSING_STR_ID if item_ids.dtype == object else MISSING_INT_ID
        out = np.full(lists.items.shape, missing, dtype=item_ids.dtype)
        out[valid] = item_ids[lists.items[valid]]
        return Recommendations(
            user_ids=ids,
            item_ids=out,
            scores=lists.scores,
            valid=valid,
            fallback=lists.fallback,
            rules=None if plans is None else [p.rules for p in plans],
        )

    def recommend_indices(
        self,
        users: npt.NDArray[np.int64],
        k: int,
        config: AggregationConfig | None = None,
        show_progress: bool = False,
        plans: Sequence[SlatePlan] | None = None,
    ) -> RankedLists:
        """Top-``k`` lists for user indices (``-1`` = unknown user).

        Args:
            users: ``[U]`` user indices of the context (or -1).
            k: list length.
            config: aggregation override.
            show_progress: tqdm bar over batches.
            plans: per user, the targeting plan to apply (None: none).

        Returns:
            :class:`RankedLists`.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        cfg = config or self.config
        users = np.asarray(users, dtype=np.int64)
        if users.size and users.max() >= self.context.n_users:
            raise ValueError(f"user index {users.max()} >= {self.context.n_users} users")
        blocked = blocked_items(self.context.item_ids, self.item_genres, cfg)
        items = np.full((len(users), k), -1, dtype=np.int64)
        scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        known = users >= 0
        known_rows = np.flatnonzero(known)
        starts = range(0, len(known_rows), self.batch_size)
        for lo in tqdm(starts, desc="two-stage", disable=not show_progress):
            rows = known_rows[lo : lo + self.batch_size]
            batch_plans = None if plans is None else [plans[r] for r in rows.tolist()]
            it, sc = self._rank_batch(users[rows], k, cfg, blocked, batch_plans)
            items[rows], scores[rows] = it, sc
        fallback = ~known | ~(items >= 0).any(axis=1)
        if fallback.any():
            for row in np.flatnonzero(fallback):
                seen = None
                if users[row] >= 0 and cfg.exclude_seen:
                    seen = self.context.seen.rows(users[row : row + 1]).indices
                plan = NO_PLAN if plans is None else plans[int(row)]
                if plan.empty:
                    items[row], scores[row] = self.popular(k, blocked, seen)
                    continue
                need = fetch_depth(plan, k, self.context.n_items)
                pop, pop_scores = self.popular(need, blocked, seen)
                ok = pop >= 0
                it, sc = rerank_fallback(plan, pop[ok], pop_scores[ok], k)
                it, sc, _ = place_pins(plan, it, sc, k, self._pin_allowed(plan, blocked, seen))
                items[row], scores[row] = -1, -np.inf
                items[row, : len(it)], scores[row, : len(it)] = it, sc
        return RankedLists(users=users, items=items, scores=scores, fallback=fallback)

    @staticmethod
    def _pin_allowed(
        plan: SlatePlan,
        blocked: npt.NDArray[np.int64],
        seen: npt.NDArray[np.int64] | None,
    ) -> Callable[[int], bool]:
        banned = set(blocked.tolist()) | set(plan.exclude.tolist())
        if seen is not None:
            banned |= set(np.asarray(seen).tolist())
        return lambda item: item not in banned

    def popular(
        self,
        k: int,
        blocked: npt.NDArray[np.int64] | None = None,
        seen: npt.NDArray[np.int64] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``k`` most popular allowed items (index space) and their log counts."""
        order = self._popular
        drop = np.zeros(self.context.n_items, dtype=bool)
        for arr in (blocked, seen):
            if arr is not None and len(arr):
                drop[arr[arr >= 0]] = True
        order = order[~drop[order]][:k]
        items = np.full(k, -1, dtype=np.int64)
        scores = np.full(k, -np.inf, dtype=np.float32)
        items[: len(order)] = order
        scores[: len(order)] = np.log1p(self.context.item_count[order])
        return items, scores

    # -- internals ----------------------------------------------------------------

    def candidates(
        self, users: npt.NDArray[np.int64], n: int, config: AggregationConfig | None = None
    ) -> Candidates:
        """Retrieval top-``n`` of known users, seen and blocked items excluded."""
        cfg = config or self.config
        blocked = blocked_items(self.context.item_ids, self.item_genres, cfg)
        return retrieve_candidates(
            self.index,
            self.query_vectors,
            users,
            n,
            exclude=self.context.seen if cfg.exclude_seen else None,
            blocked=blocked,
        )

    def _rank_batch(
        self,
        users: npt.NDArray[np.int64],
        k: int,
        cfg: AggregationConfig,
        blocked: npt.NDArray[np.int64],
        plans: Sequence[SlatePlan] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        n = max(self.num_candidates, k)
        filtering = plans is not None and any(p.filters for p in plans)
        fetch = n
        if filtering and plans is not None:
            fetch = max(fetch_depth(p, n, self.context.n_items) for p in plans)
        cands = retrieve_candidates(
            self.index,
            self.query_vectors,
            users,
            fetch,
            exclude=self.context.seen if cfg.exclude_seen else None,
            blocked=blocked,
        )
        if filtering and plans is not None:
            # the first n candidates each request's rules allow, as the served engine keeps
            kept, kept_scores = restrict_rows(cands.items, cands.scores, plans, n)
            cands = Candidates(users=cands.users, items=kept, scores=kept_scores)
        valid = cands.valid
        safe_items = np.maximum(cands.items, 0)
        ranker_scores = None
        if cfg.ranker_weight > 0:
            if self.ranker is None:
                raise ValueError("ranker_weight > 0 but the recommender has no ranker")
            pu, pi, ps, pr = cands.pairs()
            logits = self.ranker.logits(self.context, pu, pi, ps, pr)
            ranker_scores = np.zeros(valid.shape, dtype=np.float64)
            ranker_scores[valid] = logits
        age = None
        if cfg.freshness_weight > 0:
            rows = np.repeat(users[:, None], valid.shape[1], axis=1)
            age = self.context.item_age_years(safe_items, rows)
        rel = relevance(valid, cfg, ranker_scores, cands.scores.astype(np.float64), age)
        if plans is not None and any(len(p.boost_items) for p in plans):
            boost = np.stack([p.boosts(row) for p, row in zip(plans, cands.items, strict=True)])
            rel = np.where(valid, rel + boost, rel)
        kk = min(k, valid.shape[1])
        positions = mmr_rerank(
            rel,
            self.diversity_vectors[safe_items],
            valid,
            kk,
            cfg.mmr_lambda,
            tie_ids=self._id_order[safe_items],
            depth=cfg.mmr_depth,
        )
        ok = positions >= 0
        safe_pos = np.maximum(positions, 0)
        items = np.where(ok, np.take_along_axis(cands.items, safe_pos, axis=1), -1)
        scores = np.where(ok, np.take_along_axis(rel, safe_pos, axis=1), -np.inf)
        if plans is not None and any(p.pins for p in plans):
            for w, plan in enumerate(plans):
                if not plan.pins:
                    continue
                ok_w = items[w] >= 0
                seen = None
                if cfg.exclude_seen:
                    seen = self.context.seen.rows(users[w : w + 1]).indices
                it, sc, _ = place_pins(
                    plan,
                    items[w][ok_w],
                    scores[w][ok_w].astype(np.float32),
                    kk,
                    self._pin_allowed(plan, blocked, seen),
                )
                items[w], scores[w] = -1, -np.inf
                items[w, : len(it)], scores[w, : len(it)] = it, sc
        if kk < k:
            items = np.pad(items, ((0, 0), (0, k - kk)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        return items.astype(np.int64), scores.astype(np.float32)


# -- settings ------------------------------------------------------------------------


@dataclass
class TwoStageSettings:
    """Everything the two-stage stage reads from the ``ranker`` and ``recommend`` configs.

    Attributes:
        data: ranker examples and features.
        model: the DLRM architecture.
        bag_pooling: pooling of bag features.
        trainer: ranker optimization.
        refit_all_users: after early stopping on the validation users, retrain
            on every user's examples for the selected number of epochs.
        aggregation: score aggregation at serving time.
        index: the FAISS index.
        num_candidates: N (retrieval candidates per user, for training and serving).
        batch_size: users per retrieval / ranking batch.
        center_diversity: see :class:`TwoStageRecommender`.
        tune_grid: aggregation fields and the values tried on the validation
            users (empty: no tuning).
    """

    data: RankerDataConfig
    model: RankerConfig
    bag_pooling: BagPooling
    trainer: RankerTrainerConfig
    refit_all_users: bool
    aggregation: AggregationConfig
    index: IndexConfig
    num_candidates: int = 200
    batch_size: int = 256
    center_diversity: bool = True
    tune_grid: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        ranker: dict[str, Any],
        recommend: dict[str, Any],
        seed: int = 0,
        num_threads: int | None = None,
    ) -> TwoStageSettings:
        """From the ``ranker`` and ``recommend`` config groups (plain mappings).

        Args:
            ranker: keys ``model``, ``trainer``, ``data``, ``refit_all_users``.
            recommend: keys ``num_candidates``, ``batch_size``,
                ``center_diversity``, ``index``, ``aggregation``, ``tune``.
            seed: default seed of model, trainer and sampling.
            num_threads: FAISS threads (None: FAISS's default).

        Returns:
            The settings; unknown keys in ``data``, ``model``, ``index`` and
            ``trainer`` are errors.
        """
        n = int(recommend.get("num_candidates", 200))
        data_raw = {"seed": seed, **dict(ranker.get("data") or {}), "num_candidates": n}
        model, pooling = ranker_config_from_dict(dict(ranker.get("model") or {}), seed)
        trainer_raw = {"seed": seed, **dict(ranker.get("trainer") or {})}
        known = {f.name for f in fields(RankerTrainerConfig)}
        unknown = sorted(set(trainer_raw) - known)
        if unknown:
            raise ValueError(f"unknown ranker trainer keys {unknown}; known: {sorted(known)}")
        if "sharding_types" in trainer_raw:
            trainer_raw["sharding_types"] = tuple(trainer_raw["sharding_types"])
        index_raw = dict(recommend.get("index") or {})
        if num_threads and "num_threads" not in index_raw:
            index_raw["num_threads"] = int(num_threads)
        tune = {str(k): [float(x) for x in v] for k, v in (recommend.get("tune") or {}).items()}
        agg_names = {f.name for f in fields(AggregationConfig)}
        bad = sorted(set(tune) - agg_names)
        if bad:
            raise ValueError(f"tune names {bad}, which are not aggregation fields")
        return cls(
            data=RankerDataConfig.from_dict(data_raw),
            model=model,
            bag_pooling=pooling,
            trainer=RankerTrainerConfig(**trainer_raw),
            refit_all_users=bool(ranker.get("refit_all_users", False)),
            aggregation=AggregationConfig.from_dict(recommend.get("aggregation")),
            index=IndexConfig.from_dict(index_raw),
            num_candidates=n,
            batch_size=int(recommend.get("batch_size", 256)),
            center_diversity=bool(recommend.get("center_diversity", True)),
            tune_grid=tune,
        )
