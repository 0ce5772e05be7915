"""The end-to-end job behind ``scripts/run.sh``.

Stages, in order: data -> baselines -> retrieval -> two_stage -> index -> bundle -> serve.

``bundle`` is training's last stage: it writes the run bundle
(:mod:`recsys.bundle.layout`), the one folder everything serving reads.

Each stage is a function of the resolved Hydra config and the previous stages'
outputs, so a researcher can run any subset (``stages=[data,baselines]``) and
every run leaves its processed data, metrics, per-user top-k lists and a
results table behind.

With ``data.erasure_ledger`` set (a ``redis://`` or ``sqlite:///`` store URL),
the data stage drops every erased user's rows (interactions and the user table)
right after loading, before cleaning and splitting, so no split, feature or
model sees them; what it dropped is printed, logged and kept in the processed
data's manifest, and a ledger that cannot be read stops the stage.

Model selection never sees the test set: early stopping runs on a validation
split carved out of the training interactions with the main split's own
protocol, then the model is refit on all training interactions for the
selected number of epochs and evaluated once on test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import torch

from recsys.config import build
from recsys.data.cleaning import clean
from recsys.data.frame import RATING, USER, DataConfigError, DataError, InteractionData
from recsys.data.registry import DatasetConfig
from recsys.data.registry import load as load_from_config
from recsys.data.registry import resolve as resolve_dataset_files
from recsys.data.schema_check import FeatureNeed, check_schema
from recsys.data.splits import Split, SplitConfig, split, stratified_split
from recsys.eval.harness import EvalConfig, EvalHarness, EvalResult
from recsys.eval.report import metrics_table
from recsys.features.build import (
    AGE_BUCKET,
    HOUR,
    POPULARITY_BUCKET,
    RECENT_ITEMS,
    WEEKDAY,
    YEAR_BUCKET,
    build_features,
)
from recsys.features.schema import FeatureSchema
from recsys.features.store import ProcessedDataset, load_or_build
from recsys.index import IndexConfig, ItemIndex
from recsys.models.baselines import BPRConfig, BPRRecommender, PopularityRecommender
from recsys.models.registry import build_retrieval_model, retrieval_label
from recsys.models.retrieval import RetrievalModel
from recsys.privacy.erasure import filter_erased
from recsys.training.retrieval import (
    EpochLog,
    RetrievalData,
    RetrievalTrainer,
    RetrievalTrainerConfig,
)
from recsys.training.tracking import Tracker, TrackingConfig

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def dataclass_from(
    cls: type[T], raw: dict[str, Any] | None, where: str = "config", **overrides: Any
) -> T:
    """Dataclass ``cls`` from a config group plus ``overrides`` (:func:`recsys.config.build`:
    an unknown key or a wrong type is an error naming ``where.<key>``)."""
    return build(cls, {**(raw or {}), **overrides}, where)


def repo_path(path: str | Path) -> Path:
    """A config path: absolute as given, else relative to the repository."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


@dataclass
class Prepared:
    """Outputs of the data stage.

    Attributes:
        schema: the feature schema.
        main: features of the main split (train vs test).
        selection: features of the model-selection split (part of train vs the
            rest of train); None when no stage needs it.
        data: the cleaned dataset, when it was loaded (a cache hit skips it).
        timings: seconds per step.
        erasure: what the erasure ledger removed (None: no ledger configured).
    """

    schema: FeatureSchema
    main: ProcessedDataset
    selection: ProcessedDataset
    data: InteractionData | None = None
    timings: dict[str, float] = field(default_factory=dict)
    erasure: ErasureReport | None = None


@dataclass(frozen=True)
class DataStageConfig:
    """The ``data`` group of the job config: what the data stage does with
    the loaded dataset, whichever it is.

    Attributes:
        erasure_ledger: the real-time store whose erasure ledger is applied
            (``redis://host:port/db[?prefix=P]`` or ``sqlite:///path``, as the
            serving side names stores); every erased user's rows are dropped
            before cleaning and splitting. None: no user is dropped.
    """

    erasure_ledger: str | None = None


class ErasureLedgerError(DataError):
    """The configured erasure ledger cannot be opened or read (the data stage
    never runs without it: training on erased users is not a fallback)."""


