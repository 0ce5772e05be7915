"""Cold items: items published after training, served by the running ``recommend`` model.

An item the training run never saw reaches the catalogue as an ``item_published``
event (:mod:`recsys.events.catalogue` validates it and writes a catalogue record into
the real-time store). This module turns such records into rows of the serving tables,
without retraining and without a restart:

1. :class:`ColdItemSpec` (``cold_items.json`` in the ``recommend`` version folder,
   written by ``build-repo --cold-items``) says how an item's attributes become the
   padded ids of the item tower and of the ranker's item-side features: the item id
   feature takes its out-of-vocabulary row (the id was never trained), categories
   (genres) map to their vocabulary rows, the release year to its year bucket's row,
   the popularity bucket to the bucket of an item without training interactions.
   Values the vocabulary does not hold take the OOV row and are counted
   (:attr:`ItemSideEncoding.unknown`); the catalogue consumer refuses such events
   before they reach the store.
2. The exported item tower (``item_tower.onnx``) encodes the item from those ids;
   the vector joins retrieval through :class:`ColdRetrieval`: an exact inner-product
   search over the cold vectors merged with the FAISS results (item indices
   ``n_base .. n_base + m - 1`` follow the trained catalogue's, so the id mapping stays
   one array).
3. :func:`extend_tables` and :func:`extend_features` append the items to
   :class:`~recsys.runtime.engine.RecommendTables` (raw ids returned to clients,
   categories for targeting rules, MMR vectors, business filters) and to
   :class:`~recsys.runtime.ranker_features.RankerFeatures` (item-side ranker ids,
   popularity 0, age from the release date, no co-occurrence affinity), so the ranker
   scores them like any candidate.
4. :class:`ColdItemUpdater` polls the store every ``poll_s`` seconds, at most
   ``per_poll`` records a poll and ``max_items`` cold items in all (a log line says when
   a cap holds items back), and swaps the extended tables into the engine. A
   re-published item id replaces its attributes in place (same row); a record for an
   item the training run knows is ignored and logged.

The module imports numpy only (Python 3.10 compatible); the store client loads when the
updater first reads.

Example::

    spec = ColdItemSpec.load("repo/recommend/1")
    updater = ColdItemUpdater(engine, spec, item_tower, source, ColdItemsConfig(poll_s=1))
    updater.refresh()     # new items become candidates of the next request
"""

from __future__ import annotations

import calendar
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SPEC_FILE = "cold_items.json"
"""The encoding spec, next to the ``recommend`` tables."""
ITEM_TOWER_FILE = "item_tower.onnx"
"""The exported item tower, copied next to the ``recommend`` tables."""

RULE_KINDS = ("oov", "categories", "year", "constant")
"""How an item-side feature gets its ids: ``oov`` (the id feature: its OOV row),
``categories`` (each category name through a map), ``year`` (the release year's
bucket label through a map), ``constant`` (one id for every cold item)."""


@dataclass(frozen=True)
class ColdItem:
    """One published item's attributes, as the catalogue stores them.

    Attributes:
        item_id: the raw item id (INT64, like the trained catalogue's).
        categories: category (genre) names.
        release_date: ``YYYY-MM-DD`` or None when unknown (the item's age).
        title: display title (not a model input).
        version: the store's version of the record (grows with every write).
        year_value: the year the year feature buckets, when it is not the release
            date's (MovieLens buckets the title's year).
    """

    item_id: int
    categories: tuple[str, ...] = ()
    release_date: str | None = None
    title: str = ""
    version: int = 0
    year_value: int | None = None

    @property
    def year(self) -> int | None:
        """The year the year feature buckets: ``year_value``, else the release date's
        year, else None."""
        if self.year_value is not None:
            return self.year_value
        return int(self.release_date[:4]) if self.release_date else None

    @property
    def release_time(self) -> float:
        """Release time in seconds since the epoch (UTC midnight), NaN when unknown."""
        if not self.release_date:
            return math.nan
        # calendar.timegm: UTC without datetime.UTC, which Python 3.10 lacks
        return float(calendar.timegm(time.strptime(self.release_date, "%Y-%m-%d")))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ColdItem:
        """Reads a catalogue record (:meth:`recsys.events.catalogue.CatalogueRecord.to_dict`)."""
        return cls(
            item_id=int(record["item_id"]),
            categories=tuple(str(c) for c in record.get("categories", ())),
            release_date=record.get("release_date") or None,
            title=str(record.get("title", "")),
            version=int(record.get("version", 0)),
            year_value=None if record.get("year") is None else int(record["year"]),
        )


