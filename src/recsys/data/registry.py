"""The loader registry: a dataset is a config that names its loader.

``configs/dataset/<name>.yaml`` says everything about a dataset: which loader
reads it (``loader:``), where the publisher's archive is and its checksums
(``source:``), the loader's files, delimiters, column maps, rating scale and
timestamp format (``read:``), whether to download it (``download``,
``offline``, ``allow_unverified``), how strictly to treat bad rows (``strict``),
its feature schema (``schema``) and its cleaning (``cleaning:``).
:meth:`DatasetConfig.from_dict` builds the typed config from that mapping (an
unknown key anywhere is an error that names it) and :func:`load` finds or
downloads the files and runs the loader.

Loaders, by ``loader:`` name:

================= ================================ =====================================
name              reads                            ``read:`` keys
================= ================================ =====================================
``ml100k``        ML-100K (u.data, u.user, ...)    :class:`~.movielens.Ml100kConfig`
``ml1m``          ML-1M (``::``-separated .dat)    :class:`~.movielens.Ml1mConfig`
``movielens_csv`` ratings.csv + movies.csv         :class:`~.movielens.MovieLensCsvConfig`
                  (ML-20M, ML-25M, ML-32M, latest)
``interactions``  any CSV/TSV/Parquet interaction  :class:`~.interactions.InteractionsConfig`
                  table, optional item file
``event_log``     any CSV/TSV/Parquet event log    :class:`~.event_log.EventLogConfig`
``yoochoose``     RecSys Challenge 2015 clicks     :class:`~.event_log.YoochooseConfig`
``criteo``        Criteo display-ads log (CTR      :class:`~.criteo.CriteoConfig`
                  impressions, not interactions)
================= ================================ =====================================

Example:
    >>> cfg = DatasetConfig.from_dict({"name": "ml-100k", "loader": "ml100k",
    ...                                "source": {"url": None}})
    >>> cfg.read.ratings, cfg.download
    ('u.data', True)
    >>> loaded = load(cfg)  # doctest: +SKIP
    >>> print(loaded.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from recsys.data.cleaning import CleaningConfig
from recsys.data.config import build
from recsys.data.criteo import CriteoConfig, load_criteo
from recsys.data.download import resolve_dataset
from recsys.data.event_log import EventLogConfig, YoochooseConfig, load_event_log, load_yoochoose
from recsys.data.frame import DataConfigError, InteractionData, LoadReport
from recsys.data.interactions import InteractionsConfig, load_interactions
from recsys.data.movielens import (
    Ml1mConfig,
    Ml100kConfig,
    MovieLensCsvConfig,
    load_ml1m,
    load_ml100k,
    load_movielens_csv,
)
from recsys.data.paths import DatasetSource

Kind = Literal["interactions", "impressions"]


@dataclass
class LoaderOutput:
    """What a loader returns.

    Attributes:
        data: interactions (and side tables), for ``kind="interactions"`` loaders.
        table: a labelled impression table, for ``kind="impressions"`` (Criteo).
        reports: one report per file read.
    """

    data: InteractionData | None = None
    table: pd.DataFrame | None = None
    reports: list[LoadReport] = field(default_factory=list)


ReadFn = Callable[[Path, Any, str, bool], LoaderOutput]


@dataclass(frozen=True)
class Loader:
    """One registered loader.

    Attributes:
        name: the ``loader:`` value that picks it.
        config_type: the dataclass its ``read:`` block is built into; it must
            have ``required_files() -> tuple[str, ...]``.
        read: ``(folder, read_config, dataset_name, strict) -> LoaderOutput``.
        kind: ``interactions`` (user-item interactions: the main job can train
            on them) or ``impressions`` (labelled ad impressions: the ranker).
        description: one line for error messages and docs.
    """

    name: str
    config_type: type
    read: ReadFn
    kind: Kind = "interactions"
    description: str = ""


def _interactions(data: InteractionData) -> LoaderOutput:
    return LoaderOutput(data=data, reports=list(data.reports))


def _read_ml100k(folder: Path, cfg: Ml100kConfig, name: str, strict: bool) -> LoaderOutput:
    return _interactions(load_ml100k(folder, strict, config=cfg, name=name))


def _read_ml1m(folder: Path, cfg: Ml1mConfig, name: str, strict: bool) -> LoaderOutput:
    return _interactions(load_ml1m(folder, strict, config=cfg, name=name))


def _read_movielens_csv(
    folder: Path, cfg: MovieLensCsvConfig, name: str, strict: bool
) -> LoaderOutput:
    return _interactions(load_movielens_csv(folder, strict, name, config=cfg))


def _read_interactions(
    folder: Path, cfg: InteractionsConfig, name: str, strict: bool
) -> LoaderOutput:
    return _interactions(load_interactions(folder, strict, config=cfg, name=name))


def _read_event_log(folder: Path, cfg: EventLogConfig, name: str, strict: bool) -> LoaderOutput:
    return _interactions(load_event_log(folder / cfg.file, strict, config=cfg, name=name))


def _read_yoochoose(folder: Path, cfg: YoochooseConfig, name: str, strict: bool) -> LoaderOutput:
    data = load_yoochoose(folder / cfg.file, strict)
    return _interactions(replace(data, name=name))


def _read_criteo(folder: Path, cfg: CriteoConfig, name: str, strict: bool) -> LoaderOutput:
    table, report = load_criteo(
        folder / cfg.file, strict, max_rows=cfg.max_rows, delimiter=cfg.delimiter
    )
    return LoaderOutput(table=table, reports=[report])


LOADERS: dict[str, Loader] = {
    loader.name: loader
    for loader in (
        Loader("ml100k", Ml100kConfig, _read_ml100k, description="MovieLens 100K layout"),
        Loader("ml1m", Ml1mConfig, _read_ml1m, description="MovieLens 1M layout"),
        Loader(
            "movielens_csv",
            MovieLensCsvConfig,
            _read_movielens_csv,
            description="ratings.csv + movies.csv (ML-20M, ML-25M, ML-32M, ml-latest)",
        ),
        Loader(
            "interactions",
            InteractionsConfig,
            _read_interactions,
            description="a CSV/TSV/Parquet interaction table with an optional item file",
        ),
        Loader(
            "event_log",
            EventLogConfig,
            _read_event_log,
            description="a CSV/TSV/Parquet event log (clicks, views, purchases)",
        ),
        Loader(
            "yoochoose",
            YoochooseConfig,
            _read_yoochoose,
            description="RecSys Challenge 2015 (YOOCHOOSE) clicks",
        ),
        Loader(
            "criteo",
            CriteoConfig,
            _read_criteo,
            kind="impressions",
            description="Criteo display-ads log (label, I1-I13, C1-C26)",
        ),
    )
}


def register(loader: Loader) -> None:
    """Adds a loader (e.g. a project-specific layout); its name must be new.

    Args:
        loader: the loader; ``loader.config_type`` needs ``required_files()``.

    Raises:
        DataConfigError: the name is taken.

    Example:
        >>> register(Loader("my_layout", EventLogConfig, _read_event_log))  # doctest: +SKIP
    """
    if loader.name in LOADERS:
        raise DataConfigError(f"a loader named {loader.name!r} is already registered")
    LOADERS[loader.name] = loader


def get_loader(name: str) -> Loader:
    """The registered loader called ``name``.

    Raises:
        DataConfigError: unknown name (the message lists the known loaders).
    """
    try:
        return LOADERS[name]
    except KeyError:
        known = ", ".join(sorted(LOADERS))
        raise DataConfigError(
            f"unknown loader {name!r} in dataset.loader; known loaders: {known}"
        ) from None


@dataclass(frozen=True)
class SourceConfig:
    """Where the publisher's archive is (the ``source:`` block).

    Attributes:
        url: the archive (a ``.zip``); None: the files must be placed by hand.
        md5: expected MD5 of the archive, or None.
        sha256: expected SHA-256 of the archive, or None.
        archive_folder: folder inside the archive holding the files (None: the
            dataset name).
        description: one line for ``recsys download --list`` and errors.
    """

    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    archive_folder: str | None = None
    description: str = ""


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset config (``configs/dataset/<name>.yaml``, the ``dataset`` group).

    Attributes:
        name: the dataset's name and its folder under the data root.
        loader: the registered loader that reads it (see :data:`LOADERS`).
        dir: data root to look in and download to; None: ``$RECSYS_DATA_DIR``,
            then ``~/.cache/recsys/datasets``.
        download: fetch the publisher's archive when the files are missing.
        offline: never touch the network (wins over ``download``).
        allow_unverified: download archives that have no known checksum.
        strict: any rejected row is an error instead of a reported rejection.
        schema: the feature schema file (relative to the repository), or None.
        source: the publisher's archive.
        read: the loader's settings (its ``config_type``).
        cleaning: the cleaning steps (:class:`~recsys.data.cleaning.CleaningConfig`).
    """

    name: str
    loader: str
    dir: str | None = None
    download: bool = True
    offline: bool = False
    allow_unverified: bool = False
    strict: bool = False
    schema: str | None = None
    source: SourceConfig = field(default_factory=SourceConfig)
    read: Any = None
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | DatasetConfig) -> DatasetConfig:
        """Builds and checks a dataset config; ``read`` becomes the loader's dataclass.

        Args:
            raw: the ``dataset`` mapping (e.g. the resolved Hydra config group).

        Returns:
            The typed config.

        Raises:
            DataConfigError: an unknown key (named, e.g. ``dataset.read.delimter``),
                an unknown loader, or a value of the wrong type.

        Example:
            >>> DatasetConfig.from_dict({"name": "x", "loader": "nope"})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            recsys.data.frame.DataConfigError: unknown loader 'nope' in dataset.loader; ...
        """
        if isinstance(raw, DatasetConfig):
            return raw
        cfg = build(cls, raw, "dataset")
        loader = get_loader(cfg.loader)
        return replace(cfg, read=build(loader.config_type, cfg.read, "dataset.read"))

    @property
    def downloads(self) -> bool:
        """Whether a missing dataset is downloaded (``download`` and not ``offline``)."""
        return self.download and not self.offline

    def required_files(self) -> tuple[str, ...]:
        """The files the loader reads, relative to the dataset folder."""
        files: tuple[str, ...] = self.read.required_files()
        return files

    def source_of(self) -> DatasetSource:
        """The :class:`~recsys.data.paths.DatasetSource` that finds or downloads it."""
        return DatasetSource(
            name=self.name,
            url=self.source.url,
            archive_folder=self.source.archive_folder or self.name,
            required_files=self.required_files(),
            sha256=self.source.sha256,
            md5=self.source.md5,
            description=self.source.description,
        )