@dataclass(frozen=True)
class ErasureReport:
    """What the erasure ledger removed from the loaded dataset.

    Attributes:
        ledger: the store URL (password hidden).
        erased: tombstones in the ledger (erased users, in this dataset or not).
        rows_dropped: interactions dropped.
        users_dropped: distinct users those rows belonged to.
        user_rows_dropped: rows dropped from the user table (demographics).
    """

    ledger: str
    erased: int
    rows_dropped: int
    users_dropped: int
    user_rows_dropped: int = 0

    def summary(self) -> str:
        """One line for the job's output."""
        return (
            f"erasure: ledger {self.ledger} lists {self.erased:,} erased users; dropped "
            f"{self.rows_dropped:,} interactions of {self.users_dropped:,} users and "
            f"{self.user_rows_dropped:,} rows of the user table before the split"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger,
            "erased": self.erased,
            "rows_dropped": self.rows_dropped,
            "users_dropped": self.users_dropped,
            "user_rows_dropped": self.user_rows_dropped,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ErasureReport:
        return cls(
            str(raw["ledger"]),
            int(raw["erased"]),
            int(raw["rows_dropped"]),
            int(raw["users_dropped"]),
            int(raw.get("user_rows_dropped", 0)),
        )


def _shown_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class ErasureLedger:
    """The erased users' tombstones, read once from a store.

    Attributes:
        url: the store URL as shown (password hidden).
        tombstones: the ledger (:func:`recsys.privacy.erasure.erase_user` adds
            the pseudonym of the user id's text).
    """

    url: str
    tombstones: frozenset[str]

    @classmethod
    def read(cls, url: str, timeout_s: float = 30.0) -> ErasureLedger:
        """Opens the store at ``url`` and reads its ledger.

        Raises:
            ErasureLedgerError: a bad URL, a SQLite file that does not exist,
                a server that does not answer, any failure reading the ledger.
        """
        from recsys.runtime.user_state import open_store_url

        shown = _shown_url(url)
        try:
            store = open_store_url(url, timeout_s)
        except Exception as e:
            raise ErasureLedgerError(
                f"data.erasure_ledger={shown}: cannot open the store ({type(e).__name__}: {e}); "
                "training without the ledger could use erased users' data, so the data stage "
                "stops (set data.erasure_ledger=null to build without one)"
            ) from e
        try:
            tombstones = frozenset(store.erased())
        except Exception as e:
            raise ErasureLedgerError(
                f"data.erasure_ledger={shown}: cannot read the erasure ledger "
                f"({type(e).__name__}: {e})"
            ) from e
        finally:
            store.close()
        return cls(shown, tombstones)

    def digest(self) -> str:
        """SHA-256 of the sorted tombstones (part of the processed-data cache key,
        so a new erasure rebuilds the data)."""
        return hashlib.sha256("\n".join(sorted(self.tombstones)).encode()).hexdigest()

    def apply(self, data: InteractionData) -> tuple[InteractionData, ErasureReport]:
        """Drops the erased users' interactions and user-table rows."""
        frame = data.interactions
        kept, dropped = filter_erased(frame, self.tombstones)
        users_dropped = int(frame[USER].nunique()) - int(kept[USER].nunique()) if dropped else 0
        users = data.users
        user_rows = 0
        if users is not None and USER in users.columns:
            users, user_rows = filter_erased(users, self.tombstones)
        report = ErasureReport(self.url, len(self.tombstones), dropped, users_dropped, user_rows)
        if not dropped and not user_rows:
            return data, report
        out = replace(
            data,
            interactions=kept.reset_index(drop=True),
            users=None if users is None else users.reset_index(drop=True),
        )
        return out, report


def load_dataset(dataset_cfg: dict[str, Any]) -> tuple[InteractionData, list[Path]]:
    """Loads and cleans the configured dataset; returns it and its source files.

    The loader is picked by name (``dataset.loader``) from the data layer's
    registry, :data:`recsys.data.registry.LOADERS`, and reads the files with
    the config's delimiters, column maps and rating scale; a missing dataset is
    downloaded unless ``dataset.download`` is false or ``dataset.offline`` is
    set. What each file kept, repaired, filtered and rejected, and what every
    cleaning step removed, is printed (not only logged): nothing is left out
    unseen.

    Args:
        dataset_cfg: the ``dataset`` config group (``configs/dataset/<name>.yaml``).

    Returns:
        The cleaned dataset and the files it was read from (for the cache key).

    Raises:
        DataConfigError: an unknown key or loader, a bad value, or a dataset
            of impressions (Criteo) where interactions are needed.
        DatasetNotFoundError: the files are missing and cannot be downloaded.
        MalformedDataError: ``dataset.strict`` and a file has rejected rows.

    Example:
        >>> data, files = load_dataset({"name": "ml-100k", "loader": "ml100k"})  # doctest: +SKIP
    """
    data, files, _ = _load_dataset(dataset_cfg, None)
    return data, files


def _load_dataset(
    dataset_cfg: dict[str, Any], ledger: ErasureLedger | None
) -> tuple[InteractionData, list[Path], ErasureReport | None]:
    """:func:`load_dataset`, dropping the erased users of ``ledger`` (if any)
    between loading and cleaning."""
    config = DatasetConfig.from_dict(dataset_cfg)
    loaded = load_from_config(config)
    print(loaded.summary())
    if loaded.data is None:
        raise DataConfigError(
            f"dataset {config.name} (loader {config.loader}) holds labelled ad impressions, "
            "not user-item interactions: the main job's stages need an interaction dataset "
            "(e.g. dataset=ml100k, dataset=ml25m, dataset=interactions); train the DLRM "
            "ranker on impressions with training/train_ranker.py"
        )
    raw = loaded.data
    report = None
    if ledger is not None:
        raw, report = ledger.apply(raw)
        log.info("%s", report.summary())
    data, creport = clean(raw, config.cleaning)
    print("cleaning:\n" + "\n".join(f"  {line}" for line in creport.summary().splitlines()))
    log.info("cleaning: %s", creport.summary())
    return data, loaded.files, report


# Columns the feature build derives from side-table columns, and the ones it
# always makes: what a schema may read beyond the loaded tables' own columns.
_DERIVED = {AGE_BUCKET: ("users", "age"), YEAR_BUCKET: ("items", "year")}
_GENERATED = {
    "user": (RECENT_ITEMS, HOUR, WEEKDAY),
    "item": (POPULARITY_BUCKET,),
    "context": (RECENT_ITEMS, HOUR, WEEKDAY),
}
# Dataset keys that say where or whether to fetch the files, not what they hold:
# left out of the processed-data cache key (the files' sha256 is in it already).
_FETCH_KEYS = ("dir", "download", "offline", "allow_unverified")


def _feature_needs(schema: FeatureSchema) -> list[FeatureNeed]:
    return [FeatureNeed(f.name, f.role.value, f.source, f.kind.value, f.max_len) for f in schema]


def _schema_path(dataset_cfg: dict[str, Any]) -> Path:
    """The configured feature schema file; a clear error when it is unset or absent."""
    raw = dataset_cfg.get("schema")
    if not raw:
        raise DataConfigError(
            f"dataset {dataset_cfg.get('name')!r} has no feature schema (dataset.schema is "
            "null); set dataset.schema to a file under configs/schema/, e.g. "
            "configs/schema/interactions.yaml"
        )
    path = repo_path(raw)
    if not path.is_file():
        known = ", ".join(p.name for p in sorted(path.parent.glob("*.yaml")))
        raise DataConfigError(
            f"dataset.schema={raw}: no such file ({path}); files in {path.parent}: "
            f"{known or 'none'}"
        )
    return path


def _check_schema(data: InteractionData, schema: FeatureSchema, path: Path) -> None:
    """Fails with the fix when the schema reads columns ``data`` lacks; prints notes."""
    alternatives: dict[str, list[FeatureNeed]] = {}
    for other in sorted(path.parent.glob("*.yaml")):
        try:
            shown = str(other.relative_to(REPO_ROOT))
        except ValueError:
            shown = str(other)
        try:
            alternatives[shown] = _feature_needs(FeatureSchema.from_yaml(other))
        except Exception:  # a broken neighbour is no reason to fail
            continue
    try:
        shown_path = str(path.relative_to(REPO_ROOT))
    except ValueError:
        shown_path = str(path)
    notes = check_schema(
        data,
        _feature_needs(schema),
        schema_file=shown_path,
        derived=_DERIVED,
        generated=_GENERATED,
        alternatives=alternatives,
    )
    for note in notes:
        print(f"schema: {note}")


def _report_split_filter(data: InteractionData, split_cfg: SplitConfig) -> None:
    """Prints how many interactions the split's ``min_rating`` leaves out (if any)."""
    if split_cfg.method != "stratified" or split_cfg.min_rating is None:
        return
    if RATING not in data.interactions.columns:
        return
    below = int((data.interactions[RATING] < split_cfg.min_rating).sum())
    if below:
        print(
            f"split: min_rating {split_cfg.min_rating:g} leaves out {below:,} of "
            f"{len(data.interactions):,} interactions rated below it "
            "(split.min_rating=null keeps them)"
        )


def selection_split(train: pd.DataFrame, split_cfg: SplitConfig, ratio: float, seed: int) -> Split:
    """Carves a validation split out of ``train`` with the main split's protocol."""
    if split_cfg.method == "stratified":
        fit, valid = stratified_split(train, ratio, split_cfg.by, seed)
        return Split(train=fit, test=valid)
    inner = split(train, split_cfg)
    return Split(train=inner.train, test=inner.test)


def prepare(cfg: dict[str, Any], artifacts: Path) -> Prepared:
    """The data stage: load, clean, split, build features; cached on disk.

    Processed data is reused when the source files' sha256 and the settings
    that shape it are unchanged (with ``data.erasure_ledger``, the ledger's
    tombstones too: an erasure since the last build rebuilds it). With a
    ledger, erased users' rows are dropped before cleaning and splitting (see
    the module docstring); the counts are printed, logged, kept in both
    processed datasets' manifests (``erasure``) and returned. Before features
    are built, the feature schema is checked against the loaded data: a
    feature whose column the dataset lacks (e.g. demographics on ML-25M) stops
    the stage with a message naming the column and the schema to use.

    Args:
        cfg: the resolved job config (``dataset``, ``split`` and ``data`` groups).
        artifacts: the artifacts folder (``processed/`` is written under it).

    Returns:
        The schema, the main and selection feature sets, timings and the
        erasure report.

    Raises:
        DataConfigError: bad dataset or data config, no or missing schema file,
            or a schema that does not fit the data (SchemaMismatchError).
        DatasetNotFoundError: the data is missing and cannot be downloaded.
        ErasureLedgerError: ``data.erasure_ledger`` cannot be opened or read.

    Example:
        >>> prep = prepare(cfg, Path("artifacts/ml-100k"))  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    dataset = DatasetConfig.from_dict(cfg["dataset"])
    schema_path = _schema_path(cfg["dataset"])
    schema = FeatureSchema.from_yaml(schema_path)
    split_raw = dict(cfg["split"])
    validation = split_raw.pop("validation", {}) or {}
    split_cfg = dataclass_from(SplitConfig, split_raw, "split")
    data_cfg = build(DataStageConfig, dict(cfg.get("data") or {}), "data")
    # Read once, before anything is built or reused: the filter and the cache
    # key see the same ledger, and a ledger that cannot be read stops here.
    ledger = ErasureLedger.read(data_cfg.erasure_ledger) if data_cfg.erasure_ledger else None
    _, files = resolve_dataset_files(dataset)
    state: dict[str, Any] = {}

    def loaded() -> InteractionData:
        if "data" not in state:
            data, _, erasure = _load_dataset(cfg["dataset"], ledger)
            _check_schema(data, schema, schema_path)
            _report_split_filter(data, split_cfg)
            state["data"] = data
            state["erasure"] = erasure
            state["split"] = split(data.interactions, split_cfg)
        data_: InteractionData = state["data"]
        return data_

    def with_erasure(dataset: ProcessedDataset) -> ProcessedDataset:
        if state.get("erasure") is not None:
            dataset.manifest["erasure"] = state["erasure"].to_dict()
        return dataset

    shaping = {k: v for k, v in dict(cfg["dataset"]).items() if k not in _FETCH_KEYS}
    key: dict[str, Any] = {"dataset": shaping, "split": split_raw, "schema": schema.to_dict()}
    if ledger is not None:  # absent without a ledger: the key (and caches) stay as they were
        key["erasure_ledger"] = ledger.digest()
    main = load_or_build(
        artifacts / "processed" / "main",
        files,
        key,
        lambda: with_erasure(build_features(loaded(), state["split"], schema)),
    )

    def build_selection() -> ProcessedDataset:
        data = loaded()
        inner = selection_split(
            state["split"].train,
            split_cfg,
            float(validation.get("ratio", 0.9)),
            int(validation.get("seed", 7)),
        )
        return with_erasure(build_features(data, inner, schema))

    selection = load_or_build(
        artifacts / "processed" / "selection",
        files,
        {**key, "validation": validation},
        build_selection,
    )
    erasure: ErasureReport | None = state.get("erasure")
    if ledger is not None and erasure is None and "erasure" in main.manifest:
        erasure = ErasureReport.from_dict(main.manifest["erasure"])  # a cache hit
    if erasure is not None:
        reused = " (the cached processed data was built so)" if "erasure" not in state else ""
        print(erasure.summary() + reused)
        log.info("%s", erasure.summary())
    return Prepared(
        schema=schema,
        main=main,
        selection=selection,
        data=state.get("data"),
        timings={"data": time.perf_counter() - t0},
        erasure=erasure,
    )


def run_baselines(cfg: dict[str, Any], prep: Prepared) -> dict[str, tuple[EvalResult, float]]:
    """Popularity and BPR-MF, fit on train and scored in the common harness."""
    eval_cfg = dataclass_from(
        EvalConfig, cfg["eval"], "eval", k_values=tuple(cfg["eval"]["k_values"])
    )
    harness = EvalHarness.from_processed(prep.main, eval_cfg)
    users, items = harness.train_pairs()
    out: dict[str, tuple[EvalResult, float]] = {}
    base = cfg.get("baselines", {}) or {}
    if base.get("popularity", True):
        t0 = time.perf_counter()
        pop = PopularityRecommender().fit(users, items, harness.n_users, harness.n_items)
        out["Popularity"] = (harness.evaluate(pop.score), time.perf_counter() - t0)
    if base.get("bpr"):
        t0 = time.perf_counter()
        bpr_cfg = dataclass_from(
            BPRConfig, dict(base["bpr"]), "baselines.bpr", seed=int(cfg["seed"])
        )
        bpr = BPRRecommender(bpr_cfg).fit(
            users, items, harness.n_users, harness.n_items, show_progress=True
        )
        out["BPR-MF"] = (harness.evaluate(bpr.score), time.perf_counter() - t0)
    return out


def retrieval_name(cfg: dict[str, Any]) -> str:
    """The retrieval model's name in the results table (``Two-tower``, ``MF``, ...)."""
    return retrieval_label(str(cfg["model"].get("name", "")))


def build_retrieval(
    cfg: dict[str, Any], prep: Prepared, dataset: ProcessedDataset
) -> RetrievalModel:
    """The configured retrieval model (``model.name``), tables sized by ``dataset``'s vocabularies.

    The one place the main job builds a retriever: :mod:`recsys.models.registry` picks
    the builder by the ``model`` group's ``name``.
    """
    sizes = dataset.vocabs.num_embeddings() if dataset.vocabs is not None else {}
    return build_retrieval_model(dict(cfg["model"]), prep.schema, sizes)


def run_retrieval(
    cfg: dict[str, Any], prep: Prepared, run_dir: Path, tracker: Tracker
) -> tuple[EvalResult, float, RetrievalTrainer]:
    """Model selection on the validation split, refit on all of train, test once."""
    t0 = time.perf_counter()
    trainer_raw = {**dict(cfg["trainer"]), **dict(cfg.get("optimizer") or {})}
    refit = bool(trainer_raw.pop("refit_full", True))
    eval_cfg = dataclass_from(
        EvalConfig, cfg["eval"], "eval", k_values=tuple(cfg["eval"]["k_values"])
    )
    ckpt = trainer_raw.get("checkpoint_dir") or str(run_dir / "checkpoints")

    # 1. select the number of epochs on the validation split
    sel_model = build_retrieval(cfg, prep, prep.selection)
    sel_data = RetrievalData.build(prep.selection, sel_model.schema, sel_model.feature_names)
    sel_cfg = dataclass_from(
        RetrievalTrainerConfig, trainer_raw, "trainer", checkpoint_dir=f"{ckpt}/selection"
    )
    selector = RetrievalTrainer(
        sel_model, sel_data, sel_cfg, log_fn=lambda m, s: tracker.log_phase("select", m, s)
    )
    selector.fit(EvalHarness.from_processed(prep.selection, eval_cfg))
    plot_training(selector.history, sel_cfg.monitor, run_dir / "training_curve.png")
    best_epochs = max(selector.best_epoch, 1)
    log.info(
        "selected %d epochs (validation %s %.4f)",
        best_epochs,
        sel_cfg.monitor,
        selector.best_metric,
    )
    if not refit:
        result = selector.evaluate(EvalHarness.from_processed(prep.main, eval_cfg))
        return result, time.perf_counter() - t0, selector

    # 2. refit on every training interaction for that many epochs, then test
    model = build_retrieval(cfg, prep, prep.main)
    data = RetrievalData.build(prep.main, model.schema, model.feature_names)
    final_cfg = dataclass_from(
        RetrievalTrainerConfig,
        trainer_raw,
        "trainer",
        epochs=best_epochs,
        checkpoint_dir=f"{ckpt}/final",
    )
    trainer = RetrievalTrainer(
        model, data, final_cfg, log_fn=lambda m, s: tracker.log_phase("final", m, s)
    )
    trainer.fit(None)
    result = trainer.evaluate(EvalHarness.from_processed(prep.main, eval_cfg))
    return result, time.perf_counter() - t0, trainer


def slug(name: str) -> str:
    """A file-name form of a model name ("Two-tower + FAISS" -> "two_tower_faiss")."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def plot_training(history: list[EpochLog], monitor: str, path: Path) -> None:
    """Training loss and validation metric per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h.loss for h in history], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    valid = [(h.epoch, h.valid[monitor]) for h in history if monitor in h.valid]
    if valid:
        ax2 = ax.twinx()
        ax2.plot(*zip(*valid, strict=True), color="tab:orange", marker=".", label=monitor)
        ax2.set_ylabel(f"validation {monitor}", color="tab:orange")
    ax.set_title("two-tower model selection")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