@dataclass
class FeatureRule:
    """How one item-side feature's ids are made (see :data:`RULE_KINDS`).

    Attributes:
        kind: one of :data:`RULE_KINDS`.
        id: the id of ``oov`` and ``constant`` (and of unknown values).
        map: value -> id for ``categories`` (category names) and ``year`` (bucket
            labels such as ``1990-1994``, plus ``unknown``).
        max_len: ids kept per item (categories beyond it are dropped, as training's
            ``max_len`` truncates a bag).
    """

    kind: str
    id: int = 0
    map: dict[str, int] = field(default_factory=dict)
    max_len: int = 1

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"feature rule kind {self.kind!r}: expected one of {RULE_KINDS}")

    def ids(self, item: ColdItem) -> tuple[list[int], list[str]]:
        """The item's ids for this feature and the values the map does not hold."""
        if self.kind in ("oov", "constant"):
            return [self.id], []
        if self.kind == "categories":
            known = [self.map[c] for c in item.categories if c in self.map]
            unknown = [c for c in item.categories if c not in self.map]
            return (known[: self.max_len] or [self.id]), unknown
        label = year_label(item.year, self.map)
        if label is None:
            return [self.id], [str(item.year)]
        return [self.map[label]], []

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "map": self.map, "max_len": self.max_len}


def year_label(year: int | None, labels: Mapping[str, int]) -> str | None:
    """The bucket label (``"1990-1994"``) of ``labels`` holding ``year``; ``"unknown"`` for
    no year when the map has it; None when no label fits.

    Example:
        >>> year_label(1993, {"1990-1994": 3, "unknown": 1}), year_label(None, {"unknown": 1})
        ('1990-1994', 'unknown')
    """
    if year is None:
        return "unknown" if "unknown" in labels else None
    for label in labels:
        lo, sep, hi = label.partition("-")
        if sep and lo.isdigit() and hi.isdigit() and int(lo) <= year <= int(hi):
            return label
    return None


@dataclass
class ItemSideEncoding:
    """One model's item-side input rows ``[F, L]`` for cold items.

    Attributes:
        features: the model's sparse features in input order (the ``F`` axis).
        seq_len: ``L``.
        rules: per item-side feature, its :class:`FeatureRule`; other features stay
            ``-1`` (padding), as the trained item rows leave the user side empty.
        unknown: values seen that the maps did not hold (feature: value -> count).
    """

    features: list[str]
    seq_len: int
    rules: dict[str, FeatureRule]
    unknown: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        extra = sorted(set(self.rules) - set(self.features))
        if extra:
            raise ValueError(f"item-side rules for features {extra} not in {self.features}")

    def encode(self, items: Sequence[ColdItem]) -> np.ndarray:
        """``[n, F, L]`` int64 ids of ``items`` (``-1`` = padding)."""
        out = np.full((len(items), len(self.features), self.seq_len), -1, dtype=np.int64)
        for f, name in enumerate(self.features):
            rule = self.rules.get(name)
            if rule is None:
                continue
            for n, item in enumerate(items):
                ids, unknown = rule.ids(item)
                ids = ids[: self.seq_len]
                out[n, f, : len(ids)] = ids
                for value in unknown:
                    key = f"{name}: {value}"
                    self.unknown[key] = self.unknown.get(key, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "seq_len": int(self.seq_len),
            "rules": {k: r.to_json() for k, r in self.rules.items()},
        }

    @classmethod
    def from_json(cls, meta: Mapping[str, Any]) -> ItemSideEncoding:
        return cls(
            features=list(meta["features"]),
            seq_len=int(meta["seq_len"]),
            rules={
                k: FeatureRule(
                    kind=str(r["kind"]),
                    id=int(r.get("id", 0)),
                    map={str(a): int(b) for a, b in r.get("map", {}).items()},
                    max_len=int(r.get("max_len", 1)),
                )
                for k, r in meta["rules"].items()
            },
        )