@dataclass
class LoadedDataset:
    """A dataset read through its config.

    Attributes:
        config: the typed config it was read with.
        folder: the folder holding its files.
        files: the files read (what the processed-data cache hashes).
        data: interactions and side tables (interaction loaders), else None.
        table: the impression table (``kind="impressions"`` loaders), else None.
        reports: one report per file.
    """

    config: DatasetConfig
    folder: Path
    files: list[Path]
    data: InteractionData | None = None
    table: pd.DataFrame | None = None
    reports: list[LoadReport] = field(default_factory=list)

    def summary(self) -> str:
        """What was read, kept, repaired, filtered and rejected, one line per file."""
        head = f"dataset {self.config.name} (loader {self.config.loader}) from {self.folder}:"
        return "\n".join([head, *(f"  {r.summary()}" for r in self.reports)])


def resolve(
    config: DatasetConfig | Mapping[str, Any], *, progress: bool = True
) -> tuple[Path, list[Path]]:
    """Finds the dataset's folder (downloading it when allowed) and its files.

    Args:
        config: the dataset config.
        progress: show a progress bar while downloading.

    Returns:
        ``(folder, files)``.

    Raises:
        DatasetNotFoundError: not found and not downloadable (the message says
            where it looked and how to fix it).
        UnverifiedDownloadError: a download is needed but the archive has no
            known checksum and ``allow_unverified`` is off.

    Example:
        >>> folder, files = resolve({"name": "ml-100k", "loader": "ml100k"})  # doctest: +SKIP
    """
    cfg = DatasetConfig.from_dict(config)
    folder = resolve_dataset(
        cfg.source_of(),
        cfg.dir,
        download=cfg.download,
        progress=progress,
        allow_unverified=cfg.allow_unverified,
        offline=cfg.offline,
    )
    return folder, [folder / f for f in cfg.required_files()]