def run(cfg: dict[str, Any], run_dir: Path) -> dict[str, dict[str, float]]:
    """Runs the configured stages; returns metrics per model and writes results.

    Files written to ``run_dir``: ``metrics.json``, ``results.md`` and
    ``topk/<model>.parquet`` (per-user lists in original ids).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    torch.manual_seed(int(cfg["seed"]))
    stages = list(cfg["stages"])
    artifacts = repo_path(cfg["artifacts_dir"])
    track_cfg = dataclass_from(TrackingConfig, cfg.get("tracking"), "tracking")
    if track_cfg.dir is None:
        track_cfg.dir = str(run_dir)
    tracker = Tracker(track_cfg, run_config=cfg)

    prep = prepare(cfg, artifacts)
    print(
        f"data: {cfg['dataset']['name']}: train {prep.main.manifest['rows']['train']:,} / "
        f"test {prep.main.manifest['rows']['test']:,} interactions, "
        f"{len(prep.main.users):,} users, {len(prep.main.items):,} items "
        f"({prep.main.manifest.get('cache', 'built')}, {prep.timings['data']:.1f} s)"
    )
    results: dict[str, tuple[EvalResult, float]] = {}
    if "baselines" in stages:
        results.update(run_baselines(cfg, prep))
    if "retrieval" in stages:
        res, secs, trainer = run_retrieval(cfg, prep, run_dir, tracker)
        results[retrieval_name(cfg)] = (res, secs)
        emb_dir = artifacts / "retrieval"
        emb_dir.mkdir(parents=True, exist_ok=True)
        np.save(emb_dir / "item_embeddings.npy", trainer.item_embeddings().numpy())
        np.save(emb_dir / "user_embeddings.npy", trainer.user_embeddings().numpy())
        queries, item_vectors = trainer.retrieval_vectors()
        np.save(emb_dir / "query_vectors.npy", queries.numpy())  # inner product = score
        np.save(emb_dir / "item_vectors.npy", item_vectors.numpy())
        # CPU tensors: the file loads on any machine, whatever device trained it.
        state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
        torch.save(state, emb_dir / "two_tower.pt")
    two_stage = None
    if "two_stage" in stages:
        if "retrieval" not in stages:
            raise ValueError("stage 'two_stage' needs the 'retrieval' stage in the same run")
        two_stage = run_two_stage(cfg, prep, trainer, run_dir, tracker)
        results.update(two_stage.results)

    if "index" in stages:
        if "retrieval" not in stages:
            raise ValueError("the index stage needs the retrieval stage in the same run")
        results[f"{retrieval_name(cfg)} + FAISS"] = run_index(cfg, prep, trainer, artifacts)

    harness = EvalHarness.from_processed(prep.main)
    metrics = {name: {**r.metrics, "seconds": secs} for name, (r, secs) in results.items()}
    topk_dir = run_dir / "topk"
    topk_dir.mkdir(exist_ok=True)
    for name, (r, _) in results.items():
        harness.topk_frame(r).to_parquet(topk_dir / f"{slug(name)}.parquet")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if metrics:
        table = metrics_table(metrics)
        (run_dir / cfg.get("results_file", "results.md")).write_text(table + "\n", encoding="utf-8")
        print(table)
        tracker.log_table("results", pd.DataFrame(metrics).T.reset_index(names="model"))
        tracker.summary({f"{m}/{k}": v for m, d in metrics.items() for k, v in d.items()})
    if "bundle" in stages:
        if two_stage is None:
            raise ValueError("stage 'bundle' needs the 'two_stage' stage in the same run")
        run_bundle(cfg, prep, trainer, two_stage, metrics)
    if "serve" in stages:
        tracker.summary(run_serve(cfg, run_dir, prep.schema))
    tracker.finish()
    return metrics


def bundle_path(cfg: dict[str, Any]) -> Path:
    """The run bundle's folder (config ``bundle_dir``, default ``<artifacts_dir>/bundle``)."""
    raw = cfg.get("bundle_dir") or f"{cfg['artifacts_dir']}/bundle"
    return repo_path(raw)