@dataclass
class ColdItemSpec:
    """Everything the server needs to serve items published after training.

    Attributes:
        tower: the item tower's input rows.
        ranker: the ranker's item-side rows (None: the served model has no ranker).
        categories: the category names the vocabularies know (events naming others are
            refused by the catalogue consumer).
        excluded_categories: categories the business filters block (lower case).
        embedding_mean: ``[D]`` mean of the trained items' unit embeddings: MMR compares
            items by their embedding minus it (the offline recommender's
            ``diversity_vectors``); None: compare the raw embeddings.
        bias: the item-bias slot of a cold item's index vector, when the retrieval
            model has one: the trained items' mean bias (the exported item tower
            outputs the embedding only, so the item's own bias is not known).
    """

    tower: ItemSideEncoding
    ranker: ItemSideEncoding | None
    categories: list[str]
    excluded_categories: list[str] = field(default_factory=list)
    embedding_mean: np.ndarray | None = None
    bias: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tower": self.tower.to_json(),
            "ranker": None if self.ranker is None else self.ranker.to_json(),
            "categories": list(self.categories),
            "excluded_categories": list(self.excluded_categories),
            "embedding_mean": None
            if self.embedding_mean is None
            else [float(x) for x in self.embedding_mean],
            "bias": float(self.bias),
        }

    def save(self, folder: str | Path) -> Path:
        """Writes ``cold_items.json`` into ``folder``."""
        path = Path(folder) / SPEC_FILE
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ColdItemSpec:
        """Reads ``cold_items.json`` from ``folder``."""
        meta = json.loads((Path(folder) / SPEC_FILE).read_text())
        mean = meta.get("embedding_mean")
        return cls(
            tower=ItemSideEncoding.from_json(meta["tower"]),
            ranker=None
            if meta.get("ranker") is None
            else ItemSideEncoding.from_json(meta["ranker"]),
            categories=[str(c) for c in meta.get("categories", [])],
            excluded_categories=[str(c).lower() for c in meta.get("excluded_categories", [])],
            embedding_mean=None if mean is None else np.asarray(mean, dtype=np.float64),
            bias=float(meta.get("bias", 0.0)),
        )


# -- encoding and the serving tables ---------------------------------------------------

ItemTowerFn = Callable[[np.ndarray], np.ndarray]
"""``ids [n, F, L] int64 -> unit embeddings [n, D] float32`` (the exported item tower)."""


@dataclass
class EncodedItems:
    """Cold items with everything the serving tables need.

    Attributes:
        items: the items, in row order (row ``n_base + j`` is ``items[j]``).
        embeddings: ``[m, D]`` item-tower outputs (unit length).
        index_vectors: ``[m, D']`` what retrieval scores queries against (the
            embedding, plus the bias slot when the model has an item bias).
        diversity: ``[m, D]`` MMR vectors (centered like the trained ones, unit length).
        ranker_ids: ``[m, F', L']`` the ranker's item-side ids (None: no ranker).
    """

    items: list[ColdItem]
    embeddings: np.ndarray
    index_vectors: np.ndarray
    diversity: np.ndarray
    ranker_ids: np.ndarray | None