def load(config: DatasetConfig | Mapping[str, Any], *, progress: bool = True) -> LoadedDataset:
    """Finds (or downloads) a dataset and reads it with its loader.

    Args:
        config: the dataset config (a mapping is checked by
            :meth:`DatasetConfig.from_dict`).
        progress: show a progress bar while downloading.

    Returns:
        The loaded dataset and every file's report.

    Raises:
        DataConfigError: the config is wrong or does not fit the files.
        DatasetNotFoundError: the files are missing and cannot be downloaded.
        MalformedDataError: ``strict`` and a file has rejected rows.

    Example:
        >>> loaded = load({"name": "ml-100k", "loader": "ml100k"})  # doctest: +SKIP
        >>> loaded.data.n_users  # doctest: +SKIP
        943
    """
    cfg = DatasetConfig.from_dict(config)
    loader = get_loader(cfg.loader)
    folder, files = resolve(cfg, progress=progress)
    out = loader.read(folder, cfg.read, cfg.name, cfg.strict)
    return LoadedDataset(
        config=cfg, folder=folder, files=files, data=out.data, table=out.table, reports=out.reports
    )


def load_config_file(path: str | os.PathLike[str]) -> DatasetConfig:
    """Reads a dataset config YAML (as in ``configs/dataset/``) outside Hydra.

    ``${oc.env:VAR,default}`` interpolations are resolved by OmegaConf.

    Args:
        path: the YAML file.

    Returns:
        The typed config.

    Raises:
        DataConfigError: the file is not a mapping or has bad keys or values.

    Example:
        >>> cfg = load_config_file("configs/dataset/ml25m.yaml")  # doctest: +SKIP
        >>> cfg.read.rating_scale.step  # doctest: +SKIP
        0.5
    """
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(Path(path)), resolve=True)
    if not isinstance(raw, Mapping):
        raise DataConfigError(f"{path}: a dataset config must be a mapping of keys")
    return DatasetConfig.from_dict({str(k): v for k, v in raw.items()})


__all__ = [
    "LOADERS",
    "DatasetConfig",
    "LoadedDataset",
    "Loader",
    "LoaderOutput",
    "SourceConfig",
    "get_loader",
    "load",
    "load_config_file",
    "register",
    "resolve",
]