def run_bundle(
    cfg: dict[str, Any],
    prep: Prepared,
    trainer: RetrievalTrainer,
    two_stage: TwoStageOutcome,
    metrics: dict[str, dict[str, float]],
) -> Path:
    """The bundle stage: everything serving needs, in one checked folder.

    Writes the run bundle (:func:`recsys.bundle.writer.write_bundle`) at
    :func:`bundle_path`: the ONNX models, the FAISS index, the runtime tables, the
    schema and vocabularies, the tuned aggregation weights, this run's config and
    test metrics, and provenance.
    """
    from recsys.bundle.writer import write_bundle

    t0 = time.perf_counter()
    bundle = write_bundle(
        two_stage.recommender,
        trainer.model,
        prep.schema,
        prep.main,
        bundle_path(cfg),
        config=cfg,
        metrics=metrics,
        tuning=two_stage.tuning,
    )
    print(f"bundle: {bundle.root} ({bundle.describe()}, {time.perf_counter() - t0:.1f} s)")
    return bundle.root


def run_serve(cfg: dict[str, Any], run_dir: Path, schema: FeatureSchema) -> dict[str, float]:
    """The serve stage: Triton serves the run bundle; a few users are asked over gRPC.

    Builds the Triton model repository from the run bundle at :func:`bundle_path`
    (this run's ``bundle`` stage, or an earlier run's), starts the local
    ``tritonserver``, sends ``serve.repeats`` gRPC
    ``recommend`` requests for each of ``serve.users``, prints their lists and
    the latency, and stops the server. With ``serve.realtime_demo`` the
    ``recommend`` model also reads real-time profiles from an embedded (SQLite)
    store in ``run_dir``: the first user clicks the top items of its list, the
    clicks go through the event pipeline into its profile, and the user is asked
    again. Writes ``serve.json`` into ``run_dir``.

    Returns:
        Latency summary (``serve/latency_p50_ms``, ``serve/latency_p99_ms``, ...).
    """
    from recsys.serving.cli import serve_demo
    from recsys.serving.repository import RepositoryConfig

    serve_cfg = dict(cfg.get("serve") or {})
    users = [int(u) for u in serve_cfg.get("users", [1, 2, 3])]
    k = int(serve_cfg.get("k", 10))
    print(f"serve: Triton over gRPC, users {users}, k={k}")
    repo_cfg, while_serving = None, None
    if serve_cfg.get("realtime_demo"):
        from recsys.events.sqlite_store import SqliteStore

        store_path = (run_dir / "realtime.db").resolve()
        store_path.unlink(missing_ok=True)
        SqliteStore(store_path).close()  # the served model opens an existing store only
        # the same embedded store holds the profiles the model reads and the exposure
        # log it writes (every served list, with its request id)
        url = f"sqlite://{store_path}"
        rules = _config_file(serve_cfg.get("rules"), "serve.rules")
        segments = _config_file(serve_cfg.get("segments"), "serve.segments")
        repo_cfg = RepositoryConfig(
            profile_store=url, exposure_log=url, targeting_rules=str(rules or "")
        )
        clicks = int(serve_cfg.get("realtime_clicks", 3))
        while_serving = partial(_realtime_demo, store_path, schema, users[0], k, clicks, segments)
    result = serve_demo(
        bundle_path(cfg),
        users,
        k,
        repository_dir=serve_cfg.get("repository_dir"),
        repeats=int(serve_cfg.get("repeats", 1)),
        repository_config=repo_cfg,
        while_serving=while_serving,
    )
    lat = np.asarray(result.latencies_ms)
    summary = {
        "serve/requests": float(len(lat)),
        "serve/latency_p50_ms": float(np.percentile(lat, 50)),
        "serve/latency_p99_ms": float(np.percentile(lat, 99)),
        "serve/build_seconds": result.build_seconds,
        "serve/startup_seconds": result.startup_seconds,
    }
    report = {
        **summary,
        "recommendations": {
            str(r.user_id): [[int(i), float(sc)] for i, sc in r.pairs()]
            for r in result.recommendations
        },
        "realtime": result.while_serving,
    }
    (run_dir / "serve.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return summary


def run_index(
    cfg: dict[str, Any], prep: Prepared, trainer: RetrievalTrainer, artifacts: Path
) -> tuple[EvalResult, float]:
    """Indexes the item vectors, saves the index, and scores the lists it serves.

    The index returns each user's top-k with the training items excluded, in
    original item ids; scoring those lists in the harness shows what an
    approximate index costs against the exact ranking.
    """
    t0 = time.perf_counter()
    eval_cfg = dataclass_from(
        EvalConfig, cfg["eval"], "eval", k_values=tuple(cfg["eval"]["k_values"])
    )
    harness = EvalHarness.from_processed(prep.main, eval_cfg)
    queries, items = (t.numpy() for t in trainer.retrieval_vectors())
    index = ItemIndex(IndexConfig.from_dict(dict(cfg.get("index") or {}))).build(
        items, harness.item_ids
    )
    index.save(artifacts / "index")
    users = harness.test_users()
    seen = [harness.item_ids[harness.train.rows([u]).indices] for u in users]
    found = index.search(queries[users], eval_cfg.k, exclude=seen)
    rows = (
        pd.Index(harness.item_ids).get_indexer(found.item_ids.ravel()).reshape(found.item_ids.shape)
    )
    rows = np.where(found.valid, rows, -1)
    full = np.full((harness.n_users, eval_cfg.k), -1, dtype=np.int64)
    full[users, : rows.shape[1]] = rows
    scores = np.full(full.shape, -np.inf, dtype=np.float32)
    scores[users, : rows.shape[1]] = np.where(found.valid, found.scores, -np.inf)
    # The harness ranks again from these lists: -inf everywhere else keeps the
    # index's own choice (and order) of items.
    result = harness.evaluate(
        lambda u: _sparse_scores(full[u], scores[u], harness.n_items), show_progress=False
    )
    return result, time.perf_counter() - t0


def _config_file(value: Any, key: str) -> Path | None:
    """A file named by a config key (relative to the working directory), checked."""
    if value in (None, ""):
        return None
    path = Path(str(value))
    if not path.is_file():
        raise FileNotFoundError(f"{key}: no such file {path.resolve()}")
    return path.resolve()


def _realtime_demo(
    store_path: Path,
    schema: FeatureSchema,
    user: int,
    k: int,
    clicks: int,
    segments: Path | None,
    client: Any,
) -> dict[str, Any]:
    """``user`` clicks its top ``clicks`` items; the profile store updates; ask again.

    The request carries a context and gets a request id; the served list lands in the
    exposure log; the clicks carry the request id and go through the real event path
    (producer -> embedded stream -> profile consumer with the segment definitions, with
    the user's recorded consent), as a live site's would, and are attributed to the list
    and positions that showed them. When the clicks make the user a member of a segment
    that a targeting rule selects, the second list shows the rule (its explanation names
    it).
    """
    import json

    from recsys.events.attribution import attribute
    from recsys.events.producer import EventProducer
    from recsys.events.sqlite_store import SqliteStore
    from recsys.events.validation import validate_event
    from recsys.privacy.consent import ConsentRegistry, Purpose
    from recsys.profiles.config import ProfileConfig
    from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
    from recsys.profiles.processor import EventProcessor, ProcessorConfig
    from recsys.runtime.exposure import exposure_event_id
    from recsys.segments import SegmentEngine

    store = SqliteStore(store_path)
    try:
        context = {"device_type": "desktop", "surface": "serve-demo",
                   "session_id": f"serve-demo-{user}"}  # fmt: skip
        before = client.recommend(user, k, context=context)
        clicked = [int(i) for i in before.item_ids[:clicks]]
        consent = ConsentRegistry(store)
        for purpose in (Purpose.ANALYTICS, Purpose.PERSONALIZATION):
            consent.record(str(user), purpose, True, source="serve-demo", actor=str(user))
        now = time.time()
        EventProducer(store).publish(
            {
                "event_id": f"serve-demo-{user}-{item}-{int(now * 1e6)}",
                "user_id": str(user),
                "session_id": f"serve-demo-{user}",
                "type": "click",
                "item_id": item,
                "timestamp": now + 0.1 * (n + 1),
                "context": {"device_type": "desktop"},
                "payload": {"request_id": before.request_id},
            }
            for n, item in enumerate(clicked)
        )
        profile_cfg = ProfileConfig.from_schema(schema)
        hooks = [SegmentEngine.from_yaml(segments, profile_cfg)] if segments is not None else []
        processor = EventProcessor(store, ProcessorConfig(profile=profile_cfg), hooks=hooks)
        consumer = StreamConsumer(
            store,
            processor,
            ConsumerConfig(block_ms=0, sweep_interval_s=None, gc_freeze_interval_s=None),
        )
        stats = consumer.run(until_idle=True)
        # The server writes the list's exposure asynchronously, possibly after the
        # clicks and after the exposures of the earlier requests: consume until the
        # store holds this list's own (the clicks name it), or give up after 10 s.
        exposure = exposure_event_id(str(before.request_id))
        deadline = time.monotonic() + 10
        while not store.applied([exposure]) and time.monotonic() < deadline:
            time.sleep(0.02)
            stats = consumer.run(until_idle=True)  # the counters since the first run
        report = attribute(validate_event(json.loads(e)) for e in store.user_events(str(user)))
    finally:
        store.close()
    after = client.recommend(user, k)
    print(
        f"user {user} clicks {clicked} (events the consumer applied, the served lists' "
        f"exposures included: {stats.applied}); asked again:"
    )
    print("  " + " ".join(f"{i}({s:.3f})" for i, s in after.pairs()))
    for name, rec in (("before", before), ("after", after)):
        why = rec.explanation
        print(f"  {name}: segments {why.get('segments', [])}, rules {why.get('rules', [])}")
    for joined in report.attributions:
        print(f"  click on {joined.item_id} attributed to request {joined.request_id}, "
              f"position {joined.position} ({joined.model}, bundle {joined.bundle})")  # fmt: skip
    return {
        "user": user,
        "request_id": before.request_id,
        "clicked": clicked,
        "applied": int(stats.applied),
        "before": [int(i) for i in before.item_ids],
        "after": [int(i) for i in after.item_ids],
        "before_explanation": before.explanation,
        "after_explanation": after.explanation,
        "attributed": [
            {
                "item": a.item_id,
                "request_id": a.request_id,
                "position": a.position,
                "how": a.how,
                "model": a.model,
                "bundle": a.bundle,
            }
            for a in report.attributions
        ],
    }


def _sparse_scores(items: np.ndarray, scores: np.ndarray, n_items: int) -> np.ndarray:
    out = np.full((len(items), n_items), -np.inf, dtype=np.float32)
    rows = np.repeat(np.arange(len(items)), items.shape[1])
    keep = items.ravel() >= 0
    out[rows[keep], items.ravel()[keep]] = scores.ravel()[keep]
    return out


@dataclass
class TwoStageOutcome:
    """What the two_stage stage produced.

    Attributes:
        results: the evaluated variants and their seconds.
        recommender: the two-stage recommender (tuned aggregation) the bundle serves.
        tuning: the aggregation tuning record.
    """

    results: dict[str, tuple[EvalResult, float]]
    recommender: Any
    tuning: Any = None


def _ranker_segments(
    ranker_raw: dict[str, Any], prep: Prepared
) -> tuple[tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]] | None, list[str] | None]:
    """Each user's segments at the end of the selection and main training splits, from
    the rules file ``ranker.segments`` (None when unset): the ``user_segments`` request
    feature's input (:func:`recsys.segments.offline.memberships_at`)."""
    path = ranker_raw.get("segments")
    if not path:
        return None, None
    from recsys.segments.engine import SegmentEngine
    from recsys.segments.offline import memberships_at

    rules = repo_path(str(path))
    kind = str(ranker_raw.get("segment_event_type", "rating"))
    both = tuple(
        memberships_at(split.train, SegmentEngine.from_yaml(rules), default_type=kind)
        for split in (prep.selection, prep.main)
    )
    names = sorted(SegmentEngine.from_yaml(rules).segments)
    log.info("ranker segments from %s: %s", rules, names)
    return (both[0], both[1]), names