def encode_items(
    items: Sequence[ColdItem],
    spec: ColdItemSpec,
    item_tower: ItemTowerFn,
    append_bias: bool,
) -> EncodedItems:
    """Runs the item tower on the items' attribute ids and makes their table rows.

    Args:
        items: the cold items.
        spec: the encoding spec.
        item_tower: the exported item tower.
        append_bias: the index vectors end in an item-bias slot (queries end in 1).

    Raises:
        ValueError: the tower's output is not ``[len(items), D]`` or not finite.

    Example::

        encoded = encode_items([ColdItem(99999, ("Comedy",), "1998-01-01")], spec, tower, False)
    """
    ids = spec.tower.encode(items)
    if len(items) == 0:
        width = 0 if spec.embedding_mean is None else len(spec.embedding_mean)
        empty = np.zeros((0, width), dtype=np.float32)
        extra = np.zeros((0, width + int(append_bias)), dtype=np.float32)
        ranker = None if spec.ranker is None else spec.ranker.encode(items)
        return EncodedItems([], empty, extra, empty, ranker)
    emb = np.asarray(item_tower(ids), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(items) or not np.isfinite(emb).all():
        raise ValueError(
            f"the item tower returned {emb.shape} (finite: {bool(np.isfinite(emb).all())}) "
            f"for {len(items)} items"
        )
    index_vectors = emb
    if append_bias:
        index_vectors = np.hstack([emb, np.full((len(emb), 1), spec.bias, dtype=np.float32)])
    centered = emb.astype(np.float64)
    if spec.embedding_mean is not None:
        centered = centered - spec.embedding_mean[None, :]
    norms = np.maximum(np.linalg.norm(centered, axis=1, keepdims=True), 1e-12)
    ranker_ids = None if spec.ranker is None else spec.ranker.encode(items)
    return EncodedItems(
        list(items),
        emb,
        np.ascontiguousarray(index_vectors, dtype=np.float32),
        (centered / norms).astype(np.float32),
        ranker_ids,
    )


def _blocked(items: Sequence[ColdItem], spec: ColdItemSpec, n_base: int) -> np.ndarray:
    banned = set(spec.excluded_categories)
    rows = [
        n_base + j for j, item in enumerate(items) if banned & {c.lower() for c in item.categories}
    ]
    return np.asarray(rows, dtype=np.int64)


def extend_tables(base: Any, encoded: EncodedItems, spec: ColdItemSpec) -> Any:
    """``base`` (:class:`~recsys.runtime.engine.RecommendTables`) with the cold items
    appended as rows ``n_base ..``: raw ids, popularity 0, release time, MMR vectors,
    categories, business filters, and the history vocabulary's OOV id for profiles.

    Example::

        tables = extend_tables(engine_tables, encode_items(items, spec, tower, False), spec)
    """
    items, m, n_base = encoded.items, len(encoded.items), base.n_items
    if m == 0:
        return base
    categories = {name: np.asarray(rows, dtype=np.int64) for name, rows in base.categories.items()}
    for j, item in enumerate(items):
        for name in item.categories:
            rows = categories.get(name, np.zeros(0, dtype=np.int64))
            categories[name] = np.append(rows, n_base + j)
    profile = base.profile
    if profile is not None:
        profile = replace(
            profile,
            item_vocab=np.concatenate(
                [profile.item_vocab, np.full(m, profile.oov_id, dtype=np.int64)]
            ),
        )
    return replace(
        base,
        item_ids=np.concatenate([base.item_ids, [i.item_id for i in items]]).astype(np.int64),
        item_count=np.concatenate([base.item_count, np.zeros(m)]),
        release_time=np.concatenate([base.release_time, [i.release_time for i in items]]),
        item_embeddings=np.vstack([base.item_embeddings, encoded.diversity]).astype(np.float32),
        blocked=np.union1d(base.blocked, _blocked(items, spec, n_base)).astype(np.int64),
        categories=categories,
        profile=profile,
    )


def extend_features(base: Any, encoded: EncodedItems) -> Any:
    """``base`` (:class:`~recsys.runtime.ranker_features.RankerFeatures`) with the cold
    items appended: item-side ranker ids, no training interactions (popularity 0 in every
    window), the release time (item age), no co-occurrence with any item (affinity 0).

    Raises:
        ValueError: the spec had no ranker encoding.

    Example::

        features = extend_features(engine_features, encode_items(items, spec, tower, False))
    """
    m = len(encoded.items)
    if m == 0:
        return base
    if encoded.ranker_ids is None:
        raise ValueError("the cold-item spec has no ranker encoding")
    n = base.n_items
    item_item = {}
    for name, matrix in base.item_item.items():
        grown = np.zeros((n + m, n + m), dtype=np.float32)
        grown[:n, :n] = matrix
        item_item[name] = grown
    profile = base.profile
    if profile is not None:
        profile = replace(
            profile,
            item_vocab=np.concatenate(
                [profile.item_vocab, np.full(m, profile.oov_id, dtype=np.int64)]
            ),
        )
    last = base.item_offsets[-1]
    return replace(
        base,
        item_offsets=np.concatenate([base.item_offsets, np.full(m, last, dtype=np.int64)]),
        item_count=np.concatenate([base.item_count, np.zeros(m)]),
        release_time=np.concatenate([base.release_time, [i.release_time for i in encoded.items]]),
        item_item=item_item,
        item_ids=np.concatenate([base.item_ids, encoded.ranker_ids]).astype(np.int64),
        profile=profile,
    )


RetrievalFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class ColdRetrieval:
    """The trained catalogue's retrieval plus an exact search over the cold items.

    The index of the trained items (the ``retrieval`` model's FAISS index) answers
    first; the cold items' vectors are scored against every query exactly (a flat
    inner product, at most ``max_items`` of them) and merged by score, so the result is
    the top ``top_n`` of the union with item indices ``n_base + j`` for cold item ``j``.

    Args:
        base: the trained catalogue's retrieval call.
        n_base: items of the trained catalogue.
        vectors: ``[m, D']`` the cold items' index vectors.

    Example::

        retrieval = ColdRetrieval(searcher.search, 1682, encoded.index_vectors)
        ids, scores, counts = retrieval(queries, np.array([200]))
    """

    def __init__(self, base: RetrievalFn, n_base: int, vectors: np.ndarray) -> None:
        self.base = base
        self.n_base = int(n_base)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __call__(
        self, queries: np.ndarray, top_n: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, scores, counts = self.base(queries, top_n)
        if len(self.vectors) == 0:
            return ids, scores, counts
        ids, scores = np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)
        counts = np.asarray(counts).reshape(-1)
        wanted = np.asarray(top_n, dtype=np.int64).reshape(-1)
        cold = np.asarray(queries, dtype=np.float32) @ self.vectors.T
        width = int(wanted.max(initial=0))
        out_ids = np.full((len(ids), width), -1, dtype=np.int64)
        out_scores = np.full((len(ids), width), -np.inf, dtype=np.float32)
        out_counts = np.zeros(len(ids), dtype=np.int64)
        cold_ids = np.arange(self.n_base, self.n_base + len(self.vectors), dtype=np.int64)
        for row in range(len(ids)):
            real = int(counts[row])
            pool_ids = np.concatenate([ids[row, :real], cold_ids])
            pool_scores = np.concatenate([scores[row, :real], cold[row]])
            # best first; equal scores keep the base's order, then the cold items'
            order = np.argsort(-pool_scores, kind="stable")[: int(wanted[row])]
            out_ids[row, : len(order)] = pool_ids[order]
            out_scores[row, : len(order)] = pool_scores[order]
            out_counts[row] = len(order)
        return out_ids, out_scores, out_counts


# -- the updater ---------------------------------------------------------------------


class CatalogueSource(Protocol):
    """Anything that returns catalogue records written after a version, oldest first."""

    def changes(self, after_version: int, limit: int) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ColdItemsConfig:
    """Bounds of :class:`ColdItemUpdater`.

    Attributes:
        poll_s: seconds between two reads of the store (the time from a stored record
            to a recommendable item is at most this plus one request).
        max_items: cold items served in all; records for further new ids are skipped
            (and logged) until the next build of the repository.
        per_poll: records read per poll; the rest waits for the next poll.

    Example:
        >>> ColdItemsConfig(poll_s=0.5).max_items
        1000
    """

    poll_s: float = 2.0
    max_items: int = 1000
    per_poll: int = 200

    def __post_init__(self) -> None:
        if not self.poll_s > 0:
            raise ValueError(f"poll_s must be > 0, got {self.poll_s}")
        if self.max_items < 1 or self.per_poll < 1:
            raise ValueError("max_items and per_poll must be >= 1")


@dataclass
class ColdItemStats:
    """Counters of a :class:`ColdItemUpdater` (logged by the server)."""

    polls: int = 0
    records: int = 0
    added: int = 0
    updated: int = 0
    trained: int = 0
    capped: int = 0
    failures: int = 0


class ColdItemUpdater:
    """Keeps a :class:`~recsys.runtime.engine.RecommendEngine` serving the cold items.

    Args:
        engine: the engine; its ``tables``, ``features`` and ``retrieval`` are replaced
            by extended ones whenever the cold items change (the trained ones are kept
            to extend from).
        spec: the encoding spec.
        item_tower: the exported item tower.
        source: the catalogue records (e.g.
            :class:`recsys.events.catalogue.CatalogueStore`).
        config: poll interval and caps.
        warn: called with problems (store unavailable, caps, unknown values).
        info: called with changes (items added or updated).
        clock: monotonic seconds (tests).
        on_change: called after the engine's tables changed (e.g. to recompile the
            targeting rules against the grown catalogue: :func:`rules_follow`).

    Example::

        updater = ColdItemUpdater(engine, spec, onnx_item_tower(path), StoreCatalogue(url))
        updater.load_all()    # at start: everything stored so far
        updater.refresh()     # before each batch: a poll when one is due
    """

    def __init__(
        self,
        engine: Any,
        spec: ColdItemSpec,
        item_tower: ItemTowerFn,
        source: CatalogueSource,
        config: ColdItemsConfig | None = None,
        warn: Callable[[str], None] | None = None,
        info: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if engine.features is not None and spec.ranker is None:
            raise ValueError("the engine ranks with a ranker but the spec has no ranker rows")
        if (
            engine.features is not None
            and spec.ranker is not None
            and (
                list(spec.ranker.features) != list(engine.features.sparse_names)
                or spec.ranker.seq_len != engine.features.seq_len
            )
        ):
            raise ValueError(
                f"the spec's ranker rows are {spec.ranker.features} x {spec.ranker.seq_len}, "
                f"the served ranker reads {engine.features.sparse_names} x "
                f"{engine.features.seq_len}: build the repository's cold items again"
            )
        self.engine = engine
        self.spec = spec
        self.item_tower = item_tower
        self.source = source
        self.config = config or ColdItemsConfig()
        self.warn = warn or (lambda message: None)
        self.info = info or (lambda message: None)
        self.clock = clock
        self.on_change = on_change
        self.stats = ColdItemStats()
        self.base_tables = engine.tables
        self.base_features = engine.features
        self.base_retrieval = engine.retrieval
        self.items: dict[int, ColdItem] = {}  # insertion order = row order
        self.version = 0
        self._next_poll = -math.inf
        self.last_read = 0
        self._trained = set(self.base_tables.item_ids.tolist())

    @property
    def count(self) -> int:
        """Cold items served now."""
        return len(self.items)

    def refresh(self, force: bool = False) -> int:
        """Reads the store when a poll is due (or ``force``) and applies what changed.

        A store that cannot be read is logged and counted; the engine keeps serving the
        items it has.

        Returns:
            Items added or updated by this call.
        """
        now = self.clock()
        if not force and now < self._next_poll:
            return 0
        self._next_poll = now + self.config.poll_s
        self.stats.polls += 1
        self.last_read = 0
        try:
            records = self.source.changes(self.version, self.config.per_poll)
        except Exception as error:  # the requests are still answered
            self.stats.failures += 1
            self.warn(
                f"cold items: catalogue unavailable ({self.stats.failures} failures): {error}"
            )
            return 0
        self.last_read = len(records)
        if len(records) >= self.config.per_poll:
            self.warn(
                f"cold items: {len(records)} records read this poll (per_poll cap); the rest "
                f"follows in {self.config.poll_s} s"
            )
        return self.apply([ColdItem.from_record(r) for r in records])

    def load_all(self) -> int:
        """Reads every record after the held version, page by page, and applies them in
        the order the items were first published (what a server that ran all along
        holds, caps included). Returns the items added or updated."""
        records: list[dict[str, Any]] = []
        version = self.version
        try:
            while True:
                page = self.source.changes(version, self.config.per_poll)
                records += page
                if len(page) < self.config.per_poll:
                    break
                version = max(int(r.get("version", 0)) for r in page)
        except Exception as error:  # served from the trained catalogue until a poll reads
            self.stats.failures += 1
            self.warn(f"cold items: catalogue unavailable at start: {error}")
            return 0
        self._next_poll = self.clock() + self.config.poll_s
        records.sort(key=lambda r: (int(r.get("created", 0)), int(r.get("version", 0))))
        return self.apply([ColdItem.from_record(r) for r in records])

    def apply(self, records: Sequence[ColdItem]) -> int:
        """Adds new items and updates known ones, then swaps the engine's tables.

        Nothing changes when the rebuild fails (logged and counted): the records are
        read again at the next poll.
        """
        items, version, changed = dict(self.items), self.version, 0
        stats = replace(self.stats)
        for item in records:
            stats.records += 1
            version = max(version, item.version)
            if item.item_id in self._trained:
                stats.trained += 1
                self.warn(
                    f"cold items: item {item.item_id} is in the trained catalogue; its "
                    "training attributes are kept, the record is ignored"
                )
                continue
            if item.item_id in items:
                items[item.item_id] = item  # same row, new attributes
                stats.updated += 1
                changed += 1
                continue
            if len(items) >= self.config.max_items:
                stats.capped += 1
                self.warn(
                    f"cold items: the cap of {self.config.max_items} items is reached; item "
                    f"{item.item_id} is not served (raise max_items and rebuild, or retrain)"
                )
                continue
            items[item.item_id] = item
            stats.added += 1
            changed += 1
        if changed:
            try:
                self._rebuild(list(items.values()))
            except Exception as error:  # keep serving what was served
                self.stats.failures += 1
                self.warn(f"cold items: could not add {changed} item(s): {error}")
                return 0
        self.items, self.version, self.stats = items, version, stats
        if changed and self.on_change is not None:
            self.on_change()
        if changed:
            self.info(
                f"cold items: {changed} added or updated, {len(items)} served "
                f"(catalogue version {version})"
            )
        return changed

    def _rebuild(self, items: list[ColdItem]) -> None:
        before = dict(self.spec.tower.unknown)
        encoded = encode_items(
            items, self.spec, self.item_tower, bool(self.base_tables.query_append_one)
        )
        if self.spec.tower.unknown != before:
            self.warn(f"cold items: values outside the vocabularies took the OOV row: "
                      f"{self.spec.tower.unknown}")  # fmt: skip
        tables = extend_tables(self.base_tables, encoded, self.spec)
        features = (
            None if self.base_features is None else extend_features(self.base_features, encoded)
        )
        retrieval = ColdRetrieval(
            self.base_retrieval, self.base_tables.n_items, encoded.index_vectors
        )
        # one assignment each, between two batches: a request sees the old or the new rows
        self.engine.tables, self.engine.features, self.engine.retrieval = (
            tables,
            features,
            retrieval,
        )


def rules_follow(engine: Any) -> Callable[[], None]:
    """The ``on_change`` that makes an engine's reloading targeting rules (a
    :class:`~recsys.runtime.targeting.RuleFile` whose loader reads
    ``engine.tables.catalog()``) compile again, so categories include the cold items.

    Example::

        rules = RuleFile(path, lambda p: load_rules(p, engine.tables.catalog()))
        updater = ColdItemUpdater(engine, spec, tower, source, on_change=rules_follow(engine))
    """

    def invalidate() -> None:
        rules = getattr(engine, "rules", None)
        if rules is not None and hasattr(rules, "invalidate"):
            rules.invalidate()

    return invalidate


class StoreCatalogue:
    """The catalogue table of the store a URL names, opened on first use (a
    :class:`CatalogueSource`).

    Args:
        url: ``sqlite:///path`` or ``redis://host:port/db[?prefix=P]`` (the profile
            store's URL forms, :func:`~recsys.runtime.user_state.parse_store_url`).

    Example::

        StoreCatalogue("sqlite:///var/recsys/rt.db").changes(0, 100)   # records, oldest first
    """

    def __init__(self, url: str) -> None:
        from recsys.runtime.user_state import parse_store_url

        parse_store_url(url)  # a bad URL fails at start-up, not at the first poll
        self.url = url
        self._catalogue: Any = None

    def changes(self, after_version: int, limit: int) -> list[dict[str, Any]]:
        if self._catalogue is None:
            from recsys.events.catalogue import CatalogueStore
            from recsys.runtime.user_state import open_store_url

            self._catalogue = CatalogueStore(open_store_url(self.url))
        try:
            return list(self._catalogue.changes(after_version, limit))
        except Exception:
            self._catalogue = None  # reopen at the next poll
            raise


def onnx_item_tower(path: str | Path, threads: int = 1) -> ItemTowerFn:
    """The exported item tower through onnxruntime (imported when called: only cold items
    need it).

    Example::

        tower = onnx_item_tower("repo/recommend/1/item_tower.onnx")
        embeddings = tower(ids)      # ids [n, F, L] int64
    """
    from recsys.runtime.inline_stages import onnx_tower

    return onnx_tower(path, threads)


def open_cold_items(
    engine: Any,
    folder: str | Path,
    url: str,
    config: ColdItemsConfig | None = None,
    warn: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None,
    on_change: Callable[[], None] | None = None,
) -> ColdItemUpdater:
    """The updater of a ``recommend`` version folder (``cold_items.json`` and
    ``item_tower.onnx`` written by ``build-repo --cold-items``) on the store at ``url``;
    the store's catalogue is read once now, so a restarted server serves the cold items
    it served before.

    Raises:
        FileNotFoundError: the folder lacks the spec or the item tower.
    """
    path = Path(folder)
    missing = [n for n in (SPEC_FILE, ITEM_TOWER_FILE) if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: cold items need {missing} (build the repository with --cold-items)"
        )
    updater = ColdItemUpdater(
        engine,
        ColdItemSpec.load(path),
        onnx_item_tower(path / ITEM_TOWER_FILE),
        StoreCatalogue(url),
        config,
        warn=warn,
        info=info,
    )
    # everything stored so far, not one poll's worth: a restart serves what it served
    updater.load_all()
    return updater