def run_two_stage(
    cfg: dict[str, Any],
    prep: Prepared,
    retrieval_trainer: RetrievalTrainer,
    run_dir: Path,
    tracker: Tracker,
) -> TwoStageOutcome:
    """Two-stage recommendation: FAISS retrieval, DLRM ranker, score aggregation.

    The ranker never sees the test split: a two-tower trained on the selection
    split's train part (as many epochs as the final one) retrieves candidates
    for the selection users, whose held-out training interactions label them;
    early stopping and weight tuning use a share of those users. At test time
    the final two-tower's candidates are ranked with features of the main
    training split. Config groups ``ranker`` and ``recommend`` (loaded from
    ``configs/ranker/dlrm.yaml`` / ``configs/recommend/default.yaml`` when the
    run's config lacks them).

    Writes ``two_stage.json`` (ranker metrics, tuning, example counts) in
    ``run_dir`` and the ranker (``ranker.pt``, ``ranker.json``) under
    ``<artifacts>/ranker``; returns the evaluated variants and the recommender.
    """
    from omegaconf import OmegaConf

    from recsys.features.store import config_hash
    from recsys.recommend.evaluate import run_two_stage_experiment
    from recsys.recommend.two_stage import RetrievalVectors, TwoStageSettings

    def group(name: str, default: str) -> dict[str, Any]:
        if cfg.get(name) is not None:
            return dict(cfg[name])
        path = REPO_ROOT / "configs" / name / f"{default}.yaml"
        log.info("config has no %r group: using %s", name, path)
        loaded: dict[str, Any] = OmegaConf.to_container(OmegaConf.load(path))  # type: ignore[assignment]
        return loaded

    def vectors(trainer: RetrievalTrainer) -> RetrievalVectors:
        queries, items = trainer.retrieval_vectors()
        return RetrievalVectors(queries.numpy(), items.numpy(), trainer.item_embeddings().numpy())

    t0 = time.perf_counter()
    seed = int(cfg["seed"])
    recommend_raw = group("recommend", "default")
    if recommend_raw.get("index") is None and cfg.get("index") is not None:
        recommend_raw["index"] = dict(cfg["index"])  # the run's index group
    ranker_raw = group("ranker", "dlrm")
    settings = TwoStageSettings.from_config(ranker_raw, recommend_raw, seed, cfg.get("num_threads"))
    # the selection two-tower: same settings and epochs as the final one; its
    # vectors are cached (keyed by the configs that shape it) for ranker reruns
    trainer_raw = {**dict(cfg["trainer"]), **dict(cfg.get("optimizer") or {})}
    refit = bool(trainer_raw.pop("refit_full", True))
    epochs = retrieval_trainer.config.epochs
    no_key = {"checkpoint_dir", "resume", "progress", "num_threads"}  # do not shape the model
    cache = repo_path(cfg["artifacts_dir"]) / "two_stage" / "selection_vectors.npz"
    key = config_hash(
        {
            "model": cfg["model"],
            "trainer": {k: v for k, v in trainer_raw.items() if k not in no_key},
            "epochs": epochs,
            "data": prep.selection.manifest.get("config_hash"),
            "source": prep.selection.manifest.get("source_sha256"),
        }
    )
    use_cache = bool(ranker_raw.get("cache_retrieval", True))
    if not refit:
        sel_vectors = vectors(retrieval_trainer)  # without a refit it is the selection model
    elif use_cache and cache.is_file() and str(np.load(cache)["key"]) == key:
        saved = np.load(cache)
        sel_vectors = RetrievalVectors(saved["queries"], saved["items"], saved["embeddings"])
        log.info("selection two-tower vectors reused from %s", cache)
    else:
        sel_model = build_retrieval(cfg, prep, prep.selection)
        sel_data = RetrievalData.build(prep.selection, sel_model.schema, sel_model.feature_names)
        sel_cfg = dataclass_from(
            RetrievalTrainerConfig,
            trainer_raw,
            "trainer",
            epochs=epochs,
            checkpoint_dir=str(run_dir / "checkpoints" / "two_stage_selection"),
            resume=False,
        )
        selector = RetrievalTrainer(
            sel_model,
            sel_data,
            sel_cfg,
            log_fn=lambda m, s: tracker.log_phase("two_stage/retrieval", m, s),
        )
        selector.fit(None)
        sel_vectors = vectors(selector)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            key=key,
            epochs=epochs,
            queries=sel_vectors.queries,
            items=sel_vectors.items,
            embeddings=sel_vectors.embeddings
            if sel_vectors.embeddings is not None
            else sel_vectors.items,
        )
    ckpt = run_dir / "checkpoints" / "ranker"
    ckpt.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(epoch: int, metrics: dict[str, float], module: torch.nn.Module) -> None:
        tracker.log(prefixed(metrics, "two_stage/ranker"))
        torch.save({"epoch": epoch, "model": module.state_dict()}, ckpt / "last.pt")

    eval_cfg = dataclass_from(
        EvalConfig, cfg["eval"], "eval", k_values=tuple(cfg["eval"]["k_values"])
    )
    segments, segment_names = _ranker_segments(ranker_raw, prep)
    before = time.perf_counter() - t0  # selection two-tower (or its cache)
    out = run_two_stage_experiment(
        prep.selection,
        sel_vectors,
        prep.main,
        vectors(retrieval_trainer),
        prep.schema,
        settings,
        eval_cfg,
        on_epoch_end=on_epoch_end,
        segments=segments,
        segment_names=segment_names,
    )
    if out.recommender.ranker is not None:
        out.recommender.ranker.save(repo_path(cfg["artifacts_dir"]) / "ranker")
    report = {
        "ranker": out.ranker_metrics,
        "examples": out.examples,
        "aggregation": dict(vars(out.aggregation)),
        "tuning": out.tuning,
        "setup_seconds": out.setup_seconds,
        "stage_seconds": time.perf_counter() - t0,
    }
    text = json.dumps(report, indent=2, default=str) + "\n"
    (run_dir / "two_stage.json").write_text(text, encoding="utf-8")
    tracker.summary(
        {
            f"two_stage/ranker/{part}/{k}": v
            for part, d in out.ranker_metrics.items()
            for k, v in d.items()
        }
    )
    for part, d in out.ranker_metrics.items():
        print(
            f"ranker ({part}): AUC {d.get('auc', float('nan')):.4f}  GAUC "
            f"{d.get('gauc', float('nan')):.4f}  logloss {d.get('logloss', float('nan')):.4f}  "
            f"NE {d.get('ne', float('nan')):.4f}"
        )
    # each variant's seconds: everything it needs, the selection two-tower included
    return TwoStageOutcome(
        results={name: (r, secs + before) for name, (r, secs) in out.results.items()},
        recommender=out.recommender,
        tuning=out.tuning,
    )
